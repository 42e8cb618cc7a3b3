"""The low-variance tables of the large-q rule (kernelcalc.theory.largeq_low) against references written here.

- **Nested Gauss-Legendre** (tests/_gauss_legendre_reference.py, numpy only): the outer integral over a ~ N(0, q1) of
  phi(a) E[phi(b) | a], the inner conditional integrated on panels graded toward its centre; phi itself (no asymptote,
  no remainder, no table).  On the parallel line r = 1 the same module's one-dimensional branch (variances chosen so
  that q2 - c^2 / q1 is exactly 0 in floating point).
- **mpmath** (slow set): the parallel line at unequal variances with a mixed cell.

Cases: both variances in [Q_LOW, Q_NEAR) (q in {1, 10, 50, 99}, equal and unequal) and mixed cells (the smaller in
{1, 10, 50, 99}, the larger >= Q_NEAR), correlations {0, 0.9, 0.999, -0.9, 1}; softplus in the default run, silu in
the slow set.  The difference must be within the tables' reported error (plus 1e-15 of rounding in the reference)
and below 1e-12 of sqrt(E phi(a)^2 E phi(b)^2).
"""

import math

import mpmath as mp
import numpy as np
import pytest

from _gauss_legendre_reference import expect_gl, norm_gl
from kernelcalc._x64 import scope
from kernelcalc.theory.largeq import ASYMPTOTES
from kernelcalc.theory.largeq_low import Q_LOW, low_expect, low_mask, low_mixed, low_table
from kernelcalc.theory.largeq_near import Q_NEAR, near_mask
from kernelcalc.theory.largeq_table import TabulatedRule


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


NUMPY = {
    "softplus": (lambda x: np.logaddexp(0.0, x), _sigmoid),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1.0 + x * _sigmoid(-x))),
}
DEFAULT = pytest.mark.parametrize("name", ["softplus", pytest.param("silu", marks=pytest.mark.slow)])


def _values(name, cases, fn):
    """C and Cdot at ``cases`` (q1, q2, r) by ``fn`` (the tables' expectation, in numpy: the jax path of the same
    functions is compiled into the rule, whose values the slow set compares)."""
    asy = ASYMPTOTES[name]
    q1, q2, r = (np.array([c[i] for c in cases], dtype=float) for i in range(3))
    c = r * np.sqrt(q1 * q2)
    with scope():
        got = [np.asarray(v) for v in fn(asy, q1, q2, c, xp=np)]
    return q1, q2, c, got


def _check(name, cases, fn, mask):
    """``cases``: (q1, q2, r); ``fn``: the tables' expectation; every case inside ``mask``."""
    asy = ASYMPTOTES[name]
    q1, q2, c, got = _values(name, cases, fn)
    assert np.all(mask(q1, q2, c))
    worst = 0.0
    for i, f in enumerate(NUMPY[name]):
        bound = low_table(asy, bool(i)).error + 1e-15
        for j, (a, b, r) in enumerate(cases):
            err = abs(got[i][j] - expect_gl(f, f, a, b, c[j])) / norm_gl(f, a, b)
            assert err <= bound, (name, i, a, b, r, err, bound)
            worst = max(worst, err)
    assert worst < 1e-12


BOTH = [(q, q, r) for q in (1.0, 10.0, 50.0, 99.0) for r in (0.0, 0.9, 0.999)] + [(99.0, 24.75, 1.0)]
BOTH_UNEQUAL = [(99.0, 10.0, r) for r in (0.0, 0.9, 0.999, -0.9)] + [(1.0, 50.0, r) for r in (0.9, 0.999)]
# (99, 24.75, r = 1): c = 49.5 and q2 - c^2 / q1 = 0 exactly (the reference's one-dimensional branch); likewise q = q, r = 1
PARALLEL = [(q, q, 1.0) for q in (1.0, 10.0, 50.0, 99.0)]
MIXED = [(qs, qb, r) for qs, qb in ((1.0, 3e3), (10.0, 1e4), (50.0, 300.0), (99.0, 1e5)) for r in (0.0, 0.9, 0.999)]
MIXED += [(1e4, 10.0, -0.9), (2e3, 31.25, 1.0)]   # (c = 250, q2 - c^2 / q1 = 0 exactly)


