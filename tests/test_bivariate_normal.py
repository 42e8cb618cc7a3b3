r"""The bivariate normal CDF and the bivariate Mills ratio (:mod:`kernelcalc.theory.bivariate_normal`) against
mpmath: a 1-D quadrature of the conditional form $\Phi_2(h,k;\rho)=\int_{-\infty}^h\varphi(x)
\Phi(\frac{k-\rho x}{\sqrt{1-\rho^2}})dx$ at 20 digits (30 for the scaled form, whose exponent cancels up to $10^6$), split where the integrand changes on its own scales
(no code shared with the Genz / Plackett formulas tested)."""

import mpmath as mp
import numpy as np
import pytest

from kernelcalc.theory import bivariate_normal as bn


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
