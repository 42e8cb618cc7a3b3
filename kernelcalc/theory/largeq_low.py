r"""Large-$q$ duals in the near-parallel band at *moderate* variances: tables in $\log q$ below $Q_{\rm near}$.

With the decomposition $f=A+R$ of :mod:`kernelcalc.theory.largeq` and $(a,b)\sim N(0,[[q_1,c],[c,q_2]])$,

$$E[f(a)f(b)]=E[A(a)A(b)]+E[R(a)A(b)]+E[A(a)R(b)]+E[R(a)R(b)].$$

The near tables of :mod:`kernelcalc.theory.largeq_near` expand the Gaussian density in $Q_{\rm near}/q$; below
$Q_{\rm near}$ that series diverges.  Here the variance itself is a table variable: every localised term is a
function of $\log q$ and one or two shape numbers, tabulated on panels of $\log_2 q\in[\log_2Q_{\rm low},\log_2
Q_{\rm near}]$ (``_LOGQ_EDGES``, Chebyshev in $\log_2 q$ on each), for the variable that carries $R$:

- **Remainder times remainder** (both variances in $[Q_{\rm low},Q_{\rm near})$).  With $a$ the variable of larger
  variance, $\kappa=c/q_a\in[-1,1]$, $s^2=q_b(1-r^2)\le q_b<Q_{\rm near}$ and $G(\mu,s)=E[R(\mu+sZ)]$,

  $$F(q_a,\kappa,s)=E[R(a)R(b)]=\int R(x)\,p_{q_a}(x)\,G(\kappa x,s)\,dx
  =\frac1\pi\int_0^\infty\hat R(\omega)\,e^{-s^2\omega^2/2}\,\widehat{Rp_{q_a}}(\kappa\omega)\,d\omega$$

  (cosine transforms for even $R$, sine transforms for odd $R$; the sign of $\kappa$ by the parity of $R$), a
  Chebyshev tensor series on the panels of $\log_2q_a$, of $\kappa\in[0,1]$ and of $s\in[0,\sqrt{V_0}]$ (those of the
  near tables, first $s$-panel in $s^2$): :attr:`LowTable.rr`.
- **Remainder times asymptote** (the localised variable $x$ of variance $q_x\in[Q_{\rm low},Q_{\rm near})$, the other
  one $y$ of any variance $q_y$).  The conditional of the asymptote is a sum of fixed functions $g_j(\zeta x)$ with
  closed coefficients ($\zeta=\kappa/\tau$, $\kappa=c/q_x$, $s^2=q_y(1-r^2)$; :mod:`kernelcalc.theory.largeq_near`),
  so $E[R(x)A(y)]=\sum_j{\rm coef}_j\,X_j(q_x,\zeta)$ with

  $$X_j(q_x,\zeta)=\int R(x)\,p_{q_x}(x)\,g_j(\zeta x)\,dx,$$

  tabulated on panels of $\log_2 q_x$ and of $|\zeta|\le Z$, and beyond $Z$ in $Z/|\zeta|$ for $|\zeta|^{-e}X_j$ ($e$:
  the growth order of $g_j$; its non-decaying part integrated separately): :attr:`LowTable.cross`.  This covers
  both cross terms of a cell with both variances below $Q_{\rm near}$, and the one cross term over the smaller
  variance of a **mixed** cell ($q_b<Q_{\rm near}\le q_a$), whose other terms are the near tables'.

Every value is a normalised Gaussian expectation (the density $p_q$ inside), so the tables' held-out errors
(midpoints of the fitting nodes in every variable, against the same defining integrals) are compared with the
kernel's norm directly: :attr:`LowTable.error` is relative to $\sqrt{Ef(a)^2Ef(b)^2}$ (:func:`low_norm_floor`, and
for the cross terms the largest ratio of their closed coefficients to $\sqrt{Ef(y)^2}$).  Below $Q_{\rm low}$ (and
far from parallel, where the moment series of :mod:`kernelcalc.theory.largeq_far` apply) the rule's other regimes
remain.  Per covariance: one gathered block of the ``rr`` coefficients that the sparse storage keeps (the positions
not negligible in some panel, :func:`~kernelcalc.theory.largeq_chebtab._sparsify`: about 350-420 of the box's
1100-1330, $\phi$ and $\phi'$ stacked: :func:`_stacked`) and two $(d_q\times n_g\times d_\zeta)$ blocks, contracted
with products of Chebyshev rows that one recurrence computes for every lookup
(:class:`~kernelcalc.theory.largeq_chebtab.RowBatch`); no quadrature.  Measured (realistic covariances of a softplus
$\sigma_wT=10$ kernel, chunks of ``largeq_dispatch._CHUNKS``, side by side with the dense blocks and
$\cos(k\arccos y)$ rows before): about 4.5 against 5.7 us per $(C,\dot C)$ with both variances low, 3.4-3.8 against
4.4 us on mixed cells, and 0.7 against 1.0-1.5 s of CPU to compile each.  The tables take about 0.35 s per
derivative to build (once per process, on one BLAS thread; fitted on $12\times13\times13$ nodes per panel, 0.5 s on
$14\times15\times15$ with the same held-out errors; ``rr``: 1248 panel rows of about 1100-1300 coefficients before
the sparse storage, 3-4 MB per derivative after).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .._lazy import jnp   # deferred: jax is imported on first use
from .largeq import Asymptote
from .largeq_chebtab import (RowBatch, _barrier, _cheb_coef, _cheb_nodes, _cheb_rows, _cross_apply, _mid_nodes,
                             _on_panels, _pack, _packed_apply, _stack, _panel, _sparsify, _truncate)
from .largeq_far import V0, stable_remainder
from .largeq_near import (_KAPPA_EDGES, near_locate, near_parts, _S_EDGES, _S_MAX, _Z, Q_NEAR, _asymptote_np, _basis,
                          _coefficients, _half_line, _parity, _signed, _tau)
from .largeq_remainder import _KAPPA_CHUNK, BandTables, _column_groups, _leading, _trig_rows, table_build

__all__ = ["LowTable", "low_table", "low_expect", "low_mixed", "low_mask", "low_norm_floor", "Q_LOW"]

#: the low tables apply where Q_LOW <= min(q1, q2) (and max(q1, q2) < Q_NEAR, or only the cross term of a mixed cell)
Q_LOW = 0.25
_LOGQ_EDGES = tuple(np.linspace(math.log2(Q_LOW), math.log2(Q_NEAR), 13))   # panels in log2 q (width 0.72)
_N_FIT_Q = 12                 # Chebyshev nodes per log q panel (fit); the degree kept is measured (10-11)
_N_FIT = 13                   # per kappa and s panel (the near tables' panels; degrees kept 10-12; 15 before: the same
                              # held-out errors to 1e-15, 30 % more of the build)
_LOGQ_EDGES_X = tuple(np.linspace(math.log2(Q_LOW), math.log2(Q_NEAR), 25))   # the cross tables' log2 q panels
_N_FIT_QX = 12                # Chebyshev nodes per cross-table log q panel
_ZETA_EDGES_X = tuple(np.linspace(0.0, _Z, 17))   # the cross tables' zeta panels up to Z
_N_FIT_Z = 16                 # per zeta panel
_T_EDGES = (0.0, 0.15, 0.3, 0.6, 1.0)    # beyond Z: panels in t = Z / zeta
_TARGET = 5e-15              # coefficients below TARGET of the kernel's norm are dropped
_XA = 44.0                    # half-range of the x integrals (R is below 1e-17 of its peak beyond)
_DX = 0.2                     # their step for the Fourier transforms (q >= Q_LOW: p_q is resolved)
_DX_CROSS = 0.05              # and for the cross integrals
_W_MAX = 12.0                 # frequencies of the Fourier form
_DW = 0.03                    # and their step


def _logq_nodes(y, edges=None):
    """``(P, len(y))``: the variances at local coordinates ``y`` on every log q panel (``edges``: of the cross tables)."""
    return 2.0 ** _on_panels(_LOGQ_EDGES if edges is None else edges, y)


def _norm2(asy: Asymptote, derivative: bool, q):
    r"""$E f(\sqrt q Z)^2$ for each ``q`` (numpy; trapezoid in $z$, step 0.02 on $|z|\le12$)."""
    z = np.linspace(-12.0, 12.0, 1201)
    w = np.exp(-0.5 * z * z) * (z[1] - z[0]) / math.sqrt(2.0 * math.pi)
    out = []
    for qi in np.atleast_1d(q):
        x = math.sqrt(qi) * z
        f = _asymptote_np(asy, derivative, x) + stable_remainder(asy.name, asy.scale, derivative, x)
        out.append(float(np.sum(w * f * f)))
    return np.array(out)


@functools.lru_cache(maxsize=16)
def low_norm_floor(asy: Asymptote, derivative: bool) -> float:
    r"""$\nu=\min_{Q_{\rm low}\le q\le Q_{\rm near}}Ef(\sqrt qZ)^2$: an error $\delta$ of a remainder-remainder value is
    at most $\delta/\nu$ of the kernel's norm $\sqrt{Ef(a)^2Ef(b)^2}$ when both variances lie in that range."""
    return float(np.min(_norm2(asy, derivative, np.geomspace(Q_LOW, Q_NEAR, 25))))


