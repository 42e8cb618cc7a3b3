"""Finite-width models and the empirical NTK: structured form vs naive Jacobian, independent forwards."""

import math

import jax
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
    (dict(model="mlp", depth=3, sigma_b=0.4, sigma_vb=0.3, sigma_w=1.3), "softplus", True),
    (dict(model="mlp", depth=2), "tanh", True),
    (dict(model="resnet", depth=7, T=1.5, sigma_w=1.2, sigma_u=0.8, sigma_v=1.1), "tanh", True),
    (dict(model="node", solver="euler", solver_steps=8, sigma_w=0.9), "softplus", False),
])
def test_structured_equals_jacobian_exactly_for_discrete_models(kw, activation, both):
    for x2 in ((None, Y) if both else (Y,)):
        s = empirical_ntk(X, x2, activation=activation, width=24, seed=3, **kw)
        j = empirical_ntk(X, x2, activation=activation, width=24, seed=3, method="jacobian", **kw)
        assert _rel(s.ntk, j.ntk) < 1e-12
        assert s.nngp is None and j.nngp is None   # one network: no E[f f]
        np.testing.assert_allclose(s.info["f1"], j.info["f1"], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(s.info["f2"], j.info["f2"], rtol=1e-13, atol=1e-14)
    assert s.shape == (3, 2)


def test_structured_node_continuous_adjoint_matches_jacobian_to_solver_accuracy():
    kw = dict(model="node", activation="softplus", width=16, seed=0, solver="rk4", solver_steps=32)
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
                        solver="euler", solver_steps=L)
    np.testing.assert_allclose(np.asarray(model_apply(p, X, node)), f_ref, rtol=1e-12)

    mlp = make_network("mlp", activation=activation, width=n, depth=2, sigma_w=1.4, sigma_b=0.3, sigma_v=0.7,
                       sigma_vb=0.2)
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


# ----------------------------------------------------------------------------- blow-up: an error, not NaN
def _numpy_blowup_time(params, x, net, T_max, dt=1e-4, big=1e12):
    """Independent RK4 in numpy of h' = sigma_w/sqrt(n) W phi(h), phi = x^2: first t with |h| > big."""
    W, U = np.asarray(params.W), np.asarray(params.U)
    c = net.sigma_w / math.sqrt(net.width)
    h = net.sigma_u / math.sqrt(x.shape[0]) * (U @ x)

    def f(h):
        return c * (W @ h**2)

    t = 0.0
    while t < T_max:
        k1 = f(h)
        k2 = f(h + dt / 2 * k1)
        k3 = f(h + dt / 2 * k2)
        k4 = f(h + dt * k3)
        h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t += dt
        if not np.all(np.abs(h) < big):
            return t
    return math.inf


def test_blown_up_flow_is_an_error_not_nan():
    """empirical_ntk('x**2', T=3) returned an all-NaN kernel: the finite-width flow of x^2 reaches
    infinity in finite time. It must raise, naming the cause and T. Failed before the fix (NaN kernel)."""
    kw = dict(activation="x**2", width=16, seed=0, solver="euler", solver_steps=64)
    net = make_network("node", T=3.0, **{k: kw[k] for k in ("activation", "width", "solver", "solver_steps")})
    params = init_params(jax.random.PRNGKey(0), net, X.shape[1])
    t_blow = min(_numpy_blowup_time(params, x, net, 3.0) for x in X)
    assert 0.3 < t_blow < 3.0  # the independent solve: the state really escapes before T = 3
    with pytest.warns(kernelcalc.Assumption1Warning):
        with pytest.raises(KernelcalcInputError, match=r"flow blew up before T = 3: the state h_t became non-finite"):
            empirical_ntk(X, T=3.0, **kw)
    with pytest.warns(kernelcalc.Assumption1Warning):
        ok = empirical_ntk(X, T=0.3, **kw)  # before the blow-up time: a finite kernel
    assert np.isfinite(ok.ntk).all() and np.isfinite(ok.info["f1"]).all()


