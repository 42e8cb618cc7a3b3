r"""The plumbing of the kinked Neural-ODE solver (:mod:`kernelcalc.kernels.ode_kinked`): its time grid (one
collapsed-triangle element, or the composite panels of :mod:`._panels` past $\sigma_wT=3$) with the forward and
backward solves on it, and the evaluation of the dual kernels on the grid nodes (numpy or
jitted, the angle tables :class:`_AngleTable` of quadrature duals; the node angle tables of a dear dual are
:mod:`.ode_kinked_node_tables`'s).
The panels' cost model and guard are :class:`.ode_kinked_cost.KinkedPanelsCostMixin`, the base of
:class:`KinkedPanelsMixin`."""

from __future__ import annotations

import functools
import math

import numpy as np

from .._x64 import float64
from .._lazy import jnp
from ..theory import recursion as rec
from ..theory._chebyshev import clenshaw
from ..theory.duals_ops import NUMPY_OPS, correlation_angle
from ..theory.gaussian_rules import padded_blocked
from . import _triangle as tri
from . import _panels as pan
from ._panel_grid import PanelGrid, panel_count, panel_grid
from ._anchored import RESIDUAL_TOL, AnchoredDual
from ._interp import barycentric_weights
from ._interp import chebyshev_coefficients, chebyshev_matrix
from .ode_kinked_cost import KinkedPanelsCostMixin

_TABLE_TOL = 1e-13         # angle tables (_AngleTable) of quadrature duals: target relative accuracy
_TABLE_MAX = 256
_TABLE_MIN_PROBLEMS = 16   # fewer problems (the degree probes): the rule directly (a table costs ~100 sweeps' worth)
_TABLE_COST_ANGLES = 64    # angles of an angle table (typical; 16-256), for the cost guard
#: the padded shape of a jax rule's evaluation (_dual_np): a call of n values runs ceil(n / 512) chunks (the shape
#: compiles once per rule, 3.5-5 s for the large-q rule with its five regimes; a power-of-two bucket per call compiled
#: 15 shapes, 26 of 130 s of softplus at sigma_w T = 6, N = 20; a chunk's dispatch, ~50 us, against ~3 ms of work)
_JIT_CHUNK = 512
_SINGLE_ELEMENT = 3.0     # sigma_w * T up to which one collapsed-triangle element is used
#: anchored solves of a dear closed form (elu) evaluate exactly where the correlation is within this of 1: its dual
#: is not smooth at rho = 1 ((1 - rho)^{3/2} terms), where the linear model's error is not quadratic (measured:
#: residuals 8e-12 > RESIDUAL_TOL at the diagonal t = s of the self-kernel, and an exact re-solve of each; with 1e-2,
#: below 1e-19)
_KINK = 1e-2
#: ... and those of the large-q rule of softplus and silu within this (smooth at rho = 1, but bending like relu there
#: at large q: with 0, the residual of the linear model failed RESIDUAL_TOL and whole solves were redone exactly; with
#: 1e-2, most of the self-kernel's nodes were exact at every sweep; measured softplus sigma_w T = 10, N = 20: 147 s
#: CPU with 0, 206 s with 1e-2, 132 s with 1e-3)
_KINK_RULE = 1e-3
#: converged cross- and self-kernel solves kept per solver for first guesses on other grids and for reuse as the node
#: angle tables' bracketing solves (:meth:`KinkedPanelsMixin._keep`; a few of up to 4e4 nodes each)
_KEEP = 24
#: kept solves of another initial value S0 seed a solve (:meth:`KinkedPanelsMixin._nearby`) within this of it (relative):
#: the near-parallel probes of bands 1 and 2 from the self-kernel (1 - cos theta_0 <= 5.5e-3 up to sigma_w T = 20)
_NEARBY = 1e-2


