r"""``sweep_T`` / ``kernelcalc sweep-T``: lambda_min(K_inf) and the predicted GD rate against the horizon T.

Numbers are checked against values computed independently of ``node_kernel``:

- ``phi = identity`` makes the Neural ODE linear.  Then $S(t,s)=S_0I_0(2\sigma_w\sqrt{ts})$ and
  $\Lambda(t,s)=\sigma_v^2I_0(2\sigma_w\sqrt{(T-t)(T-s)})$ (the Bessel solution of tests/test_kernels.py),
  and expanding both in powers, $\int_0^T t^k(T-t)^m dt = T^{k+m+1}k!\,m!/(k+m+1)!$ gives
  $\iint I_0I_0 = T\,I_1(2\sigma_wT)/\sigma_w$.  Hence
  $K^\infty=\sigma_u^2\sigma_v^2\,[2I_0(2z)+zI_1(2z)]\;XX^\top/d$ with $z=\sigma_wT$, so
  $\lambda_{\min}(K^\infty)=\sigma_u^2\sigma_v^2[2I_0(2z)+zI_1(2z)]\,\lambda_{\min}(XX^\top/d)$ (N <= d).
- $\rho$, the step count and the flow time from $\lambda_{\min}$ and $\eta=1/\|X\|_2^2$ by hand.

Plumbing and CLI tests use the cheap stand-in kernel from ``_cheap_kernel``.
"""

import json
import math

import mpmath as mp
import numpy as np
import pytest
from click.testing import CliRunner

import kernelcalc
import kernelcalc.kernels
from kernelcalc import ActivationError, Kernel, KernelcalcInputError
from kernelcalc.cli import main
from kernelcalc.studies.horizon import HorizonSweep, predicted_steps, sweep_T

from _cheap_kernel import cheap_kernel  # noqa: F401  (fixture)


