"""Benchmark: the build of the collapsed-triangle time grid (``kernels._triangle._unit_grid``), old vs new.

Each (m, n, delta) is built cold by both implementations side by side in one process (the new one's
lru_cache is bypassed with ``__wrapped__``): the REFERENCE below is a frozen copy of ``_unit_grid`` (and of
``_interp.barycentric_weights``) as of commit f29e9f9, before the vectorisation.  Prints the times, the
ratio and the largest difference of W, V, omega, Q relative to max|W| (resp. max|Q|).

    PYTHONPATH=$PWD python benchmarks/bench_triangle_grid.py
"""

from __future__ import annotations

import math
import time

import numpy as np

from kernelcalc.kernels import _triangle

_GAUSS = _triangle._GAUSS
_PIECES = _triangle._PIECES


# ---------------------------------------------------------------- REFERENCE (old code, frozen copy) ----
def _lobatto01_reference(n: int) -> np.ndarray:
    """Chebyshev-Lobatto points on [0, 1], increasing (exact ends)."""
    k = np.arange(n + 1)
    return 0.5 * (1.0 + np.sin(0.5 * np.pi * (2 * k - n) / n))



def _barycentric_reference(nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""``W[i, k]`` $=\ell_k(x_i)$, the Lagrange basis of the Chebyshev–Lobatto ``nodes`` at ``x``
    (second barycentric form, weights $(-1)^k$, halved at the ends; exact 1 at a node)."""
    m = nodes.size - 1
    w = (-1.0) ** np.arange(m + 1)
    w[0] *= 0.5
    w[-1] *= 0.5
    diff = np.asarray(x, float)[:, None] - nodes[None, :]
    exact = diff == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = w[None, :] / diff
        W = terms / np.sum(terms, axis=1, keepdims=True)
    hit = exact.any(axis=1)
    W[hit] = exact[hit].astype(float)
    return W



def _unit_grid_reference(m: int, n: int, delta: float) -> TriangleGrid:
    """:func:`triangle_grid` on [0, 1]."""
    T = 1.0
    a = math.asinh(1.0 / delta)
    g = lambda w: delta * np.sinh(a * w)                                   # noqa: E731
    dg = lambda w: delta * a * np.cosh(a * w)                              # noqa: E731
    ginv = lambda y: np.arcsinh(np.asarray(y) / delta) / a                 # noqa: E731
    r = T * _lobatto01_reference(m)
    wn = _lobatto01_reference(n)
    v = 1.0 - g(wn)
    v[0], v[-1] = 1.0, 0.0
    # antiderivatives: P_l(w*) = int_{w*}^1 l_l(w) g'(w) dw, via Chebyshev series on [0, 1]
    # degree: l_l has degree n; cosh(a w)'s Chebyshev coefficients fall below 1e-17 by about 2.5 a + 12
    deg = n + 16 + int(math.ceil(2.5 * a))
    xs = np.cos(np.pi * (np.arange(deg + 1) + 0.5) / (deg + 1))                 # Chebyshev points in [-1, 1]
    ws = 0.5 * (xs + 1.0)
    vals = _barycentric_reference(wn, ws) * dg(ws)[:, None]                                     # (deg+1, n+1)
    coef = np.polynomial.chebyshev.chebfit(xs, vals, deg)                      # (deg+1, n+1)
    anti = np.polynomial.chebyshev.chebint(coef, lbnd=-1.0) * 0.5              # d/dw = 2 d/dx
    total = np.polynomial.chebyshev.chebval(1.0, anti)                          # (n+1,)

    def P(wstar):                                                               # (len, n+1)
        x = 2.0 * np.asarray(wstar, float).ravel() - 1.0
        return total[None, :] - np.polynomial.chebyshev.chebvander(x, anti.shape[0] - 1) @ anti

    P0 = P(np.zeros(1))[0]                                                      # int_0^1 l_l g' = int over v in [0,1]
    gx, gw = np.polynomial.legendre.leggauss(max(_GAUSS, m))

    def gauss(lo, hi):
        """Composite Gauss-Legendre nodes/weights on [lo, hi] (4 pieces)."""
        edges = np.linspace(lo, hi, 5)
        h = np.diff(edges)
        x = (edges[:-1, None] + 0.5 * h[:, None] * (gx[None, :] + 1.0)).ravel()
        return x, (0.5 * h[:, None] * gw[None, :]).ravel()

    def int_rL_many(his):                                                       # int_0^hi L_k(r) r dr, (J, m+1)
        his = np.asarray(his, float)
        x = (his[:, None, None] * 0.25 * (np.arange(4)[None, :, None] + 0.5 * (gx[None, None, :] + 1.0)))
        wt = his[:, None, None] * 0.125 * gw[None, None, :] * np.ones((1, 4, 1))
        x, wt = x.reshape(his.size, -1), wt.reshape(his.size, -1)
        L = _barycentric_reference(r, x.ravel()).reshape(his.size, -1, m + 1)
        return np.einsum("jp,jpk->jk", wt * x, L)

    def int_rL(lo, hi):                                                         # int_lo^hi L_k(r) r dr
        if hi <= lo:
            return np.zeros(m + 1)
        x, wt = gauss(lo, hi)
        return (wt * x) @ _barycentric_reference(r, np.ravel(x))

    def segs(c, lo, hi):
        r"""$\int_{lo}^{hi}L_k(r)\,r\,P_l(w(c/r))\,dr$ ($c\le lo$) for arrays ``c, lo, hi`` (shape (J,)), in the
        variable $w'$ with $r=c/(1-g(w'))$, on ``_PIECES`` pieces of equal ratio in $r$ (the pole of $r(w')$ at
        $g=1$ stays a piece away).  Returns (J, m+1, n+1); zero where ``hi <= lo`` or ``c <= 0``."""
        c, lo, hi = (np.asarray(z, float) for z in (c, lo, hi))
        void = (hi <= lo) | (c <= 0)
        c, lo, hi = np.where(void, 1.0, c), np.where(void, 1.0, lo), np.where(void, 1.0, hi)
        frac = np.linspace(0.0, 1.0, _PIECES + 1)
        r_edges = lo[:, None] * (hi / lo)[:, None] ** frac[None, :]                 # (J, pieces+1)
        r_edges[:, -1] = hi
        w_edges = ginv(np.clip(1.0 - c[:, None] / r_edges, 0.0, 1.0))
        h = np.diff(w_edges, axis=1)                                               # (J, pieces)
        x = w_edges[:, :-1, None] + 0.5 * h[:, :, None] * (gx[None, None, :] + 1.0)
        wt = 0.5 * h[:, :, None] * gw[None, None, :] * np.where(void, 0.0, 1.0)[:, None, None]
        x, wt = x.reshape(c.size, -1), wt.reshape(c.size, -1)
        one_minus = 1.0 - g(x)
        rr = c[:, None] / one_minus
        scale = wt * rr * c[:, None] * dg(x) / one_minus**2
        Lr = _barycentric_reference(r, rr.ravel()).reshape(c.size, -1, m + 1) * scale[:, :, None]
        return np.matmul(Lr.transpose(0, 2, 1), P(x.ravel()).reshape(c.size, -1, n + 1))

    Pn = (m + 1) * (n + 1)
    W = np.zeros((Pn, Pn))
    V = np.zeros((Pn, Pn))
    for i in range(m + 1):
        t = r[i]
        s = t * v
        tail = int_rL(t, T)
        tail_seg = segs([t], [t], [T])[0]
        head = int_rL_many(s)                  # (n+1, m+1)
        fwd = 2.0 * head[:, :, None] * P0[None, None, :] + segs(s, s, np.full_like(s, t))
        bwd = 2.0 * np.outer(tail, P0)[None] - tail_seg[None] - segs(s, np.full_like(s, t), np.full_like(s, T))
        W[i * (n + 1):(i + 1) * (n + 1)] = fwd.reshape(n + 1, -1)
        V[i * (n + 1):(i + 1) * (n + 1)] = bwd.reshape(n + 1, -1)
    omega = (2.0 * np.outer(int_rL(0.0, T), P0)).ravel()
    Q = _barycentric_reference(r, (r[:, None] * v[None, :]).ravel())
    return r, v, W, V, omega, Q



# ---------------------------------------------------------------- end of REFERENCE --------------------


CASES = ((16, 16, 1.0), (24, 24, 0.25), (32, 32, 1.0 / 16), (40, 40, 1.0 / 64), (48, 48, 1.0))


def main() -> None:
    new = _triangle._unit_grid.__wrapped__
    print(f"{'m':>3} {'n':>3} {'delta':>8} {'old s':>8} {'new s':>8} {'ratio':>6} {'max dW,dV,domega /max|W|':>26} {'dQ':>8}")
    tot_old = tot_new = 0.0
    for m, n, delta in CASES:
        t0 = time.perf_counter()
        r, v, W, V, omega, Q = _unit_grid_reference(m, n, delta)
        t1 = time.perf_counter()
        g = new(m, n, delta)
        t2 = time.perf_counter()
        sc = np.max(np.abs(W))
        d = max(np.max(np.abs(g.W - W)), np.max(np.abs(g.V - V)), np.max(np.abs(g.omega - omega))) / sc
        dq = np.max(np.abs(g.Q - Q))
        assert np.array_equal(g.r, r) and np.array_equal(g.v, v)
        tot_old += t1 - t0
        tot_new += t2 - t1
        print(f"{m:3d} {n:3d} {delta:8.4g} {t1 - t0:8.3f} {t2 - t1:8.3f} {(t1 - t0) / (t2 - t1):6.1f} {d:26.2e} {dq:8.1e}")
    print(f"total: old {tot_old:.3f} s, new {tot_new:.3f} s, ratio {tot_old / tot_new:.1f} (cold, no memo)")


if __name__ == "__main__":
    main()
