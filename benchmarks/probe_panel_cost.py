"""Instrument the kinked panel path (issue 17, part 3: the cost guard against measured work).

``python benchmarks/probe_panel_cost.py ACTIVATION T [SIGMA_W] [N] [WORK_LIMIT]`` runs ``node_kernel`` on N points on
the sphere (d = 10, default 3) in this process and prints, as one JSON line: the wall and CPU seconds, the counted work
of the panels (dual evaluations, forward and backward node-sweeps, the Picard solves per degree, one record per solve
with its CPU seconds), and the cost guard's prediction for the whole call (``info["predicted_operations"]``, the
largest work a check priced, and ``predicted_s`` at 6 ns per operation) or the refusal.  Each solve is also printed to
stderr as it finishes.  ``WORK_LIMIT`` (default 1e10) lifts the guard to measure a call it would refuse.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections import Counter

import numpy as np


def main(activation: str, T: float, sigma_w: float = 1.0, N: int = 3, limit: float | None = None,
         verbose: bool = True) -> dict:
    import kernelcalc as kc
    from kernelcalc.kernels import ode_kinked, ode_kinked_panels as okp, ode_solver
    from kernelcalc.kernels import _panels as pan

    count = Counter()
    solves = []
    records = []
    real_dual = okp._dual_np

    def dual_np(dual, q1, q2, c, derivative):
        count["dual_calls"] += 1
        count["dual_points_d" if derivative else "dual_points"] += int(np.size(c))
        return real_dual(dual, q1, q2, c, derivative)

    okp._dual_np = ode_kinked._dual_np = dual_np
    real_at = okp._DualC.at_variances

    def at_variances(self, q1, q2):
        f = real_at(self, q1, q2)

        def g(c):
            count["prepared_points"] += int(np.size(c))
            return f(c)
        return g

    okp._DualC.at_variances = at_variances
    real_fwd, real_bwd = okp.KinkedPanelsMixin._fwd, okp.KinkedPanelsMixin._bwd

    def fwd(self, C):
        count["fwd_node_sweeps"] += int(np.size(C))
        return real_fwd(self, C)

    def bwd(self, Cd, L):
        count["bwd_node_sweeps"] += int(np.size(L))
        return real_bwd(self, Cd, L)

    okp.KinkedPanelsMixin._fwd, okp.KinkedPanelsMixin._bwd = fwd, bwd
    for name in ("_solve", "_solve_wavefront", "_backward_wavefront"):
        real = getattr(pan, name)

        def wrapped(grid, *a, _real=real, _name=name, **k):
            before, t = dict(count), time.process_time()
            out = _real(grid, *a, **k)
            B = np.shape(a[1])[0] if _name == "_backward_wavefront" else np.shape(a[1])[0]
            d = {key: count[key] - before.get(key, 0) for key in count}
            sweeps = (d.get("fwd_node_sweeps", 0) + d.get("bwd_node_sweeps", 0)) / (B * grid.points)
            solves.append((_name, grid.m, grid.P, B))
            records.append(dict(kind=_name, m=grid.m, P=grid.P, B=B, points=grid.points,
                                node_sweeps=d.get("fwd_node_sweeps", 0) + d.get("bwd_node_sweeps", 0),
                                dual=d.get("dual_points", 0) + d.get("dual_points_d", 0) + d.get("prepared_points", 0),
                                seconds=time.process_time() - t))
            if verbose:
                print(f"{_name:20s} m={grid.m:3d} P={grid.P} B={B:3d} points={grid.points} sweeps/node={sweeps:5.1f} "
                      f"dual={d.get('dual_points', 0) + d.get('dual_points_d', 0) + d.get('prepared_points', 0)} "
                      f"{time.process_time() - t:.3f}s", file=sys.stderr, flush=True)
            return out
        setattr(pan, name, wrapped)
    if limit is not None:
        ode_solver._WORK_LIMIT = limit
        ode_solver.KinkedGoursatSolver.work_limit = limit
    predicted = {}
    real_choose = ode_kinked.KinkedSolverMixin._choose_M

    def choose_M(self, dual, v):
        predicted["solver"] = self
        return real_choose(self, dual, v)

    ode_kinked.KinkedSolverMixin._choose_M = choose_M
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 10))
    x *= math.sqrt(10) / np.linalg.norm(x, axis=1, keepdims=True)
    out = dict(activation=activation, T=T, sigma_w=sigma_w, N=N)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            K = kc.node_kernel(x, activation=activation, T=T, sigma_w=sigma_w)
        out["error_estimate"] = float(K.info["error_estimate"]) / float(np.max(np.abs(K.ntk)))
        out["warnings"] = [str(w.message)[:160] for w in rec if "Accuracy" in w.category.__name__]
        out["band_degrees"] = K.info.get("band_degrees")
        out["M"] = K.info.get("M")
    except kc.KernelcalcInputError as err:
        out["refused"] = str(err)[:400]
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    out["cpu_s"] = round(time.process_time() - c0, 2)
    out.update(count)
    kinds = Counter((n, m) for n, m, _, _ in solves)
    out["solves"] = {f"{n}@{m}": c for (n, m), c in sorted(kinds.items())}
    out["records"] = records
    s = predicted.get("solver")
    if s is not None:
        out["predicted_operations"] = s.info.get("predicted_operations")
        if out["predicted_operations"]:
            out["predicted_s"] = round(out["predicted_operations"] * 6e-9, 2)
            out["ratio_pred_cpu"] = round(out["predicted_s"] / max(out["cpu_s"], 1e-3), 2)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    res = main(args[0], float(args[1]), float(args[2]) if len(args) > 2 else 1.0, int(args[3]) if len(args) > 3 else 3,
               float(args[4]) if len(args) > 4 else None)
    print(json.dumps(res))
