"""The (log q1, log q2, theta) table of a dual on the long-horizon panels (kernels/_qtable.py).

The table is checked against the function it tabulates, evaluated directly: gelu's closed-form dual (cheap, and
with the same structure as the large-q rules of softplus and silu: at large q it bends like relu near theta = 0,
on the scale 1/sqrt(q)).  The queries imitate a long-horizon solve: variances from 1 to 1e5, ratios up to 1e4,
narrow angle ranges per variance pair, down to theta = 0 on the diagonal q1 = q2."""

import numpy as np
import pytest

from kernelcalc.kernels._qtable import NodeTable, QTable
from kernelcalc.kernels.ode_kinked import _dual_np
from kernelcalc.theory.gaussian import dual_kernels


@pytest.fixture(scope="module")
def gelu():
    dual = dual_kernels("gelu")
    assert dual.method == "closed"
    return lambda q1, q2, c: _dual_np(dual, q1, q2, c, True)


def _queries(rng, n=3000):
    """Variance pairs of a solve (q(t) = e^{1.15 t}, t >= s) and angles in a narrow band per pair, as the self kernel
    and the antipodal pair bound them (theta ~ 0.6 |t - s| to that + 0.3), theta = 0 on the diagonal."""
    t = rng.uniform(0.0, 10.0, n)
    s = t * rng.uniform(0.0, 1.0, n) ** 0.3
    s[:20] = t[:20]                                    # the diagonal
    q1, q2 = np.exp(1.15 * t), np.exp(1.15 * s)
    lo = np.minimum(0.6 * (t - s), 1.3)
    theta = lo + 0.3 * rng.uniform(0.0, 1.0, n)
    theta[:10] = 0.0
    return q1, q2, np.sqrt(q1 * q2) * np.cos(theta)


def test_qtable_matches_the_dual_and_its_error_estimate_covers_it(gelu):
    """Over the queries of several sweeps (direct values first, then built boxes) the table reproduces C and Cdot
    to 1e-11 relative to sqrt(q1 q2) and 1, within 10x its own measured error (held-out points) plus rounding;
    the per-node Clenshaw form (NodeTable) gives the same values; a query outside a box is never extrapolated."""
    rng = np.random.default_rng(0)
    qt = QTable(gelu, 1e-12, q0=1.0)
    q1, q2, c = _queries(rng)
    for _ in range(8):                                # a solve asks the same nodes sweep after sweep
        C, Cd = qt(q1, q2, c)
    assert qt.builds >= 1 and qt.evaluations > 0
    C0, Cd0 = gelu(q1, q2, c)
    n = np.sqrt(q1 * q2)
    err = max(np.max(np.abs(C - C0) / n), np.max(np.abs(Cd - Cd0)))
    assert err <= 1e-11
    assert err <= 10.0 * qt.error + 1e-13
    nt = NodeTable(qt, q1, q2)
    idx = np.arange(q1.size)
    assert np.max(np.abs(nt(c, idx, 0) - C0) / n) <= 1e-11
    assert np.max(np.abs(nt(c, idx, 1) - Cd0)) <= 1e-11
    # a covariance far outside every box's angle range: the rule's own value (directly, or after a rebuild)
    c_out = n * np.cos(np.full(q1.size, 2.9))
    assert np.max(np.abs(nt(c_out, idx, 1) - gelu(q1, q2, c_out)[1])) <= 1e-11
    assert np.max(np.abs(qt(q1, q2, c_out, 0) - gelu(q1, q2, c_out)[0]) / n) <= 1e-11
