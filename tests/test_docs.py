"""The documentation: the site builds with --strict, the API page covers kernelcalc.__all__, every
module path the pages name exists, and the code blocks of README.md and of every page under docs/
run as written.

**What runs.** Each fenced block of README.md and docs/**/*.md, in page order, split into units:

- a ``bash`` line ``kernelcalc ...``: run in-process by click's CliRunner (``> FILE`` redirects
  stdout into FILE);
- a ``bash`` line ``python SCRIPT ...`` (an example or a benchmark): run by this interpreter with the
  working tree on PYTHONPATH (SCRIPT is relative to the repository root);
- each top-level statement of a ``python`` block (one namespace per page, so a page's blocks build
  on each other); a failing ``assert`` in the docs fails the test.

Every unit of a page runs in a fresh scratch folder holding the data files the docs name (``X.npy``,
``X.csv``, ``y.npy``, ``raw.csv``, ``xy.csv``). A shell line exits 0, or N when its comment says
"exits N"; a file it names as its output (``--plot F``, ``--json-out F``, ``> F``, or "writes F.png"
in its comment) must exist afterwards. ``text`` blocks
are output and are not run; any other bash line must sit in a skipped block.

**Markers** (an HTML comment on the line right before the fence):
``<!-- docs-test: skip: REASON -->`` (an install, the test suite itself, a cluster) and
``<!-- docs-test: slow: REASON -->`` (a block the name rule below misses). A marker anywhere else is
an error, so a stale one cannot hide.

**Fast and slow.** A unit is slow when it is a ``kernelcalc`` command in SLOW_COMMANDS, a ``python``
script line (the examples take minutes), a statement that calls a function in SLOW_CALLS, or in a
block marked slow. The default run executes every fast unit and leaves out the slow ones, plus any
later statement that reads a name a left-out statement assigned; the slow suite (``-m slow``) runs
every page with a slow unit completely, in order. New blocks are picked up with no change here.
"""

import ast
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
from contextlib import chdir as _chdir
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
DOC_FILES = [ROOT / "README.md", *PAGES]
FENCE = re.compile(r"(?:^[ ]*<!--\s*docs-test:\s*(?P<marker>[^>]*?)\s*-->\n)?"
                   r"^(?P<indent>[ ]*)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
ANY_MARKER = re.compile(r"^\s*<!--\s*docs-test:", re.M)

# Command-line commands that take minutes (a training run, a sweep, Monte Carlo): the slow suite runs them.
SLOW_COMMANDS = {"train", "width-sweep", "sweep-T", "flow-gap", "divergent-flow", "compare-models", "compare",
                 "depth-gap"}
# The Python functions behind them: a statement calling one of these is slow.
SLOW_CALLS = {"train", "width_sweep", "sweep_T", "flow_gap", "divergent_flow", "compare_models", "compare",
              "depth_gap"}
OUTPUT_OPTIONS = {"--plot", "--json-out", "--out"}
WRITES = re.compile(r"\bwrites?\b(.*)")
EXITS = re.compile(r"\bexits (\d+)\b")
OUTPUT_FILE = re.compile(r"(?<![\w/.-])([A-Za-z][\w-]*\.(?:png|json|csv|npy|zarr))\b")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int                    # line of the body's first line in the markdown file
    marker: str | None           # "skip", "slow" or None
    reason: str | None


@dataclass(frozen=True)
class Unit:
    """One runnable piece of a page: a shell line or a top-level Python statement."""
    where: str                   # "docs/cli.md:52"
    kind: str                    # "cli", "script" or "python"
    text: str
    slow: bool
    args: tuple = ()
    outputs: tuple = ()          # files the command says it writes
    exit_code: int = 0           # a shell line commented "exits N" must exit N
    code: object = None          # the compiled statement
    stores: frozenset = frozenset()
    loads: frozenset = frozenset()


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with their docs-test markers (validated)."""
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        marker = reason = None
        if m.group("marker") is not None:
            kind, _, reason = m.group("marker").partition(":")
            marker, reason = kind.strip(), reason.strip()
            assert marker in ("skip", "slow") and reason, \
                f"{rel(path)}: a docs-test marker is 'skip: REASON' or 'slow: REASON', got {m.group('marker')!r}"
        body = textwrap.dedent(m.group("body")) if m.group("indent") else m.group("body")   # a fence in a list item
        out.append(Block(m.group("lang"), body, text.count("\n", 0, m.start("body")) + 1, marker, reason))
    attached = sum(b.marker is not None for b in out)
    assert len(ANY_MARKER.findall(text)) == attached, \
        f"{rel(path)}: a <!-- docs-test: ... --> marker that is not on the line right before a code fence"
    return out


def _split_comment(line: str):
    """(command, comment) of a shell line: the comment starts at an unquoted `#` after a blank."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1:]
    return line, ""


def _shell_lines(block: Block):
    """(line number, argv, comment) of each command of a bash block."""
    for i, line in enumerate(block.body.splitlines()):
        command, comment = _split_comment(line)
        args = shlex.split(command)
        if args:
            yield block.line + i, args, comment


def _names(stmt: ast.stmt):
    stores, loads = set(), set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            (stores if isinstance(node.ctx, (ast.Store, ast.Del)) else loads).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stores |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stores.add(node.name)
    return frozenset(stores), frozenset(loads)


def _calls_slow(stmt: ast.stmt) -> bool:
    for node in ast.walk(stmt):
        if isinstance(node, ast.Call):
            f = node.func
            if (f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)) in SLOW_CALLS:
                return True
    return False


