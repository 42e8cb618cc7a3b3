r"""Node angle tables (``kernels/_node_tables.py``) and the self-kernel solve from a known diagonal
(``KinkedSolverMixin._self_solve``): elu at long horizons.

References that share no code with what is tested:

- the elu dual of ``tests/test_long_horizon_elu.py`` (:func:`_elu_ref`: the conditional form, b | a Gaussian, inner
  expectations in closed form, outer by graded Gauss-Legendre; no bivariate Mills ratio, no table) for the table's
  values at random nodes and angles, against its own error estimate;
- the trapezoid-plus-Richardson Goursat solve of ``tests/test_long_horizon_panels.py`` driven by that dual (slow)
  for Gram entries that went through the tables.

The cheap default checks of the kernel path compare the tabulated solves with the untabulated (anchored) ones on the
same grid: not independent, but they pin the path the slow test checks against the reference.
"""

import math

import numpy as np
import pytest

import kernelcalc as kc
import test_long_horizon_elu as elu_test
import test_long_horizon_panels as ref_solver
from kernelcalc.kernels import ode_kinked_node_tables as oknt
from kernelcalc.kernels import ode_kinked_panels as okp
from kernelcalc.kernels._node_tables import NodeAngleTable
from kernelcalc.theory.gaussian import dual_kernels


def _sign_inputs(n, d=10, seed=0):
    """``n`` distinct rows of +-1 (x.x/d = 1 exactly: one self-kernel diagonal for the whole Gram)."""
    rng = np.random.default_rng(seed)
    X = np.ones((n, d))
    while True:
        X[1:] = rng.choice([-1.0, 1.0], size=(n - 1, d))
        if len({tuple(r) for r in X}) == n:
            return X


def _elu_table(rng, n, q_max, width_max):
    """``(table, exact, q1, q2, lo, hi)``: a table of the elu dual over ``n`` random nodes, variances 1 .. ``q_max``
    (unequal pairs), angle ranges of widths 0.01 .. ``width_max`` from 0 (30 %, graded) or from up to 1."""
    dual = dual_kernels("elu")
    exact = lambda q1, q2, c: okp._dual_np(dual, q1, q2, c, True)
    q1 = np.exp(rng.uniform(0.0, math.log(q_max), n))
    q2 = q1 * np.exp(rng.uniform(-2.0, 0.0, n))
    lo = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.0, 1.0, n))
    hi = np.minimum(lo + np.exp(rng.uniform(math.log(0.01), math.log(width_max), n)), math.pi)
    return NodeAngleTable(exact, q1, q2, lo, hi, 1e-12), exact, q1, q2, lo, hi


def test_table_against_an_independent_elu_dual_within_its_estimate():
    """A table over 300 nodes with variances 1 .. 2e5 (unequal pairs) and angle ranges from [0, 0.01] (graded
    toward theta = 0, the (1 - rho)^{3/2} features of width 1/sqrt(q)) to [0.5, 3]: at 1500 random (node, angle)
    queries its C / sqrt(q1 q2) and Cdot are within its error estimate (plus the reference's 3e-14) of the
    conditional-form dual written in the test, and the estimate is below 1e-11.  Nodes whose series misses tol at
    the largest degree (wide ranges at large q reach the features next to theta = pi too) are served by the exact
    dual, every query of theirs counted."""
    rng = np.random.default_rng(7)
    n = 300
    table, exact, q1, q2, lo, hi = _elu_table(rng, n, 2e5, 2.5)
    assert table.error <= 1e-11 and table.failed <= 0.03 * n
    idx = rng.integers(0, n, 1500)
    failed = table.hi < table.lo                         # (an empty range: exact values always)
    lo, hi = np.where(failed, lo, table.lo), np.where(failed, hi, table.hi)
    th = lo[idx] + rng.random(1500) * (hi[idx] - lo[idx])
    c = np.sqrt(q1[idx] * q2[idx]) * np.cos(th)
    got_C, got_Cd = table(c, idx, 0, final=True), table(c, idx, 1, final=True)
    assert table.direct == 2 * np.count_nonzero(failed[idx])     # inside the ranges: table values only
    ref_C, ref_Cd = elu_test._elu_ref(q1[idx], q2[idx], c)
    nrm = np.sqrt(q1[idx] * q2[idx])
    err_C = np.max(np.abs(got_C - ref_C) / nrm) / table.scale[0]
    err_Cd = np.max(np.abs(got_Cd - ref_Cd)) / table.scale[1]
    assert max(err_C, err_Cd) <= table.error + 3e-14, (err_C, err_Cd, table.error)


