"""The degree ladder on the composite panels (``kernels/ode_kinked_ladder.py``) and the first guesses of its
near-parallel probes (``kernels/ode_kinked_panels.KinkedPanelsMixin._nearby``), issue 17 (softplus and silu at
sigma_w T = 10: the ladder's cost).

References that share no code with what is tested:

- the relu kernel of a pair by the trapezoid-plus-Richardson Goursat march of ``tests/trapezoid_goursat.py`` with the
  arc-cosine closed forms written here (as ``tests/test_long_horizon_panels.py``): no panels, no ladder;
- the cross-kernel solve with the exact dual by the row marching (``_panels._solve`` with the diagonal fixed: no
  guess, no anchored model, another sweep order), as ``tests/test_panel_guess.py``.
"""

import functools
import math

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc.kernels import _panels as pan
from kernelcalc.kernels import ode_kinked as ok
from kernelcalc.kernels._anchored import AnchoredDual
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.duals import NUMPY_OPS, closed_form_dual
from trapezoid_goursat import relu_kernel


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_probes_leave_the_ladder_once_converged_and_the_kernel_meets_the_reference(monkeypatch):
    """relu, sigma_w = 2, T = 2 (4 panels), tol = 1e-13, a pair at theta_0 = 1 (band 0): the probes whose NTK changes
    by less than tol between two rungs leave the ladder (the last rung solves fewer of them than the first), the
    band's reported change is the largest of every probe's last change (recomputed here from the probe values the
    ladder saw), and the kernel agrees with the trapezoid-plus-Richardson reference (n = 16..128, good to ~2e-12)
    within its error estimate plus the reference's error."""
    from kernelcalc.kernels import ode_solver

    monkeypatch.setattr(ode_solver, "_TIME_GRIDS", {})
    seen = []
    inner = ok.KinkedSolverMixin._pairs

    def spy(self, dual, M, q, S0, theta0, degrees=None, gap=None, anti=None):
        out = inner(self, dual, M, q, S0, theta0, degrees, gap, anti)
        if degrees is not None and 0 in degrees:
            seen.append((degrees[0], np.array(theta0), out[1].copy()))
        return out

    monkeypatch.setattr(ok.KinkedSolverMixin, "_pairs", spy)
    x = np.array([[1.0, 0.0], [math.cos(1.0), math.sin(1.0)]]) * math.sqrt(2.0)
    k = kc.node_kernel(x, activation="relu", T=2.0, sigma_w=2.0, tol=1e-13)
    rungs = [r for r in seen if r[1].size > 1 or r is seen[-1]]
    assert len(rungs) >= 3 and rungs[-1][1].size < rungs[0][1].size, [(m, th) for m, th, _ in rungs]
    last = {}            # probe angle -> (its last two degrees' NTKs)
    for _, th, ntk in rungs:
        for t, v in zip(th.tolist(), ntk.tolist()):
            last[t] = (last[t][1], v) if t in last else (None, v)
    ref_scale = max(abs(v) for _, _, ntk in rungs for v in ntk)
    changes = [abs(a - b) / ref_scale for a, b in last.values() if a is not None]
    assert len(changes) == rungs[0][1].size
    assert k.info["band_changes"][0] == pytest.approx(max(changes), rel=1e-6)
    assert k.info["band_degrees"][0] == rungs[-2][0]
    R = np.array([relu_kernel(n, 2.0, 2.0, 1.0)[1] for n in (16, 32, 64, 128)])
    for j in range(1, 4):
        R = (4**j * R[1:] - R[:-1]) / (4**j - 1)
    err = abs(k.ntk[0, 1] - R[-1])
    assert err <= 1e-10 * abs(R[-1])
    assert err <= k.info["error_estimate"] + 5e-12 * abs(R[-1])


@functools.lru_cache(maxsize=1)
def _elu_dual():
    return closed_form_dual(resolve_activation("elu"))


def _elu_exact(q1, q2, c):
    return _elu_dual()(q1, q2, c, ops=NUMPY_OPS)


def test_near_parallel_probes_start_from_nearby_solves_and_reach_the_exact_fixed_point():
    """elu, sigma_w T = 8 (8 panels), the self-kernel (S0 = 1) and a pair at theta_0 = 0.55 kept (degree 8, plain map):
    the guess of the pair at theta_0 = 0.01 on the band-1 grid (degree 8, delta = 1/4) interpolates them in S0 (6.7e-6
    from the pair's solution, measured), and the anchored solve from it ends within 1e-13 of the row marching with the
    exact dual (before a sweep from a fresh anchor stopped counting as a stagnation it stopped 4.9e-12 off), evaluating
    the closed form fewer times than from the cells' edges.  With that pair kept too, the guess of theta_0 = 0.001 on
    the band-2 grid (degree 12, delta = 1/16) is within 1e-8 of its solution (the self-kernel alone: 3.5e-7).  A
    pair with no kept solve within 1 % of its S0 gets no guess."""
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    act = resolve_activation("elu")
    solver = KinkedGoursatSolver(act, T=8.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    exact = lambda q1, q2, c: _elu_exact(q1, q2, c)              # noqa: E731
    C = lambda q1, q2, c: exact(q1, q2, c)[0]                     # noqa: E731
    src = solver._fwd
    g0 = solver._grid(8, 1.0)
    S_self, q0, _, _ = pan.solve(g0, C, np.ones(1), src)
    solver._keep(g0, np.ones(1), q0, S_self)
    solver._keep(g0, np.cos([0.55]), q0, pan.solve(g0, C, np.cos([0.55]), src, q=q0)[0])

    def check(m, delta, theta0):
        g = solver._grid(m, delta)
        q, S0 = g0.resample(q0, g), np.cos([theta0])
        ref = pan._solve(g, C, S0, src, q=q)[0]                   # exact dual, no guess
        return g, q, S0, ref, np.max(np.abs(ref)), solver._guess(g, S0, q)

    g1, q1, S01, ref1, scale1, guess1 = check(8, 0.25, 0.01)
    assert np.max(np.abs(guess1 - ref1)) <= 1e-4 * scale1
    idx = np.broadcast_to(np.arange(g1.points), (1, g1.points))
    cold, warm = AnchoredDual(exact, kink=1e-2), AnchoredDual(exact, kink=1e-2)
    pan.solve(g1, cold, S01, src, q=q1, aux=(idx,))
    S, _, change, _ = pan.solve(g1, warm, S01, src, q=q1, aux=(idx,), guess=guess1)
    assert change <= 2e-15
    assert np.max(np.abs(S - ref1)) <= 1e-13 * scale1
    assert warm.exact_points < cold.exact_points, (warm.exact_points, cold.exact_points)
    solver._keep(g1, S01, q1, S)
    g2, q2, S02, ref2, scale2, guess2 = check(12, 0.0625, 0.001)
    alone = g0.resample_nodes(S_self, g2)
    assert np.max(np.abs(guess2 - ref2)) <= 1e-8 * scale2 < 1e-7 * scale2 <= np.max(np.abs(alone - ref2))
    assert solver._guess(g2, np.cos([0.3]), q2) is None