def units(path: Path) -> list[Unit]:
    """The runnable units of a markdown file, in order (skipped blocks and text blocks left out)."""
    out = []
    for b in blocks(path):
        if b.marker == "skip" or b.lang == "text":
            continue
        marked_slow = b.marker == "slow"
        if b.lang == "bash":
            for line, args, comment in _shell_lines(b):
                where = f"{rel(path)}:{line}"
                assert args[0] in ("kernelcalc", "python", "python3"), \
                    f"{where}: `{shlex.join(args)}` is neither a kernelcalc nor a python command: " \
                    "put it in a block marked <!-- docs-test: skip: REASON -->"
                named = [a for o, a in zip(args, args[1:]) if o in OUTPUT_OPTIONS or o == ">"]
                m = WRITES.search(comment)
                named += OUTPUT_FILE.findall(m.group(1)) if m else []
                code = int(EXITS.search(comment).group(1)) if EXITS.search(comment) else 0
                if args[0] == "kernelcalc":
                    slow = marked_slow or (len(args) > 1 and args[1] in SLOW_COMMANDS)
                    out.append(Unit(where, "cli", shlex.join(args), slow, tuple(args), tuple(named), code))
                else:
                    out.append(Unit(where, "script", shlex.join(args), True, tuple(args), tuple(named), code))
        elif b.lang == "python":
            tree = ast.parse(b.body, filename=str(path))
            for stmt in tree.body:
                source, stores, loads = ast.get_source_segment(b.body, stmt) or "", *_names(stmt)
                mod = ast.increment_lineno(ast.Module(body=[stmt], type_ignores=[]), b.line - 1)
                code = compile(mod, str(path), "exec")     # tracebacks show the markdown line
                out.append(Unit(f"{rel(path)}:{stmt.lineno}", "python", source, marked_slow or _calls_slow(stmt),
                                code=code, stores=stores, loads=loads))
        else:
            raise AssertionError(f"{rel(path)}:{b.line}: fence language {b.lang!r} (use bash, python or text)")
    return out


def run_cli(args, cwd: Path, exit_code: int = 0) -> str:
    """Run one documented ``kernelcalc ...`` line (``> FILE`` redirects stdout) and return its output."""
    from click.testing import CliRunner

    from kernelcalc.cli import main

    args, redirect = (args[:args.index(">")], args[args.index(">") + 1]) if ">" in args else (args, None)
    with _chdir(cwd):
        res = CliRunner().invoke(main, list(args[1:]), catch_exceptions=False)
    # `check` exits 1 when the theory does not apply: a line meant to show that says "exits 1".
    assert res.exit_code == exit_code, \
        f"{shlex.join(args)} exited {res.exit_code}, not {exit_code}:\n{res.output[-2000:]}"
    if redirect:
        (cwd / redirect).write_text(res.stdout)
    return res.output


