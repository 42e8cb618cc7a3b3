"""hermite_coefficients: normalised Hermite coefficients of phi(sqrt(q) z) against mpmath and exact expansions;
the one-layer NNGP link mu_k = sigma_v^2 sum_j a_j^2 gamma_jk against sphere_spectrum of the MLP."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError

_FUNCS = {"relu": lambda x: max(x, 0), "tanh": mp.tanh, "softplus": lambda x: mp.log1p(mp.exp(x))}


def _ref(name, q, j):
    f = _FUNCS[name]
    g = lambda z: (f(mp.sqrt(q) * z) * mp.hermite(j, z / mp.sqrt(2)) * mp.mpf(2) ** (-mp.mpf(j) / 2)  # noqa: E731
                   / mp.sqrt(mp.factorial(j)) * mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi))
    with mp.workdps(20):
        return float(mp.quad(g, [-24, -8, 0, 8, 24]))


@pytest.mark.parametrize("name", ["relu", "tanh", "softplus"])
def test_coefficients_match_mpmath(name):
    q = 1.7
    h = kc.hermite_coefficients(name, q=q, k_max=24)
    for j in (0, 1, 2, 5, 24):
        ref = _ref(name, q, j)
        assert abs(h.coefficients[j] - ref) <= h.error_bound[j] + 1e-15
        assert abs(h.coefficients[j] - ref) < 1e-13
    assert h.polynomial_degree is None and np.all(h.error_bound < 1e-13)


def test_breakpoints_away_from_zero_are_split_exactly():
    """hard-swish x relu6(x + 3) / 6 kinks at x = -3 and 3: the Gauss-Legendre pieces split there, so the coefficients
    meet mpmath (split at the same points) to rounding without a shortfall warning; before, the pieces split at 0 only
    and the quadrature still changed by 1.5e-9 at 19 968 nodes per piece (warned, 6 s)."""
    q = 1.3
    f = lambda x: x * min(max(x + 3, 0), 6) / 6                           # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error", kc.KernelcalcAccuracyWarning)
        h = kc.hermite_coefficients("x*Min(Max(x + 3, 0), 6)/6", q=q, k_max=12)
    for j in (0, 1, 2, 4, 12):
        g = lambda z: (f(mp.sqrt(q) * z) * mp.hermite(j, z / mp.sqrt(2)) * mp.mpf(2) ** (-mp.mpf(j) / 2)  # noqa: E731
                       / mp.sqrt(mp.factorial(j)) * mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi))
        with mp.workdps(20):
            ref = float(mp.quad(g, [-24, -3 / mp.sqrt(q), 0, 3 / mp.sqrt(q), 24]))
        assert abs(h.coefficients[j] - ref) < 1e-14, (j, h.coefficients[j], ref)


def test_polynomial_coefficients_exact():
    q = 2.0
    h = kc.hermite_coefficients("x**3 - x", q=q, k_max=10)
    # z^3 = He_3 + 3 He_1:  phi(sqrt(q) z) = q^{3/2} (He_3 + 3 He_1) - sqrt(q) He_1
    expected = np.zeros(11)
    expected[1] = 3 * q**1.5 - math.sqrt(q)
    expected[3] = q**1.5 * math.sqrt(6)
    np.testing.assert_allclose(h.coefficients, expected, atol=1e-13)
    assert h.polynomial_degree == 3
    assert list(np.flatnonzero(h.resolved)) == [1, 3]
    assert "polynomial of degree 3" in str(h)


def test_parseval_and_dual_series():
    q = 1.3
    h = kc.hermite_coefficients("tanh", q=q, k_max=120)
    with mp.workdps(25):
        second = mp.quad(lambda z: mp.tanh(mp.sqrt(q) * z) ** 2 * mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi), [-30, 0, 30])
    # E[tanh(u) tanh(v)], corr 0.4: a 2-D trapezoid rule (exponentially accurate for this analytic integrand)
    z = np.arange(-11, 11 + 1e-9, 0.04)
    w = 0.04 * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    a, b = np.meshgrid(z, z, indexing="ij")
    rho = 0.4
    dual = np.sum(np.outer(w, w) * np.tanh(math.sqrt(q) * a) * np.tanh(math.sqrt(q) * (rho * a + math.sqrt(1 - rho**2) * b)))
    assert h.second_moment == pytest.approx(float(second), rel=1e-13)
    assert np.sum(h.coefficients ** 2) + h.tail == pytest.approx(float(second), rel=1e-13)
    assert float(h.dual(rho)) == pytest.approx(dual, abs=1e-12 + h.tail)


def test_one_layer_nngp_link():
    sw, sv, d = 1.3, 0.8, 4     # erf: the MLP takes its closed-form (arcsin) dual, independent of the Hermite series
    h = kc.hermite_coefficients("erf", q=sw**2, k_max=120)
    s = kc.sphere_spectrum(model="mlp", activation="erf", depth=1, d=d, k_max=12, kernel="nngp",
                           sigma_w=sw, sigma_v=sv)
    mu_h = sv**2 * h.sphere_eigenvalues(d, 12)
    ok = s.resolved_nngp
    assert ok[1] and ok[3] and not ok[0] and not ok[2]       # erf is odd: even degrees vanish
    assert np.all(np.abs(s.mu_nngp[ok] - mu_h[ok]) <= s.err_nngp[ok] + sv**2 * h.tail + 1e-14)
    assert np.all(np.abs(mu_h[~ok]) <= s.err_nngp[~ok] + sv**2 * h.tail + 1e-14)


def test_bad_input():
    for kw in (dict(q=0.0), dict(q=-1.0), dict(k_max=-1), dict(k_max=10**6)):
        with pytest.raises(KernelcalcInputError) as err:
            kc.hermite_coefficients("tanh", **kw)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError):
        kc.hermite_coefficients("foo(", k_max=3)


def test_analyse_shows_coefficients():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = str(kc.analyse("x**2"))
    assert "Hermite" in text and "a_2 = +1.41421" in text
    assert "Hermite" in str(kc.analyse("softplus"))
