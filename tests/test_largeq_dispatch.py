"""The eager evaluation of the large-q rule by regime (kernelcalc.theory.largeq_dispatch): numpy masks partition the
covariances, each regime met is evaluated by its own compiled function.  Its values must be those of the rule's one
compiled block (TabulatedRule's ``_block``, the traced path: every regime dispatched inside jit), up to rounding, on
covariances in every regime and on the masks' edges (min(q1, q2)(1 - r^2) = V0 to the ulp, q = Q_NEAR and
q = Q_LOW and their neighbours), in shuffled order over several chunks: the block is the reference here (the
regimes' values themselves are tested against Gauss-Legendre and mpmath in tests/test_largeq_*.py); the
cheap default test checks the bookkeeping (partition, padding, scatter, only the regimes met compiled) against the
regime functions evaluated in numpy.
"""

import math

import numpy as np
import pytest

from kernelcalc._x64 import scope
from kernelcalc.theory import largeq_dispatch
from kernelcalc.theory.gaussian_rules import padded_blocked
from kernelcalc.theory.largeq import ASYMPTOTES
from kernelcalc.theory.largeq_dispatch import eager_values, regimes
from kernelcalc.theory.largeq_far import V0
from kernelcalc.theory.largeq_low import Q_LOW
from kernelcalc.theory.largeq_near import Q_NEAR
from kernelcalc.theory.largeq_table import TabulatedRule, _block


def _logu(rng, lo, hi, n):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _edge_band(q1, q2, rng):
    """c with min(q1, q2)(1 - r^2) = V0 (where it exists), moved by -3..3 ulp: both sides of the far mask's edge."""
    qm = np.minimum(q1, q2)
    r = np.sqrt(np.maximum(1.0 - V0 / qm, 0.0)) * rng.choice([-1.0, 1.0], q1.size)
    c = r * np.sqrt(q1 * q2)
    for _ in range(3):
        step = rng.integers(-1, 2, c.size)
        c = np.where(step > 0, np.nextafter(c, np.inf), np.where(step < 0, np.nextafter(c, -np.inf), c))
    return c


