r"""Self-kernel diagonals $q_v(t)=S_{xx}(t,t)$ of many input norms, interpolated in the norm.

Off the sphere every distinct norm $v=x\cdot x/d$ has its own pre-activation variance $q_v(t)$ on the
time nodes, the solution of a nonlinear self-kernel problem (a Picard solve whose every sweep
recomputes the Gaussian marginals: far more work than one cross-kernel pair).  $q_v$ is a smooth
(analytic) function of $\log v$ for $v>0$, so instead of one solve per distinct norm it is
interpolated at Chebyshev–Lobatto points in $\tau=\log v$ on the range $[v_{\min}, v_{\max}]$ of the
norms present:

$$q_v(t_k)\approx\sum_{l=0}^{m}\ell_l(\log v)\,q_{v_l}(t_k),$$

$\ell_l$ the Lagrange basis (barycentric form, exact at the nodes).  The degree is doubled from
``m0``: the interpolant of degree $m$ is checked at the $m$ new points of degree $2m$ (held out, then
merged into the interpolant of degree $2m$).  The error of the merged interpolant, relative to the
largest $|q|$, is estimated as the larger of twice its last Chebyshev coefficients and its deviation
at ``exact`` norms solved directly (held out: the Gram plan's check rows, whose direct diagonals are
then used as they are), and bounded by the held-out deviation of degree $m$ (the merged interpolant
is at least as accurate); the doubling stops when this error is below ``tol``.
"""

from __future__ import annotations

import math

import numpy as np

from ._interp import barycentric_weights, chebyshev_coefficients, lobatto

__all__ = ["DiagonalInterpolant"]

_M0, _M_MAX = 8, 128


class DiagonalInterpolant:
    r"""$q_v(t)$ for $v\in[v_{lo}, v_{hi}]$ (module doc).

    **Arguments:** ``solve(v) -> (len(v), n)``: direct self-kernel diagonals of the norms ``v``;
    ``lo``, ``hi``: the range ($0<$ ``lo`` $<$ ``hi``); ``tol``: relative accuracy target;
    ``exact``: norms solved directly as a further check (their values are kept in :attr:`exact`).

    **Attributes:** ``degree``, ``error`` (relative, measured), ``solves`` (direct solves made),
    ``exact`` (dict norm -> diagonal), ``met`` (``error <= tol``).
    """

    def __init__(self, solve, lo: float, hi: float, tol: float, exact=(), m0: int = _M0, m_max: int = _M_MAX):
        self.t_lo, self.t_hi = math.log(lo), math.log(hi)
        self.lo, self.hi = lo, hi
        exact = np.unique(np.asarray(exact, dtype=np.float64))
        exact = exact[(exact > lo) & (exact < hi)]
        direct = solve(exact) if exact.size else None
        self.exact = dict(zip(exact.tolist(), direct)) if exact.size else {}
        m = m0
        Q = solve(self._norms(lobatto(m)))
        self.solves = m + 1 + exact.size
        while True:
            u_new = lobatto(2 * m)[1::2]
            Q_new = solve(self._norms(u_new))
            self.solves += u_new.size
            held_out = float(np.max(np.abs(barycentric_weights(lobatto(m), u_new) @ Q - Q_new)))
            merged = np.empty((2 * m + 1, Q.shape[1]))
            merged[0::2], merged[1::2] = Q, Q_new
            Q, m = merged, 2 * m
            self.degree, self.values = m, Q
            self.scale = scale = max(float(np.max(np.abs(Q))), 1e-300)
            # the merged interpolant: its last Chebyshev coefficients, and the held-out exact norms
            tail = 2.0 * float(np.max(np.abs(chebyshev_coefficients(Q)[-3:]))) / scale
            dev = float(np.max(np.abs(self(exact) - direct))) / scale if exact.size else 0.0
            err = min(held_out / scale, max(tail, dev))
            if err <= tol or m >= m_max:
                break
        self.error, self.met = err, err <= tol

    def _norms(self, u: np.ndarray) -> np.ndarray:
        r"""The norms $v=e^\tau$ at the Lobatto coordinates ``u`` of $[\log v_{lo}, \log v_{hi}]$ (ends exact)."""
        v = np.exp(self.t_lo + 0.5 * (self.t_hi - self.t_lo) * (np.asarray(u) + 1.0))
        v[u == -1.0], v[u == 1.0] = self.lo, self.hi
        return v

    def covers(self, v: np.ndarray) -> np.ndarray:
        """Which of the norms ``v`` lie in the interpolated range."""
        v = np.asarray(v, dtype=np.float64)
        return (v >= self.lo) & (v <= self.hi)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """Interpolated diagonals ``(len(v), n)`` of norms ``v`` in the range (exact at the nodes)."""
        t = np.clip(np.log(np.asarray(v, dtype=np.float64)), self.t_lo, self.t_hi)
        u = 2.0 * (t - self.t_lo) / (self.t_hi - self.t_lo) - 1.0
        return barycentric_weights(lobatto(self.degree), u) @ self.values
