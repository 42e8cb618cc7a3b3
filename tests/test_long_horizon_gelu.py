"""gelu at long horizons on the composite panels (``kernels/_panels.py``, marched by wavefronts of cells), against
an independent solve written here, at a near-parallel pair (theta_0 = 1e-4) and a generic one.

Reference (:func:`_reference`): the Goursat problems marched row by row on a uniform (n+1)^2 grid with the
product trapezoid rule (each row iterated to its fixed point), gelu's dual kernels in neural-tangents' form
written here (:func:`_gelu`, checked against a tensor Gauss-Hermite rule below), and three Richardson steps in
h = T/n (the cells are split at t = s, so the trapezoid error expands in h^2, h^4, h^6).  Measured at
sigma_w T = 4 (sigma_w = 2, T = 2): the Richardson results over n = 24..192 and 32..256 agree to ~1.4e-13
(relative; over 16..128 and 32..256 to 4e-12), and the panels agree with the latter to 3e-14; the test uses
n = 24..192 (cheaper; its error, ~1.4e-13, is within the 1e-12 slack of the estimate check).  Nothing is shared
with kernelcalc's panels, sphere tables or dual kernels.
"""

import math

import numpy as np
import pytest

import kernelcalc as kc
from trapezoid_goursat import backward, march


def _gelu(q1, q2, c):
    r"""(C, Cdot) of gelu $x\Phi(x)$ in neural-tangents' form (``stax.Gelu``): $P=(1+q_1)(1+q_2)$,
    $\Delta=\sqrt{P-c^2}$, $C=\frac c4+\frac1{2\pi}(c\arcsin\frac c{\sqrt P}+\frac{c^2+q_1q_2\Delta^2}{P\Delta})$,
    $\dot C=\frac14+\frac1{2\pi}(\arcsin\frac c{\sqrt P}+\frac c\Delta(1+\frac{1-q_1q_2}P+\frac1{\Delta^2}))$."""
    P = (1 + q1) * (1 + q2)
    D = np.sqrt(np.maximum(P - c * c, 1 + q1 + q2))     # (clipped at c^2 = q1 q2: a Picard iterate may overshoot)
    a = np.arcsin(np.clip(c / np.sqrt(P), -1.0, 1.0))
    C = c / 4 + (c * a + (c * c + q1 * q2 * D * D) / (P * D)) / (2 * math.pi)
    Cd = 0.25 + (a + c / D * (1 + (1 - q1 * q2) / P + 1 / (D * D))) / (2 * math.pi)
    return C, Cd


def test_reference_gelu_dual_against_gauss_hermite():
    """The test's closed form against E[phi(a) phi(b)] by a 120 x 120 Gauss-Hermite tensor rule (gelu is entire:
    the rule is exact to rounding at q ~ 1)."""
    from scipy.special import erf

    z, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    phi = lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2)))
    dphi = lambda x: 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    for q1, q2, c in ((1.0, 2.0, 0.7), (0.5, 0.5, -0.3), (2.0, 2.0, 1.999)):
        r = c / math.sqrt(q1 * q2)
        a = math.sqrt(q1) * z[:, None] * np.ones_like(z)[None, :]
        b = math.sqrt(q2) * (r * z[:, None] + math.sqrt(1 - r * r) * z[None, :])
        W = w[:, None] * w[None, :]
        ref = np.sum(W * phi(a) * phi(b)), np.sum(W * dphi(a) * dphi(b))
        got = _gelu(q1, q2, c)
        assert abs(got[0] - ref[0]) <= 1e-13 * abs(ref[0]) and abs(got[1] - ref[1]) <= 1e-13 * abs(ref[1]), (got, ref)


def _trapezoid_kernels(n, T, sw, thetas):
    """(nngp, ntk) ``(len(thetas), 2)`` of unit-variance input pairs at the angles ``thetas`` (sigma_u = sigma_v = 1)
    on the n-step grid (one self-kernel march shared by the pairs)."""
    _, q = march(_gelu, n, T, sw, 1.0)
    w = np.full(n + 1, T / n)
    w[0] = w[-1] = T / (2 * n)
    out = []
    for theta0 in thetas:
        c0 = math.cos(theta0)
        S = march(_gelu, n, T, sw, c0, q=q.copy())[0]
        C, Cd = _gelu(q[:, None], q[None, :], S)
        L = backward(n, T, sw, Cd[n, n], Cd)
        out.append((C[n, n], C[n, n] + sw * sw * (w @ (C * L) @ w) + c0 * L[0, 0]))
    return np.array(out)


def _reference(T, sw, thetas, levels):
    """Three Richardson steps (h^2, h^4, h^6) over the four ``levels`` n = n0 .. 8 n0."""
    R = np.array([_trapezoid_kernels(n, T, sw, thetas) for n in levels])
    for k in range(1, 4):
        R = (4**k * R[1:] - R[:-1]) / (4**k - 1)
    return R[-1]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gelu_panels_near_parallel_sigma_w_T_4_against_trapezoid_richardson():
    """sigma_w T = 4 (sigma_w = 2, T = 2: 4 panels): a near-parallel pair (theta_0 = 1e-4, band 2 of the sinh maps)
    and a generic one (theta_0 = 1) in one Gram; NNGP and NTK within 1e-10 (relative) of the reference, and the
    error estimate covers the measured error."""
    k = _against_reference(2.0, 2.0, (24, 48, 96, 192), rel=1e-10, slack=1e-12)
    assert "panels" in k.info["time_scheme"]


def _against_reference(T, sigma_w, ns, rel, slack):
    """gelu's kernel at theta_0 = 1e-4 and 1 (x.x/d = 1) against :func:`_reference` on ``ns``: within ``rel``
    (relative), and the error estimate (plus ``slack`` of the reference) covers the measured error."""
    th = np.array([0.0, 1e-4, 1.0])
    x = np.stack([np.cos(th), np.sin(th)], axis=1) * math.sqrt(2.0)      # x.x/d = 1
    k = kc.node_kernel(x, activation="gelu", T=T, sigma_w=sigma_w)
    refs = _reference(T, sigma_w, th[1:], ns)
    for j, ref in zip((1, 2), refs):
        got = np.array([k.nngp[0, j], k.ntk[0, j]])
        err = np.abs(got - ref) / np.abs(ref)
        assert np.all(err <= rel), (th[j], got, ref, err)
        assert np.max(np.abs(got - ref)) <= k.info["error_estimate"] + slack * np.max(np.abs(ref)), (
            k.info["error_estimate"], got - ref)
    return k


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gelu_panels_sigma_w_T_10_against_trapezoid_richardson():
    """sigma_w T = 10 (T = 10, 10 panels, q(T) ~ 1.6e5): theta_0 = 1e-4 and 1 within 1e-9 (relative) of the reference
    at n = 256..2048.  Measured: at theta_0 = 1e-4 the reference needs that resolution (its NTK moves by 2.4e-9
    from n = 128..1024 to 256..2048, where it agrees with the panels to 3e-11; the panels against themselves at
    time_nodes = 32: 2e-12); at theta_0 = 1, 1e-14."""
    _against_reference(10.0, 1.0, (256, 512, 1024, 2048), rel=1e-9, slack=1e-10)