def _sphere(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x * np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


X = _sphere(6, 8)


def _bessel_i(nu: int, x: float) -> float:
    r"""$I_\nu(x)=\sum_k (x/2)^{2k+\nu}/(k!(k+\nu)!)$ by its power series."""
    term = (x / 2) ** nu / math.factorial(nu)
    total, k = term, 0
    while abs(term) > 1e-18 * abs(total):
        k += 1
        term *= (x / 2) ** 2 / (k * (k + nu))
        total += term
    return total


def _identity_lambda_min(X, T, sw, su, sv):
    z = sw * T
    c = su**2 * sv**2 * (2 * _bessel_i(0, 2 * z) + z * _bessel_i(1, 2 * z))
    G = X @ X.T / X.shape[1]
    eig = np.linalg.eigvalsh(G)
    return c * eig[0], c * eig[-1]


@pytest.mark.parametrize("nu, x", [(0, 1.0), (1, 2.4), (0, 6.4), (1, 6.4)])
def test_bessel_series_matches_mpmath(nu, x):
    assert _bessel_i(nu, x) == pytest.approx(float(mp.besseli(nu, x)), rel=1e-14)


# ----------------------------------------------------------------------------- real kernels
SW, SU, SV = 0.8, 1.1, 0.9


@pytest.fixture(scope="module")
def identity_sweep():
    return sweep_T(X, activations=["identity"], Ts=(2.0, 0.5), sigma_w=SW, sigma_u=SU, sigma_v=SV)


@pytest.fixture(scope="module")
def smooth_sweep():
    """One horizon (each real entry costs seconds of jit compilation); the T grid is the slow test below."""
    return sweep_T(X, activations=("softplus", "tanh"), Ts=[1.0])


def test_identity_lambda_min_matches_bessel_closed_form(identity_sweep):
    r = identity_sweep
    assert r.Ts == (0.5, 2.0)                                    # sorted
    for i, T in enumerate(r.Ts):
        lmin, lmax = _identity_lambda_min(X, T, SW, SU, SV)
        assert r.lambda_min["identity"][i] == pytest.approx(lmin, rel=1e-8)
        assert r.lambda_max["identity"][i] == pytest.approx(lmax, rel=1e-8)
    # K_inf is a multiple of X X^T: its condition number is that of X X^T, at every T
    eig = np.linalg.eigvalsh(X @ X.T)
    assert r.condition_number["identity"] == pytest.approx((eig[-1] / eig[0],) * 2, rel=1e-7)
    # lambda_min(T=2)/lambda_min(T=0.5) is the ratio of the Bessel factors
    ratio = _identity_lambda_min(X, 2.0, SW, SU, SV)[0] / _identity_lambda_min(X, 0.5, SW, SU, SV)[0]
    assert r.lambda_min["identity"][1] / r.lambda_min["identity"][0] == pytest.approx(ratio, rel=1e-8)
    expected_slope = math.log(ratio) / math.log(4.0)
    assert r.slopes["identity"] == pytest.approx(expected_slope, rel=1e-7)
    assert not r.failures and not r.warnings


def test_rate_and_steps_follow_theorem_2_by_hand(identity_sweep, smooth_sweep):
    eta = 1.0 / np.linalg.svd(X, compute_uv=False)[0] ** 2
    for r in (identity_sweep, smooth_sweep):
        assert r.params["lr"] == pytest.approx(eta, rel=1e-12)
        assert "Theorem 2" in r.params["lr_rule"]
        for a in r.activations:
            for i in range(len(r.Ts)):
                lam = r.lambda_min[a][i]
                rho = 1.0 - eta * lam
                assert r.contraction[a][i] == pytest.approx(rho, rel=1e-12)
                k = int(r.steps_to_target[a][i])
                assert rho**k <= 1e-3 < rho ** (k - 1)           # the first k with rho^k <= 1e-3
                assert r.flow_time_to_target[a][i] == pytest.approx(math.log(1e3) / lam, rel=1e-12)
                assert r.lambda_ratio[a][i] == pytest.approx(lam / r.lambda_max[a][i], rel=1e-12)


def test_softplus_and_tanh_are_positive_definite(smooth_sweep):
    r = smooth_sweep
    assert r.activations == ("softplus", "tanh")
    for a in r.activations:
        assert r.lambda_min[a][0] > 1e-3, a
        assert math.isfinite(r.steps_to_target[a][0])
        assert math.isnan(r.slopes[a])                           # one horizon: no slope
    assert not r.failures and not r.warnings
    # the same entries as check() reports for this data (lambda_min of the same K_inf)
    rep = kernelcalc.check(X, activation="tanh", T=1.0)
    assert r.lambda_min["tanh"][0] == pytest.approx(rep.lambda_min, rel=1e-12)
    assert r.contraction["tanh"][0] == pytest.approx(rep.contraction, rel=1e-12)


@pytest.mark.slow
def test_default_activations_positive_definite_over_a_T_grid():
    r = sweep_T(_sphere(10, 8, seed=3), Ts=(0.25, 1.0, 2.0))
    assert r.activations == ("softplus", "tanh", "gelu", "sin") and not r.failures
    for a in r.activations:
        lam = np.array(r.lambda_min[a])
        assert np.all(lam > 0) and np.all(np.diff(lam) > 0), (a, lam)   # longer horizon, larger lambda_min
        assert np.all(np.diff(r.steps_to_target[a]) < 0)
        assert r.slopes[a] == pytest.approx(np.polyfit(np.log(r.Ts), np.log(lam), 1)[0], rel=1e-12)


def test_inverse_T_scaling_makes_the_kernel_T_invariant(identity_sweep):
    """With sigma_w/T the model is the T=1 model in rescaled time: only sigma_w*T matters."""
    r = sweep_T(X, activations=["identity"], Ts=[4.0], sigma_w=2 * SW, sigma_u=SU, sigma_v=SV,
                sigma_w_scaling="inverse_T")
    assert r.params["sigma_w_scaling"] == "inverse_T"
    assert r.sigma_w_effective == pytest.approx((2 * SW / 4.0,))
    # sigma_w_eff * T = 2 SW = SW * 2.0: the fixed-sigma_w entry at T = 2
    assert r.lambda_min["identity"][0] == pytest.approx(identity_sweep.lambda_min["identity"][1], rel=1e-9)
    assert r.lambda_min["identity"][0] == pytest.approx(_identity_lambda_min(X, 2.0, SW, SU, SV)[0], rel=1e-8)


def test_quadratic_blow_up_is_a_recorded_failure_not_an_error():
    r = sweep_T(X, activations=["x**2"], Ts=(2.0, 4.0))
    assert set(r.failures["x**2"]) == {2.0, 4.0}
    assert all(reason for reason in r.failures["x**2"].values())
    for key in ("lambda_min", "contraction", "steps_to_target", "flow_time_to_target"):
        assert all(math.isnan(v) for v in getattr(r, key)["x**2"])
    assert math.isnan(r.slopes["x**2"])
    assert "failed" in r.table()
    d = json.loads(r.to_json())
    assert d["lambda_min"]["x**2"] == [None, None] and set(d["failures"]["x**2"]) == {"2.0", "4.0"}


# ----------------------------------------------------------------------------- plumbing (cheap kernel)
def test_inverse_T_passes_sigma_w_over_T(cheap_kernel):
    sweep_T(X, activations=["softplus"], Ts=[0.5, 2.0], sigma_w=1.5, sigma_w_scaling="inverse_T")
    assert [c["sigma_w"] for c in cheap_kernel] == pytest.approx([3.0, 0.75])
    assert [c["T"] for c in cheap_kernel] == [0.5, 2.0]
    cheap_kernel.clear()
    sweep_T(X, activations=["softplus"], Ts=[0.5, 2.0], sigma_w=1.5)
    assert [c["sigma_w"] for c in cheap_kernel] == [1.5, 1.5]


def test_nan_gram_and_solver_errors_become_failures(monkeypatch):
    def fake(x1, x2=None, *, activation, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0):
        if T == 2.0:
            raise RuntimeError("did not converge")
        G = x1 @ x1.T / x1.shape[1] * (np.nan if T > 2 else 1.0)
        return Kernel(nngp=G, ntk=G, model="node", activation=str(activation))

    monkeypatch.setattr(kernelcalc.kernels, "node_kernel", fake)
    r = sweep_T(X, activations=["tanh"], Ts=[1.0, 2.0, 3.0])
    assert "RuntimeError" in r.failures["tanh"][2.0]
    assert "non-finite" in r.failures["tanh"][3.0]
    assert 1.0 not in r.failures["tanh"]
    lam = r.lambda_min["tanh"]
    assert lam[0] == pytest.approx(np.linalg.eigvalsh(X @ X.T / 8)[0], rel=1e-12)
    assert math.isnan(lam[1]) and math.isnan(lam[2])


def test_result_is_immutable_serialisable_and_printable(cheap_kernel):
    r = sweep_T(X, activations=["softplus", "tanh"], Ts=[0.5, 1.0], lr=0.01)
    assert isinstance(r, HorizonSweep)
    with pytest.raises(AttributeError):
        r.Ts = (1.0,)
    d = json.loads(r.to_json())
    assert d["Ts"] == [0.5, 1.0] and d["params"]["lr"] == 0.01 and d["params"]["lr_rule"] == "user-given"
    assert d["params"]["N"] == 6 and d["params"]["d"] == 8 and d["params"]["sigma_w_scaling"] == "fixed"
    assert d["contraction"]["tanh"][1] == pytest.approx(1 - 0.01 * r.lambda_min["tanh"][1])
    text = str(r)
    assert "softplus" in text and "lambda_min" in text and "steps" in text and "0.5" in text
    e = r.entry("tanh", 1.0)
    assert e["lambda_min"] == r.lambda_min["tanh"][1] and e["failure"] is None


def test_predicted_steps_edge_cases():
    assert predicted_steps(0.5) == 10                            # 0.5^10 < 1e-3 < 0.5^9
    assert predicted_steps(1.0) == 1
    assert predicted_steps(0.0) == math.inf and predicted_steps(-1e-3) == math.inf
    assert math.isnan(predicted_steps(1.5)) and math.isnan(predicted_steps(float("nan")))
    assert predicted_steps(1e-12) == pytest.approx(math.log(1e3) / 1e-12, rel=1e-6)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, err, match", [
    (dict(Ts=[1.0, 0.0]), KernelcalcInputError, r"Ts\[1\] must be > 0"),
    (dict(Ts=[-1.0]), KernelcalcInputError, r"Ts\[0\]"),
    (dict(Ts=[float("inf")]), KernelcalcInputError, r"Ts\[0\] must be finite"),
    (dict(Ts=[]), KernelcalcInputError, r"Ts must be a non-empty"),
    (dict(Ts=[1.0, 1.0]), KernelcalcInputError, r"Ts contains a repeated"),
    (dict(activations=[]), KernelcalcInputError, r"activations must be a non-empty"),
    (dict(activations=["tanh", "nope"]), ActivationError, r"activations\[1\].*'nope'"),
    (dict(lr=0.0), KernelcalcInputError, r"lr must be > 0"),
    (dict(sigma_w=-1.0), KernelcalcInputError, r"sigma_w must be > 0"),
    (dict(sigma_w_scaling="sqrt"), KernelcalcInputError, r"sigma_w_scaling must be one of"),
])
def test_bad_input_raises_naming_the_argument(kw, err, match, cheap_kernel):
    with pytest.raises(err, match=match):
        sweep_T(X, **kw)
    assert not cheap_kernel                                      # validated before any kernel


