r"""Assumption 1 of Gao et al. (ICLR 2025), decided symbolically for an :class:`Activation`.

*Global convergence in Neural ODEs: impact of activation functions* requires the activation
$\phi:\mathbb R\to\mathbb R$ to be

1. globally Lipschitz (``phi_lipschitz``), constant $\sup|\phi'|$;
2. with a globally Lipschitz derivative (``dphi_lipschitz``), constant $\sup|\phi''|$;
3. nonlinear (``nonlinear``: $\phi$ is not affine, i.e. $\phi''\not\equiv 0$ as a distribution);
4. non-polynomial (``non_polynomial``).

Every boolean verdict is justified symbolically with sympy:

- $\phi$ is split into smooth pieces on intervals (``Max``, ``Abs``, ``Heaviside``, ``sign`` and
  ``Piecewise`` are rewritten as one ``Piecewise``; the breakpoints are the real roots of the
  conditions, and of denominators / ``log`` arguments inside the pieces);
- $f$ is Lipschitz iff it is continuous (left and right limits agree at every breakpoint) and
  its piecewise derivative is bounded; a piece $g$ is bounded on $(a, b)$ when it is continuous
  there and its one-sided limits at $a$ and $b$ (possibly $\pm\infty$) are finite (a sympy
  ``AccumBounds`` with finite ends counts, which covers bounded oscillations like $\cos$);
- a jump of $f$ (e.g. $\phi' = $ ``Heaviside(x)``) or an infinite limit of its derivative
  (e.g. $\phi' = 2x$) disproves Lipschitz continuity.

The constants are found exactly where sympy can (critical points by ``solveset`` plus the
limits at the ends); otherwise a dense numerical scan estimates them, which the reason says
("numerical estimate").  Whatever sympy cannot decide gives ``holds=None`` with a reason
starting ``"undetermined: "`` -- never a guess.

Example::

    >>> from kernelcalc import analyse
    >>> r = analyse("tanh")
    >>> r.holds, r.phi_lipschitz.constant
    (True, 1.0)
    >>> analyse("relu").summary
    "Assumption 1 fails because φ' is not Lipschitz (φ' = Heaviside(x) jumps at x = 0: left limit 0, right limit 1)"
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np
import sympy as sp

from .._validation import warn
from .activations import Activation, X, resolve_activation

__all__ = ["Verdict", "Assumption1Report", "analyse", "Assumption1Warning", "warn_if_assumption1_fails"]

_NAMES = {
    "phi_lipschitz": "φ Lipschitz",
    "dphi_lipschitz": "φ' Lipschitz",
    "nonlinear": "nonlinear",
    "non_polynomial": "non-polynomial",
}
_FAILURE = {
    "phi_lipschitz": "φ is not Lipschitz",
    "dphi_lipschitz": "φ' is not Lipschitz",
    "nonlinear": "φ is linear (affine)",
    "non_polynomial": "φ is a polynomial",
}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One condition of Assumption 1: ``holds`` is True/False, or None when undetermined."""

    holds: bool | None
    reason: str
    constant: float | None = None

    def to_dict(self) -> dict:
        return {"holds": self.holds, "reason": self.reason, "constant": self.constant}


_HERMITE_SHOWN = 7      # Hermite coefficients a_0..a_7 in the report


