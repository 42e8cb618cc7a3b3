r"""Large-$q$ duals at a cost independent of $q$ *and* of the remainder's resolution: the inner Gaussian average
of the localised remainder is tabulated once per activation.

With the decomposition $f=A+R$ of :mod:`kernelcalc.theory.largeq` ($f\in\{\phi,\phi'\}$, $A$ a closed-form
asymptote, $R$ analytic and localised on $|x|\le L$),

$$E[f(a)f(b)] = E[A(a)A(b)] + E[R(a)A(b)] + E[A(a)R(b)] + E[R(a)R(b)].$$

The first term is closed; the other three are one trapezoid sum each over the localised variable ($|x|\le L$, step
$h$), with the closed conditional of the asymptote for the cross terms and, for the last, the remainder's inner
Gaussian average $G(\mu,s)=E[R(\mu+sZ)]$ tabulated once per activation
(:class:`~kernelcalc.theory.largeq_remainder.RemainderTable`, re-exported here): a few $10^4$ flops per covariance,
against $\sim(2L/h)\cdot n_{\rm inner}$ remainder evaluations of the window rule
(:class:`~kernelcalc.theory.largeq.AsymptoticRule`).

**Far from parallel** ($\min(q_1,q_2)(1-r^2)\ge V_0$, :func:`~kernelcalc.theory.largeq_far.far_mask`) the rule
(``far=True``, the default) uses the moment series of :mod:`kernelcalc.theory.largeq_far` instead: no quadrature,
about 2-6 us per $(C,\dot C)$ against 150-250 us (``benchmarks/bench_largeq_table.py``, 2048 covariances).  The
near-parallel rest is moved to the front by a stable sort and integrated as above in chunks of ``_CHUNK``
covariances, in a loop whose trip count is their number (:func:`_patched`; fixed shapes under jit, and chunks small
enough to stay in cache, which alone makes the quadrature 2-6x cheaper per covariance than one large block).
:func:`choose_tabulated` adds the series' measured difference from the quadrature (:func:`far_difference`) to the
error estimate.

**In the near-parallel band at large variances** ($\min(q_1,q_2)\ge Q_{\rm near}=100$, ``near=True``, ``gelu`` family)
the tables of :mod:`kernelcalc.theory.largeq_near` replace the quadrature (about 7-9x cheaper per $(C,\dot C)$, same
benchmark); their held-out errors enter :attr:`TabulatedRule.table_error` and :func:`far_difference`.

**In the near-parallel band below** $Q_{\rm near}$ ($Q_{\rm low}=0.25\le\min(q_1,q_2)$, ``low=True``, ``gelu`` family)
the tables in $\log q$ of :mod:`kernelcalc.theory.largeq_low` take every term with a variance below $Q_{\rm near}$:
both variances there (6-7x cheaper than the quadrature), or the cross term over the smaller one of a mixed cell
(whose trapezoid sum also missed very unequal variances near parallel); their held-out errors enter
:attr:`TabulatedRule.table_error`.  Only cells with a variance below $Q_{\rm low}$ (and far from parallel: the series)
are left to the quadrature.

**Compiled once per process.**  Outside a caller's jit (``blocked=``
:func:`~kernelcalc.theory.gaussian_rules.padded_blocked`, :meth:`TabulatedRule.values_np`) the regime of each
covariance is known before anything runs: :func:`~kernelcalc.theory.largeq_dispatch.eager_values` partitions the
covariances by the same masks in numpy and evaluates each regime met by its own compiled function at one chunk shape
(only the regimes met are compiled, the quadrature usually never; the same values as the block to rounding; measured
on the covariances of a softplus $\sigma_wT=10$ kernel: 8.5 against 12.4 us per $(C,\dot C)$, and 5.0 against 7.3 s
to compile the four regimes it meets against the block).  :func:`choose_tabulated`'s checks of the rule it returns and
the kinked solvers' evaluations share those compiles; the step levels of the selection and the reference of
:func:`far_difference` evaluate the quadrature in numpy (:mod:`~kernelcalc.theory.largeq_quadrature`: about $10^2$
covariances, nothing compiled).  Inside a caller's jit the rule is one block (:func:`_block`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from .._validation import accuracy_shortfall
from .activations import Activation
from .largeq import Asymptote, asymptote_of, first_settled, level_values
from .largeq_far import N_TERMS, V0, far_expect, far_mask, moment_table
from .largeq_near import Q_NEAR, near_expect, near_mask, near_table
from .largeq_low import Q_LOW, low_expect, low_mask, low_mixed, low_table
from .largeq_remainder import RemainderTable, remainder_table
from .gaussian_rules import padded_blocked
from .largeq_dispatch import eager_values
from .largeq_quadrature import NumpyQuadrature, quadrature as _quadrature

__all__ = ["RemainderTable", "remainder_table", "TabulatedRule", "choose_tabulated", "cheapest_tabulated_rule",
           "far_difference"]

@dataclasses.dataclass(frozen=True)
class TabulatedRule:
    r"""$E[f(a)f(b)]$, $f\in\{\phi,\phi'\}$, by asymptote + localised remainder with the inner average
    tabulated (module doc).  ``h``: the trapezoid step of the outer sums over $|x|\le L$.  ``far``: where
    $\min(q_1,q_2)(1-r^2)\ge V_0$ (:func:`~kernelcalc.theory.largeq_far.far_mask`) use the moment series of
    :mod:`kernelcalc.theory.largeq_far` instead (no quadrature; 30-150x cheaper per covariance), and run the
    quadrature only on the near-parallel rest, in chunks (:func:`_patched`).  ``near``: where moreover
    $\min(q_1,q_2)\ge Q_{\rm near}$ (:func:`~kernelcalc.theory.largeq_near.near_mask`), use the near-band tables of
    :mod:`kernelcalc.theory.largeq_near` (``gelu`` family only; no quadrature, ~9x cheaper per covariance), and where
    only the larger variance is $\ge Q_{\rm near}$ the tables plus a trapezoid sum for the one cross term left.  ``low``:
    where moreover $\min(q_1,q_2)\ge Q_{\rm low}$, the tables in $\log q$ of :mod:`kernelcalc.theory.largeq_low` for
    every term with a variance below $Q_{\rm near}$ (both variances low, or that cross term of a mixed cell)."""

    asymptote: Asymptote
    h: float = 0.3
    far: bool = True
    near: bool = True
    low: bool = True

    @property
    def near_on(self) -> bool:
        """Whether the near-band tables are used (``near`` and an asymptote of the ``gelu`` family)."""
        return self.near and self.asymptote.family == "gelu"

    @property
    def low_on(self) -> bool:
        r"""Whether the low-variance tables of :mod:`~kernelcalc.theory.largeq_low` are used (``low`` and
        :attr:`near_on`): for $Q_{\rm low}\le\min(q_1,q_2)<Q_{\rm near}$ in the near-parallel band."""
        return self.low and self.near_on

    @property
    def n_out(self) -> int:
        return 2 * int(self.asymptote.L / self.h) + 1

    @property
    def points(self) -> int:
        r"""Cost of one $(C, \dot C)$ in the unit of the window rule's
        :attr:`~kernelcalc.theory.largeq.AsymptoticRule.points` (one remainder evaluation with its Gaussian
        weight), calibrated by timing both rules side by side (tanh, softplus, 2048 covariances, jit): one outer
        node of the three sums (both $f$) costs about 8 such points, and the $s$-contraction of both tables
        about one point per 125 multiply-adds (a dense matrix product).  Measured: tanh at $h=0.22$ 2110 point
        equivalents (window rule 19159), softplus at $h=0.4$ 1840-5090 (window rule 74793)."""
        tab = remainder_table(self.asymptote, False)
        return int(math.ceil(2 * tab.flops / 125.0 + 8 * self.n_out))

    @property
    def memory_points(self) -> int:
        """Float64 work values per covariance (for the memory-bounded blocks)."""
        tab = remainder_table(self.asymptote, False)
        return tab.coef.shape[0] * tab.coef.shape[1] + tab.coef.shape[2] * tab.coef.shape[3] + self.n_out * (tab.coef.shape[3] + 8)

    @property
    def table_error(self) -> float:
        """The largest measured (held-out) error of the tables: the two remainder tables (relative to max |R|) and,
        with ``far``, the two moment tables of :mod:`kernelcalc.theory.largeq_far` (relative to their largest
        term)."""
        err = max(remainder_table(self.asymptote, d).error for d in (False, True))
        if self.far:
            err = max(err, *(moment_table(self.asymptote, d).error for d in (False, True)))
        if self.near_on:     # relative to the kernel's norm, held-out and density tail (largeq_near)
            err = max(err, *(near_table(self.asymptote, d).error for d in (False, True)))
        if self.low_on:      # relative to the kernel's norm, held-out (largeq_low)
            err = max(err, *(low_table(self.asymptote, d).error for d in (False, True)))
        return err

    @property
    def far_points(self) -> int:
        r"""Cost of one $(C,\dot C)$ in the far regime (:func:`~kernelcalc.theory.largeq_far.far_mask`), in the unit
        of :attr:`points`: measured side by side (``benchmarks/bench_largeq_table.py``, 2048 covariances) at
        2.7-4 us against 37-39 us for the quadrature in chunks, i.e. about 1/12 of :attr:`points` (1/40 against the
        quadrature in one block, before the chunks).  :attr:`points` stays the worst case (every covariance
        near-parallel)."""
        return int(math.ceil(self.points / 12.0))

    @property
    def near_points(self) -> tuple:
        r"""``(both, one)``: cost of one $(C,\dot C)$ in the unit of :attr:`points` by the near tables where both
        variances are $\ge Q_{\rm near}$, and where one is (tables plus one trapezoid cross term), measured side by side
        (2048 near-parallel covariances, CPU time; ``benchmarks/bench_largeq_table.py``): about 1/7 and 1/3.5 of the
        quadrature's (softplus, 5.1-5.5 and 10.9-11.1 us against 37-39 us at load 3-4; 1/8.5 at load 5-7 before)."""
        return int(math.ceil(self.points / 7.0)), int(math.ceil(self.points / 3.5))

    @property
    def low_points(self) -> tuple:
        r"""``(both, mixed)``: cost of one $(C,\dot C)$ in the unit of :attr:`points` by the low tables
        (:attr:`low_on`) where both variances lie in $[Q_{\rm low},Q_{\rm near})$, and on a mixed cell (near tables plus
        the low cross table), measured side by side with the quadrature and the near tables (the same benchmark and
        run): about 1/6.5 of the quadrature's for both (softplus, 4.8-5.9 us at q = 1-50 and 5.8-5.9 us on mixed cells,
        against 35-39 us)."""
        return int(math.ceil(self.points / 6.5)), int(math.ceil(self.points / 6.5))

    def describe(self) -> str:
        tab = remainder_table(self.asymptote, False)
        return (f"large-q asymptote ({self.asymptote.family}) + localised remainder with a tabulated inner average "
                f"({tab.coef.shape[0]}x{tab.coef.shape[1]} s by {tab.coef.shape[2]}x{tab.coef.shape[3]} mu "
                f"Chebyshev coefficients), step {self.h:g} on |x| <= {self.asymptote.L:g}"
                + (f"; moment series of {N_TERMS} terms where min(q1, q2)(1 - r^2) >= {V0:g}" if self.far else "")
                + (f"; near-band tables where min(q1, q2) >= {Q_NEAR:g} and below" if self.near_on else "")
                + (f"; tables in log q where {Q_LOW:g} <= min(q1, q2) < {Q_NEAR:g}" if self.low_on else ""))

    def _one(self, q1, q2, c, derivative, cross_only=False, k=None):
        """The quadrature at this rule's step, traced (:func:`~kernelcalc.theory.largeq_quadrature.quadrature`;
        ``k``: padded nodes, as there)."""
        return _quadrature(self.asymptote, self.h, q1, q2, c, derivative, cross_only, k)

    def _mixed(self, asy, q1, q2, c, ds):
        """The near tables where one variance is below Q_NEAR, plus this rule's trapezoid sum for the cross term over
        that variable (the localised one of smaller variance: E[R(b) A(a)], b | a closed)."""
        out = near_expect(asy, q1, q2, c, ds, small=False)
        big1 = q1 >= q2
        qa, qb = jnp.where(big1, q1, q2), jnp.where(big1, q2, q1)
        return tuple(o + self._one(qb, qa, c, d, cross_only=True) for o, d in zip(out, ds))

    @float64
    def values_np(self, q1, q2, c):
        r"""$(C, \dot C)$ as numpy arrays for numpy covariances (broadcast), by
        :func:`~kernelcalc.theory.gaussian_rules.padded_blocked`: one compiled
        shape per rule, shared with :func:`choose_tabulated`'s checks of the rule it returns."""
        return self.expect(q1, q2, c, derivative=True, blocked=padded_blocked)

    @float64
    def expect(self, q1, q2, c, derivative: bool = True, blocked=None):
        r"""$(C, \dot C)$ (or $C$ alone) for arrays of covariances (broadcast); ``blocked`` as in
        :meth:`kernelcalc.theory.largeq.AsymptoticRule.expect`."""
        remainder_table(self.asymptote, False)
        if derivative:
            remainder_table(self.asymptote, True)

        if blocked is padded_blocked:     # eager: numpy masks, each regime by its own compiled function
            return eager_values(self, q1, q2, c, derivative)
        block = _block(self, derivative)
        if blocked is not None:
            return blocked(block, q1, q2, c, points=self.memory_points)
        q1, q2, c = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float64) for v in (q1, q2, c)))
        shape = q1.shape
        return tuple(o.reshape(shape) for o in block(q1.reshape(-1), q2.reshape(-1), c.reshape(-1)))


