"""The far-from-parallel moment series of the large-q duals (kernelcalc.theory.largeq_far) and the hybrid
TabulatedRule (series where min(q1, q2)(1 - r^2) >= V0, quadrature in chunks elsewhere), against references
written here that share no code with them:

- **2-D Gauss-Legendre** (tests/_gauss_legendre_reference.py, numpy, phi itself: no asymptote, no remainder, no
  moment): C and Cdot at q = 1e2, 1e4, 1e6, generic correlations, correlations near +-1 at the edge of the far
  regime (q (1 - r^2) = 1.2 V0) and unequal variances; errors relative to sqrt(E f(a)^2 E f(b)^2).
- **mpmath** for the moments M_k(w) = int x^k R(x) exp(-w x^2 / 2) dx the series are built on (tanh-sinh on pieces,
  R written here from tanh, erf and log1p in mpmath), and (slow) for C, Cdot themselves: a nested mpmath
  integral in Cholesky coordinates.
- **The hybrid's bookkeeping**: on a batch mixing near and far covariances (more near ones than one chunk), the
  near entries are bit for bit the quadrature's, in their places; the far entries agree with it to 1e-14.
"""

import math

import mpmath as mp
import numpy as np
import pytest

from _gauss_legendre_reference import expect_gl
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.largeq import ASYMPTOTES
from kernelcalc.theory.largeq_far import V0, far_mask, moment_table
from kernelcalc.theory.largeq_table import TabulatedRule, choose_tabulated


def _sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


PHI = {
    "softplus": (lambda x: np.logaddexp(0.0, x), _sig),
    "tanh": (np.tanh, lambda x: np.exp(-2 * np.abs(x)) * 4 / (1 + np.exp(-2 * np.abs(x))) ** 2),
    "sigmoid": (_sig, lambda x: _sig(x) * _sig(-x)),
}


def _scale(f, q1, q2):
    """sqrt(E f(a)^2 E f(b)^2) to a few digits (it only normalises the errors): a plain trapezoid sum."""
    z = np.linspace(-12, 12, 4801)
    w = np.exp(-z * z / 2) * (z[1] - z[0]) / np.sqrt(2 * np.pi)
    return float(np.sqrt(np.sum(w * f(np.sqrt(q1) * z) ** 2) * np.sum(w * f(np.sqrt(q2) * z) ** 2)))


def _edge_r(q1, q2, factor=1.2):
    """The correlation with min(q1, q2)(1 - r^2) = factor * V0: nearly parallel, just inside the far regime."""
    return math.sqrt(1.0 - factor * V0 / min(q1, q2))


# (q1, q2, r): generic, near +1 and near -1 at the far edge, unequal variances (ratio 3 and 1/50); q = 1e2 at r = 0
# is exactly on the edge min(q1, q2)(1 - r^2) = V0
CASES = [(2e2, 6e2, None), (1e2, 3e2, 0.0), (1e4, 1e4, 0.3), (1e4, 3e4, None), (1e6, 1e6, -1), (1e6, 2e4, 0.8)]


def _cases():
    out = []
    for q1, q2, r in CASES:
        if r is None:
            r = _edge_r(q1, q2)
        elif r == -1:
            r = -_edge_r(q1, q2)
        out.append((q1, q2, r))
    return out


@pytest.fixture(scope="module")
def rules():
    return {name: TabulatedRule(ASYMPTOTES[name], 0.3) for name in PHI}


def _check_gauss_legendre(rule, name, cases):
    q1, q2, r = (np.array(v) for v in zip(*cases))
    c = r * np.sqrt(q1 * q2)
    assert np.all(np.asarray(far_mask(q1, q2, c, xp=np)))
    got = [np.asarray(v) for v in rule.expect(q1, q2, c)]
    worst = 0.0
    for i, (a, b, cc) in enumerate(zip(q1, q2, c)):
        for value, f in zip((got[0][i], got[1][i]), PHI[name]):
            worst = max(worst, abs(value - expect_gl(f, f, a, b, cc)) / _scale(f, a, b))
    assert worst < 1e-12, worst