def _coefficient_ratio(asy: Asymptote, derivative: bool) -> float:
    r"""$\max_j\max_{q_y}\bar c_j(q_y)/\sqrt{Ef(\sqrt{q_y}Z)^2}$ with $\bar c_j$ a bound of the cross function's closed
    coefficient ($s^2\le q_y$, $\tau\le\sqrt{\lambda^2+q_y}$ or $\sqrt{1+2k^2q_y}/k$): an error $\delta$ of a cross
    value moves the kernel by at most $n_g\,\delta$ times this over $\sqrt\nu$ of its norm."""
    q = np.geomspace(Q_LOW, 1e8, 33)
    tau = _tau(asy, q, np)
    lo = _tau(asy, 0.0 * q, np)
    bounds = []
    for j, _ in enumerate(_basis(asy, derivative)):
        hi_c = np.abs(_coefficients(asy, derivative, q, tau, np)[j])
        lo_c = np.abs(_coefficients(asy, derivative, 0.0 * q, lo, np)[j])
        bounds.append(np.maximum(hi_c, lo_c))      # each coefficient is monotone in s^2 in [0, q_y]
    return float(np.max(np.max(bounds, axis=0) / np.sqrt(_norm2(asy, derivative, q))))


@dataclasses.dataclass(frozen=True, eq=False)
class LowTable(BandTables):
    r"""The low-variance tables of one remainder (module doc).

    ``rr``: ``(P_q * P_kappa * P_s, d_q, d_kappa, d_s)`` Chebyshev coefficients of $F(q_a,\kappa,s)$ in $(\log_2q_a,
    \kappa,s)$; ``cross``: ``(P_q * (P_zeta + P_t), d_q, n_g, d_zeta)`` of $X_j(q_x,\zeta)$ (the last $P_t$ panels of each
    $q$-panel in $t=Z/|\zeta|$, for $|\zeta|^{-e}X_j$); ``parity``: of $R$; ``growth``, ``gparity``: per cross
    function; ``error``: the largest held-out error of either table relative to the kernel's norm (module doc)."""