@functools.lru_cache(maxsize=64)
def _block(rule: TabulatedRule, derivative: bool):
    """``(q1, q2, c) -> (C,)`` or ``(C, Cdot)`` on flat arrays, compiled once per rule (the unrolled series would
    otherwise compile op by op in eager mode; inside a caller's jit it is inlined).  With ``rule.far`` / ``rule.near``:
    the moment series where :func:`far_mask` holds, the near tables where :func:`near_mask` holds (and the low tables
    where :func:`~kernelcalc.theory.largeq_low.low_mask` holds), the quadrature for the rest, each only on its own
    covariances (:func:`_patched`).  With the low tables a mixed cell whose smaller variance is below $Q_{\rm low}$ goes
    to the quadrature (rare: one regime less to compile into every caller, about a second each)."""
    ds = (False, True) if derivative else (False,)

    def quad(q1, q2, c):
        return tuple(rule._one(q1, q2, c, d) for d in ds)

    if not (rule.far or rule.near_on):
        return jax.jit(quad)

    def block(q1, q2, c):     # each covariance pays for its own regime only (chunks of its entries, _patched)
        rest = jnp.ones(q1.shape, bool)
        out = tuple(jnp.zeros_like(q1) for _ in ds)
        for on, mask, fn in ((rule.far, far_mask, far_expect), (rule.near_on, near_mask, near_expect),
                             (rule.low_on, functools.partial(low_mask, mixed=True), low_mixed),
                             (rule.near_on and not rule.low_on, functools.partial(near_mask, mixed=True), rule._mixed),
                             (rule.low_on, low_mask, low_expect)):
            if on:
                here = mask(q1, q2, c) & rest
                out = _patched(out, here, lambda a, b, cc, fn=fn: fn(rule.asymptote, a, b, cc, ds), q1, q2, c, _TABLE_CHUNK)
                rest = rest & ~here
        return _patched(out, rest, quad, q1, q2, c)
    return jax.jit(block)


