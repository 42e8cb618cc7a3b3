"""The large-q rule's quadrature evaluated eagerly in numpy (kernelcalc.theory.largeq_quadrature): its values must be
those of the compiled quadrature (the rule's traced path, jax.numpy and jax's special functions) to rounding, on
covariances covering tiny and huge variances, very unequal variances, r at and near +-1 and 0, the cross term alone,
and the padded-node form (a coarser step's k < L/h evaluated on a finer step's nodes, the form several steps share one
compile with).  The compiled quadrature is the reference here (its accuracy is tested against Gauss-Legendre and mpmath
in tests/test_largeq_table.py); the differences are relative to sqrt(E f(a)^2 E f(b)^2), the scale the step selection
compares levels on (a few 1e-16, a few 1e-14 where the asymptote's closed form cancels at r -> +-1 and q ~ 1e7,
as conditioned as its input there).  The slow test checks that choose_tabulated, whose step levels and far_difference now run in numpy,
returns the same rule and error estimate as with the compiled quadrature levels.
"""

import math

import numpy as np
import pytest

from kernelcalc._x64 import scope
from kernelcalc.theory import largeq_table
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.gaussian_rules import padded_blocked
from kernelcalc.theory.largeq import ASYMPTOTES
from kernelcalc.theory.largeq_quadrature import NumpyQuadrature, quadrature_values
from kernelcalc.theory.largeq_table import TabulatedRule, choose_tabulated


def _covariances(seed=0):
    """~70 covariances: log-uniform q from 1e-3 to 1e7, ratios up to 1e3 both ways, r uniform and at/near +-1, 0, and
    both variances equal (the self-kernels)."""
    rng = np.random.default_rng(seed)
    n = 24
    q1 = 10 ** rng.uniform(-3, 7, n)
    q2 = q1 * 10 ** rng.uniform(-3, 3, n)
    r = rng.uniform(-1, 1, n)
    qe = np.array([1e-3, 0.1, 0.25, 1.0, 30.0, 1e3, 1e5, 1e7])
    re = np.array([1.0, -1.0, 1 - 1e-13, -1 + 1e-13, 0.9999, -0.9999, 0.0, 1 - 1e-7])
    q1 = np.concatenate([q1, qe, qe, qe[::-1], 10 ** rng.uniform(-3, 7, 16)])
    q2 = np.concatenate([q2, qe, 7.0 * qe, qe, 10 ** rng.uniform(-3, 7, 16)])
    r = np.concatenate([r, re, re[::-1], re, np.tile([1.0, -1.0, 1 - 1e-10, -1 + 1e-10], 4)])
    return q1, q2, r * np.sqrt(q1 * q2)


def _compiled_quadrature(asy, h_pad, cross):
    """The traced quadrature on the nodes of h_pad with k = L/h an argument: (C, Cdot) and, with ``cross``,
    (E[R(a)A(b)], E[R'(a)A'(b)])."""
    from kernelcalc._lazy import jax

    pad = TabulatedRule(asy, h_pad, far=False, near=False)
    return jax.jit(lambda q1, q2, c, k: tuple(pad._one(q1, q2, c, d, cross_only=co, k=k)
                                             for co in ((False, True) if cross else (False,)) for d in (False, True)))


def _check(name, steps, cross=True, h_pad=0.16):
    asy = ASYMPTOTES[name]
    q1, q2, c = _covariances()
    with scope():
        f = _compiled_quadrature(asy, h_pad, cross)
        worst = 0.0
        for h in steps:
            k = float(int(asy.L / h))
            assert k <= int(asy.L / h_pad)
            ref = [np.asarray(v) for v in f(q1, q2, c, k)]
            ref_aa = [np.asarray(v) for v in f(q1, q1, q1, k)[:2]]
            ref_bb = [np.asarray(v) for v in f(q2, q2, q2, k)[:2]]
            got = quadrature_values(asy, h, q1, q2, c)
            if cross:
                got = got + quadrature_values(asy, h, q1, q2, c, cross_only=True)
            for i, (g, r) in enumerate(zip(got, ref)):
                norm = np.sqrt(ref_aa[i % 2] * ref_bb[i % 2])
                assert np.all(np.isfinite(g)) and np.all(norm > 0)
                worst = max(worst, float(np.max(np.abs(g - r) / norm)))
    # a few 1e-14 at most: where r -> +-1 at q ~ 1e7 the closed form of E[A'(a)A'(b)] takes q1 q2 - c^2 (XLA contracts
    # it into a fused multiply-add, numpy does not: a few ulp of q1 q2, ~1e-14 of the kernel; the input c's own
    # rounding moves it as much); everywhere else a few 1e-16
    assert worst <= 5e-14, (name, worst)
    return worst


