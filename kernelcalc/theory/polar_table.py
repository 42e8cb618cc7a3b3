r"""The polar-sector rule tabulated in $(\log q_1,\log q_2,\theta)$: the dual kernels of a piecewise activation
without closed form (kinks at 0: ``Piecewise((tanh(x), x > 0), (x, True))``, ``Max(x, tanh(x)/2)``,
``Abs(tanh(x))``) at a few microseconds per evaluation instead of ~100-200.

The polar-sector rule (:class:`~kernelcalc.theory.gaussian_rules.PolarSectorRule`) sums a few thousand integrand
values per covariance (measured 93 us for $C$, 193 us for $(C,\dot C)$ compiled), and a Neural-ODE Gram evaluates it
some $10^5$ times.  But $C$ and $\dot C$ are smooth functions of three numbers: for kinks at 0 the polar sectors
make them analytic in the angle $\theta=\arccos\rho$ on $[0,\pi]$ (the kinks are rays: $\dot C$'s
$\sqrt{1-\rho}$ is linear in $\theta$), and in the variances on $q>0$.  So they are tabulated once per kernel as a
tensor Chebyshev series in $t_i=\log q_i$ over the variances the solves meet (from the smallest announced input norm's
$\sigma_u^2|x|^2/d$ to $1.05\,q(T)$ of the largest, known when the time grid is chosen) and in $\theta$ on $[0,\pi]$:
symmetric in $(q_1,q_2)$, the degrees doubled (8, 16, 32 in $\log q$, a wide span 20 then 32; 32, 64, 128 in $\theta$,
nested Lobatto points) until the series' tails are below tol/2.  Measured (coefficient tails of the rule at 1e-13): 20-24 in $\log q$ over
$[0.1, 8]$ (the table: 32), about 13 over $[1, 3]$ (16); in $\theta$ 22-28 at $q=0.1$, 31-44 at $q=1$, 40-62 at $q=4$.  Its error is the tails plus a held-out check against the rule at random points; a table that
cannot meet tol is not used (the rule is, as before).  The build evaluates the rule on the tensor grid in numpy
(:meth:`~kernelcalc.theory.gaussian_rules.PolarSectorRule.tensor_np`: for one angle a matrix product over the rule's
nodes, $2(m+1)$ function values per node instead of $(m+1)(m+2)/2$), nothing compiled: 0.3 s for $[1, 1.9]$ (it took
2.7 s compiled, point by point).  An evaluation contracts the variances once per distinct $(q_1,q_2)$ in a call (the
solvers ask many correlations of one time cell), then $R+1$ terms a point.  Variances outside the table (a zero input, a later call with
smaller norms) are evaluated by the rule itself.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .._blas import one_blas_thread
from .._x64 import float64
from ._chebyshev import chebyshev_coefficients, chebyshev_matrix, clenshaw, lobatto
from .duals_ops import NUMPY_OPS
from .gaussian_rules import PolarSectorRule, numpy_pairs

__all__ = ["TabulatedPolarRule", "tabulate_polar"]

_M_LEVELS = (8, 16, 32)         # Lobatto degrees in log q (doubled while the tail is above tol / 2)
_M_SPANS = (0.25, 2.0)          # spans of log q up to which the table starts at _M_LEVELS[0], [1] (else _M_WIDE)
#: the first degree in log q of a wide span, then 32 (measured, the tanh kink on [0.128, 14.4] at the kinked solver's
#: 5e-12: degree 20 meets it, 2.4e-12, built in 0.4 s where degree 32 took 2.2 s; at 1e-13 it climbs to 32)
_M_WIDE = 20
_R_LEVELS = (32, 64, 128)       # ... in theta on [0, pi]
_HELD_OUT = 48                  # random (q1, q2, theta) checked against the rule
_HELD_OUT_TOP = 24              # ... and at the largest variances, angles near 0 and pi (:func:`_build`)
_CHUNK = 8192                   # points per evaluation of the theta series (their (points, R + 1) temporaries)
_CELLS = 1024                   # variance pairs per contraction to the theta series (their (cells, m + 1, R + 1))
#: first variances memoised per table (each (m + 1, 2 (R + 1)) floats: 34 kB at m = 32, R = 64)
_FIRST_MEMO = 1024


def _coefficients(F: np.ndarray, axis: int) -> np.ndarray:
    """Chebyshev coefficients along ``axis`` of values at the Lobatto points (increasing)."""
    return np.moveaxis(chebyshev_coefficients(np.moveaxis(F, axis, 0)), 0, axis)


@dataclasses.dataclass(frozen=True, eq=False)
class TabulatedPolarRule:
    r"""$C$ and $\dot C$ of a :class:`~kernelcalc.theory.gaussian_rules.PolarSectorRule`, or of a dear closed form of
    a $\phi$ whose kinks are at 0 (elu: bivariate Mills ratios), as tensor Chebyshev series (module doc).
    ``values_np(q1, q2, c) -> (C, Cdot)`` and ``at_variances`` (numpy; every solver: the kinked ones, the tensor
    grid's Newton solves, the Euler march); ``expect_pairs`` (jax) is the
    polar rule's own; a tabulated closed form answers as a closed form does (``__call__``, ``C_formula``, ``name``,
    numpy only), so that its dual keeps ``method="closed"``."""

    rule: object               # PolarSectorRule | ClosedFormDual
    activation: object         # (the rule's integrands, for variances outside the table)
    t_lo: float
    t_hi: float
    coef: np.ndarray           # (2, m + 1, m + 1, R + 1): C and Cdot
    error: float               # relative to the largest |C|, |Cdot| of the table
    rule_error: float = 0.0    # the rule's own error estimate (the dual's, before the table's was added)
    #: the series in log q2 and theta at each first variance met, ``{q1: (2, m + 1, R + 1)}`` (a memo: the solvers'
    #: cells pair the same variances q_x(t) with many, call after call; :meth:`_first_series`)
    _by_first: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    gap_form = None            # (the closed-form interface: no gap form, no per-variance parts)
    C_at_variances = None

    @property
    def closed(self) -> bool:
        """Whether the tabulated rule is a closed form (else the polar-sector rule)."""
        return not isinstance(self.rule, PolarSectorRule)

    @property
    def name(self) -> str:
        m, R = self.degrees
        return (f"{getattr(self.rule, 'name', 'polar sectors')}, tabulated: Chebyshev degree {m} in log q on "
                f"[{math.exp(self.t_lo):.3g}, {math.exp(self.t_hi):.3g}] and {R} in theta (relative error "
                f"{self.error:.1e})")

    def __call__(self, q1, q2, c, ops=None):
        r"""$(C,\dot C)$ as a closed form's (numpy only; ``ops`` does not apply: the table is exact to its error)."""
        return self.values_np(q1, q2, c)

    def C_formula(self, ops, q1, q2, c):
        return self.values_np(q1, q2, c, derivative=False)[0]

    @property
    def n_angle(self) -> int:
        return self.rule.n_angle

    @property
    def n_radius(self) -> int:
        return self.rule.n_radius

    @property
    def points(self) -> int:
        """The cost of an evaluation (the cost guards'): its series in theta, two of R + 1 terms (every solver evaluates
        the table in numpy, its variances contracted once per solve: :meth:`at_variances`)."""
        return 2 * (self.degrees[1] + 1)

    @property
    def degrees(self) -> tuple[int, int]:
        """(degree in log q, degree in theta)."""
        return self.coef.shape[1] - 1, self.coef.shape[3] - 1

    def describe(self) -> str:
        if self.closed:
            return f"closed form ({self.name})"
        m, R = self.degrees
        return (f"polar sectors, {self.n_angle}x4 angles x {self.n_radius} radii, tabulated: Chebyshev degree {m} in "
                f"log q on [{math.exp(self.t_lo):.3g}, {math.exp(self.t_hi):.3g}] and {R} in theta "
                f"(relative error {self.error:.1e})")

    def expect_pairs(self, pairs, q1, q2, c):
        return self.rule.expect_pairs(pairs, q1, q2, c)

    @float64
    def values_np(self, q1, q2, c, derivative: bool = True):
        r"""$(C,\dot C)$ (``(C,)`` without ``derivative``) at broadcast arrays (numpy): the table where both variances
        lie in it, else the rule."""
        q1, q2, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, c)))
        return self.at_variances(q1, q2, derivative)(c)

    @float64
    def at_variances(self, q1, q2, derivative: bool = True):
        r"""$c\mapsto(C,\dot C)$ (``(C,)`` without ``derivative``) at the fixed variances ``q1``, ``q2`` (numpy; ``c`` of
        their broadcast shape).  The
        solvers ask many correlations of one $(q_1,q_2)$ (a time cell: many input angles, every Picard or Newton
        sweep), so the variances are contracted once: the series in $\log q_1$ once per distinct $q_1$ ($(m+1)^2(R+1)$
        terms), then in $\log q_2$ once per distinct pair ($(m+1)(R+1)$), leaving a series of $R+1$ terms in
        $\theta$ per point.  Variances outside the table: the rule's own values."""
        q1, q2 = np.broadcast_arrays(np.asarray(q1, np.float64), np.asarray(q2, np.float64))
        shape = q1.shape
        q1, q2 = q1.ravel(), q2.ravel()
        lo, hi = math.exp(self.t_lo) * (1 - 1e-12), math.exp(self.t_hi) * (1 + 1e-12)
        inside = (q1 >= lo) & (q1 <= hi) & (q2 >= lo) & (q2 <= hi)
        idx, rest = np.nonzero(inside)[0], np.nonzero(~inside)[0]
        cells, inv, counts = np.unique(q1[idx] + 1j * q2[idx], return_inverse=True, return_counts=True)
        n_out = 2 if derivative else 1
        # the points in the order of their cells (a stable sort): each cell's series repeated for its points (contiguous
        # copies; none when every point is its own cell, the pair solves'), laid out by degree (R + 1, n_out, points)
        # for Clenshaw's recurrence, and each evaluation a gather of c and a scatter of the values, 1-D (a gather of
        # the series along their last axis, and a transpose of all of them, took 2.4 s of elu's 7.7 s on 200 2-D rows)
        order = np.argsort(inv.ravel(), kind="stable")
        GT = self._theta_series(cells.real, cells.imag, n_out, None if cells.size == idx.size else counts)
        pts = idx[order]
        # (sqrt(q1 q2) by a division below, not a product with the inverse: c = q on the diagonal must give rho = 1
        # exactly, theta = 0 -- one rounding off made theta 1.5e-8, and Cdot of a phi' that jumps at the kink moved
        # by 8e-9: review of stop 35)
        root = np.sqrt(q1[pts] * q2[pts])

        def at(c):
            c = np.broadcast_to(np.asarray(c, np.float64), shape).ravel()
            out = np.empty((n_out, c.size))
            for s in range(0, pts.size, _CHUNK):         # sum_r g_r T_r(x), x = 2 theta / pi - 1
                k = pts[s:s + _CHUNK]
                out[:, k] = clenshaw(GT[:, :, s:s + _CHUNK],
                                     2.0 * np.arccos(np.clip(c[k] / root[s:s + _CHUNK], -1.0, 1.0)) / math.pi - 1.0)
            if rest.size:
                out[:, rest] = self._outside(q1[rest], q2[rest], c[rest])[:n_out]
            return tuple(o.reshape(shape) for o in out)

        return at

    def _outside(self, q1, q2, c):
        r"""The rule's own $(C,\dot C)$ (numpy) at variances outside the table, once per distinct point: a zero variance
        (a zero input row: that variable is the constant 0, the correlation taken as 0 whatever ``c``, so a solve's
        cells with it are a few distinct points), or a norm below the range announced."""
        c = np.where(q1 * q2 > 0, c, 0.0)
        points, inv = np.unique(np.stack([q1, q2, c]), axis=1, return_inverse=True)
        return _rule_values(self.rule, self.activation, *points)[:, inv.ravel()]

    def _theta_series(self, a, b, n_out: int = 2, counts=None):
        """The series in theta, ``(R + 1, n_out, len(a))`` (C, and Cdot when ``n_out`` is 2; by degree first), at the
        variance pairs ``(a, b)`` (inside the table; sorted by ``a``), each repeated ``counts`` times when given (then
        ``(R + 1, n_out, sum(counts))``), each block repeated and transposed while it is in cache."""
        m, R = self.degrees
        span = self.t_hi - self.t_lo

        def cheb(v):
            return chebyshev_matrix(np.clip(2.0 * (np.log(v) - self.t_lo) / span - 1.0, -1.0, 1.0)
                                    if span > 0 else 0.0 * v, m)

        ends = None if counts is None else np.concatenate([[0], np.cumsum(counts)])
        GT = np.empty((R + 1, n_out, a.size if counts is None else int(ends[-1])))
        w = n_out * (R + 1)          # (the columns of C's series, then Cdot's)
        G = np.empty((min(a.size, _CELLS), w))
        for lo in range(0, a.size, _CELLS):      # (bounded temporaries: (cells, m + 1, 2 (R + 1)) at most)
            sa, Tb = a[lo:lo + _CELLS], cheb(b[lo:lo + _CELLS])
            n = sa.size
            ua, first = np.unique(sa, return_index=True)
            if 8 * ua.size <= n:
                # (a, b) sorted by a (np.unique of a + ib): the series in log q1 once per distinct a (memoised across
                # calls), then one matrix product per a (the solvers' cells: a time node's variance paired with many),
                # C's and Cdot's in one
                A = self._first_series(ua, cheb)
                for g, (i, j) in enumerate(zip(first, np.append(first[1:], n))):
                    np.matmul(Tb[i:j], A[g][:, :w], out=G[i:j])
            else:       # mostly distinct: (m + 1)^2 (R + 1) terms a pair
                G[:n] = np.einsum("uj,ujr->ur", Tb, (cheb(sa) @ self._rows).reshape(n, m + 1, -1)[..., :w])
            block = G[:n].reshape(n, n_out, R + 1)
            if counts is None:
                GT[:, :, lo:lo + n] = block.transpose(2, 1, 0)
            else:
                GT[:, :, ends[lo]:ends[lo + n]] = np.repeat(block, counts[lo:lo + n], axis=0).transpose(2, 1, 0)
        return GT

    @functools.cached_property
    def _rows(self) -> np.ndarray:
        r"""The coefficients by the first variance's degree, ``(m + 1, (m + 1) 2 (R + 1))``: for each degree in
        $\log q_2$, C's series in theta then Cdot's (one matrix product gives both)."""
        m, R = self.degrees
        return np.ascontiguousarray(self.coef.transpose(1, 2, 0, 3)).reshape(m + 1, -1)

    def _first_series(self, ua, cheb):
        r"""The series in $\log q_2$ and $\theta$ at the first variances ``ua``: ``[(m + 1, 2 (R + 1))]`` (C's series in
        $\theta$, then Cdot's), computed ($(m+1)^2(R+1)$ terms each) where not met before, memoised (at most
        :data:`_FIRST_MEMO` variances: a full memo is cleared, the working set of the solves that follow filling it
        again).  Measured (tanh kink, 2000 standardised rows: 26k first variances over the solves' 212 calls, 890
        distinct): the contraction 4.6 -> 1.1 s."""
        m, R = self.degrees
        memo = self._by_first
        keys = ua.tolist()
        hits = {x: memo.get(x) for x in keys}          # (one read per key: a memo cleared meanwhile, by another
        missing = [x for x, v in hits.items() if v is None]      # thread's call, is not read again)
        if missing:
            A = (cheb(np.array(missing)) @ self._rows).reshape(len(missing), m + 1, 2 * (R + 1))
            fresh = {x: A[g] for g, x in enumerate(missing)}      # (views of one block: no copies)
            hits.update(fresh)
        out = [hits[x] for x in keys]
        if missing:
            if len(memo) + len(missing) > _FIRST_MEMO:      # (bounded: the solves' working set starts afresh)
                memo.clear()
            if len(missing) <= _FIRST_MEMO:
                memo.update(fresh)
        return out


