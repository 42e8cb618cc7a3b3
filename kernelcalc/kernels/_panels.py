r"""The Neural-ODE Goursat problems at long horizons on the composite collapsed-triangle panels: their solvers.

The grid (its $P$ panels of length $h=T/P$, the collapsed-triangle diagonal cells and the tensor Chebyshev cells off
the diagonal, the flat node layout and the resampling between grids) is :mod:`._panel_grid`; :class:`PanelGrid`,
:func:`panel_grid` and :func:`panel_count` are importable here too.

**Marching.** On a cell $[a,b]\times[c,d]$ the Goursat problem $\partial_t\partial_sS=\sigma_w^2C$ is
determined by the values on its lower and left edges:

$$S(t,s)=S(a,s)+S(t,c)-S(a,c)+\sigma_w^2\!\int_a^t\!\!\int_c^s C,$$

and $\Lambda$ likewise from its upper and right edges with $\int_t^b\int_s^d\dot C\Lambda$.  So the cells are
solved one row of cells at a time, forward for $S$ (rows $k=0..P-1$; in a row the cells $(k,0),\dots,(k,k)$
in order) and backward for $\Lambda$ (rows $P-1..0$; the diagonal cell first), each by Picard iteration of a
*local* map ($J\,C\,J^\top$ on a tensor cell, the triangle map $W$ on a diagonal one) whose contraction
$\sim\sigma_w^2h^2$ is strong: tens of sweeps over one row instead of tens of sweeps over all $O((Pm)^2)$
nodes with $O((Pm)^4)$ maps.  The self-kernel's diagonal $q(t)=S(t,t)$ lives in the diagonal cell of its
row, which is why a whole row is iterated together: each sweep evaluates $C$ on the whole row at the last
iterate (one call of the dual: a dear dual's price is per call as much as per value) and updates the row's cells
in order, each from the left edge its left neighbour got in the same sweep (Gauss–Seidel in the edges), so that a
sweep carries an edge across the whole row: about 14 sweeps per node at any $P$ (measured relu and elu, $P$ = 7 to
40; when each cell read its neighbour's edge of the last sweep, an edge moved one cell per sweep and the rows took
$\approx10+3k$ sweeps, 32-47 per node).  Edges shared by a diagonal and a tensor cell are interpolated: in the
collapsed variable $w$ (the diagonal cell's top row, analytic in $w$) or in $t$ (the tensor cell's column, a
Chebyshev interpolant; :mod:`._panel_grid`).

Cross-kernels (their diagonal $q$ fixed: no coupling inside a row) and the backward problem are marched by
**wavefronts** instead: the cells of one anti-diagonal $k+j=d$ depend only on those of $d\mp1$, so each is
iterated to its own fixed point from fixed edges (:func:`_solve_wavefront`, :func:`_backward_wavefront`; ~9 sweeps
per cell).  A cross-kernel solve can start from a guess (the same problem on another grid,
:meth:`PanelGrid.resample_nodes`).

**Accuracy.** The error decays geometrically in the per-cell degree $m$ (analytic data on every cell);
the caller measures it from the degree sequence ($|K_m-K_{m'}|$ estimates the coarser grid's error).
Measured in ``tests/test_long_horizon_panels.py`` against an independent trapezoid-plus-Richardson solve.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from ._panel_grid import PanelGrid, panel_count, panel_grid  # noqa: F401  (panel_count, panel_grid: importable here)
from ._triangle import change_floor
from ._triangle import changes as _change   # (per cell; _row_newton imports it from here)

__all__ = ["PanelGrid", "panel_grid", "solve", "backward", "panel_count"]


def _sandwich(A, X):
    """``A @ X @ A.T`` for a stack ``X`` (B, n, n) as two plain matrix products (numpy's stacked matmul of
    small matrices is several times slower)."""
    B, n, _ = X.shape
    Y = (X.reshape(B * n, n) @ A.T).reshape(B, n, n)                    # X A^T
    return (Y.transpose(0, 2, 1).reshape(B * n, n) @ A.T).reshape(B, n, n).transpose(0, 2, 1)


def _diag_base(f, Q):
    """The diagonal cell's values ``(B, m1, m1)`` without its source term, from its left edge ``f`` ``(B, m1)``
    ($S(t_k+\\tau, t_k)$ at the nodes) and the cell's quadrature ``Q``."""
    B, m1 = f.shape
    return (f @ Q.T).reshape(B, m1, m1) + f[:, :, None] - f[:, :1, None]


