"""Activations: built-ins resolve, derivatives are right, stable jax forms equal the definition."""

import math

import numpy as np
import pytest
import sympy as sp

from kernelcalc.activations import BUILTIN_NAMES, Activation, ActivationError, X, resolve_activation


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_resolves(name):
    act = resolve_activation(name)
    assert isinstance(act, Activation)
    assert act.builtin is not None
    assert act.expr.free_symbols <= {X}
    assert resolve_activation(act) is act


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_derivative_matches_finite_differences(name):
    act = resolve_activation(name)
    x = np.linspace(-3.0, 3.0, 61) + 0.0137  # avoids the kink at 0
    h = 1e-6
    fd = (act.numpy_fn(x + h) - act.numpy_fn(x - h)) / (2 * h)
    np.testing.assert_allclose(act.numpy_derivative(x), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_jax_callables_agree_with_symbolic_definition(name):
    # checks the hand-written stable overrides (softplus, sigmoid, silu) against sympy's expression
    act = resolve_activation(name)
    x = np.linspace(-30.0, 30.0, 1201)
    np.testing.assert_allclose(np.asarray(act.jax_fn(x)), act.numpy_fn(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(act.jax_derivative(x)), act.numpy_derivative(x), rtol=1e-12, atol=1e-12)


def test_known_values():
    # independent values: softplus(0) = log 2, sigmoid'(0) = 1/4, gelu(1) = Phi(1), silu(1) = 1/(1+e^-1)
    assert float(resolve_activation("softplus").numpy_fn(np.array(0.0))) == pytest.approx(math.log(2), abs=1e-15)
    assert float(resolve_activation("sigmoid").numpy_derivative(np.array(0.0))) == pytest.approx(0.25, abs=1e-15)
    phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert float(resolve_activation("gelu").numpy_fn(np.array(1.0))) == pytest.approx(phi1, abs=1e-15)
    assert float(resolve_activation("swish").numpy_fn(np.array(1.0))) == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-15)
    assert resolve_activation("softplus").derivative.equals(1 / (1 + sp.exp(-X)))


def test_unknown_name_lists_known_names():
    with pytest.raises(ActivationError) as err:
        resolve_activation("foo")
    msg = str(err.value)
    assert "foo" in msg
    for name in ("relu", "softplus", "tanh", "gelu"):
        assert name in msg
    with pytest.raises(ActivationError, match="known"):
        Activation.from_name("nope")


@pytest.mark.parametrize("text", ["x +* 2", "exp(x", "x**", ""])
def test_unparsable_expression_raises(text):
    with pytest.raises(ActivationError):
        resolve_activation(text)


def test_other_free_symbol_raises():
    with pytest.raises(ActivationError, match="y"):
        resolve_activation("x + y")
    with pytest.raises(ActivationError):
        Activation.from_expr(sp.Symbol("z") * X)


def test_param_parsing():
    act = resolve_activation("elu(alpha=0.5)")
    assert act.builtin == "elu" and act.param("alpha") == 0.5
    assert float(act.numpy_fn(np.array(-1.0))) == pytest.approx(0.5 * (math.exp(-1) - 1), abs=1e-15)
    assert float(act.numpy_fn(np.array(2.0))) == 2.0
    assert resolve_activation("leaky_relu(0.2)").param("alpha") == 0.2
    assert resolve_activation("leaky_relu").param("alpha") == 0.01
    assert resolve_activation("elu").param("alpha") == 1.0
    with pytest.raises(ActivationError, match="beta"):
        resolve_activation("elu(beta=1)")
    with pytest.raises(ActivationError):
        resolve_activation("elu(alpha=abc)")
    with pytest.raises(ActivationError):
        resolve_activation("elu(alpha=inf)")


def test_user_expression():
    act = Activation.from_expr("log(1+exp(x))")
    assert act.builtin is None and not act.is_polynomial
    assert sp.simplify(act.expr - resolve_activation("softplus").expr) == 0
    cube = resolve_activation("x**3 - x")
    assert cube.is_polynomial and cube.polynomial_degree == 3
    assert resolve_activation("relu").is_piecewise_smooth and not resolve_activation("tanh").is_piecewise_smooth


def test_builtin_name_applied_to_expression_is_an_expression():
    # regression: "tanh(x/2)" used to be read as tanh with a parameter "x/2" and raise
    act = resolve_activation("tanh(x/2)")
    assert act.builtin is None and act.expr == sp.tanh(X / 2)
    assert resolve_activation("sin(2*x)").expr == sp.sin(2 * X)
    assert float(resolve_activation("erf(x)").numpy_fn(np.array(0.5))) == pytest.approx(math.erf(0.5), abs=1e-15)
