r"""The accuracy checks of the norm-interpolation plan (:class:`~kernelcalc.kernels._gram_norms.NormInterpPlan`):
the table against direct solves at held-out norm pairs (the error of the basis in $\log v$) and at held-out angles
(the error of the series in $\theta$), and against direct evaluations at input pairs of extreme norms."""

from __future__ import annotations

import numpy as np

from ._interp import chebyshev_matrix, lobatto

__all__ = ["NormPlanChecks"]


class NormPlanChecks:
    """The held-out and input-pair checks of :class:`~kernelcalc.kernels._gram_norms.NormInterpPlan` (a mixin: the
    plan's norms, skeleton, basis weights and pair calls)."""

    def _interp_pairs(self, coef, tx, ty, u):
        """The table at norm pairs (exp tx, exp ty) (each (n,)) and window coordinates u: (len(u), n, 2)."""
        Bx, By = self._basis_weights(tx), self._basis_weights(ty)
        D = np.einsum("nk,rklo,nl->rno", Bx, coef, By)
        return np.einsum("ar,rno->ano", chebyshev_matrix(u, self.R), D)

    def _held_out_norms(self, pair_fn, coef, P) -> float:
        """Largest relative deviation of the table from direct solves at six pairs of Lobatto points in t, the
        first of each off the skeleton ``P``, and seven angles of the window: the error of the basis (the
        interpolation between the Lobatto points is the tail in t of the columns).  The tensor grid (``P`` all its
        points): six pairs of the columns' Lobatto points off its own (their self-kernels solved), the ends among
        the second: the error of its degree in t, which the columns' tail at the extreme norms can understate
        (hardtanh on 70 standardised rows in d = 2: 3.2e-9 against an estimate of 3.2e-10, review of stop 37)."""
        off = np.setdiff1d(np.arange(self.nodes_t.size), P)
        if off.size:
            pts = self.nodes_t[off]
            tx = pts[self.rng.choice(off.size, 6)]
            ty = np.concatenate([self.nodes_t[[0, -1]], tx[2:4], self.nodes_t[self.rng.integers(0, self.nodes_t.size, 2)]])
        else:
            gap = np.min(np.abs(self.col_nodes[:, None] - self.nodes_t[None, :]), axis=1)
            pts = self.col_nodes[gap > 1e-9 * max(self.t_hi - self.t_lo, 1.0)]     # (off its nodes, not by equality)
            if pts.size == 0:
                return 0.0
            tx = pts[self.rng.choice(pts.size, 6)]
            ty = np.concatenate([self.nodes_t[[0, -1]], tx[2:4], pts[self.rng.choice(pts.size, 2)]])
        u = np.cos(np.pi * np.arange(7) / 6)
        vx, vy = self._v(tx)[None, :], self._v(ty)[None, :]
        vals = self._call(pair_fn, vx, vy, np.sqrt(vx * vy) * self._cos(u)[:, None])
        dev = np.abs(self._interp_pairs(coef, tx, ty, u) - vals)
        # and every held-out norm with itself at both edges of the window, where F is sharpest in the norms (near
        # theta = 0 a kink's F turns sharp as t_x crosses t_y; relu6, 2000 standardised rows: 5.4e-10 at v = 1.74
        # where six random pairs measured 1.9e-12)
        edges = np.array([-1.0, 1.0])
        v = self._v(pts)[None, :]
        same = self._call(pair_fn, v, v, v * self._cos(edges)[:, None])
        dev_same = np.abs(self._interp_pairs(coef, pts, pts, edges) - same)
        return float(max(np.max(dev / np.maximum(self.scale, 1e-300)), np.max(dev_same / np.maximum(self.scale, 1e-300))))

    def _held_out_theta(self, pair_fn, coef, scale) -> float:
        r"""Largest relative deviation of the theta series ``coef`` (R+1, K, K, 2) from direct solves at
        held-out angles (up to 12 midpoints in angle between the Lobatto nodes of the window) on the skeleton pairs
        where its two highest coefficients are largest (four pairs, and the two end corners)."""
        R = coef.shape[0] - 1
        K = coef.shape[1]
        v = self.skeleton
        top = np.max(np.abs(coef[-2:]) / np.maximum(scale, 1e-300), axis=(0, 3))       # (K, K)
        top = np.triu(top) + np.tril(np.full((K, K), -1.0), -1)
        flat = np.argsort(top.ravel())[::-1][:4]
        px, py = np.unravel_index(flat, (K, K))
        px, py = np.concatenate([px, [0, K - 1]]), np.concatenate([py, [0, K - 1]])
        keep = np.unique(px * K + py)
        px, py = keep // K, keep % K
        mids = lobatto(2 * R)[1::2]      # midway in angle between the Lobatto nodes (the theta degree's own points
        # when R divides them: their corner pairs solved already)
        u = mids[np.unique(np.linspace(0, mids.size - 1, min(12, mids.size)).round().astype(int))]
        vals = self._call(pair_fn, v[px][None, :], v[py][None, :],
                          np.sqrt(v[px] * v[py])[None, :] * self._cos(u)[:, None])      # (U, pairs, 2)
        pred = np.einsum("ar,rpo->apo", chebyshev_matrix(u, R), coef[:, px, py])
        return float(np.max(np.abs(pred - vals) / np.maximum(scale, 1e-300)))

    def _check_rows(self):
        """Rows of ``a`` and ``b`` for :meth:`_check`: the extreme norms and three random ones (of a symmetric Gram:
        the same rows, whose norms the Neural ODE solver then solves directly)."""
        rng = np.random.default_rng(0)

        def pick(v):
            extremes = [np.argmin(np.where(v > 0, v, np.inf)), np.argmax(v)]
            return np.unique(np.concatenate([extremes, rng.integers(0, v.size, 3)]))

        rows = pick(self.na)
        return (rows, rows) if self.same else (rows, pick(self.nb))   # (a symmetric Gram: its diagonal too)

    def _check(self, pair_fn) -> float:
        """Largest relative deviation from direct evaluations at input pairs of extreme norms."""
        ia, ib = self.check_rows
        self.solves += ia.size * ib.size
        got = [np.concatenate([g[:, ib] for g in gs]) for gs in
               zip(*(self.block(slice(i, i + 1), slice(None)) for i in ia))]
        # summed as the norms are (_inner), identical rows of a symmetric Gram or not (relu6's check of a Gram of 300
        # rows with their copy measured 6.7e-9 from a matrix product and warned, the Gram itself exact; review of stop 38)
        xy = self._inner(np.repeat(ia, ib.size), np.tile(ib, ia.size)).reshape(ia.size, ib.size)
        ref = pair_fn(np.broadcast_to(self.na[ia][:, None], xy.shape), np.broadcast_to(self.nb[ib][None, :], xy.shape), xy)
        return float(max(np.max(np.abs(g - r)) / max(sc, 1e-300) for g, r, sc in zip(got, ref, self.scale)))
