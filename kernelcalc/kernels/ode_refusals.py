r"""Why a Neural-ODE kernel is refused (:class:`GoursatRefusals`, a mixin of
:class:`~kernelcalc.kernels.ode_solver.GoursatSolver`): a solution that is not finite (a blow-up of a super-linear
$\phi$, a float64 overflow, sweeps that diverge past the supported horizon, or a solver failure), and the cost guard
of the tensor Chebyshev grid, with the one message of every cost refusal (:func:`cost_refusal`: its printed factors
multiply out to the number it quotes, and it names every parameter that drives the cost)."""

from __future__ import annotations

import math

import numpy as np

from .._validation import KernelcalcInputError
from ..theory.gaussian import hermite_q_limit
from .ode_grid import _M_SEQUENCE, _QUADRATURE_RULES, _marches

__all__ = ["GoursatRefusals", "cost_refusal"]

#: sigma_w * T up to which every built-in activation computes (issue 17); beyond, a solver that diverges is out of reach
_SUPPORTED_SIGMA_W_T = 10.0
_COST_SWEEPS = 40        # Picard sweeps a solve is costed at

#: the cost guard's price of one cell of the Euler ResNet's row march beyond its expectations (numpy work per cell:
#: measured about 80 ns per cell and solve, sin at depth 1024-2048: 8.4 s and 21 s for 4 inputs on the sphere; without
#: it a closed-form march was priced at 0.1 per cell, and depth 2^14 ran for more than 5 min instead of refusing)
_MARCH_CELL_OPS = 5.0


class _BlowUp(KernelcalcInputError):
    """The solution is not finite (a blow-up or an overflow): a finer time grid may still resolve it."""


