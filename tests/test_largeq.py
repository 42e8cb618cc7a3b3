"""Large pre-activation variance: the asymptote + localised remainder duals (kernelcalc.theory.largeq) and the
GELU closed form at q = 1e2, 1e4, 1e6, against a 2-D Gaussian quadrature written here.

Reference (:func:`_expect`): E[f(a) g(b)] as an outer integral over a ~ N(0, q1) of f(a) E[g(b) | a], with
b | a ~ N(c a / q1, q2 - c^2/q1); both integrals by composite 24-point Gauss-Legendre on panels refined
around 0 (where phi bends, width 1) and scaled by the Gaussian's width (sqrt(q1), resp. the conditional
one).  It uses phi itself (no asymptote, no remainder, no Hermite series) and numpy only.
"""

import numpy as np
import pytest

from _gauss_legendre_reference import expect_gl
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.gaussian import dual_kernels
from kernelcalc.theory.largeq import ASYMPTOTES, AsymptoticRule, asymptote_of, choose_asymptotic

def _expect(f, g, q1, q2, c):
    return expect_gl(f, g, q1, q2, c)


def _sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _Phi(x):
    from scipy.special import erf
    return 0.5 * (1.0 + erf(x / np.sqrt(2.0)))


PHI = {
    "softplus": (lambda x: np.logaddexp(0.0, x), _sig),
    "tanh": (np.tanh, lambda x: np.exp(-2 * np.abs(x)) * 4 / (1 + np.exp(-2 * np.abs(x))) ** 2),
    "gelu": (lambda x: x * _Phi(x), lambda x: _Phi(x) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)),
}
# (q2 / q1, r): a generic correlation, a nearly parallel pair, unequal variances, exact r = 1 and anti-correlated
CASES = [(1.0, 0.5), (1.0, 0.999), (3.0, 0.9), (1.0, 1.0), (1.0, -0.7)]


@pytest.fixture(scope="module")
def rules():
    """The asymptotic rule at the level choose_asymptotic settles on for tol 1e-13 (softplus, tanh; choosing it
    costs ~10 s, see the slow test below) and the GELU closed form."""
    out = {name: AsymptoticRule(ASYMPTOTES[name], 0.18, 0.25) for name in ("softplus", "tanh")}
    out["gelu"] = dual_kernels("gelu")
    return out


@pytest.mark.parametrize("name", list(PHI))
def test_large_q_duals_match_quadrature(rules, name):
    dual = rules[name]
    f, df = PHI[name]
    worst = 0.0
    for q in (1e2, 1e4, 1e6):
        ratio, r = CASES[{1e2: 0, 1e4: 1, 1e6: 2}[q]] if name != "softplus" else CASES[{1e2: 2, 1e4: 0, 1e6: 1}[q]]
        for ratio, r in {(ratio, r), CASES[3] if q != 1e4 else CASES[4]}:
            q1, q2 = q, q * ratio
            c = r * np.sqrt(q1 * q2)
            call = dual.expect if name != "gelu" else dual
            C, Cd = (float(np.asarray(v).ravel()[0]) for v in call(np.array([q1]), np.array([q2]), np.array([c])))
            for got, fn in ((C, f), (Cd, df)):
                ref = _expect(fn, fn, q1, q2, c)
                scale = np.sqrt(_expect(fn, fn, q1, q1, q1) * _expect(fn, fn, q2, q2, q2))
                worst = max(worst, abs(got - ref) / scale)
    assert worst < 1e-11, worst


def test_remainders_are_the_activation_minus_the_asymptote():
    """phi = A + R pointwise (the remainders are written without cancellation; check them against phi)."""
    import jax

    x = np.linspace(-30, 30, 601)
    with jax.enable_x64(True):
        for name in ("softplus", "tanh"):
            asy = ASYMPTOTES[name]
            for derivative, fn in ((False, PHI[name][0]), (True, PHI[name][1])):
                A = np.asarray(asy.conditional(x, 0.0 * x, derivative))    # E[A(x + 0 Z)] = A(x)
                R = np.asarray(asy.remainder(x, derivative))
                np.testing.assert_allclose(A + R, fn(x), rtol=1e-14, atol=1e-15)


@pytest.mark.slow
def test_dual_kernels_picks_the_asymptotic_rule_past_the_hermite_limit():
    act = resolve_activation("tanh")
    dual = dual_kernels(act, q_max=1e3)
    assert dual.method == "asymptotic" and 0 < dual.error_estimate <= 1e-12
    from kernelcalc.theory.largeq_table import TabulatedRule, choose_tabulated
    rule, err = choose_tabulated(act, 1e3, 1e-13)
    assert rule == dual.rule and isinstance(rule, TabulatedRule)      # the tabulated rule (theory/largeq_table.py)
    assert asymptote_of(resolve_activation("elu")) is None
