"""The near-parallel-band tables of the large-q rule (kernelcalc.theory.largeq_near) against references written here.

- **Nested Gauss-Legendre** (tests/_gauss_legendre_reference.py, numpy only, shared with test_largeq*.py): the outer
  integral over a ~ N(0, q1) of phi(a) E[phi(b) | a], with the inner conditional N(c a / q1, q2 - c^2 / q1) integrated
  on panels graded toward its centre; phi itself (no asymptote, no remainder, no table).
- **mpmath**: on the parallel line (r = 1: a 1-D integral, tanh-sinh split at the bend's scales) and, in the slow
  set, the nested conditional form E[phi(a) E[phi(kappa a + s Z)]] with mpmath quad at 15 digits.

Cases: q = 1e4 and 1e6 with q (1 - r^2) in {0, 0.5, 10, 90}, and unequal variances (ratios 3 and 30, both orders), for
softplus and silu; every case is inside the tables' domain (near_mask), and the difference must be within the
tables' reported error (plus 1e-15 of rounding in the reference) and below 1e-12 of sqrt(E phi(a)^2 E phi(b)^2).
Also the mixed cells (only the larger variance >= Q_NEAR: tables plus the rule's trapezoid for one cross term).
The nested-mpmath slow tests take minutes (267 s / 423 s at load 10).
"""

import math

import mpmath as mp
import numpy as np
import pytest

from _gauss_legendre_reference import expect_gl, norm_gl
from kernelcalc._x64 import scope
from kernelcalc.theory.largeq import ASYMPTOTES
from kernelcalc.theory.largeq_near import Q_NEAR, near_expect, near_mask, near_table
from kernelcalc.theory.largeq_table import TabulatedRule


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


NUMPY = {
    "softplus": (lambda x: np.logaddexp(0.0, x), _sigmoid),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1.0 + x * _sigmoid(-x))),
}
MPMATH = {
    "softplus": (lambda x: mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x)), lambda x: 1 / (1 + mp.exp(-x))),
    "silu": (lambda x: x / (1 + mp.exp(-x)), lambda x: (1 + mp.exp(-x) + x * mp.exp(-x)) / (1 + mp.exp(-x)) ** 2),
}
CASES = [(1e4, 1e4, 0.5), (3e5, 1e4, 90.0), (Q_NEAR * 1.2, Q_NEAR * 36.0, 1e-3)]
SLOW_CASES = [(1e6, 1e6, 10.0), (1e4, 1e4, 90.0), (1e4, 3e4, 0.5), (3e5, 1e4, 10.0), (1e6, 1e6, 90.0)]
# q (1 - r^2) = 0: the parallel-line test
DEFAULT = pytest.mark.parametrize("name", ["softplus", pytest.param("silu", marks=pytest.mark.slow)])


def _covariance(q1, q2, V):
    r = math.sqrt(1.0 - V / min(q1, q2))
    return r * math.sqrt(q1 * q2)




