r"""Bivariate Gaussian expectations $E[f(a)g(b)]$, $(a,b)\sim N(0, [[q_1, c],[c, q_2]])$.

Three rules behind one front door, :func:`dual_kernels` (for $C=E[\phi\phi]$ and
$\dot C = E[\phi'\phi']$) and :func:`gaussian_expectation` (any pair $f, g$):

- **closed forms** (:mod:`kernelcalc.theory.duals`): relu/step arc-cosine, leaky relu, erf
  arcsin, gelu, sin/cos, every polynomial (Isserlis);
- **Cartesian trapezoid** for smooth activations. With $a=\sqrt{q_1}z_1$,
  $b=\sqrt{q_2}(r z_1+\sqrt{1-r^2}\,z_2)$, $r=c/\sqrt{q_1q_2}$,
  $E[f(a)g(b)] = \sum_{i,j} w_i w_j f(a_i)g(b_{ij})$ on the grid $z=kh$, $|z|\le 9$,
  $w_k = h\,e^{-z_k^2/2}/\sqrt{2\pi}$. For integrands analytic in the strip
  $|\mathrm{Im}\,z| < \delta$ the error is $O(e^{-2\pi\delta/h})$; Gauss–Hermite of the same
  size converges far slower (see shared/NUMERICS.md). The step $h$ is chosen by
  :func:`choose_step`: halve until the 1-D moments $E[f(\sqrt{q_{\max}}z)^2]$ of $\phi$ and
  $\phi'$ agree with the next halving to ``tol``;
- **polar-sector Gauss–Legendre** for activations with kinks at 0 and no closed form
  (elu with $\alpha\ne1$, user ``Max``/``Abs``/``Piecewise``): in polar coordinates
  $(z_1,z_2)=R(\cos\alpha,\sin\alpha)$ the kink lines $a=0$, $b=0$ are rays, so each of the
  four angular sectors has a smooth integrand; Gauss–Legendre in angle and in $R\in[0,10]$.

and **mpmath** (:func:`expect_mpmath`), a slow nested adaptive quadrature at arbitrary
precision (split at the kinks) used as the reference in the tests.

All numeric rules are jax functions (float64) that broadcast over arrays of covariances; the closed
forms and the Hermite series also run in numpy (``xp=numpy``), for small problems where compiling does not pay.
"""

from __future__ import annotations

import dataclasses

import mpmath as mp
import numpy as np
import sympy as sp

from .._x64 import float64
from .._lazy import jnp   # deferred: jax is imported on first use
from .._validation import accuracy_shortfall
from .activations import Activation, ActivationError, X, array_functions, resolve_activation
from .duals import closed_form_dual
from .duals_ops import LOOSE_TOL, NUMPY_OPS, NUMPY_OPS_LOOSE
from .largeq import asymptote_of
from .largeq_table import choose_tabulated
# the quadrature rules and the Hermite series live in their own modules; their names stay importable here
from .gaussian_rules import (DEFAULT_TOL, MEMORY_BUDGET, PolarSectorRule, TrapezoidRule, _block_size, _blocked,
                             numpy_pairs, padded_blocked,
                             _correlation, _gauss_legendre, _step_and_error, choose_polar, choose_step)  # noqa: F401
from .gaussian_hermite_truncation import Gathered, _terms_numpy  # noqa: F401
from .gaussian_hermite import (_HERMITE_KMAX, HermiteRule, _numpy_functions, hermite_order, hermite_q_limit,
                               series_lengths, short_coefficients, short_relative_tail)  # noqa: F401

__all__ = [
    "TrapezoidRule", "PolarSectorRule", "HermiteRule", "hermite_order", "choose_step", "dual_kernels", "DualKernels",
    "gaussian_expectation", "expect_mpmath", "DEFAULT_TOL", "MEMORY_BUDGET", "hermite_q_limit", "choose_polar",
    "Gathered", "fourier_dual_kernels",
]


