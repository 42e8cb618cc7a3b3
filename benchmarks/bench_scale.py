"""Data-set scale, measured in one run (issue 9 acceptance):

- N = 20 000 points on the sphere |x|^2 = d (d = 10): ``node_kernel(softplus, T=1,
  outputs=("ntk",))`` Gram time and peak RSS (targets <= 60 s, <= 10 GB);
- ``spectrum`` lambda_min of that Gram (target <= 10 min) with its rigorous error bound;
- then ``benchmarks/bench_scale_speed.py``'s ``main()`` (N = 2000 ratios against the RBF floor,
  on and off the sphere), when that file exists.

The machine load (``os.getloadavg``) is printed before and after: timings on a shared machine
are inflated by it.  Run: ``python benchmarks/bench_scale.py [--n N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

import kernelcalc as kc
from kernelcalc.studies.spectrum import spectrum
from kernelcalc.data import sphere_normalise


def _rss_gb() -> float:
    """Peak resident set size of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} CPUs"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=10)
    args = ap.parse_args(argv)
    n, d = args.n, args.d
    print(f"bench_scale: N = {n}, d = {d}; {_load()}", flush=True)
    x = np.random.default_rng(0).standard_normal((n, d))
    x = sphere_normalise(x)
    rss0 = _rss_gb()

    t = time.perf_counter()
    K = kc.node_kernel(x, activation="softplus", T=1.0, outputs=("ntk",), progress=False)
    t_gram = time.perf_counter() - t
    rss_gram = _rss_gb()
    print(f"node softplus NTK Gram, outputs=('ntk',): {t_gram:.1f} s (incl. jit compile), peak RSS {rss_gram:.2f} GB "
          f"(before: {rss0:.2f} GB; one {n}x{n} float64 array = {8 * n * n / 1e9:.2f} GB); "
          f"path {K.info['path']}, {K.info['tiles']} tiles of {K.info['tile']}, "
          f"error_estimate {K.info['error_estimate']:.2e}", flush=True)

    t = time.perf_counter()
    sp = spectrum(K.ntk, k=1, which="smallest")
    t_spec = time.perf_counter() - t
    print(f"spectrum lambda_min: {t_spec:.1f} s, method {sp.method}: lambda_min = {sp.values[0]:.10e} "
          f"+- {sp.error_bound[0]:.2e} (attributed: {sp.attributed[0]}; residual {sp.info['residuals'][0]:.2e}, "
          f"rounding {sp.info['rounding'][0]:.2e}); peak RSS {_rss_gb():.2f} GB", flush=True)
    print(f"targets: Gram <= 60 s: {t_gram:.1f} s; RSS <= 10 GB: {rss_gram:.2f} GB; spectrum <= 600 s: {t_spec:.1f} s",
          flush=True)
    print(f"after: {_load()}", flush=True)
    del K

    speed = Path(__file__).with_name("bench_scale_speed.py")
    if speed.exists():
        spec = importlib.util.spec_from_file_location("bench_scale_speed", speed)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        print(f"\n--- {speed.name} ---", flush=True)
        try:
            mod.main([])
        except TypeError:
            mod.main()
    else:
        print(f"({speed.name} not present: N = 2000 speed ratios not run)")


if __name__ == "__main__":
    main(sys.argv[1:])
