"""Benchmark: the build of the collapsed-triangle time grid (``kernels._triangle._unit_grid``), old vs new.

Each (m, n, delta) is built cold by both implementations side by side in one process (the new one's
lru_cache is bypassed with ``__wrapped__``).  The REFERENCE is ``_unit_grid`` (with its
``_interp.barycentric_weights``) as of commit f29e9f9, before the vectorisation, loaded from the git history
of this checkout (``git show``), not copied.  Prints the times, the ratio and the largest difference of
W, V, omega, Q relative to max|W| (resp. max|Q|).

    PYTHONPATH=$PWD python benchmarks/bench_triangle_grid.py
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import time
import types

import numpy as np

from kernelcalc.kernels import _triangle

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_COMMIT = "f29e9f9"
CASES = ((16, 16, 1.0), (24, 24, 0.25), (32, 32, 1.0 / 16), (40, 40, 1.0 / 64), (48, 48, 1.0))


def reference_unit_grid():
    """``_unit_grid`` of :data:`REFERENCE_COMMIT` (its ``_interp`` too), as a package of its own."""
    package = types.ModuleType("_triangle_reference")
    package.__path__ = []
    sys.modules[package.__name__] = package
    for name in ("_interp", "_triangle"):
        source = subprocess.run(["git", "show", f"{REFERENCE_COMMIT}:kernelcalc/kernels/{name}.py"], cwd=ROOT,
                                check=True, capture_output=True, text=True).stdout
        spec = importlib.util.spec_from_loader(f"{package.__name__}.{name}", loader=None)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        exec(compile(source, f"{REFERENCE_COMMIT}:{name}.py", "exec"), module.__dict__)
    return sys.modules[f"{package.__name__}._triangle"]._unit_grid.__wrapped__


def main() -> None:
    old, new = reference_unit_grid(), _triangle._unit_grid.__wrapped__
    print(f"{'m':>3} {'n':>3} {'delta':>8} {'old s':>8} {'new s':>8} {'ratio':>6} {'max dW,dV,domega /max|W|':>26} {'dQ':>8}")
    tot_old = tot_new = 0.0
    for m, n, delta in CASES:
        t0 = time.perf_counter()
        o = old(m, n, delta)
        t1 = time.perf_counter()
        g = new(m, n, delta)
        t2 = time.perf_counter()
        sc = np.max(np.abs(o.W))
        d = max(np.max(np.abs(g.W - o.W)), np.max(np.abs(g.V - o.V)), np.max(np.abs(g.omega - o.omega))) / sc
        dq = np.max(np.abs(g.Q - o.Q))
        assert np.array_equal(g.r, o.r) and np.array_equal(g.v, o.v)
        tot_old += t1 - t0
        tot_new += t2 - t1
        print(f"{m:3d} {n:3d} {delta:8.4g} {t1 - t0:8.3f} {t2 - t1:8.3f} {(t1 - t0) / (t2 - t1):6.1f} {d:26.2e} {dq:8.1e}")
    print(f"total: old {tot_old:.3f} s, new {tot_new:.3f} s, ratio {tot_old / tot_new:.1f} (cold, no memo)")


if __name__ == "__main__":
    main()
