"""The tabulated large-q rule (kernelcalc.theory.largeq_table) against references written here.

- **mpmath on the parallel line** (r = 1 exactly: b = sqrt(q2/q1) a, so E[f(a) f(b)] is a 1-D integral): mpmath
  ``quad`` (tanh-sinh) of f(a) f(k a) against the N(0, q1) density, split at 0, at the scales 1, 3, 10, 30 of the
  activation's bend and at multiples of sqrt(q1).  phi itself (no asymptote, no remainder, no table), at
  q = 10, 1e2, 1e4 and 1e6, for softplus, tanh and gelu (gelu through its closed form).
- **Generic correlations** (r = 0.5, 0.999, -0.7, unequal variances): the outer integral over a ~ N(0, q1) of
  f(a) E[f(b) | a] by composite 24-point Gauss-Legendre on panels refined around 0 and scaled by the Gaussian's
  width (numpy only; tests/_gauss_legendre_reference.py, shared with tests/test_largeq.py).
- **The table** G(mu, s) = E[R(mu + s Z)] against mpmath at a few points, and its reported held-out error bounds it.
- **The error bound**: choose_tabulated's estimate covers the measured error (slow: it builds and compares four
  levels).
"""

import math

import mpmath as mp
import numpy as np
import pytest

from _gauss_legendre_reference import expect_gl
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.gaussian import dual_kernels
from kernelcalc.theory.largeq import ASYMPTOTES
from kernelcalc.theory.largeq_table import TabulatedRule, choose_tabulated, remainder_table

def _expect_gl(f, q1, q2, c):
    """E[f(a) f(b)] by the outer/inner Gauss-Legendre construction (module doc)."""
    return expect_gl(f, f, q1, q2, c)


def _Phi(x):
    from scipy.special import erf
    return 0.5 * (1.0 + erf(x / np.sqrt(2.0)))


NUMPY = {
    "softplus": (lambda x: np.logaddexp(0.0, x), lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))),
    "tanh": (np.tanh, lambda x: 1.0 / np.cosh(np.minimum(np.abs(x), 300.0)) ** 2),
    "gelu": (lambda x: x * _Phi(x), lambda x: _Phi(x) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)),
}
MPMATH = {
    "softplus": (lambda x: mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x)),
                 lambda x: 1 / (1 + mp.exp(-x))),
    "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2),
    "gelu": (lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x)),
}


def _parallel_mpmath(f, q1, q2):
    """E[f(a) f(k a)], a ~ N(0, q1), k = sqrt(q2 / q1), by mpmath (15 digits, tanh-sinh on pieces split at 0,
    at the bend's scales 1 and 10 and at sqrt(q1), 4 sqrt(q1), 12 sqrt(q1))."""
    with mp.workdps(15):
        k, s = mp.sqrt(mp.mpf(q2) / q1), mp.sqrt(q1)
        cuts = sorted({x for x in (1, 10, s, 4 * s) if x < 12 * s} | {12 * s})
        pts = [-x for x in reversed(cuts)] + [0] + cuts
        norm = 1 / mp.sqrt(2 * mp.pi * q1)
        return float(mp.quad(lambda a: f(a) * f(k * a) * mp.exp(-a * a / (2 * q1)) * norm, pts))


def _scale(f, q1, q2):
    """sqrt(E f(a)^2 E f(b)^2) to a few digits (it only normalises the errors): a plain trapezoid sum."""
    z = np.linspace(-12, 12, 4801)
    w = np.exp(-z * z / 2) * (z[1] - z[0]) / np.sqrt(2 * np.pi)
    return float(np.sqrt(np.sum(w * f(np.sqrt(q1) * z) ** 2) * np.sum(w * f(np.sqrt(q2) * z) ** 2)))


@pytest.fixture(scope="module")
def rules():
    """The tabulated rules at a step finer than choose_tabulated needs for 1e-13 (softplus 0.4, tanh 0.22:
    see the slow test), and the GELU closed form."""
    return {"softplus": TabulatedRule(ASYMPTOTES["softplus"], 0.3), "tanh": TabulatedRule(ASYMPTOTES["tanh"], 0.16),
            "gelu": dual_kernels("gelu")}


def _evaluate(rule, q1, q2, c):
    call = rule.expect if isinstance(rule, TabulatedRule) else rule
    return [float(np.asarray(v).ravel()[0]) for v in call(np.array([q1]), np.array([q2]), np.array([c]))]


@pytest.mark.parametrize("name", ["softplus", "tanh", "gelu"])
def test_parallel_pairs_match_mpmath(rules, name):
    """r = 1 exactly, q = 10 .. 1e6, equal and unequal variances: C and Cdot to 1e-12 of their scale."""
    worst = 0.0
    for q, ratio in ((10.0, 3.0), (1e2, 1.0), (1e4, 2.0), (1e6, 1.0)):
        got = _evaluate(rules[name], q, ratio * q, math.sqrt(q * ratio * q))
        for value, f, fn in zip(got, MPMATH[name], NUMPY[name]):
            worst = max(worst, abs(value - _parallel_mpmath(f, q, ratio * q)) / _scale(fn, q, ratio * q))
    assert worst < 1e-12, worst


