r"""The weight-tied Euler ResNet kernel by marching its exact recursions row by row (no Picard sweeps).

The discrete Goursat problems of :mod:`kernelcalc.kernels.resnet` ($\delta=T/L$, $\gamma=\sigma_w^2\delta^2$)

$$S_{\ell m}=S_0+\gamma\!\!\sum_{i<\ell,\,j<m}\!C_{ij},\qquad
\Lambda_{\ell m}=\Lambda_T+\gamma\!\!\sum_{\ell\le i<L,\ m\le j<L}\!\dot C_{ij}\Lambda_{i+1,j+1}$$

are explicit one row at a time:

$$S_{\ell+1,m}=S_{\ell m}+\gamma\sum_{j<m}C_{\ell j},\qquad
\Lambda_{\ell m}=\Lambda_{\ell+1,m}+\gamma\sum_{m\le j<L}\dot C_{\ell j}\Lambda_{\ell+1,j+1},$$

an exclusive (forward) and an inclusive (reverse) cumulative sum per row: $O(L^2)$ work in all and no
$O(L^3)$ matrix products, where the matrix form of :class:`~kernelcalc.kernels.ode.Discretisation` costs
$O(L^3)$ per Picard sweep and tens of sweeps.  The result is the same finite sum (to rounding).  For the
self-kernel ($x=y$) row $\ell+1$ needs the diagonals $q_j=S_{jj}$, $j\le\ell$, only: by the symmetry
$C_{ij}=C_{ji}$, $S_{\ell+1,\ell+1}=S_{\ell+1,\ell}+\gamma\sum_{j\le\ell}C_{\ell j}$.  The NTK sum
$\delta^2\sum_{i,j<L}C_{ij}\Lambda_{i+1,j+1}$ is accumulated during the backward march.

:func:`euler_march` returns the ``(self_solve, cross_solve, marginals)`` triple of
:func:`kernelcalc.kernels.ode_grid._compiled` for one depth, in numpy (closed forms and the Hermite series) or
with jax evaluations of the expectations row by row (the quadrature rules).
"""

from __future__ import annotations

import numpy as np

from .._lazy import jnp
from ..theory import recursion as rec
from ..theory.gaussian import Gathered

__all__ = ["euler_march"]


class _Columns:
    """Coefficients ``(K, U, n)`` of U marginals read at problem indices ``index``, one node at a time:
    :meth:`column` is a :class:`~kernelcalc.theory.gaussian.Gathered` view of node ``l`` (nothing copied)."""

    def __init__(self, a, index):
        self.a, self.index = a, index

    def column(self, l):
        return Gathered(self.a[..., l:l + 1], self.index)