def _rule_values(rule, activation, q1, q2, c):
    """The tabulated rule's own (C, Cdot), ``(2, ...)`` (numpy, nothing compiled): the polar rule's, or the closed
    form's."""
    if isinstance(rule, PolarSectorRule):
        return np.stack(rule.expect_pairs_np(numpy_pairs(activation), q1, q2, c))
    return np.stack(np.broadcast_arrays(*rule(q1, q2, c, ops=NUMPY_OPS)))


def _exact(rule, activation, q1, q2, th):
    """The rule's (C, Cdot) at arrays of variances and angles (the held-out check)."""
    return _rule_values(rule, activation, q1, q2, np.sqrt(q1 * q2) * np.cos(th))


def _values(rule, activation, t, th):
    """(2, m + 1, m + 1, R + 1) values at the log-variances ``t`` (both axes) and angles ``th``: the polar rule on the
    tensor grid (:meth:`~kernelcalc.theory.gaussian_rules.PolarSectorRule.tensor_np`, one matrix product per
    angle), a closed form at the pairs ``i <= j`` (symmetric)."""
    q = np.exp(t)
    if isinstance(rule, PolarSectorRule):
        return np.stack(rule.tensor_np(numpy_pairs(activation), q, th))
    i, j = np.triu_indices(q.size)
    Q1, Q2 = q[i][:, None], q[j][:, None]
    got = _rule_values(rule, activation, Q1, Q2, np.sqrt(Q1 * Q2) * np.cos(th)[None, :])    # (2, pairs, R + 1)
    F = np.empty((2, q.size, q.size, th.size))
    F[:, i, j] = got
    F[:, j, i] = got
    return F