@dataclasses.dataclass(frozen=True)
class Assumption1Report:
    """The Assumption-1 analysis of one activation (see :func:`analyse`)."""

    activation: str
    expr: str
    phi_lipschitz: Verdict
    dphi_lipschitz: Verdict
    nonlinear: Verdict
    non_polynomial: Verdict

    @property
    def verdicts(self) -> dict[str, Verdict]:
        return {k: getattr(self, k) for k in _NAMES}

    @property
    def holds(self) -> bool | None:
        """True if all four conditions hold, False if any fails, else None (undetermined)."""
        values = [v.holds for v in self.verdicts.values()]
        if any(v is False for v in values):
            return False
        if all(v is True for v in values):
            return True
        return None

    @property
    def summary(self) -> str:
        if self.holds is True:
            return "Assumption 1 holds"
        if self.holds is False:
            parts = [f"{_FAILURE[k]} ({v.reason})" for k, v in self.verdicts.items() if v.holds is False]
            return "Assumption 1 fails because " + "; ".join(parts)
        parts = [f"{_NAMES[k]}: {v.reason.removeprefix('undetermined: ')}"
                 for k, v in self.verdicts.items() if v.holds is None]
        return "undetermined: " + "; ".join(parts)

    @property
    def hermite(self):
        r"""The first Hermite coefficients $a_0..a_{7}$ of $\phi(z)$, $z\sim N(0,1)$
        (:func:`~kernelcalc.theory.hermite.hermite_coefficients`): Assumption 1's non-polynomial condition
        seen numerically (a polynomial of degree $p$ has $a_j=0$ for $j>p$); ``None`` when $\phi$ cannot
        be evaluated numerically."""
        from .hermite import hermite_coefficients

        try:
            return hermite_coefficients(self.expr, q=1.0, k_max=_HERMITE_SHOWN)
        except Exception:   # noqa: BLE001  (an expression numpy cannot evaluate: the report stands without it)
            return None

    def to_dict(self) -> dict:
        h = self.hermite
        return {"activation": self.activation, "expr": self.expr, "holds": self.holds,
                "summary": self.summary, **{k: v.to_dict() for k, v in self.verdicts.items()},
                "hermite": None if h is None else {"q": 1.0, "coefficients": h.coefficients.tolist(),
                                                   "error_bound": h.error_bound.tolist(),
                                                   "polynomial_degree": h.polynomial_degree}}

    def __str__(self) -> str:
        rows = [(_NAMES[k], {True: "yes", False: "NO", None: "?"}[v.holds],
                 "" if v.constant is None else f"{v.constant:.6g}", v.reason)
                for k, v in self.verdicts.items()]
        w0 = max(len(r[0]) for r in rows + [("condition",)])
        w2 = max(len(r[2]) for r in rows + [("", "", "constant")])
        lines = [f"Assumption 1 for {self.activation}: φ(x) = {self.expr}",
                 f"  {'condition':<{w0}}  holds  {'constant':<{w2}}  reason",
                 f"  {'-' * w0}  -----  {'-' * w2}  ------"]
        lines += [f"  {a:<{w0}}  {b:<5}  {c:<{w2}}  {d}" for a, b, c, d in rows]
        lines.append(f"  => {self.summary}")
        h = self.hermite
        if h is not None:
            lines.append("  " + h.table().replace("\n", "\n  "))
        return "\n".join(lines)


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


def _lipschitz(pieces: Sequence[_Piece], fname: str, fdisplay: sp.Expr, gname: str) -> Verdict:
    """Verdict on f (given by pieces) being globally Lipschitz, with constant sup|f'|."""
    try:
        j = _jump(pieces)
        if j is not None:
            x0, lv, rv = j
            return Verdict(False, f"{fname} = {_fmt(fdisplay)} jumps at x = {_fmt(x0)}: "
                                  f"left limit {_fmt(lv)}, right limit {_fmt(rv)}")
        bounded, _, sup, note = _sup_abs(_derivative_pieces(pieces), gname)
    except _Undetermined as err:
        return Verdict(None, f"undetermined: {err}")
    if not bounded:
        return Verdict(False, note)
    kinks = [p.b for p in pieces[:-1]]
    where = f"; piecewise smooth with breakpoints at x = {', '.join(_fmt(k) for k in kinks)}" if kinks else ""
    return Verdict(True, f"{fname} is continuous and {note}{where}", sup)


def _differs(v1: sp.Expr, v2: sp.Expr) -> bool:
    d = sp.N(v1 - v2, 40)
    return d.is_number and abs(complex(d)) > 1e-30


def _nonlinear(act: Activation, pieces, dpieces) -> Verdict:
    if act.is_polynomial:
        deg = act.polynomial_degree
        return Verdict(deg >= 2, f"φ is a polynomial of degree {deg}")
    try:
        j = _jump(pieces)
        if j is not None:
            return Verdict(True, f"φ jumps at x = {_fmt(j[0])}, so φ is not affine")
        j = _jump(dpieces)
        if j is not None:
            return Verdict(True, f"φ' jumps at x = {_fmt(j[0])} (a kink), so φ is not affine")
        tests = [_midpoint(p.a, p.b) for p in dpieces] + [sp.Rational(k, 3) for k in (-7, -2, 1, 5)]
        vals = []
        for t in tests:
            if any(t == p.b for p in dpieces[:-1]):
                continue
            piece = next(p for p in dpieces if (p.a == -sp.oo or p.a < t) and (p.b == sp.oo or t < p.b))
            vals.append((t, piece.expr.subs(X, t)))
        for (t1, v1) in vals:
            for (t2, v2) in vals:
                if _differs(v1, v2):
                    return Verdict(True, f"φ' takes different values at x = {t1} and x = {t2}, so φ'' ≢ 0")
        if all(sp.simplify(sp.diff(p.expr, X)) == 0 for p in dpieces):
            return Verdict(False, "φ'' ≡ 0 and φ' is continuous: φ is affine")
    except _Undetermined as err:
        return Verdict(None, f"undetermined: {err}")
    return Verdict(None, "undetermined: cannot decide whether φ'' vanishes identically")