def euler_march(dual, L: int, T: float, sigma_w: float, sigma_v: float):
    """``(self_solve, cross_solve, marginals)`` for the Euler ResNet of depth ``L`` on ``[0, T]`` (module doc).

    ``self_solve(S0)`` returns the diagonals ``(U, L+1)`` (not the full grid), sweeps = 1, change = 0."""
    xp = np if dual.numpy_ok else jnp
    gamma = sigma_w**2 * (T / L) ** 2
    n = L + 1

    # the self march: U x (l+1) covariances a row, a new shape each row (compiled, the polar rule took a jax compile
    # per row: 9 of the 17 s of a depth-8 Gram of a kink-at-0 activation); the untabulated polar rule in numpy
    xs = np if dual.method == "polar" else xp

    def C_of(m1, m2, S, derivative, tails=None, xp=xp):
        out = dual.from_marginals(m1, m2, xp.asarray(S), derivative=derivative, xp=xp, tails=tails)
        return tuple(np.asarray(o) for o in out) if derivative else np.asarray(out)

    def col(m, l):
        """Marginals of node ``l``: the last axis kept with length 1."""
        return tuple(a.column(l) if isinstance(a, _Columns) else a[..., l:l + 1] for a in m)

    def self_solve(S0):
        S0 = np.asarray(S0, dtype=np.float64)
        U = S0.shape[0]
        q = np.empty((U, n))
        q[:, 0] = S0
        m0 = dual.marginal(xs.asarray(q[:, :1]), derivative=False, xp=xs)        # (.., U, 1) each
        store = [np.zeros(np.shape(a)[:-1] + (n,)) for a in m0]                   # marginals of every node
        for a, b in zip(store, m0):
            a[..., :1] = np.asarray(b)
        row = S0[:, None].copy()                                                   # S_{l, 0..l}
        for l in range(L):
            Crow = C_of(tuple(a[..., l:l + 1] for a in store), tuple(a[..., :l + 1] for a in store), row, False, xp=xs)
            cs = np.concatenate([np.zeros((U, 1)), np.cumsum(Crow, axis=1)], axis=1)   # sum_{j<m}, m=0..l+1
            new = np.empty((U, l + 2))
            new[:, :l + 1] = row + gamma * cs[:, :l + 1]
            new[:, l + 1] = new[:, l] + gamma * cs[:, l + 1]
            q[:, l + 1] = new[:, l + 1]
            for a, b in zip(store, dual.marginal(xs.asarray(q[:, l + 1:l + 2]), derivative=False, xp=xs)):
                a[..., l + 1:l + 2] = np.asarray(b)
            row = new
        return q, 0.0, 1

    def marginals(diag):
        return dual.marginal(xp.asarray(diag), xp=xp)

    lazy = xp is np and dual.method == "hermite"
    tails_of = dual.shared_tails(xp)       # the tails of the marginals that a call's batches share, computed once

    def cross_solve(m, ix, iy, S0):
        ix, iy = np.asarray(ix), np.asarray(iy)
        S0 = np.asarray(S0, dtype=np.float64)
        B = S0.shape[0]
        # near-parallel pairs of a closed form with a gap form (relu sums, relu ...): the deficit march, apart
        near = _deficit_pairs(dual, xp, ix, iy, S0, np.asarray(m[0])[ix, 0])
        if near.any() and not near.all():
            out = (np.empty(B), np.empty(B))
            for sel in (near, ~near):
                got = cross_solve(m, ix[sel], iy[sel], S0[sel])
                out[0][sel], out[1][sel] = got[0], got[1]
            return out[0], out[1], 0.0, 1
        if lazy:    # numpy Hermite: the truncated series gathers only the coefficients it sums
            mx = (m[0][ix, :],) + tuple(_Columns(a, ix) for a in m[1:])
            my = (m[0][iy, :],) + tuple(Gathered(a, iy) for a in m[1:])
        else:
            mx = tuple(a[..., ix, :] for a in m)
            my = tuple(a[..., iy, :] for a in m)
        tl = tails_of(m)
        tails = None if tl is None else (tuple(t[:, ix] for t in tl), tuple(t[:, iy] for t in tl))
        Cd = np.empty((B, n, n))        # Cdot_{l m}
        Cs = np.empty((B, n, n))        # C_{l m}
        row = np.broadcast_to(S0[:, None], (B, n)).copy()
        # identical inputs (x = y: same norm index and x.y/d = |x|^2/d): the cell (l, l) is the diagonal q_l itself,
        # correlation exactly 1 (the march's own S_ll differs from q_l by rounding, and a kinked phi's Cdot ~
        # (1 - rho)^{1/2} turns a rounding of 1e-16 in rho into an error of 1e-8)
        qx = np.asarray(mx[0])
        same = (ix == iy) & (S0 == qx[:, 0])
        if near.any():      # (all of them)
            Cs, Cd = _deficit_march(dual.rule.gap_form, lambda m1, m2, S: C_of(m1, m2, S, False), mx, my,
                                    qx[:, 0] - S0, gamma, L)
        else:
            for l in range(n):
                if same.any():
                    row[same, l] = qx[same, l]
                C_l, Cd_l = C_of(col(mx, l), my, row, True, tails)
                Cs[:, l], Cd[:, l] = C_l, Cd_l
                if l < L:
                    cs = np.concatenate([np.zeros((B, 1)), np.cumsum(C_l[:, :L], axis=1)], axis=1)   # (B, n)
                    row = row + gamma * cs
        LamT = rec.ode_backward_terminal(Cd[:, L, L], sigma_v)
        lam = np.broadcast_to(LamT[:, None], (B, n)).copy()      # Lambda_{L, :}
        integral = np.zeros(B)
        delta = T / L
        for l in range(L - 1, -1, -1):
            prod = Cd[:, l, :L] * lam[:, 1:]                          # Cdot_{l j} Lambda_{l+1, j+1}, j < L
            integral += delta**2 * np.sum(Cs[:, l, :L] * lam[:, 1:], axis=1)
            rc = np.cumsum(prod[:, ::-1], axis=1)[:, ::-1]           # sum_{m <= j < L}
            new = lam.copy()
            new[:, :L] = lam[:, :L] + gamma * rc
            lam = new
        nngp = rec.ode_nngp(Cs[:, L, L], sigma_v)
        ntk = rec.ode_ntk(Cs[:, L, L], integral, S0, lam[:, 0], sigma_v, sigma_w)
        return nngp, ntk, 0.0, 1

    return self_solve, cross_solve, marginals


