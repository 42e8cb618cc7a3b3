r"""hard-swish $\phi(x)=x\,\mathrm{clip}(x+3,0,6)/6$ end to end: the Neural-ODE kernel (``node_kernel``, the kinked
solver on the closed-form piecewise-polynomial dual of :mod:`kernelcalc.theory.duals_pwp`) and the Euler ResNet
(``resnet_kernel``) against references written here that share no code with kernelcalc's solvers or duals.

**The test's dual** (:func:`_hswish_dual`, independent of ``pwp_joint``): in standard units $a=s_1z$,
$b=s_2(\rho z+\sigma Z)$, $C=\int\phi(s_1z)\,G(z)\,\varphi(z)\,dz$ with the inner $G(z)=E[\phi(V)]$,
$V\sim N(s_2\rho z,\,s_2^2\sigma^2)$, in closed form from the partial moments of $V$ on $(-3,3)$ and $(3,\infty)$
(erfc and the normal density), and $\dot C$ alike with $\phi'$ ($0$, $(2x+3)/6$, $1$).  The outer integral: a
12-point Gauss-Legendre rule on panels of $[-9,9]$ cut at the unit grid, at the kinks of $\phi(s_1z)$
($z=\pm3/s_1$) and at the layers of $G$ ($z_0=\pm3/(s_2\rho)$, width $w=\sigma/|\rho|$: cuts at $z_0$,
$z_0\pm\{0.5,2,6,20\}w$, graded for a small $\sigma$).  $\rho=c/\sqrt{q_1q_2}$ (not $c/(s_1s_2)$: at equal variances
this keeps $1-\rho$ exact; with $c/(s_1s_2)$ the reference's NTK at $\theta_0=0$ on the $n=128$ grid was off by
$10^{-10}$, as $\dot C$ is $\sim\sigma$ near $\rho=1$).  Measured against mpmath (inner closed form checked against
mpmath quadrature, outer ``mp.quad`` split at the same points, 20 digits) at 21 points incl.
$1-\rho=10^{-2}..10^{-12}$ and $q$ up to 9: $|\Delta C|\le1.2\cdot10^{-16}$, $|\Delta\dot C|\le4\cdot10^{-16}$, except
$\dot C$ at $1-\rho\le10^{-8}$ (equal variances: $2\cdot10^{-15}$ at $10^{-8}$, $5\cdot10^{-14}$ at $10^{-12}$: the
rounding of $\rho$ times $d\dot C/d\sigma$, any float dual has it); against a 30-point rule on a finer grid,
$\le6\cdot10^{-16}$.  Cost: ~150 ns per element and outer node (432 nodes).
:func:`test_reference_dual_against_mpmath` checks three of these points.

**Neural ODE reference**: the trapezoid Goursat march of ``tests/trapezoid_goursat.py`` (equal norms) with this
dual, three Richardson steps over $n=4,8,16,32$ (cells split at $t=s$: the error expands in $h^2,h^4,h^6$ across
the kinks).  Measured at $T=1$, $\sigma$'s $=1$, $\theta_0\in\{0,0.7,2.5\}$: the Richardson results over
$4..32$ and $8..64$ agree to $7\cdot10^{-14}$ (the NTK at 0; the estimate :func:`_richardson` gives,
$2.8\cdot10^{-12}$, is conservative), and $8..64$ agrees with ``node_kernel`` to $3\cdot10^{-15}$ (its
``error_estimate`` $2.9\cdot10^{-13}$).  Near-parallel or near-antiparallel pairs ($\theta_0=10^{-4}$, $\pi-10^{-4}$)
are beyond this reference at these grids (the cross covariance's kink is not on the cells' diagonal: over $8..64$
its NTK still moves by $8\cdot10^{-10}$ at $10^{-4}$), so the Gram test checks them by smoothness and by the direct
solve.  Off the sphere: the same march written here without the symmetry (:func:`_cross_march`,
:func:`_cross_backward`), checked against the symmetric one on the sphere to rounding.

**ResNet reference**: ``tests/reference_node.euler_resnet_kernel`` (exact discrete sums) with this dual as its rule.
"""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
from scipy.special import erfc

