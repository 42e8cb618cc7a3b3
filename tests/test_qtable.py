"""The (log q1, log q2, theta) table of a dual on the long-horizon panels (kernels/_qtable.py).

The table is checked against the function it tabulates, evaluated directly: gelu's closed-form dual (cheap, and
with the same structure as the large-q rules of softplus and silu: at large q it bends like relu near theta = 0,
on the scale 1/sqrt(q)).  The queries imitate a long-horizon solve: variances from 1 to 1e5, ratios up to 1e4,
narrow angle ranges per variance pair, down to theta = 0 on the diagonal q1 = q2."""

import numpy as np
import pytest

from _refusal_check import assert_refusal_multiplies_out
from kernelcalc.kernels._qtable import NodeTable, QTable
from kernelcalc.kernels.ode_kinked import _dual_np
from kernelcalc.theory.gaussian import dual_kernels


@pytest.fixture(scope="module")
def gelu():
    dual = dual_kernels("gelu")
    assert dual.method == "closed"
    return lambda q1, q2, c: _dual_np(dual, q1, q2, c, True)


def _queries(rng, n=3000):
    """Variance pairs of a solve (q(t) = e^{1.15 t}, t >= s) and angles in a narrow band per pair, as the self kernel
    and the antipodal pair bound them (theta ~ 0.6 |t - s| to that + 0.3), theta = 0 on the diagonal."""
    t = rng.uniform(0.0, 10.0, n)
    s = t * rng.uniform(0.0, 1.0, n) ** 0.3
    s[:20] = t[:20]                                    # the diagonal
    q1, q2 = np.exp(1.15 * t), np.exp(1.15 * s)
    lo = np.minimum(0.6 * (t - s), 1.3)
    theta = lo + 0.3 * rng.uniform(0.0, 1.0, n)
    theta[:10] = 0.0
    return q1, q2, np.sqrt(q1 * q2) * np.cos(theta)


def test_qtable_matches_the_dual_and_its_error_estimate_covers_it(gelu):
    """Over the queries of several sweeps (direct values first, then built boxes) the table reproduces C and Cdot
    to 1e-11 relative to sqrt(q1 q2) and 1, within 10x its own measured error (held-out points) plus rounding;
    the per-node Clenshaw form (NodeTable) gives the same values; a query outside a box is never extrapolated."""
    rng = np.random.default_rng(0)
    qt = QTable(gelu, 1e-12, q0=1.0)
    q1, q2, c = _queries(rng)
    for _ in range(8):                                # a solve asks the same nodes sweep after sweep
        C, Cd = qt(q1, q2, c)
    assert qt.builds >= 1 and qt.evaluations > 0
    C0, Cd0 = gelu(q1, q2, c)
    n = np.sqrt(q1 * q2)
    err = max(np.max(np.abs(C - C0) / n), np.max(np.abs(Cd - Cd0)))
    assert err <= 1e-11
    assert err <= 10.0 * qt.error + 1e-13
    nt = NodeTable(qt, q1, q2)
    idx = np.arange(q1.size)
    assert np.max(np.abs(nt(c, idx, 0) - C0) / n) <= 1e-11
    assert np.max(np.abs(nt(c, idx, 1) - Cd0)) <= 1e-11
    # a covariance far outside every box's angle range: the rule's own value (directly, or after a rebuild)
    c_out = n * np.cos(np.full(q1.size, 2.9))
    assert np.max(np.abs(nt(c_out, idx, 1) - gelu(q1, q2, c_out)[1])) <= 1e-11
    assert np.max(np.abs(qt(q1, q2, c_out, 0) - gelu(q1, q2, c_out)[0]) / n) <= 1e-11


def _with_table(solver):
    """``solver`` reading its dual through a QTable even for a closed form (the path of softplus and silu)."""
    from kernelcalc.kernels import ode_kinked

    def qtable(dual):
        if solver._qt is None:
            solver._qt = QTable(lambda q1, q2, c: _dual_np(dual, q1, q2, c, True), ode_kinked._QT_TOL, q0=1.0)
            solver._qt.dual = dual
        return solver._qt
    solver._qtable = qtable
    return solver


