"""Per-evaluation cost and accuracy of the large-q rules, side by side in one run (issue 17, part 3).

For tanh and softplus at q = 10, 1e2, 1e4, 1e6: the Mehler/Hermite series (where it converges within 8192 terms),
the window rule (kernelcalc.theory.largeq.AsymptoticRule at its coarsest level) and the tabulated rule
(kernelcalc.theory.largeq_table.TabulatedRule at the step choose_tabulated picks for tol 1e-13).  Time: microseconds
per (C, Cdot) over 1024 covariances at that q (correlations uniform in [-1, 1], half of them at q2 = 2 q), jit,
the best of 3 calls after the compiling one (the tables are built once per process: their build time is printed).
Accuracy: against an mpmath 1-D integral at r = 1 exactly (b = sqrt(q2/q1) a), relative to sqrt(E f(a)^2 E f(b)^2).
Usage: python benchmarks/bench_largeq_table.py [tanh softplus ...]
"""
import math
import sys
import time

import jax
import mpmath as mp
import numpy as np

from kernelcalc._x64 import scope
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.gaussian import HermiteRule, hermite_order
from kernelcalc.theory.largeq import ASYMPTOTES, AsymptoticRule
from kernelcalc.theory.largeq_table import TabulatedRule, remainder_table

MP = {"softplus": (lambda x: mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x)), lambda x: 1 / (1 + mp.exp(-x))),
      "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2),
      "silu": (lambda x: x / (1 + mp.exp(-x)), lambda x: 1 / (1 + mp.exp(-x)) * (1 + x / (1 + mp.exp(x)))),
      "sigmoid": (lambda x: 1 / (1 + mp.exp(-x)), lambda x: mp.exp(-x) / (1 + mp.exp(-x)) ** 2)}
STEP = {"tanh": 0.22, "softplus": 0.4, "silu": 0.4, "sigmoid": 0.4}     # what choose_tabulated picks for tol 1e-13


def parallel(f, q1, q2):
    with mp.workdps(15):
        k, s = mp.sqrt(mp.mpf(q2) / q1), mp.sqrt(q1)
        cuts = sorted({x for x in (1, 10, s, 4 * s) if x < 12 * s} | {12 * s})
        pts = [-x for x in reversed(cuts)] + [0] + cuts
        d = lambda a: mp.exp(-a * a / (2 * q1)) / mp.sqrt(2 * mp.pi * q1)   # noqa: E731
        return [float(mp.quad(g, pts)) for g in (lambda a: f(a) * f(k * a) * d(a), lambda a: f(a) ** 2 * d(a),
                                                  lambda a: f(k * a) ** 2 * d(a))]


def timed(fn, *args):
    fn(*args)[0].block_until_ready()
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        fn(*args)[0].block_until_ready()
        best = min(best, time.perf_counter() - t)
    return best


def main(names):
    rng = np.random.default_rng(0)
    n = 1024
    for name in names:
        act = resolve_activation(name)
        asy = ASYMPTOTES[name]
        with scope():
            t = time.perf_counter()
            remainder_table(asy, False), remainder_table(asy, True)
            print(f"{name}: tables built in {time.perf_counter() - t:.2f} s")
            old, new = AsymptoticRule(asy, 0.25, 0.35), TabulatedRule(asy, STEP[name])
            for q in (10.0, 1e2, 1e4, 1e6):
                q1 = np.full(n, q)
                q2 = np.where(np.arange(n) % 2 == 0, q, 2 * q)
                c = rng.uniform(-1, 1, n) * np.sqrt(q1 * q2)
                row = [f"  q = {q:8.0e}"]
                K = hermite_order((act.numpy_fn, act.numpy_derivative), 2 * q)
                if K is not None:
                    rule = HermiteRule(K)
                    f = jax.jit(lambda a, b, cc: rule.expect_pairs(((act.jax_fn, act.jax_fn), (act.jax_derivative, act.jax_derivative)), a, b, cc))
                    row.append(f"hermite K={K} {timed(f, q1, q2, c) / n * 1e6:8.1f} us")
                else:
                    row.append("hermite: > 8192 terms      ")
                ref = [parallel(g, q, 2 * q) for g in MP[name]]
                for label, rule in (("window", old), ("tabulated", new)):
                    f = jax.jit(lambda a, b, cc, rule=rule: rule.expect(a, b, cc))
                    us = timed(f, q1, q2, c) / n * 1e6
                    got = [float(np.asarray(v)[0]) for v in rule.expect(np.array([q]), np.array([2 * q]), np.array([math.sqrt(2) * q]))]
                    err = max(abs(g - r[0]) / math.sqrt(r[1] * r[2]) for g, r in zip(got, ref))
                    row.append(f"{label} ({rule.points} pts) {us:8.1f} us err {err:.1e}")
                print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["tanh", "softplus"])
