r"""The Neural-ODE Goursat solves with the ``"fourier"`` dual: Chebyshev tables per pair of time nodes.

With the polar Fourier rule (:mod:`kernelcalc.theory.polar_fourier`) the dual kernels at a cell $(t_i,s_j)$ of
the time grid are Chebyshev series in the correlation, $C=\sum_mc_m(q_x(t_i),q_y(s_j))\,T_m(\rho)$, whose
coefficients depend on the two marginal variances only.  In a cross-kernel solve the diagonals $q_x$, $q_y$ are
fixed, so the tables $c_m$ of $C$ and $\dot C$ are built **once** for all cells (one radial contraction per mode:
a batched matrix product over the node coefficients of the $n$ time nodes) and shared by every pair of the
call with the same two diagonals (on the sphere: all of them) and by every Picard sweep; a sweep then costs one
Clenshaw sum per cell.  Pairs of inputs of one norm have symmetric problems, $S(t,s)=S(s,t)$: their tables and
sums are kept on the $n(n+1)/2$ cells $t_i\le s_j$.  In the self-kernel solve the diagonal $q(t)=S(t,t)$ moves
with every sweep, so the node coefficients and the table are rebuilt each sweep (one evaluation of
$\phi$ per radial node and angle per time node: $O(n)$ work, against $O(n^2)$ for the table).

The functions returned by :func:`fourier_solves` have the signatures of those of
:func:`kernelcalc.kernels.ode._compiled` (numpy only).
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict

import numpy as np

from ..theory import recursion as rec
from ..theory.polar_fourier import chebyshev_sum

__all__ = ["fourier_solves"]

_MAX_TABLES = 8      # (diagonal pair) -> tables kept per solve function


def _upper(n: int):
    """Upper-triangle indices of an ``n x n`` grid and the map back to the full grid (mirror)."""
    i, j = np.triu_indices(n)
    back = np.zeros((n, n), dtype=np.int64)
    back[i, j] = np.arange(i.size)
    back[j, i] = np.arange(i.size)
    return i, j, back


def _tables(Ax: np.ndarray, Ay: np.ndarray) -> np.ndarray:
    r"""$c_m$ at every cell: ``(modes, n, n)`` from node coefficients ``(modes, K, n)`` of the two diagonals (one
    radial contraction per mode; on one BLAS thread, see :func:`_one_thread`)."""
    return np.einsum("mki,mkj->mij", Ax, Ay, optimize=True)


def _one_thread():
    """One BLAS thread: the products here are small (tens of rows); on the busy 2-core machine a second thread
    made the table contraction 10-40x slower (measured 0.04 s against 0.4-1.5 s)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _single_threaded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _one_thread():
            return fn(*args, **kwargs)
    return wrapper


