r"""Closed-form dual kernels $C = E[\phi(a)\phi(b)]$, $\dot C = E[\phi'(a)\phi'(b)]$.

$(a, b)$ is centred Gaussian with $\mathrm{Var}\,a = q_1$, $\mathrm{Var}\,b = q_2$,
$\mathrm{Cov}(a,b) = c$; write $n=\sqrt{q_1q_2}$, $\cos\theta = c/n$.

=============  ====================================================  ==========================================
activation     $C$                                                   $\dot C$
=============  ====================================================  ==========================================
relu           $\frac{n}{2\pi}(\sin\theta + (\pi-\theta)\cos\theta)$  $\frac{\pi-\theta}{2\pi}$
leaky_relu     $\alpha c + (1-\alpha)^2 C_{\rm relu}$                $\alpha + (1-\alpha)^2\dot C_{\rm relu}$
erf            $\frac2\pi\arcsin\frac{2c}{\sqrt{(1+2q_1)(1+2q_2)}}$  $\frac{4}{\pi\sqrt{(1+2q_1)(1+2q_2)-4c^2}}$
sin            $e^{-(q_1+q_2)/2}\sinh c$                              $e^{-(q_1+q_2)/2}\cosh c$
cos            $e^{-(q_1+q_2)/2}\cosh c$                              $e^{-(q_1+q_2)/2}\sinh c$
polynomial     Isserlis: $E[a^ib^j]=\sum_k\binom ik\binom jk k!\,c^k(i-k-1)!!\,q_1^{\frac{i-k}2}(j-k-1)!!\,q_2^{\frac{j-k}2}$
=============  ====================================================  ==========================================

Each formula is written once against a tiny namespace of operations (:data:`JAX_OPS`,
:data:`NUMPY_OPS` or :data:`SYMPY_OPS`) so the numeric and the symbolic paths share it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from types import SimpleNamespace
from typing import Callable

import numpy as np
import sympy as sp

from .._x64 import float64
from .activations import Activation, X

__all__ = ["ClosedFormDual", "closed_form_dual", "JAX_OPS", "NUMPY_OPS", "SYMPY_OPS", "gaussian_moment"]


def _angle(xp):
    r"""$\theta=\arccos\rho$, $\rho=c/\sqrt{q_1q_2}$, as $2\operatorname{atan2}(\sqrt{1-\rho},\sqrt{1+\rho})$
    (``xp``: numpy or jax.numpy): accurate at both ends and exact ($\theta=0$) for identical inputs
    ($\sqrt{q\cdot q}=q$ in IEEE arithmetic, so $\rho=1$), where arccos of a rounded $1-\epsilon$ (or an
    FMA-contracted $q_1q_2-c^2$) would give $\sqrt{2\epsilon}\approx2\cdot10^{-8}$; $\pi/2$ (independent)
    when a variance is 0."""

    def angle(q1, q2, c):
        n = xp.sqrt(q1 * q2)
        rho = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
        return 2.0 * xp.arctan2(xp.sqrt(1.0 - rho), xp.sqrt(1.0 + rho))

    return angle


def _array_ops(xp) -> SimpleNamespace:
    """The operations of the closed forms for the array module ``xp`` (numpy or jax.numpy)."""
    return SimpleNamespace(sqrt=xp.sqrt, arccos=xp.arccos, arcsin=xp.arcsin, exp=xp.exp,
                           sinh=xp.sinh, cosh=xp.cosh, sin=xp.sin, cos=xp.cos, pi=math.pi,
                           clip_unit=lambda r: xp.clip(r, -1.0, 1.0), angle=_angle(xp))


class _JaxOps:
    """:func:`_array_ops` of jax.numpy, built on first use (importing this module does not import jax)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        import jax.numpy as jnp

        ops = _array_ops(jnp)
        self.__dict__.update(vars(ops))
        return getattr(ops, name)


