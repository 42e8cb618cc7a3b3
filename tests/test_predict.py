"""kc.predict / kc.predict_from_kernels against the neural-tangents formulas written here from the
papers' equations (Lee et al. 2019, eqs. 15-16; the GP posterior), in numpy/scipy: matrix
exponentials by ``scipy.linalg.expm``, inverses by ``numpy.linalg.solve``, discrete gradient descent by
iterating the linearised recursion step by step.  The Grams are the closed-form arc-cosine kernels of
the one-hidden-layer relu MLP, written here too (Cho & Saul 2009)."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg as sl

import kernelcalc as kc


def relu_mlp_grams(X, Y):
    """NNGP and NTK of Dense(d->n, W_std=1) -> relu -> Dense(n->1, W_std=1), NTK parameterisation."""
    d = X.shape[1]
    k1 = X @ Y.T / d
    nx, ny = np.sqrt(np.sum(X * X, 1) / d), np.sqrt(np.sum(Y * Y, 1) / d)
    xu, yu = X / np.linalg.norm(X, axis=1, keepdims=True), Y / np.linalg.norm(Y, axis=1, keepdims=True)
    th = 2 * np.arctan2(np.linalg.norm(xu[:, None] - yu[None], axis=2), np.linalg.norm(xu[:, None] + yu[None], axis=2))
    cos = np.cos(th)              # the angle without arccos's loss of digits next to theta = 0
    nngp = np.outer(nx, ny) / (2 * np.pi) * (np.sin(th) + (np.pi - th) * cos)
    return nngp, nngp + k1 * (np.pi - th) / (2 * np.pi)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    n, m, d = 24, 9, 4
    X = rng.normal(size=(n + m, d))
    K, Th = relu_mlp_grams(X, X)
    tr, te = slice(0, n), slice(n, n + m)
    y = np.stack([np.sin(X[:n, 0]) + X[:n, 1], np.cos(X[:n, 2])], axis=1)
    return dict(X=X, n=n, m=m, y=y, K=(K[tr, tr], K[te, tr], K[te, te]), Th=(Th[tr, tr], Th[te, tr], Th[te, te]))


def nt_reference(G, Gtx, K, Ktx, Ktt, y, t, kernel):
    """Mean and covariance on the test set, neural-tangents' formulas (gradient_descent_mse_ensemble,
    gp_inference) with the unnormalised loss: expm and solve, no eigen-decomposition."""
    n = G.shape[0]
    if math.isinf(t):
        M = np.linalg.inv(G)
    else:
        M = np.linalg.solve(G, np.eye(n) - sl.expm(-G * t))
    mean = Gtx @ M @ y
    if kernel == "nngp":
        M2 = np.linalg.inv(G) if math.isinf(t) else np.linalg.solve(G, np.eye(n) - sl.expm(-2 * G * t))
        cov = Ktt - Gtx @ M2 @ Gtx.T
    else:
        cov = Ktt + Gtx @ M @ K @ M @ Gtx.T - Gtx @ M @ Ktx.T - Ktx @ M @ Gtx.T
    return mean, cov


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_flow_mean_and_covariance_equal_the_nt_formulas(problem, kernel):
    K, Th = problem["K"], problem["Th"]
    G = Th if kernel == "ntk" else K
    times = [0.0, 0.3, 2.5, np.inf]
    if kernel == "ntk":
        P = kc.predict_from_kernels(G[0], problem["y"], G[1], nngp=K, t=times, kernel=kernel, compute_cov=True)
    else:
        P = kc.predict_from_kernels(G[0], problem["y"], G[1], K[2], t=times, kernel=kernel, compute_cov=True)
    assert P.mean_test.shape == (4, problem["m"], 2) and P.cov_test.shape == (4, problem["m"], problem["m"])
    for i, t in enumerate(times):
        mean, cov = nt_reference(G[0], G[1], K[0], K[1], K[2], problem["y"], t, kernel)
        assert np.max(np.abs(P.mean_test[i] - mean)) < 1e-10, (kernel, t)
        assert np.max(np.abs(P.cov_test[i] - cov)) < 1e-10, (kernel, t)
        train = problem["y"] if math.isinf(t) else (np.eye(problem["n"]) - sl.expm(-G[0] * t)) @ problem["y"]
        assert np.max(np.abs(P.mean_train[i] - train)) < 1e-10
    assert np.allclose(P.mean_test[0], 0.0) and np.allclose(P.cov_test[0], K[2], atol=1e-14)    # t = 0: the prior
    assert np.array_equal(P.cov_test, np.swapaxes(P.cov_test, 1, 2))
    assert P.info["cov_min_eigenvalue"] > -P.info["error_estimate"]["cov"]
    # the diagonal variant is the diagonal of the full one
    kw = dict(nngp=(K[0], K[1], np.diag(K[2]))) if kernel == "ntk" else {}
    D = kc.predict_from_kernels(G[0], problem["y"], G[1], None if kernel == "ntk" else np.diag(K[2]), t=times,
                                kernel=kernel, compute_cov="diag", batch_size=4, **kw)
    assert np.max(np.abs(D.cov_test - np.diagonal(P.cov_test, axis1=1, axis2=2))) < 1e-12
    assert np.max(np.abs(D.mean_test - P.mean_test)) < 1e-12


def test_time_is_neural_tangents_time_scaled_by_lr_over_targets(problem):
    """nt: exp(-Theta * lr * t_nt / y.size) (loss 1/2 mean); ours: t = lr * t_nt / y.size."""
    G, y = problem["Th"], problem["y"]
    lr, t_nt = 0.5, 40.0
    n = G[0].shape[0]
    ref = G[1] @ np.linalg.solve(G[0], np.eye(n) - sl.expm(-G[0] * lr * t_nt / y.size)) @ y
    P = kc.predict_from_kernels(G[0], y, G[1], t=lr * t_nt / y.size)
    assert np.max(np.abs(P.mean_test[0] - ref)) < 1e-12


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_discrete_gradient_descent_equals_the_iterated_recursion(problem, kernel):
    K, Th = problem["K"], problem["Th"]
    G = Th if kernel == "ntk" else K
    y, n = problem["y"], problem["n"]
    eta = 1.0 / np.linalg.eigvalsh(G[0])[-1]
    steps = [0, 1, 7, 40]
    # f_{s+1} = f_s - eta * Theta_{.X} (f_s(X) - y): f_s(x) = f_0(x) - Gs (f_0(X) - y), Gs by the recursion
    Gs, Ms, f_tr, f_te = np.zeros_like(G[1]), np.eye(n), np.zeros_like(y), np.zeros((G[1].shape[0], 2))
    ref = {}
    for s in range(max(steps) + 1):
        if s in steps:
            ref[s] = (f_te.copy(), f_tr.copy(), K[2] - Gs @ K[1].T - K[1] @ Gs.T + Gs @ K[0] @ Gs.T)
        f_te = f_te - eta * G[1] @ (f_tr - y)
        f_tr = f_tr - eta * G[0] @ (f_tr - y)
        Gs = Gs + eta * G[1] @ Ms
        Ms = Ms @ (np.eye(n) - eta * G[0])
    kw = dict(nngp=K) if kernel == "ntk" else dict(K_test_test=K[2])
    P = kc.predict_from_kernels(G[0], y, G[1], t=steps, kernel=kernel, compute_cov=True, learning_rate=eta, **kw)
    for i, s in enumerate(steps):
        assert np.max(np.abs(P.mean_test[i] - ref[s][0])) < 1e-10
        assert np.max(np.abs(P.mean_train[i] - ref[s][1])) < 1e-10
        assert np.max(np.abs(P.cov_test[i] - ref[s][2])) < 1e-10
    with pytest.raises(kc.KernelcalcInputError, match="whole numbers"):
        kc.predict_from_kernels(G[0], y, G[1], t=2.5, learning_rate=eta)


def test_predict_on_the_mlp_equals_the_closed_form_reference(problem):
    """kc.predict computes the kernels itself (model="mlp", relu, depth 1) and matches the reference."""
    X, n = problem["X"], problem["n"]
    P = kc.predict(X[:n], problem["y"], X[n:], model="mlp", activation="relu", depth=1, t=[1.0, np.inf],
                   compute_cov="diag")
    K, Th = problem["K"], problem["Th"]
    for i, t in enumerate([1.0, np.inf]):
        mean, cov = nt_reference(Th[0], Th[1], K[0], K[1], K[2], problem["y"], t, "ntk")
        assert np.max(np.abs(P.mean_test[i] - mean)) < 1e-10
        assert np.max(np.abs(P.cov_test[i] - np.diag(cov))) < 1e-10
    assert P.info["kernel_info"] and P.info["solver"].startswith("eigh")


def test_duplicated_training_row_warns_and_interpolates(problem):
    X, y = problem["X"][:12].copy(), problem["y"][:12].copy()
    X[7], y[7] = X[3], y[3]                                   # a duplicated training point: K exactly singular
    K, Th = relu_mlp_grams(X, X)
    Kt, Tht = relu_mlp_grams(X[3:4] + 0.0, X)                # a test point on the duplicate
    with pytest.warns(kc.KernelcalcAccuracyWarning, match="singular to working precision"):
        P = kc.predict_from_kernels(Th, y, Tht, nngp=(K, Kt, np.diag(relu_mlp_grams(X[3:4], X[3:4])[0])),
                                    t=[10.0, 1e6, np.inf], compute_cov="diag")
    assert np.isfinite(P.mean_test).all() and np.isfinite(P.cov_test).all() and np.isfinite(P.mean_train).all()
    assert abs(P.info["lambda_min"]) < 1e-12 * P.info["lambda_max"]
    np.testing.assert_allclose(P.mean_test[2, 0], y[3], atol=1e-8)      # interpolates the duplicate's label
    np.testing.assert_allclose(P.mean_train[2, [3, 7]], y[[3, 3]], atol=1e-8)
    np.testing.assert_allclose(P.mean_test[1, 0], y[3], atol=1e-6)      # long finite training too
    assert abs(P.cov_test[2, 0]) < 1e-8


def test_krylov_mean_equals_the_reference_and_batches_change_nothing(problem):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(110, 6))
    K, Th = relu_mlp_grams(X, X)
    y = np.sin(X[:100, 0])
    times = [0.5, 20.0, np.inf]
    P = kc.predict_from_kernels(Th[:100, :100], y, Th[100:, :100], t=times, method="krylov", diag_reg=1e-4,
                                batch_size=3)
    A = Th[:100, :100] + 1e-4 * np.eye(100)
    for i, t in enumerate(times):
        M = np.linalg.inv(A) if math.isinf(t) else np.linalg.solve(A, np.eye(100) - sl.expm(-A * t))
        ref = Th[100:, :100] @ M @ y
        assert np.max(np.abs(P.mean_test[i, :, 0] - ref)) < 1e-9
        assert np.max(np.abs(P.mean_test[i, :, 0] - ref)) <= P.info["error_estimate"]["mean_per_time"][i] + 1e-12
    assert P.info["solver"].startswith("krylov") and all(r["converged"] for r in P.info["lanczos"])
    E = kc.predict_from_kernels(Th[:100, :100], y, Th[100:, :100], t=times, method="eigh", diag_reg=1e-4,
                                batch_size=4)
    assert np.max(np.abs(E.mean_test - P.mean_test)) < 1e-9


def test_memmap_test_gram_is_read_in_batches(problem, tmp_path):
    Th = problem["Th"]
    mm = np.lib.format.open_memmap(tmp_path / "ktx.npy", mode="w+", dtype=np.float64, shape=Th[1].shape)
    mm[:] = Th[1]
    a = kc.predict_from_kernels(Th[0], problem["y"], mm, t=1.0, batch_size=2)
    b = kc.predict_from_kernels(Th[0], problem["y"], Th[1], t=1.0)
    assert np.array_equal(a.mean_test, b.mean_test) or np.max(np.abs(a.mean_test - b.mean_test)) < 1e-13
    d = a.to_dict()
    assert d["times"] == [1.0] and len(d["mean_test"]) == 1


@pytest.mark.parametrize("call, match", [
    (lambda p: kc.predict_from_kernels(p["Th"][0], p["y"][:-1], p["Th"][1]), "y_train has 23 rows"),
    (lambda p: kc.predict_from_kernels(p["Th"][0], np.where(np.arange(24) == 5, np.nan, 1.0)), "NaN"),
    (lambda p: kc.predict_from_kernels(p["Th"][0], p["y"], p["Th"][1], t=[1.0, -0.5]), "t must be >= 0"),
    (lambda p: kc.predict_from_kernels(p["Th"][0], p["y"], p["Th"][1], compute_cov=True), "needs the NNGP"),
    (lambda p: kc.predict_from_kernels(p["Th"][0], p["y"], p["Th"][1], kernel="gp"), "kernel must be"),
    (lambda p: kc.predict(p["X"][:24], p["y"], np.ones((3, 5)), model="mlp", activation="relu", depth=1),
     "X_test has input dimension 5 but X_train has 4"),
    (lambda p: kc.predict(p["X"][:24], p["y"], model="node", activation="relu", depth=1), "depth does not apply"),
    (lambda p: kc.predict(p["X"][:24], p["y"], model="mlp", activation="relu", depth=1, sigma_u=1.0),
     "sigma_u does not apply"),
])
def test_bad_input_is_one_clear_line(problem, call, match):
    with pytest.raises(kc.KernelcalcInputError, match=match) as err:
        call(problem)
    assert "\n" not in str(err.value)


def test_prediction_is_immutable(problem):
    P = kc.predict_from_kernels(problem["Th"][0], problem["y"], problem["Th"][1], t=1.0)
    with pytest.raises(ValueError):
        P.mean_test[0, 0, 0] = 1.0
    with pytest.raises(Exception):
        P.kernel = "nngp"


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_cholesky_end_of_training_equals_the_reference(problem, kernel):
    K, Th = problem["K"], problem["Th"]
    G = Th if kernel == "ntk" else K
    kw = dict(nngp=K) if kernel == "ntk" else dict(K_test_test=K[2])
    P = kc.predict_from_kernels(G[0], problem["y"], G[1], t=None, kernel=kernel, compute_cov=True, method="cholesky",
                                **kw)
    assert P.info["solver"].startswith("cholesky")
    mean, cov = nt_reference(G[0], G[1], K[0], K[1], K[2], problem["y"], math.inf, kernel)
    assert np.max(np.abs(P.mean_test[0] - mean)) < 1e-10
    assert np.max(np.abs(P.cov_test[0] - cov)) < 1e-10
    with pytest.raises(kc.KernelcalcInputError, match="t = inf"):
        kc.predict_from_kernels(G[0], problem["y"], G[1], t=1.0, method="cholesky")
    # a duplicated row: no Cholesky; the eigen-decomposition's pseudo-inverse takes over, and says so
    X = problem["X"][:10].copy()
    X[4] = X[2]
    K2, T2 = relu_mlp_grams(X, X)
    with pytest.warns(kc.KernelcalcAccuracyWarning):
        Q = kc.predict_from_kernels(T2, np.arange(10.0) * (np.arange(10) != 4) + 2.0 * (np.arange(10) == 4), T2[:3],
                                    t=None, method="cholesky")
    assert "cholesky_fallback" in Q.info and np.isfinite(Q.mean_test).all()


def test_error_estimate_bounds_the_error_against_a_50_digit_reference():
    """An ill-conditioned Gram (close training points): the t = inf mean against mpmath at 50 digits."""
    import mpmath

    rng = np.random.default_rng(11)
    X = rng.normal(size=(20, 3))
    X[10:16] = X[:6] + 1e-4 * rng.normal(size=(6, 3))
    K, Th = relu_mlp_grams(X, X)
    y = np.sin(X[:16, 0])
    mpmath.mp.dps = 50
    A = mpmath.matrix(Th[:16, :16].tolist())
    z = mpmath.lu_solve(A, mpmath.matrix(y.tolist()))
    ref = np.array([float(sum(mpmath.mpf(Th[16 + i, j]) * z[j] for j in range(16))) for i in range(4)])
    # the NTK-GP variance at t = inf: k_xx + p^T K p - 2 p^T k_x, p = A^{-1} theta_x, at 50 digits
    Km = mpmath.matrix(K[:16, :16].tolist())
    var = []
    for i in range(4):
        p = mpmath.lu_solve(A, mpmath.matrix(Th[16 + i, :16].tolist()))
        kx = mpmath.matrix(K[16 + i, :16].tolist())
        var.append(float(K[16 + i, 16 + i] + (p.T * Km * p)[0] - 2 * (p.T * kx)[0]))
    for method in ("eigh", "cholesky"):
        P = kc.predict_from_kernels(Th[:16, :16], y, Th[16:, :16], t=None, method=method, compute_cov="diag",
                                    nngp=(K[:16, :16], K[16:, :16], np.diag(K)[16:]))
        err = np.max(np.abs(P.mean_test[0, :, 0] - ref))
        est = P.info["error_estimate"]["mean"]
        assert P.info["condition_number"] > 1e6
        assert err <= est < 1e4 * max(err, 1e-15), (method, err, est)
        err = np.max(np.abs(P.cov_test[0] - var))
        est = P.info["error_estimate"]["cov"]
        assert err <= est < 1e4 * max(err, 1e-15), (method, err, est)


def test_too_large_a_learning_rate_is_refused_at_t_inf_and_warned_at_finite_t(problem):
    G, y = problem["Th"], problem["y"]
    eta = 2.5 / np.linalg.eigvalsh(G[0])[-1]
    for method in ("eigh", "krylov"):
        with pytest.raises(kc.KernelcalcInputError, match="diverges"):
            kc.predict_from_kernels(G[0], y, G[1], t=[3, np.inf], learning_rate=eta, method=method)
        with pytest.warns(kc.KernelcalcAccuracyWarning, match="diverges"):
            P = kc.predict_from_kernels(G[0], y, G[1], t=[3], learning_rate=eta, method=method)
        assert np.isfinite(P.mean_test).all()


def test_auto_above_the_crossover_takes_lanczos_with_cholesky_at_t_inf(problem, monkeypatch):
    import kernelcalc.inference.engine as engine

    monkeypatch.setattr(engine, "KRYLOV_CROSSOVER", 10)
    G, y = problem["Th"], problem["y"]
    times = [0.5, np.inf, 3.0]
    P = kc.predict_from_kernels(G[0], y, G[1], t=times)
    assert "Cholesky at t = inf" in P.info["solver"]
    for i, t in enumerate(times):
        mean, _ = nt_reference(G[0], G[1], problem["K"][0], problem["K"][1], problem["K"][2], y, t, "ntk")
        assert np.max(np.abs(P.mean_test[i] - mean)) < 1e-10
        assert np.max(np.abs(P.mean_test[i] - mean)) <= P.info["error_estimate"]["mean_per_time"][i]
    C = kc.predict_from_kernels(G[0], y, G[1], nngp=problem["K"], t=None, compute_cov="diag")
    assert C.info["solver"].startswith("cholesky")


def test_large_n_covariance_path_equals_the_reference_and_its_bound_covers_the_error(monkeypatch):
    """The data-set-scale NTK-GP variances (original basis, two products per time, the cheaper error bound
    max phi_t ||K P - k_x||) against neural-tangents' dense eigen-formulas written here (numpy.linalg.eigh; expm
    and solve at t = 1) at N = 200, 8 times, and the reported bounds cover the measured errors."""
    import kernelcalc.inference.spectral as spectral

    monkeypatch.setattr(spectral, "EXACT_COV_BOUND_MAX", 0)
    rng = np.random.default_rng(3)
    n, m = 200, 20
    X = rng.normal(size=(n + m, 5))
    K, Th = relu_mlp_grams(X, X)
    y = np.sin(X[:n, 0]) + X[:n, 1] * X[:n, 2]
    times = [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0, np.inf]
    P = kc.predict_from_kernels(Th[:n, :n], y, Th[n:, :n], nngp=(K[:n, :n], K[n:, :n], np.diag(K)[n:]), t=times,
                                compute_cov="diag", batch_size=16, method="eigh")
    # the same in the eigenbasis (G = V^T K V), which the cost model picks for many test points and times
    monkeypatch.setattr(spectral._Dense, "want_Kt", lambda self, m: setattr(self, "Kt", self.es.V.T @ (
        self.nngp_train @ self.es.V)))
    G = kc.predict_from_kernels(Th[:n, :n], y, Th[n:, :n], nngp=(K[:n, :n], K[n:, :n], np.diag(K)[n:]), t=times,
                                compute_cov="diag", batch_size=16, method="eigh")
    np.testing.assert_allclose(G.cov_test, P.cov_test, rtol=0, atol=1e-11)
    # the reference: neural-tangents' eigen-formulas (numpy.linalg.eigh, its predict_fn's einsums), and expm at t = 1
    lam, V = np.linalg.eigh(Th[:n, :n])
    for i, t in enumerate(times):
        f = 1.0 / lam if math.isinf(t) else -np.expm1(-lam * t) / lam
        Pt = V @ (f[:, None] * (V.T @ Th[n:, :n].T))                     # phi_t(Theta) Theta_{X x}
        mean = Pt.T @ y
        var = np.diag(K)[n:] + np.einsum("nm,nm->m", Pt, K[:n, :n] @ Pt) - 2 * np.einsum("nm,mn->m", Pt, K[n:, :n])
        if t == 1.0:
            mref, cref = nt_reference(Th[:n, :n], Th[n:, :n], K[:n, :n], K[n:, :n], K[n:, n:], y, t, "ntk")
            assert np.max(np.abs(mref - mean)) < 1e-10 and np.max(np.abs(np.diag(cref) - var)) < 1e-10
        em, ec = np.max(np.abs(P.mean_test[i, :, 0] - mean)), np.max(np.abs(P.cov_test[i] - var))
        assert em <= 1e-10 and ec <= 1e-10, (t, em, ec)
        assert em <= P.info["error_estimate"]["mean_per_time"][i] and ec <= P.info["error_estimate"]["cov_per_time"][i]


def test_consumed_gram_gives_the_same_decomposition(problem):
    from kernelcalc.inference.spectral import Eigensystem

    G = np.array(problem["Th"][0])
    G.setflags(write=False)
    ref = Eigensystem(G)
    es = Eigensystem(G, consume=True)
    assert not np.array_equal(G, problem["Th"][0])          # overwritten in place, not copied
    np.testing.assert_array_equal(es.lam, ref.lam)
    np.testing.assert_array_equal(np.abs(es.V), np.abs(ref.V))


def test_progress_bars_follow_the_stages(problem, capsys):
    K, Th = problem["K"], problem["Th"]
    kc.predict_from_kernels(Th[0], problem["y"], Th[1], nngp=K, t=[1.0, 2.0, np.inf], compute_cov="diag",
                            batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "eigen-decomposition of the 24 x 24 Gram" in err and "test points x 3 times" in err and "/27" in err
    kc.predict_from_kernels(Th[0], problem["y"], Th[1], nngp=K, t=[1.0], compute_cov="diag", progress=False)
    assert capsys.readouterr().err == ""


def test_lanczos_truncation_bound_covers_the_error_and_is_tight():
    """The a-posteriori bound of the Lanczos truncation error of phi_t(A) y (gradient flow) against the exact
    value from numpy.linalg.eigh, after 5, 10 and 20 steps: it covers the error and is within 100x of it."""
    from kernelcalc.inference.krylov import lanczos_phi

    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 5))
    _, Th = relu_mlp_grams(X, X)
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    lam, V = np.linalg.eigh(Th)
    times = [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0]
    for steps in (5, 10, 20):
        Z, _, info = lanczos_phi(lambda v: Th @ v, y, times, None, tol=1e-30, max_iter=steps)
        for k, t in enumerate(times):
            exact = V @ (-np.expm1(-lam * t) / lam * (V.T @ y))
            err, bound, floor = np.linalg.norm(Z[k] - exact), info["bound"][k], 1e-13 * np.linalg.norm(exact)
            assert err <= bound + floor, (steps, t, err, bound)
            assert bound <= 100 * err + floor, (steps, t, err, bound)
    with pytest.warns(kc.KernelcalcAccuracyWarning, match="truncation bound"):
        P = kc.predict_from_kernels(Th[:150, :150], y[:150], Th[150:, :150], t=times, method="krylov",
                                    krylov_max_iter=12)
    lam, V = np.linalg.eigh(Th[:150, :150])
    for k, t in enumerate(times):
        ref = Th[150:, :150] @ (V @ (-np.expm1(-lam * t) / lam * (V.T @ y[:150])))
        assert np.max(np.abs(P.mean_test[k, :, 0] - ref)) <= P.info["error_estimate"]["mean_per_time"][k]


def test_an_on_disk_train_gram_is_read_in_row_blocks_or_loaded_for_the_dense_engine(problem, tmp_path):
    zarr = pytest.importorskip("zarr")
    G, y = problem["Th"], problem["y"]
    Z = zarr.open_array(str(tmp_path / "g.zarr"), mode="w", shape=G[0].shape, chunks=(8, 24), dtype="f8")
    Z[:] = G[0]
    ref = kc.predict_from_kernels(G[0], y, G[1], t=[1.0, np.inf], method="eigh")
    for method in ("auto", "eigh", "krylov"):
        P = kc.predict_from_kernels(Z, y, G[1], t=[1.0, np.inf], method=method)
        assert np.max(np.abs(P.mean_test - ref.mean_test)) <= 1e-10, method
    Z[3, 5] = np.nan
    for method in ("eigh", "krylov"):
        with pytest.raises(kc.KernelcalcInputError, match="NaN"):
            kc.predict_from_kernels(Z, y, G[1], t=[1.0], method=method)
