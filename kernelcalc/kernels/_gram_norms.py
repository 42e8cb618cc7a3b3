r"""The norm-interpolation Gram plan: many distinct input norms (data off the sphere).

Writing $v=x\cdot x/d$, $t=\log v$ and $\theta=\arccos\big(x\cdot y/(d\sqrt{v_xv_y})\big)$, the kernel is
$F(v_x,v_y,\theta)$.  Every node of an interpolant is a pair solve (a Neural ODE solve costs ~0.3-0.5 ms, and
every distinct norm its own self-kernel solve, ~30 ms), so the plan is built to need few of them:

- **the angle window.**  $\theta$ is interpolated by a Chebyshev series only on the window
  $[\tfrac\pi2-h,\tfrac\pi2+h]$ that holds the angles of the pairs actually present (the diagonal of a
  symmetric Gram excluded; measured from the data, :meth:`NormInterpPlan._window`).  The hard part of a
  kernel in $\theta$ is near $\theta=0$, where the NTK of tanh-like activations peaks, the sharper the larger
  the variance $q$; in $d=10$ the closest distinct rows are ~0.2 rad apart, and the degree needed falls from
  47 to 31 (node tanh at $v=8$; softplus 27 to 22).  The window is symmetric, so the nodes of $\theta$ and
  $\pi-\theta$ still pair up (odd kernels, which then sum their odd Chebyshev orders only).  The diagonal
  $F(v,v,0)$ of a symmetric Gram is a function of one variable: its own Chebyshev interpolant in $t$
  (:meth:`NormInterpPlan._line`).  The few closest pairs (16, duplicate rows among them; none when the 17th is
  about as close as the closest, e.g. 17 duplicate pairs, when the window is $[0,\pi]$) are left out of the
  window and solved directly (:mod:`._gram_norms_window`): the window's edge moves from the closest pair to the
  17th (|cos theta| 0.98 -> 0.95 on 2000 standardised rows in $d=10$; node tanh: degree 33 -> 27).  A table whose
  series in $\theta$ is still not resolved (its estimate past 5 tol: the corners' degree too low for pairs inside
  the norm range) takes twice the degree, its nodes nested.
- **a low-rank basis in the norm.**  As a function of $t_x$, $F(t_x,t_y,\theta)$ lies, for all $(t_y,\theta)$,
  close to a space of small dimension $r$ (measured at 1e-11 on norms 0.13..8: $r=10$ for the softplus
  Neural ODE, 14 for tanh, where a Chebyshev interpolant in $t$ needs degree 16 and 19).  The plan samples
  columns $t_x\mapsto F(t_x,t_y,\theta)$ on Lobatto points in $t$ (:meth:`NormInterpPlan._columns`: first
  $t_y=t_{\min},t_{\max}$ at three angles and three interior $t_y$ at both edges of the window, whose Chebyshev tail
  gives the degree $m$ in $t$ and its error; then random $(t_y,\theta)$, the window coordinate
  arcsine-distributed, in batches until a batch lies in the span of the others to ``tol``/4), takes the
  orthonormal basis $U$ of their singular values above ``tol``/8, and $r$ (+ the two ends) *skeleton* norms
  $P$ by pivoted QR of $U^T$ (empirical interpolation).  Then
  $F(t_x,t_y,\theta)\approx\sum_{p,q\in P}B_p(t_x)F(t_p,t_q,\theta)B_q(t_y)$ with $B(t)=\ell(t)\,U\,U_P^{+}$
  ($\ell$: the Lagrange basis of the Lobatto points): the table costs $\tfrac12|P|(|P|+1)(R+1)$ solves instead of
  $\tfrac12(m+1)(m+2)(R+1)$.  Its error is measured at held-out norm pairs (Lobatto points off the skeleton,
  seven angles with both edges of the window, and every such point with itself at the edges; three times the
  measured value, plus the tail in $t$, enter the estimate).  A basis that misses takes more columns and a lower
  threshold, keeping the skeleton norms it had (their table's pairs are solved).  Near $\theta=0$ a kinked
  $\phi$'s $F$ turns sharp in the norms as $t_x$ crosses $t_y$, the sharper the closer the window's edge: the edge
  columns set the degree there, the edge and equal-norm held-out pairs measure it (relu6, 2000 standardised rows,
  before: 8e-9 inside the table at the edge and equal norms, 8.6e-10 at input pairs, estimate 5.5e-10).  When the basis
  does not pay (its table above 0.8 of the grid's, :func:`_basis_pays`) the plan takes the tensor grid of degree
  $m$ (the same code, $U=I$).

The degree $R$ in $\theta$ comes from the corners of the norm range.  Every solve of the plan is at the
Lobatto norms in $t$ or at the check rows' norms: the plan hands them to the pair function first
(``prepare``: the Neural ODE / ResNet solver solves their self-kernels in one batch) and, before the table,
the number of solves to come (``plan_pairs``: the solver picks numpy or one compilation by their total).  An
entry costs $R+1$ small matrix-product terms of size $|P|$ (odd kernels $(R+1)/2$).  Checked against direct
evaluations at actual input pairs of extreme norms.  Zero rows: a 1-D interpolant of $F(0, v, 0)$.
"""

