"""Benchmark: structured empirical NTK vs naive Jacobian contraction (width 1024, 16 and 128 inputs).

Naive = ``method="jacobian"``: per-example gradients by ``vmap(grad)``, flattened, ``J1 @ J2.T``.
Structured = ``method="structured"`` (see :mod:`kernelcalc.empirical.ntk`).  Times are steady-state
(the jitted function is run once to compile, then timed as the best of ``--repeat`` runs).

    python benchmarks/bench_empirical_ntk.py [--width 1024] [--inputs 16,128] [--steps 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from kernelcalc.empirical import init_params, make_network
from kernelcalc.empirical.ntk import network_ntk

# This script builds its own jax arrays (the inputs) and owns its process: float64 for all of it.
# (kernelcalc's functions compute in float64 either way; ``import kernelcalc`` does not set this.)
jax.config.update("jax_enable_x64", True)


def _time(params, X, net, method, repeat):
    t0 = time.perf_counter()
    out = jax.block_until_ready(network_ntk(params, X, None, net, method))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(network_ntk(params, X, None, net, method))
        best = min(best, time.perf_counter() - t0)
    return first, best, np.asarray(out[2])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--inputs", default="16,128")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--configs", default="mlp,resnet,node-euler,node-rk4")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    configs = {
        "mlp": dict(model="mlp", depth=3),
        "resnet": dict(model="resnet", depth=a.steps),
        "node-euler": dict(model="node", solver="euler", solver_steps=a.steps),
        "node-rk4": dict(model="node", solver="rk4", solver_steps=a.steps),
    }
    print(f"jax {jax.__version__}, devices {jax.devices()}, cpus {os.cpu_count()}, width {a.width}")
    print(f"{'config':>11} {'N':>4} {'structured s':>13} {'naive s':>9} {'ratio':>7} {'max rel diff':>13} "
          f"{'compile s (struct/naive)':>25}")
    results = []
    for name in a.configs.split(","):
        for N in (int(v) for v in a.inputs.split(",")):
            X = np.random.default_rng(0).normal(size=(N, 8))
            X = jnp.asarray(X * np.sqrt(8) / np.linalg.norm(X, axis=1, keepdims=True))
            net = make_network(activation="softplus", width=a.width, **configs[name])
            params = init_params(jax.random.PRNGKey(0), net, 8)
            f_s, t_s, K_s = _time(params, X, net, "structured", a.repeat)
            f_n, t_n, K_n = _time(params, X, net, "jacobian", a.repeat)
            diff = float(np.abs(K_s - K_n).max() / np.abs(K_n).max())
            print(f"{name:>11} {N:>4} {t_s:>13.3f} {t_n:>9.3f} {t_n / t_s:>7.1f} {diff:>13.2e} "
                  f"{f_s - t_s:>12.1f}/{f_n - t_n:<12.1f}", flush=True)
            results.append(dict(config=name, n_inputs=N, width=a.width, steps=a.steps, structured_s=t_s, naive_s=t_n,
                                ratio=t_n / t_s, max_rel_diff=diff))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
