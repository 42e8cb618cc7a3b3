r"""Nearly parallel inputs of unequal norm for the kinked Neural-ODE solver: both collapsed triangles
(:mod:`._triangle_pair`), each pair's degree by its own ladder.

A pair of unequal norms whose input correlation $|\cos\theta_0|$ exceeds the last of the tensor grid's probe
correlations (:data:`~kernelcalc.kernels.ode_kinked._TENSOR_CORRELATIONS`, 0.99) has the near kink of $\dot C$ near
the diagonal $t=s$, which a tensor grid resolves only algebraically: judged at identical inputs, its ladder climbed
to 128 intervals and still changed by 5.6e-7 (relu6, $x$ and $2x$), and on 200 standardised rows in $d=2$ (a quarter
of the norm-interpolation table's angles within 8 degrees of 0 or $\pi$) the cost guard refused elu, hardtanh, relu6
and hard-swish.  On the two triangles the same pairs converge geometrically (module doc of :mod:`._triangle_pair`).  Taken
for every kink that does not jump, on one time element.

**The degree.**  Every pair is solved on the ladder :data:`_PAIR_LADDER` (sinh map $\delta$ = :data:`_PAIR_DELTA`,
nodes clustered toward the diagonal) until its NTK changes by at most ``tol`` from the rung below; the last change is its error estimate (the convergence is geometric: the change
bounds the error of the coarser rung), relative to the largest $|$NTK$|$ of the call (the kernels' accuracy claim).  The diagonals $q_x(t)$, $q_y(t)$ are the solver's self-kernels of the two
norms, interpolated to each rung's nodes ($q$ is analytic in $t$).  Measured at $\cos\theta_0=0.9999$ and norms 0.3,
2.5 (relu6): 1.9e-10 / 7.2e-12 / 2.3e-14 at degrees 24 / 32 / 48.
"""

from __future__ import annotations

import numpy as np

from .._validation import accuracy_shortfall
from ..theory import recursion as rec
from . import _triangle_pair as tp
from .ode_kinked_panels import _TaylorCells, _dual_np, _resample

__all__ = ["KinkedPairMixin"]

#: degrees m = n of the pairs' two-triangle grids.  From 12 (was 16): elu's pairs on 200 standardised rows in d = 2 all
#: change by at most 6.7e-11 from 12 to 16, so none solves at 24 (1738 pairs, 14.6 -> 9.3 s; the kernel within 3.9e-13);
#: relu6 45 -> 39 s (559 of them climb to 24), hardtanh unchanged (30.5 / 31.3 s)
_PAIR_LADDER = (12, 16, 24, 32, 48)
_PAIR_DELTA = 1.0 / 16.0            # their sinh map (relu6, x and 2x: 8.2e-13 at degree 24 where delta = 1 gave 6.2e-9)
#: grid cells (both triangles, all pairs) per numpy solve: 473 pairs at degree 12, 128 at 24, 33 at 48 (a tabulated
#: dual's series take 66 floats a cell: 85 MB); 32 pairs a solve took 8.3 s of elu's 2-D rows above, 512 pairs 7.3 s
_PAIR_CELLS = 160_000


