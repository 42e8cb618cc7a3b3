"""Divergent gradient flows of SAD networks (kernelcalc.training.divergence): verdicts, fits, flow accuracy, CLI.

The runs share one architecture (softplus MLP, width 2, depth 1: 7 parameters) so the jitted solver compiles
once per data shape. Measured (t_max = 1e5, rtol 1e-8): x^2 on 40 points, seed 1 -> divergent with
beta = 0.189, alpha = 0.606, |theta| 2.45 -> 16.6, loss 87 -> 2.1e-4 (the same asymptotic trajectory for
seeds 1, 3, 4, 5, 7); x^2 on 4 points (fewer than parameters), seed 0 -> convergent to a global minimum,
|theta| = 4.027, loss 1e-30.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from kernelcalc import KernelcalcInputError
from kernelcalc.cli import main
from kernelcalc.empirical.models import init_params, make_network, model_apply
from kernelcalc.training import FlowDivergence, divergent_flow, polynomial_target, sad_data

X40, Y40 = sad_data(40, degree=2)
X4, Y4 = sad_data(4, degree=2)
SAD = dict(activation="softplus", width=2, seed=1, t_max=1e5)


@pytest.fixture(scope="module")
def sad():
    return divergent_flow(X40, Y40, **SAD)


@pytest.fixture(scope="module")
def interpolating():
    return divergent_flow(X4, Y4, activation="softplus", width=2, seed=0, t_max=1e5)


def test_sad_data_is_the_polynomial():
    X, y = sad_data(5, degree=2)
    assert X.shape == (5, 1)
    np.testing.assert_allclose(X[:, 0], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(y, [1, 0.25, 0, 0.25, 1])
    np.testing.assert_allclose(polynomial_target([2.0, 3.0], [1, 0, 2]), [9.0, 19.0])
    Xr, yr = sad_data(7, degree=3, seed=4)
    assert np.all(np.abs(Xr) <= 1) and np.all(np.diff(Xr[:, 0]) > 0)
    np.testing.assert_allclose(yr, Xr[:, 0] ** 3)


def test_x_squared_flow_diverges(sad):
    r = sad
    assert isinstance(r, FlowDivergence)
    assert r.verdict == "divergent", r.reason
    t, P, L = np.asarray(r.times), np.asarray(r.param_norm), np.asarray(r.loss)
    last = t >= t[-1] / 10
    assert np.all(np.diff(P[last]) > 0)                          # |theta| increases over the last decade
    assert P[-1] > 6 * r.info["param_norm_init"]                 # measured 16.6 / 2.45
    assert 0.15 < r.norm_growth_exponent < 0.23                  # measured 0.189
    assert 1.5 < r.norm_log_slope < 3.5                          # measured 2.57 per e-fold of t
    assert 0.5 < r.loss_decay_exponent < 0.7                     # measured 0.606 (-> 1/2 asymptotically)
    assert r.info["loss_fit_rms_log"] < 0.02                     # -dL/dln t is a clean power law
    assert r.loss_asymptote == 0.0                               # optimal loss 0, reached only at infinity
    # |grad L| ~ t^-(1+alpha)/2 bounds the growth: beta <= (1 - alpha)/2 (measured 0.189 <= 0.197)
    assert r.norm_growth_exponent <= r.info["growth_bound"] + 0.02
    # the loss falls by orders of magnitude: from t = 0, and over the last four decades
    assert r.loss_drop > 1e5                                     # measured 4.1e5
    assert L[-1] < 1e-3 * L[np.argmin(np.abs(np.log(t)))]        # L(1e5) / L(1) = 1.1e-4
    assert np.all(np.diff(L) < 0)
    assert r.grad_norm[-1] < 1e-4 and np.all(np.diff(np.asarray(r.grad_norm)[last]) < 0)


def test_interpolation_converges(interpolating):
    r = interpolating                                            # 4 points < 7 parameters
    assert r.verdict == "convergent", r.reason
    P = np.asarray(r.param_norm)
    assert P.max() < 10 and abs(P[-1] - 4.0266) < 1e-3           # bounded, settled at |theta| = 4.027
    assert r.info["settle_ratio"] < 1e-10
    assert r.final_loss < 1e-20 and r.loss_asymptote == r.final_loss
    assert r.loss_decay_exponent is None and r.grad_norm[-1] < 1e-10


@pytest.mark.usefixtures("x64")
def test_flow_matches_independent_euler(sad):
    """The recorded state near t = 1 against explicit Euler on the MLPParams pytree (model_apply, not the flat
    vector): Euler's O(dt) error and its Richardson extrapolation 2E(dt/2) - E(dt)."""
    r = sad
    k = int(np.argmin(np.abs(np.log(r.times))))
    tk = r.times[k]
    net = make_network("mlp", activation="softplus", width=2, depth=1, sigma_b=1.0, sigma_vb=1.0)
    p0 = init_params(jax.random.PRNGKey(SAD["seed"]), net, 1)

    def loss(p):
        return 0.5 * jnp.sum((model_apply(p, X40, net) - Y40) ** 2)

    def euler(n):
        def step(p, _):
            return jax.tree_util.tree_map(lambda a, g: a - tk / n * g, p, jax.grad(loss)(p)), None

        p, _ = jax.lax.scan(step, p0, None, length=n)
        norm = math.sqrt(sum(float(jnp.sum(leaf ** 2)) for leaf in jax.tree_util.tree_leaves(p)))
        return float(loss(p)), norm

    (l1, n1), (l2, n2) = euler(4000), euler(8000)
    assert abs(l2 - r.loss[k]) / r.loss[k] < 1e-4                 # measured 3e-5
    assert abs(2 * l2 - l1 - r.loss[k]) / r.loss[k] < 1e-5         # measured 7e-7
    assert abs(2 * n2 - n1 - r.param_norm[k]) / r.param_norm[k] < 1e-5


