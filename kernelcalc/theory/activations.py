r"""Activations: one symbolic definition, derived derivatives, numeric callables.

An :class:`Activation` is a sympy expression $\phi(x)$ in the real symbol ``x``.
Everything else is *derived* from it: $\phi'$ and $\phi''$ symbolically, numpy and
jax callables by ``lambdify``, and the Assumption-1 analysis (see
:mod:`kernelcalc.theory.assumptions`).  Built-ins may carry hand-written numerically stable
jax implementations (e.g. ``softplus = logaddexp(0, x)``); these must agree with the
symbolic expression, which remains the definition (checked in the tests).

Activation *text* (``"log(1+exp(x))"``, ``"elu(alpha=0.5)"``) is read by a whitelist parser,
:func:`parse_expression` (in :mod:`kernelcalc.theory._activation_text`, with the symbol ``x`` and the
built-in families): Python's ``ast`` restricted to numbers, ``x``, ``pi``, ``E``, arithmetic and a fixed
table of functions, from which the sympy expression is built directly.  No text is ever passed to
``eval``, ``sympify`` or ``parse_expr``.

Example::

    >>> from kernelcalc import Activation
    >>> Activation.from_name("softplus").derivative
    exp(x)/(exp(x) + 1)
    >>> Activation.from_expr("log(1+exp(x))").is_polynomial
    False
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import re
import warnings
from typing import Callable

import numpy as np
import sympy as sp

# the symbol, the built-ins and the parser of activation text (re-exported here: their historical home)
from ._activation_text import (_ALIASES, _BUILTINS, _CONSTANTS, _FUNCTIONS, _HINT, BUILTIN_NAMES,  # noqa: F401
                               MAX_DEPTH, MAX_EXPONENT, MAX_TEXT_LENGTH, ActivationError, X, _build, _Builder,
                               _builtin_expr, _parse_tree, _Rejected, _shown, parse_expression)

__all__ = ["Activation", "ActivationError", "BUILTIN_NAMES", "parse_expression", "resolve_activation", "X",
           "array_functions"]


@functools.lru_cache(maxsize=256)
def _homogeneous(expr: sp.Expr) -> bool:
    """Symbolic proof of :attr:`Activation.is_positively_homogeneous` on each half-line."""
    p = sp.Symbol("p", positive=True)
    try:
        return bool(expr.subs(X, 0) == 0) and all(
            sp.simplify(expr.subs(X, s * p) - p * expr.subs(X, s)) == 0 for s in (1, -1))
    except (TypeError, ValueError):  # pragma: no cover  (an expression sympy cannot compare)
        return False


@functools.lru_cache(maxsize=256)
def _odd(expr: sp.Expr) -> bool:
    r"""Symbolic proof of :attr:`Activation.is_odd`: $\phi(-x)+\phi(x)$ simplifies to 0, or (a piecewise $\phi$, whose
    sum sympy leaves as unreachable branches: hardtanh ``Max(-1, Min(1, x))``) piece by piece (:func:`_odd_by_pieces`)."""
    try:
        if sp.simplify(expr.subs(X, -X) + expr) == 0:
            return True
    except (TypeError, ValueError):  # pragma: no cover  (an expression sympy cannot compare)
        return False
    return _odd_by_pieces(expr)


def _odd_by_pieces(expr: sp.Expr) -> bool:
    r"""Whether the smooth pieces of ``expr`` (:func:`._piecewise._pieces`) mirror each other: the $k$-th from the left
    on $(a,b)$ and the $k$-th from the right on $(-b,-a)$, with $p_k(x)+p'_k(-x)$ simplifying to 0 (odd almost
    everywhere: the values at the breakpoints do not enter a Gaussian expectation)."""
    from ._piecewise import pieces_or_none

    pieces = pieces_or_none(expr) if expr.has(sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign) else None
    if pieces is None:
        return False
    try:
        return all(bool(p.a == -m.b) and bool(p.b == -m.a) and sp.simplify(p.expr + m.expr.subs(X, -X)) == 0
                   for p, m in zip(pieces, reversed(pieces)))
    except (TypeError, ValueError, NotImplementedError):
        return False



def _stable_jax_overrides() -> dict[str, tuple[Callable, Callable]]:
    import jax.numpy as jnp
    from jax.nn import sigmoid as jsig

    return {
        "softplus": (lambda x: jnp.logaddexp(0.0, x), lambda x: jsig(x)),
        "sigmoid": (jsig, lambda x: jsig(x) * jsig(-x)),
        "silu": (lambda x: x * jsig(x), lambda x: jsig(x) * (1.0 + x * jsig(-x))),
    }


def _np_sigmoid(x):
    with np.errstate(over="ignore"):            # exp(-x) = inf for x < -709: the value 0 is right
        return 1.0 / (1.0 + np.exp(-x))


def _stable_numpy_overrides() -> dict[str, tuple[Callable, Callable]]:
    """The numpy twins of :func:`_stable_jax_overrides` (same formulas)."""
    return {
        "softplus": (lambda x: np.logaddexp(0.0, x), _np_sigmoid),
        "sigmoid": (_np_sigmoid, lambda x: _np_sigmoid(x) * _np_sigmoid(-x)),
        "silu": (lambda x: x * _np_sigmoid(x), lambda x: _np_sigmoid(x) * (1.0 + x * _np_sigmoid(-x))),
    }


def array_functions(activation: "Activation", backend: str) -> tuple[Callable, Callable]:
    r"""$(\phi, \phi')$ of ``activation`` as array functions for ``backend`` ``"jax"`` (:attr:`Activation.jax_fn`,
    :attr:`Activation.jax_derivative`) or ``"numpy"`` (the same stable formulas as the jax ones for softplus,
    sigmoid and silu, else :attr:`Activation.numpy_fn`, :attr:`Activation.numpy_derivative`)."""
    if backend == "jax":
        return activation.jax_fn, activation.jax_derivative
    if backend != "numpy":
        raise ValueError(f"backend must be 'jax' or 'numpy', got {backend!r}")
    over = _stable_numpy_overrides().get(activation.builtin or "")
    return over if over else (activation.numpy_fn, activation.numpy_derivative)


def _lambdify(expr: sp.Expr, backend: str) -> Callable:
    if backend == "numpy":
        modules = [{"Heaviside": _np_heaviside}, "numpy"]
        if expr.has(sp.erf, sp.erfc):   # scipy.special only when needed (its import takes ~0.3 s)
            import scipy.special as ss

            modules[0].update(erf=ss.erf, erfc=ss.erfc)
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
    return lambda x: jnp.full(jnp.shape(x), value)


def _almost_everywhere(d: sp.Expr) -> sp.Expr:
    """``d`` without its Dirac parts: ``DiracDelta`` terms and derivatives of ``floor``/``ceiling`` (0 off the
    jumps) set to 0."""
    d = d.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    d = d.replace(lambda e: isinstance(e, (sp.Derivative, sp.Subs)) and e.has(sp.floor, sp.ceiling, sp.frac),
                  lambda e: sp.S.Zero)
    return d.replace(lambda e: isinstance(e, sp.Subs) and e.expr == 0, lambda e: sp.S.Zero)


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
        key = _builtin_key(name.strip()) if isinstance(name, str) else None
        if key is None:
            raise _unknown(name)
        merged = dict(_BUILTINS[key])
        for k, v in params.items():
            if k not in merged:
                raise ActivationError(f"activation {key!r} takes no parameter {k!r}; it takes {_param_list(key)}")
            merged[k] = _param_float(key, k, v)
        shown = key if merged == _BUILTINS[key] else f"{key}({', '.join(f'{k}={v:g}' for k, v in sorted(merged.items()))})"
        return cls(name=shown, expr=_builtin_expr(key, merged), params=tuple(sorted(merged.items())), builtin=key)

    @classmethod
    def from_expr(cls, expr: "str | sp.Expr", name: str | None = None) -> "Activation":
        """A user activation from a sympy expression, or a string in ``x`` read by :func:`parse_expression`.

        A string is parsed by the whitelist grammar of :func:`parse_expression` (never evaluated);
        a sympy object passed from Python is taken as it is.
        """
        if isinstance(expr, str):
            parsed = parse_expression(expr)
            display = name or expr.strip()
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
            raise ActivationError(f"activation expression {_shown(display)} must depend on x only; found {other}")
        if parsed.has(sp.I) or parsed.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
            raise ActivationError(f"activation expression {_shown(display)} is not a finite real expression")
        return cls(name=display, expr=parsed, params=(), builtin=None)

    # ------------------------------------------------------------------ symbolic
    @functools.cached_property
    def derivative(self) -> sp.Expr:
        r"""$\phi'(x)$, derived symbolically: the derivative almost everywhere.

        Where $\phi$ jumps (``sign``, ``Heaviside``, ``floor``, ``ceiling``) its distributional derivative
        has Dirac parts; they are dropped, as for relu's $\phi'=$ ``Heaviside``, and as autodiff does
        (``jax.grad(jnp.sign)`` is 0).  So ``sign(x)`` has derivative 0 and ``floor(x) + x`` derivative 1:
        the kernels' $\dot C=E[\phi'\phi']$ is that of the finite-width networks' gradients, and the
        Assumption-1 analysis reports the jump (:func:`~kernelcalc.analyse`)."""
        return _almost_everywhere(sp.diff(self.expr, X))

    @functools.cached_property
    def jumps(self) -> bool:
        r"""True when the distributional derivative of $\phi$ has a Dirac part that :attr:`derivative` drops
        (a ``DiracDelta`` or a derivative of ``floor``/``ceiling`` in ``diff(phi)``; a term like
        ``x*DiracDelta(x)``, which is 0, also counts), or when a ``Piecewise`` jumps between its pieces (sympy
        differentiates a ``Piecewise`` piece by piece, with no Dirac part: ``Piecewise((1, x > 1), (-0.5, True))``)."""
        d = sp.diff(self.expr, X)
        if _almost_everywhere(d) != d:
            return True
        from ._piecewise import _jump, _Undetermined, pieces_or_none

        pieces = pieces_or_none(self.expr) if self.expr.has(sp.Piecewise) else None
        try:
            return pieces is not None and _jump(pieces) is not None
        except _Undetermined:
            return False

    @functools.cached_property
    def real_line_defect(self) -> str | None:
        r"""Why $\phi$ is not a finite real function on all of $\mathbb R$, or ``None`` when it is.

        A Gaussian pre-activation takes every real value, so $E[\phi(a)\phi(b)]$ needs $\phi$ real and
        finite everywhere: a pole (``tan(x)``, ``1/x``, ``log(x)`` at 0; found by sympy's
        ``singularities``) or a value that is not a finite real number on a grid of $[-30, 30]$
        (``sqrt(x)``, ``log(x)`` for $x<0$) is named."""
        try:
            poles = sp.singularities(self.expr, X, sp.Reals)
        except Exception:  # noqa: BLE001  sympy cannot tell: the grid below still looks
            poles = sp.EmptySet
        if poles is not sp.EmptySet and poles != sp.EmptySet:
            first = poles.args[0] if isinstance(poles, sp.FiniteSet) else None
            if isinstance(poles, (sp.Union, sp.ImageSet)):
                imgs = [poles] if isinstance(poles, sp.ImageSet) else [a for a in poles.args if isinstance(a, sp.ImageSet)]
                if imgs:
                    first = imgs[0].lamda.expr.subs(imgs[0].lamda.variables[0], 0)
            at = f" at x = {first}" if first is not None else f" (at x in {poles})"
            return f"{self.name} is infinite{at} (a singularity)"
        z = np.concatenate([np.linspace(-30.0, 30.0, 6001), [-1.0, -0.5, 0.0, 0.5, 1.0]])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                v = np.asarray(self.numpy_fn(z)) * np.ones_like(z)
            except (TypeError, ValueError, ArithmeticError):
                return f"{self.name} cannot be evaluated as a real function"
        bad = ~np.isfinite(v) if not np.iscomplexobj(v) else ~(np.isfinite(v) & (np.imag(v) == 0))
        if bad.any():
            i = int(np.argmax(bad))
            return f"{self.name} is not a finite real number at x = {z[i]:g} (value {v[i]})"
        return None

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
        r"""Degree of $\\phi$ when it is a polynomial (0 for every constant, also for 0), else ``None``."""
        if not self.is_polynomial:
            return None
        return int(sp.Poly(self.expr, X).degree()) if self.expr != 0 else 0

    @functools.cached_property
    def is_piecewise_smooth(self) -> bool:
        r"""True when $\phi$ or $\phi'$ has kinks/jumps (Max, Abs, Piecewise, Heaviside, sign ...).

        Such activations need closed forms or kink-aware quadrature: plain quadrature on a
        smooth rule converges only algebraically across a kink.
        """
        nonsmooth = (sp.Piecewise, sp.Heaviside, sp.Abs, sp.sign, sp.Max, sp.Min, sp.DiracDelta,
                     sp.floor, sp.ceiling)
        return any(self.expr.has(t) or self.derivative.has(t) for t in nonsmooth)

    @functools.cached_property
    def is_bounded(self) -> bool:
        r"""True when $\phi$ is bounded on $\mathbb R$ and levels off on both sides (tanh, sigmoid, erf), tested
        numerically: finite on $[-10, 10]$ and at $\pm10^3, \pm10^4$, with $|\phi(\pm10^4)-\phi(\pm10^3)|\le10^{-6}$
        of $\max_{[-10,10]}|\phi|$ (saturation; :mod:`kernelcalc.kernels.ode_solver` chooses the polar Fourier dual
        by it)."""
        with np.errstate(all="ignore"):
            far = np.asarray(self.numpy_fn(np.array([-1e4, -1e3, 1e3, 1e4])), dtype=float)
            near = np.asarray(self.numpy_fn(np.linspace(-10.0, 10.0, 201)), dtype=float)
        if not (np.all(np.isfinite(far)) and np.all(np.isfinite(near))):
            return False
        scale = max(float(np.max(np.abs(near))), 1e-300)
        return bool(abs(far[0] - far[1]) <= 1e-6 * scale and abs(far[2] - far[3]) <= 1e-6 * scale)

    @functools.cached_property
    def is_positively_homogeneous(self) -> bool:
        r"""True when $\phi(\lambda z)=\lambda\phi(z)$ for every $\lambda>0$ (relu, leaky relu, abs, linear),
        i.e. $\phi(z)=z\,\phi(1)$ for $z>0$ and $\phi(z)=|z|\,\phi(-1)$ for $z<0$: proved symbolically on
        each half-line (``False`` when sympy cannot prove it).  Bias-free networks of such $\phi$ have
        kernels with $K(\lambda x,\mu y)=\lambda\mu K(x,y)$: off the sphere, the sphere's kernel
        times $|x||y|/d$ (:mod:`kernelcalc.kernels._gram`)."""
        return self._holds_at(lambda z: 2.0 * z, lambda f: 2.0 * f) and _homogeneous(self.expr)

    @functools.cached_property
    def is_odd(self) -> bool:
        r"""True when $\phi(-z)=-\phi(z)$ (tanh, erf, sin, identity): proved symbolically (``False`` when
        sympy cannot).  Bias-free networks of an odd $\phi$ have odd kernels, $K(x,-y)=-K(x,y)$."""
        return self._holds_at(lambda z: -z, lambda f: -f) and _odd(self.expr)

    @functools.cached_property
    def vanishes_at_zero(self) -> bool:
        r"""True when $\phi(0)=0$ exactly (symbolically; relu, tanh, elu, hard-swish): a zero variance (a zero input
        row, whose pre-activations stay the constant 0) then has $C(0,q,c)=\phi(0)E[\phi(b)]=0$ exactly
        (:meth:`~kernelcalc.theory.gaussian.DualKernels.from_marginals`)."""
        try:
            return bool(sp.simplify(self.expr.subs(X, 0)) == 0)
        except (TypeError, ValueError):
            return False

    def _holds_at(self, arg, value) -> bool:
        r"""Whether $\phi(\mathrm{arg}(z))=\mathrm{value}(\phi(z))$ at a few points (a cheap disproof of a
        symmetry before sympy is asked to prove it)."""
        z = np.array([-2.5, -0.7, 0.3, 0.8, 1.9, 2.9])
        with np.errstate(all="ignore"):
            f = np.asarray(self.numpy_fn(z), dtype=float) * np.ones_like(z)
            g = np.asarray(self.numpy_fn(arg(z)), dtype=float) * np.ones_like(z)
        return bool(np.allclose(g, value(f), rtol=1e-12, atol=1e-300))

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
        r"""$\\phi$ as a jax callable (stable hand-written form for some built-ins).

        A plain jax function: it computes in the caller's precision (float32 unless the caller enables
        x64; kernelcalc's own functions call it inside ``jax.enable_x64(True)``)."""
        over = _stable_jax_overrides().get(self.builtin or "")
        return over[0] if over else _lambdify(self.expr, "jax")

    @functools.cached_property
    def jax_derivative(self) -> Callable:
        r"""$\\phi'$ as a jax callable (stable hand-written form for some built-ins); like
        :attr:`jax_fn`, it follows the caller's precision."""
        over = _stable_jax_overrides().get(self.builtin or "")
        return over[1] if over else _lambdify(self.derivative, "jax")

    def __call__(self, x):
        return self.jax_fn(x)

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        return {"name": self.name, "expr": str(self.expr), "params": dict(self.params), "builtin": self.builtin}


