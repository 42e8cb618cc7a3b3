r"""The angle phase of the long-horizon sphere Gram (softplus, silu past $\sigma_wT=5$): the sinh angle variable of the
sphere's $\theta$ table (``kernels/_interp.SinhAngle``, chosen by a pair function's ``theta_scale``), the node angle
tables' pilots and shared nodes (``kernels/_node_tables.py``), and the first iterates of the theta solves from the
solves already made on a table (``kernels/ode_kinked_node_tables._neighbour_guess``).

References that share no code with what is tested:

- a closed-form kernel written here, $K(\theta)=\sum_k w_k\sqrt{\theta^2+e_k^2}$ with widths $e_k$ from $10^{-3}$ to 1
  (analytic, singular at $\theta=\pm ie_k$: features on every scale down to $10^{-3}$), at the input pairs' angles
  computed here by ``arctan2``;
- the elu dual of ``tests/test_long_horizon_elu.py`` (the conditional form, no bivariate Mills ratio, no table);
- polynomials in the input angle, which the interpolated first iterate reproduces exactly.

The Gram of softplus at $\sigma_wT=10$ through these (a minute of CPU) is checked against direct pair solves in the
slow set of ``tests/test_long_horizon_softplus.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import test_long_horizon_elu as elu_test
from kernelcalc.kernels import _node_tables as ntm
from kernelcalc.kernels import ode_kinked_panels as okp
from kernelcalc.kernels import ode_kinked_node_tables as oknt
from kernelcalc.kernels._gram import gram
from kernelcalc.kernels._interp import SinhAngle
from kernelcalc.theory.gaussian import dual_kernels

_WIDTHS = np.array([1e-3, 1e-2, 1e-1, 1.0])


def _closed(theta):
    """(nngp, ntk) of the multiscale kernel at the angles ``theta``."""
    r = np.sqrt(theta[..., None] ** 2 + _WIDTHS ** 2)
    return np.sum(r, axis=-1), np.sum(r * np.cos(theta[..., None] * _WIDTHS), axis=-1)


class _Multiscale:
    """The closed-form kernel as a pair function (``at_angles``: at exact angles, as the Neural-ODE solver);
    ``theta_scale`` gives ``scale`` (``None``: the graded variable)."""

    def __init__(self, scale):
        self.scale, self.solves = scale, 0

    def __call__(self, sxx, syy, sxy):
        return self.at_angles(sxx, syy, np.arccos(np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)))

    def at_angles(self, sxx, syy, theta):
        self.solves += np.size(theta)
        n, t = _closed(np.asarray(theta))
        return n * np.sqrt(sxx * syy), t * np.sqrt(sxx * syy)

    def theta_scale(self, v, angles=None):
        self.angles = angles
        return self.scale


def _fan(n=60, d=3):
    """``n`` inputs with x.x/d = 1 at angles 0, 1e-3 .. pi from the first (geometric, then uniform), in d = 3."""
    th = np.concatenate([[0.0], np.geomspace(1e-3, 0.5, n // 2), np.linspace(0.6, math.pi, n - 1 - n // 2)])
    phi = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x = np.stack([np.cos(th), np.sin(th) * np.cos(phi), np.sin(th) * np.sin(phi)], axis=1)
    return x * math.sqrt(d)


def test_sinh_angle_is_exact_at_the_ends_and_inverts():
    v = SinhAngle(3e-3)
    u = np.linspace(-1.0, 1.0, 101)
    th = v.theta(u)
    assert th[0] == 0.0 and th[-1] == math.pi and np.all(np.diff(th) > 0)
    assert np.max(np.abs(v.u_of(th.copy()) - u)) <= 1e-14
    assert th[1] < 0.5 * math.pi * math.sin(0.25 * math.pi * (1.0 + u[1])) ** 2    # finer than the graded variable


def test_sphere_table_in_the_sinh_variable_against_the_closed_form():
    """The sphere Gram of the multiscale kernel with ``theta_scale`` 1e-3 takes the sinh variable: every entry within
    its interpolation estimate (<= tol) of the closed form at the pair's angle, from at most half the solves that
    the graded variable takes for the same tolerance (measured 73 solves, 65 nodes, against 265 and 257)."""
    x = _fan()
    G = x @ x.T
    cross = np.linalg.norm(np.cross(x[:, None, :], x[None, :, :]), axis=-1)
    theta = np.arctan2(cross, G)
    ref = _closed(theta)
    got = {}
    for scale in (1e-3, None):
        f = _Multiscale(scale)
        nngp, ntk, info = gram(x, None, f, tol=1e-10, graded_theta=True)
        got[scale] = (f.solves, info)
        est = info["interpolation_error_estimate"]
        assert est <= 1e-10
        for K, R in zip((nngp, ntk), ref):
            assert np.max(np.abs(K - R)) <= est * np.max(np.abs(R)) + 1e-14 * np.max(np.abs(R)), scale
    assert "sinh" in got[1e-3][1]["table"] and "graded" in got[None][1]["table"]
    assert 2 * got[1e-3][0] <= got[None][0], (got[1e-3][0], got[None][0])


@pytest.fixture(scope="module")
def elu_path():
    """Nodes along a path in (t, s): variances 1 .. 1e4, ranges that move smoothly, the first 40 nodes repeated
    (a panel edge: the same variances, a slightly different range)."""
    n = 300
    s = np.linspace(0.0, 1.0, n)
    q1 = np.exp(s * math.log(1e4))
    q2 = q1 * (0.3 + 0.7 * s)
    lo = 0.05 + 0.4 * s ** 2
    hi = lo + 0.5 + 0.8 * np.sin(3.0 * s) ** 2
    q1, q2 = np.concatenate([q1, q1[:40]]), np.concatenate([q2, q2[:40]])
    lo, hi = np.concatenate([lo, lo[:40] - 0.01]), np.concatenate([hi, hi[:40] + 0.02])
    dual = dual_kernels("elu")
    return (lambda a, b, c: okp._dual_np(dual, a, b, c, True)), q1, q2, lo, hi


def test_node_table_pilots_and_shared_nodes_against_an_independent_elu_dual(elu_path, monkeypatch):
    """The node angle table with pilots (every 4th distinct node climbs the ladder, the others start near its degree)
    over a smooth path of nodes: within its error estimate (<= 1e-11) of the conditional-form elu dual at random
    nodes and angles of their (joined) ranges, a repeated node's series identical to its twin's, and fewer exact
    evaluations than every node climbing the ladder (``_PILOT`` = 1), whose table agrees with it within both
    estimates."""
    exact, q1, q2, lo, hi = elu_path
    table = ntm.NodeAngleTable(exact, q1, q2, lo, hi, 1e-12)
    assert table.distinct == 300 and table.error <= 1e-11 and table.failed == 0
    assert np.array_equal(table.coef[:, 300:], table.coef[:, :40])
    assert np.all(table.lo[:40] <= lo[:40] - 0.01) and np.all(table.hi[:40] >= hi[:40] + 0.02)
    monkeypatch.setattr(ntm, "_PILOT", 1)
    ladder = ntm.NodeAngleTable(exact, q1, q2, lo, hi, 1e-12)
    build, ladder_build = table.evaluations - ntm._CHECKS, ladder.evaluations - ntm._CHECKS   # (held-out checks)
    assert build <= 0.9 * ladder_build, (build, ladder_build)       # (measured 6348 against 7344)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, q1.size, 1500)
    th = table.lo[idx] + rng.random(1500) * (table.hi[idx] - table.lo[idx])
    c = np.sqrt(q1[idx] * q2[idx]) * np.cos(th)
    ref_C, ref_Cd = elu_test._elu_ref(q1[idx], q2[idx], c)
    nrm = np.sqrt(q1[idx] * q2[idx])
    for t in (table, ladder):
        err = max(np.max(np.abs(t(c, idx, 0, final=True) - ref_C) / nrm) / t.scale[0],
                  np.max(np.abs(t(c, idx, 1, final=True) - ref_Cd)) / t.scale[1])
        assert err <= t.error + 3e-14, (err, t.error)
        assert t.direct == 0


def test_first_iterate_interpolates_the_solves_of_nearby_angles():
    """The first iterate of a theta solve is the Lagrange interpolant through the 6 nearest known input angles:
    exact for solves that are polynomials of degree 5 in the angle; none from fewer than 6."""
    rng = np.random.default_rng(5)
    coef = rng.normal(size=(6, 7))                       # 7 "nodes", each a quintic in theta
    sol = lambda t: np.polynomial.polynomial.polyval(t, coef)   # noqa: E731
    known = list(np.sort(rng.uniform(0.1, 3.0, 11)))
    new = np.array([0.5, 1.7, 2.9])
    assert oknt._neighbour_guess(known[:5], [sol(t) for t in known[:5]], new) is None
    guess = oknt._neighbour_guess(known, [sol(t) for t in known], new)
    assert guess.shape == (3, 7)
    assert np.max(np.abs(guess - np.stack([sol(t) for t in new]))) <= 1e-9 * np.max(np.abs(coef))
    # two pieces of the sphere table meeting 1e-12 apart, their solves converged to 1e-9: one of the pair is used (the
    # Lagrange weights ~1e12 turn the 1e-9 into ~1e3 else)
    twin = known + [known[3] * (1 + 1e-12)]
    near = np.array([known[3] + 0.01])
    guess = oknt._neighbour_guess(twin, [sol(t) for t in known] + [sol(twin[-1]) + 1e-9], near)
    assert np.max(np.abs(guess - sol(near[0]))) <= 1e-7 * np.max(np.abs(coef))
    # far outside the known angles' span (a new piece): no first iterate
    assert oknt._neighbour_guess(known[:6], [sol(t) for t in known[:6]], np.array([known[5] + 2 * np.ptp(known[:6])])) is None


class _Seamed(_Multiscale):
    """The multiscale kernel plus a jump of ``jump`` (times max|K|) past the angle ``seam`` (a band edge of the
    panels: two time grids), announced by ``theta_seams``; it records the angles it is asked."""

    def __init__(self, scale, seam, jump):
        super().__init__(scale)
        self.seam, self.jump, self.asked = seam, jump, []

    def at_angles(self, sxx, syy, theta):
        theta = np.asarray(theta)
        self.asked.append(theta.ravel().copy())
        n, t = super().at_angles(sxx, syy, theta)
        step = self.jump * (theta >= self.seam)
        return n + 12.0 * step, t + 12.0 * step

    def theta_seams(self):
        return (0.1, self.seam, 3.5)                 # (0.1: below the pairs' angles; 3.5: past pi)


def test_sphere_table_in_pieces_over_the_pairs_angles_against_the_closed_form():
    """Inputs in a plane at angles 0, 0.26, .., 2.86 (their pairs' angles 0.26-2.86), a seam at 1.0 where the kernel
    jumps by 1e-7 of its size: the table comes in two pieces that meet at the seam, it is sampled only inside
    [0.26, 2.86] (and at 0, the diagonal), and every entry, the diagonal included, is within the estimate (<= tol) of
    the closed form with its jump (one series across the jump, the seam not announced, climbs to 1025 nodes and
    misses tol: 6 s)."""
    th = 0.26 * np.arange(12)
    x = np.stack([np.cos(th), np.sin(th), np.zeros(12)], axis=1) * math.sqrt(3.0)
    G = x @ x.T
    theta = np.arctan2(np.linalg.norm(np.cross(x[:, None, :], x[None, :, :]), axis=-1), G)
    f = _Seamed(1e-3, 1.0, 1e-7)
    nngp, ntk, info = gram(x, None, f, tol=1e-10, graded_theta=True)
    assert info["table"].startswith("2 pieces") and info["interpolation_error_estimate"] <= 1e-10
    asked = np.concatenate(f.asked)
    off = np.triu(np.ones_like(theta, bool), 1)
    lo, hi = theta[off].min(), theta[off].max()
    assert np.allclose(f.angles(), (lo, hi), rtol=0, atol=1e-11)     # (told to the pair function before its scale)
    assert np.all((asked == 0.0) | ((asked >= lo - 1e-9) & (asked <= hi + 1e-9))) and np.any(asked == 0.0)
    ref_n, ref_t = _closed(theta)
    step = 12.0 * 1e-7 * (theta >= 1.0)
    for K, R in ((nngp, ref_n + step), (ntk, ref_t + step)):
        near = np.abs(theta - 1.0) < 1e-9                # (an entry at the seam itself reads either side)
        assert np.max(np.abs(K - R)[~near]) <= info["interpolation_error_estimate"] * np.max(np.abs(R)) + 1e-14 * 12
