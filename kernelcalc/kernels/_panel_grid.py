r"""The composite collapsed-triangle grid in time: the panels' geometry, node layout and resampling.

The one-element collapsed-triangle grid of :mod:`._triangle` resolves the kink of $\dot C$ along the diagonal
$t=s$ (kinked activations; smooth ones at large variance $q$, whose smooth scale $1/\sqrt q$ is tiny), but its
dense $[(m+1)^2]^2$ maps cost $O(m^4)$ per Picard sweep over the whole grid, and the degree $m$ must follow the
growth $e^{\sigma_w(t+s)}$ of the solution over all of $[0,T]$.  Here $[0,T]$ is cut into $P$ equal panels
$[t_k,t_{k+1}]$, $h=T/P$ ($\sigma_wh\le1$, :func:`panel_count`); the square $[0,T]^2$ into $P^2$ cells, of which
(symmetry: inputs of equal norm) the lower ones are kept:

- the **diagonal cells** $[t_k,t_{k+1}]^2$: the collapsed-triangle grid of degree $m$ on $[0,h]$ shifted to
  $(t_k,t_k)$ (nodes $(t_k+r_i,\,t_k+r_iv_l)$), which is analytic across the kink;
- the **off-diagonal cells** $(k,j)$, $k>j$: tensor Chebyshev–Lobatto grids of degree $m$, where
  $\theta(t,s)=(t-s)\eta(t,s)$ is analytic.

**Layout.** The node values of the $P$ diagonal cells, then of the $P(P-1)/2$ tensor cells (row by row), are one
flat vector (:class:`PanelGrid`), with the weights $\omega$ of $\iint_{[0,T]^2}$; the diagonal $q(t)=S(t,t)$ is
kept on the composite time nodes ($Pm+1$ of them), from which every node's variances $q(t)$, $q(s)$ are read.  An
edge shared by a diagonal cell and a tensor cell is interpolated (``E_top``: the diagonal cell's top row, analytic
in the collapsed variable $w$, at the tensor cell's $s$ nodes).

**Resampling.** The solutions are analytic on every cell, so node values on one grid are carried to another of the
same panels (any degree and sinh map) by the tensor interpolant per cell: in $(t,s)$ on a tensor cell, in the
collapsed coordinates $(r,w)$ on a diagonal one (:meth:`PanelGrid.resample_nodes`): the first guess of a solve on
the next grid (:func:`._panels.solve`).  The solvers of the Goursat problems on this grid are :mod:`._panels`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from ._interp import barycentric_weights, chebyshev_lobatto
from ._triangle import TriangleGrid, triangle_grid

__all__ = ["PanelGrid", "panel_grid", "panel_count"]

_PANEL_LENGTH = 1.0     # sigma_w * h at most (panel_count)


def panel_count(T: float, sigma_w: float) -> int:
    r"""Panels of the composite grid: $\lceil\sigma_wT/\ell\rceil$, $\ell$ = ``_PANEL_LENGTH``."""
    return max(1, int(math.ceil(sigma_w * T / _PANEL_LENGTH - 1e-9)))


def _lobatto01(n: int) -> np.ndarray:
    k = np.arange(n + 1)
    return 0.5 * (1.0 + np.sin(0.5 * np.pi * (2 * k - n) / n))


@dataclasses.dataclass(frozen=True, eq=False)
class PanelGrid:
    r"""The composite grid (module doc): ``P`` panels of length ``h``, degree ``m`` per cell, sinh map ``delta``
    on the diagonal cells.  Node values of the $P$ diagonal cells (triangle layout ``(m+1, m+1)``: $r_i$, $v_l$)
    then the $P(P-1)/2$ tensor cells (``(m+1, m+1)``: $t$, $s$) are flattened into one vector of
    :attr:`points` values; ``omega`` its $\iint_{[0,T]^2}$ weights."""

    m: int
    P: int
    delta: float
    T: float
    tri: TriangleGrid
    J: np.ndarray         # (m+1, m+1): int_0^{tau_i} ell_k on [0, h]
    Jt: np.ndarray        # int_{tau_i}^h ell_k
    wq: np.ndarray        # (m+1,): int_0^h ell_k
    E_top: np.ndarray     # (m+1, m+1): a diagonal cell's top row (w nodes) -> the tensor s nodes
    omega: np.ndarray
    r: np.ndarray         # composite time nodes (P m + 1,)

    @property
    def h(self) -> float:
        return self.T / self.P

    @property
    def n(self) -> int:
        return self.m

    @property
    def cell(self) -> int:
        return (self.m + 1) ** 2

    @property
    def points(self) -> int:
        return self.cell * (self.P + self.P * (self.P - 1) // 2)

    @property
    def name(self) -> str:
        return f"collapsed-triangle panels (P={self.P}, m={self.m}, delta={self.delta:g}, T={self.T!r})"

    def diag_slice(self, k: int) -> slice:
        return slice(k * self.cell, (k + 1) * self.cell)

    def tensor_slice(self, k: int, j: int) -> slice:
        i = self.P + k * (k - 1) // 2 + j
        return slice(i * self.cell, (i + 1) * self.cell)

    @property
    def on_diagonal(self) -> np.ndarray:
        """Flat indices of the nodes on $t=s$ (the diagonal cells' $v=1$ column, the tensor cells' corners)."""
        m1 = self.m + 1
        d = [k * self.cell + np.arange(m1) * m1 for k in range(self.P)]
        d += [np.array([self.tensor_slice(k, k - 1).start + self.m]) for k in range(1, self.P)]
        return np.concatenate(d)

    @property
    def terminal(self) -> int:
        """Flat index of $(T,T)$."""
        return (self.P - 1) * self.cell + self.m * (self.m + 1)

    def split(self, qc: np.ndarray) -> np.ndarray:
        """Composite diagonal values ``(B, P m + 1)`` -> per panel ``(B, P, m + 1)``."""
        idx = np.arange(self.P)[:, None] * self.m + np.arange(self.m + 1)[None, :]
        return qc[:, idx]

    def variances(self, qc: np.ndarray):
        r"""``(q1, q2)`` ``(B, points)``: the variances $q(t)$, $q(s)$ at every node, from the composite
        diagonal ``qc`` ``(B, P m + 1)``."""
        qp = self.split(qc)
        B, m1 = qc.shape[0], self.m + 1
        q1 = np.empty((B, self.points))
        q2 = np.empty((B, self.points))
        Q = self.tri.Q
        for k in range(self.P):
            sl = self.diag_slice(k)
            q1[:, sl] = np.repeat(qp[:, k], m1, axis=1)
            q2[:, sl] = qp[:, k] @ Q.T
            for j in range(k):
                sl = self.tensor_slice(k, j)
                q1[:, sl] = np.repeat(qp[:, k], m1, axis=1)
                q2[:, sl] = np.tile(qp[:, j], (1, m1))
        return q1, q2

    def resample(self, qc: np.ndarray, other: "PanelGrid") -> np.ndarray:
        """Composite diagonal values on this grid -> on ``other`` (same panels; per-panel interpolation)."""
        if other.m == self.m:
            return qc
        L = barycentric_weights(self.tri.r, other.tri.r)            # (m'+1, m+1)
        out = self.split(qc) @ L.T                                  # (B, P, m'+1)
        return np.concatenate([out[:, :, :-1].reshape(qc.shape[0], -1), out[:, -1, -1:]], axis=1)

    def resample_nodes(self, values: np.ndarray, other: "PanelGrid") -> np.ndarray:
        r"""Node values ``(B, points)`` of a function on this grid -> on ``other``'s nodes (same panels and $T$; any
        degree and sinh map): per tensor cell the tensor interpolant in $(t,s)$, per diagonal cell that in the
        collapsed coordinates $(r,w)$ (``other``'s $v$ nodes mapped to this grid's $w$).  The solutions are analytic
        there, so the values of a converged solve on one grid are a first guess on another (:func:`._panels.solve`
        ``guess``: the degree ladder's next rung, :meth:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin._pairs`)."""
        if other.P != self.P or other.T != self.T:
            raise ValueError("resample_nodes: the grids must share their panels")
        if other.m == self.m and other.delta == self.delta:
            return values
        B, m1 = values.shape[0], self.m + 1
        Lt = barycentric_weights(_lobatto01(self.m), _lobatto01(other.m))             # (n1, m1)
        Lr = barycentric_weights(self.tri.r, other.tri.r)
        a = math.asinh(1.0 / self.delta)
        w = np.arcsinh(np.clip(1.0 - other.tri.v, 0.0, 1.0) / self.delta) / a        # other's v nodes in this w
        Lw = barycentric_weights(_lobatto01(self.m), w)
        out = np.empty((B, other.points))
        P = self.P
        d = values[:, : P * self.cell].reshape(B * P, m1, m1)
        out[:, : P * other.cell] = _sandwich2(Lr, d, Lw).reshape(B, -1)
        t = values[:, P * self.cell:].reshape(-1, m1, m1)
        if t.size:
            out[:, P * other.cell:] = _sandwich2(Lt, t, Lt).reshape(B, -1)
        return out


@functools.lru_cache(maxsize=32)
def panel_grid(m: int, P: int, delta: float, T: float) -> PanelGrid:
    """The :class:`PanelGrid` of ``P`` panels on ``[0, T]``, degree ``m``, sinh map ``delta``."""
    h = float(T) / P
    tri = triangle_grid(m, m, float(delta), h)
    _, J, wq = chebyshev_lobatto(m, h)
    Jt = wq[None, :] - J
    tau = _lobatto01(m)                                     # s nodes / h of a tensor cell
    a = math.asinh(1.0 / delta)
    w_target = np.arcsinh(np.clip(1.0 - tau, 0.0, 1.0) / delta) / a
    E_top = barycentric_weights(_lobatto01(m), w_target)    # (m+1 s-nodes, m+1 w-nodes)
    cell = (m + 1) ** 2
    npts = cell * (P + P * (P - 1) // 2)
    omega = np.empty(npts)
    wt = 2.0 * np.outer(wq, wq).ravel()
    for k in range(P):
        omega[k * cell:(k + 1) * cell] = tri.omega
        for j in range(k):
            i = P + k * (k - 1) // 2 + j
            omega[i * cell:(i + 1) * cell] = wt
    r = np.concatenate([k * h + tri.r[:-1] for k in range(P)] + [np.array([float(T)])])
    return PanelGrid(int(m), int(P), float(delta), float(T), tri, J, Jt, wq, E_top, omega, r)


def _sandwich2(A, X, C):
    """``A @ X @ C.T`` for a stack ``X`` (B, n, n) -> (B, a, c)."""
    B, n, k = X.shape
    Y = (X.reshape(B * n, k) @ C.T).reshape(B, n, C.shape[0])
    return np.einsum("an,bnc->bac", A, Y)

