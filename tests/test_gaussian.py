"""Gaussian expectations against independent references (mpmath, other quadrature rules, closed forms)."""

import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from kernelcalc.theory.activations import X, resolve_activation
from kernelcalc.theory.gaussian import (PolarSectorRule, TrapezoidRule, choose_step, dual_kernels, expect_mpmath,
                                 gaussian_expectation)

SMOOTH = ["tanh", "softplus", "gelu", "silu", "sigmoid"]
VARIANCES = [0.1, 1.0, 2.79, 10.0]


def _numeric_dual(act, q_max):
    """The rule ``dual_kernels`` picks, or its Hermite series for an activation with a closed form (gelu):
    the SMOOTH tests are about the numeric rules (the closed form is tested in test_duals_gelu.py)."""
    dual = dual_kernels(act, q_max=q_max)
    return dual_kernels(act, q_max=q_max, method="hermite") if dual.method == "closed" else dual


def _mp_diag(expr, q, dps=30):
    """E[f(sqrt(q) z)^2] by 1-D mpmath quadrature (independent of the package's rules)."""
    with mp.workdps(dps):
        f = sp.lambdify(X, expr, "mpmath")
        pdf = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)  # noqa: E731
        return float(mp.quad(lambda z: f(mp.sqrt(q) * z) ** 2 * pdf(z), [-mp.inf, -3, 0, 3, mp.inf]))


@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_duals_match_mpmath_on_the_diagonal(name):
    """C and Cdot at r = 1 (variances 0.1 .. 10) to 1e-10 relative against mpmath."""
    act = resolve_activation(name)
    dual = _numeric_dual(act, 10.0)
    assert dual.method in ("hermite", "trapezoid")  # tanh at q=10 needs > 2048 Hermite terms
    q = np.array(VARIANCES)
    C, Cdot = (np.asarray(v) for v in dual(q, q, q))
    for i, qi in enumerate(VARIANCES):
        assert C[i] == pytest.approx(_mp_diag(act.expr, qi), rel=1e-10)
        assert Cdot[i] == pytest.approx(_mp_diag(act.derivative, qi), rel=1e-10)


def test_numerics_md_example_where_gauss_hermite_fails():
    """E[tanh'(a)^2] at q = 2.79: GH(100) is off by ~3e-4; our rule matches mpmath to 1e-12."""
    act = resolve_activation("tanh")
    ref = _mp_diag(act.derivative, 2.79)
    _, Cdot = dual_kernels(act, q_max=2.79)(2.79, 2.79, 2.79)
    assert float(Cdot) == pytest.approx(ref, rel=1e-12)
    z, w = np.polynomial.hermite_e.hermegauss(100)
    gh = np.sum(w * (1 / np.cosh(np.sqrt(2.79) * z) ** 4)) / math.sqrt(2 * math.pi)
    assert abs(gh - ref) / ref > 1e-5          # the failure mode the rule is built to avoid


@pytest.mark.parametrize("name", SMOOTH)
def test_hermite_series_matches_independent_2d_trapezoid_off_diagonal(name):
    act = resolve_activation(name)
    q1 = np.array([0.1, 2.79, 10.0, 3.0, 1.0])
    q2 = np.array([0.1, 2.79, 3.0, 10.0, 0.5])
    c = np.array([0.05, 2.0, -4.0, 5.4, 0.7]) * np.array([1, 1, 1, 1, 0.99])
    dual = _numeric_dual(act, 10.0)
    assert dual.method in ("hermite", "trapezoid")
    C, Cdot = (np.asarray(v) for v in dual(q1, q2, c))
    h = choose_step((act.numpy_fn, act.numpy_derivative), 10.0, 1e-14)
    rule = TrapezoidRule(h / 2)
    C2, Cdot2 = (np.asarray(v) for v in rule.expect_pairs(((act.jax_fn, act.jax_fn),
                                                           (act.jax_derivative, act.jax_derivative)), q1, q2, c))
    scale = np.sqrt(np.asarray(dual.C(q1, q1, q1)) * np.asarray(dual.C(q2, q2, q2)))
    assert np.max(np.abs(C - C2) / scale) < 1e-11
    assert np.max(np.abs(Cdot - Cdot2) / np.maximum(np.abs(Cdot2), 1e-3)) < 1e-10


CLOSED = ["relu", "leaky_relu(0.2)", "erf", "gelu", "sin", "cos", "quadratic", "identity", "x**3 - 2*x"]


@pytest.mark.parametrize("name", CLOSED)
def test_closed_forms_match_an_independent_rule(name):
    """Closed forms vs polar-sector / trapezoid quadrature at general covariances."""
    act = resolve_activation(name)
    dual = dual_kernels(act)
    assert dual.method == "closed"
    q1 = np.array([0.3, 1.0, 2.0, 4.0])
    q2 = np.array([0.3, 2.0, 1.0, 0.5])
    c = np.array([0.29, -0.9, 1.2, 0.0])
    C, Cdot = (np.asarray(v) for v in dual(q1, q2, c))
    rule = PolarSectorRule() if act.is_piecewise_smooth else TrapezoidRule(0.05)
    C2, Cdot2 = (np.asarray(v) for v in rule.expect_pairs(((act.jax_fn, act.jax_fn),
                                                           (act.jax_derivative, act.jax_derivative)), q1, q2, c))
    np.testing.assert_allclose(C, C2, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(Cdot, Cdot2, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "sin"])