_CHUNK = 64     # covariances per quadrature chunk of the near-parallel band
_TABLE_CHUNK = 256   # covariances per chunk of the series and tables (a few us each)


def _patched(out, near, quad, q1, q2, c, chunk=_CHUNK):
    r"""``out`` with the entries where ``near`` holds replaced by ``quad`` at those covariances: the near entries are
    moved to the front (a stable sort) and computed ``_CHUNK`` at a time in a loop whose trip count is their number
    (fixed shapes under jit; the quadrature's cost is paid only for the near entries)."""
    B = q1.shape[0]
    K = min(chunk, B)
    perm = jnp.argsort(~near, stable=True)
    order = jnp.concatenate([perm, jnp.full((K,), B, dtype=perm.dtype)])
    n_chunks = (jnp.sum(near.astype(perm.dtype)) + K - 1) // K

    def body(i, outs):
        idx = jax.lax.dynamic_slice(order, (i * K,), (K,))
        take = jnp.logical_and(idx < B, near.at[idx].get(mode="fill", fill_value=False))
        vals = quad(q1.at[idx].get(mode="fill", fill_value=1.0), q2.at[idx].get(mode="fill", fill_value=1.0),
                    c.at[idx].get(mode="fill", fill_value=0.0))
        dest = jnp.where(take, idx, B)
        return tuple(o.at[dest].set(v, mode="drop") for o, v in zip(outs, vals))
    return jax.lax.fori_loop(0, n_chunks, body, tuple(out))


