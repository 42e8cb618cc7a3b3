"""Band 0's edge lowered to the sphere Gram's smallest pair angle (``kernels/ode_kinked_ladder.band_floor``, issue 17:
softplus and silu at sigma_w T = 10, N = 200, whose pairs' smallest angle 0.458 lies just under band 0's edge 0.55).

References that share no code with what is tested:

- the relu kernel of a pair by the trapezoid-plus-Richardson Goursat march of ``tests/trapezoid_goursat.py`` (a uniform
  grid split at t = s, the arc-cosine closed forms written there): no panels, no bands, no degree ladder;
- the band arithmetic written out here from the bands' definition ($2\\theta_0/(1+\\sigma_wT)$ = 0.1 and 0.01).
"""

import math

import numpy as np
import pytest

from kernelcalc.kernels import ode_kinked as ok
from kernelcalc.kernels.ode_kinked_ladder import _FLOOR_MARGIN, band_floor, band_of
from kernelcalc.kernels.ode_kinked_panels import band_edges
from trapezoid_goursat import relu_kernel


def test_band_floor_only_just_under_the_edge_and_the_bands_follow_it():
    """sigma_w T = 10 (edge 0.55): a smallest angle in [_FLOOR_MARGIN x 0.55, 0.55) lowers band 0's edge to just under
    it; at or past the edge, or further below, the edge stays; the bands and their edges follow the floor."""
    edge = 0.1 * (1.0 + 10.0) / 2.0
    assert band_floor(0.6, 10.0) is None and band_floor(edge, 10.0) is None
    assert band_floor(0.99 * _FLOOR_MARGIN * edge, 10.0) is None and band_floor(math.nan, 10.0) is None
    fl = band_floor(0.458, 10.0)
    assert 0.458 * (1 - 2e-9) < fl < 0.458
    th = np.array([0.0, 0.02, 0.054, 0.056, 0.457, 0.458, 0.5, 0.56, 3.0])
    assert band_of(th, 10.0).tolist() == [0, 2, 2, 1, 1, 1, 1, 0, 0]
    assert band_of(th, 10.0, fl).tolist() == [0, 2, 2, 1, 1, 0, 0, 0, 0]
    assert band_edges(0, 10.0, fl) == (fl, math.pi) and band_edges(1, 10.0, fl) == (0.01 * 5.5, fl)
    assert band_edges(0, 10.0) == (edge, math.pi)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_band_0_serves_an_angle_under_its_edge_probed_by_its_ladder(monkeypatch):
    """relu, sigma_w = 2, T = 2 (4 panels, band 0's edge 0.25), tol = 1e-12, a pair at theta_0 = 0.2 with band 0's
    edge lowered to it: band 1 is not made, band 0's ladder probes the floor at every rung (its degree climbs to meet
    tol there: measured 16, where the default probes stop at 12), and the kernel agrees with the
    trapezoid-plus-Richardson reference (n = 24..192, its last change 1.6e-11 relative) within its error estimate plus
    the reference's (measured 1.7e-12).  About 1 s."""
    from kernelcalc.kernels import ode_solver
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    monkeypatch.setattr(ode_solver, "_TIME_GRIDS", {})
    probed = []
    inner = ok.KinkedSolverMixin._pairs

    def spy(self, dual, M, q, S0, theta0, degrees=None, gap=None, anti=None):
        if degrees is not None:
            probed.append((dict(degrees), np.array(theta0)))
        return inner(self, dual, M, q, S0, theta0, degrees, gap, anti)

    monkeypatch.setattr(ok.KinkedSolverMixin, "_pairs", spy)
    th = 0.2
    solver = KinkedGoursatSolver("relu", T=2.0, sigma_w=2.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0, tol=1e-12)
    solver.band_floor = band_floor(th, 4.0)
    assert solver.band_floor is not None and solver.band_floor < th
    nngp, ntk = solver.at_angles(np.ones(1), np.ones(1), np.array([th]))
    assert list(solver.info["band_degrees"]) == [0]
    rungs = [th0 for deg, th0 in probed if 0 in deg and th0.size > 1]
    assert rungs and all(np.any(r == solver.band_floor) for r in rungs)
    assert not any(1 in deg for deg, _ in probed)
    R = np.array([relu_kernel(n, 2.0, 2.0, th) for n in (24, 48, 96, 192)])
    for j in range(1, 4):
        prev, R = R, (4**j * R[1:] - R[:-1]) / (4**j - 1)
    ref, ref_err = R[-1], np.abs(R[-1] - prev[-1])
    est = solver.relative_error_estimate() * max(abs(ref[1]), abs(ref[0]))
    for got, r, e in zip((nngp[0], ntk[0]), ref, ref_err):
        assert abs(got - r) <= 1e-10 * abs(r), (got, r)
        assert abs(got - r) <= est + 2 * e, (got - r, est, e)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_band_0_angles_take_the_rung_where_their_probes_left(monkeypatch):
    """The large-q rule's ladder (``_PANEL_LADDERS_RULE``: the angles from degree 8, the identical pair from 12), here
    climbed by gelu (sigma_w T = 10, whose identical pair sets band 0's degree 20): the probes at theta_0 != 0 leave at
    degree 12, and the Gram's solve of a pair at theta_0 = 1 takes that rung (``info["band0_angle_degree"]``); it
    agrees with the same pair solved on band 0's grid (degree 20) within the band's change (its error estimate) and
    1e-11.  (The independent references of this path: the slow softplus tests of tests/test_long_horizon_softplus.py,
    trapezoid-plus-Richardson at sigma_w T = 6 and direct solves at 10.)"""
    from kernelcalc.kernels import ode_kinked_ladder, ode_solver
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    monkeypatch.setattr(ode_solver, "_TIME_GRIDS", {})
    monkeypatch.setattr(ode_kinked_ladder, "_PANEL_LADDERS", ode_kinked_ladder._PANEL_LADDERS_RULE)
    grids = []
    inner = ok.KinkedSolverMixin._angle_degree

    def spy(self, M0):
        grids.append(inner(self, M0))
        return grids[-1]

    monkeypatch.setattr(ok.KinkedSolverMixin, "_angle_degree", spy)
    out = []
    for full in (False, True):
        solver = KinkedGoursatSolver("gelu", T=10.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
        out.append(np.array(solver.at_angles(np.ones(1), np.ones(1), np.array([1.0])))[:, 0])
        M0, Ma = solver.info["band_degrees"][0], solver.info["band0_angle_degree"]
        assert Ma == 12 < M0 == 20 and grids[-1] == Ma, (Ma, M0, grids)
        monkeypatch.setattr(ok.KinkedSolverMixin, "_angle_degree", lambda self, M0: M0)
        monkeypatch.setattr(ode_solver, "_TIME_GRIDS", {})
    scale = np.max(np.abs(out[1]))
    diff = np.max(np.abs(out[0] - out[1]))
    assert diff <= min(solver.info["band_changes"][0] * scale, 1e-11 * scale), (diff / scale, solver.info["band_changes"])