def run_script(args, cwd: Path, exit_code: int = 0) -> str:
    """Run one documented ``python SCRIPT ...`` line with this interpreter and the working tree's package."""
    argv = [sys.executable, *args[1:]]
    if len(argv) > 1 and (ROOT / argv[1]).is_file():
        argv[1] = str(ROOT / argv[1])        # documented relative to the repository root
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               MPLBACKEND="Agg")
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3 * 3600)
    assert res.returncode == exit_code, f"{shlex.join(args)} exited {res.returncode}, not {exit_code}:\n{res.stdout[-2000:]}{res.stderr[-3000:]}"
    return res.stdout


def run_units(path: Path, cwd: Path, *, slow: bool):
    """Run a page's units in ``cwd``: all of them (``slow=True``), or the fast ones and whatever does
    not depend on a left-out statement.  Returns (the Python namespace, {where: output}, units run)."""
    ns, outputs, tainted, ran = {}, {}, set(), []
    for u in units(path):
        if not slow and (u.slow or u.kind == "script" or (u.kind == "python" and u.loads & tainted)):
            tainted |= u.stores
            continue
        if u.kind == "python":
            with _chdir(cwd):
                exec(u.code, ns)  # noqa: S102 -- our own documentation
            tainted -= u.stores
        else:
            outputs[u.where] = (run_cli if u.kind == "cli" else run_script)(u.args, cwd, u.exit_code)
            missing = [f for f in u.outputs if not (cwd / f).exists()]
            assert not missing, f"{u.where}: `{u.text}` did not write {missing}"
        ran.append(u)
    return ns, outputs, ran


@pytest.fixture
def workdir(tmp_path):
    """A scratch folder with the data files the documented commands name."""
    from kernelcalc.data import sphere_normalise

    rng = np.random.default_rng(0)
    X = sphere_normalise(rng.normal(size=(5, 3)))
    np.save(tmp_path / "X.npy", X)
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    np.save(tmp_path / "y.npy", rng.normal(size=5))
    np.savetxt(tmp_path / "raw.csv", 3.0 * rng.normal(size=(5, 3)), delimiter=",")     # off the sphere
    x = np.linspace(-1, 1, 40)
    np.savetxt(tmp_path / "xy.csv", np.stack([x, x**2], axis=1), delimiter=",")       # y = x^2, last column
    return tmp_path


# ---------------------------------------------------------------------------------------------------
# The site


def test_api_page_lists_every_public_name():
    """Every name of kernelcalc.__all__ has its own `::: ...NAME` directive on the API page."""
    import kernelcalc

    api = (DOCS / "api.md").read_text()
    documented = {line.split()[1].rsplit(".", 1)[-1] for line in api.splitlines() if line.startswith("::: ")}
    missing = sorted(set(kernelcalc.__all__) - documented)
    assert not missing, f"public names missing from docs/api.md (add a '::: kernelcalc.NAME' line): {missing}"
    # And the page really is about these names: every directive points into kernelcalc.
    for line in api.splitlines():
        if line.startswith("::: "):
            assert line.split()[1].startswith("kernelcalc."), line


