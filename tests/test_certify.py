"""Certified lambda_min: validity and tightness against exactly known spectra and independent references.

References share no code with kernelcalc.studies.certify: matrices with an exactly known spectrum built
from a Hadamard matrix in integer arithmetic; a numpy arc-cosine recursion written here for the
relu MLP; mpmath at 40 digits for single entries; an mpmath double integral for the identity
Neural ODE; ``numpy.linalg.eigvalsh`` for lambda_min.
"""

import json

import mpmath as mp
import numpy as np
import pytest
from click.testing import CliRunner

import kernelcalc
import kernelcalc.kernels
from kernelcalc import (CertifiedLambdaMin, Kernel, KernelcalcInputError, certify_lambda_min, certify_ntk, check,
                        node_kernel, rigorous_kernel)
from kernelcalc._validation import as_input_pair
from kernelcalc.studies.certify import ESTIMATE, RIGOROUS, verified_cholesky_bound
from kernelcalc.cli import main
from kernelcalc.data import sphere_normalise


def sylvester(n):
    H = np.array([[1]], dtype=np.int64)
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


def exact_spectrum(lam_num, denom=1):
    r"""$A = H\,\mathrm{diag}(\lambda)\,H/n$ with $\lambda$ = ``lam_num / denom`` (integers over a power of two).

    $H^2 = nI$, so the eigenvalues are exactly $\lambda$ (column $k$ of $H$ the eigenvector of
    $\lambda_k$); the entries are integers over $n\cdot$``denom`` (powers of two), formed in integer
    arithmetic and exactly representable."""
    lam_num = np.asarray(lam_num, dtype=np.int64)
    n = lam_num.size
    H = sylvester(n)
    M = H @ np.diag(lam_num) @ H                # exact integers
    assert np.abs(M).max() < 2**52
    A = M.astype(np.float64) / (n * denom)      # division by a power of two: exact
    assert np.array_equal((A * (n * denom)).astype(np.int64), M)
    return A, H


# ------------------------------------------------------------------------------- exact spectra
def test_exact_spectrum_bound_is_valid_and_tight():
    n = 64
    lam = 3 + 2 * np.arange(n)                  # lambda_min = 3 (eigenvector: all ones)
    lam[-1] = 2**30                             # a wide spectrum: ||A|| = 2^30
    A, _ = exact_spectrum(lam)
    res = certify_lambda_min(A)
    assert isinstance(res, CertifiedLambdaMin) and res.certificate == RIGOROUS
    assert res.lower_bound <= 3.0
    # tight up to the rounding term ~ 3 (n+3) u tr(A) = 3 * 67 * 2^-53 * 2^30 * ~1 ~ 2.4e-5
    assert 3.0 - res.lower_bound < 1e-4
    assert res.positive_definite and res.reason is None


def test_weyl_entry_radius_is_valid_and_tight():
    # K_inf = A - r * 1 1^T is within r of A entrywise and lambda_min(K_inf) = 3 - n r exactly
    n, r = 64, 2.0**-20
    A, _ = exact_spectrum(3 + 2 * np.arange(n))
    truth = 3.0 - n * r
    assert np.linalg.eigvalsh(A - r)[0] == pytest.approx(truth, abs=1e-12)
    res = certify_lambda_min(A, entry_radius=r, radius_kind="estimate")
    assert res.certificate == ESTIMATE and res.entry_radius == r
    assert res.perturbation_bound == n * r
    assert res.lower_bound <= truth
    assert truth - res.lower_bound < 1e-10


@pytest.mark.parametrize("sign", [1, -1])
def test_plus_minus_1e_12_are_told_apart(sign):
    # lambda_min = +-2^-40 = +-9.1e-13 * ||A|| (||A|| = 1): the float eigenvalues look alike
    n, denom = 16, 2**40
    lam = np.full(n, denom)
    lam[0] = sign
    A, _ = exact_spectrum(lam, denom)
    truth = sign * 2.0**-40
    res = certify_lambda_min(A)
    assert res.lower_bound <= truth
    if sign > 0:
        assert res.positive_definite and res.lower_bound >= 0.5 * truth
    else:
        assert not res.positive_definite and res.reason and "not proved" in res.reason
        # the verified Cholesky does not accept the indefinite matrix itself
        bound = verified_cholesky_bound(A, 0.0)
        assert bound is None or bound <= 0