@DEFAULT
def test_low_tables_match_gauss_legendre_equal_variances(name):
    """Both variances below Q_NEAR: C and Cdot by the low tables, q in {1, 10, 50, 99}, r in {0, 0.9, 0.999, 1}."""
    _check(name, BOTH + PARALLEL, low_expect, lambda *a: low_mask(*a, xp=np))


@DEFAULT
def test_low_tables_match_gauss_legendre_unequal_variances(name):
    """Both variances below Q_NEAR, unequal (ratios 10 and 50, both orders), negative correlations included."""
    _check(name, BOTH_UNEQUAL, low_expect, lambda *a: low_mask(*a, xp=np))




@DEFAULT
def test_mixed_cells_match_gauss_legendre(name):
    """One variance in [Q_LOW, Q_NEAR), the other >= Q_NEAR (both orders): the near tables plus the low cross table."""
    _check(name, MIXED, low_mixed, lambda *a: low_mask(*a, xp=np, mixed=True) & ~near_mask(*a, xp=np))


def test_mixed_cell_with_very_unequal_variances_near_parallel():
    """q = 1.04 against 3.05e4 at r = 0.9999982 (a case where the trapezoid cross term of the rule before the low tables
    erred by 2.4e-4 of the norm): the nested reference's inner conditional is narrow here, so the reference is
    integrated in the conditional form with the inner variable exact on its own graded panels; the tables agree to
    1e-13 of the norm (the nested reference itself carries about 4e-13 at this correlation: checked against a
    20-digit nested mpmath value, 108.66203979900125613 for phi = softplus)."""
    asy = ASYMPTOTES["softplus"]
    q1, q2, r = 1.038532782104779, 30545.31529735215, 0.9999982286834804
    c = r * math.sqrt(q1 * q2)
    with scope():
        got = float(np.asarray(low_mixed(asy, np.array([q1]), np.array([q2]), np.array([c]), xp=np)[0])[0])
    f = NUMPY["softplus"][0]
    ref = expect_gl(f, f, q1, q2, c)
    assert abs(got - ref) / norm_gl(f, q1, q2) < 1e-12


@pytest.mark.slow   # compiles the whole rule (~6-10 s)
@pytest.mark.parametrize("name", ["softplus", "silu"])
def test_rule_dispatches_to_the_low_tables(name):
    """TabulatedRule's compiled regimes give the low tables' values on their cells, and the quadrature alone agrees
    there to 1e-12 of the norm (except near parallel at very unequal variances, which its step does not resolve)."""
    asy = ASYMPTOTES[name]
    cases = BOTH + BOTH_UNEQUAL + PARALLEL + MIXED
    q1, q2, r = (np.array([c[i] for c in cases], dtype=float) for i in range(3))
    c = r * np.sqrt(q1 * q2)
    mixed = low_mask(q1, q2, c, xp=np, mixed=True)
    with scope():
        rule = [np.asarray(v) for v in TabulatedRule(asy, 0.4).expect(q1, q2, c)]
        quad = [np.asarray(v) for v in TabulatedRule(asy, 0.22, far=False, near=False).expect(q1, q2, c)]
        norms = [np.sqrt(np.abs(np.asarray(a) * np.asarray(b))) for a, b in zip(
            TabulatedRule(asy, 0.22, far=False, near=False).expect(q1, q1, q1), TabulatedRule(asy, 0.22, far=False, near=False).expect(q2, q2, q2))]
        for i, d in enumerate((False, True)):
            ref = np.where(mixed, np.asarray(low_mixed(asy, q1, q2, c, (d,))[0]), np.asarray(low_expect(asy, q1, q2, c, (d,))[0]))
            np.testing.assert_allclose(rule[i], ref, rtol=1e-14, atol=1e-300)
            # not near parallel at variances >= 60x apart, which the quadrature's step does not resolve (7.7e-11 at
            # q = 10 against 1e4, r = 0.999; 2e-12 at 2000 against 31.25, r = 1: the tables match the nested reference)
            ok = ~(mixed & (np.abs(r) >= 0.999) & (np.maximum(q1, q2) >= 60.0 * np.minimum(q1, q2)))
            assert np.max(np.abs(rule[i] - quad[i])[ok] / norms[i][ok]) < 1e-12


