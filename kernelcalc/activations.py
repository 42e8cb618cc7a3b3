r"""Activations: one symbolic definition, derived derivatives, numeric callables.

An :class:`Activation` is a sympy expression $\phi(x)$ in the real symbol ``x``.
Everything else is *derived* from it: $\phi'$ and $\phi''$ symbolically, numpy and
jax callables by ``lambdify``, and the Assumption-1 analysis (see
:mod:`kernelcalc.assumptions`).  Built-ins may carry hand-written numerically stable
jax implementations (e.g. ``softplus = logaddexp(0, x)``); these must agree with the
symbolic expression, which remains the definition (checked in the tests).

Example::

    >>> from kernelcalc import Activation
    >>> Activation.from_name("softplus").derivative
    exp(x)/(exp(x) + 1)
    >>> Activation.from_expr("log(1+exp(x))").is_polynomial
    False
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Mapping

import numpy as np
import sympy as sp

__all__ = ["Activation", "ActivationError", "BUILTIN_NAMES", "resolve_activation", "X"]

#: The real symbol every activation is written in.
X = sp.Symbol("x", real=True)


class ActivationError(ValueError):
    """Bad activation specification (unknown name, unparsable expression, bad parameter)."""


def _stable_jax_overrides() -> dict[str, tuple[Callable, Callable]]:
    import jax.numpy as jnp
    from jax.nn import sigmoid as jsig

    return {
        "softplus": (lambda x: jnp.logaddexp(0.0, x), lambda x: jsig(x)),
        "sigmoid": (jsig, lambda x: jsig(x) * jsig(-x)),
        "silu": (lambda x: x * jsig(x), lambda x: jsig(x) * (1.0 + x * jsig(-x))),
    }


def _builtin_expr(name: str, params: Mapping[str, float]) -> sp.Expr:
    x = X
    alpha = sp.nsimplify(params.get("alpha", 0.0))
    table = {
        "relu": lambda: sp.Max(0, x),
        "leaky_relu": lambda: sp.Piecewise((x, x >= 0), (alpha * x, True)),
        "softplus": lambda: sp.log(1 + sp.exp(x)),
        "tanh": lambda: sp.tanh(x),
        "sigmoid": lambda: 1 / (1 + sp.exp(-x)),
        "erf": lambda: sp.erf(x),
        "gelu": lambda: x * (1 + sp.erf(x / sp.sqrt(2))) / 2,
        "silu": lambda: x / (1 + sp.exp(-x)),
        "sin": lambda: sp.sin(x),
        "cos": lambda: sp.cos(x),
        "elu": lambda: sp.Piecewise((x, x >= 0), (alpha * (sp.exp(x) - 1), True)),
        "quadratic": lambda: x**2,
        "identity": lambda: x,
    }
    return table[name]()


#: name -> default parameters.
_BUILTINS: dict[str, dict[str, float]] = {
    "relu": {},
    "leaky_relu": {"alpha": 0.01},
    "softplus": {},
    "tanh": {},
    "sigmoid": {},
    "erf": {},
    "gelu": {},
    "silu": {},
    "sin": {},
    "cos": {},
    "elu": {"alpha": 1.0},
    "quadratic": {},
    "identity": {},
}
_ALIASES = {"swish": "silu", "linear": "identity", "square": "quadratic", "leakyrelu": "leaky_relu"}

BUILTIN_NAMES: tuple[str, ...] = tuple(_BUILTINS) + tuple(_ALIASES)


def _lambdify(expr: sp.Expr, backend: str) -> Callable:
    if backend == "numpy":
        import scipy.special as ss

        modules = [{"erf": ss.erf, "erfc": ss.erfc, "Heaviside": _np_heaviside}, "numpy"]
    else:
        import jax.numpy as jnp
        import jax.scipy.special as jss

        modules = [{"erf": jss.erf, "erfc": jss.erfc,
                    "Heaviside": lambda x, h0=0.5: jnp.where(x > 0, 1.0, jnp.where(x < 0, 0.0, h0))},
                   "jax"]
    f = sp.lambdify(X, expr, modules=modules)
    if expr.free_symbols:  # ensure array-valued output even for constant expressions
        return f
    value = float(expr)
    if backend == "numpy":
        return lambda x: np.full(np.shape(x), value)
    import jax.numpy as jnp

    return lambda x: jnp.full(jnp.shape(x), value)


def _np_heaviside(x, h0=0.5):
    return np.heaviside(x, h0)


@dataclasses.dataclass(frozen=True)
class Activation:
    r"""An activation function $\phi:\mathbb R\to\mathbb R$ defined by a sympy expression.

    **Fields:**

    - ``name``: display name (a built-in name, or the expression's text).
    - ``expr``: the sympy expression in :data:`X` (the real symbol ``x``).
    - ``params``: parameters of a built-in, as sorted ``(name, value)`` pairs
      (e.g. ``(("alpha", 0.01),)`` for ``leaky_relu``).
    - ``builtin``: the built-in family name, or ``None`` for a user expression.

    Build with :meth:`from_name`, :meth:`from_expr` or :func:`resolve_activation`.
    """

    name: str
    expr: sp.Expr
    params: tuple[tuple[str, float], ...] = ()
    builtin: str | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_name(cls, name: str, **params: float) -> "Activation":
        """A built-in activation by name (``relu``, ``softplus``, ...), e.g. ``from_name("elu", alpha=0.5)``."""
        key = name.strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in _BUILTINS:
            raise ActivationError(
                f"unknown activation {name!r}; known: {', '.join(sorted(BUILTIN_NAMES))} "
                "(or a sympy expression in x, e.g. 'log(1+exp(x))')")
        merged = dict(_BUILTINS[key])
        for k, v in params.items():
            if k not in merged:
                raise ActivationError(f"activation {key!r} takes no parameter {k!r}"
                                      + (f"; it takes {sorted(merged)}" if merged else ""))
            v = float(v)
            if not np.isfinite(v):
                raise ActivationError(f"activation parameter {k}={v} must be finite")
            merged[k] = v
        shown = key if merged == _BUILTINS[key] else f"{key}({', '.join(f'{k}={v:g}' for k, v in sorted(merged.items()))})"
        return cls(name=shown, expr=_builtin_expr(key, merged), params=tuple(sorted(merged.items())), builtin=key)

    @classmethod
    def from_expr(cls, expr: "str | sp.Expr", name: str | None = None) -> "Activation":
        """A user activation from a sympy expression or a sympy-parsable string in ``x``."""
        if isinstance(expr, str):
            text = expr.strip()
            if not text:
                raise ActivationError("empty activation expression")
            try:
                parsed = sp.sympify(text, locals={"x": X, "erf": sp.erf, "Max": sp.Max, "Min": sp.Min})
            except (sp.SympifyError, SyntaxError, TypeError, AttributeError, TokenError_) as err:
                raise ActivationError(f"cannot parse activation expression {text!r}: {err}") from None
            display = name or text
        elif isinstance(expr, sp.Basic):
            parsed = expr
            display = name or str(expr)
        else:
            raise ActivationError(f"activation expression must be a string or sympy expression, got {type(expr).__name__}")
        if not isinstance(parsed, sp.Expr):
            raise ActivationError(f"activation expression {expr!r} is not a scalar expression")
        # Replace any symbol called x (e.g. a plain Symbol('x') from the user) by the real X.
        subs = {s: X for s in parsed.free_symbols if s.name == "x"}
        parsed = parsed.subs(subs)
        other = sorted(str(s) for s in parsed.free_symbols if s != X)
        if other:
            raise ActivationError(f"activation expression {str(expr)!r} must depend on x only; found {other}")
        if parsed.has(sp.I) or parsed.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
            raise ActivationError(f"activation expression {str(expr)!r} is not a finite real expression")
        return cls(name=display, expr=parsed, params=(), builtin=None)

    # ------------------------------------------------------------------ symbolic
    @functools.cached_property
    def derivative(self) -> sp.Expr:
        r"""$\phi'(x)$, derived symbolically."""
        return sp.diff(self.expr, X)

    @functools.cached_property
    def second_derivative(self) -> sp.Expr:
        r"""$\phi''(x)$, derived symbolically (may contain ``DiracDelta`` at kinks)."""
        return sp.diff(self.derivative, X)

    @functools.cached_property
    def is_polynomial(self) -> bool:
        r"""True when $\\phi$ is a polynomial in x."""
        return bool(self.expr.is_polynomial(X))

    @functools.cached_property
    def polynomial_degree(self) -> int | None:
        r"""Degree of $\\phi$ when it is a polynomial, else ``None``."""
        return int(sp.Poly(self.expr, X).degree()) if self.is_polynomial else None

    @functools.cached_property
    def is_piecewise_smooth(self) -> bool:
        r"""True when $\phi$ or $\phi'$ has kinks/jumps (Max, Abs, Piecewise, Heaviside, sign ...).

        Such activations need closed forms or kink-aware quadrature: plain quadrature on a
        smooth rule converges only algebraically across a kink.
        """
        nonsmooth = (sp.Piecewise, sp.Heaviside, sp.Abs, sp.sign, sp.Max, sp.Min, sp.DiracDelta,
                     sp.floor, sp.ceiling)
        return any(self.expr.has(t) or self.derivative.has(t) for t in nonsmooth)

    def param(self, key: str, default: float | None = None) -> float | None:
        return dict(self.params).get(key, default)

    # ------------------------------------------------------------------ numeric
    @functools.cached_property
    def numpy_fn(self) -> Callable[[np.ndarray], np.ndarray]:
        r"""$\\phi$ as a numpy callable (lambdified)."""
        return _lambdify(self.expr, "numpy")

    @functools.cached_property
    def numpy_derivative(self) -> Callable[[np.ndarray], np.ndarray]:
        r"""$\\phi'$ as a numpy callable (lambdified)."""
        return _lambdify(self.derivative, "numpy")

    @functools.cached_property
    def jax_fn(self) -> Callable:
        r"""$\\phi$ as a jax callable (stable hand-written form for some built-ins)."""
        over = _stable_jax_overrides().get(self.builtin or "")
        return over[0] if over else _lambdify(self.expr, "jax")

    @functools.cached_property
    def jax_derivative(self) -> Callable:
        r"""$\\phi'$ as a jax callable (stable hand-written form for some built-ins)."""
        over = _stable_jax_overrides().get(self.builtin or "")
        return over[1] if over else _lambdify(self.derivative, "jax")

    def __call__(self, x):
        return self.jax_fn(x)

    # ------------------------------------------------------------------ analysis
    def analysis(self):
        """The Assumption-1 report (see :func:`kernelcalc.assumptions.analyse`)."""
        from .assumptions import analyse

        return analyse(self)

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        return {"name": self.name, "expr": str(self.expr), "params": dict(self.params), "builtin": self.builtin}


try:  # sympy's tokenizer error type moved between versions
    from tokenize import TokenError as TokenError_
except ImportError:  # pragma: no cover
    TokenError_ = SyntaxError

_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\-]*)\s*(?:\((.*)\))?\s*$")


