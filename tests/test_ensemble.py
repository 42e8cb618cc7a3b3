"""Trained finite-width ensembles against the infinite-width predictions (issue 18, part 4).

References that share no code with what they test:

- the NTK-GP mean and covariance of Lee et al. 2019 written here in numpy from the kernel Grams
  (eigen-decomposition of the train NTK; gradient descent as $(I-\\eta\\Theta)^k$);
- the trained networks themselves (jax/diffrax, nothing of the kernel code): their ensemble mean and
  variance must sit within a few standard errors of the prediction;
- the standard errors checked by Monte Carlo over independent replications (numpy only);
- gradient descent converging to gradient flow at first order (fitted slope), which pins the time
  convention t = k * learning_rate between the two.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError


def _ntk_gp(ntk, nngp, N, steps, lr):
    r"""Lee et al. 2019, eqs. 15-16, for gradient descent: $A_k=\Theta_{*X}\Theta^{-1}(I-(I-\eta\Theta)^k)$,
    mean $A_ky$, covariance $K_{**}+A_kKA_k^\top-A_kK_{X*}-K_{*X}A_k^\top$."""
    Th, Ts = ntk[:N, :N], ntk[N:, :N]
    K, Ks, Kss = nngp[:N, :N], nngp[N:, :N], nngp[N:, N:]
    lam, V = np.linalg.eigh(Th)
    out = []
    for k in steps:
        A = Ts @ (V * ((1.0 - (1.0 - lr * lam) ** k) / lam)) @ V.T
        out.append((A, Kss + A @ K @ A.T - A @ Ks.T - Ks @ A.T))
    return out


def _data(d=20, n_train=20, n_test=10, seed=1):
    """20 mutually orthogonal training points on the sphere |x|^2 = d (a well-conditioned NTK) and random
    test points on the same sphere."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    X = np.vstack([Q[:n_train], rng.normal(size=(n_test, d))])
    X *= np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)
    return X[:n_train], rng.normal(size=n_train), X[n_train:]


# the default acceptance run: softplus Neural ODE (RK4, one step on [0, T]), width 512, 64 networks
NODE = dict(model="node", activation="softplus", T=0.5, sigma_u=4.0)


@pytest.fixture(scope="module")
def node_run():
    X, y, Xt = _data()
    K = kc.node_kernel(np.vstack([X, Xt]), activation="softplus", T=NODE["T"], sigma_u=NODE["sigma_u"])
    lam = np.linalg.eigvalsh(K.ntk[:20, :20])
    lr = 1.0 / (4.0 * lam[0])                     # 16 steps reach t = 4 / lambda_min
    steps = [1, 4, 16]                            # t = 25 %, 100 %, 400 % of 1 / lambda_min
    res = kc.compare_predictions(X, y, Xt, **NODE, widths=[512], n_networks=64, learning_rate=lr, steps=steps,
                                 solver="rk4", solver_steps=1, seed=0)
    return dict(X=X, y=y, Xt=Xt, K=K, lam=lam, lr=lr, steps=steps, res=res)


def test_node_ensemble_within_standard_errors_of_the_prediction(node_run):
    r = node_run["res"]
    e = r.ensembles[0]
    lr, lam = node_run["lr"], node_run["lam"]
    assert e.steps == (0, 1, 4, 16) and r.times == e.times
    np.testing.assert_allclose(np.asarray(e.times[1:]) * lam[0], [0.25, 1.0, 4.0], rtol=1e-12)
    assert lr * lam[-1] < 2.0                      # GD is stable on the infinite-width kernel
    assert not e.failed
    # the prediction inside compare_predictions equals the numpy NTK-GP written here
    K = node_run["K"]
    ref = _ntk_gp(K.ntk, K.nngp, 20, e.steps, lr)
    mean_ref = np.array([A @ node_run["y"] for A, _ in ref])
    var_ref = np.array([np.diag(C) for _, C in ref])
    np.testing.assert_allclose(r.mean_pred, mean_ref, atol=1e-8 * np.abs(mean_ref).max())
    np.testing.assert_allclose(r.var_pred, var_ref, rtol=1e-8)
    # the trained ensemble against it, in standard errors
    z_mean = (e.mean_test - mean_ref) / e.mean_test_stderr
    z_var = (e.var_test - var_ref) / e.var_test_stderr
    np.testing.assert_allclose(r.z_mean[0], z_mean, rtol=1e-6, atol=1e-6)
    print("max |z mean| per time", np.abs(z_mean).max(axis=1), "max |z var|", np.abs(z_var).max(axis=1))
    assert np.abs(z_mean).max() < 4.0
    assert np.abs(z_var).max() < 4.0               # the Monte-Carlo error of a variance (64 samples)
    # on the training inputs too, where the mean moves from 0 to y: (I - (I - lr*Theta)^k) y
    lam_t, V = np.linalg.eigh(K.ntk[:20, :20])
    y = node_run["y"]
    for i, k in enumerate(e.steps):
        m_train = V @ ((1.0 - (1.0 - lr * lam_t) ** k) * (V.T @ y))
        assert np.abs((e.mean_train[i] - m_train) / e.mean_train_stderr[i]).max() < 4.0
    # not trivially passing: the training moved the train means and the test variances by many standard errors
    assert np.median(np.abs(e.mean_train[-1] - e.mean_train[0]) / e.mean_train_stderr[-1]) > 4.0
    assert np.median((var_ref[0] - var_ref[-1]) / e.var_test_stderr[-1]) > 4.0
    assert e.loss[-1] < 1e-2 * e.loss[0]
    # the variance shrank (training removes the initial spread along the data) and the prediction says how much
    assert np.all(var_ref[-1] < var_ref[0]) and np.all(e.var_test[-1] < e.var_test[0])


