r"""The Mehler (Hermite) series of the bivariate Gaussian expectations of :mod:`kernelcalc.theory.gaussian`:
:class:`HermiteRule` (coefficients $b_k(q)$ of $\phi$ by a trapezoid projection, the series summed to its truncation),
the per-variance series lengths (:func:`series_lengths`, :func:`short_coefficients`), and the series order / variance
limit of an activation (:func:`hermite_order`, :func:`hermite_q_limit`).  The numpy sum of the series truncated per
problem by correlation (:class:`~kernelcalc.theory.gaussian_hermite_truncation.Gathered`, the bisection for $k_0$,
the Horner sum over the active problems) is in :mod:`kernelcalc.theory.gaussian_hermite_truncation`."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np

from .._blas import one_blas_thread
from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from .activations import Activation, array_functions
from .gaussian_rules import DEFAULT_TOL, _correlation
# the numpy series truncated by correlation lives in gaussian_hermite_truncation
from .gaussian_hermite_truncation import _tail_of_squares, _terms_numpy, _truncated_horner


_HERMITE_H, _HERMITE_ZMAX, _HERMITE_KMAX = 0.02, 14.0, 8192


@functools.lru_cache(maxsize=8)
def _hermite_table(K: int, h: float, zmax: float):
    r"""Grid $z$, weights $h e^{-z^2/4}/\sqrt{2\pi}$ and $\psi_k(z)e^{-z^2/4}$, $\psi_k=He_k/\sqrt{k!}$, $k<K$."""
    n = int(round(zmax / h))
    z = h * np.arange(-n, n + 1, dtype=np.float64)
    half = np.exp(-0.25 * z * z)
    psi = np.empty((K, z.size))
    prev, cur = np.zeros_like(z), half.copy()
    for k in range(K):
        psi[k] = cur
        prev, cur = cur, (z * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
    return z, h * half / math.sqrt(2 * math.pi), psi


def _hermite_functions(K: int, h: float = _HERMITE_H, zmax: float = _HERMITE_ZMAX):
    r""":func:`_hermite_table`; at the step ``_HERMITE_H``, the first ``K`` rows of the one table :func:`hermite_order`
    builds for every Mehler rule (a long series needs no table of its own: :func:`_hermite_step`)."""
    if h == _HERMITE_H and zmax == _HERMITE_ZMAX and K <= _HERMITE_KMAX:
        z, w, psi = _hermite_table(_HERMITE_KMAX, h, zmax)
        return z, w, psi[:K]
    return _hermite_table(K, h, zmax)


_SHARED_STEP_K = 2048      # series at least this long take the finest step (the rows of the shared table)


def _hermite_step(K: int) -> float:
    r"""Trapezoid step of the Hermite coefficients of a $K$-term series: the integrand $f(\sqrt q z)\,He_k(z)
    e^{-z^2/2}$ oscillates at frequency up to about $\sqrt K$ (plus the bandwidth of $f$), so
    $h=\pi/(1.6(\sqrt K+16))$, between 0.02 (``_HERMITE_H``, the step at $K=8192$) and 0.04.  Measured against
    $h=0.02$ for tanh, softplus, sin, gelu, silu and sigmoid, $K=256..6000$, $q=0.5..30$: at most
    $8.5\cdot10^{-16}$ of $\sqrt{\sum_k\hat f_k^2}$; the coefficients cost $1/h$.  From $K=$ ``_SHARED_STEP_K`` on
    (a step below 0.033) 0.02 itself: the rows of :func:`hermite_order`'s table, no second table (38 MB at K = 4144)."""
    if K >= _SHARED_STEP_K:
        return _HERMITE_H
    return max(_HERMITE_H, min(0.04, math.pi / (1.6 * (math.sqrt(K) + 16.0))))


_GEMM_ONE_THREAD = 1 << 18   # OpenBLAS runs a matrix product of at most m*n*k = 2^18 multiply-adds on one thread


