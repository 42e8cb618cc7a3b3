r"""The Goursat solvers of the Neural-ODE kernel (conventions in :mod:`kernelcalc.kernels.ode`):
:class:`GoursatSolver` (the adaptive choice of the dual rule and the time grid, the self- and cross-kernel solves of
a Gram on the tensor Chebyshev grid of :mod:`kernelcalc.kernels.ode_grid`; its refusals, blow-up and cost guard, are
in :mod:`kernelcalc.kernels.ode_refusals`) and :class:`KinkedGoursatSolver` (kinked activations: the
collapsed-triangle grid of :mod:`kernelcalc.kernels.ode_kinked`)."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from .._x64 import float64
from ..theory import recursion as rec
from .._validation import KernelcalcAccuracyWarning, KernelcalcInputError, accuracy_shortfall, warn
from ..theory.activations import resolve_activation
from ..theory.gaussian import DEFAULT_TOL, MEMORY_BUDGET, DualKernels, dual_kernels, hermite_order
from ..theory.largeq_table import cheapest_tabulated_rule
from ._gram import bucket, by_correlation, flat_pairs, pad_to
from .ode_grid import (_ELEMENT_LENGTH, _JIT_BATCH, _JIT_NORMS, _M_SEQUENCE, _MAX_NODES, _QUADRATURE_RULES, _STAGNATION,
                       _SWEEP_TOL, _backend, _compiled, _marches, chebyshev_discretisation, dear_numpy,
                       time_elements)
from ._interp import interval_weights
from ._marginal_table import TabulatedMarginals, smallest_norm
from ._ode_starts import SelfKernelStarts, coarse_problems, first_variance_guess, interpolated_starts
from .ode_kinked import KinkedSolverMixin
from .ode_refusals import GoursatRefusals, _BlowUp, cost_refusal  # noqa: F401  (cost_refusal: re-exported)

_KINK_M_MAX = 32          # kinked phi: C is not smooth at r = 1 (the diagonal t = s), the grid converges
                          # only algebraically; stop here and report the achieved change
_MAX_CACHED_DIAGONALS = 8192   # self-kernel diagonals kept per solver
_TABLE_MIN_NORMS = 8      # prepared norms from which the numpy marginals are tabulated in log q
_WORK_LIMIT = 1e10        # weighted integrand evaluations one Gram may cost (about a minute of CPU) before we refuse
_MIN_BATCH = 8            # pairs per cross-kernel batch at least (batches are grouped by correlation)
_MAX_TIME_GRIDS = 32      # memoised (rule, time grid) choices (GoursatSolver._dual_and_M)
#: (parameters, largest norm) -> (rule, M, info, warnings, {x.x/d: q(t)}): the memo of
#: :meth:`GoursatSolver._dual_and_M` and of the self-kernel diagonals on that grid
_TIME_GRIDS: dict = {}


_FOURIER_MIN_TERMS = 2048   # Mehler terms beyond which a saturating phi takes the "fourier" dual (GoursatSolver._fourier_dual)
_FOURIER_Q_MAX = 400.0      # ... up to this variance (tanh: about 1100 Chebyshev modes)


class GoursatSolver(GoursatRefusals, TabulatedMarginals):
    r"""Kernel evaluator for the Neural ODE or the weight-tied ResNet at fixed $(\phi, T, \sigma)$.

    ``solver(sxx, syy, sxy)`` maps input second moments $x\cdot x/d$, $y\cdot y/d$, $x\cdot y/d$
    (arrays of one shape) to ``(nngp, ntk)``.  ``grid(M)`` gives the :class:`Discretisation`;
    with ``M=None`` it is refined through ``_M_SEQUENCE`` until the self-kernel NTK of the largest
    norm changes by less than ``tol`` (spectral ODE grid); a fixed ``M`` is used as is (ResNet depth).
    Every shortfall (grid, Picard sweeps, quadrature) warns
    (:class:`~kernelcalc.KernelcalcAccuracyWarning`) or, with ``strict``, raises; the achieved
    values are in ``info`` and in :meth:`relative_error_estimate`.
    """

    def __init__(self, activation, *, T, sigma_w, sigma_u, sigma_v, grid, v_max, tol=1e-10, M=None,
                 scheme="Chebyshev-Lobatto spectral collocation", strict=False, max_nodes=_MAX_NODES):
        self.activation = resolve_activation(activation)
        self.T, self.sigma_w, self.sigma_u, self.sigma_v = T, sigma_w, sigma_u, sigma_v
        self.grid, self.scheme = grid, scheme
        self.tol = tol
        self.M_fixed = M
        self.strict = strict
        self.max_nodes = max_nodes
        self.v_max = float(v_max)   # largest input x.x/d of the whole Gram: fixes the quadrature range
        self.pairs_hint = 1         # pairs the Gram will evaluate (to refuse hopeless work early)
        self.same_norms = False     # whether all its inputs share one norm (the sphere: symmetric problems)
        self.info: dict = {}
        self._diagonals: dict = {}  # x.x/d -> q(t) on the final grid (the Gram's plans call us several times)
        self._shared_diagonals: dict = {}   # the same, shared by the calls that reuse this time grid (memo)
        self._shortfalls = 0        # accuracy warnings issued by this solver's sweeps
        #: what drives the cost of a solve, for the advice of a cost refusal (:func:`cost_refusal`)
        self.cost_drivers = ("sigma_w or T (time nodes)", "sigma_u or the input norm (the variance q)",
                             "the number of points")
        self._planned_pairs = 0     # pair solves a Gram plan announced (plan_pairs): the backend's work
        self._marginals: dict = {}  # x.x/d -> its Gaussian marginals on the final grid (numpy rules)
        self._store = None          # (x.x/d -> position, the marginals of all of them stacked): numpy Mehler series
        self._marginal_tails: dict = {}   # x.x/d -> the series tails of its marginals (numpy Mehler series)
        self._starts = SelfKernelStarts()   # the self-kernels solved: warm starts of identical inputs
        self._tabulated = None      # the dual whose numpy marginals are tabulated in log q (_tabulate)
        self._table_from = None     # the smallest of the many norms prepare announced
        self._v_lo = math.inf       # the smallest norm of the call that chose the dual (its table's range)

    #: the time grid's ladder judges the NTK of identical inputs at the largest norm (None), or of a pair at this
    #: correlation (the kinked solver's tensor grid of distinct inputs: :mod:`.ode_kinked`)
    probe_correlation = None
    #: ``(v, t) -> q`` ``(len(v), len(t))``: the self-kernel diagonals $q(t)$ of the norms ``v`` at the times ``t``
    #: from another solver, in place of this grid's own self-kernel solves; or None.  The kinked solver's tensor grid
    #: of distinct inputs takes them from the collapsed-triangle self-kernels (:mod:`.ode_kinked`): its own converge only
    #: algebraically (the kink of $\dot C$ on $t=s$), and their error is the tensor grid's
    diagonal_source = None
    diagonal_source_key = None   #: what the source's diagonals depend on beyond this solver's parameters (memo key)

    # -- diagnostics -------------------------------------------------------------------------
    def _sweeps(self, key: str, delta, sweeps, what: str):
        """Record the Picard diagnostics of one solve and check them."""
        delta, sweeps = float(delta), int(sweeps)
        self.info[f"{key}_sweeps"] = max(sweeps, self.info.get(f"{key}_sweeps", 0))
        if not math.isfinite(delta):
            raise self._blow_up(what)
        self.info["sweep_change"] = max(delta, self.info.get("sweep_change", 0.0))
        if delta > _STAGNATION:
            self._shortfalls += 1
            accuracy_shortfall(
                f"{what}: the Picard sweeps stopped after {sweeps} sweeps at a relative change of {delta:.1e} "
                f"(> {_STAGNATION:g}); sigma_w*T = {self.sigma_w * self.T:g} may be too large", self.strict)

    @property
    def work_limit(self) -> float:
        """The cost guard's limit: :data:`_WORK_LIMIT`, read at each check (a test lowers it to make a cheap call
        trip the guard)."""
        return _WORK_LIMIT

    def describe_parameters(self) -> str:
        return (f"T = {self.T:g}, sigma_w = {self.sigma_w:g}, sigma_u = {self.sigma_u:g}, largest x.x/d = "
                f"{self.v_max:.3g}")

    def _nodes(self, M) -> int:
        """Time nodes of the grid ``M`` (per axis)."""
        return self.grid(M).A.shape[0]

    # -- solves ----------------------------------------------------------------------------------
    def _self_diagonals(self, dual, M, v):
        disc = self.grid(M)
        if self.diagonal_source is not None:
            return np.asarray(self.diagonal_source(np.asarray(v, dtype=np.float64), disc.t), dtype=np.float64)
        nodes = disc.A.shape[0]
        self._check_cost(dual, len(v), nodes, symmetric=True)
        batch = self._batch(dual, nodes)
        backend = _backend(dual, len(v), nodes)
        self_solve = _compiled(self._numpy_dual(dual, backend), disc, self.sigma_w, self.sigma_v, backend)[0]
        out = []
        for lo in range(0, len(v), batch):
            S, delta, sweeps = self_solve(rec.ode_initial(np.asarray(v[lo:lo + batch], dtype=np.float64), self.sigma_u))
            self._sweeps("self", delta, sweeps, "the pre-activation variance q(t) = E[h_t^2]")
            S = np.asarray(S)
            self._starts.store(dual, M, v[lo:lo + batch], S)
            out.append(S if S.ndim == 2 else np.diagonal(S, axis1=1, axis2=2))   # the march returns diagonals
        return np.concatenate(out)

    def _padded(self, dual, M, v):
        """The norms ``v`` of a self-kernel solve, padded to a power of two when it is compiled (few shapes);
        numpy solves take them as they are (padding would only add work)."""
        if _backend(dual, len(v), self._nodes(M)) == "numpy":
            return v
        return pad_to(v, bucket(v.size))

    @staticmethod
    def _batch(dual, nodes: int) -> int:
        """Problems per solve: a power of two whose work arrays (n^2 cells and, for the Hermite rule,
        n x K coefficients per problem, a few of each) stay within the memory budget."""
        per = 8 * 8 * nodes * max(nodes, dual.points if dual.method == "hermite" else 1)
        return 1 << int(math.floor(math.log2(max(MEMORY_BUDGET // per, 1))))

    def _dual_and_M(self, v_unique):
        r"""The expectation rule and the time grid $M$ of this kernel (fixed at the first call).

        They depend on the parameters and the largest input norm only, so they are memoised across
        calls (a bounded cache, :data:`_TIME_GRIDS`): a second Gram of the same kernel skips the grid
        refinement.  The warnings of the first computation are recorded with it and issued again at
        every call that reuses it (a shortfall is never silent); a strict failure is not cached."""
        if "M" in self.info:        # (a polar table widened to norms announced since: prepare, a later call)
            self._dual = self._widened(self._dual, v_unique, self.info["q_max"])
            return self._dual, self.info["M"]
        v_max = max(self.v_max, float(np.max(v_unique)))
        self.v_max = v_max
        key = (self.activation, self.T, self.sigma_w, self.sigma_u, self.sigma_v, self.tol, self.M_fixed,
               self.max_nodes, self.scheme, self.strict, self.pairs_hint, v_max,
               self.grid(self.M_fixed or _M_SEQUENCE[0]).name, self.same_norms,   # (same_norms: the fourier dual)
               getattr(self, "band_floor", None),   # (the kinked solver's band 0 edge)
               self.probe_correlation, self.diagonal_source is not None, self.diagonal_source_key)
        hit = _TIME_GRIDS.get(key)
        if hit is None:
            self._v_lo = smallest_norm(v_unique, v_max)      # (the first table's range)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                dual, M = self._choose_dual_and_M(v_max)
            hit = (dual, M, dict(self.info), [(str(w.message), w.category) for w in caught], {})
            if len(_TIME_GRIDS) >= _MAX_TIME_GRIDS:
                _TIME_GRIDS.pop(next(iter(_TIME_GRIDS)))
            _TIME_GRIDS[key] = hit
        dual, M, info, caught, self._shared_diagonals = hit
        self.info.update(info)
        wider = self._widened(dual, v_unique, info["q_max"])      # (a memoised table that misses smaller norms)
        if wider is not dual:
            dual = wider
            _TIME_GRIDS[key] = (dual, M, dict(self.info), caught, self._shared_diagonals)
        self._dual = dual
        for message, category in caught:          # at the user's line, through the user's filters
            warn(message, category)
        return dual, M

    def _choose_dual_and_M(self, v_max):
        """:meth:`_dual_and_M` without the cache."""
        nodes = self._nodes(self.M_fixed or _M_SEQUENCE[0])
        if nodes > self.max_nodes:
            raise KernelcalcInputError(
                f"sigma_w*T = {self.sigma_w * self.T:g} needs {self.info.get('time_elements', 1)} time elements "
                f"({nodes} nodes, more than the limit {self.max_nodes}): supported up to sigma_w*T ~ "
                f"{_ELEMENT_LENGTH * (self.max_nodes - 1) / _M_SEQUENCE[0]:g}"
                + ("" if self.M_fixed is None else " at this time_nodes") + "; reduce T or sigma_w")
        # A coarse rule first to learn the largest pre-activation variance q(T), then the final rule.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KernelcalcAccuracyWarning)   # only q(T) is needed, to ~1e-6
            self.info["q_max"] = first_variance_guess(self.activation, self.sigma_u, self.sigma_w, self.T, v_max)
            coarse = self._coarse_dual(self.info["q_max"])
            strict, self.strict = self.strict, False
            try:
                for M in ((self.M_fixed,) if self.M_fixed else self._coarse_degrees()):
                    try:
                        profile = np.asarray(self._self_diagonals(coarse, M, np.array([v_max]))).ravel()
                        q_est = float(np.max(profile))
                        from ..theory.largeq_near import Q_NEAR     # prices the large-q rule's regimes (_price)
                        from ..theory.largeq_low import Q_LOW
                        self.info["near_table_node_fraction"] = float(np.mean(profile >= Q_NEAR))
                        self.info["low_table_node_fraction"] = float(np.mean((profile >= Q_LOW) & (profile < Q_NEAR)))
                        break
                    except _BlowUp:     # a coarse grid can overflow near a blow-up where finer ones do not
                        if M == 64:
                            raise
            finally:
                self.strict = strict
        if not math.isfinite(q_est):
            raise self._blow_up("the pre-activation variance q(t) = E[h_t^2]")
        self.info["q_max"] = q_est
        dual = self._fourier_dual(q_est)
        if dual is None:
            self._refuse_early(q_est)
            dual = dual_kernels(self.activation, q_max=1.05 * q_est, strict=self.strict, tol=self._dual_tol())
            self._tabulate(dual)
            dual = self._polar_table(dual, min(self._v_lo, v_max), q_est)
        self.info["expectation"] = dual.describe()
        self.info["expectation_error_estimate"] = dual.error_estimate
        self.info.pop("sweep_change", None)
        self._check_cost(dual, self.pairs_hint, self._nodes(self.M_fixed or _M_SEQUENCE[0]), self.same_norms)
        if self.M_fixed is not None:
            M, err = int(self.M_fixed), None
        else:
            M, err = self._choose_M(dual, v_max)
        self.info.update(M=M, time_error_estimate=err, time_scheme=self.scheme, time_nodes=self._nodes(M))
        return dual, M

    def _coarse_dual(self, q_max: float):
        """The dual of the first estimate of $q(T)$ (to ~1e-6)."""
        return dual_kernels(self.activation, q_max=q_max, tol=1e-6)

    def _coarse_degrees(self) -> tuple:
        """The grids tried, in order, for the first estimate of $q(T)$ (to ~1e-6)."""
        return (16, 32, 64)

    def _fourier_dual(self, q_est: float):
        r"""The ``"fourier"`` dual (:func:`~kernelcalc.theory.gaussian.fourier_dual_kernels`: Chebyshev series in
        the correlation, tabulated per pair of time nodes by :mod:`kernelcalc.kernels._fourier_solve`) when it
        applies, else ``None``: inputs of one norm (the sphere: every solve shares one diagonal), a Neural-ODE
        grid (not the ResNet march), a smooth saturating $\phi$ without closed form (tanh, sigmoid, bounded user
        expressions), at variances where the Mehler series would need more than ``_FOURIER_MIN_TERMS`` terms and
        the Chebyshev series fewer than about a thousand (:data:`_FOURIER_Q_MAX`)."""
        act = self.activation
        if (not self.same_norms or _marches(self.grid(self.M_fixed or _M_SEQUENCE[0])) or act.is_piecewise_smooth
                or act.is_polynomial or act.jumps or q_est > _FOURIER_Q_MAX or not act.is_bounded):
            return None
        from ..theory.duals import closed_form_dual
        if closed_form_dual(act) is not None:
            return None
        K = hermite_order((act.numpy_fn, act.numpy_derivative), 1.05 * q_est)
        if K is not None and K <= _FOURIER_MIN_TERMS:
            return None
        from ..theory.gaussian import fourier_dual_kernels
        # the time integrals amplify the expectations' error by 1 + sigma_w T (relative_error_estimate): the rule
        # meets tol / (1 + sigma_w T), so that the kernel's estimate stays within tol (its modes grow like log 1/tol)
        dual_tol = self.tol / (1.0 + self.sigma_w * self.T)
        dual = fourier_dual_kernels(act, q_max=1.05 * q_est, tol=dual_tol)
        # a rule that does not settle (an activation whose complex singularities crowd the real axis) is not used
        return dual if dual.error_estimate <= 10.0 * dual_tol else None

    def _refuse_early(self, q_est: float) -> None:
        """Past the Hermite series' reach, check the cost with the cheapest large-q rule before choosing the
        rule's level (which itself evaluates ~10^7 integrands): a hopeless call is refused in seconds."""
        cheapest = cheapest_tabulated_rule(self.activation)
        if cheapest is None or self.activation.is_polynomial:
            return
        fns = (self.activation.numpy_fn, self.activation.numpy_derivative)
        if hermite_order(fns, 1.05 * q_est) is None:
            self._check_cost(DualKernels(self.activation, "asymptotic", cheapest), self.pairs_hint,
                             self._nodes(self.M_fixed or _M_SEQUENCE[0]), self.same_norms)

    def relative_error_estimate(self) -> float:
        r"""Relative error estimate of one kernel value: the achieved expectation accuracy (plus twice the measured
        error of tabulated marginals; amplified by $1+\sigma_wT$ through the time integrals), the time-grid
        refinement change and the last Picard change."""
        quad = (self.info.get("expectation_error_estimate", DEFAULT_TOL) + 2.0 * (self.info.get("marginal_table_error")
                                                                                  or 0.0)) * (1.0 + self.sigma_w * self.T)
        sweeps = 10.0 * max(self.info.get("sweep_change", 0.0), _SWEEP_TOL)
        return quad + (self.info.get("time_error_estimate") or 0.0) + sweeps

    def _choose_M(self, dual, v):
        prev, change, M_done = None, float("nan"), _M_SEQUENCE[0]
        jumps = self.activation.jumps
        probe = 0.5 if jumps else self.probe_correlation
        blown = None
        climbed = []      # time nodes of the rungs solved

        def beyond(M):    # a degree the ladder does not climb to
            return self.grid(M).A.shape[0] > self.max_nodes or ((dual.method == "polar" or jumps) and M > _KINK_M_MAX)

        for i, M in enumerate(_M_SEQUENCE):
            if (prev is not None or blown is not None) and beyond(M):
                break
            # the call's own cost at this degree (the final degree is at least this one), with the rungs climbed:
            # refuse before the solves of the ladder, not after them (tanh at T = 40 was refused after 455 s).  The
            # first rung is compared with the next, so the call's degree is at least the next (softplus at
            # sigma_w T = 20 spent 38 s of CPU on the first rung before the second one's check refused)
            nxt = _M_SEQUENCE[i + 1] if i + 1 < len(_M_SEQUENCE) and not beyond(_M_SEQUENCE[i + 1]) else None
            if prev is None and blown is None and nxt is not None:
                self._check_cost(dual, self.pairs_hint, self._nodes(nxt), self.same_norms,
                                 climbed=climbed + [self._nodes(M)])
            else:
                self._check_cost(dual, self.pairs_hint, self._nodes(M), self.same_norms, climbed=climbed)
            climbed.append(self._nodes(M))
            M_done = M
            try:
                q = self._self_diagonals(dual, M, np.array([v]))
                cross, marginals, backend = self._cross(dual, M, 1, symmetric=True)
                zero = np.zeros(1, np.int32)
                # phi that jumps: the self-kernel is exact on any grid (it is iterated with its own diagonal), so
                # the grid is judged on a pair at correlation 1/2 (C is not smooth near the diagonal t = s); a solver
                # with a probe correlation (the kinked solver's tensor grid of distinct inputs) on a pair at it
                c = probe if probe is not None else 1.0
                s0 = rec.ode_initial(c * v, self.sigma_u)
                one = np.array([c * v])
                _, start = self._starts.warm(dual, M, backend, jumps, np.array([v]), np.array([v]), one)
                extra = {} if start is None else {"S_start": start}
                _, ntk, delta, _ = cross(marginals(q), zero, zero, np.asarray([s0], dtype=np.float64), **extra)
                ntk = float(ntk[0])
                if not (math.isfinite(float(delta)) and math.isfinite(ntk)):
                    raise self._blow_up("the kernel")
            except _BlowUp as err:
                # near a finite-time blow-up a coarse grid can overflow where the solution is finite: refine
                blown, prev = err, None
                continue
            blown = None
            if prev is not None:
                scale = max(abs(ntk), abs(prev))  # both 0 for a zero activation: converged, not 0/0
                change = abs(ntk - prev) / scale if scale > 0 else 0.0
                if change <= self.tol:
                    return M, change
            prev = ntk
        if blown is not None:
            raise blown
        M = M_done
        accuracy_shortfall(
            f"time grid: the {'self-kernel NTK' if probe is None else f'NTK at correlation {probe:g}'} still changes by {change:.1e} (relative) at {M} Chebyshev intervals "
            f"per element ({self.grid(M).A.shape[0]} nodes), above tol = {self.tol:.1e}"
            + (" (a kinked activation: the kernel is not smooth on the diagonal t = s, so the grid converges only "
               "algebraically)" if dual.method == "polar" or jumps else ""), self.strict)
        return M, change

    def prepare(self, norms) -> None:
        """Solve the self-kernels of the input norms ``norms`` (x.x/d) in one batch, ahead of the pair calls that
        will need them (a Gram plan's probes); many norms: their marginals from tables (:meth:`_tabulate`)."""
        v = np.unique(np.asarray(norms, dtype=np.float64))
        self._table_from = float(v.min()) if v.size >= _TABLE_MIN_NORMS and v.min() > 0 else self._table_from
        dual, M = self._dual_and_M(v)
        self._tabulate(dual)
        self._cached_diagonals(dual, M, v)

    def _cached_diagonals(self, dual, M, v):
        """Self-kernel diagonals q(t) of the norms ``v`` on the final grid, each solved once per solver, and
        memoised with the time grid for later calls when their sweeps met the tolerance (a solve that
        warned is kept by this solver only, so that a later call solves it again and warns again)."""
        known = self._diagonals
        for x in v.tolist():
            if x not in known and x in self._shared_diagonals:
                known[x] = self._shared_diagonals[x]
        missing = np.array([x for x in v.tolist() if x not in known])
        if missing.size:
            if len(known) + missing.size > _MAX_CACHED_DIAGONALS:
                known.clear()
            before = self._shortfalls
            new = self._self_diagonals(dual, M, self._padded(dual, M, missing))
            known.update(zip(missing.tolist(), new))
            if self._shortfalls == before and self.diagonal_source is None:   # (a source keeps its own memo and warnings)
                if len(self._shared_diagonals) + missing.size > _MAX_CACHED_DIAGONALS:
                    self._shared_diagonals.clear()
                self._shared_diagonals.update(zip(missing.tolist(), new))
        return np.stack([known[x] for x in v.tolist()])

    def adopt_diagonals(self, norms, grid, held) -> tuple[bool, float]:
        r"""Self-kernel diagonals $q(t)$ of the norms ``norms`` by barycentric interpolation in $\log v$ from those of
        ``grid`` (norms at the Chebyshev–Lobatto points of $\log v$ on its range, both ends included; solved
        already, by :meth:`prepare`), for this solver's pair solves that follow: a Gram plan's few direct pairs of
        new norms then pay no self-kernel solve.  ``held``: norms solved directly (not in ``grid``), where the
        interpolant is measured first.  Returns ``(adopted, deviation)``: the largest deviation at ``held`` relative
        to $\max_t q$; above ``tol``/100, with no norm to measure or a norm outside the grid's range nothing is
        adopted (the caller solves them).  Adopted diagonals are kept by this solver only, never in the memo
        shared with later calls."""
        grid = np.asarray(grid, dtype=np.float64)
        if grid.size < 2 or np.any(np.diff(grid) <= 0) or grid[0] <= 0:
            return False, math.inf
        nodes = set(grid.tolist())
        held = np.array([x for x in np.unique(np.asarray(held, dtype=np.float64)).tolist()
                         if x not in nodes and grid[0] < x < grid[-1]])
        new = np.array([x for x in np.unique(np.asarray(norms, dtype=np.float64)).tolist()
                        if x not in self._diagonals and x not in self._shared_diagonals])
        if held.size == 0:
            return False, math.inf
        dual, M = self._dual_and_M(grid)
        G, H = self._cached_diagonals(dual, M, grid), self._cached_diagonals(dual, M, held)
        def interpolate(v):
            return interval_weights(np.log(v), math.log(grid[0]), math.log(grid[-1]), grid.size - 1) @ G

        err = float(np.max(np.abs(interpolate(held) - H) / np.max(np.abs(H), axis=1, keepdims=True)))
        adopted = err <= self.tol / 100 and bool(np.all((new >= grid[0]) & (new <= grid[-1])))
        if adopted and new.size:
            self._diagonals.update(zip(new.tolist(), interpolate(new)))
        return adopted, err

    def plan_pairs(self, pairs: int) -> None:
        """A Gram plan announces about ``pairs`` pair solves in its next calls (the norm-interpolation
        grid, in a few calls): the backend (:func:`_backend`) is chosen by their total work, so that the
        calls share one compilation, or all run in numpy."""
        self._planned_pairs = int(pairs)

    def _cross(self, dual, M, pairs, symmetric=False):
        """``(cross, marginals, backend)``: the cross-kernel solve for a call of ``pairs`` pairs, the
        marginals it takes (from the diagonals; numpy where the rule allows, so that only the solve is
        ever compiled) and the backend (:func:`_backend`)."""
        disc = self.grid(M)
        nodes = disc.A.shape[0]
        self._check_cost(dual, pairs, nodes, symmetric)
        backend = _backend(dual, max(pairs, self._planned_pairs) if pairs > _MIN_BATCH else pairs, nodes)
        _, cross, marginals = _compiled(self._numpy_dual(dual, backend), disc, self.sigma_w, self.sigma_v, backend,
                                        symmetric and dual.method in _QUADRATURE_RULES)
        if dual.numpy_ok:
            marginals = functools.partial(self._numpy_dual(dual, "numpy").marginal, xp=np)
        return cross, marginals, backend

    @float64
    def __call__(self, sxx, syy, sxy):
        shape, (sxx, syy, sxy), v_unique, inverse = flat_pairs(sxx, syy, sxy)
        dual, M = self._dual_and_M(v_unique)
        n = sxy.size
        cross, marginals, backend = self._cross(dual, M, n, symmetric=bool(np.all(sxx == syy)))
        nodes = self.grid(M).A.shape[0]
        fixed = backend == "jax" and dual.method == "hermite"
        if fixed:   # one shape for every large call: one compilation (closed forms and the quadrature rules,
            # on grids of up to 513 nodes where padding costs more than compiling, keep fitted shapes)
            batch = min(self._batch(dual, nodes), _JIT_BATCH)
            norms = max(bucket(v_unique.size), _JIT_NORMS)
        else:
            batch = min(self._batch(dual, nodes), max(_MIN_BATCH, bucket(n) // 4))
            norms = bucket(v_unique.size)
        marg, at = self._marginals_of(dual, v_unique, self._cached_diagonals(dual, M, v_unique), marginals, norms, backend)
        inverse = inverse if at is None else at[inverse]
        # Batches of similar input correlation |rho|: the Mehler series is truncated per batch by its
        # largest |r| (HermiteRule.series), so sorted batches sum far fewer terms.
        # identical inputs with a solved self-kernel first, started there (their own batches); then the others
        warm, start = self._starts.warm(dual, M, backend, self.activation.jumps, sxx, syy, sxy)
        ix_in, iy_in = inverse[: sxx.size], inverse[sxx.size:]
        s0_in = rec.ode_initial(sxy, self.sigma_u)
        # a dear numpy closed form: the coarse problems of each pair of norms first, the others started from their
        # solutions interpolated in the input covariance (_ode_starts.interpolated_starts)
        waves = (backend == "numpy" and dear_numpy(dual, np) and not self.activation.jumps
                 and not _marches(self.grid(M)))
        first = coarse_problems(ix_in, iy_in, s0_in) | warm if waves else np.ones(n, bool)
        rest, later = np.nonzero(~warm & first)[0], np.nonzero(~first)[0]
        order = np.concatenate([np.nonzero(warm)[0], rest[by_correlation(sxx[rest], syy[rest], sxy[rest])],
                                later[by_correlation(sxx[later], syy[later], sxy[later])]])
        n_warm, n_first = int(np.count_nonzero(warm)), int(np.count_nonzero(first))
        ix_all, iy_all, s0_all = ix_in[order], iy_in[order], s0_in[order]
        nngp, ntk = np.empty(n), np.empty(n)
        bounds = [(lo, min(lo + batch, n_warm)) for lo in range(0, n_warm, batch)]
        bounds += [(lo, min(lo + batch, n_first)) for lo in range(n_warm, n_first, batch)]
        bounds += [(lo, min(lo + batch, n)) for lo in range(n_first, n, batch)]
        states: list = []
        for lo, hi in bounds:      # memory-bounded batches of fixed sizes: few jit compilations
            sl = slice(lo, hi)
            m = sl.stop - sl.start
            size = batch if fixed else (m if backend == "numpy" else min(bucket(m), batch))   # numpy: no padding
            bx, by, b0 = (pad_to(a[sl], size) for a in (ix_all, iy_all, s0_all))
            extra = {"S_start": start[sl]} if lo < n_warm else {}      # (numpy: no padding)
            if waves and lo < n_first:
                extra["states"] = states
            elif lo >= n_first:
                if lo == n_first:
                    self.info["interpolated_starts"] = self.info.get("interpolated_starts", 0) + n - n_first
                    solved = np.concatenate(states)
                    starts = interpolated_starts(ix_all[n_first:], iy_all[n_first:], s0_all[n_first:],
                                                 ix_all[:n_first], iy_all[:n_first], s0_all[:n_first], solved)
                extra = {"S_start": starts[lo - n_first: hi - n_first]}
            k, t, delta, sweeps = cross(marg, bx, by, b0, **extra)
            nngp[order[sl]], ntk[order[sl]] = np.asarray(k)[:m], np.asarray(t)[:m]
            self._sweeps("cross", delta, sweeps, "the cross-covariance S(t, s) or the backward kernel Lambda(t, s)")
        if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
            raise self._blow_up("the kernel")
        return nngp.reshape(shape), ntk.reshape(shape)


class KinkedGoursatSolver(KinkedSolverMixin, GoursatSolver):
    r"""The Neural-ODE solver of kinked activations on the collapsed-triangle grid
    (:mod:`kernelcalc.kernels.ode_kinked`); pairs of unequal norm go to the tensor Chebyshev grid."""

    def _tensor_factory(self) -> GoursatSolver:
        T = self.T
        return GoursatSolver(self.activation, T=T, sigma_w=self.sigma_w, sigma_u=self.sigma_u, sigma_v=self.sigma_v,
                             tol=self.tol, strict=self.strict, v_max=self.v_max,
                             grid=lambda M: chebyshev_discretisation(M, T, time_elements(T, self.sigma_w)))
