"""The large-q rule outside jit (issue 17, sigma_w*T = 10): the compiled five-regime block against the eager dispatch
by regime (kernelcalc/theory/largeq_dispatch.py), on the covariances a real kernel asks for.

1. A child process computes ``node_kernel`` (softplus, sigma_w*T = 10, N points on the sphere) and records every
   covariance ``TabulatedRule.values_np`` receives, call by call (the kinked panels' ``_dual_np``).
2. Two fresh children, one per evaluation (``block``: ``padded_blocked`` over the rule's ``_block``, the path before
   the dispatch; ``dispatch``: ``eager_values``), tables built first: the first call on a sample of 2048 recorded
   covariances (cold: trace + compile of what it meets) and the replay of every recorded call, twice (the second pass
   warm: the per-(C, Cdot) cost), wall and CPU seconds; and the largest difference between the two, relative to the
   value, on every 7th call.

Measured 2026-12-06 20:17-20:44 (dispatch branch, load average 3-7 on 2 cores; the record of a softplus T = 10,
N = 200 kernel: 2666 calls, 3.05e6 covariances: far 18 %, near 25 %, mixed 40 %, low 18 %, quadrature 0)::

    block     first call 7.2-7.4 s CPU (compile), warm 11.8-12.5 us per (C, Cdot) CPU
    dispatch  first call 5.0-5.1 s CPU (four regimes), warm 8.3-8.5 us per (C, Cdot) CPU
    largest difference 2.6e-16 of the value

This script at its defaults (N = 60: the same 2666 calls and 3.05e6 covariances as N = 200, the evaluations do not
grow with N), 21:11-21:18, load average 9 (cold first call; pass 1 includes the dispatch's later compiles)::

              first call s (CPU)    pass 1 us (CPU)    pass 2 us (CPU)
    block         20.43 (  7.75)     23.86 ( 10.62)     19.44 ( 10.78)
    dispatch      14.11 (  5.81)     13.14 (  7.34)     10.32 (  6.94)
    ratio block / dispatch: first call 1.33x CPU, warm 1.55x CPU; largest difference 2.5e-16 of the value

Run: ``python benchmarks/bench_largeq_dispatch.py [--n 60] [--T 10] [--activation softplus]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_RECORD = r"""
import sys, numpy as np, pickle
import kernelcalc as kc
from kernelcalc.data import sphere_normalise
from kernelcalc.theory import largeq_table as lt
act, T, n, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
calls, orig = [], lt.TabulatedRule.values_np
def values_np(self, q1, q2, c):
    calls.append((self, [np.array(v, np.float64).ravel() for v in np.broadcast_arrays(q1, q2, c)]))
    return orig(self, q1, q2, c)
lt.TabulatedRule.values_np = values_np
X = sphere_normalise(np.random.default_rng(0).normal(size=(n, 10)))
kc.node_kernel(X, activation=act, T=T)
pickle.dump(calls, open(path, "wb"))
print(len(calls), sum(c[1][0].size for c in calls))
"""

_TIME = r"""
import json, sys, time, pickle, numpy as np
import kernelcalc
from kernelcalc._x64 import scope
from kernelcalc.theory import largeq_table as lt
from kernelcalc.theory.gaussian_rules import padded_blocked
from kernelcalc.theory.largeq_dispatch import eager_values
which, path = sys.argv[1], sys.argv[2]
calls = pickle.load(open(path, "rb"))
rule = calls[0][0]
flat = [np.concatenate([c[1][i] for c in calls]) for i in range(3)]
sample = np.random.default_rng(0).choice(flat[0].size, min(2048, flat[0].size), replace=False)
block = lambda *a: padded_blocked(lt._block(rule, True), *a, points=rule.memory_points)
dispatch = lambda *a: eager_values(rule, *a, True)
fn = block if which == "block" else dispatch
out = dict(which=which, calls=len(calls), evaluations=int(flat[0].size))
with scope():
    rule.table_error                     # every table built before the clock starts
    t, c = time.perf_counter(), time.process_time()
    fn(*(a[sample] for a in flat))
    out.update(first_wall=time.perf_counter() - t, first_cpu=time.process_time() - c)
    for p in range(2):
        t, c = time.perf_counter(), time.process_time()
        for _, args in calls:
            fn(*args)
        out[f"pass{p}_us"] = 1e6 * (time.perf_counter() - t) / flat[0].size
        out[f"pass{p}_cpu_us"] = 1e6 * (time.process_time() - c) / flat[0].size
    if which == "dispatch":
        worst = 0.0
        for _, args in calls[::7]:
            for a, b in zip(block(*args), dispatch(*args)):
                worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300))))
        out["max_rel_difference"] = worst
print(json.dumps(out))
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--T", type=float, default=10.0)
    ap.add_argument("--activation", default="softplus")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "calls.pkl")
        rec = subprocess.run([sys.executable, "-c", _RECORD, args.activation, str(args.T), str(args.n), path],
                             capture_output=True, text=True, check=True)
        print(f"{args.activation}, sigma_w*T = {args.T:g}, N = {args.n}: {rec.stdout.split()[0]} calls of values_np, "
              f"{rec.stdout.split()[1]} covariances; load average {os.getloadavg()[0]:.1f}")
        rows = []
        for which in ("block", "dispatch"):
            p = subprocess.run([sys.executable, "-c", _TIME, which, path], capture_output=True, text=True, check=True)
            rows.append(json.loads(p.stdout.splitlines()[-1]))
    print(f"{'':9s} {'first call s (CPU)':>20s} {'pass 1 us (CPU)':>18s} {'pass 2 us (CPU)':>18s}")
    for r in rows:
        print(f"{r['which']:9s} {r['first_wall']:9.2f} ({r['first_cpu']:6.2f}) {r['pass0_us']:9.2f} "
              f"({r['pass0_cpu_us']:6.2f}) {r['pass1_us']:9.2f} ({r['pass1_cpu_us']:6.2f})")
    b, d = rows
    print(f"ratio block / dispatch: first call {b['first_cpu'] / d['first_cpu']:.2f}x CPU, warm "
          f"{b['pass1_cpu_us'] / d['pass1_cpu_us']:.2f}x CPU; largest difference {d['max_rel_difference']:.1e} of the value")


if __name__ == "__main__":
    main()
