r"""The self-kernel's row march on the panels with a dear dual: Newton-chord sweeps between exact anchors.

The row march of :func:`._panels.solve` (no fixed diagonal: the self-kernel, $q(t)=S(t,t)$ iterated with its row of
cells) takes about 15 Picard sweeps per row (a contraction of ~0.1 per sweep at $\sigma_wh=1$), each an exact
evaluation of the dual at every node of the row: 1.3e5 evaluations of the large-$q$ rule of softplus at
$\sigma_wT=10$ (degree 12), almost all of the solve's time.  Here a row's sweep asks the dual exactly only at an
*anchor* $(q_1^a,q_2^a,c^a)$ (every node of the row) and answers the sweeps that follow with the linear model

$$C\approx C(q_1^a,q_2^a,c^a)+\dot C\,(c-c^a)+\partial_{q_1}C\,(q_1-q_1^a)+\partial_{q_2}C\,(q_2-q_2^a),$$

$\partial C/\partial c=\dot C$ by Price's theorem (exact, evaluated with $C$), the variance derivatives by forward
differences (relative step ``_EPS``; the tensor cells' $q_2=q(s)$ is the rows' below, fixed, so only the diagonal
cell's nodes need $\partial_{q_2}$), taken again at each anchor until the row's exact change falls below ``_KEEP_G``
(then the last ones serve: their error, of the size of that anchor's distance, only enters multiplied by the step).
Each anchor roughly squares the error (the chord form of Newton's method, as :mod:`._anchored` for the
cross-kernels, with the row's own diagonal moving).  The linear sweeps stop when their step falls below the square of
the distance from the anchor (the model's own error) or stops falling; then the row re-anchors at its iterate, and
the exact sweep from that anchor is a plain sweep of the row march: the row stops on its change exactly as the row
march does (``sweeps_tol``, or stagnation below ``stagnation``), so the fixed point is the same to rounding.  An
anchor whose exact change is already below ``_PLAIN`` takes no model: plain exact sweeps finish the row.

The row starts from the row march's first guess (the diagonal $q$ extrapolated log-linearly from the last row, the
tensor cells their lower edges scaled by $\sqrt{q}$) with the diagonal cell the last row's scaled by the extrapolated
$q$, and anchors there at once (no plain first sweep).  Measured (softplus $\sigma_wT=10$, $P=10$, $m=12$): four to
five anchors per row, 6.0e4 exact evaluations (with the differences; 6.9e4 padded to the chunks of the rule) where the
row march took 1.31e5 (1.56e5 padded), 0.4 s of CPU against 0.9 s; the solution within 7e-16 of the row march's
(relative to its largest value).
"""

from __future__ import annotations

import math

import numpy as np

from ._panel_grid import PanelGrid
from ._panels import (_change, _continuous_diagonal, _diag_at, _diag_base, _extrapolated_diagonal, _first_cells,
                      _one_thread, _row_slice, _row_sweep, _row_tops)

__all__ = ["solve_self"]

_EPS = 1e-7          # relative step of the variance differences
_PLAIN = 1e-13       # an exact sweep's change below this: plain exact sweeps finish the row (no differences)
_KEEP_G = 1e-8      # an exact sweep's change below this: the variance derivatives of the last anchor are kept
_SETTLE = 0.01       # linear sweeps while their step exceeds this times the squared distance from the anchor


def solve_self(grid: PanelGrid, exact, S0, source, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11):
    r"""The self-kernel on the panels ``grid`` (the row march of :func:`._panels.solve` with ``q=None``) by
    Newton-chord sweeps (module doc).  ``exact(q1, q2, c)`` returns $(C,\dot C)$ (numpy, flat arrays of equal
    shape); ``source(C)`` $=\sigma_w^2C$.  Returns ``(S (B, points), q (B, P m + 1), change, sweeps)`` as
    :func:`._panels.solve` (``sweeps``: the most sweeps of a row, exact and linear)."""
    with _one_thread():
        return _solve_self(grid, exact, S0, source, sweeps_tol, max_sweeps, stagnation)