def _non_polynomial(act: Activation, pieces, phi_lip: Verdict, nonlin: Verdict) -> Verdict:
    if act.is_polynomial:
        return Verdict(False, f"φ = {_fmt(act.expr)} is a polynomial of degree {act.polynomial_degree}")
    try:
        dpieces = _derivative_pieces(pieces)
        if _jump(pieces) is not None or _jump(dpieces) is not None:
            return Verdict(True, "φ is not C¹ (it has a kink or jump), unlike every polynomial")
        if nonlin.holds is False:
            return Verdict(False, f"φ is affine ({nonlin.reason}), a polynomial of degree ≤ 1")
        if phi_lip.holds is True and nonlin.holds is True:
            return Verdict(True, "φ' is bounded but φ is not affine; a polynomial with bounded derivative "
                                 "has degree ≤ 1")
        current = list(pieces)
        for k in range(4):
            for piece, end in ((current[0], -sp.oo), (current[-1], sp.oo)):
                try:
                    v = _limit(piece.expr, end, "+" if end == sp.oo else "-")
                except _Undetermined:
                    continue
                dname = "φ" + "'" * k
                if _is_finite_number(v):
                    t = _midpoint(piece.a, piece.b)
                    if _differs(piece.expr.subs(X, t), v):
                        return Verdict(True, f"{dname} → {_fmt(v)} as x → {end} but is not constant; "
                                             "a non-constant polynomial diverges at ±∞")
            current = list(_derivative_pieces(current))
    except _Undetermined as err:
        return Verdict(None, f"undetermined: {err}")
    simplified = sp.simplify(act.expr)
    if simplified.is_polynomial(X):
        return Verdict(False, f"φ simplifies to the polynomial {_fmt(simplified)}")
    return Verdict(None, "undetermined: cannot prove that φ is not a polynomial")


@functools.lru_cache(maxsize=256)
def _analyse_expr(act: Activation) -> Assumption1Report:
    try:
        return _analyse_unguarded(act)
    except Exception as err:  # noqa: BLE001  an unexpected sympy failure is "undetermined", never a guess
        u = Verdict(None, f"undetermined: sympy failed ({type(err).__name__}: {err})")
        nonpoly = Verdict(False, f"φ is a polynomial of degree {act.polynomial_degree}") if act.is_polynomial else u
        return Assumption1Report(act.name, str(act.expr), u, u, u, nonpoly)


def _integer_jump(act: Activation):
    r"""A jump of $\phi$ where the argument of one of its ``floor``/``ceiling`` is an integer: ``(x0, left, right)``
    with one-sided limits that differ, or ``None`` (the integers $-3..3$ and roots in $[-20, 20]$ are tried)."""
    for atom in act.expr.atoms(sp.floor, sp.ceiling):
        for k in sorted(range(-3, 4), key=abs):
            try:
                roots = sp.solveset(sp.Eq(atom.args[0], k), X, sp.Interval(-20, 20))
            except Exception:  # noqa: BLE001  sympy cannot solve it: try the next integer
                continue
            if not isinstance(roots, sp.FiniteSet):
                continue
            for x0 in sorted(roots, key=lambda r: abs(float(r))):
                left, right = _limit(act.expr, x0, "-"), _limit(act.expr, x0, "+")
                if left.is_number and right.is_number and abs(float(left - right)) > 1e-12:
                    return x0, left, right
    return None


