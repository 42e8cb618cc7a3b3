r"""A dear dual tabulated per time node in the angle alone: one batch of exact $(C,\dot C)$ serves every input angle
and every Picard sweep of the cross-kernel solves on one time grid.

On the sphere every input shares the diagonal $q(t)$, so at a node $(t_i,s_j)$ of a time grid the variances
$(q_1,q_2)=(q(t_i),q(s_j))$ are fixed, and the dual $C(q_1,q_2,c)$, $\dot C(q_1,q_2,c)$ are functions of one
number, the angle $\theta=\arccos(c/\sqrt{q_1q_2})$.  The cross-kernel solves of a Gram (about 65-129 input angles
of the $\theta$ table, about 9 Picard sweeps per wavefront of cells, :mod:`._panels`) ask the dual at the same
nodes again and again.  A closed form that costs ~1-2 µs per exact evaluation (elu: three bivariate Mills
ratios) then spends $10^7$ evaluations; here each node gets a Chebyshev series of $\tilde C=C/\sqrt{q_1q_2}$ and
$\dot C$ in its own angle variable, built from one vectorised batch of $R+1$ exact evaluations per node, and a
sweep costs a Clenshaw sum per value.

**Angle variable.** A solve at node $n$ visits only the angles between those of the band's extreme input angles
(the self-kernel bounds them from below, the antipodal pair from above: for a monotone $\phi$ the Picard map is
monotone in $c$, so $S(t,s)$ is monotone in the input correlation).  The caller gives each node its range
$[\theta^{lo}_n,\theta^{hi}_n]$ (from two bracketing solves); the series lives on it, padded by ``_PAD``.  At large
variance the duals have features of width $\sim1/\sqrt q$ next to $\rho=1$ ($\theta=0$; elu: $(1-\rho)^{3/2}$
terms, which are analytic in $\theta$): where the range comes within ``10 eps`` of 0 the angle is graded,
$\theta=\varepsilon\sinh(a+(b-a)(u+1)/2)$ with $\varepsilon=3/\sqrt{\max(q_1,q_2)}$; else $\theta$ is linear in $u$.  Measured (elu, $\sigma_wT=10$, 400 random nodes of each band's
grid): degree 24 errs by $\le1.3\times10^{-14}$ relative in all three bands, degree 16 by up to $2\times10^{-10}$.

**Accuracy.** Per node the error of the degree-$R$ interpolant ($R$ from 12, or from its neighbours' degree:
:meth:`NodeAngleTable._resolve`; nodes of equal variances, the panels' shared edges, are one node) is estimated from
its last two Chebyshev coefficients (one of each parity; times ``_TAIL_FACTOR``: the decay is geometric); nodes above
``tol`` get $R$ more (nested Lobatto) nodes, up to ``_R_MAX``; nodes that still miss are evaluated exactly (never an
inaccurate table value).  The exact evaluations of a level of the ladder go out in one batch (the large-$q$ rule pads
each call's last chunk per regime).  Each series ($\tilde C$, $\dot C$) of a node is then cut to the lowest degree
whose dropped coefficients sum to ``_TRUNCATE`` tol (a bound: $|T_k|\le1$), and Clenshaw runs over the nodes sorted
by degree, each step on the prefix that needs it (measured mean degrees 12, 8 and 4 in the three bands of elu at
$\sigma_wT=10$; silu: $\tilde C$ 10.4 and 7.7, $\dot C$ 11.3 and 8.1 in bands 0 and 1).  The estimate is checked at
``_CHECKS`` held-out points (random nodes, random angles in their ranges) by exact evaluation:
:attr:`NodeAngleTable.error` is the larger of the tail estimate (plus the truncation) and twice the held-out error,
relative to the largest $|\tilde C|$ and $|\dot C|$ of the table (measured 1.2e-12 at tol 1e-12, held out 2.4e-13).

**Outside the ranges.** A Picard transient outside its node's range gets the linear model at the range's end,
$C(c_e)+\dot C(c_e)(c-c_e)$ (Price's theorem), counted in :attr:`NodeAngleTable.extrapolated`; the final $C$,
$\dot C$ of a solve are evaluated exactly there (``final``, counted in :attr:`NodeAngleTable.direct`), and a solve
whose converged values left a range is not the table's fixed point: :meth:`NodeAngleTable.inside` tells the caller,
which solves it again with the exact dual.

**Cost** (elu, $\sigma_wT=10$, N = 200, degree 20/16/20 grids of 24 255/15 895/24 255 nodes): the three tables take
1.5e6 exact evaluations with their bracketing solves, where the anchored solves of the Gram's 134 cross-kernel
problems took about 6 per node and problem (2e7); the whole kernel fell from 29 s to 10 s of CPU.
"""