def test_closed_forms_match_mpmath_at_r_equals_one(name):
    act = resolve_activation(name)
    for q in (0.5, 3.0):
        C, Cdot = dual_kernels(act)(q, q, q)
        assert float(C) == pytest.approx(_mp_diag(act.expr, q), rel=1e-12)


@pytest.mark.slow
def test_elu_polar_rule_matches_mpmath():
    act = resolve_activation("elu(alpha=0.5)")
    dual = dual_kernels(act, method="polar")      # elu's default is its closed form (tests/test_duals_elu.py)
    assert dual.method == "polar"
    C, Cdot = dual(2.0, 2.0, 2.0)
    assert float(C) == pytest.approx(_mp_diag(act.expr, 2.0), rel=1e-12)
    assert float(Cdot) == pytest.approx(_mp_diag(act.derivative, 2.0), rel=1e-12)


def test_vectorised_shapes_and_gaussian_expectation_front_door():
    q = np.full((3, 4), 1.5)
    c = np.linspace(-1.4, 1.4, 12).reshape(3, 4)
    C, Cdot = dual_kernels("tanh", q_max=2)(q, q, c)
    assert C.shape == Cdot.shape == (3, 4)
    # E[tanh(a) sigmoid(b)] by the front door vs the 2-D trapezoid at a finer step
    v = gaussian_expectation("tanh", "sigmoid", 1.0, 2.0, 0.8)
    act_t, act_s = resolve_activation("tanh"), resolve_activation("sigmoid")
    v2 = TrapezoidRule(0.05).expect_pairs(((act_t.jax_fn, act_s.jax_fn),), 1.0, 2.0, 0.8)[0]
    assert float(v) == pytest.approx(float(v2), rel=1e-12)


def test_bad_method_is_rejected():
    with pytest.raises(ValueError, match="method"):
        dual_kernels("tanh", method="simpson")
    with pytest.raises(ValueError, match="closed-form"):
        dual_kernels("tanh", method="closed")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "softplus", "relu", "elu(alpha=0.5)"])
def test_duals_match_2d_mpmath_off_diagonal(name):
    act = resolve_activation(name)
    for q1, q2, c in [(0.1, 0.1, 0.05), (10.0, 3.0, -4.0)]:
        C, Cdot = dual_kernels(act, q_max=10.0)(q1, q2, c)
        assert float(C) == pytest.approx(expect_mpmath(act.expr, act.expr, q1, q2, c), rel=1e-10)
        assert float(Cdot) == pytest.approx(expect_mpmath(act.derivative, act.derivative, q1, q2, c), rel=1e-10)


def test_mehler_truncation_meets_its_bound_and_is_batch_independent():
    """HermiteRule.series truncated per problem by correlation: within tol * sqrt(E f^2 E g^2) of the full
    series (the full sum written here), and each problem's value the same bit for bit
    whatever else is in its batch."""
    import numpy as np

    from kernelcalc.theory.gaussian import HermiteRule, dual_kernels

    dual = dual_kernels("tanh", q_max=3.0)
    q = np.array([0.4, 1.0, 2.5])
    m = dual.marginal(q, xp=np)                                 # (q, bf, bdf): coefficients (K, 3)
    tails = dual.tails(m, xp=np)
    rng = np.random.default_rng(0)
    ix, iy = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
    r = np.concatenate([rng.uniform(-1, 1, 30), [0.0, 1.0, -1.0, 0.999, 0.1, -0.3, 0.95, 0.5, 0.2, -0.99]])
    for b, t in zip(m[1:], tails):
        bf, bg = b[:, ix], b[:, iy]
        full = np.array([np.sum(bf[:, p] * bg[:, p] * r[p] ** np.arange(b.shape[0])) for p in range(40)])
        got = HermiteRule.series(bf, bg, r, np, tol=1e-13, tails=(t[:, ix], t[:, iy]))
        scale = np.sqrt(np.sum(bf**2, 0) * np.sum(bg**2, 0))
        assert np.all(np.abs(got - full) <= 1e-13 * scale + 1e-15 * np.abs(full)), np.max(np.abs(got - full) / scale)
        k0 = HermiteRule.terms(t[:, ix], t[:, iy], r, 1e-13, np)
        assert np.max(k0[np.abs(r) < 0.5]) < b.shape[0] // 4          # the point: far fewer terms
        for p in (3, 31, 35):                                       # alone == in the batch, bit for bit
            alone = HermiteRule.series(bf[:, p:p + 1], bg[:, p:p + 1], r[p:p + 1], np, tol=1e-13,
                                       tails=(t[:, ix[p:p + 1]], t[:, iy[p:p + 1]]))
            assert alone[0] == got[p]
