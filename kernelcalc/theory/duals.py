r"""Closed-form dual kernels $C = E[\phi(a)\phi(b)]$, $\dot C = E[\phi'(a)\phi'(b)]$.

$(a, b)$ is centred Gaussian with $\mathrm{Var}\,a = q_1$, $\mathrm{Var}\,b = q_2$,
$\mathrm{Cov}(a,b) = c$; write $n=\sqrt{q_1q_2}$, $\cos\theta = c/n$.

=============  ====================================================  ==========================================
activation     $C$                                                   $\dot C$
=============  ====================================================  ==========================================
relu           $\frac{n}{2\pi}(\sin\theta + (\pi-\theta)\cos\theta)$  $\frac{\pi-\theta}{2\pi}$
leaky_relu     $\alpha c + (1-\alpha)^2 C_{\rm relu}$                $\alpha + (1-\alpha)^2\dot C_{\rm relu}$
sign           $\frac2\pi\arcsin\frac cn=1-\frac{2\theta}\pi$         $0$ (the a.e. derivative)
Heaviside      $\frac{\pi-\theta}{2\pi}$                              $0$ (the a.e. derivative)
erf            $\frac2\pi\arcsin\frac{2c}{\sqrt{(1+2q_1)(1+2q_2)}}$  $\frac{4}{\pi\sqrt{(1+2q_1)(1+2q_2)-4c^2}}$
gelu           $\frac{q_1q_2J+(1+q_1+q_2)c\beta+c^2/\Delta}{2\pi P}$  $\frac1{2\pi}\big(\beta+\frac c\Delta(\frac1{1+q_1}+\frac1{1+q_2}+\frac1{\Delta^2})\big)$
sin            $e^{-(q_1+q_2)/2}\sinh c$                              $e^{-(q_1+q_2)/2}\cosh c$
cos            $e^{-(q_1+q_2)/2}\cosh c$                              $e^{-(q_1+q_2)/2}\sinh c$
polynomial     Isserlis: $E[a^ib^j]=\sum_k\binom ik\binom jk k!\,c^k(i-k-1)!!\,q_1^{\frac{i-k}2}(j-k-1)!!\,q_2^{\frac{j-k}2}$
=============  ====================================================  ==========================================

gelu ($\phi(x)=x\Phi(x)$): $P=(1+q_1)(1+q_2)$, $\Delta=\sqrt{P-c^2}$, $\beta=\operatorname{atan2}(\Delta,-c)
=\frac\pi2+\arcsin\frac c{\sqrt P}$, $J=\Delta+c\beta$ ($=2\pi C_{\rm relu}(1+q_1,1+q_2,c)$); see :func:`_gelu_C`.

Each formula is written once against a tiny namespace of operations (:data:`JAX_OPS`,
:data:`NUMPY_OPS` or :data:`SYMPY_OPS`, with the careful angle, arc-cosine and Mills-ratio primitives: all in
:mod:`kernelcalc.theory.duals_ops`) so the numeric and the symbolic paths share it.  This module holds the
formulas of each family and the recognition of an activation's closed form (:func:`closed_form_dual`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np
import sympy as sp

from .._x64 import float64
from .activations import Activation, X
# the operations namespaces and their primitives live in duals_ops; their names stay importable here
from .duals_ops import JAX_OPS, NUMPY_OPS, SYMPY_OPS  # noqa: F401
from .duals_gap import GapForm, homogeneous_gap, piecewise_polynomial_gap, relu_sum_gap
from .duals_pwl import pwl_joint, relu_sum, step_joint, step_sum
from .duals_taylor import pwp_at_variances, relu_sum_at_variances
from .duals_pwp import jumps as pwp_jumps, kink as pwp_kink, piecewise_polynomial, pwp_joint

__all__ = ["ClosedFormDual", "closed_form_dual", "JAX_OPS", "NUMPY_OPS", "SYMPY_OPS", "gaussian_moment"]


def _theta(o, q1, q2, c):
    return o.sqrt(q1 * q2), o.angle(q1, q2, c)


def _relu_C(o, q1, q2, c):
    n, t = _theta(o, q1, q2, c)
    return n / (2 * o.pi) * (o.sin(t) + (o.pi - t) * o.cos(t))


def _step_C(o, q1, q2, c):
    _, t = _theta(o, q1, q2, c)
    return (o.pi - t) / (2 * o.pi)


def _sign_C(o, q1, q2, c):
    r"""$E[\mathrm{sign}(a)\mathrm{sign}(b)]=\frac2\pi\arcsin\rho=1-\frac{2\theta}\pi$ (0 when a variance is 0:
    $\mathrm{sign}(0)=0$)."""
    _, t = _theta(o, q1, q2, c)
    return 1 - 2 * t / o.pi


def _zero_C(o, q1, q2, c):
    r"""$E[\phi'(a)\phi'(b)]$ for $\phi'=0$ almost everywhere (sign, Heaviside: the a.e. derivative)."""
    return 0 * c


