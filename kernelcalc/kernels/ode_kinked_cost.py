r"""The cost model and guard of the composite panels of the kinked Neural-ODE solver
(:mod:`kernelcalc.kernels.ode_kinked_panels`): the predicted work of a call (its pairs, self-kernels, near-parallel
pairs in deficit form and the rungs of the degree ladder) in operations of about ``_NS_PER_OP`` ns, priced per node
and Picard sweep (:meth:`KinkedPanelsCostMixin._panel_prices`), and the refusal when it exceeds the solver's work
limit (:meth:`KinkedPanelsCostMixin._check_panels`)."""

from __future__ import annotations

import math

#: The cost model of the panels (KinkedPanelsMixin._panel_prices), in operations of about _NS_PER_OP ns of one core
#: (the work limit 1e10: about a minute).  Measured with benchmarks/probe_panel_cost.py (N = 3 on the sphere, relu,
#: abs, gelu, elu at sigma_w T = 5-40; CPU time per solve against its counted node-sweeps and dual evaluations):
#: The whole call's prediction (``info["predicted_operations"]``, the largest the guard checked: the ladder's last
#: rung with the pairs at its degree) against its CPU time, N = 3 on the sphere, load 5-10 (CPU s / predicted s):
#: relu sigma_w T = 5, 10, 20, 40: 0.22/0.12, 0.46/0.44, 1.66/2.34, 8.5/8.8; leaky_relu 20: 1.77/2.34; abs 10, 20,
#: 40: 0.49/0.44, 1.81/2.34, 12.0/15.9; gelu 5, 10, 20: 0.69/0.12 (fixed costs of a sub-second call), 1.56/1.16,
#: 7.2/8.3; elu 5, 10: 1.10/0.73, 7.9/8.3; elu 20 with the guard lifted: 59.3/62.3 (degree 32: refused, 1.04e10).
_NS_PER_OP = 6.0
_EVAL_OPS = 4.0            # one numpy closed-form evaluation at a node: ~25 ns of array overheads ...
_CLOSED_OPS_PER_PRICE = 3.3   # ... plus ~20 ns per unit of its price (relu, gelu 1: 30-50 ns; elu 50: 0.8-1.1 us)
_MAP_OPS = 0.25            # the cell maps per node and sweep, times m + 1 (~1.5 ns (m + 1): 20-50 ns at m = 12-32)
_ITER_OPS = 6e3            # fixed cost of one sweep of a wavefront or a row (~40 us of numpy calls on small arrays)
_PAIR_SWEEPS = 10          # Picard sweeps per node of a wavefront (measured 9-11), forward and backward alike
_PAIR_EVALS = 1.5          # the (C, Cdot) of a solved pair, in evaluations of C
_ANCHORED_EXACT = 0.4      # exact evaluations per forward sweep of a dear closed form (elu: 0.4 measured at T = 10)
_DEFICIT_OPS = 40.0        # the deficit's drop per node (duals_gap.homogeneous_gap, 8-point Gauss-Legendre: ~200 ns in batches of
                           # 3-12, ~500 ns alone; measured relu sigma_w T = 10, N = 200)
_PROBE_PAIRS = 3.5         # pairs per rung of the degree ladder (3 probe angles, and the identical pair's backward)
_BATCH_PAIRS = 64          # problems per solve (ode_kinked._BATCH)
_PANEL_FIRST_DEGREE = 12   # the first rung of band 0 (ode_kinked_ladder._PANEL_LADDERS)
_PANEL_LADDERS_0 = (12, 16, 20, 24, 32)


