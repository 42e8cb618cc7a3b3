r"""The polar-sector rule tabulated in (log q1, log q2, theta) (:mod:`kernelcalc.theory.polar_table`): against mpmath's
nested quadrature (no shared code), its error estimate against the rule at random points (the angles near 0 and pi
included, where a kink's $\sqrt{1-\rho}$ lives), and the Neural-ODE kernel with and without it."""

import math

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc.theory.activations import X, resolve_activation
from kernelcalc.theory.gaussian import dual_kernels, expect_mpmath
from kernelcalc.theory.polar_table import tabulate_polar
from _polar_table_check import assert_table_equals_the_rule, random_points

ACT = "Piecewise((tanh(x), x > 0), (x, True))"


@pytest.fixture(scope="module")
def table():
    dual = dual_kernels(ACT, q_max=2.0)
    assert dual.method == "polar"
    tab = tabulate_polar(dual, 0.9, 2.0, 1e-12)
    assert tab is not None
    return dual, tab


def _conditional_reference(f, g, q1, q2, rho):
    r"""$E[f(a)g(b)]$ written here (no shared code): $a=\sqrt{q_1}x$, $b=\sqrt{q_2}(\rho x+sz)$, $x,z$ standard normal,
    $s=\sqrt{1-\rho^2}$; the inner expectation over $z$ split at the kink of $g$ ($z_0=-\rho x/s$), the outer over $x$
    split at 0 (the kink of $f$) on panels graded toward 0 down to the width $s/|\rho|$ of the inner expectation's
    layer there; 60 Gauss-Legendre nodes per panel on $|x|,|z|\le 12$."""
    gx, gw = np.polynomial.legendre.leggauss(60)
    s = math.sqrt((1 - rho) * (1 + rho))
    pdf = lambda t: np.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731

    def panels(lo, hi):          # Gauss-Legendre nodes and weights on [lo, hi]
        return (lo + hi) / 2 + (hi - lo) / 2 * gx, (hi - lo) / 2 * gw

    def inner(x):                # E[g(sqrt(q2) (rho x + s z))] for each x
        z0 = np.clip(-rho * x / s, -12.0, 12.0)
        out = 0.0
        for lo, hi in ((-12.0 + 0 * z0, z0), (z0, 12.0 + 0 * z0)):
            z = (lo + hi)[:, None] / 2 + (hi - lo)[:, None] / 2 * gx
            w = (hi - lo)[:, None] / 2 * gw
            out = out + np.sum(w * pdf(z) * g(math.sqrt(q2) * (rho * x[:, None] + s * z)), axis=1)
        return out

    layer = max(s / max(abs(rho), 1e-3), 1e-14)
    edges = sorted({0.0, 12.0} | {layer * 10.0**k for k in range(0, 20) if layer * 10.0**k < 12.0})
    total = 0.0
    for sign in (1.0, -1.0):
        for lo, hi in zip(edges[:-1], edges[1:]):
            x, w = panels(sign * lo, sign * hi)
            total += sign * np.sum(w * pdf(x) * f(math.sqrt(q1) * x) * inner(x))
    return float(total)


def test_table_against_an_independent_quadrature(table):
    """C and Cdot at unequal variances and correlations from -0.999999 to 1 - 1e-8 against the conditional
    Gauss-Legendre quadrature written above (itself checked against mpmath's ``expect_mpmath`` to 1e-13 when written;
    that check, two minutes, is the slow test below): <= 1e-12 relative."""
    _, tab = table
    act = resolve_activation(ACT)
    f, df = act.numpy_fn, act.numpy_derivative
    for q1, q2, rho in ((0.95, 1.9, -0.999999), (1.7, 1.1, 0.35), (1.95, 1.95, 1 - 1e-8), (1.2, 0.92, 0.97)):
        c = rho * math.sqrt(q1 * q2)
        C, Cdot = (float(v) for v in tab.values_np(q1, q2, c))
        rC, rD = _conditional_reference(f, f, q1, q2, rho), _conditional_reference(df, df, q1, q2, rho)
        assert abs(C - rC) <= 1e-12 * abs(rC) and abs(Cdot - rD) <= 1e-12 * abs(rD), (q1, q2, rho, C - rC, Cdot - rD)