from __future__ import annotations

import math

import numpy as np

from ..theory.duals_ops import correlation_angle
from ._interp import chebyshev_coefficients, chebyshev_matrix, lobatto

__all__ = ["NodeAngleTable", "angle_of"]

_R0 = 12               # first angle degree (nested Lobatto: 13 exact evaluations per node), doubled where needed
_R_MAX = 48            # nodes whose tail is not resolved at _R0 get a second batch, up to this degree
_EPS = 3.0             # graded angle scale eps = _EPS / sqrt(max(q1, q2))
_PAD = 0.05            # a node's range widened by this fraction of its width on each side
_PAD_MIN = 1e-3        # ... and at least this much (radians), relative to the range's upper end
_TRUNCATE = 0.25       # each node's series is cut to the lowest degree whose dropped terms sum to this times tol
_TAIL_FACTOR = 2.0    # error estimate of a resolved series: this times its largest of the last _TAIL_TERMS coefficients
#: coefficients the tail estimate reads (two: one of each parity).  Measured (silu sigma_w T = 10, 300 random nodes of
#: each band's table, the error of the degree-R interpolant on 301 points against exact values, R scanned up from 5):
#: the first R whose estimate passes tol errs by at most 0.44 tol (0.13 with three terms), at 1.0 fewer degrees per node
_TAIL_TERMS = 2
_CHECKS = 1024         # held-out exact evaluations that check the tail estimate
_CHUNK = 1 << 18       # exact evaluations per call of ``exact``
_PILOT = 4             # every this many distinct nodes one is a pilot; the others start near the pilots' degrees
_COARSE = 4            # ... and every this many pilots one climbs the ladder from r0 (the rest start near its degree)
_MARGIN = 2            # ... at the larger degree of the two resolved nodes around them plus this
_MARGIN_PILOT = 3      # ... (for a pilot, between the coarse ones: farther apart)
_R_LOW = 4             # ... and at least this
_LAYOUTS = 64          # degree-sorted node layouts of _clenshaw kept (a wavefront's cells, each asked every sweep)


def angle_of(n, c):
    r"""$\theta=2\operatorname{atan2}(\sqrt{1-\rho},\sqrt{1+\rho})$, $\rho=c/n$ clipped to $[-1,1]$ (relative accuracy
    near $\rho=\pm1$)."""
    return correlation_angle(np.clip(c / n, -1.0, 1.0))