def _solve_self(grid, exact, S0, source, sweeps_tol, max_sweeps, stagnation):
    S0 = np.asarray(S0, dtype=np.float64)
    B, m, P = S0.shape[0], grid.m, grid.P
    m1 = m + 1
    J, Q, WT = grid.J, grid.tri.Q, grid.tri.W.T
    out = np.empty((B, grid.points))
    qs = np.empty((B, P, m1))
    worst, most = 0.0, 0
    ones = np.ones((B, m1))
    axis0 = S0[:, None, None] * np.ones((B, 1, m1))

    for k in range(P):
        if k:
            tops = _row_tops(out, grid, k)
            qj = qs[:, :k]
            qk = _extrapolated_diagonal(qs[:, k - 1], ones)
            X = _first_cells(tops, qk)
        else:
            X = None

        def variances(X, diag):
            """The row's ``(q1, q2, c)`` flat per problem ``(B, n)``: its tensor cells, then its diagonal cell."""
            qd = diag[:, :, 0]
            parts = [(np.broadcast_to(qd[:, None, :, None], X.shape), np.broadcast_to(qj[:, :, None, :], X.shape),
                      X)] if X is not None else []
            parts.append(_diag_at(qd, Q, diag))
            return tuple(np.concatenate([np.reshape(p[i], (B, -1)) for p in parts], axis=1) for i in range(3))

        nt = 0 if X is None else X[0].size                 # tensor nodes per problem

        def sweep(X, diag, C):
            """One sweep of the row from ``(X, diag)`` with ``C`` ``(B, n)`` its dual values there (the row march's
            sweep: tensor cells with Gauss-Seidel edges, then the diagonal cell from the new edge)."""
            changes = []
            if X is not None:
                X, change = _row_sweep(J, source(C[:, :nt]), X, tops, axis0)
                changes.append(change)
            f = S0[:, None] * ones if k == 0 else X[:, -1, :, -1]
            new = _diag_base(f, Q) + (source(C[:, nt:].reshape(B, m1, m1)).reshape(B, -1) @ WT).reshape(B, m1, m1)
            changes.append(np.max(_change(new, diag)))
            return X, new, float(max(changes))

        f = S0[:, None] * ones if k == 0 else X[:, -1, :, -1]
        diag = _diag_base(f, Q)
        if k:
            # the diagonal cell, first guess: the last row's scaled by the first guess of the row's diagonal
            last = out[:, grid.diag_slice(k - 1)].reshape(B, m1, m1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = qk / qs[:, k - 1]
            if np.all(np.isfinite(ratio)) and np.all(ratio > 0):
                diag = last * ratio[:, :, None]
        sweeps, delta, prev_exact = 0, math.inf, math.inf
        model = G = None
        while sweeps < max_sweeps:
            q1, q2, c = variances(X, diag)
            if model is None:                    # an anchor: exact values, a plain sweep
                n = q1.shape[1]
                h1, h2 = _step(q1), _step(q2[:, nt:])
                # the row's first anchor (far from the fixed point: its differences will be needed) takes them in the
                # same call as its values: one call, one padding of the dual's chunks (fusing them at later anchors
                # too, measured: 1.8 % more padded evaluations)
                fuse = sweeps == 0
                if fuse:
                    C, Cd = exact(np.concatenate([q1, q1 + h1, q1[:, nt:]], axis=1),
                                  np.concatenate([q2, q2, q2[:, nt:] + h2], axis=1),
                                  np.concatenate([c, c, c[:, nt:]], axis=1))
                    Cp, C, Cd = C[:, n:], C[:, :n], Cd[:, :n]
                else:
                    C, Cd = exact(q1, q2, c)
                X_new, diag_new, delta = sweep(X, diag, C)
                sweeps += 1
                done = (delta <= sweeps_tol or (delta < stagnation and delta >= prev_exact)
                        or not math.isfinite(delta))
                prev_exact = delta
                X, diag = X_new, diag_new
                if done:
                    break
                if delta > _PLAIN and not fuse and G is not None and delta <= _KEEP_G:
                    model = (q1, q2, c, C, Cd, G[0], G[1])      # the last differences: chord in the variances
                elif delta > _PLAIN:
                    # the variance derivatives by forward differences: q1 at every node, q2 at the diagonal cell's
                    if not fuse:
                        Cp = exact(np.concatenate([q1 + h1, q1[:, nt:]], axis=1),
                                   np.concatenate([q2, q2[:, nt:] + h2], axis=1),
                                   np.concatenate([c, c[:, nt:]], axis=1))[0]
                    G1 = (Cp[:, :n] - C) / h1
                    G2 = np.zeros_like(C)
                    G2[:, nt:] = (Cp[:, n:] - C[:, nt:]) / h2
                    G = (G1, G2)
                    model = (q1, q2, c, C, Cd, G1, G2)
                anchor_scale = max(float(np.max(np.abs(c))), 1e-300)
                last_step = math.inf
                continue
            a1, a2, ac, aC, aCd, G1, G2 = model
            C = aC + aCd * (c - ac) + G1 * (q1 - a1) + G2 * (q2 - a2)
            far = float(np.max(np.abs(c - ac))) / anchor_scale
            X_new, diag_new, step = sweep(X, diag, C)
            sweeps += 1
            X, diag = X_new, diag_new
            if not math.isfinite(step):
                delta = step
                break
            # settled at the model's fixed point (or no longer moving toward it): re-anchor
            if step <= max(_SETTLE * far * far, 1e-16) or step >= last_step:
                model = None
            last_step = step
        worst, most = max(worst, delta), max(most, sweeps)
        out[:, grid.diag_slice(k)] = diag.reshape(B, -1)
        if k:
            out[:, _row_slice(grid, k)] = X.reshape(B, -1)
        qs[:, k] = diag[:, :, 0]
    return out, _continuous_diagonal(qs), worst, most


def _step(q):
    """The forward differences' steps ``(B, n)`` for the variances ``q``: ``_EPS`` relative, at least ``_EPS * 1e-3`` of
    the row's largest (a variance at or near zero: a zero input without bias), and ``_EPS`` where the row is all zero."""
    top = np.max(np.abs(q), axis=1, keepdims=True)
    ref = np.maximum(np.abs(q), 1e-3 * top)
    return _EPS * np.where(ref > 0, ref, 1.0)
