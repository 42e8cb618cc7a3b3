"""The documentation: the site builds with --strict, the API page covers kernelcalc.__all__, and the
code blocks of README.md and of the site's pages run as written.

Code blocks (```python / ```bash fences) are run unless the line before the fence is a comment
``<!-- docs-test: skip: REASON -->`` (an install command, the test suite itself, a minutes-long
example); a page containing ``<!-- docs-test: slow -->`` runs only in the slow suite (its blocks
share one namespace, so the whole page runs or none of it). Bash lines are ``kernelcalc ...``
commands, run in-process by click's CliRunner in a scratch folder holding ``X.npy`` / ``X.csv``;
any other bash line must sit in a skipped block. Output blocks (```text) are not run.
"""

import ast
import importlib.util
import re
import shlex
import subprocess
import sys
from contextlib import chdir as _chdir
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md"))
FENCE = re.compile(r"(?:^<!--\s*docs-test:\s*(?P<marker>[^>]*?)\s*-->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```",
                   re.M | re.S)

# README command-line lines that take minutes (a training run, a sweep): the slow suite runs them.
SLOW_COMMANDS = {"train", "width-sweep", "sweep-T", "flow-gap", "divergent-flow", "compare-models"}


def blocks(path: Path):
    """(language, body, skip_reason or None) of each fenced code block of a markdown file."""
    out = []
    for m in FENCE.finditer(path.read_text()):
        marker = m.group("marker")
        reason = None
        if marker is not None:
            assert marker.startswith("skip:") and marker[5:].strip(), \
                f"{path.name}: a docs-test marker is 'skip: REASON', got {marker!r}"
            reason = marker[5:].strip()
        out.append((m.group("lang"), m.group("body"), reason))
    return out


def command_lines(body: str):
    """The shell commands of a bash block, comments removed."""
    return [ln for ln in (shlex.split(line, comments=True) for line in body.splitlines()) if ln]


def is_slow_page(path: Path) -> bool:
    return "<!-- docs-test: slow -->" in path.read_text()


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory):
    """A scratch folder with the data files the documented commands name."""
    from kernelcalc.data import sphere_normalise

    d = tmp_path_factory.mktemp("docs_cli")
    rng = np.random.default_rng(0)
    X = sphere_normalise(rng.normal(size=(5, 3)))
    np.save(d / "X.npy", X)
    np.savetxt(d / "X.csv", X, delimiter=",")
    np.save(d / "y.npy", rng.normal(size=5))
    np.savetxt(d / "raw.csv", 3.0 * rng.normal(size=(5, 3)), delimiter=",")     # off the sphere
    x = np.linspace(-1, 1, 40)
    np.savetxt(d / "xy.csv", np.stack([x, x**2], axis=1), delimiter=",")       # y = x^2, last column
    return d


_CLI_OUTPUT: dict = {}   # the same command documented twice runs once per session


def run_cli(args, cwd: Path):
    """Run one documented ``kernelcalc ...`` line (``> FILE`` redirects stdout) and return its output."""
    from click.testing import CliRunner

    from kernelcalc.cli import main

    assert args[0] == "kernelcalc", f"documented shell line is not a kernelcalc command: {shlex.join(args)}"
    args, redirect = (args[:args.index(">")], args[args.index(">") + 1]) if ">" in args else (args, None)
    key = (tuple(args), str(cwd))
    if key not in _CLI_OUTPUT:
        with _chdir(cwd):
            res = CliRunner().invoke(main, args[1:], catch_exceptions=False)
        # `check` exits 1 when the theory does not apply; the documented examples all apply.
        assert res.exit_code == 0, f"{shlex.join(args)} exited {res.exit_code}:\n{res.output[-2000:]}"
        _CLI_OUTPUT[key] = res.output
    if redirect:
        (cwd / redirect).write_text(_CLI_OUTPUT[key])
    return _CLI_OUTPUT[key]


