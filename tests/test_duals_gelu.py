"""The GELU closed form (kernelcalc.theory.duals) against independent references.

References: ``expect_mpmath`` (nested adaptive mpmath quadrature of E[phi(a)phi(b)], E[phi'(a)phi'(b)] from the
sympy expression of gelu), 1-D mpmath quadratures, the mpmath derivative in c of C, and the Mehler/Hermite
series of ``dual_kernels(..., method="hermite")`` for whole MLP Grams.  No number here comes from the code.
"""

import math
from types import SimpleNamespace

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

import kernelcalc as kc
from kernelcalc.theory import gaussian
from kernelcalc.theory.activations import X, resolve_activation
from kernelcalc.theory.duals import JAX_OPS, NUMPY_OPS, closed_form_dual
from kernelcalc.theory.gaussian import dual_kernels, expect_mpmath

GELU = resolve_activation("gelu")

# (q1, q2, c): the extremes c = +-sqrt(q1 q2) are exact in binary (expect_mpmath sees r = +-1 exactly and
# integrates in 1-D, fast); the others need its 2-D quadrature (~10 s each on a busy machine).
EXTREMES = [(1.0, 1.0, 1.0), (1.0, 1.0, -1.0), (4.0, 9.0, 6.0), (4.0, 9.0, -6.0), (1e4, 1e4, -1e4),
            (2.0**13, 2.0**-7, -8.0), (2.0**-26, 2.0**-26, 2.0**-26), (2.0**-26, 2.0**-26, -2.0**-26)]
GENERAL = []
GENERAL_SLOW = [(0.5, 2.0, -0.7), (100.0, 30.0, 40.0), (1.0, 1.0, 0.3), (1e-4, 1e-2, -1e-3), (3.0, 0.2, -0.75), (1e3, 1e3, -990.0)]


def _closed(q1, q2, c):
    dual = closed_form_dual(GELU)
    return tuple(float(v) for v in dual(q1, q2, c, ops=NUMPY_OPS)), tuple(float(v) for v in dual(q1, q2, c))


def _check_against_quadrature(q1, q2, c):
    # 1-D (r = +-1): expect_mpmath's defaults (20 digits: Cdot at q = 1e4, c = -q is 6e-4, from an O(1) integrand);
    # 2-D: 15 digits on |z| <= 9, ~1e-15 here and 3x faster
    kw = {} if c * c == q1 * q2 else dict(dps=15, zmax=9)
    ref_C = expect_mpmath(GELU.expr, GELU.expr, q1, q2, c, **kw)
    ref_Cdot = expect_mpmath(GELU.derivative, GELU.derivative, q1, q2, c, **kw)
    for C, Cdot in _closed(q1, q2, c):          # numpy and jax
        assert C == pytest.approx(ref_C, rel=1e-12, abs=0)
        assert Cdot == pytest.approx(ref_Cdot, rel=1e-12, abs=0)


@pytest.mark.parametrize("q1, q2, c", EXTREMES + GENERAL)
def test_gelu_closed_form_matches_mpmath_quadrature(q1, q2, c):
    """C and Cdot to 1e-12 relative at identical / opposite inputs (q from 1.5e-8 to 1e4, q1 != q2) and in between."""
    _check_against_quadrature(q1, q2, c)


@pytest.mark.slow
@pytest.mark.parametrize("q1, q2, c", GENERAL_SLOW)
def test_gelu_closed_form_matches_mpmath_quadrature_more_points(q1, q2, c):
    _check_against_quadrature(q1, q2, c)


def test_gelu_zero_variance():
    """A zero input row (q1 = 0, c = 0): a = 0, so C = phi(0) E[phi(b)] = 0 and Cdot = phi'(0) E[phi'(b)] with
    phi'(0) = 1/2 and E[phi'(b)] by a 1-D mpmath quadrature."""
    dphi = sp.lambdify(X, GELU.derivative, "mpmath")
    for q2 in (0.0, 2.0, 1e4):
        with mp.workdps(30):
            mean = mp.quad(lambda z: dphi(mp.sqrt(q2) * z) * mp.npdf(z), [-mp.inf, 0, mp.inf])
        for C, Cdot in _closed(0.0, q2, 0.0):
            assert C == 0.0
            assert Cdot == pytest.approx(0.5 * float(mean), rel=1e-14)


def _mp_ops():
    """The closed form's operations in mpmath (the plain formulas, no series: 50 digits absorb the cancellation)."""
    return SimpleNamespace(sqrt=mp.sqrt, arctan2=mp.atan2, nonneg=lambda v: max(v, 0), pi=mp.pi,
                           arc=lambda c, d: d + c * mp.atan2(d, -c))