_H_LEVELS = (0.4, 0.3, 0.22, 0.16)


def _far_edge(q1, q2, c):
    r"""The covariances ``(q1, q2, c)`` plus the edge of the far regime, $\min(q_1,q_2)(1-r^2)=V_0$, where the moment
    series converge slowest: equal variances and ratio 10, $\pm r$, for each distinct $q_1\ge V_0$ given."""
    q1, q2, c = (np.asarray(v, np.float64).ravel() for v in (q1, q2, c))
    qe = np.unique(q1[q1 >= V0])
    re = np.sqrt(np.maximum(1.0 - V0 / qe, 0.0))
    e1, e2 = np.tile(qe, 4), np.concatenate([qe, qe, 10.0 * qe, 10.0 * qe])
    er = np.concatenate([re, -re, re, -re])
    return np.concatenate([q1, e1]), np.concatenate([q2, e2]), np.concatenate([c, er * np.sqrt(e1 * e2)])


def far_difference(rule: TabulatedRule, q1, q2, c, blocked=None, quadrature=None) -> float:
    r"""The largest difference, relative to $\sqrt{E f(a)^2E f(b)^2}$, between ``rule`` (moment series where far, near
    tables where they apply) and its quadrature alone (the same rule with ``far=False, near=False``) for $C$ and $\dot C$
    at the covariances ``(q1, q2, c)`` (include the edge of the far regime: :func:`_far_edge`); 0 when both are off.
    ``quadrature``: the :func:`~kernelcalc.theory.largeq.level_values` of that quadrature-only rule, when known (else
    evaluated in numpy: :class:`~kernelcalc.theory.largeq_quadrature.NumpyQuadrature`, nothing to compile)."""
    if not (rule.far or rule.near_on):
        return 0.0
    fast, _ = level_values(rule, q1, q2, c, blocked)
    slow, norms = quadrature or level_values(NumpyQuadrature(rule.asymptote, rule.h), q1, q2, c, None)
    return max(float(np.max(np.abs(a - b) / np.maximum(n, 1e-300))) for a, b, n in zip(fast, slow, norms))


