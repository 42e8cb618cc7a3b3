r"""Picard solves with Price's linear model between exact anchors (:mod:`kernelcalc.kernels._anchored`).

References: scipy's ``brentq`` on the exact fixed-point equation (no sweeps, no linear model), and a quadratic
"dual" whose linear model's error is known in closed form."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from kernelcalc.kernels._anchored import RESIDUAL_TOL, AnchoredDual
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.duals import NUMPY_OPS, closed_form_dual


def test_anchored_picard_reaches_the_exact_fixed_point_with_few_exact_evaluations():
    """x = a + 0.6 C_elu(q, q, x) (a contraction: 0.6 max|Cdot| = 0.6) at q = 1e2..1e4 and targets across the
    correlations: Picard sweeps through AnchoredDual end within 1e-14 (relative) of brentq's root of the exact
    equation, with a residual below RESIDUAL_TOL, and evaluate the closed form exactly in under a third of the
    sweeps."""
    dual = closed_form_dual(resolve_activation("elu"))
    q = np.array([1e2, 1e2, 1e3, 1e4, 1e4, 3e3])
    a = q * np.array([0.3, -0.5, 0.1, 0.35, -0.9, 0.2])
    kappa = 0.6                                   # Cdot <= 1 for elu(1): a contraction
    exact = lambda q1, q2, c: dual(q1, q2, c, ops=NUMPY_OPS)  # noqa: E731
    anchored = AnchoredDual(exact)
    x, sweeps = a.copy(), 0
    for sweeps in range(1, 400):
        new = a + kappa * anchored(q, q, x)
        done = np.max(np.abs(new - x)) <= 2e-15 * np.max(np.abs(new))
        x = new
        if done:
            break
    root = np.array([brentq(lambda c, i=i: c - a[i] - kappa * float(dual(q[i], q[i], c, ops=NUMPY_OPS)[0]),
                            -q[i], q[i], xtol=1e-16 * q[i], rtol=8.9e-16) for i in range(q.size)])
    assert np.max(np.abs(x - root) / np.abs(root)) <= 1e-14
    assert anchored.residual() <= RESIDUAL_TOL
    assert anchored.exact_points <= sweeps * q.size / 3, (anchored.exact_points, sweeps)


def test_anchored_residual_is_the_linear_models_error():
    """C(c) = c^2 (Cdot = 2c): anchored at c = 1, asked at 1.1 the model answers 1.2 (exact 1.21); the residual
    reports |1.21 - 1.2| relative to the anchor's |C| = 1, and a changed variance forces an exact evaluation."""
    anchored = AnchoredDual(lambda q1, q2, c: (c * c, 2 * c))
    q = np.ones(1)
    assert anchored(q, q, np.array([1.0]))[0] == 1.0
    assert anchored(q, q, np.array([1.1]))[0] == pytest.approx(1.2, rel=1e-15)
    assert anchored.residual() == pytest.approx(0.01, rel=1e-12)
    assert anchored(2 * q, q, np.array([1.1]))[0] == pytest.approx(1.21, rel=1e-15)   # another site: exact
    assert anchored.exact_points == 3 and anchored.linear_points == 1   # (the residual's own evaluation counted)
    assert math.isfinite(anchored.residual())