def test_rounding_term_is_needed_when_plain_cholesky_gives_a_false_positive():
    # A - tI with t = 3 + 1e-9 .. 3 + 1e-7 is indefinite, yet its floating-point Cholesky runs to
    # completion; the verified bound must still stay below the true lambda_min = 3
    n = 64
    lam = 3 + 2 * np.arange(n)
    lam[n // 2:] = 2**30
    A, _ = exact_spectrum(lam)
    accepted = 0
    for t in 3.0 + np.array([1e-9, 1e-8, 5e-8, 1e-7]):
        bound = verified_cholesky_bound(A, t)      # not None: plain Cholesky "accepted" A - tI
        accepted += bound is not None
        assert bound is None or bound <= 3
        assert certify_lambda_min(A, lambda_estimate=t).lower_bound <= 3
    assert accepted >= 1    # (OpenBLAS here accepts the first three; the test needs one)


def test_indefinite_matrix_rejected_by_verified_cholesky():
    # lambda_min = -1e-12 * ||A|| (||A|| = 1.0): no shift >= 0 is verified
    rng = np.random.default_rng(3)
    n = 40
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.linspace(0.5, 1.0, n)
    lam[0] = -1e-12
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    assert np.linalg.eigvalsh(A)[0] == pytest.approx(-1e-12, abs=2e-14)
    for shift in (0.0, -1e-14):
        b = verified_cholesky_bound(A, shift)
        assert b is None or b <= 0
    res = certify_lambda_min(A)
    assert res.lower_bound < -1e-12 * 0.9 and not res.positive_definite


def test_diagonal_plus_tiny_perturbation():
    # diag(1..n) + eps * E with |E_ij| <= 1: lambda_min in [1 - n eps, 1 + n eps] (Gershgorin)
    n, eps = 50, 1e-9
    rng = np.random.default_rng(4)
    E = rng.uniform(-1, 1, size=(n, n))
    A = np.diag(np.arange(1.0, n + 1)) + eps * (E + E.T) / 2
    res = certify_lambda_min(A)
    assert res.lower_bound <= np.linalg.eigvalsh(A)[0] <= 1 + n * eps
    assert res.lower_bound >= 1 - n * eps - 1e-12


def test_asymmetric_input_within_radius_is_symmetrised():
    A, _ = exact_spectrum(3 + 2 * np.arange(16))
    B = A.copy()
    B[0, 1] += 1e-12
    with pytest.raises(KernelcalcInputError, match="not symmetric"):
        certify_lambda_min(B)
    res = certify_lambda_min(B, entry_radius=1e-12)
    assert res.entry_radius >= 1e-12 and res.lower_bound <= 3.0 - 16 * 1e-12 * 0.5


def test_wrong_lambda_estimate_costs_retries_not_validity():
    A, _ = exact_spectrum(3 + 2 * np.arange(32))
    res = certify_lambda_min(A, lambda_estimate=10.0)       # far too large
    assert res.lower_bound <= 3.0 and res.attempts > 1
    assert res.lower_bound > 0


@pytest.mark.parametrize("K, kw, match", [
    (np.ones((2, 3)), {}, "square"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), {}, "NaN"),
    (np.eye(3), {"entry_radius": -1e-3}, "entry_radius"),
    (np.eye(3), {"entry_radius": np.inf}, "entry_radius"),
    (np.eye(3), {"radius_kind": "proof"}, "radius_kind"),
    (np.eye(3), {"lambda_estimate": np.nan}, "lambda_estimate"),
    (np.zeros((0, 0)), {}, "at least one row"),
    ("abc", {}, "real square"),
    ([[1.0, 2.0], ["a", 1.0]], {}, "real"),
])
def test_bad_input(K, kw, match):
    with pytest.raises(KernelcalcInputError, match=match):
        certify_lambda_min(K, **kw)


# ------------------------------------------------------------------------------- rigorous (arb) kernels
def relu_mlp_numpy(X, depth, w, b, ow, ob):
    """Independent arc-cosine recursion (neural-tangents stax, NTK parameterisation)."""
    d = X.shape[1]
    K = w**2 * (X @ X.T) / d + b**2
    ntk = K.copy()
    for layer in range(depth):
        ws, bs = (ow, ob) if layer == depth - 1 else (w, b)
        q = np.diag(K).copy()
        nrm = np.sqrt(np.outer(q, q))
        rho = np.clip(K / nrm, -1.0, 1.0)
        np.fill_diagonal(rho, 1.0)
        th = np.arccos(rho)
        C = nrm / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
        Cd = (np.pi - th) / (2 * np.pi)
        K = ws**2 * C + bs**2
        ntk = K + ws**2 * Cd * ntk
    return ntk


