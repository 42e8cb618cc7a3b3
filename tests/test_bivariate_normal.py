r"""The bivariate normal CDF and the bivariate Mills ratio (:mod:`kernelcalc.theory.bivariate_normal`) against
mpmath: a 1-D quadrature of the conditional form $\Phi_2(h,k;\rho)=\int_{-\infty}^h\varphi(x)
\Phi(\frac{k-\rho x}{\sqrt{1-\rho^2}})dx$ at 20 digits (30 for the scaled form, whose exponent cancels up to $10^6$), split where the integrand changes on its own scales
(no code shared with the Genz / Plackett formulas tested)."""

import math

import mpmath as mp
import numpy as np
import pytest

from kernelcalc.theory import bivariate_normal as bn
from kernelcalc.theory import bivariate_whitened as bw


def _conditional(h, k, r, scaled):
    """mpmath: Phi_2(h, k; r), times e^Q when ``scaled`` (Q computed in mpmath, in the exponent)."""
    with mp.workdps(30 if scaled else 20):
        h, k, r = mp.mpf(h), mp.mpf(k), mp.mpf(r)
        s = mp.sqrt(1 - r * r)
        Q = (h * h - 2 * r * h * k + k * k) / (2 * (1 - r * r)) if scaled else 0
        f = lambda x: mp.exp(Q - x * x / 2 + mp.log(mp.ncdf((k - r * x) / s))) / mp.sqrt(2 * mp.pi)  # noqa: E731
        sc = 1 / max(1, abs(h))
        pts = {h - j * sc for j in (0, 0.01, 0.1, 0.3, 1, 3, 10, 30, 100)} | {h - j for j in (1, 3, 10, 30)}
        if r != 0:        # the inner Phi steps at x = k / r, on the scale s / |r|
            x0, w = k / r, s / abs(r)
            pts |= {x0 + j * w for j in (-30, -10, -3, -1, -0.3, 0, 0.3, 1, 3, 10, 30) if x0 + j * w < h}
            pts |= {h - j * w for j in (0.01, 0.1, 0.3, 1, 3, 10, 30)}
        return float(mp.quad(f, [-mp.inf] + sorted(pts)))


CDF_CASES = [(0, 0, 0.3), (-1, 0.5, -0.5), (1, 2, 0.95), (-2, 1, -0.99), (0.3, -0.4, 0.999999),
             (0.3, 0.3, -0.999999), (-3, 2, 0.5), (2, -1, 0.93), (-0.5, -0.5, 0.999999), (1, 1, -0.93),
             (-6, -5, 0.7), (4, -3, -0.2)]


def test_bivariate_cdf_matches_mpmath_for_every_correlation_band():
    """Absolute error <= 3e-16 in each of Genz's bands (|rho| < 0.3, < 0.75, < 0.925, >= 0.925, rho = +-0.999999)
    (the jax evaluation is checked through the ELU dual, tests/test_duals_elu.py)."""
    h, k, r = (np.array(v, float) for v in zip(*CDF_CASES))
    ref = np.array([_conditional(*c, scaled=False) for c in CDF_CASES])
    got = bn.bivariate_normal_cdf(h, k, r)
    assert np.max(np.abs(got - ref)) <= 3e-16
    # the ends: rho = 1 gives Phi(min(h, k)); rho = -1 gives max(0, Phi(h) - Phi(-k))
    assert bn.bivariate_normal_cdf(0.3, -0.2, 1.0) == pytest.approx(float(mp.ncdf(-0.2)), abs=1e-16)
    assert bn.bivariate_normal_cdf(0.3, -0.2, -1.0) == pytest.approx(float(mp.ncdf(0.3) - mp.ncdf(0.2)), abs=3e-16)


MILLS_CASES = [  # (h, k, rho) with h + k <= 0: the arguments of the ELU dual (q = 0.1 ... 1e6), deep in the tail
    (-0.316, -0.0949, -0.999999), (-3.1623, 3.16227, -0.999999), (-3.1623, -3.16227, 0.999999),
    (-6.1664, -6.1664, 0.95), (-3.1623, 2.846, -0.9), (-10.0, 9.99999, -0.999999), (-19.0, -19.0, 0.9),
    (-100.0, -30.0, 0.3), (-100.0, 99.9999, -0.999999), (-500.0, -500.0, -0.5), (-1000.0, 0.0, 0.0),
    (-1999.999, -1999.999, 0.999999), (-0.3, -0.2, 0.3), (-2.0, -2.0, -0.99999999),
]