def test_batched_queries_and_pairs_against_an_independent_elu_dual():
    """The solves' path: a batch of problems sharing their nodes (rows of one node layout, the degree-sorted
    Clenshaw over both series at once, its layout kept between calls) and ``pair`` (C and Cdot in one call): inside
    the ranges within the table's error estimate (plus the reference's 3e-14) of the conditional-form elu dual,
    ``pair``'s C the one-series call's, each row the un-batched (1-d, unsorted) evaluation's; outside, ``pair`` with
    ``final`` gives the exact dual once per query (counted once); a second node set of the same size served right
    (a kept layout is only reused for the same nodes)."""
    rng = np.random.default_rng(11)
    n = 160
    table, exact, q1, q2, lo, hi = _elu_table(rng, n, 1e5, 1.5)
    good = np.nonzero(table.hi >= table.lo)[0]
    assert table.error <= 1e-11 and good.size >= 0.95 * n
    for perm in (rng.permutation(good), rng.permutation(good)):       # two node sets of the same size
        idx = np.broadcast_to(perm, (4, perm.size))
        th = table.lo[idx] + rng.random(idx.shape) * (table.hi[idx] - table.lo[idx])
        c = table.n[idx] * np.cos(th)
        C0 = table(c, idx, 0)
        C, Cd = table.pair(c, idx, final=True)
        assert table.direct == 0 and np.array_equal(C, C0)
        rows = np.stack([table(c[i], idx[i], 0) for i in range(4)])          # (1-d nodes: no sorting, no layout)
        assert np.max(np.abs(rows - C) / table.n[idx]) <= 1e-15
        ref_C, ref_Cd = elu_test._elu_ref(q1[idx].ravel(), q2[idx].ravel(), c.ravel())
        err_C = np.max(np.abs(C.ravel() - ref_C) / table.n[idx].ravel()) / table.scale[0]
        err_Cd = np.max(np.abs(Cd.ravel() - ref_Cd)) / table.scale[1]
        assert max(err_C, err_Cd) <= table.error + 3e-14, (err_C, err_Cd, table.error)
    out = np.array([good[0], good[1]])
    c_out = table.n[out] * np.cos(np.minimum(table.hi[out] + 0.3, math.pi - 1e-3))
    C, Cd = table.pair(np.stack([c_out, c_out]), np.stack([out, out]), final=True)
    ref = exact(q1[out], q2[out], c_out)
    assert table.direct == 4 and np.array_equal(C[0], ref[0]) and np.array_equal(Cd[1], ref[1])


def test_table_never_extrapolates_its_final_values():
    """Outside a node's range the sweeps get the linear model at the range's end (counted), the final values the
    exact dual (counted), and ``inside`` says which rows left the range."""
    dual = dual_kernels("elu")
    exact = lambda q1, q2, c: okp._dual_np(dual, q1, q2, c, True)
    q = np.array([4.0, 400.0])
    table = NodeAngleTable(exact, q, q, np.array([1.0, 1.0]), np.array([1.2, 1.2]), 1e-12)
    c = q * np.cos(np.array([2.0, 1.1]))                 # node 0 outside, node 1 inside
    lin = table(c, np.arange(2), 0)
    assert table.extrapolated == 1 and table.direct == 0
    C_end, Cd_end = exact(q[:1], q[:1], q[:1] * np.cos(table.hi[:1]))
    assert abs(lin[0] - (C_end[0] + Cd_end[0] * (c[0] - q[0] * np.cos(table.hi[0])))) <= 1e-12 * q[0]
    fin = table(c, np.arange(2), 0, final=True)
    assert table.direct == 1 and abs(fin[0] - exact(q[:1], q[:1], c[:1])[0][0]) == 0.0
    assert list(table.inside(c[None, :], np.arange(2)[None, :])) == [False]


def test_tables_serve_the_gram_and_match_the_untabulated_solves(monkeypatch):
    """elu at sigma_w T = 4 (4 panels, degree 12 per cell fixed: no ladder, to keep the test cheap) on 6 +-1 inputs:
    the Gram's 15 pairs of band 0 build a table (chosen: 15 problems x 6 exact evaluations per node > its ~26),
    whose solves agree with the untabulated anchored ones to 1e-12 (relative)."""
    X = _sign_inputs(6)
    k = kc.node_kernel(X, activation="elu", T=4.0, time_nodes=12)
    info = k.info["node_tables"]
    assert info["tables"] == 1 and info["problems"] == 15 and info["resolved"] == 0 and info["error"] <= 1e-11
    assert info["direct_problems"] == 0 and "exact evaluations per node" in info["choice"]
    monkeypatch.setattr(oknt, "_NT_BUILD_COST", math.inf)
    direct = kc.node_kernel(X, activation="elu", T=4.0, time_nodes=12)
    assert direct.info["node_tables"]["tables"] == 0 and direct.info["node_tables"]["direct_problems"] == 15
    for name in ("ntk", "nngp"):
        a, b = getattr(k, name), getattr(direct, name)
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b)), name