def _rr_values(R, parity, q, kappa, s):
    r"""``(len(s), len(kappa), len(q))``: $F(q,\kappa,s)$ by the Fourier form (module doc): trapezoid sums in $x$ (step
    ``_DX`` on $(0,X_A]$, the half line by parity) and in $\omega$ (step ``_DW`` on $[0,\Omega]$).  Both sums skip the
    terms whose weights are negligible (``_NEGLIGIBLE``): $p_q(x)$ beyond $|x|\approx9\sqrt q$ for small $q$, and
    $e^{-s^2\omega^2/2}$ beyond $\omega\approx9/s$; the products run on column groups with their own lengths."""
    x = _DX * np.arange(1, int(round(_XA / _DX)) + 1)
    Rx = R(x)
    R0 = float(R(np.zeros(1))[0]) if parity > 0 else 0.0
    trig = np.cos if parity > 0 else np.sin
    w = _DW * np.arange(int(round(_W_MAX / _DW)) + 1)
    ww = np.full(w.size, _DW)
    ww[0] *= 0.5
    Rhat = 2.0 * _DX * (trig(np.outer(w, x)) @ Rx) + _DX * R0
    p0 = 1.0 / np.sqrt(2.0 * math.pi * q)
    pw = 2.0 * _DX * Rx[:, None] * np.exp(-0.5 * x[:, None] ** 2 / q[None, :]) * p0[None, :]   # (X, Q)
    S = np.empty((w.size, len(kappa), len(q)))
    groups = _column_groups(_leading(pw))
    for lo in range(0, len(kappa), _KAPPA_CHUNK):        # rows of cos / sin that stay in cache, used by every group
        kc = kappa[lo:lo + _KAPPA_CHUNK]
        rows = _trig_rows(parity, w.size, _DW, kc, x)                                         # (W kc, X)
        for cols, n in groups:                           # one BLAS product per group of variances
            S[:, lo:lo + len(kc), cols] = (rows[:, :n] @ pw[:n, cols]).reshape(w.size, len(kc), len(cols))
    if parity > 0:
        S += (_DX * R0 * p0)[None, None, :]
    S = S.reshape(w.size, -1)
    E = np.exp(-0.5 * np.outer(w * w, s * s)) * (Rhat * ww / math.pi)[:, None]                  # (W, S)
    F = np.empty((len(s), S.shape[1]))
    for cols, n in _column_groups(_leading(E)):           # and per group of s
        F[cols] = E[:n, cols].T @ S[:n]
    return F.reshape(len(s), len(kappa), len(q))                                              # (S, K, Q)