import kernelcalc as kc
from kernelcalc.theory._activation_text import X
from reference_node import euler_resnet_kernel, two_inputs
from trapezoid_goursat import backward, backward_row, march

HSWISH = "x*Min(Max(x + 3, 0), 6)/6"
HSWISH_EXPR = X * sp.Min(sp.Max(X + 3, 0), 6) / 6
TOL = 1e-10          # node_kernel's default tol (relative to max|NTK|)


# ----------------------------------------------------------------------------- the test's own dual
_GX, _GW = np.polynomial.legendre.leggauss(12)
_R = 9.0                                             # phi(s z) phi(s' z') pdf beyond |z| = 9: < 1e-16 at q <= 9
_BASE = np.linspace(-_R, _R, 19)
_GRADE = np.array([0.0, -0.5, 0.5, -2.0, 2.0, -6.0, 6.0, -20.0, 20.0])
_SQ2PI, _SQ2 = math.sqrt(2 * math.pi), math.sqrt(2.0)


def _phi(x):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _dphi(x):
    return np.where(x < -3.0, 0.0, np.where(x < 3.0, (2.0 * x + 3.0) / 6.0, 1.0))


def _pdf(t):
    return np.exp(-0.5 * t * t) / _SQ2PI


def _inner(mu, tau):
    r"""$(E[\phi(V)], E[\phi'(V)])$, $V\sim N(\mu,\tau^2)$, from the partial moments of $V$ on $(-3,3)$,
    $(3,\infty)$."""
    a = np.clip((-3.0 - mu) / tau, -40.0, 40.0)
    b = np.clip((3.0 - mu) / tau, -40.0, 40.0)
    Pa, Pb = 0.5 * erfc(a / _SQ2), 0.5 * erfc(b / _SQ2)        # P(V > -3), P(V > 3)
    pa, pb = _pdf(a), _pdf(b)
    m0 = Pa - Pb
    m1 = pa - pb
    e1 = mu * m0 + tau * m1                                       # E[V; -3 < V < 3]
    e2 = mu * mu * m0 + 2 * mu * tau * m1 + tau * tau * (m0 + a * pa - b * pb)
    h1 = mu * Pb + tau * pb                                       # E[V; V > 3]
    return (e2 + 3.0 * e1) / 6.0 + h1, (2.0 * e1 + 3.0 * m0) / 6.0 + Pb