def _analyse_unguarded(act: Activation) -> Assumption1Report:
    try:
        pieces = _pieces(act.expr)
    except _Undetermined as err:
        jump = _integer_jump(act) if act.expr.has(sp.floor, sp.ceiling) else None
        if jump is not None:
            x0, left, right = (_fmt(v) for v in jump)
            return Assumption1Report(
                act.name, str(act.expr),
                Verdict(False, f"φ = {act.expr} jumps at x = {x0}: left limit {left}, right limit {right}"),
                Verdict(False, f"φ jumps at x = {x0}, so φ' does not exist there; kernels use φ' = "
                               f"{act.derivative} almost everywhere, as autodiff does"),
                Verdict(True, f"φ jumps at x = {x0}, so it is not affine"),
                Verdict(True, f"φ jumps at x = {x0}, and a polynomial is continuous"))
        u = Verdict(None, f"undetermined: {err}")
        nonpoly = Verdict(False, f"φ is a polynomial of degree {act.polynomial_degree}") if act.is_polynomial else u
        return Assumption1Report(act.name, str(act.expr), u, u, u, nonpoly)
    dpieces = _derivative_pieces(pieces)
    phi_lip = _lipschitz(pieces, "φ", act.expr, "φ'")
    try:
        phi_jump = _jump(pieces)
    except _Undetermined as err:
        phi_jump, dphi_lip = None, Verdict(None, f"undetermined: {err}")
    else:
        dphi_lip = None
    if phi_jump is not None:
        dphi_lip = Verdict(False, f"φ jumps at x = {_fmt(phi_jump[0])}, so φ' does not exist there; kernels use φ' = "
                                  f"{act.derivative} almost everywhere, as autodiff does")
    elif dphi_lip is None:
        dphi_lip = _lipschitz(dpieces, "φ'", act.derivative, "φ''")
    nonlin = _nonlinear(act, pieces, dpieces)
    nonpoly = _non_polynomial(act, pieces, phi_lip, nonlin)
    return Assumption1Report(act.name, str(act.expr), phi_lip, dphi_lip, nonlin, nonpoly)


def analyse(activation: "str | sp.Expr | Activation") -> Assumption1Report:
    r"""Check Assumption 1 (Lipschitz $\phi$ and $\phi'$, nonlinear, non-polynomial) for an activation.

    **Arguments:**

    - ``activation``: an :class:`~kernelcalc.Activation`, a built-in name (``"elu(alpha=0.5)"``)
      or an expression in ``x`` (``"log(1+exp(x))"``).

    **Returns:** an :class:`Assumption1Report`; ``report.holds`` is True, False or None
    (undetermined), ``report.summary`` says why, each verdict carries its reason and, for the
    Lipschitz conditions, the constant $\sup|\phi'|$ resp. $\sup|\phi''|$.
    """
    act = resolve_activation(activation)
    known = _REMEMBERED.get(act)
    return known if known is not None else _analyse_expr(act)


#: Reports handed in by :func:`remember_analysis` (the CLI's on-disk cache), served by :func:`analyse`.
_REMEMBERED: dict = {}


def remember_analysis(activation: Activation, report: Assumption1Report) -> None:
    """Let :func:`analyse` return ``report`` for ``activation`` without redoing the sympy analysis (used by
    the CLI, which keeps the reports of earlier runs on disk, keyed by the activation's expression and
    the source of the analysis: :mod:`kernelcalc.cli._cache`)."""
    if not isinstance(activation, Activation) or not isinstance(report, Assumption1Report):
        raise TypeError("remember_analysis takes an Activation and an Assumption1Report")
    _REMEMBERED[activation] = report


class Assumption1Warning(UserWarning):
    """A kernel or network was computed for an activation that fails Assumption 1.

    The numbers are what was asked for, but the Neural-ODE theory of Gao et al. does not cover
    them: a well-posed infinite-width limit, a strictly positive definite NTK on distinct sphere
    inputs, and linear convergence of gradient descent are then not guaranteed. Silence it with
    ``warnings.simplefilter("ignore", kernelcalc.Assumption1Warning)``.
    """


def warn_if_assumption1_fails(activation, *, context: str | None = None,
                              stacklevel: int | None = None) -> Assumption1Report:
    r"""Issue one :class:`Assumption1Warning` if ``activation`` fails Assumption 1 (``holds is False``).

    Nothing is issued when Assumption 1 holds or is undetermined. Cheap after the first call for
    an activation: :func:`analyse` caches its (sympy) analysis per :class:`Activation`.

    **Arguments:**

    - ``activation``: anything :func:`~kernelcalc.resolve_activation` accepts.
    - ``context``: who is computing, for the message (e.g. ``"node_kernel"``).
    - ``stacklevel``: as for :func:`warnings.warn`, counted from the caller of this function; the
      default ``None`` points at the first line outside kernelcalc (the user's line that called the
      kernel, whatever decorators or helpers lie between).

    **Returns:** the :class:`Assumption1Report`.
    """
    report = analyse(activation)
    if report.holds is False:
        why = report.summary.removeprefix("Assumption 1 fails because ")
        where = f"{context}: " if context else ""
        warn(f"{where}activation {report.activation} fails Assumption 1 ({why}); the result is computed, but "
             "the Neural-ODE theory (well-posed limit, positive definite NTK, linear convergence of gradient "
             "descent) does not cover it", Assumption1Warning, stacklevel=None if stacklevel is None else stacklevel + 1)
    return report
