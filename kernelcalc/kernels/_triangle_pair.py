r"""The collapsed-triangle discretisation (:mod:`._triangle`) for a pair of inputs of *unequal* norm.

Nearly parallel inputs of different norms ($y\approx\lambda x$, $\lambda\ne1$: low-dimensional data, where many
pairs are within a few degrees of each other) have $\rho(r,q)$ of $(h_r(x),h_q(y))$ close to 1 near the diagonal
$r=q$, where $\dot C$ of a kinked $\phi$ has its (near) kink, as for equal norms.  But $S(r,q)\ne S(q,r)$: there is no
symmetry to fold the square onto one triangle.  So both triangles carry their own node values in collapsed
coordinates, $S_L(r,v)=S(r,rv)$ (below the diagonal) and $S_U(r,v)=S(rv,r)$ (above).  For $t\ge s$ the region
$[0,t]\times[0,s]$ of the forward integral splits at the diagonal into

$$\int_0^s\!dr\,r\!\int_0^1\!C_L\,dv+\int_s^t\!dr\,r\!\int_0^{s/r}\!C_L\,dv\quad\text{and}\quad
\int_0^s\!dr\,r\!\int_0^1\!C_U\,dv,$$

and the symmetric map $W=2W_a+W_b$ of :mod:`._triangle` is the sum with $C_U=C_L$.  So
$S_L=S_0+\sigma_w^2\,[W C_L+W_a(C_U-C_L)]$ and $S_U$ the same with $L\leftrightarrow U$; $W_a=h\otimes P_0$ is
separable ($h_{(i,l),k}=\int_0^{r_iv_l}L_k(r)\,r\,dr$, $P_0=\int_0^1\ell_l\,dv$).  Backward likewise,
$\Lambda_L=\Lambda_T+\sigma_w^2\,[V E_L+V_a(E_U-E_L)]$ with $V_a=\int_t^Tdr\,r\int_{t/r}^1$ (per row $t$: the
grid's ``tail`` and ``tail_seg``), and $\iint C\Lambda=\tfrac12\omega^\top(C_L\Lambda_L+C_U\Lambda_U)$.  The
variances: $q_x(r)$, $q_y(rv)$ on the lower triangle, $q_x(rv)$, $q_y(r)$ on the upper.  With equal norms the two
triangles coincide and this is :mod:`._triangle`'s scheme.

Measured against the degree-48 solve (relu6, $x$ and $2x$, $v=1$, $\delta=1/16$): 3.4e-8 / 1.7e-10 / 8.2e-13 at
degrees 12 / 16 / 24, where the tensor grid's self-kernel ladder still changed by 5.6e-7 at 128; relu: the
homogeneous limit $K(x,\lambda x)=\lambda K(x,x)$ to 1e-15 from degree 16.
"""

from __future__ import annotations

import numpy as np

from ._triangle import _one_thread, change_floor, linear_sweeps, sweeps

__all__ = ["pair_variances", "solve_pair", "backward_pair", "pair_integral"]


def pair_variances(grid, qx: np.ndarray, qy: np.ndarray):
    r"""``(q1, q2)`` (B, 2, m+1, n+1): the variances of every node of both triangles from the diagonals ``qx``,
    ``qy`` (B, m+1) of the two inputs: lower $(q_x(r_k), q_y(r_kv_l))$, upper $(q_x(r_kv_l), q_y(r_k))$."""
    B, m1, n1 = qx.shape[0], grid.m + 1, grid.n + 1
    at = lambda q: (q @ grid.Q.T).reshape(B, m1, n1)         # noqa: E731  (q at the points r_k v_l)
    row = lambda q: np.broadcast_to(q[:, :, None], (B, m1, n1))   # noqa: E731
    return np.stack([row(qx), at(qx)], axis=1), np.stack([at(qy), row(qy)], axis=1)


def _forward(grid, X):
    r"""$W X_L + W_a(X_U - X_L)$ and its mirror for sources ``X`` (B, 2, m+1, n+1)."""
    B, m1, n1 = X.shape[0], grid.m + 1, grid.n + 1
    own = X.reshape(2 * B, -1) @ grid.W.T
    D = (X[:, ::-1] - X) @ grid.P0                                              # (B, 2, m+1)
    return (own + D.reshape(2 * B, m1) @ grid.head.T).reshape(B, 2, m1, n1)


def _backward_map(grid, X):
    r"""$V X_L + V_a(X_U - X_L)$ and its mirror (module doc)."""
    B, m1, n1 = X.shape[0], grid.m + 1, grid.n + 1
    own = (X.reshape(2 * B, -1) @ grid.V.T).reshape(B, 2, m1, n1)
    D = X[:, ::-1] - X
    rows = (D @ grid.P0) @ grid.tail.T - np.einsum("ikl,bjkl->bji", grid.tail_seg, D)      # (B, 2, m+1 rows)
    return own + rows[..., None]


def solve_pair(grid, C_of, S0, source, q1, q2, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11, newton=False):
    r"""Picard iteration (chord-Newton steps with ``newton``: ``C_of`` returns $(C,\dot C)$) of
    $S=S_0+$ the two-triangle forward map of ``source(C(S))`` for B pairs (``S0`` (B,)) at the node variances
    ``q1``, ``q2`` (:func:`pair_variances`), by :func:`._triangle.sweeps`.  Returns ``(S (B, 2, m+1, n+1), change,
    sweeps)``."""
    with _one_thread():
        B = S0.shape[0]
        S = np.broadcast_to(S0[:, None, None, None], q1.shape).copy()
        floor = change_floor(np.max(np.abs(np.concatenate([q1, q2], axis=1)).reshape(B, 1, -1), axis=2))
        return sweeps(S, S0[:, None, None, None], lambda S: C_of(q1, q2, S), lambda C: _forward(grid, source(C)),
                      floor, newton, sweeps_tol, max_sweeps, stagnation)


def backward_pair(grid, Cdot, LamT, source, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11):
    r"""Picard iteration of $\Lambda=\Lambda_T+$ the two-triangle backward map of ``source(Cdot, Lambda)``
    (``Cdot`` (B, 2, m+1, n+1), ``LamT`` (B,)), by :func:`._triangle.linear_sweeps`.  Returns ``(Lambda, change,
    sweeps)``."""
    with _one_thread():
        return linear_sweeps(np.broadcast_to(LamT[:, None, None, None], Cdot.shape).copy(), LamT[:, None, None, None],
                             lambda Lam: _backward_map(grid, source(Cdot, Lam)), sweeps_tol, max_sweeps, stagnation)


def pair_integral(grid, C, Lam) -> np.ndarray:
    r"""$\iint_{[0,T]^2}C\Lambda$ (B,) from both triangles' node values: $\tfrac12\omega^\top(C_L\Lambda_L+C_U\Lambda_U)$."""
    B = C.shape[0]
    return 0.5 * ((C * Lam).reshape(B, 2, -1).sum(axis=1) @ grid.omega)