#: input correlations 1 - rho below which a pair of equal norm is marched in deficit form (input angles under 0.01,
#: as the kinked Neural-ODE solver's ``_DEFICIT_BELOW``: the plain march's rounding of 1 - rho, ~1e-14, is an error
#: ~7e-15 / theta_0 relative in the NTK of a kink)
_DEFICIT_OMR = 1.0 - np.cos(0.01)


def _deficit_pairs(dual, xp, ix, iy, S0, q0):
    """Which pairs are marched in deficit form (:func:`_deficit_march`): numpy closed forms with a gap form, pairs of
    equal norm at input correlations above ``1 - _DEFICIT_OMR``, not identical (those: the plain march, exact)."""
    form = getattr(dual.rule, "gap_form", None) if dual.method == "closed" and xp is np else None
    if form is None:
        return np.zeros(np.shape(S0), bool)
    gap = q0 - S0
    return (ix == iy) & (gap > 0) & (gap < _DEFICIT_OMR * q0)


def _deficit_march(form, C_of, mx, my, gap, gamma, L):
    r"""$(C,\dot C)$ ``(B, L+1, L+1)`` of B near-parallel pairs of equal norm (``mx``, ``my``: their marginals, the
    variances first; ``gap`` $=S_0^\parallel-S_0>0$), marched for the deficit $D=S^\parallel-S$ against the parallel
    pair: $D_{\ell+1,m}=D_{\ell m}+\gamma\sum_{j<m}\big(C(S^\parallel_{\ell j})-C(S_{\ell j})\big)$ with the drop
    from ``form`` (:class:`~kernelcalc.theory.duals_gap.GapForm`: relative to itself) and
    $1-\rho=(1-\rho^\parallel)+D/\sqrt{q_\ell q_j}$, exactly 0 on the parallel pair's diagonal.  The march of $S$
    itself carries $1-\rho$ to an absolute $\sim10^{-14}$ only, an angle error $\sim10^{-14}/\theta$ that a kink's
    $\dot C$ turns into an error $\sim7\cdot10^{-15}/\theta_0$ in the NTK (hardtanh, depth 8: the sphere's theta
    table stalled at 1025 nodes and 1.2e-9, warning)."""
    B, n = gap.shape[0], L + 1
    qx, qy = np.asarray(mx[0]), np.asarray(my[0])
    Cs, Cd = np.empty((B, n, n)), np.empty((B, n, n))
    par = np.broadcast_to(qx[:, :1], (B, n)).copy()        # S^par_{l, :}: the parallel pair (S_0 = q_0)
    D = np.broadcast_to(gap[:, None], (B, n)).copy()
    for l in range(n):
        par[:, l] = qx[:, l]                               # its diagonal: the self-kernel's q_l, rho = 1 exactly
        q1 = np.broadcast_to(qx[:, l:l + 1], (B, n))
        root = np.sqrt(q1 * qy)
        root = np.where(root > 0, root, 1.0)
        omr = 1.0 - par / root
        omr[:, l] = 0.0
        Cs[:, l], Cd[:, l] = form.duals(q1, qy, omr + D / root)
        if l < L:
            C_par = C_of(tuple(a[..., l:l + 1] for a in mx), my, par)
            drop = form.drop(q1, qy, omr, D / root)
            zero = np.zeros((B, 1))
            par = par + gamma * np.concatenate([zero, np.cumsum(C_par[:, :L], axis=1)], axis=1)
            D = D + gamma * np.concatenate([zero, np.cumsum(drop[:, :L], axis=1)], axis=1)
    return Cs, Cd