@pytest.mark.slow    # ~2 minutes: mpmath
def test_table_and_reference_against_mpmath(table):
    """The table and the conditional quadrature above against ``expect_mpmath`` (adaptive nested quadrature split at
    the kink, 20 digits) at three points: <= 1e-12 relative."""
    _, tab = table
    act = resolve_activation(ACT)
    d = act.expr.diff(X)
    for q1, q2, rho in ((0.95, 1.9, -0.999999), (1.7, 1.1, 0.35), (1.95, 1.95, 1 - 1e-8)):
        c = rho * math.sqrt(q1 * q2)
        C, Cdot = (float(v) for v in tab.values_np(q1, q2, c))
        rC, rD = expect_mpmath(act.expr, act.expr, q1, q2, c), expect_mpmath(d, d, q1, q2, c)
        assert abs(C - rC) <= 1e-12 * abs(rC) and abs(Cdot - rD) <= 1e-12 * abs(rD), (q1, q2, rho, C - rC, Cdot - rD)
        assert abs(_conditional_reference(act.numpy_fn, act.numpy_fn, q1, q2, rho) - rC) <= 1e-13 * abs(rC)


def test_table_error_estimate_is_honest(table):
    """At 1500 random points of the table's range (a third with the angle within 1e-8..1 of 0, a third of pi) the
    table differs from the rule it tabulates by at most its error estimate (relative to the largest |C|, |Cdot|), which
    is below 1e-12 (the table built to that tol); variances outside the range are the rule's own values."""
    dual, tab = table
    act = resolve_activation(ACT)
    n = 1500
    q1, q2, c = random_points(np.random.default_rng(1), 0.9, 2.0, n)
    got = np.stack(tab.values_np(q1, q2, c))
    pairs = ((act.numpy_fn, act.numpy_fn), (act.numpy_derivative, act.numpy_derivative))
    ref = np.concatenate([np.stack(dual.rule.expect_pairs_np(pairs, q1[i:i + 500], q2[i:i + 500], c[i:i + 500]))
                          for i in range(0, n, 500)], axis=1)
    scale = np.max(np.abs(ref), axis=1)
    err = float(np.max(np.max(np.abs(got - ref), axis=1) / scale))
    assert tab.error <= 1e-12 and err <= tab.error, (err, tab.error)
    out = np.stack(tab.values_np([0.3, 5.0], [1.0, 1.0], [0.1, 0.5]))      # outside [0.9, 2.0]: the rule
    want = np.stack(dual.rule.expect_pairs_np(pairs, [0.3, 5.0], [1.0, 1.0], [0.1, 0.5]))
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=0)
    # a zero variance (a zero input row): that variable is the constant 0, C = phi(0) E[phi(b)] whatever c
    out = np.stack(tab.values_np([0.0, 0.0, 1.5], [1.2, 0.0, 0.0], [0.0, 0.0, 0.0]))
    zero = np.array([float(act.numpy_fn(np.array(0.0))), float(act.numpy_derivative(np.array(0.0)))])
    from scipy.integrate import quad

    def moment(f):       # E[f(sqrt(1.2) z)], split at the kink
        g = lambda z: float(f(np.array(math.sqrt(1.2) * z))) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        return quad(g, -14, 0, epsabs=1e-14, epsrel=1e-13, limit=200)[0] + quad(g, 0, 14, epsabs=1e-14, epsrel=1e-13, limit=200)[0]

    one = np.array([moment(act.numpy_fn), moment(act.numpy_derivative)])
    np.testing.assert_allclose(out[:, 0], zero * one, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out[:, 1], zero * zero, atol=1e-14)


