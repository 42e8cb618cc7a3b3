r"""The gap form of the relu sums (:mod:`kernelcalc.theory.duals_gap`): $(C,\dot C)$ from $1-\rho$ and the drop
$C(\rho_p)-C(\rho_c)$, against mpmath; Genz's $\Phi_2$ from $1-\rho$; and the deficit form of the kinked Neural-ODE
solver that uses them (hardtanh at input angles down to $10^{-9}$)."""

from __future__ import annotations

import warnings

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from kernelcalc.theory._activation_text import X
from kernelcalc.theory.bivariate_normal import bivariate_normal_cdf
from kernelcalc.theory.duals_gap import relu_sum_gap
from kernelcalc.theory.duals_pwl import relu_sum


def _clip_C(lo, hi, q1, q2, omr):
    r"""$E[\mathrm{clip}(a)\,\mathrm{clip}(b)]$ (clip to $[lo, hi]$) at variances q1, q2 and $1-\rho$ = omr, in mpmath:
    the inner expectation over $b\,|\,a\sim N(\rho s_2a/s_1,\,q_2(1-\rho^2))$ in closed form (normal CDF and
    density), the outer by mpmath quad split at the kinks and around the conditional kinks (their width
    $\tau=s_2\sqrt{1-\rho^2}$ is tiny near $\rho=1$)."""
    s1, s2 = mp.sqrt(q1), mp.sqrt(q2)
    r = 1 - omr
    tau = s2 * mp.sqrt(omr * (2 - omr))

    def clip(y):
        return min(max(y, lo), hi)

    def inner(a):
        mu = r * s2 / s1 * a
        if tau == 0:
            return clip(mu)
        al, be = (lo - mu) / tau, (hi - mu) / tau
        return lo * mp.ncdf(al) + hi * (1 - mp.ncdf(be)) + mu * (mp.ncdf(be) - mp.ncdf(al)) \
            + tau * (mp.npdf(al) - mp.npdf(be))

    points = {mp.mpf(lo), mp.mpf(hi)}
    for u in (lo, hi):
        a0 = u * s1 / (r * s2)
        points.add(a0)
        if tau > 0:
            w = tau * s1 / (r * s2)
            points.update(a0 + m * w for m in (-30, -3, 3, 30))
    return mp.quad(lambda a: mp.npdf(a / s1) / s1 * clip(a) * inner(a), [-mp.inf] + sorted(points) + [mp.inf])


@pytest.mark.parametrize("lo, hi, expr", [(-1, 1, sp.Max(-1, sp.Min(1, X))), (0, 6, sp.Min(sp.Max(X, 0), 6))],
                         ids=["hardtanh", "relu6"])
def test_relu_sum_drop_and_duals_against_mpmath(lo, hi, expr):
    r"""The drop of hardtanh and relu6 relative to itself (the deficit solve needs it where a difference of two
    float64 values of $C$ keeps no digit: $\Delta=10^{-12}$), and $C$ at $1-\rho$, against mpmath at 25 digits;
    cases: on the diagonal ($\rho_p=1$), near it with unequal variances, and an angle $\theta_c\approx0.045$ from
    $\theta_p\approx10^{-5}$ with $|h-k|\approx0.04\,\theta_c$ (the graded quadrature's panels)."""
    form = relu_sum_gap(relu_sum(expr))
    cases = [(1.0, 1.0, 0.0, 1e-12), (0.9, 1.1, 2e-6, 1e-5), (1.3, 1.0, 1e-3, 5e-4), (2.0, 2.1, 1e-10, 1e-3)]
    q1, q2, omr, dlt = (np.array(c) for c in zip(*cases))
    drop = form.drop(q1, q2, omr, dlt)
    C, _ = form.duals(q1, q2, omr + dlt)
    with mp.workdps(25):
        for i, (a, b, o, d) in enumerate(cases):
            a, b, o, d = (mp.mpf(v) for v in (a, b, o, d))
            c_p, c_c = _clip_C(lo, hi, a, b, o), _clip_C(lo, hi, a, b, o + d)
            assert abs(drop[i] - float(c_p - c_c)) <= 1e-10 * abs(float(c_p - c_c)), (cases[i], drop[i], c_p - c_c)
            assert abs(C[i] - float(c_c)) <= 1e-14, (cases[i], C[i], c_c)