def _tail(coef: np.ndarray, axis: int, scale: np.ndarray) -> float:
    """Twice the largest |coefficient| of the two highest degrees along ``axis``, relative to ``scale`` (per output)."""
    c = np.abs(np.moveaxis(coef, axis, 1))[:, -2:]
    return float(np.max(np.max(c.reshape(2, -1), axis=1) / scale)) * 2.0


#: tables built in this process: (rule, activation) -> tables (a few) and the (t_lo, t_hi, tol) of builds that missed:
#: a solver's request within the range of one whose error meets its tol is served by it (the kinked solver and its tensor grid of unequal norms ask for the same variances; a table widened
#: to the norms announced later covers the first request)
_BUILT: dict = {}
_BUILT_MAX = 8


@float64
def tabulate_polar(dual, q_lo: float, q_hi: float, tol: float):
    r"""A :class:`TabulatedPolarRule` of the polar dual ``dual`` (its rule and activation) for variances in
    $[q_{lo},q_{hi}]$ (module doc; a closed form's too, for a $\phi$ whose kinks are at 0: the caller's choice), or
    ``None`` when its degrees cannot meet ``tol`` (relative to the largest $|C|$,
    $|\dot C|$): then the rule itself.  A table of the same rule built before whose range holds $[q_{lo},q_{hi}]$ and
    whose error meets ``tol`` is returned as it is (memoised, :data:`_BUILT`); a request that holds the range of a build
    that missed a tol at least as loose gets ``None`` at once (a solver asks again at every call)."""
    rule = dual.rule
    if not (isinstance(rule, PolarSectorRule) or (dual.method == "closed" and dual.numpy_ok)) or not (
            0 < q_lo <= q_hi and math.isfinite(q_hi)):
        return None
    key = (rule, dual.activation)
    t_lo, t_hi = math.log(q_lo), math.log(q_hi)
    for table in _BUILT.get(key, ()):
        if isinstance(table, tuple):      # a build that missed tol over a range within this one, at a tol as strict
            if table[0] >= t_lo - 1e-12 and table[1] <= t_hi + 1e-12 and table[2] >= tol:
                return None
        elif table.t_lo <= t_lo + 1e-12 and table.t_hi >= t_hi - 1e-12 and table.error <= tol:
            return table
    with one_blas_thread():      # (the build's products: threads thrash on a busy machine)
        table = _build(dual, q_lo, q_hi, tol)
    if len(_BUILT) >= _BUILT_MAX and key not in _BUILT:
        _BUILT.pop(next(iter(_BUILT)))
    _BUILT[key] = (_BUILT.get(key, ()) + ((t_lo, t_hi, float(tol)) if table is None else table,))[-4:]
    return table