@dataclasses.dataclass(frozen=True)
class DualKernels:
    r"""$(q_1,q_2,c)\mapsto(C,\dot C)$ for one activation, with the rule that computes it.

    ``method`` is ``"closed"``, ``"hermite"``, ``"trapezoid"``, ``"polar"`` or ``"asymptotic"``
    (large variances: :class:`~kernelcalc.theory.largeq_table.TabulatedRule`, or the window rule
    :class:`~kernelcalc.theory.largeq.AsymptoticRule` when built by hand), or ``"fourier"``
    (:class:`~kernelcalc.theory.polar_fourier.PolarFourierRule`, numpy only: a Chebyshev series in the correlation,
    chosen by the Neural-ODE solver for saturating activations at moderately large $q$).  Call it on arrays,
    or split the work: :meth:`marginal` precomputes what depends on one variance only
    (Hermite coefficients), :meth:`from_marginals` finishes for given covariances $c$.
    """

    activation: Activation
    method: str
    rule: object  # ClosedFormDual | HermiteRule | TrapezoidRule | PolarSectorRule | TabulatedRule (| AsymptoticRule)
    #: estimated relative error of one expectation (the achieved tolerance of the rule)
    error_estimate: float = DEFAULT_TOL
    #: why this rule was chosen when it is a fallback ("" otherwise)
    note: str = ""

    @property
    def points(self) -> int:
        r"""Cost of one $(C,\dot C)$ evaluation for fixed marginals, in integrand evaluations (or series terms)."""
        if self.method == "hermite":
            return self.rule.K
        return getattr(self.rule, "points", 1)   # (fourier: the Chebyshev modes of one Clenshaw sum)

    @property
    def numpy_ok(self) -> bool:
        """Whether :meth:`marginal` and :meth:`from_marginals` also run with ``xp=numpy`` (closed forms and
        the Hermite series: a few array operations per evaluation; the polar rule when tabulated,
        :mod:`~kernelcalc.theory.polar_table`, numpy only; the quadrature rules are compiled in jax.  The
        untabulated polar rule also evaluates with ``xp=numpy``, thousands of integrand values per covariance and
        nothing compiled: for the few covariances of a short march, not for a Gram)."""
        return self.method in ("closed", "hermite", "fourier") or (self.method == "polar" and self.tabulated)

    @property
    def tabulated(self) -> bool:
        r"""Whether the rule is a table in $(\log q_1,\log q_2,\theta)$ (:mod:`~kernelcalc.theory.polar_table`: the polar
        rule, or elu's closed form off the sphere), evaluated in numpy, its variances contracted once per solve
        (``rule.at_variances``)."""
        return hasattr(self.rule, "at_variances")

    @property
    def joint_at_variances(self):
        r"""``(q1, q2) -> (c -> (C, Cdot))`` (numpy) of a closed form that Taylor-updates its values between exact anchors
        at fixed variances (relu sums, continuous piecewise polynomials of degree 2:
        :mod:`~kernelcalc.theory.duals_taylor`), else ``None`` (another rule, or a $\phi$ that jumps: its cross solves
        iterate identical inputs with their own diagonal)."""
        if self.method != "closed" or self.activation.jumps:
            return None
        return getattr(self.rule, "joint_at_variances", None)

    @float64
    def marginal(self, q, derivative: bool = True, xp=jnp, tol=None):
        """Everything that depends on the variance ``q`` alone (a tuple of arrays); ``xp``: jax.numpy or
        numpy (see :attr:`numpy_ok`).  ``tol`` (numpy Hermite rule only): the tolerance of the per-variance
        series lengths (:func:`series_lengths`; default the rule's: a looser one for a Picard sweep far
        from convergence, whose coefficients need not be exact; then pass the same ``tol`` to :meth:`tails`)."""
        self._check_sweep_tol(tol, xp)
        q = xp.maximum(xp.asarray(q, xp.float64), 0.0)      # (variances >= 0: see from_marginals)
        if self.method == "fourier":    # numpy only (polar_fourier)
            return self.rule.marginal(np.asarray(q), derivative)
        if self.method != "hermite":
            return (q,)
        fs = (_numpy_functions(self.activation) if xp is np else array_functions(self.activation, "jax"))[: 2 if derivative else 1]
        if xp is np:       # per-variance lengths: a small variance carries a short series (short_coefficients)
            return (q,) + tuple(short_coefficients(self.rule, f, q, tol) for f in fs)
        return (q,) + tuple(self.rule.coefficients(f, q, xp) for f in fs)

    def _check_sweep_tol(self, tol, xp):
        if tol is not None and (self.method not in ("hermite", "closed") or xp is not np):
            raise ValueError("a sweep tolerance applies to the numpy Hermite rule and numpy closed forms only")

    def shared_tails(self, xp, only_numpy: bool = False):
        """``m -> tails(m)`` for the marginals a call's batches share: a solver's store's own (computed per norm as it
        entered), else computed once for the last ``m`` met (one tuple: atomic under threads); ``only_numpy``:
        jax.numpy computes them at every call (traced marginals are not kept)."""
        last = {}

        def tails_of(m):
            if only_numpy and xp is not np:
                return self.tails(m, xp)
            if getattr(m, "tails", None) is not None:
                return m.tails
            hit = last.get("hit")
            if hit is None or hit[0] is not m:
                hit = last["hit"] = (m, self.tails(m, xp))
            return hit[1]

        return tails_of

    def tails(self, m, xp=jnp, tol=None):
        """The Hermite rule's :meth:`HermiteRule.relative_tail` of every coefficient array of the marginals
        ``m`` (``(K, U, ...)`` coefficients of U variances -> one ``(K, U)`` array each; ``None`` for the
        other rules).  Computed once for marginals that many evaluations share, gathered per problem and
        passed to ``from_marginals(..., tails=(tails_1, tails_2))``.  ``tol``: as given to :meth:`marginal`."""
        self._check_sweep_tol(tol, xp)
        if self.method != "hermite":
            return None
        if xp is np:       # numpy marginals are short per variance (marginal): sum each over its length
            fs = _numpy_functions(self.activation)
            t = self.rule.tol if tol is None else max(tol, self.rule.tol)
            return tuple(short_relative_tail(b, series_lengths(f, m[0], self.rule.K, t, self.rule.tol))
                         for f, b in zip(fs, m[1:]))
        return tuple(HermiteRule.relative_tail(b, xp) for b in m[1:])

    @float64
    def from_marginals(self, m1, m2, c, derivative: bool = True, xp=jnp, tails=None, tol=None):
        r"""$C$ (and $\dot C$ if ``derivative``) for marginals from :meth:`marginal` and covariance ``c``
        (``xp`` as there).  ``tails``: ``(tails(m1), tails(m2))`` when known (the Mehler series is
        truncated by correlation; :class:`HermiteRule`).  ``tol`` (numpy Hermite rule: the truncation
        tolerance instead of the rule's, never below it; numpy closed form: from 1e-7 on, the whitened bivariate Mills
        ratios of elu on fewer nodes, exact below; for a Picard sweep far from convergence)."""
        self._check_sweep_tol(tol, xp)
        # variances are >= 0: a zero input row's q(t) = 0 reaches here with rounding of either sign (-4e-20 resampled
        # onto another time grid; elu's closed form at q = 0 is 1e-16, not 0), whose square root was NaN
        q1, q2 = xp.maximum(m1[0], 0.0), xp.maximum(m2[0], 0.0)
        c = xp.asarray(c, xp.float64)
        shape = xp.broadcast_shapes(q1.shape, q2.shape, c.shape)
        if self.method == "fourier":    # numpy only (polar_fourier)
            out = self.rule.from_marginals(m1, m2, np.asarray(c), derivative)
            out = tuple(np.broadcast_to(o, shape) for o in (out if derivative else (out,)))
            return out if derivative else out[0]
        if self.method == "hermite":
            r, _ = _correlation(q1, q2, c, xp, complement=False)
            out = tuple(HermiteRule.series(m1[i], m2[i], r, xp, tol=self.rule.tol if tol is None else max(tol, self.rule.tol),
                                           tails=None if tails is None else (tails[0][i - 1], tails[1][i - 1]))
                        for i in ((1, 2) if derivative else (1,)))
        elif self.method == "closed" and xp is np and not derivative:
            out = (self.rule.C_formula(_closed_ops(tol), q1, q2, c),)   # C alone (the Picard sweeps: no Cdot)
        elif self.method == "closed":
            out = self.rule(q1, q2, c, ops=_closed_ops(tol) if xp is np else None)[: 2 if derivative else 1]
        elif self.method == "polar" and xp is np and self.numpy_ok:      # tabulated (theory/polar_table.py)
            out = self.rule.values_np(q1, q2, c, derivative)
        elif self.method == "polar" and xp is np:   # the rule itself in numpy: a few covariances, nothing compiled
            out = self.rule.expect_pairs_np(numpy_pairs(self.activation, derivative), q1, q2, c)
        elif xp is np:
            raise ValueError(f"the {self.method} rule has no numpy evaluation (see DualKernels.numpy_ok)")
        elif self.method == "asymptotic":
            out = self.rule.expect(q1, q2, c, derivative=derivative, blocked=_blocked)
        else:
            f, df = self.activation.jax_fn, self.activation.jax_derivative
            out = self.rule.expect_pairs(((f, f), (df, df))[: 2 if derivative else 1], q1, q2, c)
        if self.activation.vanishes_at_zero:
            # a zero variance is the constant 0, so C = phi(0) E[phi(b)] = 0 exactly: the rules' rounding there (elu's
            # closed form 1e-16, hard-swish's 1e-52 through its floor of s) kept a zero row's own Picard sweeps, whose
            # changes have no scale but themselves, from converging (400 sweeps, estimate 64 relative, warned)
            out = (xp.where((q1 == 0) | (q2 == 0), 0.0, out[0]),) + tuple(out[1:])
        out = tuple(xp.broadcast_to(o, shape) for o in out)
        return out if derivative else out[0]

    @float64
    def __call__(self, q1, q2, c):
        r"""$(C, \dot C)$, broadcasting over arrays."""
        return self.from_marginals(self.marginal(q1), self.marginal(q2), c)

    @float64
    def C(self, q1, q2, c, xp=jnp):
        """$C$ only (``xp`` as in :meth:`marginal`)."""
        return self.from_marginals(self.marginal(q1, False, xp), self.marginal(q2, False, xp), c, derivative=False, xp=xp)

    def describe(self) -> str:
        if self.method == "closed":
            text = f"closed form ({self.rule.name})"
        elif self.method == "hermite":
            text = f"Mehler/Hermite series, {self.rule.K} terms"
        elif self.method == "fourier":
            text = self.rule.describe()
        elif self.method == "trapezoid":
            text = f"trapezoid, step {self.rule.step:g}, |z| <= {self.rule.zmax:g}"
        elif self.method == "asymptotic" and hasattr(self.rule, "describe"):
            text = self.rule.describe()
        elif self.method == "asymptotic":
            text = (f"large-q asymptote ({self.rule.asymptote.family}) + localised remainder, step {self.rule.h:g} "
                    f"on |x| <= {self.rule.asymptote.L:g}, {self.rule.n_inner} inner nodes")
        elif hasattr(self.rule, "describe"):        # (the polar rule tabulated: theory/polar_table.py)
            text = self.rule.describe()
        else:
            text = f"polar sectors, {self.rule.n_angle}x4 angles x {self.rule.n_radius} radii"
        return f"{text} ({self.note})" if self.note else text


