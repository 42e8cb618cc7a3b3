"""Per-evaluation cost and accuracy of the large-q rules, side by side in one run (issue 17, part 3).

For each activation (default tanh and softplus) and q = 10, 1e2, 1e4, 1e6, on batches of 2048 covariances:

- ``quadrature``: kernelcalc.theory.largeq_table.TabulatedRule(far=False), the rule as it was before the moment
  series (one block: outer trapezoid sums with the tabulated inner average), at the step choose_tabulated picks for
  tol 1e-13;
- ``hybrid``: the same rule with ``far=True, near=False``: the moment series of kernelcalc.theory.largeq_far
  where min(q1, q2)(1 - r^2) >= V0, the quadrature in chunks of 64 elsewhere (the default before the near tables);
- ``+near``: the default rule (``far=True, near=True``): in the near-parallel band, where min(q1, q2) >= Q_NEAR, the
  tables of kernelcalc.theory.largeq_near instead of the quadrature (gelu family: softplus, silu).  Its column also
  prints the CPU time (process_time, best of 7: less sensitive to the other processes on a busy machine) of both
  hybrid and +near, and ``near vs hybrid``: their largest difference on the batch, relative to the norms.

A third mix at q >= 1e3, ``mixed``: q2 in [1, 100) (one variance below Q_NEAR: the tables plus one trapezoid cross
term).  Two correlation mixes per q: ``generic`` (r uniform in [-1, 1], half the pairs at q2 = 2 q: the far regime for
most pairs at q >= 1e3) and ``parallel`` (1 - r log-uniform in [1e-8, 1e-2] * V0 / q: every pair in the
near-parallel band, the worst case of the hybrid).  Time: microseconds per (C, Cdot), the best of 3 calls after
the compiling one (``first``: the compiling call itself, per evaluation; the tables are built once per process
before, their build time is printed).  Accuracy: ``parallel-line err``: r = 1 exactly, against an mpmath 1-D
integral, relative to sqrt(E f(a)^2 E f(b)^2); ``series vs quadrature``: the largest difference between the two
rules on the generic batch, relative to the same norms.  Also the Mehler/Hermite series where it converges within
8192 terms.  The machine's load (uptime) is printed: compare only numbers of one run.
Usage: python benchmarks/bench_largeq_table.py [tanh softplus sigmoid silu]

Measured 2026-12-06 16:44-16:48 (nearband branch, load 5-6.6; CPU times best of 7, wall within 10 % of them),
softplus, us per (C, Cdot)::

    q     mix       quadrature  hybrid  +near  hybrid/+near  near vs hybrid
    1e2   parallel     83.3      36.2    4.2      8.6          2.6e-15
    1e4   parallel     84.7      37.7    4.4      8.4          3.6e-16
    1e6   parallel     83.9      33.9    4.2      8.4          3.3e-16
    1e4   mixed        85.4      37.1   10.3      3.6          4.1e-16
    1e6   mixed        81.1      35.8   10.0      3.6          2.9e-16
    10    parallel     82.4      38.7   38.2      1.0          (tables do not apply: max(q1, q2) < Q_NEAR)
    1e4   generic      83.2       4.1    3.2      1.3          (99 % far series)

The low tables (``+low``: ``kernelcalc.theory.largeq_low``, the default since; ``+near`` is then the rule with
``low=False``), lowq branch, 2026-12-06 18:22-18:27, load 2.8-3.9, softplus, CPU us per (C, Cdot), best of 7::

    q     mix       hybrid  +near  +low   hybrid/+low   low vs hybrid
    1     parallel   35.1    36.4   5.9      6.4          2.6e-15   (both variances < Q_NEAR: the low tables)
    10    parallel   35.3    36.1   5.7      6.3          1.1e-15
    50    parallel   35.1    22.5   4.8      7.4          1.4e-15   (q2 = 2q: half the pairs mixed)
    1e2   parallel   36.9     5.1   5.2      7.1          2.6e-15   (near tables: unchanged)
    1e4   mixed      39.1    11.1   5.9      6.6          1.3e-04   (the hybrid's trapezoid cross term is wrong here:
    1e6   mixed      38.4    10.9   5.8      6.6          1.2e-04    q2 ~ 1-100 against q1 = 1e4-1e6 near parallel;
                                                                    the low tables match nested mpmath to 1e-15)

Low tables built in 3.3 s (both derivatives), near tables in 3.2 s, remainder tables in 1.4 s.
Near tables built in 3.3 s (softplus, both derivatives) at load 6.6.  silu (16:20-16:34, load 7-8, CPU): near band
33.3-33.7 -> 4.2-4.7 us (7-8x).  (The parallel-line error of 4.3e-13 printed at q = 1e6 is the mpmath reference's
own: the hybrid and the tables agree to 3e-16 there, and a 30-digit mpmath with breakpoints at 3 and 30 agrees with
both.)
"""
import math
import os
import sys
import time

