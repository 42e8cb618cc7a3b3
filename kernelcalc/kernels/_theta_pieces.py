r"""The sphere's $\theta$ table in pieces, split at the seams of a pair function's discretisation.

A Neural-ODE kernel on the composite panels (:mod:`kernelcalc.kernels.ode_kinked`) solves each band of input angles
on its own time grid, so its $K(\theta)$ jumps at the bands' edges by the difference of two discretisation errors
(about 1e-11 of max|K| at $\sigma_wT=10$).  One Chebyshev series across such a jump converges only to the jump's size
(measured softplus, $\sigma_wT=10$, the pairs' angles 0.46-2.73 in one linear series: 65 nodes, estimate 7.6e-11,
and the Gram 6.9e-11 away from the sampled one's).  Split there, every piece is smooth: each is sampled by its own
doubling (:func:`._theta_sampling._theta_samples`, with its own estimate) in its own :class:`._interp.SinhAngle` on
$[\theta_a,\theta_b]$, and read off its own :class:`._interp.ThetaTable`; an entry takes the piece its angle falls in.

The pieces cover the angles of the Gram's pairs only (:func:`pair_angles`): a band none of them
falls in is never solved (softplus at $\sigma_wT=10$, N = 200 random inputs in d = 10, angles 0.46-2.73: band 2,
$\theta_0<0.055$, its node angle table and its degree ladder are skipped; band 1, $0.055\le\theta_0<0.55$, holds
a few pairs down to 0.458, which band 0 serves: :func:`~.ode_kinked_ladder.band_floor`).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import accuracy_shortfall
from ._interp import SinhAngle, ThetaTable, chebyshev_coefficients

__all__ = ["ThetaPieces", "pair_angles", "sphere_pieces"]

_GAP = 1e-12        # relative: the pieces end this short of a seam (an angle between reads the nearer end)


class ThetaPieces:
    r"""$(K_{nngp},K_{ntk})(\theta)$ of one pair of norms on $[\theta_{lo},\theta_{hi}]$ in pieces split at ``seams``.

    ``sample(variable)`` -> ``(F, R, err)`` as :func:`._theta_sampling._theta_samples` (``F`` ``(R+1, 1, 2)``; ``err`` ``None``:
    the sampling did not converge, then :attr:`ok` is false and the caller samples one series); ``eps``: the width of
    the sinh variable's features; ``tol``: the target of each piece's series plus its table.

    :attr:`nodes`: the samples of all pieces; :attr:`error`: the largest estimate of a piece (series plus table);
    :meth:`values` reads entries."""

    def __init__(self, sample, eps: float, lo: float, hi: float, seams, tol: float):
        self.edges = np.array([lo] + sorted(float(s) for s in seams if lo < s < hi) + [hi])
        samples = []
        self.ok = True
        for i, (a, b) in enumerate(zip(self.edges[:-1], self.edges[1:])):
            # a seam itself belongs to neither piece (its band is a matter of rounding): each piece stops 1e-12 short
            a = a * (1.0 + _GAP) if i > 0 else a
            b = b * (1.0 - _GAP) if i < self.edges.size - 2 else b
            var = SinhAngle(eps, a, b)
            F, R, err = sample(var)
            if err is None:
                self.ok = False
                return
            samples.append((var, F, R, err))
        scale = np.maximum(np.max([np.max(np.abs(F), axis=(0, 1)) for _, F, _, _ in samples], axis=0), 1e-300)
        self.tables, self.error, self.nodes = [], 0.0, 0
        for var, F, R, err in samples:
            coef = chebyshev_coefficients(F).reshape(R + 1, -1)
            table = ThetaTable(coef, max(tol - err, 0.25 * tol), scale, graded=var)
            self.tables.append(table)
            self.error = max(self.error, err + table.error)
            self.nodes += R + 1

    def values(self, theta) -> np.ndarray:
        """``(2, *theta.shape)``: (nngp, ntk) at the angles ``theta`` (each from its piece's table)."""
        theta = np.asarray(theta, np.float64)
        piece = np.searchsorted(self.edges[1:-1], theta, side="right")
        out = np.empty((2,) + theta.shape)
        for p, table in enumerate(self.tables):
            sel = piece == p
            if not sel.any():
                continue
            k, s = table.index(theta[sel])
            stride = (table.n + 1) * table.P
            flat = table.table.ravel()
            for o in range(2):
                out[o][sel] = table.horner(flat, o * stride + k, s)
        return out

    def describe(self) -> str:
        return "; ".join(f"degree {t.n} x {t.P} panels ({t.variable.describe()})" for t in self.tables)


def pair_angles(plan, rep: float, limit: int) -> tuple:
    r"""$[\theta_{lo},\theta_{hi}]$: the angles of the pairs of the sphere Gram ``plan`` (norm ``rep``), as its
    :meth:`~._gram._GroupPlan._chunk` computes them (:meth:`~._gram_base.GramPlan._theta`; the diagonal of a
    symmetric Gram, copied from $\theta=0$, left out), padded by ``1e-12``; $[0,\pi]$ past ``limit`` pairs (the pass
    would cost about as much as the Gram's own) or when the pairs' angles span less than ``1e-9``."""
    if plan.shape[0] * plan.shape[1] > limit:
        return 0.0, math.pi
    xy = plan.a @ plan.b.T
    xy /= plan.d
    r = math.sqrt(rep)
    theta, mask = plan._theta(xy, slice(None), slice(None), np.full(plan.shape[0], r), np.full(plan.shape[1], r))
    theta = theta[~mask] if mask is not None else theta.ravel()
    if theta.size == 0 or float(np.ptp(theta)) < 1e-9:
        return 0.0, math.pi
    return max(float(np.min(theta)) - 1e-12, 0.0), min(float(np.max(theta)) + 1e-12, math.pi)


def sphere_pieces(pair_fn, rep: float, eps: float, lo: float, hi: float, tol: float, strict: bool, sample):
    r"""``(pieces, F0, info)`` of the sphere table of norm ``rep`` on ``[lo, hi]`` in pieces split at ``pair_fn``'s
    ``theta_seams`` (``sample(variable)``: :func:`._theta_sampling._theta_samples` of one piece; ``F0`` ``(1, 1, 2)``: the
    values at $\theta=0$, solved apart), or ``None``: no seam inside, the pairs' angles reach below the first seam (the
    band next to $\theta=0$: there one sinh series over all of them is cheaper, measured softplus $\sigma_wT=10$ over
    $[0,\pi]$: 65 nodes and 2.4e-12 from the graded table, where three pieces took 131 and 7.9e-11), or a piece's
    sampling did not converge."""
    seams = getattr(pair_fn, "theta_seams", lambda: ())()
    if not any(lo < x < hi for x in seams) or lo < min(seams):
        return None
    pieces = ThetaPieces(sample, eps, lo, hi, seams, tol)
    if not pieces.ok:
        return None
    if pieces.error > tol:
        accuracy_shortfall(f"the theta table ({pieces.describe()}) has relative error {pieces.error:.1e} > tol = "
                           f"{tol:.1e}", strict)
    v = np.array([rep])
    info = dict(path="sphere", theta_nodes=pieces.nodes, table=f"{len(pieces.tables)} pieces: {pieces.describe()}",
                interpolation_error_estimate=float(pieces.error))
    return pieces, values_at_zero(pair_fn, v, v).reshape(1, 1, 2), info


def values_at_zero(pair_fn, vx, vy) -> np.ndarray:
    r"""``(G, 2)``: (nngp, ntk) at $\theta=0$ for the norm pairs ``(vx[g], vy[g])``, by the pair function's
    ``at_angles`` where it has one, else at the covariance $\sqrt{v_xv_y}$."""
    at_angles = getattr(pair_fn, "at_angles", None)
    return np.stack(at_angles(vx, vy, np.zeros(vx.size)) if at_angles is not None else
                    pair_fn(vx, vy, np.sqrt(vx * vy)), -1)