@pytest.mark.parametrize("name", ["tanh", pytest.param("softplus", marks=pytest.mark.slow)])
def test_far_series_match_gauss_legendre(rules, name):
    """C and Cdot in the far regime within 1e-12 of their scale (the reference's own accuracy is ~1e-13 at
    q = 1e6): q = 1e2 at r = 0, q = 1e4 with ratio 3 near r = +1, q = 1e6 near r = -1 (both at the far edge)."""
    _check_gauss_legendre(rules[name], name, [_cases()[i] for i in (1, 3, 4)])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softplus", "tanh", "sigmoid"])
def test_far_series_match_gauss_legendre_all_cases(rules, name):
    """As above at every case of CASES (generic r, ratios 3 and 1/50) and for sigmoid too."""
    _check_gauss_legendre(rules[name], name, _cases())


def _R_mpmath(name, derivative):
    """R = phi - A (or phi' - A') of kernelcalc.theory.largeq's asymptotes, written in mpmath from the definitions
    (A = x Phi(x/2) for softplus; A = erf(x/2) for tanh)."""
    if name == "softplus":
        if derivative:
            return lambda x: 1 / (1 + mp.exp(-x)) - mp.ncdf(x / 2) - x / 2 * mp.npdf(x / 2)
        return lambda x: mp.log1p(mp.exp(-abs(x))) + max(x, 0) - x * mp.ncdf(x / 2)
    if derivative:
        return lambda x: 1 / mp.cosh(x) ** 2 - mp.exp(-x * x / 4) / mp.sqrt(mp.pi)
    return lambda x: mp.tanh(x) - mp.erf(x / 2)


@pytest.mark.parametrize("name", ["softplus", "tanh"])
def test_moment_tables_match_mpmath(name):
    """M_k(w) at a few k and w between the table's nodes against mpmath; within 10x the table's reported error
    (relative to the largest term max_{k,w} |M_k(w)| / k! the series can see) and 1e-14."""
    asy = ASYMPTOTES[name]
    for derivative in (False, True):
        table = moment_table(asy, derivative)
        R = _R_mpmath(name, derivative)
        ws = np.array([0.37 * table.w_max, table.w_max])
        got = np.asarray(table(ws, xp=np))
        worst = 0.0
        size = max(float(np.max(np.abs(got[:, k]))) / math.factorial(k) for k in range(got.shape[1]))
        with mp.workdps(20):
            for k in (1, 2, 7):
                for j, w in enumerate(ws):
                    g = lambda x: x ** k * R(x) * mp.exp(-w * x * x / 2)   # noqa: E731
                    ref = mp.quad(g, [-120, -40, -10, -3, 0, 3, 10, 40, 120])
                    worst = max(worst, abs(got[j, k] - float(ref)) / math.factorial(k) / size)
        assert worst <= max(10 * table.error, 1e-14), (derivative, worst, table.error)


def test_hybrid_patches_near_entries_in_place():
    """A batch of 120 covariances, about 90 of them near-parallel (more than one chunk of 64), in shuffled order:
    near entries equal the quadrature's bit for bit; far entries agree with it (at its finest step) to 1e-14 of their
    scale."""
    asy = ASYMPTOTES["tanh"]
    rng = np.random.default_rng(3)
    n = 120
    q1 = 10 ** rng.uniform(1, 6, n)
    q2 = q1 * 10 ** rng.uniform(-0.5, 0.5, n)
    r = np.where(rng.uniform(size=n) < 0.75, 1 - 10 ** rng.uniform(-8, -2, n) * V0 / np.minimum(q1, q2),
                 rng.uniform(-0.99, 0.99, n))
    r = np.clip(r, -1, 1) * np.sign(rng.uniform(-1, 1, n))
    c = r * np.sqrt(q1 * q2)
    near = ~np.asarray(far_mask(q1, q2, c, xp=np))
    assert 64 < near.sum() < n
    fast = [np.asarray(v) for v in TabulatedRule(asy, 0.16).expect(q1, q2, c)]
    slow = [np.asarray(v) for v in TabulatedRule(asy, 0.16, far=False).expect(q1, q2, c)]
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a[near], b[near])
    for a, b, f in zip(fast, slow, PHI["tanh"]):
        scale = np.array([_scale(f, x, y) for x, y in zip(q1[~near], q2[~near])])
        assert np.max(np.abs(a[~near] - b[~near]) / scale) < 1e-14