def _hswish_dual(q1, q2, c):
    r"""$(C,\dot C)$ of hard-swish at variances ``q1``, ``q2`` and covariance ``c`` (arrays, broadcast): module doc."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, float) for v in (q1, q2, c)))
    shape = q1.shape
    q1, q2, c = (v.reshape(-1, 1) for v in (q1, q2, c))
    s1, s2 = np.sqrt(q1), np.sqrt(q2)
    rho = np.clip(c / np.sqrt(q1 * q2), -1.0, 1.0)
    sig = np.sqrt((1.0 - rho) * (1.0 + rho))
    rs = np.where(rho >= 0, np.maximum(rho, 1e-30), np.minimum(rho, -1e-30))
    w = sig / np.abs(rs)
    layers = [u / (s2 * rs) + w * _GRADE for u in (-3.0, 3.0)]
    edges = np.concatenate([np.broadcast_to(_BASE, (q1.shape[0], _BASE.size)), -3.0 / s1, 3.0 / s1] + layers, axis=1)
    edges = np.sort(np.clip(np.nan_to_num(edges, nan=_R, posinf=_R, neginf=-_R), -_R, _R), axis=1)
    mid, half = 0.5 * (edges[:, 1:] + edges[:, :-1]), 0.5 * (edges[:, 1:] - edges[:, :-1])
    z = (mid[:, :, None] + half[:, :, None] * _GX).reshape(q1.shape[0], -1)
    W = (half[:, :, None] * _GW).reshape(q1.shape[0], -1) * _pdf(z)
    G, Gd = _inner(s2 * rho * z, np.maximum(s2 * sig, 1e-300))
    C = np.sum(W * _phi(s1 * z) * G, axis=1)
    Cd = np.sum(W * _dphi(s1 * z) * Gd, axis=1)
    return C.reshape(shape), Cd.reshape(shape)


def _mp_dual(q1, q2, c):
    r"""$(C,\dot C)$ in mpmath: the inner expectation over $b\,|\,a$ by ``mp.quad`` split at the kinks (the checked
    points), the outer by ``mp.quad`` split at the kinks of $\phi(s_1z)$ and around the layers of the inner one."""
    q1, q2, c = (mp.mpf(v) for v in (q1, q2, c))
    s1, s2 = mp.sqrt(q1), mp.sqrt(q2)
    r = c / mp.sqrt(q1 * q2)
    s = mp.sqrt(1 - r * r)
    phi = lambda x: x * min(max(x + 3, 0), 6) / 6
    dphi = lambda x: mp.mpf(0) if x < -3 else ((2 * x + 3) / 6 if x < 3 else mp.mpf(1))

    def moments(mu, tau, lo, hi):          # E[V^k; lo < V < hi], k = 0, 1, 2
        a, b = (lo - mu) / tau, (hi - mu) / tau
        m0, m1 = mp.ncdf(b) - mp.ncdf(a), mp.npdf(a) - mp.npdf(b)
        m2 = m0 + a * mp.npdf(a) - (0 if b == mp.inf else b * mp.npdf(b))
        return m0, mu * m0 + tau * m1, mu * mu * m0 + 2 * mu * tau * m1 + tau * tau * m2

    def inner(z):
        mu, tau = s2 * r * z, s2 * s
        m, h = moments(mu, tau, -3, 3), moments(mu, tau, 3, mp.inf)
        return (m[2] + 3 * m[1]) / 6 + h[1], (2 * m[1] + 3 * m[0]) / 6 + h[0]

    pts = {-3 / s1, 3 / s1}
    for u in (-3, 3) if r != 0 else ():
        z0, w = u / (s2 * r), s / abs(r)
        pts |= {z0 + k * w for k in (-30, -3, -1, 0, 1, 3, 30)}
    pts = [-mp.inf] + sorted(pts) + [mp.inf]
    return tuple(mp.quad(lambda z: mp.npdf(z) * f(s1 * z) * inner(z)[i], pts) for i, f in enumerate((phi, dphi)))


def test_reference_dual_against_mpmath():
    r"""The test's dual against mpmath at 17 digits (the module doc's survey used 20): a generic point with unequal
    variances, a near-diagonal one ($1-\rho=10^{-8}$, unequal variances: the graded layer) and one at large variance;
    $C$ and $\dot C$ within $10^{-15}$ (measured: $\le4\cdot10^{-16}$, 1.7 s).  The inner closed form is checked
    against mpmath quadrature first."""
    with mp.workdps(17):
        for mu, tau in ((-2.9, 0.01), (3.5, 2.0)):
            v = lambda t: mp.npdf((t - mu) / tau) / tau
            want = (mp.quad(lambda t: v(t) * t * min(max(t + 3, 0), 6) / 6, [-mp.inf, -3, 3, mp.inf]),
                    mp.quad(lambda t: v(t) * (2 * t + 3) / 6, [-3, 3]) + mp.quad(v, [3, mp.inf]))
            got = _inner(np.array(mu), np.array(tau))
            assert abs(got[0] - float(want[0])) <= 1e-15 and abs(got[1] - float(want[1])) <= 1e-15, (got, want)
        cases = [(1.3, 0.9, -0.7), (1.2, 1.2001, 1.2000499869578765), (9.0, 7.0, -7.9)]
        C, Cd = _hswish_dual(*(np.array(v) for v in zip(*cases)))
        for i, case in enumerate(cases):
            want = _mp_dual(*case)
            assert abs(C[i] - float(want[0])) <= 1e-15 and abs(Cd[i] - float(want[1])) <= 1e-15, (case, C[i], Cd[i],
                                                                                                   want)


# ----------------------------------------------------------------------------- Neural-ODE references
def _richardson(R):
    """Three Richardson steps (h^2, h^4, h^6) over four levels n0 .. 8 n0 (axis 0), and the error estimate: its
    difference from the two steps over the finer three levels (the error of those, which bounds its own)."""
    def steps(R):
        for k in range(1, len(R)):
            R = (4**k * R[1:] - R[:-1]) / (4**k - 1)
        return R[-1]
    R = np.asarray(R)
    best = steps(R)
    return best, np.abs(best - steps(R[1:]))


def _trap_weights(n, T):
    w = np.full(n + 1, T / n)
    w[0] = w[-1] = T / (2 * n)
    return w


def _sphere_trapezoid(n, thetas, T=1.0, sw=1.0):
    """(nngp, ntk) ``(len(thetas), 2)`` of unit-variance pairs (x.x/d = 1) at the angles ``thetas`` on the n-step
    trapezoid grid (tests/trapezoid_goursat.py's march; one self-kernel march shared by the pairs)."""
    Sx, q = march(_hswish_dual, n, T, sw, 1.0)
    w = _trap_weights(n, T)
    out = []
    for th in thetas:
        c0 = math.cos(th)
        S = Sx if th == 0 else march(_hswish_dual, n, T, sw, c0, q=q.copy())[0]
        C, Cd = _hswish_dual(q[:, None], q[None, :], S)
        if th == 0:                      # identical inputs: correlation exactly 1 on the diagonal
            C[np.diag_indices(n + 1)], Cd[np.diag_indices(n + 1)] = _hswish_dual(q, q, q)
        L = backward(n, T, sw, Cd[n, n], Cd)
        out.append((C[n, n], C[n, n] + sw * sw * (w @ (C * L) @ w) + c0 * L[0, 0]))
    return np.array(out)


def _cross_march(n, T, sw, s0, qx, qy):
    r"""The cross covariance $S_{xy}(t_i,s_j)$ (not symmetric: unequal norms) on the uniform grid, given the
    self-kernel diagonals ``qx``, ``qy``: the product-trapezoid recurrence
    $S_{i+1,j+1}=S_{i+1,j}+S_{i,j+1}-S_{ij}+\frac{\sigma_w^2h^2}4(C_{ij}+C_{i+1,j}+C_{i,j+1}+C_{i+1,j+1})$, each row
    iterated to its fixed point."""
    g = sw * sw * (T / n) ** 2 / 4.0
    S = np.full((n + 1, n + 1), float(s0))
    C = np.empty((n + 1, n + 1))
    C[0] = _hswish_dual(qx[0], qy, S[0])[0]
    for i in range(n):
        new = S[i].copy()
        for _ in range(200):
            Cn = _hswish_dual(qx[i + 1], qy, new)[0]
            upd = s0 + np.concatenate([[0.0], np.cumsum(np.diff(S[i]) + g * (C[i, :-1] + C[i, 1:] + Cn[:-1] + Cn[1:]))])
            done = np.max(np.abs(upd - new)) <= 1e-15 * np.max(np.abs(upd))
            new = upd
            if done:
                break
        S[i + 1] = new
        C[i + 1] = _hswish_dual(qx[i + 1], qy, new)[0]
    return S


def _cross_backward(n, T, sw, LT, Cd):
    r"""$\Lambda=\Lambda_T+\sigma_w^2\int_t^T\int_s^T\dot C\Lambda$ on the uniform grid without the symmetry, rows
    from the last, each iterated to its fixed point."""
    g = sw * sw * (T / n) ** 2 / 4.0
    L = np.full((n + 1, n + 1), float(LT))
    for i in range(n - 1, -1, -1):
        L[i] = backward_row(L[i + 1], L[i + 1].copy(), Cd[i + 1], Cd[i], g, LT)
    return L


def _offsphere_trapezoid(n, sxx, syy, sxy, T=1.0, sw=1.0):
    """(nngp, ntk) of one pair with second moments x.x/d = sxx, y.y/d = syy, x.y/d = sxy on the n-step grid."""
    qx = march(_hswish_dual, n, T, sw, sxx)[1]
    qy = march(_hswish_dual, n, T, sw, syy)[1]
    S = _cross_march(n, T, sw, sxy, qx, qy)
    C, Cd = _hswish_dual(qx[:, None], qy[None, :], S)
    L = _cross_backward(n, T, sw, Cd[n, n], Cd)
    w = _trap_weights(n, T)
    return np.array([C[n, n], C[n, n] + sw * sw * (w @ (C * L) @ w) + sxy * L[0, 0]])


def _sphere_rows(thetas, d=3):
    """Rows at the angles ``thetas`` from the first axis, in the plane of the first two, with x.x/d = 1."""
    th = np.asarray(thetas, float)
    x = np.zeros((th.size, d))
    x[:, 0], x[:, 1] = np.cos(th), np.sin(th)
    return x * math.sqrt(d)


def _node(x, x2=None, activation=HSWISH):
    """``node_kernel`` of hard-swish: any warning but Assumption 1's (hard-swish's phi' jumps) is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", kc.Assumption1Warning)
        return kc.node_kernel(x, x2, activation=activation)


def _assert_agrees(got, ref, ref_err, k, what):
    """|got - ref| within max(3 error_estimate, the reference's error) and within TOL of max|NTK|."""
    scale = np.max(np.abs(k.ntk))
    bound = np.maximum(3 * k.info["error_estimate"], ref_err)
    err = np.abs(got - ref)
    assert np.all(err <= bound), (what, got, ref, err, bound)
    assert np.all(err <= TOL * scale), (what, err / scale)


def test_node_kernel_on_the_sphere_against_trapezoid_richardson():
    r"""NNGP and NTK at $\theta_0=0,\,0.7,\,2.5$ (d = 3, x.x/d = 1, T = 1, $\sigma$'s = 1) against the trapezoid
    reference (n = 4..32, three Richardson steps; its estimate :func:`_richardson` $\le2.8\cdot10^{-12}$, its true
    error $\le7\cdot10^{-14}$ against $n=8..64$).  Measured: within $7.5\cdot10^{-14}$ of it (the reference's error;
    $2.7\cdot10^{-15}$ of the $8..64$ one); error_estimate $2.9\cdot10^{-13}$.  The bound is
    max(3 error_estimate, the reference's estimate) $\approx2\cdot10^{-12}$, and tol $\cdot\max|NTK|$."""
    thetas = (0.0, 0.7, 2.5)
    ref, ref_err = _richardson([_sphere_trapezoid(n, thetas) for n in (4, 8, 16, 32)])
    k = _node(np.concatenate([_sphere_rows([0.0]), _sphere_rows(thetas[1:])]), activation=HSWISH_EXPR)
    assert k.info["expectation"].startswith("closed form (piecewise polynomial")
    assert k.info["error_estimate"] <= TOL * np.max(np.abs(k.ntk))
    for j, th in enumerate(thetas):
        _assert_agrees(np.array([k.nngp[0, j], k.ntk[0, j]]), ref[j], ref_err[j], k, th)


@pytest.mark.slow
def test_node_kernel_panels_sigma_w_T_4_against_trapezoid_richardson():
    r"""$\sigma_wT=4$ ($\sigma_w=2$, $T=2$: the collapsed-triangle panels, max|NTK| ~ 71) at $\theta_0=0,\,0.7,\,2$
    against the trapezoid reference over n = 16..128 (~20 s; its estimate $\le8.4\cdot10^{-11}$ of max|NTK|; it moves
    by $2\cdot10^{-10}$ from n = 8..64).  Measured: within $5\cdot10^{-13}$ of max|NTK|; error_estimate
    $2.7\cdot10^{-11}$."""
    thetas = (0.0, 0.7, 2.0)
    ref, ref_err = _richardson([_sphere_trapezoid(n, thetas, T=2.0, sw=2.0) for n in (16, 32, 64, 128)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", kc.Assumption1Warning)
        k = kc.node_kernel(_sphere_rows(thetas), activation=HSWISH, T=2.0, sigma_w=2.0)
    assert "panels" in k.info["time_scheme"]
    for j, th in enumerate(thetas):
        _assert_agrees(np.array([k.nngp[0, j], k.ntk[0, j]]), ref[j], ref_err[j], k, th)


def test_cross_march_reproduces_the_symmetric_march_on_the_sphere():
    """The unsymmetric march and backward solve written here equal tests/trapezoid_goursat.py's symmetric ones at
    equal norms (the same discretisation), to rounding."""
    for th in (0.7, 2.5):
        np.testing.assert_allclose(_offsphere_trapezoid(8, 1.0, 1.0, math.cos(th)), _sphere_trapezoid(8, [th])[0],
                                   rtol=0, atol=1e-14)


def test_node_kernel_off_the_sphere_against_trapezoid_richardson():
    r"""Unequal norms (x.x/d = 1.3, y.y/d = 0.8, x.y/d = 0.45; d = 3): NNGP and NTK against the unsymmetric trapezoid
    march (n = 4..32, three Richardson steps; estimate $\le1.7\cdot10^{-12}$).  Measured: within $1.3\cdot10^{-14}$ of
    it (the reference's error; $1.1\cdot10^{-16}$ of the $n=8..64$ one); error_estimate $4\cdot10^{-11}$ (conservative:
    140x the sphere's)."""
    sxx, syy, sxy = 1.3, 0.8, 0.45
    ref, ref_err = _richardson([_offsphere_trapezoid(n, sxx, syy, sxy) for n in (4, 8, 16, 32)])
    k = _node(two_inputs(sxx, syy, sxy, d=3))
    _assert_agrees(np.array([k.nngp[0, 1], k.ntk[0, 1]]), ref, ref_err, k, "off-sphere")


def _fan_residual(row, fan):
    r"""$K(\theta)-(K(0)-a\theta-b\theta^2-c\theta^3)$ at ``fan[1:3]`` relative to $K(0)$, with $a,b,c$ through
    ``fan[3:6]`` (``row[i]`` = $K$(``fan[i]``), ``fan[0]`` = 0)."""
    t = fan[3:6]
    abc = np.linalg.solve(np.stack([t, t**2, t**3], 1), row[0] - row[3:6])
    return (row[1:3] - (row[0] - np.stack([fan[1:3], fan[1:3] ** 2, fan[1:3] ** 3], 1) @ abc)) / row[0]


def test_node_gram_near_duplicate_and_antipodal_rows():
    r"""A Gram of 9 rows on the sphere (d = 4; kernelcalc's sphere-table path): a fan at
    $\theta=0,10^{-7},10^{-6},10^{-3},2\cdot10^{-3},4\cdot10^{-3}$ from the first row, an antipodal-ish row
    ($\pi-10^{-4}$ from it) and two random ones.  No warning but Assumption 1's; symmetric; positive semidefinite
    up to its error (the fan's three near-duplicate rows leave true NNGP eigenvalues $\sim10^{-14}$); the error
    estimate within $10\,\mathrm{tol}\max|NTK|$; the first row equal to the direct per-pair solve
    (``node_kernel(x[:1], x)``) within the two estimates; and the near-duplicate entries smooth in the angle:
    $K(\theta)$ at $10^{-7}$, $10^{-6}$ equal $K(0)-a\theta-b\theta^2-c\theta^3$ fitted through
    $10^{-3},2\cdot10^{-3},4\cdot10^{-3}$ to $10^{-11}$ of $K(0)$ on the direct path (measured: NTK $4\cdot10^{-13}$,
    NNGP $3\cdot10^{-15}$), to twice the Gram's estimate on the sphere path (measured: NTK $9\cdot10^{-12}$, NNGP
    $3.5\cdot10^{-12}$; estimate $1.6\cdot10^{-11}$ of max|NTK|, the direct one's $5\cdot10^{-13}$; Gram against direct:
    $8.7\cdot10^{-12}$).  Measured: min eigenvalue of the NTK $+4\cdot10^{-10}$, of the NNGP $+5.6\cdot10^{-13}$ of
    max|NTK| (with a row at $10^{-5}$ added, $-2.6\cdot10^{-12}$: within the bound $N\cdot$estimate)."""
    fan = np.array([0.0, 1e-7, 1e-6, 1e-3, 2e-3, 4e-3])
    x = _sphere_rows(np.append(fan, math.pi - 1e-4), d=4)
    rand = np.random.default_rng(5).standard_normal((2, 4))
    x = np.concatenate([x, rand / np.linalg.norm(rand, axis=1, keepdims=True) * 2.0])
    k = _node(x, activation=HSWISH_EXPR)
    direct = _node(x[:1], x)
    scale, est = np.max(np.abs(k.ntk)), k.info["error_estimate"]
    assert est <= 10 * TOL * scale, est / scale
    for K, D in ((k.ntk, direct.ntk), (k.nngp, direct.nngp)):
        assert np.max(np.abs(K - K.T)) <= 1e-15 * scale
        assert np.min(np.linalg.eigvalsh(K)) >= -x.shape[0] * est, np.linalg.eigvalsh(K)[:3] / scale
        np.testing.assert_allclose(K[0], D[0], rtol=0, atol=est + direct.info["error_estimate"])
        assert np.all(np.abs(_fan_residual(K[0], fan)) <= 2 * est / K[0, 0]), _fan_residual(K[0], fan)
        assert np.all(np.abs(_fan_residual(D[0], fan)) <= 1e-11), _fan_residual(D[0], fan)


def test_resnet_kernel_against_euler_sums():
    r"""``resnet_kernel`` (depth 8, T = 1) on three sphere rows ($\theta_0=0,\,0.7,\,2.5$ from the first) and an
    off-sphere pair against ``euler_resnet_kernel`` (tests/reference_node.py) with the test's dual as its rule: exact
    discrete sums, so the reference is as good as the dual ($\sim10^{-15}$).  Measured: $\le4.4\cdot10^{-16}$ (error
    estimates $2.6\cdot10^{-13}$, $3.7\cdot10^{-13}$)."""
    class _Rule:
        expect = staticmethod(_hswish_dual)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", kc.Assumption1Warning)
        k = kc.resnet_kernel(_sphere_rows([0.0, 0.7, 2.5]), activation=HSWISH, depth=8)
        off = kc.resnet_kernel(two_inputs(1.3, 0.8, 0.45, d=3), activation=HSWISH_EXPR, depth=8)
    assert k.info["time_scheme"].startswith("Euler")
    for j, th in enumerate((0.0, 0.7, 2.5)):
        ref = euler_resnet_kernel(None, 1.0, 1.0, math.cos(th), L=8, rule=_Rule)
        _assert_agrees(np.array([k.nngp[0, j], k.ntk[0, j]]), np.array(ref), 1e-15, k, th)
    ref = euler_resnet_kernel(None, 1.3, 0.8, 0.45, L=8, rule=_Rule)
    _assert_agrees(np.array([off.nngp[0, 1], off.ntk[0, 1]]), np.array(ref), 1e-15, off, "off-sphere")
