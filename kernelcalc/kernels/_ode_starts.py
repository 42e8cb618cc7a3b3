r"""Where the Goursat solves of :class:`~kernelcalc.kernels.ode_solver.GoursatSolver` start.

- **The coarse variance guess** (:func:`first_variance_guess`).  The time-grid choice first learns
  $q_{\max}=\max_t q(t)$ from a self-kernel solve with a coarse Mehler series (relative accuracy 1e-6), built for
  a guess of $q_{\max}$; its length grows with the guess.  For a bounded $\phi$, $|\phi|\le B$, the Goursat
  equation $q(T)=\sigma_u^2v+\sigma_w^2\int_0^T\!\int_0^TC$ with $C\le B^2$ bounds it by
  $\sigma_u^2v_{\max}+(\sigma_wTB)^2$.
- **Warm starts of identical inputs** (:class:`SelfKernelStarts`).  The cross-kernel solve of a pair of identical
  inputs ($x\cdot x=y\cdot y=x\cdot y$: the diagonal of a symmetric Gram, the time-grid check at the largest norm)
  has the self-kernel $S_{xx}$ as its fixed point: started there (numpy Mehler series,
  ``cross_solve(..., S_start=...)`` of :mod:`kernelcalc.kernels.ode_grid`) it meets the unchanged stopping test
  in one exact sweep instead of ~11 (five of them with a truncated series).
- **Starts interpolated in the input covariance** (:func:`coarse_problems`, :func:`interpolated_starts`).  A Gram
  plan asks many problems of one pair of norms at different input covariances $c_0$ (the norm-interpolation
  table: 20 angles per skeleton pair), and the solution $S(t,s;c_0)$ is smooth in $c_0$.  A dear closed form's
  Newton sweeps (:mod:`kernelcalc.kernels._newton`) square the change each sweep (measured elu: 0.35, 1.7e-3,
  1.3e-8, 1e-16 from the constant start $S_0$); from a start within ~1e-2 three sweeps meet the stopping test.  So
  five problems of each such group are solved first (:data:`_COARSE` of them, spread over its range of $c_0$), and
  the others start from the polynomial through their solutions.  The fixed point and the stopping test are those
  of a cold start.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["first_variance_guess", "SelfKernelStarts", "coarse_problems", "interpolated_starts"]

_MAX_KEPT = 8192      # self-kernels kept per solver


def first_variance_guess(activation, sigma_u: float, sigma_w: float, T: float, v_max: float) -> float:
    r"""The variance the coarse rule is built for: $4\sigma_u^2v_{\max}$ (at least 1), or for a bounded $\phi$ the
    bound $1.1\,(\sigma_u^2v_{\max}+(\sigma_wTB)^2)$ (module doc; 10 % added for $B=\max|\phi|$ measured on a grid)
    when smaller.  Tanh on standardised rows ($v_{\max}=7.9$): 9.7 against 31, a coarse series of 1120 terms
    instead of 3600."""
    guess = max(4.0 * sigma_u**2 * v_max, 1.0)
    if activation.is_bounded:
        with np.errstate(all="ignore"):
            z = np.concatenate([np.linspace(-60.0, 60.0, 24001), [-1e4, 1e4]])
            B = float(np.max(np.abs(activation.numpy_fn(z))))
        if math.isfinite(B):
            guess = min(guess, max(1.1 * (sigma_u**2 * v_max + (sigma_w * T * B) ** 2), 1.0))
    return guess


class SelfKernelStarts:
    """The self-kernels $S_{xx}$ ``(n, n)`` a solver has solved (numpy Mehler series), by grid and norm, and the
    warm starts they give (module doc)."""

    def __init__(self):
        self.kernels: dict = {}      # (M, x.x/d) -> S_xx

    def store(self, dual, M, v, S) -> None:
        """Keep the self-kernels ``S`` ``(U, n, n)`` of the norms ``v`` solved on the grid ``M`` (the Mehler series
        only; a march's diagonals ``(U, n)`` are not kept)."""
        if S.ndim != 3 or dual.method != "hermite":
            return
        if len(self.kernels) + S.shape[0] > _MAX_KEPT:
            self.kernels.clear()
        self.kernels.update(((M, x), S_x) for x, S_x in zip(np.asarray(v).tolist(), S))

    def warm(self, dual, M, backend: str, jumps: bool, sxx, syy, sxy):
        r"""``(mask, starts)``: which pairs are identical inputs whose self-kernel on the grid ``M`` is kept, and
        those self-kernels ``(k, n, n)`` (``None`` when there are none).  Numpy Mehler series only; not for a
        $\phi$ that jumps (its cross map has spurious fixed points near identical inputs)."""
        mask = np.zeros(np.shape(sxy), bool)
        if backend != "numpy" or dual.method != "hermite" or jumps:
            return mask, None
        mask = (sxx == syy) & (sxy == sxx)
        mask[mask] = [(M, x) in self.kernels for x in sxx[mask].tolist()]
        if not mask.any():
            return mask, None
        return mask, np.stack([self.kernels[(M, x)] for x in sxx[mask].tolist()])


#: problems of one pair of norms solved first (their solutions interpolated for the others' starts); a group of at
#: most _COARSE + 2 problems is solved cold
_COARSE = 5


def coarse_problems(ix: np.ndarray, iy: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """Mask of the problems solved first: of every pair of norm indices ``(ix, iy)`` with more than ``_COARSE + 2``
    distinct input covariances ``s0``, one problem at each of :data:`_COARSE` evenly spaced ranks of those distinct
    values (the ends included); every problem of a smaller group (a repeated covariance among the later problems
    starts from its solved twin: :func:`interpolated_starts`)."""
    first = np.ones(ix.shape, bool)
    key = ix.astype(np.int64) * (int(max(iy.max(initial=0), 0)) + 1) + iy
    order = np.lexsort((s0, key))
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for group in np.split(order, bounds):
        values, at = np.unique(s0[group], return_index=True)
        if values.size > _COARSE + 2:
            first[group] = False
            first[group[at[np.round(np.linspace(0, values.size - 1, _COARSE)).astype(int)]]] = True
    return first


def interpolated_starts(ix, iy, s0, solved_ix, solved_iy, solved_s0, solved_S) -> np.ndarray:
    r"""Starts ``(B, n, n)`` of the problems ``(ix, iy, s0)`` (each group's coarse problems among the solved ones): the
    Lagrange polynomial in $c_0$ through the solutions ``solved_S`` of the same pair of norms (module doc); a covariance
    solved already starts from its solution."""
    out = np.empty((ix.size,) + solved_S.shape[1:])
    width = int(max(iy.max(initial=0), solved_iy.max(initial=0))) + 1
    key, skey = ix.astype(np.int64) * width + iy, solved_ix.astype(np.int64) * width + solved_iy
    for k in np.unique(key):
        rows, js = np.flatnonzero(key == k), np.flatnonzero(skey == k)
        x, first = np.unique(solved_s0[js], return_index=True)       # (distinct nodes: coarse_problems picks them)
        js = js[first]
        d = s0[rows, None] - x[None, :]                                # (rows, nodes)
        gaps = x[:, None] - x[None, :]
        np.fill_diagonal(gaps, 1.0)
        hit = d == 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            W = np.prod(d, axis=1, keepdims=True) / d / np.prod(gaps, axis=1)[None, :]
        exact = hit.any(axis=1)
        W[exact] = hit[exact]
        out[rows] = np.tensordot(W, solved_S[js], axes=1)
    return out