def _erf_C(o, q1, q2, c):
    return 2 / o.pi * o.arcsin(2 * c / o.sqrt((1 + 2 * q1) * (1 + 2 * q2)))


def _erf_Cdot(o, q1, q2, c):
    return 4 / (o.pi * o.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c**2))


def _gelu_parts(o, q1, q2, c):
    r"""$P=(1+q_1)(1+q_2)$, $m=1+q_1+q_2$, $\Delta^2=m+\max(q_1q_2-c^2,0)$ ($=P-c^2$ for a valid covariance,
    written without the cancellation of $P-c^2$ at $c^2\to q_1q_2$, and clipped there like :func:`~kernelcalc.theory.duals_ops._angle`;
    $\Delta^2\ge1$), $\Delta$ and $\beta=\operatorname{atan2}(\Delta,-c)\in(0,\pi)$."""
    P, m = (1 + q1) * (1 + q2), 1 + q1 + q2
    d2 = m + o.nonneg(q1 * q2 - c**2)
    d = o.sqrt(d2)
    return P, m, d2, d, o.arctan2(d, -c)


def _gelu_C(o, q1, q2, c):
    r"""GELU $\phi(x)=x\Phi(x)$: $2\pi P\,C=q_1q_2J+m\,c\beta+c^2/\Delta$ (notation of :func:`_gelu_parts`,
    $J=\Delta+c\beta$ from :func:`~kernelcalc.theory.duals_ops._arc`).

    Derivation: $\dot C=E[\phi'(a)\phi'(b)]$ with $\phi'=\Phi+x\varphi$ is a sum of three Gaussian integrals:
    $E[\Phi(a)\Phi(b)]=P(\xi_1\le a,\xi_2\le b)=\frac14+\frac1{2\pi}\arcsin\frac c{\sqrt P}=\frac\beta{2\pi}$
    ($\xi_i$ independent standard normals: an orthant probability of $(a-\xi_1,b-\xi_2)$, covariance
    $[[1+q_1,c],[c,1+q_2]]$), $E[\Phi(a)\,b\varphi(b)]=\frac{c}{2\pi\Delta(1+q_2)}$ and
    $E[a\varphi(a)\,b\varphi(b)]=\frac{c}{2\pi\Delta^3}$ (a Gaussian integral against $e^{-(a^2+b^2)/2}$,
    $\det(I+\Sigma)=\Delta^2$).  $C$ is the antiderivative in $c$ (Price: $\partial_cC=\dot C$) with
    $C|_{c=0}=E[a\Phi(a)]E[b\Phi(b)]=\frac{q_1q_2}{2\pi\sqrt P}$ (Stein: $E[a\Phi(a)]=q_1E[\varphi(a)]$).
    It equals neural-tangents' ``stax.Gelu``,
    $C=\frac c4+\frac1{2\pi}\big(c\arcsin\frac c{\sqrt P}+\frac{c^2+q_1q_2\Delta^2}{P\Delta}\big)$, rewritten with
    $\frac c4+\frac{c}{2\pi}\arcsin\frac c{\sqrt P}=\frac{c\beta}{2\pi}$ and $P=q_1q_2+m$ so that no two terms
    cancel catastrophically: for $c\ge0$ all are $\ge0$; for $c<0$ the large terms $c\beta$ and
    $q_1q_2\Delta/P$ of that form cancel at large $q$ and $c\to-\sqrt{q_1q_2}$ (there $C=O(q^{-1/2})$ while
    they are $O(q^{1/2})$), which here is the cancellation inside $J$, done by its series.
    $q_1=0$ (a zero input, $c=0$): $C=0$."""
    return _gelu_C_given(o, _gelu_variance_parts(o, q1, q2), c)


