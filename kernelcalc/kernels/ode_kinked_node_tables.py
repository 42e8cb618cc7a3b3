r"""The node angle tables of the kinked Neural-ODE solver on the panels (:mod:`kernelcalc.kernels.ode_kinked`): when
a dear closed form (elu) or the large-$q$ rule (softplus, silu) is tabulated per time node in the input angle
(:class:`._node_tables.NodeAngleTable`), built from two bracketing solves at a band's extreme angles, and the
cross-kernel problems solved on such a table (Clenshaw sums in place of exact evaluations, each first iterate from the
solves already made on it).  The grid, the solves and the duals' evaluation are
:class:`.ode_kinked_panels.KinkedPanelsMixin`'s."""

from __future__ import annotations

import functools

import numpy as np

from . import _panels as pan
from ._anchored import AnchoredDual
from ._node_tables import _R0, NodeAngleTable, angle_of
from ._panel_grid import PanelGrid
from .ode_kinked_cost import _NT_BUILD_COST
from .ode_kinked_panels import _dear, _exact_pairs, _kink, _point_variances, band_edges, smooth_at_parallel

_NT_TOL = 1e-12            # node angle tables (_node_tables) of a dear closed form: relative accuracy
#: exact (C, Cdot) per node that one cross solve of a dear closed form costs without a node angle table (anchored
#: sweeps, measured 3.9-4.0 for elu at sigma_w T = 10, plus the residual check and the final C, Cdot)
_NT_DIRECT_COST = 6.0
#: first angle degree of the large-q rule's node tables (doubled where a node needs it: 6, 12, 24, 48; measured softplus
#: sigma_w T = 10: 7.7e5 exact evaluations for the three tables against 8.9e5 from 12, the same held-out error)
_NT_R0_RULE = 6
_NT_BRACKET_TOL = 1e-9     # Picard tolerance of the bracketing solves (their angles are padded by _node_tables._PAD)
#: solves of other input angles on a node angle table interpolated for the first iterate of a new one (_neighbour_guess)
_GUESS_POINTS = 6
#: ... each at least this far from the others in theta_0 (the pieces of the sphere table meet 1e-12 apart at a seam,
#: :mod:`._theta_pieces`, and band 0's table serves both when its edge is lowered: two such nodes made the Lagrange
#: weights ~1e12, measured silu sigma_w T = 10, 10 sweeps per wavefront where 7-9)
_GUESS_SEPARATION = 1e-6