def _cheb_matrix(n):
    """``(n, n)``: the Chebyshev coefficients of the values at the first-kind nodes (:func:`_cheb_coef` as a matrix)."""
    C = np.cos(np.pi * np.outer(np.arange(n), np.arange(n) + 0.5) / n) * (2.0 / n)
    C[0] *= 0.5
    return C


def _cross_values(R, basis, q, zeta):
    r"""``(len(q), n_g, len(zeta))``: $X_j(q,\zeta)$ for $0\le\zeta\le Z$ (trapezoid in $x$, step ``_DX_CROSS``)."""
    m = int(round(_XA / _DX_CROSS))
    x = _DX_CROSS * np.arange(-m, m + 1, dtype=np.float64)
    pw = (_DX_CROSS * R(x))[:, None] * np.exp(-0.5 * x[:, None] ** 2 / q[None, :]) / np.sqrt(2.0 * math.pi * q)
    return np.stack([(g(np.outer(zeta, x)) @ pw).T for g, *_ in basis], axis=1)


def _gauss(x, q):
    """``(len(x), len(q))``: the densities $p_q(x)$."""
    return np.exp(-0.5 * np.asarray(x)[:, None] ** 2 / q[None, :]) / np.sqrt(2.0 * math.pi * q)[None, :]


def _cross_far(R, basis, q, t):
    r"""``(len(q), n_g, len(t))``: $|\zeta|^{-e}X_j(q,\zeta)$ at $\zeta=Z/t$, as the near tables' far form
    (:func:`~kernelcalc.theory.largeq_near._cross_far_values`) with $R\,p_q$ in place of $R$: the non-decaying part of
    $g_j$ as a half-line moment (composite Gauss-Legendre, panels of width 1: its integrand has a kink at 0), the
    localised rest in $y=\zeta x$ by Gauss-Legendre on $[0,12]$ ($g_{\rm loc}$ is below $e^{-70}$ beyond)."""
    x, wx = _half_line()
    Rpx = R(x)[:, None] * _gauss(x, q)                                         # (X, Q)
    gy, gw = np.polynomial.legendre.leggauss(16)
    y = (np.arange(24)[:, None] + 0.5 * (gy[None, :] + 1.0)).ravel() * 0.5       # 24 panels of width 1/2 on [0, 12]
    wy = np.tile(0.25 * gw, 24)
    z = _Z / np.asarray(t)
    u = y[None, :] / z[:, None]                                                  # (T, Y)
    Ru = R(u.ravel()).reshape(u.shape)
    gw = np.stack([gloc(y) * wy for _, gloc, *_ in basis], axis=1)               # (Y, n_g)
    p0 = np.sqrt(2.0 * math.pi * q)
    loc = np.empty((len(z), len(q), len(basis)))
    for t0 in range(0, len(z), 4):        # R(u) p_q(u) a few t at a time (in cache), against every cross function
        Rpu = np.divide.outer(-0.5 * u[t0:t0 + 4] ** 2, q)                        # (4, Y, Q)
        np.exp(Rpu, out=Rpu)
        np.divide(Rpu, p0, out=Rpu)
        np.multiply(Ru[t0:t0 + 4, :, None], Rpu, out=Rpu)
        loc[t0:t0 + 4] = np.tensordot(Rpu, gw, axes=(1, 0))
    out = np.empty((len(q), len(basis), len(z)))
    for j, (g, gloc, winf, e, p) in enumerate(basis):
        inf = 2.0 * ((winf(x) * wx) @ Rpx) if winf is not None else np.zeros(len(q))        # (Q,)
        out[:, j, :] = inf[:, None] + (2.0 / z[:, None] * loc[:, :, j] * (z ** (-e))[:, None]).T
    return out


