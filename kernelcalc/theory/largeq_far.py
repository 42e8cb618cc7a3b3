r"""Large-$q$ duals far from parallel: the localised terms as moment series (no quadrature per covariance).

With the decomposition $f=A+R$ of :mod:`kernelcalc.theory.largeq` and $(a,b)\sim N(0,[[q_1,c],[c,q_2]])$,
$D=q_1q_2-c^2=q_1q_2(1-r^2)$,

$$E[f(a)f(b)]=E[A(a)A(b)]+E[R(a)A(b)]+E[A(a)R(b)]+E[R(a)R(b)].$$

Write $M_k(w)=\int x^kR(x)e^{-wx^2/2}\,dx$ (the Gaussian-weighted moments of the localised remainder; a smooth
function of $w\in[0,w_{\max}]$, tabulated once per activation as a Chebyshev series in $w$ for each
$k<N$: :class:`MomentTable`).

- **Remainder times remainder.**  The bivariate density is $p(a,b)=e^{-q_2a^2/2D}e^{-q_1b^2/2D}e^{cab/D}/(2\pi\sqrt D)$;
  expanding only $e^{cab/D}$,

  $$E[R(a)R(b)]=\frac1{2\pi\sqrt D}\sum_{k\ge0}\frac{(c/D)^k}{k!}\,M_k\!\Big(\frac{q_2}D\Big)\,M_k\!\Big(\frac{q_1}D\Big).$$

- **Remainder times asymptote.**  With $b\,|\,a\sim N(\kappa a,s^2)$, $\kappa=c/q_1$, $s^2=q_2(1-r^2)$, the closed
  conditional $m_A(\mu,s)=E[A(\mu+sZ)]$ (:meth:`~kernelcalc.theory.largeq.Asymptote.conditional`) is entire in
  $\mu$; with its Taylor coefficients $m_A(\mu,s)=\sum_n t_n(s)\mu^n$ (closed forms below),

  $$E[R(a)A(b)]=\frac1{\sqrt{2\pi q_1}}\sum_{n\ge0}t_n(s)\,\kappa^n\,M_n(1/q_1),$$

  and likewise $E[A(a)R(b)]$ with the roles of $a$ and $b$ exchanged.

Both series converge fast when $V=\min(q_1,q_2)(1-r^2)$ is large: the $k$-th term of the first is of order
$k!\,(r/\rho^2V)^k$ and the $n$-th of the second $\sqrt{n!}\,(r/\rho\sqrt V)^n$ ($\rho$: the decay rate of $R$,
$|R|\lesssim e^{-\rho|x|}$; $\rho=1$ for softplus, silu, sigmoid, 2 for tanh).  This module evaluates them
for $V\ge V_0$ (``V0``) with $N$ terms: per covariance a few Chebyshev sums of $N$ columns and three series of
$N$ terms, about $10^3$ flops and no transcendental beyond a handful, against the $\sim10^2$ nodes of the
quadratures of :mod:`kernelcalc.theory.largeq_table`.  The near-parallel band $V<V_0$ (and small variances)
stays with those quadratures (:class:`~kernelcalc.theory.largeq_table.TabulatedRule` combines both).

Taylor coefficients of $m_A$ in $\mu$ (with $\zeta=\kappa/\tau$ folded in, $\tau=\sqrt{\lambda^2+s^2}$ for the
``gelu`` family, $\tau=\sqrt{1+2k^2s^2}/k$ for ``erf``; $\varphi_0=1/\sqrt{2\pi}$):

- ``gelu``, $A=\beta x\Phi(x/\lambda)$: $m_A=\beta\big(\mu\Phi(\mu/\tau)+\frac{s^2}\tau\varphi(\mu/\tau)\big)$, so
  $t_1\kappa=\beta\kappa/2$ and, for $j\ge0$, $t_{2j}\kappa^{2j}=\beta\varphi_0\zeta^{2j}\big(\tau\frac{(-1)^{j-1}}
  {2^{j-1}(j-1)!(2j-1)}[j\ge1]+\frac{s^2}{\tau}\frac{(-1)^j}{2^jj!}\big)$;
- ``gelu``, $A'$: $m_{A'}=\beta\big(\Phi(v)+v\varphi(v)\lambda^2/\tau^2\big)$, $v=\mu/\tau$: $t_0=\beta/2$, $t_{2j+1}
  \kappa^{2j+1}=\beta\varphi_0\zeta^{2j+1}\frac{(-1)^j}{2^jj!}\big(\frac1{2j+1}+\frac{\lambda^2}{\tau^2}\big)$;
- ``erf``, $A=\alpha+\beta\,\mathrm{erf}(kx)$: $m_A=\alpha+\beta\,\mathrm{erf}(\mu/\tau)$: $t_0=\alpha$,
  $t_{2j+1}\kappa^{2j+1}=\beta\frac2{\sqrt\pi}\frac{(-1)^j\zeta^{2j+1}}{j!(2j+1)}$;
- ``erf``, $A'$: $m_{A'}=\beta\frac{2}{\sqrt\pi\,\tau}e^{-\mu^2/\tau^2}$: $t_{2j}\kappa^{2j}=\beta\frac2{\sqrt\pi\,\tau}
  \frac{(-1)^j\zeta^{2j}}{j!}$.

The moment table's error is measured at held-out points (midpoints of the fitting nodes) against the
defining sums and reported (:attr:`MomentTable.error`, relative to the largest term it feeds).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .._lazy import jax, jnp   # deferred: jax is imported on first use
from .largeq import Asymptote
from .largeq_chebtab import cheb_rows

__all__ = ["MomentTable", "moment_table", "far_expect", "far_mask", "V0", "N_TERMS"]

#: the far regime: min(q1, q2) (1 - r^2) >= V0
V0 = 100.0
#: terms of every series (moments M_0 .. M_{N-1})
N_TERMS = 30
_D_W = 40          # Chebyshev nodes in w on [0, 1/V0] (fit); the degree kept is measured
_CUT = 1e-17       # coefficients below CUT * max |M_k| over w are dropped (per k)
_H = 0.05          # trapezoid step of the defining sums
_X = 200.0         # their half-range: x^(N-1) e^{-|x|} is below 1e-40 of its peak beyond



def _erfc(x):
    """scipy's erfc, imported on first use (importing kernelcalc loads no scipy)."""
    from scipy.special import erfc

    return erfc(x)

