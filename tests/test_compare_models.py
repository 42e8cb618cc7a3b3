"""compare_models / compare-models, derive(model=...) of the new models, empirical hooks (depth_gap, compare)."""

import math

import numpy as np
import pytest
import sympy as sp

import kernelcalc as kc
from kernelcalc.studies.comparison import compare_models

X = np.array([[1.0, 0.3, -0.4], [0.2, -0.8, 0.9], [0.5, 0.5, 0.1]])


def test_compare_models_relu_closed_forms():
    sw = 1.1
    res = compare_models(X, activation="relu", T=0.5, depth=2, sigma_w=sw, n_rho=3)
    i1 = res.rho.index(1.0)
    # DEQ at rho = 1 (x.x/d = 1): q* = 1/(1 - sw^2/2), NTK = q*/2 + (1/2) q*/(1 - sw^2/2)
    q = 1 / (1 - sw**2 / 2)
    assert abs(res.ntk["deq"][i1] - (q / 2 + 0.5 * q / (1 - sw**2 / 2))) < 1e-10
    # untied ODE at rho = 1: q = e^{a T/2}, NTK = e^{a T/2}(1 + a T/4)
    a, T = sw**2, 0.5
    assert abs(res.ntk["node_untied"][i1] - math.exp(a * T / 2) * (1 + a * T / 4)) < 1e-10
    # untied ResNet-2 at rho = 1: g = 1 + delta a/2, q_L = g^L, Theta_L = g^L (1 + L delta a/(2 g)) ... exact sums
    g, dl = 1 + T / 2 * a / 2, T / 2
    th = 1.0
    qk = 1.0
    for _ in range(2):
        th, qk = th + dl * a * (th / 2 + qk / 2), qk * g
    assert abs(res.ntk["resnet_untied"][i1] - (qk / 2 + th / 2)) < 1e-12
    ev = np.linalg.eigvalsh(kc.deq_kernel(X, activation="relu", sigma_w=sw, sigma_u=1, sigma_v=1).ntk)
    assert abs(res.lambda_min["deq"] - ev[0]) < 1e-12 and abs(res.condition["deq"] - ev[-1] / ev[0]) < 1e-9
    assert "DEQ" in res.table() and res.to_dict()["models"] == list(res.models)


def test_derive_new_models():
    d = kc.derive("identity", model="deq")
    sol = sp.solve(d.equations[2], sp.Symbol("S_star", real=True))[0]
    k = kc.deq_kernel(X, activation="identity", sigma_w=0.7, sigma_u=1.1, sigma_b=0.3, sigma_v=0.9)
    vals = {"sigma_w": 0.7, "sigma_u": 1.1, "sigma_b": 0.3, "sigma_v": 0.9, "rho": X[0] @ X[1] / 3}
    ntk = d.ntk.subs(sp.Symbol("S_star", real=True), sol)
    ntk = float(ntk.subs({s: vals[str(s)] for s in ntk.free_symbols}))
    s0 = 1.1**2 * X[0] @ X[1] / 3 + 0.09
    assert abs(ntk - 0.81 * (s0 / 0.51 + s0 / 0.51**2)) < 1e-12      # identity closed form
    assert abs(k.ntk[0, 1] - ntk) < 1e-10
    # untied ODE, identity: S = e^{a t} S0, Theta = (1 + a t) e^{a t} S0 solve the derived equations
    d = kc.derive("identity", model="node_untied")
    t = sp.Symbol("t", nonnegative=True)
    a, S0 = sp.Symbol("sigma_w", nonnegative=True) ** 2, sp.Symbol("sigma_u", nonnegative=True) ** 2 * sp.Symbol("rho", real=True)
    subs = {sp.Function("S")(t): sp.exp(a * t) * S0, sp.Function("Theta")(t): (1 + a * t) * sp.exp(a * t) * S0,
            sp.Function("C")(t): sp.exp(a * t) * S0, sp.Function("Cdot")(t): 1}
    for eq in (d.equations[0], d.equations[4]):
        assert sp.simplify((eq.lhs - eq.rhs).subs(subs).doit()) == 0
    r = kc.derive("tanh", model="resnet_untied", depth=4)
    assert "untied Euler ResNet" in r.text()
    with pytest.raises(ValueError, match="depth"):
        kc.derive("tanh", model="deq", depth=3)


@pytest.mark.slow    # ~10 s of empirical untied nets; the default run keeps the closed-form comparisons
def test_depth_gap_untied_strong_order_half():
    r = kc.depth_gap(X, activation="softplus", width=32, depths=(2, 4, 8, 16), weights="untied", progress=False)
    print(r.table())
    assert -0.85 <= r.slopes["gradient"] <= -0.3          # Euler-Maruyama strong order 1/2
    with pytest.raises(kc.KernelcalcInputError, match="weights"):
        kc.depth_gap(X, activation="softplus", weights="both")


@pytest.mark.slow    # ~9 s; the default run keeps the models' closed-form comparisons and test_every_model's keywords
def test_compare_and_monte_carlo_accept_new_models():
    c = kc.compare(X, model="deq", activation="tanh", widths=(8,), n_samples=2, sigma_w=0.5, progress=False)
    ref = kc.deq_kernel(X, activation="tanh", sigma_w=0.5, sigma_u=1.0, sigma_v=1.0)
    assert np.allclose(c.analytic.ntk, ref.ntk, rtol=0, atol=1e-14)
    m = kc.monte_carlo(X, model="resnet_untied", activation="tanh", width=8, depth=3, n_samples=2, progress=False)
    assert m.ntk.shape == (3, 3) and np.all(np.isfinite(m.stderr.ntk))
    with pytest.raises(kc.KernelcalcInputError, match="sigma_b"):
        kc.empirical_ntk(X, model="resnet_untied", activation="tanh", width=4, depth=2, sigma_b=0.1)


@pytest.mark.slow
def test_cli_compare_models(tmp_path):
    from click.testing import CliRunner

    from kernelcalc.cli import main

    out = CliRunner().invoke(main, ["compare-models", "--activation", "softplus", "--T", "1", "--n-inputs", "6",
                                    "--plot", str(tmp_path / "f.png")])
    assert out.exit_code == 0, out.output
    assert "untied ODE" in out.output and (tmp_path / "f.png").exists()
    bad = CliRunner().invoke(main, ["compare-models", "--sigma-w", "0"])
    assert bad.exit_code == 2 and "sigma_w" in bad.output