import jax
import mpmath as mp
import numpy as np

from kernelcalc._x64 import scope
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.gaussian import HermiteRule, hermite_order
from kernelcalc.theory.largeq import ASYMPTOTES
from kernelcalc.theory.largeq_far import V0, far_mask, moment_table
from kernelcalc.theory.largeq_low import low_mask, low_table
from kernelcalc.theory.largeq_near import near_mask, near_table
from kernelcalc.theory.largeq_table import TabulatedRule, remainder_table

MP = {"softplus": (lambda x: mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x)), lambda x: 1 / (1 + mp.exp(-x))),
      "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2),
      "silu": (lambda x: x / (1 + mp.exp(-x)), lambda x: 1 / (1 + mp.exp(-x)) * (1 + x / (1 + mp.exp(x)))),
      "sigmoid": (lambda x: 1 / (1 + mp.exp(-x)), lambda x: mp.exp(-x) / (1 + mp.exp(-x)) ** 2)}
STEP = {"tanh": 0.22, "softplus": 0.4, "silu": 0.4, "sigmoid": 0.4}     # what choose_tabulated picks for tol 1e-13
N = 2048


def parallel(f, q1, q2):
    with mp.workdps(15):
        k, s = mp.sqrt(mp.mpf(q2) / q1), mp.sqrt(q1)
        cuts = sorted({x for x in (1, 10, s, 4 * s) if x < 12 * s} | {12 * s})
        pts = [-x for x in reversed(cuts)] + [0] + cuts
        d = lambda a: mp.exp(-a * a / (2 * q1)) / mp.sqrt(2 * mp.pi * q1)   # noqa: E731
        return [float(mp.quad(g, pts)) for g in (lambda a: f(a) * f(k * a) * d(a), lambda a: f(a) ** 2 * d(a),
                                                  lambda a: f(k * a) ** 2 * d(a))]


def timed(fn, *args, cpu=False):
    t = time.perf_counter()
    fn(*args)[0].block_until_ready()
    first = time.perf_counter() - t
    best = bcpu = math.inf
    for _ in range(7 if cpu else 3):
        t, c = time.perf_counter(), time.process_time()
        fn(*args)[0].block_until_ready()
        best, bcpu = min(best, time.perf_counter() - t), min(bcpu, time.process_time() - c)
    return (first / N * 1e6, best / N * 1e6) + ((bcpu / N * 1e6,) if cpu else ())


def batches(q, rng):
    q1 = np.full(N, q)
    q2 = np.where(np.arange(N) % 2 == 0, q, 2 * q)
    generic = rng.uniform(-1, 1, N)
    parallel_r = 1.0 - 10 ** rng.uniform(-8, -2, N) * V0 / q
    out = {"generic": (q1, q2, generic * np.sqrt(q1 * q2)),
           "parallel": (q1, q2, np.clip(parallel_r, -1, 1) * np.sign(generic) * np.sqrt(q1 * q2))}
    if q >= 1e3:        # "mixed": q2 log-uniform in [1, 100), q2 (1 - r^2) log-uniform in [1e-3, 1] q2
        qs = 10 ** rng.uniform(0, 2, N)
        r = np.sqrt(1.0 - 10 ** rng.uniform(-3, 0, N)) * np.sign(generic)
        out["mixed"] = (q1, qs, r * np.sqrt(q1 * qs))
    return out