def _Phi_neg(v):
    """$\\Phi(-v)$, accurate for large $v$."""
    return 0.5 * _erfc(v / math.sqrt(2.0))


def _sigm_neg(x):
    """$\\sigma(-x)$ for $x \\ge 0$ without cancellation."""
    return np.exp(-x) / (1.0 + np.exp(-x))


def stable_remainder(name: str, lam: float, derivative: bool, x):
    r"""$R(x)$ (or $R'(x)$) of the built-in ``name`` in numpy, written for $x\ge0$ from the small tails (no
    cancellation of terms close to 1: the far tails, which the high moments weigh, keep their digits), extended by
    parity.  Used only to build the tables (moment, remainder, near and low tables)."""
    x = np.asarray(x, np.float64)
    t = np.abs(x)
    v = t / lam
    pdf = np.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
    if name == "softplus":       # R even, R' odd
        if derivative:
            val, odd = _Phi_neg(v) - _sigm_neg(t) - v * pdf, True
        else:
            val, odd = np.log1p(np.exp(-t)) + t * _Phi_neg(v), False
    elif name == "silu":         # R even, R' odd
        if derivative:   # sigma (1 + x sigma(-x)) - Phi(v) - v phi(v)
            sg, sn = 1.0 / (1.0 + np.exp(-t)), _sigm_neg(t)
            val, odd = (_Phi_neg(v) - sn) + t * sg * sn - v * pdf, True
        else:
            val, odd = t * (_Phi_neg(v) - _sigm_neg(t)), False
    elif name == "tanh":         # R odd, R' even
        if derivative:
            val, odd = 1.0 / np.cosh(np.minimum(t, 350.0)) ** 2 - 2.0 * lam / math.sqrt(math.pi) * np.exp(-lam * lam * t * t), False
        else:
            val, odd = _erfc(lam * t) - 2.0 * np.exp(-2.0 * t) / (1.0 + np.exp(-2.0 * t)), True
    elif name == "sigmoid":      # R odd, R' even
        if derivative:
            val, odd = _sigm_neg(t) * (1.0 - _sigm_neg(t)) - lam / math.sqrt(math.pi) * np.exp(-lam * lam * t * t), False
        else:
            val, odd = 0.5 * _erfc(lam * t) - _sigm_neg(t), True
    else:  # pragma: no cover
        raise ValueError(f"no remainder for {name!r}")
    return np.where(x < 0, -val, val) if odd else val