def _extrapolated_diagonal(prev, ones):
    r"""First guess of a row's diagonal from the last panel's ``prev`` ``(B, m1)``: $q(t_k+\tau)=q(t_k)^2/q(t_k-\tau)$
    (log-linear), or $q(t_k)$ where that is not finite and positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        guess = prev[:, -1:] ** 2 / prev[:, ::-1]
    return np.where(np.isfinite(guess) & (guess > 0) & (prev[:, -1:] > 0), guess, prev[:, -1:] * ones)


def _first_cells(tops, qk):
    """First guess of a row's tensor cells ``(B, k, m1, m1)``: each cell's top edge ``tops`` scaled by
    sqrt(q(t) / q(t_k)) of the row's diagonal guess ``qk`` (S(t, s) ~ sqrt(q(t)))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(qk / qk[:, :1])
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return tops[:, :, None, :] * scale[:, None, :, None]


def _row_sweep(J, source_C, X, tops, axis0, floor: float = 0.0):
    """One sweep of a row's tensor cells ``X`` ``(B, k, m1, m1)``: the increments ``J (.) J^T`` of the sources
    ``source_C`` on the old values, and the left edges of the sweep's cells carried cell after cell (Gauss-Seidel in
    the edges; C of the last sweep): a sweep carries an edge across the whole row, not one cell further (the last rows
    took 3k + 10 sweeps, as many calls of C; now about as many as one cell).  Returns ``(new X, its largest change)``
    (``tops``: the cells' top edges, ``axis0``: the row's first edge; ``floor``: :func:`_change`'s)."""
    B, k, m1 = X.shape[0], X.shape[1], X.shape[2]
    inc = _sandwich(J, source_C.reshape(B * k, m1, m1)).reshape(X.shape)
    new = np.empty_like(X)
    edge = axis0[:, 0]
    for j in range(k):
        new[:, j] = tops[:, j, None, :] + edge[:, :, None] - tops[:, j, None, :1] + inc[:, j]
        edge = new[:, j, :, -1]
    return new, float(np.max(_change(new.reshape(B * k, m1, m1), X.reshape(B * k, m1, m1), floor)))


def _diag_at(qd, Q, diag):
    """The diagonal cell's ``(q1, q2, c)`` node arrays ``(B, m1, m1)`` from its diagonal ``qd`` ``(B, m1)`` (q at the
    cell's nodes t, and at its nodes s by the cell's quadrature ``Q``) and its values ``diag``."""
    B, m1 = qd.shape
    return np.broadcast_to(qd[:, :, None], (B, m1, m1)), (qd @ Q.T).reshape(B, m1, m1), diag


def _row_tops(out, grid: PanelGrid, k: int):
    """The lower edges ``(B, k, m1)`` of row ``k``'s tensor cells, from row ``k - 1`` of ``out`` (its tensor cells'
    top edges, and its diagonal cell's in the variable w)."""
    B, m1 = out.shape[0], grid.m + 1
    below = out[:, _row_slice(grid, k - 1)].reshape(B, k - 1, m1, m1)[:, :, -1, :]   # cells (k-1, j < k-1)
    top_diag = out[:, grid.diag_slice(k - 1)].reshape(B, m1, m1)[:, -1, :] @ grid.E_top.T  # cell (k-1, k-1), in w
    return np.concatenate([below, top_diag[:, None, :]], axis=1)


def _continuous_diagonal(qs):
    """The diagonal ``(B, P m + 1)`` from its panels ``qs`` ``(B, P, m1)`` (shared end nodes once)."""
    return np.concatenate([qs[:, :, :-1].reshape(qs.shape[0], -1), qs[:, -1, -1:]], axis=1)


def _row_slice(grid: PanelGrid, k: int) -> slice:
    """The tensor cells (k, 0..k-1) of row ``k``: contiguous in the flat layout."""
    a = grid.P + k * (k - 1) // 2
    return slice(a * grid.cell, (a + k) * grid.cell)