class _AngleTable:
    r"""$C$ and $\dot C$ at fixed marginal variances $(q_1, q_2)$ (one pair per grid point) as Chebyshev
    series in the angle $\theta=\arccos(c/\sqrt{q_1q_2})\in[0,\pi]$: for a kink at 0 both are analytic in
    $\theta$ (the polar-sector integrals depend analytically on it), so a few dozen terms reach rounding
    level, and a cross-kernel sweep costs a Clenshaw recurrence per point instead of a quadrature.
    The degree is doubled from 16 until the series predicts the new nodes to ``_TABLE_TOL`` (relative to
    the largest value); the achieved value is ``error``."""

    def __init__(self, dual, q1, q2):
        self.n = np.sqrt(q1 * q2)
        R, vals = 16, self._sample(dual, q1, q2, 16)
        while True:
            new = self._sample(dual, q1, q2, 2 * R, odd=True)
            coef = chebyshev_coefficients(vals)
            u_new = np.sin(0.5 * np.pi * (2 * np.arange(1, 2 * R, 2) - 2 * R) / (2 * R))
            pred = np.einsum("jr,rcp->jcp", chebyshev_matrix(u_new, R), coef)
            scale = np.maximum(np.max(np.abs(vals), axis=(0, 2), keepdims=True), 1e-300)
            err = float(np.max(np.abs(pred - new) / scale))
            merged = np.empty((2 * R + 1,) + vals.shape[1:])
            merged[0::2], merged[1::2] = vals, new
            vals, R = merged, 2 * R
            if err <= _TABLE_TOL or R >= _TABLE_MAX:
                break
        self.coef = chebyshev_coefficients(vals)          # (R+1, 2, P): C and Cdot
        self.error = max(err, 1e-16)

    def _sample(self, dual, q1, q2, R, odd=False):
        k = np.arange(1, R, 2) if odd else np.arange(R + 1)
        u = np.sin(0.5 * np.pi * (2 * k - R) / R)                           # Lobatto points in u
        c = self.n[None, :] * (-np.sin(0.5 * np.pi * u))[:, None]           # cos(theta), theta = pi (u + 1) / 2
        C, Cd = _dual_np(dual, np.broadcast_to(q1, c.shape), np.broadcast_to(q2, c.shape), c, True)
        return np.stack([C, Cd], axis=1)                                   # (nodes, 2, P)

    def __call__(self, c, which):
        """C (``which`` 0) or Cdot (1) at covariances ``c`` (..., P)."""
        n = self.n
        rho = np.clip(np.where(n > 0, c / np.where(n > 0, n, 1.0), 0.0), -1.0, 1.0)
        u = 2.0 / np.pi * correlation_angle(rho) - 1.0
        return clenshaw(self.coef[:, which], u)


def values_key(dual):
    r"""What decides the values of ``dual``: the large-$q$ rule itself for ``asymptotic`` duals (the coarse dual that
    learns $q(T)$ and the final one are the same rule when the coarsest step meets tol), else ``dual``: the key of the
    compiled rules (:func:`_jitted_dual`) and of the self-kernel solves kept by the kinked solver."""
    return ("asymptotic", dual.rule) if dual.method == "asymptotic" else dual


#: covariances up to which the polar rule (not yet tabulated: the coarse solves that learn q(T)) is evaluated in numpy,
#: nothing compiled (~0.1 ms each; importing jax and compiling the rule took ~1.8 s of a first call, whose untabulated
#: solves ask ~3000 covariances in all)
_POLAR_NUMPY_MAX = 4096

_JITTED: dict = {}     # (values_key, derivative) -> the compiled rule (_jitted_dual; at most _JITTED_MAX)
_JITTED_MAX = 16


def _jitted_dual(dual, derivative: bool):
    """The jax rule of ``dual`` as one compiled function of flat (q1, q2, c), shared by the duals of the same values
    (:func:`values_key`: the coarse and the final large-$q$ rule were compiled twice, 5 s each)."""
    key = (values_key(dual), derivative)
    f = _JITTED.get(key)
    if f is None:
        from .._lazy import jax

        @jax.jit
        def f(q1, q2, c):
            return dual.from_marginals(dual.marginal(q1, derivative, jnp), dual.marginal(q2, derivative, jnp), c,
                                       derivative=derivative, xp=jnp)

        f = float64(f)
        if len(_JITTED) >= _JITTED_MAX:
            _JITTED.pop(next(iter(_JITTED)))
        _JITTED[key] = f
    return f


