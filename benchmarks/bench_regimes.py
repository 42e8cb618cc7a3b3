"""Issue 17's acceptance benchmark: the three regimes outside "smooth activation on the sphere, σw·T ≤ 3",
side by side in one run.

1. **Off the sphere, first call** (``bench_regimes_offsphere``): cold first-call time on Gaussian rows (norms
   ±30 %) and on standardised rows (zero-mean unit-variance features), against the same rows put on the
   sphere, N = 2000, d = 10, for node softplus, node tanh, resnet softplus (depth 8), tanh MLP (depth 3).
   Target: ratio ≤ 3.
2. **Kinked activations** (``bench_regimes_kinks``): relu, leaky_relu, elu, abs and the user-typed hardtanh and relu6
   Neural ODE (N = 2000 on the sphere; N = 200 and 2000 standardised rows off it), the depth-8 Euler ResNet on
   the sphere, and the Neural ODE on 200 standardised rows in d = 2: time and error estimate against softplus at
   the same rows.
   Target: ≤ 3× softplus, error ≤ 1e-10 (default tol).
3. **Long horizons** (``bench_regimes_horizon``): every built-in activation at σw·T = 10 against T = 1 (N = 200 on
   the sphere). Target: computes, ≤ 10× its own T = 1 time, error ≤ 1e-9.

Every timing is the first call of a fresh Python process (nothing memoised, no jax compilation cache).

Each call runs in its own process with a time limit (``--timeout``: 600 s for the off-sphere and kink cases, which
take seconds; ``--horizon-timeout``: 180 s per horizon case, whose target is 10x a T = 1 time of a few seconds, so a
case past it has missed anyway).  A part that fails is reported and the run goes on; the three tables are printed
again together at the end.

Run: ``python benchmarks/bench_regimes.py [--only offsphere,kinks,horizon]`` (tens of minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import sys
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

PARTS = ("offsphere", "kinks", "horizon")


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy (each part's table, printed again in the summary)."""

    def __init__(self, stream):
        self.stream, self.kept = stream, io.StringIO()

    def write(self, text):
        self.kept.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per off-sphere or kink call at most")
    ap.add_argument("--horizon-timeout", type=float, default=180.0, help="seconds per horizon call at most")
    ap.add_argument("--horizon-repeat", type=int, default=1,
                    help="cold runs of each horizon case (T = 1 and T = 10 alternating): the median is kept")
    ap.add_argument("--offsphere-repeat", type=int, default=3,
                    help="cold runs of each off-sphere call (off and on alternating): the medians are kept")
    args = ap.parse_args(argv)
    if args.horizon_repeat < 1 or args.offsphere_repeat < 1:
        ap.error("--horizon-repeat and --offsphere-repeat must be at least 1")
    parts = args.only.split(",")
    for part in parts:
        if part not in PARTS:
            ap.error(f"unknown part {part!r}; choose from {PARTS}")
    limits = dict(offsphere=args.timeout, kinks=args.timeout, horizon=args.horizon_timeout)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    out, tables = {}, {}
    for part in parts:
        module = __import__(f"bench_regimes_{part}")
        print(f"\n=== {part} ===", flush=True)
        tee, stdout = _Tee(sys.stdout), sys.stdout
        sys.stdout = tee
        try:
            repeat = dict(horizon=args.horizon_repeat, offsphere=args.offsphere_repeat).get(part)
            out[part] = (module.run(timeout=limits[part]) if repeat is None
                         else module.run(timeout=limits[part], repeat=repeat))
        except Exception:                      # a part that breaks does not take the others with it
            print(f"{part}: FAILED\n{traceback.format_exc(limit=3)}")
            out[part] = None
        finally:
            sys.stdout = stdout
        tables[part] = tee.kept.getvalue()
    print(f"\n=== summary (load average {os.getloadavg()[0]:.1f}) ===")
    for part in parts:
        print(f"\n--- {part} ---\n{tables[part].rstrip()}")
    return out


if __name__ == "__main__":
    main()