@table_build
def low_table(asymptote: Asymptote, derivative: bool) -> LowTable:
    """The :class:`LowTable` of the remainder of ``asymptote`` (``derivative``: of $R'$), built once per process."""
    name, lam = asymptote.name, asymptote.scale
    R = lambda x: stable_remainder(name, lam, derivative, x)              # noqa: E731
    par = _parity(name, derivative)
    nu = low_norm_floor(asymptote, derivative)
    yq, yk = _cheb_nodes(_N_FIT_Q), _cheb_nodes(_N_FIT)
    qn = _logq_nodes(yq)                                                    # (Pq, nq)
    kap = _on_panels(_KAPPA_EDGES, yk)                                      # (Pk, n)
    s = _on_panels(_S_EDGES, yk, square_first=True)                         # (Ps, n)
    Pq, Pk, Ps, nq, n = qn.shape[0], kap.shape[0], s.shape[0], _N_FIT_Q, _N_FIT
    vals = _rr_values(R, par, qn.ravel(), kap.ravel(), s.ravel())            # (Ps n, Pk n, Pq nq)
    # Chebyshev coefficients along each node axis in place (batched products, no transposed copies of the values)
    coef = (vals.reshape(-1, nq) @ _cheb_matrix(nq).T).reshape(Ps * n * Pk, n, Pq * nq)
    coef = (_cheb_matrix(n) @ coef).reshape(Ps, n, Pk * n * Pq * nq)
    coef = (_cheb_matrix(n) @ coef).reshape(Ps, n, Pk, n, Pq, nq)
    d_q, d_k, d_s = _truncate(coef, (5, 3, 1), _TARGET * nu)
    rr = np.ascontiguousarray(coef[:, :d_s, :, :d_k, :, :d_q].transpose(4, 2, 0, 5, 3, 1)).reshape(Pq * Pk * Ps, d_q, d_k, d_s)
    rr = _sparsify(rr, _TARGET * nu)

    basis = _basis(asymptote, derivative)
    yz = _cheb_nodes(_N_FIT_Z)
    qx = _logq_nodes(_cheb_nodes(_N_FIT_QX), _LOGQ_EDGES_X)                # (Pqx, nqx)
    Pqx = qx.shape[0]
    z = _on_panels(_ZETA_EDGES_X, yz)                                       # (Pz, nz)
    cv = _cross_values(R, basis, qx.ravel(), z.ravel()).reshape(Pqx, _N_FIT_QX, len(basis), z.shape[0], _N_FIT_Z)
    tf = _on_panels(_T_EDGES, yz)                                           # (Pt, nz)
    cf = _cross_far(R, basis, qx.ravel(), tf.ravel()).reshape(Pqx, _N_FIT_QX, len(basis), tf.shape[0], _N_FIT_Z)
    cv = np.concatenate([cv, cf], axis=3).transpose(0, 3, 1, 2, 4)         # (Pqx, Pz + Pt, nqx, n_g, nz)
    ratio = _coefficient_ratio(asymptote, derivative)
    cc = _cheb_coef(_cheb_coef(cv, 2), 4)
    e_q, e_z = _truncate(cc, (2, 4), _TARGET * math.sqrt(nu) / ratio)
    cross = np.ascontiguousarray(cc[:, :, :e_q, :, :e_z].reshape(Pqx * (z.shape[0] + tf.shape[0]), e_q, len(basis), e_z))
    table = LowTable(rr, cross, par, tuple(b[3] for b in basis), tuple(b[4] for b in basis), 0.0)

    # held-out check: midpoints of the fitting nodes in each variable
    qm = _logq_nodes(_mid_nodes(_N_FIT_Q)[1::3]).ravel()
    ym = _mid_nodes(_N_FIT)[1::3]           # 4 of the 12 midpoints per panel
    km, sm = _on_panels(_KAPPA_EDGES, ym).ravel(), _on_panels(_S_EDGES, ym, square_first=True).ravel()
    ref = _rr_values(R, par, qm, km, sm).reshape(Ps, len(ym), Pk, len(ym), Pq, -1).transpose(4, 2, 0, 5, 3, 1)
    # the held-out points sit at the same local coordinates on every panel (the first s-panel's variable is s^2)
    Tq, Tk, Ts = (np.cos(np.arccos(y)[:, None] * np.arange(d))
                  for y, d in ((_mid_nodes(_N_FIT_Q)[1::3], d_q), (ym, d_k), (ym, d_s)))
    got = np.einsum("abcijk,ui,vj,wk->abcuvw", rr.reshape(Pq, Pk, Ps, d_q, d_k, d_s), Tq, Tk, Ts, optimize=True)
    err = float(np.max(np.abs(got - ref))) / nu
    ymz = _mid_nodes(_N_FIT_Z)[1::3]
    zm = _on_panels(_ZETA_EDGES_X, ymz).ravel()
    tm = _on_panels(_T_EDGES, ymz).ravel()
    qm = _logq_nodes(_mid_nodes(_N_FIT_QX)[1::3], _LOGQ_EDGES_X).ravel()
    refc = np.concatenate([_cross_values(R, basis, qm, zm), _cross_far(R, basis, qm, tm)], axis=2)
    zall = np.concatenate([zm, _Z / tm])
    QQ, ZZ = np.meshgrid(qm, zall, indexing="ij")
    gotc = _cross_eval(cross, table.growth, np.log2(QQ.ravel()), ZZ.ravel(), np).reshape(len(basis), len(qm), len(zall))
    gotc = gotc.transpose(1, 0, 2)
    far = zall > _Z                           # the far panel is compared in its scaled form |zeta|^-e X
    for j, e in enumerate(table.growth):
        gotc[:, j, far] *= zall[far] ** (-e)
    errc = float(np.max(np.abs(gotc - refc))) * len(basis) * ratio / math.sqrt(nu)
    return dataclasses.replace(table, error=max(err, errc))


