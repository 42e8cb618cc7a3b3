"""One meaning per keyword, one default per concept, one failure style (docs/keywords.md).

Each test fails on the behaviour before the change: flow_gap raised on a failed run, width defaulted
to 1024/256/128/4, progress to True or False, check(tol=) was the singularity threshold under the
name node_kernel uses for a time accuracy, empirical_ntk(steps=) was the solver's steps, and the
empirical kernel of one network carried nngp = f(x) f(y).
"""

import inspect
import json
import math

import jax
import numpy as np
import pytest
from click.testing import CliRunner

import kernelcalc as kc
from kernelcalc import KernelcalcInputError
from kernelcalc.cli import main
from kernelcalc.empirical.models import init_params, make_network
from kernelcalc.training import flow_gap, sad_data


def sphere(N, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d))
    return x * np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True), rng.normal(size=N)


X, Y = sphere(6, 12)
# The failure logic does not depend on the model: the one-hidden-layer MLP compiles fastest.
MLP = dict(model="mlp", depth=1)


def _public_functions():
    """Every public function: kernelcalc.__all__ (lazy names included) and the sub-packages' __all__."""
    import kernelcalc.empirical as emp
    import kernelcalc.studies.comparison as comparison
    import kernelcalc.studies.horizon as horizon
    import kernelcalc.training as tr

    out = {}
    for mod in (kc, emp, tr, horizon, comparison):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
                out[f"{mod.__name__}.{name}"] = obj
    assert {"kernelcalc.train", "kernelcalc.compare", "kernelcalc.empirical_ntk", "kernelcalc.node_kernel",
            "kernelcalc.sweep_T", "kernelcalc.training.flow_gap"} <= set(out)
    return out


# ----------------------------------------------------------------------------- one default per concept
def test_progress_defaults_to_auto_everywhere():
    with_progress = {n: inspect.signature(f).parameters["progress"].default
                     for n, f in _public_functions().items() if "progress" in inspect.signature(f).parameters}
    assert len(with_progress) >= 12, sorted(with_progress)   # kernels, empirical, training, studies
    assert {n: d for n, d in with_progress.items() if d is not None} == {}


def test_progress_that_is_not_none_true_false_is_an_error():
    with pytest.raises(KernelcalcInputError, match=r"progress must be None \(auto"):
        kc.train(X, Y, width=8, steps=1, lambda0=1.0, progress="yes")
    with pytest.raises(KernelcalcInputError, match="progress must be None"):
        kc.node_kernel(X, activation="softplus", progress=1)


def test_one_default_width_for_one_network():
    widths = {n: inspect.signature(f).parameters["width"].default
              for n, f in _public_functions().items() if "width" in inspect.signature(f).parameters}
    widths["make_network"] = inspect.signature(make_network).parameters["width"].default
    assert widths.pop("kernelcalc.training.divergent_flow") is inspect.Parameter.empty   # required: small SAD nets
    widths.pop("kernelcalc.divergent_flow")
    assert len(widths) >= 7 and set(widths.values()) == {256}, widths


def test_divergent_flow_needs_an_explicit_width():
    with pytest.raises(TypeError, match="width"):
        kc.divergent_flow(X[:, :1], Y)


# ----------------------------------------------------------------------------- failed runs: never raised
def test_train_failure_is_reported_not_raised_and_old_names_map():
    r = kc.train(X, Y, width=8, steps=30, lr=50.0, lambda0=1.0, **MLP)   # lambda0 given: no analytic kernel
    assert r.failed and r.failure.startswith("loss") and "at step" in r.failure and "width 8" in r.failure
    assert r.steps_recorded[-1] < 30 and math.isfinite(r.loss[-1])          # records stop at the last good step
    d = json.loads(r.to_json())
    assert d["failed"] is True and d["failure"] == r.failure and "diverged" not in d
    with pytest.deprecated_call(match="TrainResult.diverged"):
        assert r.diverged is True
    with pytest.deprecated_call(match="TrainResult.reason"):
        assert r.reason == r.failure
    ok = kc.train(X, Y, width=8, steps=2, lambda0=1.0, **MLP)
    assert not ok.failed and ok.failure is None
    with pytest.deprecated_call():
        assert ok.reason == ""


def test_flow_gap_gd_failure_is_a_result_not_an_exception():
    """Before: KernelcalcInputError('GD diverged ...'). Now: failed=True, the failing step size's rows NaN."""
    # this width-8 MLP's NTK has lambda_max = 3.86: GD is unstable for lr > 2/3.86; at lr = 6 the loss
    # is 215 L_0 after 2 steps (> divergence_factor = 5); lr = 0.15 and 0.075 converge
    r = flow_gap(X, Y, lrs=[6.0, 0.15, 0.075], t_max=12.0, n_compare=2, width=8, seed=0, divergence_factor=5,
                 flow_rtol=1e-8, flow_atol=1e-10, **MLP)
    assert r.failed and "GD at lr=6 " in r.failure and "by step 2 (t=12)" in r.failure
    assert r.gd_loss[0][0] == r.flow_loss[0] and np.isfinite(r.gd_loss[0][1]) and np.isnan(r.gd_loss[0][2])
    assert np.isnan(r.loss_gap[0]) and np.isnan(r.param_gap[0])
    assert np.isfinite(r.loss_gap[1:]).all() and np.isfinite(r.flow_loss).all()
    # the order is fitted on the two finite gaps: GD is explicit Euler, gap ~ lr
    assert 0.7 < r.order_param < 1.3
    assert "FAILED" in r.table()