class KinkedPairMixin:
    r"""Pairs of unequal norm near $|\cos\theta_0|=1$ on both collapsed triangles (module doc); mixed into
    :class:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin` (one time element only)."""

    def _close_pairs(self, dual, M, sxx, syy, sxy):
        """``(nngp, ntk)`` of the pairs ``sxx, syy, sxy`` (1-D, unequal norms) on the two-triangle ladder; records
        ``unequal_norms_close_M`` and ``unequal_norms_close_time_error_estimate``."""
        v, inverse = np.unique(np.concatenate([sxx, syy]), return_inverse=True)
        q0 = self._cached_diagonals(dual, M, v)
        grid0 = self._grid(M, 1.0)
        n = sxx.size
        ix, iy = inverse[:n], inverse[n:]
        S0 = rec.ode_initial(sxy, self.sigma_u)
        nngp, ntk = np.empty(n), np.empty(n)
        change = np.full(n, np.inf)
        todo = np.arange(n)
        prev = None
        top = None
        # a fixed degree (time_nodes) is judged against the rung three quarters of it (its change the estimate)
        ladder = _PAIR_LADDER if self.M_fixed is None else (max(4, 3 * int(self.M_fixed) // 4), int(self.M_fixed))
        for Mp in ladder:
            if todo.size == 0:
                break
            top = Mp
            grid = self._grid(Mp, _PAIR_DELTA)
            q = _resample(q0, grid0, grid)
            a, b = self._pair_solves(dual, grid, q[ix[todo]], q[iy[todo]], S0[todo])
            if prev is not None:
                # (relative to the call's largest |NTK|, as the kernels' accuracy claim: a nearly antiparallel pair's
                # own NTK can be a few percent of it)
                with np.errstate(invalid="ignore"):
                    scale = max(float(np.nanmax(np.abs(ntk), initial=0.0)), float(np.nanmax(np.abs(b), initial=0.0)))
                    change[todo] = np.abs(b - prev[todo]) / scale if scale > 0 else np.abs(b - prev[todo])
                change[np.isnan(change)] = np.inf        # (a non-finite pair: never converged; the caller raises)
            nngp[todo], ntk[todo] = a, b
            if prev is None:
                prev = ntk.copy()
                continue
            prev[todo] = b
            todo = todo[change[todo] > self.tol]
        est = float(np.max(change)) if n else 0.0
        if todo.size:
            accuracy_shortfall(
                f"time grid: {todo.size} nearly parallel pairs of unequal norm still change by {est:.1e} (relative) at "
                f"degree {top} of both collapsed triangles, above tol = {self.tol:.1e}", self.strict)
        self.info["unequal_norms_close_M"] = max(self.info.get("unequal_norms_close_M") or 0, top or 0)
        self.info["unequal_norms_close_time_error_estimate"] = max(
            self.info.get("unequal_norms_close_time_error_estimate") or 0.0, est)
        self.info["time_error_estimate"] = max(self.info.get("time_error_estimate") or 0.0, est)
        return nngp, ntk

    def _pair_solves(self, dual, grid, qx, qy, S0):
        """``(nngp, ntk)`` of B pairs with diagonals ``qx``, ``qy`` (B, m+1) on ``grid``, in batches."""
        nngp, ntk = np.empty(S0.size), np.empty(S0.size)
        batch = max(8, _PAIR_CELLS // (2 * grid.r.size * grid.v.size))
        for lo in range(0, S0.size, batch):
            sl = slice(lo, lo + batch)
            q1, q2 = tp.pair_variances(grid, qx[sl], qy[sl])
            C_of = _cells(dual, q1, q2)
            S, dS, nS = tp.solve_pair(grid, C_of, S0[sl], self._fwd, q1, q2, newton=True)
            C, Cdot = C_of(q1, q2, S)
            LamT = rec.ode_backward_terminal(Cdot[:, 0, -1, 0], self.sigma_v)
            Lam, dL, nL = tp.backward_pair(grid, Cdot, LamT, self._bwd)
            integral = tp.pair_integral(grid, C, Lam)
            nngp[sl] = rec.ode_nngp(C[:, 0, -1, 0], self.sigma_v)
            ntk[sl] = rec.ode_ntk(C[:, 0, -1, 0], integral, S0[sl], Lam[:, 0, 0, 0], self.sigma_v, self.sigma_w)
            self._sweeps("cross", max(dS, dL), max(nS, nL),
                         "the cross-covariance S(t, s) or the backward kernel Lambda(t, s)")
        return nngp, ntk


def _cells(dual, q1, q2):
    r"""``C_of(q1, q2, c) -> (C, Cdot)`` of one batch of pair solves at its fixed node variances ``q1``, ``q2``: a tabulated
    dual (elu, the polar table) contracts its variances once (``rule.at_variances``); a relu sum or a piecewise
    polynomial of degree 2 Taylor-updates exact anchors (:class:`~.ode_kinked_panels._TaylorCells`); else the closed
    form or rule at every sweep."""
    if dual.tabulated:
        # C and Cdot are symmetric in (q1, q2): the variance a row of nodes shares first (q_x(r_k) below the diagonal,
        # q_y(r_k) above), so that the table's series in the first variance is contracted once per row, not per node
        # (measured elu, 200 standardised rows in d = 2: 15 s of the pairs' 18 s went to those contractions)
        f = dual.rule.at_variances(np.stack([q1[:, 0], q2[:, 1]], axis=1), np.stack([q2[:, 0], q1[:, 1]], axis=1))
        return lambda a, b, c: f(c)
    cells = _TaylorCells.of(dual)
    if cells is not None:
        return lambda a, b, c: cells(q1, q2, c)
    return lambda a, b, c: _dual_np(dual, a, b, c, True)
