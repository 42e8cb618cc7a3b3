r"""The deficit form of near-parallel pairs of a kink whose closed-form dual has a gap form (relu, leaky relu, abs, user
piecewise linear, and the relu sums: hardtanh, relu6 ...) in the kinked Neural-ODE solver
(:mod:`kernelcalc.kernels.ode_kinked`): such a pair is solved for the deficit $D=S_\parallel-S$ against the parallel
pair, with $C$ and $\dot C$ evaluated from $1-\rho$ instead of the correlation, so that the angle keeps its relative
accuracy at input angles $\theta_0\to0$ (:meth:`KinkedDeficitMixin._deficit`; the dual's
:class:`~kernelcalc.theory.duals_gap.GapForm` supplies $(C,\dot C)$ from $1-\rho$ and the drop
$C(\rho_p)-C(\rho_c)$)."""

from __future__ import annotations

import numpy as np

from ..theory import recursion as rec
from . import _triangle as tri
from . import _panels as pan
from ._panel_grid import PanelGrid
from .ode_kinked_panels import _TaylorCells


def gap_form_of(dual):
    """The :class:`~kernelcalc.theory.duals_gap.GapForm` of ``dual`` (a closed form that has one), else ``None``."""
    return getattr(getattr(dual, "rule", None), "gap_form", None) if dual.method == "closed" else None


def angle_gaps(v, theta, sigma_u):
    r"""``(gap, anti)`` of pairs of norm ``v`` at input angles ``theta``: $S_0$ of the parallel pair minus, and plus,
    the pair's $S_0$, $\sigma_u^2\,2v\sin^2(	heta/2)$ and $\sigma_u^2\,2v\cos^2(	heta/2)$, exact at $	heta	o0$ and
    $	heta	o\pi$ (:meth:`~.ode_kinked.KinkedSolverMixin._pairs`: the deficit form, and an odd $\phi$'s mirror)."""
    return (rec.ode_initial(2.0 * v * np.sin(theta / 2) ** 2, sigma_u),
            rec.ode_initial(2.0 * v * np.cos(theta / 2) ** 2, sigma_u))


def _parallel(solve, q, S0):
    """``(S, change, sweeps)`` of ``solve(q, S0)`` (the parallel pairs' Goursat solves, B rows) solved once per distinct
    row of ``q`` and ``S0`` (the sphere's near-parallel pairs share one: B solves of the same problem before)."""
    key = np.column_stack([q, S0])
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    S, _, change, sweeps = solve(uniq[:, :-1], uniq[:, -1])
    return S[inverse.ravel()], change, sweeps


class KinkedDeficitMixin:
    r"""The deficit form of :class:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin` (which supplies ``_C`` and
    ``_fwd``: :class:`~kernelcalc.kernels.ode_kinked_panels.KinkedPanelsMixin`)."""

    def _deficit_form(self, dual) -> bool:
        """Whether near-parallel pairs of ``dual`` are solved in deficit form (:meth:`_deficit`)."""
        return gap_form_of(dual) is not None

    def _deficit(self, dual, grid, q, S0_self, gap):
        r"""$(C,\dot C)$ on ``grid`` of B near-parallel pairs of a kink with a gap form, from the deficit
        $D=S_\parallel-S$ against the parallel pair ($S_\parallel$: the same diagonal ``q``, $S_0$ =
        ``S0_self``).  $D$ solves the same Goursat problem, $D=D_0+W\sigma_w^2(C(S_\parallel)-C(S))$ with
        $D_0$ = ``gap`` (exact), and $1-\rho=(1-\rho_\parallel)+D/\sqrt{q_1q_2}$ with $1-\rho_\parallel=0$
        exactly on the diagonal: the angle keeps its relative accuracy at input angles $\theta_0\to0$,
        where $S$ itself would carry only the first digits of $1-\rho\approx\theta_0^2$ (an error
        $\sim\epsilon/\theta_0$ in the angle: measured 1e-8 relative in the abs NTK at $\theta_0=10^{-7}$).
        Returns ``(C, Cdot, change, sweeps)``."""
        B = q.shape[0]
        form = gap_form_of(dual)
        if isinstance(grid, PanelGrid):      # the same on the panels (node arrays flat)
            q1, q2 = grid.variances(q)
            n = np.sqrt(q1 * q2)
            root = np.where(n > 0, n, 1.0)
            S_par, d1, k1 = _parallel(lambda qu, Su: pan.solve(grid, self._C(dual), Su, self._fwd, q=qu), q, S0_self)
            omr_par = 1.0 - S_par / root
            omr_par[:, grid.on_diagonal] = 0.0
            D, _, d2, k2 = pan.solve(grid, lambda a, b, D, x: form.drop(a, b, x[0], D / x[1]), gap, self._fwd,
                                     q=q, aux=(omr_par, root))
            C, Cdot = form.duals(q1, q2, omr_par + D / root)
            return C, Cdot, max(d1, d2), max(k1, k2)
        m1, n1 = grid.m + 1, grid.n + 1
        q1 = np.broadcast_to(q[:, :, None], (B, m1, n1))
        q2 = (q @ grid.Q.T).reshape(B, m1, n1)
        n = np.sqrt(q1 * q2)
        cells = _TaylorCells.of(dual)       # (a relu sum, a piecewise polynomial: Taylor cells and Newton steps)
        S_par, d1, k1 = _parallel(lambda qu, Su: tri.solve(grid, self._C(dual) if cells is None else cells, Su,
                                                           self._fwd, q=qu, newton=cells is not None), q, S0_self)
        omr_par = 1.0 - S_par / np.where(n > 0, n, 1.0)
        omr_par[:, :, 0] = 0.0                                 # v = 1: the diagonal, rho = 1 exactly
        root = np.where(n > 0, n, 1.0)
        # a dear dual (relu sums, piecewise polynomials: the drop is most of a near-parallel solve): chord-Newton steps,
        # the drop's slope Cdot(rho_c) from the drop itself
        dear = dual.points > 1
        D, _, d2, k2 = tri.solve(grid, lambda a, b, D: form.drop(a, b, omr_par, D / root, slope=dear), gap, self._fwd,
                                 q=q, newton=dear)
        C, Cdot = form.duals(q1, q2, omr_par + D / root)
        return C, Cdot, max(d1, d2), max(k1, k2)