def _one_thread():
    """One BLAS thread: the cell maps are products of small matrices (17 to 33 rows), which extra threads only
    slow down (measured on the loaded 2-core machine: 3.4 s single-threaded against 21 s threaded for one
    64-pair batch of 10 panels)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def solve(grid: PanelGrid, C_of, S0, source, q=None, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11, aux=None,
          guess=None):
    r"""The forward problem $S=S_0+\sigma_w^2\iint C(S)$ on ``grid`` for B problems of equal norm (``S0``:
    ``(B,)``), row of cells by row (module doc; the tensor cells of a row are updated together, the diagonal
    cell after them).  ``C_of(q1, q2, c)``: the dual kernel (numpy, broadcasting); ``source(C)``
    $=\sigma_w^2C$; ``q``: ``(B, P m + 1)`` the fixed diagonal (cross-kernels) or ``None`` (the self-kernel:
    $q(t)=S(t,t)$ iterated with its row).  Returns ``(S (B, points), q (B, P m + 1), change, sweeps)``: the
    largest relative change of the last sweep over the rows and the most sweeps of a row.  ``aux``: a tuple of
    ``(B, points)`` node arrays handed to ``C_of`` as a fourth argument, cut like ``c`` (the deficit form of
    near-parallel pairs).  ``guess``: ``(B, points)`` the first iterate of every cell of a cross-kernel solve (``q``
    given; e.g. the solution of the same problem on a coarser grid, :meth:`PanelGrid.resample_nodes`) in place of the
    cell's edges extended inward: the same fixed point, reached from closer (the anchored sweeps of a dear dual,
    :mod:`._anchored`, then need one exact evaluation per node where they took about four)."""
    if guess is not None and (q is None or grid.P == 1):
        raise ValueError("solve: a guess serves the wavefronts of a cross-kernel solve (q given, P > 1) only")
    with _one_thread():
        if q is not None and grid.P > 1:     # a fixed diagonal: the cells decouple into wavefronts
            return _solve_wavefront(grid, C_of, S0, source, q, sweeps_tol, max_sweeps, stagnation, aux, guess)
        return _solve(grid, C_of, S0, source, q, sweeps_tol, max_sweeps, stagnation, aux)


def backward(grid: PanelGrid, Cdot, LamT, source, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11):
    r"""The backward problem $\Lambda=\Lambda_T+\sigma_w^2\iint\dot C\Lambda$ on ``grid`` (``Cdot``: ``(B,
    points)``, ``LamT``: ``(B,)``; ``source(Cdot, Lam)`` $=\sigma_w^2\dot C\Lambda$), rows of cells from the
    last: the diagonal cell of a row first, then its tensor cells together.  Returns ``(Lambda (B, points),
    change, sweeps)``."""
    with _one_thread():
        if grid.P > 1:
            return _backward_wavefront(grid, Cdot, LamT, source, sweeps_tol, max_sweeps, stagnation)
        return _backward(grid, Cdot, LamT, source, sweeps_tol, max_sweeps, stagnation)


def _solve(grid: PanelGrid, C_of, S0, source, q=None, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11, aux=None):
    """The body of :func:`solve`."""
    S0 = np.asarray(S0, dtype=np.float64)
    B, m, P = S0.shape[0], grid.m, grid.P
    m1 = m + 1
    J, Q, WT = grid.J, grid.tri.Q, grid.tri.W.T
    out = np.empty((B, grid.points))
    qp = None if q is None else grid.split(np.asarray(q, dtype=np.float64))
    floor = change_floor(None if q is None else np.asarray(q, dtype=np.float64))
    qs = np.empty((B, P, m1))          # the diagonal per panel (self-kernel: as solved)
    worst, most = 0.0, 0
    ones = np.ones((B, m1))
    axis0 = S0[:, None, None] * np.ones((B, 1, m1))      # S(t, 0) = S0
    for k in range(P):
        # the lower edges of the row's cells, from the row below (fixed while the row is iterated)
        if k:
            tops = _row_tops(out, grid, k)
            qj = (qp[:, :k] if qp is not None else qs[:, :k])
        if qp is not None:
            qk = qp[:, k]
        elif k == 0:
            qk = S0[:, None] * ones
        else:   # the row's diagonal, first guess: q(t_k + tau) = q(t_k)^2 / q(t_k - tau) (log-linear from the last panel)
            qk = _extrapolated_diagonal(qs[:, k - 1], ones)
        # first guess of the tensor cells: S(t_k, s) at the correlation of the lower edge (S(t, s) ~ sqrt(q(t)), so that
        # the first sweeps ask the dual for covariances near those of the solution: a table of C keeps its
        # angle range narrow)
        X = _first_cells(tops, qk) if k else None
        diag = None
        delta, prev, sweeps = math.inf, math.inf, 0
        while sweeps < max_sweeps:
            changes = []
            C_diag = None
            if k:
                extra = () if aux is None else (tuple(a[:, _row_slice(grid, k)].reshape(X.shape) for a in aux),)
                at_tensor = (np.broadcast_to(qk[:, None, :, None], X.shape), np.broadcast_to(qj[:, :, None, :], X.shape),
                             X)
                if diag is not None and aux is None:
                    # the diagonal cell's C depends on the last sweep only (its diagonal and values): one call of C_of
                    # for the whole row (a dear dual's price is per call as much as per value; the same values)
                    qd = diag[:, :, 0] if qp is None else qk
                    C, C_diag = _joint(C_of, at_tensor, _diag_at(qd, Q, diag))
                else:
                    C = C_of(*at_tensor, *extra)
                X, change = _row_sweep(J, source(C), X, tops, axis0, floor)
                changes.append(change)
            f = S0[:, None] * ones if k == 0 else X[:, -1, :, -1]        # S(t_k + tau, t_k) at the nodes
            base = _diag_base(f, Q)
            if diag is None:
                diag = base.copy()
            if C_diag is None:
                qd = diag[:, :, 0] if qp is None else qk
                extra = () if aux is None else (tuple(a[:, grid.diag_slice(k)].reshape(B, m1, m1) for a in aux),)
                C_diag = C_of(*_diag_at(qd, Q, diag), *extra)
            new = base + (source(C_diag).reshape(B, -1) @ WT).reshape(B, m1, m1)
            changes.append(np.max(_change(new, diag, floor)))
            diag = new
            if qp is None:
                qk = diag[:, :, 0]
            sweeps += 1
            prev, delta = delta, float(max(changes))
            if delta <= sweeps_tol or (delta < stagnation and delta >= prev) or not math.isfinite(delta):
                break
        worst, most = max(worst, delta), max(most, sweeps)
        out[:, grid.diag_slice(k)] = diag.reshape(B, -1)
        if k:
            out[:, _row_slice(grid, k)] = X.reshape(B, -1)
        qs[:, k] = diag[:, :, 0] if qp is None else qp[:, k]
    return out, _continuous_diagonal(qs), worst, most



def _joint(C_of, *parts, extras=None):
    """``C_of`` at several sets of ``(q1, q2, c)`` node arrays (leading axis: the B problems) in one call, joined per
    problem (``(B, n)``: a node-indexed dual's layout), split back to each set's shape.  ``extras``: per set, the tuple
    of node arrays handed to ``C_of`` after ``c`` (``aux`` of :func:`solve`), joined alike."""
    B = np.shape(parts[0][2])[0]
    cat = lambda arrays: np.concatenate([np.reshape(a, (B, -1)) for a in arrays], axis=1)   # noqa: E731
    args = [cat([np.broadcast_to(p[i], np.shape(p[2])) for p in parts]) for i in range(3)]
    if extras:
        args += [tuple(cat(group) for group in zip(*(e[0] for e in extras)))]
    out = np.asarray(C_of(*args))
    cuts = np.cumsum([np.size(p[2]) // B for p in parts])[:-1]
    return tuple(o.reshape(np.shape(p[2])) for o, p in zip(np.split(out, cuts, axis=1), parts))


def _store_wavefront(grid: PanelGrid, out, X, cells, diag, kd) -> None:
    """Write a solved wavefront into the flat node array ``out`` (B, points): its tensor cells ``X`` (B, cells,
    m+1, m+1) at ``cells[i] = (k, j)`` and its diagonal cell ``diag`` (B, m+1, m+1) at ``(kd, kd)`` (either may
    be ``None``)."""
    B = out.shape[0]
    if X is not None:
        for i, (k, j) in enumerate(cells):
            out[:, grid.tensor_slice(k, j)] = X[:, i].reshape(B, -1)
    if diag is not None:
        out[:, grid.diag_slice(kd)] = diag.reshape(B, -1)


def _solve_wavefront(grid: PanelGrid, C_of, S0, source, q, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11,
                     aux=None, guess=None):
    r""":func:`solve` of cross-kernels (the diagonal ``q`` fixed) by wavefronts of cells.

    With $q$ fixed, a cell's Goursat problem depends only on its lower and left edges: the tensor cell $(k,j)$
    on the cells $(k-1,j)$ (or the diagonal cell $(k-1,k-1)$ for $j=k-1$) and $(k,j-1)$, the diagonal cell
    $(k,k)$ on $(k,k-1)$ alone.  So the cells of one anti-diagonal $k+j=d$ are independent once those of
    $d-1$ are solved, and each is iterated to its own fixed point from fixed edges (a Volterra map on one
    cell: factorial convergence, ~9 sweeps at $\sigma_wh=1$).  Marching whole rows (:func:`_solve`, needed for
    the self-kernel, whose diagonal couples its row) iterates the row's cells together, about 14 sweeps.  Same
    fixed point (to rounding), same returns.  A dual with ``joint_calls`` (:class:`._anchored.AnchoredDual`) is
    asked once per sweep for the wavefront's tensor cells and its diagonal cell together."""
    S0 = np.asarray(S0, dtype=np.float64)
    B, m, P = S0.shape[0], grid.m, grid.P
    m1 = m + 1
    J, E_top, Q, WT = grid.J, grid.E_top, grid.tri.Q, grid.tri.W.T
    out = np.empty((B, grid.points))
    qp = grid.split(np.asarray(q, dtype=np.float64))
    floor = change_floor(np.asarray(q, dtype=np.float64))
    ones = np.ones((B, m1))
    worst, most = 0.0, 0

    def cell(k, j):
        return out[:, grid.diag_slice(k) if j == k else grid.tensor_slice(k, j)].reshape(B, m1, m1)

    for d in range(2 * P - 1):
        ks = [k for k in range((d + 1) // 2, min(d, P - 1) + 1) if d - k < k]       # tensor cells (k, d - k)
        kd = d // 2 if d % 2 == 0 else None                                           # the diagonal cell (d/2, d/2)
        X = diag = None
        if ks:
            js = [d - k for k in ks]
            tops = np.stack([cell(k - 1, j)[:, -1, :] if j < k - 1 else cell(k - 1, k - 1)[:, -1, :] @ E_top.T
                             for k, j in zip(ks, js)], axis=1)                          # S(t_k, s): (B, n, m1)
            left = np.stack([S0[:, None] * ones if j == 0 else cell(k, j - 1)[:, :, -1] for k, j in zip(ks, js)],
                            axis=1)                                                     # S(t, t_j)
            base_t = tops[:, :, None, :] + left[:, :, :, None] - tops[:, :, None, :1]
            q1, q2 = qp[:, ks][:, :, :, None], qp[:, js][:, :, None, :]
            extra_t = ()
            if aux is None and hasattr(C_of, "at_variances"):      # variance parts once per wavefront
                C_t = C_of.at_variances(q1, q2)
            else:
                extra_t = () if aux is None else (tuple(np.stack(
                    [a[:, grid.tensor_slice(k, j)].reshape(B, m1, m1) for k, j in zip(ks, js)], axis=1) for a in aux),)
                q1, q2 = np.broadcast_to(q1, base_t.shape), np.broadcast_to(q2, base_t.shape)
                C_t = (lambda q1, q2, e: lambda X: C_of(q1, q2, X, *e))(q1, q2, extra_t)
            X = base_t.copy() if guess is None else np.stack(
                [guess[:, grid.tensor_slice(k, j)].reshape(B, m1, m1) for k, j in zip(ks, js)], axis=1)
        if kd is not None:
            f = S0[:, None] * ones if kd == 0 else cell(kd, kd - 1)[:, :, -1]           # S(t_k + tau, t_k)
            base_d = _diag_base(f, Q)
            qd = qp[:, kd]
            qd1, qd2, _ = _diag_at(qd, Q, None)
            if aux is None and hasattr(C_of, "at_variances"):
                C_d = C_of.at_variances(qd1, qd2)
            else:
                extra_d = () if aux is None else (tuple(a[:, grid.diag_slice(kd)].reshape(B, m1, m1) for a in aux),)
                C_d = (lambda e: lambda D: C_of(qd1, qd2, D, *e))(extra_d)
            diag = base_d.copy() if guess is None else guess[:, grid.diag_slice(kd)].reshape(B, m1, m1).copy()
        joint = None
        if X is not None and diag is not None and getattr(C_of, "joint_calls", False):
            # a dual priced per call (anchored sweeps: each call an exact evaluation of its nodes next to rho = 1, and
            # of all of them at an anchor): the wavefront's tensor cells and diagonal cell in one call per sweep
            def _both(X, D, q1=q1, q2=q2, e_t=extra_t, e_d=extra_d):
                return _joint(C_of, (q1, q2, X), (qd1, qd2, D), extras=(e_t, e_d) if e_t else None)
            joint = _both
        delta, prev, sweeps = math.inf, math.inf, 0
        while sweeps < max_sweeps:
            changes = []
            anchors = getattr(C_of, "anchors", 0)
            Ct, Cd = joint(X, diag) if joint is not None else (None, None)
            if X is not None:
                C = C_t(X) if Ct is None else Ct
                new = base_t + _sandwich(J, source(C).reshape(-1, m1, m1)).reshape(X.shape)
                changes.append(np.max(_change(new.reshape(-1, m1, m1), X.reshape(-1, m1, m1), floor)))
                X = new
            if diag is not None:
                C = C_d(diag) if Cd is None else Cd
                new = base_d + (source(C).reshape(B, -1) @ WT).reshape(B, m1, m1)
                changes.append(np.max(_change(new, diag, floor)))
                diag = new
            sweeps += 1
            prev, delta = delta, float(max(changes))
            # a sweep from a fresh anchor of an anchored dual (:mod:`._anchored`) moves by the last linear model's own
            # error, which may exceed the change of the sweep before: not a stagnation (stopping there left the solve
            # 1e-12 off, measured: the model then anchored at the last iterate passes its residual check)
            fresh = getattr(C_of, "anchors", 0) != anchors
            if delta <= sweeps_tol or (delta < stagnation and delta >= prev and not fresh) or not math.isfinite(delta):
                break
        worst, most = max(worst, delta), max(most, sweeps)
        _store_wavefront(grid, out, X, [(k, d - k) for k in ks], diag, kd)
    qc = np.asarray(q, dtype=np.float64)
    return out, qc, worst, most


def _backward_arrays(grid: PanelGrid, LamT):
    """What both backward solvers start from: ``(LamT, B, m + 1, P, Jt, Q, V^T, out, ones)`` (``out`` the
    ``(B, points)`` solution to fill, ``ones`` ``(B, m + 1)``)."""
    LamT = np.asarray(LamT, dtype=np.float64)
    B, m1 = LamT.shape[0], grid.m + 1
    return (LamT, B, m1, grid.P, grid.Jt, grid.tri.Q, grid.tri.V.T, np.empty((B, grid.points)),
            np.ones((B, m1)))


def _backward(grid: PanelGrid, Cdot, LamT, source, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11):
    """The body of :func:`backward`."""
    LamT, B, m1, P, Jt, Q, VT, out, ones = _backward_arrays(grid, LamT)
    worst, most = 0.0, 0

    def iterate(step, X):
        delta, prev, sweeps = math.inf, math.inf, 0
        while sweeps < max_sweeps:
            new = step(X)
            prev, delta = delta, float(np.max(_change(new.reshape(B, -1), X.reshape(B, -1))))
            X = new
            sweeps += 1
            if delta <= sweeps_tol or (delta < stagnation and delta >= prev) or not math.isfinite(delta):
                break
        return X, delta, sweeps

    for k in range(P - 1, -1, -1):
        above = None if k == P - 1 else out[:, _row_slice(grid, k + 1)].reshape(B, k + 1, m1, m1)[:, :, 0, :]
        g = LamT[:, None] * ones if above is None else above[:, k]                   # Lambda(t_{k+1}, t_k + tau)
        base_d = (g @ Q.T).reshape(B, m1, m1) + g[:, :, None] - g[:, -1:, None]
        Cd_d = Cdot[:, grid.diag_slice(k)].reshape(B, m1, m1)
        diag, d1, n1 = iterate(lambda L: base_d + (source(Cd_d, L).reshape(B, -1) @ VT).reshape(B, m1, m1), base_d)
        worst, most = max(worst, d1), max(most, n1)
        out[:, grid.diag_slice(k)] = diag.reshape(B, -1)
        if not k:
            continue
        tops = LamT[:, None, None] * np.ones((B, k, m1)) if above is None else above[:, :k]
        Cd_t = Cdot[:, _row_slice(grid, k)].reshape(B, k, m1, m1)
        edge = diag[:, None, :, -1]                                                    # Lambda(t, t_k)

        def step(X):
            right = np.concatenate([X[:, 1:, :, 0], edge], axis=1)                    # Lambda(t, t_{j+1})
            base = tops[:, :, None, :] + right[:, :, :, None] - tops[:, :, None, -1:]
            return base + _sandwich(Jt, source(Cd_t, X).reshape(B * k, m1, m1)).reshape(X.shape)

        X, d2, n2 = iterate(step, np.broadcast_to(tops[:, :, None, :], (B, k, m1, m1)).copy())
        worst, most = max(worst, d2), max(most, n2)
        out[:, _row_slice(grid, k)] = X.reshape(B, -1)
    return out, worst, most


def _backward_wavefront(grid: PanelGrid, Cdot, LamT, source, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11):
    r""":func:`backward` by wavefronts of cells (as :func:`_solve_wavefront`, from the last anti-diagonal): the
    cell $(k,j)$ needs only its upper edge (the cell $(k+1,j)$, or $\Lambda_T$ on the last row) and its right
    edge (the cell $(k,j+1)$, or the diagonal cell $(k,k)$ for $j=k-1$), so the cells of one anti-diagonal
    $k+j=d$ are iterated together, each from fixed edges (:func:`_backward` iterates a row's tensor cells
    together, and a sweep carries a right edge only one cell further).  Same fixed point, same returns."""
    LamT, B, m1, P, Jt, Q, VT, out, ones = _backward_arrays(grid, LamT)
    worst, most = 0.0, 0

    def cell(k, j):
        return out[:, grid.diag_slice(k) if j == k else grid.tensor_slice(k, j)].reshape(B, m1, m1)

    for d in range(2 * P - 2, -1, -1):
        ks = [k for k in range((d + 1) // 2, min(d, P - 1) + 1) if d - k < k]       # tensor cells (k, d - k)
        kd = d // 2 if d % 2 == 0 else None
        X = diag = None
        if ks:
            js = [d - k for k in ks]
            tops = np.stack([LamT[:, None] * ones if k == P - 1 else cell(k + 1, j)[:, 0, :] for k, j in zip(ks, js)],
                            axis=1)                                                     # Lambda(t_{k+1}, s)
            right = np.stack([cell(k, k)[:, :, -1] if j == k - 1 else cell(k, j + 1)[:, :, 0] for k, j in zip(ks, js)],
                             axis=1)                                                    # Lambda(t, t_{j+1})
            base_t = tops[:, :, None, :] + right[:, :, :, None] - tops[:, :, None, -1:]
            Cd_t = np.stack([Cdot[:, grid.tensor_slice(k, j)].reshape(B, m1, m1) for k, j in zip(ks, js)], axis=1)
            X = base_t.copy()
        if kd is not None:
            g = LamT[:, None] * ones if kd == P - 1 else cell(kd + 1, kd)[:, 0, :]        # Lambda(t_{k+1}, t_k + tau)
            base_d = (g @ Q.T).reshape(B, m1, m1) + g[:, :, None] - g[:, -1:, None]
            Cd_d = Cdot[:, grid.diag_slice(kd)].reshape(B, m1, m1)
            diag = base_d.copy()
        delta, prev, sweeps = math.inf, math.inf, 0
        while sweeps < max_sweeps:
            changes = []
            if X is not None:
                new = base_t + _sandwich(Jt, source(Cd_t, X).reshape(-1, m1, m1)).reshape(X.shape)
                changes.append(np.max(_change(new.reshape(B, -1), X.reshape(B, -1))))
                X = new
            if diag is not None:
                new = base_d + (source(Cd_d, diag).reshape(B, -1) @ VT).reshape(B, m1, m1)
                changes.append(np.max(_change(new.reshape(B, -1), diag.reshape(B, -1))))
                diag = new
            sweeps += 1
            prev, delta = delta, float(max(changes))
            if delta <= sweeps_tol or (delta < stagnation and delta >= prev) or not math.isfinite(delta):
                break
        worst, most = max(worst, delta), max(most, sweeps)
        _store_wavefront(grid, out, X, [(k, d - k) for k in ks], diag, kd)
    return out, worst, most