def _gelu_variance_parts(o, q1, q2):
    r"""The parts of :func:`_gelu_C` that depend on the variances alone: $q_1q_2$, $m=1+q_1+q_2$, $2\pi P$."""
    return q1 * q2, 1 + q1 + q2, 2 * o.pi * ((1 + q1) * (1 + q2))


def _gelu_C_given(o, parts, c):
    r""":func:`_gelu_C` from its :func:`_gelu_variance_parts` (a Picard sweep at fixed variances computes those
    once: :attr:`ClosedFormDual.C_at_variances`); $\Delta$, $\beta$ as in :func:`_gelu_parts`."""
    qq, m, two_pi_P = parts
    c2 = c**2
    d = o.sqrt(m + o.nonneg(qq - c2))
    beta = o.arctan2(d, -c)
    return (qq * o.arc(c, d) + m * c * beta + c2 / d) / two_pi_P


def _gelu_at_variances(o, q1, q2):
    r"""gelu's ``C_at_variances``: $c\mapsto C$ at the fixed variances ``q1``, ``q2``."""
    return functools.partial(_gelu_C_given, o, _gelu_variance_parts(o, q1, q2))


def _gelu_joint(o, q1, q2, c):
    r"""(:func:`_gelu_C`, :func:`_gelu_Cdot`) sharing $\Delta$ and $\beta$ (the same formulas)."""
    qq, m, two_pi_P = _gelu_variance_parts(o, q1, q2)
    c2 = c**2
    d2 = m + o.nonneg(qq - c2)
    d = o.sqrt(d2)
    beta = o.arctan2(d, -c)
    C = (qq * o.arc(c, d) + m * c * beta + c2 / d) / two_pi_P
    return C, (beta + c / d * (1 / (1 + q1) + 1 / (1 + q2) + 1 / d2)) / (2 * o.pi)


def _gelu_Cdot(o, q1, q2, c):
    r"""GELU: $2\pi\dot C=\beta+\frac c\Delta\big(\frac1{1+q_1}+\frac1{1+q_2}+\frac1{\Delta^2}\big)$ (the three
    integrals of :func:`_gelu_C`; neural-tangents writes $\frac1{1+q_1}+\frac1{1+q_2}=1+\frac{1-q_1q_2}P$ and
    $\frac\beta{2\pi}=\frac14+\frac1{2\pi}\arcsin\frac c{\sqrt P}$).  $\dot C=\frac14$ at $c=0$."""
    _, _, d2, d, beta = _gelu_parts(o, q1, q2, c)
    return (beta + c / d * (1 / (1 + q1) + 1 / (1 + q2) + 1 / d2)) / (2 * o.pi)


def _sin_C(o, q1, q2, c):
    return o.exp(-(q1 + q2) / 2) * o.sinh(c)


def _cos_C(o, q1, q2, c):
    return o.exp(-(q1 + q2) / 2) * o.cosh(c)