def test_energy_identity(sad):
    """Along the flow dL/dt = -|grad L|^2, i.e. L(a) - L(b) = int_a^b t|grad L|^2 dln t (trapezoid on the records)."""
    t, L, G = (np.asarray(v) for v in (sad.times, sad.loss, sad.grad_norm))
    sel = t >= 1e2
    drop = L[sel][0] - L[sel][-1]
    integral = np.trapezoid(t[sel] * G[sel] ** 2, np.log(t[sel]))
    assert abs(integral - drop) / drop < 1e-2                     # measured 2e-4


def test_result_is_frozen_and_json(sad):
    with pytest.raises(Exception):
        sad.verdict = "convergent"
    d = json.loads(sad.to_json())
    assert d["verdict"] == "divergent" and len(d["times"]) == len(d["loss"]) == 60
    assert d["failed"] is False and d["failure"] is None
    assert d["params"]["width"] == 2 and d["params"]["N"] == 40 and d["params"]["flow_solver"] == "kvaerno5"
    assert d["info"]["thresholds"]["min_growth_exponent"] == 0.01
    assert len(d["info"]["theta_final"]) == 7
    s = str(sad)
    assert "verdict: DIVERGENT" in s and "beta = dln|theta|/dln t = 0.18" in s


def test_short_run_is_undetermined_with_reason():
    r = divergent_flow(X40, Y40, **{**SAD, "t_max": 1.0})        # before the loss has found its regime
    assert r.verdict == "undetermined" and "integrate longer" in r.reason


def test_solver_failure_is_a_failed_run_not_a_traceback():
    r = divergent_flow(X4, Y4, width=2, seed=0, t_max=1e3, flow_max_steps=4, n_records=10)
    assert r.verdict == "undetermined" and r.failed
    assert "ODE solver (kvaerno5) failed" in r.failure and "maximum number of solver steps" in r.failure
    assert r.reason == r.failure and len(r.times) < 10


@pytest.mark.parametrize("kw,match", [
    (dict(X=[[0.0], [np.nan]], y=[0.0, 1.0]), "X contains NaN"),
    (dict(y=[1.0, 2.0]), "y has 2 entries but X has 4 rows"),
    (dict(y=[1.0, np.inf, 0.0, 0.0]), "y contains NaN or inf"),
    (dict(t_max=0), "t_max must be > 0"),
    (dict(t_max=-5.0), "t_max must be > 0"),
    (dict(width=0), "width must be an integer >= 1"),
    (dict(t_max=1e-3), "t_min must be < t_max"),
    (dict(flow_solver="rk45"), "flow_solver must be one of"),
    (dict(n_records=1), "n_records must be an integer >= 2"),
])
def test_bad_input_names_the_argument(kw, match):
    args = dict(X=X4, y=Y4, width=2)
    args.update(kw)
    X, y = args.pop("X"), args.pop("y")
    with pytest.raises(KernelcalcInputError, match=match):
        divergent_flow(X, y, **args)


def test_cli_summary_and_json(tmp_path, sad):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["divergent-flow", "--width", "2", "--seed", "1", "--n-points", "40",
                                    "--t-max", "1e5", "--quiet", "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    assert "verdict: DIVERGENT" in res.output and "beta = dln|theta|/dln t" in res.output
    d = json.loads(out.read_text())
    assert d["verdict"] == "divergent"
    assert d["norm_growth_exponent"] == pytest.approx(sad.norm_growth_exponent, rel=1e-6)


def test_cli_data_files(tmp_path):
    data = tmp_path / "xy.csv"
    np.savetxt(data, np.column_stack([X4[:, 0], Y4]), delimiter=",")
    res = CliRunner().invoke(main, ["divergent-flow", "--width", "2", "--data", str(data), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "N=4" in res.output and "verdict: CONVERGENT" in res.output


@pytest.mark.parametrize("args,match", [
    (["--t-max", "-1"], "Error: t_max must be > 0"),
    (["--width", "0"], "Error: width must be an integer >= 1"),
    (["--targets", "y.csv"], "Error: --targets needs --data"),
    (["--width", "two"], "Error: "),
])
def test_cli_bad_input_is_one_line(args, match):
    res = CliRunner().invoke(main, ["divergent-flow", *args])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(match), res.output
