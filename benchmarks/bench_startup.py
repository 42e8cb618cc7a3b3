"""Start-up time of the CLI: ``kernelcalc limit --activation softplus --T 1`` as a fresh process.

Prints, side by side in one run (each the best of ``--repeat`` runs, wall-clock seconds of a whole
``python`` process, and the ratio to the floor ``python -c "import numpy"``):

- ``import numpy`` (the floor), ``import kernelcalc``, ``import kernelcalc.cli``;
- ``limit``, first process: a fresh, empty jax compilation cache folder (``KERNELCALC_JAX_CACHE``);
- ``limit``, second process: the same folder, now filled by the first;
- the same two with the numpy path for small solves switched off (``_NUMPY_MAX_WORK = 0``: every
  solve jit-compiled, as before the start-up work), to show what it saves;
- the largest difference between the JSON outputs of the two paths (must be <= 1e-14).

Usage: ``python benchmarks/bench_startup.py [--repeat 3]`` (run from the repository root; the package is
imported from there).  The machine's load inflates every number alike: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARGS = ["limit", "--activation", "softplus", "--T", "1"]
CLI = "import sys; from kernelcalc.cli import main; sys.argv[0] = 'kernelcalc'; main()"
CLI_COMPILED = ("import sys; import kernelcalc.kernels.ode as o; o._NUMPY_MAX_WORK = 0; "
                "from kernelcalc.cli import main; sys.argv[0] = 'kernelcalc'; main()")


def _env(cache: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("JAX_ENABLE_X64", None)
    if cache is not None:
        env["KERNELCALC_JAX_CACHE"] = cache
    return env


def wall(code: str, args=(), cache: str | None = None) -> tuple[float, str]:
    """Wall-clock seconds of ``python -c code args`` and its stdout."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], env=_env(cache), cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return time.perf_counter() - t0, out.stdout


def first_and_second(code: str, repeat: int) -> tuple[float, float, str]:
    """Best-of-``repeat`` wall times of a first (empty cache folder) and a second process, and the JSON."""
    firsts, seconds, doc = [], [], ""
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="kc-jax-cache-") as cache:
            firsts.append(wall(code, ARGS, cache)[0])
            t, doc = wall(code, ARGS + ["--json"], cache)
            seconds.append(t)
    return min(firsts), min(seconds), doc


def max_difference(a, b) -> float:
    """Largest absolute difference between the numbers of two JSON documents of the same structure."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max((max_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        assert len(a) == len(b)
        return max((max_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b)
    assert a == b, (a, b)
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the best is shown)")
    opts = ap.parse_args()
    r = max(1, opts.repeat)

    def best(code):
        return min(wall(code)[0] for _ in range(r))

    floor = best("import numpy")
    rows = [("python -c 'import numpy' (floor)", floor),
            ("python -c 'import kernelcalc'", best("import kernelcalc")),
            ("python -c 'import kernelcalc.cli'", best("import kernelcalc.cli"))]
    first, second, doc = first_and_second(CLI, r)
    first_c, second_c, doc_c = first_and_second(CLI_COMPILED, r)
    rows += [("limit, first process (empty cache)", first), ("limit, second process", second),
             ("limit, first process, all solves compiled", first_c),
             ("limit, second process, all solves compiled", second_c)]
    print(f"kernelcalc {' '.join(ARGS)}: wall-clock seconds per process, best of {r}")
    for name, t in rows:
        print(f"  {name:<46} {t:7.2f} s  {t / floor:6.1f} x floor")
    print(f"  second process: numpy path / all compiled = {second / second_c:.2f}; target <= 2.5 s: "
          f"{'met' if second <= 2.5 else 'NOT met'} here")
    diff = max_difference(json.loads(doc), json.loads(doc_c))
    print(f"  JSON output, numpy path vs all compiled: largest difference {diff:.1e} (must be <= 1e-14)")


if __name__ == "__main__":
    main()
