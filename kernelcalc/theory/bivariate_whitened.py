r"""The bivariate Mills ratio $R_2=e^{Q}\Phi_2$ (:mod:`kernelcalc.theory.bivariate_normal`) from the whitened
distances, by a few-node Gauss rule per element (:func:`bivariate_mills_whitened`): the fast path of the ELU dual
(:func:`kernelcalc.theory.duals._elu_parts`), numpy and jax.numpy."""

from __future__ import annotations

import functools
import math

import numpy as np

from .bivariate_normal import _SQRT2, _erfcx

__all__ = ["bivariate_mills_whitened"]

#: n-point Gauss-Laguerre from A = edge on (measured against mpmath for alpha in [0, 100], beta in [0, 1]:
#: <= 4e-14 relative at each edge, falling fast above it)
_LAGUERRE_FROM = ((50.0, 4), (28.0, 5), (16.0, 6), (10.0, 8))
_TABLE_NODES = 12          # Gauss rule of the weight e^{-A_j x - x^2/2} below A = _TABLE_TOP
#: below A = _TABLE_TOP: n nodes from alpha = edge on (measured against mpmath, beta in [0, 1], A - A_j <= 0.3 (A_j + 1):
#: 8 nodes 5e-14 from alpha = 8, 10 nodes 8e-14 from alpha = 2, 12 nodes 9e-14 from alpha = 0)
_TABLE_FROM = ((8.0, 8), (2.0, 10), (-np.inf, 12))
_TABLE_GROWTH = 0.3        # A - A_j <= _TABLE_GROWTH (A_j + 1): the factor e^{-(A - A_j) x} stays polynomial-like
_TABLE_TOP = 10.0


def _weight_rule(a: float, n: int):
    r"""The ``n``-point Gauss rule of the weight $e^{-ax-x^2/2}$ on $[0,\infty)$: Stieltjes' procedure on a
    discretisation of the weight (20 Gauss-Legendre panels of 20 points on $[0,L]$, $aL+L^2/2=45$), then
    Golub-Welsch.  Measured: its mass and moments to ~1e-15 relative."""
    L = -a + math.sqrt(a * a + 90.0)
    g, gw = np.polynomial.legendre.leggauss(20)
    edges = np.linspace(0.0, L, 21)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    x = ((edges[1:] + edges[:-1])[:, None] / 2 + half * g).ravel()
    w = (half * gw).ravel() * np.exp(-a * x - x * x / 2)
    p_prev, p = np.zeros_like(x), np.ones_like(x)
    diag, off = np.zeros(n), np.zeros(n)
    norm = mass = float(np.sum(w))
    for j in range(n):
        diag[j] = np.sum(w * x * p * p) / norm
        p_prev, p = p, (x - diag[j]) * p - (off[j] if j else 0.0) * p_prev
        new = float(np.sum(w * p * p))
        if j + 1 < n:
            off[j + 1] = new / norm
        norm = new
    root = np.sqrt(off[1:])
    nodes, vecs = np.linalg.eigh(np.diag(diag) + np.diag(root, 1) + np.diag(root, -1))
    return nodes, mass * vecs[0] ** 2


@functools.lru_cache(maxsize=None)
def _weight_table(n: int = _TABLE_NODES):
    r"""Grid $A_j$ ($A_0=0$, $A_{j+1}=A_j+0.3(A_j+1)$, up to ``_TABLE_TOP``) and the ``n``-point
    Gauss rules of $e^{-A_jx-x^2/2}$ (built once, ~10 ms); the weights halved (the 1/2 of $M$)."""
    grid = [0.0]
    while grid[-1] + _TABLE_GROWTH * (grid[-1] + 1.0) < _TABLE_TOP:
        grid.append(grid[-1] + _TABLE_GROWTH * (grid[-1] + 1.0))
    rules = [_weight_rule(a, n) for a in grid]
    return np.array(grid), np.array([r[0] for r in rules]), np.array([r[1] for r in rules]) / 2   # 1/2 of M


@functools.lru_cache(maxsize=None)
def _laguerre_rule(n: int):
    r"""Gauss-Laguerre nodes $u$, $-u^2/2$ and weights/2 (the 1/2 of $M=\frac12\operatorname{erfcx}(\cdot/\sqrt2)$)."""
    u, w = np.polynomial.laguerre.laggauss(n)
    return u, -u * u / 2, w / 2