def _dual_np(dual, q1, q2, c, derivative: bool):
    """$C$ (and $\\dot C$) as numpy arrays: numpy closed forms, else the jax rule on flat arrays in chunks of
    ``_JIT_CHUNK`` (one compiled shape per rule); the large-$q$ rule by its own
    :meth:`~kernelcalc.theory.largeq_table.TabulatedRule.values_np` (always with $\\dot C$, padded to the shape that
    its step selection compiled: one compile per process for both)."""
    if not dual.numpy_ok and not (dual.method == "polar" and np.broadcast(q1, q2, c).size <= _POLAR_NUMPY_MAX):
        if hasattr(dual.rule, "values_np"):   # the large-q rule's own padded evaluation: the shape choose_tabulated compiled
            out = dual.rule.values_np(q1, q2, c)
        else:
            f = _jitted_dual(dual, derivative)
            out = padded_blocked(lambda *a: f(*a) if derivative else (f(*a),), q1, q2, c, chunk=_JIT_CHUNK)
        return out if derivative else out[0]
    xp = np
    m1, m2 = dual.marginal(xp.asarray(q1), derivative, xp), dual.marginal(xp.asarray(q2), derivative, xp)
    out = dual.from_marginals(m1, m2, xp.asarray(c), derivative=derivative, xp=xp)
    return tuple(np.asarray(o) for o in out) if derivative else np.asarray(out)


class _DualC:
    r"""$C(q_1,q_2,c)$ of ``dual`` in numpy, the ``C_of`` of the panel and triangle solvers;
    :meth:`at_variances` gives $c\mapsto C$ at fixed variances (the cross-kernels' wavefronts,
    :func:`._panels._solve_wavefront`): a closed form with ``C_at_variances`` (gelu) computes its variance parts
    once per cell instead of once per Picard sweep (the same values); a relu sum or a piecewise polynomial of degree 2
    Taylor-updates its exact values at anchors (``joint_at_variances``, :mod:`kernelcalc.theory.duals_taylor`)."""

    def __init__(self, dual):
        self.dual = dual

    def __call__(self, q1, q2, c):
        return _dual_np(self.dual, q1, q2, c, False)

    def at_variances(self, q1, q2):
        taylor = self.dual.joint_at_variances
        if self.dual.tabulated or taylor is not None:
            # the polar table, its variances contracted once (theory/polar_table.py, C alone); a relu sum or piecewise
            # polynomial, Taylor-updated between exact anchors (theory/duals_taylor.py)
            q1, q2 = np.broadcast_arrays(np.asarray(q1, np.float64), np.asarray(q2, np.float64))
            f = self.dual.rule.at_variances(q1, q2, derivative=False) if taylor is None else taylor(q1, q2)
            return lambda c: f(c)[0] if np.shape(c) == q1.shape else self(q1, q2, c)
        prepared = getattr(self.dual.rule, "C_at_variances", None) if (
            self.dual.method == "closed" and self.dual.numpy_ok) else None
        if prepared is None:
            return lambda c: self(q1, q2, c)
        f = prepared(NUMPY_OPS, np.asarray(q1, np.float64), np.asarray(q2, np.float64))
        return lambda c: np.broadcast_to(f(c), np.shape(c))