def remainder_parity(name: str, derivative: bool) -> int:
    """+1 when the remainder of the built-in ``name`` (``derivative``: of phi') is even, -1 when odd (as
    :func:`stable_remainder` writes it)."""
    if name not in ("softplus", "silu", "tanh", "sigmoid"):  # pragma: no cover
        raise ValueError(f"no remainder for {name!r}")
    even_R = name in ("softplus", "silu")
    return 1 if even_R != derivative else -1


@dataclasses.dataclass(frozen=True, eq=False)
class MomentTable:
    r"""$M_k(w)=\int x^kR(x)e^{-wx^2/2}dx$, $k<N$, $w\in[0,w_{\max}]$: Chebyshev coefficients ``coef`` of shape
    ``(d_w, N)`` in $y=2w/w_{\max}-1$, and the measured held-out ``error`` (absolute, relative to
    $\max_{k,w}|M_k(w)|/k!$, the size of the largest term a series can see)."""

    coef: np.ndarray
    w_max: float
    error: float

    def __call__(self, w, xp=None):
        """``(B, N)``: $M_k(w)$ for ``w`` of shape ``(B,)`` in ``[0, w_max]``."""
        xp = jnp if xp is None else xp
        y = xp.clip(2.0 * w / self.w_max - 1.0, -1.0, 1.0)
        return cheb_rows(y, self.coef.shape[0], xp) @ xp.asarray(self.coef)


def _moments(R, x, h, w, n):
    """``(len(w), n)``: $\\int x^kR(x)e^{-wx^2/2}dx$ by the trapezoid rule on the nodes ``x``."""
    pw = x[None, :] ** np.arange(n)[:, None]                                # (n, X)
    return (np.exp(-0.5 * np.outer(w, x * x)) * (h * R)[None, :]) @ pw.T


@functools.lru_cache(maxsize=16)
def moment_table(asymptote: Asymptote, derivative: bool) -> MomentTable:
    """The :class:`MomentTable` of the remainder of ``asymptote`` (``derivative``: of $R'$), built once per
    process (a few hundred milliseconds)."""
    m = int(round(_X / _H))
    x = _H * np.arange(-m, m + 1, dtype=np.float64)        # integers times h: an exactly symmetric grid
    R = stable_remainder(asymptote.name, asymptote.scale, derivative, x)
    w_max = 1.0 / V0
    y = np.cos(np.pi * (np.arange(_D_W) + 0.5) / _D_W)
    vals = _moments(R, x, _H, 0.5 * w_max * (y + 1.0), N_TERMS)              # (D_W, N)
    k = np.arange(_D_W)
    T = np.cos(np.pi * np.outer(k, np.arange(_D_W) + 0.5) / _D_W)
    coef = T @ vals * (2.0 / _D_W)
    coef[0] *= 0.5
    scale = np.max(np.abs(vals), axis=0)                                     # per k
    keep = np.abs(coef) > _CUT * scale[None, :]
    d = int(np.max(np.nonzero(keep.any(axis=1))[0], initial=0)) + 1
    table = MomentTable(np.ascontiguousarray(coef[:d]), w_max, 0.0)
    y_mid = np.cos(np.pi * np.arange(1, _D_W) / _D_W)
    w_chk = np.concatenate([[0.0, w_max], 0.5 * w_max * (y_mid + 1.0)])
    ref = _moments(R, x, _H, w_chk, N_TERMS)
    got = table(w_chk, xp=np)
    fact = np.array([math.factorial(i) for i in range(N_TERMS)], dtype=np.float64)
    err = float(np.max(np.abs(got - ref) / fact) / np.max(np.abs(vals) / fact))
    return dataclasses.replace(table, error=err)