def _param_list(key: str) -> str:
    names = list(_BUILTINS[key])
    if not names:
        return "no parameters"
    return f"{len(names)} parameter{'s' if len(names) > 1 else ''} ({', '.join(names)})"


def _param_float(key: str, name: str, value) -> float:
    """A built-in's parameter as a finite float, or :class:`ActivationError` naming it."""
    bad = isinstance(value, (bool, np.bool_, str, bytes, complex, np.complexfloating))
    try:
        v = float("nan") if bad else float(value)
    except (TypeError, ValueError):
        bad, v = True, float("nan")
    if bad or not math.isfinite(v):
        raise ActivationError(f"activation parameter {name} of {key} must be a finite real number, got {value!r}")
    return v


def _builtin_key(name: str) -> str | None:
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    return key if key in _BUILTINS else None


def _call_params(key: str, call: ast.Call, text: str) -> dict[str, float]:
    """The numeric parameters of a built-in written as ``name(args)``, e.g. ``elu(alpha=0.5)``."""
    names = list(_BUILTINS[key])
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        raise ActivationError(f"activation {_shown(text)}: '*'/'**' unpacking is not allowed")
    if len(call.args) > len(names):
        hint = f" (as an expression write it in x, e.g. '{key}(2*x)')" if not names and key in _FUNCTIONS else ""
        raise ActivationError(f"{key} takes {_param_list(key)}, got {len(call.args)} in {_shown(text)}{hint}")
    given = list(zip(names, call.args)) + [(k.arg, k.value) for k in call.keywords]
    params: dict[str, float] = {}
    for name, node in given:
        if name not in names:
            raise ActivationError(f"activation {key!r} takes no parameter {name!r}; it takes {_param_list(key)}")
        if name in params:
            raise ActivationError(f"activation {_shown(text)} gives parameter {name} twice")
        src = ast.get_source_segment(text, node) or ast.unparse(node)
        if any(isinstance(n, ast.Call) or (isinstance(n, ast.Name) and n.id not in _CONSTANTS)
               for n in ast.walk(node)):
            raise ActivationError(f"parameter {name} of {key} must be a number, got {src!r}")
        try:
            value = _Builder(allow_x=False, allow_calls=False).expr(node)
        except _Rejected as why:
            raise ActivationError(f"parameter {name} of {key} = {src!r}: {str(why).replace('; ' + _HINT, '')}") from None
        if not (value.is_number and value.is_real):
            raise ActivationError(f"parameter {name} of {key} must be a finite real number, got {src!r}")
        params[name] = _param_float(key, name, float(value))
    return params