def resolve_activation(spec: "str | sp.Expr | Activation") -> Activation:
    """Turn a user's activation spec into an :class:`Activation`.

    Accepts an :class:`Activation`; a built-in name (``"softplus"``); a built-in with
    parameters (``"elu(alpha=0.5)"``, ``"leaky_relu(0.2)"``); or any sympy expression in
    ``x`` (``"log(1+exp(x))"``) or a sympy expression object.
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, sp.Basic):
        return Activation.from_expr(spec)
    if not isinstance(spec, str):
        raise ActivationError(f"activation must be a name, expression or Activation, got {type(spec).__name__}")
    m = _SPEC.match(spec)
    if m:
        key = _ALIASES.get(m.group(1).lower().replace("-", "_"), m.group(1).lower().replace("-", "_"))
        # "tanh(x/2)", "sin(2*x)": a built-in's name applied to an expression in x is an expression.
        if key in _BUILTINS and not (m.group(2) and re.search(r"\bx\b", m.group(2))):
            params: dict[str, float] = {}
            if m.group(2):
                for i, part in enumerate(p.strip() for p in m.group(2).split(",") if p.strip()):
                    k, _, v = part.rpartition("=")
                    k = k.strip() or (list(_BUILTINS[key])[i] if i < len(_BUILTINS[key]) else "?")
                    try:
                        params[k] = float(v)
                    except ValueError:
                        raise ActivationError(f"bad parameter {part!r} in activation {spec!r}") from None
            return Activation.from_name(key, **params)
        if not m.group(2) and key != "x":
            raise ActivationError(
                f"unknown activation {spec!r}; known: {', '.join(sorted(BUILTIN_NAMES))} "
                "(or a sympy expression in x, e.g. 'log(1+exp(x))')")
    return Activation.from_expr(spec)
