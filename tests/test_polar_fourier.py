"""The "fourier" dual (Chebyshev series in the correlation, kernelcalc/theory/polar_fourier.py) and the Neural-ODE
solves built on it (kernelcalc/kernels/_fourier_solve.py): saturating activations at long horizons.

References shared with nothing in kernelcalc:

- Gaussian expectations: the 2-D trapezoid rule in Cholesky coordinates of tests/reference_node.py
  (:class:`reference_node.GaussRule`, its step set by the pole distance of tanh/sigmoid);
- Chebyshev sums: numpy's ``chebval``;
- the Goursat solve: written here (uniform grid, cumulative product trapezoid rule, Picard to the fixed point,
  Richardson in h^2, h^4, h^6) with erf's closed-form duals (arcsin) written here; erf is bounded and odd like
  tanh, so the whole fourier machinery (rule, per-cell tables, truncated sums, warm-started self-kernel) runs on
  it exactly as for tanh, and its exact duals make the reference cheap;
- tanh itself at sigma_w T = 4 (slow): the Romberg reference solver of tests/reference_node.py.
"""

import math
import warnings

import numpy as np
from trapezoid_goursat import cum2, fixed_point
import pytest

import kernelcalc as kc
import reference_node as rn
from kernelcalc.kernels._fourier_solve import fourier_solves
from kernelcalc.kernels.ode import _picard, chebyshev_discretisation, time_elements
from kernelcalc.theory.gaussian import fourier_dual_kernels
from kernelcalc.theory.polar_fourier import chebyshev_sum


@pytest.mark.parametrize("name, q1, q2", [("tanh", 2.0, 2.0), ("tanh", 30.0, 15.0), ("tanh", 60.0, 57.0),
                                          ("sigmoid", 40.0, 20.0)])
def test_rule_matches_an_independent_quadrature(name, q1, q2):
    """C and Cdot against the 2-D trapezoid rule of reference_node at large q, up to rho = 1; the rule's error
    estimate covers the difference."""
    dual = fourier_dual_kernels(name, q_max=max(q1, q2))
    rho = np.array([-0.999, -0.4, 0.0, 0.3, 0.9, 0.99, 0.9999, 1.0])
    c = rho * math.sqrt(q1 * q2)
    rule = dual.rule                          # (numpy only: no jax scope needed)
    C, Cd = rule.from_marginals(rule.marginal(np.full(rho.shape, q1)), rule.marginal(np.full(rho.shape, q2)), c)
    ref = rn.GaussRule(rn.PHIS[name], q_max=max(q1, q2))
    rC, rCd = ref.expect(q1, q2, c)
    sC, sCd = ref.expect(q1, q1, q1), ref.expect(q2, q2, q2)
    for got, want, scale in ((C, rC, math.sqrt(sC[0] * sC[1])), (Cd, rCd, math.sqrt(sCd[0] * sCd[1]))):
        err = np.max(np.abs(np.asarray(got) - want)) / scale
        assert err <= max(dual.error_estimate, 1e-14), (name, q1, q2, err, dual.error_estimate)
    assert "polar Fourier" in dual.describe()


def test_chebyshev_sum_parities_match_chebval():
    """The half-length sums of one parity (odd, even, odd plus a constant) and the general sum against numpy."""
    rng = np.random.default_rng(3)
    rho = np.concatenate([[-1.0, 1.0, 0.0], rng.uniform(-1, 1, 20)])
    base = rng.normal(size=37) / (1 + np.arange(37)) ** 2
    for mask in (np.arange(37) % 2 == 1, np.arange(37) % 2 == 0, (np.arange(37) % 2 == 1) | (np.arange(37) == 0),
                 np.ones(37, bool)):
        coef = np.where(mask, base, 0.0)
        want = np.polynomial.chebyshev.chebval(rho, coef)
        np.testing.assert_allclose(chebyshev_sum(coef, rho), want, rtol=0, atol=1e-15)
        two = np.stack([coef, 2 * coef], axis=1)                              # (modes, 2) against rho (n, 1)
        np.testing.assert_allclose(chebyshev_sum(two, rho[:, None]), np.stack([want, 2 * want], 1), atol=2e-15)


# ----------------------------------------------------------------------------- the solves, on erf (exact duals here)
def _C(q1, q2, c):
    return 2 / np.pi * np.arcsin(2 * c / np.sqrt((1 + 2 * q1) * (1 + 2 * q2)))


def _Cd(q1, q2, c):
    return 4 / np.pi / np.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c * c)


