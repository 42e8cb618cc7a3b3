r"""The Mehler series of :class:`~kernelcalc.theory.gaussian_hermite.HermiteRule` summed in numpy, each problem to
its own truncation by correlation.

For coefficients $b^f_k$, $b^g_k$ ($k<K$) and a problem $p$ (an index of the leading axis of $r$: one input pair and
its time cells), with $\bar r_p$ the largest $|r|$ of the problem and the relative tails
$\tau(k)=\sum_{j\ge k}b_j^2/\sum_j b_j^2$ (:func:`_tail_of_squares`), Cauchy–Schwarz bounds the dropped terms,
$$\Big|\sum_{k_0\le k<K}b^f_kb^g_kr^k\Big|\le\bar r_p^{k_0}\sqrt{\tau_f(k_0)\tau_g(k_0)}\,\sqrt{E f^2\,E g^2},$$
so the terms $k\ge k_0$ go where $\bar r_p^{k_0}\sqrt{\tau_f(k_0)\tau_g(k_0)}\le$ ``tol``.  :func:`_terms_numpy`
finds the smallest such $k_0$ by bisection (the bound is nonincreasing in $k_0$), and :func:`_truncated_horner`
sums $\sum_{k<k_{0,p}}b^f_kb^g_kr^k$ by Horner over the problems still active at each degree, bit for bit the sum
of the first $k_{0,p}$ terms.  :class:`Gathered` reads the coefficients of a few distinct marginals per problem
without forming the gathered array.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Gathered"]


def _tail_of_squares(sq: np.ndarray) -> np.ndarray:
    """:meth:`HermiteRule.relative_tail` (numpy) from the squares ``sq`` ``(K, P, m)``, overwritten (the same numbers)."""
    back = sq[::-1]
    np.cumsum(back, axis=0, out=back)
    total = sq[:1].copy()
    np.divide(sq, np.where(total > 0, total, 1.0), out=sq)
    return np.max(sq, axis=2)


class Gathered:
    r"""Hermite coefficients ``a`` $(K, U, \dots)$ of $U$ distinct marginals, read by problem: acts in
    :meth:`HermiteRule.series` (numpy, truncated by correlation) as ``a[:, index]`` with a unit axis inserted
    at ``axis`` (``None``: none; e.g. ``-1`` gives ``a[:, index][..., None]``) without forming it: only the
    terms below the largest truncation $k_0$ are gathered.  Relative tails $(K, U)$ read this way give
    :func:`_terms_numpy` the few entries its bisection looks at (``g[k, p]``) instead of a $(K, P)$ copy."""

    def __init__(self, a: np.ndarray, index: np.ndarray, axis: int | None = None):
        self.a, self.index, self.axis = a, np.asarray(index), axis
        rows = (self.index.shape[0],) + a.shape[2:]
        if axis is not None:          # the shape of np.expand_dims(rows, axis)
            at = axis % (len(rows) + 1)
            rows = rows[:at] + (1,) + rows[at:]
        self.shape = (a.shape[0],) + rows
        self.ndim = len(self.shape)

    def terms(self, k_max: int, order=None) -> np.ndarray:
        """The first ``k_max`` terms, problems in ``order`` (all, as indexed, when ``None``)."""
        idx = self.index if order is None else self.index[order]
        out = self.a[:k_max][:, idx]
        return out if self.axis is None else np.expand_dims(out, self.axis)

    def __getitem__(self, k):
        if isinstance(k, tuple) and len(k) == 2 and self.axis is None and self.a.ndim == 2:
            return self.a[k[0], self.index[k[1]]]    # entries (rows k[0], problems k[1]): nothing else gathered
        return self.terms(self.shape[0])[k]


def _terms_numpy(tail_f, tail_g, r, tol) -> np.ndarray:
    r""":meth:`HermiteRule.terms` in numpy by bisection: $\bar r^{k}\sqrt{\tau_f(k)\tau_g(k)}$ is nonincreasing
    in $k$ (both factors are, also in floating point), so the smallest $k$ that meets ``tol`` is found from
    $\log_2K$ evaluations per problem instead of $K$ (the same $k_0$).  Since $\tau\le1$, $\bar r^k\le$ ``tol``
    bounds $k_0$ from above: the bisection starts from $[0,\lceil\log\mathrm{tol}/\log\bar r\rceil+1]$ where that
    end is seen to meet ``tol`` (a few evaluations fewer for a batch of small $\bar r$; the same $k_0$)."""
    K, P = tail_f.shape
    rbar = np.max(np.abs(r).reshape(r.shape[0], -1), axis=1)
    rbar = np.broadcast_to(rbar, (P,))
    cols = np.arange(P)
    lo, hi = np.zeros(P, np.intp), np.full(P, K, np.intp)        # k0 in [lo, hi]; hi = K: none meets tol
    if 0.0 < tol < 1.0:
        with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
            bound = np.where((rbar > 0) & (rbar < 1), np.ceil(math.log(tol) / np.log(np.where(rbar > 0, rbar, 0.5))) + 1, K)
            end = np.clip(bound, 0, K - 1).astype(np.intp)
            power = np.where(rbar > 0, rbar ** end, (end == 0).astype(np.float64))
            met = power * np.sqrt(tail_f[end, cols] * tail_g[end, cols]) <= tol
        hi = np.where(met, end, hi)          # (the smallest k that meets tol is at most a k that does)
    with np.errstate(under="ignore"):
        while True:
            open_ = lo < hi
            if not open_.any():
                return hi
            mid = np.minimum((lo + hi) // 2, K - 1)
            good = rbar ** mid * np.sqrt(tail_f[mid, cols] * tail_g[mid, cols]) <= tol    # (0 ** 0 = 1, 0 ** k = 0)
            hi = np.where(open_ & good, mid, hi)
            lo = np.where(open_ & ~good, mid + 1, lo)


def _truncated_horner(bf, bg, r, k0) -> np.ndarray:
    r"""$\sum_{k<k_{0,p}} bf_k\,bg_k\,r^k$ per problem $p$ (the leading axis of ``r``) by Horner in numpy, each
    problem summing exactly its own $k_{0,p}$ terms (as :meth:`HermiteRule.series` does by zeroing the others,
    so bit for bit the same), without touching coefficients beyond the largest $k_0$: the problems are put
    in decreasing order of $k_0$, and the step of degree $k$ updates the prefix of those with $k_0>k$."""
    shape = np.broadcast_shapes(bf.shape[1:], bg.shape[1:], np.shape(r))
    P = shape[0] if shape else 1
    order = np.argsort(-k0, kind="stable")
    ks = k0[order]
    k_max = int(ks[0]) if ks.size else 0

    def take(a):               # the first k_max terms, problems in order (a factor shared by all: as is)
        if isinstance(a, Gathered):
            return a.terms(k_max, order if P > 1 else None)
        a = a[:k_max]
        if a.ndim - 1 == len(shape) and a.shape[1] == P and P > 1:
            return a[:, order]
        return a

    f, g = take(bf), take(bg)
    rr = np.broadcast_to(r, shape)[order] if P > 1 else np.broadcast_to(r, shape)
    acc, term = np.zeros(shape), np.empty(shape)
    active = np.searchsorted(-ks, -np.arange(k_max), side="left").tolist()     # problems with k0 > k
    f_per = f.ndim - 1 == len(shape) and f.shape[1] == P        # per problem (else a factor shared by all)
    g_per = g.ndim - 1 == len(shape) and g.shape[1] == P
    m_views = -1
    for k in range(k_max - 1, -1, -1):
        m = active[k]
        if m != m_views:         # the views of the active prefix, made again only when it shrinks
            a, rm, tm = acc[:m], rr[:m], term[:m]
            fm = f[:, :m] if f_per else f
            gm = g[:, :m] if g_per else g
            m_views = m
        a *= rm
        np.multiply(fm[k], gm[k], out=tm)
        a += tm
    if P > 1:
        out = np.empty(shape)
        out[order] = acc
        return out
    return acc