def test_self_kernel_from_a_known_diagonal_is_the_row_marched_one():
    """The self-kernel solve of the ladder's later degrees (a fixed-diagonal wavefront solve iterated in q from the
    previous degree's diagonal) lands on the row-marched solution (q(t) within 1e-13, relative), in 1-2 steps."""
    from kernelcalc.kernels import _panels as pan
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    solver = KinkedGoursatSolver("elu", T=4.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0)
    dual = dual_kernels("elu")
    coarse = solver._self_diagonals(dual, 12, np.array([1.0]))          # row-marched (nothing known yet)
    q = solver._self_diagonals(dual, 16, np.array([1.0]))               # from the degree-12 diagonal
    assert solver.info["self_q_steps"] and max(solver.info["self_q_steps"]) <= 2
    grid = solver._grid(16, 1.0)
    _, q_row, _, _ = pan.solve(grid, okp._DualC(dual), np.array([1.0]), solver._fwd)
    assert np.max(np.abs(q - q_row) / q_row) <= 1e-13
    assert coarse.shape[1] == solver._nodes(12) and q.shape[1] == solver._nodes(16)


@pytest.mark.slow
def test_tabulated_gram_entries_against_trapezoid_richardson():
    """Two entries of the tabulated Gram (sigma_w T = 4, 7 +-1 inputs, default arguments: the ladder's self-kernels
    from known diagonals, the Gram's pairs through a node table) against the trapezoid-plus-Richardson reference
    (n = 16..128) with the test's own elu dual: within 2e-11 relative, and within the error estimate up to the
    reference's own error (~2e-12)."""
    X = _sign_inputs(7)
    k = kc.node_kernel(X, activation="elu", T=4.0)
    assert k.info["node_tables"]["problems"] >= 15 and k.info["self_q_steps"]
    for i, j in ((0, 1), (2, 5)):
        theta0 = math.acos(float(X[i] @ X[j]) / X.shape[1])
        ref = ref_solver._reference(4.0, 1.0, theta0, (16, 32, 64, 128), dual=elu_test._elu_ref)
        got = np.array([k.nngp[i, j], k.ntk[i, j]])
        assert np.all(np.abs(got - ref) <= 2e-11 * np.abs(ref)), (i, j, got, ref)
        assert np.max(np.abs(got - ref)) <= k.info["error_estimate"] + 3e-12 * np.max(np.abs(ref))


def test_near_parallel_pairs_take_tables_only_where_cdot_is_smooth_at_rho_1(monkeypatch):
    """Near-parallel pairs (bands 1, 2) resolve 1 - rho down to rounding, so a table's ~1e-13 error in C moves a
    sqrt(1 - rho) term of Cdot by ~sqrt(1e-13): such duals (elu with alpha != 1, whose phi' jumps) take tables in band 0
    only (measured before this rule: elu(0.5), sigma_w T = 8, 2e-8 in the NTK at theta_0 < 1e-7).  elu(1) (phi'
    continuous) keeps them: its near-parallel NTK at theta_0 = 1e-9 .. 0.03 is within 1e-11 of the untabulated solves
    (sigma_w T = 4, degree 12; measured 3e-12 at sigma_w T = 8)."""
    from kernelcalc._x64 import float64
    from kernelcalc.kernels.ode import KinkedGoursatSolver

    assert okp.smooth_at_parallel(dual_kernels("elu"))
    assert not okp.smooth_at_parallel(dual_kernels("elu(alpha=0.5)"))
    assert not okp.smooth_at_parallel(dual_kernels("relu"))

    @float64
    def ntk(act):
        solver = KinkedGoursatSolver(act, T=4.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0, M=12)
        th = np.logspace(-9, -1.5, 12)
        return solver.at_angles(np.ones_like(th), np.ones_like(th), th)[1], solver.info.get("node_tables", {})

    tab, info = ntk("elu")
    assert info["tables"] >= 1 and info["problems"] >= 6
    _, info05 = ntk("elu(alpha=0.5)")
    assert info05.get("tables", 0) == 0
    monkeypatch.setattr(oknt, "_NT_BUILD_COST", math.inf)
    direct, _ = ntk("elu")
    assert np.max(np.abs(tab - direct) / np.abs(direct)) <= 1e-11