def fourier_solves(dual, disc, sigma_w: float, sigma_v: float, picard):
    r"""``(self_solve, cross_solve, marginals)`` on the grid ``disc`` for the ``"fourier"`` dual (module doc);
    ``picard``: the Picard driver of :mod:`kernelcalc.kernels.ode` (``picard(step, S_init, xp=np)``)."""
    rule = dual.rule
    A, B, P, w = disc.A, disc.B, disc.P, disc.w
    n = A.shape[0]
    iu, ju, back = _upper(n)

    def forward(S0, C):
        return S0[:, None, None] + A @ rec.ode_forward_source(C, sigma_w) @ A.T

    def correlation(S, qx, qy):
        """S (B, ...) on cells with variances qx, qy (broadcasting) -> rho clipped to [-1, 1]."""
        root = np.sqrt(qx * qy)
        return np.where(root > 0, np.clip(S / np.where(root > 0, root, 1.0), -1.0, 1.0), 0.0)

    solved: OrderedDict = OrderedDict()

    @_single_threaded
    def self_solve(S0):
        """S0: (U,) initial variances -> S (U, n, n), last change, sweeps (memoised: the time-grid choice and the
        Gram's first call solve the same self-kernel)."""
        S0 = np.asarray(S0, np.float64)
        key = S0.tobytes()
        if key not in solved:
            solved[key] = _self_solve(S0)
            if len(solved) > _MAX_TABLES:
                solved.popitem(last=False)
        S, delta, sweeps = solved[key]
        return S.copy(), delta, sweeps

    def _self_solve(S0):

        def step(S):
            q = np.diagonal(S, axis1=1, axis2=2)                               # (U, n)
            Aq = rule.node_coefficients(q)                                     # (M, K, U, n)
            out = np.empty_like(S)
            for u in range(S.shape[0]):
                tab = _tables(Aq[:, :, u], Aq[:, :, u])[:, iu, ju]             # (M, cells)
                rho = correlation(S[u, iu, ju], q[u, iu], q[u, ju])
                out[u] = chebyshev_sum(tab, rho)[back]
            return forward(S0, out)

        return picard(step, np.broadcast_to(S0[:, None, None], (S0.shape[0], n, n)).copy(), xp=np)

    def marginals(diag):
        return dual.marginal(np.asarray(diag, np.float64), xp=np)

    cache: OrderedDict = OrderedDict()

    def tables_of(m, a, b):
        """C and Cdot tables ``(modes, cells)`` (upper triangle when the two diagonals are equal) of norms a, b."""
        qa, qb = m[0][a], m[0][b]
        key = (qa.tobytes(), qb.tobytes())
        hit = cache.get(key)
        if hit is None:
            sym = bool(np.array_equal(qa, qb))
            tabs = []
            for k in (1, 2):
                t = _tables(m[k][:, :, a], m[k][:, :, b])
                tabs.append(np.ascontiguousarray(t[:, iu, ju]) if sym else t.reshape(t.shape[0], -1))
            hit = cache[key] = (sym, tabs[0], tabs[1])
            if len(cache) > _MAX_TABLES:
                cache.popitem(last=False)
        return hit

    @_single_threaded
    def cross_solve(m, ix, iy, S0):
        """m: :func:`marginals` of the U distinct norms, ix, iy: (B,) indices into them; S0: (B,)
        -> nngp, ntk (B,), last change, sweeps."""
        ix, iy, S0 = np.asarray(ix), np.asarray(iy), np.asarray(S0, np.float64)
        nngp, ntk = np.empty(S0.size), np.empty(S0.size)
        worst, most = 0.0, 0
        for a, b in sorted(set(zip(ix.tolist(), iy.tolist()))):
            sel = np.nonzero((ix == a) & (iy == b))[0]
            sym, tC, tD = tables_of(m, a, b)
            qa, qb = m[0][a], m[0][b]
            s0 = S0[sel]
            if sym:
                qi, qj = qa[iu], qb[ju]

                def cells(S):
                    return S[:, iu, ju]

                def full(X):
                    return X[:, back]
            else:
                qi, qj = np.repeat(qa, n), np.tile(qb, n)

                def cells(S):
                    return S.reshape(S.shape[0], -1)

                def full(X):
                    return X.reshape(X.shape[0], n, n)

            def dual_of(S, table):
                return full(chebyshev_sum(table[:, None, :], correlation(cells(S), qi, qj)))

            S, dS, nS = picard(lambda S: forward(s0, dual_of(S, tC)), np.broadcast_to(s0[:, None, None], (sel.size, n, n)).copy(),
                               xp=np)
            C, Cdot = dual_of(S, tC), dual_of(S, tD)
            LamT = rec.ode_backward_terminal(Cdot[:, -1, -1], sigma_v)

            def back_step(Lam):
                return LamT[:, None, None] + B @ rec.ode_backward_source(Cdot, P @ Lam @ P.T, sigma_w) @ B.T

            Lam, dL, nL = picard(back_step, np.broadcast_to(LamT[:, None, None], S.shape).copy(), xp=np)
            integral = np.einsum("i,bij,j->b", w, C * (P @ Lam @ P.T), w)
            nngp[sel] = rec.ode_nngp(C[:, -1, -1], sigma_v)
            ntk[sel] = rec.ode_ntk(C[:, -1, -1], integral, s0, Lam[:, 0, 0], sigma_v, sigma_w)
            worst = max(worst, float(dS), float(dL))
            most = max(most, int(nS), int(nL))
        return nngp, ntk, worst, most

    return self_solve, cross_solve, marginals