def _closed_ops(tol):
    """The numpy operations of a closed form at the accuracy ``tol`` (``None``: full): the loose ones from
    :data:`~kernelcalc.theory.duals_ops.LOOSE_TOL` on."""
    return NUMPY_OPS_LOOSE if tol is not None and tol >= LOOSE_TOL else NUMPY_OPS


_METHODS = ("auto", "closed", "hermite", "trapezoid", "polar", "asymptotic")


def require_integrable(act: Activation) -> None:
    r"""Refuse (one-line :class:`~kernelcalc.theory.activations.ActivationError`, a
    :class:`~kernelcalc.KernelcalcInputError`) an activation whose Gaussian expectations cannot be computed:
    $\phi$ not real and finite on all of $\mathbb R$ (:attr:`Activation.real_line_defect`: ``log(x)``,
    ``sqrt(x)``, ``tan(x)``), or jumping at every integer (``floor``, ``ceiling``: the quadratures here are
    exact for kinks and jumps at 0 only, and would converge algebraically across the others)."""
    why = act.real_line_defect
    if why is not None:
        raise ActivationError(f"no kernel for the activation {act.name}: {why}, but a Gaussian pre-activation takes "
                              "every real value, so phi must be real and finite on all of R (for example "
                              "log(1+exp(x)) instead of log(x))")
    if act.expr.has(sp.floor, sp.ceiling):
        raise ActivationError(f"no kernel for the activation {act.name}: floor/ceiling jump at every integer, and "
                              "kernelcalc's Gaussian quadratures handle kinks and jumps at x = 0 only (sign, Heaviside, "
                              "abs, Max, Min, Piecewise at 0); across the other jumps they would converge only "
                              "algebraically")


