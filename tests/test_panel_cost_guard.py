"""The cost guard of the composite panels (kinked activations past sigma_w T = 3; issue 17, part 3): its model counts
what the solver does, it refuses before the expensive work (before each rung of the degree ladder), and its message
multiplies out to the number it quotes and names every factor."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import kernelcalc as kc
from _refusal_check import assert_refusal_multiplies_out


def _sphere(n=3, d=10, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x * math.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


def _count_solves(monkeypatch):
    """Record every panel solve: (kind, degree, problems, node-sweeps), the node-sweeps counted at the solver's
    source terms (one call per sweep of a row or wavefront, on the nodes it updates)."""
    from kernelcalc.kernels import _panels as pan
    from kernelcalc.kernels import ode_kinked_panels as okp

    swept = [0]
    solves = []
    real_fwd, real_bwd = okp.KinkedPanelsMixin._fwd, okp.KinkedPanelsMixin._bwd

    def fwd(self, C):
        swept[0] += int(np.size(C))
        return real_fwd(self, C)

    def bwd(self, Cd, L):
        swept[0] += int(np.size(L))
        return real_bwd(self, Cd, L)

    monkeypatch.setattr(okp.KinkedPanelsMixin, "_fwd", fwd)
    monkeypatch.setattr(okp.KinkedPanelsMixin, "_bwd", bwd)
    for name in ("_solve", "_solve_wavefront", "_backward_wavefront"):
        real = getattr(pan, name)

        def wrapped(grid, C_or_Cdot, S0, *a, _real=real, _name=name, **k):
            before = swept[0]
            out = _real(grid, C_or_Cdot, S0, *a, **k)
            guessed = _name == "_solve_wavefront" and (a[6] if len(a) > 6 else k.get("guess")) is not None
            solves.append((_name + (" from a guess" if guessed else ""), grid.m, np.shape(S0)[0], swept[0] - before,
                           grid.points))
            return out

        monkeypatch.setattr(pan, name, wrapped)
    return solves


def test_panel_model_counts_the_sweeps_the_solver_makes(monkeypatch):
    """The model's sweeps per node (the self-kernel's row march: ``_self_sweeps``; a pair's forward and backward
    wavefronts: ``_PAIR_SWEEPS`` each) against the node-sweeps counted in a real call (relu, sigma_w T = 7, 7
    panels, N = 3 on the sphere): within 1.5x."""
    from kernelcalc.kernels import ode_kinked_cost as okc
    from kernelcalc.kernels import ode_solver

    monkeypatch.setattr(ode_solver, "_TIME_GRIDS", {})
    solves = _count_solves(monkeypatch)
    with pytest.warns(kc.Assumption1Warning):
        kc.node_kernel(_sphere(), activation="relu", T=7.0)
    rows = [s / (B * pts) for kind, m, B, s, pts in solves if kind == "_solve"]
    fronts = [s / (B * pts) for kind, m, B, s, pts in solves if kind in ("_solve_wavefront", "_backward_wavefront")]
    guessed = [s / (B * pts) for kind, m, B, s, pts in solves if kind.endswith("from a guess")]
    assert rows and fronts and guessed
    assert all(1 / 1.5 <= r / okc._self_sweeps(7) <= 1.5 for r in rows), rows
    assert all(1 / 1.5 <= f / okc._PAIR_SWEEPS <= 1.5 for f in fronts), fronts
    # the later self-kernels start from the last one resampled (kernels/_panels.solve guess): fewer sweeps, the model
    # an upper bound for them
    assert all(f <= okc._PAIR_SWEEPS for f in guessed), guessed


def test_panel_guard_refuses_before_the_rung_that_passes_the_limit(monkeypatch):
    """With the work limit just above the call's price at the ladder's first rung (degree 12), the check before the
    second rung (degree 16: the self-kernel and the pairs at 16 cost more) refuses, and no solve at degree 16 has run
    (the first self-kernel, which learns q(T), runs at the first rung's degree 12 and the ladder reuses it)."""
    from kernelcalc.kernels import ode_kinked, ode_solver

    monkeypatch.setattr(ode_solver, "_TIME_GRIDS", {})
    checked = []
    real = ode_kinked.KinkedSolverMixin._check_ladder

    def check(self, dual, b, M, climbed, first):
        checked.append(M)
        return real(self, dual, b, M, climbed, first)

    monkeypatch.setattr(ode_kinked.KinkedSolverMixin, "_check_ladder", check)
    x = _sphere()
    # the price at the first rung, from a solver of the same call (pairs_hint 6: N = 3)
    solver = kc.kernels.ode.KinkedGoursatSolver("relu", T=5.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    solver.pairs_hint = 6
    dual = kc.theory.gaussian.dual_kernels("relu")
    solver._check_ladder(dual, 0, 12, [], True)
    first = solver.info["predicted_operations"]
    monkeypatch.setattr(ode_solver, "_WORK_LIMIT", first * 1.001)
    solves = _count_solves(monkeypatch)
    checked.clear()
    with pytest.raises(kc.KernelcalcInputError) as err:
        with pytest.warns(kc.Assumption1Warning):
            kc.node_kernel(x, activation="relu", T=5.0)
    assert checked == [12, 16], checked
    degrees = [m for kind, m, B, s, pts in solves]
    assert 16 not in degrees and degrees, solves       # q(T) is learnt at the first rung: nothing solved at 16
    msg = str(err.value)
    assert_refusal_multiplies_out(msg, "5 panels", "degree 16", "rungs climbed (degrees 12)", "self-kernel")
    assert f"the limit is {first * 1.001:.0e}" in msg


def test_panel_refusal_names_every_factor_and_its_parts_sum_up():
    """The refusal of the panels (elu, sigma_w T = 30, 200 pairs: far past the limit, priced without solving): one
    line; the printed factors multiply to the quoted work; the first factor (problem solves, in pairs) is the sum of
    its named parts; it names T, sigma_w, the pairs, the panels, the cells, the nodes per cell (degree), the sweeps,
    the dual's price, and every driver of the cost."""
    from kernelcalc.kernels.ode import KinkedGoursatSolver
    from kernelcalc.theory.gaussian import dual_kernels

    solver = KinkedGoursatSolver("elu", T=30.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    solver.pairs_hint = 200
    with pytest.raises(kc.KernelcalcInputError) as err:
        solver._check_ladder(dual_kernels("elu"), 0, 16, [12], False)
    msg = str(err.value)
    assert_refusal_multiplies_out(msg, "T = 30", "sigma_w = 1", "200 pairs", "30 panels", "465 time cells",
                                  "289 nodes per cell (degree 16)", "Picard sweeps per node", "price 50",
                                  "rungs climbed (degrees 12)")
    first = re.search(r"\(([0-9.e+]+) problem solves, in pairs \((.*?)\) x ", msg)
    parts = [float(p.split(" for ")[0]) for p in first.group(2).split(" + ")]
    assert math.fsum(parts) == pytest.approx(float(first.group(1)), rel=1e-3)
    # the cells: P (P + 1) / 2 of P = ceil(sigma_w T) panels; the nodes per cell (m + 1)^2
    assert 30 * 31 // 2 == 465 and 17 ** 2 == 289


def test_panel_guard_lets_the_sigma_w_T_10_cases_compute():
    """The cases that compute today (bench_regimes_horizon.py, N = 200: relu, leaky_relu, gelu, elu at T = 10, elu in
    ~31 s) are priced below the limit at the degrees they reach (relu 12-16, gelu and elu 20-24), with a theta table
    of 257 pairs per call; and the guard does refuse where the work is ~10x theirs (elu at sigma_w T = 30)."""
    from kernelcalc.kernels.ode import KinkedGoursatSolver
    from kernelcalc.kernels.ode_solver import _WORK_LIMIT
    from kernelcalc.theory.gaussian import dual_kernels

    for act, m in (("relu", 16), ("leaky_relu", 16), ("gelu", 24), ("elu", 24)):
        solver = KinkedGoursatSolver(act, T=10.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
        solver.pairs_hint = 65
        dual = dual_kernels(act) if act != "gelu" else dual_kernels("gelu", q_max=1e5)
        solver._check_ladder(dual, 0, m, [d for d in (12, 16, 20) if d < m], False)
        assert solver.info["predicted_operations"] < 0.5 * _WORK_LIMIT, (act, solver.info["predicted_operations"])
        solver._check_pairs(dual, np.zeros(257, int), {0: m}, near=np.zeros(257, bool))
    solver = KinkedGoursatSolver("elu", T=30.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    solver.pairs_hint = 65
    with pytest.raises(kc.KernelcalcInputError):
        solver._check_pairs(dual_kernels("elu"), np.zeros(257, int), {0: 24}, near=np.zeros(257, bool))


@pytest.mark.slow   # ~10-60 s: the first rungs of the ladder before the refusal
def test_elu_sigma_w_T_30_is_refused_within_the_limit_not_minutes(monkeypatch):
    """elu at sigma_w T = 30, N = 3 on the sphere (ran for minutes before): refused by the panels' guard, whose
    message multiplies out, after at most the work limit (about a minute of one core)."""
    import time

    from kernelcalc.kernels import ode_solver

    monkeypatch.setattr(ode_solver, "_TIME_GRIDS", {})
    t0 = time.process_time()
    with pytest.raises(kc.KernelcalcInputError) as err:
        kc.node_kernel(_sphere(), activation="elu", T=30.0)
    assert time.process_time() - t0 < 90
    assert_refusal_multiplies_out(str(err.value), "30 panels", "price 50")


def test_node_kernel_never_silently_returns_an_estimate_above_ten_tol(monkeypatch):
    """The audit found tanh at sigma_w T = 10 (N = 3) returning an estimate of 1.1e-9 of max |NTK| (> 10 tol) without
    a warning (each stage met its tolerance; the sum did not): node_kernel warns when the total passes 10 tol (a
    solver's estimate set to 12 tol), and not when it stays below (9 tol)."""
    import warnings

    from kernelcalc.kernels import ode_solver

    x = np.eye(3) * math.sqrt(3.0)
    for rel, warns in ((12e-10, True), (9e-10, False)):
        monkeypatch.setattr(ode_solver.GoursatSolver, "relative_error_estimate", lambda self, r=rel: r)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            K = kc.node_kernel(x, activation="softplus", T=1.0)
        issued = [w for w in rec if issubclass(w.category, kc.KernelcalcAccuracyWarning)]
        assert bool(issued) == warns, [str(w.message) for w in issued]
        assert K.info["error_estimate"] == pytest.approx(rel * max(np.max(np.abs(K.ntk)), np.max(np.abs(K.nngp))))