def test_ensemble_result_is_immutable_and_serialisable(node_run):
    import json

    r = node_run["res"]
    e = r.ensembles[0]
    assert e.outputs_test.shape == (4, 64, 10) and e.mean_test.shape == (4, 10)
    with pytest.raises(ValueError):
        e.mean_test[0, 0] = 1.0
    d = json.loads(json.dumps(r.to_dict()))
    assert d["ensembles"][0]["params"]["width"] == 512 and d["params"]["n_networks"] == 64
    assert "max|z mean|" in r.summary() and "trained by gradient descent" in e.summary()


def test_standard_errors_match_monte_carlo():
    """se(mean) and se(var) of ensemble_stats against the spread of the estimates over 4000 replications
    (non-Gaussian samples: the fourth-moment formula matters)."""
    from kernelcalc.training.ensemble import ensemble_stats

    rng = np.random.default_rng(0)
    M, reps = 32, 4000
    F = rng.uniform(-np.sqrt(3), np.sqrt(3), size=(reps, M, 1))   # sigma^2 = 1, mu4 = 9/5 (Gaussian: 3)
    mean, var, se_mean, se_var = ensemble_stats(F)
    sd_mean, sd_var = mean.std(), var.std()
    assert abs(np.sqrt(np.mean(se_mean**2)) / sd_mean - 1) < 0.05
    # exact: Var s^2 = mu4/M - sigma^4 (M-3)/(M(M-1)) = (9/5 - 29/31)/32, far from the Gaussian 2/(M-1)
    exact = np.sqrt((9 / 5 - 29 / 31) / 32)
    assert abs(sd_var / exact - 1) < 0.05 and abs(np.sqrt(2 / 31) / exact - 1) > 0.4
    assert abs(np.sqrt(np.mean(se_var**2)) / sd_var - 1) < 0.1


def test_gradient_descent_converges_to_the_flow_at_first_order():
    """The time convention: k steps of size eta are time t = k*eta of the flow (gap ~ eta)."""
    X, y, Xt = _data(d=4, n_train=4, n_test=2, seed=3)
    kw = dict(model="mlp", activation="tanh", depth=1, width=16, n_networks=3, seed=5)
    flow = kc.trained_ensemble(X, y, Xt, t=[0.4], flow_rtol=1e-10, flow_atol=1e-12, **kw)
    gaps = []
    for k in (8, 16, 32):
        gd = kc.trained_ensemble(X, y, Xt, learning_rate=0.4 / k, steps=[k], **kw)
        assert gd.times == pytest.approx((0.4,))
        gaps.append(np.abs(gd.outputs_test - flow.outputs_test).max())
    slope = np.polyfit(np.log([8, 16, 32]), np.log(gaps), 1)[0]
    assert -1.2 < slope < -0.8, (gaps, slope)
    assert flow.info["ode_steps"] > 0 and not flow.failed