def far_mask(q1, q2, c, xp=None):
    r"""Where the moment series apply: $\min(q_1,q_2)(1-r^2)\ge V_0$ (``V0``)."""
    xp = jnp if xp is None else xp
    n = xp.sqrt(q1 * q2)
    r = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 1.0)
    return xp.minimum(q1, q2) * (1.0 - r) * (1.0 + r) >= V0


def _taylor(asy: Asymptote, derivative: bool, zp, s2, tau):
    r"""``(B, N)``: $t_n\kappa^n$ of the module doc, as multiples of $\zeta^n$ (``zp``: the powers $\zeta^0..\zeta^{N-1}$
    of ``zeta`` $=\kappa/\tau$, :func:`_powers`)."""
    n = np.arange(N_TERMS)
    j = n // 2
    fj = np.array([math.factorial(int(i)) for i in j], dtype=np.float64)
    fj1 = np.array([math.factorial(int(max(i - 1, 0))) for i in j], dtype=np.float64)
    even, odd = (n % 2 == 0), (n % 2 == 1)
    lam, al, be = asy.scale, asy.alpha, asy.beta
    phi0 = 1.0 / math.sqrt(2.0 * math.pi)
    sgn = (-1.0) ** j
    if asy.family == "gelu":
        if derivative:
            a = np.where(odd, phi0 * sgn / (2.0 ** j * fj), 0.0)
            b = np.where(odd, 1.0 / (2 * j + 1), 0.0)
            t = a * (b + (lam * lam / tau ** 2)[:, None] * (a != 0))
            t = t + np.where(n == 0, 0.5, 0.0)
            return be * zp * t
        first = np.where(even & (j >= 1), phi0 * (-sgn) / (2.0 ** np.maximum(j - 1, 0) * fj1 * np.maximum(2 * j - 1, 1)), 0.0)
        second = np.where(even, phi0 * sgn / (2.0 ** j * fj), 0.0)
        t = first[None, :] * tau[:, None] + second[None, :] * (s2 / tau)[:, None]
        # the odd part is mu/2 alone: t_1 kappa = (1/2) zeta tau
        t = t + np.where(n == 1, 0.5, 0.0)[None, :] * tau[:, None]
        return be * zp * t
    if derivative:
        t = np.where(even, 2.0 / math.sqrt(math.pi) * sgn / fj, 0.0)
        return be * zp * t[None, :] / tau[:, None]
    t = np.where(odd, 2.0 / math.sqrt(math.pi) * sgn / (fj * (2 * j + 1)), 0.0)
    return be * zp * t[None, :] + np.where(n == 0, al, 0.0)[None, :]


def _powers(x, n, xp):
    r"""``x.shape + (n,)``: $x^0..x^{n-1}$ by multiplications only (exact signs, no pow).  Under jit one loop
    (``fori_loop``, $x^k=x\,x^{k-1}$, as :func:`~kernelcalc.theory.largeq_chebtab.cheb_rows`): one small body to
    compile, where ``cumprod`` lowers to padded reduce-windows and slices and a chain of doublings to a fusion per
    step (a dozen kernels more for each series).  numpy: by doubling, $[x^0..x^{m-1}]$ and its product with $x^m$,
    $m=1,2,4,\dots$ (at most $\lceil\log_2n\rceil$ roundings)."""
    if xp is not np:
        P = jnp.zeros((n,) + x.shape, x.dtype).at[0].set(1.0)
        P = jax.lax.fori_loop(1, n, lambda k, P: P.at[k].set(P[k - 1] * x), P)
        return jnp.moveaxis(P, 0, -1)
    P = np.ones(np.shape(x) + (1,))
    p = x
    while P.shape[-1] < n:
        P = np.concatenate([P, P * p[..., None]], axis=-1)
        if P.shape[-1] < n:
            p = p * p
    return P[..., :n]