def _mp_expect(f, q1, q2, r):
    """E[f(a) f(b)] by nested mpmath quadrature in Cholesky coordinates a = sqrt(q1) x, b = sqrt(q2)(r x + s z),
    each integral split where its integrand bends (f bends on the scale 1 of its argument)."""
    s = mp.sqrt(1 - mp.mpf(r) ** 2)
    sq1, sq2 = mp.sqrt(q1), mp.sqrt(q2)

    def inner(x):
        z0, wz = -r * x / s, 1 / (sq2 * s)
        pts = sorted({mp.mpf(-12), mp.mpf(12)} | {z0 + k * wz for k in (-40, -10, -3, 0, 3, 10, 40)
                                                   if abs(z0 + k * wz) < 12})
        return mp.quad(lambda z: f(sq2 * (r * x + s * z)) * mp.npdf(z), pts)

    wx, wi = 1 / sq1, s / abs(r) if r else mp.mpf(12)     # f's bend and the scale on which inner(x) bends
    pts = sorted({mp.mpf(v) for v in (-12, -6, -3, -1, 1, 3, 6, 12)} | {k * wx for k in (-40, -10, -3, 0, 3, 10, 40)}
                 | {k * wi for k in (-10, -3, -1, 1, 3, 10) if abs(k * wi) < 12})
    return mp.quad(lambda x: f(sq1 * x) * mp.npdf(x) * inner(x), pts)


@pytest.mark.slow
def test_far_series_match_mpmath():
    """tanh C and Cdot at q = 2e2 (ratio 3, at the far edge) and 1e4 (r = 0.3) against the nested mpmath reference,
    within 1e-12 of their scale (about 7 minutes on the loaded 2-core box: the nested tanh-sinh quadratures)."""
    rule = TabulatedRule(ASYMPTOTES["tanh"], 0.3)
    fs = (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2)
    worst = 0.0
    for q1, q2, r in [_cases()[i] for i in (0, 2)]:
        got = [float(np.asarray(v)[0]) for v in rule.expect(np.array([q1]), np.array([q2]), np.array([r * math.sqrt(q1 * q2)]))]
        with mp.workdps(15):
            for value, f, fn in zip(got, fs, PHI["tanh"]):
                worst = max(worst, abs(value - float(_mp_expect(f, q1, q2, r))) / _scale(fn, q1, q2))
    assert worst < 1e-12, worst


@pytest.mark.slow
def test_choose_tabulated_measures_the_series():
    """The estimate choose_tabulated returns includes the series' measured difference from the quadrature at the
    far edge; it is small (the series are exact to rounding there) and it covers the error measured against the
    Gauss-Legendre reference at the edge."""
    from kernelcalc.theory.largeq_table import _far_edge, far_difference
    act = resolve_activation("softplus")
    rule, est = choose_tabulated(act, 1e6, 1e-12)
    q = np.array([1e2, 1e4, 1e6])
    diff = far_difference(rule, *_far_edge(q, q, 0.5 * q))
    assert 0 < diff <= est <= 1e-12
    q1 = q2 = 1e4
    r = math.sqrt(1 - V0 / q1)
    C, Cd = (float(np.asarray(v)[0]) for v in rule.expect(np.array([q1]), np.array([q2]), np.array([r * q1])))
    for value, f in zip((C, Cd), PHI["softplus"]):
        assert abs(value - expect_gl(f, f, q1, q2, r * q1)) / _scale(f, q1, q2) <= max(est, 1e-13)
