r"""The self-kernel's row march by Newton-chord sweeps (:mod:`kernelcalc.kernels._row_newton`).

Reference: the plain row march of :func:`kernelcalc.kernels._panels.solve` (Picard sweeps with the exact dual at every
sweep, no linear model, no variance differences) on the same grid: the same fixed point to rounding, with at most 60 %
of its exact evaluations."""

import numpy as np

from kernelcalc.kernels import _panels as pan
from kernelcalc.kernels._row_newton import solve_self
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.duals import NUMPY_OPS, closed_form_dual


def test_row_newton_reaches_the_row_marchs_fixed_point_with_fewer_exact_evaluations():
    """gelu (its dual depends on the variances beyond homogeneity: the variance differences matter) at
    sigma_w T = 6 on 6 panels of degree 8, two initial values: S within 1e-14 of the row march's (relative to max |S|),
    q its diagonal, and the exact evaluations (with the differences) at most 60 % of the row march's."""
    dual = closed_form_dual(resolve_activation("gelu"))
    counts = {"march": 0, "newton": 0}

    def exact(q1, q2, c):
        counts["newton"] += np.size(c)
        return dual(q1, q2, c, ops=NUMPY_OPS)

    def C_of(q1, q2, c):
        counts["march"] += np.size(c)
        return dual(q1, q2, c, ops=NUMPY_OPS)[0]

    grid = pan.panel_grid(8, 6, 1.0, 6.0)
    S0 = np.array([1.0, 2.5])
    source = lambda C: 1.0 * C  # noqa: E731  (sigma_w = 1)
    S_ref, q_ref, d_ref, _ = pan.solve(grid, C_of, S0, source)
    S, q, change, sweeps = solve_self(grid, exact, S0, source)
    assert d_ref <= 2e-15 and change <= 2e-15 and sweeps < 400
    assert np.max(np.abs(S - S_ref)) <= 1e-14 * np.max(np.abs(S_ref))
    assert np.max(np.abs(q - q_ref)) <= 1e-14 * np.max(np.abs(q_ref))
    assert q_ref[:, -1].min() > 10 * S0.max()        # a long horizon: the variance grew
    assert counts["newton"] <= 0.6 * counts["march"], counts