def mlp_pair_mp(x, y, act, depth, w, b, ow, ob):
    """One NTK entry at 40 digits with mpmath (relu or erf)."""
    with mp.workdps(40):
        d = len(x)
        dot = lambda u, v: mp.fsum(mp.mpf(float(a)) * mp.mpf(float(c)) for a, c in zip(u, v)) / d  # noqa: E731
        w, b, ow, ob = map(mp.mpf, (w, b, ow, ob))
        qx, qy, k = (w**2 * s + b**2 for s in (dot(x, x), dot(y, y), dot(x, y)))
        ntk = k

        def dual(q1, q2, c):
            if act == "relu":
                n = mp.sqrt(q1 * q2)
                rho = max(min(c / n, mp.mpf(1)), mp.mpf(-1))
                th = mp.acos(rho)
                return n / (2 * mp.pi) * (mp.sin(th) + (mp.pi - th) * mp.cos(th)), (mp.pi - th) / (2 * mp.pi)
            P = (1 + 2 * q1) * (1 + 2 * q2)
            return 2 / mp.pi * mp.asin(2 * c / mp.sqrt(P)), 4 / (mp.pi * mp.sqrt(P - 4 * c**2))

        for layer in range(depth):
            ws, bs = (ow, ob) if layer == depth - 1 else (w, b)
            C, Cd = dual(qx, qy, k)
            k_next = ws**2 * C + bs**2
            ntk = k_next + ws**2 * Cd * ntk
            if layer < depth - 1:
                qx, qy = ws**2 * dual(qx, qx, qx)[0] + bs**2, ws**2 * dual(qy, qy, qy)[0] + bs**2
            k = k_next
        return ntk


@pytest.fixture(scope="module")
def sphere200():
    return sphere_normalise(np.random.default_rng(1).normal(size=(200, 8)))


def test_relu_mlp_rigorous_certificate(sphere200):
    X = sphere200
    params = dict(depth=2, sigma_w=1.2, sigma_b=0.1, sigma_v=0.9, sigma_vb=0.2)
    K = rigorous_kernel(X, model="mlp", activation="relu", **params)
    ref = relu_mlp_numpy(X, 2, 1.2, 0.1, 0.9, 0.2)
    assert np.max(np.abs(K.ntk - ref)) < 1e-13
    r = K.info["ntk_radius"]
    assert 0 < r < 1e-15
    # the enclosure holds the 40-digit value, entry by entry (diagonal, near and far pairs)
    for i, j in [(0, 0), (7, 7), (0, 1), (3, 150), (199, 42)]:
        exact = mlp_pair_mp(X[i], X[j], "relu", 2, 1.2, 0.1, 0.9, 0.2)
        assert abs(mp.mpf(K.ntk[i, j]) - exact) <= r
    lam = np.linalg.eigvalsh(ref)[0]
    res = certify_ntk(X, model="mlp", activation="relu", **params)
    assert res.certificate == RIGOROUS == "rigorous"
    assert 0.5 * lam <= res.lower_bound <= lam
    print(f"relu MLP N=200: bound/lambda_min = {res.lower_bound / lam:.10f}, r = {r:.2e}")


def test_erf_and_leaky_relu_mlp_enclosures(sphere200):
    X = sphere200[:12]
    K = rigorous_kernel(X, model="mlp", activation="erf", depth=3, sigma_w=1.5, sigma_b=0.2)
    for i, j in [(0, 0), (2, 9)]:
        exact = mlp_pair_mp(X[i], X[j], "erf", 3, 1.5, 0.2, 1.0, 0.0)
        assert abs(mp.mpf(K.ntk[i, j]) - exact) <= K.info["ntk_radius"]
    # leaky relu(alpha): C = alpha c + (1-alpha)^2 C_relu; alpha = 0 is relu
    a = rigorous_kernel(X, model="mlp", activation="leaky_relu(alpha=0)", depth=2)
    b = rigorous_kernel(X, model="mlp", activation="relu", depth=2)
    assert np.max(np.abs(a.ntk - b.ntk)) <= 2 * (a.info["ntk_radius"] + b.info["ntk_radius"])