def _require_breaks_at_zero(act: Activation) -> None:
    r"""Refuse (one-line :class:`~kernelcalc.theory.activations.ActivationError`) a piecewise activation with a kink or
    jump away from 0 that has no closed form (a piece that is not a polynomial): the polar-sector rule is exact for
    breakpoints at 0 only, and across the others converges algebraically (measured: ``Piecewise((x, x > 1),
    (tanh(x - 1) + 1, True))`` still changed by 8e-6 at its finest level, and its Neural-ODE kernel ran for minutes)."""
    from ._piecewise import pieces_or_none

    pieces = pieces_or_none(act.expr)
    if pieces is None:
        return
    away = [p for p, nxt in zip(pieces[:-1], pieces[1:]) if p.b != 0 and p.expr != nxt.expr]
    other = next((q.expr for q in pieces if not q.expr.is_polynomial(X)), None)
    if away and other is not None:      # (polynomial pieces of degree > 4: the polar rule, smooth enough there)
        b = away[0].b
        raise ActivationError(
            f"no kernel for the activation {act.name}: it has a kink or jump at x = {b} (away from 0)"
            + f" and a piece that is not a polynomial ({other})"
            + "; kernelcalc computes breakpoints away from 0 in closed form for piecewise-polynomial activations "
            "(hardtanh, relu6, hard-swish, steps) and by quadrature only at x = 0, where it is exact (elsewhere it "
            "would converge only algebraically)")


