r"""The Gram plan interface and the row-chunk engine of the table plans (:mod:`kernelcalc.kernels._gram`).

A :class:`GramPlan` holds the validated inputs and their norms $v=x\cdot x/d$ and evaluates any rectangular tile
of the Gram (:meth:`GramPlan.block`).  :class:`_TablePlan` is the base of the plans whose entries are read
from tables (the sphere and norm-group table, the norm interpolation): a tile is computed in row chunks that
keep the temporaries in cache, on parallel threads (numpy releases the GIL; each chunk writes its own rows,
so the result does not depend on the thread count), and a tile on the diagonal of a symmetric Gram computes
its upper triangle and mirrors it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os

import numpy as np

__all__ = ["GramPlan", "R_START", "R_MAX"]

R_START, R_MAX = 16, 1024    # theta nodes - 1 of the first and the largest theta sample (doubled)
_TILE_ENTRIES = 1 << 16    # entries per evaluation chunk (keeps the temporaries in cache)


def _cores() -> int:
    """CPU cores this process may run on (threads for the chunks of a tile)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover  (not on Linux)
        return max(1, os.cpu_count() or 1)


class GramPlan:
    r"""How to evaluate one Gram: the global work is done once at construction (the interpolants,
    the diagonal norms), then :meth:`block` evaluates any rectangular tile.

    ``a`` (N1, d), ``b`` (N2, d) validated inputs; ``same``: ``b is a`` (a symmetric Gram);
    ``info``: the path and its accuracy diagnostics (``interpolation_error_estimate`` is relative).
    :meth:`block` of a tile on the diagonal of a symmetric Gram returns an exactly symmetric tile (its
    upper triangle mirrored): the tile engine relies on it.
    """

    def __init__(self, a, b, same, info):
        self.a, self.b, self.same, self.info = a, b, same, info
        self.d = a.shape[1]
        self.na, self.nb = np.sum(a * a, axis=1) / self.d, np.sum(b * b, axis=1) / self.d

    @property
    def shape(self) -> tuple[int, int]:
        return self.a.shape[0], self.b.shape[0]

    def _inner(self, ia, ib) -> np.ndarray:
        r"""$x\cdot y/d$ of the row pairs ``(a[ia[k]], b[ib[k]])`` summed as the norms are: identical rows give exactly
        their $x\cdot x/d$ (a matrix product's rounding leaves $1-\rho\sim10^{-16}$, where a kink's kernel moves like its
        square root)."""
        return np.sum(self.a[ia] * self.b[ib], axis=1) / self.d

    def block(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """``(nngp, ntk)`` of ``a[rows]`` x ``b[cols]``."""
        raise NotImplementedError  # pragma: no cover  (abstract)

    def _diagonal_mask(self, rows: slice, cols: slice) -> np.ndarray | None:
        """Where ``i == j`` inside the tile of a symmetric Gram (None when the tile holds no diagonal)."""
        if not self.same:
            return None
        i = np.arange(self.shape[0])[rows]
        j = np.arange(self.shape[1])[cols]
        mask = i[:, None] == j[None, :]
        return mask if mask.any() else None

    def _theta(self, rho, rows, cols, ra, rb):
        """theta (in place of ``rho``, the inner products x.y/d of the tile) from the norms ``ra``, ``rb``
        (sqrt of v; 0 for zero rows, whose theta is set to 0); the diagonal of a symmetric Gram is exactly 0."""
        denom = ra[:, None] * rb[None, :]
        np.divide(rho, denom, out=rho, where=denom > 0)
        rho[denom == 0] = 1.0
        np.clip(rho, -1.0, 1.0, out=rho)
        mask = self._diagonal_mask(rows, cols)
        if mask is not None:
            rho[mask] = 1.0
        return np.arccos(rho, out=rho), mask


class _TablePlan(GramPlan):
    """A plan whose entries are read from tables: evaluated in row chunks that keep the temporaries
    in cache; a tile on the diagonal of a symmetric Gram computes its upper triangle and mirrors it."""


    def _chunk_entries(self) -> int:
        """Entries per evaluation chunk."""
        return _TILE_ENTRIES

    def _threads(self):
        """Context for the chunk loop (the norm plan's small matrix products run single-threaded)."""
        return contextlib.nullcontext()

    def _chunk(self, i: np.ndarray, j: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """``(2, len(i), len(j))``: (nngp, ntk) of rows ``a[i]`` x ``b[j]`` (``xy``: their x.y/d, overwritten)."""
        raise NotImplementedError  # pragma: no cover  (abstract)

    def block(self, rows, cols):
        ia, jb = np.arange(self.shape[0])[rows], np.arange(self.shape[1])[cols]
        sym = self.same and np.array_equal(ia, jb)
        out = (np.empty((ia.size, jb.size)), np.empty((ia.size, jb.size)))   # two arrays that own their memory
        step = max(1, self._chunk_entries() // max(jb.size, 1))
        chunks = [slice(r0, min(r0 + step, ia.size)) for r0 in range(0, ia.size, step)]
        # x.y/d of the whole tile in one product (small ones are slow in BLAS), computed into the second
        # output: each chunk reads its own entries before it overwrites them (no third N x N array)
        xy = np.matmul(self.a[ia], self.b[jb].T, out=out[1])
        xy /= self.d

        def run(r):            # rows r: reads its own x.y/d, writes its own rows (chunks are independent)
            c0 = r.start if sym else 0
            out[0][r, c0:], out[1][r, c0:] = self._chunk(ia[r], jb[c0:], xy[r, c0:])

        workers = min(len(chunks), _cores())
        with self._threads():
            if workers > 1:    # numpy releases the GIL in its loops: the chunks run in parallel threads
                with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                    list(pool.map(run, chunks))
            else:
                for r in chunks:
                    run(r)
        if sym:
            for K in out:
                for r in chunks:
                    K[r.stop:, r] = K[r, r.stop:].T
                    low = np.tril_indices(r.stop - r.start, -1)       # inside the chunk's own square
                    square = K[r, r]                                  # a view
                    square[low] = square.T[low]
        return out