def test_reported_errors_are_small_and_the_domain():
    """The held-out errors (relative to the kernel's norm) are below 1e-13 and above 0; the masks: both variances in
    [Q_LOW, Q_NEAR) at any correlation, mixed cells (always in the near-parallel band: min(q1, q2) < V0), below Q_LOW
    neither."""
    for name in ("softplus",):
        for d in (False, True):
            assert 0 < low_table(ASYMPTOTES[name], d).error < 1e-13
    q1 = np.array([50.0, 50.0, 0.1, 50.0, 50.0, 200.0])
    q2 = np.array([20.0, 20.0, 20.0, 1e4, 1e4, 300.0])
    r = np.array([0.0, 0.9999, 0.9, 0.9999, 0.1, 0.9999])
    c = r * np.sqrt(q1 * q2)
    assert list(low_mask(q1, q2, c, xp=np)) == [True, True, False, False, False, False]
    assert list(low_mask(q1, q2, c, xp=np, mixed=True)) == [False, False, False, True, True, False]
    assert Q_LOW < 1.0 < Q_NEAR


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softplus", "silu"])
def test_parallel_line_unequal_variances_match_mpmath(name):
    """r = 1 exactly at unequal variances (b = k a): a 1-D mpmath integral, both low (99, 10) and mixed (10, 1e4)."""
    asy = ASYMPTOTES[name]
    mpf = {"softplus": (lambda x: mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x)), lambda x: 1 / (1 + mp.exp(-x))),
           "silu": (lambda x: x / (1 + mp.exp(-x)), lambda x: (1 + mp.exp(-x) + x * mp.exp(-x)) / (1 + mp.exp(-x)) ** 2)}[name]
    for q1, q2, fn in ((99.0, 10.0, low_expect), (10.0, 1e4, low_mixed)):
        with scope():
            got = [float(np.asarray(v)[0]) for v in fn(asy, np.array([q1]), np.array([q2]), np.array([math.sqrt(q1 * q2)]))]
        for i, f in enumerate(mpf):
            with mp.workdps(20):
                k, s = mp.sqrt(mp.mpf(q2) / q1), mp.sqrt(q1)
                pts = sorted({x for x in (-14 * s, -4 * s, -s, 0, s, 4 * s, 14 * s)} | {x / k for x in (-30, -3, 3, 30) if abs(x / k) < 14 * s})
                d = lambda a: mp.exp(-a * a / (2 * q1)) / mp.sqrt(2 * mp.pi * q1)   # noqa: E731
                ref, na, nb = (float(mp.quad(g, pts)) for g in (lambda a: f(a) * f(k * a) * d(a),
                                                                  lambda a: f(a) ** 2 * d(a), lambda a: f(k * a) ** 2 * d(a)))
            err = abs(got[i] - ref) / math.sqrt(na * nb)
            assert err <= low_table(asy, bool(i)).error + 2e-15, (name, q1, q2, i, err)


def test_guard_prices_the_low_regimes_and_its_parts_add_up():
    """The cost guard's price of the large-q rule with the low tables: the printed cell fractions add up to 1 and their
    prices, weighted, to the quoted mean (to its rounding up); the low regimes are priced below the quadrature."""
    import re
    import types

    from kernelcalc.kernels.ode import GoursatSolver, chebyshev_discretisation

    rule = TabulatedRule(ASYMPTOTES["softplus"], 0.4)
    solver = GoursatSolver("softplus", T=10.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0,
                           grid=lambda M: chebyshev_discretisation(M, 10.0, 1))
    solver.info.update(near_table_node_fraction=0.6, low_table_node_fraction=0.4)     # cells: 36 %, 48 %, 16 %
    points, text = solver._price(types.SimpleNamespace(method="asymptotic", rule=rule, points=rule.points))
    parts = [(float(p) / 100.0, float(v)) for p, v in re.findall(r"(\d+)% .*? at (\d+)", text)]
    assert len(parts) == 4, text
    assert sum(p for p, _ in parts) == pytest.approx(1.0, abs=0.02), text
    assert sum(p * v for p, v in parts) == pytest.approx(points, rel=0.005), text
    assert max(rule.low_points) < rule.points and "low tables" in text