def _laguerre_part(A, al, be, n, xp):
    r"""$\frac1A\sum_iw_ie^{-x_i^2/2}M(\alpha+\beta x_i)$, $x_i=u_i/A$ (``al``, ``be`` already divided by $\sqrt2$)."""
    u, mhalf, w = (xp.asarray(v) for v in _laguerre_rule(n))
    inv = 1.0 / A
    x = u * inv[..., None]
    terms = xp.exp(mhalf * (inv * inv)[..., None]) * _erfcx(al[..., None] + be[..., None] * x, xp)
    return xp.sum(w * terms, axis=-1) * inv


def _table_part(A, al, be, xp, n: int = _TABLE_NODES):
    r"""$\sum_iW_{ji}e^{-(A-A_j)X_{ji}}M(\alpha+\beta X_{ji})$ at the tabulated $A_j\le A$ next to $A$ (``al``, ``be``
    already divided by $\sqrt2$)."""
    grid, X, W = (xp.asarray(v) for v in _weight_table(n))
    j = xp.clip(xp.searchsorted(grid, A, side="right") - 1, 0, grid.shape[0] - 1)
    Xj = X[j]
    terms = xp.exp((grid[j] - A)[..., None] * Xj) * _erfcx(al[..., None] + be[..., None] * Xj, xp)
    return xp.sum(W[j] * terms, axis=-1)


#: Gauss nodes at most below A = _TABLE_TOP when a relative accuracy of ~1e-7 will do (``tol``: a Newton sweep far
#: from its fixed point; measured against mpmath at the ELU dual's arguments, q 0.1-20, |rho| up to 0.999999: <= 1.3e-8)
_LOOSE_NODES = 7
_LOOSE_TOL = 1e-7


def _half_line(A, al, be, xp, loose=False):
    r"""$I(A;\alpha,\beta)=\int_0^\infty e^{-Ax-x^2/2}M(\alpha+\beta x)\,dx$ ($A\ge0$, $\alpha\ge0$,
    $0\le\beta\le1$): $n$-point Gauss-Laguerre in $Ax$ for $A\ge10$ ($n$ = 8 down to 4 as $A$ grows,
    ``_LAGUERRE_FROM``), below a Gauss rule of $e^{-A_jx-x^2/2}$ at the tabulated $A_j\le A$ next to
    $A$ times $e^{-(A-A_j)x}$ (8 to 12 nodes as $\alpha$ falls, ``_TABLE_FROM``).  numpy evaluates each element's rule only; jax.numpy both (8 Laguerre nodes
    from $A=10$) under ``where``."""
    al, be = al / _SQRT2, be / _SQRT2          # M(z) = erfcx(z / sqrt 2) / 2
    if xp is not np:
        big = A >= _TABLE_TOP
        lag = _laguerre_part(xp.where(big, A, _TABLE_TOP), al, be, 8, xp)
        tab = _table_part(xp.where(big, 0.0, A), al, be, xp)
        return xp.where(big, lag, tab)
    out = np.empty(A.shape)
    upper = np.inf
    for edge, n in _LAGUERRE_FROM:
        m = np.nonzero((A >= edge) & (A < upper))[0]
        upper = edge
        if m.size:
            out[m] = _laguerre_part(A[m], al[m], be[m], n, np)
    small = A < _TABLE_TOP
    upper = np.inf
    for edge, n in _TABLE_FROM:       # fewer nodes where M(alpha + beta x) is smoother (alpha = al sqrt 2 large)
        m = np.nonzero(small & (al >= edge / _SQRT2) & (al < upper))[0]
        upper = edge / _SQRT2
        if m.size:
            out[m] = _table_part(A[m], al[m], be[m], np, min(n, _LOOSE_NODES) if loose else n)
    return out


