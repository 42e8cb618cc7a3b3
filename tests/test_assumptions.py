"""Assumption 1 (Gao et al., ICLR 2025): symbolic verdicts and Lipschitz constants."""

import json
import math

import numpy as np
import pytest

from kernelcalc import Activation, Assumption1Report, analyse

PASSING = ["softplus", "tanh", "sigmoid", "erf", "gelu", "silu", "sin", "cos", "elu", "elu(alpha=1)"]

# sup|phi'| and sup|phi''|, computed by hand:
#   sigmoid: s' = s(1-s) <= 1/4; s'' = s'(1-2s) maximal at s = (3 -+ sqrt 3)/6: sqrt(3)/18
#   tanh: 1 - tanh^2 <= 1; |-2 tanh (1 - tanh^2)| maximal at tanh^2 = 1/3: 4/(3 sqrt 3)
#   erf: 2/sqrt(pi) e^{-x^2}; |4x e^{-x^2}/sqrt(pi)| maximal at x^2 = 1/2: 2 sqrt(2/(pi e))
#   gelu: Phi(x) + x phi(x) maximal at x = sqrt 2: Phi(sqrt 2) + sqrt(2) phi(sqrt 2); gelu'' = (2 - x^2) phi(x) <= 2 phi(0)
EXACT = {
    "softplus": (1.0, 0.25),
    "sigmoid": (0.25, math.sqrt(3) / 18),
    "tanh": (1.0, 4 / (3 * math.sqrt(3))),
    "erf": (2 / math.sqrt(math.pi), 2 * math.sqrt(2 / (math.pi * math.e))),
    "gelu": (0.5 * (1 + math.erf(1.0)) + math.sqrt(2) * math.exp(-1) / math.sqrt(2 * math.pi),
             2 / math.sqrt(2 * math.pi)),
    "sin": (1.0, 1.0),
    "cos": (1.0, 1.0),
    "elu": (1.0, 1.0),
}


@pytest.mark.parametrize("name", PASSING)
def test_smooth_activations_pass(name):
    r = analyse(name)
    assert isinstance(r, Assumption1Report)
    assert r.holds is True, str(r)
    assert r.summary == "Assumption 1 holds"
    for v in r.verdicts.values():
        assert v.holds is True and v.reason


@pytest.mark.parametrize("name, consts", EXACT.items())
def test_exact_lipschitz_constants(name, consts):
    r = analyse(name)
    assert r.phi_lipschitz.constant == pytest.approx(consts[0], rel=1e-12)
    assert r.dphi_lipschitz.constant == pytest.approx(consts[1], rel=1e-12)
    assert "exact" in r.phi_lipschitz.reason or "AccumBounds" in r.phi_lipschitz.reason


def _dense_sup(f, lo=-40.0, hi=40.0):
    x = np.linspace(lo, hi, 2_000_001)
    return float(np.max(np.abs(f(x))))


def test_silu_constants_numerical_estimate():
    r = analyse("silu")
    # silu'(x) = s(x)(1 + x(1 - s(x))), s = sigmoid: an independent dense evaluation
    s = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    sup1 = _dense_sup(lambda x: s(x) * (1 + x * (1 - s(x))))
    assert r.phi_lipschitz.constant == pytest.approx(sup1, rel=1e-9)
    assert r.phi_lipschitz.constant == pytest.approx(1.0998, abs=1e-4)
    assert "numerical estimate" in r.phi_lipschitz.reason
    sup2 = _dense_sup(lambda x: s(x) * (1 - s(x)) * (2 + x * (1 - 2 * s(x))))
    assert r.dphi_lipschitz.constant == pytest.approx(sup2, rel=1e-9)


@pytest.mark.parametrize("name, jump, lip", [("relu", "Heaviside(x) jumps at x = 0", 1.0),
                                             ("leaky_relu", "jumps at x = 0", 1.0),
                                             ("leaky_relu(0.2)", "left limit 1/5, right limit 1", 1.0),
                                             ("elu(alpha=0.5)", "left limit 1/2, right limit 1", 1.0),
                                             ("elu(alpha=2)", "left limit 2, right limit 1", 2.0)])