# -- evaluation ----------------------------------------------------------------------------------------------
def _rr_locate(lq, kappa, s, xp):
    r"""Row index into an ``rr`` table and the local coordinates in $(\log_2q,\kappa,s)$ (shared by the tables of
    $\phi$ and $\phi'$)."""
    pq, yq = _panel(_LOGQ_EDGES, lq, xp)
    pk, yk = _panel(_KAPPA_EDGES, kappa, xp)
    ps, ys = _panel(_S_EDGES, s, xp, square_first=True)
    idx = (pq * (len(_KAPPA_EDGES) - 1) + pk) * (len(_S_EDGES) - 1) + ps
    return (idx if xp is np else _barrier(idx)), [yq, yk, ys]


def _cross_locate(lq, zeta, xp):
    r"""Row index into a ``cross`` table, the far mask and $\max(\zeta,Z)$, and the local coordinates in
    $(\log_2q,\zeta)$."""
    Pz = len(_ZETA_EDGES_X) - 1
    far = zeta > _Z
    zf = xp.maximum(zeta, _Z)
    pz, yz = _panel(_ZETA_EDGES_X, xp.minimum(zeta, _Z), xp)
    pt, yt = _panel(_T_EDGES, _Z / zf, xp)
    pq, yq = _panel(_LOGQ_EDGES_X, lq, xp)
    idx = pq * (Pz + len(_T_EDGES) - 1) + xp.where(far, Pz + pt, pz)
    yz = xp.where(far, yt, yz)
    return ((idx if xp is np else _barrier(idx)), far, zf), [yq, yz]


def _cross_eval(cross, growth, lq, zeta, xp):
    r"""``(n_g, B)``: $X_j(q,\zeta)$ for flat ``lq`` $=\log_2q$ and ``zeta`` $\ge0$."""
    where, ys = _cross_locate(lq, zeta, xp)
    return _cross_apply(cross, growth, where, _cheb_rows(ys, (cross.shape[1], cross.shape[3]), xp), xp)


