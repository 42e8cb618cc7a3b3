r"""Dual kernels at large pre-activation variance: a closed-form asymptote plus a localised remainder.

At variance $q\gg1$ the Mehler/Hermite series of $\phi(\sqrt q z)$ needs $O(q)$ terms and the Cartesian
trapezoid rule a step $O(q^{-1/2})$: the scale $1$ on which $\phi$ bends is tiny against the width
$\sqrt q$ of the Gaussian.  Instead write each of $f=\phi$ and $f=\phi'$ as

$$f = A + R,$$

with an **asymptote** $A$ whose Gaussian expectations are closed forms and a **remainder** $R$ that
is analytic and decays at least like $e^{-|x|}$ (width $O(1)$).  Two asymptote families are used
(:class:`Asymptote`):

- ``"gelu"`` (unbounded, linear on one side: softplus, silu): $A(x)=x\Phi(x/\lambda)=\lambda\,
  \mathrm{gelu}(x/\lambda)$, $A'(x)=\Phi(u)+u\varphi(u)$, $u=x/\lambda$; $E[A(a)A(b)]=\lambda^2C_{\rm gelu}
  (q_1/\lambda^2,q_2/\lambda^2,c/\lambda^2)$ and likewise $\dot C$ (:mod:`kernelcalc.theory.duals`);
- ``"erf"`` (bounded: tanh, sigmoid): $A(x)=\alpha+\beta\,\mathrm{erf}(kx)$, $A'(x)=\beta\frac{2k}{\sqrt\pi}
  e^{-k^2x^2}$; $E[A(a)A(b)]=\alpha^2+\beta^2\frac2\pi\arcsin\frac{2k^2c}{\sqrt{(1+2k^2q_1)(1+2k^2q_2)}}$,
  $E[A'(a)A'(b)]=\frac{4\beta^2k^2}{\pi}\big(1+2k^2(q_1+q_2)+4k^4(q_1q_2-c^2)\big)^{-1/2}$.

Both asymptotes are smooth (wide: $\lambda=2$, $k=1/2$), so $R$ is analytic on the real line and the
conditional expectations below are smooth.  Then, for $(a,b)\sim N(0,[[q_1,c],[c,q_2]])$,

$$E[f(a)f(b)] = E[A(a)A(b)] + E[A(a)R(b)] + E[R(a)f(b)],$$

and with $b\,|\,a\sim N(\kappa a,s^2)$, $\kappa=c/q_1$, $s^2=q_2(1-r^2)$:

$$E[R(a)f(b)]=\int R(a)\,p_{q_1}(a)\,\big(m_A(\kappa a,s)+m_R(\kappa a,s)\big)\,da,\qquad
m_g(\mu,s)=E[g(\mu+sZ)].$$

$m_A$ is closed (``gelu``: $\mu\Phi(\mu/\tau)+\frac{s^2}\tau\varphi(\mu/\tau)$, $\tau=\sqrt{\lambda^2+s^2}$, and
$\Phi(v)+v\varphi(v)\lambda^2/\tau^2$, $v=\mu/\tau$, for $A'$; ``erf``: $\alpha+\beta\,\mathrm{erf}
(k\mu/\sqrt{1+2k^2s^2})$ and $\beta\frac{2k}{\sqrt\pi}e^{-k^2\mu^2/(1+2k^2s^2)}/\sqrt{1+2k^2s^2}$).  The integrals
over the localised variable run over $|a|\le L$ by the trapezoid rule with step $h$ (exponentially
accurate for analytic integrands); $m_R(\mu,s)$ is a trapezoid rule of ``n_inner`` nodes on the window
$[\mu-9s,\mu+9s]\cap[-L,L]$ (and $R(\mu)$ when $s=0$).  The cost per $(q_1,q_2,c)$ is about
$(2L/h)(n_{\rm inner}+2)$ evaluations, **independent of $q$** (the Cartesian trapezoid rule needs
$\propto q$ of them).  The rule is chosen by :func:`choose_asymptotic`, which compares two levels
against each other over a range of $q$ and correlations; the difference is the error estimate.
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
from .duals import _gelu_C, _gelu_Cdot
from .duals_ops import JAX_OPS, NUMPY_OPS

__all__ = ["Asymptote", "AsymptoticRule", "asymptote_of", "choose_asymptotic", "cheapest_asymptotic_rule", "ASYMPTOTES"]

_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class _Special:
    """The array module and the special functions of the asymptotes and remainders for one backend: ``xp`` (numpy or
    jax.numpy), ``erf``, ``erfc``, ``sigmoid`` and the closed forms' ops (:data:`~kernelcalc.theory.duals.NUMPY_OPS` /
    :data:`~kernelcalc.theory.duals.JAX_OPS`)."""

    def __init__(self, numpy: bool):
        if numpy:
            import scipy.special as sc
            self.xp, self.erf, self.erfc, self.sigmoid, self.ops = np, sc.erf, sc.erfc, sc.expit, NUMPY_OPS
        else:
            self.xp, self.erf, self.erfc, self.sigmoid = jnp, jax.scipy.special.erf, jax.scipy.special.erfc, jax.nn.sigmoid
            self.ops = JAX_OPS

    def Phi(self, x):
        return 0.5 * self.erfc(-x / _SQRT2)

    def pdf(self, x):
        return _INV_SQRT_2PI * self.xp.exp(-0.5 * x * x)


@functools.lru_cache(maxsize=2)
def _special_of(numpy: bool) -> _Special:
    return _Special(numpy)


def _special(xp) -> _Special:
    """:class:`_Special` of ``xp``: ``None`` (jax.numpy, traceable) or numpy."""
    if xp is None:
        return _special_of(False)
    if xp is np:
        return _special_of(True)
    raise ValueError(f"xp must be None (jax.numpy) or numpy, not {xp!r}")  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class Asymptote:
    r"""The decomposition $\phi=A+R$, $\phi'=A'+R'$ of one activation (module doc).

    ``family``: ``"gelu"`` ($A=\gamma\,x\Phi(x/\lambda)$) or ``"erf"`` ($A=\alpha+\beta\,\mathrm{erf}(kx)$);
    ``scale``: $\lambda$ or $k$; ``alpha``, ``beta`` ($\gamma$ = ``beta`` for ``gelu``); ``name``: the
    activation's built-in name (selects the remainders); ``L``: the remainders are below $10^{-16}$ (relative
    to the kernel) beyond $|x|>L$."""

    name: str
    family: str
    scale: float
    alpha: float = 0.0
    beta: float = 1.0
    L: float = 36.0

    # -- the asymptote's closed forms ---------------------------------------------------------
    def AA(self, q1, q2, c, derivative, xp=None):
        """$E[A(a)A(b)]$ (or $E[A'(a)A'(b)]$).  ``xp``: ``None`` (jax.numpy, the default) or numpy."""
        sp_ = _special(xp)
        xp = sp_.xp
        s, al, be = self.scale, self.alpha, self.beta
        if self.family == "gelu":
            l2 = s * s
            if derivative:
                return be * be * _gelu_Cdot(sp_.ops, q1 / l2, q2 / l2, c / l2)
            return be * be * l2 * _gelu_C(sp_.ops, q1 / l2, q2 / l2, c / l2)
        k2 = s * s
        n = xp.sqrt(q1 * q2)   # q1 q2 - c^2 = q1 q2 (1 - r)(1 + r): exactly 0 at r = 1, never negative
        r = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
        # d = (1 + 2k^2 q1)(1 + 2k^2 q2) - 4k^4 c^2 >= 1, written without that cancellation
        d = 1.0 + 2.0 * k2 * (q1 + q2) + 4.0 * k2 * k2 * q1 * q2 * (1.0 - r) * (1.0 + r)
        if derivative:
            return be * be * 4.0 * k2 / math.pi / xp.sqrt(d)
        # arcsin(2k^2 c / sqrt((1 + 2k^2 q1)(1 + 2k^2 q2))) as an angle: well conditioned where the argument -> +-1
        # (large q near parallel), where arcsin's slope amplified its rounding ~1e3-fold
        return al * al + be * be * 2.0 / math.pi * xp.arctan2(2.0 * k2 * c, xp.sqrt(d))

    def conditional(self, mu, s2, derivative, xp=None):
        r"""$m_A(\mu,s)=E[A(\mu+sZ)]$ (or of $A'$), ``s2`` $=s^2$; ``xp`` as in :meth:`AA`."""
        sp_ = _special(xp)
        xp = sp_.xp
        lam, al, be = self.scale, self.alpha, self.beta
        if self.family == "gelu":
            tau2 = lam * lam + s2
            tau = xp.sqrt(tau2)
            v = mu / tau
            if derivative:
                return be * (sp_.Phi(v) + v * sp_.pdf(v) * (lam * lam / tau2))
            return be * (mu * sp_.Phi(v) + s2 / tau * sp_.pdf(v))
        k2 = lam * lam
        w = 1.0 + 2.0 * k2 * s2
        if derivative:
            return be * 2.0 * lam / _SQRT_PI * xp.exp(-k2 * mu * mu / w) / xp.sqrt(w)
        return al + be * sp_.erf(lam * mu / xp.sqrt(w))

    # -- the remainders --------------------------------------------------------------------------
    def remainder(self, x, derivative, xp=None):
        r"""$R=\phi-A$ (or $R'=\phi'-A'$), written without cancellation of large terms; ``xp`` as in :meth:`AA`."""
        sp_ = _special(xp)
        xp, Phi, pdf, sigmoid = sp_.xp, sp_.Phi, sp_.pdf, sp_.sigmoid
        lam = self.scale
        n = self.name
        if n == "softplus":
            if derivative:
                return sigmoid(x) - Phi(x / lam) - x / lam * pdf(x / lam)
            ax = xp.abs(x)            # softplus - x Phi(x/lam) = log1p(e^-|x|) + |x| Phi(-|x|/lam)
            return xp.log1p(xp.exp(-ax)) + ax * Phi(-ax / lam)
        if n == "silu":
            if derivative:
                sg = sigmoid(x)
                return sg * (1.0 + x * sigmoid(-x)) - Phi(x / lam) - x / lam * pdf(x / lam)
            return x * (sigmoid(x) - Phi(x / lam))
        if n == "tanh":
            if derivative:
                return 1.0 / xp.cosh(x) ** 2 - 2.0 * lam / _SQRT_PI * xp.exp(-lam * lam * x * x)
            return xp.tanh(x) - sp_.erf(lam * x)
        if n == "sigmoid":
            if derivative:
                return sigmoid(x) * sigmoid(-x) - lam / _SQRT_PI * xp.exp(-lam * lam * x * x)
            return sigmoid(x) - 0.5 - 0.5 * sp_.erf(lam * x)
        raise ValueError(f"no remainder for {n!r}")  # pragma: no cover


#: Built-in activations with an asymptote decomposition (``name -> Asymptote``).
ASYMPTOTES = {
    "softplus": Asymptote("softplus", "gelu", 2.0, L=40.0),
    "silu": Asymptote("silu", "gelu", 2.0, L=44.0),
    "tanh": Asymptote("tanh", "erf", 0.5, L=20.0),
    "sigmoid": Asymptote("sigmoid", "erf", 0.25, alpha=0.5, beta=0.5, L=40.0),
}


def asymptote_of(activation: Activation) -> Asymptote | None:
    """The :class:`Asymptote` of a built-in ``activation`` (default parameters), else ``None``."""
    if activation.builtin in ASYMPTOTES and not activation.params:
        return ASYMPTOTES[activation.builtin]
    return None


@dataclasses.dataclass(frozen=True)
class AsymptoticRule:
    r"""$E[f(a)f(b)]$, $f\in\{\phi,\phi'\}$, by asymptote + localised remainder (module doc).

    ``h``: trapezoid step of the outer integral over $|x|\le L$; ``h_inner``: the largest step of the inner
    window rule (:attr:`n_inner` nodes on a window of width at most $2L$)."""

    asymptote: Asymptote
    h: float = 0.25
    h_inner: float = 0.35

    @property
    def n_inner(self) -> int:
        """Nodes of the inner window rule: its step is at most ``h_inner`` on the widest window $[-L, L]$."""
        return int(math.ceil(2.0 * self.asymptote.L / self.h_inner)) + 1

    @property
    def points(self) -> int:
        """Integrand evaluations per covariance (both outer integrals and the inner rule)."""
        n_out = 2 * int(self.asymptote.L / self.h) + 1
        return n_out * (self.n_inner + 3)

    def _one(self, q1, q2, c, derivative):
        asy = self.asymptote
        L = asy.L
        k = int(L / self.h)
        x = self.h * jnp.arange(-k, k + 1, dtype=jnp.float64)            # (n,)
        t = jnp.linspace(0.0, 1.0, self.n_inner)
        wt = jnp.ones(self.n_inner).at[0].set(0.5).at[-1].set(0.5) / (self.n_inner - 1)
        n = jnp.sqrt(q1 * q2)
        r = jnp.where(n > 0, jnp.clip(c / jnp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
        one_m_r2 = jnp.maximum((1.0 - r) * (1.0 + r), 0.0)
        Rx = asy.remainder(x, derivative)                                  # (n,)

        def outer(qa, qb, with_remainder=True):
            """E[R(a) f(b)] (or E[R(a) A(b)] without the remainder) with a ~ N(0, qa) localised and
            b | a ~ N(kappa a, s2)."""
            kappa = (c / qa)[:, None]
            s2 = (qb * one_m_r2)[:, None]
            s = jnp.sqrt(s2)
            mu = kappa * x[None, :]                                        # (B, n)
            dens = jnp.exp(-0.5 * x[None, :] ** 2 / qa[:, None]) / jnp.sqrt(2 * math.pi * qa[:, None])
            mA = asy.conditional(mu, s2, derivative)
            if not with_remainder:
                return self.h * jnp.sum(Rx[None, :] * dens * mA, axis=-1)
            lo = jnp.maximum(mu - 9.0 * s, -L)
            hi = jnp.minimum(mu + 9.0 * s, L)
            width = jnp.maximum(hi - lo, 0.0)
            b = lo[..., None] + width[..., None] * t                       # (B, n, m)
            ss = jnp.where(s > 0, s, 1.0)[..., None]
            g = jnp.exp(-0.5 * ((b - mu[..., None]) / ss) ** 2) / (ss * math.sqrt(2 * math.pi))
            mR = jnp.sum(asy.remainder(b, derivative) * g * wt, axis=-1) * width
            tiny = s < 1e-9 * (1.0 + jnp.abs(mu))
            mR = jnp.where(tiny, asy.remainder(mu, derivative), mR)
            return self.h * jnp.sum(Rx[None, :] * dens * (mA + mR), axis=-1)

        full_a = outer(q1, q2)                                 # E[R(a) f(b)]
        cross_b = outer(q2, q1, with_remainder=False)          # E[A(a) R(b)] (b localised)
        return asy.AA(q1, q2, c, derivative) + full_a + cross_b

    @float64
    def expect(self, q1, q2, c, derivative: bool = True, blocked=None):
        r"""$(C, \dot C)$ (or $C$ alone) for arrays of covariances (broadcast).  ``blocked``: the memory-bounded
        block map of :mod:`kernelcalc.theory.gaussian_rules` (``_blocked``), or ``None`` for one block (small inputs)."""

        def block(q1, q2, c):
            out = (self._one(q1, q2, c, False),)
            return out + ((self._one(q1, q2, c, True),) if derivative else ())

        if blocked is not None:
            return blocked(block, q1, q2, c, points=self.points)
        q1, q2, c = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float64) for v in (q1, q2, c)))
        shape = q1.shape
        return tuple(o.reshape(shape) for o in block(q1.reshape(-1), q2.reshape(-1), c.reshape(-1)))


