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
:func:`kernelcalc.kernels.ode_grid._compiled` (numpy only).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import OrderedDict

import numpy as np

from ..theory import recursion as rec
from ..theory.polar_fourier import chebyshev_sum

__all__ = ["fourier_solves"]

_MAX_TABLES = 2      # (diagonal pair) -> tables kept per solve function (the sphere has one; ~15 MB each)
_CELL_CUT = 1e-17    # a cell's Chebyshev series is cut where its coefficients fall below this (x the table's largest)
_GROUPS = 8          # cells are summed in at most this many groups of similar length


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


def _grouped(tab: np.ndarray):
    r"""The table ``(modes, cells)`` as groups ``[(cells, coefficients (modes_g, cells_g))]`` of cells whose series
    are cut at about the same length: cell $k$ needs the modes up to the last $|c_m|$ above ``_CELL_CUT`` times the
    table's largest coefficient (the rest add less than a few $10^{-17}$ of it).  Measured for tanh at
    $\sigma_wT=10$ ($q$ from 1 to 57): 131 modes per cell on average where the table has 416."""
    scale = float(np.max(np.abs(tab))) if tab.size else 0.0
    if scale == 0.0:
        return [(np.arange(tab.shape[1]), tab[:1])]
    big = np.abs(tab) > _CELL_CUT * scale
    need = tab.shape[0] - np.argmax(big[::-1], axis=0)            # last significant mode + 1 per cell
    need = np.where(np.any(big, axis=0), need, 1)
    order = np.argsort(need, kind="stable")
    groups = []
    for part in np.array_split(order, min(_GROUPS, order.size)):
        if part.size:
            k = int(need[part].max())
            groups.append((part, np.ascontiguousarray(tab[:k, part])))
    return groups


def _sum_grouped(groups, rho: np.ndarray) -> np.ndarray:
    r"""$\sum_m c_mT_m(\rho)$ per cell from :func:`_grouped` tables; ``rho`` ``(B, cells)``."""
    out = np.empty(rho.shape)
    for idx, coef in groups:
        out[:, idx] = chebyshev_sum(coef[:, None, :], rho[:, idx])
    return out


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
    ``picard``: the Picard driver of :mod:`kernelcalc.kernels.ode_grid` (``picard(step, S_init, xp=np)``)."""
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
    lock = threading.Lock()      # the Gram's tiles may call from several threads

    @_single_threaded
    def self_solve(S0):
        """S0: (U,) initial variances -> S (U, n, n), last change, sweeps.  The time-grid choice and the Gram's first
        call solve the self-kernel of (nearly) the same norm: a solution kept from an earlier call whose initial
        values lie within 1e-8 (relative) starts the sweeps (shifted by the difference), which then take one or two
        sweeps to the same tolerance."""
        S0 = np.asarray(S0, np.float64)
        start = None
        with lock:
            kept = list(solved.items())
        for S0_old, S_old in kept:
            old = np.frombuffer(S0_old)
            if old.shape == S0.shape and np.all(np.abs(old - S0) <= 1e-8 * np.abs(S0)):
                start = S_old + (S0 - old)[:, None, None]
                break
        S, delta, sweeps = _self_solve(S0, start)
        with lock:
            solved[S0.tobytes()] = S
            if len(solved) > _MAX_TABLES:
                solved.popitem(last=False)
        return S.copy(), delta, sweeps

    def _self_solve(S0, start=None):

        def step(S):
            q = np.diagonal(S, axis1=1, axis2=2)                               # (U, n)
            Aq = rule.node_coefficients(q)                                     # (M, K, U, n)
            out = np.empty_like(S)
            for u in range(S.shape[0]):
                tab = _grouped(_tables(Aq[:, :, u], Aq[:, :, u])[:, iu, ju])   # (M, cells) in groups
                rho = correlation(S[u, iu, ju], q[u, iu], q[u, ju])
                out[u] = _sum_grouped(tab, rho[None, :])[0][back]
            return forward(S0, out)

        if start is None:
            start = np.broadcast_to(S0[:, None, None], (S0.shape[0], n, n)).copy()
        return picard(step, start, xp=np)

    def marginals(diag):
        return dual.marginal(np.asarray(diag, np.float64), xp=np)

    cache: OrderedDict = OrderedDict()

    def tables_of(m, a, b):
        """C and Cdot tables ``(modes, cells)`` (upper triangle when the two diagonals are equal) of norms a, b."""
        qa, qb = m[0][a], m[0][b]
        key = (qa.tobytes(), qb.tobytes())
        with lock:
            hit = cache.get(key)
        if hit is None:
            sym = bool(np.array_equal(qa, qb))
            tabs = []
            for k in (1, 2):
                t = _tables(m[k][:, :, a], m[k][:, :, b])
                tabs.append(_grouped(t[:, iu, ju] if sym else t.reshape(t.shape[0], -1)))
            hit = (sym, tabs[0], tabs[1])
            with lock:
                cache[key] = hit
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
                return full(_sum_grouped(table, correlation(cells(S), qi, qj)))

            start = np.broadcast_to(s0[:, None, None], (sel.size, n, n)).copy()
            S, dS, nS = picard(lambda S: forward(s0, dual_of(S, tC)), start, xp=np)
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