JAX_OPS = _JaxOps()
NUMPY_OPS = _array_ops(np)
SYMPY_OPS = SimpleNamespace(sqrt=sp.sqrt, arccos=sp.acos, arcsin=sp.asin, exp=sp.exp, sinh=sp.sinh,
                            cosh=sp.cosh, sin=sp.sin, cos=sp.cos, pi=sp.pi, clip_unit=lambda r: r,
                            angle=lambda q1, q2, c: sp.acos(c / sp.sqrt(q1 * q2)))


def _theta(o, q1, q2, c):
    return o.sqrt(q1 * q2), o.angle(q1, q2, c)


def _relu_C(o, q1, q2, c):
    n, t = _theta(o, q1, q2, c)
    return n / (2 * o.pi) * (o.sin(t) + (o.pi - t) * o.cos(t))


def _step_C(o, q1, q2, c):
    _, t = _theta(o, q1, q2, c)
    return (o.pi - t) / (2 * o.pi)


def _erf_C(o, q1, q2, c):
    return 2 / o.pi * o.arcsin(2 * c / o.sqrt((1 + 2 * q1) * (1 + 2 * q2)))


def _erf_Cdot(o, q1, q2, c):
    return 4 / (o.pi * o.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c**2))


def _sin_C(o, q1, q2, c):
    return o.exp(-(q1 + q2) / 2) * o.sinh(c)


def _cos_C(o, q1, q2, c):
    return o.exp(-(q1 + q2) / 2) * o.cosh(c)


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

    @float64
    def __call__(self, q1, q2, c, ops=None):
        r"""Numeric $(C, \\dot C)$ with jax.numpy (``ops=NUMPY_OPS``: with numpy); broadcasts over arrays."""
        ops = JAX_OPS if ops is None else ops
        return self.C_formula(ops, q1, q2, c), self.Cdot_formula(ops, q1, q2, c)

    def symbolic(self, q1, q2, c):
        r"""Symbolic $(C, \\dot C)$ as sympy expressions."""
        return self.C_formula(SYMPY_OPS, q1, q2, c), self.Cdot_formula(SYMPY_OPS, q1, q2, c)


def _leaky(alpha: float) -> ClosedFormDual:
    a = float(alpha)
    return ClosedFormDual(
        f"leaky_relu({a:g})",
        lambda o, q1, q2, c: a * c + (1 - a) ** 2 * _relu_C(o, q1, q2, c),
        lambda o, q1, q2, c: a + (1 - a) ** 2 * _step_C(o, q1, q2, c),
    )


_NAMED = {
    "relu": lambda act: ClosedFormDual("relu", _relu_C, _step_C),
    "leaky_relu": lambda act: _leaky(act.param("alpha")),
    "erf": lambda act: ClosedFormDual("erf", _erf_C, _erf_Cdot),
    "sin": lambda act: ClosedFormDual("sin", _sin_C, _cos_C),
    "cos": lambda act: ClosedFormDual("cos", _cos_C, _sin_C),
}
_REFERENCE_EXPR = {"relu": sp.Max(0, X), "erf": sp.erf(X), "sin": sp.sin(X), "cos": sp.cos(X)}


@functools.lru_cache(maxsize=256)
def closed_form_dual(activation: Activation) -> ClosedFormDual | None:
    """The closed-form dual of ``activation`` if one is known, else ``None``.

    Recognises built-ins and user expressions equal to them (``Max(0, x)``, ``erf(x)``,
    ``sin(x)``, ``cos(x)``) and every polynomial (``identity``, ``quadratic``, ``x**3 - x`` ...).
    """
    if activation.builtin in _NAMED:
        return _NAMED[activation.builtin](activation)
    if activation.is_polynomial:
        deriv = activation.derivative
        return ClosedFormDual(f"polynomial({activation.expr})", _polynomial_dual(activation.expr),
                              _polynomial_dual(deriv))
    if activation.builtin is not None:  # a built-in without a closed form
        return None
    for key, ref in _REFERENCE_EXPR.items():
        if sp.simplify(activation.expr - ref) == 0:
            return _NAMED[key](activation)
    return None
