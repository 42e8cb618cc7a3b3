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
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["first_variance_guess", "SelfKernelStarts"]

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