_LEVELS = ((0.25, 0.35), (0.18, 0.25), (0.125, 0.18))


def cheapest_asymptotic_rule(activation: Activation) -> AsymptoticRule | None:
    """The coarsest level :func:`choose_asymptotic` can return (a lower bound on the rule's cost), or ``None``
    when ``activation`` has no asymptote."""
    asy = asymptote_of(activation)
    return None if asy is None else AsymptoticRule(asy, *_LEVELS[0])


def level_values(rule, q1, q2, c, blocked):
    r"""``((C, Cdot), (norm_C, norm_Cdot))`` of one level of a large-q rule at the covariances ``(q1, q2, c)``,
    with the norms $\sqrt{E f(a)^2\,E f(b)^2}$ (likewise for $f'$) that the level differences are relative to."""
    C, Cd = rule.expect(q1, q2, c, blocked=blocked)
    Caa, Cdaa = rule.expect(q1, q1, q1, blocked=blocked)
    Cbb, Cdbb = rule.expect(q2, q2, q2, blocked=blocked)
    return (np.asarray(C), np.asarray(Cd)), (np.sqrt(np.abs(np.asarray(Caa * Cbb))),
                                             np.sqrt(np.abs(np.asarray(Cdaa * Cdbb))))


def first_settled(levels, values, tol: float):
    r"""``(level, difference)``: the coarsest of ``levels`` whose :func:`level_values` (``values(level)``)
    agree with the next finer level's to ``tol``, relative to the norms; ``(None, the last difference)`` when
    none does."""
    prev, _ = values(levels[0])
    err = math.inf
    for coarse, fine in zip(levels, levels[1:]):
        cur, norms = values(fine)
        err = max(float(np.max(np.abs(a - b) / np.maximum(s, 1e-300))) for a, b, s in zip(cur, prev, norms))
        if err <= tol:
            return coarse, err
        prev = cur
    return None, err


