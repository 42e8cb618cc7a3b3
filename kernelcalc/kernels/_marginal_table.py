r"""Hermite coefficients of $\phi$ and $\phi'$ tabulated in $\log q$: the marginals of many variances at once.

A Picard sweep of the numpy Mehler-series solves needs, for every variance $q$ on the time grid of every norm, the
normalised Hermite coefficients $b_k(q)=E[f(\sqrt q\,z)He_k(z)]/\sqrt{k!}$, $k<L(q)$
(:func:`~kernelcalc.theory.gaussian_hermite.short_coefficients`: a trapezoid projection, $L(q)\times n_z$
multiply-adds per variance, $n_z\approx1150$, $L$ up to $K=4144$ for tanh at $q=9$).  Off the sphere the self-kernel
solves of the norm grid make that projection for ~380 variances per sweep, and it was most of their time.

Each $b_k$ is an analytic function of $q>0$, and all of them are smooth in $t=\log q$: their Chebyshev
interpolants on Lobatto points in $t$ over the range of the variances converge fast (measured for tanh and
sech$^2$ on $q\in[0.13,9]$, $K=4144$: degree 16 leaves 8.5e-10 and 4.4e-9 of $\|b(q)\|$, degree 32 2.3e-15 and
2.6e-15, rounding).  :class:`CoefficientTable` computes the coefficients at the $m+1$ nodes once (full $K$
terms) and a variance's coefficients are then a barycentric combination of the node columns: $L(q)(m+1)$
multiply-adds instead of $L(q)\,n_z$, and no evaluation of $\phi$.  The degree starts at 32 and doubles (to 128)
until the interpolant meets ``tol`` (relative to $\|b(q)\|$) at held-out variances, where its deviation from the
direct projection is measured; a table that does not is not used.  Variances outside the range take the direct
projection.  The terms beyond $L(q)$ are zero, as :func:`~kernelcalc.theory.gaussian_hermite.short_coefficients`
leaves them (the same lengths, so the same truncations downstream).

:class:`TabulatedDual` is the :class:`~kernelcalc.theory.gaussian.DualKernels` of the Mehler series whose numpy
marginals come from the tables (everything else is the rule's own).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._blas import one_blas_thread
from .._lazy import jnp
from ..theory.gaussian import DEFAULT_TOL, DualKernels, series_lengths, short_coefficients
from ..theory.gaussian_hermite import (_hermite_functions, _hermite_step, _numpy_functions, _single_thread_product,
                                       bin_tails_of, bins_of)
from ._gram import pad_to
from ._interp import interval_weights, lobatto

__all__ = ["CoefficientTable", "TabulatedDual", "tabulated_dual", "TabulatedMarginals"]

_M0, _M_MAX = 32, 128      # Lobatto degrees in log q: the first and the last tried
_HELD_OUT = 9              # variances at which a table is checked against the direct projection
_MAX_CACHED = 256          # per-norm marginals kept per solver (~0.1 MB each for a 560-term series)


class CoefficientTable:
    r"""$b_k(q)$, $k<K$, of ``f`` for $q\in$ [``q_lo``, ``q_hi``] (module doc).

    **Arguments:** ``rule``: the :class:`~kernelcalc.theory.gaussian.HermiteRule`; ``f``: the numpy function;
    ``tol``: the relative accuracy the table must meet at held-out variances.

    **Attributes:** ``degree``, ``error`` (the largest measured deviation relative to $\|b(q)\|$), ``ok``
    (``error <= tol``: only then is the table used)."""

    def __init__(self, rule, f, q_lo: float, q_hi: float, tol: float, first=None):
        self.rule, self.f = rule, f
        self.q_lo, self.q_hi = float(q_lo), float(q_hi)
        self.t_lo, self.t_hi = math.log(self.q_lo), math.log(self.q_hi)
        held = self.held_out(self.q_lo, self.q_hi)
        # (``first``: the coefficients at the held-out variances and at the nodes of degree _M0, when computed
        # already: :func:`tabulated_dual` projects both functions at once)
        ref = rule.coefficients(f, held, xp=np) if first is None else first[0]     # (K, held)
        scale = np.maximum(np.sqrt(np.sum(ref * ref, axis=0)), 1e-300)
        m = _M0
        while True:
            self.degree = m
            self.values = np.ascontiguousarray(rule.coefficients(f, self._q(lobatto(m)), xp=np)
                                               if first is None or m != _M0 else first[1])   # (K, m+1)
            self.error = float(np.max(np.abs(self._interpolate(held) - ref) / scale))
            if self.error <= tol or 2 * m > _M_MAX:
                break
            m *= 2
        self.ok = self.error <= tol

    @staticmethod
    def held_out(q_lo: float, q_hi: float) -> np.ndarray:
        """The variances at which a table on [``q_lo``, ``q_hi``] is checked (random in log q, fixed seed)."""
        return np.exp(np.random.default_rng(0).uniform(math.log(q_lo), math.log(q_hi), _HELD_OUT))

    def _q(self, u):
        return np.exp(self.t_lo + 0.5 * (self.t_hi - self.t_lo) * (np.asarray(u) + 1.0))

    def _weights(self, q):
        return interval_weights(np.log(q), self.t_lo, self.t_hi, self.degree)

    def _interpolate(self, q):
        """All K coefficients at the variances ``q`` (1-D): ``(K, len(q))``."""
        return self.values @ self._weights(q).T

    def __call__(self, q, lengths) -> np.ndarray:
        r"""$b_k(q)$ for $k<L(q)$ (``lengths``, the shape of ``q``), zero beyond: ``(K, *q.shape)``; variances
        outside the range by the direct projection."""
        q = np.asarray(q, np.float64)
        flat, L = q.reshape(-1), np.asarray(lengths).reshape(-1)
        out = np.zeros((self.rule.K, flat.size))
        inside = (flat >= self.q_lo) & (flat <= self.q_hi)
        if inside.any():
            idx = np.nonzero(inside)[0]
            W = self._weights(flat[idx])
            with one_blas_thread():    # small products: BLAS threads only add overhead (10x on a busy machine)
                for length in np.unique(L[idx]):
                    sel = L[idx] == length
                    out[:length, idx[sel]] = self.values[:length] @ W[sel].T
        if not inside.all():
            rest = np.nonzero(~inside)[0]
            out[:, rest] = short_coefficients(self.rule, self.f, flat[rest])
            for i in rest:        # (the lengths at the caller's tolerance)
                out[L[i]:, i] = 0.0
        return out.reshape((self.rule.K,) + q.shape)


@dataclasses.dataclass(frozen=True)
class TabulatedDual(DualKernels):
    """The Mehler-series :class:`~kernelcalc.theory.gaussian.DualKernels` whose numpy marginals come from
    :class:`CoefficientTable` s of $\\phi$ and $\\phi'$ (module doc); ``tables``: ``(table of phi, table of phi')``."""

    tables: tuple = ()

    def marginal(self, q, derivative: bool = True, xp=jnp, tol=None):
        if xp is not np:
            return super().marginal(q, derivative, xp=xp, tol=tol)
        self._check_sweep_tol(tol, xp)
        q = np.asarray(q, np.float64)
        t = self.rule.tol if tol is None else max(tol, self.rule.tol)
        fs = _numpy_functions(self.activation)[: 2 if derivative else 1]
        return (q,) + tuple(table(q, series_lengths(f, q, self.rule.K, t, self.rule.tol))
                            for f, table in zip(fs, self.tables))


def tabulated_dual(dual: DualKernels, q_lo: float, q_hi: float):
    """``(TabulatedDual, error)`` of the Mehler-series ``dual`` on [``q_lo``, ``q_hi``], or ``(None, error)`` when a
    table misses a tenth of the rule's tolerance (then the direct projection stays)."""
    fs = _numpy_functions(dual.activation)
    rule = dual.rule
    held = CoefficientTable.held_out(q_lo, q_hi)
    t_lo, t_hi = math.log(q_lo), math.log(q_hi)
    nodes = np.exp(t_lo + 0.5 * (t_hi - t_lo) * (lobatto(_M0) + 1.0))
    first = _projections(rule, fs, np.concatenate([held, nodes]))
    tables = tuple(CoefficientTable(rule, f, q_lo, q_hi, 0.1 * rule.tol, first=(b[:, :held.size], b[:, held.size:]))
                   for f, b in zip(fs, first))
    error = max(t.error for t in tables)
    if not all(t.ok for t in tables):
        return None, error
    return TabulatedDual(dual.activation, dual.method, dual.rule, dual.error_estimate, dual.note, tables), error