@float64
def dual_kernels(activation, *, q_max: float = 10.0, tol: float = DEFAULT_TOL,
                 method: str = "auto", strict: bool = False) -> DualKernels:
    r"""The $(C, \dot C)$ evaluator for ``activation``, accurate to ``tol`` for variances $\le q_{\max}$.

    ``method="auto"`` picks a closed form when one exists, polar sectors for kinks at 0,
    the Mehler/Hermite series when it converges within 8192 terms, else the large-q asymptote +
    localised remainder with a tabulated inner average (:mod:`kernelcalc.theory.largeq_table`) when the activation has one, else the trapezoid rule
    (the fallback is named in :meth:`DualKernels.describe`, and a trapezoid rule that cannot meet
    ``tol`` warns, or raises when ``strict``).  ``error_estimate`` of the result is the achieved
    relative accuracy.
    """
    act = resolve_activation(activation)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    require_integrable(act)
    if method in ("auto", "closed"):
        dual = closed_form_dual(act)
        if dual is not None:
            return DualKernels(act, "closed", dual)
        if method == "closed":
            raise ValueError(f"no closed-form dual kernel is known for {act.name!r}")
    if method == "polar" or (method == "auto" and act.is_piecewise_smooth):
        if method == "auto":
            _require_breaks_at_zero(act)
        rule, err = choose_polar(act, q_max, tol, strict)
        return DualKernels(act, "polar", rule, error_estimate=max(err, tol))
    fns = (act.numpy_fn, act.numpy_derivative)
    note = ""
    if method in ("auto", "hermite"):
        K = hermite_order(fns, q_max, tol)
        if K is not None:
            return DualKernels(act, "hermite", HermiteRule(K, tol), error_estimate=tol)
        if method == "hermite":
            raise ValueError(f"the Hermite series of {act.name!r} does not converge to {tol:g} "
                             f"within {_HERMITE_KMAX} terms at q_max={q_max:g}")
        note = f"fallback: the Hermite series needs more than {_HERMITE_KMAX} terms at q_max = {q_max:.4g}"
    asy = asymptote_of(act)
    if method == "asymptotic" or (method == "auto" and asy is not None):
        if asy is None:
            raise ValueError(f"no large-q asymptote is known for {act.name!r}")
        rule, err = choose_tabulated(act, q_max, tol, strict, blocked=padded_blocked)   # the solvers' shape (values_np)
        return DualKernels(act, "asymptotic", rule, error_estimate=max(err, tol), note=note)
    h, change, met = _step_and_error(fns, q_max, tol, 0.5, 0.01)
    if not met:
        accuracy_shortfall(f"Gaussian expectations of {act.name}: the trapezoid rule at its finest step "
                           f"h = {h:g} reaches a relative accuracy of only {change:.1e} > tol = {tol:.1e} at "
                           f"q_max = {q_max:.4g}" + (f" ({note})" if note else ""), strict)
    return DualKernels(act, "trapezoid", TrapezoidRule(h), error_estimate=max(tol, change if not met else tol),
                       note=note)


def fourier_dual_kernels(activation, *, q_max: float, tol: float = DEFAULT_TOL) -> DualKernels:
    r"""The ``"fourier"`` :class:`DualKernels` of a smooth ``activation`` for variances up to ``q_max``: $C$ and
    $\dot C$ as Chebyshev series in the correlation (:mod:`kernelcalc.theory.polar_fourier`; numpy only), with the
    measured difference of two radial steps as ``error_estimate``."""
    from .polar_fourier import choose_polar_fourier

    act = resolve_activation(activation)
    rule, err = choose_polar_fourier(array_functions(act, "numpy"), float(q_max), tol, act.name)
    return DualKernels(act, "fourier", rule, error_estimate=max(err, tol))