def test_bivariate_mills_ratio_is_relatively_accurate_in_the_far_tail():
    r"""$e^{Q}\Phi_2$ to 3e-14 relative where $\Phi_2$ itself is as small as $e^{-2\cdot10^6}$ (it underflows: any
    formula for $\Phi_2$ times $e^{Q}$ would give 0 or nan), for $\rho$ within $10^{-6}$ of $\pm1$ too."""
    h, k, r = (np.array(v, float) for v in zip(*MILLS_CASES))
    ref = np.array([_conditional(*c, scaled=True) for c in MILLS_CASES])
    got = bn.bivariate_mills(h, k, r)
    assert np.max(np.abs(got / ref - 1)) <= 3e-14
    # rho = 1 with h = k is the univariate Mills ratio e^{h^2/2} Phi(h)
    assert bn.bivariate_mills(-30.0, -30.0, 1.0) == pytest.approx(
        float(mp.exp(mp.mpf(450)) * mp.ncdf(-30)), rel=1e-14)


def _whitened_reference(a, b, r):
    """mpmath: R_2 at the whitened distances (a, b): h = -(a + r b)/s, k = -(b + r a)/s formed at 40 digits (in
    floats they would cancel as r -> +-1), then the conditional quadrature above."""
    with mp.workdps(40):
        a, b, r = mp.mpf(a), mp.mpf(b), mp.mpf(r)
        s = mp.sqrt((1 - r) * (1 + r))
        h, k = -(a + r * b) / s, -(b + r * a) / s
    return _conditional(h, k, r, scaled=True)


def _elu_arguments(q1, q2, rho):
    """The whitened arguments of the ELU dual's three ratios (kernelcalc.theory.duals._elu_parts, re-derived):
    E[e^{a+b} 1{a<0,b<0}] at (s1 r, s2 r; rho) and E[e^a 1{a<0, sign(rho) b>0}] at (s1 r, 0; -|rho|)."""
    s1, s2, r = math.sqrt(q1), math.sqrt(q2), math.sqrt((1 - rho) * (1 + rho))
    return [(s1 * r, s2 * r, rho), (s1 * r, 0.0, -abs(rho)), (s2 * r, 0.0, -abs(rho))]


WHITENED_CASES = [_elu_arguments(1e2, 1e2, 0.999999)[0], _elu_arguments(1e4, 1e4, -0.999999)[1],
                  _elu_arguments(1e6, 1e6, 0.5)[0], _elu_arguments(1e6, 1e6, 0.5)[1], _elu_arguments(1e4, 37.0, 0.9)[0],
                  _elu_arguments(1e2, 1e4, -0.3)[0], _elu_arguments(1e2, 1e2, 0.9999)[2]]


def test_whitened_mills_ratio_matches_mpmath_at_elu_arguments():
    r"""The few-node form (Gauss-Laguerre / tabulated weight rules) at the ELU dual's arguments for q = 1e2, 1e4,
    1e6, rho = +-0.999999, equal and unequal variances: <= 1e-13 relative against mpmath (a different formula:
    the conditional form in h, k; the rules tested are derived from the whitened double integral)."""
    a, b, r = (np.array(v, float) for v in zip(*WHITENED_CASES))
    ref = np.array([_whitened_reference(*c) for c in WHITENED_CASES])
    got = bw.bivariate_mills_whitened(a, b, r)
    assert np.max(np.abs(got / ref - 1)) <= 1e-13, np.abs(got / ref - 1)
    # each rule's range: Laguerre of 4..8 nodes (a >= 10) and the tabulated rules (a < 10) are both exercised
    assert np.any(np.maximum(a, b) < 10) and np.any(np.maximum(a, b) >= 50)


