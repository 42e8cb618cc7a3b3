r"""The table of the norm-interpolation plan (:class:`~kernelcalc.kernels._gram_norms.NormInterpPlan`): the kernel at
the skeleton norm pairs $(t_p,t_q)$ and the $R+1$ Lobatto angles of the window, through a low-rank basis in $\theta$.

**The basis in the angle.**  As functions of $\theta$ on the window, the fibres $\theta\mapsto F(t_p,t_q,\theta)$ of
all skeleton pairs lie close to a space of small dimension $r$ (measured at 1e-12 of the scale: node tanh on
standardised rows, norms 0.13..8, $R=33$: $r=12$, where the Chebyshev series needs 34 nodes, 17 solves of an odd
kernel).  The plan solves the full fibres (all $R+1$ nodes) of a few *probe* pairs (the four corners of the skeleton,
then random pairs in batches of two until a batch lies in the span of the fibres before it to ``tol``/4), takes
their orthonormal basis $Q$ of the singular values above ``tol``/8, and $r$ *skeleton angles* $S$ by pivoted QR of
$Q^T$ (empirical interpolation, as in $t$).  Every other pair is solved at the angles $S$ only and lifted to all
nodes by $Q\,Q_S^{-1}$: $r$ solves per pair instead of $R+1$ (odd kernels: the angles $\theta$ and $\pi-\theta$ are
one solve, and their mirrored columns of $Q^T$ are never both pivots).  Its error is measured at two held-out
pairs (neither a probe), solved at every node: three times the largest deviation enters the plan's estimate.  The
basis is used only where it pays (its solves, probes included, at most 0.85 of the full table's), and a held-out
deviation above ``tol``/2 falls back to the full table (recorded in ``info``: never a silent loss of accuracy).
"""

from __future__ import annotations

import numpy as np

from ._interp import chebyshev_coefficients, lobatto, pivot_columns

__all__ = ["NormTable"]

_PROBE_BATCH = 2        # random probe pairs per batch of the theta basis
_PAYS = 0.85            # the basis is used when its solves are at most this fraction of the full table's
_HELD_OUT_PAIRS = 2     # pairs solved at every node to measure the basis


