r"""The deficit form of near-parallel pairs of a positively homogeneous kink (relu, leaky relu, abs, user piecewise
linear) in the kinked Neural-ODE solver (:mod:`kernelcalc.kernels.ode_kinked`): such a pair is solved for the deficit
$D=S_\parallel-S$ against the parallel pair, with $C$ and $\dot C$ evaluated from $1-\rho$ instead of the
correlation, so that the angle keeps its relative accuracy at input angles $\theta_0\to0$
(:meth:`KinkedDeficitMixin._deficit`, and the drop $C(\rho_p)-C(\rho_c)$ of :func:`_gap_drop`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..theory.duals_ops import NUMPY_OPS
from . import _triangle as tri
from . import _panels as pan
from ._panel_grid import PanelGrid

_HOMOGENEOUS = ("relu", "leaky_relu", "piecewise linear")   # closed forms that depend on c and the angle only


def _homogeneous_closed(dual) -> bool:
    """Whether ``dual`` is a closed form of a positively homogeneous kink (relu, leaky relu, abs, user
    piecewise linear): $C$, $\\dot C$ are functions of $n=\\sqrt{q_1q_2}$, $c$ and the angle alone."""
    return dual.method == "closed" and dual.rule.name.split("(")[0] in _HOMOGENEOUS


def _duals_of_gap(dual, q1, q2, omr):
    r"""$(C,\dot C)$ of a homogeneous kink from $1-\rho$ (``omr``) instead of $c$: the angle
    $\theta=2\operatorname{atan2}(\sqrt{1-\rho},\sqrt{1+\rho})$ keeps its relative accuracy for
    $1-\rho\sim10^{-16}$, where $c/\sqrt{q_1q_2}$ rounded would leave only its first digits."""
    omr = np.clip(omr, 0.0, 2.0)
    theta = 2.0 * np.arctan2(np.sqrt(omr), np.sqrt(2.0 - omr))
    n = np.sqrt(q1 * q2)
    ops = SimpleNamespace(**{**vars(NUMPY_OPS), "angle": lambda a, b, c: theta})
    c = n * np.cos(theta)
    return dual.rule.C_formula(ops, q1, q2, c), dual.rule.Cdot_formula(ops, q1, q2, c)


def _theta_of(omr):
    r"""$\theta=\arccos(1-\text{omr})=2\arcsin\sqrt{\text{omr}/2}$ (relative accuracy at tiny omr)."""
    return 2.0 * np.arcsin(np.sqrt(np.clip(omr, 0.0, 2.0) / 2.0))


def _relu_drop(omr_p, dlt):
    r"""$f(\rho_p)-f(\rho_c)$ for $f(\rho)=\sin\theta+(\pi-\theta)\cos\theta$ ($2\pi C_{\rm relu}/n$),
    $1-\rho_p$ = ``omr_p``, $\rho_p-\rho_c$ = ``dlt`` $\ge0$, with relative accuracy however small ``dlt``:
    $f'(\rho)=\pi-\theta$ gives $f(\rho_p)-f(\rho_c)=\pi\Delta-\int_{\theta_p}^{\theta_c}\theta\sin\theta\,d\theta$;
    the integral by 8-point Gauss-Legendre on $[\theta_p,\theta_c]$ where $\theta_c\le2\theta_p$ (its width
    $\theta_c-\theta_p$ from $\sin$ of the half-angles, without cancellation), else as the difference of
    $\sin\theta-\theta\cos\theta$ (then no cancellation either)."""
    from ..theory.duals_ops import _ARC_SERIES

    omr_c = omr_p + dlt
    tp, tc = _theta_of(omr_p), _theta_of(omr_c)
    x, y = np.sqrt(np.clip(omr_c, 0, 2) / 2), np.sqrt(np.clip(omr_p, 0, 2) / 2)
    den = x * np.sqrt(1 - y * y) + y * np.sqrt(1 - x * x)
    width = 2.0 * np.arcsin(np.where(den > 0, (dlt / 2) / np.where(den > 0, den, 1.0), 0.0))

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


def _gap_drop(dual, n, omr_p, dlt):
    r"""$C(\rho_p)-C(\rho_c)$ of a homogeneous kink $\phi=bz+(a-b)\mathrm{relu}$ ($C=ab\,c+(a-b)^2C_{\rm relu}$)
    from ``omr_p`` $=1-\rho_p$ and ``dlt`` $=\rho_p-\rho_c$, accurate relative to itself (:func:`_relu_drop`)."""
    one = np.float64(1.0)
    at_one = float(dual.rule.C_formula(NUMPY_OPS, one, one, one))   # C at rho = 1: ab + (a-b)^2 / 2
    ab = -float(dual.rule.C_formula(NUMPY_OPS, one, one, -one))     # C at rho = -1: -ab
    amb2 = 2.0 * (at_one - ab)
    return n * (ab * dlt + amb2 / (2 * np.pi) * _relu_drop(omr_p, dlt))


class KinkedDeficitMixin:
    r"""The deficit form of :class:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin` (which supplies ``_C`` and
    ``_fwd``: :class:`~kernelcalc.kernels.ode_kinked_panels.KinkedPanelsMixin`)."""

    def _deficit_form(self, dual) -> bool:
        """Whether near-parallel pairs of ``dual`` are solved in deficit form (:meth:`_deficit`)."""
        return getattr(dual, "rule", None) is not None and _homogeneous_closed(dual)

    def _deficit(self, dual, grid, q, S0_self, gap):
        r"""$(C,\dot C)$ on ``grid`` of B near-parallel pairs of a homogeneous kink, from the deficit
        $D=S_\parallel-S$ against the parallel pair ($S_\parallel$: the same diagonal ``q``, $S_0$ =
        ``S0_self``).  $D$ solves the same Goursat problem, $D=D_0+W\sigma_w^2(C(S_\parallel)-C(S))$ with
        $D_0$ = ``gap`` (exact), and $1-\rho=(1-\rho_\parallel)+D/\sqrt{q_1q_2}$ with $1-\rho_\parallel=0$
        exactly on the diagonal: the angle keeps its relative accuracy at input angles $\theta_0\to0$,
        where $S$ itself would carry only the first digits of $1-\rho\approx\theta_0^2$ (an error
        $\sim\epsilon/\theta_0$ in the angle: measured 1e-8 relative in the abs NTK at $\theta_0=10^{-7}$).
        Returns ``(C, Cdot, change, sweeps)``."""
        B = q.shape[0]
        if isinstance(grid, PanelGrid):      # the same on the panels (node arrays flat)
            q1, q2 = grid.variances(q)
            n = np.sqrt(q1 * q2)
            root = np.where(n > 0, n, 1.0)
            S_par, _, d1, k1 = pan.solve(grid, self._C(dual), S0_self, self._fwd, q=q)
            omr_par = 1.0 - S_par / root
            omr_par[:, grid.on_diagonal] = 0.0
            D, _, d2, k2 = pan.solve(grid, lambda a, b, D, x: _gap_drop(dual, x[0], x[1], D / x[2]), gap, self._fwd,
                                     q=q, aux=(n, omr_par, root))
            C, Cdot = _duals_of_gap(dual, q1, q2, omr_par + D / root)
            return C, Cdot, max(d1, d2), max(k1, k2)
        m1, n1 = grid.m + 1, grid.n + 1
        q1 = np.broadcast_to(q[:, :, None], (B, m1, n1))
        q2 = (q @ grid.Q.T).reshape(B, m1, n1)
        n = np.sqrt(q1 * q2)
        S_par, _, d1, k1 = tri.solve(grid, self._C(dual), S0_self, self._fwd, q=q)
        omr_par = 1.0 - S_par / np.where(n > 0, n, 1.0)
        omr_par[:, :, 0] = 0.0                                 # v = 1: the diagonal, rho = 1 exactly
        root = np.where(n > 0, n, 1.0)
        D, _, d2, k2 = tri.solve(grid, lambda a, b, D: _gap_drop(dual, n, omr_par, D / root), gap, self._fwd, q=q)
        C, Cdot = _duals_of_gap(dual, q1, q2, omr_par + D / root)
        return C, Cdot, max(d1, d2), max(k1, k2)