def test_table_with_shared_variances_and_the_tensor_rule(table):
    """The solvers ask many correlations at a few (q1, q2) (time cells); the table contracts the variances once per
    distinct pair: 3 cells x 300 angles (and the cells in both orders) against the rule point by point, within the
    table's estimate.  The rule on a tensor grid (the table's build: one matrix product per angle) equals the rule
    covariance by covariance to rounding."""
    dual, tab = table
    act = resolve_activation(ACT)
    pairs = ((act.numpy_fn, act.numpy_fn), (act.numpy_derivative, act.numpy_derivative))
    rng = np.random.default_rng(5)
    cells = np.array([[0.95, 1.7], [1.7, 0.95], [1.3, 1.3]])
    q1, q2 = np.repeat(cells[:, 0], 300), np.repeat(cells[:, 1], 300)
    th = np.tile(np.concatenate([rng.uniform(0, math.pi, 200), 10 ** rng.uniform(-8, 0, 100)]), 3)
    c = np.sqrt(q1 * q2) * np.cos(th)
    got = np.stack(tab.values_np(q1, q2, c))
    ref = np.stack(dual.rule.expect_pairs_np(pairs, q1, q2, c))
    scale = np.max(np.abs(ref), axis=1)
    assert np.max(np.max(np.abs(got - ref), axis=1) / scale) <= tab.error
    q, ang = np.array([0.9, 1.4, 2.0]), np.array([0.0, 0.3, 2.0, math.pi])
    T = np.stack(dual.rule.tensor_np(pairs, q, ang))                                 # (2, 3, 3, 4)
    i, j, k = (a.ravel() for a in np.meshgrid(range(3), range(3), range(4), indexing="ij"))
    each = np.stack(dual.rule.expect_pairs_np(pairs, q[i], q[j], np.sqrt(q[i] * q[j]) * np.cos(ang[k])))
    np.testing.assert_allclose(T.reshape(2, -1), each, rtol=1e-13, atol=1e-15)


def test_a_derivative_jump_at_the_kink_on_the_diagonal():
    """Review of stop 35: the table's evaluation took rho = c * (1 / sqrt(q1 q2)), one rounding off 1 on the diagonal
    c = q1 = q2 for ~15 % of the variances, theta 1.5e-8 instead of 0, and Cdot of a phi' that jumps at the kink
    (``0.2 x`` left of it: Cdot linear in theta there) moved by 8e-9 (and the table's own held-out check, through the
    same evaluation, failed it at tol 1e-12).  The table at tol 1e-12 is built, and on the diagonal of 400 variances
    its C and Cdot equal the rule's within the table's estimate."""
    dual = dual_kernels("Piecewise((tanh(x), x > 0), (0.2*x, True))", q_max=2.0)
    tab = tabulate_polar(dual, 0.9, 2.0, 1e-12)
    assert tab is not None and tab.error <= 1e-12
    qs = np.unique(np.random.default_rng(1).uniform(0.95, 1.9, 400))
    act = dual.activation
    pairs = ((act.numpy_fn, act.numpy_fn), (act.numpy_derivative, act.numpy_derivative))
    got = np.stack(tab.at_variances(qs, qs)(qs))
    ref = np.stack(dual.rule.expect_pairs_np(pairs, qs, qs, qs))
    assert np.max(np.abs(got - ref) / np.max(np.abs(ref), axis=1, keepdims=True)) <= max(tab.error, 1e-14)


