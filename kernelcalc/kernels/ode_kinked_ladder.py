r"""The degree of the kinked Neural-ODE solver's grid (:class:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin`):
which activations take the collapsed-triangle grid, the bands of input angles, and each band's degree ladder.

**Which grid.** :func:`use_triangles`: a kinked activation at every $\sigma_wT$ (one collapsed-triangle element up
to 3, the composite panels of :mod:`._panels` beyond), the relu-like smooth ones (gelu, ``_RELU_LIKE_AT_LARGE_Q``)
beyond $\sigma_wT=3$, where their large variance $q$ makes them bend like relu along $t=s$, and softplus and silu for
$4.5<\sigma_wT\le10$ (``_LARGE_Q_PANELS``: the large-$q$ rule, whose coarsest step also learns $q(T)$,
:meth:`KinkedLadderMixin._coarse_dual`).

**Degree.** Input angles fall into three bands (:func:`band_of`), each with its own sinh map and
degree $m=n$: band 0 (the self-kernel, $\theta_0\gtrsim0.1$, and $\pi$) is chosen first, the others
when a call first needs them.  A sphere Gram of the large-$q$ rule whose pairs' smallest angle lies just under band 0's
edge lowers that edge to it (:func:`band_floor`: band 0's ladder then probes that angle in place of its edge), so that
band 1 is not made for a few pairs.  A band's degree climbs its ladder (``_BAND_LADDERS``) until the NTK at
its probe angles changes by less than ``tol`` relative to the self-kernel NTK; the coarser of the two
degrees is used, with that change as its error estimate (the convergence is geometric, so the change
is the coarser grid's error: $|K_m-K_{m'}|$ with $m<m'$).  Each probe climbs only until its own change meets ``tol``:
it then leaves the ladder (its error at the band's final degree, finer, is below that change, which stays in the
band's estimate) and the finer rungs solve the probes still climbing.  Measured ($\sigma_wT=10$): the identical pair
($\theta_0=0$, the kink on $t=s$) sets band 0's degree, its change 1.4e-9 / 2.3e-11 at degrees 12 / 16 (softplus), where
the other probes change by less than 1e-13 from degree 12: their solves at degrees 20 and 24 (silu: band 0 stops at
20) were a third and more of the ladder's exact evaluations of the large-$q$ rule.  The largest change of the bands
used is ``info["band_changes"]`` and enters ``info["error_estimate"]``.  On one element (``_ELEMENT_BAND_DELTAS``) bands 1
and 2 are one band, with $\delta=1/64$.  On the panels each cell climbs ``_PANEL_LADDERS``, and the large-$q$ rule's
bands 1 and 2 climb from degrees 12 and 16 (``_PANEL_LADDERS_RULE``), and its band 0 from 8: the other probes on the
first self-kernel's diagonal (degree 12, resampled), the identical pair from 12 (``_OWN_FROM_RULE``); the Gram's
solves of band 0 at $\theta_0\ne0$ then take the degree where those probes left the ladder
(:meth:`KinkedLadderMixin._angle_degree`: 12 where the identical pair takes 16 or 20).  The
near-parallel probes of bands 1 and 2 start from the kept solves of nearby $S_0$
(:meth:`~kernelcalc.kernels.ode_kinked_panels.KinkedPanelsMixin._nearby`).  Before each rung on the panels the call's
price at that degree is checked against the work limit (:meth:`KinkedLadderMixin._check_ladder`), not after the
solves.
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import accuracy_shortfall
from ..theory import recursion as rec
from .ode_kinked_deficit import angle_gaps
from .ode_kinked_panels import _SINGLE_ELEMENT, band_edges

__all__ = ["KinkedLadderMixin", "band_floor", "band_of", "use_triangles"]

_BAND_DELTAS = (1.0, 0.25, 0.0625)
#: the same on one collapsed-triangle element (sigma_w T <= 3): band 2 with delta = 1/64.  Measured (abs, T = 1,
#: NTK error relative to its largest value against degree 56, input angles 1e-7 .. 3e-2): delta = 1/16 needs
#: degree 40 (1.2e-10 at degree 40 for theta_0 = 3e-4, 5.6e-10 at 32), delta = 1/64 errs by <= 5.6e-11 at
#: degree 32 and <= 3.3e-10 at 24; the band-2 solves and grids at degree 32 cost a third of those at 40, and
#: the graded theta table of abs then passes at 129 nodes (257 before: its error at 129 nodes, 1.35e-10 at
#: theta_0 = 4.2e-4, was the band-2 grid error).
#: Bands 1 and 2 are one band there (input angles 2 theta_0 / (1 + sigma_w T) < 0.1, probed at 0.01, 0.003, 0.001
#: times (1 + sigma_w T) / 2): delta = 1/64 errs by <= 2.3e-11 at degree 24 for theta_0 in [0.01, 0.1] (abs, against
#: degree 48), so band 1's own grids (three builds for abs) are not needed.
_ELEMENT_BAND_DELTAS = (1.0, 0.25, 0.015625)
_BAND_LADDERS = ((16, 20, 24, 32, 40), (20, 24, 32, 40), (24, 32, 40, 48))
#: the same per cell of the composite panels (sigma_w T > 3, :mod:`._panels`; each cell has sigma_w h <= 2)
_PANEL_LADDERS = ((12, 16, 20, 24, 32), (16, 20, 24, 32), (20, 24, 32, 40))
#: the same for the large-q rule of softplus and silu (``_LARGE_Q_PANELS``): smooth at the scale 1/sqrt(q), its near
#: kinks are milder than relu's, and bands 1 and 2 start a degree lower (smaller grids for their probes, node angle
#: tables and Gram solves).  Measured (softplus sigma_w T = 10, N = 200): with _PANEL_LADDERS bands 1 and 2 stopped at
#: degrees 16 and 20 with changes 3.9e-14 and 1.8e-13 (against 20 and 24); from 12 and 16 they stop there with changes
#: 1.2e-11 and 2.7e-12 (tol 1e-10), the Gram within 2e-12 of the former, 3.05e6 exact evaluations of the rule -> 2.58e6
_PANEL_LADDERS_RULE = ((8, 12, 16, 20, 24, 32), (12, 16, 20, 24, 32), (16, 20, 24, 32, 40))
#: ... where band 0's identical pair joins at degree 12 (the first self-kernel's, :meth:`_coarse_degrees` of the panels),
#: whose diagonal the other probes take at degree 8 too (resampled): they converge there (measured softplus and silu at
#: sigma_w T = 10: changes 8 -> 12 below 1.5e-11, 12 -> 16 below 1e-13), and their cold first solve (about 5 exact
#: evaluations per node, against 2 from the rung below) is made on the smaller grid
_OWN_FROM_RULE = 12
_COARSE_DEGREE = 16        # the self-kernel that learns q(T) (GoursatSolver._choose_dual_and_M), for the cost guard


class KinkedLadderMixin:
    r"""The degree ladder of :class:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin` (module doc), which supplies
    the solves it climbs with (``_self_diagonals``, ``_pairs``, ``_cached_diagonals``), the grid and the panels' cost
    guard (:class:`~kernelcalc.kernels.ode_kinked_panels.KinkedPanelsMixin`: ``_panel_count``, ``_check_panels``,
    ``predicted_work``, ``_rung_work``) and the deficit form's ``_deficit_form``; its state ``info``, ``_unmet``,
    ``M_fixed``, ``pairs_hint`` is the solver's."""

    def _band_deltas(self) -> tuple:
        """The sinh-map parameter of each band: ``_ELEMENT_BAND_DELTAS`` on one element, ``_BAND_DELTAS`` on panels."""
        return _ELEMENT_BAND_DELTAS if self._panel_count() == 1 else _BAND_DELTAS

    def _choose_M(self, dual, v):
        r"""The degree of band 0 (the self-kernel, $\theta_0\ge0.1$ and $\pi$; its diagonal $q(t)$ serves the
        other bands), raised along its ladder until the NTK at the probe angles changes by less than
        ``tol`` (relative to the largest); the other bands are chosen when first needed (:meth:`_band_degree`)."""
        self.info["band_degrees"], self.info["band_changes"] = {}, {}   # shared with the memo of the time grid
        self.info.pop("band0_angle_degree", None)
        self.info["band_deltas"] = dict(enumerate(self._band_deltas()))
        M, change = self._ladder(dual, 0, v, None, None)
        return M, change

    def _ladder(self, dual, b, v, M0, q0):
        """Degree of band ``b`` (and its last change): its ladder until the probes' NTK changes by < tol."""
        scale = (1.0 + self.sigma_w * self.T) / 2.0
        edge = min(0.1 * scale, 3.0) if self.band_floor is None else self.band_floor   # band 0's lower edge
        # (an odd phi: pi/2 for pi, which the solves mirror onto 0, :meth:`~.ode_kinked.KinkedSolverMixin._pairs`)
        probes = ((0.0, edge, 1.0, math.pi / 2 if self.activation.is_odd else math.pi), (0.01 * scale,), (0.001 * scale,))
        if self._panel_count() == 1:      # band 2 holds band 1's angles too; 0.003: its largest error (abs, relu)
            probes = probes[:2] + ((0.01 * scale, 0.003 * scale, 0.001 * scale),)
        theta = np.array(probes[b])
        S0 = rec.ode_initial(v * np.cos(theta), self.sigma_u)
        gap, anti = angle_gaps(v, theta, self.sigma_u)
        prev, change, ref, M_prev = np.full(theta.size, np.nan), float("nan"), None, None
        active = np.ones(theta.size, bool)     # the probes still climbing (module doc: each leaves once converged)
        left = 0.0                             # the largest change of the probes that left
        left_at = 0                            # the finest rung where a probe other than theta_0 = 0 left
        climbed = []
        ladders = _BAND_LADDERS if self._panel_count() == 1 else (
            _PANEL_LADDERS_RULE if dual.method == "asymptotic" else _PANEL_LADDERS)
        own_from = _OWN_FROM_RULE if b == 0 and ladders is _PANEL_LADDERS_RULE else 0
        for M in ladders[b]:
            if self._panel_count() > 1:     # the call's cost at this degree (its final degree is at least this one)
                self._check_ladder(dual, b, M, climbed, M_prev is None)
                climbed.append(M)
            # (band 0 of the large-q rule below the first self-kernel's degree: the other probes alone, on its diagonal)
            sel = np.nonzero(active & ((theta != 0) | (M >= own_from)))[0]
            if b == 0:
                Mq = max(M, own_from)
                q = self._self_diagonals(dual, Mq, np.array([v]))
            else:
                q, Mq = q0, M0
            ntk = self._pairs(dual, Mq, np.repeat(q, sel.size, axis=0), S0[sel], theta[sel], {b: M}, gap=gap[sel],
                              anti=anti[sel])[1]
            if b > 0 and ref is None:   # relative to the self-kernel NTK, as band 0
                ref = abs(float(self._pairs(dual, M0, q0, np.array([rec.ode_initial(v, self.sigma_u)]),
                                            np.zeros(1), {0: M0})[1][0]))
            elif b == 0:                # (the largest probe NTK so far)
                ref = max(ref or 0.0, float(np.max(np.abs(ntk))))
            seen = np.isfinite(prev[sel])          # the probes solved on the rung before too
            if np.any(seen):
                changes = np.abs(ntk[seen] - prev[sel[seen]]) / ref if ref > 0 else np.zeros(int(np.sum(seen)))
                change = max(float(np.max(changes)), left)
                if np.all(seen) and float(np.max(changes)) <= self.tol:
                    # the coarser degree, whose error the change estimates (geometric convergence: the
                    # finer one's error is far smaller, so |K_coarse - K_fine| ~ the coarse error)
                    self.info["band_degrees"][b] = M_prev
                    self.info.setdefault("band_changes", {})[b] = change
                    if b == 0:
                        if own_from and not np.any(active[sel[seen]] & (theta[sel[seen]] != 0)):
                            self.info["band0_angle_degree"] = left_at      # (the large-q rule: _angle_degree)
                        if self._angle_degree(M_prev) == M_prev:          # (else its angles are solved on their rung)
                            self._carry_left(dual, M_prev, v, S0[theta != 0])
                    return M_prev, change
                # a probe whose change already meets tol leaves the ladder: its error at the band's final degree
                # (finer) is below this change, which stays in the band's estimate (``left``)
                done = changes <= self.tol
                active[sel[seen][done]] = False
                left = max([left] + changes[done].tolist())
                if np.any(theta[sel[seen][done]] != 0):
                    left_at = M
            prev[sel] = ntk
            M_prev = M
        accuracy_shortfall(
            f"time grid: the NTK at input angles {', '.join(f'{t:.3g}' for t in theta)} still changes by "
            f"{change:.1e} (relative) at degree {M} of the collapsed-triangle grid (sinh map "
            f"delta = {self._band_deltas()[b]:g}), above tol = {self.tol:.1e}", self.strict)
        self._unmet[b] = (M, change)   # not memoised with the grid: a later call chooses (and warns) again
        return M, change

    def _carry_left(self, dual, M: int, v: float, S0) -> None:
        r"""Band 0's probes that left the ladder below its degree ``M`` (initial values ``S0``): their finest solve
        resampled onto band 0's grid of degree ``M`` is kept as a solve there (:meth:`_keep`), the bracket of the node
        angle tables (:meth:`_angle_table`, which solved them again on that grid to ``_NT_BRACKET_TOL``, one exact
        evaluation per node: 3.2e4 of softplus at $\sigma_wT=10$): the resampled solve differs from that grid's own by
        the probe's error at its degree, below its change there (<= tol of the NTK) and far below the bracket's
        tolerance (1e-9), and a Gram solve that leaves the table's ranges is solved again exactly."""
        from .ode_kinked_panels import _dear
        if self._panel_count() == 1 or not _dear(dual):
            return
        grid = self._grid(M, self._band_deltas()[0])
        q = self._self_diagonals(dual, M, np.array([v]))        # (solved: the ladder's last degree but one)
        for s0 in np.asarray(S0).tolist():
            if self._solution(grid, s0, float(q[0, -1]), exact=True) is None:
                hit = self._solution(grid, s0, float(q[0, -1]))
                if hit is not None:
                    self._keep(grid, np.array([s0]), q, hit[0].resample_nodes(hit[1][None, :], grid))

    def _choose_dual_and_M(self, v_max):
        r"""As :meth:`GoursatSolver._choose_dual_and_M`; on the panels, with a closed-form dual (its price does not
        depend on the variance), the call's least cost (the first self-kernel, two rungs of the ladder, the
        self-kernel and ``pairs_hint`` pairs at the first degree) is checked before any solve: the first
        self-kernel alone takes a minute of elu at $\sigma_wT\approx80$."""
        if self._panel_count() > 1 and self.M_fixed is None:
            from ..theory.gaussian import dual_kernels
            dual = dual_kernels(self.activation, q_max=max(4.0 * self.sigma_u ** 2 * v_max, 1.0), tol=1e-6)
            if dual.method == "closed":
                first = _PANEL_LADDERS[0][0]
                self._check_panels(dual, first, pairs=self.pairs_hint, selfs=1, rungs=2, others=[
                    (self.predicted_work(dual, _COARSE_DEGREE, selfs=1),
                     f"the first self-kernel (degree {_COARSE_DEGREE}: the variance's range)")])
        return super()._choose_dual_and_M(v_max)

    def _coarse_dual(self, q_max: float):
        r"""As :meth:`GoursatSolver._coarse_dual`; on the panels, softplus and silu (``_LARGE_Q_PANELS``) take the
        large-$q$ rule at its coarsest step there (no step selection: it errs far below 1e-6).  The final dual is that
        rule when its coarsest step meets tol, and the first rung of the degree ladder then reuses this self-kernel
        (:func:`.ode_kinked_panels.values_key`).  (The Hermite series at tol 1e-6 cost 30 us per evaluation, 10 of
        72 s CPU of softplus at $\sigma_wT=10$, N = 20, and its diagonal cannot seed the rule's: the ladder's first
        self-kernel was row-marched again.)"""
        if self._panel_count() > 1 and self.activation.name in _LARGE_Q_PANELS:
            from ..theory.gaussian import DualKernels
            from ..theory.largeq_table import cheapest_tabulated_rule
            return DualKernels(self.activation, "asymptotic", cheapest_tabulated_rule(self.activation),
                               error_estimate=1e-6, note="the coarsest step, for q(T)")
        return super()._coarse_dual(q_max)

    def _check_ladder(self, dual, b: int, M: int, climbed, first: bool):
        r"""Before the rung ``M`` of band ``b``'s degree ladder on the panels: refuse when the call would cost more than
        the work limit at this degree (as :meth:`GoursatSolver._choose_M` before each of its rungs), not after the
        solves.  Band 0: the rungs ``climbed`` so far, this rung (and the next when it is the first: the ladder
        compares two degrees), the self-kernel and ``pairs_hint`` pairs at degree ``M``; bands 1 and 2: their probe
        pair and the self-kernel reference (the call's pairs are checked when :meth:`_pairs` knows their bands)."""
        if b > 0:
            self._check_panels(dual, M, pairs=2, near=2 if self._deficit_form(dual) else 0)
            return
        spent = sum(self._rung_work(dual, r) for r in climbed)
        others = [(self.predicted_work(dual, _COARSE_DEGREE, selfs=1),
                   f"the first self-kernel (degree {_COARSE_DEGREE}: the variance's range)")]
        if climbed:
            others.append((spent, f"the {len(climbed)} rungs climbed (degrees {', '.join(map(str, climbed))})"))
        self._check_panels(dual, M, pairs=self.pairs_hint, selfs=1, rungs=2 if first else 1, others=others)

    def _angle_degree(self, M0: int) -> int:
        r"""The degree of the Gram's solves of band 0 at $\theta_0\ne0$ (band 0's own degree ``M0``: the self-kernel and
        the identical pair).  The large-$q$ rule: the finest rung where its probes at $\theta_0\ne0$ left the ladder
        (``info["band0_angle_degree"]``, when all of them left before the identical pair converged): each left with a
        change between that rung and the one below of at most ``tol``, which stays in the band's estimate
        (``band_changes``) and bounds their error at that rung (finer than the one below; the convergence is
        geometric).  Measured ($\sigma_wT=10$, N = 200, band 0's edge at 0.458): softplus and silu's angles leave at
        degree 12, where the identical pair takes 16 and 20; their node angle table (on a grid of about $(12/20)^2$ the
        nodes) then took 1.3e5 / 1.5e5 exact evaluations where 2.4e5 / 4.0e5, the Gram within 2.3e-12 / 3.3e-13 of
        band 0's degree."""
        if self.M_fixed is not None:
            return M0
        return min(self.info.get("band0_angle_degree") or M0, M0)

    def _band_degree(self, dual, b: int, M0: int) -> int:
        """The degree of band ``b`` (chosen on first use; band 0: ``M0``)."""
        if b == 0 or self.M_fixed is not None:
            return M0
        known = self.info.setdefault("band_degrees", {})
        self.info.setdefault("band_changes", {})
        if b in known:
            return known[b]
        if b in self._unmet:
            return self._unmet[b][0]
        q0 = self._cached_diagonals(dual, M0, np.array([self.v_max]))
        return self._ladder(dual, b, self.v_max, M0, q0)[0]


def band_of(theta0, sigma_w_T: float, floor: float | None = None) -> np.ndarray:
    r"""Band of every input angle $\theta_0$: 0 for $\theta_0=0$ (the exact kink) and
    $2\theta_0/(1+\sigma_wT)\ge0.1$ (or $\theta_0\ge$ ``floor``, band 0's edge lowered to the Gram's smallest pair angle:
    :func:`band_floor`), 1 down to $0.01$, 2 below (near kinks closer to the diagonal: a
    stronger sinh map, ``_BAND_DELTAS``).  Measured (relu, T = 1; NTK error against degree 40): for
    $\theta_0\ge0.1$ the plain map ($\delta=1$) at degree 16 errs by at most 6e-12, where
    $\delta=1/16$ errs by 4e-12 and $\delta=1/64$ by 3e-11; for $\theta_0=0.01$-$0.03$, $\delta=1/4$ at
    degree 20 by 2e-11; for $\theta_0=0.003$, $\delta=1/16$ at degree 24 by 1e-10."""
    th = np.asarray(theta0, float)
    est = 2.0 * th / (1.0 + sigma_w_T)
    zero = (th == 0) | (est >= 0.1) | (False if floor is None else th >= floor)
    return np.where(zero, 0, np.where(est >= 0.01, 1, 2))


#: band 0 lowers its edge (2 theta_0 / (1 + sigma_w T) = 0.1) to the sphere Gram's smallest pair angle when that is at
#: least this fraction of it (:func:`band_floor`).  Measured (sigma_w T = 10, edge 0.55): band 0's ladder with its edge
#: probe at 0.44 / 0.35 / 0.25 stops at the same degree as at 0.55 (softplus 16, silu 20), its change (the estimate)
#: 4.1e-11 -> 5.0e-11 / 6.1e-11 / 7.9e-11 (softplus), 1.6e-11 -> 2.2e-11 / 2.9e-11 / 3.9e-11 (silu); at 0.15 softplus
#: climbs to degree 20 (band 0 serves every pair: dearer than band 1's ladder and table)
_FLOOR_MARGIN = 0.5


def band_floor(lowest: float, sigma_w_T: float) -> float | None:
    r"""Band 0's lowered edge for a sphere Gram whose pairs' smallest angle is ``lowest`` (the large-$q$ rule, whose
    sphere table samples only its pairs' angles, :mod:`._theta_pieces`), or ``None``: its edge stays.  When ``lowest``
    lies just under the edge (by at most the factor ``_FLOOR_MARGIN``), band 0's plain map ($\delta=1$) serves those
    angles too: its ladder probes ``lowest`` in place of its edge (:meth:`KinkedLadderMixin._ladder`), so that its change,
    the error estimate, covers every angle it serves, and band 1's own ladder, node angle table and theta-table piece
    are not made (softplus, silu at $\sigma_wT=10$, N = 200 random rows in d = 10: smallest angle 0.458 against the
    edge 0.55).  The edge returned is ``lowest`` less 1e-9 (relative): the table's end at ``lowest`` falls inside."""
    edge = band_edges(0, sigma_w_T)[0]
    if not (math.isfinite(lowest) and _FLOOR_MARGIN * edge <= lowest < edge <= 3.0):
        return None
    return lowest * (1.0 - 1e-9)


#: smooth activations that bend like relu along t = s once q is large (their smooth scale 1/sqrt(q) is tiny) and
#: have a closed-form dual: past sigma_w T = 3 they take the panels too (the tensor grid does not converge there)
_RELU_LIKE_AT_LARGE_Q = ("gelu",)


#: smooth activations without a closed-form dual that take the panels for sigma_w T in (lo, hi], where their
#: expectations need the large-q rule (softplus: q(T) ~ 400 at sigma_w T = 5, past the Hermite series' reach), read
#: through node angle tables (:meth:`KinkedNodeTablesMixin._angle_table`) built from its exact values, with anchored sweeps
#: elsewhere.  Measured (N = 200 on the sphere, cold, load 2-3): softplus sigma_w T = 10 in 50 s CPU, error estimate
#: 8.7e-11; silu 64 s, 7.0e-11 (refused before; through the (log q, theta) table of the smoothpanels branch, removed
#: here, softplus took 1474 s and erred by 1.1e-4).  Beyond hi the tensor grid's cost guard refuses as before.
_LARGE_Q_PANELS = {"softplus": (4.5, 10.0), "silu": (4.5, 10.0)}


def use_triangles(activation, T: float, sigma_w: float) -> bool:
    r"""Whether :func:`~kernelcalc.node_kernel` takes the collapsed-triangle grid: a kinked activation, at every
    $\sigma_wT$ (one element up to 3, composite panels beyond: :mod:`._panels`), the relu-like smooth ones
    (``_RELU_LIKE_AT_LARGE_Q``) beyond $\sigma_wT=3$, and softplus and silu for $4.5<\sigma_wT\le10$
    (``_LARGE_Q_PANELS``)."""
    lo, hi = _LARGE_Q_PANELS.get(activation.name, (math.inf, 0.0))
    return bool(activation.is_piecewise_smooth) or (
        activation.name in _RELU_LIKE_AT_LARGE_Q and sigma_w * T > _SINGLE_ELEMENT + 1e-9) or (
        lo + 1e-9 < sigma_w * T <= hi + 1e-9)
