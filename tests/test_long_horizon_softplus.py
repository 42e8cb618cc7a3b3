"""softplus (and silu) past sigma_w T = 5 (issue 17, parts 3 and 4): the composite panels with node angle tables of the
large-q rule (``kernels/ode_kinked_node_tables._angle_table``; ``ode_kinked_ladder._LARGE_Q_PANELS``).

References that share no code with what is tested:

- the time integration: the trapezoid-plus-Richardson Goursat march of ``tests/trapezoid_goursat.py`` (a uniform grid
  split at t = s, each row iterated to its fixed point; three Richardson steps in h^2), no panels, no node tables, no
  anchored sweeps, no degree ladder;
- the dual kernels along that march: softplus's large-q rule evaluated directly (no table), itself checked here at the
  march's own extreme covariances (the largest variance, the most unequal pair, the most parallel one) against the
  nested Gauss-Legendre expectation of ``tests/_gauss_legendre_reference.py`` (phi itself: no asymptote, no remainder,
  no table), within 1e-12 of sqrt(E phi(a)^2 E phi(b)^2).

The default run checks the routing and the cost guard's price of the issue's case (softplus, sigma_w T = 10, N = 200);
the kernel itself (a minute of CPU at sigma_w T = 6) is in the slow set.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

import kernelcalc as kc
from _gauss_legendre_reference import expect_gl
from _sphere_direct import assert_table_meets_direct_solves
from trapezoid_goursat import backward, march


def test_softplus_and_silu_take_the_panels_up_to_sigma_w_T_10():
    """The panels (node angle tables of the large-q rule) for 4.5 < sigma_w T <= 10, the tensor grid below."""
    from kernelcalc.kernels.ode_kinked import use_triangles
    from kernelcalc.theory.activations import resolve_activation

    for name in ("softplus", "silu"):
        act = resolve_activation(name)
        assert use_triangles(act, 10.0, 1.0) and use_triangles(act, 3.0, 2.0) and use_triangles(act, 5.0, 1.0)
        assert not use_triangles(act, 4.0, 1.0) and not use_triangles(act, 1.0, 1.0)


def _priced_solver(T, q_max, near, low):
    """A softplus panel solver priced as after its coarse self-kernel (q(T) and the node fractions of the rule's
    regimes as measured at N = 20), with the issue's 65 pairs (N = 200)."""
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    solver = KinkedGoursatSolver("softplus", T=T, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    solver.pairs_hint = 65
    solver.info.update(q_max=q_max, near_table_node_fraction=near, low_table_node_fraction=low)
    # the rule's prices per regime (TabulatedRule.points, near_points, low_points of softplus at step 0.4; stated
    # here so that the test does not build its tables)
    rule = types.SimpleNamespace(near_on=True, low_on=True, points=4223, near_points=(604, 1207), low_points=(650, 650))
    return solver, types.SimpleNamespace(method="asymptotic", rule=rule, points=rule.points)


def test_cost_guard_prices_sigma_w_T_10_under_the_limit_and_the_tables_cheaper_than_direct_solves():
    """The issue's case (q(T) = 4.25e5, 64 % of the time nodes with q >= 100) is priced under the work limit at every
    check the call makes (the first rung with its ladder, and the Gram's 65 pairs of one band at degree 20), its pairs
    through node tables far below the same pairs solved directly, and the refusal past the limit multiplies out."""
    from _refusal_check import assert_refusal_multiplies_out

    solver, dual = _priced_solver(10.0, 4.25e5, 0.62, 0.33)
    solver._check_ladder(dual, 0, 12, [], True)
    solver._check_panels(dual, 20, pairs=65)
    assert 0 < solver.info["predicted_operations"] <= solver.work_limit
    tables = solver.predicted_work(dual, 20, pairs=65)
    direct = 65 * solver._panel_prices(dual, 20)["pair"]
    assert tables < 0.5 * direct
    solver.info["q_max"] = 4.25e5
    with pytest.raises(kc.KernelcalcInputError) as err:
        solver._check_panels(dual, 20, pairs=65, selfs=400)
    assert_refusal_multiplies_out(str(err.value), "node angle table", "self-kernels")


# -- the slow reference ----------------------------------------------------------------------------------------------
def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _rule():
    from kernelcalc.theory.gaussian import dual_kernels

    return dual_kernels("softplus", q_max=3e3, method="asymptotic")


_CHUNK = 256


def _trapezoid_kernels(dual, n, T, thetas):
    """(nngp, ntk) of unit-variance pairs at ``thetas`` on the n-step trapezoid grid (sigma_w = sigma_u = sigma_v = 1),
    and the covariances the march asked of the dual."""
    asked = []

    def f(q1, q2, c):
        q1, q2, c = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (q1, q2, c)))
        asked.append(np.stack([q1.ravel(), q2.ravel(), c.ravel()]))
        C, Cd = np.empty(c.size), np.empty(c.size)
        flat = [a.ravel() for a in (q1, q2, c)]
        for lo in range(0, c.size, _CHUNK):      # one padded shape (the rule compiles once per shape)
            n = min(_CHUNK, c.size - lo)
            args = [np.concatenate([a[lo:lo + n], np.repeat(a[lo:lo + 1], _CHUNK - n)]) for a in flat]
            got = dual(*args)
            C[lo:lo + n], Cd[lo:lo + n] = (np.asarray(g)[:n] for g in got)
        return C.reshape(c.shape), Cd.reshape(c.shape)

    _, q = march(f, n, T, 1.0, 1.0)
    w = np.full(n + 1, T / n)
    w[0] = w[-1] = T / (2 * n)
    out = []
    for theta0 in thetas:
        c0 = math.cos(theta0)
        S = march(f, n, T, 1.0, c0, q=q.copy())[0]
        C, Cd = f(q[:, None], q[None, :], S)
        L = backward(n, T, 1.0, Cd[n, n], Cd)
        out.append((C[n, n], C[n, n] + w @ (C * L) @ w + c0 * L[0, 0]))
    return np.array(out), np.concatenate(asked, axis=1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_softplus_sigma_w_T_6_against_trapezoid_richardson():
    """softplus at T = 6 (sigma_w = 1: 6 panels, q(T) ~ 1.7e3) through the node tables, theta_0 = 1 and 2.5, against
    the trapezoid-plus-Richardson march (n = 24..192) with the rule evaluated directly: NNGP and NTK within 1e-9
    (relative) and within the error estimate plus the reference's own (its last Richardson change); the rule itself
    against nested Gauss-Legendre at the march's extreme covariances.  Measured (55 s): the kernel agrees with the
    reference to 1.1e-11-1.3e-11 (relative), the reference's last Richardson change is 5e-10 (relative) and the
    kernel's error estimate 1e-11 of its largest entry."""
    th = np.array([0.0, 1.0, 2.5])
    x = np.stack([np.cos(th), np.sin(th)], axis=1) * math.sqrt(2.0)      # x.x/d = 1
    k = kc.node_kernel(x, activation="softplus", T=6.0)
    assert "panels" in k.info["time_scheme"] and k.info["node_tables"]["tables"] >= 1
    dual = _rule()
    levels = [_trapezoid_kernels(dual, n, 6.0, th[1:]) for n in (24, 48, 96, 192)]
    R = np.array([v for v, _ in levels])
    for j in range(1, 4):
        prev, R = R, (4**j * R[1:] - R[:-1]) / (4**j - 1)
    ref, ref_err = R[-1], np.max(np.abs(R[-1] - prev[-1]))     # (the last step's change: the reference's error)
    for j, r in zip((1, 2), ref):
        got = np.array([k.nngp[0, j], k.ntk[0, j]])
        assert np.all(np.abs(got - r) <= 1e-9 * np.abs(r)), (th[j], got, r)
        assert np.max(np.abs(got - r)) <= k.info["error_estimate"] + 2 * ref_err, (got - r, k.info["error_estimate"])
    # the rule along the march against nested Gauss-Legendre, at its extremes
    q1, q2, c = levels[-1][1]
    rho = c / np.sqrt(q1 * q2)
    ok = np.abs(rho) < 1.0 - 1e-12                # (the Picard iterates overshoot |rho| = 1 on their way)
    q1, q2, c, rho = q1[ok], q2[ok], c[ok], rho[ok]
    picks = {int(np.argmax(q1 * q2)), int(np.argmax(np.abs(np.log(q1 / q2)))), int(np.argmax(np.where(q1 != q2, rho, -2)))}
    for i in picks:
        C, Cd = (float(v) for v in dual(q1[i], q2[i], c[i]))
        for got, f in ((C, _softplus), (Cd, _sigmoid)):
            want = expect_gl(f, f, q1[i], q2[i], c[i])
            norm = math.sqrt(expect_gl(f, f, q1[i], q1[i], q1[i]) * expect_gl(f, f, q2[i], q2[i], q2[i]))
            assert abs(got - want) <= 1e-12 * norm, (q1[i], q2[i], rho[i], got, want)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["softplus", "silu"])