def _held_out_points(t_lo, t_hi):
    """``(q1, q2, theta)`` where a table is checked against its rule: :data:`_HELD_OUT` log-uniform variances, a third
    of the angles within 1e-8..1 of 0, a third of pi (the kinks' sqrt(1 - rho), the large-q layers), and
    :data:`_HELD_OUT_TOP` more in the top fifth of log q, half within 1e-3..1 of pi, half of 0 (the tanh kink on
    [0.01, 100]: its Cdot at q ~ 90, theta = 3.08 erred by 3.8e-10 where the first 48 saw 1.2e-11; review of stop 37)."""
    rng = np.random.default_rng(0)
    q1 = np.exp(rng.uniform(t_lo, t_hi, _HELD_OUT))
    q2 = np.exp(rng.uniform(t_lo, t_hi, _HELD_OUT))
    th = np.concatenate([rng.uniform(0.0, math.pi, _HELD_OUT - 2 * (_HELD_OUT // 3)),
                         10.0 ** rng.uniform(-8, 0, _HELD_OUT // 3), math.pi - 10.0 ** rng.uniform(-8, 0, _HELD_OUT // 3)])
    top = t_hi - 0.2 * (t_hi - t_lo)
    q1 = np.concatenate([q1, np.exp(rng.uniform(top, t_hi, _HELD_OUT_TOP))])
    q2 = np.concatenate([q2, np.exp(rng.uniform(top, t_hi, _HELD_OUT_TOP))])
    near = 10.0 ** rng.uniform(-3, 0, _HELD_OUT_TOP)
    return q1, q2, np.concatenate([th, np.where(np.arange(_HELD_OUT_TOP) % 2 == 0, math.pi - near, near)])


def _build(dual, q_lo, q_hi, tol):
    """:func:`tabulate_polar` without the memo."""
    rule = dual.rule
    act = dual.activation
    t_lo, t_hi = math.log(q_lo), math.log(q_hi)
    # the first degree in log q by the span (measured, the module doc: ~13 over [1, 3], 20-24 over [0.1, 8])
    span = int(np.searchsorted(_M_SPANS, t_hi - t_lo))
    levels = _M_LEVELS[span:] if span < 2 else (_M_WIDE,) + _M_LEVELS[2:]
    mi, ri = 0, 0
    m, R = levels[mi], _R_LEVELS[ri]

    def nodes(m, R):
        return (t_lo + (t_hi - t_lo) * (lobatto(m) + 1.0) / 2.0 if t_hi > t_lo else np.full(m + 1, t_lo),
                math.pi * (lobatto(R) + 1.0) / 2.0)

    F = _values(rule, act, *nodes(m, R))
    q1, q2, th = _held_out_points(t_lo, t_hi)
    ref = None
    missed = False         # the tails passed and the held-out points did not: one level more
    while True:
        coef = _coefficients(_coefficients(_coefficients(F, 1), 2), 3)
        scale = np.maximum(np.max(np.abs(F).reshape(2, -1), axis=1), 1e-300)
        tail_t = _tail(coef, 2, scale) if t_hi > t_lo else 0.0
        tail_th = _tail(coef, 3, scale)
        if tail_t <= tol / 2 and tail_th <= tol / 2:
            # held-out: random variances (log-uniform) and angles against the rule
            table = TabulatedPolarRule(rule, act, t_lo, t_hi, coef, max(tail_t, tail_th))
            ref = _exact(rule, act, q1, q2, th) if ref is None else ref
            got = np.stack(table.values_np(q1, q2, np.sqrt(q1 * q2) * np.cos(th)))
            held = float(np.max(np.max(np.abs(got - ref), axis=1) / scale))
            error = max(tail_t, tail_th, 3.0 * held)
            if error <= tol:
                return dataclasses.replace(table, error=error)
            # (measured: the tanh kink at tol 2.5e-8 on [0.1, 31]: its theta tail at 32 was 1.1e-8, its held-out
            # error 2e-8 -- the table was refused, the rule itself taken, and the call refused by the cost guard)
            missed = True
        # the axis whose tail is above tol / 2; after a held-out miss, the one whose tail is the larger
        more_th = tail_th > tol / 2 or (missed and (tail_th >= tail_t or mi + 1 >= len(levels)))
        if more_th and ri + 1 < len(_R_LEVELS):
            ri += 1
            R2 = _R_LEVELS[ri]
            t, th_nodes = nodes(m, R2)
            G = np.empty(F.shape[:3] + (R2 + 1,))
            G[..., 0::2], G[..., 1::2] = F, _values(rule, act, t, th_nodes[1::2])
            F, R = G, R2
        elif (tail_t > tol / 2 or missed) and mi + 1 < len(levels):
            mi += 1
            m = levels[mi]
            F = _values(rule, act, *nodes(m, R))
        else:
            return None
        missed = False