def test_kinked_activations_fail_smoothness(name, jump, lip):
    r = analyse(name)
    assert r.holds is False
    assert r.phi_lipschitz.holds is True and r.phi_lipschitz.constant == pytest.approx(lip, rel=1e-12)
    assert r.dphi_lipschitz.holds is False
    assert jump in r.dphi_lipschitz.reason
    assert r.nonlinear.holds is True and r.non_polynomial.holds is True
    assert r.summary.startswith("Assumption 1 fails because φ' is not Lipschitz")


def test_relu_summary_text():
    assert analyse("relu").summary.startswith(
        "Assumption 1 fails because φ' is not Lipschitz (φ' = Heaviside(x) jumps at x = 0")


def test_elu_alpha_one_is_c1_with_lipschitz_derivative():
    r = analyse("elu(alpha=1)")
    assert r.holds is True
    assert r.dphi_lipschitz.constant == pytest.approx(1.0)


def test_polynomials_and_linear_fail():
    q = analyse("quadratic")
    assert q.holds is False
    assert q.phi_lipschitz.holds is False and "unbounded" in q.phi_lipschitz.reason
    assert q.dphi_lipschitz.holds is True and q.dphi_lipschitz.constant == 2.0
    assert q.non_polynomial.holds is False and q.nonlinear.holds is True
    ident = analyse("identity")
    assert ident.holds is False
    assert ident.nonlinear.holds is False and ident.non_polynomial.holds is False
    assert ident.phi_lipschitz.holds is True and ident.phi_lipschitz.constant == 1.0
    cube = analyse("x**3")
    assert cube.holds is False and cube.phi_lipschitz.holds is False and cube.non_polynomial.holds is False


def test_user_expressions():
    a, b = analyse("log(1+exp(x))"), analyse("softplus")
    for key in ("phi_lipschitz", "dphi_lipschitz", "nonlinear", "non_polynomial"):
        assert getattr(a, key).holds == getattr(b, key).holds
        assert getattr(a, key).constant == getattr(b, key).constant
    e = analyse("exp(x)")
    assert e.holds is False and e.phi_lipschitz.holds is False and e.non_polynomial.holds is True
    assert analyse("Abs(x)").dphi_lipschitz.holds is False
    s = analyse("sign(x)")
    assert s.phi_lipschitz.holds is False and s.nonlinear.holds is True
    const = analyse("sin(x)**2 + cos(x)**2")  # = 1, disguised
    assert const.nonlinear.holds is False and const.non_polynomial.holds is False
    at = analyse("atan(x)")
    assert at.holds is True and at.dphi_lipschitz.constant == pytest.approx(3 * math.sqrt(3) / 8, rel=1e-12)
    assert analyse("x**3 + exp(x)").non_polynomial.holds is True


@pytest.mark.parametrize("expr", ["sqrt(x)", "floor(x + sin(x))"])
def test_undetermined_is_reported_not_guessed(expr):
    r = analyse(expr)
    assert r.holds is None
    assert r.summary.startswith("undetermined: ")
    assert r.phi_lipschitz.holds is None and r.phi_lipschitz.reason.startswith("undetermined: ")


def test_to_dict_and_str():
    r = analyse("relu")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["holds"] is False and d["phi_lipschitz"]["constant"] == 1.0
    assert d["dphi_lipschitz"]["holds"] is False and d["summary"] == r.summary
    text = str(r)
    assert "φ Lipschitz" in text and "non-polynomial" in text and r.summary in text
    assert len(text.splitlines()) >= 6
    assert analyse(Activation.from_name("tanh")).holds is True


def test_fast():
    import time

    for name in ["tanh(x/2)", "x*(1+erf(x))"]:  # not analysed elsewhere (results are cached)
        t0 = time.perf_counter()
        assert analyse(name).holds is True
        assert time.perf_counter() - t0 < 4.0  # < 2 s on an idle machine; margin for CI noise