def test_nan_in_X_is_rejected():
    Xb = X.copy()
    Xb[2, 3] = np.nan
    with pytest.raises(KernelcalcInputError, match=r"X contains NaN.*row 2, column 3"):
        sweep_T(Xb)


# ----------------------------------------------------------------------------- CLI
def test_cli_prints_table_and_writes_json_and_plot(tmp_path, cheap_kernel):
    out, png = tmp_path / "h.json", tmp_path / "h.png"
    r = CliRunner().invoke(main, ["sweep-T", "--activation", "softplus,tanh", "--T", "0.5,1,2", "--n-inputs", "5",
                                  "--dim", "6", "--json-out", str(out), "--plot", str(png), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "softplus" in r.output and "tanh" in r.output and "lambda_min" in r.output
    data = json.loads(out.read_text())
    assert data["Ts"] == [0.5, 1.0, 2.0] and data["params"]["N"] == 5 and data["params"]["d"] == 6
    assert len(data["lambda_min"]["tanh"]) == 3 and all(v > 0 for v in data["lambda_min"]["tanh"])
    assert png.stat().st_size > 1000
    assert [c["sigma_w"] for c in cheap_kernel] == [1.0] * 6


def test_cli_inverse_T_and_expression_lists(cheap_kernel):
    r = CliRunner().invoke(main, ["sweep-T", "-a", "Max(0, x)", "--T", "0.5,2", "--sigma-w", "2", "--inverse-T",
                                  "--n-inputs", "3", "--dim", "4", "--quiet"])
    assert r.exit_code == 0, r.output
    assert [c["sigma_w"] for c in cheap_kernel] == [4.0, 1.0]
    assert "sigma_w/T" in r.output


@pytest.mark.parametrize("args, needle", [
    (["--T", "0,1"], "--T"),
    (["--T", "1,abc"], "--T"),
    (["--T", ""], "--T"),
    (["--activation", "softplus,nope"], "nope"),
    (["--activation", " , "], "--activation"),
    (["--lr", "-1"], "lr"),
    (["--n-inputs", "0"], "--n-inputs"),
])
def test_cli_bad_input_is_one_line(args, needle, cheap_kernel):
    r = CliRunner().invoke(main, ["sweep-T", "--quiet", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    err = [line for line in r.output.strip().splitlines() if line.startswith("Error")]
    assert len(err) == 1 and needle in err[0], r.output