@pytest.mark.slow
@pytest.mark.parametrize("rho", [-0.999999, -0.9, -0.3, 0.0, 0.3, 0.9, 0.999, 0.999999])
def test_whitened_mills_ratio_matches_mpmath_everywhere(rho):
    cases = [c for q1, q2 in [(1e2, 1e2), (1e4, 1e4), (1e6, 1e6), (1e4, 1e3), (3.0, 1e2)] for c in _elu_arguments(q1, q2, rho)]
    cases = [c for c in cases if -(c[0] + c[2] * c[1]) / math.sqrt(1 - c[2] ** 2) > -3000]   # the reference's reach
    a, b, r = (np.array(v, float) for v in zip(*cases))
    ref = np.array([_whitened_reference(*c) for c in cases])
    got = bw.bivariate_mills_whitened(a, b, r)
    assert np.max(np.abs(got / ref - 1)) <= 1e-13
    # the jax evaluation (both branches under where, 8 Laguerre nodes from a = 10) agrees
    import jax

    from kernelcalc._x64 import float64

    jx = np.asarray(float64(jax.jit(lambda a, b, r: bw.bivariate_mills_whitened(a, b, r, jax.numpy)))(a, b, r))
    np.testing.assert_allclose(jx, got, rtol=1e-13)


def test_orthant_probabilities_of_pairs_sharing_a_correlation():
    r"""``orthant_probabilities`` (P pairs of limits sharing each correlation, the relu sums' orthants) against mpmath's
    $\int_h^\infty\varphi(x)\Phi((\rho x-k)/\sqrt{1-\rho^2})dx$ at 30 digits on 12 points of every branch of Genz's rule
    ($|\rho|$ below 0.3, 0.75, 0.925, above, and $\pm1$), to 2e-16; with given tails and with $1-\rho$ given exactly,
    the same values."""
    import mpmath as mp

    from kernelcalc.theory.bivariate_normal import normal_cdf, orthant_probabilities

    r = np.array([0.1, -0.2, 0.5, -0.7, 0.8, -0.9, 0.95, -0.99, 0.999999, -0.93, 1.0, -1.0])
    h = np.stack([np.linspace(-2.0, 2.0, r.size), np.zeros(r.size), np.linspace(1.5, -0.5, r.size)])
    k = np.stack([np.linspace(1.0, -1.0, r.size), np.linspace(-0.3, 2.5, r.size), np.linspace(1.5, -0.5, r.size)])
    got = orthant_probabilities(h, k, r)
    with mp.workdps(30):
        for p in range(h.shape[0]):
            for i in range(r.size):
                hh, kk, rr = mp.mpf(h[p, i]), mp.mpf(k[p, i]), mp.mpf(r[i])
                if abs(rr) == 1:
                    want = mp.ncdf(-max(hh, kk)) if rr > 0 else max(mp.mpf(0), mp.ncdf(-hh) - mp.ncdf(kk))
                else:
                    s = mp.sqrt(1 - rr * rr)
                    x0 = kk / rr           # where the conditional CDF steps (width s / |rho|)
                    pts = sorted({hh, hh + 5} | {x0 + m * s / abs(rr) for m in (-30, -3, 0, 3, 30) if x0 + m * s / abs(rr) > hh})
                    want = mp.quad(lambda x: mp.npdf(x) * mp.ncdf((rr * x - kk) / s), pts + [mp.inf])
                assert abs(got[p, i] - float(want)) <= 2e-16, (p, i, got[p, i], want)
    tails = (normal_cdf(-h), normal_cdf(-k))
    np.testing.assert_array_equal(orthant_probabilities(h, k, r, tails=tails), got)
    np.testing.assert_allclose(orthant_probabilities(h, k, r, omr=1.0 - r), got, rtol=0, atol=2e-16)


def test_high_correlation_branch_in_every_node_band():
    r"""$|\rho|\ge0.925$: the correction's Gauss-Legendre sum takes 4 to 20 nodes by $a=\sqrt{1-\rho^2}$ and by
    $(h-k)^2/a^2$ (``bivariate_normal._HIGH_NODES``).  Against mpmath's conditional form (30 digits, no shared code)
    at two cases of every band: equal limits (the sphere's self-kernels: $(h-k)^2=0$), near-equal ones (ratio below
    1e-3) and far ones, $\rho$ of both signs: absolute error <= 3e-16; the node count each case took is checked, so
    that every band is exercised."""
    cases = []
    for a, n_near, n_far in ((0.005, 4, 4), (0.03, 4, 8), (0.1, 6, 16), (0.3, 8, 20)):
        r = math.sqrt(1.0 - a * a)
        for h, gap, sign, want_n in ((0.7, 0.0, 1, n_near), (-1.3, 0.01 * a, -1, n_near), (1.1, 0.5 * a, 1, n_far),
                                     (-0.4, 2.0 * a, -1, n_far)):
            k = sign * (h + gap)          # (rho < 0: the correction sees -k)
            cases.append((h, k, sign * r, want_n))
    h, k, r, want_n = (np.array(v, float) for v in zip(*cases))
    kk = np.where(r < 0, -k, k)
    np.testing.assert_array_equal(bn._high_nodes(1.0 - r * r, (h - kk) ** 2), want_n)
    ref = np.array([_conditional(hh, k_, rr, scaled=False) for hh, k_, rr, _ in cases])
    got = bn.bivariate_normal_cdf(h, k, r)
    assert np.max(np.abs(got - ref)) <= 3e-16, np.abs(got - ref)