def _single_thread_product(a: np.ndarray, b: np.ndarray, limited: bool = False) -> np.ndarray:
    r"""``a @ b.T`` (numpy, 2-D) as blocks of at most $2^{18}$ multiply-adds, each of which OpenBLAS runs on
    the calling thread.  The numpy Hermite coefficients of a small solve are a product of a few million
    multiply-adds; on several BLAS threads it is no faster, and on a busy machine waking them costs up to
    100x the product (measured: 27 ms instead of 0.3 ms).  The blocks also make the result independent of
    the BLAS thread setting (the same in every thread: dask tiles equal local ones bit for bit).  A larger
    product (the coefficients of many variances: the self-kernels of many norms) runs as one product
    with BLAS limited to one thread (``threadpoolctl``; measured 0.08 s against 0.55 s in blocks, whose
    shapes degenerate into matrix-vector products, for 832 variances x 560 terms)."""
    m, k = a.shape
    n = b.shape[0]
    if m * n * k <= _GEMM_ONE_THREAD or limited:     # (limited: the caller holds BLAS to one thread)
        return a @ b.T
    with one_blas_thread() as held:     # one product on one BLAS thread: ~7x faster than the blocks (GEMVs)
        if held:
            return a @ b.T
    rows = max(1, min(m, _GEMM_ONE_THREAD // k))
    cols = max(1, _GEMM_ONE_THREAD // (rows * k))
    out = np.empty((m, n))
    for r0 in range(0, m, rows):
        for c0 in range(0, n, cols):
            out[r0:r0 + rows, c0:c0 + cols] = a[r0:r0 + rows] @ b[c0:c0 + cols].T
    return out


@dataclasses.dataclass(frozen=True)
class HermiteRule:
    r"""Mehler expansion: $E[f(a)g(b)] = \sum_{k<K} \hat f_k(q_1)\hat g_k(q_2)\,r^k$, $r=c/\sqrt{q_1q_2}$.

    $\hat f_k(q) = E[f(\sqrt q z)He_k(z)]/\sqrt{k!}$ (normalised Hermite coefficients, by the
    trapezoid rule with $h=0.02$ on $|z|\le14$).  By Cauchy–Schwarz the truncation error is
    at most $\sqrt{\sum_{k\ge K}\hat f_k^2\sum_{k\ge K}\hat g_k^2}$ for every $|r|\le1$;
    $K$ is chosen so this is below ``tol`` relative to $\sqrt{E f^2 E g^2}$ at $q_{\max}$
    (Parseval, $\sum_k\hat f_k^2=E[f^2]$, is checked at the same time).  The coefficients
    depend on the marginal variances only, so for fixed marginals (the cross-kernels of the
    ODE/ResNet/MLP recursions) each evaluation costs $K$ multiply-adds.

    **Truncation by correlation.**  Where $|r|\le\bar r<1$ far fewer terms are needed: for
    $k_0\le K$, $\big|\sum_{k_0\le k<K}\hat f_k\hat g_k r^k\big|\le\bar r^{k_0}
    \sqrt{\tau_f(k_0)\tau_g(k_0)}\sqrt{Ef^2\,Eg^2}$ (Cauchy–Schwarz) with the relative tails
    $\tau_f(k_0)=\sum_{k\ge k_0}\hat f_k^2/\sum_k\hat f_k^2$.  Given ``tails``, :meth:`series`
    truncates per *problem* (an index of the leading axis of $r$, e.g. one input pair and its
    $n\times n$ time cells): $k_0$ is the smallest with this bound below ``tol``, for $\bar r$ and
    $\tau$ the largest over the problem's cells, so the result meets the full series' accuracy and
    depends on the problem alone (not on the others evaluated with it: bit for bit the same in any
    batch).  The loop runs to the largest $k_0$ of the batch, so batches of similar correlation gain most.
    """

    K: int
    tol: float = DEFAULT_TOL

    @float64
    def coefficients(self, f: Callable, q, xp=jnp):
        r"""$(\hat f_k(q))_{k<K}$ with the $k$ axis first: shape ``(K, *q.shape)`` (``xp``: jax.numpy or numpy)."""
        z, w, psi = (xp.asarray(v) for v in _hermite_functions(self.K, _hermite_step(self.K)))
        q = xp.asarray(q, xp.float64)
        F = f(xp.sqrt(q)[..., None] * z) * w                           # (*q.shape, n_z)
        if xp is np:
            return np.moveaxis(_single_thread_product(F.reshape(-1, z.size), psi).reshape(F.shape[:-1] + (-1,)), -1, 0)
        return xp.moveaxis(F @ psi.T, -1, 0)

    @staticmethod
    def relative_tail(b, xp=jnp):
        r"""$\tau(k)=\sum_{j\ge k}b_j^2/\sum_j b_j^2$ of coefficients ``b`` of shape ``(K, P, ...)``: the
        largest over the axes after the second, shape ``(K, P)`` (0 where the coefficients all vanish)."""
        sq = (b * b).reshape(b.shape[0], b.shape[1], -1)
        if xp is np:
            return _tail_of_squares(sq)
        tail = xp.flip(xp.cumsum(xp.flip(sq, 0), axis=0), 0)
        total = tail[:1]
        rel = xp.where(total > 0, tail / xp.where(total > 0, total, 1.0), 0.0)
        return xp.max(rel, axis=2)

    @staticmethod
    def terms(tail_f, tail_g, r, tol, xp=jnp):
        r"""Terms $k_0$ per problem (class doc), shape ``(P,)``: the smallest $k_0$ with
        $\bar r^{k_0}\sqrt{\tau_f(k_0)\tau_g(k_0)}\le$ ``tol``, $\bar r$ the largest $|r|$ of the problem
        (``r``: shape ``(P, ...)``); $K$ when there is none.  ``tail_f``, ``tail_g``: ``(K, P)``."""
        K = tail_f.shape[0]
        rbar = xp.max(xp.abs(r).reshape(r.shape[0], -1), axis=1)                 # (P,)
        k = xp.arange(K)[:, None]
        power = xp.where(rbar[None, :] > 0, rbar[None, :] ** k, (k == 0).astype(xp.float64))
        ok = power * xp.sqrt(tail_f * tail_g) <= tol                             # (K, P)
        return xp.where(xp.any(ok, axis=0), xp.argmax(ok, axis=0), K)

    @classmethod
    def series(cls, bf, bg, r, xp=jnp, tol=None, tails=None):
        r"""$\sum_k bf_k\,bg_k\,r^k$ by Horner (k axis first in ``bf``, ``bg``; ``xp``: jax.numpy or numpy).

        With ``tol`` and ``tails`` = ``(tail_f, tail_g)`` (:meth:`relative_tail` per problem, ``(K, P)``,
        P the leading axis of ``r``; ``bf``, ``bg`` then have shape ``(K, P, ...)`` or broadcast to it),
        truncated per problem by correlation (class doc); else all $K$ terms."""
        K = bf.shape[0]
        if xp is np and tol is not None and tails is not None:
            return _truncated_horner(bf, bg, r, _terms_numpy(tails[0], tails[1], r, tol))
        acc = xp.zeros(xp.broadcast_shapes(bf.shape[1:], bg.shape[1:], xp.shape(r)))
        if tol is None or tails is None:
            k_max = K
        else:
            k0 = cls.terms(tails[0], tails[1], r, tol, xp)                           # (P,)
            k_max = xp.max(k0)
            # a problem's terms k >= k0 vanish exactly (0 * finite), so each problem sums its own k0 terms
            keep = (xp.arange(K)[:, None] < k0[None, :]).reshape((K, k0.shape[0]) + (1,) * (bf.ndim - 2))
            bf = xp.where(keep, bf, 0.0)
        if xp is np:
            term = np.empty_like(acc)
            for k in range(int(k_max) - 1, -1, -1):
                acc *= r
                acc += np.multiply(bf[k], bg[k], out=term)
            return acc
        return jax.lax.fori_loop(K - k_max, K, lambda i, acc: acc * r + bf[K - 1 - i] * bg[K - 1 - i], acc)

    @float64
    def expect_pairs(self, pairs, q1, q2, c):
        q1, q2, c = (jnp.asarray(v, jnp.float64) for v in (q1, q2, c))
        r, _ = _correlation(q1, q2, c)
        return tuple(self.series(self.coefficients(f, q1), self.coefficients(g, q2), r, tol=self.tol) for f, g in pairs)



# Per-variance series lengths (numpy Hermite rule).  Variances are binned in log2 q by half octaves; a bin's
# length is the one its upper edge needs.
_LENGTH_BINS_PER_OCTAVE = 2
_LENGTH_Q_FLOOR = 2.0 ** -20


_BIN_TAILS: dict = {}      # (f, K, tol, bin) -> (tail, length): the per-bin memo of :func:`bin_tails_of`
_BIN_TAILS_MAX = 1024


def bin_tails_of(fs, K: int, tol: float, bins) -> list[list[tuple[np.ndarray, int]]]:
    r"""The relative tail $\tau(L) = \sum_{S>k\ge L}\hat f_k(q_j)^2/\sum_{k<S}\hat f_k(q_j)^2$ of each variance
    bin $j$ of ``bins`` (upper edge $q_j = 2^{j/2}$; coefficients of the rule itself, at its step) and the series
    length for ``tol``, of each function of ``fs`` (per function, a list over ``bins``): the smallest multiple of 16
    with $\tau(L)\le$ ``tol``$^2$, the criterion by which :func:`hermite_order` chose $K$ at $q_{\max}$.  The span
    $S$ of coefficients computed doubles from 128 up to $K$ until $L\le 3S/4$: a length is trusted where the
    coefficients were seen to stay below the bound over a quarter of the span beyond it (else, at $S = K$, near or
    past $q_{\max}$, the full $K$).  Memoised per bin; the bins not yet known, of all the functions, are computed
    together, one product per span for all bins still open at it (the Hermite functions are read once per span:
    a cold off-sphere call takes its whole variance range of $\phi$ and $\phi'$ at once,
    :meth:`~kernelcalc.kernels._marginal_table.TabulatedMarginals._tabulate`)."""
    bins = [int(j) for j in bins]
    known = {(f, j): _BIN_TAILS.get((f, K, tol, j)) for f in fs for j in bins}
    missing = sorted((k for k, v in known.items() if v is None), key=lambda k: (fs.index(k[0]), k[1]))
    if missing:
        z, w, psi = _hermite_functions(K, _hermite_step(K))
        F = np.concatenate([f(np.sqrt(2.0 ** (np.array([j], np.float64) / _LENGTH_BINS_PER_OCTAVE))[:, None] * z) * w
                            for f, j in missing])
        open_, span = list(range(len(missing))), min(K, 128)
        while open_:
            B = _single_thread_product(F[open_], psi[:span])
            still = []
            for b, i in zip(B, open_):
                sq = b * b
                total = float(np.sum(sq))
                if total == 0.0:
                    found = (np.zeros(span), 16)
                else:
                    tail = np.cumsum(sq[::-1])[::-1] / total
                    L = _length_from_tail(tail, tol, span)
                    found = (tail, L) if L is not None else (tail, K) if span >= K else None
                if found is None:
                    still.append(i)
                else:
                    known[missing[i]] = found
            open_, span = still, min(K, 2 * span)
        if len(_BIN_TAILS) + len(missing) > _BIN_TAILS_MAX:
            _BIN_TAILS.clear()
        _BIN_TAILS.update({(f, K, tol, j): known[(f, j)] for f, j in missing})
    return [[known[(f, j)] for j in bins] for f in fs]


def bins_of(q_lo: float, q_hi: float) -> range:
    """The bins of :func:`series_lengths` of the variances in [``q_lo``, ``q_hi``] (> 0)."""
    return range(*(int(math.ceil(math.log2(max(q, _LENGTH_Q_FLOOR)) * _LENGTH_BINS_PER_OCTAVE)) + e
                   for q, e in ((q_lo, 0), (q_hi, 1))))


def _bin_tail(f: Callable, K: int, tol: float, j: int) -> tuple[np.ndarray, int]:
    """:func:`bin_tails_of` of one function and one bin."""
    return bin_tails_of((f,), K, tol, (j,))[0][0]


def _length_from_tail(tail: np.ndarray, tol: float, span: int) -> int | None:
    """The trusted length of :func:`_bin_tail` from a tail over ``span`` terms (``None``: not trusted)."""
    ok = np.nonzero(tail <= tol**2)[0]
    if ok.size:
        L = max(16, math.ceil(int(ok[0]) / 16.0) * 16)
        if L <= 0.75 * span:
            return int(L)
    return None


@functools.lru_cache(maxsize=1024)
def _bin_length(f: Callable, K: int, tol: float, j: int, rule_tol: float) -> int:
    """The series length of bin ``j`` for ``tol`` >= ``rule_tol`` (:func:`_bin_tail`, computed once at the
    rule's tolerance: a looser one reads a shorter length off the same tail)."""
    tail, L = _bin_tail(f, K, rule_tol, j)
    if tol <= rule_tol:
        return L
    if L >= K and tail.size < K:      # pragma: no cover (the span reached K)
        return K
    short = _length_from_tail(tail, tol, tail.size)
    return min(L, short) if short is not None else L


@functools.lru_cache(maxsize=64)
def _numpy_functions(activation: Activation) -> tuple[Callable, Callable]:
    """``array_functions(activation, "numpy")``, one pair of function objects per activation (the keys of the
    per-bin caches above: :func:`array_functions` builds some afresh at every call)."""
    return array_functions(activation, "numpy")


def series_lengths(f: Callable, q, K: int, tol: float, rule_tol: float | None = None) -> np.ndarray:
    r"""Per-variance Hermite series lengths $L(q)\le K$ (integers, the shape of ``q``): $\hat f_k(q)$ for
    $k\ge L(q)$ may be dropped with the same tail bound $\sum_{k\ge L}\hat f_k^2\le\mathrm{tol}^2\,E f^2$ that
    $K$ met at $q_{\max}$ (:func:`hermite_order`).  The variances are binned by half octaves in $\log_2 q$
    and a bin takes the length of its upper edge $2^{j/2}$ (:func:`_bin_length`: the coefficients of one
    variance, cached per activation, $K$ and bin), under the assumption :class:`HermiteRule` already makes
    for all $q\le q_{\max}$: the relative tail grows with $q$.  The length depends on $q$ alone (not on the
    batch), so results stay independent of batching."""
    q = np.asarray(q, np.float64)
    finite = np.isfinite(q)
    with np.errstate(invalid="ignore"):
        j = np.ceil(np.log2(np.maximum(np.where(finite, q, 1.0), _LENGTH_Q_FLOOR)) * _LENGTH_BINS_PER_OCTAVE)
    bins, inverse = np.unique(j.astype(np.int64), return_inverse=True)
    rule_tol = tol if rule_tol is None else min(tol, rule_tol)
    bin_tails_of((f,), K, rule_tol, bins.tolist())      # the bins not yet known, together
    lengths = np.array([_bin_length(f, K, tol, int(b), rule_tol) for b in bins], dtype=np.int64)
    return np.where(finite, lengths[inverse].reshape(q.shape), K)      # (a non-finite variance: all K terms)


_ROW_READ = 8     # reading a row of the Hermite functions costs about as much as its product with 8 variances


def _length_groups(lengths: np.ndarray, counts: np.ndarray) -> list[tuple[int, int]]:
    r"""Consecutive ranges ``(i, j)`` of the sorted distinct ``lengths`` (with their ``counts`` of variances), each
    computed as one product at length ``lengths[j]``: the grouping of least cost $\sum L_j\,(c+n_{ij})$ (dynamic
    programming), $c$ = ``_ROW_READ``.  One group per length reads the first rows of the Hermite functions once
    per length (memory bound: ~10 lengths of a few variances each read ~10x the rows one longer product does);
    one group for all computes every variance to the longest length (flop bound for many variances)."""
    m = lengths.size
    best, cut = [0.0] * (m + 1), [0] * (m + 1)
    for j in range(1, m + 1):
        best[j], cut[j] = min((best[i] + float(lengths[j - 1]) * (_ROW_READ + float(np.sum(counts[i:j]))), i)
                              for i in range(j))
    out, j = [], m
    while j > 0:
        out.append((cut[j], j - 1))
        j = cut[j]
    return out[::-1]


def short_coefficients(rule: "HermiteRule", f: Callable, q, tol: float | None = None) -> np.ndarray:
    r""":meth:`HermiteRule.coefficients` in numpy, shape ``(K, *q.shape)``, with the terms $k\ge L(q)$ of each
    variance (:func:`series_lengths`) set to zero: variances of nearby lengths share one product with the first
    rows of the rule's Hermite functions, up to the longest length of the group (:func:`_length_groups`), so
    the coefficients of a small variance cost about $L(q)/K$ of the full series (the kept terms are the full
    series' own, to rounding).  ``tol``: the lengths' tolerance (never below the rule's, its default)."""
    q = np.asarray(q, np.float64)
    flat = q.reshape(-1)
    L = series_lengths(f, flat, rule.K, rule.tol if tol is None else max(tol, rule.tol), rule.tol)
    z, w, psi = _hermite_functions(rule.K, _hermite_step(rule.K))
    out = np.zeros((rule.K, flat.size))
    lengths, counts = np.unique(L, return_counts=True)
    with one_blas_thread() as held:
        for i, j in _length_groups(lengths, counts):
            length = int(lengths[j])
            sel = np.nonzero((L >= lengths[i]) & (L <= length))[0]
            F = f(np.sqrt(flat[sel])[:, None] * z) * w
            block = _single_thread_product(F, psi[:length], limited=bool(held)).T
            if i < j:      # each variance keeps its own length
                block[np.arange(length)[:, None] >= L[sel][None, :]] = 0.0
            out[:length, sel] = block
    return out.reshape((rule.K,) + q.shape)


def short_relative_tail(b: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    r""":meth:`HermiteRule.relative_tail` (numpy) of coefficients ``b`` ``(K, P, ...)`` whose terms at and beyond
    ``lengths`` ``(P, ...)`` vanish (:func:`short_coefficients`): the cumulative sums run over each problem's
    longest length only (zero beyond it, as the full sums are)."""
    K, P = b.shape[0], b.shape[1]
    per_problem = np.asarray(lengths).reshape(P, -1).max(axis=1)
    out = np.zeros((K, P))
    for length in np.unique(per_problem):
        sel = np.nonzero(per_problem == length)[0]
        blk = b[:length, sel]                      # (a copy: squared in place)
        np.multiply(blk, blk, out=blk)
        out[:length, sel] = _tail_of_squares(blk.reshape(blk.shape[0], blk.shape[1], -1))
    return out


def hermite_order(functions: tuple[Callable, ...], q_max: float, tol: float = DEFAULT_TOL,
                  k_max: int = _HERMITE_KMAX) -> int | None:
    """Smallest $K$ (a multiple of 16) whose Mehler tail is below ``tol`` at ``q_max``; ``None`` if > ``k_max``."""
    z, w, psi = _hermite_functions(k_max)
    worst = 0
    for f in functions:
        with np.errstate(over="ignore", invalid="ignore"):     # (softplus's log(exp(x) + 1) at sqrt(q) z ~ 1e3)
            vals = np.asarray(f(math.sqrt(max(q_max, 1e-3)) * z))
        if not np.all(np.isfinite(vals)):       # phi overflows on the rule's nodes: no series there (was: warnings)
            return None
        b = psi @ (w * vals)
        total = float(np.sum(w * np.exp(-0.25 * z * z) * vals**2))       # E[f^2] (trapezoid)
        if total == 0.0:
            continue
        tail = np.cumsum((b**2)[::-1])[::-1] / total                   # tail[K] = sum_{k>=K} / E f^2
        if abs(float(np.sum(b**2)) - total) > 1e3 * tol * total:       # Parseval fails: not resolved
            return None
        ok = np.nonzero(tail <= tol**2)[0]
        if ok.size == 0:
            return None
        worst = max(worst, int(ok[0]))
    return max(16, int(math.ceil(worst / 16.0)) * 16)


def hermite_q_limit(functions: tuple[Callable, ...], tol: float = DEFAULT_TOL, k_max: int = _HERMITE_KMAX,
                    q_hi: float = 1e8) -> float:
    r"""Largest variance $q$ (to 5 %) at which the Mehler series of ``functions`` still converges to
    ``tol`` within ``k_max`` terms (bisection in $\log q$; $+\infty$ when it does at ``q_hi``)."""
    if hermite_order(functions, q_hi, tol, k_max) is not None:
        return math.inf
    lo, hi = math.log(1e-3), math.log(q_hi)
    if hermite_order(functions, 1e-3, tol, k_max) is None:
        return 0.0
    while hi - lo > 0.05:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if hermite_order(functions, math.exp(mid), tol, k_max) is not None else (lo, mid)
    return math.exp(lo)