#: the large-q rule of softplus and silu (``asymptotic``) on the panels: operations per quadrature point of its mean
#: price (:meth:`GoursatRefusals._price`, over the regimes of q(t)), measured (softplus, sigma_w T = 6 and 10, N = 20)
_RULE_OPS_PER_POINT = 2.0
_CLENSHAW_OPS = 3.0        # a node angle table's Clenshaw sum per node (mean degrees 4-12; _node_tables)
#: exact (C, Cdot) per node that a node angle table's build costs (:mod:`._node_tables`; the ski-rental rule of
#: ``ode_kinked_node_tables._angle_table`` weighs it): 13 Lobatto nodes, doubled where needed (measured 14-21 evaluations
#: per node with the held-out checks, elu at sigma_w T = 10), and two bracketing solves (about 3 exact evaluations each)
_NT_BUILD_COST = 20.0 + 2 * 3.0
_TABLE_PAIRS = 3           # pairs of a band from which the table is built (its ski-rental rule, _angle_table)


def _anchored_dual(dual) -> bool:
    """Whether the cross-kernels of ``dual`` take anchored sweeps (a dear closed form, elu; the large-$q$ rule)."""
    return (dual.method == "closed" and getattr(dual, "points", 1) > 1) or dual.method == "asymptotic"


def _self_sweeps(P: int) -> float:
    """Picard sweeps per node of the self-kernel's row march on ``P`` panels (its diagonal couples each row; a sweep
    carries the left edges across the whole row, ``_panels._solve``): measured 13.6-14.3 at P = 7, 10, 20, 30, 40
    (relu and elu, degree 12; when a sweep carried an edge one cell further: 32-34 at P = 10, 43 at 20, 47 at 40)."""
    return 14.5