def far_expect(asy: Asymptote, q1, q2, c, derivatives=(False, True), xp=None):
    r"""``tuple``: $E[f(a)f(b)]$ for $f=\phi$ (``False`` in ``derivatives``) and $f=\phi'$ (``True``) by the moment
    series (module doc), for flat arrays of covariances; only meaningful where :func:`far_mask` holds (elsewhere the
    values are finite but wrong).  The Chebyshev polynomials of the four weights $w$ are shared by both tables (by
    the recurrence of :func:`~kernelcalc.theory.largeq_chebtab.cheb_rows`: about 2.0 us per $(C,\dot C)$ against 3.3 us
    with $\cos(k\arccos y)$, most of it the 160 cosines)."""
    xp = jnp if xp is None else xp
    return far_finish(asy, derivatives, far_locate(asy, q1, q2, c, derivatives, xp), xp)


def far_locate(asy: Asymptote, q1, q2, c, derivatives, xp) -> dict:
    r"""The elementwise part of :func:`far_expect` (as :func:`~kernelcalc.theory.largeq_near.near_locate`): per
    covariance the covariance itself (for $E[A(a)A(b)]$, formed in :func:`far_finish`), the four local coordinates $y=2w/w_{\max}-1$ of the moment tables, and the numbers the
    series' coefficients are powers of ($c/D$; $\zeta$, $s^2$, $\tau$ of each cross term) with their prefactors (the
    ``(B, N)`` coefficients themselves are formed in :func:`far_finish`: in numpy they cost more than they save)."""
    n = xp.sqrt(q1 * q2)
    r = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
    one_m_r2 = xp.maximum((1.0 - r) * (1.0 + r), 1.0 / V0 / xp.maximum(xp.minimum(q1, q2), 1.0))
    D = q1 * q2 * one_m_r2
    wmax = moment_table(asy, derivatives[0]).w_max
    loc = {"q": [q1, q2, c],
           "y": [2.0 * xp.minimum(w, wmax) / wmax - 1.0 for w in (1.0 / q1, 1.0 / q2, q2 / D, q1 / D)],
           "c_D": c / D, "norm_rr": 1.0 / (2.0 * math.pi * xp.sqrt(D)), "cross": []}
    for qa, qb in ((q1, q2), (q2, q1)):
        s2 = qb * one_m_r2
        if asy.family == "gelu":
            tau = xp.sqrt(asy.scale ** 2 + s2)
        else:
            tau = xp.sqrt(1.0 + 2.0 * asy.scale ** 2 * s2) / asy.scale
        loc["cross"].append({"zeta": c / qa / tau, "s2": s2, "tau": tau, "norm": 1.0 / xp.sqrt(2.0 * math.pi * qa)})
    return loc


def far_finish(asy: Asymptote, derivatives, loc, xp):
    r""":func:`far_expect` from the located covariances ``loc`` (:func:`far_locate`): the moment tables' Chebyshev sums
    and the three series."""
    tabs = [moment_table(asy, d) for d in derivatives]
    d_w = max(t.coef.shape[0] for t in tabs)
    coef = np.concatenate([np.pad(t.coef, ((0, d_w - t.coef.shape[0]), (0, 0))) for t in tabs], axis=1)
    M = cheb_rows(xp.stack(loc["y"]), d_w, xp) @ xp.asarray(coef)   # (4, B, N * len)
    inv_fact = np.array([1.0 / math.factorial(i) for i in range(N_TERMS)])
    P = _powers(xp.stack([loc["c_D"]] + [cr["zeta"] for cr in loc["cross"]]), N_TERMS, xp)   # (3, B, N): one loop
    ck = P[0] * inv_fact[None, :]
    out = []
    for i, d in enumerate(derivatives):
        sl = slice(i * N_TERMS, (i + 1) * N_TERMS)
        M1, M2, Ma, Mb = M[0, :, sl], M[1, :, sl], M[2, :, sl], M[3, :, sl]
        rr = xp.sum(ck * Ma * Mb, axis=-1) * loc["norm_rr"]
        x1, x2 = (xp.sum(_taylor(asy, d, zp, cr["s2"], cr["tau"]) * Mx, axis=-1) * cr["norm"]
                  for cr, Mx, zp in zip(loc["cross"], (M1, M2), P[1:]))
        out.append(asy.AA(*loc["q"], d, xp=np if xp is np else None) + x1 + x2 + rr)
    return tuple(out)