def low_mask(q1, q2, c, xp=None, mixed=False):
    r"""Where the low tables apply: $Q_{\rm low}\le\min(q_1,q_2)$ and $\max(q_1,q_2)<Q_{\rm near}$ (``mixed``:
    $Q_{\rm low}\le\min(q_1,q_2)<Q_{\rm near}\le\max(q_1,q_2)$ in the near-parallel band $\min(q_1,q_2)(1-r^2)<V_0$,
    where the near tables take all but the cross term over the smaller variance: :func:`_cross_parts`)."""
    xp = jnp if xp is None else xp
    qm, qM = xp.minimum(q1, q2), xp.maximum(q1, q2)
    if not mixed:
        return (qm >= Q_LOW) & (qM < Q_NEAR)
    n = xp.sqrt(q1 * q2)
    r = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 1.0)
    return (qm >= Q_LOW) & (qm < Q_NEAR) & (qM >= Q_NEAR) & (qm * (1.0 - r) * (1.0 + r) < V0)


@functools.lru_cache(maxsize=16)
def _stacked(asy: Asymptote, derivatives: tuple):
    r"""The low tables of ``derivatives`` stacked (zero-padded to common degrees): ``rr`` ``(P, d_q, d_k, d_s, m)``
    packed to the coefficients kept by either table (:func:`~kernelcalc.theory.largeq_chebtab._pack`), and
    ``cross`` ``(P, d_q, m\,n_g, d_\zeta)`` with the growth orders and parities of its functions, so that $\phi$ and
    $\phi'$ cost one gather and one contraction per covariance (and half the code to compile)."""
    tabs = [low_table(asy, d) for d in derivatives]
    rr = _stack([t.rr for t in tabs])
    eq, ez = (max(t.cross.shape[a] for t in tabs) for a in (1, 3))
    n_g = tabs[0].cross.shape[2]
    cross = np.zeros((tabs[0].cross.shape[0], eq, n_g * len(tabs), ez))
    for m, t in enumerate(tabs):
        cross[:, :t.cross.shape[1], m * n_g:(m + 1) * n_g, :t.cross.shape[3]] = t.cross
    return _pack(rr), cross, sum((t.growth for t in tabs), ()), tuple(t.parity for t in tabs)


def _cross_loc(asy: Asymptote, qx, qy, c, derivatives, xp) -> dict:
    r"""The elementwise part of :func:`_cross_parts` (as :func:`~kernelcalc.theory.largeq_near.near_locate`): the lookup's
    panel index, far mask, $\max(\zeta,Z)$ and local coordinates, and the signed coefficient of every cross function."""
    n = xp.sqrt(qx * qy)
    r = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
    s2 = qy * xp.maximum((1.0 - r) * (1.0 + r), 0.0)
    tau = _tau(asy, s2, xp)
    qx = xp.clip(qx, Q_LOW, Q_NEAR)
    zeta = c / qx / tau
    (idx, far, zf), ys = _cross_locate(xp.log2(qx), xp.abs(zeta), xp)
    coef = [_signed(_coefficients(asy, d, s2, tau, xp), low_table(asy, d).gparity, zeta, xp) for d in derivatives]
    return {"idx": idx, "far": far, "zf": zf, "ys": ys, "coef": coef}


def _cross_parts(asy: Asymptote, derivatives, loc, xp, batch):
    r"""The cross term by the low cross tables, $E[R(x)A(y)]$ (with $R'$, $A'$ for ``True`` in ``derivatives``) for
    $x\sim N(0,q_x)$, $q_x\in[Q_{\rm low},Q_{\rm near})$, and $y$ of any variance $q_y$ (module doc), in two phases (as
    :func:`~kernelcalc.theory.largeq_near.near_parts`): ask ``batch`` for the Chebyshev rows of the lookup located in
    ``loc`` (:func:`_cross_loc`), then ``finish(batch)``."""
    _, cross, growth, _ = _stacked(asy, tuple(derivatives))
    handles = [batch.ask(y, cross.shape[i]) for y, i in zip(loc["ys"], (1, 3))]

    def finish(rows):
        g = _cross_apply(cross, growth, (loc["idx"], loc["far"], loc["zf"]), [rows[h] for h in handles], xp)   # (m n_g, B)
        out = []
        for coef in loc["coef"]:
            total = 0.0
            for j, w in enumerate(coef):
                total = total + w * g[len(out) * len(coef) + j]
            out.append(total)
        return tuple(out)
    return finish


