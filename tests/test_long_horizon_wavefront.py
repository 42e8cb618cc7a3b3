"""Long horizons, sigma_w T up to 10: the pieces that make gelu, sin, cos and erf cheap there.

- The sphere's theta table stops doubling once its Chebyshev series is resolved (``_theta_sampling._resolved_tail``): checked
  on analytic test kernels whose interpolation error is measured here at 2000 points.
- Cross-kernels on the panels are marched by wavefronts of cells (``_panels._solve_wavefront``,
  ``_backward_wavefront``): the same fixed point as the row marching (``_panels._solve``, ``_backward``).
- gelu's C at fixed variances (``C_at_variances``) equals its C.
- Slow: N = 200 on the sphere at sigma_w T = 10 (sin: the graded theta table; gelu: the panels) against direct
  pair solves at the exact angles, with the error estimate covering the difference.
"""

import math

import numpy as np
import pytest

import kernelcalc as kc
from _sphere_direct import assert_table_meets_direct_solves
from kernelcalc.kernels import _interp, _theta_sampling
from kernelcalc.kernels import _panels as pan


def _fake_pair_fn(a):
    """A kernel of the correlation alone with Chebyshev coefficients decaying like ``a``^-j in theta (the poles of
    1/(cosh(s) - cos(theta)) at theta = +-i s, s = log a), and its theta derivative-like twin."""
    s = math.log(a)

    def pair_fn(vx, vy, c):
        th = np.arccos(np.clip(c / np.sqrt(vx * vy), -1, 1))
        return 1.0 / (math.cosh(s) - np.cos(th)), np.sinh(s) / (math.cosh(s) - np.cos(th)) ** 2
    return pair_fn


@pytest.mark.parametrize("a", [1.5, 1.25])
def test_theta_table_tail_stop_is_honest(a):
    """A resolved series stops at fewer nodes than the doubling would keep, and its error estimate covers the
    interpolation error measured at 2000 random angles (the table itself is a separate stage)."""
    fn = _fake_pair_fn(a)
    one = np.ones(1)
    F, R, err = _theta_sampling._theta_samples(fn, one, one, 1e-10, False, "test")
    assert err is not None and err <= 1e-10
    coef = _interp.chebyshev_coefficients(F)
    u = np.random.default_rng(1).uniform(-1, 1, 2000)
    th = 0.5 * np.pi * (u + 1)
    got = _interp.chebyshev_matrix(u, R) @ coef[:, 0, :]
    exact = np.stack(fn(np.ones(u.size), np.ones(u.size), np.cos(th)), -1)
    true = np.max(np.abs(got - exact) / np.max(np.abs(exact), axis=0))
    assert true <= err, (R, true, err)
    # the doubling alone would have kept 2R + 1 nodes: R is the smallest power of two whose series is resolved
    assert _theta_sampling._resolved_tail(F[::2], R // 2) is None or _theta_sampling._resolved_tail(F[::2], R // 2) > 1e-10


def test_resolved_tail_refuses_an_unresolved_series():
    """A series still decaying at the end of its coefficients (a pole close to the interval) is not resolved."""
    fn = _fake_pair_fn(1.02)
    u = _interp.lobatto(64)
    th = 0.5 * np.pi * (u + 1)
    F = np.stack(fn(np.ones(u.size), np.ones(u.size), np.cos(th)), -1)[:, None, :]
    assert _theta_sampling._resolved_tail(F, 64) is None


def _gelu_C(q1, q2, c):
    from kernelcalc.theory.activations import resolve_activation
    from kernelcalc.theory.duals import NUMPY_OPS, closed_form_dual
    return closed_form_dual(resolve_activation("gelu")).C_formula(NUMPY_OPS, q1, q2, c)


def test_gelu_C_at_variances_equals_C():
    from kernelcalc.theory.activations import resolve_activation
    from kernelcalc.theory.duals import NUMPY_OPS, closed_form_dual
    dual = closed_form_dual(resolve_activation("gelu"))
    rng = np.random.default_rng(0)
    q1, q2 = rng.uniform(0.1, 1e5, (2, 1000))
    c = np.sqrt(q1 * q2) * np.concatenate([rng.uniform(-1, 1, 900), -1 + 1e-6 * rng.uniform(size=100)])
    a = dual.C_at_variances(NUMPY_OPS, q1, q2)(c)
    b = dual.C_formula(NUMPY_OPS, q1, q2, c)
    assert np.max(np.abs(a - b) / np.abs(b)) <= 1e-15


def test_wavefront_marching_matches_row_marching():
    """Cross-kernels (fixed diagonal) and the backward problem on 4 panels (sigma_w T = 4, gelu): the wavefronts
    reach the row marching's fixed point to rounding."""
    grid = pan.panel_grid(12, 4, 0.25, 4.0)
    source = lambda C: C
    S0 = np.array([1.0, 0.5, math.cos(1e-3)])
    _, q, _, _ = pan._solve(grid, _gelu_C, np.ones(1), source)          # the self-kernel's diagonal (rows)
    q = np.repeat(q, 3, axis=0)
    rows, _, d1, _ = pan._solve(grid, _gelu_C, S0, source, q=q)
    wave, _, d2, n2 = pan.solve(grid, _gelu_C, S0, source, q=q)
    assert d1 <= 1e-11 and d2 <= 1e-11
    assert np.max(np.abs(wave - rows)) <= 1e-13 * np.max(np.abs(rows))
    Cdot = np.cos(wave / np.max(wave)) + 1.0                              # any positive coefficient field
    LamT = np.array([1.0, 2.0, 3.0])
    bsrc = lambda Cd, L: Cd * L
    b_rows = pan._backward(grid, Cdot, LamT, bsrc)[0]
    b_wave = pan.backward(grid, Cdot, LamT, bsrc)[0]
    assert np.max(np.abs(b_wave - b_rows)) <= 1e-13 * np.max(np.abs(b_rows))


def _sphere(n, seed=0):
    from kernelcalc.data import sphere_normalise
    return sphere_normalise(np.random.default_rng(seed).normal(size=(n, 10)))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("activation", ["sin", "cos", "erf", "gelu"])
def test_sigma_w_T_10_sphere_table_against_direct_solves(activation):
    """N = 200 on the sphere at T = 10 (sin: graded theta table on the tensor grid; gelu: the panels): 12 entries,
    including the 3 closest pairs, against direct pair solves at their angles; the error estimate covers the
    difference, and is below 1e-9 of max|NTK|."""
    x = _sphere(200)
    k = kc.node_kernel(x, activation=activation, T=10.0)
    assert "graded" in k.info["table"]
    assert k.info["theta_nodes"] <= 257
    assert_table_meets_direct_solves(x, k, activation, 10.0, closest=3, random=9)