def test_identity_node_closed_form_against_mpmath_integral():
    # K_NTK = su^2 sv^2 x.y/d [2 I0(2 sw T) + sw^2 int int I0(2 sw sqrt(ts)) I0(2 sw sqrt((T-t)(T-s)))]
    T, sw, su, sv = 1.5, 0.7, 1.3, 0.9
    X = sphere_normalise(np.random.default_rng(5).normal(size=(4, 6)))
    K = rigorous_kernel(X, model="node", activation="identity", T=T, sigma_w=sw, sigma_u=su, sigma_v=sv)
    with mp.workdps(20):
        f = lambda t, s: mp.besseli(0, 2 * sw * mp.sqrt(t * s)) * mp.besseli(0, 2 * sw * mp.sqrt((T - t) * (T - s)))  # noqa: E731
        coef = su**2 * sv**2 * (2 * mp.besseli(0, 2 * sw * T) + sw**2 * mp.quad(f, [0, T], [0, T]))
        coef_nngp = su**2 * sv**2 * mp.besseli(0, 2 * sw * T)
    G = X @ X.T / X.shape[1]
    assert np.max(np.abs(K.ntk - float(coef) * G)) < 1e-13 * float(coef)
    assert np.max(np.abs(K.nngp - float(coef_nngp) * G)) < 1e-14 * float(coef_nngp)
    res = certify_ntk(X, model="node", activation="identity", T=T, sigma_w=sw, sigma_u=su, sigma_v=sv)
    lam = np.linalg.eigvalsh(float(coef) * G)[0]
    assert res.certificate == RIGOROUS and 0.5 * lam <= res.lower_bound <= lam * (1 + 1e-12)
    # N > d: the identity kernel is c x.y/d, of rank d, so lambda_min = 0 and nothing positive is proved
    X9 = sphere_normalise(np.random.default_rng(6).normal(size=(9, 6)))
    assert certify_ntk(X9, model="node", activation="identity").lower_bound <= 0


def test_duplicate_row_relu_rigorous_bound_not_positive(sphere200):
    X = np.vstack([sphere200[:30], sphere200[4:5]])
    res = certify_ntk(X, model="mlp", activation="relu", depth=2)
    assert res.certificate == RIGOROUS
    assert res.lower_bound <= 0 and not res.positive_definite


@pytest.mark.parametrize("kw, match", [
    (dict(model="mlp", activation="tanh", depth=2), "no interval-arithmetic closed form"),
    (dict(model="node", activation="softplus"), "identity activation only"),
    (dict(model="resnet", activation="relu"), "model must be"),
    (dict(model="mlp", activation="relu"), "needs depth"),
    (dict(model="mlp", activation="relu", depth=2, T=1.0), "T does not apply to model=.mlp."),   # the model-keyword rule (_validation)
    (dict(model="node", activation="identity", sigma_w=-1.0), "sigma_w"),
])
def test_rigorous_kernel_bad_input(kw, match):
    with pytest.raises(KernelcalcInputError, match=match):
        rigorous_kernel(np.eye(3), **kw)


# ------------------------------------------------------------------------------- Neural ODE, a-posteriori
@pytest.mark.parametrize("activation", ["softplus", "tanh"])
def test_node_200_sphere_points_bound_within_half_and_one(sphere200, activation):
    K = node_kernel(sphere200, activation=activation, T=1.0)
    lam = np.linalg.eigvalsh(K.ntk)[0]
    res = certify_ntk(sphere200, model="node", activation=activation, kernel=K, T=1.0)
    assert res.certificate == ESTIMATE and res.entry_radius == K.info["error_estimate"]
    assert 0.5 * lam <= res.lower_bound <= lam
    print(f"{activation} node N=200: bound/lambda_min = {res.lower_bound / lam:.10f}")
    # a duplicate row: lambda_min(K_inf) = 0, and the bound is not positive
    X = np.vstack([sphere200, sphere200[17:18]])
    dup = certify_ntk(X, model="node", activation=activation, T=1.0)
    assert dup.lower_bound <= 0 and not dup.positive_definite


