r"""The collapsed-triangle time discretisation of the Neural-ODE Goursat problems (kinked activations).

For an activation with a kink (relu, leaky relu, abs, elu, piecewise), $\dot C$ (and, more weakly,
$C$) is not smooth where the correlation $\rho(r,q)$ of $(h_r(x), h_q(y))$ reaches 1: for the
self-kernel ($x=y$) on the whole diagonal $r=q$, where $1-\rho\sim(r-q)^2$ and relu's
$\dot C=(\pi-\theta)/2\pi$ has a $|r-q|$ kink.  A tensor grid in $(r,q)$ then converges only
algebraically, and so do $S$ and $\Lambda$ themselves ($\Lambda$ has a $|t-s|^3$ kink).

**Two triangles.**  For inputs of equal norm, $S$, $C$, $\dot C$, $\Lambda$ are symmetric in $(r,q)$
(the joint law of $(h(x), h(y))$ is exchangeable), and on each closed triangle they are analytic:
$\theta(r,q) = |r-q|\,\eta(r,q)$ with $\eta$ analytic, and $C,\dot C$ are analytic in $\theta$.  We
represent them on the lower triangle $q\le r$ in *collapsed* (Duffy) coordinates
$q = r\,v$, $v\in[0,1]$, with Chebyshev–Lobatto nodes $r_k$ ($k=0..m$) on $[0,T]$ and nodes $w_l$
($l=0..n$) on $[0,1]$, $v = 1-g(w)$, $g(w)=\delta\sinh(aw)$, $a=\operatorname{arcsinh}(1/\delta)$:
$w=0$ is the diagonal, $w=1$ the axis $q=0$.  The kink $|r-q| = r\,g(w)$ is analytic in $(r,w)$, and
so is the conical point at the corner $(0,0)$ of anti-parallel inputs ($\theta_0=\pi$).  Nearly parallel
inputs ($0<\theta_0\ll1$) have a *near* kink: $\theta\approx\sqrt{\theta_d^2+\kappa^2(r-q)^2}$, singular
at $1-v = \pm i\theta_d/(\kappa r)$; the sinh map with $\delta$ below that distance keeps a strip of
analyticity of width $\pi/(2a)$ in $w$, so the cost grows like $\log(1/\delta)$ only.

With symmetry, for $t\ge s$,

$$\int_0^t\!\!\int_0^s C = 2\int_0^s\!\!dr\,r\!\int_0^1\!C(r,rv)\,dv + \int_s^t\!dr\,r\!\int_0^{s/r}\!C(r,rv)\,dv,$$
$$\int_t^T\!\!\int_s^T E = 2\int_t^T\!\!dr\,r\!\int_{t/r}^1\!E(r,rv)\,dv + \int_t^T\!dr\,r\!\int_{s/r}^{t/r}\!E(r,rv)\,dv$$

($E=\dot C\Lambda$), so with the tensor interpolant of $F(r,w)=C(r,r v(w))$ both are fixed linear maps
$S = S_0+\sigma_w^2\,W\,C$, $\Lambda=\Lambda_T+\sigma_w^2\,V(\dot C\circ\Lambda)$ on the $(m+1)(n+1)$ node
values, and $\iint C\Lambda = \omega^\top(C\circ\Lambda)$.  The weights are computed once per
$(m, n, \delta, T)$ by Gauss–Legendre quadrature of the interpolants: the inner integral in $v$ is the
antiderivative of $\ell_l(w)g'(w)$ (a Chebyshev series), the outer one in $r$ is taken in the variable
$w'$ with $r = c/(1-g(w'))$, where the integrand is smooth.  The variance $q(rv)$ at the off-grid
times comes from the Chebyshev interpolant of $q(r_k)=S(r_k,r_k)$ (analytic in $r$).

Picard iteration of these maps converges like the tensor scheme's (a Volterra operator).  Measured
(relu, $T=1$, $\sigma=1$): the self-kernel NTK converges geometrically in $m=n$ (see the tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import numpy as np

from ._interp import barycentric_weights
from ._newton import ChordNewton

__all__ = ["TriangleGrid", "triangle_grid", "delta_band"]

_DELTA_MIN_POWER = 3  # delta >= 4^-3 (delta_band)
_GAUSS = 16          # Gauss-Legendre points per sub-interval of the weight quadratures (at least; m if larger)
_PIECES = 8          # sub-intervals of each outer integral (equal ratios in r)
# measured (relu NTK, degrees 16 and 24, angles 0..3): 16 x 8 points change the kernel by <= 4e-13 against
# 24 x 12, at less than half the build time


def _lobatto01(n: int) -> np.ndarray:
    """Chebyshev-Lobatto points on [0, 1], increasing (exact ends)."""
    k = np.arange(n + 1)
    return 0.5 * (1.0 + np.sin(0.5 * np.pi * (2 * k - n) / n))


def delta_band(theta0: np.ndarray, sigma_w_T: float) -> np.ndarray:
    r"""The sinh-map parameter $\delta$ (a power of 4 in $[4^{-3}, 1]$) for input angles ``theta0``: below the
    estimated distance $\theta_0/(4(1+\sigma_wT))$ of the near kink (0 for $\theta_0=0$ gives $\delta=1$:
    an exact kink needs no clustering).  Not below $4^{-3}$: nodes closer to the diagonal than $\sim10^{-6}$
    see $\theta=\arccos\rho$ through the rounding of $\rho$ ($\sqrt{2\epsilon}\approx10^{-8}$ absolute), and
    measured at $\theta_0=10^{-5}$ and $10^{-4}$ ($m=n=24$ against $40$) $\delta=10^{-2}$ is the most
    accurate choice (1e-10, 2e-11), $\delta\le10^{-5}$ the least (4e-7)."""
    th = np.asarray(theta0, float)
    est = th / (4.0 * (1.0 + sigma_w_T))
    k = np.where(th > 0, np.ceil(np.log(np.maximum(1.0 / np.maximum(est, 1e-300), 1.0)) / np.log(4.0)), 0)
    return 4.0 ** -np.minimum(k, _DELTA_MIN_POWER)


def _cheb_rows(x: np.ndarray, D: int) -> np.ndarray:
    """``T[j, i]`` $=T_j(x_i)$, $j<D$ (the transposed Chebyshev Vandermonde matrix, rows contiguous)."""
    T = np.empty((D, x.size))
    T[0] = 1.0
    if D > 1:
        T[1] = x
    x2 = 2.0 * x
    for j in range(2, D):
        np.multiply(x2, T[j - 1], out=T[j])
        T[j] -= T[j - 2]
    return T


def _scaled_lagrange(nodes: np.ndarray, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    r"""``scale[i]`` $\ell_k(x_i)$: :func:`._interp.barycentric_weights` times a factor per point, in one pass
    over the (points, nodes) array (the factor folded into the normalisation)."""
    m = nodes.size - 1
    w = (-1.0) ** np.arange(m + 1)
    w[0] *= 0.5
    w[-1] *= 0.5
    out = np.subtract(x[:, None], nodes[None, :])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(w[None, :], out, out=out)
        total = out @ np.ones(m + 1)                             # (a gemv: faster than a reduction of short rows)
        out *= (scale / total)[:, None]
    rows = np.flatnonzero(~np.isfinite(total))                  # a point on a node
    if rows.size:
        exact = x[rows, None] == nodes[None, :]
        hit = exact.any(axis=1)
        out[rows[hit]] = exact[hit] * scale[rows[hit], None]
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class TriangleGrid:
    r"""Node values on the lower triangle in collapsed coordinates (module doc) and the linear maps.

    ``r`` (m+1,), ``v`` (n+1,) with ``v[0] = 1`` (the diagonal) and ``v[-1] = 0``; points
    $(r_k, r_kv_l)$ flattened as ``k*(n+1)+l``.  ``W``, ``V``: (P, P) forward and backward maps,
    ``omega`` (P,): $\iint_{[0,T]^2}$ weights; ``Q`` (P, m+1): $q(r_kv_l)$ from $q(r_{k'})$.  ``head`` (P, m+1),
    ``P0`` (n+1,), ``tail`` (m+1, m+1), ``tail_seg`` (m+1, m+1, n+1): the parts of $W$ and $V$ that integrate over the
    mirrored triangle, separable (inputs of unequal norm, :mod:`._triangle_pair`).
    """

    m: int
    n: int
    delta: float
    T: float
    r: np.ndarray
    v: np.ndarray
    W: np.ndarray
    V: np.ndarray
    omega: np.ndarray
    Q: np.ndarray
    head: np.ndarray = None
    P0: np.ndarray = None
    tail: np.ndarray = None
    tail_seg: np.ndarray = None

    @property
    def points(self) -> int:
        return (self.m + 1) * (self.n + 1)

    @property
    def name(self) -> str:
        return f"collapsed triangles (m={self.m}, n={self.n}, delta={self.delta:g}, T={self.T!r})"


@functools.lru_cache(maxsize=64)
def triangle_grid(m: int, n: int, delta: float, T: float) -> TriangleGrid:
    r"""The :class:`TriangleGrid` of degrees ``m`` (time) and ``n`` (collapsed angle), map ``delta`` on [0, T]
    (the maps of [0, 1] scaled: $W, V, \omega\propto T^2$, the collapsed coordinates are scale free)."""
    g = _unit_grid(m, n, float(delta))
    T = float(T)
    return TriangleGrid(m, n, float(delta), T, T * g.r, g.v, T * T * g.W, T * T * g.V, T * T * g.omega, g.Q,
                        T * T * g.head, g.P0, T * T * g.tail, T * T * g.tail_seg)


def _one_thread():
    """One BLAS thread: the grid's builds are batches of small matrix products (17 to 49 rows) and its solves
    products with a few dozen rows, which extra OpenBLAS threads only slow down.  Measured on the loaded 2-core
    machine (load 6): ``_unit_grid(40, 40, 0.25)`` 0.31 s with one thread against 10-17 s threaded; the abs
    Neural-ODE Gram at N = 2000 3.6 s against 13.7 s."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@functools.lru_cache(maxsize=32)
def _unit_grid(m: int, n: int, delta: float) -> TriangleGrid:
    """:func:`_build_unit_grid` with one BLAS thread (:func:`_one_thread`)."""
    with _one_thread():
        return _build_unit_grid(m, n, delta)


def _build_unit_grid(m: int, n: int, delta: float) -> TriangleGrid:
    r""":func:`triangle_grid` on [0, 1].

    Built for all rows at once, in chunks of integrals (bounded temporaries): the forward integrals of row $t$ have,
    in $w'$, the nodes of row $t=1$ (scale free), so $P_l$ there is evaluated once; the backward ones contract the
    $r$-basis with the Chebyshev rows $T_d(2w'-1)$ first and meet the antiderivative coefficients in one product;
    the Lagrange basis in $r$ enters through its Chebyshev coefficients (a three-term recurrence, no divisions).
    Same quadrature as before: the maps agree with the row-by-row build to a few $10^{-15}$ of $\max|W|$
    (``benchmarks/bench_triangle_grid.py``)."""
    T = 1.0
    a = math.asinh(1.0 / delta)
    g = lambda w: delta * np.sinh(a * w)                                   # noqa: E731
    dg = lambda w: delta * a * np.cosh(a * w)                              # noqa: E731
    ginv = lambda y: np.arcsinh(np.asarray(y) / delta) / a                 # noqa: E731
    r = T * _lobatto01(m)
    wn = _lobatto01(n)
    v = 1.0 - g(wn)
    v[0], v[-1] = 1.0, 0.0
    # antiderivatives: P_l(w*) = int_{w*}^1 l_l(w) g'(w) dw, via Chebyshev series on [0, 1]
    # degree: l_l has degree n; cosh(a w)'s Chebyshev coefficients fall below 1e-17 by about 2.5 a + 12
    deg = n + 16 + int(math.ceil(2.5 * a))
    xs = np.cos(np.pi * (np.arange(deg + 1) + 0.5) / (deg + 1))                 # Chebyshev points in [-1, 1]
    ws = 0.5 * (xs + 1.0)
    vals = barycentric_weights(wn, ws) * dg(ws)[:, None]                                     # (deg+1, n+1)
    coef = np.polynomial.chebyshev.chebfit(xs, vals, deg)                      # (deg+1, n+1)
    anti = np.polynomial.chebyshev.chebint(coef, lbnd=-1.0) * 0.5              # d/dw = 2 d/dx
    total = np.polynomial.chebyshev.chebval(1.0, anti)                          # (n+1,)

    def P(wstar):                                                               # (len, n+1)
        x = 2.0 * np.asarray(wstar, float).ravel() - 1.0
        return total[None, :] - np.polynomial.chebyshev.chebvander(x, anti.shape[0] - 1) @ anti

    P0 = P(np.zeros(1))[0]                                                      # int_0^1 l_l g' = int over v in [0,1]
    gx, gw = np.polynomial.legendre.leggauss(max(_GAUSS, m))

    def int_rL_many(his):                                                       # int_0^hi L_k(r) r dr, (J, m+1)
        """Composite Gauss-Legendre (4 pieces; exact for the degree m+1 integrand) in chunks."""
        his = np.asarray(his, float).ravel()
        out = np.empty((his.size, m + 1))
        step = max(1, (1 << 21) // (4 * gx.size * (m + 1)))
        for j in range(0, his.size, step):
            h = his[j:j + step]
            x = (h[:, None, None] * 0.25 * (np.arange(4)[None, :, None] + 0.5 * (gx[None, None, :] + 1.0)))
            wt = h[:, None, None] * 0.125 * gw[None, None, :] * np.ones((1, 4, 1))
            x, wt = x.reshape(h.size, -1), wt.reshape(h.size, -1)
            out[j:j + step] = _scaled_lagrange(r, x.ravel(), (wt * x).ravel()).reshape(h.size, -1, m + 1).sum(axis=1)
        return out

    def gauss(lo, hi):
        """Composite Gauss-Legendre nodes/weights on [lo, hi] (4 pieces)."""
        edges = np.linspace(lo, hi, 5)
        h = np.diff(edges)
        x = (edges[:-1, None] + 0.5 * h[:, None] * (gx[None, :] + 1.0)).ravel()
        return x, (0.5 * h[:, None] * gw[None, :]).ravel()

    def int_rL(lo, hi):                                                         # int_lo^hi L_k(r) r dr
        if hi <= lo:
            return np.zeros(m + 1)
        x, wt = gauss(lo, hi)
        return (wt * x) @ barycentric_weights(r, np.ravel(x))

    # Chebyshev coefficients of the Lagrange basis of the Lobatto nodes r_k = (1 - cos(pi k/m))/2:
    # Cr[j, k] = (2/m) g_j g_k T_j(2 r_k - 1), g = 1/2 at the ends (discrete orthogonality); CrT = Cr^T
    jj = np.arange(m + 1)
    ends = np.where((jj == 0) | (jj == m), 0.5, 1.0)
    CrT = np.ascontiguousarray(((2.0 / m) * ends[:, None] * ends[None, :]
                                * np.cos(np.pi * np.outer(jj, m - jj) / m)).T)

    def segs_chunk(c, lo, hi, shared=None, dest=None):
        r"""$\int_{lo}^{hi}L_k(r)\,r\,P_l(w(c/r))\,dr$ ($c\le lo$) for arrays ``c, lo, hi`` (shape (J,)), in the
        variable $w'$ with $r=c/(1-g(w'))$, on ``_PIECES`` pieces of equal ratio in $r$ (the pole of $r(w')$ at
        $g=1$ stays a piece away).  Returns (J, m+1, n+1); zero where ``hi <= lo`` or ``c <= 0``.
        ``shared``: $P_l$ at the nodes $w'$, (L, points, n+1), the same for every L-th integral (J a multiple of L).
        With ``shared=="nodes"`` returns those values instead.  ``dest``: where to write the result."""
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
        if isinstance(shared, str):
            return P(x.ravel()).reshape(c.size, -1, n + 1)
        one_minus = 1.0 - g(x)
        rr = c[:, None] / one_minus
        scale = wt * rr * c[:, None] * dg(x) / one_minus**2
        # L_k(r) = sum_j Cr[j, k] T_j(2r - 1): the Chebyshev rows at the points (no divisions), Cr applied last
        Tr = _cheb_rows(2.0 * rr.ravel() - 1.0, m + 1)                                  # (m+1, J*points)
        Tr *= scale.ravel()[None, :]
        Tr = Tr.reshape(m + 1, c.size, -1)
        if shared is None:           # sum_p Lr[p,j] P_l(x_p) = (sum_p Lr[p,j]) total_l - ((Lr^T T(x)) anti)[j,l]
            Tv = _cheb_rows(2.0 * x.ravel() - 1.0, anti.shape[0]).reshape(anti.shape[0], c.size, -1)
            LT = np.matmul(Tr.transpose(1, 0, 2), Tv.transpose(1, 2, 0))                 # (J, m+1, deg+1)
            out = (LT.reshape(-1, anti.shape[0]) @ anti).reshape(c.size, m + 1, n + 1)
            out = np.subtract(Tr.sum(axis=2).T[:, :, None] * total[None, None, :], out, out=out)
        else:
            L_ = shared.shape[0]
            Tr = Tr.reshape(m + 1, c.size // L_, L_, -1).transpose(1, 2, 0, 3)
            out = np.matmul(Tr, shared[None]).reshape(c.size, m + 1, n + 1)
        return np.matmul(CrT, out, out=dest)

    per_seg = 2 * _PIECES * gx.size * max(anti.shape[0], m + 1)                 # floats of the big temporaries
    chunk = max(1, (1 << 20) // per_seg)

    def segs(c, lo, hi, shared=None):
        """:func:`segs_chunk` on chunks of at most ``chunk`` integrals (bounded temporaries; with ``shared``,
        whole multiples of its period)."""
        c, lo, hi = (np.asarray(z, float) for z in (c, lo, hi))
        out = np.empty((c.size, m + 1, n + 1))
        step = chunk if shared is None else max(1, chunk // shared.shape[0]) * shared.shape[0]
        for j in range(0, c.size, step):
            segs_chunk(c[j:j + step], lo[j:j + step], hi[j:j + step], shared, out[j:j + step])
        return out

    Pn = (m + 1) * (n + 1)
    tail = np.stack([int_rL(t, T) for t in r])                                  # (m+1 rows i, m+1)
    tail_seg = segs(r, r, np.full_like(r, T))                                   # (i, m+1, n+1)
    s_all = (r[:, None] * v[None, :]).ravel()                                    # s = t v, rows i then l
    t_all = np.repeat(r, n + 1)
    head = int_rL_many(s_all)                                                   # (i l, m+1)
    # the forward integrals of row t, in w', have the nodes of row t = 1 (w'(r) = ginv(1 - s/r) with s = t v,
    # r in [s, t] on pieces of equal ratio: scale free), up to rounding: P at those nodes is computed once
    P_fwd = segs_chunk(v, v, np.ones_like(v), "nodes")                          # (n+1, points, n+1)
    fwd = segs(s_all, s_all, t_all, P_fwd)
    fwd += 2.0 * head[:, :, None] * P0[None, None, :]
    bwd = segs(s_all, t_all, np.full_like(s_all, T))
    np.subtract((2.0 * tail[:, None, :, None] * P0[None, None, None, :] - tail_seg[:, None]),
                bwd.reshape(m + 1, n + 1, m + 1, n + 1), out=bwd.reshape(m + 1, n + 1, m + 1, n + 1))
    W = fwd.reshape(Pn, Pn)
    V = bwd.reshape(Pn, Pn)
    omega = (2.0 * np.outer(int_rL(0.0, T), P0)).ravel()
    Q = barycentric_weights(r, (r[:, None] * v[None, :]).ravel())
    return TriangleGrid(m, n, float(delta), float(T), r, v, W, V, omega, Q, head, P0, tail, tail_seg)


#: a cross-kernel's Picard change is measured against at least this fraction of its natural scale max q(t) (the sweeps
#: of kernels/_triangle.py, _panels.py and ode_grid.py).  A cross-covariance that is ~1e-16 of it (an odd phi at
#: orthogonal inputs, x.y/d = 6e-17 from rounding; the kinked ladder's probe at pi/2) changes by O(1) of itself from
#: sweep to sweep on rounding alone: hardtanh at sigma_w T = 10 stalled after 400 sweeps at 0.16 and its Gram's
#: estimate became 0.41 of max |NTK|, warned; the kernels' estimates are relative to the largest entry
CHANGE_FLOOR = 1e-6


def change_floor(q) -> float:
    """The least scale of a cross-kernel solve's Picard changes: :data:`CHANGE_FLOOR` times the smallest of its B
    problems' largest ``|q|`` (``q``: ``(B, nodes)``; ``None``, a self-kernel: 0)."""
    return 0.0 if q is None or np.size(q) == 0 else CHANGE_FLOOR * float(np.min(np.max(np.abs(q), axis=1)))


def solve(grid: TriangleGrid, C_of, S0, source, q=None, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11,
          newton=False):
    r"""Picard iteration of $S = S_0+W\,\mathrm{source}(C(S))$ on ``grid`` for B problems (``S0``: (B,));
    ``source(C)`` $=\sigma_w^2C$ (:func:`kernelcalc.theory.recursion.ode_forward_source`).

    ``C_of(q1, q2, c) -> C`` (numpy arrays, broadcasting): the dual kernel.  ``q``: (B, m+1) the fixed
    variances $q(r_k)$ of the inputs (cross-kernels); ``None``: the self-kernel, whose diagonal
    $q(r_k)=S(r_k,r_k)$ is updated each sweep.  ``newton`` (with ``q``): ``C_of`` returns ``(C, dC/dc)`` and the
    iterates are chord-Newton steps (:class:`~kernelcalc.kernels._newton.ChordNewton`; the stopping test and the
    returned plain image are the sweeps').  Returns ``(S (B, m+1, n+1), q (B, m+1), change, sweeps)``."""
    with _one_thread():
        return _solve(grid, C_of, S0, source, q, sweeps_tol, max_sweeps, stagnation, newton and q is not None)


def _solve(grid, C_of, S0, source, q, sweeps_tol, max_sweeps, stagnation, newton=False):
    B = S0.shape[0]
    m1, n1 = grid.m + 1, grid.n + 1
    S = np.broadcast_to(S0[:, None, None], (B, m1, n1)).copy()
    WT = grid.W.T

    def forward(C):
        return (source(C).reshape(B, -1) @ WT).reshape(B, m1, n1)

    def C_at(S):
        qk = S[:, :, 0] if q is None else q
        q2 = (qk @ grid.Q.T).reshape(B, m1, n1)
        return C_of(np.broadcast_to(qk[:, :, None], (B, m1, n1)), q2, S)

    S, delta, k = sweeps(S, S0[:, None, None], C_at, forward, change_floor(q), newton, sweeps_tol, max_sweeps,
                         stagnation)
    qk = S[:, :, 0] if q is None else q
    return S, qk, delta, k


def sweeps(S, S0, C_at, forward, floor, newton, sweeps_tol, max_sweeps, stagnation):
    r"""Picard sweeps $S\leftarrow S_0+$ ``forward(C_at(S))`` from ``S`` (``S0`` broadcasting to it) until the relative
    change (:func:`changes`, at least ``floor``) meets ``sweeps_tol`` or stagnates below ``stagnation``; with
    ``newton``, ``C_at`` returns $(C,\dot C)$ and the iterates are chord-Newton steps
    (:class:`~kernelcalc.kernels._newton.ChordNewton`; the stopping test and the returned plain image are the
    sweeps').  Also the two triangles of :mod:`._triangle_pair`.  Returns ``(S, change, sweeps)``."""
    steps = ChordNewton(None, 0.0, operator=forward) if newton else None
    delta, prev, k = math.inf, math.inf, 0
    while k < max_sweeps:
        C = C_at(S)
        if newton:
            C, slope = C
        S_new = S0 + forward(C)
        prev, delta = delta, _change(S_new, S, floor)
        k += 1
        if delta <= sweeps_tol or (delta < stagnation and delta >= prev) or not math.isfinite(delta):
            S = S_new
            break
        if newton and k < max_sweeps:      # (the last sweep allowed: its plain image, as the stopping test's)
            steps.keep(S_new, C, slope)
            S = steps(S, S_new, delta, prev)
        else:
            S = S_new
    return S, delta, k


def changes(new, old, floor: float = 0.0) -> np.ndarray:
    """The relative change of a Picard sweep per leading index (max-norm), measured against ``floor`` at least
    (:func:`change_floor`); also the panels' (:mod:`._panels`)."""
    B = new.shape[0]
    num = np.max(np.abs(new - old).reshape(B, -1), axis=1)
    den = np.maximum(np.max(np.abs(new).reshape(B, -1), axis=1), max(floor, 1e-300))
    return num / den


def _change(new, old, floor: float = 0.0) -> float:
    """The largest relative change of a Picard sweep over the B problems (:func:`changes`)."""
    return float(np.max(changes(new, old, floor)))


def backward(grid: TriangleGrid, Cdot, LamT, source, sweeps_tol=2e-15, max_sweeps=400, stagnation=1e-11):
    r"""Picard iteration of $\Lambda=\Lambda_T+V\,\mathrm{source}(\dot C,\Lambda)$ (``Cdot``: (B, m+1, n+1),
    ``LamT``: (B,); ``source`` $=\sigma_w^2\dot C\Lambda$, :func:`kernelcalc.theory.recursion.ode_backward_source`).
    Returns ``(Lambda, change, sweeps)``."""
    with _one_thread():
        return _backward(grid, Cdot, LamT, source, sweeps_tol, max_sweeps, stagnation)


def _backward(grid, Cdot, LamT, source, sweeps_tol, max_sweeps, stagnation):
    B = LamT.shape[0]
    shape = Cdot.shape
    VT = grid.V.T
    return linear_sweeps(np.broadcast_to(LamT[:, None, None], shape).copy(), LamT[:, None, None],
                         lambda Lam: (source(Cdot, Lam).reshape(B, -1) @ VT).reshape(shape),
                         sweeps_tol, max_sweeps, stagnation)


def linear_sweeps(Lam, LamT, step, sweeps_tol, max_sweeps, stagnation):
    r"""Picard sweeps $\Lambda\leftarrow\Lambda_T+$ ``step(Lambda)`` from ``Lam`` (``LamT`` broadcasting to it) until the
    relative change meets ``sweeps_tol`` or stagnates; also the two triangles of :mod:`._triangle_pair`.  Returns
    ``(Lambda, change, sweeps)``."""
    delta, prev, k = math.inf, math.inf, 0
    while k < max_sweeps:
        new = LamT + step(Lam)
        prev, delta = delta, _change(new, Lam)
        Lam = new
        k += 1
        if delta <= sweeps_tol or (delta < stagnation and delta >= prev) or not math.isfinite(delta):
            break
    return Lam, delta, k
