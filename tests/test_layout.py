"""The package layout reads as the pipeline: no import cycle, no import that climbs back up.

Layers, lowest first: the root utilities (``_validation``, ``_results``, ``_x64``, ``data``, ``plotting``)
-> ``theory`` -> ``kernels`` -> ``empirical`` -> ``training`` -> ``studies`` -> ``cli``. A module may
import from its own layer or a lower one, never from the package top (``kernelcalc/__init__``).
Function-local imports count: a lazy import is still an edge of the graph.
"""

from __future__ import annotations

import ast
import pathlib

import kernelcalc

ROOT = pathlib.Path(kernelcalc.__file__).parent
LAYERS = {"_validation": 0, "_results": 0, "_x64": 0, "_lazy": 0, "data": 0, "plotting": 0, "theory": 1, "kernels": 2, "inference": 2.5, "empirical": 3,
          "training": 4, "studies": 5, "cli": 6, "_blas": 0}


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (p, is_pkg)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, (path, is_pkg) in mods.items():
        pkg = name.split(".") if is_pkg else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if not base.startswith("kernelcalc"):
                    continue
                for alias in node.names:       # ``from pkg import submodule`` depends on the submodule only
                    sub = f"{base}.{alias.name}"
                    deps.add(sub if sub in mods else base)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("kernelcalc")}
        graph[name] = {d for d in deps if d != name}
    return graph


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_layout_has_the_pipeline_folders():
    for folder in ("theory", "kernels", "empirical", "training", "studies", "cli"):
        assert (ROOT / folder / "__init__.py").is_file(), folder
    flat = sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "__init__")
    assert flat == sorted(k for k in LAYERS if (ROOT / f"{k}.py").exists()), flat


def test_no_upward_import_and_nothing_imports_the_package_top():
    bad = []
    for name, deps in _graph().items():
        if name == "kernelcalc":
            continue
        assert _layer(name) is not None, f"{name} is in no layer of {sorted(LAYERS)}"
        for d in deps:
            if d == "kernelcalc":
                bad.append(f"{name} imports the package top")
            elif _layer(d) > _layer(name):
                bad.append(f"{name} (layer {_layer(name)}) imports {d} (layer {_layer(d)})")
    assert not bad, "\n".join(bad)


def test_import_graph_has_no_cycle():
    graph = _graph()
    # a package __init__ re-exporting its own submodules is not a cycle of the pipeline
    edges = {n: {d for d in deps if not (n != "kernelcalc" and d.startswith(n + "."))} for n, deps in graph.items()}
    edges = {n: {d for d in ds if d in edges} for n, ds in edges.items()}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for d in sorted(edges[n]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [])
    assert not cycles, "\n".join(cycles)


def test_graph_builder_finds_real_edges():
    """The graph builder is not vacuous: it sees top-level, relative and function-local imports."""
    graph = _graph()
    assert "kernelcalc.theory.activations" in graph["kernelcalc.theory.assumptions"]
    assert "kernelcalc.training._common" in graph["kernelcalc.training.run"]
    assert "kernelcalc.kernels._tiles" in graph["kernelcalc.kernels._gram"]   # ``from . import _tiles`` (lazy)


def test_every_module_compiles_without_warnings():
    """No module source raises a compile-time warning (an invalid escape such as ``\\m`` in a non-raw docstring with
    TeX: a DeprecationWarning today, a SyntaxError in a later Python); checked on a planted one."""
    import warnings

    def warned(src: str, name: str) -> list:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compile(src, name, "exec")
        return [f"{name}:{w.lineno}: {w.message}" for w in caught]

    assert warned('def f():\n    """$\\max(a)$"""\n', "planted.py")        # the check can fail
    root = pathlib.Path(kernelcalc.__file__).parent
    bad = [msg for p in sorted(root.rglob("*.py")) for msg in warned(p.read_text(), str(p.relative_to(root)))]
    assert not bad, bad