def test_flow_gap_flow_failure_keeps_the_times_before(monkeypatch):
    """A flow solve that fails at the second interval: flow_loss NaN from t_2 on, gaps over t_0, t_1."""
    import importlib

    fg = importlib.import_module("kernelcalc.training.flow_gap")   # the module (the package exports the function)

    kw = dict(lrs=[0.02, 0.01], t_max=0.32, n_compare=4, width=8, seed=0, **MLP)
    full = fg.flow_gap(X, Y, **kw)
    real = fg.flow_solver

    def failing_solver(*args):
        advance = real(*args)

        def adv(theta, t0, t1, dt0):
            new, ok, ns = advance(theta, t0, t1, dt0)
            return new, ok & (float(t0) < 0.08 - 1e-12), ns   # fails on [0.08, 0.16]
        return adv

    monkeypatch.setattr(fg, "flow_solver", failing_solver)
    r = fg.flow_gap(X, Y, **kw)
    assert r.failed and "between t=0.08 and t=0.16" in r.failure
    np.testing.assert_array_equal(r.flow_loss[:2], full.flow_loss[:2])
    assert np.isnan(r.flow_loss[2:]).all()
    for i in range(2):   # gap over the two times the flow reached, from the unfailed run's curves
        want = max(abs(a - b) for a, b in zip(full.gd_loss[i][:2], full.flow_loss[:2])) / full.flow_loss[0]
        assert r.loss_gap[i] == pytest.approx(want, rel=1e-12)
    assert r.gd_loss == full.gd_loss        # GD itself did not fail


def test_width_sweep_flags_each_failed_width():
    s = kc.width_sweep(X, Y, widths=[8, 16], steps=20, lr=50.0, lambda0=1.0, **MLP)
    assert s.width_failed == (True, True) and s.failed
    assert "width 8: loss" in s.failure and "width 16: loss" in s.failure
    assert all(math.isnan(v) for k, v in s.slopes.items() if k != "eig err vs K_inf")   # no comparable widths
    assert "FAILED" in s.table()
    ok = kc.width_sweep(X, Y, widths=[8, 16], steps=2, lambda0=1.0, **MLP)
    assert ok.width_failed == (False, False) and not ok.failed and ok.failure is None
    with pytest.raises(KernelcalcInputError, match="width does not apply to width_sweep"):
        kc.width_sweep(X, Y, widths=[8], width=8, **MLP)


def test_cli_failed_run_exits_1_with_one_error_line(tmp_path):
    for args in (["train", "--lr", "100", "--width", "8", "--steps", "20"],
                 ["width-sweep", "--lr", "100", "--widths", "8", "--steps", "20"],
                 ["flow-gap", "--lrs", "6,0.15", "--t-max", "12", "--n-compare", "2", "--width", "8",
                  "--divergence-factor", "5"]):
        r = CliRunner().invoke(main, args + ["--model", "mlp", "--depth", "1", "--quiet", "--n-inputs", "6",
                                             "--dim", "12"])
        assert r.exit_code == 1, (args, r.output)
        assert "Traceback" not in r.output and "Error: run failed: " in r.output, r.output


# ----------------------------------------------------------------------------- one meaning per keyword
def test_check_singular_tol_and_the_deprecated_tol():
    rep = kc.check(X, activation="softplus", singular_tol=1e9)       # every Gram is "singular" below 1e9
    assert not rep.ok and "<= singular_tol = 1e+09" in " ".join(rep.problems)
    assert rep.params["singular_tol"] == 1e9 and "tol" not in rep.params
    with pytest.deprecated_call(match=r"check\(tol=...\) is deprecated .* use singular_tol="):
        old = kc.check(X, activation="softplus", tol=1e9)
    assert old.params["singular_tol"] == 1e9 and old.problems == rep.problems
    with pytest.raises(KernelcalcInputError, match="give singular_tol= only"):
        kc.check(X, activation="softplus", tol=1e9, singular_tol=1e9)
    assert kc.check(X, activation="softplus").ok


def test_cli_check_singular_tol_and_deprecated_tol(tmp_path):
    np.save(tmp_path / "X.npy", X)
    r = CliRunner().invoke(main, ["check", "--data", str(tmp_path / "X.npy"), "--singular-tol", "1e9"])
    assert r.exit_code == 1 and "singular_tol = 1e+09" in r.output
    r = CliRunner().invoke(main, ["check", "--data", str(tmp_path / "X.npy"), "--tol", "1e9"])
    assert r.exit_code == 1 and "Warning: --tol is deprecated" in r.output and "singular_tol = 1e+09" in r.output
    r = CliRunner().invoke(main, ["check", "--data", str(tmp_path / "X.npy"), "--tol", "1", "--singular-tol", "1"])
    assert r.exit_code == 2 and "give --singular-tol only" in r.output


