"""sphere_spectrum: the Gegenbauer eigenvalues of the kernels on S^{d-1}, against references written here.

References share no code with kernelcalc: the arc-cosine closed forms in theta integrated with numpy's
Golub-Welsch Gauss-Legendre and scipy's eval_gegenbauer; the x^2 MLP kernels expanded as polynomials
in rho and projected with scipy's Gauss-Gegenbauer rule; the Gram eigenvalues of quasi-uniform points.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import eval_gegenbauer, gammaln, roots_gegenbauer

import kernelcalc as kc
from kernelcalc import KernelcalcInputError


def _c(d):
    return math.exp(gammaln(d / 2) - gammaln((d - 1) / 2)) / math.sqrt(math.pi)


def _P(k, d, x):
    lam = (d - 2) / 2
    return eval_gegenbauer(k, lam, x) / eval_gegenbauer(k, lam, 1.0)


def _mu_theta(K_of_theta, k_max, d, n=600):
    """mu_k = c_d int_0^pi K P_k(cos t) sin^{d-2} t dt with numpy's Gauss-Legendre on two halves."""
    x, w = np.polynomial.legendre.leggauss(n)
    t = np.concatenate([np.pi / 4 * (x + 1), np.pi / 4 * (x + 1) + np.pi / 2])
    wt = np.concatenate([w, w]) * np.pi / 4
    f = K_of_theta(t) * np.sin(t) ** (d - 2) * wt * _c(d)
    return np.array([np.sum(f * _P(k, d, np.cos(t))) for k in range(k_max + 1)])


def _arccos_kernels(depth):
    """(nngp, ntk) of the bias-free relu MLP (sigma_w = sigma_v = 1) as functions of theta, x.x/d = 1."""
    def J1(t):
        return (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)

    def J0(t):
        return (np.pi - t) / (2 * np.pi)

    def kernels(t):
        K, Th, q, angle = np.cos(t), np.cos(t), 1.0, t
        for layer in range(depth):
            if layer:
                angle = np.arccos(np.clip(K / q, -1, 1))
            K_new = q * J1(angle)
            Th = K_new + J0(angle) * Th
            K, q = K_new, q * 0.5           # the next layer's variance q J1(0) = q/2
        return K, Th

    return kernels


@pytest.fixture(scope="module")
def relu_mlp():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {L: kc.sphere_spectrum(model="mlp", activation="relu", depth=L, d=3, k_max=60) for L in (1, 2)}


@pytest.mark.parametrize("depth", [1, 2])
def test_relu_mlp_matches_arc_cosine_reference(relu_mlp, depth):
    s = relu_mlp[depth]
    nngp, ntk = _arccos_kernels(depth)(np.array([0.0]))
    assert nngp[0] == pytest.approx(s.trace_check["nngp"]["K1"], rel=1e-14)
    for name, idx in (("nngp", 0), ("ntk", 1)):
        ref = _mu_theta(lambda t: _arccos_kernels(depth)(t)[idx], 60, 3)
        mu, err, ok = getattr(s, "mu_" + name), getattr(s, "err_" + name), getattr(s, "resolved_" + name)
        big = np.abs(ref) > 1e-12 * ref[0]
        # every eigenvalue above 1e-12 mu_0 is resolved and within its own bound
        assert np.all(ok[big])
        assert np.all(np.abs(mu[big] - ref[big]) <= err[big])
        # 1e-10 relative where double precision allows it (absolute rounding ~1e-16 mu_0)
        strong = np.abs(ref) > 3e-5 * ref[0]
        assert np.max(np.abs(mu[strong] - ref[strong]) / np.abs(ref[strong])) < 1e-10
        # the zeros (odd k >= 3 without bias) are reported below their bound, not as numbers
        zero = np.abs(ref) < 1e-14 * ref[0]
        assert not ok[zero].any() and np.all(np.isnan(mu[zero]))