def run_python(body: str, name: str, cwd: Path, namespace: dict):
    with _chdir(cwd):
        exec(compile(body, name, "exec"), namespace)  # noqa: S102 -- our own documentation


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
    # The docstrings' maths reached the page as arithmatex spans for KaTeX, no bare $...$ left,
    # and the Sphinx roles of the docstrings were turned into code.
    assert api.count('class="arithmatex"') > 50
    text = re.sub(r'<(span|div) class="arithmatex">.*?</\1>|<(code|pre)[^>]*>.*?</\2>', "", api, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    assert "$" not in text, re.search(r".{0,80}\$.{0,80}", text).group()
    assert not re.search(r":(func|class|meth|mod|attr|data|exc|obj):", text)


# ---------------------------------------------------------------------------------------------------
# README code blocks


def readme_blocks():
    return blocks(ROOT / "README.md")


def test_readme_blocks_are_all_classified():
    """Each README block is run below or carries a skip reason; its shell lines are kernelcalc
    commands, so the tests below cover them."""
    langs = [lang for lang, _, reason in readme_blocks() if reason is None]
    assert langs.count("python") == 2 and "bash" in langs, langs
    for lang, body, reason in readme_blocks():
        assert lang in ("bash", "python", "text", ""), lang
        if lang == "bash" and reason is None:
            for args in command_lines(body):
                assert args[0] == "kernelcalc", args


def readme_cli_lines(slow: bool):
    lines = []
    for lang, body, reason in readme_blocks():
        if lang == "bash" and reason is None:
            for args in command_lines(body):
                if (len(args) > 1 and args[1] in SLOW_COMMANDS) == slow:
                    lines.append(args)
    return lines


def test_readme_cli_fast(cli_dir):
    """limit, derive, check, --help exactly as written in the README (check on a 5-point X.csv)."""
    lines = readme_cli_lines(slow=False)
    assert {a[1] for a in lines} >= {"limit", "derive", "check", "--help"}
    for args in lines:
        out = run_cli(args, cli_dir)
        if args[1] == "limit" and "--json" not in args:
            assert "Assumption 1 holds" in out and "NTK" in out
        if args[1] == "check":
            assert "OK" in out


@pytest.mark.slow
def test_readme_cli_slow(cli_dir):
    """The minutes-long README commands (train, width-sweep, sweep-T, flow-gap, divergent-flow)."""
    lines = readme_cli_lines(slow=True)
    assert {a[1] for a in lines} == SLOW_COMMANDS
    for args in lines:
        run_cli(args, cli_dir)


def readme_python():
    """The quick tour (the first Python block; the second, the large-data block, runs after it)."""
    return [b for lang, b, r in readme_blocks() if lang == "python" and r is None][0]


def readme_scale_python():
    return [b for lang, b, r in readme_blocks() if lang == "python" and r is None][1]


def test_readme_python_fast(tmp_path):
    """The README's Python block up to the first training call (kernels, analyse, derive, check);
    the rest (train, sweep_T, flow_gap: minutes) runs in the slow test below."""
    body = readme_python()
    head = body[:body.index("r = kc.train(")]
    ns = {}
    run_python(head, "README.md[python, head]", tmp_path, ns)
    assert ns["K"].ntk.shape == (50, 50) and ns["rep"].ok
    run_python(readme_scale_python(), "README.md[python, large data]", tmp_path, ns)   # on the tour's X
    assert ns["K"].nngp is None or (tmp_path / "gram.zarr").exists()
    assert ns["sp"].values.shape == (1,) and ns["sp"].error_bound[0] >= 0


@pytest.mark.slow
def test_readme_python_slow(tmp_path):
    run_python(readme_python(), "README.md[python]", tmp_path, {})


# ---------------------------------------------------------------------------------------------------
# The pages' code blocks


def page_ids():
    return [p.relative_to(DOCS).as_posix() for p in PAGES]


@pytest.mark.parametrize("rel", page_ids())
def test_page_blocks_are_classified(rel):
    for lang, body, reason in blocks(DOCS / rel):
        assert lang in ("bash", "python", "text"), f"{rel}: fence language {lang!r} (use bash, python or text)"
        if lang == "bash" and reason is None:
            for args in command_lines(body):
                assert args[0] == "kernelcalc", f"{rel}: {shlex.join(args)} needs a docs-test skip reason"


def _run_page(rel, cli_dir):
    ns = {}
    for i, (lang, body, reason) in enumerate(blocks(DOCS / rel)):
        if reason is not None or lang == "text":
            continue
        if lang == "python":
            run_python(body, f"docs/{rel}[block {i}]", cli_dir, ns)
        else:
            for args in command_lines(body):
                run_cli(args, cli_dir)


@pytest.mark.parametrize("rel", [r for r in page_ids() if not is_slow_page(DOCS / r)])
def test_page_blocks_run(rel, cli_dir):
    _run_page(rel, cli_dir)


@pytest.mark.slow
@pytest.mark.parametrize("rel", [r for r in page_ids() if is_slow_page(DOCS / r)])
def test_page_blocks_run_slow(rel, cli_dir):
    _run_page(rel, cli_dir)