def _elu_parts(o, q1, q2, c):
    r"""The Gaussian expectations of ELU's pieces (:func:`_elu`), each as a bivariate Mills ratio
    $R_2(h,k;\rho)=e^{Q(h,k;\rho)}\Phi_2(h,k;\rho)$ (:func:`~kernelcalc.theory.bivariate_normal.bivariate_mills`,
    $O(1)$ at every $q$: no $e^{q/2}\Phi_2$ product is formed).  With $s_i=\sqrt{q_i}$, tilting by $e^{a}$
    (mean $+q_1$ for $a$, $+c$ for $b$):

    $T=E[e^{a+b}\mathbb 1_{a<0,b<0}]=R_2(-(s_1+\rho s_2),-(s_2+\rho s_1);\rho)$,
    $B_1=E[e^{a}\mathbb 1_{a<0,b<0}]=R_2(-s_1,-\rho s_1;\rho)$,
    $D_1=E[e^{a}\mathbb 1_{a<0,b>0}]=R_2(-s_1,\rho s_1;-\rho)$ ($B_2$, $D_2$: 1 and 2 swapped).
    $B_1+D_1=E[e^a\mathbb 1_{a<0}]=M(s_1)$ (the Mills ratio $M(x)=e^{x^2/2}\Phi(-x)$), so only the smaller,
    $R_2(-s_1,|\rho|s_1;-|\rho|)$ ($D_1$ for $\rho\ge0$, $B_1$ for $\rho<0$), is integrated; the larger is
    $M(s_1)$ minus it (at least half of $M$: no cancellation).  Numerically each $R_2$ is evaluated from its
    whitened distances (:func:`~kernelcalc.theory.bivariate_whitened.bivariate_mills_whitened`, a 4- to 12-node
    Gauss rule per element): $(a,b)=(s_1r,s_2r)$ for $T$ and $(s_1r,0)$ at $-|\rho|$ for the smaller of $B_1, D_1$
    ($r=\sqrt{1-\rho^2}$), exact where $h, k$ formed first would cancel as $\rho\to\pm1$; at $\rho=1$,
    $T=M(s_1+s_2)$."""
    s1, s2 = o.sqrt(q1), o.sqrt(q2)
    r = o.corr(q1, q2, c)
    symbolic = isinstance(r, sp.Basic)
    ar = r if symbolic else abs(r)     # symbolic: the rho >= 0 form (the same expression for every rho)
    if symbolic:
        args = ((-(s1 + r * s2), -(s2 + r * s1), r), (-s1, ar * s1, -ar), (-s2, ar * s2, -ar))
        T, small1, small2 = (o.mills2(*a) for a in args)
    else:     # one evaluation of the three (one traced graph under jax), from the whitened distances
        rr = o.sqrt((1 - r) * (1 + r))
        one = r >= 1
        r_in = o.where(one, 0.0, r)
        args = ((s1 * rr, s2 * rr, r_in), (s1 * rr, 0 * s1, -ar), (s2 * rr, 0 * s2, -ar))
        T, small1, small2 = o.mills2_whitened(*(o.stack([a[i] for a in args]) for i in range(3)))
        T = o.where(one, o.mills(s1 + s2), T)      # rho = 1: b = (s2 / s1) a, T = M(s1 + s2)
    big1, big2 = o.mills(s1) - small1, o.mills(s2) - small2
    if symbolic:
        return s1, s2, r, T, big1, big2, small1, small2
    pos = r >= 0
    B1, B2 = o.where(pos, big1, small1), o.where(pos, big2, small2)
    D1, D2 = o.where(pos, small1, big1), o.where(pos, small2, big2)
    return s1, s2, r, T, B1, B2, D1, D2


def _elu(alpha: float) -> "ClosedFormDual":
    r"""ELU $\phi(x)=x$ ($x>0$), $\alpha(e^x-1)$ ($x\le0$); $\phi'=\mathbb 1_{x>0}+\alpha e^x\mathbb 1_{x<0}$.

    Write $\phi=\mathrm{relu}+\alpha g$, $g=(e^x-1)\mathbb 1_{x<0}$, and $T, B_i, D_i$ as in
    :func:`_elu_parts`, $P=E[\mathbb 1_{a>0,b>0}]=\frac{\pi-\theta}{2\pi}$:

    $\dot C=P+\alpha(D_1+D_2)+\alpha^2T$,

    $C=C_{\rm relu}+\alpha(X_{12}+X_{21})+\alpha^2(T-B_1-B_2+P)$, where Stein's lemma
    ($E[a\,h]=q_1E[\partial_ah]+cE[\partial_bh]$) gives
    $X_{12}=E[\mathrm{relu}(a)g(b)]=\frac{s_1}{\sqrt{2\pi}}\big(M(s_2\sqrt{1-\rho^2})-\frac12\big)+c\,D_2$
    and $X_{21}$ likewise with 1 and 2 swapped; $M(x)=e^{x^2/2}\Phi(-x)$ is the Mills ratio.

    Every term is $O(1)$ or $O(\sqrt q)$ (no exponentially large products), so the forms hold to
    $q=10^6$; the worst loss is in $X_{12}$ at large $q$, whose terms are $O(\sqrt q)$ and sum to $O(1)$
    (relative to $C=O(q)$ immaterial).  At small $q$, $g(b)\approx b$ and $E[g\,g]=O(q)$ is a sum of
    $O(1)$ terms: $10^{-16}/q$ absolute (relative to $C\approx q$: $10^{-15}$ at $q=0.1$)."""
    a = float(alpha)
    root2pi = math.sqrt(2 * math.pi)

    def joint(o, q1, q2, c):
        s1, s2, r, T, B1, B2, D1, D2 = _elu_parts(o, q1, q2, c)
        sr = o.sqrt((1 - r) * (1 + r))
        x12 = s1 / root2pi * (o.mills(s2 * sr) - 0.5) + c * D2
        x21 = s2 / root2pi * (o.mills(s1 * sr) - 0.5) + c * D1
        step = _step_C(o, q1, q2, c)
        return (_relu_C(o, q1, q2, c) + a * (x12 + x21) + a * a * (T - B1 - B2 + step),
                step + a * (D1 + D2) + a * a * T)

    return ClosedFormDual(f"elu({a:g})", lambda o, q1, q2, c: joint(o, q1, q2, c)[0],
                          lambda o, q1, q2, c: joint(o, q1, q2, c)[1], joint, points=_ELU_PRICE)