def cheapest_tabulated_rule(activation: Activation) -> TabulatedRule | None:
    """The coarsest level :func:`choose_tabulated` can return, or ``None`` without an asymptote."""
    asy = asymptote_of(activation)
    return None if asy is None else TabulatedRule(asy, _H_LEVELS[0])


@float64
def choose_tabulated(activation: Activation, q_max: float, tol: float, strict: bool = False,
                     q_min: float = 0.25, blocked=None):
    r"""The coarsest :class:`TabulatedRule` of the steps ``_H_LEVELS`` that agrees with the next finer one to
    ``tol`` (relative to $\sqrt{E f(a)^2 E f(b)^2}$) for $C$ and $\dot C$ at variances from ``q_min`` to
    ``q_max`` (log-spaced) at equal variances and ratio 2 for correlations $r\in\{-0.9,0,0.9,0.9999,1\}$, and
    ratio 100 for $r\in\{-0.9,0,0.9\}$.  (The cross terms' conditional $m_A(\kappa a,s)$ bends on the scale
    $\sqrt{q_a}\sqrt{\lambda^2/q_b+1-r^2}/|r|$ in the smaller-variance variable $a$; it is resolved by the
    step $h$ down to about $h$: very unequal variances at $|r|\to1$ with $q_a\sim1$ are not covered.  In the
    Neural-ODE recursions variances far apart in time are far from parallel.)  Returns ``(rule, error estimate)``: the estimate is the larger of that
    difference and the tables' measured error (:attr:`TabulatedRule.table_error`, relative to $\max|R|$,
    itself bounded by the kernel's scale) and the moment series' measured difference from the quadrature
    (:func:`far_difference`); warns (raises when ``strict``) when it exceeds ``10 * tol``."""
    asy = asymptote_of(activation)
    qs = np.geomspace(max(q_min, 1e-3), max(q_max, q_min), 5)
    r = np.array([-0.9, 0.0, 0.9, 0.9999, 1.0])
    r_far = np.array([-0.9, 0.0, 0.9])
    q1 = np.concatenate([np.repeat(qs, r.size)] * 2 + [np.repeat(qs, r_far.size)])
    q2 = np.concatenate([np.repeat(qs, r.size), np.repeat(2.0 * qs, r.size), np.repeat(100.0 * qs, r_far.size)])
    rr = np.concatenate([np.tile(r, 2 * qs.size), np.tile(r_far, qs.size)])
    q1, q2, c = _far_edge(q1, q2, rr * np.sqrt(q1 * q2))
    memo = {}

    def values(h):      # the quadrature alone (the levels differ only there), in numpy: ~10^2 covariances, no compile
        memo[h] = level_values(NumpyQuadrature(asy, h), q1, q2, c, None)
        return memo[h]

    table_err = TabulatedRule(asy).table_error
    settled, err = first_settled(_H_LEVELS, values, tol)
    rule = TabulatedRule(asy, settled if settled is not None else _H_LEVELS[-1])
    far_err = far_difference(rule, q1, q2, c, blocked, memo.get(rule.h))
    if settled is not None:
        return rule, max(err, table_err, far_err, 1e-16)
    est = max(err, table_err, far_err)
    if est > 10.0 * tol:
        accuracy_shortfall(f"tabulated large-q rule for {activation.name}: the finest step {_H_LEVELS[-1]} still "
                           f"changes by {err:.1e} (table error {table_err:.1e}) > tol = {tol:.1e} for variances up "
                           f"to q = {q_max:.4g}", strict)
    return rule, est
