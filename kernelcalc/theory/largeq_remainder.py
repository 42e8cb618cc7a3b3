r"""The inner Gaussian average of a localised remainder, tabulated once per activation (:class:`RemainderTable`),
for the large-$q$ rule of :mod:`kernelcalc.theory.largeq_table`.

With the decomposition $f=A+R$ of :mod:`kernelcalc.theory.largeq` ($f\in\{\phi,\phi'\}$, $A$ a closed-form
asymptote, $R$ analytic and localised on $|x|\le L$),

$$E[f(a)f(b)] = E[A(a)A(b)] + E[R(a)A(b)] + E[A(a)R(b)] + E[R(a)R(b)].$$

The first term is closed.  The two cross terms are one trapezoid sum each over the localised variable
($|x|\le L$, step $h$; $|x|\le9\sqrt{q}$ with the same number of nodes when that is narrower): $E[R(a)A(b)]=\int R(a)\,p_{q_1}(a)\,m_A(\kappa a,s)\,da$ with the closed conditional
$m_A$ (:meth:`~kernelcalc.theory.largeq.Asymptote.conditional`), $\kappa=c/q_1$, $s^2=q_2(1-r^2)$.  The last
term is, with $a$ the variable of **larger** variance (so that $|\kappa|\le1$ and $\mu=\kappa a\in[-L,L]$),

$$E[R(a)R(b)] = \int_{-L}^{L} R(a)\,p_{q_1}(a)\,G(\kappa a, s)\,da,\qquad G(\mu,s)=E[R(\mu+sZ)],$$

and $G$ depends on two numbers only.  :class:`RemainderTable` holds $G$ as a piecewise Chebyshev tensor
series: in $\mu$ on panels of width ``W`` covering $[-L,L]$, in $s$ on the panel $[0,s_0]$ (variable $s^2$:
$G$ is even in $s$), on panels $[s_02^{k-1},s_02^k]$ in $\log s$ up to $S$, and on $[S,\infty)$ in the variable
$S/s$ for $sG$, which by the moment expansion

$$sG(\mu,s)=\varphi(\mu/s)\sum_{k}\frac{M_k}{k!\,s^k}\,He_k(\mu/s),\qquad M_k=\int x^kR(x)\,dx,$$

is a smooth function of $1/s$ there.  The table's values come from
one FFT of $R$ ($\hat G=\hat R e^{-s^2\omega^2/2}$, exact to rounding), and every series is
truncated where its coefficients fall below $5\cdot10^{-15}$ of $\max|R|$; the table's error is then **measured**
at held-out points (midpoints of the fitting nodes in both variables) and reported
(:attr:`RemainderTable.error`).

Per covariance the rule costs one contraction of the $s$-panel ($d_s\times P_\mu d_\mu$ multiply-adds, giving
$G(\cdot,s)$'s $\mu$-coefficients), one Clenshaw sum of $d_\mu$ terms per outer node, and two closed forms
per node for the cross terms: a few $10^4$ flops, against $\sim(2L/h)\cdot n_{\rm inner}$ remainder
evaluations of the window rule (:class:`~kernelcalc.theory.largeq.AsymptoticRule`).

The Fourier sums of the near and low tables (:mod:`kernelcalc.theory.largeq_near`, :mod:`kernelcalc.theory.largeq_low`)
take their rows of $\cos$ / $\sin$ from :func:`_trig_rows` here (the addition theorem: a fifth of the evaluations).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._blas import one_blas_thread
from .._lazy import jnp   # deferred: jax is imported on first use
from .largeq import Asymptote
from .largeq_chebtab import _cheb_coef, _cheb_nodes
from .largeq_far import remainder_parity, stable_remainder

__all__ = ["RemainderTable", "remainder_table"]

_S0 = 0.125        # first s-panel [0, S0] (variable s^2)
_S_PANELS = 10     # s-panels: [0, S0], [S0 2^(k-1), S0 2^k] for k = 1..8 (up to S = 32), and [S, inf) in S/s
_N_S = 32          # Chebyshev nodes per s-panel (fit); the degree kept is measured
_N_MU = 44         # Chebyshev nodes per mu-panel (fit)
_W = 4.0           # mu-panel width
_CUT = 5e-15       # coefficients below CUT * max|R| are dropped



@dataclasses.dataclass(frozen=True, eq=False)
class RemainderTable:
    r"""$G(\mu,s)=E[R(\mu+sZ)]$ of one remainder $R$ (module doc): Chebyshev tensor coefficients
    ``coef`` of shape ``(P_s, d_s, P_mu, d_mu)`` (the last $s$-panel holds $sG$ in $S/s$), the half-range
    ``L``, the panel width ``W``, the start $S$ of the last panel (``s_max``) and the measured ``error``
    (absolute, at held-out points, relative to $\max|R|$)."""

    coef: np.ndarray
    L: float
    W: float
    s_max: float
    error: float

    @property
    def flops(self) -> int:
        """Multiply-adds of one covariance's $s$-contraction (a row of all panels' weights times the table)."""
        return int(np.prod(self.coef.shape))

    def __call__(self, mu, s, xp=None):
        r"""$G(\mu, s)$ for ``mu`` of shape ``(B, n)`` and ``s`` of shape ``(B,)`` (``xp``: jax.numpy, the default, or
        numpy)."""
        jnp_ = jnp if xp is None else xp
        return self._eval(mu, s, jnp_)

    def _eval(self, mu, s, jnp):
        coef = jnp.asarray(self.coef)
        P_s, d_s, P_mu, d_mu = self.coef.shape
        S = self.s_max
        lg = jnp.log2(jnp.clip(s, _S0, S) / _S0)                              # >= 0
        k = jnp.clip(jnp.floor(lg).astype(jnp.int32) + 1, 1, P_s - 2)
        first, inf = s <= _S0, s > S
        y = jnp.where(first, 2.0 * (jnp.minimum(s, _S0) / _S0) ** 2 - 1.0,
                      jnp.where(inf, 2.0 * S / jnp.maximum(s, S) - 1.0, 2.0 * (lg - (k - 1)) - 1.0))
        ps = jnp.where(first, 0, jnp.where(inf, P_s - 1, k))
        Ts = _chebT(jnp.clip(y, -1.0, 1.0), d_s, jnp)                               # (B, d_s)
        u = (mu + self.L) / self.W
        pm = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, P_mu - 1)
        ym = jnp.clip(2.0 * (u - pm) - 1.0, -1.0, 1.0)
        if jnp is np:   # eagerly: the active s-panels gathered, a single-threaded contraction (a BLAS call's threads
            # cost more than these small products on a loaded machine), and the mu-panels by fancy indexing
            cmu = np.einsum("bs,bsm->bm", Ts, coef.reshape(P_s, d_s, P_mu * d_mu)[ps]).reshape(-1, P_mu, d_mu)
            c = cmu[np.arange(cmu.shape[0])[:, None], pm]                                # (B, n, d_mu)
        else:
            # the active s-panel's weights in a row of P_s * d_s (zeros elsewhere): one matrix product, no gathered copy
            onehot = (ps[:, None] == jnp.arange(P_s)[None, :]).astype(Ts.dtype)       # (B, P_s)
            wts = (onehot[:, :, None] * Ts[:, None, :]).reshape(-1, P_s * d_s)
            cmu = (wts @ coef.reshape(P_s * d_s, P_mu * d_mu)).reshape(-1, P_mu, d_mu)  # (B, P_mu, d_mu)
            c = jnp.take_along_axis(cmu[:, :, None, :], pm[:, None, :, None], axis=1)[:, 0]   # (B, n, d_mu)
        table = _clenshaw(c, ym, jnp)
        return jnp.where(inf[:, None], table / jnp.maximum(s, S)[:, None], table)


def _chebT(y, d, jnp=jnp):
    """``(..., d)``: $T_0..T_{d-1}$ at ``y``."""
    T = [jnp.ones_like(y), y]
    for _ in range(2, d):
        T.append(2.0 * y * T[-1] - T[-2])
    return jnp.stack(T[:d], axis=-1)


def _clenshaw(c, y, jnp=jnp):
    r"""$\sum_j c_j T_j(y)$ for ``c`` ``(..., d)`` and ``y`` ``(...)``."""
    d = c.shape[-1]
    b1 = jnp.zeros_like(y)
    b2 = jnp.zeros_like(y)
    for j in range(d - 1, 0, -1):
        b1, b2 = 2.0 * y * b1 - b2 + c[..., j], b1
    return y * b1 - b2 + c[..., 0]


def _G_exact(R, mu, s, L):
    r"""$G(\mu,s)$ at the points ``mu`` (1-D numpy) for one ``s``, exact to rounding: the trapezoid rule in
    $z$ (step $\le 0.1/s$, $|z|\le 9$) for $s<1$, in $x$ ($|x|\le L+2$, step 0.2) for $s\ge1$ (both
    integrands are analytic in a strip of half-width at least $\pi/2$ in $x$)."""
    if s == 0.0:
        return R(mu)
    if s < 1.0:
        hz = min(0.25, 0.1 / s)
        z = np.arange(-9.0, 9.0 + 1e-12, hz)
        w = hz * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return R(mu[:, None] + s * z[None, :]) @ w
    x = np.arange(-L - 2.0, L + 2.0 + 1e-12, 0.2)
    K = np.exp(-0.5 * ((x[None, :] - mu[:, None]) / s) ** 2) * (0.2 / (s * math.sqrt(2.0 * math.pi)))
    return K @ R(x)


def _G_wide(R, mu, s, L):
    r"""``(len(s), len(mu))``: :func:`_G_exact` at every ``s`` $\ge1$ (the trapezoid rule in $x$; the differences
    $x-\mu$ and $R(x)$ once, the Gaussian weights of each $s$ in place)."""
    x = np.arange(-L - 2.0, L + 2.0 + 1e-12, 0.2)
    Rx = R(x)
    d = x[None, :] - mu[:, None]
    K = np.empty_like(d)
    out = np.empty((len(s), len(mu)))
    for j, sj in enumerate(s):
        np.divide(d, sj, out=K)
        np.multiply(K, K, out=K)
        np.multiply(K, -0.5, out=K)
        np.exp(K, out=K)
        np.multiply(K, 0.2 / (sj * math.sqrt(2.0 * math.pi)), out=K)
        out[j] = K @ Rx
    return out


def _G_fourier(R, mu, s, L, s_max, parity=0):
    r"""$G(\mu_i,s_j)$ for all ``mu`` (1-D) and ``s`` (1-D) at once: $\hat G=\hat R\,e^{-s^2\omega^2/2}$ with $\hat R$ the
    FFT of $R$ sampled with step 0.1 on a period $P=2L+12s_{\max}+8$ (the periodic images of $R$, smoothed by
    $s\le s_{\max}$, are below $\varphi(12)$ on $|\mu|\le L$; aliasing in $\omega$ is below $e^{-\pi\cdot 31}$), and
    the frequencies where $|\hat R|$ exceeds $10^{-19}\max|\hat R|$: two real matrix products, or one when $R$ has a
    ``parity`` ($+1$ even: $\hat R$ real, the sine part only rounding; $-1$ odd: $\hat R$ imaginary)."""
    dx = 0.1
    n = 2 * int(math.ceil((L + 6.0 * s_max + 4.0) / dx))
    x = (np.arange(n) - n // 2) * dx
    Rhat = np.fft.fft(np.fft.ifftshift(R(x))) * dx
    w = 2.0 * np.pi * np.fft.fftfreq(n, dx)
    keep = np.abs(Rhat) > 1e-19 * np.max(np.abs(Rhat))
    keep = np.abs(w) <= np.max(np.abs(w[keep])) + 1e-12
    # R real: the terms at +-w (0 < |w| below the Nyquist frequency, which fftfreq lists once, negative) are complex
    # conjugates, their sum twice the real part of the +w term: half the transcendental evaluations and products
    nyq = np.arange(n) == n // 2
    keep &= (w >= 0) | nyq
    Rhat = np.where(w > 0, 2.0, 1.0) * Rhat
    w, Rhat = w[keep], Rhat[keep]
    damp = np.exp(-0.5 * np.outer(w * w, s * s))                         # (K, S)
    if parity:
        # R even (odd): Rhat real (imaginary), one cosine (sine) sum over |w| (increasing; the Nyquist frequency,
        # listed last and negative, by the parity of cos / sin), each s summed only over the frequencies where
        # e^{-s^2 w^2 / 2} is not negligible (the kept band reaches the Nyquist frequency: the FFT's noise floor)
        sign = np.where(w < 0, float(parity), 1.0)
        coef = (sign * (Rhat.real if parity > 0 else -Rhat.imag))[:, None] * damp
        rows = (np.cos if parity > 0 else np.sin)(np.outer(np.abs(w), mu))            # (K, M)
        out = np.empty((len(s), len(mu)))
        for cols, m in _column_groups(_leading(coef)):
            out[cols] = coef[:m, cols].T @ rows[:m]
        return out / (n * dx)                                            # (S, M)
    ph = np.outer(mu, w)                                                 # (M, K)
    out = np.cos(ph) @ (Rhat.real[:, None] * damp) - np.sin(ph) @ (Rhat.imag[:, None] * damp)
    return (out / (n * dx)).T                                            # (S, M)


def _s_of(panel, y):
    """The s of local coordinate ``y`` in [-1, 1] of s-panel ``panel``."""
    if panel == 0:
        return _S0 * np.sqrt((y + 1.0) / 2.0)
    return _S0 * 2.0 ** ((panel - 1) + (y + 1.0) / 2.0)


def table_build(build):
    r"""``build(asymptote, derivative)``, a table of an asymptote's remainder, made once per process and on one BLAS
    thread (its products run in blocks: BLAS threads only add overhead, much more on a busy machine).  The tables of
    $\phi$ and $\phi'$ are built together, on two threads (:func:`_both`): every caller of the large-$q$ rule needs both,
    and numpy releases the GIL in their products and transcendentals."""
    both = functools.lru_cache(maxsize=8)(functools.partial(_both, build))

    @functools.wraps(build)
    def table(asymptote: Asymptote, derivative: bool):
        return both(asymptote)[1 if derivative else 0]
    table.cache_clear = both.cache_clear
    return table


def _both(build, asymptote):
    """``(build(asymptote, False), build(asymptote, True))``, the second on a worker thread, both inside one BLAS-thread
    limit entered here (threadpoolctl's limit is process-wide: entered and left by two threads at once it could be
    left changed).  Measured (softplus, CPU time unchanged): the low tables 0.7 -> ~0.4 s, near ~0.4 -> ~0.25 s wall on
    an idle 2-core machine."""
    with one_blas_thread(), ThreadPoolExecutor(max_workers=1) as pool:
        derivative = pool.submit(build, asymptote, True)
        return build(asymptote, False), derivative.result()


@table_build
def remainder_table(asymptote: Asymptote, derivative: bool) -> RemainderTable:
    """The :class:`RemainderTable` of the remainder $R$ (``derivative``: of $R'$) of ``asymptote``, built once
    per process (0.1-0.2 s, numpy only: also when first needed inside a trace).  $R$ is evaluated by
    :func:`~kernelcalc.theory.largeq_far.stable_remainder`, and its parity halves the Fourier sums."""
    name, lam = asymptote.name, asymptote.scale
    R = lambda x: stable_remainder(name, lam, derivative, x)              # noqa: E731
    parity = remainder_parity(asymptote.name, derivative)
    L = float(asymptote.L)
    P_mu = int(math.ceil(2 * L / _W))
    Lh = 0.5 * P_mu * _W
    xs_mu, xs_s = _cheb_nodes(_N_MU), _cheb_nodes(_N_S)
    mu = (-Lh + _W * (np.arange(P_mu)[:, None] + 0.5 * (xs_mu[None, :] + 1.0))).ravel()   # (P_mu * N_MU,)
    s_max = float(_s_of(_S_PANELS - 2, 1.0))
    s_fit = np.array([[_s_of(p, y) for y in xs_s] for p in range(_S_PANELS - 1)]).ravel()
    vals = np.empty((_S_PANELS, _N_S, P_mu, _N_MU))
    vals[:-1] = _G_fourier(R, mu, s_fit, L, s_max, parity).reshape(_S_PANELS - 1, _N_S, P_mu, _N_MU)
    s_last = s_max * 2.0 / (xs_s + 1.0)           # the last panel: s G(mu, s) at s = S / w, w = (y + 1) / 2
    vals[-1] = (s_last[:, None] * _G_wide(R, mu, s_last, L)).reshape(_N_S, P_mu, _N_MU)
    coef = _cheb_coef(_cheb_coef(vals, 1), 3)
    scale = float(np.max(np.abs(R(np.linspace(-L, L, 4001)))))
    a = np.abs(coef)
    d_s = int(np.max(np.nonzero(np.max(a, axis=(0, 2, 3)) > _CUT * scale)[0], initial=0)) + 1
    d_mu = int(np.max(np.nonzero(np.max(a, axis=(0, 1, 2)) > _CUT * scale)[0], initial=0)) + 1
    coef = np.ascontiguousarray(coef[:, :d_s, :, :d_mu])
    table = RemainderTable(coef, Lh, _W, s_max, 0.0)
    # held-out check: midpoints between the fitting nodes, in both variables, and s beyond s_max
    y_mid = np.cos(np.pi * np.arange(1, _N_S) / _N_S)[::8]
    s_chk = np.concatenate([[0.0, 1e-3], *[_s_of(p, y_mid) for p in range(_S_PANELS - 1)], s_max * np.array([1.01, 1.5, 3, 10, 100, 1e4])])
    m_mid = np.cos(np.pi * np.arange(1, _N_MU) / _N_MU)[::2]
    mu_chk = (-Lh + _W * (np.arange(P_mu)[:, None] + 0.5 * (m_mid[None, :] + 1.0))).ravel()
    mu_chk = mu_chk[np.abs(mu_chk) <= L]
    ref = np.stack([_G_exact(R, mu_chk, float(s), L) for s in s_chk])
    got = table(np.broadcast_to(mu_chk, ref.shape), s_chk, xp=np)
    err = float(np.max(np.abs(got - ref))) / scale
    return dataclasses.replace(table, error=err)


def _trig_rows(parity, n_w, dw, kappa, x, J=20):
    r"""``(n_w * len(kappa), len(x))``: $\cos(j\,\delta\omega\,\kappa x)$ (``parity`` > 0) or $\sin$, rows $\omega$-major
    ($j<n_w$, $\delta\omega$ = ``dw``), by the addition theorem from the exact values at $j=Ja$ and $j=b<J$ (a fifth of
    the transcendental evaluations; each entry to a few ulp)."""
    th = dw * np.outer(kappa, x)                                             # (K, X)
    b = np.arange(J)[:, None, None] * th
    a = (J * np.arange(-(-n_w // J)))[:, None, None] * th
    cb, sb, ca, sa = np.cos(b), np.sin(b), np.cos(a), np.sin(a)
    out = np.empty((n_w,) + th.shape)                                        # rows j = J a + b, written a at a time
    tmp = np.empty_like(cb)                                                  # (J, K, X): stays in cache
    for i in range(a.shape[0]):
        rows = out[J * i:J * (i + 1)]
        m = rows.shape[0]
        if parity > 0:         # cos(A + B) = cos A cos B - sin A sin B
            np.multiply(ca[i], cb[:m], out=rows)
            np.subtract(rows, np.multiply(sa[i], sb[:m], out=tmp[:m]), out=rows)
        else:                  # sin(A + B) = sin A cos B + cos A sin B
            np.multiply(sa[i], cb[:m], out=rows)
            np.add(rows, np.multiply(ca[i], sb[:m], out=tmp[:m]), out=rows)
    return out.reshape(-1, th.shape[1])


_KAPPA_CHUNK = 8              # kappa values per block of trig rows (:func:`_trig_rows`): a few MB, in cache
_NEGLIGIBLE = 1e-20           # terms below this of the largest are left out of the band tables' sums (zeros in effect)


def _leading(a, cut=_NEGLIGIBLE, scale="column"):
    """Per column of ``a``: the number of leading rows that hold every entry above ``cut`` of the column's largest
    (``scale="all"``: of the largest entry of ``a``; a column with none gets 0)."""
    big = np.abs(a) > cut * (np.max(np.abs(a), axis=0) if scale == "column" else np.max(np.abs(a)))
    return np.where(big.any(axis=0), a.shape[0] - np.argmax(big[::-1], axis=0), 0)


def _column_groups(n, size=16):
    """The columns in groups of about ``size`` by increasing ``n`` (their leading rows, :func:`_leading`), each with
    the largest ``n`` of its group: the band tables' sums as one product per group, each as long as it needs."""
    order = np.argsort(n, kind="stable")
    return [(order[i:i + size], int(np.max(n[order[i:i + size]]))) for i in range(0, n.size, size)]


@dataclasses.dataclass(frozen=True, eq=False)
class BandTables:
    """The near-parallel band's tables of one remainder, as the near tables
    (:class:`kernelcalc.theory.largeq_near.NearTable`) and the low tables
    (:class:`kernelcalc.theory.largeq_low.LowTable`) hold them: the remainder-remainder table ``rr``, the cross tables
    ``cross``, the parity of $R$, per cross function its growth order and parity, and the held-out ``error``."""

    rr: np.ndarray
    cross: np.ndarray
    parity: int
    growth: tuple
    gparity: tuple
    error: float

    @property
    def flops(self) -> int:
        """Multiply-adds of one covariance's table contractions (the remainder-remainder block and both cross terms)."""
        return int(np.prod(self.rr.shape[1:]) + 2 * np.prod(self.cross.shape[1:]))
