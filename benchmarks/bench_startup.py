"""Start-up time of the CLI: ``kernelcalc limit --activation softplus --T 1`` as a fresh process.

Prints, side by side in one run (each the best of ``--repeat`` runs, wall-clock seconds of a whole
``python`` process, and the ratio to the floor ``python -c "import numpy"``):

- ``import numpy`` (the floor), ``import kernelcalc``, ``import kernelcalc.cli``;
- ``limit``, first process: a fresh, empty jax compilation cache folder (``KERNELCALC_JAX_CACHE``);
- ``limit``, second process: the same folder, now filled by the first;
- the same two with the numpy path for small solves switched off (``_NUMPY_MAX_WORK = 0``: every
  solve jit-compiled, as before the start-up work), to show what it saves;
- with ``--before DIR`` (a checkout of an older kernelcalc, e.g. the main branch before this work),
  the same first/second processes with that package, for a before/after comparison in one run;
- the largest difference between the JSON outputs of the two paths (must be <= 1e-14).

Each time is also given as CPU seconds (user + system of the child process), which a busy machine
inflates far less than the wall-clock time.

Usage: ``python benchmarks/bench_startup.py [--repeat 3] [--before DIR]`` (the package is imported from
this checkout).  The machine's load inflates every number alike: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARGS = ["limit", "--activation", "softplus", "--T", "1"]
CLI = "import sys; from kernelcalc.cli import main; sys.argv[0] = 'kernelcalc'; main()"
CLI_COMPILED = ("import sys; import kernelcalc.kernels.ode_grid as o; o._NUMPY_MAX_WORK = 0; "
                "from kernelcalc.cli import main; sys.argv[0] = 'kernelcalc'; main()")


def _env(cache: str | None, root: pathlib.Path = ROOT) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("JAX_ENABLE_X64", None)
    if cache is not None:
        env["KERNELCALC_JAX_CACHE"] = cache
    return env


def wall(code: str, args=(), cache: str | None = None, root: pathlib.Path = ROOT) -> tuple[tuple[float, float], str]:
    """``((wall seconds, CPU seconds), stdout)`` of ``python -c code args`` with the package of ``root``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], env=_env(cache, root), cwd=root, check=True,
                         capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (elapsed, cpu), out.stdout


def _best(times):
    return min(t[0] for t in times), min(t[1] for t in times)


def first_and_second(code: str, repeat: int, root: pathlib.Path = ROOT):
    """Best-of-``repeat`` (wall, CPU) of a first (empty cache folder) and a second process, and the JSON."""
    firsts, seconds, doc = [], [], ""
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="kc-jax-cache-") as cache:
            firsts.append(wall(code, ARGS, cache, root)[0])
            t, doc = wall(code, ARGS + ["--json"], cache, root)
            seconds.append(t)
    return _best(firsts), _best(seconds), doc


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
    ap.add_argument("--before", type=pathlib.Path, default=None, metavar="DIR",
                    help="a checkout of an older kernelcalc to compare with (its package is imported from DIR)")
    opts = ap.parse_args()
    r = max(1, opts.repeat)

    def best(code):
        return _best([wall(code)[0] for _ in range(r)])

    floor = best("import numpy")
    rows = [("python -c 'import numpy' (floor)", floor),
            ("python -c 'import kernelcalc'", best("import kernelcalc")),
            ("python -c 'import kernelcalc.cli'", best("import kernelcalc.cli"))]
    first, second, doc = first_and_second(CLI, r)
    first_c, second_c, doc_c = first_and_second(CLI_COMPILED, r)
    rows += [("limit, first process (empty cache)", first), ("limit, second process", second),
             ("limit, first process, all solves compiled", first_c),
             ("limit, second process, all solves compiled", second_c)]
    docs = {"all solves compiled": doc_c}
    if opts.before is not None:
        first_b, second_b, docs["--before"] = first_and_second(CLI, r, opts.before.resolve())
        rows += [("limit, first process, --before", first_b), ("limit, second process, --before", second_b)]
    print(f"kernelcalc {' '.join(ARGS)}: seconds per process (wall-clock and CPU), best of {r}")
    print(f"  {'':<46} {'wall':>8}  {'':>12}  {'CPU':>8}  {'':>12}")
    for name, (t, cpu) in rows:
        print(f"  {name:<46} {t:7.2f} s  {t / floor[0]:6.1f} x floor  {cpu:7.2f} s  {cpu / floor[1]:6.1f} x floor")
    print(f"  second process: this / all compiled = {second[0] / second_c[0]:.2f} (wall), "
          f"{second[1] / second_c[1]:.2f} (CPU)"
          + (f"; this / --before = {second[0] / second_b[0]:.2f} (wall), {second[1] / second_b[1]:.2f} (CPU)"
             if opts.before is not None else ""))
    print(f"  target: second process <= 2.5 s wall: {'met' if second[0] <= 2.5 else 'NOT met'} here "
          f"({second[0]:.2f} s wall, {second[1]:.2f} s CPU)")
    for what, other in docs.items():
        diff = max_difference(json.loads(doc), json.loads(other))
        print(f"  JSON output vs {what}: largest difference {diff:.1e} (must be <= 1e-14)")


if __name__ == "__main__":
    main()