@pytest.mark.parametrize("name", ["softplus", "tanh"])
def test_generic_correlations_match_quadrature(rules, name):
    """Generic, nearly parallel and anti-correlated pairs, equal and unequal variances, q = 10 .. 1e6."""
    worst = 0.0
    cases = {10.0: (1.0, 0.5), 1e2: (3.0, 0.9), 1e4: (1.0, 0.999), 1e6: (1.0, -0.7)}
    for q, (ratio, r) in cases.items():
        q1, q2 = q, ratio * q
        c = r * math.sqrt(q1 * q2)
        got = _evaluate(rules[name], q1, q2, c)
        for value, f in zip(got, NUMPY[name]):
            worst = max(worst, abs(value - _expect_gl(f, q1, q2, c)) / _scale(f, q1, q2))
    assert worst < 1e-11, worst      # the reference's own accuracy at q = 1e6 is ~1e-12


def test_table_matches_mpmath_and_its_error_bound():
    """G(mu, s) of the tanh remainder (and of its derivative) at points between the table's nodes, in the
    moment-expansion range and at s = 0, against mpmath; the table's reported error bounds the difference."""
    asy = ASYMPTOTES["tanh"]
    import jax
    rem = {False: lambda x: mp.tanh(x) - mp.erf(x / 2),
           True: lambda x: 1 / mp.cosh(x) ** 2 - mp.exp(-x * x / 4) / mp.sqrt(mp.pi)}
    pts_mu = [0.37, -1.9, 11.3]
    for derivative in (False, True):
        table = remainder_table(asy, derivative)
        for s in ((0.0, 0.9, 45.0) if derivative else (0.3, 5.3)):
            with jax.enable_x64(True):
                got = np.asarray(table(np.array([pts_mu]), np.array([s])))[0]
            with mp.workdps(15):
                R = rem[derivative]
                if s == 0:
                    ref = [R(m) for m in pts_mu]
                else:
                    ref = [mp.quad(lambda z: R(m + s * z) * mp.npdf(z), sorted({-12, -m / s, 12})) for m in pts_mu]
            err = max(abs(g - float(r)) for g, r in zip(got, ref))
            assert err <= max(2 * table.error, 1e-15), (derivative, s, err, table.error)


def test_rule_is_a_hundred_times_cheaper_than_the_window_rule():
    """The cost the ODE's guard charges (points per (C, Cdot)) against the window rule's at their coarsest levels."""
    from kernelcalc.theory.largeq import AsymptoticRule
    for name, factor in (("softplus", 10), ("tanh", 5)):
        new = TabulatedRule(ASYMPTOTES[name], 0.4).points
        old = AsymptoticRule(ASYMPTOTES[name], 0.25, 0.35).points
        assert new * factor < old, (name, new, old)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_chosen_rule_error_bound_covers_the_measured_error(name):
    """The error estimate dual_kernels reports (the larger of tol, the level difference of choose_tabulated and the
    tables' held-out error) covers the error measured against mpmath.  (The level difference alone can fall below
    the rounding of the sums at q ~ 1e5: softplus measured 8.7e-14 against a level difference of 1.9e-14.)"""
    dual = dual_kernels(name, q_max=1e6)
    rule, est = dual.rule, dual.error_estimate
    assert isinstance(rule, TabulatedRule) and est <= 1e-12
    worst = 0.0
    for q, ratio in ((30.0, 2.0), (3e3, 1.0), (3e5, 1.0)):
        got = _evaluate(rule, q, ratio * q, math.sqrt(q * ratio * q))
        for value, f, fn in zip(got, MPMATH[name], NUMPY[name]):
            worst = max(worst, abs(value - _parallel_mpmath(f, q, ratio * q)) / _scale(fn, q, ratio * q))
    assert worst <= est, (worst, est)


@pytest.mark.slow
def test_node_kernel_with_the_tabulated_rule_matches_independent_reference():
    """The Neural-ODE solver with the tabulated rule forced (tanh, T = 1, on the sphere) against the independent
    Romberg/trapezoid reference solver of tests/reference_node.py (its own 2-D Gaussian quadrature)."""
    import reference_node as rn
    from kernelcalc._x64 import scope
    from kernelcalc.kernels.ode import _compiled, chebyshev_discretisation
    from kernelcalc.theory.gaussian import DualKernels

    rho = (0.3, -0.7, 1.0)
    dual = DualKernels(resolve_activation("tanh"), "asymptotic", TabulatedRule(ASYMPTOTES["tanh"], 0.3))
    with scope():
        self_solve, cross, marginals = _compiled(dual, chebyshev_discretisation(10, 1.0, 1), 1.0, 1.0, "jax", True)
        S, change, _ = self_solve(np.array([1.0]))
        m = marginals(np.diagonal(np.asarray(S), axis1=1, axis2=2))
        zero = np.zeros(len(rho), np.int32)
        nngp, ntk, delta, _ = cross(m, zero, zero, np.array(rho))
    ref = rn.reference_kernel("tanh", [(1.0, 1.0, r) for r in rho], T=1.0, Ms=(4, 8, 16))
    np.testing.assert_allclose(np.asarray(nngp), ref.nngp, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(ntk), ref.ntk, rtol=0, atol=1e-9)
