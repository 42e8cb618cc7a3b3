"""The Fourier sums that build the large-q rule's band tables, against the plain sums written here.

The near tables (kernelcalc.theory.largeq_near) and the low tables (kernelcalc.theory.largeq_low) are fitted to
trapezoid sums of a Fourier form; their builds skip the terms whose weights are negligible (the Gaussian density
p_q(x) far out for small q, e^{-s^2 w^2 / 2} at large s w, the density series' high moments far out), group the
products, and take cos / sin rows by the addition theorem.  The reference here is the plain definition: every x and
every w, np.cos / np.sin called directly, one sum per value.  They must agree to rounding (2e-15 of the largest
value), at covariances where each skip is active (q = 0.25, s = 9.9, kappa = 1) and where none is.
"""

import math

import numpy as np
import pytest

from kernelcalc.theory.largeq import ASYMPTOTES
from kernelcalc.theory.largeq_far import stable_remainder
from kernelcalc.theory import largeq_low, largeq_near

W = 0.03 * np.arange(401)                       # the frequencies of both tables' Fourier form, trapezoid weights
WW = np.where(np.arange(401) == 0, 0.015, 0.03)


def _half_line_sum(fx, f0, x, h, trig, nu):
    """The trapezoid rule (step h) over the whole line of f(x) trig(nu x), f even (cos) or odd (sin), at each nu (and
    for each column of ``fx``, ``f0``): 2 h sum_{x>0} + h f(0) (the x = 0 term only for cos)."""
    out = 2.0 * h * (trig(np.outer(nu, x)) @ fx)
    return out + (h * f0 if trig is np.cos else 0.0)


def _fourier_form(Rhat, inner, s):
    """``(len(s), ...)``: (1 / pi) sum_w ww Rhat(w) e^{-s^2 w^2 / 2} inner(w, ...)."""
    damp = np.exp(-0.5 * np.outer(s * s, W * W)) * (WW * Rhat / math.pi)[None, :]
    return np.tensordot(damp, inner, axes=(1, 0))


@pytest.mark.parametrize("name,derivative", [("softplus", False), ("softplus", True), ("silu", True)])
def test_low_sums(name, derivative):
    asy = ASYMPTOTES[name]
    R = lambda x: stable_remainder(name, asy.scale, derivative, x)     # noqa: E731
    even = not derivative            # softplus, silu: R even, R' odd
    trig = np.cos if even else np.sin
    # the builds group 16 columns by the length of their sums: 16 small variances (p_q short) and 16 large s
    # (e^{-s^2 w^2 / 2} short) form groups of their own
    q = np.concatenate([np.linspace(0.25, 0.5, 16), [3.0, 99.0]])
    kappa = np.array([0.0, 0.37, 1.0])
    s = np.concatenate([np.linspace(8.0, 9.9, 16), [0.0, 0.45, 2.7]])
    x = 0.2 * np.arange(1, 221)
    Rx, R0 = R(x), float(R(np.zeros(1))[0]) if even else 0.0
    Rhat = _half_line_sum(Rx, R0, x, 0.2, trig, W)
    p = np.exp(-0.5 * np.outer(x * x, 1.0 / q)) / np.sqrt(2.0 * math.pi * q)            # (x, q)
    p0 = R0 / np.sqrt(2.0 * math.pi * q)
    inner = np.stack([_half_line_sum(Rx[:, None] * p, p0, x, 0.2, trig, k * W) for k in kappa], axis=1)  # (w, kappa, q)
    ref = _fourier_form(Rhat, inner, s)                                                 # (s, kappa, q)
    got = largeq_low._rr_values(R, 1 if even else -1, q, kappa, s)
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) <= 2e-15 * np.max(np.abs(ref))


@pytest.mark.parametrize("name,derivative", [("softplus", False), ("silu", True)])
def test_near_sums(name, derivative):
    asy = ASYMPTOTES[name]
    R = lambda x: stable_remainder(name, asy.scale, derivative, x)     # noqa: E731
    even = not derivative
    trig = np.cos if even else np.sin
    K = 30
    kappa = np.array([0.0, 0.52, 1.0])
    s = np.concatenate([np.linspace(8.0, 9.9, 16), [0.0, 1.1]])
    x = 0.2 * np.arange(1, 651)
    Rx, R0 = R(x), float(R(np.zeros(1))[0]) if even else 0.0
    Rhat = _half_line_sum(Rx, R0, x, 0.2, trig, W)
    moments = x[:, None] ** (2 * np.arange(K))[None, :] * Rx[:, None]                   # (x, k)
    m0 = np.where(np.arange(K) == 0, R0, 0.0)
    inner = np.stack([_half_line_sum(moments, m0, x, 0.2, trig, kp * W) for kp in kappa], axis=1)   # (w, kappa, k)
    ref = _fourier_form(Rhat, inner, s).transpose(2, 1, 0)                              # (k, kappa, s)
    got = largeq_near._rr_values(R, 1 if even else -1, kappa, s, K)
    # the table holds sum_k t^k (-1 / (2 Q_NEAR))^k / k! H_k: compare the terms at that weight (t = 1, the largest)
    tw = np.array([(-0.5 / largeq_near.Q_NEAR) ** k / math.factorial(k) for k in range(K)])[:, None, None]
    assert got.shape == ref.shape
    assert np.max(np.abs(tw * (got - ref))) <= 2e-15 * np.max(np.abs(tw * ref))


@pytest.mark.parametrize("name,derivative", [("softplus", False), ("silu", True)])
def test_near_cross_sums(name, derivative):
    """The near tables' cross sums, int x^2k R(x) g(zeta x) dx (trapezoid, step 0.05 on |x| <= 130), which the build
    takes over x >= 0 only (the integrand is even) and only as far as the weighted moments reach."""
    asy = ASYMPTOTES[name]
    R = lambda x: stable_remainder(name, asy.scale, derivative, x)     # noqa: E731
    K = 30
    zeta = np.array([0.0, 0.3, 1.2, 2.0])
    x = 0.05 * np.arange(-2600, 2601)
    moments = x[:, None] ** (2 * np.arange(K))[None, :] * (0.05 * R(x))[:, None]           # (x, k)
    basis = largeq_near._basis(asy, derivative)
    ref = np.stack([(g(np.outer(zeta, x)) @ moments).T for g, *_ in basis], axis=1)       # (k, n_g, zeta)
    # the sums cancel (odd g against odd R'): rounding is relative to the sums of the terms' magnitudes
    size = np.stack([(np.abs(g(np.outer(zeta, x))) @ np.abs(moments)).T for g, *_ in basis], axis=1)
    got = largeq_near._cross_values(R, -1 if derivative else 1, basis, zeta, K)
    tw = np.array([(-0.5 / largeq_near.Q_NEAR) ** k / math.factorial(k) for k in range(K)])[:, None, None]
    assert got.shape == ref.shape
    assert np.max(np.abs(tw * (got - ref))) <= 5e-15 * np.max(np.abs(tw * size))
