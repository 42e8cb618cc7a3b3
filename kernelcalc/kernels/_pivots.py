r"""Column-pivoted QR order in numpy: the skeleton rows of the norm-interpolation basis
(:mod:`kernelcalc.kernels._gram_norms`) without importing ``scipy.linalg``.

The basis is small ($r\le 49$ columns of length $\le 30$), and ``scipy.linalg``'s first import takes 0.2-0.8 s on
a busy machine (its array-API layer), paid by every first call off the sphere and by none on it.  The order is
the Businger–Golub one of LAPACK's ``geqp3``: at each step the column of largest remaining norm, then every
other column projected off it (modified Gram–Schmidt, the norms recomputed, not downdated)."""

from __future__ import annotations

import numpy as np

__all__ = ["pivot_order"]


def pivot_order(A: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` column pivots of the QR factorisation of ``A`` ``(m, n)`` with column pivoting."""
    R = np.array(A, dtype=np.float64, copy=True)
    n = R.shape[1]
    free = np.ones(n, bool)
    order = []
    for _ in range(min(k, n, R.shape[0])):
        norms = np.where(free, np.einsum("ij,ij->j", R, R), -1.0)
        j = int(np.argmax(norms))
        if norms[j] <= 0.0:
            break
        q = R[:, j] / np.sqrt(norms[j])
        R -= np.outer(q, q @ R)
        free[j] = False
        order.append(j)
    return np.array(order, dtype=np.int64)