def _projections(rule, fs, q) -> list:
    r"""``rule.coefficients(f, q)`` (numpy, ``q`` 1-D) of every ``f`` in ``fs`` from one product: the rule's Hermite
    functions are read once (a table of $\phi$ and $\phi'$ at 42 variances and $K = 4144$ terms reads 46 MB per
    product)."""
    z, w, psi = _hermite_functions(rule.K, _hermite_step(rule.K))
    F = np.concatenate([f(np.sqrt(q)[:, None] * z) * w for f in fs])
    B = _single_thread_product(F, psi)                     # (len(fs) * len(q), K)
    return [np.ascontiguousarray(B[i * q.size:(i + 1) * q.size].T) for i in range(len(fs))]


#: the price (DualKernels.points) from which a closed form of a phi with kinks at 0 is tabulated off the sphere: elu's
#: bivariate Mills ratios (50); the piecewise polynomials with a kink at 0 (10: squared relu) keep their closed form
#: and its gap form
_DEAR_CLOSED = 50


def smallest_norm(v, default: float) -> float:
    """The smallest positive of the norms ``v`` (``default`` when there is none: zero rows only)."""
    v = np.asarray(v, np.float64)
    v = v[v > 0]
    return float(v.min()) if v.size else float(default)


class TabulatedMarginals:
    r"""The marginals of a Goursat solver's solves (:class:`~kernelcalc.kernels.ode_solver.GoursatSolver`, which
    sets ``_tabulated = None``, ``_table_from``: the smallest of the many norms its ``prepare`` announced, else
    ``None``, ``_marginals = {}``, ``_marginal_tails = {}`` and ``_store = None``): :meth:`_tabulate` builds the
    tables, :meth:`_numpy_dual` hands them to the numpy solves, :meth:`_marginals_of` caches the marginals per
    norm; :meth:`_polar_table` tabulates a polar-sector dual over the same variance range."""

    def _tabulate(self, dual) -> None:
        r"""Before the self-kernels of the many announced norms (and, when the time grid is chosen after the
        announcement, before the choice's solves at the largest norm): the numpy marginals of the Mehler series
        from tables on $[\sigma_u^2v_{\min}, 1.05\,q_{\max}]$ ($q(t)\ge q(0)=\sigma_u^2v$), their measured error in
        ``info["marginal_table_error"]`` (``None``: a table missed its tolerance, the direct projection stays)."""
        if self._tabulated is not None or self._table_from is None or dual.method != "hermite":
            return
        q_lo, q_hi = self.sigma_u**2 * self._table_from, 1.05 * self.info["q_max"]
        tab, err = tabulated_dual(dual, q_lo, q_hi)
        self._tabulated = tab
        self.info["marginal_table_error"] = err if tab is not None else None
        # the series lengths of the whole variance range, of phi and phi', in one product per span (the solves would
        # ask for them bin by bin as their variances appear: ~40 products, each reading the Hermite functions)
        bin_tails_of(_numpy_functions(dual.activation), dual.rule.K, dual.rule.tol, bins_of(q_lo, q_hi))

    def _polar_table(self, dual, v_lo: float, q_max: float):
        r"""A polar-sector dual (or a dear closed form with kinks at 0 off the sphere: :meth:`_tabulates_closed`) tabulated in $(\log q_1,\log q_2,\theta)$ over $[\sigma_u^2v_{\min}, 1.05\,q_{\max}]$
        (:mod:`kernelcalc.theory.polar_table`; $v_{\min}$ the smallest announced norm, else $v_{\max}$: $q(t)\ge q(0)$),
        its error added to the dual's estimate (every solver evaluates a tabulated dual in numpy: the Euler march, the
        kinked solvers, the tensor grid with Newton steps); the dual itself for any other rule, or when the table
        misses the dual's accuracy.  An already tabulated dual whose range covers the smallest norm is kept (the
        memoised dual of an earlier call), and so is one whose wider table would miss it (the rule outside)."""
        from ..theory.polar_table import tabulate_polar

        if not (dual.method == "polar" or dual.tabulated or self._tabulates_closed(dual)):
            return dual
        q_lo = self.sigma_u**2 * min(self._table_from or v_lo, v_lo)
        held = dual
        if dual.tabulated:
            if math.log(q_lo) >= dual.rule.t_lo - 1e-12:
                return dual
            dual = dataclasses.replace(dual, rule=dual.rule.rule, error_estimate=dual.rule.rule_error)
        tol = max(dual.error_estimate, self._dual_tol())
        table = tabulate_polar(dual, q_lo, 1.05 * q_max, tol)
        if table is None:      # (a wider table that misses tol: the one held, its variances outside by the rule)
            if held is dual:
                self.info["polar_table_error"] = None
            return held
        self.info["polar_table_error"] = table.error
        table = dataclasses.replace(table, rule_error=dual.error_estimate)
        return dataclasses.replace(dual, rule=table, error_estimate=dual.error_estimate + table.error)

    def _widened(self, dual, v_unique, q_max):
        """``dual``, or its polar table rebuilt over a range that holds the smallest norm announced or asked
        (:meth:`_polar_table`), the info updated (a dual that could not be tabulated stays the rule)."""
        if not (dual.tabulated or self._tabulates_closed(dual)):
            return dual
        wider = self._polar_table(dual, smallest_norm(v_unique, self.v_max), q_max)
        if wider is not dual:
            self.info.update(expectation=wider.describe(), expectation_error_estimate=wider.error_estimate)
        return wider

    def _dual_tol(self) -> float:
        r"""The accuracy asked of a kinked $\phi$'s quadrature dual and of its polar table: a tenth of the kernel's
        ``tol`` over the time integrals' amplification $1+\sigma_wT$ (:meth:`relative_error_estimate`), at least
        :data:`~kernelcalc.theory.gaussian.DEFAULT_TOL`; that floor for every other $\phi$.  Measured (tanh kink,
        2000 standardised rows, tol 1e-10): the polar rule's level (64, 96) missed 1e-13 at $q=13.8$ and warned three
        times; at 5e-12 the rule (48, 64) builds the table in 1.6 s instead of 2.2 s, the kernel within 6e-14."""
        if not self.activation.is_piecewise_smooth:
            return DEFAULT_TOL
        return max(DEFAULT_TOL, self.tol / (10.0 * (1.0 + self.sigma_w * self.T)))

    def _tabulates_closed(self, dual) -> bool:
        r"""Whether a closed-form dual is tabulated too: a dear one (``points`` >= :data:`_DEAR_CLOSED`: elu's bivariate
        Mills ratios, without a gap form for near-parallel pairs) of a
        $\phi$ whose kinks are at 0 (analytic in $\theta$, :mod:`kernelcalc.theory.polar_table`), once many norms are
        announced (data off the sphere: the norm interpolation's solves; on the sphere it would not pay)."""
        if not (dual.method == "closed" and dual.points >= _DEAR_CLOSED and self._table_from is not None
                and getattr(dual.rule, "gap_form", None) is None):     # (a gap form serves the near-parallel pairs)
            return False
        from ..theory.gaussian import _kinks

        act = dual.activation
        return not act.jumps and set(_kinks(act.expr)) | set(_kinks(act.derivative)) <= {0.0}

    def _numpy_dual(self, dual, backend):
        """The dual a ``backend`` solve of ``dual`` takes: the tabulated one for numpy, when there is one."""
        tab = self._tabulated
        return tab if backend == "numpy" and tab is not None and tab.rule is dual.rule else dual

    def _marginals_of(self, dual, v, diag, marginals, size, backend):
        """``(marginals, positions)``: the marginals of the norms ``v`` (diagonals ``diag``, ``(U, n)``) padded to ``size``
        (positions ``None``); numpy rules compute each norm's once per solver, and the numpy Mehler series takes
        all of them stacked once, with the positions of ``v`` (its series gathers what it sums: no copy per call),
        and their series tails (:class:`MarginalStore`)."""
        if not dual.numpy_ok:
            return marginals(pad_to(diag, size)), None
        cache = self._marginals
        stored = dual.method == "hermite" and backend == "numpy"
        missing = [i for i, x in enumerate(v.tolist()) if x not in cache]
        if missing:
            if len(cache) + len(missing) > _MAX_CACHED:
                cache.clear()
                self._marginal_tails.clear()
                self._store = None
                missing = list(range(v.size))     # (the call's norms cached before are gone too)
            v_new, diag_new = v[missing], diag[missing]
            if stored:     # with the other solved norms (the plan's check rows): one build of the store
                more = [x for x in self._diagonals if x not in cache and x not in set(v_new.tolist())]
                more = more[: max(_MAX_CACHED - len(cache) - v_new.size, 0)]
                if more:
                    v_new = np.concatenate([v_new, more])
                    diag_new = np.concatenate([diag_new, np.stack([self._diagonals[x] for x in more])])
            m = marginals(diag_new)                       # q (U, n), coefficients (K, U, n)
            # the series tails of each norm, once (each norm's own columns: the same numbers as over any stack)
            tails = dual.tails(m, np) if stored else None
            if stored and not cache:      # the first norms: these arrays are the store (no copy, no room to spare)
                self._store = ({float(x): j for j, x in enumerate(v_new.tolist())}, MarginalStore(m, tails))
            for j, x in enumerate(v_new.tolist()):
                cache[float(x)] = tuple(a[..., j, :] for a in m)
                if tails is not None:
                    self._marginal_tails[float(x)] = tuple(t[:, j] for t in tails)
        if stored:    # the store of all cached norms, no copy per call
            return self._stored(v)
        parts = [cache[x] for x in v.tolist()]
        if len(parts) == 1 and dual.method == "fourier":   # one norm (the sphere): views, no copy (no padding:
            # the fourier solves index the norms, they have no fixed shapes)
            return tuple(a[..., None, :] for a in parts[0]), None
        idx = pad_to(np.arange(v.size), size)
        return tuple(np.stack([p[c] for p in parts], axis=-2)[..., idx, :] for c in range(len(parts[0]))), None

    def _stored(self, v):
        """The store (a :class:`MarginalStore`: the marginals of every cached norm along a norm axis with room to
        spare, and their series tails; norms new to it are written into free places, a full store is copied into
        one twice as large; free places hold zeros, and no solve reads them) and the positions of ``v`` in it.  A
        changed store is a new tuple (the cross solves' batches share its tails)."""
        cache, tails, store = self._marginals, self._marginal_tails, self._store
        new = [x for x in dict.fromkeys(cache) if store is None or x not in store[0]]
        if new:
            where = {} if store is None else store[0]
            used = len(where)
            arrays = None if store is None else list(store[1])
            columns = None if store is None else list(store[1].tails)
            if arrays is None or used + len(new) > arrays[0].shape[-2]:
                cap = 2 * (used + len(new))
                # (zeros: pages the store never writes are never touched)
                grown = [np.zeros(p.shape[:-1] + (cap,) + p.shape[-1:]) for p in cache[new[0]]]      # (..., cap, n)
                grown_t = [np.zeros(t.shape + (cap,)) for t in tails[new[0]]]                       # (K, cap)
                if arrays is not None:
                    for g, a in zip(grown, arrays):
                        g[..., :used, :] = a[..., :used, :]
                    for g, a in zip(grown_t, columns):
                        g[:, :used] = a[:, :used]
                arrays, columns = grown, grown_t
            where = dict(where)
            for x in new:
                for a, part in zip(arrays, cache[x]):
                    a[..., used, :] = part
                for a, part in zip(columns, tails[x]):
                    a[:, used] = part
                where[x] = used
                used += 1
            self._store = store = (where, MarginalStore(arrays, columns))
        return store[1], np.array([store[0][x] for x in v.tolist()], dtype=np.int64)


class MarginalStore(tuple):
    """The stacked marginals of a solver's norms (a tuple of arrays, as
    :meth:`~kernelcalc.theory.gaussian.DualKernels.marginal` returns them, with a norm axis) and ``tails``: their
    series tails (:meth:`~kernelcalc.theory.gaussian.DualKernels.tails`, ``(K, norms)`` each), computed once per
    norm when it entered the store (the cross solves read them instead of summing the squares of the whole store
    again)."""

    def __new__(cls, arrays, tails):
        self = super().__new__(cls, arrays)
        self.tails = tuple(tails)
        return self

    def __getnewargs__(self):
        # (pickled with its tails: a solver sent to Dask workers in other processes; the tuple's own arguments lacked
        # them and unpickling failed, "missing 1 required positional argument: 'tails'")
        return tuple(self), self.tails
