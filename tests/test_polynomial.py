"""Proposition 3: polynomial activations give finite-rank NTKs for finite depth; the Neural ODE limit does not."""

import math

import numpy as np
import pytest

from kernelcalc import KernelcalcInputError, node_kernel
from kernelcalc.studies.polynomial import (feature_degree, feature_rank_bound, harmonic_dimension, lambda_min_table,
                                   sphere_polynomial_dimension)


def sphere(N, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(N, d))
    return x * np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("D", [0, 1, 2, 3, 4, 7])
def test_sphere_polynomial_dimension_counts_monomials_modulo_the_sphere(D, d):
    # polynomials of degree <= D in d variables, modulo multiples of (|x|^2 - 1): C(D+d, d) - C(D-2+d, d)
    independent = math.comb(D + d, d) - (math.comb(D - 2 + d, d) if D >= 2 else 0)
    assert sphere_polynomial_dimension(D, d) == independent
    # homogeneous polynomials of degree D restrict to harmonics of degree D, D-2, ...: C(D+d-1, d-1)
    assert sphere_polynomial_dimension(D, d, parity=D % 2) == math.comb(D + d - 1, d - 1)


def test_harmonic_dimension_known_values():
    assert [harmonic_dimension(k, 3) for k in range(5)] == [1, 3, 5, 7, 9]
    assert [harmonic_dimension(k, 2) for k in range(4)] == [1, 2, 2, 2]


def test_feature_degrees():
    assert feature_degree("x**2", "mlp", 2) == (4, 0)
    assert feature_degree("x**2", "resnet", 1) == (4, None)
    assert feature_degree("x**3", "resnet", 1) == (9, 1)
    assert feature_degree("x**2", "node") == (None, None)
    assert feature_degree("x", "node") == (1, 1)
    assert feature_degree("softplus", "mlp", 1) == (None, None)
    assert feature_rank_bound("x", "resnet", 5, depth=3) == 5
    with pytest.raises(KernelcalcInputError, match="model"):
        feature_degree("x**2", "cnn", 1)


def test_quadratic_collapses_at_the_polynomial_dimension_softplus_does_not():
    X = sphere(30, 3)
    t = lambda_min_table(X, (4, 8, 16, 24, 30), models=(("mlp", 1), ("mlp", 2), ("resnet", 1), ("node", None)))
    rows = {(r["model"], r["depth"], r["activation"]): r for r in t.rows}
    # the measured numerical rank of the 30-point Gram equals the feature-space dimension on S^2
    for key, bound in ((("mlp", 1, "x**2"), 6), (("mlp", 2, "x**2"), 15), (("resnet", 1, "x**2"), 25)):
        r = rows[key]
        assert r["rank_bound"] == bound and r["rank"] == bound
        assert all(v < 1e-13 for n, v in zip(t.Ns, r["ratio"]) if n > bound)     # lambda_min collapses
        assert all(v > 1e-9 for n, v in zip(t.Ns, r["ratio"]) if n <= bound)
        assert r["collapse_N"] == min(n for n in t.Ns if n > bound)
    for model, depth in (("mlp", 1), ("mlp", 2), ("resnet", 1), ("node", None)):
        sp = rows[(model, depth, "softplus")]
        assert sp["rank_bound"] is None and sp["collapse_N"] is None and min(sp["ratio"]) > 1e-11
    # the Neural-ODE limit of the quadratic network is not a polynomial kernel: full rank, no collapse
    node = rows[("node", None, "x**2")]
    assert node["rank_bound"] is None and node["rank"] == 30 and min(node["ratio"]) > 1e-8
    assert "bound" in t.table()


def test_linear_node_kernel_has_rank_d():
    K = node_kernel(sphere(7, 3), activation="x", T=1.0).ntk
    ev = np.linalg.eigvalsh(K)
    assert feature_rank_bound("x", "node", 3) == 3
    assert np.sum(ev > 1e-10 * ev[-1]) == 3


def test_quadratic_node_blowup_is_an_error_not_nan():
    with pytest.raises(KernelcalcInputError, match="blows up"):
        node_kernel(sphere(3, 3), activation="x**2", T=1.0)
