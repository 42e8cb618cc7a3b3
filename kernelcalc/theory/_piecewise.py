r"""Piecewise-smooth calculus for the Assumption-1 analysis (:mod:`kernelcalc.theory.assumptions`).

An expression in ``x`` is split into smooth pieces on intervals (``Max``, ``Abs``, ``Heaviside``, ``sign``
and ``Piecewise`` rewritten as one ``Piecewise``; the breakpoints are the real roots of the conditions and
the singular points of the pieces); on the pieces: one-sided limits (:func:`_limit`), jumps
(:func:`_jump`), piecewise derivatives, and the supremum of $|g|$ (:func:`_sup_abs`, exact where sympy
can, else a dense numerical scan that says so).  What sympy cannot decide raises :class:`_Undetermined`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np
import sympy as sp

from ._activation_text import X


class _Undetermined(Exception):
    """sympy could not decide something; the message says what."""


# ----------------------------------------------------------------------------- helpers
_KINKS = (sp.Heaviside, sp.sign, sp.Max, sp.Min, sp.Abs)
_UNSUPPORTED = (sp.floor, sp.ceiling, sp.frac, sp.DiracDelta)
# Functions continuous on all of R (given continuous arguments).
_CONTINUOUS = (sp.exp, sp.sin, sp.cos, sp.tanh, sp.sinh, sp.cosh, sp.erf, sp.erfc, sp.atan,
               sp.asinh, sp.sech, sp.Abs, sp.Max, sp.Min)


def _fmt(e) -> str:
    return str(e)


def _is_finite_number(v) -> bool:
    return isinstance(v, sp.Expr) and v.is_number and v.is_finite is True and v.is_real is not False \
        and not v.has(sp.AccumBounds)


# Functions with a limit in [-oo, oo] at +-oo that sympy evaluates there (tanh(oo) = 1 ...);
# with sympy's extended arithmetic (oo - oo, 0*oo, oo/oo give nan) substituting x = +-oo into
# an expression built from these and integer powers gives its limit whenever no nan appears.
_SUBS_SAFE = (sp.exp, sp.tanh, sp.erf, sp.erfc, sp.atan, sp.sech, sp.log)


def _subs_at_infinity(e: sp.Expr, point):
    for node in sp.preorder_traversal(e):
        if isinstance(node, sp.Pow) and node.exp.has(X):
            return None
        if isinstance(node, sp.Function) and not isinstance(node, _SUBS_SAFE):
            return None
    v = e.subs(X, point)
    if v.is_number and not v.has(sp.nan, sp.zoo, sp.AccumBounds, sp.I) and (v.is_extended_real is True):
        return v
    return None


@functools.lru_cache(maxsize=4096)
def _limit(e: sp.Expr, point, direction: str):
    """A one-sided limit, or raise :class:`_Undetermined`."""
    if point in (sp.oo, -sp.oo):
        v = _subs_at_infinity(e, point)
        if v is not None:
            return v
    try:
        v = sp.limit(e, X, point, direction)
    except Exception as err:  # noqa: BLE001  sympy raises many kinds
        raise _Undetermined(f"sympy cannot compute the limit of {e} as x → {point}: {type(err).__name__}") from None
    if isinstance(v, sp.Limit) or v.has(sp.Limit) or v is sp.nan or v.has(sp.nan):
        raise _Undetermined(f"sympy cannot compute the limit of {e} as x → {point}")
    return v


def _limit_bound(v) -> sp.Expr | None:
    """|limit| as an exact sympy number (AccumBounds: max of |ends|); None if infinite."""
    if isinstance(v, sp.AccumBounds):
        lo, hi = v.min, v.max
        if not (_is_finite_number(lo) and _is_finite_number(hi)):
            return None
        return sp.Max(sp.Abs(lo), sp.Abs(hi))
    if v.is_infinite or v in (sp.oo, -sp.oo, sp.zoo):
        return None
    if not _is_finite_number(v):
        raise _Undetermined(f"limit {v} is not a finite real number")
    return sp.Abs(v)


def _solve_real(e: sp.Expr, domain=sp.Reals):
    try:
        return sp.solveset(e, X, domain)
    except Exception:  # noqa: BLE001
        return None


def _zeros_finite(e: sp.Expr, domain=sp.Reals) -> list:
    """Real zeros of ``e`` in ``domain`` as a finite list, or raise :class:`_Undetermined`."""
    sol = _solve_real(e, domain)
    if isinstance(sol, sp.FiniteSet):
        return list(sol)
    if sol is sp.S.EmptySet:
        return []
    raise _Undetermined(f"sympy cannot find the real zeros of {e}")


def _singular_points(e: sp.Expr) -> list:
    """Points where a smooth-looking piece may be undefined (zero denominators, log(0))."""
    points: list = []
    for node in sp.preorder_traversal(e):
        if isinstance(node, sp.Pow) and node.base.has(X):
            ex = node.exp
            if ex.has(X):
                if node.base.is_positive:
                    continue
                raise _Undetermined(f"cannot analyse the power {node}")
            if ex.is_integer and ex.is_nonnegative:
                continue
            if not ex.is_integer and not (node.base.is_positive or node.base.is_nonnegative):
                bad = _solve_real(node.base < 0)
                if bad is not sp.S.EmptySet:
                    raise _Undetermined(f"{node} is not real for all x")
            points += _zeros_finite(node.base)
        elif isinstance(node, sp.log):
            arg = node.args[0]
            if arg.is_positive:
                continue
            bad = _solve_real(arg <= 0)
            if bad is not sp.S.EmptySet:
                if bad is not None and isinstance(bad, (sp.FiniteSet,)):
                    points += list(bad)
                else:
                    raise _Undetermined(f"{node} is not defined for all real x")
        elif isinstance(node, sp.Function) and not isinstance(node, _CONTINUOUS + (sp.log,)) \
                and node.has(X):
            if isinstance(node, sp.Piecewise):
                continue
            try:
                dom = sp.calculus.util.continuous_domain(node, X, sp.Reals)
            except Exception:  # noqa: BLE001
                raise _Undetermined(f"cannot tell where {node} is continuous") from None
            if dom != sp.Reals:
                rest = sp.Complement(sp.Reals, dom)
                if not isinstance(rest, sp.FiniteSet):
                    raise _Undetermined(f"{node} is not continuous on an interval")
                points += list(rest)
    return points


def _sort_points(points) -> list:
    uniq: list = []
    for p in points:
        if not (p.is_real and p.is_finite):
            continue
        if not any(sp.simplify(p - u) == 0 for u in uniq):
            uniq.append(p)
    return sorted(uniq, key=lambda p: float(p))


@dataclasses.dataclass(frozen=True)
class _Piece:
    a: sp.Expr  # left end (may be -oo)
    b: sp.Expr  # right end (may be oo)
    expr: sp.Expr


def _midpoint(a, b):
    if a == -sp.oo and b == sp.oo:
        return sp.Rational(1, 3)
    if a == -sp.oo:
        return sp.floor(b) - 1
    if b == sp.oo:
        return sp.ceiling(a) + 1
    return (a + b) / 2


def _active_branch(pw: sp.Expr, m) -> sp.Expr:
    if not isinstance(pw, sp.Piecewise):
        return pw
    for e, cond in pw.args:
        c = cond.subs(X, m) if cond not in (sp.true, True) else sp.true
        if c in (sp.true, True):
            return e
        if c not in (sp.false, False):
            raise _Undetermined(f"cannot evaluate the Piecewise condition {cond} at x = {m}")
    raise _Undetermined(f"Piecewise {pw} is undefined at x = {m}")


@functools.lru_cache(maxsize=512)
def _pieces(f: sp.Expr) -> tuple[_Piece, ...]:
    """Split f into pieces, each given by one expression that is smooth on an open interval."""
    if f.has(*_UNSUPPORTED):
        raise _Undetermined(f"{f} contains functions (floor/ceiling/DiracDelta) that are not analysed")
    g = f
    if g.has(*_KINKS):
        g = g.rewrite(sp.Piecewise)
    g = sp.piecewise_fold(g)
    if g.has(*_KINKS[:2]):
        raise _Undetermined(f"cannot rewrite {f} as a Piecewise")
    points: list = []
    if isinstance(g, sp.Piecewise):
        branches = [e for e, _ in g.args]
        for _, cond in g.args:
            for rel in cond.atoms(sp.core.relational.Relational):
                points += _zeros_finite(rel.lhs - rel.rhs)
            if cond.free_symbols - {X}:
                raise _Undetermined(f"condition {cond} involves other symbols")
    else:
        branches = [g]
    for e in branches:
        if e.has(sp.Piecewise):
            raise _Undetermined(f"nested Piecewise in {f}")
        points += _singular_points(e)
    pts = _sort_points(points)
    ends = [-sp.oo] + pts + [sp.oo]
    return tuple(_Piece(a, b, sp.sympify(_active_branch(g, _midpoint(a, b)))) for a, b in zip(ends[:-1], ends[1:]))


def pieces_or_none(f: sp.Expr) -> tuple[_Piece, ...] | None:
    """:func:`_pieces` of ``f``, or ``None`` where they cannot be determined (the callers that only ask whether a
    structure holds: oddness, jumps, piecewise-linear duals)."""
    try:
        return _pieces(f)
    except (_Undetermined, TypeError, ValueError, NotImplementedError):
        return None


def _derivative_pieces(pieces: Sequence[_Piece]) -> tuple[_Piece, ...]:
    return tuple(_Piece(p.a, p.b, sp.diff(p.expr, X)) for p in pieces)


def _jump(pieces: Sequence[_Piece]):
    """The first breakpoint where the one-sided limits differ: (x0, left, right), or None."""
    for left, right in zip(pieces[:-1], pieces[1:]):
        x0 = left.b
        lv = _limit(left.expr, x0, "-")
        rv = _limit(right.expr, x0, "+")
        if isinstance(lv, sp.AccumBounds) or isinstance(rv, sp.AccumBounds):
            return x0, lv, rv
        if lv.is_infinite or rv.is_infinite:
            return x0, lv, rv
        d = sp.nsimplify(lv - rv) if lv.is_Float or rv.is_Float else sp.simplify(lv - rv)
        if d != 0:
            if d.is_number and abs(complex(sp.N(d, 30))) > 1e-25:
                return x0, lv, rv
            if d.is_number:
                continue
            raise _Undetermined(f"cannot compare the limits {lv} and {rv} at x = {x0}")
    return None


def _numeric_sup(pieces: Sequence[_Piece]) -> float:
    """Dense-scan estimate of sup |g| over the pieces (numbers only, no verdicts)."""
    from scipy import optimize, special

    best = 0.0
    far = np.concatenate([-np.geomspace(60.0, 1e4, 200)[::-1], np.linspace(-60.0, 60.0, 6001),
                          np.geomspace(60.0, 1e4, 200)])
    for p in pieces:
        g = sp.lambdify(X, p.expr, modules=[{"erf": special.erf, "erfc": special.erfc}, "numpy"])
        a = -np.inf if p.a == -sp.oo else float(p.a)
        b = np.inf if p.b == sp.oo else float(p.b)
        xs = far[(far > a) & (far < b)]
        if np.isfinite(a) and np.isfinite(b):
            xs = np.concatenate([xs, np.linspace(a, b, 2003)[1:-1]])
        if xs.size == 0:
            continue
        with np.errstate(all="ignore"):
            vals = np.abs(np.broadcast_to(np.asarray(g(xs), dtype=float), xs.shape))
        ok = np.isfinite(vals)
        if not ok.any():
            continue
        i = int(np.argmax(np.where(ok, vals, -1)))
        best = max(best, float(vals[i]))
        lo, hi = xs[max(i - 1, 0)], xs[min(i + 1, xs.size - 1)]
        if hi > lo:
            with np.errstate(all="ignore"):
                res = optimize.minimize_scalar(lambda t: -abs(float(g(t))), bounds=(lo, hi), method="bounded",
                                               options={"xatol": 1e-13})
            if np.isfinite(res.fun):
                best = max(best, -float(res.fun))
    return best


def _outside_functions_has_x(e: sp.Expr) -> bool:
    if e == X:
        return True
    if isinstance(e, sp.Function):
        return False
    return any(_outside_functions_has_x(a) for a in e.args)


def _mixed_transcendental(e: sp.Expr) -> bool:
    """True when a factor of e mixes x with functions of x (x*exp(x) - 2*exp(x) - ...).

    ``solveset`` spends seconds on such equations only to return a ``ConditionSet``;
    they go straight to the numerical estimate of the constant.
    """
    try:
        _, factors = sp.factor_list(sp.numer(sp.together(e)))
    except Exception:  # noqa: BLE001
        return False
    for f, _ in factors:
        if f.has(X) and _outside_functions_has_x(f) and any(
                isinstance(n, sp.Function) and n.has(X) for n in sp.preorder_traversal(f)):
            return True
    return False


def _sup_abs(pieces: Sequence[_Piece], gname: str) -> tuple[bool, sp.Expr | None, float, str]:
    """Decide whether g (given by pieces) is bounded; return (bounded, exact_sup, sup, note).

    ``bounded`` is decided symbolically; ``exact_sup`` is None when only a numerical estimate
    ``sup`` is available.  Raises :class:`_Undetermined` when sympy cannot decide.
    """
    candidates: list[sp.Expr] = []
    exact = True
    accum = False
    for p in pieces:
        for end, direction in ((p.a, "+"), (p.b, "-")):
            v = _limit(p.expr, end, direction)
            bound = _limit_bound(v)
            if bound is None:
                where = f"x → {end}" if end.is_infinite else f"x → {end}{direction}"
                return False, None, math.inf, f"{gname} is unbounded ({gname} → {v} as {where})"
            accum |= isinstance(v, sp.AccumBounds)
            candidates.append(bound)
        dg = sp.diff(p.expr, X)
        if dg == 0:
            continue
        sol = None if _mixed_transcendental(dg) else _solve_real(dg, sp.Interval.open(p.a, p.b))
        if isinstance(sol, sp.FiniteSet):
            candidates += [sp.Abs(p.expr.subs(X, c)) for c in sol]
        elif sol is not sp.S.EmptySet:
            exact = False
    exact_sup = None
    if candidates:
        exact_sup = max(candidates, key=lambda c: float(sp.N(c, 30)))
    if exact:
        val = float(sp.N(exact_sup, 30))
        simp = sp.nsimplify(sp.simplify(exact_sup)) if exact_sup.is_Float else sp.simplify(exact_sup)
        return True, simp, val, f"sup|{gname}| = {_fmt(simp)} (exact)"
    num = _numeric_sup(pieces)
    exact_val = float(sp.N(exact_sup, 30)) if exact_sup is not None else 0.0
    if accum and abs(num - exact_val) <= 1e-9:
        simp = sp.simplify(exact_sup)
        return True, simp, exact_val, (f"sup|{gname}| = {_fmt(simp)} (the bound of the oscillation at ±∞ from "
                                       "sympy AccumBounds, which a numerical scan attains)")
    val = max(num, exact_val)
    return True, None, val, f"sup|{gname}| ≈ {val:.10g} (numerical estimate)"