def low_expect(asy: Asymptote, q1, q2, c, derivatives=(False, True), xp=None):
    r"""``tuple``: $E[f(a)f(b)]$ for $f=\phi$ (``False`` in ``derivatives``) and $f=\phi'$ (``True``) by the low tables
    (module doc), for flat arrays of covariances; only meaningful where :func:`low_mask` holds (elsewhere finite but
    wrong).  Every lookup's Chebyshev rows come from one recurrence (:class:`~kernelcalc.theory.largeq_chebtab.
    RowBatch`)."""
    xp = jnp if xp is None else xp
    return low_finish(asy, derivatives, low_locate(asy, q1, q2, c, derivatives, xp), xp)


def low_locate(asy: Asymptote, q1, q2, c, derivatives, xp) -> dict:
    """The elementwise part of :func:`low_expect` (as :func:`~kernelcalc.theory.largeq_near.near_locate`)."""
    n = xp.sqrt(q1 * q2)
    r = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
    one_m_r2 = xp.maximum((1.0 - r) * (1.0 + r), 0.0)
    big1 = q1 >= q2
    qa, qb = xp.where(big1, q1, q2), xp.where(big1, q2, q1)
    qa_c = xp.clip(qa, Q_LOW, Q_NEAR)
    kap = c / qa_c
    s = xp.minimum(xp.sqrt(qb * one_m_r2), _S_MAX)
    idx, ys = _rr_locate(xp.log2(qa_c), xp.minimum(xp.abs(kap), 1.0), s, xp)
    parity = _stacked(asy, tuple(derivatives))[3]
    return {"q": [q1, q2, c], "idx": idx, "ys": ys,
            "sign": [xp.where(kap < 0, float(p), 1.0) if p < 0 else xp.ones_like(kap) for p in parity],
            "cross": [_cross_loc(asy, qx, qy, c, derivatives, xp) for qx, qy in ((q1, q2), (q2, q1))]}


def low_finish(asy: Asymptote, derivatives, loc, xp):
    r""":func:`low_expect` from the located covariances ``loc`` (:func:`low_locate`)."""
    rr_table = _stacked(asy, tuple(derivatives))[0]
    batch = RowBatch()
    h_rr = [batch.ask(y, d) for y, d in zip(loc["ys"], rr_table.degrees)]
    cross = [_cross_parts(asy, derivatives, cl, xp, batch) for cl in loc["cross"]]
    batch.compute(xp)
    rr = _packed_apply(rr_table, loc["idx"], [batch[h] for h in h_rr], xp)
    x1, x2 = (finish(batch) for finish in cross)
    return tuple(asy.AA(*loc["q"], d, xp=np if xp is np else None) + rr[:, m] * loc["sign"][m] + x1[m] + x2[m]
                 for m, d in enumerate(derivatives))


def low_mixed(asy: Asymptote, q1, q2, c, derivatives=(False, True), xp=None):
    r"""``tuple``: $E[f(a)f(b)]$ on the mixed cells (:func:`low_mask` with ``mixed``): the near tables
    (:func:`~kernelcalc.theory.largeq_near.near_expect` without the cross term over the smaller variance) plus that
    cross term by the low cross tables (:func:`_cross_parts`), all Chebyshev rows from one recurrence."""
    xp = jnp if xp is None else xp
    return low_mixed_finish(asy, derivatives, low_mixed_locate(asy, q1, q2, c, derivatives, xp), xp)


def low_mixed_locate(asy: Asymptote, q1, q2, c, derivatives, xp) -> dict:
    """The elementwise part of :func:`low_mixed` (as :func:`~kernelcalc.theory.largeq_near.near_locate`)."""
    big1 = q1 >= q2
    qa, qb = xp.where(big1, q1, q2), xp.where(big1, q2, q1)
    return {"near": near_locate(asy, q1, q2, c, derivatives, xp, False),
            "cross": _cross_loc(asy, qb, qa, c, derivatives, xp)}


def low_mixed_finish(asy: Asymptote, derivatives, loc, xp):
    r""":func:`low_mixed` from the located covariances ``loc`` (:func:`low_mixed_locate`)."""
    batch = RowBatch()
    near = near_parts(asy, derivatives, loc["near"], xp, batch)
    cross = _cross_parts(asy, derivatives, loc["cross"], xp, batch)
    batch.compute(xp)
    return tuple(o + x for o, x in zip(near(batch), cross(batch)))
