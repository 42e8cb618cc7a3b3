r"""The Neural-ODE kernel of a kinked activation on the collapsed-triangle grid (:mod:`._triangle`).

:class:`KinkedSolverMixin` (mixed into :class:`~kernelcalc.kernels.ode.GoursatSolver` as
``kernelcalc.kernels.ode.KinkedGoursatSolver``, so that this module does not import that one) is the solver of
:func:`~kernelcalc.node_kernel` for activations with a kink (relu, leaky relu, abs, elu, user
``Max``/``Abs``/``Piecewise``; gelu beyond $\sigma_wT=3$, where its large variance makes it bend like relu).
Up to $\sigma_wT=3$ the grid is one collapsed-triangle element on $[0,T]^2$; beyond, the composite panels of
:mod:`._panels` (diagonal cells of $\sigma_wh\le1$ in collapsed coordinates, tensor cells off the diagonal, marched
row by row), with the same degree ladder per cell (``_PANEL_LADDERS``).  Pairs of equal norm (the sphere; every pair of a
positively homogeneous $\phi$, whose Gram uses the sphere table of the directions) are solved on the
two triangles $r\ge q$ and $r\le q$ (symmetric), in collapsed coordinates with a sinh map toward the
diagonal whose parameter $\delta$ follows the input angle $\theta_0$ (:func:`._triangle.delta_band`):
the convergence in the degree is geometric for the kink ($\theta_0=0$), the near kink
($0<\theta_0\ll1$) and the conical corner ($\theta_0=\pi$) alike.  Pairs of unequal norm (off the
sphere, non-homogeneous $\phi$) go to the tensor Chebyshev grid, with the self-kernel diagonals $q(t)$ of the
collapsed triangles (:meth:`KinkedSolverMixin._tensor_diagonals`): where the inputs' correlation stays below 1 the
cross-kernel is analytic, and the grid, judged at the cap of the pairs' correlation (0.95 or 0.99), converges
geometrically; closer pairs take the grid judged at identical inputs, which converges only algebraically and says so.

**Degree.** Input angles fall into three bands (:func:`band_of`), each with its own sinh map and degree $m=n$,
climbed along the band's ladder until the NTK at its probe angles changes by less than ``tol``: the degree ladder
is :mod:`.ode_kinked_ladder` (:class:`~.ode_kinked_ladder.KinkedLadderMixin`, a base of :class:`KinkedSolverMixin`,
which with :func:`band_of` and :func:`use_triangles` is importable here too).  The grid builds and solves run with
one BLAS thread (:func:`._triangle._one_thread`).

**Seeds.** On the panels, a self-kernel known on another degree seeds the next one
(:meth:`KinkedSolverMixin._self_solve`), and a dear closed form (elu) reads the Gram's cross solves from node angle
tables (:mod:`._node_tables`).  A probe of a later rung (and a later self-kernel) starts its Picard sweeps from the
same problem's solution on the rung below, resampled (:meth:`~.ode_kinked_panels.KinkedPanelsMixin._guess`): each
rung is still solved to its own fixed point (the sweeps' tolerance, and for a dear dual the anchored model checked at
the solution), so the change between rungs measures the coarser grid's error as before; the start only saves sweeps
(a dear dual: one exact evaluation per node and the final one, where a cold start took about four and the check).
The node angle tables' bracketing solves reuse those probes where the band's edge angles were probed on the table's
grid (band 0: both; band 1: its lower edge), and start the others from a solve on another grid.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..theory import recursion as rec
from . import _panels as pan
from . import _row_newton
from ._panel_grid import PanelGrid
from . import _triangle as tri
from ._anchored import RESIDUAL_TOL, AnchoredDual
from ._gram import flat_pairs
from ._gram_norms_window import kink_window_cap
from ._interp import barycentric_weights
from .ode_kinked_deficit import KinkedDeficitMixin, angle_gaps
from .ode_kinked_node_tables import KinkedNodeTablesMixin
from .ode_kinked_pair import KinkedPairMixin
from .ode_kinked_ladder import _LARGE_Q_PANELS, KinkedLadderMixin, band_floor, band_of
from .ode_kinked_ladder import use_triangles  # noqa: F401  (importable here)
from .ode_kinked_panels import (_kink, _dear, _TaylorCells, KinkedPanelsMixin, _backward, _dual_np, _exact_pairs, _panels_of,
                                _point_variances, _resample, _solve, _terminal, band_edges)
from .ode_kinked_panels import _AngleTable, values_key  # noqa: F401  (_AngleTable: importable here as before)

__all__ = ["KinkedSolverMixin", "band_of", "use_triangles"]

_EQUAL_RTOL = 1e-12       # norms this close (relative) are solved as equal
#: pairs of unequal norm up to the first of these |cos| at least their input correlation's take the tensor grid judged
#: at it, closer ones the grid judged at identical inputs (the kink on t = s is their limit).  With the diagonals of the
#: collapsed triangles (_tensor_diagonals) the grid converges geometrically up to 0.99: measured elu, T = 1, largest
#: norm 5.9, the NTK at degree 8 / 12 / 16 against 64 errs by 4.9e-11 / 6.5e-14 / 0 at 0.95 and 9.6e-9 / 1.0e-10 /
#: 1.7e-12 at 0.99 (relative), so the pairs of a Gram's norm-interpolation table (|cos| <= 0.95: its theta window)
#: take 12 intervals where a grid judged at 0.99 takes 24 (its ladder passes on the change from 16 to 24)
_TENSOR_CORRELATIONS = (0.95, 0.99)
#: input angles below which near-parallel pairs of a dual with a gap form are solved in deficit form
#: (:meth:`KinkedDeficitMixin._deficit`).  The direct solve's 1 - rho keeps an absolute rounding error ~1e-14, an
#: error ~7e-15 / theta_0 relative in the NTK: measured (hardtanh, T = 1, against the deficit form) 6.9e-11 / 6.9e-12 /
#: 7.0e-13 / 2.4e-13 at theta_0 = 1e-4 / 1e-3 / 0.01 / 0.03; above 0.01 the direct solve is one solve where the
#: deficit form takes two, and its drop (a relu sum's: a quadrature) costs more than C
_DEFICIT_BELOW = 0.01
_TENSOR_INFO = ("unequal_norms_", "unequal_norms_high_", "unequal_norms_close_")   # their info keys' prefixes
_BATCH = 64                # problems per numpy solve
_OWN_CACHE = 64            # self-kernel solves kept for identical-input pairs (_own_solve)
_SELF_Q_TOL = 1e-13        # self-kernel solves from a known diagonal (_self_solve): relative change of q at the end
_SELF_Q_STEPS = 8          # ... at most this many fixed-diagonal solves, else the row marching
#: the sphere table of the large-q rule samples theta in the sinh variable of width eps = this / sqrt(q(T))
#: (:meth:`KinkedSolverMixin.theta_scale`; measured softplus / silu at sigma_w T = 10: eps from 0.003 to 0.03 / 0.01 all
#: reach 1e-11 at degree 48, 0.01 at 32 / 48; graded: 128)
_THETA_EPS = 4.0


class KinkedSolverMixin(KinkedLadderMixin, KinkedDeficitMixin, KinkedNodeTablesMixin, KinkedPairMixin, KinkedPanelsMixin):
    r"""Neural-ODE kernel evaluator on the collapsed-triangle grid (module doc); ``M`` is the degree $m=n$.
    Mixed into a :class:`~kernelcalc.kernels.ode.GoursatSolver`, which supplies :meth:`_tensor_factory`
    (the tensor-grid solver of unequal-norm pairs) and, for the panels' cost guard, ``work_limit`` and
    ``cost_message`` (:func:`kernelcalc.kernels.ode_refusals.cost_refusal`)."""

    def __init__(self, activation, *, T, sigma_w, sigma_u, sigma_v, v_max, tol=1e-10, M=None, strict=False):
        super().__init__(activation, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, v_max=v_max, tol=tol,
                         M=M, strict=strict, grid=lambda m: self._grid(m, 1.0),
                         scheme="collapsed-triangle spectral collocation (kinked activation)"
                         if _panels_of(T, sigma_w) == 1 else
                         f"collapsed-triangle panels ({_panels_of(T, sigma_w)} panels, kinked or large-q activation)")
        self._tensors: dict = {}   # the tensor-grid solvers of pairs of unequal norm, by probe (made on first use)
        self._unmet: dict = {}   # band -> degree that missed tol (kept by this solver only)
        self._tables: dict = {}  # (grid, diagonal) -> _AngleTable (quadrature duals)
        self._table_error = 0.0
        self._own: dict = {}     # (dual, grid, S0) -> the self-kernel solve of _self_diagonals (_own_solve)
        self._nt_state: dict = {}      # (grid, band, diagonal) -> problems asked, NodeAngleTable (_angle_table)
        self._nt_solved: dict = {}     # id(NodeAngleTable) -> (it, angles, solves): first iterates (_angle_table_pairs)
        self._self_guess: dict = {}    # S0 -> (grid, q) of its latest self-kernel solve (_self_solve's first guess)
        self._own_keys: dict = {}      # (dual, grid) -> the S0 of self._own (_own_get: the nearest within 1e-12)
        self._solutions: dict = {}     # (grid, S0) -> a converged solve (first guesses and brackets, _keep)
        self.band_floor = None         # band 0's edge lowered to the Gram's smallest pair angle (theta_scale)

    # -- solves ----------------------------------------------------------------------------------
    def _self_diagonals(self, dual, M, v):
        grid = self._grid(M, 1.0)
        if self._panel_count() == 1:
            self._check_cost(dual, len(v), self._nodes(M), symmetric=True)
        else:
            self._check_panels(dual, int(M), selfs=len(v))
        out = []
        for lo in range(0, len(v), _BATCH):
            S0 = rec.ode_initial(np.asarray(v[lo:lo + _BATCH], dtype=np.float64), self.sigma_u)
            hits = [self._own_get(dual, grid, s0) for s0 in S0.tolist()]
            if all(h is not None for h in hits):            # solved on this grid already (the ladder's degree; the
                # coarse self-kernel of a large-q rule whose coarse and final rules are the same, values_key)
                out.append(np.stack([h[1] for h in hits]))
                continue
            S0, inverse = np.unique(S0, return_inverse=True)   # (a padded batch repeats its norms)
            S, q, delta, sweeps, final = self._self_solve(dual, grid, S0)
            out.append(q[inverse.ravel()])
            self._sweeps("self", delta, sweeps, "the pre-activation variance q(t) = E[h_t^2]")
            if len(self._own) + S0.size > _OWN_CACHE:
                self._own.clear()
                self._own_keys.clear()
            self._keep(grid, S0, q, S)
            for i, s0 in enumerate(S0.tolist()):
                self._own[(values_key(dual), grid.name, s0)] = (S[i], q[i], delta, sweeps,
                                                                 None if final is None else (final[0][i], final[1][i]))
                self._own_keys.setdefault((values_key(dual), grid.name), set()).add(s0)
                self._self_guess[s0] = (grid, q[i], values_key(dual))
        return np.concatenate(out)

    def _own_get(self, dual, grid, s0):
        """The self-kernel solve of initial value ``s0`` on ``grid`` (the nearest within ``_EQUAL_RTOL``), or ``None``."""
        key = values_key(dual)
        return self._own.get((key, grid.name, _nearest(self._own_keys.get((key, grid.name), ()), s0)))

    def _self_solve(self, dual, grid, S0):
        r"""The self-kernel solve on ``grid`` (the diagonal $q(t)=S(t,t)$ iterated with its row of cells).  On the
        panels, when a diagonal of the same inputs is known on another degree (the ladder's previous grid, the
        first estimate of $q(T)$), it is resampled and the solve becomes a fixed point in $q$ alone: the cross-kernel
        solve with that diagonal fixed (wavefronts, with the anchored linear model of a dear closed form: about 4
        exact evaluations per node, where the row marching evaluates every node at each of its ~40 sweeps), whose
        own diagonal is the next $q$.  Measured (elu, $\sigma_wT=10$, degree 16 -> 20): one such step lands within
        2e-14 of the row-marched solution.  Iterated until $q$ changes by less than ``_SELF_Q_TOL`` (relative), else
        (no convergence in ``_SELF_Q_STEPS`` steps) the row marching.  The first step starts from the known solve
        resampled (:meth:`_guess`), each next one from the last (a dear dual's anchored sweeps then cost about one
        exact evaluation per node and its final one, :meth:`_anchored_cross`, where they took about four and the check
        of the linear model).  Returns ``(S, q, change, sweeps, final)``: ``final`` the exact $(C,\dot C)$ at ``S``
        with the variances of the last step's diagonal (a dear dual: the identical-input pairs of :meth:`_pairs` read
        them), else ``None``."""
        known = [self._self_guess.get(_nearest(self._self_guess, s0)) for s0 in S0.tolist()]
        # a diagonal of another dual (the coarse one that learned q(T)) seeds only a closed form's solve: the large-q
        # rule's fixed-diagonal steps from a Hermite diagonal (1e-6) took 6-8 steps or fell back to the row marching
        # (softplus sigma_w T = 10: 5e5 evaluations spent before the row march)
        if not isinstance(grid, PanelGrid) or any(
                k is None or k[0].P != grid.P or (dual.method == "asymptotic" and k[2] != values_key(dual))
                for k in known):
            return self._march_self(dual, grid, S0) + (None,)
        q = np.stack([_resample(k[1][None, :], k[0], grid)[0] for k in known])
        guess = self._guess(grid, S0, q)
        m, cell = grid.m, grid.cell
        on_diag = np.array([k * cell + i * (m + 1) for k in range(grid.P) for i in range(m)] + [grid.terminal])
        prev, worst, most = math.inf, 0.0, 0
        for step in range(_SELF_Q_STEPS):
            if _dear(dual):
                S, final, dS, nS = self._anchored_cross(dual, grid, S0, q, guess)
            else:
                S, _, dS, nS = pan.solve(grid, self._C(dual), S0, self._fwd, q=q, guess=guess)
                final = None
            guess = S
            worst, most = max(worst, dS), max(most, nS)
            new = S[:, on_diag]
            change = float(np.max(np.abs(new - q)) / max(float(np.max(np.abs(new))), 1e-300))
            q = new
            if change <= _SELF_Q_TOL:
                self.info.setdefault("self_q_steps", []).append(step + 1)
                return S, q, max(worst, change), most, final
            if change >= prev:
                break
            prev = change
        self.info["self_q_fallbacks"] = self.info.get("self_q_fallbacks", 0) + 1
        return self._march_self(dual, grid, S0) + (None,)

    def _march_self(self, dual, grid, S0):
        r"""The self-kernel's row march on ``grid`` (no diagonal known): the large-$q$ rule on the panels by
        Newton-chord sweeps between exact anchors (:mod:`._row_newton`: the same stopping test and fixed point, about
        half the exact evaluations), else the plain row march.  Returns ``(S, q, change, sweeps)``."""
        if isinstance(grid, PanelGrid) and dual.method == "asymptotic":
            return _row_newton.solve_self(grid, functools.partial(_exact_pairs, dual), S0, self._fwd)
        return _solve(grid, self._C(dual), S0, self._fwd)

    def _pairs(self, dual, M, q, S0, theta0, degrees=None, gap=None, anti=None):
        r"""(nngp, ntk) of B pairs of equal norm: ``q`` (B, M+1) their diagonal on the degree-``M`` grid,
        ``S0`` (B,), angles ``theta0``; each band of angles on its own grid (``degrees``: band -> degree).
        ``gap`` (B,): $S_0$ of the parallel pair minus ``S0``, exactly (angles $\theta_0<$ ``_DEFICIT_BELOW`` of a kink
        with a gap form are solved for the deficit from the parallel pair, :meth:`_deficit`); ``anti`` (B,), given
        with ``gap``: $S_0$ of the parallel pair plus ``S0``, exactly (the gap of the mirrored pair of an odd $\phi$ at
        $\theta_0\to\pi$; ``gap + 2 S0`` would cancel; :func:`~.ode_kinked_deficit.angle_gaps`).  On the panels the call's cost is
        checked first (:meth:`_check_pairs`) unless ``degrees`` are given (the degree ladder checks its rungs).
        The Gram's solves (``degrees`` not given) may go through node angle tables (:meth:`_angle_table`); the
        ladder's probes (at degrees still to be confirmed) never do.

        An odd $\phi$ solves an angle $\theta_0>\pi/2$ as $\pi-\theta_0$ with $-S_0$ and negates the kernel: the
        equations are exactly odd in $S$ ($C$ odd and $\dot C$ even in $c$), and at $\theta_0\to\pi$ the inputs
        $h_t(-x)=-h_t(x)$ stay antiparallel, so a kinked $\phi$ (hardtanh) has the kink of $\theta_0=0$ there, which
        only the bands near 0 resolve (measured hardtanh, 200 standardised rows: the ladder's probe at $\pi$ still
        changed by 2.2e-8 at its last degree, and warned)."""
        if self.activation.is_odd and np.any(flip := np.asarray(theta0) > 0.5 * math.pi):
            S0 = np.asarray(S0)
            if gap is not None:
                gap = np.where(flip, anti, gap)
            nngp, ntk = self._pairs(dual, M, q, np.where(flip, -S0, S0), np.where(flip, math.pi - theta0, theta0),
                                    degrees, gap)
            return np.where(flip, -nngp, nngp), np.where(flip, -ntk, ntk)
        tabulate = degrees is None
        # (a kink's orthant terms have a near kink at rho -> -1 too, relu6 at cos theta_0 = -0.99995 erred by 4.3e-10 in
        # band 0: on one element that side is banded by pi - theta_0 at the edges of sigma_w T <= 1; on the panels
        # band 0 agrees with those bands far within its estimate, which cost elu at sigma_w T = 10 7.5 -> 21 s)
        bands = np.maximum(band_of(theta0, self.sigma_w * self.T, self.band_floor),
                           band_of(math.pi - np.asarray(theta0), min(self.sigma_w * self.T, 1.0)))
        if self._panel_count() == 1:      # one element: bands 1 and 2 share band 2's grid (_ELEMENT_BAND_DELTAS)
            bands = np.where(bands == 1, 2, bands)
        # near-parallel pairs (theta_0 < _DEFICIT_BELOW) of a dual with a gap form: the deficit form (_deficit)
        near = (bands > 0) & (np.asarray(theta0) < _DEFICIT_BELOW) & (gap is not None and self._deficit_form(dual))
        if degrees is None:
            degrees = {int(b): self._band_degree(dual, int(b), M) for b in np.unique(bands)}
            self._check_pairs(dual, bands, degrees, near)
        grid0 = self._grid(M, 1.0)
        nngp, ntk = np.empty(S0.size), np.empty(S0.size)
        # identical inputs (theta0 = 0) solve their own diagonal (q = S(t, t)), so that the correlation on the
        # diagonal is exactly 1 (a fixed q would differ from S(t, t) by rounding, and arccos turns a relative
        # 1e-16 into an angle of 1e-8: measured 3e-9 in the NTK)
        groups = (bands * 2 + (np.asarray(theta0) == 0)) * 2 + near
        for key in np.unique(groups):
            b, own, deficit = int(key) // 4, bool(key // 2 % 2), bool(key % 2)
            idx = np.nonzero(groups == key)[0]
            Mb = degrees.get(int(b), M)
            if b == 0 and not own and tabulate:     # (the Gram's solves at theta_0 != 0: their own degree)
                Mb = self._angle_degree(Mb)
            grid = self._grid(Mb, self._band_deltas()[b])
            qb = q if Mb == M else _resample(q, grid0, grid)        # q(t) is analytic: interpolate
            for lo in range(0, idx.size, _BATCH):
                sel = idx[lo:lo + _BATCH]
                if deficit and not own and b > 0:   # near-parallel
                    C, Cdot, dS, nS = self._deficit(dual, grid, qb[sel], S0[sel] + gap[sel], gap[sel])
                    B = C.shape[0]
                elif tabulate and not own and (nt := self._angle_table(dual, grid, qb[sel], b, sel.size)) is not None:
                    C, Cdot, dS, nS = self._angle_table_pairs(nt, dual, grid, qb[sel], S0[sel])
                    B = C.shape[0]
                elif not own and _dear(dual) and isinstance(grid, PanelGrid):   # a dear dual: anchored sweeps
                    # from the same probe solved on the ladder's previous rung, if any (_guess), kept for the next
                    S, (C, Cdot), dS, nS = self._anchored_cross(dual, grid, S0[sel], qb[sel],
                                                                self._guess(grid, S0[sel], qb[sel]))
                    if not tabulate:
                        self._keep(grid, S0[sel], qb[sel], S)
                    B = S.shape[0]
                else:
                    table = None if own else self._table(dual, grid, qb[sel])
                    C_of = self._C(dual) if table is None else (
                        lambda q1, q2, c: table(c.reshape(c.shape[0], -1), 0).reshape(c.shape))
                    probe = not own and not tabulate and isinstance(grid, PanelGrid)   # (a ladder's probe: a guess)
                    cells = None
                    if table is None and not own and _dear(dual):   # a dear closed form (elu) on one element
                        cells = None if isinstance(grid, PanelGrid) else _TaylorCells.of(dual)
                        C_of = cells or AnchoredDual(lambda q1, q2, c: _dual_np(dual, q1, q2, c, True), kink=_kink(dual))
                    S, qk, dS, nS, final = (
                        self._own_solve(dual, grid, S0[sel]) if own else
                        pan.solve(grid, C_of, S0[sel], self._fwd, q=qb[sel], guess=self._guess(grid, S0[sel], qb[sel]))
                        + (None,) if probe else
                        tri.solve(grid, cells, S0[sel], self._fwd, q=qb[sel], newton=True) + (None,)
                        if cells is not None else _solve(grid, C_of, S0[sel], self._fwd, q=qb[sel]) + (None,))
                    if probe:
                        self._keep(grid, S0[sel], qb[sel], S)
                    if isinstance(C_of, AnchoredDual) and C_of.residual() > RESIDUAL_TOL:   # (module _anchored)
                        S, qk, dS, nS = _solve(grid, self._C(dual), S0[sel], self._fwd, q=qb[sel])
                    B = S.shape[0]
                    if final is not None:     # the exact values of the self-kernel's last fixed-diagonal step
                        C, Cdot = final
                    elif cells is not None:   # (the closed form's values to rounding, from the solve's anchors)
                        C, Cdot = cells(None, None, S)
                    elif table is None:
                        q1, q2 = _point_variances(grid, qk)
                        C, Cdot = _dual_np(dual, q1.reshape(S.shape), q2.reshape(S.shape), S, True)
                    else:
                        flat = S.reshape(B, -1)
                        C, Cdot = table(flat, 0).reshape(S.shape), table(flat, 1).reshape(S.shape)
                C, Cdot = C.reshape(B, -1), Cdot.reshape(B, -1)
                end = _terminal(grid)
                LamT = rec.ode_backward_terminal(Cdot[:, end], self.sigma_v)
                Lam, dL, nL = _backward(grid, Cdot, LamT, self._bwd)
                Lam = Lam.reshape(B, -1)
                integral = (C * Lam) @ grid.omega
                nngp[sel] = rec.ode_nngp(C[:, end], self.sigma_v)
                ntk[sel] = rec.ode_ntk(C[:, end], integral, S0[sel], Lam[:, 0], self.sigma_v, self.sigma_w)
                self._sweeps("cross", max(dS, dL), max(nS, nL),
                             "the cross-covariance S(t, s) or the backward kernel Lambda(t, s)")
        return nngp, ntk

    def _check_pairs(self, dual, bands, degrees, near):
        """The panels' cost guard (:meth:`_check_panels`) for one call of :meth:`_pairs`: its pairs per band of input
        angles at the band's degree (``near``: those in deficit form), priced at the dearest band."""
        if self._panel_count() == 1:
            return
        counts = {int(b): int(np.sum(bands == b)) for b in np.unique(bands)}
        nears = {int(b): int(np.sum(near & (bands == b))) for b in np.unique(bands)}
        work = {b: self.predicted_work(dual, degrees[b], pairs=n, near=nears[b]) for b, n in counts.items()}
        top = max(work, key=work.get)
        others = [(w, f"{counts[b]} pairs at degree {degrees[b]} (band {b} of input angles)")
                  for b, w in work.items() if b != top]
        self._check_panels(dual, degrees[top], pairs=counts[top], near=nears[top], others=others)

    def relative_error_estimate(self) -> float:
        """As :meth:`GoursatSolver.relative_error_estimate`, with the time-grid change of every band of
        input angles used so far (and of the tensor grid of unequal-norm pairs)."""
        changes = list((self.info.get("band_changes") or {}).values()) + [c for _, c in self._unmet.values()]
        changes.append(self.info.get("time_error_estimate") or 0.0)
        changes += [t.info.get("time_error_estimate") or 0.0 for t in self._tensors.values()]
        base = dict(self.info)
        try:
            self.info = dict(base, time_error_estimate=max(changes))
            return super().relative_error_estimate() + self._table_error * (1.0 + self.sigma_w * self.T)
        finally:
            self.info = base

    def adopt_diagonals(self, norms, grid, held):
        """:meth:`GoursatSolver.adopt_diagonals` for a Gram plan's direct pairs, among this solver's self-kernels (the
        tensor grids of unequal norms read theirs, :meth:`_tensor_diagonals`); not for an activation that jumps (its
        tensor grid solves its own)."""
        if self.activation.jumps:       # (one tensor solver, judged at identical inputs, with its own diagonals)
            return False, math.inf
        return super().adopt_diagonals(norms, grid, held)

    def _tensor_solver(self, probe):
        """The tensor-grid solver for pairs of unequal norm whose time grid is judged at correlation ``probe``
        (None: identical inputs), made on first use."""
        if probe not in self._tensors:
            t = self._tensor_factory()
            t.pairs_hint = self.pairs_hint
            t.probe_correlation = probe
            t._table_from = self._table_from        # (the norms announced: its duals' tables span them too)
            if not self.activation.jumps:
                t.diagonal_source = self._tensor_diagonals
                t.diagonal_source_key = ("collapsed triangles", self.M_fixed)
            self._tensors[probe] = t
        return self._tensors[probe]

    def _tensor_diagonals(self, v, t):
        r"""``(len(v), len(t))``: the self-kernel diagonals $q(t)$ of the norms ``v`` at the times ``t`` (the tensor
        grid's nodes, :attr:`GoursatSolver.diagonal_source`), from this solver's self-kernels on the collapsed
        triangles, each the Chebyshev interpolant of its nodes (per panel; $q$ is analytic).  The tensor grid's own
        self-kernel converges only algebraically: measured (elu, 60 random pairs of norms 0.1-8 and |cos| <= 0.99, the
        NTK against degree 48), its diagonals erred by 2.5e-9 / 2.1e-10 / 3.8e-11 at degrees 8 / 12 / 16, these by
        1.9e-10 / 1.3e-13 / 1.8e-15: degree 12 of 17 nodes now beats 16 by two orders."""
        dual, M = self._dual_and_M(v)
        grid = self._grid(M, 1.0)
        return _diagonal_at(grid, self._cached_diagonals(dual, M, v), t)

    def __call__(self, sxx, syy, sxy):
        shape, (sxx, syy, sxy), v_unique, inverse = flat_pairs(sxx, syy, sxy)
        dual, M = self._dual_and_M(v_unique)
        nngp, ntk = np.empty(sxy.size), np.empty(sxy.size)
        # equal norms up to rounding (1e-12 relative): solved as equal (the norm of x for both; the
        # resulting error is of the size of the difference)
        equal = np.abs(sxx - syy) <= _EQUAL_RTOL * np.maximum(sxx, syy)
        # unequal norms: the tensor grid, judged at the cap of their input correlations (_TENSOR_CORRELATIONS; closer
        # pairs: at identical inputs, the kink's limit).  An activation that jumps: one solver, its ladder judged at
        # correlation 1/2 whatever the probe
        prod = sxx * syy
        rho = np.where(prod > 0, np.abs(sxy) / np.sqrt(np.where(prod > 0, prod, 1.0)), 0.0)
        probes = (() if self.activation.jumps else _TENSOR_CORRELATIONS) + (None,)
        done = equal.copy()
        if self.window_correlation_cap is not None:
            # closer than the last probe: both collapsed triangles, each pair on its own ladder (ode_kinked_pair)
            close = ~done & (rho > _TENSOR_CORRELATIONS[-1])
            done |= close
            if np.any(close):
                nngp[close], ntk[close] = self._close_pairs(dual, M, sxx[close], syy[close], sxy[close])
        for probe, prefix in zip(probes, _TENSOR_INFO[-len(probes):]):
            sel = ~done & (rho <= probe) if probe is not None else ~done      # (the last: every pair left)
            done |= sel
            if not np.any(sel):
                continue
            t = self._tensor_solver(probe)
            nngp[sel], ntk[sel] = t(sxx[sel], syy[sel], sxy[sel])
            for key in ("M", "time_error_estimate", "sweep_change"):
                if key in t.info:
                    self.info[f"{prefix}{key}"] = t.info[key]
            self.info["time_error_estimate"] = max(self.info.get("time_error_estimate") or 0.0,
                                                   t.info.get("time_error_estimate") or 0.0)
            started = sum(u.info.get("interpolated_starts", 0) for u in self._tensors.values())
            if started:
                self.info["interpolated_starts"] = started
        if np.any(equal):
            ix = inverse[: sxx.size][equal]
            diag = self._cached_diagonals(dual, M, v_unique)
            v = sxx[equal]
            root = np.where(v > 0, v, 1.0)
            theta0 = np.where(v > 0, np.arccos(np.clip(sxy[equal] / root, -1.0, 1.0)), 0.0)
            # exactly parallel inputs are the self-kernel (theta0 = 0: the exact kink)
            theta0 = np.where((sxy[equal] == v) | (sxy[equal] == syy[equal]), 0.0, theta0)
            S0 = rec.ode_initial(sxy[equal], self.sigma_u)
            gap = rec.ode_initial(v - sxy[equal], self.sigma_u)    # exact for near-parallel inputs (Sterbenz)
            anti = rec.ode_initial(v + sxy[equal], self.sigma_u)   # ... and for near-antiparallel ones
            nngp[equal], ntk[equal] = self._pairs(dual, M, diag[ix], S0, theta0, gap=gap, anti=anti)
        if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
            raise self._blow_up("the kernel")
        return nngp.reshape(shape), ntk.reshape(shape)

    @property
    def window_correlation_cap(self):
        r"""The largest $|\cos\theta|$ of a norm-interpolation table's window, :func:`._gram_norms_window.kink_window_cap`
        (0.9), on one element (below the first probe of the tensor grid; the closer pairs solved directly: the tensor
        grid judged at 0.95 and 0.99, and :mod:`.ode_kinked_pair`); ``None`` for an activation that jumps and on
        panels.  A jump of $\phi'''$ alone is no exception: the tanh kink's table on 200 standardised rows in $d=2$
        (window to $\theta=0.001$) erred by 3e-9 at nearly parallel rows of unequal norm, its estimate 2.6e-10
        (capped: 1.5e-11, in the same time)."""
        return None if self._panel_count() > 1 else kink_window_cap(self.activation)

    def theta_scale(self, v, angles=None):
        r"""The width $\varepsilon$ of the sphere table's sinh angle variable (:class:`._interp.SinhAngle`) for the
        norms ``v``, or ``None`` (the graded variable).  The large-$q$ rule on the panels (softplus, silu at long
        horizons): its duals bend at $1-\rho\sim1/q$ at every time, and the kernel has features in $\theta$ on all
        scales down to about $1/\sqrt{q(T)}$; $\varepsilon$ = ``_THETA_EPS`` $/\sqrt{q(T)}$ ($q(T)$: the largest
        diagonal of the norms, solved here once, as the first sample would).

        ``angles`` (a function, called at most once, before the degree ladder): ``(lo, hi)``, the angles of the
        sphere Gram's pairs, which its table samples in the sinh variable (:mod:`._theta_pieces`); when ``lo`` lies
        just under band 0's edge, band 0 serves it (:func:`~.ode_kinked_ladder.band_floor`: its ladder then probes
        ``lo`` in place of its edge, and band 1's ladder, node angle table and table piece are not made)."""
        v = np.unique(np.asarray(v, np.float64))
        if self._panel_count() == 1 or v.size == 0 or np.any(v <= 0):
            return None
        if (angles is not None and "M" not in self.info and self.M_fixed is None
                and self.activation.name in _LARGE_Q_PANELS):
            self.band_floor = band_floor(angles()[0], self.sigma_w * self.T)
        dual, M = self._dual_and_M(v)
        if dual.method != "asymptotic":
            return None
        q_max = float(np.max(self._cached_diagonals(dual, M, v)))
        return _THETA_EPS / math.sqrt(q_max) if q_max > 0 and math.isfinite(q_max) else None

    def theta_seams(self) -> tuple:
        r"""The input angles where the kernel's discretisation changes (the bands' edges of :func:`band_of`, each band on
        its own grid: $K(\theta)$ jumps there by the difference of their errors), for the sphere table's pieces
        (:mod:`._theta_pieces`); none on one element.  Band 0's default edge stays a seam when band 0 serves the angles
        under it (:func:`~.ode_kinked_ladder.band_floor`): the table splits there still, on one grid (measured softplus,
        $\sigma_wT=10$, N = 200: one series over the pairs' angles 0.458-2.73 took 65 nodes and its estimate 7.5e-11,
        two pieces 17 + 33 nodes and 6.0e-11)."""
        if self._panel_count() == 1:
            return ()
        sigma_w_T = self.sigma_w * self.T
        return tuple(e for e in (band_edges(2, sigma_w_T)[1], band_edges(1, sigma_w_T)[1]) if e < math.pi)

    def at_angles(self, sxx, syy, theta):
        r"""(nngp, ntk) at norms ``sxx``, ``syy`` and input angles ``theta`` given as angles (the graded theta
        tables of :mod:`._gram` sample at $\theta\approx10^{-8}$, where $x\cdot y/d=\sqrt{v_xv_y}\cos\theta$
        rounded keeps a few digits of $1-\cos\theta$: an angle error of several per cent, which stalled abs's
        table).  Pairs of equal norm are solved at the exact angle; others as :meth:`__call__`."""
        sxx, syy, theta = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (sxx, syy, theta)))
        equal = np.abs(sxx - syy) <= _EQUAL_RTOL * np.maximum(sxx, syy)
        if not np.all(equal & (sxx > 0)):
            return self(sxx, syy, np.sqrt(sxx * syy) * np.cos(theta))
        shape, v, th = sxx.shape, sxx.ravel(), theta.ravel()
        v_unique, inverse = np.unique(v, return_inverse=True)
        dual, M = self._dual_and_M(v_unique)
        diag = self._cached_diagonals(dual, M, v_unique)
        S0 = rec.ode_initial(v * np.cos(th), self.sigma_u)
        gap, anti = angle_gaps(v, th, self.sigma_u)
        nngp, ntk = self._pairs(dual, M, diag[inverse.ravel()], S0, th, gap=gap, anti=anti)
        if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
            raise self._blow_up("the kernel")
        return nngp.reshape(shape), ntk.reshape(shape)


def _diagonal_at(grid, q, t):
    """The diagonals ``q`` ``(B, nodes)`` on ``grid``'s time nodes (one collapsed triangle, or the panels) at the times
    ``t``: the Chebyshev interpolant of the element, or of each panel."""
    t = np.asarray(t, dtype=np.float64)
    if not isinstance(grid, PanelGrid):
        return q @ barycentric_weights(grid.r, t).T
    qp, m = grid.split(q), grid.m
    k = np.clip((t // grid.h).astype(np.int64), 0, grid.P - 1)
    out = np.empty((q.shape[0], t.size))
    for p in np.unique(k).tolist():
        sel = k == p
        out[:, sel] = qp[:, p] @ barycentric_weights(grid.r[p * m: p * m + m + 1], t[sel]).T
    return out


def _nearest(keys, s0: float):
    """The key of ``keys`` nearest to ``s0`` within ``_EQUAL_RTOL`` (relative: the Gram's norm groups, whose norms
    differ by rounding), or ``None``."""
    return min((k for k in keys if abs(k - s0) <= _EQUAL_RTOL * max(abs(k), abs(s0))), key=lambda k: abs(k - s0),
               default=None)