from __future__ import annotations

import math

import numpy as np

from .._blas import one_blas_thread
from .._validation import accuracy_shortfall
from ._gram_base import R_MAX, R_START, _TablePlan
from ._gram_norms_checks import NormPlanChecks
from ._gram_norms_window import NormWindow
from ._interp import chebyshev_coefficients, interval_weights, lobatto, pivot_columns

__all__ = ["NormInterpPlan"]

_OFF_SPHERE_TOL = 1e-10    # accuracy floor of the norm interpolation (the kernels' accuracy claim)
#: degrees of the Lobatto points in t = log v (doubled while the columns' tail is unresolved).  96: rows in d = 2 reach
#: norms 1e-4 (a row near the mean), where a kinked phi's kernel turns smooth like exp(-u^2 / 2q) of its breakpoints:
#: hardtanh on 100 standardised rows, the tail at 48 was 4.3e-9, at 96 3.6e-11 (rank 26 -> 27)
_T_DEGREES = (12, 24, 48, 96)
_T_WIDE = 1.5                 # a norm range wider than this in log v starts at degree 24
_R_MIN = 8                   # fewest theta intervals of the norm-interpolation grid
_NORM_CHUNK_ENTRIES = 24000     # norm interpolation: entries per chunk (its temporaries stay in cache)
_BASIS_BATCH = 4             # random columns per batch of the norm basis
_LINE_M0, _LINE_MAX = 16, 256    # degrees of the 1-D interpolants (diagonal, zero rows)


def _basis_pays(K: int, m: int) -> bool:
    r"""Whether a first basis of $K$ skeleton norms pays against the tensor grid of degree $m$: its table's
    $\tfrac12K(K+1)$ norm pairs at most 0.8 of the grid's $\tfrac12(m+1)(m+2)$ (its held-out check, 42 solves, and the
    risk of a second attempt on the other side).  Measured (hardtanh, 2000 standardised rows, $m=25$, $K=20$): the
    basis 3.4 s, the grid 4.6 s (the rule was $K\le\tfrac34(m+1)$)."""
    return K * (K + 1) <= 0.8 * (m + 1) * (m + 2)


def _envelope(coef: np.ndarray, scale: np.ndarray, axis: int = 0) -> np.ndarray:
    """Largest |Chebyshev coefficient| of every degree along ``axis`` over all other axes, relative to
    ``scale`` (the largest |value| of each output, the last axis)."""
    c = np.abs(np.moveaxis(coef, axis, 0)) / np.maximum(scale, 1e-300)
    return np.max(c.reshape(c.shape[0], -1), axis=1)


def _tail(env: np.ndarray) -> float:
    r"""Estimated truncation error beyond the highest degree of a Chebyshev series: twice the size $e_1$
    of its highest coefficients times $\rho/(1-\rho)$, $\rho$ the decay per degree measured over its
    last four (in pairs, since for a function with a parity, e.g. odd in $\theta-\pi/2$ for an odd
    activation, every other coefficient vanishes).  A series that has not started to decay
    ($\rho > 0.9$) gets $20e_1$."""
    if env.size < 4:
        return 2.0 * float(np.max(env))
    e1, e0 = float(np.max(env[-2:])), float(np.max(env[-4:-2]))
    rho = math.sqrt(e1 / e0) if e0 > 0 else 0.0
    return 2.0 * e1 * (min(rho, 0.9) / (1.0 - min(rho, 0.9)))