class KinkedNodeTablesMixin:
    """The node angle tables of :class:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin` (module doc); the solver
    supplies ``_solution``, ``_guess``, ``_fwd``, ``_C`` (:class:`.ode_kinked_panels.KinkedPanelsMixin`) and the state
    ``info``, ``_nt_state``, ``_nt_solved``, ``_table_error``, ``sigma_w``, ``T``."""

    def _angle_table(self, dual, grid, q, band: int, problems: int):
        r"""The :class:`._node_tables.NodeAngleTable` of a dear closed form (``dual.points`` > 1: elu) on the panels
        ``grid`` for ``problems`` cross-kernel problems of band ``band`` sharing the diagonal ``q`` (rows), or
        ``None``: direct (anchored) solves, while they are cheaper (and always in bands 1 and 2 of a dual whose
        $\dot C$ is not Lipschitz at $\rho=1$, :func:`smooth_at_parallel`).  The table is built once the problems asked of
        this grid and diagonal, this batch included, and as many again (the Gram's sphere table doubles its angles
        until it converges: a grid asked $k$ problems is asked at least $k$ more) would cost more direct evaluations
        than the table (``_NT_BUILD_COST`` against ``_NT_DIRECT_COST`` per node and problem).  The large-$q$ rule
        (softplus, silu) builds it at the first problem: its direct solves cost about 9 exact evaluations per node and
        problem with their residual re-solves (measured at $\sigma_wT=10$), and the Gram asks every band of a grid
        tens of problems (the sphere table's angles).  Its angle range per
        node comes from two solves at the band's extreme input angles (:func:`band_edges`)."""
        if not (isinstance(grid, PanelGrid) and _dear(dual) and np.all(q == q[:1])) or (
                band > 0 and not smooth_at_parallel(dual)):
            return None
        key = (grid.name, band, q[0].tobytes())
        state = self._nt_state.setdefault(key, dict(problems=0, table=None))
        state["problems"] += problems
        if state["table"] is None and (dual.method == "asymptotic" or
                                       2 * state["problems"] * _NT_DIRECT_COST >= _NT_BUILD_COST):
            lo, hi = band_edges(band, self.sigma_w * self.T, self.band_floor)
            S0 = q[0, 0] * np.cos(np.array([lo, hi]))         # S(0, 0) = q(0) cos(theta_0)
            exact = functools.partial(_exact_pairs, dual)
            bracket = AnchoredDual(exact, kink=_kink(dual))
            # the band's edges solved on this grid already (the degree ladder's probes, at full accuracy) are reused;
            # the others start from such a solve on another grid (the range only needs to hold the Gram's solves: a
            # solve that leaves it is solved again exactly, _angle_table_pairs)
            kept = [self._solution(grid, s0, float(q[0, -1]), exact=True) for s0 in S0.tolist()]
            todo = [i for i, k in enumerate(kept) if k is None]
            S = np.empty((2, grid.points))
            for i, k in enumerate(kept):
                if k is not None:
                    S[i] = k[1]
            if todo:
                guess = self._guess(grid, S0[todo], np.repeat(q[:1], len(todo), axis=0))
                S[todo], _, _, _ = pan.solve(grid, bracket, S0[todo], self._fwd, q=np.repeat(q[:1], len(todo), axis=0),
                                             sweeps_tol=_NT_BRACKET_TOL, stagnation=_NT_BRACKET_TOL, guess=guess)
            q1, q2 = (a[0] for a in _point_variances(grid, q[:1]))
            n = np.sqrt(q1 * q2)
            th = angle_of(n, S)
            nt = state["table"] = NodeAngleTable(exact, q1, q2, th[0], th[1], _NT_TOL,
                                                 r0=_NT_R0_RULE if dual.method == "asymptotic" else _R0)
            self._table_error = max(self._table_error, nt.error)
            rec_ = self._node_table_info()
            rec_.update(tables=rec_["tables"] + 1, evaluations=rec_["evaluations"] + nt.evaluations + bracket.exact_points,
                        degree=max(rec_["degree"], nt.R), error=max(rec_["error"], nt.error))
        if state["table"] is None:
            rec_ = self._node_table_info()
            rec_["direct_problems"] += problems
        return state["table"]

    def _node_table_info(self) -> dict:
        """``info["node_tables"]``: what the node angle tables cost and served, and the rule that chose them."""
        return self.info.setdefault("node_tables", dict(
            tables=0, evaluations=0, degree=0, error=0.0, problems=0, direct_problems=0, resolved=0, extrapolated=0,
            direct=0, choice=f"a table per time grid and band once (problems asked + as many again) x "
                             f"{_NT_DIRECT_COST:g} exact evaluations per node >= {_NT_BUILD_COST:g} (its build); "
                             f"before, direct anchored solves (direct_problems)"))

    def _angle_table_pairs(self, nt, dual, grid, q, S0):
        r"""$(C,\dot C)$ on the panels of B cross-kernel problems through the node angle table ``nt``; a problem
        whose converged values leave the table's ranges is solved again directly.  Returns ``(C, Cdot, change,
        sweeps)`` (node arrays ``(B, points)``)."""
        B = S0.shape[0]
        idx = np.broadcast_to(np.arange(grid.points), (B, grid.points))
        solved = self._nt_solved.setdefault(id(nt), (nt, [], []))      # (the table, angles, solves) on it so far
        theta0 = angle_of(q[:, 0], S0)
        guess = _neighbour_guess(solved[1], solved[2], theta0)
        S, _, dS, nS = pan.solve(grid, lambda a, b, c, x: nt(c, x[0], 0), S0, self._fwd, q=q, aux=(idx,), guess=guess)
        bad = ~nt.inside(S, idx)
        if np.any(bad):      # (not the table's fixed point: a non-monotone phi, or a bracket missed)
            S[bad], _, d2, n2 = pan.solve(grid, self._C(dual), S0[bad], self._fwd, q=q[bad])
            dS, nS = max(dS, d2), max(nS, n2)
        C, Cdot = nt.pair(S, idx, final=True)
        solved[1].extend(theta0[~bad].tolist())
        solved[2].extend(S[~bad])
        rec_ = self._node_table_info()
        rec_.update(problems=rec_["problems"] + B, resolved=rec_["resolved"] + int(np.sum(bad)),
                    extrapolated=rec_["extrapolated"] + nt.extrapolated, direct=rec_["direct"] + nt.direct)
        nt.extrapolated = nt.direct = 0
        return C, Cdot, dS, nS


def _neighbour_guess(angles, solves, theta0):
    r"""``(B, points)``: first iterates of the cross-kernel solves of input angles ``theta0`` on a node angle table
    from the solves of other angles on it (``angles``, ``solves``: lists), each the Lagrange interpolant in $\theta_0$
    through the ``_GUESS_POINTS`` nearest (the sphere table's later samples lie between its earlier ones: measured
    softplus $\sigma_wT=10$, 2-8 sweeps per wavefront where 10, 19 % fewer table calls), or ``None`` while fewer are
    known.  Only
    the start of the Picard sweeps: each solve still meets their tolerance from it."""
    if len(angles) < _GUESS_POINTS:
        return None
    known = np.asarray(angles)
    rows = []
    for th in np.asarray(theta0).tolist():
        near = []
        for i in np.argsort(np.abs(known - th), kind="stable").tolist():
            if all(abs(known[i] - known[j]) > _GUESS_SEPARATION for j in near):
                near.append(i)
                if len(near) == _GUESS_POINTS:
                    break
        if len(near) < _GUESS_POINTS:
            return None
        x = known[near]
        if max(x.min() - th, th - x.max()) > 0.5 * np.ptp(x):
            return None        # far outside their span (a new piece of the sphere table): no wild extrapolation
        w = np.array([np.prod([(th - x[j]) / (x[i] - x[j]) for j in range(x.size) if j != i]) for i in range(x.size)])
        rows.append(sum(wi * solves[i] for wi, i in zip(w, near)))
    return np.stack(rows)
