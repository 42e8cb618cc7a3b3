"""Finite-width models and the empirical NTK: structured form vs naive Jacobian, independent forwards."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelcalc
from kernelcalc import KernelcalcInputError, empirical_ntk
from kernelcalc.empirical import init_params, make_network, model_apply


def sphere(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x * math.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


X, Y = sphere(3, 4, 1), sphere(2, 4, 2)


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("kw, activation, both", [
    (dict(model="mlp", depth=3, b_std=0.4, out_b_std=0.3, w_std=1.3), "softplus", True),
    (dict(model="mlp", depth=2), "tanh", True),
    (dict(model="resnet", depth=7, T=1.5, sigma_w=1.2, sigma_u=0.8, sigma_v=1.1), "tanh", True),
    (dict(model="node", solver="euler", steps=8, sigma_w=0.9), "softplus", False),
])
def test_structured_equals_jacobian_exactly_for_discrete_models(kw, activation, both):
    for x2 in ((None, Y) if both else (Y,)):
        s = empirical_ntk(X, x2, activation=activation, width=24, seed=3, **kw)
        j = empirical_ntk(X, x2, activation=activation, width=24, seed=3, method="jacobian", **kw)
        assert _rel(s.ntk, j.ntk) < 1e-12
        np.testing.assert_allclose(s.nngp, j.nngp, rtol=1e-13, atol=1e-14)
    assert s.shape == (3, 2)


def test_structured_node_continuous_adjoint_matches_jacobian_to_solver_accuracy():
    kw = dict(model="node", activation="softplus", width=16, seed=0, solver="rk4", steps=32)
    s = empirical_ntk(X, **kw)
    j = empirical_ntk(X, method="jacobian", **kw)
    assert _rel(s.ntk, j.ntk) < 1e-8
    np.testing.assert_allclose(s.ntk, s.ntk.T, rtol=1e-12)
    assert np.linalg.eigvalsh(s.ntk).min() > 0


def _np_phi(name):
    return {"softplus": lambda z: np.logaddexp(0, z), "tanh": np.tanh}[name]


@pytest.mark.parametrize("activation", ["softplus", "tanh"])
def test_model_apply_matches_independent_numpy_forward(activation):
    phi = _np_phi(activation)
    n, L, T, sw, su, sv = 20, 5, 1.3, 1.1, 0.9, 1.2
    res = make_network("resnet", activation=activation, width=n, depth=L, T=T, sigma_w=sw, sigma_u=su, sigma_v=sv)
    p = init_params(jax.random.PRNGKey(5), res, 4)
    U, W, v = (np.asarray(a) for a in p)
    h = su / 2.0 * X @ U.T
    for _ in range(L):
        h = h + T / L * sw / math.sqrt(n) * phi(h) @ W.T
    f_ref = sv / math.sqrt(n) * phi(h) @ v
    np.testing.assert_allclose(np.asarray(model_apply(p, X, res)), f_ref, rtol=1e-12)
    # the Euler-solved Neural ODE with L steps is the same map
    node = make_network("node", activation=activation, width=n, T=T, sigma_w=sw, sigma_u=su, sigma_v=sv,
                        solver="euler", steps=L)
    np.testing.assert_allclose(np.asarray(model_apply(p, X, node)), f_ref, rtol=1e-12)

    mlp = make_network("mlp", activation=activation, width=n, depth=2, w_std=1.4, b_std=0.3, out_w_std=0.7,
                       out_b_std=0.2)
    q = init_params(jax.random.PRNGKey(6), mlp, 4)
    z = 1.4 / 2.0 * X @ np.asarray(q.Ws[0]).T + 0.3 * np.asarray(q.bs[0])
    z = 1.4 / math.sqrt(n) * phi(z) @ np.asarray(q.Ws[1]).T + 0.3 * np.asarray(q.bs[1])
    f_mlp = 0.7 / math.sqrt(n) * phi(z) @ np.asarray(q.w_out) + 0.2 * float(q.b_out)
    np.testing.assert_allclose(np.asarray(model_apply(q, X, mlp)), f_mlp, rtol=1e-12)


def test_accurate_node_solution_is_the_limit_of_the_resnet():
    net = make_network("node", activation="tanh", width=12, solver="tsit5", rtol=1e-12, atol=1e-12)
    p = init_params(jax.random.PRNGKey(0), net, 4)
    f = np.asarray(model_apply(p, X, net))
    gaps = [np.abs(np.asarray(model_apply(p, X, make_network("resnet", activation="tanh", width=12, depth=L))) - f).max()
            for L in (16, 32, 64)]
    slope = np.polyfit(np.log([16, 32, 64]), np.log(gaps), 1)[0]
    assert -1.15 < slope < -0.85


@pytest.mark.parametrize("kwargs, word", [
    (dict(width=0), "width"),
    (dict(width=2.5), "width"),
    (dict(model="resnet", depth=0), "depth"),
    (dict(model="mlp"), "depth"),
    (dict(solver="rk5"), "solver"),
    (dict(gradient="backprop"), "gradient"),
    (dict(model="cnn"), "model"),
    (dict(method="fast"), "method"),
    (dict(solver="euler", rtol=1e-6, atol=1e-6), "euler"),
    (dict(T=-1.0), "T"),
    (dict(seed=-1), "seed"),
])
def test_bad_input_names_the_argument(kwargs, word):
    kw = dict(activation="softplus", width=8)
    kw.update(kwargs)
    with pytest.raises(KernelcalcInputError, match=word):
        empirical_ntk(X, **kw)


def test_bad_shapes_and_activation():
    with pytest.raises(KernelcalcInputError, match="x1 and x2"):
        empirical_ntk(X, sphere(2, 3), activation="tanh", width=4)
    with pytest.raises(KernelcalcInputError, match="x1"):
        empirical_ntk(np.zeros((2, 2, 2)), activation="tanh", width=4)
    with pytest.raises(kernelcalc.ActivationError):
        empirical_ntk(X, activation="nope", width=4)
