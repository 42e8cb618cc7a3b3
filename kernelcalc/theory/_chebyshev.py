r"""Chebyshev series at the Chebyshev-Lobatto points $-\cos(k\pi/R)$: the points, the coefficients of the
interpolant through values there, the polynomials at given points and a series' sum there (shared by the theory's tables,
:mod:`.polar_table`, and the kernels' Gram plans, :mod:`kernelcalc.kernels._interp`)."""

from __future__ import annotations

import numpy as np

__all__ = ["chebyshev_coefficients", "chebyshev_matrix", "clenshaw", "lobatto"]


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


def clenshaw(coef: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""$\sum_r c_r T_r(y)$ for coefficients ``coef`` of shape ``(R + 1, *shape)`` (degree first) at ``y``, broadcasting
    with each ``coef[r]``: Clenshaw's recurrence $b_r=c_r+2y\,b_{r+1}-b_{r+2}$, the sum $c_0+y\,b_1-b_2$."""
    shape = np.broadcast_shapes(coef.shape[1:], np.shape(y))
    y2 = 2.0 * np.asarray(y)
    b1, b2 = np.zeros(shape), np.zeros(shape)
    for r in range(coef.shape[0] - 1, 0, -1):
        b0 = y2 * b1
        b0 -= b2
        b0 += coef[r]
        b1, b2 = b0, b1
    return coef[0] + y * b1 - b2