def _unknown(spec: str) -> ActivationError:
    return ActivationError(f"unknown activation {spec!r}; known: {', '.join(sorted(BUILTIN_NAMES))} "
                           "(or an expression in x, e.g. 'log(1+exp(x))')")


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_HEAD = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*)(\s*\(.*)$", re.S)


def resolve_activation(spec: "str | sp.Expr | Activation") -> Activation:
    """Turn a user's activation spec into an :class:`Activation`.

    Accepts an :class:`Activation`; a built-in name (``"softplus"``, case and ``-``/``_``
    insensitive); a built-in with numeric parameters (``"elu(alpha=0.5)"``,
    ``"leaky_relu(0.2)"``); an expression in ``x`` in the grammar of :func:`parse_expression`
    (``"log(1+exp(x))"``, ``"tanh(x/2)"``, ``"Piecewise((x, x >= 0), (0.1*x, True))"``); or a
    sympy expression object.  Text is parsed by a whitelist and never evaluated.
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, sp.Basic):
        return Activation.from_expr(spec)
    if not isinstance(spec, str):
        raise ActivationError(f"activation must be a name, expression or Activation, got {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ActivationError("empty activation expression")
    if _NAME.match(text):
        key = _builtin_key(text)
        if key is not None:
            return Activation.from_name(key)
        if text in _FUNCTIONS:
            raise ActivationError(f"{text!r} is not a built-in activation; as an expression write '{text}(x)'")
        if text != "x" and text not in _CONSTANTS:
            raise _unknown(text)
    m = _HEAD.match(text)
    source = text
    if m and _builtin_key(m.group(1)) and m.group(1).lower().replace("-", "_") != m.group(1):
        source = m.group(1).lower().replace("-", "_") + m.group(2)  # "Leaky-ReLU(0.2)" -> "leaky_relu(0.2)"
    tree = _parse_tree(source)
    if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name):
        key = _builtin_key(tree.func.id)
        mentions_x = any(isinstance(n, ast.Name) and n.id == "x" for n in ast.walk(tree))
        # "tanh(x/2)" is an expression; "elu(alpha=0.5)", "leaky_relu(0.2)" are parameters
        if key is not None and (tree.keywords or not mentions_x):
            return Activation.from_name(key, **_call_params(key, tree, source))
    return Activation.from_expr(_build(tree, source), name=text)