class NodeAngleTable:
    r"""$(\tilde C,\dot C)$ at the nodes of one time grid as Chebyshev series in each node's angle variable (module
    doc).  ``exact(q1, q2, c)`` -> ``(C, Cdot)`` on flat arrays; ``q1, q2`` ``(points,)`` the node variances;
    ``lo, hi`` ``(points,)`` the angle range each node is asked for; ``tol``: relative accuracy target.

    ``table(c, idx, which)``: $C$ (``which`` 0) or $\dot C$ (1) at covariances ``c`` of the nodes ``idx`` (same
    shape; rows that share their node indices, the problems of one batch, gather the coefficients once).
    ``evaluations``: exact evaluations of the build and its check; ``direct``: exact evaluations of queries
    outside a node's range (and of nodes whose series did not reach ``tol``)."""

    def __init__(self, exact, q1, q2, lo, hi, tol: float, r0: int = _R0):
        self.exact = exact
        self.q1, self.q2 = (np.asarray(a, np.float64).ravel() for a in (q1, q2))
        self.n = np.sqrt(self.q1 * self.q2)
        lo, hi = np.asarray(lo, np.float64).ravel(), np.asarray(hi, np.float64).ravel()
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        pad = np.maximum(_PAD * (hi - lo), _PAD_MIN * np.maximum(hi, 1e-3))
        self.lo, self.hi = np.maximum(lo - pad, 0.0), np.minimum(hi + pad, math.pi)
        # nodes of equal variances (the panels' shared edges) are one node, its range the union of theirs
        _, first, inverse = np.unique(np.stack([self.q1, self.q2], axis=1), axis=0, return_index=True,
                                      return_inverse=True)
        order = np.argsort(first)                    # the distinct nodes in the grid's layout (neighbours near)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        self._of, self._rep = rank[inverse.ravel()], first[order]      # point -> distinct node -> a point of it
        lo, hi = np.full(order.size, np.inf), np.full(order.size, -np.inf)
        np.minimum.at(lo, self._of, self.lo)
        np.maximum.at(hi, self._of, self.hi)
        self.lo, self.hi = lo[self._of], hi[self._of]
        eps = _EPS / np.sqrt(np.maximum(np.maximum(self.q1, self.q2), 1e-300))
        self.graded = self.lo < 10.0 * eps
        self.eps = np.where(self.graded, eps, 1.0)
        self.a = np.where(self.graded, np.arcsinh(self.lo / self.eps), self.lo)
        self.b = np.where(self.graded, np.arcsinh(self.hi / self.eps), self.hi)
        self.b = np.where(self.b > self.a, self.b, self.a + 1e-300)
        # the queries' variable u = x * slope + shift, x = arcsinh(theta / eps) where graded, else theta
        self._inv_n = 1.0 / np.where(self.n > 0, self.n, 1.0)
        self._inv_eps = 1.0 / self.eps
        self._slope = 2.0 / (self.b - self.a)
        self._shift = -1.0 - self.a * self._slope
        self.evaluations = self.direct = self.extrapolated = self.outside_final = 0
        self._layouts = {}            # (which, size, hash) -> a node layout of _clenshaw sorted by degree (reused)
        self.tol = float(tol)
        self.r0 = int(r0)
        self._build()

    # -- building -------------------------------------------------------------------------------
    def theta(self, u, nodes):
        r"""The angle at the variable ``u`` (broadcast against ``nodes``)."""
        x = self.a[nodes] + (self.b[nodes] - self.a[nodes]) * 0.5 * (u + 1.0)
        return np.where(self.graded[nodes], self.eps[nodes] * np.sinh(x), x)

    def _values_many(self, asks):
        r"""``[(len(u), len(nodes), 2), ...]``: exact $(\tilde C, \dot C)$ at the angle variables ``u`` of ``nodes``
        for each of ``asks``, ``(u, nodes)`` pairs, from one batch of exact evaluations (each call of ``exact`` pads
        the last chunk of every regime of the large-$q$ rule: measured 7.7 % of the table's evaluations in silu
        $\sigma_wT=10$ with one call per start degree and doubling)."""
        ths = [self.theta(u[:, None], nodes[None, :]) for u, nodes in asks]
        flat = np.concatenate([th.ravel() for th in ths])
        idx = np.concatenate([np.broadcast_to(nodes[None, :], th.shape).ravel() for th, (_, nodes) in zip(ths, asks)])
        vals = self._exact_at(flat, idx)
        cuts = np.cumsum([th.size for th in ths])[:-1]
        return [v.reshape(th.shape + (2,)) for v, th in zip(np.split(vals, cuts), ths)]

    def _exact_at(self, th, nodes):
        r"""``th.shape + (2,)``: exact $(\tilde C, \dot C)$ at the angles ``th`` of ``nodes`` (same shape)."""
        n = self.n[nodes].ravel()
        q1, q2 = self.q1[nodes].ravel(), self.q2[nodes].ravel()
        c = n * np.cos(th.ravel())
        C, Cd = np.empty(c.size), np.empty(c.size)
        for s in range(0, c.size, _CHUNK):
            sl = slice(s, s + _CHUNK)
            C[sl], Cd[sl] = self.exact(q1[sl], q2[sl], c[sl])
        self.evaluations += c.size
        return np.stack([C / np.where(n > 0, n, 1.0), Cd], axis=-1).reshape(th.shape + (2,))

    def _tail(self, coef, scale):
        """Per node: the tail estimate of a series ``coef`` ``(R+1, nodes, 2)``, relative to ``scale`` ``(2,)``."""
        return _TAIL_FACTOR * np.max(np.abs(coef[-_TAIL_TERMS:]) / scale, axis=(0, 2))

    def _build(self):
        of, rep = self._of, self._rep
        coef, err, R = self._resolve(rep)
        self.distinct = int(rep.size)
        self.R = R
        # per distinct node, the lowest degree whose dropped coefficients sum to at most _TRUNCATE tol (|T_k| <= 1: a
        # bound), each series to its own degree (C at the Picard sweeps, both at a solve's end); then per point
        drop, degrees = _cut(np.abs(coef) / self.scale, R, self.tol)                     # (R+1, distinct, 2)
        truncated = np.take_along_axis(drop, np.minimum(degrees + 1, R)[None], axis=0)[0]
        truncated = np.max(np.where(degrees >= R, 0.0, truncated), axis=1)
        top = int(np.max(degrees, initial=0))
        coef = coef[: top + 1]
        coef[np.arange(top + 1)[:, None, None] > degrees[None]] = 0.0
        sign = (-1.0) ** np.arange(top + 1)     # Cdot at the range's ends (u = -1, 1): for the linear model outside
        end_Cdot = np.stack([sign @ coef[:, :, 1], np.sum(coef[:, :, 1], axis=0)])
        self.coef, self.degrees, self.end_Cdot = coef[:, of], degrees[of], end_Cdot[:, of]
        err, truncated = err[of], truncated[of]
        nodes = np.arange(self.n.size)
        # nodes that missed tol at the largest degree: exact values always (an empty range)
        missed = err > self.tol
        self.failed = int(np.count_nonzero(missed[rep]))
        self.lo[missed], self.hi[missed] = 1.0, -1.0
        ok = ~missed
        tail = float(np.max(err[ok] + truncated[ok], initial=0.0))
        # held-out check: random nodes at random angles of their ranges
        rng = np.random.default_rng(12345)
        good = nodes[ok]
        measured = 0.0
        if good.size:
            pick = good[rng.integers(0, good.size, _CHECKS)]
            u = rng.uniform(-1.0, 1.0, _CHECKS)
            ref = self._exact_at(self.theta(u, pick), pick)                                     # (checks, 2)
            got = np.stack(self._clenshaw(u, pick, (0, 1), False), axis=-1)
            measured = float(np.max(np.abs(got - ref) / self.scale))
        self.tail_error, self.measured_error = tail, measured
        self.error = max(tail, 2.0 * measured, 1e-16)

    def _resolve(self, nodes):
        r"""Chebyshev coefficients ``(R+1, len(nodes), 2)`` (each node's own degree, zero above it), the tail
        estimates ``(len(nodes),)`` and ``R``, the largest degree, of the distinct ``nodes`` (in the grid's layout).

        In three levels: every ``_PILOT * _COARSE``-th node (and the last) climbs the nested ladder from ``r0``; every
        ``_PILOT``-th of the others starts at the larger truncated degree of the two resolved nodes around it plus
        ``_MARGIN_PILOT``, the rest at that of theirs plus ``_MARGIN`` (the trailing coefficients that the tail
        estimate reads; neighbours' degrees differ by 0-2: the degree is a smooth function of the node's times), and
        each climbs from there (nested doubling) where its own tail estimate misses tol.  ``_PILOT`` = 1: every node
        climbs from ``r0``.  Measured softplus $\sigma_wT=10$ (one level of pilots every 4th node): 16.0 / 12.5 / 8.3
        exact evaluations per distinct node where every node climbing from 6 took 20.0 / 14.5 / 8.8 (per node), the
        same tail estimate per node; with the shared nodes built once, 495 383 evaluations in all where 636 900.  Silu
        $\sigma_wT=10$ (bands 0, 1): 15.5 / 12.8 per distinct node with two levels and the two-term tail estimate,
        17.4 / 14.2 with one level and three terms (softplus and silu: 10-11 % fewer exact evaluations in all)."""
        n = nodes.size
        steps = [_PILOT * _COARSE, _PILOT, 1] if _PILOT > 1 else [1]
        done = np.zeros(n, bool)
        deg = np.zeros(n, np.int64)                    # truncated degrees of the resolved nodes
        parts = []
        for level, step in enumerate(steps):
            sel = np.arange(0, n, step)
            if level == 0:
                sel = np.unique(np.append(sel, n - 1))
                vals = self._values_many([(lobatto(self.r0), nodes[sel])])[0]
                self.scale = np.maximum(np.max(np.abs(vals), axis=(0, 1)), 1e-300)
                got = [(sel,) + self._climb([(nodes[sel], self.r0, vals)])[0]]
            else:
                sel = sel[~done[sel]]
                if sel.size == 0:
                    continue
                known = np.nonzero(done)[0]
                at = np.searchsorted(known, sel)                 # the resolved node after each (and before it)
                near = np.maximum(deg[known[np.maximum(at - 1, 0)]], deg[known[np.minimum(at, known.size - 1)]])
                start = np.clip(near + (_MARGIN if step == 1 else _MARGIN_PILOT), _R_LOW, _R_MAX // 2)
                groups = [(R, sel[start == R]) for R in np.unique(start).tolist()]      # one batch per level
                vals = self._values_many([(lobatto(R), nodes[part]) for R, part in groups])
                climbed = self._climb([(nodes[part], R, v) for (R, part), v in zip(groups, vals)])
                got = [(part,) + c for (_, part), c in zip(groups, climbed)]
            for part, c, e, r in got:
                done[part] = True
                deg[part] = np.where(e > self.tol, _R_MAX, self._truncated(c, r))
            parts.extend(got)
        R = max(p[3] for p in parts)
        coef, err = np.zeros((R + 1, n, 2)), np.empty(n)
        for sel, c, e, r in parts:
            coef[: r + 1, sel] = c
            err[sel] = e
        return coef, err, R

    def _truncated(self, coef, R: int):
        """Per node: the lowest degree whose dropped coefficients of both series (the larger of ``coef``
        ``(R+1, nodes, 2)``) sum to at most ``_TRUNCATE`` tol."""
        return _cut(np.max(np.abs(coef) / self.scale, axis=2), R, self.tol)[1]

    def _climb(self, parts):
        """The nested ladders of ``parts``, ``(nodes, R, vals)`` each (values ``vals`` ``(R+1, len(nodes), 2)`` at the
        degree-``R`` Lobatto points): the nodes whose tail estimate misses tol get $R$ more points, up to ``_R_MAX``,
        all parts' in one batch per round.  Returns ``(coef, err, R)`` per part as :meth:`_resolve` for its nodes."""
        state = []
        for nodes, R, vals in parts:
            coef = chebyshev_coefficients(vals)
            state.append([nodes, R, coef, self._tail(coef, self.scale)])
        while True:
            asks, who = [], []
            for i, (nodes, R, coef, err) in enumerate(state):
                todo = np.nonzero(err > self.tol)[0]
                if todo.size and 2 * R <= _R_MAX:
                    asks.append((lobatto(2 * R)[1::2], nodes[todo]))
                    who.append((i, todo))
            if not asks:
                return [(coef, err, R) for _, R, coef, err in state]
            for (i, todo), new in zip(who, self._values_many(asks)):
                nodes, R, coef, err = state[i]
                fine = np.empty((2 * R + 1, todo.size, 2))                   # nested: R new nodes per node
                fine[0::2] = np.tensordot(_lobatto_values(R), coef[:, todo], axes=(1, 0))
                fine[1::2] = new
                fine_coef = chebyshev_coefficients(fine)
                grown = np.zeros((2 * R + 1,) + coef.shape[1:])
                grown[: R + 1] = coef
                grown[:, todo] = fine_coef
                err[todo] = self._tail(fine_coef, self.scale)
                state[i] = [nodes, 2 * R, grown, err]

    # -- evaluation -----------------------------------------------------------------------------
    def __call__(self, c, idx, which: int, final: bool = False):
        r"""$C$ (``which`` 0) or $\dot C$ (1) at covariances ``c`` of the nodes ``idx``.  A query outside its node's
        range is answered by the linear model at the range's end, $C(c_e)+\dot C(c_e)(c-c_e)$ (Price's theorem; the
        Picard transients of a solve), counted in :attr:`extrapolated`; with ``final`` it is evaluated exactly
        (counted in :attr:`direct`) and :attr:`outside_final` counts it (a solve whose converged values left the
        range is not the table's fixed point: the caller re-solves it exactly)."""
        return self._serve(c, idx, (which,), final)[0]

    def pair(self, c, idx, final: bool = True):
        r"""``(C, Cdot)`` at covariances ``c`` of the nodes ``idx``: :meth:`__call__` for both at once (one angle
        variable, one Clenshaw pass over both series, one exact evaluation of a query outside its range)."""
        return self._serve(c, idx, (0, 1), final)

    def _serve(self, c, idx, which: tuple, final: bool):
        c = np.asarray(c, np.float64)
        idx = np.asarray(idx)
        shared = c.ndim >= 2 and idx.shape[0] > 1 and np.array_equal(idx[0], idx[-1])   # a batch's rows: one layout
        nodes = idx[:1] if shared else idx
        th = self._angle(c, nodes)
        below, above = th < self.lo[nodes], th > self.hi[nodes]
        graded = self.graded[nodes]
        u = np.multiply(th, self._inv_eps[nodes])       # (1 where not graded: x = theta exactly)
        if np.any(graded):                               # the sinh variable only where graded
            np.arcsinh(u, out=u, where=np.broadcast_to(graded, u.shape))
        u *= self._slope[nodes]
        u += self._shift[nodes]
        np.clip(u, -1.0, 1.0, out=u)
        vals = self._clenshaw(u, nodes, which, shared)
        if 0 in which:
            vals[which.index(0)] *= self.n[nodes]
        outside = below | above
        if np.any(outside):
            full = np.broadcast_to(idx, c.shape)[outside]
            if final:
                self.direct += int(full.size)
                self.outside_final += int(full.size)
                got = self.exact(self.q1[full], self.q2[full], c[outside])
                for val, w in zip(vals, which):
                    val[outside] = got[w]
            else:
                self.extrapolated += int(full.size)
                if 0 in which:      # + Cdot at the end (its value at u = -1 or 1: the alternating or plain sum)
                    end = np.where(np.broadcast_to(below, c.shape)[outside], 0, 1)
                    th_end = np.where(end == 0, self.lo[full], self.hi[full])
                    step = c[outside] - self.n[full] * np.cos(th_end)
                    vals[which.index(0)][outside] += self.end_Cdot[end, full] * step
        return vals

    def _angle(self, c, nodes):
        r"""The angles of covariances ``c`` at ``nodes``: :func:`angle_of` in place (no temporaries)."""
        rho = np.multiply(c, self._inv_n[nodes])
        np.clip(rho, -1.0, 1.0, out=rho)
        th = np.subtract(1.0, rho)
        np.sqrt(th, out=th)
        np.add(1.0, rho, out=rho)
        np.sqrt(rho, out=rho)
        np.arctan2(th, rho, out=th)
        th *= 2.0
        return th

    def _clenshaw(self, u, nodes, which, shared: bool):
        r"""The series of each of ``which`` (a tuple of 0, 1) at ``u``, each node's to its own degree: a list of
        arrays shaped as ``u``.  The nodes are sorted by degree (descending), so
        that the step of degree $r$ runs on the prefix of the nodes that need it (the work is the sum of the degrees,
        not the largest degree times the nodes); the sorted layout of a node set is kept for the next call (the
        Picard sweeps of a wavefront ask the same nodes again).  Three buffers in rotation ($b_{r+2}$ is overwritten
        by $b_r$: no copies); a node's columns stay zero until its degree is reached.  Both series run in one
        pass (their columns side by side, all 2-d: numpy slices of ``(rows, 1, k)`` ran 2.6x slower per element).
        ``shared``: ``nodes`` (leading axis 1) serve every row of ``u``."""
        w = list(which)
        if not shared:
            coef = self.coef[:, nodes][..., w]
            ue = u[..., None]
            b1, b2, u2 = np.zeros(coef.shape[1:]), np.zeros(coef.shape[1:]), 2.0 * ue
            for r in range(coef.shape[0] - 1, 0, -1):
                b1, b2 = u2 * b1 - b2 + coef[r], b1
            val = ue * b1 - b2 + coef[0]
            return [val[..., i] for i in range(len(w))]
        flat = nodes.ravel()
        N = flat.size
        key = (tuple(w), N, hash(flat.tobytes()))
        hit = self._layouts.get(key)
        if hit is None or not np.array_equal(hit[0], flat):
            if len(self._layouts) >= _LAYOUTS:
                self._layouts.clear()
            deg = self.degrees[flat][:, w].T.ravel()              # the columns: (series, node), series-major
            order = np.argsort(-deg, kind="stable")
            top = int(deg[order[0]]) if deg.size else 0
            active = np.searchsorted(-deg[order], -np.arange(top + 1), side="right").tolist()   # degree >= r
            coef = self.coef[: top + 1, flat][..., w].transpose(0, 2, 1).reshape(top + 1, -1)[:, order]
            hit = self._layouts[key] = (flat.copy(), order, order % N if N else order, top, active, coef)
        _, order, column, top, active, coef = hit
        rows = u.shape[0]
        us = u.reshape(rows, -1)[:, column]                                  # (rows, series x nodes) sorted
        u2 = 2.0 * us
        b1, b2, b0 = (np.zeros_like(us) for _ in range(3))                   # b_{r+1}, b_{r+2}, scratch
        for r in range(top, 0, -1):
            k = active[r]
            t = np.multiply(u2[:, :k], b1[:, :k], out=b0[:, :k])
            t -= b2[:, :k]
            t += coef[r, :k]
            b1, b2, b0 = b0, b1, b2
        res = np.empty_like(us)
        res[:, order] = us * b1 - b2 + coef[0]
        return [res[:, i * N:(i + 1) * N].reshape(u.shape) for i in range(len(w))]

    def inside(self, c, idx) -> np.ndarray:
        """Per row of ``c``: whether every value lies in its node's range (the table's fixed point)."""
        th = angle_of(self.n[idx], c)
        ok = (th >= self.lo[idx]) & (th <= self.hi[idx])
        return np.all(ok.reshape(ok.shape[0], -1), axis=1)


def _cut(rel, R: int, tol: float):
    r"""``(drop, degrees)``: the sums ``drop`` of the relative coefficients ``rel`` ``(R+1, ...)`` from each degree on,
    and per series the lowest degree whose dropped coefficients sum to at most ``_TRUNCATE`` tol (a bound:
    $|T_k|\le1$)."""
    drop = np.cumsum(rel[::-1], axis=0)[::-1]                                  # sum_{k >= r}
    keep = drop > _TRUNCATE * tol                                              # r is needed
    return drop, np.where(np.any(keep, axis=0), R - np.argmax(keep[::-1], axis=0), 0)


def _lobatto_values(R: int) -> np.ndarray:
    """``(R+1, R+1)``: the Chebyshev polynomials $T_0..T_R$ at the degree-``R`` Lobatto points (a series' values there)."""
    return chebyshev_matrix(lobatto(R), R)
