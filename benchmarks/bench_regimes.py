"""Issue 17's acceptance benchmark: the three regimes outside "smooth activation on the sphere, σw·T ≤ 3",
side by side in one run.

1. **Off the sphere, first call** (``bench_regimes_offsphere``): cold first-call time on Gaussian rows (norms
   ±30 %) and on standardised rows (zero-mean unit-variance features), against the same rows put on the
   sphere, N = 2000, d = 10, for node softplus, node tanh, resnet softplus (depth 8), tanh MLP (depth 3).
   Target: ratio ≤ 3.
2. **Kinked activations** (``bench_regimes_kinks``): relu, leaky_relu, elu and abs Neural ODE (N = 2000 on the
   sphere) time and error estimate against softplus. Target: ≤ 3× softplus, error ≤ 1e-10 (default tol).
3. **Long horizons** (``bench_regimes_horizon``): every built-in activation at σw·T = 10 against T = 1 (N = 200 on
   the sphere). Target: computes, ≤ 10× its own T = 1 time, error ≤ 1e-9.

Every timing is the first call of a fresh Python process (nothing memoised, no jax compilation cache).

Run: ``python benchmarks/bench_regimes.py [--only offsphere,kinks,horizon]`` (tens of minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

PARTS = ("offsphere", "kinks", "horizon")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    args = ap.parse_args(argv)
    out = {}
    for part in args.only.split(","):
        if part not in PARTS:
            ap.error(f"unknown part {part!r}; choose from {PARTS}")
        module = __import__(f"bench_regimes_{part}")
        print(f"\n=== {part} ===", flush=True)
        out[part] = module.run()
    return out


if __name__ == "__main__":
    main()
