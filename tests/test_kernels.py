"""Analytic kernels against independent values: closed-form recursions, the linear-ODE Bessel
solution, discretisation convergence orders, ResNet -> ODE slope, symmetry/PSD, bad inputs."""

import math

import mpmath as mp
import numpy as np
import pytest

import kernelcalc as kc
import reference_node as rn
from kernelcalc.kernels.ode import chebyshev_lobatto


def sphere_points(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x * np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


def arccos_relu_mlp(x, y, depth, w, b, ow, ob):
    """Independent numpy arc-cosine recursion (Cho & Saul) for a relu MLP, NTK parameterisation."""
    d = x.shape[1]
    qx = w**2 * np.sum(x * x, 1) / d + b**2
    qy = w**2 * np.sum(y * y, 1) / d + b**2
    k = w**2 * x @ y.T / d + b**2
    ntk = k.copy()
    for layer in range(depth):
        ws, bs = (ow, ob) if layer == depth - 1 else (w, b)
        n = np.sqrt(np.outer(qx, qy))
        th = np.arccos(np.clip(k / n, -1, 1))
        C = n / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
        Cd = (np.pi - th) / (2 * np.pi)
        k = ws**2 * C + bs**2
        ntk = k + ws**2 * Cd * ntk
        qx, qy = ws**2 * qx / 2 + bs**2, ws**2 * qy / 2 + bs**2
    return k, ntk


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mlp_relu_matches_arccos_recursion_off_sphere(depth):
    """Independent reference: the arc-cosine recursion (Cho & Saul) written in numpy above."""
    x = np.random.default_rng(1).standard_normal((6, 4)) * np.array([1, 2, 0.5, 1.0])
    y = np.random.default_rng(2).standard_normal((5, 4))
    K = kc.mlp_kernel(x, y, activation="relu", depth=depth, sigma_w=1.3, sigma_b=0.2, sigma_v=0.9, sigma_vb=0.1)
    nngp, ntk = arccos_relu_mlp(x, y, depth, 1.3, 0.2, 0.9, 0.1)
    np.testing.assert_allclose(K.nngp, nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(K.ntk, ntk, rtol=1e-12, atol=1e-14)


def test_mlp_erf_matches_arcsin_recursion():
    """Independent reference: the arcsin (Williams) recursion written here."""
    x = sphere_points(5, 3, seed=3) * 0.7
    K = kc.mlp_kernel(x, activation="erf", depth=2, sigma_w=1.2, sigma_b=0.3)
    d = 3
    q = 1.44 * np.sum(x * x, 1) / d + 0.09
    k = 1.44 * x @ x.T / d + 0.09
    ntk = k.copy()
    for layer in range(2):
        C = 2 / np.pi * np.arcsin(2 * k / np.sqrt(np.outer(1 + 2 * q, 1 + 2 * q)))
        Cd = 4 / np.pi / np.sqrt(np.outer(1 + 2 * q, 1 + 2 * q) - 4 * k**2)
        ws, bs = (1.0, 0.0) if layer == 1 else (1.2, 0.3)
        Cq = 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q))
        k = ws**2 * C + bs**2
        ntk = k + ws**2 * Cd * ntk
        q = ws**2 * Cq + bs**2
    np.testing.assert_allclose(K.nngp, k, rtol=1e-12)
    np.testing.assert_allclose(K.ntk, ntk, rtol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_sphere_interpolation_equals_direct_evaluation(activation):
    """Consistency: the sphere fast path against the direct per-pair path of the same code."""
    X = sphere_points(40, 5, seed=4)
    K = kc.mlp_kernel(X, activation=activation, depth=3, sigma_w=1.5, sigma_b=0.1)
    assert K.info["path"] == "sphere"
    sub = kc.mlp_kernel(X[:6], activation=activation, depth=3, sigma_w=1.5, sigma_b=0.1)
    assert sub.info["path"] == "direct"
    np.testing.assert_allclose(K.ntk[:6, :6], sub.ntk, rtol=1e-10)
    np.testing.assert_allclose(K.nngp[:6, :6], sub.nngp, rtol=1e-10, atol=1e-12)


def _linear_ode_reference(rho, T, sw, su, sv):
    """phi = identity: S = S0 I0(2 sw sqrt(ts)), Lambda = sv^2 I0(2 sw sqrt((T-t)(T-s))) (Bessel)."""
    S0 = su**2 * rho
    with mp.workdps(25):
        I0 = lambda z: mp.besseli(0, z)  # noqa: E731
        integral = mp.quad(lambda t, s: S0 * I0(2 * sw * mp.sqrt(t * s)) * sv**2 * I0(2 * sw * mp.sqrt((T - t) * (T - s))),
                           [0, T], [0, T])
        nngp = sv**2 * S0 * I0(2 * sw * T)
        ntk = nngp + sw**2 * integral + S0 * sv**2 * I0(2 * sw * T)
    return float(nngp), float(ntk)


def test_node_kernel_linear_activation_matches_bessel_solution():
    """Independent reference: identity activation, Bessel-I0 closed form integrated by mpmath."""
    rho = 0.3
    x = np.array([[math.sqrt(2), 0.0], [math.sqrt(2) * rho, math.sqrt(2) * math.sqrt(1 - rho**2)]])
    K = kc.node_kernel(x, activation="identity", T=1.5, sigma_w=0.8, sigma_u=1.2, sigma_v=0.9)
    nngp, ntk = _linear_ode_reference(rho, 1.5, 0.8, 1.2, 0.9)
    assert K.nngp[0, 1] == pytest.approx(nngp, rel=1e-10)
    assert K.ntk[0, 1] == pytest.approx(ntk, rel=1e-10)


def test_node_kernel_time_discretisation_converges_spectrally():
    """Self-convergence (consistency) against M = 48: log-error falls linearly in M (spectral order)."""
    x = np.array([[1.0, 1.0], [1.4, -0.2]])
    ref = kc.node_kernel(x, activation="softplus", T=2.0, time_nodes=48).ntk
    Ms = [4, 6, 8, 10]
    errs = [np.max(np.abs(kc.node_kernel(x, activation="softplus", T=2.0, time_nodes=M).ntk - ref) / ref) for M in Ms]
    slope = np.polyfit(Ms, np.log10(errs), 1)[0]
    assert slope < -0.8, (errs, slope)          # > 0.8 decimal digits per added node
    auto = kc.node_kernel(x, activation="softplus", T=2.0)
    assert np.max(np.abs(auto.ntk - ref) / ref) < 1e-9
    assert auto.info["time_error_estimate"] < 1e-10


def test_chebyshev_integration_matrix_is_exact_for_polynomials():
    """Independent reference: exact antiderivative of a polynomial."""
    t, J, w = chebyshev_lobatto(12, 2.0)
    f = 3 * t**5 - t**2 + 1
    np.testing.assert_allclose(J @ f, t**6 / 2 - t**3 / 3 + t, rtol=1e-13, atol=1e-13)
    assert w.sum() == pytest.approx(2.0, rel=1e-14)


def test_resnet_kernel_converges_to_node_kernel_like_one_over_depth():
    """Consistency (same Goursat solver on both sides): resnet_kernel -> node_kernel with slope -1 in depth."""
    x = np.array([[math.sqrt(2), 0.0], [0.5, math.sqrt(2 - 0.25)], [-1.2, math.sqrt(2 - 1.44)]])
    K = kc.node_kernel(x, activation="softplus")
    depths = [8, 16, 32, 64]
    errs = [np.max(np.abs(kc.resnet_kernel(x, activation="softplus", depth=L).ntk - K.ntk)) for L in depths]
    slope = np.polyfit(np.log(depths), np.log(errs), 1)[0]
    assert -1.1 < slope < -0.9, (errs, slope)


def test_resnet_kernel_converges_like_one_over_depth_to_the_independent_ode_reference():
    """Independent reference: the ODE limit from tests/reference_node.py (trapezoid + Romberg), not node_kernel."""
    x = np.array([[math.sqrt(2), 0.0], [0.5, math.sqrt(2 - 0.25)]])
    ref = rn.reference_kernel("softplus", [(1.0, 1.0, x[0] @ x[1] / 2)])
    depths = [8, 16, 32, 64]
    vals = [kc.resnet_kernel(x, activation="softplus", depth=L).ntk[0, 1] for L in depths]
    errs = [abs(v - ref.ntk[0]) for v in vals]
    slope = np.polyfit(np.log(depths), np.log(errs), 1)[0]
    assert -1.1 < slope < -0.9, (errs, slope)
    assert errs[-1] < 0.01 * abs(ref.ntk[0])
    # the error is a/L + O(1/L^2): Richardson in 1/L removes the leading term
    assert abs(2 * vals[-1] - vals[-2] - ref.ntk[0]) < 0.1 * errs[-1]


@pytest.mark.parametrize("activation, L, kw", [
    ("softplus", 3, dict(T=1.0)),
    ("tanh", 6, dict(T=0.7, sigma_u=1.3, sigma_v=0.8, sigma_w=1.5)),
])
def test_resnet_kernel_matches_independent_euler_sums(activation, L, kw):
    """Independent reference: the explicit Euler-ResNet sums of tests/reference_node.py (own Gaussian rule)."""
    x = np.array([[1.0, 0.5, 0.2], [0.3, -1.4, 0.8]])
    d = x.shape[1]
    sxx, syy, sxy = x[0] @ x[0] / d, x[1] @ x[1] / d, x[0] @ x[1] / d
    rule = rn.GaussRule(rn.PHIS[activation], q_max=4.0)
    K = kc.resnet_kernel(x, activation=activation, depth=L, **kw)
    for (i, j), pair in {(0, 0): (sxx, sxx, sxx), (0, 1): (sxx, syy, sxy), (1, 1): (syy, syy, syy)}.items():
        nngp, ntk = rn.euler_resnet_kernel(activation, *pair, L=L, rule=rule, **kw)
        assert K.nngp[i, j] == pytest.approx(nngp, rel=1e-11)
        assert K.ntk[i, j] == pytest.approx(ntk, rel=1e-11)


def _erf_duals(qa, qb, c):
    """Closed-form erf duals (Williams 1997), written here: C = 2/pi asin(2c/sqrt((1+2qa)(1+2qb))), Cdot."""
    D = (1 + 2 * qa) * (1 + 2 * qb)
    return 2 / np.pi * np.arcsin(2 * c / np.sqrt(D)), 4 / np.pi / np.sqrt(D - 4 * c**2)


def test_resnet_depth_one_is_a_single_euler_step():
    r"""Independent reference: the L = 1 network's NNGP and NTK derived by hand, erf duals in closed form.

    $h_1 = h_0 + T\sigma_w W\phi(h_0)/\sqrt n$, $f = \sigma_v v\cdot\phi(h_1)/\sqrt n$:
    $S_1 = S_0 + T^2\sigma_w^2 C_0$; the gradients in $v$, $W$, $U$ give
    $\Theta = \sigma_v^2 C_1 + \sigma_v^2\dot C_1\,T^2\sigma_w^2 C_0 + \sigma_v^2\dot C_1(1 + T^2\sigma_w^2\dot C_0)\,S_0$
    ($\partial f/\partial h_0 = g_1 + \frac{T\sigma_w}{\sqrt n}\phi'(h_0)\odot W^\top g_1$, $g_1 = \frac{\sigma_v}{\sqrt n}v\odot\phi'(h_1)$).
    """
    T, sw, su, sv = 0.7, 1.1, 0.9, 1.3
    x = np.array([[1.0, 0.5], [0.2, -1.0]])
    K = kc.resnet_kernel(x, activation="erf", depth=1, T=T, sigma_w=sw, sigma_u=su, sigma_v=sv)
    S0 = su**2 * x @ x.T / 2
    C0, Cd0 = _erf_duals(np.diag(S0)[:, None], np.diag(S0)[None, :], S0)
    S1 = S0 + T**2 * sw**2 * C0
    C1, Cd1 = _erf_duals(np.diag(S1)[:, None], np.diag(S1)[None, :], S1)
    nngp = sv**2 * C1
    ntk = nngp + sv**2 * Cd1 * T**2 * sw**2 * C0 + sv**2 * Cd1 * (1 + T**2 * sw**2 * Cd0) * S0
    np.testing.assert_allclose(K.nngp, nngp, rtol=1e-12)
    np.testing.assert_allclose(K.ntk, ntk, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["node", "mlp"])
def test_gram_is_symmetric_and_positive_semidefinite(kernel):
    """Structural check (no reference value): symmetry and positive semi-definiteness."""
    X = np.vstack([sphere_points(30, 4, seed=5), 0.5 * sphere_points(4, 4, seed=6)])   # off the sphere too
    if kernel == "node":
        K = kc.node_kernel(X, activation="tanh", T=1.0)
    else:
        K = kc.mlp_kernel(X, activation="gelu", depth=2)
    for G in (K.nngp, K.ntk):
        assert np.array_equal(G, G.T)
        ev = np.linalg.eigvalsh(G)
        assert ev[0] > -1e-10 * ev[-1]


def test_result_is_immutable_and_serialisable():
    """API check: frozen arrays, to_dict and replace."""
    K = kc.node_kernel(np.eye(2) * math.sqrt(2), activation="erf")
    with pytest.raises(ValueError):
        K.ntk[0, 0] = 1.0
    d = K.to_dict()
    assert d["params"]["T"] == 1.0 and len(d["ntk"]) == 2
    assert K.replace(model="x").model == "x"


@pytest.mark.parametrize("call, match", [
    (lambda: kc.node_kernel(np.ones((2, 3)), activation="tanh", T=0), "T must be > 0"),
    (lambda: kc.node_kernel(np.ones((2, 3)), activation="tanh", T=-1), "T must be > 0"),
    (lambda: kc.node_kernel(np.ones((2, 3)), activation="tanh", sigma_w=0), "sigma_w"),
    (lambda: kc.node_kernel(np.ones((2, 3)), activation="tanh", sigma_v=float("nan")), "sigma_v"),
    (lambda: kc.node_kernel(np.array([[1.0, np.nan]]), activation="tanh"), "NaN"),
    (lambda: kc.node_kernel(np.ones((2, 2, 2)), activation="tanh"), "shape"),
    (lambda: kc.node_kernel(np.ones((2, 3)), np.ones((2, 4)), activation="tanh"), "same input dimension"),
    (lambda: kc.node_kernel(np.ones((2, 3)), activation="swoosh"), "unknown activation"),
    (lambda: kc.mlp_kernel(np.ones((2, 3)), activation="relu", depth=0), "depth"),
    (lambda: kc.resnet_kernel(np.ones((2, 3)), activation="relu", depth=2.5), "depth"),
    (lambda: kc.mlp_kernel(np.ones((2, 3)), activation="relu", depth=1, sigma_w=-1), "sigma_w"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    """Input validation: each bad argument raises an error that names it."""
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
def test_mlp_kernel_matches_monte_carlo_of_a_wide_network():
    """Independent reference: Monte Carlo of width-2048 tanh MLPs (z-score < 4)."""
    X = sphere_points(4, 3, seed=7)
    K = kc.mlp_kernel(X, activation="tanh", depth=2, sigma_w=1.5, sigma_b=0.1)
    mc = kc.monte_carlo(X, model="mlp", activation="tanh", depth=2, sigma_w=1.5, sigma_b=0.1,
                        width=2048, n_samples=40, progress=False)
    z = np.abs(mc.ntk - K.ntk) / mc.stderr.ntk
    assert np.max(z) < 4.0


@pytest.mark.parametrize("sigma_w, sigma_b", [(2**0.5, 0.0), (1.0, 0.1), (1.3, 0.4)])
def test_relu_mlp_diagonal_is_exact(sigma_w, sigma_b):
    """Issue 10: the relu NTK diagonal was 1 - 3.4e-9 (arccos of a rounded 1 - eps, or an FMA-contracted
    q*q - c*c). Reference: on the diagonal theta = 0, so C = q/2 and Cdot = 1/2 exactly (hand recursion)."""
    X = kc.data.sphere_normalise(np.random.default_rng(3).normal(size=(7, 5))) * 1.7
    depth = 3
    K = kc.mlp_kernel(X, activation="relu", depth=depth, sigma_w=sigma_w, sigma_b=sigma_b)
    v = np.sum(X * X, axis=1) / X.shape[1]
    q = sigma_w**2 * v + sigma_b**2
    theta = q.copy()
    for _ in range(depth):          # readout uses sigma_v = 1, sigma_vb = 0
        ws, bs = (1.0, 0.0) if _ == depth - 1 else (sigma_w, sigma_b)
        q_next = ws**2 * q / 2 + bs**2
        theta = q_next + ws**2 * 0.5 * theta
        q = q_next
    np.testing.assert_allclose(np.diag(K.ntk), theta, rtol=4e-16 * depth * 4)
    np.testing.assert_allclose(np.diag(K.nngp), q, rtol=4e-16 * depth * 4)


def test_memoised_time_grid_reissues_its_warnings_and_gives_the_same_gram(monkeypatch):
    """The (rule, time grid) choice is memoised across calls: a second call must warn again about the
    same shortfall (never silent) at the user's line, and return the same Gram bit for bit.  (relu now
    meets tol on its collapsed-triangle grid: the shortfall is forced by a ladder of tiny degrees.)"""
    import warnings

    from kernelcalc.kernels import ode as ode_mod
    from kernelcalc.kernels import ode_kinked_ladder

    monkeypatch.setattr(ode_kinked_ladder, "_BAND_LADDERS", ((3, 4), (3, 4), (3, 4)))

    x = kc.data.sphere_normalise(np.random.default_rng(3).normal(size=(5, 3))) * 1.1
    runs = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            K = kc.node_kernel(x, activation="relu", T=0.9)      # degrees 3, 4: the time grid cannot reach tol
        grid = [w for w in caught if "time grid" in str(w.message)]
        assert len(grid) == 1 and grid[0].filename == __file__
        runs.append(K)
    assert any(key[0].name == "relu" and key[1] == 0.9 for key in ode_mod._TIME_GRIDS)
    np.testing.assert_array_equal(runs[0].ntk, runs[1].ntk)
    assert runs[0].info["M"] == runs[1].info["M"] and runs[0].info["time_error_estimate"] > 1e-10