#: one numpy ELU (C, Cdot) costs about this many relu ones (three bivariate Mills ratios of 4-12 Gauss nodes,
#: each an erfcx): measured 45-62x over q in [0.1, 2e5], equal and unequal variances, all correlations
_ELU_PRICE = 50


def _double_factorial_odd(m: int) -> int:
    """(m)!! for odd m >= -1 (with (-1)!! = 1)."""
    return math.prod(range(m, 0, -2)) if m > 0 else 1


def gaussian_moment(i: int, j: int, q1, q2, c):
    r"""$E[a^i b^j]$ for centred Gaussian $(a,b)$ by Isserlis' theorem (exact, any backend)."""
    total = 0
    for k in range(min(i, j) + 1):
        if (i - k) % 2 or (j - k) % 2:
            continue
        coef = math.comb(i, k) * math.comb(j, k) * math.factorial(k) \
            * _double_factorial_odd(i - k - 1) * _double_factorial_odd(j - k - 1)
        total = total + coef * c**k * q1 ** ((i - k) // 2) * q2 ** ((j - k) // 2)
    return total


def _polynomial_dual(expr: sp.Expr) -> Callable:
    coeffs = sp.Poly(expr, X).as_dict()  # {(power,): coefficient}
    terms = [(int(p[0]), sp.nsimplify(v)) for p, v in coeffs.items()]

    def dual(o, q1, q2, c):
        total = 0
        for i, ai in terms:
            for j, bj in terms:
                coef = ai * bj if o is SYMPY_OPS else float(ai * bj)
                total = total + coef * gaussian_moment(i, j, q1, q2, c)
        return total + 0 * c  # broadcast constants

    return dual


@dataclasses.dataclass(frozen=True)
class ClosedFormDual:
    r"""A closed-form pair $(C, \dot C)$ as functions of $(q_1, q_2, c)$."""

    name: str
    C_formula: Callable
    Cdot_formula: Callable
    #: optional ``(ops, q1, q2, c) -> (C, Cdot)`` sharing the work of the two (same values as the pair)
    joint_formula: Callable | None = None
    #: optional ``(ops, q1, q2) -> (c -> C)``: $C$ at fixed variances, their parts computed once (same values)
    C_at_variances: Callable | None = None
    #: optional ``(q1, q2) -> (c -> (C, Cdot))`` (numpy): the pair at fixed variances for the many covariances of one
    #: Newton solve, each value the closed form's to rounding (a relu sum, a piecewise polynomial of degree 2: exact at
    #: anchors, Taylor updates between, :class:`~kernelcalc.theory.duals_taylor.TaylorAtVariances`)
    joint_at_variances: Callable | None = None
    #: the price of one numeric $(C,\dot C)$ evaluation in units of an elementary closed form (relu, gelu: 1),
    #: measured; the cost guards of the time solvers multiply it in (:attr:`~kernelcalc.theory.gaussian.DualKernels.points`)
    points: int = 1
    #: optional :class:`~kernelcalc.theory.duals_gap.GapForm`: $(C,\dot C)$ from $1-\rho$ and the drop between two
    #: correlations, accurate at $\rho\to1$ (a kink's near-parallel pairs: the deficit form of the kinked solver)
    gap_form: GapForm | None = None

    @float64
    def __call__(self, q1, q2, c, ops=None):
        r"""Numeric $(C, \\dot C)$ with jax.numpy (``ops=NUMPY_OPS``: with numpy); broadcasts over arrays."""
        ops = JAX_OPS if ops is None else ops
        if self.joint_formula is not None:
            return self.joint_formula(ops, q1, q2, c)
        return self.C_formula(ops, q1, q2, c), self.Cdot_formula(ops, q1, q2, c)

    def symbolic(self, q1, q2, c):
        r"""Symbolic $(C, \\dot C)$ as sympy expressions."""
        return self.C_formula(SYMPY_OPS, q1, q2, c), self.Cdot_formula(SYMPY_OPS, q1, q2, c)


def _leaky(alpha: float) -> ClosedFormDual:
    return _homogeneous(f"leaky_relu({float(alpha):g})", 1.0, float(alpha))


def _piecewise_linear(a: float, b: float) -> ClosedFormDual:
    r"""$\phi(z)=az$ ($z>0$), $bz$ ($z<0$): every positively homogeneous kink (relu $a,b=1,0$, leaky relu,
    abs $1,-1$, user ``Piecewise``).  $\phi=bz+(a-b)\,\mathrm{relu}(z)$ and $E[a\,\mathrm{relu}(b)]=c/2$ give
    $C=ab\,c+(a-b)^2C_{\rm relu}$, $\dot C=ab+(a-b)^2\dot C_{\rm relu}$."""
    return _homogeneous(f"piecewise linear({a:g}, {b:g})", a, b)


def _homogeneous(name: str, a: float, b: float) -> ClosedFormDual:
    r"""The dual of $\phi=bz+(a-b)\,\mathrm{relu}(z)$, with its gap form
    (:func:`~kernelcalc.theory.duals_gap.homogeneous_gap`)."""
    C = lambda o, q1, q2, c: a * b * c + (a - b) ** 2 * _relu_C(o, q1, q2, c)    # noqa: E731
    Cdot = lambda o, q1, q2, c: a * b + (a - b) ** 2 * _step_C(o, q1, q2, c)     # noqa: E731
    return ClosedFormDual(name, C, Cdot, gap_form=homogeneous_gap(a, b, C, Cdot))


def _relu_sum(rep) -> ClosedFormDual:
    r"""A continuous piecewise-linear $\phi=\alpha+\beta z+\sum_k\gamma_k(z-u_k)_+$ with a breakpoint away from 0
    (hardtanh, relu6, ...): :mod:`~kernelcalc.theory.duals_pwl`."""
    alpha, beta, us, gs = rep
    kinks = ", ".join(f"{g:g}@{u:g}" for u, g in zip(us, gs))
    return dataclasses.replace(_orthant_dual(f"relu sum({alpha:g} + {beta:g} x; {kinks})", pwl_joint, rep, len(us)),
                               gap_form=relu_sum_gap(rep),
                               joint_at_variances=relu_sum_at_variances(rep))


def _piecewise_polynomial(rep) -> ClosedFormDual:
    r"""A piecewise polynomial $\phi=P_0(z)+\sum_kD_k(z)\mathbb 1_{z>u_k}$ with a piece of degree $\ge2$ (hard-swish,
    squared relu, ...): :mod:`~kernelcalc.theory.duals_pwp`; a continuous one with the gap form of
    :func:`~kernelcalc.theory.duals_gap.piecewise_polynomial_gap` (one that jumps has none, as the step sums)."""
    p0, us, es = rep[:3]
    kinks = ", ".join(f"{u:g}" for u in us)
    dual = _orthant_dual(f"piecewise polynomial(degree {max(len(p0), *map(len, es)) - 1}; breakpoints {kinks})",
                         pwp_joint, rep, len(us))
    if pwp_jumps(rep):
        return dual
    return dataclasses.replace(dual, gap_form=piecewise_polynomial_gap(
        lambda q1, q2, omr: pwp_joint(NUMPY_OPS, rep, q1, q2, None, omr, True), us, [pwp_kink(e) for e in es]),
        joint_at_variances=pwp_at_variances(rep, lambda q1, q2, c, w: pwp_joint(NUMPY_OPS, rep, q1, q2, c, None, w)))


def _step_sum(rep) -> ClosedFormDual:
    r"""A piecewise-constant $\phi=\alpha+\sum_kc_k\mathbb 1_{z>u_k}$ with a jump away from 0 (``sign(x - 0.3)``,
    ``Heaviside(x - 1)``): :func:`~kernelcalc.theory.duals_pwl.step_joint` ($\dot C=0$, the derivative almost
    everywhere, as for ``sign``)."""
    alpha, us, cs = rep
    steps = ", ".join(f"{c:g}@{u:g}" for u, c in zip(us, cs))
    return _orthant_dual(f"step sum({alpha:g}; {steps})", step_joint, rep, len(us))


def _orthant_dual(name: str, joint, rep, breakpoints: int) -> ClosedFormDual:
    """The :class:`ClosedFormDual` of ``joint(o, rep, q1, q2, c) -> (C, Cdot)`` (:mod:`.duals_pwl`)."""
    return ClosedFormDual(name, lambda o, q1, q2, c: joint(o, rep, q1, q2, c)[0],
                          lambda o, q1, q2, c: joint(o, rep, q1, q2, c)[1],
                          lambda o, q1, q2, c: joint(o, rep, q1, q2, c), points=_relu_sum_price(breakpoints))


def _relu_sum_price(kinks: int) -> int:
    """The price of :func:`_relu_sum` in relu evaluations (``kinks**2`` bivariate normal CDFs): measured (numpy,
    1e5 random pairs, q in [0.5, 20]) 7.5 for one kink (shifted relu), 37-48 for two (hardtanh, relu6), 86 for three."""
    return 10 * kinks * kinks


_NAMED = {
    "relu": lambda act: ClosedFormDual("relu", _relu_C, _step_C, gap_form=homogeneous_gap(1.0, 0.0, _relu_C, _step_C)),
    "leaky_relu": lambda act: _leaky(act.param("alpha")),
    "erf": lambda act: ClosedFormDual("erf", _erf_C, _erf_Cdot),
    "gelu": lambda act: ClosedFormDual("gelu", _gelu_C, _gelu_Cdot, _gelu_joint, C_at_variances=_gelu_at_variances),
    "sin": lambda act: ClosedFormDual("sin", _sin_C, _cos_C),
    "cos": lambda act: ClosedFormDual("cos", _cos_C, _sin_C),
    "elu": lambda act: _elu(act.param("alpha")),
}
#: jump activations with closed forms (their a.e. derivative is 0): expression -> dual
_JUMPS = {sp.sign(X): lambda: ClosedFormDual("sign", _sign_C, _zero_C),
          sp.Heaviside(X): lambda: ClosedFormDual("Heaviside", _step_C, _zero_C)}
_REFERENCE_EXPR = {"relu": sp.Max(0, X), "erf": sp.erf(X), "gelu": X * (1 + sp.erf(X / sp.sqrt(2))) / 2,
                   "sin": sp.sin(X), "cos": sp.cos(X)}
#: functions an expression must contain to be compared with a reference (skips a useless ``simplify``)
_REFERENCE_NEEDS = {"gelu": (sp.erf, sp.erfc)}


_PROBE_POINTS = np.array([-2.3, -1.1, -0.4, 0.3, 0.9, 1.7])


def _values_at_probes(expr: sp.Expr) -> np.ndarray | None:
    """``expr`` at :data:`_PROBE_POINTS` (floats), or ``None`` where it does not evaluate to real numbers."""
    try:
        return np.array([complex(expr.subs(X, float(z)).evalf()) for z in _PROBE_POINTS])
    except (TypeError, ValueError, AttributeError, ZeroDivisionError):
        return None


def _differs_numerically(values: np.ndarray | None, ref: sp.Expr) -> bool:
    r"""Whether the values of an expression at the probe points (``values``) differ from ``ref``'s by more than
    rounding: then the two are not equal and a ``simplify`` of their difference (0.1-0.5 s) is skipped.  Sound:
    equal expressions agree at every point; ``None`` (not evaluated) never counts as a difference."""
    other = _values_at_probes(ref)
    if values is None or other is None or not (np.all(np.isfinite(values)) and np.all(np.isfinite(other))):
        return False
    return bool(np.any(np.abs(values - other) > 1e-9 * (1.0 + np.abs(other))))


def _elu_alpha(expr: sp.Expr) -> float | None:
    r"""$\alpha$ when ``expr`` is ELU ($x$ for $x>0$, $\alpha(e^x-1)$ for $x<0$), else ``None``: proved
    symbolically on each half-line; on $x<0$, $g=\phi$ is $\alpha(e^x-1)$ exactly when $g'-g$ is a constant
    $\alpha$ and $g(0^-)=0$ (the unique solution of that linear ODE)."""
    values = _values_at_probes(expr)
    if values is not None and np.all(np.isfinite(values)):   # a necessary condition first (cheap): x on x > 0 and
        z = _PROBE_POINTS                                     # phi / (e^x - 1) one constant on x < 0
        ratio = values[z < 0] / np.expm1(z[z < 0])
        if np.any(np.abs(values[z > 0] - z[z > 0]) > 1e-9 * (1 + z[z > 0])) or np.ptp(ratio.real) > 1e-9 * (
                1 + np.max(np.abs(ratio))) or np.any(np.abs(ratio.imag) > 0):
            return None
    pos, neg = sp.Symbol("x_pos", positive=True), sp.Symbol("x_neg", negative=True)
    try:
        if sp.simplify(expr.subs(X, pos) - pos) != 0:
            return None
        g = expr.subs(X, neg)
        alpha = sp.simplify(sp.diff(g, neg) - g)
        if alpha.free_symbols or not alpha.is_number or sp.simplify(g.subs(neg, 0)) != 0:
            return None
        value = float(alpha)
    except (TypeError, ValueError, AttributeError):
        return None
    return value if math.isfinite(value) and value != 0 else None


@functools.lru_cache(maxsize=256)
def closed_form_dual(activation: Activation) -> ClosedFormDual | None:
    r"""The closed-form dual of ``activation`` if one is known, else ``None``.

    Recognises built-ins and user expressions equal to them (``Max(0, x)``, ``erf(x)``,
    ``x*(1+erf(x/sqrt(2)))/2``, also written with ``erfc``, ``sin(x)``, ``cos(x)``; equality proved by sympy:
    a float approximation such as ``erf(0.7071*x)`` or the tanh approximation of GELU is not recognised)
    and every polynomial (``identity``, ``quadratic``, ``x**3 - x`` ...), and the jumps ``sign(x)`` and
    ``Heaviside(x)`` (with $\dot C=0$: their derivative almost everywhere, see :attr:`Activation.derivative`).
    """
    if activation.builtin in _NAMED:
        return _NAMED[activation.builtin](activation)
    if activation.is_polynomial:
        deriv = activation.derivative
        return ClosedFormDual(f"polynomial({activation.expr})", _polynomial_dual(activation.expr),
                              _polynomial_dual(deriv))
    if activation.builtin is not None:  # a built-in without a closed form
        return None
    if activation.expr in _JUMPS:
        return _JUMPS[activation.expr]()
    values = _values_at_probes(activation.expr)
    for key, ref in _REFERENCE_EXPR.items():
        if key in _REFERENCE_NEEDS and not activation.expr.has(*_REFERENCE_NEEDS[key]):
            continue
        if _differs_numerically(values, ref):
            continue
        if sp.simplify((activation.expr - ref).rewrite(sp.erf)) == 0:
            return _NAMED[key](activation)
    if activation.is_piecewise_smooth:
        alpha = _elu_alpha(activation.expr)
        if alpha is not None:                                                     # a user-typed ELU
            return _elu(alpha)
    if activation.is_piecewise_smooth and activation.is_positively_homogeneous:   # abs, user leaky relu ...
        return _piecewise_linear(float(activation.numpy_fn(np.array(1.0))), float(-activation.numpy_fn(np.array(-1.0))))
    if activation.is_piecewise_smooth:    # hardtanh, relu6, shifted relu, user Piecewise; sign(x - 0.3), steps
        parse, make = (step_sum, _step_sum) if activation.jumps else (relu_sum, _relu_sum)
        rep = parse(activation.expr)
        if rep is not None:
            return make(rep)
        rep = piecewise_polynomial(activation.expr)       # hard-swish, squared relu: polynomial pieces
        if rep is not None:
            return _piecewise_polynomial(rep)
    return None
