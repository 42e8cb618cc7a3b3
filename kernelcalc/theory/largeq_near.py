r"""Large-$q$ duals in the near-parallel band: every localised term as a table in two numbers (no quadrature).

With the decomposition $f=A+R$ of :mod:`kernelcalc.theory.largeq` and $(a,b)\sim N(0,[[q_1,c],[c,q_2]])$,

$$E[f(a)f(b)]=E[A(a)A(b)]+E[R(a)A(b)]+E[A(a)R(b)]+E[R(a)R(b)].$$

The moment series of :mod:`kernelcalc.theory.largeq_far` need $V=\min(q_1,q_2)(1-r^2)\ge V_0$; this module covers the
**near-parallel band** $V<V_0$ at large variances, $\min(q_1,q_2)\ge Q_{\rm near}$ (``Q_NEAR``), where a real
Neural-ODE solve spends most of its evaluations.  Every localised term is an integral over the variable $x$ of
variance $q_x$ that carries $R$, against the density $p_{q_x}(x)=(2\pi q_x)^{-1/2}e^{-wx^2/2}$, $w=1/q_x$, and

$$e^{-wx^2/2}=\sum_{k\ge0}\frac{(-w/2)^k}{k!}x^{2k}\qquad(|{\rm tail}_K|\le\tfrac{(wx^2/2)^K}{K!}),$$

so with $t=w/w_{\max}=Q_{\rm near}/q_x\in(0,1]$ each term is $(2\pi q_x)^{-1/2}\sum_k t^k\,\frac{(-w_{\max}/2)^k}{k!}
\int x^{2k}R(x)\,m(x)\,dx$: the $q$-dependence is a power series in $t$ whose coefficients depend on the *shape*
numbers of $m$ only.  The series (``_K_BUILD`` terms, tail bounded as above) is re-expanded in Chebyshev
polynomials of $t$ and truncated where its coefficients are negligible (:attr:`NearTable.d_t` terms).

- **Remainder times remainder.**  With $a$ the variable of larger variance ($|\kappa|\le1$), $\kappa=c/q_a$,
  $s^2=q_b(1-r^2)<V_0$: $m(x)=G(\kappa x,s)$, $G(\mu,s)=E[R(\mu+sZ)]$, so the coefficients are

  $$H_k(\kappa,s)=\int x^{2k}R(x)\,G(\kappa x,s)\,dx=\frac1\pi\int_0^\infty\hat R(\omega)\,e^{-s^2\omega^2/2}\,
  \widehat{x^{2k}R}(\kappa\omega)\,d\omega$$

  (cosine transforms for even $R$, sine transforms for odd $R$), tabulated as piecewise Chebyshev series in $\kappa\in
  [0,1]$ (the sign of $\kappa$ by the parity of $R$) and $s\in[0,\sqrt{V_0}]$ (first panel in $s^2$: $G$ is even in
  $s$): :attr:`NearTable.rr`.
- **Remainder times asymptote.**  The conditional of the asymptote is closed (:meth:`~kernelcalc.theory.largeq.
  Asymptote.conditional`) and, with $\zeta=\kappa/\tau$ ($\tau=\sqrt{\lambda^2+s^2}$ for ``gelu``,
  $\sqrt{1+2k^2s^2}/k$ for ``erf``; $\kappa=c/q_x$, $s^2=q_y(1-r^2)$), it is a sum of a few fixed functions of
  $\zeta x$ with closed coefficients:

  - ``gelu``, $A$: $m_A=\beta\big(\tfrac{s^2}{\tau}\varphi(\zeta x)+\tau\,\zeta x(\Phi(\zeta x)-\tfrac12)\big)+
    \tfrac\beta2\tau\zeta x$ (the last, odd, term integrates to 0 against the even $R$);
  - ``gelu``, $A'$: $m_{A'}=\beta\big((\Phi(\zeta x)-\tfrac12)+\tfrac{\lambda^2}{\tau^2}\zeta x\varphi(\zeta x)\big)+\tfrac\beta2$
    (the constant integrates to 0 against the odd $R'$);
  - ``erf``, $A$: $m_A=\alpha+\beta\,\mathrm{erf}(\zeta x)$ ($\alpha$ against the odd $R$ gives 0);
  - ``erf``, $A'$: $m_{A'}=\beta\frac{2}{\sqrt\pi\,\tau}e^{-\zeta^2x^2}$.

  So the coefficients $\int x^{2k}R(x)g(\zeta x)\,dx$ are functions of $\zeta$ alone, tabulated on panels of
  $|\zeta|\le Z$ and, beyond, in $Z/|\zeta|$ for $|\zeta|^{-e}\times$ the integral ($e$: its growth order, the part of
  $g$ that does not decay integrated in closed form): :attr:`NearTable.cross`.  This holds for both cross terms,
  whichever variable has the larger variance (the other one's $\zeta$ is unbounded).

Per covariance: a handful of closed forms, one gathered block of the ``rr`` coefficients of $\phi$ and $\phi'$ together
(stored sparse: the positions not negligible in some panel, :mod:`~kernelcalc.theory.largeq_chebtab`) contracted with
products of three rows of Chebyshev polynomials, and two $(d_t\times n_g\times d_\zeta)$ blocks, every lookup located
once for both tables and all rows from one recurrence (:func:`near_parts`); no quadrature and no $q$-dependent work
(about 3.7-4.1 us per $(C,\dot C)$ on the covariances of a softplus $\sigma_wT=10$ kernel, 5.2-6.2 us with dense
blocks and $\cos(k\arccos y)$ rows per table).  Every table's error is **measured** at held-out points (midpoints of the fitting nodes in each
variable, against the same defining integrals) and reported with the density-series tail bound
(:attr:`NearTable.error`, relative to the kernel's norm: :func:`norm_floor`); coefficients are kept down to
``_TARGET`` of that norm.  Below $Q_{\rm near}$ the density's series would
need many terms (at $q=10$ its terms grow before they fall), so the quadrature of
:mod:`kernelcalc.theory.largeq_table` keeps that part of the band.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .._lazy import jnp   # deferred: jax is imported on first use
from .largeq import Asymptote
from .largeq_far import V0, stable_remainder, remainder_parity as _parity
from .largeq_chebtab import (RowBatch, _barrier, _cheb_coef, _cheb_nodes, _cheb_rows, _cross_apply, _mid_nodes, _stack,
                             _on_panels, _pack, _packed_apply, _panel, _sparsify, _truncate)
from .largeq_remainder import _KAPPA_CHUNK, BandTables, _column_groups, _leading, _trig_rows, table_build

__all__ = ["NearTable", "near_table", "near_expect", "near_mask", "norm_floor", "Q_NEAR"]

#: the near tables apply where min(q1, q2) >= Q_NEAR (and min(q1, q2)(1 - r^2) < V0)
Q_NEAR = 100.0
_K_BUILD = 30                 # Taylor terms of the density before the Chebyshev re-expansion in t
_S_MAX = math.sqrt(V0)
_KAPPA_EDGES = tuple(np.linspace(0.0, 1.0, 9))
_S_EDGES = (0.0, 0.3, 0.6, 1.0, 1.5, 2.0, 2.6, 3.3, 4.1, 5.0, 6.0, 7.2, 8.5, _S_MAX)   # the first panel in s^2
_Z = 2.0                      # |zeta| <= Z on panels, beyond in Z / |zeta|
_ZETA_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, _Z)
_N_FIT = 15                   # Chebyshev nodes per panel and variable (fit); the degree kept is measured
_N_FIT_Z = 26                 # the same for the cross tables (one variable: cheap)
_TARGET = 2e-15              # coefficients whose contribution is below TARGET of the kernel's norm are dropped
_A = 130.0                    # half-range of the x integrals: x^(2K) R(x) is negligible beyond
_DA = 0.05                    # their trapezoid step (cross terms)
_DA_RR = 0.2                  # the step of the Fourier transforms (|omega| <= 12: e^(-pi (2 pi / DA_RR - 12)) aliasing)
_W_MAX = 12.0                 # frequencies of the Fourier form (|R^| < 1e-16 of its peak beyond)
_DW = 0.03                    # and their step (periodic images beyond 2 pi / DW = 209)

_PHI0 = 1.0 / math.sqrt(2.0 * math.pi)


# -- the cross terms' fixed functions g(y), their large-|y| parts and growth orders -------------------------
def _Phi_neg(y):
    from scipy.special import erfc
    return 0.5 * erfc(y / math.sqrt(2.0))


def _basis(asy: Asymptote, derivative: bool):
    r"""``[(g, g_loc, inf_moment, e, p)]``: the functions $g(y)$ of the cross terms, their localised part on $y\ge0$
    ($g=g_\infty+g_{\rm loc}$), the weight $w(x)$ with $\int x^{2k}R(x)g_\infty(\zeta x)dx=|\zeta|^e\int x^{2k}R(x)w(x)dx$
    for $\zeta>0$, the growth order $e$ and the parity $p$ of $g$."""
    from scipy.special import erf, erfc

    phi = lambda y: _PHI0 * np.exp(-0.5 * y * y)                        # noqa: E731
    if asy.family == "gelu":
        if derivative:
            return [(lambda y: np.where(y >= 0, 0.5 - _Phi_neg(y), _Phi_neg(-y) - 0.5), lambda y: -_Phi_neg(y),
                     lambda x: 0.5 * np.sign(x), 0, -1),
                    (lambda y: y * phi(y), lambda y: y * phi(y), None, -1, -1)]
        return [(phi, phi, None, -1, 1),
                (lambda y: np.abs(y) * (0.5 - _Phi_neg(np.abs(y))), lambda y: -y * _Phi_neg(y),
                 lambda x: 0.5 * np.abs(x), 1, 1)]
    if derivative:
        return [(lambda y: np.exp(-y * y), lambda y: np.exp(-y * y), None, -1, 1)]
    return [(erf, lambda y: -erfc(y), lambda x: np.sign(x), 0, -1)]


def _coefficients(asy: Asymptote, derivative: bool, s2, tau, xp):
    """``(n_g, B)``: the closed coefficient of each cross function (module doc), and ``tau``."""
    be, lam = asy.beta, asy.scale
    if asy.family == "gelu":
        if derivative:
            return [be * xp.ones_like(tau), be * lam * lam / (tau * tau)]
        return [be * s2 / tau, be * tau]
    if derivative:
        return [be * 2.0 / math.sqrt(math.pi) / tau]
    return [be * xp.ones_like(tau)]


def _tau(asy: Asymptote, s2, xp):
    if asy.family == "gelu":
        return xp.sqrt(asy.scale ** 2 + s2)
    return xp.sqrt(1.0 + 2.0 * asy.scale ** 2 * s2) / asy.scale


def _asymptote_np(asy: Asymptote, derivative: bool, x):
    """The asymptote $A$ (or $A'$) in numpy (only for the norm floor below)."""
    from scipy.special import erf, ndtr
    lam, al, be = asy.scale, asy.alpha, asy.beta
    if asy.family == "gelu":
        u = x / lam
        return be * (ndtr(u) + u * _PHI0 * np.exp(-0.5 * u * u)) if derivative else be * x * ndtr(u)
    if derivative:
        return be * 2.0 * lam / math.sqrt(math.pi) * np.exp(-lam * lam * x * x)
    return al + be * erf(lam * x)


def norm_floor(asy: Asymptote, derivative: bool) -> float:
    r"""$\nu=\min_{q\ge Q_{\rm near}}\sqrt{2\pi q}\,E f(\sqrt qZ)^2$ ($f=\phi$ or $\phi'$): a table value of size $v$
    moves a kernel value by at most $v/\sqrt{2\pi q_x}$, i.e. by $v/\nu$ relative to its norm $\sqrt{Ef(a)^2Ef(b)^2}$
    (for the ``gelu`` family both norms grow or stay put with $q$).  Three digits suffice."""
    z = np.linspace(-12.0, 12.0, 24001)
    w = np.exp(-0.5 * z * z) * (z[1] - z[0]) * _PHI0
    out = math.inf
    for q in np.geomspace(Q_NEAR, 1e8, 9):
        x = math.sqrt(q) * z
        f = _asymptote_np(asy, derivative, x) + stable_remainder(asy.name, asy.scale, derivative, x)
        out = min(out, math.sqrt(2.0 * math.pi * q) * float(np.sum(w * f * f)))
    return out


# -- fitting helpers -------------------------------------------------------------------------------------------
def _t_to_cheb(k):
    """``(k, k)``: column j = Chebyshev coefficients (in y = 2t - 1) of t^j."""
    M = np.zeros((k, k))
    from numpy.polynomial import chebyshev as C
    for j in range(k):
        c = C.poly2cheb(np.polynomial.polynomial.polypow([0.5, 0.5], j))
        M[:c.size, j] = c
    return M


def _taylor_weights(k):
    """``(k,)``: $(-w_{\\max}/2)^j/j!$."""
    w = 1.0 / Q_NEAR
    return np.array([(-0.5 * w) ** j / math.factorial(j) for j in range(k)])


# -- the tables ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class NearTable(BandTables):
    r"""The near-band tables of one remainder (module doc).

    ``rr``: ``(P_kappa * P_s, d_t, d_kappa, d_s)`` Chebyshev coefficients of $\sum_k t^k\frac{(-w_{\max}/2)^k}{k!}
    H_k(\kappa,s)$ in $(t,\kappa,s)$; ``cross``: ``(P_zeta + 1, d_t, n_g, d_zeta)`` of the cross functions (the last
    panel in $Z/|\zeta|$); ``parity``: of $R$; ``growth``, ``gparity``: per cross function; ``error``: the largest
    held-out error of either table divided by :func:`norm_floor` (so: relative to the kernel's norm
    $\sqrt{Ef(a)^2Ef(b)^2}$, the unit of the rule's error estimate), plus the density series' tail bound;
    ``scale``: the largest value of the remainder-remainder table."""

    scale: float


def _x_grid():
    m = int(round(_A / _DA))
    return _DA * np.arange(-m, m + 1, dtype=np.float64)


def _rr_values(R, parity, kappa, s, K):
    r"""``(K, len(kappa), len(s))``: $H_k(\kappa,s)$ by the Fourier form (module doc), trapezoid sums in $x$
    (step ``_DA``) and $\omega$ (step ``_DW``)."""
    x = _DA_RR * np.arange(1, int(round(_A / _DA_RR)) + 1)
    Rx = R(x)
    R0 = float(R(np.zeros(1))[0]) if parity > 0 else 0.0
    trig = np.cos if parity > 0 else np.sin
    w = _DW * np.arange(int(_W_MAX / _DW) + 1)
    ww = np.full(w.size, _DW)
    ww[0] *= 0.5
    h = _DA_RR
    Rhat = 2.0 * h * (trig(np.outer(w, x)) @ Rx) + h * R0                       # cosine / sine transform
    pw = 2.0 * h * (x[:, None] ** (2 * np.arange(K))[None, :]) * Rx[:, None]     # (X, K)
    # each moment's sum stops where its terms, with the density series' weights, fall below _NEGLIGIBLE of the
    # largest (x^2k R(x) for large k only matters far out, and only for a few k)
    groups = _column_groups(_leading(pw * _taylor_weights(K)[None, :], scale="all"), size=8)
    n_x = max(n for _, n in groups)
    S = np.zeros((w.size, len(kappa), K))
    for lo in range(0, len(kappa), _KAPPA_CHUNK):       # rows of cos / sin that stay in cache, used by every group
        kc = kappa[lo:lo + _KAPPA_CHUNK]
        rows = _trig_rows(parity, w.size, _DW, kc, x[:n_x])                    # (W kc, n_x)
        for cols, n in groups:
            if n:
                S[:, lo:lo + len(kc), cols] = (rows[:, :n] @ pw[:n, cols]).reshape(w.size, len(kc), len(cols))
    if parity > 0:
        S[:, :, 0] += h * R0
    S = S.reshape(w.size, -1)
    E = np.exp(-0.5 * np.outer(w * w, s * s)) * (Rhat * ww / np.pi)[:, None]     # (W, S)
    out = np.empty((len(s), S.shape[1]))
    for cols, n in _column_groups(_leading(E)):          # e^{-s^2 w^2 / 2}: the sum over w stops at ~9 / s
        out[cols] = E[:n, cols].T @ S[:n]
    return out.reshape(len(s), len(kappa), K).transpose(2, 1, 0)                # (K, kappa, s)


def _half_line():
    r"""Composite 16-point Gauss-Legendre nodes and weights on $[0, A]$ (panels of width 1): the half-line moments
    $\int_0^\infty x^jR(x)w(x)dx$ of the non-decaying parts, whose integrands have a kink at 0 (the trapezoid rule
    would be only second order there)."""
    gy, gw = np.polynomial.legendre.leggauss(16)
    m = int(_A)
    return (np.arange(m)[:, None] + 0.5 * (gy[None, :] + 1.0)).ravel(), np.tile(0.5 * gw, m)


def _cross_values(R, parity, basis, zeta, K):
    r"""``(K, n_g, len(zeta))``: $\int x^{2k}R(x)g(\zeta x)\,dx$ for $0\le\zeta\le Z$ (trapezoid in $x$)."""
    x = _x_grid()
    Rx = R(x)
    pw = (x[:, None] ** (2 * np.arange(K))[None, :]) * (_DA * Rx)[:, None]        # (X, K)
    # x >= 0 alone where the integrand is even (x = 0 once, the rest twice), up to where every moment's terms, with
    # the density series' weights, are negligible: a third of the evaluations of g
    half = slice(x.size // 2, None)
    fold = np.where(x[half] == 0.0, 1.0, 2.0)[:, None] * pw[half]
    n = int(np.max(_leading(fold * _taylor_weights(K)[None, :], scale="all")))
    out = np.empty((K, len(basis), len(zeta)))
    for j, (g, _, _, _, p) in enumerate(basis):
        if parity * p > 0:
            out[:, j, :] = (g(np.outer(zeta, x[half][:n])) @ fold[:n]).T
        else:                                                                     # pragma: no cover (odd: none built)
            out[:, j, :] = (g(np.outer(zeta, x)) @ pw).T
    return out


def _cross_far_values(R, parity, basis, t, K):
    r"""``(K, n_g, len(t))``: $|\zeta|^{-e}\int x^{2k}R(x)g(\zeta x)\,dx$ at $\zeta=Z/t$: the non-decaying part of
    $g$ in closed form (a moment of $R$), the localised rest in $y=\zeta x$ by Gauss-Legendre on $[0,12]$."""
    x, wx = _half_line()
    Rx = R(x)
    gy, gw = np.polynomial.legendre.leggauss(24)
    y = (np.arange(24)[:, None] + 0.5 * (gy[None, :] + 1.0)).ravel() * 0.5        # 48 panels of width 1/2 on [0, 12]
    wy = np.tile(0.25 * gw, 24)
    y = np.concatenate([y, 12.0 + (np.arange(24)[:, None] + 0.5 * (gy[None, :] + 1.0)).ravel() * 0.5])
    wy = np.concatenate([wy, wy])
    out = np.empty((K, len(basis), len(t)))
    kk = 2 * np.arange(K)
    for j, (g, gloc, winf, e, p) in enumerate(basis):
        inf = 0.0
        if winf is not None:      # |zeta|^e int x^2k R(x) w(x) dx, both halves (x < 0 mirrored)
            inf = 2.0 * ((x[:, None] ** kk[None, :]) * (Rx * winf(x) * wx)[:, None]).sum(axis=0)   # (K,)
        for i, ti in enumerate(t):
            z = _Z / ti
            u = y / z
            # int x^2k R(x) g_loc(z x) dx over x > 0 (and the mirror: the integrand is even overall) = (2/z) int ...
            loc = 2.0 / z * ((u[:, None] ** kk[None, :]) * (R(u) * gloc(y) * wy)[:, None]).sum(axis=0)
            out[:, j, i] = (inf if winf is not None else 0.0) + loc * z ** (-e)
    return out


def _tail_bound(R, K):
    r"""The density series' tail after ``K`` terms at $w=w_{\max}$, relative: $\frac{(w_{\max}/2)^K}{K!}\int
    x^{2K}|R(x)|(1+|x|)\,dx$ over $\int|R|$ (it multiplies the table values, which are at most of that size)."""
    x = _x_grid()
    Rx = np.abs(R(x))
    lg = K * math.log(0.5 / Q_NEAR) - math.lgamma(K + 1)
    with np.errstate(over="ignore"):
        num = np.sum(np.exp(2 * K * np.log(np.maximum(np.abs(x), 1e-300)) + lg) * Rx * (1 + np.abs(x))) * _DA
    return float(num / (np.sum(Rx) * _DA))


@table_build
def near_table(asymptote: Asymptote, derivative: bool) -> NearTable:
    """The :class:`NearTable` of the remainder of ``asymptote`` (``derivative``: of $R'$), built once per process."""
    name, lam = asymptote.name, asymptote.scale
    R = lambda x: stable_remainder(name, lam, derivative, x)              # noqa: E731
    par = _parity(name, derivative)
    K = _K_BUILD
    tw = _taylor_weights(K)
    M = _t_to_cheb(K)
    yk = _cheb_nodes(_N_FIT)
    kap = _on_panels(_KAPPA_EDGES, yk)                                      # (Pk, n)
    s = _on_panels(_S_EDGES, yk, square_first=True)                         # (Ps, n)
    vals = _rr_values(R, par, kap.ravel(), s.ravel(), K) * tw[:, None, None]    # (K, Pk n, Ps n)
    Pk, Ps, n = kap.shape[0], s.shape[0], _N_FIT
    vals = vals.reshape(K, Pk, n, Ps, n).transpose(1, 3, 0, 2, 4)               # (Pk, Ps, K, n, n)
    coef = np.tensordot(vals, M, axes=(2, 1)).transpose(0, 1, 4, 2, 3)          # t-monomials -> Chebyshev in t
    coef = _cheb_coef(_cheb_coef(coef, 3), 4)
    scale = float(np.max(np.abs(vals[:, :, 0])))
    nu = norm_floor(asymptote, derivative)
    d_t, d_k, d_s = _truncate(coef, (2, 3, 4), _TARGET * nu)
    # sparse with a 10x lower cut than the truncation's: on mixed cells (largeq_low.low_mixed) these values meet a
    # kernel norm below the floor nu of both variances >= Q_NEAR
    rr = _sparsify(coef[:, :, :d_t, :d_k, :d_s].reshape(Pk * Ps, d_t, d_k, d_s), 0.1 * _TARGET * nu)

    basis = _basis(asymptote, derivative)
    yz = _cheb_nodes(_N_FIT_Z)
    z = _on_panels(_ZETA_EDGES, yz)                                             # (Pz, n)
    cv = _cross_values(R, par, basis, z.ravel(), K).reshape(K, len(basis), z.shape[0], _N_FIT_Z)
    tf = 0.5 * (yz + 1.0)
    cf = _cross_far_values(R, par, basis, tf, K)                                # (K, n_g, n)
    cv = np.concatenate([cv, cf[:, :, None, :]], axis=2) * tw[:, None, None, None]   # (K, n_g, Pz + 1, n)
    cscale = float(np.max(np.abs(cv[0])))
    cc = np.tensordot(cv, M, axes=(0, 1)).transpose(1, 3, 0, 2)                # (Pz + 1, d_t, n_g, n)
    cc = _cheb_coef(cc, 3)
    e_t, e_z = _truncate(cc, (1, 3), _TARGET * nu)
    cross = np.ascontiguousarray(cc[:, :e_t, :, :e_z])
    table = NearTable(rr, cross, par, tuple(b[3] for b in basis), tuple(b[4] for b in basis), 0.0, scale)

    # held-out check: midpoints of the fitting nodes in each variable, t at its own midpoints
    ym = _mid_nodes(_N_FIT)[1::4]
    tm = 0.5 * (_mid_nodes(8) + 1.0)
    km, sm = _on_panels(_KAPPA_EDGES, ym).ravel(), _on_panels(_S_EDGES, ym, square_first=True).ravel()
    ref = np.tensordot(tm[:, None] ** np.arange(K)[None, :],
                       _rr_values(R, par, km, sm, K) * tw[:, None, None], axes=(1, 0))          # (t, k, s)
    # the held-out points sit at the same local coordinates on every panel (the first s-panel's variable is s^2): the
    # table's values there are one contraction (as :func:`~kernelcalc.theory.largeq_chebtab._packed_apply`'s, without gathering a block per point)
    Tt, Tk, Ts = (np.cos(np.arccos(y)[:, None] * np.arange(d)) for y, d in ((2.0 * tm - 1.0, d_t), (ym, d_k), (ym, d_s)))
    got = np.einsum("abijk,ui,vj,wk->uavbw", rr.reshape(Pk, Ps, d_t, d_k, d_s), Tt, Tk, Ts, optimize=True).reshape(ref.shape)
    err = float(np.max(np.abs(got - ref))) / nu
    ymz = _mid_nodes(_N_FIT_Z)[1::3]
    zm = _on_panels(_ZETA_EDGES, ymz).ravel()
    refc = np.concatenate([_cross_values(R, par, basis, zm, K),
                           _cross_far_values(R, par, basis, 0.5 * (ymz + 1.0), K)], axis=2) * tw[:, None, None]
    refc = np.tensordot(tm[:, None] ** np.arange(K)[None, :], refc, axes=(1, 0))            # (t, n_g, z)
    zall = np.concatenate([zm, _Z / (0.5 * (ymz + 1.0))])
    TT, ZZ = np.meshgrid(tm, zall, indexing="ij")
    gotc = _cross_eval(cross, table.growth, TT.ravel(), ZZ.ravel(), np)               # (n_g, B)
    gotc = gotc.reshape(len(basis), len(tm), len(zall)).transpose(1, 0, 2)
    far = zall > _Z                           # the far panel is compared in its scaled form |zeta|^-e F
    for j, e in enumerate(table.growth):
        gotc[:, j, far] *= zall[far] ** (-e)
    errc = float(np.max(np.abs(gotc - refc))) / nu
    tail = _tail_bound(R, K) * max(scale, cscale) / nu
    return dataclasses.replace(table, error=max(err, errc) + tail)


# -- evaluation ----------------------------------------------------------------------------------------------
def _rr_locate(t, kappa, s, xp):
    r"""Row index into an ``rr`` table and the local coordinates in $(t,\kappa,s)$ (for :func:`_cheb_rows`)."""
    pk, yk = _panel(_KAPPA_EDGES, kappa, xp)
    ps, ys = _panel(_S_EDGES, s, xp, square_first=True)
    idx = pk * (len(_S_EDGES) - 1) + ps
    if xp is not np:
        idx = _barrier(idx)
    return idx, [2.0 * t - 1.0, yk, ys]


def _cross_locate(t, zeta, xp, P=len(_ZETA_EDGES)):
    r"""Panel index, far mask and $\max(\zeta,Z)$, and the local coordinates in $(t,\zeta)$ of a cross-table lookup
    (``P``: the tables' panel count, the last one in $Z/|\zeta|$)."""
    far = zeta > _Z
    pz, yz = _panel(_ZETA_EDGES, xp.minimum(zeta, _Z), xp)
    zf = xp.maximum(zeta, _Z)
    yf = 2.0 * _Z / zf - 1.0
    pz = xp.where(far, P - 1, pz)
    yz = xp.where(far, yf, yz)
    return (pz, far, zf), [2.0 * t - 1.0, yz]


def _cross_eval(cross, growth, t, zeta, xp):
    r"""``(n_g, B)``: $\sum_k t^k\frac{(-w_{\max}/2)^k}{k!}\int x^{2k}R(x)g(\zeta x)dx$ for flat ``t`` and ``zeta``
    $\ge0$ (the growth factor $|\zeta|^e$ applied beyond $Z$)."""
    where, ys = _cross_locate(t, zeta, xp, cross.shape[0])
    return _cross_apply(cross, growth, where, _cheb_rows(ys, (cross.shape[1], cross.shape[3]), xp), xp)


@functools.lru_cache(maxsize=16)
def _stacked_rr(asy: Asymptote, derivatives: tuple):
    r"""The ``rr`` tables of ``derivatives`` zero-padded to common degrees, stacked on a trailing axis and packed
    (:func:`_pack`): one gathered block per covariance for $\phi$ and $\phi'$."""
    return _pack(_stack([near_table(asy, d).rr for d in derivatives]))


def _signed(coefficients, gparity, zeta, xp) -> list:
    r"""The coefficients of the cross functions, those of odd parity (``gparity`` $<0$) times the sign of $\zeta$."""
    sign = xp.where(zeta < 0, -1.0, 1.0)
    return [coefficient * sign if p < 0 else coefficient for coefficient, p in zip(coefficients, gparity)]


def near_mask(q1, q2, c, xp=None, mixed=False):
    r"""Where the near tables apply: $\min(q_1,q_2)\ge Q_{\rm near}$ and $\min(q_1,q_2)(1-r^2)<V_0$ (``mixed``:
    $\min(q_1,q_2)<Q_{\rm near}\le\max(q_1,q_2)$ instead: all but the cross term over the smaller variance)."""
    xp = jnp if xp is None else xp
    n = xp.sqrt(q1 * q2)
    r = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 1.0)
    qm = xp.minimum(q1, q2)
    band = qm * (1.0 - r) * (1.0 + r) < V0
    return band & ((qm < Q_NEAR) & (xp.maximum(q1, q2) >= Q_NEAR) if mixed else (qm >= Q_NEAR))


def near_expect(asy: Asymptote, q1, q2, c, derivatives=(False, True), xp=None, small=True):
    r"""``tuple``: $E[f(a)f(b)]$ for $f=\phi$ (``False`` in ``derivatives``) and $f=\phi'$ (``True``) by the near
    tables (module doc), for flat arrays of covariances; only meaningful where :func:`near_mask` holds (elsewhere
    the values are finite but wrong).  ``small=False``: without the cross term over the variable of smaller variance
    (the caller integrates it where that variance is below $Q_{\rm near}$: :func:`near_mask` with ``mixed``)."""
    xp = jnp if xp is None else xp
    return near_finish(asy, derivatives, near_locate(asy, q1, q2, c, derivatives, xp, small), xp)


def near_finish(asy: Asymptote, derivatives, loc, xp):
    r""":func:`near_expect` from the located covariances ``loc`` (:func:`near_locate`)."""
    batch = RowBatch()
    finish = near_parts(asy, derivatives, loc, xp, batch)
    return finish(batch.compute(xp))


def near_locate(asy: Asymptote, q1, q2, c, derivatives, xp, small=True) -> dict:
    r"""Every elementwise quantity of :func:`near_expect` per covariance (a dict of flat arrays and lists of them): panel
    indices, local coordinates, signs and weights of every table lookup, and the covariance (``q``) for
    $E[A(a)A(b)]$, which stays with the compiled finish (near $r=\pm1$ its closed form turns an ulp of $r$ into
    ~1e-11 of its value, and XLA's $r$ rounds differently from numpy's).  The eager path computes these in numpy and
    compiles only :func:`near_parts` (module doc of :mod:`~kernelcalc.theory.largeq_dispatch`)."""
    n = xp.sqrt(q1 * q2)
    r = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
    one_m_r2 = xp.maximum((1.0 - r) * (1.0 + r), 0.0)
    big1 = q1 >= q2
    qa, qb = xp.where(big1, q1, q2), xp.where(big1, q2, q1)
    q_floor = xp.maximum(qa, Q_NEAR)
    kap = c / q_floor
    s = xp.minimum(xp.sqrt(qb * one_m_r2), _S_MAX)
    tabs = [near_table(asy, d) for d in derivatives]
    idx, ys = _rr_locate(Q_NEAR / q_floor, xp.abs(kap), s, xp)
    loc = {"q": [q1, q2, c], "idx": idx, "ys": ys,
           "sign": [xp.where(kap < 0, float(t.parity), 1.0) if t.parity < 0 else xp.ones_like(kap) for t in tabs],
           "sq": xp.sqrt(2.0 * math.pi * q_floor), "cross": []}
    for qx, qy in ((qa, qb), (qb, qa))[:2 if small else 1]:
        qx = xp.maximum(qx, Q_NEAR)
        s2 = qy * one_m_r2
        tau = _tau(asy, s2, xp)
        zeta = c / qx / tau
        (pz, far, zf), yc = _cross_locate(Q_NEAR / qx, xp.abs(zeta), xp)
        coef = [_signed(_coefficients(asy, d, s2, tau, xp), t.gparity, zeta, xp) for d, t in zip(derivatives, tabs)]
        loc["cross"].append({"pz": pz, "far": far, "zf": zf, "ys": yc, "coef": coef, "sq": xp.sqrt(2.0 * math.pi * qx)})
    return loc


def near_parts(asy: Asymptote, derivatives, loc, xp, batch):
    r""":func:`near_finish` in two phases: asks ``batch`` (:class:`~kernelcalc.theory.largeq_chebtab.RowBatch`) for the
    Chebyshev rows of every lookup located in ``loc`` (:func:`near_locate`), and returns ``finish(batch)``, the values
    once the batch is computed (a caller with lookups of its own computes all rows in one recurrence)."""
    tabs = [near_table(asy, d) for d in derivatives]
    packed = _stacked_rr(asy, tuple(derivatives))
    h_rr = [batch.ask(y, d) for y, d in zip(loc["ys"], packed.degrees)]
    h_cross = [[batch.ask(y, max(t.cross.shape[i] for t in tabs)) for y, i in zip(cr["ys"], (1, 3))]
               for cr in loc["cross"]]

    def finish(rows):
        rr_all = _packed_apply(packed, loc["idx"], [rows[h] for h in h_rr], xp)           # (B, len(derivatives))
        out = []
        for m, (d, tab) in enumerate(zip(derivatives, tabs)):
            total = asy.AA(*loc["q"], d, xp=np if xp is np else None) + rr_all[:, m] * loc["sign"][m] / loc["sq"]
            for cr, h in zip(loc["cross"], h_cross):
                g = _cross_apply(tab.cross, tab.growth, (cr["pz"], cr["far"], cr["zf"]), [rows[i] for i in h], xp)
                for j, w in enumerate(cr["coef"][m]):
                    total = total + w * g[j] / cr["sq"]
            out.append(total)
        return tuple(out)
    return finish
