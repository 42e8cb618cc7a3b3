r"""Chebyshev series at the Chebyshev-Lobatto points $-\cos(k\pi/R)$: the points, the coefficients of the
interpolant through values there, and the polynomials at given points (shared by the theory's tables,
:mod:`.polar_table`, and the kernels' Gram plans, :mod:`kernelcalc.kernels._interp`)."""

from __future__ import annotations

import numpy as np

__all__ = ["chebyshev_coefficients", "chebyshev_matrix", "lobatto"]


def chebyshev_coefficients(values: np.ndarray) -> np.ndarray:
    r"""Chebyshev coefficients $c_j$ of the interpolant through values at $u_k=-\cos(k\pi/R)$, $k=0..R$.

    ``values``: shape ``(R+1, ...)``. Returns the same shape; $p(u)=\sum_j c_jT_j(u)$.
    """
    f = np.asarray(values)[::-1]                       # now at x_m = cos(m pi / R)
    R = f.shape[0] - 1
    m = np.arange(R + 1)
    cos = np.cos(np.pi * np.outer(m, m) / R)           # cos(j m pi / R)
    wts = np.ones(R + 1)
    wts[0] = wts[-1] = 0.5
    c = (2.0 / R) * np.tensordot(cos * wts[None, :], f, axes=(1, 0))
    c[0] *= 0.5
    c[-1] *= 0.5
    return c


def lobatto(R: int) -> np.ndarray:
    r"""Chebyshev–Lobatto points $-\cos(k\pi/R)$, $k=0..R$ (increasing, both ends), exactly antisymmetric
    ($u_{R-k}=-u_k$ in floating point: the nodes of $\theta$ and $\pi-\theta$ pair up exactly)."""
    k = np.arange(R + 1)
    return np.sin(0.5 * np.pi * (2 * k - R) / R) if R > 0 else np.zeros(1)      # = -cos(k pi / R)


def chebyshev_matrix(u: np.ndarray, R: int) -> np.ndarray:
    """``T[i, j] = T_j(u_i)``, j = 0..R (evaluation of Chebyshev series as one matrix product)."""
    u = np.asarray(u, float).ravel()
    T = np.empty((R + 1, u.size))          # the recurrence on contiguous rows (columns: 10-30x slower at R ~ 1000)
    T[0] = 1.0
    if R >= 1:
        T[1] = u
    for j in range(2, R + 1):
        np.multiply(2.0 * u, T[j - 1], out=T[j])
        T[j] -= T[j - 2]
    return T.T
