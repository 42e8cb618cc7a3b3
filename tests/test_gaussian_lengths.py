"""Per-variance Hermite series lengths (kernelcalc.theory.gaussian.series_lengths / short_coefficients): the
dropped terms of every variance meet the tail bound that the global length meets at q_max, and the
expectations from the short numpy marginals agree with a 2-D trapezoid rule."""

import math

import numpy as np
import pytest

from kernelcalc.theory import gaussian as g


@pytest.fixture(scope="module")
def tanh_dual():
    return g.dual_kernels("tanh", q_max=9.0)


def test_dropped_terms_meet_the_tail_bound(tanh_dual):
    """For variances spread over two decades (not bin edges), the terms k >= L(q) of the full K-term series
    (computed by HermiteRule.coefficients, all K terms) hold at most tol^2 of its squared norm; the short
    coefficients equal the full ones below L(q) (to rounding: other matrix shapes) and vanish beyond; small variances carry far fewer terms."""
    rule = tanh_dual.rule
    f = g._numpy_functions(tanh_dual.activation)[0]
    q = np.array([0.07, 0.3, 1.1, 2.9, 5.3, 8.8])
    full = rule.coefficients(f, q, np)                       # (K, 6)
    short = g.short_coefficients(rule, f, q)
    L = g.series_lengths(f, q, rule.K, rule.tol)
    for i in range(q.size):
        sq = full[:, i] ** 2
        assert np.sum(sq[L[i]:]) <= rule.tol**2 * np.sum(sq)
        assert np.max(np.abs(short[:L[i], i] - full[:L[i], i])) <= 1e-15 * math.sqrt(np.sum(sq))
        assert not np.any(short[L[i]:, i])
    assert L[0] <= rule.K // 8 and L[-1] <= rule.K
    assert np.all(np.diff(L) >= 0)


def _trapezoid_2d(f, q1, q2, c, h=0.04, zmax=9.0):
    """E[f(a) f(b)] by the 2-D trapezoid rule on the Cholesky factor (geometric in 1/h for analytic f)."""
    z = np.arange(-zmax, zmax + h / 2, h)
    w = h * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    rho = c / math.sqrt(q1 * q2)
    a = math.sqrt(q1) * z[:, None]
    b = math.sqrt(q2) * (rho * z[:, None] + math.sqrt(1 - rho * rho) * z[None, :])
    return float(w @ (f(a) * f(b)) @ w)


def test_short_marginals_against_quadrature(tanh_dual):
    """C and C' of tanh from the short numpy marginals at unequal variances (one small, one large: their series
    of very different lengths meet) against a 2-D trapezoid rule written here, within 1e-12."""
    q1, q2 = np.array([0.15, 6.0]), np.array([7.5, 0.4])
    c = np.array([0.6, -0.9]) * np.sqrt(q1 * q2)
    m1 = tanh_dual.marginal(q1, xp=np)
    m2 = tanh_dual.marginal(q2, xp=np)
    C, Cd = tanh_dual.from_marginals(m1, m2, c, xp=np, tails=(tanh_dual.tails(m1, np), tanh_dual.tails(m2, np)))
    for i in range(2):
        assert abs(C[i] - _trapezoid_2d(np.tanh, q1[i], q2[i], c[i])) <= 1e-12
        assert abs(Cd[i] - _trapezoid_2d(lambda x: 1 / np.cosh(x) ** 2, q1[i], q2[i], c[i])) <= 1e-12


def test_sweep_tolerance_applies_to_the_numpy_hermite_rule_only(tanh_dual):
    with pytest.raises(ValueError, match="numpy Hermite"):
        tanh_dual.marginal(np.array([1.0]), tol=1e-6)            # jax marginals take no tolerance
    m = tanh_dual.marginal(np.array([4.0]), derivative=False, xp=np, tol=1e-6)
    assert np.count_nonzero(m[1][:, 0]) < np.count_nonzero(tanh_dual.marginal(np.array([4.0]), False, np)[1][:, 0])
    assert math.isfinite(float(m[1][0, 0]))


def test_series_truncation_is_the_smallest_length_that_meets_the_bound():
    """The per-problem truncation of the numpy Mehler series (a bisection started below the bound r^k <= tol) is the
    smallest k with rbar^k sqrt(tau_f(k) tau_g(k)) <= tol, found here by a linear scan over all k, for correlations
    0, small, near 1 and exactly 1, and tolerances from 1e-13 to 0.5; the tails read by problem (Gathered, as the
    cross solves read the store's) give the same."""
    from kernelcalc.theory.gaussian_hermite_truncation import Gathered, _terms_numpy

    rng = np.random.default_rng(4)
    K, U, P = 600, 7, 40
    sq = rng.random((K, U)) * np.exp(-np.arange(K)[:, None] * rng.uniform(0.005, 0.2, U))
    sq[300:, 2] = 0.0                                          # a norm whose coefficients end early
    tails = np.cumsum(sq[::-1], axis=0)[::-1] / np.sum(sq, axis=0)
    ix, iy = rng.integers(0, U, P), rng.integers(0, U, P)
    r = rng.uniform(-1.0, 1.0, (P, 3, 3)) * rng.choice([0.0, 0.3, 0.9, 0.999], P)[:, None, None]
    r[0, 1, 1] = 1.0
    rbar = np.max(np.abs(r).reshape(P, -1), axis=1)
    k = np.arange(K)
    for tol in (1e-13, 1e-6, 0.5):
        got = _terms_numpy(Gathered(tails, ix), Gathered(tails, iy), r, tol)
        assert np.array_equal(got, _terms_numpy(tails[:, ix], tails[:, iy], r, tol))
        for p in range(P):
            with np.errstate(under="ignore"):
                power = rbar[p] ** k if rbar[p] > 0 else (k == 0).astype(float)
            ok = np.nonzero(power * np.sqrt(tails[:, ix[p]] * tails[:, iy[p]]) <= tol)[0]
            assert got[p] == (ok[0] if ok.size else K)