def _covariances(n, seed=0):
    """About ``12 n`` covariances: every regime of a gelu-family rule (far, near, low, mixed, quadrature), the edges
    of each mask, shuffled."""
    rng = np.random.default_rng(seed)
    near_r = lambda m: (1.0 - 10 ** rng.uniform(-10, -2, m)) * rng.choice([-1.0, 1.0], m)   # noqa: E731
    parts = []
    q1, q2 = _logu(rng, 1e2, 1e6, n), _logu(rng, 1e2, 1e6, n)                  # far: r inside the series' domain
    rmax = np.sqrt(1.0 - V0 / np.minimum(q1, q2))
    parts.append((q1, q2, rng.uniform(-1, 1, n) * rmax * np.sqrt(q1 * q2)))
    q1 = _logu(rng, 1e2, 1e6, n)                                                # near: both >= Q_NEAR, near parallel
    q2 = q1 * _logu(rng, 0.2, 5.0, n)
    q2 = np.maximum(q2, Q_NEAR)
    parts.append((q1, q2, near_r(n) * np.sqrt(q1 * q2)))
    q1, q2 = _logu(rng, Q_LOW, Q_NEAR, n), _logu(rng, Q_LOW, Q_NEAR, n)          # low: any correlation
    parts.append((q1, q2, rng.uniform(-1, 1, n) * np.sqrt(q1 * q2)))
    q1, q2 = _logu(rng, Q_LOW, Q_NEAR, n), _logu(rng, Q_NEAR, 1e6, n)            # mixed: near parallel
    parts.append((q1, q2, near_r(n) * np.sqrt(q1 * q2)))
    q1, q2 = _logu(rng, 0.02, Q_LOW, n), _logu(rng, 0.02, 1e3, n)               # the quadrature: a variance < Q_LOW
    parts.append((q1, q2, rng.uniform(-1, 1, n) * np.sqrt(q1 * q2)))
    for edge in (Q_NEAR, Q_LOW):                                               # the variance edges and their ulps
        e = np.array([np.nextafter(edge, 0.0), edge, np.nextafter(edge, np.inf)])
        q1 = np.repeat(e, n // 3 + 1)[:n]
        q2 = q1 * rng.choice([1.0, 1.0, 2.0, 0.5, 50.0, 1e3], n)
        parts.append((q1, q2, np.where(rng.uniform(size=n) < 0.5, near_r(n), rng.uniform(-1, 1, n)) * np.sqrt(q1 * q2)))
        parts.append((q2, q1, parts[-1][2]))
    for lo, hi in ((1e2, 1e3), (1e3, 1e6)):                                   # the far edge, to the ulp
        q1 = _logu(rng, lo, hi, n)
        q2 = q1 * rng.choice([1.0, 1.0, 3.0, 0.5, 100.0], n)
        parts.append((q1, q2, _edge_band(q1, q2, rng)))
    q1, q2, c = (np.concatenate([p[i] for p in parts]) for i in range(3))
    perm = rng.permutation(q1.size)
    return q1[perm], q2[perm], c[perm]


def _regime_of(rule, q1, q2, c):
    out = np.full(q1.size, -1)
    for k, (_, mask) in enumerate(regimes(rule)):
        here = (out < 0) if mask is None else (mask(q1, q2, c, xp=np) & (out < 0))
        out[here] = k
    return out


@pytest.mark.slow   # compiles the rules' blocks (~5 s each) and every regime
@pytest.mark.parametrize("name, low", [("softplus", True), ("softplus", False), ("tanh", True)])
def test_eager_dispatch_equals_the_compiled_block(name, low):
    """Every regime (softplus: far, near, low, mixed by the low tables; without them, mixed by the trapezoid cross
    term; tanh: far and the quadrature), each on hundreds of covariances and on its edges: the same values as the
    block to rounding (2e-15 of the larger of the value and the kernel's scale)."""
    rule = TabulatedRule(ASYMPTOTES[name], 0.4, low=low)
    q1, q2, c = _covariances(250)
    where = _regime_of(rule, q1, q2, c)
    names = [n for n, _ in regimes(rule)]
    counts = np.bincount(where, minlength=len(names))
    assert np.all(counts >= 200), dict(zip(names, counts))
    with scope():
        new = eager_values(rule, q1, q2, c)
        old = padded_blocked(_block(rule, True), q1, q2, c, points=rule.memory_points)
        diag1 = padded_blocked(_block(rule, True), q1, q1, q1, points=rule.memory_points)
        diag2 = padded_blocked(_block(rule, True), q2, q2, q2, points=rule.memory_points)
    for a, b, d1, d2 in zip(new, old, diag1, diag2):
        scale = np.maximum(np.abs(b), np.sqrt(np.abs(d1 * d2)))
        worst = np.abs(a - b) / scale
        assert np.max(worst) < 2e-15, {n: float(np.max(worst[where == k], initial=0)) for k, n in enumerate(names)}


def _regime_written_here(q1, q2, c):
    """The regimes of a gelu-family rule from their definitions (module doc of largeq_table): 0 far, 1 near,
    2 mixed (low cross tables), 3 low, 4 the quadrature."""
    r = np.clip(c / np.sqrt(q1 * q2), -1.0, 1.0)
    qm, qM = np.minimum(q1, q2), np.maximum(q1, q2)
    far = qm * (1.0 - r) * (1.0 + r) >= V0
    return np.select([far, qm >= Q_NEAR, (qm >= Q_LOW) & (qM >= Q_NEAR), qm >= Q_LOW], [0, 1, 2, 3], 4)


def test_eager_dispatch_partitions_pads_and_scatters(monkeypatch):
    """The bookkeeping, with each regime's compiled function replaced by a cheap stand-in that tags its values
    (no tables, no compile): every covariance gets its own regime's value (regimes written here from their
    definitions), in its place, through several chunks per regime (the last padded); every call has its regime's one
    chunk shape; a regime not met is never compiled (the quadrature, without a variance below Q_LOW)."""
    rule = TabulatedRule(ASYMPTOTES["softplus"], 0.4)
    names = [n for n, _ in regimes(rule)]
    assert names == ["far", "near", "low_mixed", "low", "quad"]
    shapes = []

    def stand_in(rule_, derivative, name):
        k = names.index(name)

        def fn(q1, q2, c):
            shapes.append((name, q1.shape))
            return 10.0 * k + q1 + 1e-3 * q2, -c - k
        return fn
    monkeypatch.setattr(largeq_dispatch, "_compiled", stand_in)
    monkeypatch.setattr(largeq_dispatch, "_PARTS", {})     # every regime compiled whole: (q1, q2, c) per chunk
    q1, q2, c = _covariances(300, seed=7)
    want = _regime_written_here(q1, q2, c)
    assert np.all(np.bincount(want, minlength=5) >= 300)
    C, Cd = eager_values(rule, q1, q2, c)
    np.testing.assert_array_equal(C, 10.0 * want + q1 + 1e-3 * q2)
    np.testing.assert_array_equal(Cd, -c - want)
    assert {s for s in shapes} == {(n, (largeq_dispatch._CHUNKS[n],)) for n in names}
    shapes.clear()
    keep = want < 4
    C2, _ = eager_values(rule, *(v[keep][:14].reshape(7, 2) for v in (q1, q2, c)))
    assert C2.shape == (7, 2) and "quad" not in {n for n, _ in shapes}
    np.testing.assert_array_equal(C2, (10.0 * want + q1 + 1e-3 * q2)[keep][:14].reshape(7, 2))


def test_located_covariances_pack_and_unpack():
    """The located covariances of a regime (a pytree of flat arrays of floats, panel indices and masks) travel to the
    compiled finish as one (k, n) array per dtype and come back as the same tree with the same values (indices as
    int32); the chunks are columns, the last one padded with its own first column."""
    rng = np.random.default_rng(3)
    n = 11
    loc = {"q": [rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)], "idx": rng.integers(0, 90, n),
           "cross": [{"far": rng.uniform(size=n) < 0.5, "zf": rng.normal(size=n), "coef": [[rng.normal(size=n)]]}]}
    layout, packed = largeq_dispatch._split(loc, n)
    assert sorted(p.shape for p in packed) == [(1, n), (1, n), (5, n)]
    assert {p.dtype for p in packed} == {np.dtype(np.float64), np.dtype(np.int32), np.dtype(bool)}
    back = largeq_dispatch._unpack(layout, packed)
    assert back.keys() == loc.keys() and len(back["q"]) == 3
    for a, b in zip((*loc["q"], loc["idx"], loc["cross"][0]["far"], loc["cross"][0]["zf"], loc["cross"][0]["coef"][0][0]),
                    (*back["q"], back["idx"], back["cross"][0]["far"], back["cross"][0]["zf"], back["cross"][0]["coef"][0][0])):
        np.testing.assert_array_equal(a, b)
    seen = []
    outs = [np.full(n, np.nan)]
    pending = largeq_dispatch._dispatch(lambda f, *_: (seen.append(f.shape) or f[0],), packed, 4, np.arange(n)[::-1])
    largeq_dispatch._collect(pending, outs)
    assert seen == [(5, 4)] * 3
    np.testing.assert_array_equal(outs[0][::-1], packed[[p.dtype for p in packed].index(np.float64)][0])
