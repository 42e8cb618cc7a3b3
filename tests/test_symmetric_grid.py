"""Symmetric time grids (kernelcalc.kernels.ode._symmetric_from_marginals): with a quadrature rule the
self-kernel and the same-norm cross-kernels evaluate C on the upper triangle t <= s only and mirror it.

Checked against the independent Romberg/trapezoid reference solver of tests/reference_node.py (uniform
grid, Newton row march, its own 2-D Gaussian quadrature: no code shared), for tanh with the large-q
asymptotic rule (asymptote + localised remainder) forced at moderate variance.  A wrong mirror index
would differ at O(1); the rule's own asymmetry in (q1, q2) is ~1e-13."""

import numpy as np

import reference_node as rn
from kernelcalc._x64 import scope
from kernelcalc.kernels.ode import _compiled, chebyshev_discretisation
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.gaussian import DualKernels
from kernelcalc.theory.largeq import cheapest_asymptotic_rule

T, V = 1.0, 1.0
RHO = (0.3, -0.7, 1.0)


def _solve(symmetric):
    act = resolve_activation("tanh")
    dual = DualKernels(act, "asymptotic", cheapest_asymptotic_rule(act))
    disc = chebyshev_discretisation(10, T, 1)
    with scope():
        self_solve, cross, marginals = _compiled(dual, disc, 1.0, 1.0, "jax", symmetric)
        S, change, _ = self_solve(np.array([V]))
        S = np.asarray(S)
        m = marginals(np.diagonal(S, axis1=1, axis2=2))
        zero = np.zeros(len(RHO), np.int32)
        nngp, ntk, delta, _ = cross(m, zero, zero, V * np.array(RHO))
        return S[0], np.asarray(nngp), np.asarray(ntk), float(change), float(delta)


def test_halved_grid_matches_independent_reference():
    S, nngp, ntk, change, delta = _solve(True)
    assert np.max(np.abs(S - S.T)) <= 1e-14 * np.max(np.abs(S))          # the self-kernel is symmetric
    assert change < 1e-11 and delta < 1e-11
    ref = rn.reference_kernel("tanh", [(V, V, V * r) for r in RHO], T=T, Ms=(4, 8, 16))
    np.testing.assert_allclose(nngp, ref.nngp, rtol=0, atol=1e-9)   # the reference's error at (4, 8, 16): ~2e-10 (its estimate, 3e-6, is conservative)
    np.testing.assert_allclose(ntk, ref.ntk, rtol=0, atol=1e-9)