class GoursatRefusals:
    """The refusals of a Goursat solver (module doc).  The solver supplies ``activation``, ``T``, ``sigma_w``,
    ``sigma_u``, ``v_max``, ``grid``, ``M_fixed``, ``info``, ``cost_drivers``, ``describe_parameters`` and
    ``work_limit``."""

    def cost_message(self, what, factors, why, drivers) -> str:
        """:func:`cost_refusal` at this solver's :attr:`work_limit`."""
        return cost_refusal(what, factors, why, drivers, self.work_limit)

    def _blow_up(self, what: str) -> "_BlowUp":
        """The right error for a non-finite solution: super-linear phi, float64 overflow, or the solver."""
        f = self.activation.numpy_fn
        with np.errstate(all="ignore"):
            big = np.array([-500.0, -50.0, 50.0, 500.0])
            vals = np.abs(np.asarray(f(big), dtype=float))
            x = np.linspace(-50, 50, 2001)
            slope = np.abs(np.asarray(self.activation.numpy_derivative(x), dtype=float))
        lip = float(np.max(slope[np.isfinite(slope)], initial=1.0))
        superlinear = (not np.all(np.isfinite(vals))
                       or max(vals[0] / 500, vals[3] / 500) > 2.0 * max(vals[1] / 50, vals[2] / 50) + 1e-12)
        where = f"on [0, T = {self.T:g}] (sigma_w = {self.sigma_w:g}, sigma_u = {self.sigma_u:g})"
        if superlinear:
            return _BlowUp(
                f"{what} of the {self.activation.name} network blows up {where}: phi grows faster than "
                "linearly, so the infinite-width dynamics exist only on a shorter horizon; reduce T or sigma_w")
        # |phi(h)| <= |phi(0)| + lip |h|: q(t) grows at most like exp(2 sigma_w lip t)
        log_bound = math.log(max(self.sigma_u**2 * self.v_max, 1e-300) + 1.0) + 2.0 * self.sigma_w * lip * self.T
        if log_bound > 700:
            return _BlowUp(
                f"{what} of the {self.activation.name} network overflows float64 {where}: phi grows "
                f"linearly (|phi'| <= {lip:.3g}), so q(T) can reach exp({log_bound:.0f}) > 1.8e308; "
                "reduce T, sigma_w or the input norm")
        if self.sigma_w * self.T > _SUPPORTED_SIGMA_W_T:     # past the supported horizon: out of reach, not a bug
            return _BlowUp(
                f"{what} of the {self.activation.name} network is not finite {where}, although phi grows at most "
                f"linearly (q(T) <= exp({log_bound:.0f})): the time solver's sweeps diverge at sigma_w*T = "
                f"{self.sigma_w * self.T:g} ({self.info.get('time_elements', 1)} time elements; supported up to "
                f"sigma_w*T = {_SUPPORTED_SIGMA_W_T:g}); reduce T or sigma_w")
        return _BlowUp(
            f"{what} of the {self.activation.name} network is not finite {where}, although phi grows at "
            f"most linearly (q(T) <= exp({log_bound:.0f})): the time solver failed ({self.info.get('M')} "
            f"intervals per element, {self.info.get('time_elements', 1)} elements); please report this")

    def _check_cost(self, dual, pairs: int, n: int, symmetric: bool = False, climbed=()):
        """Refuse (clear error naming the limit) when a solve would take many minutes.  ``symmetric``: the
        problems are symmetric in $(t,s)$ (self-kernels, same-norm pairs), so a quadrature rule evaluates
        $n(n+1)/2$ cells per sweep (:func:`_symmetric_from_marginals`), not $n^2$.  ``climbed``: the time nodes of
        the rungs of the time-grid ladder solved (or to be solved) before these ``pairs`` (each a self-kernel and
        a pair, :meth:`_choose_M`): their work counts too, as pair-equivalents at ``n`` nodes."""
        unit = 0.05 if dual.method in ("hermite", "closed", "fourier") else 1.0   # series terms are cheap multiply-adds
        points, how = self._price(dual)
        if _marches(self.grid(self.M_fixed or _M_SEQUENCE[0])):          # Euler ResNet: one pass, C and Cdot per cell
            sweeps = (1, "pass (row march)")
            per_cell = 2 * unit * points + _MARCH_CELL_OPS
            per_cell_label = (f"operations per cell (C and Cdot: 2 x {points:g} {how} at weight {unit:g}, "
                              f"plus {_MARCH_CELL_OPS:g} for the row march)")
        else:
            sweeps = (_COST_SWEEPS, "Picard sweeps")
            per_cell = unit * points + 0.04 * n       # the expectations, and 2 matrix products per sweep
            per_cell_label = (f"operations per cell ({points:g} {how} at weight {unit:g}, plus {0.04 * n:g} "
                              "for the matrix products)")
        half = symmetric and dual.method in _QUADRATURE_RULES and not _marches(self.grid(self.M_fixed or _M_SEQUENCE[0]))
        cells = (n * (n + 1) // 2, f"time cells ({n}({n}+1)/2: symmetric in t, s)") if half else (n * n, f"time cells ({n}^2)")
        if climbed:   # a rung at k nodes: a self-kernel and a pair, priced as the pairs here (cells, operations per cell)
            rungs = sum(2.0 * (k * (k + 1) // 2 if half else k * k) * (unit * points + 0.04 * k) for k in climbed)
            extra = rungs / (cells[0] * per_cell)
            pairs = (pairs + extra, f"pairs ({pairs} of the call + {extra:.3g} for the {len(climbed)} rungs of the "
                                    f"time-grid ladder at {', '.join(map(str, climbed))} time nodes)")
        else:
            pairs = (pairs, "pairs")
        work = pairs[0] * sweeps[0] * cells[0] * per_cell
        if work <= self.work_limit:
            return
        q = self.info.get("q_max", float("nan"))
        detail = f", the Hermite series needs more than 8192 terms beyond q ~ {hermite_q_limit((self.activation.numpy_fn, self.activation.numpy_derivative)):.3g}, and the trapezoid rule needs step {dual.rule.step:g}" if dual.method == "trapezoid" else ""
        raise KernelcalcInputError(self.cost_message(
            f"the {self.activation.name} kernel at {self.describe_parameters()}",
            [pairs, sweeps, cells, (per_cell, per_cell_label)],
            f"the pre-activation variance reaches q = {q:.4g}, on {n} time nodes{detail}", self.cost_drivers))

    def _price(self, dual):
        r"""``(points, text)``: the price of one expectation in the guard's unit.  The large-q rule with near tables
        (:attr:`~kernelcalc.theory.largeq_table.TabulatedRule.near_on`) costs :attr:`near_points` on the cells whose
        two variances are both (or one) $\ge Q_{\rm near}$ (its far series are cheaper still) and :attr:`points` (the
        quadrature, the worst case) on the others; with the low tables
        (:attr:`~kernelcalc.theory.largeq_table.TabulatedRule.low_on`) the cells whose variances are both in
        $[Q_{\rm low},Q_{\rm near})$, or one there and one $\ge Q_{\rm near}$, cost :attr:`low_points`.  With $f$ and $g$
        the fractions of time nodes with $q(t_i)\ge Q_{\rm near}$ and with $Q_{\rm low}\le q(t_i)<Q_{\rm near}$, the
        fractions of such cells are $f^2$, $2fg$, $g^2$ (without the low tables $g=0$ and $2f(1-f)$ of the cells have one
        variance $\ge Q_{\rm near}$: the near tables plus a trapezoid cross term); $f$, $g$ are read off the coarse
        self-kernel $q(t_i)$ of the largest input norm (``info["near_table_node_fraction"]``,
        ``info["low_table_node_fraction"]``, memoised with the grid)."""
        rule, frac = getattr(dual, "rule", None), self.info.get("near_table_node_fraction")
        if dual.method != "asymptotic" or not getattr(rule, "near_on", False) or frac is None:
            return dual.points, "quadrature points"
        from ..theory.largeq_near import Q_NEAR
        both, one = rule.near_points
        low = self.info.get("low_table_node_fraction", 0.0) if rule.low_on else 0.0
        low_both, low_mixed = rule.low_points
        p2, pm, pl = frac ** 2, 2.0 * frac * low, low ** 2
        p1 = 0.0 if rule.low_on else 2.0 * frac * (1.0 - frac)     # (with the low tables: the quadrature's)
        quad = max(1.0 - p2 - pm - pl - p1, 0.0)
        points = float(math.ceil(quad * rule.points + p1 * one + p2 * both + pm * low_mixed + pl * low_both))
        text = f"points (mean: {quad:.0%} of cells by the quadrature at {rule.points}, "
        if not rule.low_on:
            text += f"{p1:.0%} with one variance >= {Q_NEAR:g} at {one}, "
        text += f"{p2:.0%} with both by the near tables at {both}"
        if rule.low_on:
            from ..theory.largeq_low import Q_LOW
            text += (f", {pm:.0%} with one in [{Q_LOW:g}, {Q_NEAR:g}) and one >= {Q_NEAR:g} at {low_mixed}, {pl:.0%} with "
                     f"both in [{Q_LOW:g}, {Q_NEAR:g}) by the low tables at {low_both}")
        return points, text + ")"


def cost_refusal(what: str, factors, why: str, drivers, limit: float) -> str:
    r"""The one message of every cost refusal: ``what`` would cost $W=\prod_k f_k$ (each factor printed, so the
    quoted product is the product of the printed factors) above the limit, ``why``, and the advice naming
    every parameter in ``drivers`` that drives the cost.

    **Arguments:** ``factors``: ``[(value, label), ...]``; ``drivers``: the parameters (text) to reduce; ``limit``:
    the work limit."""
    work = math.prod(float(v) for v, _ in factors)
    shown = " x ".join(f"{v:d} {label}" if isinstance(v, int) else f"{v:.6g} {label}" for v, label in factors)
    advice = ", ".join(drivers[:-1]) + (" or " if len(drivers) > 1 else "") + drivers[-1]
    return (f"{what} would cost about {work:.3g} operations ({shown} = {work:.3g}; the limit is {limit:.0e}): "
            f"{why}; reduce {advice}")