class _TaylorCells:
    r"""``C_of`` of one cross-kernel solve on the collapsed triangle with Newton steps (:func:`._triangle.solve`,
    ``newton=True``): $(C,\dot C)$ at the solve's fixed variances from the dual's ``joint_at_variances`` (a relu sum or
    a piecewise polynomial of degree 2: exact at anchors, Taylor updates between, the closed form's values to
    rounding: :mod:`kernelcalc.theory.duals_taylor`).  Where the linear model of :class:`._anchored.AnchoredDual`
    needed 4-6 exact evaluations per node, this takes about two.  Called with ``q1 = None`` after the solve: the
    values at its solution."""

    def __init__(self, make):
        self.make, self.cells = make, None

    @classmethod
    def of(cls, dual):
        """The cells of ``dual``, or ``None`` where it has none (``DualKernels.joint_at_variances``)."""
        make = dual.joint_at_variances
        return None if make is None else cls(make)

    def __call__(self, q1, q2, c):
        if self.cells is None:
            self.cells = self.make(np.array(q1), np.array(q2))
        return self.cells(c)


class KinkedPanelsMixin(KinkedPanelsCostMixin):
    r"""The grid, dual tables and solves (its base: the cost guard) of :class:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin`
    (its base: the state these methods use is made by its ``__init__``)."""

    def _nodes(self, M) -> int:
        """Time nodes along one axis: $m+1$ (one element) or $Pm+1$ (panels)."""
        return self._panel_count() * int(M) + 1

    def _padded(self, dual, M, v):
        """The norms of a self-kernel solve as they are: the panels and the triangle solve them in numpy (padding to
        a compiled shape would solve copies: 8 self-kernels for one norm, measured 7 of 12 s of elu at T = 10)."""
        return v

    def _coarse_degrees(self) -> tuple:
        """As :meth:`GoursatSolver._coarse_degrees`; on the panels the first degree of band 0's ladder (``_PANEL_LADDERS``),
        whose self-kernel solve the ladder then reuses (and the next degrees start from its diagonal)."""
        return super()._coarse_degrees() if self._panel_count() == 1 else (12, 16, 24)

    # -- long horizons: composite panels (kernels/_panels.py) ----------------------------------
    def _panel_count(self) -> int:
        return _panels_of(self.T, self.sigma_w)

    def _grid(self, M, delta):
        r"""The time grid of degree ``M`` and sinh map ``delta``: one collapsed-triangle element
        (:func:`._triangle.triangle_grid`) for $\sigma_wT\le3$, else the composite panels of :mod:`._panels`."""
        P = self._panel_count()
        if P == 1:
            return tri.triangle_grid(int(M), int(M), float(delta), self.T)
        if P * int(M) + 1 > 4 * self.max_nodes:    # before allocating the panels (the solver's limit: max_nodes)
            from .._validation import KernelcalcInputError
            raise KernelcalcInputError(
                f"sigma_w*T = {self.sigma_w * self.T:g} needs {P} time panels ({P * int(M) + 1} nodes, more than the "
                f"limit {self.max_nodes}); reduce T or sigma_w")
        return panel_grid(int(M), P, float(delta), self.T)

    def _fwd(self, C):
        return rec.ode_forward_source(C, self.sigma_w)

    def _bwd(self, Cdot, Lam):
        return rec.ode_backward_source(Cdot, Lam, self.sigma_w)

    def _C(self, dual):
        return _DualC(dual)

    def _own_solve(self, dual, grid, S0):
        r"""The forward solve of identical inputs (their own diagonal, $q=S(t,t)$): the self-kernel solve of
        :meth:`_self_diagonals` when it was made on this grid (the same problem), else solved here.  Returns
        ``(S, q, change, sweeps, final)``: ``final`` the exact $(C,\dot C)$ at ``S`` kept with the self-kernel solve
        (:meth:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin._self_solve`), else ``None``."""
        hits = [self._own_get(dual, grid, s0) for s0 in S0.tolist()]
        if all(h is not None for h in hits):
            finals = None if any(h[4] is None for h in hits) else tuple(
                np.stack([h[4][w] for h in hits]) for w in (0, 1))
            return (np.stack([h[0] for h in hits]), np.stack([h[1] for h in hits]), max(h[2] for h in hits),
                    max(h[3] for h in hits), finals)
        return _solve(grid, self._C(dual), S0, self._fwd) + (None,)

    def _keep(self, grid, S0, q, S) -> None:
        """Keep the converged solves ``S`` ``(B, points)`` of initial values ``S0`` with diagonal ``q`` on ``grid`` (the
        panels; at most ``_KEEP``, the oldest dropped) for :meth:`_solution`."""
        if not isinstance(grid, PanelGrid):
            return
        for s0, qr, row in zip(np.asarray(S0).tolist(), q, S):
            self._solutions.pop((grid.name, s0), None)
            self._solutions[(grid.name, s0)] = (grid, s0, np.array(qr, copy=True), np.array(row, copy=True))
            while len(self._solutions) > _KEEP:
                self._solutions.pop(next(iter(self._solutions)))

    def _solution(self, grid, s0: float, q_end: float, exact: bool = False):
        r"""A kept solve (:meth:`_keep`) of initial value ``s0`` (within ``1e-12`` relative) whose diagonal ends at
        ``q_end`` (within ``1e-8``: the same input norm), as ``(its grid, its node values)``: with ``exact``, only one on
        ``grid`` itself; else the finest of those with ``grid``'s sinh map, else the finest of any (a first guess)."""
        best, rank = None, None
        for g, s, qr, row in self._solutions.values():
            if (g.P != grid.P or g.T != grid.T or abs(s - s0) > 1e-12 * max(abs(s), abs(s0))
                    or abs(qr[-1] - q_end) > 1e-8 * abs(q_end)):
                continue
            if exact and g is not grid:
                continue
            r = (g is grid, g.delta == grid.delta, g.m)
            if rank is None or r > rank:
                best, rank = (g, row), r
        return best

    def _guess(self, grid, S0, q):
        """``(B, points)``: a first guess of the solves of ``S0`` with diagonals ``q`` on ``grid``, each a kept solve
        of the same problem on another grid resampled (:meth:`._panel_grid.PanelGrid.resample_nodes`), else kept solves
        of nearby initial values interpolated (:meth:`_nearby`), or ``None`` when one of them has neither."""
        if not isinstance(grid, PanelGrid):
            return None
        rows = []
        for s0, qr in zip(np.asarray(S0).tolist(), q):
            hit = self._solution(grid, s0, float(qr[-1]))
            row = self._nearby(grid, s0, float(qr[-1])) if hit is None else hit[0].resample_nodes(hit[1][None, :],
                                                                                                     grid)[0]
            if row is None:
                return None
            rows.append(row)
        return np.stack(rows)

    def _nearby(self, grid, s0: float, q_end: float):
        r"""A first guess on ``grid`` of the solve of initial value ``s0`` (diagonal ending at ``q_end``) from kept solves
        of other initial values (:meth:`_keep`; the finest of each, resampled): the nearest, within ``_NEARBY``
        (relative), linearly interpolated in $S_0$ toward the nearest on the other side of ``s0`` if any; else ``None``.
        A near-parallel pair ($S_0=q(0)\cos\theta_0$) differs from the identical one by a deficit about linear in
        $1-\cos\theta_0$: measured (softplus $\sigma_wT=10$), the band-2 probe ($\theta_0=0.0055$) is within 2.6e-9 of
        the self-kernel and the band-1 probe ($\theta_0=0.055$) so interpolated (1.6e-6 from the self-kernel alone),
        the band-1 probe within 1.4e-5 of the self-kernel and the band-0 probe at 0.55: an anchored solve's first
        anchors (:mod:`._anchored`: each roughly squares the distance) are spent from there instead of from the cells'
        edges."""
        best = {}
        for g, s, qr, row in self._solutions.values():
            if g.P != grid.P or g.T != grid.T or abs(qr[-1] - q_end) > 1e-8 * abs(q_end):
                continue
            rank = (g.delta == grid.delta, g.m)
            if s not in best or rank > best[s][0]:
                best[s] = (rank, g, row)
        near = sorted(best, key=lambda s: abs(s - s0))
        if not near or abs(near[0] - s0) > _NEARBY * abs(near[0]):
            return None
        at = lambda s: best[s][1].resample_nodes(best[s][2][None, :], grid)[0]   # noqa: E731
        out = at(near[0])
        other = [s for s in near[1:] if (s - s0) * (near[0] - s0) < 0]
        if other:
            out = out + (s0 - near[0]) / (other[0] - near[0]) * (at(other[0]) - out)
        return out

    def _anchored_cross(self, dual, grid, S0, q, guess=None):
        r"""The cross-kernel solves of a dear dual on the panels ``grid`` by anchored sweeps (:mod:`._anchored`) from
        ``guess`` (or the cells' edges), with their final exact $C,\dot C$ (which also check the linear model:
        :meth:`._anchored.AnchoredDual.residual_at`); a residual above ``RESIDUAL_TOL`` is solved again from the
        solution found (fresh anchors there), and if it still misses, with the exact dual.  Returns ``(S, (C, Cdot), change, sweeps)`` (node arrays ``(B, points)``)."""
        B = S0.shape[0]
        idx = np.broadcast_to(np.arange(grid.points), (B, grid.points))
        q1, q2 = _point_variances(grid, q)
        for attempt in range(2):
            # a residual above tol: once more from the solution found (anchored there, the model is exact to
            # rounding: one exact evaluation per node, where the exact re-solve took ~10), then the exact dual
            f = AnchoredDual(functools.partial(_exact_pairs, dual), kink=_kink(dual))
            S, _, dS, nS = pan.solve(grid, f, S0, self._fwd, q=q, aux=(idx,), guess=guess)
            C, Cdot = _dual_np(dual, q1, q2, S, True)
            if f.residual_at(S, C) <= RESIDUAL_TOL:
                return S, (C, Cdot), dS, nS
            guess = S
            self.info["anchored_restarts"] = self.info.get("anchored_restarts", 0) + 1
        S, _, dS, nS = pan.solve(grid, self._C(dual), S0, self._fwd, q=q)
        C, Cdot = _dual_np(dual, q1, q2, S, True)
        return S, (C, Cdot), dS, nS

    def _table(self, dual, grid, q):
        """The :class:`_AngleTable` of ``grid`` for problems sharing one diagonal ``q`` (rows), or ``None``
        (a closed form, or different diagonals)."""
        if (dual.method == "closed" or q.shape[0] < _TABLE_MIN_PROBLEMS or not np.all(q == q[:1])
                or isinstance(grid, PanelGrid)):   # (the panels call C on parts of the grid: no node layout here)
            return None
        key = (grid.name, q[0].tobytes())
        table = self._tables.get(key)
        if table is None:
            q1, q2 = (a[0] for a in _point_variances(grid, q[:1]))
            table = self._tables[key] = _AngleTable(dual, q1, q2)
            self.info["angle_table_error"] = max(self.info.get("angle_table_error", 0.0), table.error)
            self._table_error = max(self._table_error, table.error)
        return table