def _goursat(rho, T, M):
    """(NNGP, NTK) of the erf Neural ODE (all sigmas 1) for unit-norm inputs with x.y/d = rho, uniform grid."""
    h = T / M
    S_self = fixed_point(lambda S: 1.0 + cum2(_C(np.diag(S)[:, None], np.diag(S)[None, :], S), h),
                          np.ones((M + 1, M + 1)))
    q = np.diag(S_self)
    S = fixed_point(lambda S: rho + cum2(_C(q[:, None], q[None, :], S), h), np.full((M + 1, M + 1), rho))
    C, Cd = _C(q[:, None], q[None, :], S), _Cd(q[:, None], q[None, :], np.minimum(S, np.sqrt(np.outer(q, q))))
    rev = lambda F: cum2(F[::-1, ::-1], h)[::-1, ::-1]       # noqa: E731  int_t^T int_s^T
    Lam = fixed_point(lambda L: Cd[-1, -1] + rev(Cd * L), np.full_like(S, Cd[-1, -1]))
    w = np.full(M + 1, h)
    w[[0, -1]] = h / 2
    return np.array([C[-1, -1], C[-1, -1] + w @ (C * Lam) @ w + rho * Lam[0, 0]])


def _richardson(rho, T, Ms=(32, 64, 128, 256)):
    """Three Richardson steps (h^2, h^4, h^6) over the grids Ms; the last step's size is the error estimate."""
    v = [_goursat(rho, T, M) for M in Ms]
    for p in (4, 16, 64):
        last = v
        v = [(p * b - a) / (p - 1) for a, b in zip(v, v[1:])]
    return v[0], np.abs(v[0] - last[-1])


def test_fourier_solves_match_an_independent_goursat_solve():
    """sigma_w T = 4 (q(T) ~ 9): the fourier rule's self- and cross-kernel solves on kernelcalc's Chebyshev elements
    against the trapezoid/Richardson solve written here with erf's exact duals, within 1e-11 of the largest NTK
    (measured: 1e-13)."""
    T = 4.0
    disc = chebyshev_discretisation(16, T, time_elements(T, 1.0))
    dual = fourier_dual_kernels("erf", q_max=10.0)
    self_solve, cross_solve, marginals = fourier_solves(dual, disc, 1.0, 1.0, _picard)
    q1, q2, c = np.array([2.0, 9.0]), np.array([1.5, 9.0]), np.array([0.3, 9.0])    # the DualKernels front door
    np.testing.assert_array_equal(np.stack(dual(q1, q2, c)),
                                  np.stack(dual.rule.from_marginals(dual.rule.marginal(q1), dual.rule.marginal(q2), c)))
    S, delta, _ = self_solve(np.array([1.0]))
    assert delta <= 1e-11
    q = np.diagonal(S, axis1=1, axis2=2)
    rho = np.array([1.0, 0.6, -0.3])
    nngp, ntk, delta, _ = cross_solve(marginals(q), np.zeros(3, int), np.zeros(3, int), rho)
    assert delta <= 1e-11
    scale = float(np.max(np.abs(ntk)))
    for k, r in enumerate(rho):
        ref, err = _richardson(float(r), T)
        assert np.all(err <= 1e-11 * scale), err
        assert abs(nngp[k] - ref[0]) <= 1e-11 * scale, (r, nngp[k], ref)
        assert abs(ntk[k] - ref[1]) <= 1e-11 * scale, (r, ntk[k], ref)


# ----------------------------------------------------------------------------- node_kernel (slow)
@pytest.mark.slow
def test_node_tanh_sigma_T_4_matches_the_romberg_reference():
    """node_kernel tanh at T = 4 (the fourier rule: q(T) = 8.5) against tests/reference_node.py (trapezoid Goursat
    solve, Romberg over M = 8..64, its own 2-D Gaussian rule): within the reference's error (~1e-7)."""
    X = rn.two_inputs(1.0, 1.0, 0.5, d=10)
    k = kc.node_kernel(X, activation="tanh", T=4.0)
    assert "polar Fourier" in k.info["expectation"]
    ref = rn.reference_kernel("tanh", [(1.0, 1.0, 0.5), (1.0, 1.0, 1.0)], T=4.0, Ms=(8, 16, 32, 64))
    for got, want, err in ((k.nngp, ref.nngp, ref.err_nngp), (k.ntk, ref.ntk, ref.err_ntk)):
        np.testing.assert_allclose([got[0, 1], got[0, 0]], want, rtol=0, atol=float(np.max(5 * err)) + 1e-12)
    assert k.info["error_estimate"] <= 1e-9 * np.max(np.abs(k.ntk))


@pytest.mark.slow
@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_sigma_w_T_10_saturating_computes_within_tolerance(act):
    """sigma_w T = 10, N = 200 on the sphere: computed (no refusal, no accuracy warning) with an error estimate
    <= 1e-9 of the largest NTK entry."""
    X = kc.data.sphere_normalise(np.random.default_rng(0).normal(size=(200, 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", kc.KernelcalcAccuracyWarning)
        k = kc.node_kernel(X, activation=act, T=10.0)
    assert "polar Fourier" in k.info["expectation"]
    assert k.info["error_estimate"] <= 1e-9 * np.max(np.abs(k.ntk))
    assert np.all(np.isfinite(k.ntk)) and np.allclose(k.ntk, k.ntk.T)