class NormTable:
    """The table of :class:`~kernelcalc.kernels._gram_norms.NormInterpPlan` (a mixin: the plan's pair calls
    ``_call``, angles ``_cos``, norms ``_v``, Lobatto nodes ``nodes_t``, the solved pairs ``core`` and ``rng``)."""

    theta_basis = None        # (R, skeleton angles S, lift (R+1, r), probed node pairs) once learned
    theta_info = None

    def _sample(self, pair_fn, R, P, scale):
        r"""Chebyshev coefficients (R+1, K, K, 2) in theta of F at the skeleton norms (Lobatto indices ``P``;
        symmetric pairs solved once, pairs solved for an earlier skeleton reused) and the scale per output; the
        pairs through the basis in theta where it pays (module doc)."""
        v = self._v(self.nodes_t)
        K = P.size
        kx, ky = np.triu_indices(K)
        todo = [(int(P[a]), int(P[b])) for a, b in zip(kx.tolist(), ky.tolist()) if (P[a], P[b]) not in self.core]
        if todo:
            basis = self._theta_basis_for(pair_fn, R, P, scale, len(todo))
            planned = getattr(pair_fn, "plan_pairs", None)
            rest = [pq for pq in todo if pq not in self.core]
            if planned is not None:     # the solves to come, at most (a solver may choose its backend by them)
                planned(len(rest) * (R + 1 if basis is None else basis[1].size))
            if rest:
                at = np.arange(R + 1) if basis is None else basis[1]
                vals = self._fibres_at(pair_fn, v, rest, R, at)               # (len(at), pairs, 2)
                if basis is not None:
                    vals = np.einsum("as,spo->apo", basis[2], vals)
                for i, pq in enumerate(rest):
                    self.core[pq] = vals[:, i]
        F = np.empty((R + 1, K, K, 2))
        for i, j in zip(kx.tolist(), ky.tolist()):
            F[:, i, j] = F[:, j, i] = self.core[(int(P[i]), int(P[j]))]
        scale = np.maximum(scale, np.max(np.abs(F), axis=(0, 1, 2)))
        return chebyshev_coefficients(F), scale

    def _fibres_at(self, pair_fn, v, pairs, R, at):
        """F at the node pairs ``pairs`` (Lobatto indices in t) and the Lobatto angles ``at`` (indices of the R+1):
        (len(at), len(pairs), 2)."""
        px, py = (np.array(a, dtype=np.intp) for a in zip(*pairs))
        cos = self._cos(lobatto(R)[at])
        return self._call(pair_fn, v[px], v[py], np.sqrt(v[px] * v[py])[None, :] * cos[:, None])

    def _theta_basis_for(self, pair_fn, R, P, scale, pairs):
        """The basis in theta for the table of degree ``R`` (learned at the first call that pays), or None."""
        if self.theta_basis is not None and self.theta_basis[0] == R:
            return self.theta_basis
        K = P.size
        distinct = (R + 1) // 2 if getattr(pair_fn, "odd", False) else R + 1       # solves per fibre
        if pairs < 4 * (4 + _PROBE_BATCH + _HELD_OUT_PAIRS):     # too few pairs for the probes to pay
            self.theta_info = dict(kind="full", reason=f"{pairs} norm pairs")
            return None
        v = self._v(self.nodes_t)
        rng = np.random.default_rng(1)     # (its own: the plan's other random checks stay as they were)
        ends = sorted({(int(P[0]), int(P[0])), (int(P[-1]), int(P[-1])), (int(P[0]), int(P[-1])),
                       (int(P[K // 2]), int(P[K // 2]))})
        upper = [(int(P[a]), int(P[b])) for a, b in zip(*np.triu_indices(K))]
        scale = np.array(scale, dtype=np.float64)

        def fibres(pq):
            vals = self._fibres_at(pair_fn, v, pq, R, np.arange(R + 1))
            for i, key in enumerate(pq):
                self.core[key] = vals[:, i]
            np.maximum(scale, np.max(np.abs(vals), axis=(0, 1)), out=scale)
            return vals

        probed = list(ends)
        Y = [fibres(probed)]
        threshold, target = self.tol / 64, self.tol / 16
        while True:
            Ys = np.concatenate([y / scale for y in Y], axis=1).reshape(R + 1, -1)
            U, s, _ = np.linalg.svd(Ys, full_matrices=False)
            r = int(np.count_nonzero(s > threshold))
            cost = len(probed) * distinct + (pairs - len(probed)) * r + _HELD_OUT_PAIRS * (distinct - r)
            left = [pq for pq in upper if pq not in probed]
            if cost > _PAYS * pairs * distinct or len(left) < _PROBE_BATCH + _HELD_OUT_PAIRS:
                self.theta_info = dict(kind="full", reason=f"rank {r} of {distinct} angles does not pay",
                                       probe_pairs=len(probed))
                return None
            new = [left[i] for i in np.sort(rng.choice(len(left), _PROBE_BATCH, replace=False))]
            got = fibres(new)
            probed += new
            Y.append(got)
            Ur = U[:, :r]
            step = (got / scale).reshape(R + 1, -1)
            if float(np.max(np.abs(step - Ur @ (Ur.T @ step)))) <= target:
                break
        Ys = np.concatenate([y / scale for y in Y], axis=1).reshape(R + 1, -1)
        U, s, _ = np.linalg.svd(Ys, full_matrices=False)
        Q = U[:, : int(np.count_nonzero(s > threshold))]
        if len(probed) * distinct + (pairs - len(probed)) * Q.shape[1] > _PAYS * pairs * distinct:
            self.theta_info = dict(kind="full", reason=f"rank {Q.shape[1]} of {distinct} angles does not pay",
                                   probe_pairs=len(probed))
            return None
        S = np.sort(pivot_columns(Q.T, Q.shape[1]))
        lift = Q @ np.linalg.inv(Q[S])                   # (R+1, r): values at the angles S -> at every node
        # the held-out pairs: solved at every node, compared with their lift from S
        left = [pq for pq in upper if pq not in probed]
        held = [left[i] for i in np.sort(rng.choice(len(left), _HELD_OUT_PAIRS, replace=False))]
        full = self._fibres_at(pair_fn, v, held, R, np.arange(R + 1))
        err = float(np.max(np.abs(np.einsum("as,spo->apo", lift, full[S]) - full) / np.maximum(scale, 1e-300)))
        self.theta_info = dict(kind="basis", rank=int(S.size), angles=distinct, probe_pairs=len(probed),
                               held_out=err)
        if err > self.tol / 4:          # the basis misses the held-out pairs: the full table
            self.theta_info.update(kind="full", reason=f"held-out deviation {err:.1e} > tol/4")
            return None
        self.theta_basis = (R, S, lift, probed)
        return self.theta_basis