def test_all_is_read_from_the_package_source():
    """The coverage test above reads kernelcalc.__all__; cross-check it against the source, so a name
    added to __all__ by `__all__ += [...]` cannot slip past the import-time list."""
    import kernelcalc

    tree = ast.parse((ROOT / "kernelcalc" / "__init__.py").read_text())
    names, literals = [], {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "list":   # list(_LAZY)
                value = literals[value.args[0].id]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                names += list(ast.literal_eval(value) if isinstance(value, ast.AST) else value)
            elif isinstance(node, ast.Assign) and isinstance(targets[0], ast.Name):
                try:
                    literals[targets[0].id] = ast.literal_eval(value)
                except ValueError:
                    pass
    assert names and set(names) == set(kernelcalc.__all__)


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        rel = page.relative_to(DOCS).as_posix()
        assert rel in nav, f"docs/{rel} is not in the mkdocs.yml nav"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs / mkdocstrings not installed: pip install -e '.[docs]' (part of '.[dev]')")
def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing page, an unresolvable `::: name` fails."""
    import os

    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    import kernelcalc

    for name in kernelcalc.__all__:   # each public name got a rendered section (an anchor id)
        assert re.search(rf'id="kernelcalc\.(?:[\w.]+\.)?{re.escape(name)}"', api), name
    # The docstrings' maths reached the page as arithmatex spans for KaTeX, and the Sphinx roles of
    # the docstrings were turned into code.
    assert api.count('class="arithmatex"') > 50
    assert not re.search(r":(func|class|meth|mod|attr|data|exc|obj):", _visible_text(api))
    # On every page all maths is in arithmatex spans: no bare $ (e.g. a $$...$$ inside a paragraph,
    # which arithmatex leaves alone) that KaTeX would never see.
    for page in PAGES:
        out = page.relative_to(DOCS).with_suffix("")
        html = tmp_path / "site" / (out.parent if out.name == "index" else out) / "index.html"
        text = _visible_text(html.read_text())
        assert "$" not in text, f"{rel(page)}: " + re.search(r".{0,80}\$.{0,80}", text, re.S).group()


def _visible_text(html: str) -> str:
    """The page's text outside maths spans, code, scripts and styles."""
    text = re.sub(r'<(span|div) class="arithmatex">.*?</\1>|<(code|pre|script|style)[^>]*>.*?</\2>', "", html,
                  flags=re.S)
    return re.sub(r"<[^>]+>", "", text)


# ---------------------------------------------------------------------------------------------------
# Module paths named by the README and the pages

PATH_REF = re.compile(r"(?<![\w./-])kernelcalc/(?:[\w-]+/)*[\w-]*(?:\.py)?")
DOTTED_REF = re.compile(r"(?<![\w./-])kernelcalc(?:\.[A-Za-z_]\w*)+")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", [rel(p) for p in DOC_FILES])
def test_named_module_paths_exist(doc):
    """Every `kernelcalc/...` path and every dotted `kernelcalc.x.y` name on a page exists, so a layout
    change that leaves a page pointing at an old module fails here."""
    text = (ROOT / doc).read_text()
    paths = {m.rstrip(".") for m in PATH_REF.findall(text)}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"
    names = {m for m in DOTTED_REF.findall(text) if not m.endswith((".py", ".md"))}
    broken = sorted(n for n in names if not _resolves(n))
    assert not broken, f"{doc} names objects that do not resolve: {broken}"


def _tree_files(tree: str) -> set[str]:
    """The .py files of an indented ``kernelcalc/`` tree (a ``text`` block): structural lines are
    ``NAME/`` or ``NAME.py`` followed by a description; a line indented to the description column
    continues the folder above it (``kernels/  mlp.py, resnet.py``)."""
    files, stack, desc_col = set(), [], None      # stack: (indent, folder path)
    for line in tree.splitlines():
        m = re.match(r"^( *)(\S+)( +)?", line)
        if not m:
            continue
        indent = len(m.group(1))
        if desc_col is not None and indent >= desc_col:        # continuation of the line above
            names = re.findall(r"\b(\w+\.py)\b", line)
            files |= {f"{stack[-1][1]}/{n}" for n in names} if stack else set()
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        first = m.group(2)
        desc_col = m.end() if m.group(3) else None
        here = f"{parent}/{first.rstrip('/')}".lstrip("/")
        if first.endswith("/"):
            stack.append((indent, here))
            desc = line[m.end():]
            files |= {f"{here}/{n}" for n in re.findall(r"\b(\w+\.py)\b", desc)}
        elif first.endswith(".py"):
            files.add(here)
    return files


def test_layout_docs_cover_the_package():
    """The layout tree on the conventions page names every module of the package, each where it is,
    and the README's layout table names every folder and root module."""
    trees = [b.body for b in blocks(DOCS / "conventions.md") if b.lang == "text" and b.body.startswith("kernelcalc/")]
    assert len(trees) == 1, "docs/conventions.md: one ```text block starting with `kernelcalc/` (the layout tree)"
    named = _tree_files(trees[0])
    package = ROOT / "kernelcalc"
    actual = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py")
              if "__pycache__" not in p.parts and not (p.name == "__init__.py" and p.parent != package)}
    assert not named - actual, f"the layout tree names modules that do not exist: {sorted(named - actual)}"
    assert not actual - named, f"modules missing from the layout tree of docs/conventions.md: {sorted(actual - named)}"
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 1)]
    wanted = {f"kernelcalc/{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
    wanted |= {f"kernelcalc/{p.name}" for p in package.glob("*.py") if p.name != "__init__.py"}
    absent = sorted(w for w in wanted if f"`{w}`" not in layout)
    assert not absent, f"README.md's Layout table does not name: {absent}"


# ---------------------------------------------------------------------------------------------------
# The code blocks of README.md and of every page


DOC_IDS = [rel(p) for p in DOC_FILES]


@pytest.mark.parametrize("doc", DOC_IDS)
def test_blocks_are_classified(doc):
    """Every block parses into units (fence languages, markers, shell commands all valid)."""
    units(ROOT / doc)


def test_slow_commands_are_documented_and_the_readme_runs_the_fast_ones():
    """SLOW_COMMANDS holds no stale entry (each is documented somewhere), and the README's fast
    commands cover limit, derive, check and --help."""
    used = {u.args[1] for p in DOC_FILES for u in units(p) if u.kind == "cli" and len(u.args) > 1}
    assert SLOW_COMMANDS <= used, SLOW_COMMANDS - used
    readme_fast = {u.args[1] for u in units(ROOT / "README.md") if u.kind == "cli" and not u.slow}
    assert readme_fast >= {"limit", "derive", "check", "--help"}, readme_fast


def _check_readme_fast(ns, outputs, ran):
    """What the README's fast run must have produced, beyond every command exiting 0."""
    assert ns["K"].nngp is None or Path("gram.zarr").exists()
    assert ns["rep"].ok and ns["rep"].lambda_min > 0
    assert ns["sp"].values.shape == (1,) and ns["sp"].error_bound[0] >= 0
    for u in ran:
        if u.kind == "cli" and u.args[1] == "limit" and "--json" not in u.args:
            assert "Assumption 1 holds" in outputs[u.where] and "NTK" in outputs[u.where]
        if u.kind == "cli" and u.args[1] == "check":
            assert "OK" in outputs[u.where]
    assert any(u.kind == "python" for u in ran) and any(u.kind == "cli" for u in ran)


@pytest.mark.parametrize("doc", DOC_IDS)
def test_blocks_run_fast(doc, workdir):
    """The page's fast units, as written, in order."""
    ns, outputs, ran = run_units(ROOT / doc, workdir, slow=False)
    if doc == "README.md":
        with _chdir(workdir):
            _check_readme_fast(ns, outputs, ran)


def _has_slow_units(doc: str) -> bool:
    try:
        return any(u.slow for u in units(ROOT / doc))
    except Exception:      # a malformed page: test_blocks_are_classified reports it; run it here too
        return True


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOC_IDS if _has_slow_units(d)])
def test_blocks_run_slow(doc, workdir):
    """Pages with a slow unit, run completely: every block, in order."""
    run_units(ROOT / doc, workdir, slow=True)


