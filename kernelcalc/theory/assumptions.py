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
from typing import Sequence

import sympy as sp

from .._validation import warn
from ._piecewise import (_derivative_pieces, _fmt, _is_finite_number, _jump, _limit, _midpoint, _Piece,
                         _pieces, _sup_abs, _Undetermined)
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
