"""Cost of the certified lambda_min against a plain ``eigvalsh``, as ratios measured in one run.

For N = 200 and 2000 points on the sphere |x|^2 = d (d = 8), with the NTK Gram of the softplus
Neural ODE (T = 1; a-posteriori certificate, r = info["error_estimate"]) and of the relu MLP
(depth 2; N = 200 also with the rigorous arb Gram), prints

- ``eigvalsh``: time of ``numpy.linalg.eigvalsh`` of the Gram (all eigenvalues, the float answer);
- ``certify``: time of ``certify_lambda_min`` from scratch (its own smallest-eigenvalue estimate
  by LAPACK dsyevr, then the verified Cholesky), and ``certify+est``: with the float lambda_min
  passed in (what ``check(..., certify=True)`` does, since it has ``eigvalsh`` already);
- their ratios to ``eigvalsh``, and the certified bound over the float lambda_min.

The Gram computation itself is excluded (timed separately).  Run:
``python benchmarks/bench_certify.py [--quick]`` (``--quick``: N = 200 only).
"""

from __future__ import annotations

import sys
import time

import numpy as np

import kernelcalc as kc
from kernelcalc.studies.certify import certify_lambda_min, rigorous_kernel
from kernelcalc.data import sphere_normalise


def sphere(n, d=8, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return sphere_normalise(x)


def best_time(fn, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def row(label, n, K, r, kind, repeat):
    t_eig, eig = best_time(lambda: np.linalg.eigvalsh(K), repeat)
    t_cert, cert = best_time(lambda: certify_lambda_min(K, r, radius_kind=kind), repeat)
    t_est, cert_est = best_time(lambda: certify_lambda_min(K, r, radius_kind=kind, lambda_estimate=eig[0]), repeat)
    print(f"{label:<26} {n:>5} {t_eig:>9.4f} {t_cert:>9.4f} {t_cert / t_eig:>7.2f} {t_est:>11.4f} "
          f"{t_est / t_eig:>7.2f}  {cert.lower_bound:>12.6e} {eig[0]:>12.6e} {cert.lower_bound / eig[0]:>10.8f}"
          f"  {cert.certificate[:10]:<10} {cert.attempts}/{cert_est.attempts}")


def main(quick=False):
    sizes = [200] if quick else [200, 2000]
    print("times in seconds (best of repeats); ratio = time / eigvalsh time; bound/lmin = certified bound / float lambda_min")
    print(f"{'Gram':<26} {'N':>5} {'eigvalsh':>9} {'certify':>9} {'ratio':>7} {'certify+est':>11} {'ratio':>7}  "
          f"{'bound':>12} {'lambda_min':>12} {'bound/lmin':>10}  {'kind':<10} chol")
    for n in sizes:
        X = sphere(n)
        repeat = 3 if n <= 500 else 2
        t0 = time.perf_counter()
        K = kc.node_kernel(X, activation="softplus", T=1.0)
        t_node = time.perf_counter() - t0
        row("node softplus T=1", n, K.ntk, K.info["error_estimate"], "estimate", repeat)
        t0 = time.perf_counter()
        M = kc.mlp_kernel(X, activation="relu", depth=2)
        t_mlp = time.perf_counter() - t0
        row("mlp relu depth 2 (float)", n, M.ntk, M.info["error_estimate"], "estimate", repeat)
        t_arb = None
        if n <= 200:
            t0 = time.perf_counter()
            R = rigorous_kernel(X, model="mlp", activation="relu", depth=2)
            t_arb = time.perf_counter() - t0
            row("mlp relu depth 2 (arb)", n, R.ntk, R.info["ntk_radius"], "rigorous", repeat)
        print(f"{'':<26} {'':>5} (Gram times, excluded above: node {t_node:.2f} s incl. compile, "
              f"mlp {t_mlp:.2f} s" + (f", arb {t_arb:.2f} s)" if t_arb is not None else ")"))


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
