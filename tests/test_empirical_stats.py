"""Monte Carlo, compare, depth gap and gradient modes: real numbers against independent values.

Fast tests use the one-hidden-layer relu MLP, whose expected NNGP and NTK at ANY width are the
arc-cosine formulas (computed here independently), and small Neural ODEs.  The acceptance
runs against :func:`kernelcalc.node_kernel` are marked slow.
"""

import math

import numpy as np
import pytest

import kernelcalc
from kernelcalc import Kernel, compare, depth_gap, monte_carlo
from kernelcalc.empirical import gradient_mode_gap


def sphere(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x * math.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


def arccos_relu_mlp1(X, sigma_w, sigma_v):
    """Exact E[f f] and E[Θ] of Dense(n, sigma_w) -> relu -> Dense(1, sigma_v), no biases, ||x||^2 = d."""
    d = X.shape[1]
    q = sigma_w**2 * np.sum(X**2, axis=1) / d
    K1 = sigma_w**2 * X @ X.T / d
    norm = np.sqrt(np.outer(q, q))
    theta = np.arccos(np.clip(K1 / norm, -1, 1))
    C = norm / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    Cdot = (np.pi - theta) / (2 * np.pi)
    nngp = sigma_v**2 * C
    return Kernel(nngp=nngp, ntk=nngp + sigma_v**2 * Cdot * K1, model="mlp", activation="relu")


X = sphere(4, 3, 7)


def test_monte_carlo_mlp_matches_arccosine_within_error_bars():
    ref = arccos_relu_mlp1(X, 1.3, 0.9)
    mc = monte_carlo(X, model="mlp", activation="relu", width=256, depth=1, sigma_w=1.3, sigma_v=0.9,
                     n_samples=60, seed=1, progress=False)
    for name in ("nngp", "ntk"):
        z = (getattr(mc, name) - getattr(ref, name)) / getattr(mc.stderr, name)
        assert np.abs(z).max() < 4.0, (name, z)
    assert mc.stderr.ntk.max() < 0.1 * np.abs(ref.ntk).max()
    assert mc.model == "montecarlo:mlp" and mc.params["n_samples"] == 60


def test_compare_width_slope_and_table_mlp():
    ref = arccos_relu_mlp1(X, 1.0, 1.0)
    res = compare(X, activation="relu", model="mlp", depth=1, widths=[64, 256, 1024], n_samples=12,
                  analytic=ref, progress=False)
    assert -0.7 <= res.slope <= -0.3
    assert len(res.rows) == 3 * 2 * 10
    assert "slope" in res.table()
    d = res.to_dict()
    assert d["slope"] == res.slope and len(d["empirical"]) == 3
    assert max(res.max_abs_z["ntk"].values()) < 4.5


@pytest.mark.slow   # 10-13 s; the default run keeps test_empirical_ntk's ResNet -> ODE limit and test_kernels' 1/L rates
def test_depth_gap_softplus_slopes_close_to_minus_one():
    r = depth_gap(X, activation="softplus", width=32, depths=[8, 16, 32, 64], progress=False)
    for key in ("output", "gradient", "kernel"):
        assert abs(r.slopes[key] + 1.0) < 0.2, r.slopes
    assert all(np.diff(r.output_gap) < 0)
    assert "slope" in r.table()


@pytest.mark.slow   # 10-13 s; the default run keeps the adjoint-against-Jacobian check of tests/test_empirical_ntk.py
def test_gradient_modes_agree_for_smooth_activation():
    r = gradient_mode_gap(X, activation="tanh", width=16, tolerances=[1e-10], progress=False)
    assert r.gradient_gap[0] < 1e-7 and r.kernel_gap[0] < 1e-7


def test_monte_carlo_and_depth_gap_validation():
    with pytest.raises(kernelcalc.KernelcalcInputError, match="n_samples"):
        monte_carlo(X, activation="tanh", width=8, n_samples=0, progress=False)
    with pytest.raises(kernelcalc.KernelcalcInputError, match="widths"):
        compare(X, activation="tanh", widths=[8, 0], progress=False, analytic=arccos_relu_mlp1(X, 1, 1))
    with pytest.raises(kernelcalc.KernelcalcInputError, match="depths"):
        depth_gap(X, activation="tanh", width=8, depths=[4, 0], progress=False)
    with pytest.raises(kernelcalc.KernelcalcInputError, match="unknown argument"):
        monte_carlo(X, activation="tanh", width=8, n_samples=2, sigma=1.0, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["softplus", "tanh"])
def test_acceptance_node_monte_carlo_vs_node_kernel(activation):
    """Independent reference: kc.compare's Monte Carlo of finite-width Neural ODEs (z < 3 at width 1024, slope -1/2)."""
    Xs = sphere(6, 3, 11)
    res = compare(Xs, activation=activation, T=1.0, widths=[64, 256, 1024], n_samples=20, progress=False)
    assert res.max_abs_z["ntk"]["1024"] < 3.0 and res.max_abs_z["nngp"]["1024"] < 3.0
    assert -0.7 <= res.slope <= -0.3


@pytest.mark.slow
def test_acceptance_depth_gap_slopes():
    Xs = sphere(4, 3, 3)
    soft = depth_gap(Xs, activation="softplus", width=256, depths=[8, 16, 32, 64, 128, 256], progress=False)
    for key in ("output", "gradient", "kernel"):
        assert abs(soft.slopes[key] + 1.0) < 0.15, soft.slopes
    relu = depth_gap(Xs, activation="relu", width=256, depths=[2, 4, 8, 16, 32, 64, 128, 256], progress=False)
    assert relu.slopes["output"] < -0.7
    print("relu slopes", relu.slopes)


@pytest.mark.slow
def test_gradient_modes_smooth_vs_relu():
    soft = gradient_mode_gap(X, activation="softplus", width=64, tolerances=[1e-5, 1e-8, 1e-11], progress=False)
    relu = gradient_mode_gap(X, activation="relu", width=64, tolerances=[1e-5, 1e-8, 1e-11], progress=False)
    assert soft.gradient_gap[-1] < 1e-9 < relu.gradient_gap[-1]