def test_bivariate_normal_from_one_minus_rho_against_mpmath():
    r"""$\Phi_2(h,k;\rho)$ with $1-\rho$ given exactly keeps its $\sqrt{1-\rho}$ dependence at $1-\rho=10^{-14}$ to
    $10^{-9}$ (the rounded $\rho$ would leave none), against mpmath's $\int_{-\infty}^h\varphi(x)
    \Phi\big((k-\rho x)/\sqrt{1-\rho^2}\big)dx$ at 40 digits; also for $\rho\to-1$ ($1-\rho$ near 2)."""
    h = np.array([0.3, -1.0, 0.5, 2.0, 0.7, -0.2])
    k = np.array([0.3, -1.0, 0.5001, 2.0, -0.7, 0.2])
    omr = np.array([1e-14, 1e-12, 1e-9, 3e-11, 2.0 - 1e-12, 2.0 - 1e-9])
    got = bivariate_normal_cdf(h, k, 1.0 - omr, omr=omr)
    with mp.workdps(40):
        for i in range(h.size):
            o = mp.mpf(omr[i])
            r, s = 1 - o, mp.sqrt(o * (2 - o))
            hh, kk = mp.mpf(h[i]), mp.mpf(k[i])
            x0 = kk / r     # where the conditional CDF switches (width s / r)
            pts = sorted({-mp.inf, min(hh, x0), hh} | ({x0 - 50 * s / abs(r), x0} if x0 < hh else set()))
            want = mp.quad(lambda x: mp.npdf(x) * mp.ncdf((kk - r * x) / s), [p for p in pts if p <= hh])
            assert abs(got[i] - float(want)) <= 2e-16, (i, got[i], want)


def test_hardtanh_kernel_at_tiny_input_angles():
    r"""hardtanh's NTK at input angles $\theta_0=10^{-9}$ to $10^{-7}$ (the deficit form) is $K(0)-a\theta_0-b\theta_0^2$
    to $10^{-12}$ relative, with $a$, $b$ from $\theta_0=10^{-6}$ and $10^{-5}$, and agrees with the direct solve at
    $\theta_0=0.003$ (where its rounding error is $\sim7\cdot10^{-15}/\theta_0$) to $10^{-11}$.  Before the gap form
    of the relu sums the correlation's rounding put an angle floor of $2\cdot10^{-7}$ under every solve:
    $(K(0)-K(\theta_0))/\theta_0$ was 126 at $10^{-9}$ (0.558 at $10^{-5}$), and the sphere's theta table stalled
    at 1025 nodes, warning."""
    from kernelcalc.kernels.ode import KinkedGoursatSolver
    from kernelcalc.theory.activations import resolve_activation

    def solver(deficit=True):
        s = KinkedGoursatSolver(resolve_activation("Max(-1, Min(1, x))"), T=1.0, sigma_w=1.0, sigma_u=1.0,
                                sigma_v=1.0, tol=1e-10, M=None, v_max=1.0)
        s.same_norms = True
        if not deficit:
            s._deficit_form = lambda dual: False
        return s

    th = np.array([0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 3e-3])
    ones = np.ones_like(th)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # no accuracy shortfall
        ntk = solver().at_angles(ones, ones, th)[1]
    a, b = np.linalg.solve(np.stack([th[4:6], th[4:6] ** 2], 1), ntk[0] - ntk[4:6])   # K(0) - a t - b t^2
    assert 0.5 < a < 0.6
    curve = ntk[0] - a * th[1:4] - b * th[1:4] ** 2
    assert np.all(np.abs(ntk[1:4] - curve) <= 1e-12 * ntk[0]), (ntk[1:4] - curve) / ntk[0]
    direct = solver(deficit=False).at_angles(ones[-1:], ones[-1:], th[-1:])[1]
    assert abs(direct[0] - ntk[-1]) <= 1e-11 * ntk[0]
    # hardtanh is odd: K(pi - theta) = -K(theta), the mirrored pair's gap 2 cos^2(theta / 2) given exactly (gap + 2 S0
    # would cancel: at pi - 1e-8 it was 0, the pair solved as antiparallel, off by 2.9e-9)
    anti = solver().at_angles(ones[1:5], ones[1:5], np.pi - th[1:5])[1]
    np.testing.assert_allclose(anti, -ntk[1:5], rtol=0, atol=1e-13 * ntk[0])