def test_bad_input_is_one_clear_error():
    X, y, Xt = _data(d=4, n_train=4, n_test=2)
    kw = dict(width=4, n_networks=2)
    cases = [
        (dict(t=[1.0], steps=[2]), "steps applies to gradient descent"),
        (dict(learning_rate=0.1, t=[1.0]), "give steps="),
        (dict(learning_rate=0.1), "give steps="),
        ({}, "give t="),
        (dict(t=[-1.0]), "t must be >= 0"),
        (dict(t=[np.inf]), "finite"),
        (dict(learning_rate=0.1, steps=[1.5]), "steps must be"),
        (dict(t=1.0, n_networks=1), "n_networks"),
        (dict(t=1.0, model="mlp", depth=1, solver_steps=8), "solver_steps does not apply"),
        (dict(t=1.0, model="resnet", depth=2, solver="tsit5"), "solver does not apply"),
        (dict(t=1.0, model="mlp", depth=1, sigma_u=2.0), "sigma_u"),
        (dict(t=1.0, model="deq", T=2.0), "T does not apply"),
    ]
    for extra, msg in cases:
        args = dict(kw, **extra)
        with pytest.raises(KernelcalcInputError, match=msg):
            kc.trained_ensemble(X, y, Xt, **args)
    with pytest.raises(KernelcalcInputError, match="y_train has 3 entries"):
        kc.trained_ensemble(X, y[:3], Xt, t=1.0, **kw)
    with pytest.raises(KernelcalcInputError, match="X_test has d=3"):
        kc.trained_ensemble(X, y, Xt[:, :3], t=1.0, **kw)
    with pytest.raises(KernelcalcInputError, match="widths"):
        kc.compare_predictions(X, y, Xt, widths=[0], t=1.0, n_networks=2)


# ----------------------------------------------------------------------------- slow: the other models, and width
SLOW_MODELS = {
    # untied Neural ODE: 8 Euler-Maruyama steps (kernel bias against the continuum limit about 0.6 %)
    "node_untied": dict(model="node_untied", activation="softplus", T=0.5, sigma_u=4.0, solver_steps=8, width=512),
    "resnet8": dict(model="resnet", activation="softplus", T=0.5, sigma_u=4.0, depth=8, width=512),
    # the DEQ solves an n x n Newton system per input and step: width 64
    "deq": dict(model="deq", activation="softplus", sigma_w=0.5, sigma_u=4.0, width=64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW_MODELS))
def test_other_models_within_standard_errors_of_the_prediction(name):
    X, y, Xt = _data()
    kw = dict(SLOW_MODELS[name])
    width = kw.pop("width")
    lam_min = kc.predict(X, y, t=0.0, **{k: v for k, v in kw.items() if k != "solver_steps"}).info["lambda_min"]
    lr = 1.0 / (4.0 * lam_min)                     # t = 25 %, 100 %, 400 % of 1 / lambda_min at steps 1, 4, 16
    r = kc.compare_predictions(X, y, Xt, **kw, widths=[width], n_networks=64, learning_rate=lr, steps=[1, 4, 16])
    print(name, r.summary())
    e = r.ensembles[0]
    assert not e.failed
    assert np.max(np.abs(r.z_mean)) < 4.0
    assert np.max(np.abs(r.z_var)) < 4.0
    assert e.loss[-1] < 1e-2 * e.loss[0]


@pytest.mark.slow
def test_gap_to_the_infinite_width_dynamics_closes_like_one_over_root_width():
    """Each network against the kernel dynamics from its own initial outputs (no Monte-Carlo floor):
    the RMS gap must fall with width at the fitted rate of about -1/2."""
    X, y, Xt = _data()
    lam = np.linalg.eigvalsh(kc.node_kernel(X, activation="softplus", T=NODE["T"], sigma_u=NODE["sigma_u"]).ntk)
    r = kc.compare_predictions(X, y, Xt, **NODE, widths=[64, 128, 256, 512], n_networks=16,
                               learning_rate=1.0 / (4.0 * lam[0]), steps=[1, 4, 16], solver_steps=1)
    print(r.summary())
    gap = np.asarray(r.gap)
    assert np.all(np.diff(gap) < 0)
    assert gap[-1] < 0.5 * gap[0]
    assert -0.75 < r.gap_rate < -0.3


def test_a_diverging_run_is_reported_not_raised():
    X, y, Xt = _data(d=4, n_train=4, n_test=2)
    e = kc.trained_ensemble(X, 100 * y, Xt, model="mlp", activation="identity", depth=1, width=4, n_networks=2,
                            learning_rate=50.0, steps=[0, 200])
    assert e.failed and "non-finite outputs" in e.failure and "reduce learning_rate" in e.failure
    assert np.all(np.isfinite(e.mean_test[0])) and not np.all(np.isfinite(e.mean_test[-1]))
