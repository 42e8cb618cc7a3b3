r"""Picard sweeps with a dear closed-form dual: exact $(C,\dot C)$ at a few anchors, Price's linear model between.

Inside one Picard solve of the Goursat problem (:mod:`._panels`, :mod:`._triangle`) with fixed diagonals (the
cross-kernels), the dual $C(q_1,q_2,c)$ at each node changes only through $c$, and by Price's theorem
$\partial C/\partial c=\dot C$.  :class:`AnchoredDual` evaluates the closed form exactly ($C$ and $\dot C$ together,
at the price of one evaluation) at an anchor $c_a$ and answers the following sweeps with
$C(c_a)+\dot C(c_a)(c-c_a)$ (a few array operations) until the iterate settles (its relative step falls below
``settle`` times the square of its relative distance from the anchor: the linear model's own error, so further
linear sweeps would not improve it), unless it is within ``near`` of the anchor (the model is then exact to
rounding), or strays from it (``stray``, off by default); then it re-anchors at the current iterate.  Measured
(elu, sigma_w T = 10, a row of cells): 4-6 exact evaluations per site against 12-22 calls, where plain Picard
needs 42 sweeps.  This is the chord
form of Newton's method on the dual: each anchor roughly squares the linearisation error, so a solve costs a
handful of exact evaluations instead of one per sweep (20-40 at $\sigma_wT=10$).

The last sweep may have used the linear model, so :meth:`AnchoredDual.residual` evaluates the closed form exactly
where each call site last asked and returns the largest difference from what was answered, relative to the largest
$|C|$: the solver's fixed point is that of the exact $C$ to within (a small multiple of) it.  The caller re-solves
with the exact dual when it exceeds its tolerance (:data:`RESIDUAL_TOL`).  A caller that evaluates $C$ exactly at the
converged solution anyway (the cross-kernels of :meth:`~kernelcalc.kernels.ode_kinked.KinkedSolverMixin._pairs`,
whose $C,\dot C$ feed the backward solve) hands the solver the node indices (``aux``) and asks
:meth:`AnchoredDual.residual_at` instead: the same test at the solution $S$ (not at the last sweep's input, which
differs from $S$ by the last sweep's change), with no evaluation of its own.  Started from a guess within ``near``
of the solution (the same problem solved on a coarser grid, :meth:`._panel_grid.PanelGrid.resample_nodes`), a solve then
costs one exact evaluation per node for the anchor and the final one, where it took about four and the final one.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["AnchoredDual", "RESIDUAL_TOL"]

RESIDUAL_TOL = 1e-14     # largest accepted residual of the linear model at the last sweep (relative to max |C|)


class AnchoredDual:
    r"""``C_of(q1, q2, c)`` for one Picard solve (module doc).  ``exact(q1, q2, c)`` returns $(C,\dot C)$.  Call
    sites (a row of tensor cells, a diagonal cell) are told apart by the shape of ``c`` and the variances at its
    corners; a site whose variances differ from its anchor's (the self-kernel's own diagonal) is evaluated
    exactly.  ``exact_points`` / ``linear_points``: the node evaluations of each kind (diagnostics).  ``kink`` > 0:
    nodes whose correlation at the anchor is above $1-$``kink`` are always evaluated exactly (a dual that is not
    smooth at $\rho=1$, elu's $(1-\rho)^{3/2}$ terms: there the linear model's error is not quadratic in the step,
    and its residual stayed at 8e-12)."""

    #: a wavefront of the panels asks its tensor cells and its diagonal cell in one call (``_panels._solve_wavefront``):
    #: the exact evaluations of a sweep (anchors, nodes next to rho = 1) come in one batch, not two
    joint_calls = True

    def __init__(self, exact, settle: float = 1.0, stray: float = math.inf, near: float = 1e-9, kink: float = 0.0):
        self.exact, self.settle, self.stray, self.near, self.kink = exact, settle, stray, near, kink
        self.sites: dict = {}
        self.exact_points = self.linear_points = 0
        self.anchors = 0        # anchorings so far (a solver's sweep that anchored is not a stagnation)

    def _key(self, q1, q2, c):
        f1, f2 = q1.reshape(-1), q2.reshape(-1)
        return c.shape, float(f1[0]), float(f1[-1]), float(f2[0]), float(f2[-1])

    def __call__(self, q1, q2, c, aux=None):
        """``C`` at ``(q1, q2, c)``; ``aux``: the solver's node arrays cut like ``c``, of which the first holds the flat
        node indices of ``c`` (kept for :meth:`residual_at`)."""
        key = self._key(q1, q2, c)
        site = self.sites.get(key)
        scale = max(float(np.max(np.abs(c))), 1e-300)
        if site is not None and site["linear_ok"] and np.array_equal(site["q1"], q1) and np.array_equal(site["q2"], q2):
            step = float(np.max(np.abs(c - site["last"]))) / scale
            far = float(np.max(np.abs(c - site["c"]))) / scale
            site["last"] = np.array(c, copy=True)
            # linear while the iterate moves by more than the model's own error (~ far^2), or has settled close to
            # the anchor (the model then exact to ~ C'' (far c)^2); re-anchor when it settles or strays
            if far <= self.stray and (step > max(self.settle * far * far, 1e-13) or far <= self.near or site["fresh"]):
                site["fresh"] = False
                self.linear_points += c.size
                out = site["C"] + site["Cd"] * (c - site["c"])
                near = site["near"]
                if near is not None:    # next to rho = 1: exact (no linear model there)
                    out[near] = self.exact(q1[near], q2[near], c[near])[0]
                    self.exact_points += int(near[0].size)
                site["answered"] = out
                return out
        C, Cd = self.exact(q1, q2, c)
        self.exact_points += c.size
        self.anchors += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            near = np.nonzero(c >= (1.0 - self.kink) * np.sqrt(q1 * q2)) if self.kink > 0 else (np.zeros(0, int),)
        self.sites[key] = dict(c=np.array(c, copy=True), C=C, Cd=Cd, near=near if near[0].size else None,
                               q1=np.array(q1, copy=True), q2=np.array(q2, copy=True), last=np.array(c, copy=True), answered=None,
                               fresh=True, linear_ok=site is None or site["linear_ok"],
                               idx=None if aux is None else np.array(aux[0], copy=True))
        return C

    def residual(self) -> float:
        """Largest $|C_{\\rm exact}-C_{\\rm answered}|$ at the last call of every site whose last answer was linear,
        relative to the largest $|C|$ (0 when every last answer was exact)."""
        worst, scale = 0.0, 1e-300
        for site in self.sites.values():
            scale = max(scale, float(np.max(np.abs(site["C"]))))
            if site["answered"] is None:
                continue
            C, _ = self.exact(site["q1"], site["q2"], site["last"])
            self.exact_points += C.size
            worst = max(worst, float(np.max(np.abs(C - site["answered"]))))
        return worst / scale

    def residual_at(self, S, C) -> float:
        r""":meth:`residual` at the converged solution: ``S`` ``(B, points)`` and ``C`` the exact $C$ there (the
        caller's final evaluation), against each site's linear model $C(c_a)+\dot C(c_a)(S-c_a)$ at its nodes (the
        sites must have been called with ``aux``; the nodes next to $\rho=1$, answered exactly, are left out).  The
        model's fixed point is $S$ to within the last sweep's change, so $S$ is the fixed point of the exact $C$ to
        within (a small multiple of) the returned value.  No exact evaluation."""
        worst, scale = 0.0, 1e-300
        S, C = np.asarray(S), np.asarray(C)
        B = S.shape[0]
        for site in self.sites.values():
            scale = max(scale, float(np.max(np.abs(site["C"]))))
            idx = site["idx"]
            if idx is None:
                raise ValueError("residual_at: the solver did not pass the node indices (aux)")
            flat = idx.reshape(B, -1)
            at = lambda a: np.take_along_axis(a.reshape(B, -1), flat, axis=1).reshape(idx.shape)  # noqa: E731
            diff = np.abs(at(C) - (site["C"] + site["Cd"] * (at(S) - site["c"])))
            if site["near"] is not None:
                diff[site["near"]] = 0.0
            worst = max(worst, float(np.max(diff)))
        return worst / scale