@float64
def gaussian_expectation(f, g, q1, q2, c, *, method: str = "auto", tol: float = DEFAULT_TOL):
    r"""$E[f(a)g(b)]$ for $(a,b)\sim N(0,[[q_1,c],[c,q_2]])$, vectorised over the covariances.

    ``f``, ``g``: activation specs (names, expressions, :class:`Activation`).
    ``method``: ``"auto"`` (closed form when $f=g$ has one, else quadrature), ``"trapezoid"``,
    ``"polar"`` or ``"mpmath"`` (slow reference; scalars only).
    """
    fa, ga = resolve_activation(f), resolve_activation(g)
    if method == "mpmath":
        return expect_mpmath(fa.expr, ga.expr, float(q1), float(q2), float(c))
    if method in ("auto", "closed") and fa == ga and closed_form_dual(fa) is not None:
        return dual_kernels(fa, method="closed").C(q1, q2, c)
    kinks = fa.is_piecewise_smooth or ga.is_piecewise_smooth
    if method == "polar" or (method == "auto" and kinks):
        rule = PolarSectorRule()
    elif method in ("auto", "trapezoid"):
        q_max = float(np.max(np.maximum(np.asarray(q1), np.asarray(q2))))
        rule = TrapezoidRule(choose_step((fa.numpy_fn, ga.numpy_fn), q_max, tol))
    else:
        raise ValueError(f"method must be 'auto', 'trapezoid', 'polar' or 'mpmath', got {method!r}")
    return rule.expect_pairs(((fa.jax_fn, ga.jax_fn),), q1, q2, c)[0]


def _kinks(expr: sp.Expr) -> list[float]:
    """Real points where ``expr`` (or its derivative) is not smooth: its breakpoints (:mod:`._piecewise`; 0 where
    they cannot be determined for an expression with Heaviside/Max/...)."""
    if not expr.has(sp.Piecewise, sp.Heaviside, sp.Abs, sp.sign, sp.Max, sp.Min, sp.DiracDelta):
        return []
    from ._piecewise import pieces_or_none

    pieces = pieces_or_none(expr)
    if pieces is None:
        return [0.0]
    return sorted({float(p.b) for p in pieces[:-1]})


def expect_mpmath(f: sp.Expr, g: sp.Expr, q1: float, q2: float, c: float, dps: int = 20, zmax: int = 12) -> float:
    r"""High-precision reference $E[f(a)g(b)]$ by nested adaptive (tanh-sinh) quadrature in mpmath.

    Gauss–Legendre (mpmath's degree-doubling ``quad``) on unit pieces of $|z|\le 12$
    (the Gaussian tail beyond is below $10^{-31}$), split at the breakpoints of $f$ and $g$ (:func:`_kinks`).
    Slow (seconds); for tests and spot checks.
    """
    with mp.workdps(dps):
        fm = sp.lambdify(X, f, "mpmath")
        gm = sp.lambdify(X, g, "mpmath")
        q1m, q2m, cm = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
        r = cm / mp.sqrt(q1m * q2m)
        r = max(min(r, mp.mpf(1)), mp.mpf(-1))
        s = mp.sqrt(1 - r * r)
        pdf = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)  # noqa: E731
        kinks_f = [mp.mpf(b) / mp.sqrt(q1m) for b in _kinks(f)] if q1m > 0 else []
        kinks_g = [mp.mpf(b) / mp.sqrt(q2m) for b in _kinks(g)] if q2m > 0 else []

        def pieces(extra):
            pts = sorted(set([mp.mpf(k) for k in range(-zmax, zmax + 1)] + [p for p in extra if abs(p) < zmax]))
            return pts

        def inner(z1):
            if s == 0:
                return gm(mp.sqrt(q2m) * r * z1)
            pts = pieces([(b - r * z1) / s for b in kinks_g])
            return mp.quad(lambda z2: gm(mp.sqrt(q2m) * (r * z1 + s * z2)) * pdf(z2), pts, method="gauss-legendre")

        outer = kinks_f + ([b / r for b in kinks_g] if r != 0 else [])     # s = 0: g's kinks in z1
        val = mp.quad(lambda z1: fm(mp.sqrt(q1m) * z1) * inner(z1) * pdf(z1), pieces([0] + outer), method="gauss-legendre")
        return float(val)