def _kink(dual) -> float:
    r"""``kink`` of the :class:`._anchored.AnchoredDual` of ``dual``: ``_KINK`` for a closed form (elu's $(1-\rho)^{3/2}$
    terms), 0 for the large-$q$ rule of a smooth $\phi$ (analytic at $\rho=1$: the linear model's error is quadratic
    there too; with ``_KINK`` the self-kernel's near-parallel band, most of its nodes at large $q$, was evaluated
    exactly at every sweep, in small scattered calls)."""
    return _KINK if dual.method == "closed" else _KINK_RULE


def _dear(dual) -> bool:
    """Whether ``dual`` is dear (a closed form of price > 1, elu; the large-$q$ rule of softplus and silu, 5-15 us per
    evaluation), whose cross-kernel solves on the panels take the anchored sweeps and the node angle tables, and
    whose later self-kernels the fixed-diagonal steps (:meth:`KinkedSolverMixin._self_solve`)."""
    return (dual.method == "closed" and getattr(dual, "points", 1) > 1) or dual.method == "asymptotic"


@functools.lru_cache(maxsize=32)
def smooth_at_parallel(dual) -> bool:
    r"""Whether $\dot C$ of ``dual`` is Lipschitz at $\rho=1$ (measured at $q_1=q_2=1$: its drop over $1-\rho=10^{-4}$
    against $10^{-6}$, about 100 for a smooth $\dot C$, 10 for a $\sqrt{1-\rho}$ term).  A $\phi'$ that jumps (elu with
    $\alpha\ne1$) gives $\dot C\approx\dot C(1)-\kappa\sqrt{1-\rho}$: the backward kernel of a near-parallel pair
    then resolves $1-\rho$ down to rounding, where a table's absolute error of 1e-13 in $C$ (about $10^{-13}$ in
    $\rho$) moves $\dot C$ by $\sim\kappa\sqrt{10^{-13}}$ (measured: elu(0.5), $\sigma_wT=8$, 2e-8 in the NTK at
    $\theta_0<10^{-7}$).  Such duals take node tables in band 0 only."""
    one = np.ones(3)
    _, Cd = _dual_np(dual, one, one, np.array([1.0, 1.0 - 1e-4, 1.0 - 1e-6]), True)
    return bool(abs(Cd[0] - Cd[1]) > 30.0 * abs(Cd[0] - Cd[2]))