@pytest.mark.slow
def test_numpy_quadrature_is_the_compiled_one_gelu_family():
    """softplus (gelu-family asymptote, the sigma_w T = 10 case): the padded form at the coarsest step (k < L/h_pad)
    and at h_pad itself; C and Cdot (one compile: 3-10 s by load, hence slow; the default run checks the numpy path
    against Gauss-Hermite below)."""
    _check("softplus", (0.4, 0.16), cross=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softplus", "silu", "tanh", "sigmoid"])
def test_numpy_quadrature_is_the_compiled_one(name):
    """Every asymptote, every step level of choose_tabulated, C, Cdot and the cross term alone."""
    _check(name, (0.4, 0.3, 0.22, 0.16))


_FNS = {"softplus": (lambda x: np.logaddexp(0.0, x), lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))),
        "tanh": (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2)}


@pytest.mark.parametrize("name", sorted(_FNS))
def test_numpy_quadrature_against_gauss_hermite(name):
    """At variances of order one the activations are analytic on the Gaussian's scale: a tensor Gauss-Hermite rule of
    300^2 nodes ((a, b) = (sqrt(q1) z1, c/sqrt(q1) z1 + sqrt(q2 - c^2/q1) z2)) is exact to rounding there, and shares
    no code with the quadrature (asymptote, remainder, table)."""
    z, w = np.polynomial.hermite_e.hermegauss(300)
    w = w / math.sqrt(2.0 * math.pi)
    q1 = np.array([0.3, 1.0, 1.5, 1.0, 0.5, 1.3, 1.5, 0.3])
    q2 = np.array([0.3, 1.4, 1.0, 1.0, 1.5, 1.3, 0.4, 1.2])
    r = np.array([1.0, -0.99, 0.7, 0.0, 0.9999, -1.0, 0.3, -0.5])
    c = r * np.sqrt(q1 * q2)
    ref = []
    for f in _FNS[name]:
        vals = []
        for a1, a2, cc in zip(q1, q2, c):
            a = math.sqrt(a1) * z[:, None]
            b = cc / math.sqrt(a1) * z[:, None] + math.sqrt(max(a2 - cc * cc / a1, 0.0)) * z[None, :]
            vals.append(w @ (f(a) * f(b)) @ w)
        ref.append(np.array(vals))
    with scope():
        got = quadrature_values(ASYMPTOTES[name], 0.22, q1, q2, c)
    for g, rf in zip(got, ref):
        np.testing.assert_allclose(g, rf, rtol=1e-12, atol=1e-14)


def test_numpy_quadrature_chunks_and_shapes():
    """The chunked evaluation does not depend on the chunk size, broadcasts, and refuses a block map."""
    asy = ASYMPTOTES["silu"]
    q1, q2, c = _covariances(1)
    with scope():
        a = quadrature_values(asy, 0.4, q1, q2, c, chunk=5)
        b = quadrature_values(asy, 0.4, q1, q2, c, chunk=64)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        (C,) = quadrature_values(asy, 0.4, q1.reshape(2, -1), 2.0, 0.0, derivative=False)
        assert C.shape == (2, q1.size // 2)
        with pytest.raises(ValueError, match="blocked"):
            NumpyQuadrature(asy, 0.4).expect(q1, q2, c, blocked=padded_blocked)


class _CompiledLevel:
    """A step level of choose_tabulated by the compiled quadrature (the path before the numpy one)."""

    def __init__(self, asymptote, h):
        self.rule = TabulatedRule(asymptote, h, far=False, near=False)

    def expect(self, q1, q2, c, derivative=True, blocked=None):
        return self.rule.expect(q1, q2, c, derivative, blocked=padded_blocked)


@pytest.mark.slow
@pytest.mark.parametrize("name,q_max,tol", [("softplus", 1e4, 1e-13), ("silu", 1e6, 1e-12), ("tanh", 1e3, 1e-13),
                                            ("sigmoid", 1e5, 1e-10)])
def test_choose_tabulated_unchanged_by_the_numpy_levels(name, q_max, tol, monkeypatch):
    """The same rule and the same error estimate (to rounding) as with the compiled quadrature levels."""
    act = resolve_activation(name)
    rule, est = choose_tabulated(act, q_max, tol, blocked=padded_blocked)
    monkeypatch.setattr(largeq_table, "NumpyQuadrature", _CompiledLevel)
    rule_c, est_c = choose_tabulated(act, q_max, tol, blocked=padded_blocked)
    assert rule == rule_c
    assert math.isclose(est, est_c, rel_tol=1e-3, abs_tol=1e-15), (est, est_c)