class KinkedPanelsCostMixin:
    r"""The panels' cost guard of :class:`~kernelcalc.kernels.ode_kinked_panels.KinkedPanelsMixin` (its subclass
    supplies ``_panel_count``, and the solver ``work_limit``, ``cost_message``, ``info`` and the parameters)."""

    def _check_cost(self, dual, pairs: int, n: int, symmetric: bool = False):
        r"""As :meth:`GoursatSolver._check_cost` on one element.  On the panels: the work of a call of ``pairs`` pairs
        at the per-cell degree of ``n`` nodes (at least the first rung of the degree ladder), with its self-kernel
        and the two rungs the ladder climbs at least (:meth:`_check_panels`)."""
        P = self._panel_count()
        if P == 1:
            return super()._check_cost(dual, pairs, n, symmetric)
        m = max((int(n) - 1) // P, 1 if self.M_fixed is not None else _PANEL_FIRST_DEGREE)
        self._check_panels(dual, m, pairs=int(pairs), selfs=1, rungs=2 if self.M_fixed is None else 0)

    def _panel_prices(self, dual, m: int) -> dict:
        r"""The cost model of the panels at per-cell degree ``m`` (operations of about ``_NS_PER_OP`` ns; measured with
        ``benchmarks/probe_panel_cost.py``): a node of a solve costs, per Picard sweep, the dual there (``eval``:
        ``_EVAL_OPS`` plus the rule's price :attr:`~kernelcalc.theory.gaussian.DualKernels.points` at the weight of its
        method) and the cell maps (``map``, $\propto m+1$); a cross-kernel (a pair) is a forward march by wavefronts
        (``_PAIR_SWEEPS`` sweeps per node; a dear closed form, elu, evaluates exactly at ``_ANCHORED_EXACT`` of them,
        :class:`._anchored.AnchoredDual`), its $(C,\dot C)$, and the backward march (as many sweeps); the self-kernel
        a row march of :func:`_self_sweeps` sweeps per node; each sweep of a wavefront or a row has a fixed cost
        (``_ITER_OPS``: numpy calls on small arrays), shared by the problems of a batch."""
        P = self._panel_count()
        cells = P + P * (P - 1) // 2
        nodes = cells * (m + 1) ** 2
        points = float(dual.points)
        if dual.method == "closed" and not getattr(dual, "tabulated", False):   # (tabulated: weight 1, below)
            weight = _CLOSED_OPS_PER_PRICE
        elif dual.method in ("hermite", "fourier"):
            weight = 0.05
        elif dual.method == "asymptotic":       # the large-q rule: its mean price over the regimes of q(t) (_price)
            weight, points = _RULE_OPS_PER_POINT, float(self._price(dual)[0])
        else:
            weight = 1.0
        ev = _EVAL_OPS + weight * points
        mp = _MAP_OPS * (m + 1)
        exact = _ANCHORED_EXACT if _anchored_dual(dual) else 1.0
        per_node_pair = _PAIR_SWEEPS * (exact * ev + mp) + _PAIR_EVALS * ev + _PAIR_SWEEPS * mp
        sweeps = _self_sweeps(P)
        # through a node angle table (the Gram's pairs of a large-q rule, ode_kinked_node_tables._angle_table): Clenshaw sums
        # in the sweeps, and the table's build once per grid and band of input angles
        per_node_table = 2 * _PAIR_SWEEPS * (_CLENSHAW_OPS + mp) + _PAIR_EVALS * _CLENSHAW_OPS
        return dict(P=P, cells=cells, per_cell=(m + 1) ** 2, nodes=nodes, eval=ev, map=mp, exact=exact,
                    pair=nodes * per_node_pair, pair_ops=per_node_pair / (2 * _PAIR_SWEEPS),
                    pair_fixed=2 * (2 * P - 1) * _PAIR_SWEEPS * _ITER_OPS,
                    table_pair=nodes * per_node_table, table_build=nodes * _NT_BUILD_COST * ev,
                    self=nodes * sweeps * (ev + mp) + P * sweeps * _ITER_OPS, self_sweeps=sweeps)

    def _deficit_work(self, dual, m: int) -> float:
        r"""The extra work of a near-parallel pair of a homogeneous kink (:meth:`KinkedSolverMixin._deficit`: the
        parallel pair's march and the deficit's, whose drop $C(\rho_p)-C(\rho_c)$ costs ``_DEFICIT_OPS`` per node),
        0 for other duals."""
        if not getattr(self, "_deficit_form", lambda d: False)(dual):
            return 0.0
        p = self._panel_prices(dual, m)
        return p["nodes"] * _PAIR_SWEEPS * (p["eval"] + _DEFICIT_OPS + 2 * p["map"]) + p["pair_fixed"] / 2

    def _rung_work(self, dual, m: int) -> float:
        r"""Predicted work of one rung of band 0's degree ladder at degree ``m``: a self-kernel, the backward march of
        the identical pair and three probe pairs (one batch; the probe at angle 1 is near-parallel past
        $\sigma_wT=19$: a deficit pair for a homogeneous kink)."""
        p = self._panel_prices(dual, m)
        near = 2.0 / (1.0 + self.sigma_w * self.T) < 0.1
        return (p["self"] + _PROBE_PAIRS * p["pair"] + 2 * p["pair_fixed"]
                + (self._deficit_work(dual, m) if near else 0.0))

    def predicted_work(self, dual, m: int, pairs: int = 0, selfs: int = 0, rungs=(), near: int = 0) -> float:
        """The work :meth:`_check_panels` prices (without refusing): ``pairs`` pairs (``near`` of them in deficit
        form) and ``selfs`` self-kernels at degree ``m``, and band 0's ladder rungs at the degrees ``rungs``."""
        p = self._panel_prices(dual, m)
        batches = -(-int(pairs) // _BATCH_PAIRS) if pairs else 0
        if dual.method == "asymptotic" and pairs >= _TABLE_PAIRS:     # through a node angle table (_check_panels)
            pairs_work = pairs * p["table_pair"] + p["table_build"]
        else:
            pairs_work = pairs * p["pair"]
        return (pairs_work + batches * p["pair_fixed"] + selfs * p["self"] + near * self._deficit_work(dual, m)
                + sum(self._rung_work(dual, r) for r in rungs))

    def _check_panels(self, dual, m: int, pairs: int = 0, selfs: int = 0, rungs: int = 0, near: int = 0, others=()):
        r"""Refuse (:meth:`_refuse_if`) when ``pairs`` pairs (``near`` of them near-parallel: :meth:`_deficit_work`) and
        ``selfs`` self-kernels at per-cell degree ``m``, with ``rungs`` rungs of band 0's degree ladder from ``m`` on
        and the work of ``others`` (``[(work, label)]``: rungs already climbed, pairs at other degrees) exceed the
        work limit.  The message's factors: the problems in pair-equivalents (each part named), the sweeps per node
        of a pair, the time cells, the nodes per cell and the operations per node and sweep (:meth:`_panel_prices`),
        whose product is the quoted work."""
        p = self._panel_prices(dual, m)
        ladder = [d for d in _PANEL_LADDERS_0 if d >= m][:rungs]
        ladder += [ladder[-1]] * (rungs - len(ladder)) if ladder else []
        unit = p["pair"]                          # one pair's work at degree m (its marches, without fixed costs)
        batches = -(-int(pairs) // _BATCH_PAIRS) if pairs else 0
        if dual.method == "asymptotic" and pairs >= _TABLE_PAIRS:     # the Gram's pairs through a node angle table
            parts = [(pairs * p["table_pair"] / unit, f"{pairs} pairs through a node angle table"),
                     (p["table_build"] / unit, f"the table's build ({_NT_BUILD_COST:g} evaluations of the rule per "
                                               "node)")]
        else:
            parts = [(pairs, f"{pairs} pairs")]
        parts += [(near * self._deficit_work(dual, m) / unit if near else 0.0,
                  f"the deficit form of {near} near-parallel pairs"),
                 (batches * p["pair_fixed"] / unit, f"{batches} batches' sweep overheads"),
                 (selfs * p["self"] / unit, f"{selfs} self-kernels of {p['self_sweeps']:.0f} row sweeps"),
                 (sum(self._rung_work(dual, r) for r in ladder) / unit,
                  f"{len(ladder)} rungs of the degree ladder (degrees {', '.join(map(str, ladder))})" if ladder else "")]
        parts += [(w / unit, label) for w, label in others]
        problems = sum(v for v, _ in parts)
        labels = " + ".join(f"{v:.3g} for {lab}" for v, lab in parts if v > 0 and lab)
        closed = dual.method == "closed"
        factors = [(problems, f"problem solves, in pairs ({labels})"),
                   (2 * _PAIR_SWEEPS, f"Picard sweeps per node of a pair ({_PAIR_SWEEPS} forward by wavefronts, "
                                      f"{_PAIR_SWEEPS} backward)"),
                   (p["cells"], f"time cells ({p['P']} panels for sigma_w*T = {self.sigma_w * self.T:g}: {p['P']} "
                                f"diagonal, {p['cells'] - p['P']} off-diagonal)"),
                   (p["per_cell"], f"nodes per cell (degree {m})"),
                   (p["pair_ops"], f"operations per node and sweep (the dual: {p['eval']:.3g} per evaluation, "
                                   + (f"a closed form of price {dual.points}" if closed else
                                      f"{dual.points} quadrature points") + (f", exact at {p['exact']:g} of the "
                                                                               "forward sweeps" if p["exact"] < 1 else "")
                                   + f"; the cell maps: {p['map']:.3g})")]
        work = math.prod(float(v) for v, _ in factors)
        self.info["predicted_operations"] = max(self.info.get("predicted_operations", 0.0), work)
        self._refuse_if(factors, p["P"])

    def _refuse_if(self, factors, P):
        """Raise the cost refusal when the product of ``factors`` exceeds the work limit."""
        from .._validation import KernelcalcInputError
        work = math.prod(float(v) for v, _ in factors)
        if work <= self.work_limit:
            return
        q = self.info.get("q_max", float("nan"))
        raise KernelcalcInputError(self.cost_message(
            f"the {self.activation.name} kernel at {self.describe_parameters()}", factors,
            f"the pre-activation variance reaches q = {q:.4g}, on {P} time panels", self.cost_drivers))