def _degree_for(env: np.ndarray, target: float, minimum: int = 1) -> tuple[int, float]:
    r"""Smallest degree $n\ge$ ``minimum`` whose truncation estimate $2\sum_{k>n}$ ``env``$_k$ is below
    ``target`` (the last coefficients of a resolved series are rounding noise); ``(n, estimate)``.
    When none is, the full degree with the estimate $2\,$``env``$_{-1}$."""
    R = env.size - 1
    tail = 2.0 * np.concatenate([np.cumsum(env[::-1])[::-1][1:], [0.0]])       # tail[n] = 2 sum_{k>n}
    ok = [n for n in range(min(minimum, R), R) if tail[n] <= target]
    if ok:
        return ok[0], float(tail[ok[0]])
    return R, float(2.0 * env[-1])


class NormInterpPlan(NormWindow, NormPlanChecks, _TablePlan):
    r"""Many distinct norms: a low-rank basis in $t=\log v$ times a Chebyshev series in $\theta$ on the
    window of the angles present (module doc).

    **Cost (measured, N = 2000 standardised rows, d = 10, norms 0.13..8, busy 2-core machine).**  The tensor
    grid of the previous plan took $\tfrac12L(L+1)(R+1)$ pair solves: 4930 for the softplus Neural ODE
    ($L=17$, $R=28$), 11 876 for tanh ($L=21$, $R=50$).  This plan: softplus 1824 (rank 10), tanh 3947 (rank 14,
    $R=32$), counted before the odd symmetry halves them and after the solves the stages share (:meth:`_call`);
    the tanh MLP 2996 (was 7748).  Tried and measured, not taken: a per-norm-pair degree in $\theta$ (17-31 for
    tanh: at most 30 % fewer solves, not nested); a Cayley variable in place of $\log v$ (degree 27-31 against
    17-19); a two-level combination grid in $(t,\theta)$ (its mixed term missed tol for tanh); random columns in
    batches of two (accepted a basis too early: held-out error 4e-9); random columns at the table's angles (rank
    15 and twice the random batches).
    """

    def __init__(self, a, b, same, pair_fn, tol, strict):
        super().__init__(a, b, same, {})
        self._memo = {}            # (smaller norm, larger norm, x.y/d) -> F: the plan's solves (_call)
        self.tol = tol = max(tol, _OFF_SPHERE_TOL)
        self.rng = np.random.default_rng(0)
        norms = np.concatenate([self.na, self.nb])
        nz = norms[norms > 0]
        self.t_lo, self.t_hi = float(np.log(nz.min())), float(np.log(nz.max()))
        self.v_lo, self.v_hi = v_lo, v_hi = float(nz.min()), float(nz.max())
        self.check_rows = self._check_rows()
        checked_norms = np.concatenate([self.na[self.check_rows[0]], self.nb[self.check_rows[1]]])
        # the per-norm work (a Neural ODE's self-kernels) of the Lobatto points in t and the check rows in one
        # batch: every solve of the plan is at these norms (unless the degree in t doubles)
        self.levels = [d for d in _T_DEGREES if d >= (24 if self.t_hi - self.t_lo > _T_WIDE else 12)]
        with self._threads():        # (a product with an inner dimension d: BLAS threads only add overhead)
            self.half, self.direct = self._window(getattr(pair_fn, "window_correlation_cap", None))
        prepare = getattr(pair_fn, "prepare", None)
        if prepare is not None:
            prepare(np.concatenate([self._v(self._t_nodes(self.levels[0])), checked_norms]))
        # theta resolution from the corners of the norm range
        R, err_theta, corner_scale, points = self._theta_degree(pair_fn, np.array([v_hi, v_lo]),
                                                                np.array([v_hi, v_hi]), tol / 2, strict)
        # a table of degree R + 1 when its Lobatto nodes are among the corners' (R + 1 a power of two dividing the
        # points): the corner pairs, two of the table's skeleton pairs (the ends), are then solved already
        if R + 1 < points and points % (R + 1) == 0 and (R + 1) & R == 0:
            R += 1
        self.theta_nodes = lobatto(R)         # the angles of the table, where the columns take theirs
        # the norm basis on Lobatto points in t, or the tensor grid of degree m when it does not pay; a basis
        # whose held-out error would take the estimate past 5 tol takes more columns and a lower threshold (at
        # most three times; then the tensor grid only where the basis is no smaller).  Measured, relu6 on 200
        # standardised rows in d = 2 (norms 1e-4..9): the held-out error 6.7e-10 after three attempts, 9e-12 after four
        # (rank 19 -> 20; 32.5 -> 35 s)
        nodes_t, Y, m, err_t, mp, scale = self._columns(pair_fn, corner_scale, tol / 2)
        if err_t > tol / 2:
            accuracy_shortfall(f"the norm interpolation: degree {m} in log|x|^2 leaves a relative error estimate "
                               f"{err_t:.1e} > tol/2 = {tol / 2:.1e}", strict)
        self.R, self.core, attempts = R, {}, 1
        self.nodes_t = nodes_t
        P = ()
        for attempt in range(4):
            basis = self._skeleton(Y, tol / 8 / 4**attempt, P if self.nodes_t is nodes_t else ())
            if basis is None or basis[1].size > (m + 1) or (attempt == 0 and not _basis_pays(basis[1].size, m)):
                self.nodes_t, U, P = self._t_nodes(m), np.eye(m + 1), np.arange(m + 1)
                kind = f"tensor ({m + 1} norm nodes)"
                self.core = {}                             # (other Lobatto points)
            else:
                if self.nodes_t is not nodes_t:          # (after a tensor grid: its solves are at other points)
                    self.core = {}
                (U, P), self.nodes_t = basis, nodes_t
                kind = f"low-rank basis (rank {U.shape[1]} of {nodes_t.size} norm nodes, {P.size} skeleton norms)"
            self.skeleton = self._v(self.nodes_t[P])
            self.lift = U @ np.linalg.pinv(U[P])                 # (L, |P|): skeleton values -> Lobatto values
            self.L = K = P.size
            coef, scale = self._sample(pair_fn, R, P, scale)
            self.scale = scale
            held_t = self._held_out_norms(pair_fn, coef, P)
            if 3.0 * held_t <= 5.0 * tol or attempt == 3:
                break
            attempts = attempt + 2
            if K == self.nodes_t.size and m < mp:       # (the tensor grid missed: its degree in t, up to the columns')
                m = min(2 * m, mp)
            Y = np.concatenate([Y, self._more_columns(pair_fn, 2 * _BASIS_BATCH)], axis=1)
        self.odd = bool(getattr(pair_fn, "odd", False))      # F odd in cos(theta): odd in u, odd orders only
        grid_theta, held, theta_est = self._theta_estimate(pair_fn, coef, scale)
        # a table whose series in theta is not resolved (its estimate past 5 tol: pairs inside the norm range need
        # more than the corners did) takes twice the degree (nested nodes: the solves made are reused)
        # (while it at least halves the estimate: a series at its noise floor stays as it is, with its estimate)
        raised, before = 0, math.inf
        while theta_est > 5.0 * tol and 2 * R <= R_MAX and theta_est <= 0.5 * before:
            R, self.core, raised, before = 2 * R, {}, raised + 1, theta_est
            self.R = R
            coef, scale = self._sample(pair_fn, R, P, scale)
            self.scale = scale
            grid_theta, held, theta_est = self._theta_estimate(pair_fn, coef, scale)
            held_t = self._held_out_norms(pair_fn, coef, P)
        # c[r, k, l, o] -> rowcoef[k, (r, o, l)]: a row's weights times it gives D before the column weights
        self.rowcoef = np.ascontiguousarray((coef[1::2] if self.odd else coef).transpose(1, 0, 3, 2)).reshape(K, -1)
        self.Wa = self._weights(self.na)
        self.Wb = self.Wa if self.same else self._weights(self.nb)
        self.diag, err_diag = self._diagonal(pair_fn, scale) if self.same else (None, 0.0)
        self.za = self.zb = None
        err_zero = 0.0
        if np.any(self.na == 0) or np.any(self.nb == 0):
            self.za, self.zb, self.z00, err_zero = self._zero_rows(pair_fn, scale)
        self.info = dict(path="norm interpolation", theta_nodes=R + 1, norm_nodes=K, norm_grid_nodes=mp + 1,
                         table=f"Chebyshev degree {R} in theta on [{0.5 * math.pi - self.half:.3f}, "
                               f"{0.5 * math.pi + self.half:.3f}] x {K} x {K} norms",
                         norm_range=(v_lo, v_hi), norm_grid=kind, norm_basis_attempts=attempts,
                         theta_window=self.half, theta_degree_doubled=raised, direct_pairs=int(self.direct[0].size),
                         direct_self_kernels=None)
        self.info["norm_tails"] = dict(theta=err_theta, t=err_t, grid_theta=theta_est, held_out_norms=held_t,
                                      theta_extrapolated=grid_theta, theta_held_out=held,
                                      diagonal=err_diag, zero_rows=err_zero)
        estimate = max(err_theta, theta_est) + err_t + 3.0 * held_t + max(err_diag, err_zero)
        self._solve_direct(pair_fn, checked_norms)
        checked = self._check(pair_fn)
        self.info["interpolation_check"] = checked
        self.info["pair_solves"] = self.solves
        self.info["interpolation_error_estimate"] = float(max(estimate, checked))
        if max(estimate, checked) > 10 * tol:
            accuracy_shortfall(f"the norm interpolation misses tol = {tol:.1e}: relative error estimate "
                               f"{estimate:.1e}, measured at input pairs {checked:.1e}", strict)

    solves = 0

    def _chunk_entries(self) -> int:
        return _NORM_CHUNK_ENTRIES

    def _threads(self):
        # matrix products with an inner dimension of L ~ 10 are memory bound: threads only add overhead
        return one_blas_thread()

    def _call(self, pair_fn, vx, vy, c):
        r"""``F`` at the norms ``vx``, ``vy`` and inner products ``c`` (broadcast): ``(*shape, 2)``.  Each distinct
        $(\{v_x,v_y\},c)$ is solved once per plan ($F$ is symmetric in the two inputs): the stages share the
        solves they have in common (the corners of the theta degree, the columns at the table's angles and its
        skeleton norms, the table); ``solves`` counts those made."""
        c = np.asarray(c, np.float64)
        vx, vy = (np.broadcast_to(np.asarray(a, np.float64), c.shape) for a in (vx, vy))
        keys = list(zip(np.minimum(vx, vy).ravel().tolist(), np.maximum(vx, vy).ravel().tolist(), c.ravel().tolist()))
        memo = self._memo
        todo = list(dict.fromkeys(k for k in keys if k not in memo))
        if todo:
            a = np.array(todo)
            self.solves += a.shape[0]
            vals = np.stack(pair_fn(a[:, 0], a[:, 1], a[:, 2]), -1)
            memo.update(zip(todo, vals))
        return np.stack([memo[k] for k in keys]).reshape(c.shape + (2,))

    def _t_nodes(self, m):
        t = self.t_lo + 0.5 * (self.t_hi - self.t_lo) * (lobatto(m) + 1.0)
        t[0], t[-1] = self.t_lo, self.t_hi
        return t

    def _v(self, t):
        r"""The norms $v=e^t$ at log-norms ``t``, the two ends exactly the extreme norms of the inputs (one norm, one
        self-kernel solve: ``exp(log v)`` may differ from ``v`` in the last bit)."""
        v = np.exp(t)
        v[t == self.t_lo] = self.v_lo
        v[t == self.t_hi] = self.v_hi
        return v

    def _cos(self, u):
        r"""$\cos\theta$ at the window coordinate $u$, $\theta=\tfrac\pi2+hu$: $-\sin(hu)$, exactly odd in $u$."""
        return -np.sin(self.half * np.asarray(u))

    def _theta_degree(self, pair_fn, vx, vy, target, strict):
        """Degree R in theta from the Chebyshev coefficients at the norm pairs (vx, vy): Lobatto points
        doubled from _R_START until the tail beyond some degree R <= (points - 5) is below ``target``.
        Returns (R, tail estimate, largest |value| of each output, the points' degree)."""
        root = np.sqrt(vx * vy)[None, :]
        P = R_START
        F = self._call(pair_fn, vx, vy, root * self._cos(lobatto(P))[:, None])
        while True:
            R, err = _degree_for(_envelope(chebyshev_coefficients(F), np.max(np.abs(F), axis=(0, 1))), target, _R_MIN)
            if (R <= P - 4 and err <= target) or P >= R_MAX:
                break
            new = self._call(pair_fn, vx, vy, root * self._cos(lobatto(2 * P)[1::2])[:, None])
            merged = np.empty((2 * P + 1,) + F.shape[1:])
            merged[0::2], merged[1::2] = F, new
            F, P = merged, 2 * P
        if err > target:
            accuracy_shortfall(f"the norm interpolation: the theta series at {P + 1} points leaves a relative "
                               f"error estimate {err:.1e} > {target:.1e}", strict)
        return R, err, np.max(np.abs(F), axis=(0, 1)), P

    def _columns(self, pair_fn, scale, target):
        r"""The columns $t\mapsto F(t,t_y,\theta)$ on Lobatto points in $t$ (both outputs, each relative to the
        scale): first $t_y=t_{\min},t_{\max}$ at three angles of the window and three interior $t_y$ at both its
        edges, their degree doubled from 12 (24 for a range wider than 1.5 in $\log v$) while the tail of their
        Chebyshev coefficients beyond some degree $m<m_p-\max(4,m_p/8)$ is above ``target`` (a tail met only by
        the last two coefficients is no evidence of decay: relu6's edge columns, unresolved at 48, passed so at
        46); then batches of random $(t_y,\theta)$ (:meth:`_more_columns`)
        until a batch lies to ``tol``/4 in the span of the singular vectors of the columns before it above
        ``tol``/8.  Returns ``(points, columns (L, n), m, its tail estimate, m_p, the scale)`` (module doc)."""
        tol = self.tol
        levels = self.levels
        mp = levels[0]
        # three angles of the window, at the table's Lobatto nodes (its solves at the skeleton norms are these), and
        # both edges of the window at three interior norms: near theta = 0 a kinked phi's F(t, t_y, theta) turns
        # sharp as t crosses t_y (relu6, 2000 standardised rows: at the edge u = -1 and t_y = log 3.2 the coefficients
        # at degree 39, the corners' degree, were 1.3e-9 of the scale; the corners' own 5e-11)
        inner = self._v(self._t_nodes(mp)[[mp // 4, mp // 2, 3 * mp // 4]])
        ty = np.concatenate([[self.v_lo, self.v_hi] * 3, inner, inner])
        nodes = self.theta_nodes
        cu = self._cos(np.concatenate([np.repeat(nodes[[np.argmin(np.abs(nodes - u)) for u in (-1.0, -0.2, 0.6)]], 2),
                                       np.repeat(nodes[[0, -1]], 3)]))
        F = self._fibres(pair_fn, self._v(self._t_nodes(mp)), ty, cu)
        while True:
            scale = np.maximum(scale, np.max(np.abs(F), axis=(0, 1)))
            m, err_t = _degree_for(_envelope(chebyshev_coefficients(F), scale), target, minimum=2)
            if m < mp - max(4, mp // 8) or mp == levels[-1]:
                break
            merged = np.empty((2 * mp + 1,) + F.shape[1:])
            merged[0::2], merged[1::2] = F, self._fibres(pair_fn, self._v(self._t_nodes(2 * mp)[1::2]), ty, cu)
            F, mp = merged, 2 * mp
        nodes = self._t_nodes(mp)
        L = nodes.size
        self.col_nodes, self.col_scale = nodes, scale
        Y = (F / np.maximum(scale, 1e-300)).reshape(L, -1)
        while True:
            U, s, _ = np.linalg.svd(Y, full_matrices=False)
            r = int(np.count_nonzero(s > tol / 8))
            if r >= 0.75 * L:
                break
            new = self._more_columns(pair_fn, _BASIS_BATCH)
            Ur = U[:, :r]
            resid = float(np.max(np.abs(new - Ur @ (Ur.T @ new))))
            Y = np.concatenate([Y, new], axis=1)
            if resid <= tol / 4:
                break
        return nodes, Y, m, err_t, mp, self.col_scale

    def _fibres(self, pair_fn, v, vy, c):
        """F at norms ``v`` x (``vy``, cos theta ``c``): (len(v), len(vy), 2)."""
        return self._call(pair_fn, v[:, None], vy[None, :], np.sqrt(v[:, None] * vy[None, :]) * c[None, :])

    def _more_columns(self, pair_fn, n):
        """``n`` random columns: t_y on the Lobatto points (their per-norm work is done), theta in the window;
        (L, 2n) relative to the scale (which they may raise)."""
        v = self._v(self.col_nodes)
        vy = v[self.rng.integers(0, v.size, n)]
        F = self._fibres(pair_fn, v, vy, self._cos(np.cos(np.pi * self.rng.uniform(0.0, 1.0, n))))
        self.col_scale = np.maximum(self.col_scale, np.max(np.abs(F), axis=(0, 1)))
        return (F / np.maximum(self.col_scale, 1e-300)).reshape(v.size, -1)

    @staticmethod
    def _skeleton(Y, threshold, first=()):
        """``(U (L, r) orthonormal, skeleton indices P)``: the singular vectors of the columns ``Y`` above
        ``threshold``, and their pivoted-QR rows with the two ends, the rows ``first`` (an earlier attempt's
        skeleton: its table's pairs are solved) taken before the pivoting; ``None`` when the rank reaches 3/4 L."""
        L = Y.shape[0]
        U, s, _ = np.linalg.svd(Y, full_matrices=False)
        U = U[:, : int(np.count_nonzero(s > threshold))]
        if U.shape[1] >= 0.75 * L:
            return None
        return U, np.union1d(pivot_columns(U.T, U.shape[1], first), [0, L - 1])

    def _sample(self, pair_fn, R, P, scale):
        r"""Chebyshev coefficients (R+1, K, K, 2) in theta of F at the skeleton norms (Lobatto indices ``P``;
        symmetric pairs solved once, pairs solved for an earlier skeleton reused) and the scale per output."""
        v = self._v(self.nodes_t)
        K = P.size
        cos = self._cos(lobatto(R))
        kx, ky = np.triu_indices(K)
        todo = [i for i in range(kx.size) if (P[kx[i]], P[ky[i]]) not in self.core]
        planned = getattr(pair_fn, "plan_pairs", None)
        if planned is not None:         # the solves to come, at most (a solver may choose its backend by them)
            planned(len(todo) * (R + 1))
        if todo:
            px, py = P[kx[todo]], P[ky[todo]]
            vals = self._call(pair_fn, v[px], v[py], np.sqrt(v[px] * v[py])[None, :] * cos[:, None])
            for i, (a, b) in enumerate(zip(px.tolist(), py.tolist())):
                self.core[(a, b)] = vals[:, i]
        F = np.empty((R + 1, K, K, 2))
        for i, j in zip(kx.tolist(), ky.tolist()):
            F[:, i, j] = F[:, j, i] = self.core[(int(P[i]), int(P[j]))]
        scale = np.maximum(scale, np.max(np.abs(F), axis=(0, 1, 2)))
        return chebyshev_coefficients(F), scale

    def _theta_estimate(self, pair_fn, coef, scale):
        """``(extrapolated tail, held-out deviation, estimate)`` of the table's series in theta ``coef``."""
        grid_theta = _tail(_envelope(coef, scale))
        held = self._held_out_theta(pair_fn, coef, scale)
        # the extrapolated tail meets noise-level top coefficients with a capped decay rate (up to 18x
        # the highest coefficient); the held-out angles measure the theta error where the top coefficients
        # are largest: the estimate is the smaller of the two, never below twice the highest coefficient
        top = 2.0 * float(np.max(_envelope(coef, scale)[-2:]))
        return grid_theta, held, min(grid_theta, max(4.0 * held, top))

    def _line(self, f, norms, scale):
        r"""$g(v)$ (``f(v) -> (n, 2)``) at ``norms`` (all in the range, > 0) by its Chebyshev interpolant in
        $t=\log v$ on the Lobatto points of the norm grid (their per-norm work is done), the degree doubled
        while the tail of its Chebyshev coefficients (:func:`_degree_for`, relative to ``scale``) is above
        ``tol``/4 or not resolved; ``(values (n, 2), the tail estimate)``."""
        m = max(self.nodes_t.size - 1, _LINE_M0)
        G = f(self._v(self._t_nodes(m)))
        while True:
            n, err = _degree_for(_envelope(chebyshev_coefficients(G), scale), self.tol / 4, minimum=2)
            if (n < m - 1 and err <= self.tol / 4) or m >= _LINE_MAX:
                break
            new = f(self._v(self._t_nodes(2 * m)[1::2]))
            merged = np.empty((2 * m + 1, 2))
            merged[0::2], merged[1::2] = G, new
            G, m = merged, 2 * m
        return interval_weights(np.log(np.where(norms > 0, norms, 1.0)), self.t_lo, self.t_hi, m) @ G, err

    def _diagonal(self, pair_fn, scale):
        """F(v, v, 0) of every row of a symmetric Gram (the diagonal, outside the theta window): (N, 2)."""
        return self._line(lambda v: self._call(pair_fn, v, v, v), self.na, scale)

    def _zero_rows(self, pair_fn, scale):
        """F(0, v, 0) of every row of a and of b (a zero row: no theta), F(0, 0, 0) and the error."""
        za, err = self._line(lambda v: self._call(pair_fn, np.zeros_like(v), v, np.zeros_like(v)),
                             np.concatenate([self.na, self.nb]), scale)
        z00 = self._call(pair_fn, np.zeros(1), np.zeros(1), np.zeros(1))[0]
        return za[: self.na.size], za[self.na.size:], z00, err

    def _basis_weights(self, t):
        """(n, K): the weights of the skeleton values at log-norms ``t``."""
        if self.nodes_t.size == 1 or self.t_hi == self.t_lo:
            return np.ones((np.size(t), self.L)) / self.L
        return interval_weights(t, self.t_lo, self.t_hi, self.nodes_t.size - 1) @ self.lift

    def _weights(self, norms):
        return self._basis_weights(np.log(np.where(norms > 0, norms, 1.0)))

    def _chunk(self, i, j, xy):
        r"""$F_{ij}=\sum_r T_r(u_{ij})\,D_{ijr}$, $u=(\theta-\pi/2)/h$, with
        $D_{ijr}=\sum_{kl}B_k(t_i)B_l(t_j)c_{klr}$ from two matrix products (no gathers), summed by
        Clenshaw's recurrence; the diagonal of a symmetric Gram from its own interpolant."""
        na, nb = self.na[i], self.nb[j]
        theta, mask = self._theta(xy, i, j, np.sqrt(na), np.sqrt(nb))
        Wa, Wb = self.Wa[i], self.Wb[j]
        L, R1 = self.L, (self.R + 1) // 2 if self.odd else self.R + 1
        # rows (i, o) of C_r = sum_k B_k(t_i) c[r, k, :, o]; D_r = C_r @ Wb^T, accumulated at once
        C = (Wa @ self.rowcoef).reshape(i.size, R1, 2, L).transpose(1, 0, 2, 3).reshape(R1, 2 * i.size, L)
        WbT = np.ascontiguousarray(Wb.T)
        u = np.repeat(theta, 2, axis=0)              # (2 rows, cols): one row per (row, output)
        u -= 0.5 * np.pi
        u *= 1.0 / self.half
        np.clip(u, -1.0, 1.0, out=u)                 # (the diagonal, zero rows: overwritten below)
        # Clenshaw: b_r = D_r + 2u b_{r+1} - b_{r+2} (r = R..1), F = D_0 + u b_1 - b_2 (three passes per degree).
        # Odd kernels: T_{2k+1}(u) = u V_k(2u^2 - 1) (V: third kind, V_0 = 1, V_1 = 2s - 1), the same recurrence in
        # s = 2u^2 - 1 over half the degrees, F = u (D_0 + (2s - 1) b_1 - b_2)
        x = 2.0 * u * u - 1.0 if self.odd else u
        D, tmp = np.empty_like(u), np.empty_like(u)
        b1, b2 = np.zeros_like(u), np.zeros_like(u)
        u2 = 2.0 * x
        for r in range(R1 - 1, 0, -1):
            np.matmul(C[r], WbT, out=D)
            np.multiply(u2, b1, out=tmp)
            tmp -= b2
            tmp += D
            b1, b2, tmp = tmp, b1, b2
        np.matmul(C[0], WbT, out=D)
        if self.odd:
            x -= 0.5
            x *= 2.0                                 # V_1(s) = 2s - 1
            out = np.multiply(x, b1, out=tmp)
            out -= b2
            out += D
            out *= u
        else:
            out = np.multiply(u, b1, out=tmp)
            out -= b2
            out += D
        out = out.reshape(i.size, 2, j.size).transpose(1, 0, 2)
        if mask is not None:
            ii, jj = np.nonzero(mask)
            out[:, ii, jj] = self.diag[i[ii]].T
        if self.direct[0].size:          # the pairs outside the window: their direct solves
            self._put_direct(out, i, j)
        zx, zy = na == 0, nb == 0
        if self.za is not None and (zx.any() or zy.any()):   # a zero row: F(0, v, 0), no theta
            for o in range(2):
                out[o][np.ix_(zx, ~zy)] = self.zb[j[~zy], o][None, :]
                out[o][np.ix_(~zx, zy)] = self.za[i[~zx], o][:, None]
                out[o][np.ix_(zx, zy)] = self.z00[o]
        return out
