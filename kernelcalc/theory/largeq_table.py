r"""Large-$q$ duals at a cost independent of $q$ *and* of the remainder's resolution: the inner Gaussian average
of the localised remainder is tabulated once per activation.

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

**Far from parallel** ($\min(q_1,q_2)(1-r^2)\ge V_0$, :func:`~kernelcalc.theory.largeq_far.far_mask`) the rule
(``far=True``, the default) uses the moment series of :mod:`kernelcalc.theory.largeq_far` instead: no quadrature,
about 2-6 us per $(C,\dot C)$ against 150-250 us (``benchmarks/bench_largeq_table.py``, 2048 covariances).  The
near-parallel rest is moved to the front by a stable sort and integrated as above in chunks of ``_CHUNK``
covariances, in a loop whose trip count is their number (:func:`_patched`; fixed shapes under jit, and chunks small
enough to stay in cache, which alone makes the quadrature 2-6x cheaper per covariance than one large block).
:func:`choose_tabulated` adds the series' measured difference from the quadrature (:func:`far_difference`) to the
error estimate.

**In the near-parallel band at large variances** ($\min(q_1,q_2)\ge Q_{\rm near}=100$, ``near=True``, ``gelu`` family)
the tables of :mod:`kernelcalc.theory.largeq_near` replace the quadrature (about 9x cheaper per $(C,\dot C)$, same
benchmark); their held-out errors enter :attr:`TabulatedRule.table_error` and :func:`far_difference`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from .._validation import accuracy_shortfall
from .activations import Activation
from .largeq import Asymptote, asymptote_of, first_settled, level_values
from .largeq_far import N_TERMS, V0, far_expect, far_mask, moment_table
from .largeq_near import Q_NEAR, near_expect, near_mask, near_table
from .largeq_low import Q_LOW, low_expect, low_mask, low_mixed, low_table

__all__ = ["RemainderTable", "remainder_table", "TabulatedRule", "choose_tabulated", "cheapest_tabulated_rule",
           "far_difference"]

_S0 = 0.125        # first s-panel [0, S0] (variable s^2)
_S_PANELS = 10     # s-panels: [0, S0], [S0 2^(k-1), S0 2^k] for k = 1..8 (up to S = 32), and [S, inf) in S/s
_N_S = 32          # Chebyshev nodes per s-panel (fit); the degree kept is measured
_N_MU = 44         # Chebyshev nodes per mu-panel (fit)
_W = 4.0           # mu-panel width
_CUT = 5e-15       # coefficients below CUT * max|R| are dropped


def _cheb_nodes(n):
    return np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _cheb_coef(values, axis):
    """Chebyshev coefficients of values at the first-kind nodes (:func:`_cheb_nodes`) along ``axis``."""
    v = np.moveaxis(values, axis, 0)
    n = v.shape[0]
    k = np.arange(n)
    T = np.cos(np.pi * np.outer(k, np.arange(n) + 0.5) / n)        # T_k(x_j)
    c = np.tensordot(T, v, axes=(1, 0)) * (2.0 / n)
    c[0] *= 0.5
    return np.moveaxis(c, 0, axis)


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
        # the active s-panel's weights in a row of P_s * d_s (zeros elsewhere): one matrix product, no gathered copy
        onehot = (ps[:, None] == jnp.arange(P_s)[None, :]).astype(Ts.dtype)       # (B, P_s)
        wts = (onehot[:, :, None] * Ts[:, None, :]).reshape(-1, P_s * d_s)
        cmu = (wts @ coef.reshape(P_s * d_s, P_mu * d_mu)).reshape(-1, P_mu, d_mu)  # (B, P_mu, d_mu)
        u = (mu + self.L) / self.W
        pm = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, P_mu - 1)
        ym = jnp.clip(2.0 * (u - pm) - 1.0, -1.0, 1.0)
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


def _G_fourier(R, mu, s, L, s_max):
    r"""$G(\mu_i,s_j)$ for all ``mu`` (1-D) and ``s`` (1-D) at once: $\hat G=\hat R\,e^{-s^2\omega^2/2}$ with $\hat R$ the
    FFT of $R$ sampled with step 0.1 on a period $P=2L+12s_{\max}+8$ (the periodic images of $R$, smoothed by
    $s\le s_{\max}$, are below $\varphi(12)$ on $|\mu|\le L$; aliasing in $\omega$ is below $e^{-\pi\cdot 31}$), and
    the frequencies where $|\hat R|$ exceeds $10^{-19}\max|\hat R|$: two real matrix products."""
    dx = 0.1
    n = 2 * int(math.ceil((L + 6.0 * s_max + 4.0) / dx))
    x = (np.arange(n) - n // 2) * dx
    Rhat = np.fft.fft(np.fft.ifftshift(R(x))) * dx
    w = 2.0 * np.pi * np.fft.fftfreq(n, dx)
    keep = np.abs(Rhat) > 1e-19 * np.max(np.abs(Rhat))
    keep = np.abs(w) <= np.max(np.abs(w[keep])) + 1e-12
    w, Rhat = w[keep], Rhat[keep]
    damp = np.exp(-0.5 * np.outer(w * w, s * s))                         # (K, S)
    ph = np.outer(mu, w)                                                 # (M, K)
    out = np.cos(ph) @ (Rhat.real[:, None] * damp) - np.sin(ph) @ (Rhat.imag[:, None] * damp)
    return (out / (n * dx)).T                                            # (S, M)


def _s_of(panel, y):
    """The s of local coordinate ``y`` in [-1, 1] of s-panel ``panel``."""
    if panel == 0:
        return _S0 * np.sqrt((y + 1.0) / 2.0)
    return _S0 * 2.0 ** ((panel - 1) + (y + 1.0) / 2.0)


@functools.lru_cache(maxsize=16)
def remainder_table(asymptote: Asymptote, derivative: bool) -> RemainderTable:
    """The :class:`RemainderTable` of the remainder $R$ (``derivative``: of $R'$) of ``asymptote``, built once
    per process (about a second; also when first needed inside a trace)."""
    with jax.enable_x64(True), jax.ensure_compile_time_eval():
        fn = jax.jit(lambda x: asymptote.remainder(x, derivative))
        chunk = 1 << 15

        def R(x):      # one compiled shape: the points in fixed-size chunks
            x = np.asarray(x, np.float64)
            flat = x.ravel()
            pad = np.concatenate([flat, np.zeros((-flat.size) % chunk)])
            out = np.concatenate([np.asarray(fn(jnp.asarray(pad[i:i + chunk]))) for i in range(0, pad.size, chunk)])
            return out[: flat.size].reshape(x.shape)

        L = float(asymptote.L)
        P_mu = int(math.ceil(2 * L / _W))
        Lh = 0.5 * P_mu * _W
        xs_mu, xs_s = _cheb_nodes(_N_MU), _cheb_nodes(_N_S)
        mu = (-Lh + _W * (np.arange(P_mu)[:, None] + 0.5 * (xs_mu[None, :] + 1.0))).ravel()   # (P_mu * N_MU,)
        s_max = float(_s_of(_S_PANELS - 2, 1.0))
        s_fit = np.array([[_s_of(p, y) for y in xs_s] for p in range(_S_PANELS - 1)]).ravel()
        vals = np.empty((_S_PANELS, _N_S, P_mu, _N_MU))
        vals[:-1] = _G_fourier(R, mu, s_fit, L, s_max).reshape(_S_PANELS - 1, _N_S, P_mu, _N_MU)
        for j, y in enumerate(xs_s):                   # the last panel: s G(mu, s) at s = S / w, w = (y + 1) / 2
            sj = s_max * 2.0 / (y + 1.0)
            vals[-1, j] = sj * _G_exact(R, mu, sj, L).reshape(P_mu, _N_MU)
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


@dataclasses.dataclass(frozen=True)
class TabulatedRule:
    r"""$E[f(a)f(b)]$, $f\in\{\phi,\phi'\}$, by asymptote + localised remainder with the inner average
    tabulated (module doc).  ``h``: the trapezoid step of the outer sums over $|x|\le L$.  ``far``: where
    $\min(q_1,q_2)(1-r^2)\ge V_0$ (:func:`~kernelcalc.theory.largeq_far.far_mask`) use the moment series of
    :mod:`kernelcalc.theory.largeq_far` instead (no quadrature; 30-150x cheaper per covariance), and run the
    quadrature only on the near-parallel rest, in chunks (:func:`_patched`).  ``near``: where moreover
    $\min(q_1,q_2)\ge Q_{\rm near}$ (:func:`~kernelcalc.theory.largeq_near.near_mask`), use the near-band tables of
    :mod:`kernelcalc.theory.largeq_near` (``gelu`` family only; no quadrature, ~9x cheaper per covariance), and where
    only the larger variance is $\ge Q_{\rm near}$ the tables plus a trapezoid sum for the one cross term left."""

    asymptote: Asymptote
    h: float = 0.3
    far: bool = True
    near: bool = True
    low: bool = True

    @property
    def near_on(self) -> bool:
        """Whether the near-band tables are used (``near`` and an asymptote of the ``gelu`` family)."""
        return self.near and self.asymptote.family == "gelu"

    @property
    def low_on(self) -> bool:
        r"""Whether the low-variance tables of :mod:`~kernelcalc.theory.largeq_low` are used (``low`` and
        :attr:`near_on`): for $Q_{\rm low}\le\min(q_1,q_2)<Q_{\rm near}$ in the near-parallel band."""
        return self.low and self.near_on

    @property
    def n_out(self) -> int:
        return 2 * int(self.asymptote.L / self.h) + 1

    @property
    def points(self) -> int:
        r"""Cost of one $(C, \dot C)$ in the unit of the window rule's
        :attr:`~kernelcalc.theory.largeq.AsymptoticRule.points` (one remainder evaluation with its Gaussian
        weight), calibrated by timing both rules side by side (tanh, softplus, 2048 covariances, jit): one outer
        node of the three sums (both $f$) costs about 8 such points, and the $s$-contraction of both tables
        about one point per 125 multiply-adds (a dense matrix product).  Measured: tanh at $h=0.22$ 2110 point
        equivalents (window rule 19159), softplus at $h=0.4$ 1840-5090 (window rule 74793)."""
        tab = remainder_table(self.asymptote, False)
        return int(math.ceil(2 * tab.flops / 125.0 + 8 * self.n_out))

    @property
    def memory_points(self) -> int:
        """Float64 work values per covariance (for the memory-bounded blocks)."""
        tab = remainder_table(self.asymptote, False)
        return tab.coef.shape[0] * tab.coef.shape[1] + tab.coef.shape[2] * tab.coef.shape[3] + self.n_out * (tab.coef.shape[3] + 8)

    @property
    def table_error(self) -> float:
        """The largest measured (held-out) error of the tables: the two remainder tables (relative to max |R|) and,
        with ``far``, the two moment tables of :mod:`kernelcalc.theory.largeq_far` (relative to their largest
        term)."""
        err = max(remainder_table(self.asymptote, d).error for d in (False, True))
        if self.far:
            err = max(err, *(moment_table(self.asymptote, d).error for d in (False, True)))
        if self.near_on:     # relative to the kernel's norm, held-out and density tail (largeq_near)
            err = max(err, *(near_table(self.asymptote, d).error for d in (False, True)))
        if self.low_on:      # relative to the kernel's norm, held-out (largeq_low)
            err = max(err, *(low_table(self.asymptote, d).error for d in (False, True)))
        return err

    @property
    def far_points(self) -> int:
        r"""Cost of one $(C,\dot C)$ in the far regime (:func:`~kernelcalc.theory.largeq_far.far_mask`), in the unit
        of :attr:`points`: measured side by side (``benchmarks/bench_largeq_table.py``, 2048 covariances) at
        2-6 us against 150-250 us for the quadrature, i.e. about 1/40 of :attr:`points`.  :attr:`points` stays the
        worst case (every covariance near-parallel)."""
        return int(math.ceil(self.points / 40.0))

    @property
    def near_points(self) -> tuple:
        r"""``(both, one)``: cost of one $(C,\dot C)$ in the unit of :attr:`points` by the near tables where both
        variances are $\ge Q_{\rm near}$, and where one is (tables plus one trapezoid cross term), measured side by side
        (2048 near-parallel covariances, CPU time; ``benchmarks/bench_largeq_table.py``): about 1/8 and 1/3.5 of the
        quadrature's."""
        return int(math.ceil(self.points / 8.0)), int(math.ceil(self.points / 3.5))

    def describe(self) -> str:
        tab = remainder_table(self.asymptote, False)
        return (f"large-q asymptote ({self.asymptote.family}) + localised remainder with a tabulated inner average "
                f"({tab.coef.shape[0]}x{tab.coef.shape[1]} s by {tab.coef.shape[2]}x{tab.coef.shape[3]} mu "
                f"Chebyshev coefficients), step {self.h:g} on |x| <= {self.asymptote.L:g}"
                + (f"; moment series of {N_TERMS} terms where min(q1, q2)(1 - r^2) >= {V0:g}" if self.far else "")
                + (f"; near-band tables where min(q1, q2) >= {Q_NEAR:g} and below" if self.near_on else ""))

    def _one(self, q1, q2, c, derivative, cross_only=False):
        asy = self.asymptote
        tab = remainder_table(asy, derivative)
        L = asy.L
        k = int(L / self.h)
        x0 = jnp.arange(-k, k + 1, dtype=jnp.float64) / k                    # (n,) on [-1, 1]
        n = jnp.sqrt(q1 * q2)
        r = jnp.where(n > 0, jnp.clip(c / jnp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
        one_m_r2 = jnp.maximum((1.0 - r) * (1.0 + r), 0.0)

        def nodes(qa):
            """Trapezoid nodes and step over the localised variable a ~ N(0, qa): |a| <= L, or |a| <= 9 sqrt(qa)
            when that is narrower (a small variance: the Gaussian, not R, localises a)."""
            half = jnp.minimum(L, 9.0 * jnp.sqrt(qa))[:, None]
            a = half * x0[None, :]
            w = (half / k) * jnp.exp(-0.5 * a * a / qa[:, None]) / jnp.sqrt(2 * math.pi * qa[:, None])
            return a, w * asy.remainder(a, derivative)

        def cross(qa, qb, a, wR):
            """E[R(a) A(b)], a ~ N(0, qa) localised (nodes a, weights wR), b | a ~ N(kappa a, qb (1 - r^2))."""
            mA = asy.conditional((c / qa)[:, None] * a, (qb * one_m_r2)[:, None], derivative)
            return jnp.sum(wR * mA, axis=-1)

        a1, w1 = nodes(q1)
        if cross_only:          # E[R(a) A(b)] alone, a ~ N(0, q1) localised
            return cross(q1, q2, a1, w1)
        a2, w2 = nodes(q2)
        big1 = q1 >= q2                                   # integrate over the larger variance: |kappa| <= 1
        qa, qb = jnp.where(big1, q1, q2), jnp.where(big1, q2, q1)
        a, wR = jnp.where(big1[:, None], a1, a2), jnp.where(big1[:, None], w1, w2)
        G = tab((c / qa)[:, None] * a, jnp.sqrt(qb * one_m_r2))
        rr = jnp.sum(wR * G, axis=-1)
        return asy.AA(q1, q2, c, derivative) + cross(q1, q2, a1, w1) + cross(q2, q1, a2, w2) + rr

    def _mixed(self, asy, q1, q2, c, ds):
        """The near tables where one variance is below Q_NEAR, plus this rule's trapezoid sum for the cross term over
        that variable (the localised one of smaller variance: E[R(b) A(a)], b | a closed)."""
        out = near_expect(asy, q1, q2, c, ds, small=False)
        big1 = q1 >= q2
        qa, qb = jnp.where(big1, q1, q2), jnp.where(big1, q2, q1)
        return tuple(o + self._one(qb, qa, c, d, cross_only=True) for o, d in zip(out, ds))

    @float64
    def expect(self, q1, q2, c, derivative: bool = True, blocked=None):
        r"""$(C, \dot C)$ (or $C$ alone) for arrays of covariances (broadcast); ``blocked`` as in
        :meth:`kernelcalc.theory.largeq.AsymptoticRule.expect`."""
        remainder_table(self.asymptote, False)
        if derivative:
            remainder_table(self.asymptote, True)

        block = _block(self, derivative)
        if blocked is not None:
            return blocked(block, q1, q2, c, points=self.memory_points)
        q1, q2, c = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float64) for v in (q1, q2, c)))
        shape = q1.shape
        return tuple(o.reshape(shape) for o in block(q1.reshape(-1), q2.reshape(-1), c.reshape(-1)))


@functools.lru_cache(maxsize=64)
def _block(rule: TabulatedRule, derivative: bool):
    """``(q1, q2, c) -> (C,)`` or ``(C, Cdot)`` on flat arrays, compiled once per rule (the unrolled series would
    otherwise compile op by op in eager mode; inside a caller's jit it is inlined).  With ``rule.far`` / ``rule.near``:
    the moment series where :func:`far_mask` holds, the near tables where :func:`near_mask` holds, the quadrature for
    the rest, each only on its own covariances (:func:`_patched`)."""
    ds = (False, True) if derivative else (False,)

    def quad(q1, q2, c):
        return tuple(rule._one(q1, q2, c, d) for d in ds)

    if not (rule.far or rule.near_on):
        return jax.jit(quad)

    def block(q1, q2, c):     # each covariance pays for its own regime only (chunks of its entries, _patched)
        rest = jnp.ones(q1.shape, bool)
        out = tuple(jnp.zeros_like(q1) for _ in ds)
        for on, mask, fn in ((rule.far, far_mask, far_expect), (rule.near_on, near_mask, near_expect),
                             (rule.low_on, functools.partial(low_mask, mixed=True), low_mixed),
                             (rule.near_on, functools.partial(near_mask, mixed=True), rule._mixed),
                             (rule.low_on, low_mask, low_expect)):
            if on:
                here = mask(q1, q2, c) & rest
                out = _patched(out, here, lambda a, b, cc, fn=fn: fn(rule.asymptote, a, b, cc, ds), q1, q2, c, _TABLE_CHUNK)
                rest = rest & ~here
        return _patched(out, rest, quad, q1, q2, c)
    return jax.jit(block)


_CHUNK = 64     # covariances per quadrature chunk of the near-parallel band
_TABLE_CHUNK = 256   # covariances per chunk of the series and tables (a few us each)


def _patched(out, near, quad, q1, q2, c, chunk=_CHUNK):
    r"""``out`` with the entries where ``near`` holds replaced by ``quad`` at those covariances: the near entries are
    moved to the front (a stable sort) and computed ``_CHUNK`` at a time in a loop whose trip count is their number
    (fixed shapes under jit; the quadrature's cost is paid only for the near entries)."""
    B = q1.shape[0]
    K = min(chunk, B)
    perm = jnp.argsort(~near, stable=True)
    order = jnp.concatenate([perm, jnp.full((K,), B, dtype=perm.dtype)])
    n_chunks = (jnp.sum(near.astype(perm.dtype)) + K - 1) // K

    def body(i, outs):
        idx = jax.lax.dynamic_slice(order, (i * K,), (K,))
        take = jnp.logical_and(idx < B, near.at[idx].get(mode="fill", fill_value=False))
        vals = quad(q1.at[idx].get(mode="fill", fill_value=1.0), q2.at[idx].get(mode="fill", fill_value=1.0),
                    c.at[idx].get(mode="fill", fill_value=0.0))
        dest = jnp.where(take, idx, B)
        return tuple(o.at[dest].set(v, mode="drop") for o, v in zip(outs, vals))
    return jax.lax.fori_loop(0, n_chunks, body, tuple(out))


_H_LEVELS = (0.4, 0.3, 0.22, 0.16)


def _far_edge(q1, q2, c):
    r"""The covariances ``(q1, q2, c)`` plus the edge of the far regime, $\min(q_1,q_2)(1-r^2)=V_0$, where the moment
    series converge slowest: equal variances and ratio 10, $\pm r$, for each distinct $q_1\ge V_0$ given."""
    q1, q2, c = (np.asarray(v, np.float64).ravel() for v in (q1, q2, c))
    qe = np.unique(q1[q1 >= V0])
    re = np.sqrt(np.maximum(1.0 - V0 / qe, 0.0))
    e1, e2 = np.tile(qe, 4), np.concatenate([qe, qe, 10.0 * qe, 10.0 * qe])
    er = np.concatenate([re, -re, re, -re])
    return np.concatenate([q1, e1]), np.concatenate([q2, e2]), np.concatenate([c, er * np.sqrt(e1 * e2)])


def far_difference(rule: TabulatedRule, q1, q2, c, blocked=None, quadrature=None) -> float:
    r"""The largest difference, relative to $\sqrt{E f(a)^2E f(b)^2}$, between ``rule`` (moment series where far, near
    tables where they apply) and its quadrature alone (the same rule with ``far=False, near=False``) for $C$ and $\dot C$
    at the covariances ``(q1, q2, c)`` (include the edge of the far regime: :func:`_far_edge`); 0 when both are off.
    ``quadrature``: the :func:`~kernelcalc.theory.largeq.level_values` of that quadrature-only rule, when known."""
    if not (rule.far or rule.near_on):
        return 0.0
    fast, _ = level_values(rule, q1, q2, c, blocked)
    slow, norms = quadrature or level_values(dataclasses.replace(rule, far=False, near=False), q1, q2, c, blocked)
    return max(float(np.max(np.abs(a - b) / np.maximum(n, 1e-300))) for a, b, n in zip(fast, slow, norms))


def cheapest_tabulated_rule(activation: Activation) -> TabulatedRule | None:
    """The coarsest level :func:`choose_tabulated` can return, or ``None`` without an asymptote."""
    asy = asymptote_of(activation)
    return None if asy is None else TabulatedRule(asy, _H_LEVELS[0])


@float64
def choose_tabulated(activation: Activation, q_max: float, tol: float, strict: bool = False,
                     q_min: float = 0.25, blocked=None):
    r"""The coarsest :class:`TabulatedRule` of the steps ``_H_LEVELS`` that agrees with the next finer one to
    ``tol`` (relative to $\sqrt{E f(a)^2 E f(b)^2}$) for $C$ and $\dot C$ at variances from ``q_min`` to
    ``q_max`` (log-spaced) at equal variances and ratio 2 for correlations $r\in\{-0.9,0,0.9,0.9999,1\}$, and
    ratio 100 for $r\in\{-0.9,0,0.9\}$.  (The cross terms' conditional $m_A(\kappa a,s)$ bends on the scale
    $\sqrt{q_a}\sqrt{\lambda^2/q_b+1-r^2}/|r|$ in the smaller-variance variable $a$; it is resolved by the
    step $h$ down to about $h$: very unequal variances at $|r|\to1$ with $q_a\sim1$ are not covered.  In the
    Neural-ODE recursions variances far apart in time are far from parallel.)  Returns ``(rule, error estimate)``: the estimate is the larger of that
    difference and the tables' measured error (:attr:`TabulatedRule.table_error`, relative to $\max|R|$,
    itself bounded by the kernel's scale) and the moment series' measured difference from the quadrature
    (:func:`far_difference`); warns (raises when ``strict``) when it exceeds ``10 * tol``."""
    asy = asymptote_of(activation)
    qs = np.geomspace(max(q_min, 1e-3), max(q_max, q_min), 5)
    r = np.array([-0.9, 0.0, 0.9, 0.9999, 1.0])
    r_far = np.array([-0.9, 0.0, 0.9])
    q1 = np.concatenate([np.repeat(qs, r.size)] * 2 + [np.repeat(qs, r_far.size)])
    q2 = np.concatenate([np.repeat(qs, r.size), np.repeat(2.0 * qs, r.size), np.repeat(100.0 * qs, r_far.size)])
    rr = np.concatenate([np.tile(r, 2 * qs.size), np.tile(r_far, qs.size)])
    q1, q2, c = _far_edge(q1, q2, rr * np.sqrt(q1 * q2))
    memo = {}

    def values(h):      # the quadrature alone: the levels differ only there
        memo[h] = level_values(TabulatedRule(asy, h, far=False, near=False), q1, q2, c, blocked)
        return memo[h]

    table_err = TabulatedRule(asy).table_error
    settled, err = first_settled(_H_LEVELS, values, tol)
    rule = TabulatedRule(asy, settled if settled is not None else _H_LEVELS[-1])
    far_err = far_difference(rule, q1, q2, c, blocked, memo.get(rule.h))
    if settled is not None:
        return rule, max(err, table_err, far_err, 1e-16)
    est = max(err, table_err, far_err)
    if est > 10.0 * tol:
        accuracy_shortfall(f"tabulated large-q rule for {activation.name}: the finest step {_H_LEVELS[-1]} still "
                           f"changes by {err:.1e} (table error {table_err:.1e}) > tol = {tol:.1e} for variances up "
                           f"to q = {q_max:.4g}", strict)
    return rule, est
