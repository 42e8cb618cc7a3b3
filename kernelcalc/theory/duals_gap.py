r"""The gap form of a closed-form dual: $(C,\dot C)$ as functions of $1-\rho$, and the drop
$C(\rho_p)-C(\rho_c)$ between two correlations, both accurate however close $\rho$ is to 1.

A kinked activation's duals depend on the angle $\theta=\arccos\rho$, whose relative accuracy is lost in a rounded
correlation: $\rho=1-10^{-16}$ carries no digit of $\theta\approx1.4\cdot10^{-8}$.  The deficit form of the kinked
Neural-ODE solver (:mod:`kernelcalc.kernels.ode_kinked_deficit`) solves near-parallel pairs for $1-\rho$ itself and
needs, at the variances $q_1,q_2$ of each grid point ($n=\sqrt{q_1q_2}$):

- ``duals(q1, q2, omr)``: $(C,\dot C)$ at $1-\rho$ = ``omr``;
- ``drop(q1, q2, omr_p, dlt)``: $C(\rho_p)-C(\rho_c)$ for $1-\rho_p$ = ``omr_p`` and $\rho_p-\rho_c$ = ``dlt``
  $\ge0$, accurate relative to itself (a difference of the two values of $C$ would leave an absolute error
  $\sim\epsilon\,n$, which is the error the deficit form removes).

Two families have one (:class:`GapForm`, the ``gap_form`` of
:class:`~kernelcalc.theory.duals.ClosedFormDual`):

- **positively homogeneous kinks** $\phi=bz+(a-b)\,\mathrm{relu}(z)$ (relu, leaky relu, abs): $C$, $\dot C$ are
  functions of $n$, $c$ and $\theta$ alone, and the drop of $f(\rho)=\sin\theta+(\pi-\theta)\cos\theta$ has
  $f'=\pi-\theta$ (:func:`_relu_drop`);
- **relu sums** $\phi=\alpha+\beta z+\sum_k\gamma_k(z-u_k)_+$ (hardtanh, relu6: :mod:`.duals_pwl`).  Price's
  theorem $\partial_cC=\dot C$ and Plackett's $\partial_\rho\Phi_2(-h,-k;\rho)=\varphi_2(h,k;\rho)$ give, with
  $g_{ij}(\theta)=2\pi\sin\theta\,\varphi_2(h_i,k_j;\cos\theta)
  =\exp\!\big(-\frac{(h_i-k_j)^2+4h_ik_j\sin^2(\theta/2)}{2\sin^2\theta}\big)$ and
  $d\dot C/d\theta=-\frac1{2\pi}\sum_{ij}\gamma_i\gamma_jg_{ij}$,

  $$C(\rho_p)-C(\rho_c)=n\int_{\theta_p}^{\theta_c}\dot C\sin\theta\,d\theta
  =n\Big[\dot C(\rho_c)\,(\rho_p-\rho_c)+\frac1{2\pi}\sum_{ij}\gamma_i\gamma_j\int_{\theta_p}^{\theta_c}
  g_{ij}(\theta)\,(\cos\theta_p-\cos\theta)\,d\theta\Big]$$

  (integrating $\dot C(\theta)-\dot C(\theta_c)$ by parts): the first term is exact ($\dot C$ from $1-\rho_c$:
  :func:`~kernelcalc.theory.duals_pwl.pwl_joint`), the second a short quadrature of terms without cancellation
  ($\cos\theta_p-\cos\theta=2\sin\frac{\theta+\theta_p}2\sin\frac{\theta-\theta_p}2$), and at most a few per cent
  of the drop at the angles the deficit form serves (:func:`_graded_nodes`).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Callable

import numpy as np

from .duals_ops import _ARC_SERIES, NUMPY_OPS
from .duals_pwl import pwl_cdot, pwl_joint

__all__ = ["GapForm", "homogeneous_gap", "relu_sum_gap", "piecewise_polynomial_gap"]


@dataclasses.dataclass(frozen=True)
class GapForm:
    r"""$(C,\dot C)$ from $1-\rho$ and the drop $C(\rho_p)-C(\rho_c)$ of one dual (module doc), numpy."""

    #: ``(q1, q2, omr) -> (C, Cdot)`` at $1-\rho$ = ``omr``
    duals: Callable
    #: ``(q1, q2, omr_p, dlt, slope=False) -> C(rho_p) - C(rho_c)``, accurate relative to itself; ``slope=True``: also
    #: its derivative in the covariance, $\dot C(\rho_c)$ (computed on the way: a Newton step's Jacobian)
    drop: Callable


def _theta_of(omr):
    r"""$\theta=\arccos(1-\text{omr})=2\arcsin\sqrt{\text{omr}/2}$ (relative accuracy at tiny omr)."""
    return 2.0 * np.arcsin(np.sqrt(np.clip(omr, 0.0, 2.0) / 2.0))


def _angles(omr_p, dlt):
    r"""$(\theta_p,\theta_c-\theta_p)$ for $1-\rho_p$ = ``omr_p`` and $\rho_p-\rho_c$ = ``dlt`` $\ge0$: the width from
    the sines of the half-angles, without cancellation however small ``dlt``."""
    omr_c = omr_p + dlt
    x, y = np.sqrt(np.clip(omr_c, 0, 2) / 2), np.sqrt(np.clip(omr_p, 0, 2) / 2)
    den = x * np.sqrt(1 - y * y) + y * np.sqrt(1 - x * x)
    width = 2.0 * np.arcsin(np.where(den > 0, (dlt / 2) / np.where(den > 0, den, 1.0), 0.0))
    return _theta_of(omr_p), width


def _relu_drop(omr_p, dlt):
    r"""$f(\rho_p)-f(\rho_c)$ for $f(\rho)=\sin\theta+(\pi-\theta)\cos\theta$ ($2\pi C_{\rm relu}/n$),
    $1-\rho_p$ = ``omr_p``, $\rho_p-\rho_c$ = ``dlt`` $\ge0$, with relative accuracy however small ``dlt``:
    $f'(\rho)=\pi-\theta$ gives $f(\rho_p)-f(\rho_c)=\pi\Delta-\int_{\theta_p}^{\theta_c}\theta\sin\theta\,d\theta$;
    the integral by 8-point Gauss-Legendre on $[\theta_p,\theta_c]$ where $\theta_c\le2\theta_p$, else as the
    difference of $\sin\theta-\theta\cos\theta$ (then no cancellation either)."""
    tp, width = _angles(omr_p, dlt)
    tc = tp + width

    def sin_minus(t):   # sin t - t cos t, by its series for t <= 1 (see duals._arc)
        z = t * t
        ser = _ARC_SERIES[-1]
        for a in _ARC_SERIES[-2::-1]:
            ser = ser * z + a
        return np.where(t <= 1.0, t * z * ser, np.sin(t) - t * np.cos(t))

    gx, gw = np.polynomial.legendre.leggauss(8)
    nodes = tp[..., None] + width[..., None] * (gx + 1) / 2
    gl = np.sum(gw * nodes * np.sin(nodes), axis=-1) * width / 2
    integral = np.where(tc <= 2 * tp, gl, sin_minus(tc) - sin_minus(tp))
    return np.pi * dlt - integral


def homogeneous_gap(a: float, b: float, C_formula, Cdot_formula) -> GapForm:
    r"""The gap form of $\phi=az$ ($z>0$), $bz$ ($z<0$) whose dual is ``C_formula``, ``Cdot_formula`` (functions of
    the angle through ``ops.angle``): $C=ab\,c+(a-b)^2C_{\rm relu}$, so the drop is
    $n\,(ab\,\Delta+\frac{(a-b)^2}{2\pi}(f(\rho_p)-f(\rho_c)))$ (:func:`_relu_drop`)."""
    ab, amb2 = float(a * b), float((a - b) ** 2)

    def duals(q1, q2, omr):
        theta = _theta_of(omr)
        ops = SimpleNamespace(**{**vars(NUMPY_OPS), "angle": lambda a_, b_, c_: theta})
        c = np.sqrt(q1 * q2) * np.cos(theta)
        return C_formula(ops, q1, q2, c), Cdot_formula(ops, q1, q2, c)

    def drop(q1, q2, omr_p, dlt, slope=False):
        value = np.sqrt(q1 * q2) * (ab * dlt + amb2 / (2 * np.pi) * _relu_drop(omr_p, dlt))
        return (value, duals(q1, q2, np.asarray(omr_p) + dlt)[1]) if slope else value

    return GapForm(duals, drop)


#: the drop's quadrature of a relu sum (:func:`_graded_nodes`): Gauss-Legendre nodes per panel, and the panels'
#: edges as fractions of $[\theta_p,\theta_c]$ where $\theta_c>2\theta_p$ (graded toward $\theta_p$, where
#: $g_{ij}$ turns on at the scale $|h_i-k_j|\sim\theta_p$ of near-diagonal grid points) or else (uniform)
_GAP_GL = 8
_GAP_GRADED = (0.0, 1.0 / 16.0, 0.25, 1.0)
_GAP_UNIFORM = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)
_UNDERFLOW = 750.0     # exp(-750) = 0 in float64


def _graded_nodes(tp, width):
    r"""Nodes $\theta$ (``tp.shape + (nodes,)``), their offsets $\theta-\theta_p$ and weights on
    $[\theta_p,\theta_p+\text{width}]$: three panels of :data:`_GAP_GL` Gauss-Legendre nodes, graded toward
    $\theta_p$ when $\theta_c>2\theta_p$ (also from $\theta_p=0$: $g_{ij}$ turns on at $\theta\sim|h_i-k_j|$).
    Measured against 24 panels of 16 nodes on 20000 random cases ($q$ 0.3-3, $1-\rho_p$ 0 or 1e-14-1e-2, $\Delta$
    1e-16-3e-3): relative error of the drop at most 4.6e-10 (1.3e-10 to 3e-10 where $\theta_p\ll\theta_c\approx0.05$-0.1
    and $|h-k|\sim0.05$-$1\,\theta_c$; $\le10^{-11}$ for $\theta_p\ge0.05\,\theta_c$)."""
    gx, gw = np.polynomial.legendre.leggauss(_GAP_GL)
    graded = width > tp
    edges = np.where(graded[..., None], np.array(_GAP_GRADED), np.array(_GAP_UNIFORM))     # (..., 4)
    lo, span = edges[..., :-1], np.diff(edges, axis=-1)                                     # (..., 3)
    frac = (lo[..., None] + span[..., None] * (gx + 1) / 2).reshape(tp.shape + (-1,))
    weight = (span[..., None] * gw / 2).reshape(tp.shape + (-1,)) * width[..., None]
    offset = frac * width[..., None]
    return tp[..., None] + offset, offset, weight


def _orthant_integral(us, gs, q1, q2, tp, width):
    r"""$\frac1{2\pi}\sum_{ij}\gamma_i\gamma_j\int_{\theta_p}^{\theta_c}g_{ij}(\theta)(\cos\theta_p-\cos\theta)\,d\theta$
    (module doc) for breakpoints ``us`` with weights ``gs`` ($=\int(\dot C(\theta)-\dot C(\theta_c))\sin\theta\,d\theta$ of
    $\dot C=\sum\gamma_i\gamma_jL_{ij}$), by :func:`_graded_nodes`."""
    theta, offset, weight = _graded_nodes(tp, width)
    half2 = np.sin(theta / 2) ** 2
    sin2 = np.sin(theta) ** 2
    inv = np.where(sin2 > 0, 0.5 / np.where(sin2 > 0, sin2, 1.0), 0.0)   # (sin theta = 0: a zero-width interval)
    s1, s2 = np.sqrt(np.maximum(q1, 1e-200)), np.sqrt(np.maximum(q2, 1e-200))
    lowest = float(np.min(inv)) if inv.size else 0.0
    G = 0.0
    for i in range(len(us)):
        for j in range(len(us)):
            h, k = (us[i] / s1)[..., None], (us[j] / s2)[..., None]
            gap2 = (h - k) ** 2
            if float(np.min(gap2)) * lowest > _UNDERFLOW:       # g_ij underflows at every node: no term
                continue
            G = G + gs[i] * gs[j] * np.exp(-(gap2 + 4.0 * h * k * half2) * inv)
    arm = 2.0 * np.sin((2.0 * tp[..., None] + offset) / 2) * np.sin(offset / 2)   # cos tp - cos theta
    return np.sum(weight * G * arm, axis=-1) / (2 * np.pi)


def relu_sum_gap(rep) -> GapForm:
    r"""The gap form of the relu sum ``rep`` $=(\alpha,\beta,(u_k),(\gamma_k))$ (module doc)."""
    _, _, us, gs = rep

    def duals(q1, q2, omr):
        return pwl_joint(NUMPY_OPS, rep, q1, q2, None, omr=omr)

    def drop(q1, q2, omr_p, dlt, slope=False):
        q1, q2, omr_p, dlt = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, omr_p, dlt)))
        if q1.size == 0:
            return (np.zeros(q1.shape),) * 2 if slope else np.zeros(q1.shape)
        tp, width = _angles(omr_p, dlt)
        integral = _orthant_integral(us, gs, q1, q2, tp, width)
        cdot_c = pwl_cdot(rep, q1, q2, omr_p + dlt)
        value = np.sqrt(q1 * q2) * (cdot_c * dlt + integral)
        return (value, cdot_c) if slope else value

    return GapForm(duals, drop)


#: Gauss-Legendre nodes of the smooth rest of a piecewise polynomial's drop (:func:`piecewise_polynomial_gap`)
_REST_GL = 6


def piecewise_polynomial_gap(joint, us, jumps) -> GapForm:
    r"""The gap form of a piecewise polynomial (:mod:`~kernelcalc.theory.duals_pwp`) whose ``joint(q1, q2, omr) ->
    (C, Cdot, Cdot_J)`` takes $1-\rho$ exactly ($\dot C_J$ below), $\phi'$ jumping by ``jumps`` ($e_{k1}$) at the breakpoints ``us``.  Price's
    theorem gives the drop as $n\,[\dot C(\rho_c)\,(\rho_p-\rho_c)+\int_{\theta_p}^{\theta_c}(\dot C(\theta)-\dot C(\theta_c))
    \sin\theta\,d\theta]$, the first term exact.  In the integral, $\dot C=\dot C_J+\dot C_R$ with
    $\dot C_J=\sum_{kl}e_{k1}e_{l1}L_{kl}$ the part of the jumps of $\phi'$ (a relu sum's $\dot C$, whose layers at
    $\theta\sim|h_k-k_l|$ take the closed-form integrand $g_{kl}$ on graded panels: :func:`_orthant_integral`) and
    $\dot C_R$ the rest, of kinks of $\phi'$ only ($O(\theta^3)$ at $\theta\to0$): :data:`_REST_GL` Gauss-Legendre
    nodes of $\dot C_R(\theta)-\dot C_R(\theta_c)$ at $1-\rho=2\sin^2(\theta/2)$.  A difference of two values of $\dot C$
    carries an absolute error $\sim\epsilon\dot C$, which the width $\rho_p-\rho_c$ multiplies: the drop keeps its
    relative accuracy however small the width.  Measured against mpmath (tests/test_duals_pwp.py): $\le4\cdot10^{-16}$
    at equal variances; at unequal ones ($q_1=2$, $q_2=2.5$) $6\cdot10^{-11}$ for widths $\rho_p-\rho_c\le10^{-3}$
    (those of the deficit form, $\theta_0<0.01$), $2\cdot10^{-9}$ at $3\cdot10^{-2}$ (the rest's fixed rule spans the layer
    at $\theta\sim|h_k-k_l|$)."""
    us, jumps = tuple(us), tuple(jumps)
    gx, gw = np.polynomial.legendre.leggauss(_REST_GL)

    def duals(q1, q2, omr):
        return joint(q1, q2, omr)[:2]

    def drop(q1, q2, omr_p, dlt, slope=False):
        q1, q2, omr_p, dlt = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, omr_p, dlt)))
        if q1.size == 0:
            return (np.zeros(q1.shape),) * 2 if slope else np.zeros(q1.shape)
        tp, width = _angles(omr_p, dlt)
        _, cdot_c, jump_c = joint(q1, q2, omr_p + dlt)
        theta = tp[..., None] + width[..., None] * (gx + 1) / 2
        _, cdot, jump = joint(q1[..., None], q2[..., None], 2.0 * np.sin(theta / 2) ** 2)
        rest = (cdot - jump) - (cdot_c - jump_c)[..., None]
        smooth = np.sum(gw * rest * np.sin(theta), axis=-1) * width / 2
        value = np.sqrt(q1 * q2) * (cdot_c * dlt + _orthant_integral(us, jumps, q1, q2, tp, width) + smooth)
        return (value, cdot_c) if slope else value

    return GapForm(duals, drop)