def _exact_pairs(dual, q1, q2, c):
    """$(C,\\dot C)$ of ``dual`` (numpy) on flat arrays."""
    return _dual_np(dual, q1, q2, c, True)


def band_edges(band: int, sigma_w_T: float, floor: float | None = None) -> tuple:
    r"""The extreme input angles of a band of :func:`~kernelcalc.kernels.ode_kinked_ladder.band_of` (its edges
    $2\theta_0/(1+\sigma_wT)$ = 0.1 and 0.01, or ``floor`` for 0.1 where band 0's edge is lowered; band 0 up to $\pi$,
    band 2 down to 0), capped at $\pi$."""
    s = (1.0 + sigma_w_T) / 2.0
    edge = 0.1 * s if floor is None else floor
    edges = ((edge, math.pi), (0.01 * s, edge), (0.0, 0.01 * s))[band]
    return tuple(min(e, math.pi) for e in edges)


# -- long horizons: the composite panels of kernels/_panels.py (one dispatch per grid operation) ----------
def _panels_of(T: float, sigma_w: float) -> int:
    """Panels of the time grid: 1 (one collapsed-triangle element) up to sigma_w T = 3, else
    :func:`._panel_grid.panel_count`."""
    return 1 if sigma_w * T <= _SINGLE_ELEMENT + 1e-9 else panel_count(T, sigma_w)