@float64
def choose_asymptotic(activation: Activation, q_max: float, tol: float, strict: bool = False,
                      q_min: float = 0.25, blocked=None):
    r"""The coarsest :class:`AsymptoticRule` of ``_LEVELS`` that agrees with the next finer one to ``tol``
    (relative to $\sqrt{E f(a)^2 E f(b)^2}$) for $C$ and $\dot C$ at variances from ``q_min`` to ``q_max``
    (log-spaced; equal variances and ratio 2) and correlations $r\in\{-0.9,0,0.9,0.9999,1\}$.
    Returns ``(rule, error estimate)``; warns (raises when ``strict``) when even the finest level misses
    by more than ``10 * tol`` (the difference of two levels of ~$10^4$-term sums carries a few $10^{-14}$ of
    rounding; the estimate returned is the measured difference either way).
    ``blocked``: as in :meth:`AsymptoticRule.expect`."""
    asy = asymptote_of(activation)
    qs = np.geomspace(max(q_min, 1e-3), max(q_max, q_min), 4)
    r = np.array([-0.9, 0.0, 0.9, 0.9999, 1.0])
    q1 = np.concatenate([np.repeat(qs, r.size), np.repeat(qs, r.size)])
    q2 = np.concatenate([np.repeat(qs, r.size), np.repeat(2.0 * qs, r.size)])   # equal and unequal variances
    rr = np.tile(r, 2 * qs.size)
    c = rr * np.sqrt(q1 * q2)

    def values(level):
        return level_values(AsymptoticRule(asy, *level), q1, q2, c, blocked)

    settled, err = first_settled(_LEVELS, values, tol)
    if settled is not None:
        return AsymptoticRule(asy, *settled), max(err, 1e-16)
    if err <= 10.0 * tol:       # the finest level, within rounding of tol: no warning, the estimate is reported
        return AsymptoticRule(asy, *_LEVELS[-1]), err
    accuracy_shortfall(f"asymptotic rule for {activation.name}: the finest level {_LEVELS[-1]} still changes by "
                       f"{err:.1e} > tol = {tol:.1e} for variances up to q = {q_max:.4g}", strict)
    return AsymptoticRule(asy, *_LEVELS[-1]), err