@pytest.mark.parametrize("d", [3, 5])
def test_bietti_mairal_relu_ntk_rate(d):
    s = kc.sphere_spectrum(model="mlp", activation="relu", depth=1, d=d, k_max=400, kernel="ntk")
    assert s.mu_nngp is None and s.decay_ntk["kind"] == "power"
    assert abs(s.decay_ntk["exponent"] + d) < 0.1, s.decay_ntk
    odd = s.degrees[(s.degrees >= 3) & (s.degrees % 2 == 1)]
    assert not s.resolved_ntk[odd].any()
    even = s.degrees[(s.degrees % 2 == 0)]
    assert s.resolved_ntk[even[even <= 100]].all()


def test_square_mlp_with_bias_is_degree_four_polynomial():
    sw, sb, sv, svb, d = 1.2, 0.7, 0.9, 0.3, 4
    P = np.polynomial.Polynomial
    rho = P([0.0, 1.0])
    K1 = sw**2 * rho + sb**2
    T1 = K1
    q1 = K1(1.0)
    K2 = sw**2 * (q1 * q1 + 2 * K1 * K1) + sb**2          # E[u^2 v^2] = q q' + 2 c^2
    T2 = K2 + sw**2 * 4 * K1 * T1                           # E[phi' phi'] = 4 c
    q2 = K2(1.0)
    K3 = sv**2 * (q2 * q2 + 2 * K2 * K2) + svb**2
    T3 = K3 + sv**2 * 4 * K2 * T2
    x, w = roots_gegenbauer(12, (d - 2) / 2)
    w = w / w.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = kc.sphere_spectrum(model="mlp", activation="x**2", depth=2, d=d, k_max=12,
                               sigma_w=sw, sigma_b=sb, sigma_v=sv, sigma_vb=svb)
    for name, poly in (("nngp", K3), ("ntk", T3)):
        assert poly.degree() == 4
        ref = np.array([np.sum(w * poly(x) * _P(k, d, x)) for k in range(5)])
        mu, ok = getattr(s, "mu_" + name), getattr(s, "resolved_" + name)
        assert ok[:5].all()
        np.testing.assert_allclose(mu[:5], ref, rtol=1e-12)
        assert not ok[5:].any() and np.isnan(mu[5:]).all()
        assert s.trace_check[name]["K1"] == pytest.approx(poly(1.0), rel=1e-13)


def _fibonacci_sphere(N, d=3):
    i = np.arange(N) + 0.5
    z = 1 - 2 * i / N
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z * z)
    return math.sqrt(d) * np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@pytest.fixture(scope="module")
def node_softplus():
    return kc.sphere_spectrum(model="node", activation="softplus", T=1.0, d=3, k_max=30)


def test_node_softplus_trace(node_softplus):
    for name in ("nngp", "ntk"):
        tc = node_softplus.trace_check[name]
        assert abs(tc["difference"]) < 1e-10 * tc["K1"]
    assert node_softplus.decay_ntk["kind"] == "exponential" and node_softplus.decay_ntk["exponent"] < 0


def _gram_degrees(N, s, kernel="ntk"):
    X = _fibonacci_sphere(N)
    K = kc.node_kernel(X, activation="softplus", T=1.0, outputs=(kernel,))
    ev = np.linalg.eigvalsh(getattr(K, kernel))[::-1] / N
    out, start = [], 0
    for k in range(5):
        m = 2 * k + 1
        out.append(ev[start:start + m])
        start += m
    return out


@pytest.mark.parametrize("N", [400, pytest.param(3000, marks=pytest.mark.slow)])
def test_node_softplus_gram_eigenvalues_converge(node_softplus, N):
    blocks = _gram_degrees(N, node_softplus)
    for k, block in enumerate(blocks):
        assert block.size == 2 * k + 1
        np.testing.assert_allclose(block, node_softplus.mu_ntk[k], rtol=0.02)


