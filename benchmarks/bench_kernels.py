"""Gram-matrix timings of the analytic kernels, as ratios measured in one run.

For N = 100, 500, 2000 points on the sphere |x|^2 = d (d = 10) prints the time per NTK Gram
(warm: jit compilation excluded, reported separately) for

- ``node_kernel`` (softplus, tanh; T = 1) and ``mlp_kernel`` (tanh, depth 3, sigma_w = 1.5),
- the ratio against a straightforward per-pair implementation: a uniform time grid with the
  product-trapezoid rule, Picard iteration of the whole (M+1)^2 grid, 2-D trapezoid Gaussian
  expectations evaluated per pair (MLP: the per-pair recursion with the same 2-D rule); its cost
  per pair is measured on a few pairs and multiplied by N(N+1)/2, and its accuracy is printed,
- the ratio against a plain numpy RBF Gram exp(-|x-y|^2/2) of the same N (the floor).

Run: ``python benchmarks/bench_kernels.py [--quick]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import kernelcalc as kc
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.gaussian import TrapezoidRule, choose_step
from kernelcalc.data import sphere_normalise


def sphere(n, d=10, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return sphere_normalise(x)


def rbf(X):
    sq = np.sum(X * X, 1)
    return np.exp(-0.5 * np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0))


def timed(fn, repeat=1):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def naive_node_pair(act, rule, rho, T=1.0, M=64):
    """Per-pair Picard on a uniform grid, product trapezoid in time, 2-D trapezoid expectations."""
    f, df = act.jax_fn, act.jax_derivative
    h = T / M
    wt = np.full(M + 1, h)
    wt[0] = wt[-1] = h / 2
    cum = np.zeros((M + 1, M + 1))                        # trapezoid cumulative-integration matrix
    for i in range(1, M + 1):
        cum[i, : i + 1] = h
        cum[i, 0] = cum[i, i] = h / 2

    def solve(S0, q_fixed=None):
        S = np.full((M + 1, M + 1), S0)
        for _ in range(100):
            q = np.diag(S) if q_fixed is None else q_fixed
            C = np.asarray(rule.expect_pairs(((f, f),), q[:, None], q[None, :], S)[0])
            S_new = S0 + cum @ C @ cum.T
            if np.max(np.abs(S_new - S)) < 1e-13:
                break
            S = S_new
        return S_new

    q = np.diag(solve(1.0))
    S = solve(rho, q)
    C, Cd = (np.asarray(v) for v in rule.expect_pairs(((f, f), (df, df)), q[:, None], q[None, :], S))
    cumr = cum[::-1, ::-1]
    Lam = np.full_like(S, Cd[-1, -1])
    for _ in range(100):
        Lam_new = Cd[-1, -1] + cumr @ (Cd * Lam) @ cumr.T
        if np.max(np.abs(Lam_new - Lam)) < 1e-13:
            break
        Lam = Lam_new
    return C[-1, -1] + wt @ (C * Lam_new) @ wt + rho * Lam_new[0, 0]


def naive_mlp_pair(act, rule, rho, depth=3, w=1.5, b=0.1):
    f, df = act.jax_fn, act.jax_derivative
    q, k = w**2 + b**2, w**2 * rho + b**2
    ntk = k
    for layer in range(depth):
        C, Cd = (float(v) for v in rule.expect_pairs(((f, f), (df, df)), q, q, k))
        ws, bs = (1.0, 0.0) if layer == depth - 1 else (w, b)
        k = ws**2 * C + bs**2
        ntk = k + ws**2 * Cd * ntk
        q = ws**2 * float(rule.expect_pairs(((f, f),), q, q, q)[0]) + bs**2
    return ntk


def main(quick=False):
    Ns = (100, 500) if quick else (100, 500, 2000)
    cases = [("node", "softplus"), ("node", "tanh"), ("mlp", "tanh")]
    print(f"{'kernel':<16}{'N':>6}{'cold s':>9}{'warm s':>9}{'naive s (est.)':>16}{'naive/ours':>12}{'ours/RBF':>10}"
          f"{'naive rel.err':>15}")
    for model, name in cases:
        act = resolve_activation(name)
        call = (lambda X: kc.node_kernel(X, activation=act)) if model == "node" else \
            (lambda X: kc.mlp_kernel(X, activation=act, depth=3, sigma_w=1.5, sigma_b=0.1))
        # per-pair naive cost and accuracy, measured once on a few pairs
        rule = TrapezoidRule(choose_step((act.numpy_fn, act.numpy_derivative), 3.0, 1e-12))
        rhos = np.array([0.3])
        pair = (lambda r: naive_node_pair(act, rule, r)) if model == "node" else (lambda r: naive_mlp_pair(act, rule, r))
        t_pair, vals = timed(lambda: [pair(r) for r in rhos])
        t_pair /= len(rhos)
        x2 = np.array([[np.sqrt(2), 0.0]] + [[np.sqrt(2) * r, np.sqrt(2) * np.sqrt(1 - r * r)] for r in rhos])
        ref = call(x2).ntk[0, 1:]
        naive_err = float(np.max(np.abs(np.array(vals) - ref) / np.abs(ref)))
        for N in Ns:
            X = sphere(N)
            cold, _ = timed(lambda: call(X))
            warm, K = timed(lambda: call(X), repeat=2)
            t_rbf, _ = timed(lambda: rbf(X), repeat=3)
            naive = t_pair * N * (N + 1) / 2
            print(f"{model + ':' + name:<16}{N:>6}{cold:>9.2f}{warm:>9.3f}{naive:>16.0f}{naive / warm:>12.0f}"
                  f"{warm / t_rbf:>10.0f}{naive_err:>15.1e}", flush=True)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
