r"""Activations: one symbolic definition, derived derivatives, numeric callables.

An :class:`Activation` is a sympy expression $\phi(x)$ in the real symbol ``x``.
Everything else is *derived* from it: $\phi'$ and $\phi''$ symbolically, numpy and
jax callables by ``lambdify``, and the Assumption-1 analysis (see
:mod:`kernelcalc.theory.assumptions`).  Built-ins may carry hand-written numerically stable
jax implementations (e.g. ``softplus = logaddexp(0, x)``); these must agree with the
symbolic expression, which remains the definition (checked in the tests).

Activation *text* (``"log(1+exp(x))"``, ``"elu(alpha=0.5)"``) is read by a whitelist parser,
:func:`parse_expression`: Python's ``ast`` restricted to numbers, ``x``, ``pi``, ``E``, arithmetic
and a fixed table of functions, from which the sympy expression is built directly.  No text is
ever passed to ``eval``, ``sympify`` or ``parse_expr``.

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
from typing import Callable, Mapping

import numpy as np
import sympy as sp

from .._validation import KernelcalcInputError

__all__ = ["Activation", "ActivationError", "BUILTIN_NAMES", "parse_expression", "resolve_activation", "X",
           "array_functions"]

#: The real symbol every activation is written in.
X = sp.Symbol("x", real=True)


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
    """Symbolic proof of :attr:`Activation.is_odd`."""
    try:
        return sp.simplify(expr.subs(X, -X) + expr) == 0
    except (TypeError, ValueError):  # pragma: no cover  (an expression sympy cannot compare)
        return False


class ActivationError(KernelcalcInputError):
    r"""Bad activation specification (unknown name, unparsable expression, bad parameter), or an activation
    no kernel can be computed for (not real or not finite on all of $\mathbb R$, jumps away from 0)."""


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


# ---------------------------------------------------------------------------- safe parsing
#: Longest activation text accepted, deepest expression nesting, largest constant exponent.
MAX_TEXT_LENGTH = 1000
MAX_DEPTH = 50
MAX_EXPONENT = 100
_MAX_CONSTANT = 1e300  # every constant met while building stays below this in absolute value
_HINT = "use an expression in x such as 'log(1+exp(x))'"

#: Named constants an expression may use (``e`` is *not* one: write ``E`` or ``exp(1)``).
_CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E}


def _unary(f):
    return lambda args: f(*args)


def _builtin_fn(name):
    return lambda args: _builtin_expr(name, {}).subs(X, args[0])


#: function name -> (builder taking the list of sympy arguments, min args, max args or None).
_FUNCTIONS: dict[str, tuple[Callable, int, int | None]] = {
    **{n: (_unary(f), 1, 1) for n, f in {
        "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "tanh": sp.tanh, "sinh": sp.sinh, "cosh": sp.cosh,
        "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "atan": sp.atan, "arctan": sp.atan, "asinh": sp.asinh,
        "arcsinh": sp.asinh, "erf": sp.erf, "erfc": sp.erfc, "abs": sp.Abs, "Abs": sp.Abs, "sign": sp.sign,
        "floor": sp.floor, "ceiling": sp.ceiling}.items()},
    "Heaviside": (_unary(sp.Heaviside), 1, 2),
    **{n: (_unary(f), 2, None) for n, f in {"Max": sp.Max, "max": sp.Max, "Min": sp.Min, "min": sp.Min}.items()},
    **{n: (_builtin_fn(_ALIASES.get(n, n)), 1, 1) for n in ("relu", "softplus", "sigmoid", "gelu", "silu", "swish")},
}

_RELATIONS = {ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge, ast.Eq: sp.Eq, ast.NotEq: sp.Ne}
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.Mod: "%",
              ast.FloorDiv: "//", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
              ast.LShift: "<<", ast.RShift: ">>", ast.Not: "not", ast.Invert: "~", ast.UAdd: "+", ast.USub: "-",
              ast.And: "and", ast.Or: "or", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
              ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_SYNTAX_WORDS = {ast.Lambda: "'lambda'", ast.IfExp: "'if ... else ...' (use Piecewise((expr, cond), (expr, True)))",
                 ast.Subscript: "subscripts ('[...]')", ast.Starred: "'*' unpacking", ast.NamedExpr: "':='",
                 ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
                 ast.GeneratorExp: "a generator expression", ast.List: "a list", ast.Tuple: "a tuple",
                 ast.Set: "a set", ast.Dict: "a dict", ast.JoinedStr: "an f-string", ast.Await: "'await'",
                 ast.Yield: "'yield'", ast.YieldFrom: "'yield'", ast.Slice: "a slice"}


class _Rejected(Exception):
    """Internal: why a piece of the expression was rejected (one line, without the text)."""


def _not_allowed(what: str) -> _Rejected:
    return _Rejected(f"{what} is not allowed; {_HINT}")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _heaviside(v: float, h0: float = 0.5) -> float:
    return 1.0 if v > 0 else 0.0 if v < 0 else h0


#: float versions of every sympy function the grammar can produce, for :func:`_float_value`.
_MATH: dict = {sp.exp: math.exp, sp.log: math.log, sp.sin: math.sin, sp.cos: math.cos, sp.tan: math.tan,
               sp.sinh: math.sinh, sp.cosh: math.cosh, sp.tanh: math.tanh, sp.atan: math.atan,
               sp.asinh: math.asinh, sp.erf: math.erf, sp.erfc: math.erfc, sp.Abs: abs,
               sp.sign: lambda v: float(np.sign(v)), sp.floor: math.floor, sp.ceiling: math.ceil,
               sp.Heaviside: _heaviside, sp.Max: max, sp.Min: min}


def _float_value(e: sp.Expr) -> float:
    r"""The value of a constant (x-free) expression in double precision, bounded by $10^{300}$.

    Computed bottom-up with :mod:`math`, never by sympy's adaptive ``evalf``: a tower such as
    ``exp(exp(exp(100)))`` overflows here at once instead of running for ever later.
    """
    if isinstance(e, sp.Number) or e in (sp.pi, sp.E):
        try:
            v = float(e)
        except (OverflowError, TypeError):
            v = math.inf
    else:
        args = [_float_value(a) for a in e.args]
        try:
            if isinstance(e, sp.Add):
                v = math.fsum(args)
            elif isinstance(e, sp.Mul):
                v = math.prod(args)
            elif isinstance(e, sp.Pow):
                v = args[0] ** args[1]
            elif e.func in _MATH:
                v = _MATH[e.func](*args)
            else:
                raise _Rejected(f"the constant {e} is not a finite real number")
        except (OverflowError, ValueError, ZeroDivisionError):
            v = math.inf
    if isinstance(v, complex) or not (math.isfinite(v) and abs(v) <= _MAX_CONSTANT):
        shown = str(e) if len(str(e)) <= 40 else str(e)[:37] + "..."
        raise _Rejected(f"the constant {shown} is not a finite real number of size at most 1e300")
    return float(v)


class _Builder:
    """Builds a sympy expression from a whitelisted Python AST (see :func:`parse_expression`)."""

    def __init__(self, allow_x: bool = True, allow_calls: bool = True):
        self.allow_x, self.allow_calls = allow_x, allow_calls

    def expr(self, node: ast.AST, depth: int = 0) -> sp.Expr:
        if depth > MAX_DEPTH:
            raise _Rejected(f"the expression is nested too deeply (more than {MAX_DEPTH} levels)")
        result = self._node(node, depth + 1)
        if result.is_number:  # constants stay finite, real and below 1e300: no runaway evaluation later
            _float_value(result)
        return result

    def _node(self, node: ast.AST, d: int) -> sp.Expr:
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, (ast.UAdd, ast.USub)):
                v = self.expr(node.operand, d)
                return v if isinstance(node.op, ast.UAdd) else -v
            raise _not_allowed(f"the operator '{_OPERATORS[type(node.op)]}'")
        if isinstance(node, ast.BinOp):
            return self.binop(node, d)
        if isinstance(node, ast.Call):
            return self.call(node, d)
        if isinstance(node, ast.Compare):
            raise _not_allowed(f"the comparison '{_OPERATORS[type(node.ops[0])]}' outside a Piecewise condition")
        if isinstance(node, ast.BoolOp):
            raise _not_allowed(f"'{_OPERATORS[type(node.op)]}' outside a Piecewise condition")
        if isinstance(node, ast.Attribute):
            raise _not_allowed(f"attribute access ('.{node.attr}')")
        raise _not_allowed(_SYNTAX_WORDS.get(type(node), f"the syntax '{type(node).__name__}'"))

    @staticmethod
    def constant(value) -> sp.Expr:
        if isinstance(value, bool) or value is None or value is Ellipsis:
            raise _not_allowed(f"the constant {value!r} outside a Piecewise condition" if isinstance(value, bool)
                               else f"the constant {value!r}")
        if isinstance(value, int):
            if abs(value) > _MAX_CONSTANT:
                raise _Rejected(f"the integer {str(value)[:12]}... ({len(str(abs(value)))} digits) is larger than 1e300")
            return sp.Integer(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _Rejected(f"the number {value!r} is not finite")
            return sp.Float(value)
        if isinstance(value, complex):
            raise _not_allowed(f"the complex number {value!r}")
        kind = "a string" if isinstance(value, str) else f"a {type(value).__name__} constant"
        raise _not_allowed(f"{kind} ({value!r})" if len(repr(value)) <= 40 else kind)

    def name(self, ident: str) -> sp.Expr:
        if ident == "x":
            if not self.allow_x:
                raise _Rejected("x is not allowed in a parameter value")
            return X
        if ident in _CONSTANTS:
            return _CONSTANTS[ident]
        if ident in _FUNCTIONS or ident == "Piecewise":
            raise _Rejected(f"'{ident}' is a function; call it, e.g. '{ident}(x)'")
        key = ident.lower().replace("-", "_")
        if _ALIASES.get(key, key) in _BUILTINS:
            raise _Rejected(f"'{ident}' is a built-in activation, not a variable; use it alone ('{ident}') "
                            "or with numeric parameters (e.g. 'elu(alpha=0.5)')")
        extra = " (Euler's number is E or exp(1))" if ident == "e" else ""
        raise _Rejected(f"unknown name {ident!r}: the expression must depend on x only "
                        f"(constants: {', '.join(_CONSTANTS)}){extra}")

    def binop(self, node: ast.BinOp, d: int) -> sp.Expr:
        op = type(node.op)
        if op not in (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow):
            raise _not_allowed(f"the operator '{_OPERATORS.get(op, op.__name__)}'")
        if op is ast.Pow:
            return self.power(self.expr(node.left, d), self.expr(node.right, d))
        # a long sum or product ("x + x + ... + x") is a left spine, not nesting: walk it iteratively
        group = (ast.Add, ast.Sub) if op in (ast.Add, ast.Sub) else (ast.Mult, ast.Div)
        spine = []
        while isinstance(node, ast.BinOp) and isinstance(node.op, group):
            spine.append(node)
            node = node.left
        value = self.expr(node, d)
        for n in reversed(spine):
            rhs = self.expr(n.right, d)
            value = {ast.Add: sp.Add, ast.Mult: sp.Mul}[group[0]](value, -rhs if isinstance(n.op, ast.Sub)
                                                                 else 1 / rhs if isinstance(n.op, ast.Div) else rhs)
            if value.is_number:
                _float_value(value)
        return value

    @staticmethod
    def power(a: sp.Expr, b: sp.Expr) -> sp.Expr:
        if b.is_number:
            e = _float_value(b)
            if a.is_number:  # a constant power: decide its size before sympy computes it exactly
                va = _float_value(a)
                if va != 0 and abs(e * math.log10(abs(va))) > math.log10(_MAX_CONSTANT):
                    raise _Rejected(f"the constant ({va:g})**{e:g} is out of range (|c| must lie within "
                                    "1e-300 .. 1e300)")
            elif not abs(e) <= MAX_EXPONENT:
                raise _Rejected(f"the exponent {e:g} is too large (at most {MAX_EXPONENT} in absolute value)")
        return a**b

    def call(self, node: ast.Call, d: int) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute):
                raise _not_allowed(f"attribute access ('.{node.func.attr}')")
            raise _not_allowed("calling anything but a named function")
        fname = node.func.id
        if not self.allow_calls:
            raise _Rejected(f"a function call ('{fname}(...)') is not allowed in a parameter value")
        if fname not in _FUNCTIONS and fname != "Piecewise":
            key = fname.lower().replace("-", "_")
            if _ALIASES.get(key, key) in _BUILTINS:
                raise _Rejected(f"the built-in '{fname}' cannot be applied to an expression in x; write "
                                f"'{fname}' alone or with numeric parameters, or spell it out (e.g. with Piecewise)")
            raise _Rejected(f"unknown function {fname!r}; allowed: {', '.join(sorted(_FUNCTIONS, key=str.lower))}, "
                            "Piecewise")
        if node.keywords:
            kw = node.keywords[0]
            raise _not_allowed(f"a keyword argument ('{kw.arg}=') in {fname}(...)" if kw.arg
                               else f"'**' unpacking in {fname}(...)")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise _not_allowed(f"'*' unpacking in {fname}(...)")
        if fname == "Piecewise":
            return self.piecewise(node, d)
        build, lo, hi = _FUNCTIONS[fname]
        n = len(node.args)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            raise _Rejected(f"{fname} takes {want} argument{'s' if (hi or 2) > 1 else ''}, got {n}")
        return build([self.expr(a, d) for a in node.args])

    def piecewise(self, node: ast.Call, d: int) -> sp.Expr:
        if not node.args:
            raise _Rejected("Piecewise needs at least one (expression, condition) pair")
        pairs = []
        for arg in node.args:
            if not (isinstance(arg, ast.Tuple) and len(arg.elts) == 2):
                raise _Rejected("every Piecewise argument must be a pair (expression, condition), "
                                "e.g. Piecewise((x, x >= 0), (0, True))")
            pairs.append((self.expr(arg.elts[0], d), self.cond(arg.elts[1], d)))
        return sp.Piecewise(*pairs)

    def cond(self, node: ast.AST, d: int):
        if d > MAX_DEPTH:
            raise _Rejected(f"the expression is nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return sp.true if node.value else sp.false
        if isinstance(node, ast.Compare):
            sides = [self.expr(node.left, d + 1)] + [self.expr(c, d + 1) for c in node.comparators]
            rels = []
            for op, lhs, rhs in zip(node.ops, sides[:-1], sides[1:]):
                if type(op) not in _RELATIONS:
                    raise _not_allowed(f"the comparison '{_OPERATORS.get(type(op), type(op).__name__)}'")
                rels.append(_RELATIONS[type(op)](lhs, rhs))
            return sp.And(*rels)
        if isinstance(node, ast.BoolOp):
            parts = [self.cond(v, d + 1) for v in node.values]
            return sp.And(*parts) if isinstance(node.op, ast.And) else sp.Or(*parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            a, b = self.cond(node.left, d + 1), self.cond(node.right, d + 1)
            return sp.And(a, b) if isinstance(node.op, ast.BitAnd) else sp.Or(a, b)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
            return sp.Not(self.cond(node.operand, d + 1))
        raise _Rejected("a Piecewise condition must be a comparison such as 'x >= 0' (combined with &, |, "
                        "and, or, not) or True")


def _parse_tree(text: str) -> ast.expr:
    """``text`` as a Python expression AST, or :class:`ActivationError` (length, syntax)."""
    if len(text) > MAX_TEXT_LENGTH:
        raise ActivationError(f"activation expression is too long ({len(text)} characters; "
                              f"at most {MAX_TEXT_LENGTH})")
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError as err:
        where = f" at column {err.offset}" if err.offset else ""
        raise ActivationError(f"cannot parse activation expression {_shown(text)}: {err.msg}{where}") from None
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, absurd nesting
        raise ActivationError(f"cannot parse activation expression {_shown(text)}: "
                              f"{'nested too deeply' if not isinstance(err, ValueError) else err}") from None


def _build(tree: ast.AST, text: str, builder: _Builder | None = None) -> sp.Expr:
    try:
        return (builder or _Builder()).expr(tree)
    except _Rejected as why:
        raise ActivationError(f"activation expression {_shown(text)}: {why}") from None
    except (TypeError, ValueError, ArithmeticError, RecursionError) as err:  # sympy refused to build it
        raise ActivationError(f"activation expression {_shown(text)} is not a valid real expression in x "
                              f"({type(err).__name__})") from None


def parse_expression(text: str) -> sp.Expr:
    r"""Parse an activation written as text into a sympy expression, by a whitelist (no ``eval``).

    The text is parsed by Python's :func:`ast.parse` (``mode="eval"``) and the sympy expression is
    built node by node; nothing in the text is ever executed, and no ``sympify``/``eval`` sees it.

    **Grammar** (everything else is rejected with a one-line :class:`ActivationError` naming it)::

        expr  := number | x | pi | E | (expr) | +expr | -expr
               | expr + expr | expr - expr | expr * expr | expr / expr | expr ** expr
               | f(expr) | Heaviside(expr[, number]) | Max(expr, expr, ...) | Min(expr, expr, ...)
               | Piecewise((expr, cond), (expr, cond), ...)
        f     := exp | log | sqrt | sin | cos | tan | sinh | cosh | tanh | atan | arctan
               | asinh | arcsinh | erf | erfc | abs | Abs | sign | floor | ceiling
               | relu | softplus | sigmoid | gelu | silu | swish        (the built-ins, as functions)
        cond  := expr REL expr [REL expr ...] | cond & cond | cond | cond
               | cond and cond | cond or cond | not cond | ~cond | True | False
        REL   := < | <= | > | >= | == | !=

    - ``number``: an int or float literal (not complex, not bool), finite, with $|c|\le 10^{300}$.
    - The only variable is ``x``; the constants are ``pi`` and ``E`` (Euler's number; ``e`` is not
      accepted, write ``E`` or ``exp(1)``); ``max``/``min`` are aliases of ``Max``/``Min``.
    - Comparisons and booleans appear only inside Piecewise conditions; no keyword arguments.
    - Limits: at most :data:`MAX_TEXT_LENGTH` (1000) characters, nesting depth :data:`MAX_DEPTH`
      (50; a long sum or product is not nesting), a numeric exponent of an expression in x at most
      :data:`MAX_EXPONENT` (100) in absolute value, every constant power within $10^{\pm 300}$
      and every constant met while building at most $10^{300}$ in absolute value (constants
      are evaluated bottom-up in double precision, so ``exp(exp(exp(100)))`` is refused at once).

    Rejected, for example: ``lambda x: x``, ``__import__('os')``, ``x.real``, ``[x][0]``,
    ``'x'``, ``x % 2``, ``x if x > 0 else 0``, ``y + x``, ``x**10**10``, ``exp(x, base=2)``.

    **Arguments:**

    - ``text``: the expression, e.g. ``"log(1+exp(x))"`` or ``"x*erf(x/sqrt(2))/2 + x/2"``.

    **Returns:** the sympy expression in the real symbol :data:`X`.
    """
    if not isinstance(text, str):
        raise ActivationError(f"activation expression must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise ActivationError("empty activation expression")
    return _build(_parse_tree(text), text)


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
        ``x*DiracDelta(x)``, which is 0, also counts)."""
        return _almost_everywhere(sp.diff(self.expr, X)) != sp.diff(self.expr, X)

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
