"""lambda_min of the NTK Gram of N well-spread points on S^2 against the sphere spectrum's prediction
lambda_min ~ N mu_k(N), k(N) the degree N points resolve (the smallest k with sum_{j<=k} N(3,j) = (k+1)^2 >= N).
Each N has its own Fibonacci sphere (quasi-uniform points); lambda_min is measured with kc.lambda_min_table
(eigvalsh up to N = 2000, above with kc.spectrum: shift-invert / Lanczos).  Prints one table per model.

    python examples/lambda_min_sphere.py [--Ns 64,256,1024,4096] [--T 1]

N = 20000 (``--Ns ...,20000``) needs about 10 GB of memory (two 3.2 GB Grams plus the factorisation) and
minutes per (model, activation); the default stops at 4096.
"""

import argparse
import math
import time
import warnings

import numpy as np

import kernelcalc as kc

ap = argparse.ArgumentParser()
ap.add_argument("--Ns", default="64,256,1024,4096")
ap.add_argument("--T", type=float, default=1.0)
a = ap.parse_args()
Ns = [int(n) for n in a.Ns.split(",")]


def fibonacci_sphere(N, d=3):
    i = np.arange(N) + 0.5
    z = 1 - 2 * i / N
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z * z)
    return math.sqrt(d) * np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


for model in (("mlp", 1), ("node", None)):
    for act in ("relu", "softplus"):
        print(f"\n{model[0]}{'' if model[1] is None else ' L=' + str(model[1])} {act}:")
        print(f"{'N':>6} {'k(N)':>5} {'lambda_min':>11} {'N mu_k(N)':>11} {'ratio':>7} {'seconds':>8}")
        for N in Ns:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = kc.lambda_min_table(fibonacci_sphere(N), [N], activations=(act,), models=(model,), T=a.T,
                                        sphere_prediction=True)
            row = r.rows[0]
            lam, pred, bound = row["lambda_min"][0], row["lambda_min_predicted"][0], row["predicted_is_bound"][0]
            print(f"{N:>6} {row['degree'][0]:>5} {lam:>11.3e} {('<' if bound else ' ') + format(pred, '.3e'):>11} "
                  f"{lam / pred:>7.3f} {time.perf_counter() - t0:>8.1f}")