def test_memoised_first_variances_give_the_same_series(monkeypatch, table):
    """The series in (log q2, theta) at a first variance is memoised across calls (the solvers' cells pair the same
    q_x(t) with many, call after call): 6 first variances x 40 second ones (the grouped contraction) give the same
    (C, Cdot) on a fresh memo, from the memo, and with a memo of 4 variances that must be cleared as it fills, and
    these equal the pair-by-pair contraction (one point a call) to 1e-14 of the scales."""
    from kernelcalc.theory import polar_table

    _, tab = table
    rng = np.random.default_rng(8)
    q1 = np.repeat(rng.uniform(0.9, 2.0, 6), 40)
    q2 = rng.uniform(0.9, 2.0, q1.size)
    c = np.sqrt(q1 * q2) * np.cos(rng.uniform(0.0, math.pi, q1.size))
    tab._by_first.clear()
    fresh = np.stack(tab.values_np(q1, q2, c))
    assert len(tab._by_first) == 6
    again = np.stack(tab.values_np(q1, q2, c))
    monkeypatch.setattr(polar_table, "_FIRST_MEMO", 4)
    tab._by_first.clear()
    tab.values_np(q1[:120], q2[:120], c[:120])            # 3 first variances memoised, then 3 more: cleared
    assert len(tab._by_first) == 3
    bounded = np.stack(tab.values_np(q1, q2, c))
    assert len(tab._by_first) == 3
    single = np.stack([np.concatenate(tab.values_np(*(np.array([v]) for v in p))) for p in zip(q1, q2, c)], axis=1)
    scale = np.max(np.abs(single), axis=1, keepdims=True)
    np.testing.assert_array_equal(again, fresh)
    for got in (fresh, bounded):
        assert np.max(np.abs(got - single) / scale) <= 1e-14
    tab._by_first.clear()


@pytest.mark.slow    # ~15 s: the untabulated rule's Neural-ODE solves
def test_node_kernel_with_the_table_equals_the_rule(monkeypatch):
    """The Neural-ODE kernel of a kink-at-0 piecewise activation on five sphere rows (the direct path) with the
    tabulated dual (the solver's default) and with the rule itself: within 1e-12 of max|NTK|."""
    x = kc.data.sphere_normalise(np.random.default_rng(3).normal(size=(5, 10)))
    assert_table_equals_the_rule(monkeypatch, lambda: kc.node_kernel(x, activation=ACT))


@pytest.mark.slow    # ~30 s: the untabulated rule's Euler march
def test_resnet_kernel_with_the_table_equals_the_rule(monkeypatch):
    """The Euler ResNet (depth 4) evaluates its dual in numpy too: with the table and with the rule itself, within
    1e-12 of max|NTK| on five sphere rows."""
    x = kc.data.sphere_normalise(np.random.default_rng(4).normal(size=(5, 10)))
    assert_table_equals_the_rule(monkeypatch, lambda: kc.resnet_kernel(x, activation=ACT, depth=4))


def test_elu_closed_form_tabulated_off_the_sphere():
    """A dear closed form whose kinks are at 0 (elu: bivariate Mills ratios) tabulated the same way (analytic in theta
    on [0, pi]) over the variances of standardised data: within its estimate (below 1e-12) of the closed form at 600
    random points, a third of the angles within 1e-8..1 of 0 and of pi; it answers as a closed form does."""
    from kernelcalc.theory.duals_ops import NUMPY_OPS

    dual = dual_kernels("elu")
    assert dual.method == "closed" and dual.points > 1
    tab = tabulate_polar(dual, 0.1, 10.0, 1e-12)
    assert tab is not None and tab.closed and tab.error <= 1e-12
    q1, q2, c = random_points(np.random.default_rng(7), 0.1, 10.0, 600)
    ref = np.stack(dual.rule(q1, q2, c, ops=NUMPY_OPS))
    got = np.stack(tab(q1, q2, c))
    scale = np.max(np.abs(ref), axis=1)
    assert np.max(np.max(np.abs(got - ref), axis=1) / scale) <= tab.error
    np.testing.assert_array_equal(tab.C_formula(None, q1, q2, c), got[0])
    assert "elu" in tab.name and "tabulated" in tab.describe()


def test_a_build_that_missed_tol_is_not_repeated(monkeypatch, table):
    """A solver asks for its table at every call: a build that missed tol over a range is remembered, and a request
    holding that range at a tol as strict gets None without building again (a looser tol, or a narrower range,
    builds)."""
    from kernelcalc.theory import polar_table

    dual, _ = table
    calls = []
    monkeypatch.setattr(polar_table, "_BUILT", {})
    monkeypatch.setattr(polar_table, "_build", lambda d, lo, hi, tol: calls.append((lo, hi, tol)))
    assert tabulate_polar(dual, 1.0, 1.5, 1e-13) is None and len(calls) == 1
    assert tabulate_polar(dual, 0.9, 1.6, 1e-14) is None and len(calls) == 1      # wider, stricter: not again
    assert tabulate_polar(dual, 1.0, 1.5, 1e-11) is None and len(calls) == 2      # looser: tried
    assert tabulate_polar(dual, 1.1, 1.4, 1e-13) is None and len(calls) == 3      # narrower: tried