def main(names):
    rng = np.random.default_rng(0)
    print(f"load: {os.getloadavg()[0]:.1f} (1 min), 2048 covariances per batch, V0 = {V0:g}")
    for name in names:
        act = resolve_activation(name)
        asy = ASYMPTOTES[name]
        with scope():
            t = time.perf_counter()
            remainder_table(asy, False), remainder_table(asy, True)
            t1 = time.perf_counter()
            moment_table(asy, False), moment_table(asy, True)
            t2 = time.perf_counter()
            nr = TabulatedRule(asy, STEP[name], low=False)
            lw = TabulatedRule(asy, STEP[name])
            if nr.near_on:
                near_table(asy, False), near_table(asy, True)
            t3 = time.perf_counter()
            if lw.low_on:
                low_table(asy, False), low_table(asy, True)
            print(f"{name}: remainder tables built in {t1 - t:.2f} s, moment tables in {t2 - t1:.2f} s"
                  + (f", near tables in {t3 - t2:.2f} s" if nr.near_on else "")
                  + (f", low tables in {time.perf_counter() - t3:.2f} s" if lw.low_on else ""))
            old, new = TabulatedRule(asy, STEP[name], far=False, near=False), TabulatedRule(asy, STEP[name], near=False)
            f_old = jax.jit(lambda a, b, cc: old.expect(a, b, cc))
            f_new = jax.jit(lambda a, b, cc: new.expect(a, b, cc))
            f_near = jax.jit(lambda a, b, cc: nr.expect(a, b, cc))
            f_low = jax.jit(lambda a, b, cc: lw.expect(a, b, cc))
            for q in (1.0, 10.0, 50.0, 1e2, 1e4, 1e6):
                K = hermite_order((act.numpy_fn, act.numpy_derivative), 2 * q)
                herm = "hermite: > 8192 terms"
                if K is not None:
                    rule = HermiteRule(K)
                    f = jax.jit(lambda a, b, cc: rule.expect_pairs(((act.jax_fn, act.jax_fn), (act.jax_derivative, act.jax_derivative)), a, b, cc))
                    q1, q2, c = batches(q, rng)["generic"]
                    herm = f"hermite K={K}: {timed(f, q1, q2, c)[1]:.1f} us"
                ref = [parallel(g, q, 2 * q) for g in MP[name]]
                got = [float(np.asarray(v)[0]) for v in new.expect(np.array([q]), np.array([2 * q]), np.array([math.sqrt(2) * q]))]
                err = max(abs(g - r[0]) / math.sqrt(r[1] * r[2]) for g, r in zip(got, ref))
                print(f"  q = {q:7.0e}  {herm};  parallel-line err {err:.1e}")
                for mix, (q1, q2, c) in batches(q, rng).items():
                    far = float(np.mean(np.asarray(far_mask(q1, q2, c, xp=np))))
                    a_first, a = timed(f_old, q1, q2, c)
                    b_first, b = timed(f_new, q1, q2, c)
                    line = (f"    {mix:8s} (far {far:4.0%}): quadrature {a:7.1f} us (first {a_first:7.1f}) | hybrid {b:6.1f} us "
                            f"(first {b_first:7.1f}) | ratio {a / b:6.1f}")
                    if nr.near_on:
                        tab = float(np.mean(np.asarray(near_mask(q1, q2, c, xp=np))
                                            | np.asarray(near_mask(q1, q2, c, xp=np, mixed=True))))
                        b2 = timed(f_new, q1, q2, c, cpu=True)[2]
                        c_first, c_wall, c_cpu = timed(f_near, q1, q2, c, cpu=True)
                        nd = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)) / np.sqrt(np.abs(np.asarray(s1) * np.asarray(s2)))))
                                 for x, y, s1, s2 in zip(f_new(q1, q2, c), f_near(q1, q2, c), old.expect(q1, q1, q1), old.expect(q2, q2, q2)))
                        line += (f" | +near (tables {tab:4.0%}) {c_wall:6.1f} us (first {c_first:7.1f}); cpu hybrid {b2:6.1f} "
                                 f"+near {c_cpu:6.1f} us, ratio {b2 / c_cpu:5.1f}; near vs hybrid {nd:.1e}")
                    if lw.low_on:
                        lo = float(np.mean(np.asarray(low_mask(q1, q2, c, xp=np)) | np.asarray(low_mask(q1, q2, c, xp=np, mixed=True))))
                        b2 = timed(f_new, q1, q2, c, cpu=True)[2]
                        d_cpu = timed(f_low, q1, q2, c, cpu=True)[2]
                        ld = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)) / np.sqrt(np.abs(np.asarray(s1) * np.asarray(s2)))))
                                 for x, y, s1, s2 in zip(f_new(q1, q2, c), f_low(q1, q2, c), old.expect(q1, q1, q1), old.expect(q2, q2, q2)))
                        line += (f" | +low (tables {lo:4.0%}) cpu {d_cpu:6.1f} us, hybrid/+low {b2 / d_cpu:5.1f}; low vs hybrid {ld:.1e}")
                    if mix == "generic":
                        o, w = f_old(q1, q2, c), f_new(q1, q2, c)
                        n1, n2 = old.expect(q1, q1, q1), old.expect(q2, q2, q2)
                        diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)) / np.sqrt(np.abs(np.asarray(s1) * np.asarray(s2)))))
                                   for x, y, s1, s2 in zip(o, w, n1, n2))
                        line += f" | series vs quadrature {diff:.1e}"
                    print(line, flush=True)
    print(f"load: {os.getloadavg()[0]:.1f} (1 min)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["tanh", "softplus", "silu"])