def test_blown_up_flow_adaptive_solver_is_an_error():
    """With an adaptive solver the blow-up exhausted diffrax's max_steps: a JaxRuntimeError with a
    logged traceback. Now a one-line KernelcalcInputError. Failed before the fix."""
    with pytest.warns(kernelcalc.Assumption1Warning):
        with pytest.raises(KernelcalcInputError, match="max_steps = 100000 before T = 3"):
            empirical_ntk(X[:1], activation="x**2", T=3.0, width=8, rtol=1e-6, atol=1e-6)


def test_monte_carlo_and_compare_refuse_a_blown_up_flow():
    """monte_carlo averaged NaN kernels (and compare's z-scores were NaN). Failed before the fix."""
    kw = dict(activation="x**2", T=3.0, solver="euler", solver_steps=16, progress=False)
    with pytest.warns(kernelcalc.Assumption1Warning):
        with pytest.raises(KernelcalcInputError, match=r"flow blew up before T = 3.*seed 0, sample 0"):
            kernelcalc.monte_carlo(X, width=16, n_samples=2, **kw)
    dummy = kernelcalc.Kernel(nngp=np.eye(3), ntk=np.eye(3), model="node", activation="x**2")
    with pytest.warns(kernelcalc.Assumption1Warning):
        with pytest.raises(KernelcalcInputError, match="flow blew up before T = 3"):
            kernelcalc.compare(X, widths=[16], n_samples=2, analytic=dummy, **kw)


def test_mlp_overflow_is_an_error():
    with pytest.raises(KernelcalcInputError, match="MLP forward pass overflowed"):
        empirical_ntk(X, model="mlp", depth=6, sigma_w=3.0, activation="exp(x)", width=16)


@pytest.mark.slow
def test_depth_gap_refuses_a_blown_up_flow():
    with pytest.warns(kernelcalc.Assumption1Warning):
        with pytest.raises(KernelcalcInputError, match="max_steps"):
            kernelcalc.depth_gap(X[:1], activation="x**2", T=3.0, width=8, depths=(2,), progress=False)


# ----------------------------------------------------------------------------- Assumption-1 warning
def _a1_warnings(record):
    return [w for w in record if issubclass(w.category, kernelcalc.Assumption1Warning)]


def test_assumption1_warning_once_per_call():
    """No warning was issued for activations that fail Assumption 1 (relu: phi' not Lipschitz).
    Failed before the fix (no Assumption1Warning existed)."""
    import warnings

    kw = dict(activation="relu", width=8, solver="euler", solver_steps=4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        empirical_ntk(X, **kw)
        kernelcalc.monte_carlo(X, n_samples=2, progress=False, **kw)
        empirical_ntk(X, **dict(kw, activation="softplus"))        # holds: nothing
        empirical_ntk(X, model="mlp", depth=2, activation="relu", width=8)  # not the Neural-ODE theory
    a1 = _a1_warnings(rec)
    assert len(a1) == 2
    assert str(a1[0].message).startswith("empirical_ntk: activation relu fails Assumption 1 (φ' is not Lipschitz")
    assert str(a1[1].message).startswith("monte_carlo: activation relu")
    assert all(w.filename == __file__ for w in a1)  # points at the caller's line


def test_compare_warns_once_although_the_analytic_kernel_warns_too(monkeypatch):
    """compare computes the analytic kernel (which may warn itself) and the Monte-Carlo samples: one warning."""
    import warnings

    from kernelcalc.theory.assumptions import warn_if_assumption1_fails

    def warning_kernel(x1, x2=None, *, activation, **kw):  # stands in for a kernel wired to warn
        warn_if_assumption1_fails(activation, context="node_kernel")
        return kernelcalc.Kernel(nngp=np.eye(len(x1)), ntk=np.eye(len(x1)), model="node", activation="relu")

    monkeypatch.setattr(kernelcalc, "node_kernel", warning_kernel)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        kernelcalc.compare(X, activation="relu", widths=[8], n_samples=2, solver="euler", solver_steps=4, progress=False)
    a1 = _a1_warnings(rec)
    assert len(a1) == 1 and str(a1[0].message).startswith("compare: activation relu")