def test_the_kernels_tol_sets_the_rules_accuracy():
    """A row of norm v = 8.1 (standardised data's largest: q(T) = 13.1): the polar rule's finest level misses 1e-13
    there (it warned twice, for a kernel asked to 1e-10).  The solver asks its dual for tol / (10 (1 + sigma_w T)) =
    5e-12: no warning, the expectation's estimate within that (plus the table's), the kernel's within tol; and the rule it chose is
    within its estimate of the conditional quadrature above at q = 13.1 (no shared code), correlations 0.3 to 0.999."""
    import warnings

    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 10))
    x *= np.sqrt(np.array([[8.1], [1.0]]) * 10) / np.linalg.norm(x, axis=1, keepdims=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        K = kc.node_kernel(x, activation=ACT)
    assert not [w for w in caught if issubclass(w.category, kc.KernelcalcAccuracyWarning)]
    assert K.info["expectation_error_estimate"] <= 1e-10 / 20 + K.info["polar_table_error"] and K.info["polar_table_error"] <= 1e-12
    assert K.info["error_estimate"] <= 1e-10 * np.max(np.abs(K.ntk))
    q = K.info["q_max"]
    dual = dual_kernels(ACT, q_max=1.05 * q, tol=1e-10 / 20)
    assert dual.method == "polar" and f"{dual.rule.n_angle}x4 angles x {dual.rule.n_radius} radii" in K.info["expectation"]
    act = resolve_activation(ACT)
    for rho in (0.3, 0.9, 0.999):
        got = np.array([float(v) for v in dual.rule.expect_pairs_np(((act.numpy_fn, act.numpy_fn),
                                                                      (act.numpy_derivative, act.numpy_derivative)),
                                                                     q, q, rho * q)])
        ref = np.array([_conditional_reference(f, f, q, q, rho) for f in (act.numpy_fn, act.numpy_derivative)])
        assert np.all(np.abs(got - ref) <= dual.error_estimate * np.abs(ref)), (rho, got - ref)


def test_a_table_whose_held_out_points_miss_takes_one_level_more(monkeypatch):
    """The tanh kink over [0.286, 30] at tol 2.5e-8 (a kernel asked to 1e-6 at T = 2, sigma_w = 1.5): the series' tails
    pass at degree 32 in theta (1.1e-8 <= tol / 2) but the held-out points miss (2e-8 x 3 > tol).  The build takes one
    level more instead of giving up (the kernel then fell back to the rule itself, 12288 integrand values a cell, and
    the cost guard refused the call): a table within tol of the rule at 300 random points, a third of the angles within
    1e-8..1 of 0 and of pi."""
    from kernelcalc.theory import polar_table

    monkeypatch.setattr(polar_table, "_BUILT", {})
    dual = dual_kernels(ACT, q_max=31.5, tol=2.5e-8)
    tab = tabulate_polar(dual, 0.286, 30.0, 2.5e-8)
    assert tab is not None and tab.error <= 2.5e-8 and tab.degrees[1] > 32
    act = resolve_activation(ACT)
    q1, q2, c = random_points(np.random.default_rng(11), 0.286, 30.0, 300)
    ref = np.stack(dual.rule.expect_pairs_np(((act.numpy_fn, act.numpy_fn),
                                              (act.numpy_derivative, act.numpy_derivative)), q1, q2, c))
    got = np.stack(tab.values_np(q1, q2, c))
    assert np.max(np.max(np.abs(got - ref), axis=1) / np.max(np.abs(ref), axis=1)) <= 2.5e-8