def test_resnet_hardtanh_at_small_input_angles_and_on_the_sphere():
    r"""The Euler ResNet (depth 8) of hardtanh marches near-parallel pairs in deficit form
    (:func:`kernelcalc.kernels._march._deficit_march`): its NTK at $\theta_0=10^{-5}$, $2\cdot10^{-5}$ is
    $K(0)-a\theta_0-b\theta_0^2$ ($a$, $b$ from $10^{-4}$, $2\cdot10^{-4}$) to $10^{-12}$ relative, where the plain
    march erred by 1.2e-9 at $10^{-5}$; at $\theta_0=3\cdot10^{-3}$, $8\cdot10^{-3}$ (the plain march's rounding
    error there ~2e-12) the two agree to $10^{-11}$.  The sphere Gram (200 rows) then meets its tolerance without a
    warning (before: the theta table stalled at 1025 nodes, estimate 1.2e-9, warned), and agrees with the direct
    per-pair solves of 5 rows."""
    import kernelcalc as kc
    from kernelcalc.data import sphere_normalise
    from kernelcalc.kernels import _march
    from kernelcalc.kernels.ode import GoursatSolver
    from kernelcalc.kernels.resnet import _march_discretisation

    def solver():
        return GoursatSolver("Max(-1, Min(1, x))", T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, M=8,
                             grid=lambda L: _march_discretisation(L, 1.0), scheme="Euler (exact discrete sums)",
                             v_max=1.0, max_nodes=float("inf"))

    th = np.array([0.0, 1e-5, 2e-5, 1e-4, 2e-4, 3e-3, 8e-3])
    one = np.ones_like(th)
    k = solver()(one, one, np.cos(th))[1]
    a, b = np.linalg.solve(np.stack([th[3:5], th[3:5] ** 2], 1), k[0] - k[3:5])
    assert np.all(np.abs(k[1:3] - (k[0] - a * th[1:3] - b * th[1:3] ** 2)) <= 1e-12 * k[0])
    deficit = _march._DEFICIT_OMR
    try:
        _march._DEFICIT_OMR = 0.0
        plain = solver()(one[5:], one[5:], np.cos(th[5:]))[1]
    finally:
        _march._DEFICIT_OMR = deficit
    np.testing.assert_allclose(plain, k[5:], rtol=0, atol=1e-11 * k[0])

    x = sphere_normalise(np.random.default_rng(3).standard_normal((200, 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*Assumption 1")
        K = kc.resnet_kernel(x, activation="Max(-1, Min(1, x))", depth=8)
    scale = np.max(np.abs(K.ntk))
    assert K.info["error_estimate"] <= 1e-10 * scale
    direct = solver()(np.ones(10), np.ones(10), (x[:5] @ x[:5].T / 10)[np.triu_indices(5, 1)])[1]
    np.testing.assert_allclose(K.ntk[:5, :5][np.triu_indices(5, 1)], direct, rtol=0, atol=1e-10 * scale)


def test_odd_kink_at_long_horizon_converges_at_orthogonal_inputs():
    r"""hardtanh at $\sigma_wT=10$ (collapsed-triangle panels): the kinked ladder probes $\theta_0=\pi/2$ for an odd
    $\phi$, whose cross covariance is $\sim10^{-16}$ of $q$ ($x\cdot y$ = cos(pi/2) = 6e-17); measured relative to
    itself its Picard sweeps stalled at 0.16 after 400 sweeps, and every Gram's estimate became 0.41 of max|NTK|,
    warned (the values were right: 7.6e-14 from the fixed code's).  With changes measured against $10^{-6}\max q$
    (``_triangle.CHANGE_FLOOR``): no warning, a change at rounding level, $K(\pi/2)=0$ to $10^{-13}$ of $K(0)$ (odd),
    and $K(\pi-\theta)=-K(\theta)$."""
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    s = KinkedGoursatSolver("Max(-1, Min(1, x))", T=10.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, tol=1e-10, M=None,
                            v_max=1.0)
    s.same_norms = True
    th = np.array([0.0, 1.0, 0.5 * np.pi, np.pi - 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ntk = s.at_angles(np.ones(4), np.ones(4), th)[1]
    assert s.info["sweep_change"] <= 1e-11
    assert abs(ntk[2]) <= 1e-13 * ntk[0]
    assert abs(ntk[3] + ntk[1]) <= 1e-13 * ntk[0]
