r"""elu Neural ODE at long horizons (the composite panels with the whitened-Mills closed form and the anchored
Picard sweeps) against an independent solve: the trapezoid-plus-Richardson reference of
``tests/test_long_horizon_panels.py`` (its march, backward sweep and Richardson steps) driven by an elu dual written
here (:func:`_elu_ref`: the conditional form, b | a Gaussian, inner expectations in closed form, outer by graded
Gauss-Legendre; it shares no code with kernelcalc\x27s bivariate Mills ratios; measured against the closed form on
2000 random (q1, q2, rho), q <= 300, rho up to 1 - 1e-12: 6e-15 of sqrt(q1 q2) in C, 3e-14 in Cdot)."""

import math

import numpy as np
import pytest

import kernelcalc as kc
from _refusal_check import assert_refusal_multiplies_out
from scipy.special import erfcx, ndtr

import test_long_horizon_panels as ref_solver

_GX, _GW = np.polynomial.legendre.leggauss(16)


def _elu_ref(q1, q2, c):
    """(C, Cdot) of elu(1) by the conditional form: b | a ~ N(m, sd^2), inner expectations in closed form, the outer
    by 16-point Gauss-Legendre on panels split at the kink a = 0 and graded toward it (down to the inner step's
    scale sd s1 / s2) and out to 13 standard deviations."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, float) for v in (q1, q2, c)))
    s1, s2 = np.sqrt(q1), np.sqrt(q2)
    rho = np.clip(c / (s1 * s2), -1.0, 1.0)
    sd = s2 * np.sqrt(np.maximum((1 - rho) * (1 + rho), 0.0))
    ratio = rho * s2 / s1
    ends = np.array([1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 2.0, 4.0, 7.0, 10.0, 13.0])
    edges = np.concatenate([[0.0], ends])                                   # in units of s1, on each side
    lo, hi = edges[:-1], edges[1:]
    u = ((lo + hi)[:, None] / 2 + (hi - lo)[:, None] / 2 * _GX).ravel()   # (P,)
    w = ((hi - lo)[:, None] / 2 * _GW).ravel()
    a = np.concatenate([-u, u])[None, :] * s1.ravel()[:, None]              # (E, 2P)
    wa = np.concatenate([w, w])[None, :] * s1.ravel()[:, None] * np.exp(-a * a / (2 * q1.ravel()[:, None])) / np.sqrt(2 * math.pi * q1.ravel()[:, None])
    return _conditional_sums(a, wa, ratio.ravel()[:, None] * a, sd.ravel()[:, None], q1.shape)


def _conditional_sums(a, wa, m, sdv, shape):
    """The outer sums of :func:`_elu_ref` (nodes ``a``, weights ``wa``, conditional means ``m``, sd ``sdv``)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _sums(a, wa, m, sdv, shape)


def _sums(a, wa, m, sdv, shape):
    pos = sdv > 0
    safe = np.where(pos, sdv, 1.0)
    t = m / safe
    P = np.where(pos, ndtr(t), (m > 0).astype(float))
    dens = np.where(pos, np.exp(-t * t / 2) / math.sqrt(2 * math.pi), 0.0)
    z = (m + sdv * sdv) / safe                                                # E[e^b 1{b<0}] = e^{m + sd^2/2} Phi(-z)
    tilt = np.where(pos, np.where(z > 0, np.exp(m + sdv * sdv / 2 - z * z / 2) * erfcx(z / math.sqrt(2)) / 2,
                                  np.exp(m + sdv * sdv / 2) * ndtr(-z)), np.where(m < 0, np.exp(np.minimum(m, 0.0)), 0.0))
    inner_phi = m * P + sdv * dens + tilt - (1 - P)
    inner_dphi = P + tilt
    phi = np.where(a > 0, a, np.expm1(np.minimum(a, 0.0)))
    dphi = np.where(a > 0, 1.0, np.exp(np.minimum(a, 0.0)))
    C = np.sum(wa * phi * inner_phi, axis=1).reshape(shape)
    Cd = np.sum(wa * dphi * inner_dphi, axis=1).reshape(shape)
    return C, Cd


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_elu_panels_sigma_w_T_4_against_trapezoid_richardson():
    """sigma_w T = 4 (4 panels), two unit-variance inputs at angle 1: NNGP and NTK within 2e-11 (relative) of the
    reference at n = 16..128 with three Richardson steps (measured 1.8e-12; the reference at n = 8..64 differs from
    it by 4.7e-10), and the error estimate (8.7e-11 absolute; the difference is 1.2e-10 on 70) bounds the
    difference up to the reference's own error."""
    ref = ref_solver._reference(4.0, 1.0, 1.0, (16, 32, 64, 128), dual=_elu_ref)
    k = kc.node_kernel(ref_solver._pair(1.0), activation="elu", T=4.0)
    assert "panels" in k.info["time_scheme"]
    got = np.array([k.nngp[0, 1], k.ntk[0, 1]])
    assert np.all(np.abs(got - ref) <= 2e-11 * np.abs(ref)), (got, ref)
    # the error estimate (absolute, largest entry) bounds the difference up to the reference's own error (its
    # Richardson columns at n = 8..64 and 16..128 differ by 4.7e-10; the finer one is good to ~2e-12)
    assert np.max(np.abs(got - ref)) <= k.info["error_estimate"] + 3e-12 * np.max(np.abs(ref))


def test_elu_dual_is_priced_and_the_panel_guard_multiplies_its_price_in():
    """elu's closed form declares its price (one evaluation ~ 50 relu ones: three bivariate Mills ratios), which
    the panels' cost guard multiplies in: refused only at an absurd pair count, with printed factors that multiply
    to the quoted number and name the price, the panels and every driver."""

    from kernelcalc.kernels.ode import KinkedGoursatSolver
    from kernelcalc.theory.gaussian import dual_kernels

    elu, relu = dual_kernels("elu"), dual_kernels("relu")
    assert elu.method == relu.method == "closed" and elu.points == 50 and relu.points == 1
    solver = KinkedGoursatSolver("elu", T=10.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    solver._check_cost(elu, 65, solver._nodes(12))                # the sigma_w T = 10 case computes
    with pytest.raises(kc.KernelcalcInputError) as err:
        solver._check_cost(elu, 5000, solver._nodes(12))
    assert_refusal_multiplies_out(str(err.value), "10 panels", "price 50")
    solver._check_cost(relu, 5000, solver._nodes(12))       # relu's price keeps the same work below the limit