def test_gelu_Cdot_is_the_c_derivative_of_C():
    """Price's theorem, dC/dc = Cdot: the mpmath derivative (50 digits) of the formula for C against the float64
    Cdot, on a grid with q from 1e-6 to 1e4 and c across (-sqrt(q1 q2), sqrt(q1 q2)), near -sqrt(q1 q2) too (the
    series branch of the arc function)."""
    dual = closed_form_dual(GELU)
    ops = _mp_ops()
    rng = np.random.default_rng(7)
    q1 = 10.0 ** rng.uniform(-6, 4, 24)
    q2 = np.where(np.arange(24) % 3 == 0, q1, 10.0 ** rng.uniform(-6, 4, 24))
    rho = np.concatenate([rng.uniform(-1, 1, 16), -1 + 10.0 ** rng.uniform(-8, -2, 8)])
    c = rho * np.sqrt(q1 * q2)
    Cdot = np.asarray(dual(q1, q2, c, ops=NUMPY_OPS)[1])
    with mp.workdps(50):
        for i in range(24):
            a, b = mp.mpf(q1[i]), mp.mpf(q2[i])
            ref = mp.diff(lambda cc: dual.C_formula(ops, a, b, cc), mp.mpf(c[i]))
            assert Cdot[i] == pytest.approx(float(ref), rel=1e-13)


def test_gelu_series_branch_and_numpy_jax_agree():
    """Near c = -sqrt(q1 q2) at large q, where the arc function takes its series: float64 C against the 50-digit
    formula (relative, this is where neural-tangents' form loses ~q eps); numpy and jax agree throughout."""
    dual = closed_form_dual(GELU)
    ops = _mp_ops()
    q = np.array([1e2, 1e3, 1e4, 1e6, 30.0, 7.0])
    c = -q * (1 - np.array([0.0, 1e-9, 1e-6, 0.0, 0.05, 0.3]))
    C = np.asarray(dual(q, q, c, ops=NUMPY_OPS)[0])
    Cj = np.asarray(dual(q, q, c, ops=JAX_OPS)[0])
    np.testing.assert_allclose(Cj, C, rtol=1e-14, atol=0)
    with mp.workdps(50):
        for i in range(q.size):
            ref = dual.C_formula(ops, mp.mpf(q[i]), mp.mpf(q[i]), mp.mpf(c[i]))
            assert C[i] == pytest.approx(float(ref), rel=2e-15)
    big = dual(np.array([1e-300, 1e8, 1e8]), np.array([1e-300, 1e8, 1e8]), np.array([0.0, 1e8, -1e8]), ops=NUMPY_OPS)
    assert all(np.all(np.isfinite(v)) for v in big)


@pytest.mark.parametrize("text", ["gelu", "x*(1+erf(x/sqrt(2)))/2", "x*erf(x/sqrt(2))/2 + x/2",
                                  "0.5*x*(1 + erf(x/sqrt(2)))", "x*erfc(-x/sqrt(2))/2", "x - x*erfc(x/sqrt(2))/2"])
def test_gelu_is_recognised(text):
    dual = closed_form_dual(resolve_activation(text))
    assert dual is not None and dual.name == "gelu"
    assert dual_kernels(text).method == "closed"


def test_tanh_approximation_of_gelu_stays_numeric():
    act = resolve_activation("0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3)))")
    assert closed_form_dual(act) is None
    assert dual_kernels(act, q_max=4.0).method != "closed"


def test_mlp_gelu_gram_equals_the_hermite_series(monkeypatch):
    """A depth-3 gelu MLP Gram (points on and off the sphere, a zero row, sigma_b = 0 so that row has q = 0) by
    the closed form, against the same with the Mehler/Hermite series forced, to 1e-10 relative."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((7, 4))
    X[3] = 0.0
    X[5] = 2.5 * X[4]
    closed = kc.mlp_kernel(X, activation="gelu", depth=3, sigma_w=1.3)
    typed = kc.mlp_kernel(X, activation="x*erf(x/sqrt(2))/2 + x/2", depth=3, sigma_w=1.3)
    assert closed.info["expectation"] == typed.info["expectation"] == "closed form (gelu)"
    monkeypatch.setattr(gaussian, "closed_form_dual", lambda act: None)
    hermite = kc.mlp_kernel(X, activation="gelu", depth=3, sigma_w=1.3)
    assert hermite.info["expectation"].startswith("Mehler/Hermite series")
    for G in ("nngp", "ntk"):
        got, want = getattr(closed, G), getattr(hermite, G)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.max(np.abs(want)))
        np.testing.assert_array_equal(getattr(typed, G), got)
    assert closed.nngp[3, 3] == 0.0 and np.all(closed.nngp[3] == 0.0)
    assert math.isfinite(float(np.max(closed.ntk)))