def bivariate_mills_whitened(a, b, rho, xp=np, tol=None):
    r"""$R_2=e^{Q}\Phi_2(h,k;\rho)$ (:func:`bivariate_mills`) from the whitened distances
    $a=(\rho k-h)/r\ge0$, $b=(\rho h-k)/r\ge0$, $r=\sqrt{1-\rho^2}$ (so $h=-(a+\rho b)/r$, $k=-(b+\rho a)/r$,
    $Q=(a^2+2\rho ab+b^2)/2$), $-1\le\rho<1$.  Passing $a, b$ keeps their relative accuracy where forming them
    from $h, k$ would cancel ($\rho\to\pm1$).  Conditioning on $X$ and writing $\Phi$ as a Mills ratio gives

    $$R_2=\frac{r}{2\pi}\iint_{\mathbb R_+^2}e^{-ay-bv-(y^2-2\rho yv+v^2)/2}\,dy\,dv .$$

    For $\rho\le0$ the inner integral is a Mills ratio $M(x)=e^{x^2/2}\Phi(-x)$ of a non-negative argument:
    $R_2=\frac r{\sqrt{2\pi}}I(a;b,-\rho)$ (the larger of $a, b$ as the weight's rate); for $\rho>0$, in
    $p=\frac{y+v}2$, $m=\frac{y-v}2$ ($p\ge|m|$) the inner integral over $p$ is a Mills ratio whose argument
    stays large as $\rho\to1$: $R_2=\frac{\sqrt{1+\rho}}{2\sqrt\pi}\big(I(a;\alpha,\beta)+I(b;\alpha,\beta)\big)$,
    $\alpha=\frac{a+b}{\sqrt{2(1-\rho)}}$, $\beta=\sqrt{\frac{1-\rho}2}$, with
    $I(A;\alpha,\beta)=\int_0^\infty e^{-Ax-x^2/2}M(\alpha+\beta x)dx$ (:func:`_half_line`: 4 to 12 nodes).
    Every term is positive.  Measured against mpmath: $\le4\cdot10^{-14}$ relative.

    **Arguments:** ``a``, ``b`` $\ge0$; ``rho`` in $[-1,1)$; ``xp``: numpy or jax.numpy; ``tol`` (numpy): a relative
    accuracy that will do; from :data:`_LOOSE_TOL` (1e-7) on the rules below $A=10$ take at most :data:`_LOOSE_NODES`
    nodes (a Newton sweep far from its fixed point, :mod:`kernelcalc.kernels._newton`).

    **Returns:** $R_2$ (at $\rho=-1$: 0).
    """
    a, b, rho = xp.broadcast_arrays(*(xp.asarray(v, dtype=xp.float64) for v in (a, b, rho)))
    hi, lo = xp.maximum(a, b), xp.minimum(a, b)
    pos = rho > 0
    if xp is np:     # one call of the rules for the direct (rho <= 0) and both rotated (rho > 0) integrals
        shape = a.shape
        a, b, rho, hi, lo, pos = (v.ravel() for v in (a, b, rho, hi, lo, pos))
        d, p = np.nonzero(~pos)[0], np.nonzero(pos)[0]
        g = 1.0 - rho[p]
        al, be = (a[p] + b[p]) / np.sqrt(2 * g), np.sqrt(g / 2)
        vals = _half_line(np.concatenate([hi[d], a[p], b[p]]), np.concatenate([lo[d], al, al]),
                          np.concatenate([-rho[d], be, be]), np, loose=tol is not None and tol >= _LOOSE_TOL)
        out = np.empty(a.shape)
        out[d] = np.sqrt((1.0 - rho[d]) * (1.0 + rho[d])) / math.sqrt(2 * math.pi) * vals[: d.size]
        out[p] = np.sqrt(1.0 + rho[p]) / (2 * math.sqrt(math.pi)) * (vals[d.size: d.size + p.size] + vals[d.size + p.size:])
        return out.reshape(shape)
    rn = xp.where(pos, 0.0, rho)
    direct = xp.sqrt((1.0 - rn) * (1.0 + rn)) / math.sqrt(2 * math.pi) * _half_line(hi, lo, -rn, xp)
    g = xp.where(pos, 1.0 - rho, 1.0)
    al, be = (a + b) / xp.sqrt(2 * g), xp.sqrt(g / 2)
    rotated = xp.sqrt(2.0 - g) / (2 * math.sqrt(math.pi)) * (_half_line(a, al, be, xp) + _half_line(b, al, be, xp))
    return xp.where(pos, rotated, direct)
