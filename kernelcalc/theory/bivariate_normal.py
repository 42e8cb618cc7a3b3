r"""The bivariate normal CDF $\Phi_2(h,k;\rho)=P(X<h,\,Y<k)$ ($X,Y$ standard normal, correlation $\rho$)
and its scaled form $R_2(h,k;\rho)=e^{Q(h,k;\rho)}\,\Phi_2(h,k;\rho)$, in float64, for numpy and jax.numpy
(``xp``; jit and vmap work: every branch is an elementwise ``where``).

**$\Phi_2$** (:func:`bivariate_normal_cdf`) is Genz's BVND (Drezner & Wesolowsky 1990, Genz 2004): for
$|\rho|<0.925$, $\Phi_2=\Phi(h)\Phi(k)+\frac1{2\pi}\int_0^{\arcsin\rho}
\exp\!\big(-\frac{h^2+k^2-2hk\sin\theta}{2\cos^2\theta}\big)d\theta$ by 20-point Gauss–Legendre; for
$|\rho|\ge0.925$ Genz's expansion about $|\rho|=1$ with its singular part in closed form. Absolute
accuracy $\approx10^{-16}$ for every $\rho\in[-1,1]$.

**$R_2$** (:func:`bivariate_mills`), the bivariate Mills ratio: $Q=\frac{h^2-2\rho hk+k^2}{2(1-\rho^2)}$,
so that $R_2=2\pi\sqrt{1-\rho^2}\,\Phi_2/\varphi_2$ stays $O(1)$ deep in the lower tail, where $\Phi_2$
underflows and $e^{A}\Phi_2$ products (Gaussian expectations of $e^{a}\mathbb 1\{a<0\}$ ...) would cancel or
overflow.  For $h+k\le0$ (then $\Phi_2(h,k;-1)=0$), Plackett's identity $\partial_\rho\Phi_2=\varphi_2$ with
$\rho=\sin\theta$, $\theta=2\psi-\pi/2$ and $\lambda=\log\tan^2\psi$ gives an integral of positive terms only,

$$R_2=\frac1\pi\int_0^\infty\exp\!\big(-\alpha\,(e^{\delta}-1)-\beta\,(e^{-\delta}-1)\big)
\frac{d\delta}{4\cosh\frac{\lambda_r-\delta}2},\qquad \lambda_r=\log\frac{1+\rho}{1-\rho},\quad
\alpha=\frac{(h+k)^2}8\frac{1-\rho}{1+\rho},\quad\beta=\frac{(h-k)^2}8\frac{1+\rho}{1-\rho}$$

(the exponent is concave in $\delta$ and exactly 0 at $\delta=0$): no cancellation, relative accuracy
$\sim10^{-15}$ at any size of $h, k$.  It is integrated by Gauss–Legendre on panels graded geometrically
away from the peak of the integrand (found by bisection), so peaks of any width are resolved.  Where
$Q\le2$ (or $\rho\ge0$ and $Q\le10$, where BVND's terms do not cancel) $e^Q\Phi_2$ from BVND is as
accurate (measured: $<10^{-14}$ relative) and ten times cheaper; numpy evaluates only the branch each element
needs.  Measured against mpmath: $\le2\cdot10^{-14}$ relative for $|h|,|k|\le2000$, $|\rho|\le1-10^{-6}$.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["normal_cdf", "mills_ratio", "bivariate_normal_cdf", "orthant_probabilities", "bivariate_mills"]

_XP, _WP = np.polynomial.legendre.leggauss(16)     # per panel of the graded rule
_PANELS = 12                                        # panels on each side of the peak
_STRIDE = 3.0                                       # longest panel, in local scales of the integrand
_BISECT = 64
_SQRT2 = math.sqrt(2.0)


def _special(xp):
    if xp is np:
        import scipy.special as special
    else:
        import jax.scipy.special as special
    return special


#: jax's erfcx (jax 0.10) is wrong on z in [26.543, 26.642] (0 at 26.6: erfc underflows before e^{z^2} overflows;
#: measured against scipy on 1e6 points of [0, 100], nowhere else beyond 1e-13): from _ERFCX_SERIES on, jax takes the
#: asymptotic series, whose _ERFCX_TERMS terms reach 1e-17 relative there (the k-th is (2k-1)!!/(2z^2)^k)
_ERFCX_SERIES = 20.0
_ERFCX_TERMS = 10


def _erfcx(z, xp):
    r"""$\operatorname{erfcx}(z)=e^{z^2}\operatorname{erfc}(z)$: scipy's in numpy; in jax.numpy its own below
    :data:`_ERFCX_SERIES`, the asymptotic series $\frac1{z\sqrt\pi}\sum_k(-1)^k\frac{(2k-1)!!}{(2z^2)^k}$ above."""
    if xp is np:
        return _special(np).erfcx(z)
    big = z >= _ERFCX_SERIES
    zb = xp.where(big, z, _ERFCX_SERIES)
    inv = 1.0 / (2.0 * zb * zb)
    term, total = xp.ones_like(zb), xp.ones_like(zb)
    for k in range(1, _ERFCX_TERMS):
        term = -term * (2 * k - 1) * inv
        total = total + term
    return xp.where(big, total / (zb * math.sqrt(math.pi)), _special(xp).erfcx(xp.where(big, 0.0, z)))


def normal_cdf(x, xp=np):
    r"""$\Phi(x)=\frac12\operatorname{erfc}(-x/\sqrt2)$ (relative accuracy in the lower tail)."""
    return 0.5 * _special(xp).erfc(-x / _SQRT2)


def mills_ratio(x, xp=np):
    r"""$e^{x^2/2}\Phi(-x)=\frac12\operatorname{erfcx}(x/\sqrt2)$ ($=\Phi(-x)/(\sqrt{2\pi}\varphi(x))$), for
    $x\ge0$ (no overflow at any $x$; $\approx1/(\sqrt{2\pi}x)$ for large $x$)."""
    return 0.5 * _erfcx(x / _SQRT2, xp)


def bivariate_normal_cdf(h, k, rho, xp=np, omr=None):
    r"""$\Phi_2(h,k;\rho)=P(X<h,Y<k)$ by Genz's BVND (module doc), elementwise over broadcast arrays.

    **Arguments:** ``h``, ``k``: upper limits; ``rho``: correlation in $[-1,1]$; ``xp``: numpy or jax.numpy;
    ``omr`` (numpy only): $1-\rho$, exactly, where $\rho$ rounded keeps only its first digits ($\rho\to1$): the
    expansion about $|\rho|=1$ then takes $1-\rho^2=(1-\rho)(1+\rho)$ from it, so that $\Phi_2$ keeps its
    $\sqrt{1-\rho}$ dependence to rounding (a kinked activation's $\dot C$ at input angles $\theta\sim10^{-8}$).

    **Returns:** an array of probabilities in $[0,1]$ (absolute accuracy about $10^{-16}$).
    """
    if omr is not None:
        if xp is not np:
            raise TypeError("bivariate_normal_cdf: omr is evaluated with numpy only")
        h, k, rho, omr = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (h, k, rho, omr)))
        return _bvnu(-h, -k, rho, xp, omr)
    h, k, rho = xp.broadcast_arrays(*(xp.asarray(v, dtype=xp.float64) for v in (h, k, rho)))
    return _bvnu(-h, -k, rho, xp)


#: Genz's Gauss-Legendre orders of the |r| < 0.925 branch: 6 nodes below |r| = 0.3, 12 below 0.75, else 20
_GENZ_ORDERS = ((0.3, 6), (0.75, 12), (0.925, 20))
_GL = {n: np.polynomial.legendre.leggauss(n) for _, n in _GENZ_ORDERS}


def _low_branches(r):
    """``(mask, nodes)`` of each non-empty |r| < 0.925 branch of Genz's rule (:data:`_GENZ_ORDERS`), numpy."""
    a, below = np.abs(r), 0.0
    for edge, n in _GENZ_ORDERS:
        m = (a >= below) & (a < edge)
        below = edge
        if np.any(m):
            yield m, n


def _bvnu(h, k, r, xp, omr=None):
    """Genz's BVNU: $P(X>h, Y>k)$ (arrays of one shape; ``omr``: $1-r$, numpy only).  numpy evaluates each
    element's branch only (with Genz's node counts); jax.numpy both branches with 20 nodes, selected by ``where``."""
    low = xp.abs(r) < 0.925
    if xp is not np:
        lo = _bvnu_low(h, k, xp.where(low, r, 0.0), 20, xp)
        hi = _bvnu_high(h, k, xp.where(low, 0.95, r), xp)
        return xp.clip(xp.where(low, lo, hi), 0.0, 1.0)
    out = np.empty(np.shape(r))
    for m, n in _low_branches(r):
        hm, km = h[m][None], k[m][None]
        out[m] = _low_np(hm, km, r[m], n, normal_cdf(-hm), normal_cdf(-km))[0]
    m = ~low
    if np.any(m):
        out[m] = _bvnu_high(h[m], k[m], r[m], np, None if omr is None else omr[m])
    return np.clip(out, 0.0, 1.0)


def orthant_probabilities(h, k, r, omr=None, tails=None):
    r"""$P(X>h_p,\,Y>k_p)$ for $P$ pairs of limits sharing each correlation (numpy; a relu sum's orthants):
    ``h``, ``k`` ``(P, ...)``; ``r`` (``omr`` $=1-r$ exactly, if given) and ``tails`` $(\Phi(-h),\Phi(-k))$ (if known)
    broadcasting.  :func:`bivariate_normal_cdf` ``(-h, -k, r)`` with the $|r|<0.925$ branch's angles computed once
    for the $P$ pairs (~40 % of Genz's time there); a pair whose limits are all 0 (a kink at 0 with itself: relu6's
    first breakpoint) in closed form, $\frac12-\arcsin(\sqrt{(1-r)/2})/\pi$ ($r>0$), $\arcsin(\sqrt{(1+r)/2})/\pi$.  (Measured and not taken: the elements
    with a limit past 8.8, 0 or the other tail to 7e-19, left out of the rule: 37 % of relu6's on 2000 standardised
    rows, but grouping the rest by the pairs they keep cost as much as it saved.)"""
    h, k = np.asarray(h, np.float64), np.asarray(k, np.float64)
    P = h.shape[0]
    shape = np.broadcast_shapes(h.shape[1:], k.shape[1:], np.shape(r), () if omr is None else np.shape(omr))
    r = np.broadcast_to(np.asarray(r, np.float64), shape).reshape(-1)
    h, k = (np.broadcast_to(v, (P,) + shape).reshape(P, -1) for v in (h, k))
    if omr is not None:
        omr = np.broadcast_to(np.asarray(omr, np.float64), shape).reshape(-1)
    Ph, Pk = ((normal_cdf(-h), normal_cdf(-k)) if tails is None else
              (np.broadcast_to(t, (P,) + shape).reshape(P, -1) for t in tails))
    origin = np.all(h == 0.0, axis=1) & np.all(k == 0.0, axis=1)
    if not np.any(origin):
        out = _orthants_genz(h, k, r, omr, Ph, Pk)
    else:
        # P(X > 0, Y > 0) = 1/4 + arcsin(r) / 2 pi: 1/2 - arcsin(sqrt((1 - r) / 2)) / pi for r > 0 (with 1 - r exactly
        # where given), arcsin(sqrt((1 + r) / 2)) / pi for r <= 0 (relatively accurate as r -> -1, where a squared
        # relu's C cancels to 1e-16 of its terms)
        out = np.empty(h.shape)
        one_minus = np.clip(1.0 - r if omr is None else omr, 0.0, 2.0)
        out[origin] = np.where(r > 0, 0.5 - np.arcsin(np.sqrt(one_minus / 2.0)) / math.pi,
                               np.arcsin(np.sqrt(np.clip(1.0 + r if omr is None else 2.0 - omr, 0.0, 2.0) / 2.0)) / math.pi)
        rest = ~origin
        if np.any(rest):
            out[rest] = _orthants_genz(h[rest], k[rest], r, omr, Ph[rest], Pk[rest])
    return np.clip(out, 0.0, 1.0).reshape((P,) + shape)


def _orthants_genz(h, k, r, omr, Ph, Pk):
    """:func:`orthant_probabilities` by Genz's rule: ``(P, M)`` limits and tails, ``(M,)`` correlations."""
    out = np.empty(h.shape)
    for m, n in _low_branches(r):
        out[:, m] = _low_np(h[:, m], k[:, m], r[m], n, Ph[:, m], Pk[:, m])
    m = np.abs(r) >= 0.925
    if np.any(m):
        rr = np.broadcast_to(r[m], (h.shape[0], int(np.sum(m))))
        oo = None if omr is None else np.broadcast_to(omr[m], rr.shape)
        out[:, m] = _bvnu_high(h[:, m], k[:, m], rr, np, oo)
    return out


#: elements (limit pairs x correlations) per block of :func:`_low_np`: its (block, nodes) temporaries stay in cache
#: (measured, 2e5 elements: 280-460 ns an element unblocked with Genz's 6-20 nodes, 48-137 ns blocked and in place)
_BLOCK = 4096


def _low_np(h, k, r, n, Ph, Pk):
    r"""numpy, $|r|<0.925$: $P(X>h_p,Y>k_p)$ for ``h``, ``k``, ``Ph`` $=\Phi(-h)$, ``Pk`` $=\Phi(-k)$ of shape
    ``(P, M)`` and ``r`` ``(M,)`` (the $P$ pairs share each correlation's angles), by :func:`_bvnu_low`'s
    ``n``-point rule, $\frac{\arcsin r}{4\pi}\sum_iw_i\exp\big((hk\sin t_i-\frac{h^2+k^2}2)/\cos^2t_i\big)+
    \Phi(-h)\Phi(-k)$, in blocks of :data:`_BLOCK` elements, in place."""
    x, w = _GL[n]
    wq = w / (4 * math.pi)
    half = (1.0 + x) / 2.0
    P, M = h.shape
    out = np.empty((P, M))
    step = max(1, _BLOCK // max(P, 1))
    for s in range(0, M, step):
        e = min(M, s + step)
        asr = np.arcsin(r[s:e])
        sn = np.sin(asr[:, None] * half)           # (b, n), shared by the P pairs
        inv = 1.0 - sn * sn
        np.divide(1.0, inv, out=inv)               # 1 / cos^2
        sn *= inv                                  # sin / cos^2
        hb, kb = h[:, s:e], k[:, s:e]
        arg = (hb * kb)[..., None] * sn
        arg -= ((hb * hb + kb * kb) * 0.5)[..., None] * inv
        np.exp(arg, out=arg)
        out[:, s:e] = (arg @ wq) * asr + Ph[:, s:e] * Pk[:, s:e]
    return out


def _bvnu_low(h, k, r, n, xp):
    r"""$|r|<0.925$: $\Phi(-h)\Phi(-k)+\frac1{2\pi}\int_0^{\arcsin r}\exp(-\frac{h^2+k^2-2hk\sin t}{2\cos^2t})dt$ by
    ``n``-point Gauss-Legendre."""
    x, w = (xp.asarray(v) for v in _GL[n])
    hk = h * k
    asr = xp.arcsin(r)
    sn = xp.sin(asr[..., None] * (1.0 + x) / 2.0)
    hs = (h * h + k * k) / 2.0
    return xp.sum(w * xp.exp((sn * hk[..., None] - hs[..., None]) / (1.0 - sn * sn)), axis=-1) * asr / (4 * math.pi) \
        + normal_cdf(-h, xp) * normal_cdf(-k, xp)


def _bvnu_high(h, k, r, xp, omr=None):
    r"""$|r|>=0.925$: Genz's expansion about $|r|=1$ (its singular part in closed form), 20 nodes; $1-r^2$ from
    ``omr`` $=1-r$ when given (accurate at $r\to\pm1$)."""
    ncdf = lambda v: normal_cdf(v, xp)  # noqa: E731
    hk = h * k
    neg = r < 0
    kk = xp.where(neg, -k, k)
    hkk = xp.where(neg, -hk, hk)
    rh = xp.abs(r)
    interior = rh < 1.0 if omr is None else (omr > 0.0) & (omr < 2.0)
    one_minus = (1.0 - rh) * (1.0 + rh) if omr is None else omr * (2.0 - omr)     # 1 - r^2
    as_ = xp.where(interior, one_minus, 1.0)
    bs = (h - kk) ** 2
    if xp is np:    # the correction only where it is not below rounding (e^-700: nearly parallel, far-apart limits)
        live = interior & ((bs / as_ <= _DEAD) | (bs / as_ + hkk <= _DEAD))
        bvn = np.zeros(np.shape(h))
        if np.any(live):
            bvn[live] = _high_correction(as_[live], bs[live], hkk[live], np)
    else:
        bvn = xp.where(interior, _high_correction(as_, bs, hkk, xp), 0.0)
    if xp is np:     # each element's branch only
        out = np.empty(np.shape(h))
        p = ~neg
        out[p] = ncdf(-np.maximum(h[p], kk[p])) + bvn[p]
        m = neg & (h < kk)
        if np.any(m):
            hm, km = h[m], kk[m]
            out[m] = np.where(hm < 0, ncdf(km) - ncdf(hm), ncdf(-hm) - ncdf(-km))
        m = neg & (h >= kk)
        out[m] = 0.0
        out[neg] -= bvn[neg]
        return out
    pos = ncdf(-xp.maximum(h, kk)) + bvn
    negv = xp.where(h >= kk, -bvn, xp.where(h < 0, ncdf(kk) - ncdf(h), ncdf(-h) - ncdf(-kk)) - bvn)
    return xp.where(neg, negv, pos)


#: bs / (1 - r^2) (and plus hk) beyond which every term of Genz's correction is below e^-700 (numpy skips it)
_DEAD = 1400.0


#: Gauss-Legendre nodes of the |r| >= 0.925 correction (numpy): (a = sqrt(1 - r^2) below, nodes where
#: (h - k)^2 / (1 - r^2) < 1e-3, nodes elsewhere); past the last edge Genz's 20.  The integrand is analytic on [0, a] but
#: for e^{-(h - k)^2 / 2x^2}, whose layer at x ~ |h - k| holds a negligible part of it when that ratio is small.
#: Measured against 40 nodes on 2e5 random (r, h, k), |h| <= 8, 1 - r from 1e-14: absolute error <= 2e-17 in every band
_HIGH_NODES = ((0.01, 4, 4), (0.05, 4, 8), (0.15, 6, 16), (0.4, 8, 20))


def _high_nodes(as_, bs):
    """Gauss-Legendre node counts of :func:`_high_correction` per element (:data:`_HIGH_NODES`)."""
    a = np.sqrt(as_)
    near = bs < 1e-3 * as_
    n = np.full(a.shape, 20)
    for edge, n_near, n_far in _HIGH_NODES[::-1]:
        n = np.where(a < edge, np.where(near, n_near, n_far), n)
    return n


def _high_correction(as_, bs, hkk, xp):
    r"""Genz's correction of the $|r|\ge0.925$ branch (``as_`` $=1-r^2$, ``bs`` $=(h-k)^2$, ``hkk`` $=hk$, signs
    folded for $r<0$): the singular part in closed form and a Gauss-Legendre sum (jax.numpy: Genz's 20 nodes;
    numpy: 4 to 20 by :data:`_HIGH_NODES`)."""
    ncdf = lambda v: normal_cdf(v, xp)  # noqa: E731
    a = xp.sqrt(as_)
    c = (4.0 - hkk) / 8.0
    d = (12.0 - hkk) / 80.0
    asr0 = -(bs / as_ + hkk) / 2.0
    bvn = xp.where(asr0 > -100.0, a * xp.exp(xp.maximum(asr0, -100.0))
                   * (1.0 - c * (bs - as_) * (1.0 - d * bs) / 3.0 + c * d * as_ * as_), 0.0)
    b = xp.sqrt(bs)
    if xp is np:     # (b = 0: equal limits, the term vanishes)
        sp_ = np.zeros(np.shape(b))
        m = b > 0
        sp_[m] = math.sqrt(2 * math.pi) * ncdf(-b[m] / a[m])
    else:
        sp_ = math.sqrt(2 * math.pi) * ncdf(-b / a)
    bvn = bvn - xp.where(hkk > -100.0, xp.exp(-xp.minimum(hkk, 100.0) / 2.0) * sp_ * b
                         * (1.0 - c * bs * (1.0 - d * bs) / 3.0), 0.0)

    def rule(n, a, bs, hkk, c, d):
        x, w = (xp.asarray(v) for v in _GL_ANY(n))
        ah = a / 2.0
        xs = (ah[..., None] * (1.0 + x)) ** 2
        asr1 = -(bs[..., None] / xs + hkk[..., None]) / 2.0
        sp1 = 1.0 + c[..., None] * xs * (1.0 + 5.0 * d[..., None] * xs)
        rs = xp.sqrt(1.0 - xs)
        ep = xp.exp(-(hkk[..., None] / 2.0) * xs / (1.0 + rs) ** 2) / rs
        terms = xp.where(asr1 > -100.0, xp.exp(xp.maximum(asr1, -100.0)) * (sp1 - ep), 0.0)
        return ah * xp.sum(w * terms, axis=-1)

    if xp is not np:
        return (rule(20, a, bs, hkk, c, d) - bvn) / (2 * math.pi)
    n = _high_nodes(as_, bs)
    total = np.empty(np.shape(a))
    for k in np.unique(n):
        m = n == k
        total[m] = _high_rule_np(int(k), a[m], bs[m], hkk[m], c[m], d[m])
    return (total - bvn) / (2 * math.pi)


def _high_rule_np(n, a, bs, hkk, c, d):
    r"""numpy: the ``n``-point Gauss-Legendre sum of :func:`_high_correction` over $x\in[0,a]$ (1-D arrays),
    $\frac a2\sum_iw_i\,e^{-(b^2/x_i^2+hk)/2}\big(1+c\,x_i^2(1+5d\,x_i^2)-e^{-hk\,x_i^2/(2(1+r_i)^2)}/r_i\big)$,
    $r_i=\sqrt{1-x_i^2}$ (terms whose first exponent is below $-100$ dropped), in blocks of :data:`_BLOCK`
    elements, in place."""
    x, w = _GL_ANY(n)
    half = (1.0 + x) / 2.0
    out = np.empty(a.shape)
    step = max(1, _BLOCK // n)
    for s in range(0, a.size, step):
        e = min(a.size, s + step)
        ah = a[s:e, None] * 0.5
        xs = a[s:e, None] * half
        xs *= xs                                   # (b, n): (a (1 + x) / 2)^2
        hk = hkk[s:e, None]
        asr1 = bs[s:e, None] / xs
        asr1 += hk
        asr1 *= -0.5
        live = asr1 > -100.0
        np.exp(asr1, out=asr1)                     # (where not live: replaced below)
        sp1 = 5.0 * d[s:e, None] * xs
        sp1 += 1.0
        sp1 *= xs
        sp1 *= c[s:e, None]
        sp1 += 1.0
        rs = 1.0 - xs
        np.sqrt(rs, out=rs)
        ep = 1.0 + rs
        ep *= ep
        np.divide(xs, ep, out=ep)
        ep *= hk
        ep *= -0.5
        np.exp(ep, out=ep)
        ep /= rs
        sp1 -= ep
        sp1 *= asr1
        terms = np.where(live, sp1, 0.0)
        out[s:e] = ah[:, 0] * (terms @ w)
    return out


@functools.lru_cache(maxsize=None)
def _GL_ANY(n: int):
    """The ``n``-point Gauss-Legendre rule on [-1, 1]."""
    return np.polynomial.legendre.leggauss(n)


def _loop(n, body, state, xp):
    """``n`` steps of ``state = body(i, state)`` (jax: one traced body, ``lax.fori_loop``)."""
    if xp is np:
        for i in range(n):
            state = body(i, state)
        return state
    import jax

    return jax.lax.fori_loop(0, n, body, state)


def _walk(n, step, state, xp):
    """``n`` steps of ``state = step(state)``, returning the stacked (left, right) edges (``state[0]``,
    ``state[2]`` after each step) along a new last axis (jax: ``lax.scan``)."""
    if xp is np:
        lefts, rights = [], []
        for _ in range(n):
            state = step(state)
            lefts.append(state[0])
            rights.append(state[2])
        return np.stack(lefts, axis=-1), np.stack(rights, axis=-1)
    import jax

    def body(st, _):
        st = step(st)
        return st, (st[0], st[2])

    _, (lefts, rights) = jax.lax.scan(body, state, None, length=n)
    return xp.moveaxis(lefts, 0, -1), xp.moveaxis(rights, 0, -1)


def _quadratic(h, k, rho, xp):
    r"""$(\alpha, \beta, \lambda_r, Q)$ of the module doc; $Q=\frac{(h+k)^2}{4(1+\rho)}+\frac{(h-k)^2}{4(1-\rho)}$
    (a term with a zero numerator is 0 at $\rho=\mp1$)."""
    s2, d2 = (h + k) ** 2, (h - k) ** 2
    p, m = 1.0 + rho, 1.0 - rho
    safe_p, safe_m = xp.where(p > 0, p, 1.0), xp.where(m > 0, m, 1.0)
    qa = xp.where(s2 > 0, xp.where(p > 0, s2 / (4 * safe_p), xp.inf), 0.0)
    qb = xp.where(d2 > 0, xp.where(m > 0, d2 / (4 * safe_m), xp.inf), 0.0)
    alpha = xp.where(s2 > 0, s2 / 8 * m / safe_p, 0.0)
    beta = xp.where(d2 > 0, d2 / 8 * p / safe_m, 0.0)
    lam_r = xp.log(safe_p) - xp.log(safe_m)
    return alpha, beta, lam_r, qa + qb


def _graded(h, k, rho, xp):
    r"""$R_2$ by the positive integral of the module doc (requires $h+k\le0$, $-1<\rho<1$)."""
    alpha, beta, lam_r, _ = _quadratic(h, k, rho, xp)

    def slope(dl):   # d/d delta of the log-integrand (decreasing: the log-integrand is concave)
        return -alpha * xp.exp(dl) + beta * xp.exp(-dl) + 0.5 * xp.tanh((lam_r - dl) / 2)

    lo, hi = xp.zeros_like(alpha), xp.full_like(alpha, 240.0)
    def bisect(_, state):
        lo, hi = state
        mid = 0.5 * (lo + hi)
        up = slope(mid) > 0
        return xp.where(up, mid, lo), xp.where(up, hi, mid)

    lo, hi = _loop(_BISECT, bisect, (lo, hi), xp)
    peak = 0.5 * (lo + hi)
    peak = xp.where(slope(xp.zeros_like(peak)) <= 0, 0.0, peak)

    def scale(dl):   # the length over which the log-integrand changes by O(1) at dl
        curv = alpha * xp.exp(dl) + beta * xp.exp(-dl) + 0.125 / xp.cosh((lam_r - dl) / 2) ** 2
        return 1.0 / (xp.sqrt(curv) + xp.abs(slope(dl)))

    # panels walk away from the peak; each is at most twice the previous one and at most _STRIDE local
    # scales long (the log-integrand is concave: its slope only steepens away from the peak), so a
    # Gaussian peak, an exponential decay from the end point and a double-exponential tail are all resolved
    def walk(state):
        el, wl, er, wr = state
        wl = xp.minimum(2 * wl, _STRIDE * scale(el))
        wr = xp.minimum(2 * wr, _STRIDE * scale(er))
        return xp.maximum(el - wl, 0.0), wl, er + wr, wr

    w0 = xp.minimum(scale(peak), 4.0)
    lefts, rights = _walk(_PANELS, walk, (peak, w0, peak, w0), xp)
    left = xp.concatenate([peak[..., None], lefts], axis=-1)
    right = xp.concatenate([peak[..., None], rights], axis=-1)
    edges_lo = xp.concatenate([left[..., 1:], right[..., :-1]], axis=-1)
    edges_hi = xp.concatenate([left[..., :-1], right[..., 1:]], axis=-1)
    half = (edges_hi - edges_lo) / 2
    mid = (edges_hi + edges_lo) / 2
    nodes = mid[..., None] + half[..., None] * xp.asarray(_XP)                 # (..., panels, n)
    weights = half[..., None] * xp.asarray(_WP)
    a_, b_, l_ = (v[..., None, None] for v in (alpha, beta, lam_r))
    z = (l_ - nodes) / 2
    log_cosh = xp.abs(z) + xp.log1p(xp.exp(-2 * xp.abs(z))) - math.log(2.0)
    grow = xp.where(a_ > 0, a_ * xp.expm1(xp.minimum(nodes, 700.0)), 0.0)
    expo = -grow - b_ * xp.expm1(-nodes) - log_cosh
    return xp.sum(weights * xp.exp(xp.minimum(expo, 700.0)), axis=(-2, -1)) / (4 * math.pi)


def bivariate_mills(h, k, rho, xp=np):
    r"""$R_2(h,k;\rho)=e^{Q}\,\Phi_2(h,k;\rho)$, $Q=\frac{h^2-2\rho hk+k^2}{2(1-\rho^2)}$, for $h+k\le0$ (module doc):
    the bivariate Mills ratio, $O(1)$ where $\Phi_2$ itself underflows.  At $\rho=1$ it needs $h=k$
    ($R_2=e^{h^2/2}\Phi(h)$); at $\rho=-1$ it is 0 (for $h+k<0$; $e^{Q}$ with $Q$ finite only when $h+k=0$).

    **Arguments:** ``h``, ``k`` with ``h + k <= 0``; ``rho`` in $[-1,1]$; ``xp``: numpy or jax.numpy.

    **Returns:** an array, relative accuracy about $10^{-15}$ (also for $|h|,|k|$ up to $10^4$ and beyond).
    """
    h, k, rho = xp.broadcast_arrays(*(xp.asarray(v, dtype=xp.float64) for v in (h, k, rho)))
    _, _, _, Q = _quadratic(h, k, rho, xp)
    interior = xp.abs(rho) < 1.0
    genz_ok = interior & ((Q <= 2.0) | ((rho >= 0) & (Q <= 10.0)))
    at_one = mills_ratio(-xp.minimum(h, k), xp)                 # rho = 1 (h = k)
    rho_in = xp.where(interior, rho, 0.0)
    if xp is np:
        out = np.where(rho >= 1.0, at_one, 0.0)
        g = genz_ok
        if np.any(g):
            out[g] = np.exp(Q[g]) * _bvnu(-h[g], -k[g], rho_in[g], np)
        p = interior & ~genz_ok
        if np.any(p):
            out[p] = _graded(h[p], k[p], rho_in[p], np)
        return out
    genz = xp.exp(xp.where(genz_ok, Q, 0.0)) * _bvnu(-h, -k, rho_in, xp)
    graded = _graded(xp.where(genz_ok, -1.0, h), xp.where(genz_ok, -1.0, k), rho_in, xp)
    return xp.where(rho >= 1.0, at_one, xp.where(genz_ok, genz, xp.where(interior, graded, 0.0)))