def test_the_block_runner_itself(workdir):
    """The rules above on a made-up page: slow detection, statements that depend on a left-out one,
    "exits N", output files, and the errors for a stray marker or a foreign shell command."""
    page = workdir / "page.md"
    page.write_text(
        "```python\nx = 1\ny = train(x)\nz = y + 1\nw = x + 1\n```\n\n"
        "```bash\nkernelcalc --help\n"
        "kernelcalc check --data raw.csv   # exits 1 (off the sphere)\n"
        "kernelcalc train --steps 1 --plot t.png\n"
        "python examples/nothing.py   # writes a.png and b.json\n```\n"
        "- a list item:\n\n  <!-- docs-test: slow: made up -->\n  ```python\n  v = 2\n  ```\n")
    got = [(u.kind, u.slow, u.exit_code, u.outputs) for u in units(page)]
    assert got == [("python", False, 0, ()), ("python", True, 0, ()), ("python", False, 0, ()),
                   ("python", False, 0, ()), ("cli", False, 0, ()), ("cli", False, 1, ()),
                   ("cli", True, 0, ("t.png",)), ("script", True, 0, ("a.png", "b.json")),
                   ("python", True, 0, ())]
    ns, outputs, ran = run_units(page, workdir, slow=False)
    assert (ns["x"], ns["w"]) == (1, 2) and not {"y", "z", "v"} & set(ns)
    assert [u.kind for u in ran] == ["python", "python", "cli", "cli"]
    assert "NOT OK" in outputs[ran[-1].where]
    with pytest.raises(AssertionError, match="not on the line right before"):
        page.write_text("<!-- docs-test: skip: stray -->\n\ntext\n\n```python\nx = 1\n```\n")
        units(page)
    with pytest.raises(AssertionError, match="neither a kernelcalc nor a python command"):
        page.write_text("```bash\nls -l\n```\n")
        units(page)