@DEFAULT
def test_near_tables_match_gauss_legendre(name):
    """C and Cdot by the near tables against the nested Gauss-Legendre reference, within the reported error."""
    _check_gauss_legendre(name, CASES, via_rule=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softplus", "silu"])
def test_near_tables_match_gauss_legendre_more_cases(name):
    """As above: more variances and ratios."""
    _check_gauss_legendre(name, SLOW_CASES)


def _check_gauss_legendre(name, CASES, via_rule=True):
    asy = ASYMPTOTES[name]
    q1 = np.array([c[0] for c in CASES])
    q2 = np.array([c[1] for c in CASES])
    c = np.array([_covariance(*cs) for cs in CASES])
    assert np.all(near_mask(q1, q2, c, xp=np))
    with scope():
        got = [np.asarray(v) for v in near_expect(asy, q1, q2, c)]
        rule = [np.asarray(v) for v in TabulatedRule(asy, 0.4).expect(q1, q2, c)] if via_rule else got   # dispatch
    worst = 0.0
    for i, f in enumerate(NUMPY[name]):
        bound = near_table(asy, bool(i)).error + 1e-15
        for j, (a, b, V) in enumerate(CASES):
            err = abs(got[i][j] - expect_gl(f, f, a, b, c[j])) / norm_gl(f, a, b)
            assert err <= bound, (name, i, a, b, V, err, bound)
            worst = max(worst, err)
        np.testing.assert_allclose(got[i], rule[i], rtol=1e-14)     # the same tables (other jit fusion)
    assert worst < 1e-12


@DEFAULT
def test_parallel_line_matches_mpmath(name):
    """r = 1 exactly (b = sqrt(q2 / q1) a): a 1-D mpmath integral of phi(a) phi(k a), at q = 1e6 with equal
    variances and ratio 30 (q2 < q1)."""
    asy = ASYMPTOTES[name]
    for q1, q2 in ((1e6, 1e6),) + (((3e5, 1e4),) if name == "silu" else ()):   # (silu: the slow set)
        with scope():
            got = [float(np.asarray(v)[0]) for v in near_expect(asy, np.array([q1]), np.array([q2]),
                                                                   np.array([math.sqrt(q1 * q2)]))]
        for i, f in enumerate(MPMATH[name]):
            with mp.workdps(16):
                k, s = mp.sqrt(mp.mpf(q2) / q1), mp.sqrt(q1)
                pts = [-12 * s, -4 * s, -s, -30, -10, -3, -1, 0, 1, 3, 10, 30, s, 4 * s, 12 * s]
                d = lambda a: mp.exp(-a * a / (2 * q1)) / mp.sqrt(2 * mp.pi * q1)   # noqa: E731
                ref, na, nb = (float(mp.quad(g, pts)) for g in (lambda a: f(a) * f(k * a) * d(a),
                                                                  lambda a: f(a) ** 2 * d(a),
                                                                  lambda a: f(k * a) ** 2 * d(a)))
            err = abs(got[i] - ref) / math.sqrt(na * nb)
            assert err <= near_table(asy, bool(i)).error + 2e-15, (name, q1, q2, i, err)


def test_reported_errors_are_small_and_the_domain_is_the_band():
    """The held-out errors (relative to the kernel's norm) are below 1e-13, and the mask is the near-parallel band
    with min(q1, q2) >= Q_NEAR: far pairs and small variances are left to the other rules."""
    for d in (False, True):
        assert 0 < near_table(ASYMPTOTES["softplus"], d).error < 1e-13
    q1 = np.array([1e4, 1e4, 50.0, 1e4])
    q2 = np.array([1e4, 1e4, 50.0, 1e6])
    r = np.array([0.9999, 0.9, 0.9999, 0.99999])          # V = 2, 1900 (far), 0.01 (q < Q_NEAR), 0.2
    assert list(near_mask(q1, q2, r * np.sqrt(q1 * q2), xp=np)) == [True, False, False, True]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softplus", "silu"])
def test_near_tables_match_nested_mpmath(name):
    """Two off-line cases in the conditional form, both integrals by mpmath quad (15 digits)."""
    asy = ASYMPTOTES[name]
    for q1, q2, V in ((1e4, 1e4, 0.5), (1e4, 3e4, 10.0)):
        c = _covariance(q1, q2, V)
        kap, s = c / q1, math.sqrt(q2 - c * c / q1)
        with scope():
            got = [float(np.asarray(v)[0]) for v in near_expect(asy, np.array([q1]), np.array([q2]), np.array([c]))]
        for i, f in enumerate(MPMATH[name]):
            with mp.workdps(15):
                def inner(a):
                    mu = kap * a
                    return mp.quad(lambda z: f(mu + s * z) * mp.npdf(z), sorted({-12, -mu / s, 12}))
                sq = mp.sqrt(q1)
                pts = [-12 * sq, -4 * sq, -sq, -10, -1, 0, 1, 10, sq, 4 * sq, 12 * sq]
                ref = float(mp.quad(lambda a: f(a) * inner(a) * mp.npdf(a / sq) / sq, pts))
            err = abs(got[i] - ref) / norm_gl(NUMPY[name][i], q1, q2)
            assert err <= near_table(asy, bool(i)).error + 2e-15, (name, q1, q2, V, i, err)


def test_mixed_cells_match_gauss_legendre():
    """Only the larger variance >= Q_NEAR (near_mask(mixed=True)): the tables for the remainder-remainder term and one
    cross term, the rule's trapezoid sum for the cross term over the smaller variance; softplus against the nested
    Gauss-Legendre reference, within the tables' error plus the quadrature's (1e-14)."""
    asy = ASYMPTOTES["softplus"]
    cases = [(30.0, 3000.0, 5.0), (3e4, 20.0, 10.0), (2.0, 500.0, 1.0)]
    q1 = np.array([c[0] for c in cases])
    q2 = np.array([c[1] for c in cases])
    c = np.array([-_covariance(*cs) if i == 1 else _covariance(*cs) for i, cs in enumerate(cases)])
    assert np.all(near_mask(q1, q2, c, xp=np, mixed=True)) and not np.any(near_mask(q1, q2, c, xp=np))
    rule = TabulatedRule(asy, 0.3)
    with scope():
        got = [np.asarray(v) for v in rule._mixed(asy, q1, q2, c, (False, True))]
    for i, f in enumerate(NUMPY["softplus"]):
        for j, (a, b, V) in enumerate(cases):
            err = abs(got[i][j] - expect_gl(f, f, a, b, c[j])) / norm_gl(f, a, b)
            assert err <= near_table(asy, bool(i)).error + 1e-14, (i, a, b, V, err)
