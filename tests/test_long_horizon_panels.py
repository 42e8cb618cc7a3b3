"""Kinked activations at long horizons: the composite collapsed-triangle panels (``kernels/_panels.py``) of the
relu Neural ODE kernel against an independent solve written here.

Reference (:func:`_reference`): the Goursat problems marched row by row on a uniform (n+1)^2 grid with the
product trapezoid rule (each row iterated to its fixed point: the row's own diagonal q(t_{i+1}) and the cell
(i, i+1) = (i+1, i) couple back into it), the arc-cosine closed forms of Cho & Saul written here
(C = sqrt(q1 q2)/(2 pi) (sin th + (pi - th) cos th), Cdot = (pi - th)/(2 pi)), and three Richardson steps in
h = T/n: the trapezoid error expands in h^2, h^4, h^6 even across the kink, because the grid's cells are split
exactly at t = s (measured at sigma_w T = 10, n = 64..1024: the differences fall by 4.0x per halving, the
Richardson columns agree to 1e-10 and 1e-12).  Nothing is shared with kernelcalc's panels, triangles, sphere
tables or dual kernels.

Convergence order of the panels (measured, sigma_w T = 10, relu, 10 panels of sigma_w h = 1, per-cell degree m;
relative NTK error against this reference at theta_0 = 1 / theta_0 = 0): m = 8: 2e-11 / 4e-13, m = 10: 3e-14 /
2e-14, m >= 12: rounding (1e-14): geometric in m, as the analytic data on every cell predict.
"""

import math

import numpy as np
import pytest

import kernelcalc as kc
from _refusal_check import assert_refusal_multiplies_out
from trapezoid_goursat import goursat_kernel, relu_dual


def _reference(T, sw, theta0, levels, dual=relu_dual):
    """Three Richardson steps (h^2, h^4, h^6) over the four ``levels`` n = n0, 2 n0, 4 n0, 8 n0 of the trapezoid
    march with the closed form ``dual`` (relu's; tests/test_long_horizon_elu.py and test_node_tables.py pass elu's)."""
    R = np.array([goursat_kernel(dual, n, T, sw, theta0) for n in levels])
    for k in range(1, 4):
        R = (4**k * R[1:] - R[:-1]) / (4**k - 1)
    return R[-1]


def _pair(theta0):
    return np.array([[1.0, 0.0], [math.cos(theta0), math.sin(theta0)]]) * math.sqrt(2.0)


def _check(T, sw, theta0, levels, bound):
    ref = _reference(T, sw, theta0, levels)
    k = kc.node_kernel(_pair(theta0), activation="relu", T=T, sigma_w=sw)
    assert "panels" in k.info["time_scheme"]
    got = np.array([k.nngp[0, 1], k.ntk[0, 1]])
    err = np.abs(got - ref) / np.abs(ref)
    assert np.all(err <= bound), (got, ref, err)
    # the error estimate (absolute, largest entry) bounds the measured error, with the reference's own error
    assert np.max(np.abs(got - ref)) <= k.info["error_estimate"] + bound * np.max(np.abs(ref)), (k.info["error_estimate"], got - ref)
    return err


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_relu_panels_sigma_w_T_4_against_trapezoid_richardson():
    """Cheap default twin of the sigma_w T = 10 test: sigma_w = 2, T = 2 (4 panels), theta_0 = 1; the reference
    at n = 16..128 with three Richardson steps is good to ~2e-12 there (measured against n = 32..256)."""
    _check(2.0, 2.0, 1.0, (16, 32, 64, 128), 1e-10)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("theta0", [0.0, 1.0])
def test_relu_panels_sigma_w_T_10_against_trapezoid_richardson(theta0):
    """sigma_w T = 10 (T = 10, 10 panels): NNGP and NTK within 1e-9 (relative) of the reference at
    n = 128..1024 (its Richardson columns agree to ~1e-12 there)."""
    _check(10.0, 1.0, theta0, (128, 256, 512, 1024), 1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_panel_degree_converges_geometrically():
    """The per-cell degree m of the panels (time_nodes fixes it): the NTK change between successive degrees
    falls geometrically (sigma_w T = 4, 4 panels, theta_0 = 1): each step of 2 in m gains > 10x."""
    x = _pair(1.0)
    vals = [kc.node_kernel(x, activation="relu", T=4.0, time_nodes=m).ntk[0, 1] for m in (4, 6, 8)]
    d = np.abs(np.diff(vals)) / abs(vals[-1])
    assert d[0] > 10 * d[1], d
    assert d[1] < 1e-8, d


def test_panel_cost_refusal_multiplies_out_and_names_its_drivers():
    """The cost guard of the panels (a quadrature rule with an absurd number of points per expectation): one
    clear error whose printed factors multiply to the quoted number, naming the panels and every driver."""
    import types

    from kernelcalc.kernels.ode import KinkedGoursatSolver

    solver = KinkedGoursatSolver("relu", T=10.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    dual = types.SimpleNamespace(method="polar", points=10**6)
    with pytest.raises(kc.KernelcalcInputError) as err:
        solver._check_cost(dual, 200, solver._nodes(12))
    assert_refusal_multiplies_out(str(err.value), "10 panels")
    # the same solver prices a closed form far below the limit (relu at sigma_w T = 10 computes)
    solver._check_cost(types.SimpleNamespace(method="closed", points=1), 65, solver._nodes(12))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_elu_sigma_w_T_10_n200_computes_within_its_error_estimate():
    """elu at sigma_w T = 10, N = 200 on the sphere (the issue's long-horizon case; ~10 min on the loaded 2-core
    machine): computes without refusal, error estimate <= 1e-9 of max|NTK|, and three of its entries agree with
    per-pair solves on a finer fixed time grid (per-cell degree 32) within that estimate."""
    from kernelcalc.data import sphere_normalise

    X = sphere_normalise(np.random.default_rng(0).normal(size=(200, 10)))
    k = kc.node_kernel(X, activation="elu", T=10.0)
    scale = np.max(np.abs(k.ntk))
    assert k.info["error_estimate"] <= 1e-9 * scale
    fine = kc.node_kernel(X[[0, 1, 7]], activation="elu", T=10.0, time_nodes=32)
    got = k.ntk[np.ix_([0, 1, 7], [0, 1, 7])]
    assert np.max(np.abs(got - fine.ntk)) <= k.info["error_estimate"] + 1e-12 * scale
