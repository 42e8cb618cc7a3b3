"""N = 2000 Gram timings against the numpy RBF floor, on and off the sphere, measured in one run.

For each kernel (relu / erf / gelu / tanh MLP depth 3, softplus / tanh Neural ODE T = 1, softplus
ResNet depth 8) prints the time of a second call (jit compilation excluded; the first call is
printed too) on

- ``sphere``: N points with $|x|^2 = d$ (d = 10);
- ``off``: the same directions with norms spread uniformly by $\\pm30\\%$ (random Gaussian data
  is rarely normalised),

and its ratio to a plain numpy RBF Gram ``exp(-|x-y|^2/2)`` of the same points, timed in the same
run (the floor).  Both are timed twice: with each result freed before the next call (memory reused:
``second``, ``RBF``), and with the results kept (``kept``: every call writes fresh memory, as a user
who keeps the Gram; on this project's VMs the first touch of a page costs ~3 ms per MB, which makes
any fresh N = 2000 pair of Grams cost >= 0.1 s, the RBF floor included).  The targets of issue 9: closed-form MLPs (relu, erf) <= 9x RBF on the sphere
(neural-tangents' 0.35 s against RBF's 0.04 s), the others <= 18x; off the sphere <= 3x the sphere
time.  The path, the interpolation nodes and the interpolation error estimate are printed too, and the
process CPU time of the second call (less sensitive than wall time to other jobs on a shared machine).

Run: ``python benchmarks/bench_scale_speed.py [--n 2000] [--only sphere|off] [--kernels relu,node-softplus]``.
``main()`` returns the rows (used by ``bench_scale.py``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import kernelcalc as kc

KERNELS = {
    "relu": lambda x: kc.mlp_kernel(x, activation="relu", depth=3),
    "erf": lambda x: kc.mlp_kernel(x, activation="erf", depth=3),
    "gelu": lambda x: kc.mlp_kernel(x, activation="gelu", depth=3),
    "tanh": lambda x: kc.mlp_kernel(x, activation="tanh", depth=3, sigma_w=1.5),
    "node-softplus": lambda x: kc.node_kernel(x, activation="softplus", T=1.0),
    "node-tanh": lambda x: kc.node_kernel(x, activation="tanh", T=1.0),
    "resnet-softplus-8": lambda x: kc.resnet_kernel(x, activation="softplus", depth=8),
}


def points(n: int, d: int = 10, spread: float = 0.0, seed: int = 0) -> np.ndarray:
    """n directions on the sphere |x|^2 = d, norms scaled by U(1 - spread, 1 + spread)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x *= np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)
    return x * rng.uniform(1 - spread, 1 + spread, (n, 1)) if spread else x


def rbf(x: np.ndarray) -> np.ndarray:
    sq = np.sum(x * x, 1)
    return np.exp(-0.5 * np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))


def best_of(fn, repeat: int = 3, keep: bool = False) -> float:
    """Best wall time of ``repeat`` calls; ``keep``: the results stay alive (every call writes fresh
    memory, as a user who keeps a Gram; on a VM whose first touch of a page is expensive this costs
    ~3 ms per MB), else each result is freed before the next call (memory reused)."""
    best, kept = np.inf, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
        if keep:
            kept.append(out)
        del out
    return best


def main(n: int = 2000, only: str | None = None, kernels: list[str] | None = None, echo: bool = True) -> list[dict]:
    """Time every kernel on and off the sphere; returns one dict per (kernel, data) row."""
    data = {"sphere": points(n), "off": points(n, spread=0.3)}
    if only:
        data = {only: data[only]}
    rows = []
    for name in kernels or list(KERNELS):
        fn = KERNELS[name]
        for where, x in data.items():
            t = time.perf_counter()
            K = fn(x)
            first = time.perf_counter() - t
            del K                                        # the second call may reuse the first one's memory
            t, c = time.perf_counter(), time.process_time()
            K = fn(x)
            second, cpu = time.perf_counter() - t, time.process_time() - c
            fresh = best_of(lambda: fn(x), 2, keep=True)   # results kept: fresh output memory every call
            floor = best_of(lambda: rbf(x), 5)          # measured next to the kernel: same contention
            floor_fresh = best_of(lambda: rbf(x), 3, keep=True)
            row = dict(kernel=name, data=where, n=n, first_s=first, second_s=second, cpu_s=cpu, rbf_s=floor,
                       ratio=second / floor, fresh_s=fresh, rbf_fresh_s=floor_fresh, ratio_fresh=fresh / floor_fresh,
                       path=K.info.get("path"), table=K.info.get("table"),
                       theta_nodes=K.info.get("theta_nodes"), norm_nodes=K.info.get("norm_nodes"),
                       interpolation_error_estimate=K.info.get("interpolation_error_estimate"),
                       pair_solves=K.info.get("pair_solves"), norm_grid=K.info.get("norm_grid"))
            rows.append(row)
            if echo:
                est, nodes = row["interpolation_error_estimate"], row["norm_nodes"]
                extra = ("" if est is None else f"  interp err {est:.1e}") + ("" if nodes is None else f"  norm nodes {nodes}")
                if row["pair_solves"]:
                    extra += f"  {row['pair_solves']} pair solves, {row['norm_grid']} grid"
                print(f"{name:18s} {where:6s} first {first:7.2f} s  second {second:7.3f} s  (CPU {cpu:6.3f} s)  RBF {floor:.3f} s  "
                      f"ratio {row['ratio']:6.1f}x | kept: {fresh:.3f} s  RBF {floor_fresh:.3f} s  ratio {row['ratio_fresh']:5.1f}x  "
                      f"{row['path']}{extra}", flush=True)
    if echo and "sphere" in data and "off" in data:
        by = {(r["kernel"], r["data"]): r for r in rows}
        for what, key in (("time", "second_s"), ("CPU time", "cpu_s")):   # CPU time: robust to a shared machine
            print(f"off / sphere {what}:", ", ".join(f"{k} {by[(k, 'off')][key] / by[(k, 'sphere')][key]:.1f}x"
                                                     for k in (kernels or list(KERNELS))))
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--only", choices=("sphere", "off"))
    p.add_argument("--kernels", type=lambda s: s.split(","), default=None)
    args = p.parse_args()
    main(args.n, args.only, args.kernels)