def test_solver_steps_is_the_solvers_steps_and_steps_is_deprecated():
    kw = dict(activation="tanh", width=8, seed=0, solver="euler")
    k8 = kc.empirical_ntk(X[:2], solver_steps=8, **kw)
    with pytest.deprecated_call(match=r"empirical_ntk\(steps=...\)"):
        old = kc.empirical_ntk(X[:2], steps=8, **kw)
    np.testing.assert_array_equal(old.ntk, k8.ntk)
    assert old.params["solver_steps"] == 8
    assert np.max(np.abs(kc.empirical_ntk(X[:2], solver_steps=2, **kw).ntk - k8.ntk)) > 1e-6   # not ignored
    with pytest.deprecated_call(match=r"make_network\(steps=...\)"):
        net = make_network("node", activation="tanh", width=8, steps=5)
    assert net.solver_steps == 5
    with pytest.deprecated_call(match="Network.steps"):
        assert net.steps == 5
    with pytest.deprecated_call(match=r"monte_carlo\(steps=...\)"):
        mc = kc.monte_carlo(X[:2], n_samples=2, steps=8, progress=False, **{k: v for k, v in kw.items() if k != "seed"})
    assert mc.params["solver_steps"] == 8
    with pytest.raises(KernelcalcInputError, match="give solver_steps= only"):
        kc.empirical_ntk(X[:2], steps=8, solver_steps=8, **kw)


@pytest.mark.slow   # 8 s (two flow runs); the keyword checks of the kernels stay in the default run
def test_flow_tolerances_are_flow_rtol_and_old_names_warn():
    with pytest.deprecated_call(match=r"train\(rtol=...\) is deprecated .* use flow_rtol="):
        r = kc.train(X, Y, width=8, steps=2, method="flow", lambda0=1.0, rtol=1e-5, **MLP)
    assert r.info["flow_rtol"] == 1e-5 and r.info["flow_atol"] == 1e-8
    with pytest.deprecated_call(match=r"flow_gap\(atol=...\)"):
        g = flow_gap(X, Y, lrs=[0.02], t_max=0.04, n_compare=1, width=8, atol=1e-11, **MLP)
    assert g.params["flow_atol"] == 1e-11 and g.params["flow_rtol"] == 1e-10
    x1, y1 = sad_data(4, degree=2)
    new = kc.divergent_flow(x1, y1, width=2, seed=0, t_max=1e3, flow_max_steps=4, n_records=10)
    with pytest.deprecated_call(match=r"divergent_flow\(max_steps=...\)"):
        old = kc.divergent_flow(x1, y1, width=2, seed=0, t_max=1e3, max_steps=4, n_records=10)
    assert old.failed and old.failure == new.failure and old.params["flow_max_steps"] == 4


# ----------------------------------------------------------------------------- the empirical kernel of one network
def test_one_network_has_no_nngp_only_its_outputs():
    """empirical_ntk's nngp was f(x)f(y) under a field documented as E[f f]. Now None; f in info."""
    X2 = X[:3]
    k = kc.empirical_ntk(X2, X[3:], model="mlp", depth=1, activation="tanh", width=16, seed=4)
    assert k.nngp is None and k.ntk.shape == (3, 3)
    # the outputs by hand (numpy, NTK parametrisation, unit weight scales, no biases) from the same
    # iid N(0, 1) parameters
    net = make_network("mlp", depth=1, activation="tanh", width=16)
    p = init_params(jax.random.PRNGKey(4), net, X.shape[1])
    W, w = np.asarray(p.Ws[0]), np.asarray(p.w_out)

    def f(x):
        return np.tanh(x @ W.T / np.sqrt(12)) @ w / 4.0

    np.testing.assert_allclose(k.info["f1"], f(X2), rtol=1e-12)
    np.testing.assert_allclose(k.info["f2"], f(X[3:]), rtol=1e-12)
    d = json.loads(k.to_json())
    assert d["nngp"] is None and len(d["ntk"]) == 3


def test_monte_carlo_nngp_is_the_sample_mean_of_f_f():
    kw = dict(model="node", activation="tanh", width=8, solver="euler", solver_steps=4)
    mc = kc.monte_carlo(X[:3], n_samples=3, seed=2, progress=False, **kw)
    net = make_network(**kw)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    prods = []
    for key in keys:
        one = kc.empirical_ntk(X[:3], params=init_params(key, net, X.shape[1]), **kw)
        prods.append(np.outer(one.info["f1"], one.info["f2"]))
    np.testing.assert_allclose(mc.nngp, np.mean(prods, axis=0), rtol=1e-12, atol=1e-15)