def test_softplus_silu_sigma_w_T_10_N200_computes(activation):
    """The issue's long-horizon case: N = 200 on the sphere (d = 10), T = 10, default tol: computes (no refusal)
    with an error estimate <= 1e-9 relative to max |NTK|, and a symmetric positive semi-definite NTK."""
    from kernelcalc.data import sphere_normalise

    X = sphere_normalise(np.random.default_rng(0).normal(size=(200, 10)))
    k = kc.node_kernel(X, activation=activation, T=10.0)
    assert k.info["node_tables"]["tables"] >= 1
    assert k.info["error_estimate"] / np.max(np.abs(k.ntk)) <= 1e-9
    assert np.allclose(k.ntk, k.ntk.T)
    assert np.min(np.linalg.eigvalsh(k.ntk)) > -1e-8 * np.max(np.abs(k.ntk))


@pytest.mark.slow
def test_panels_with_node_tables_equal_the_tensor_grid_just_past_sigma_w_T_4_5(monkeypatch):
    """softplus at sigma_w T = 4.6 (N = 3 on the sphere) through the panels with node angle tables of the large-q rule
    against the Chebyshev tensor grid (a different time discretisation, no node tables, no anchored sweeps), which
    this case takes when the panels are switched off: NNGP and NTK agree within both error estimates and 1e-9
    (relative).  Measured: 13 s (panels) and 50 s (tensor grid); equal to 8 digits printed, estimates 2.7e-9 and
    1.5e-9 of the largest entry's scale."""
    from kernelcalc.kernels import ode_kinked_ladder

    th = np.array([0.0, 1.0, 2.5])
    x = np.stack([np.cos(th), np.sin(th)], axis=1) * math.sqrt(2.0)
    k = kc.node_kernel(x, activation="softplus", T=4.6)
    assert "panels" in k.info["time_scheme"]
    monkeypatch.delitem(ode_kinked_ladder._LARGE_Q_PANELS, "softplus")
    g = kc.node_kernel(x, activation="softplus", T=4.6)
    assert "panels" not in g.info["time_scheme"]
    for a, b in ((k.ntk, g.ntk), (k.nngp, g.nngp)):
        diff = np.max(np.abs(a - b))
        assert diff <= 1e-9 * np.max(np.abs(b)), diff
        assert diff <= k.info["error_estimate"] + g.info["error_estimate"], diff


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_softplus_sigma_w_T_10_sphere_table_against_direct_solves():
    """N = 200 on the sphere at sigma_w T = 10: the sphere table of the large-q rule (over the pairs' angles, in pieces
    split at the bands' edges, kernels/_theta_pieces.py) at 4 entries, the 2 closest pairs (angles 0.458-0.47, under
    band 0's edge 0.55: served by band 0, its edge lowered, ``band_floor``) and 2 random ones, against direct pair solves
    at their angles (one pair per call: no theta table, the closest pairs on band 1's grid); the difference within the
    sum of the error estimates, which is below 1e-9 of max|NTK|."""
    from kernelcalc.data import sphere_normalise

    x = sphere_normalise(np.random.default_rng(0).normal(size=(200, 10)))
    k = kc.node_kernel(x, activation="softplus", T=10.0)
    assert "pieces" in k.info["table"] and k.info["theta_nodes"] <= 65
    assert list(k.info["band_degrees"]) == [0]
    assert_table_meets_direct_solves(x, k, "softplus", 10.0, closest=2, random=2)