def test_check_certify_softplus(sphere200):
    rep = check(sphere200, activation="softplus", T=1.0, certify=True)
    assert rep.certificate == ESTIMATE
    assert 0.5 * rep.lambda_min <= rep.lambda_min_certified <= rep.lambda_min
    assert rep.entry_radius > 0 and rep.ok
    d = rep.to_dict()
    assert d["lambda_min_certified"] == rep.lambda_min_certified and d["certificate"] == ESTIMATE
    assert "lambda_min certified >=" in str(rep)
    assert check(sphere200[:5], activation="softplus").lambda_min_certified is None


# ------------------------------------------------------------------------------- check / CLI plumbing
@pytest.fixture
def fake_node(monkeypatch):
    r"""``node_kernel`` replaced by $\Theta = \sigma_v^2 e^{T\sigma_w^2 x\cdot y/d}$ with an error estimate
    (identity: the exact closed form $c\,x\cdot y/d$), so the plumbing tests need no ODE solve."""

    def fake(x1, x2=None, *, activation, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, **_):
        a, b, _same = as_input_pair(x1, x2)
        G = a @ b.T / a.shape[1]
        if str(activation) == "identity":
            c = sigma_u**2 * sigma_v**2 * float(2 * mp.besseli(0, 2 * sigma_w * T)
                                                + sigma_w * T * mp.besseli(1, 2 * sigma_w * T))
            ntk = c * G
        else:
            ntk = sigma_v**2 * np.exp(T * sigma_w**2 * G)
        return Kernel(nngp=0.5 * ntk, ntk=ntk, model="node", activation=str(activation),
                      info={"error_estimate": 1e-14})

    monkeypatch.setattr(kernelcalc, "node_kernel", fake)
    monkeypatch.setattr(kernelcalc.kernels, "node_kernel", fake)


def test_check_certify_argument(fake_node):
    X = sphere_normalise(np.random.default_rng(2).normal(size=(5, 3)))
    with pytest.raises(KernelcalcInputError, match="certify"):
        check(X, activation="softplus", certify="yes")
    rep = check(X, activation="softplus", certify=True)
    assert rep.ok and rep.lambda_min_certified > 0
    assert check(np.vstack([X, X[:1]]), activation="softplus", certify=True).lambda_min_certified is None
    dup = check(np.vstack([X, X[:1]]), activation="softplus", certify=True, gram="always")
    assert dup.lambda_min_certified <= 0
    assert any("not proved" in p for p in dup.problems)


def test_cli_check_certify(tmp_path, fake_node):
    runner = CliRunner()
    X = sphere_normalise(np.random.default_rng(2).normal(size=(5, 3)))
    np.save(tmp_path / "good.npy", X)
    np.save(tmp_path / "dup.npy", np.vstack([X, X[:1]]))
    np.save(tmp_path / "few.npy", sphere_normalise(np.random.default_rng(3).normal(size=(3, 6))))
    res = runner.invoke(main, ["check", "--data", str(tmp_path / "good.npy"), "--certify"])
    assert res.exit_code == 0, res.output
    assert "lambda_min certified >=" in res.output and ESTIMATE in res.output
    res = runner.invoke(main, ["check", "--data", str(tmp_path / "good.npy"), "--certify", "--json"])
    doc = json.loads(res.output)
    assert doc["certificate"] == ESTIMATE and doc["lambda_min_certified"] > 0
    assert doc["lambda_min_certified"] <= doc["lambda_min"]
    assert "lambda_min_certified" not in json.loads(
        runner.invoke(main, ["check", "--data", str(tmp_path / "good.npy"), "--json"]).output)
    res = runner.invoke(main, ["check", "--data", str(tmp_path / "dup.npy"), "--certify", "--gram", "always"])
    assert res.exit_code == 1 and "not proved" in res.output and "Traceback" not in res.output
    # identity activation: rigorous (arb) certificate; N = 3 <= d = 6, so the Gram is positive definite
    res = runner.invoke(main, ["check", "--data", str(tmp_path / "few.npy"), "--activation", "identity",
                               "--certify", "--gram", "always", "--json"])
    assert "Traceback" not in res.output
    doc = json.loads(res.stdout)
    assert doc["certificate"] == RIGOROUS and 0 < doc["lambda_min_certified"] <= doc["lambda_min"] * (1 + 1e-12)