def test_whitened_mills_ratio_at_a_loose_tolerance():
    r"""``tol=1e-7`` (a Newton sweep far from its fixed point: at most seven Gauss nodes below $A=10$) at the ELU dual's
    arguments of the T = 1 regime (q = 0.1 to 20, correlations of both signs up to 0.999999): within 1e-7 relative of
    mpmath, and a different value from the full rule (the loose rule is in use), which meets 1e-13."""
    cases = [c for q1, q2, rho in [(0.1, 0.1, -0.999999), (1.0, 3.0, -0.9), (8.0, 20.0, 0.4), (1.0, 3.0, 0.95),
                                   (8.0, 20.0, -0.3)] for c in _elu_arguments(q1, q2, rho)]
    a, b, r = (np.array(v, float) for v in zip(*cases))
    assert np.max(np.maximum(a, b)) < 10       # every case on the tabulated rules
    ref = np.array([_whitened_reference(*c) for c in cases])
    loose = bw.bivariate_mills_whitened(a, b, r, tol=1e-7)
    full = bw.bivariate_mills_whitened(a, b, r)
    assert np.max(np.abs(loose / ref - 1)) <= 1e-7
    assert np.max(np.abs(full / ref - 1)) <= 1e-13
    assert np.max(np.abs(loose / full - 1)) > 1e-14


def test_orthants_of_a_kink_at_zero_with_itself():
    r"""A pair whose limits are all 0 (relu6's first breakpoint with itself) is $P(X>0,Y>0)=\frac14+\arcsin\rho/2\pi$
    (Sheppard), evaluated in closed form: against mpmath at 30 digits, with $1-\rho$ given exactly down to 1e-14
    (where $\rho$ rounded is 1), to 2e-16, and relatively to 1e-14 near $\rho=-1$; beside a pair with other limits,
    that pair unchanged."""
    import mpmath as mp

    from kernelcalc.theory.bivariate_normal import orthant_probabilities

    omr = np.array([2.0, 1.9, 1.0, 0.3, 1e-3, 1e-8, 1e-14, 0.0])
    r = 1.0 - omr
    h = np.stack([np.zeros(r.size), np.linspace(-1.0, 2.0, r.size)])
    k = np.stack([np.zeros(r.size), np.linspace(0.5, -0.5, r.size)])
    got = orthant_probabilities(h, k, r, omr=omr)
    with mp.workdps(30):
        want = [float(mp.mpf(1) / 2 - mp.asin(mp.sqrt(mp.mpf(o) / 2)) / mp.pi) for o in omr]
    np.testing.assert_allclose(got[0], want, rtol=0, atol=2e-16)
    np.testing.assert_array_equal(got[1], orthant_probabilities(h[1:], k[1:], r, omr=omr)[0])
    np.testing.assert_allclose(orthant_probabilities(h, k, r)[0], [0.25 + math.asin(v) / (2 * math.pi) for v in r],
                               rtol=0, atol=2e-16)
    # near rho = -1 the orthant is small and relatively accurate (a squared relu's C cancels to 1e-16 of its terms)
    r = np.array([-1.0 + 1e-6, -1.0 + 1e-10, -0.999999])
    got = orthant_probabilities(np.zeros((1, 3)), np.zeros((1, 3)), r)[0]
    with mp.workdps(30):
        want = np.array([float(mp.mpf(1) / 4 + mp.asin(mp.mpf(v)) / (2 * mp.pi)) for v in r])
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