def test_bad_input_one_line():
    cases = [dict(d=1), dict(d=3, k_max=-1), dict(d=3, k_max=10**6), dict(d=3, depth=2)]
    for kw in cases:
        with pytest.raises(KernelcalcInputError) as err:
            kc.sphere_spectrum(model="node", activation="softplus", **kw)
        assert "\n" not in str(err.value)
    with pytest.raises(KernelcalcInputError, match="resolves degrees k <= "):
        kc.sphere_spectrum(activation="softplus", d=3, k_max=10**6)
    with pytest.raises(KernelcalcInputError, match="sigma_b does not apply"):
        kc.sphere_spectrum(activation="softplus", d=3, sigma_b=1.0)
    with pytest.raises(ValueError) as err:
        kc.sphere_spectrum(activation="foo(", d=3)
    assert "\n" not in str(err.value)


def test_result_is_immutable_and_serialisable(node_softplus):
    d = node_softplus.to_dict()
    assert d["degrees"][:3] == [0, 1, 2] and d["multiplicity"][:3] == [1, 3, 5]
    with pytest.raises(ValueError):
        node_softplus.mu_ntk[0] = 1.0
    assert "< " in node_softplus.table()


def test_sphere_degree_counts_harmonics():
    from kernelcalc.studies.polynomial import sphere_degree

    for N in (1, 2, 4, 5, 9, 10, 64, 65, 20000):
        assert sphere_degree(N, 3) == math.ceil(math.sqrt(N)) - 1        # sum_{j<=k} (2j+1) = (k+1)^2
        assert sphere_degree(N, 2) == N // 2                             # 1 + 2k >= N


def test_lambda_min_table_sphere_prediction():
    X = _fibonacci_sphere(100)
    r = kc.lambda_min_table(X, [100], activations=("relu",), models=(("mlp", 1),), sphere_prediction=True)
    row = r.rows[0]
    assert row["degree"] == (9,)
    measured, predicted = row["lambda_min"][0], row["lambda_min_predicted"][0]
    assert not row["predicted_is_bound"][0]
    assert 0.05 < measured / predicted < 20          # the same order of magnitude (measured 0.15-0.6)
    assert "predicted" in r.table()
    with pytest.raises(KernelcalcInputError, match="sphere"):
        kc.lambda_min_table(2 * X, [10], activations=("relu",), models=(("mlp", 1),), sphere_prediction=True)


def test_cli_spectrum(tmp_path):
    import json

    from click.testing import CliRunner

    from kernelcalc.cli import main

    runner = CliRunner()
    png = tmp_path / "mu.png"
    res = runner.invoke(main, ["spectrum", "--model", "mlp", "--depth", "1", "-a", "relu", "--d", "3",
                               "--k-max", "12", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "power-law decay" in res.output and "< " in res.output and png.exists()
    res = runner.invoke(main, ["spectrum", "--model", "mlp", "--depth", "1", "-a", "relu", "--d", "3",
                               "--k-max", "12", "--json", "--kernel", "ntk"])
    doc = json.loads(res.output)
    # independent: mu_1 of the relu NTK kappa_1 + rho kappa_0 on S^2 is 1/6 (Legendre projection of the closed form)
    ref = _mu_theta(lambda t: _arccos_kernels(1)(t)[1], 1, 3)[1]
    assert doc["mu_ntk"][1] == pytest.approx(ref, rel=1e-12) and doc["mu_ntk"][3] is None and doc["mu_nngp"] is None
    for args, text in ((["--d", "1"], "d must be"), (["--k-max", "-1"], "k_max"), (["--depth", "2"], "depth does not apply"),
                       (["-a", "foo("], "")):
        res = runner.invoke(main, ["spectrum", *args])
        assert res.exit_code == 2 and res.output.startswith("Error:") and text in res.output
        assert len(res.output.strip().splitlines()) == 1