def _solve(grid, C_of, S0, source, q=None):
    if isinstance(grid, PanelGrid):
        return pan.solve(grid, C_of, S0, source, q=q)
    return tri.solve(grid, C_of, S0, source, q=q)


def _backward(grid, Cdot, LamT, source):
    if isinstance(grid, PanelGrid):
        return pan.backward(grid, Cdot.reshape(Cdot.shape[0], -1), LamT, source)
    return tri.backward(grid, Cdot.reshape(Cdot.shape[0], grid.m + 1, grid.n + 1), LamT, source)


def _point_variances(grid, q):
    """``(q1, q2)`` (B, points): the variances $q(t)$, $q(s)$ at every node of ``grid`` from its diagonal ``q``."""
    if isinstance(grid, PanelGrid):
        return grid.variances(q)
    return np.repeat(q, grid.n + 1, axis=1), q @ grid.Q.T


def _terminal(grid) -> int:
    """Flat index of the node (T, T)."""
    return grid.terminal if isinstance(grid, PanelGrid) else grid.m * (grid.n + 1)


def _resample(q, grid0, grid):
    """The diagonal ``q`` on ``grid0``'s nodes -> on ``grid``'s (interpolation: q(t) is analytic)."""
    if isinstance(grid0, PanelGrid):
        return grid0.resample(q, grid)
    return q @ barycentric_weights(grid0.r, grid.r).T