def test_panels_through_the_table_match_the_direct_dual():
    """The panel solves through the table (self kernels at every node, cross kernels through the per-node Clenshaw
    form, direct values for the first sweeps) give the kernel of the direct dual: gelu at sigma_w T = 4 (4 panels),
    three input angles, NTK within 1e-10 relative, and the table's error enters the error estimate."""
    from kernelcalc.kernels import ode
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    kw = dict(T=4.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0, M=10)
    theta = np.array([0.0, 0.5, 2.5])
    v = np.ones_like(theta)
    ref = KinkedGoursatSolver("gelu", **kw)
    nngp0, ntk0 = ref.at_angles(v, v, theta)
    ode._TIME_GRIDS.clear()
    tab = _with_table(KinkedGoursatSolver("gelu", **kw))
    nngp, ntk = tab.at_angles(v, v, theta)
    assert tab._qt is not None and tab._qt.evaluations > 0
    err = max(np.max(np.abs(ntk - ntk0)) / np.max(np.abs(ntk0)), np.max(np.abs(nngp - nngp0)) / np.max(np.abs(nngp0)))
    assert err <= 1e-10
    assert tab.relative_error_estimate() >= tab._qt.error


@pytest.mark.slow
def test_softplus_sigma_w_T_5_table_against_the_direct_rule():
    """softplus at sigma_w T = 5 (5 panels, q(T) ~ 400: the large-q rule): the kernel through the table against the
    same panels evaluating the rule directly at every node and sweep (minutes), NTK within 1e-9 relative and within
    the table solver's error estimate (plus the reference's)."""
    from kernelcalc.kernels import ode
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    kw = dict(T=5.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0, M=12)
    theta = np.array([0.0, 0.5, 2.5])
    v = np.ones_like(theta)
    tab = KinkedGoursatSolver("softplus", **kw)
    nngp, ntk = tab.at_angles(v, v, theta)
    assert tab.info["expectation"].startswith("large-q") and tab._qt is not None
    ode._TIME_GRIDS.clear()
    ref = KinkedGoursatSolver("softplus", **kw)
    ref._qtable = lambda dual: None
    nngp0, ntk0 = ref.at_angles(v, v, theta)
    err = np.max(np.abs(ntk - ntk0)) / np.max(np.abs(ntk0))
    assert err <= 1e-9
    assert err <= tab.relative_error_estimate() + ref.relative_error_estimate()


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 17 part 3 not met for softplus/silu: past sigma_w T = 5 the tensor grid's cost guard "
                          "refuses (the table path took 1474 s with an error estimate of 1.1e-4 at T = 10)", strict=False)
@pytest.mark.parametrize("activation", ["softplus", "silu"])
def test_softplus_silu_sigma_w_T_10_N200_computes(activation):
    """The issue's long-horizon case: N = 200 on the sphere (d = 10), T = 10, default tol: computes (no refusal)
    with an error estimate <= 1e-9 relative to max |NTK|, and a symmetric positive semi-definite NTK."""
    import kernelcalc as kc
    from kernelcalc.data import sphere_normalise

    X = sphere_normalise(np.random.default_rng(0).normal(size=(200, 10)))
    k = kc.node_kernel(X, activation=activation, T=10.0)
    assert k.info["error_estimate"] / np.max(np.abs(k.ntk)) <= 1e-9
    assert np.allclose(k.ntk, k.ntk.T)
    assert np.min(np.linalg.eigvalsh(k.ntk)) > -1e-8 * np.max(np.abs(k.ntk))


def test_table_cost_refusal_multiplies_out_and_names_its_drivers():
    """The cost guard of the table path (a large-q rule on the panels): past the limit, one line whose factors multiply
    to the quoted number and that names the boxes, the rule's points and every driver; the issue's case (softplus,
    sigma_w T = 10, q(T) ~ 4e5, 200 points) is priced below the limit."""
    import types

    import kernelcalc as kc
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    solver = KinkedGoursatSolver("softplus", T=10.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    dual = types.SimpleNamespace(method="asymptotic", points=4223)
    solver.info["q_max"] = 4.2e5
    solver._check_cost(dual, 200, solver._nodes(12))
    solver.info["q_max"] = 1e40
    with pytest.raises(kc.KernelcalcInputError) as err:
        solver._check_cost(dual, 200, solver._nodes(12))
    assert_refusal_multiplies_out(str(err.value), "boxes of (log q1, log q2)", "quadrature points per expectation")
