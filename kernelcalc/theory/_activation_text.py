r"""The text of activations: the symbol ``x``, the built-in families, and the whitelist parser.

:func:`parse_expression` reads activation text (``"log(1+exp(x))"``) with Python's ``ast`` restricted to
numbers, ``x``, ``pi``, ``E``, arithmetic and a fixed table of functions, from which the sympy expression is
built directly; no text is ever passed to ``eval``, ``sympify`` or ``parse_expr``.  The built-in families
(``relu``, ``softplus``, ``elu(alpha)``, ...) are sympy expressions in the same symbol :data:`X`; the
:class:`~kernelcalc.Activation` built from either lives in :mod:`kernelcalc.theory.activations`, which
re-exports every public name of this module.
"""

from __future__ import annotations

import ast
import math
from typing import Callable, Mapping

import numpy as np
import sympy as sp

from .._validation import KernelcalcInputError

__all__ = ["X", "ActivationError", "BUILTIN_NAMES", "parse_expression", "MAX_TEXT_LENGTH", "MAX_DEPTH",
           "MAX_EXPONENT"]

#: The real symbol every activation is written in.
X = sp.Symbol("x", real=True)


class ActivationError(KernelcalcInputError):
    r"""Bad activation specification (unknown name, unparsable expression, bad parameter), or an activation
    no kernel can be computed for (not real or not finite on all of $\mathbb R$, jumps away from 0)."""


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
