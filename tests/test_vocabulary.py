"""One spelling of each model's scales (docs/naming.md), accepted by every public entry point that
builds a model; a scale of another model is an error, never ignored.

The table below walks every such entry point x every model it builds.  For (a) each scale keyword
of the naming table is passed with a non-default value and must arrive, as that value, where the
entry point builds its network or kernel: the expensive computation behind that point is replaced
by a *sink* that records its arguments (the keyword handling in front of it is the real code).
For (b) every scale keyword that does not apply must raise ``KernelcalcInputError`` naming it.
The naming table itself is written out here, independently of ``kernelcalc._validation``.
"""

from __future__ import annotations

import inspect
import types
import warnings

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError

ODE = ("sigma_w", "sigma_u", "sigma_v")
TABLE = {"node": ODE, "resnet": ODE, "node_untied": ODE, "resnet_untied": ODE, "deq": ODE + ("sigma_b",),
         "mlp": ("sigma_w", "sigma_b", "sigma_v", "sigma_vb")}
ALL = ("sigma_w", "sigma_u", "sigma_v", "sigma_b", "sigma_vb")
VALUE = {"sigma_w": 0.7, "sigma_u": 1.3, "sigma_v": 0.9, "sigma_b": 0.3, "sigma_vb": 0.2}   # none a default
DEPTH = {"resnet": 2, "mlp": 2, "resnet_untied": 2}
X = np.sqrt(2.0) * np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])     # 3 x 2, on the sphere |x|^2 = d
Y = np.array([0.3, -0.2, 0.5])


class Reached(Exception):
    """Raised by a sink: the call got past the keyword handling to the model's construction."""


def _fake_kernel(x1, x2=None, **kw):
    n1, n2 = len(np.atleast_2d(x1)), len(np.atleast_2d(x1 if x2 is None else x2))
    g = np.full((n1, n2), 0.5) + (np.eye(n1) if n2 == n1 else 0.0)
    return types.SimpleNamespace(nngp=g, ntk=g, info={"error_estimate": 1e-12}, params=kw)


def _sinks(monkeypatch):
    """Replace the costly insides; return the list of recorded calls ``(where, scales)``."""
    import kernelcalc.empirical.models as models
    import kernelcalc.kernels as kernels
    import kernelcalc.kernels.deq as deq
    import kernelcalc.kernels.mlp as mlp
    import kernelcalc.kernels.ode as ode
    import kernelcalc.kernels.resnet as resnet

    calls = []

    def pick(kw):
        return {k: kw[k] for k in ALL if kw.get(k) is not None}

    def network(**kw):                                 # every finite-width model is one Network(...)
        calls.append(("Network", pick(kw)))
        raise Reached

    def goursat(act, **kw):                            # node_kernel / resnet_kernel after validation
        calls.append(("GoursatSolver", pick(kw)))
        raise Reached

    def mlp_compiled(dual, depth, sigma_w, sigma_b, sigma_v, sigma_vb):
        calls.append(("mlp", dict(sigma_w=sigma_w, sigma_b=sigma_b, sigma_v=sigma_v, sigma_vb=sigma_vb)))
        raise Reached

    def deq_compiled(dual, sigma_w, sigma_u, sigma_b, sigma_v):
        calls.append(("deq", dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b)))
        raise Reached

    def kernel_sink(name):
        def fn(x1, x2=None, **kw):                     # a kernel called by a study: record, return a fake
            calls.append((name, pick(kw)))
            return _fake_kernel(x1, x2, **kw)
        return fn

    monkeypatch.setattr(models, "Network", network)
    monkeypatch.setattr(ode, "GoursatSolver", goursat)
    monkeypatch.setattr(resnet, "GoursatSolver", goursat)
    monkeypatch.setattr(mlp, "_compiled", mlp_compiled)
    monkeypatch.setattr(deq, "_compiled", deq_compiled)
    for name in ("node_kernel", "resnet_kernel", "mlp_kernel", "deq_kernel"):
        monkeypatch.setattr(kernels, name, kernel_sink(name))   # the studies look them up here
    return calls


# entry point name -> (models it builds, call(fn, model, **scales)); a fixed-model function lists one model
def _with_model(fn, model, **kw):
    return fn(X, model=model, activation="softplus", depth=DEPTH.get(model), **kw)


ENTRIES = {
    "mlp_kernel": (("mlp",), lambda f, m, **kw: f(X, activation="relu", depth=1, **kw)),
    "node_kernel": (("node",), lambda f, m, **kw: f(X, activation="tanh", **kw)),
    "resnet_kernel": (("resnet",), lambda f, m, **kw: f(X, activation="tanh", depth=2, **kw)),
    "deq_kernel": (("deq",), lambda f, m, **kw: f(X, activation="tanh", **kw)),
    "make_network": (tuple(TABLE), lambda f, m, **kw: f(m, activation="tanh", width=4, depth=DEPTH.get(m), **kw)),
    "empirical_ntk": (tuple(TABLE), lambda f, m, **kw: _with_model(f, m, width=4, **kw)),
    "monte_carlo": (tuple(TABLE), lambda f, m, **kw: f(X, model=m, activation="softplus", width=4, n_samples=2,
                                                      progress=False, **({"depth": DEPTH[m]} if m in DEPTH else {}),
                                                      **kw)),
    "compare": (tuple(TABLE), lambda f, m, **kw: f(X, model=m, activation="softplus", widths=[4], n_samples=2,
                                                  progress=False, **({"depth": DEPTH[m]} if m in DEPTH else {}), **kw)),
    "depth_gap": (("node",), lambda f, m, **kw: f(X, activation="softplus", width=4, depths=[2], progress=False, **kw)),
    "train": (tuple(TABLE), lambda f, m, **kw: f(X, Y, model=m, activation="softplus", width=4, steps=2,
                                                depth=DEPTH.get(m), **kw)),
    "width_sweep": (tuple(TABLE), lambda f, m, **kw: f(X, Y, widths=[4], model=m, activation="softplus", steps=2,
                                                      depth=DEPTH.get(m), **kw)),
    "flow_gap": (tuple(TABLE), lambda f, m, **kw: f(X, Y, model=m, activation="softplus", width=4,
                                                   depth=DEPTH.get(m), **kw)),
    "infinite_width_ntk": (tuple(TABLE), lambda f, m, **kw: _with_model(f, m, **kw)),
    "divergent_flow": (("mlp",), lambda f, m, **kw: f(X[:, :1], Y, width=2, t_max=10.0, **kw)),
    "derive": (tuple(TABLE), lambda f, m, **kw: f("relu", model=m, **kw)),
    "compare_models": (("deq",), lambda f, m, **kw: f(X, activation="softplus", depth=2, n_rho=3, **kw)),
    "check": (("node", "resnet", "mlp", "deq"), lambda f, m, **kw: f(X, model=m, activation="softplus",
                                                                     **({"depth": DEPTH[m]} if m in DEPTH else {}), **kw)),
    "sweep_T": (("node",), lambda f, m, **kw: f(X, activations=("softplus",), Ts=(1.0,), **kw)),
    "rigorous_kernel": (("node", "mlp"), lambda f, m, **kw: f(X, model=m, activation="identity" if m == "node"
                                                             else "relu", **({"depth": 1} if m == "mlp" else {}), **kw)),
    "certify_ntk": (("node", "mlp", "resnet"), lambda f, m, **kw: _with_model(f, m, **kw)),
    "predict": (tuple(TABLE), lambda f, m, **kw: f(X, Y, model=m, activation="softplus", depth=DEPTH.get(m), t=1.0,
                                                  **kw)),
    "trained_ensemble": (tuple(TABLE), lambda f, m, **kw: f(X, Y, X, model=m, activation="softplus", width=4,
                                                            n_networks=2, t=0.0, depth=DEPTH.get(m), **kw)),
    "compare_predictions": (tuple(TABLE), lambda f, m, **kw: f(X, Y, X, model=m, activation="softplus", widths=[4],
                                                               n_networks=2, t=0.0, depth=DEPTH.get(m), **kw)),
}
ENTRIES["sphere_spectrum"] = (("node", "resnet", "mlp", "deq"), lambda f, m, **kw: f(
    model=m, activation="tanh", d=2, k_max=1, **({"depth": DEPTH[m]} if m in DEPTH else {}), **kw))
# public callables with a ``model`` or scale parameter that build no model with scales
NO_SCALES = {"feature_rank_bound": "a rank bound from the activation's polynomial degree alone",
             "lambda_min_table": "a rank study over several models at their default scales"}


def _fn(name):
    if name in ("infinite_width_ntk",):
        from kernelcalc.training import infinite_width_ntk
        return infinite_width_ntk
    if name == "make_network":
        from kernelcalc.empirical import make_network
        return make_network
    if name == "compare_models":
        from kernelcalc.studies.comparison import compare_models
        return compare_models
    return getattr(kc, name)


def _scales_seen(name, result, calls):
    """The scales the call delivered: from the sinks, or (derive, rigorous_kernel) from the real result."""
    if name == "derive":
        return {k: float(v) for k, v in result.scales}
    if name == "rigorous_kernel":
        return {k: v for k, v in result.params.items() if k in ALL}
    seen = {}
    for _, scales in calls:
        seen.update(scales)
    return seen


ACCEPT = [(name, m, s) for name, (models, _) in ENTRIES.items() for m in models for s in TABLE[m]]
REJECT = [(name, m, s) for name, (models, _) in ENTRIES.items() for m in models for s in ALL if s not in TABLE[m]]


@pytest.mark.parametrize("name, model, scale", ACCEPT, ids=[f"{n}-{m}-{s}" for n, m, s in ACCEPT])
def test_each_scale_of_the_model_is_accepted_and_used(name, model, scale, monkeypatch):
    calls = _sinks(monkeypatch)
    models, call = ENTRIES[name]
    result = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # Assumption-1, accuracy: not the subject here
        try:
            result = call(_fn(name), model, **{scale: VALUE[scale]})
        except Reached:
            pass
    seen = _scales_seen(name, result, calls)
    assert seen.get(scale) == pytest.approx(VALUE[scale]), (name, model, scale, calls)
    # the other scales of the model arrive with their defaults: the table's ones (divergent_flow: biases on)
    defaults = {"sigma_w": 1.0, "sigma_u": 1.0, "sigma_v": 1.0, "sigma_b": 0.0, "sigma_vb": 0.0}
    if name == "divergent_flow":
        defaults.update(sigma_b=1.0, sigma_vb=1.0)
    if name not in ("derive",):                       # derive keeps the others symbolic
        for other in TABLE[model]:
            if other != scale:
                assert seen.get(other) == pytest.approx(defaults[other]), (name, model, other, seen)
    assert not set(seen) - set(TABLE[model]), (name, model, seen)


@pytest.mark.parametrize("name, model, scale", REJECT, ids=[f"{n}-{m}-{s}" for n, m, s in REJECT])
def test_a_scale_of_another_model_raises(name, model, scale, monkeypatch):
    calls = _sinks(monkeypatch)
    models, call = ENTRIES[name]
    default = {"sigma_b": 0.0, "sigma_vb": 0.0}.get(scale, 1.0)    # even its "harmless" default value
    with pytest.raises(KernelcalcInputError, match=scale) as err:
        call(_fn(name), model, **{scale: default})
    assert "does not apply" in str(err.value)
    if len(models) > 1:
        assert repr(model) in str(err.value)
    assert not calls                                   # refused before anything was built


def test_every_public_model_builder_is_in_the_table():
    """A new public function that takes ``model`` or a scale keyword cannot be forgotten here."""
    builders = set()
    for name in kc.__all__:
        obj = getattr(kc, name)
        if not callable(obj) or inspect.isclass(obj):
            continue
        params = inspect.signature(obj).parameters
        if {"model", "models"} & set(params) or any(p in ALL for p in params):
            builders.add(name)
    assert builders - set(NO_SCALES) <= set(ENTRIES), builders - set(NO_SCALES) - set(ENTRIES)
    assert {"mlp_kernel", "node_kernel", "train", "divergent_flow", "derive", "check"} <= builders


@pytest.mark.parametrize("old, new", [("w_std", "sigma_w"), ("b_std", "sigma_b"), ("out_w_std", "sigma_v"),
                                      ("out_b_std", "sigma_vb")])
def test_old_mlp_names_still_work_with_a_deprecation_warning(old, new, monkeypatch):
    calls = _sinks(monkeypatch)
    for name in ("mlp_kernel", "make_network", "empirical_ntk", "monte_carlo", "compare"):
        calls.clear()
        _, call = ENTRIES[name]
        with pytest.warns(DeprecationWarning, match=f"{old} is deprecated and will be removed in the next release; use {new}"):
            with pytest.raises(Reached):
                call(_fn(name), "mlp", **{old: VALUE[new]})
        assert calls[-1][1][new] == pytest.approx(VALUE[new])
    with pytest.raises(KernelcalcInputError, match="not both"):
        ENTRIES["mlp_kernel"][1](kc.mlp_kernel, "mlp", **{old: 0.5, new: 0.5})
    with pytest.raises(KernelcalcInputError, match=f"{old}.*does not apply to model='node'"):
        ENTRIES["make_network"][1](_fn("make_network"), "node", **{old: 0.5})


@pytest.mark.parametrize("name", ["mlp_kernel", "make_network", "train", "divergent_flow", "deq_kernel", "derive"])
def test_weight_scales_must_be_positive_and_biases_nonnegative(name, monkeypatch):
    _sinks(monkeypatch)
    models, call = ENTRIES[name]
    model = models[-1] if name != "make_network" else "mlp"
    fn = _fn(name)
    weights = [s for s in TABLE[model] if s in ODE]
    biases = [s for s in TABLE[model] if s not in ODE]
    for s in weights:
        with pytest.raises(KernelcalcInputError, match=f"{s} must be > 0, got 0"):
            call(fn, model, **{s: 0})
    for s in biases:
        with pytest.raises(KernelcalcInputError, match=f"{s} must be >= 0, got -0.1"):
            call(fn, model, **{s: -0.1})
        try:
            call(fn, model, **{s: 0.0})                # zero bias is fine
        except Reached:
            pass


def test_mlp_sigma_w_reaches_the_finite_network_and_its_k_inf():
    r"""Issue 11: ``make_network`` ignored ``sigma_*`` for the MLP, so ``train(model="mlp", sigma_w=2)``
    ran with weight std 1.  Reference (a scaling argument, no shared code): a bias-free relu MLP is
    positively homogeneous in its hidden-layer scale, $f(x;\theta,c)=c^Lf(x;\theta,1)$ for $L$ hidden
    layers, so every parameter gradient and hence the NTK scale by $c^{2L}$ exactly, at any width."""
    depth, c = 2, 2.0
    k1 = kc.empirical_ntk(X, model="mlp", activation="relu", depth=depth, width=8, seed=3)
    k2 = kc.empirical_ntk(X, model="mlp", activation="relu", depth=depth, width=8, seed=3, sigma_w=c)
    np.testing.assert_allclose(k2.ntk, c ** (2 * depth) * k1.ntk, rtol=1e-12)
    assert k2.params["sigma_w"] == c
    from kernelcalc.training import infinite_width_ntk     # the K_inf a training run is held against

    kinf1 = np.linalg.eigvalsh(kc.mlp_kernel(X, activation="relu", depth=depth).ntk)
    kinf2 = np.linalg.eigvalsh(infinite_width_ntk(X, model="mlp", activation="relu", depth=depth, sigma_w=c))
    np.testing.assert_allclose(kinf2, c ** (2 * depth) * kinf1, rtol=1e-10)


@pytest.mark.slow
def test_mlp_sigma_w_reaches_a_training_run():
    """The same scaling argument through a whole :func:`kernelcalc.train` run (the fast check above
    and the ``Network`` sink of the table cover the default suite)."""
    depth, c = 2, 2.0
    k1 = kc.empirical_ntk(X, model="mlp", activation="relu", depth=depth, width=8, seed=3)
    r = kc.train(X, Y, model="mlp", activation="relu", depth=depth, width=8, seed=3, steps=1, sigma_w=c)
    np.testing.assert_allclose(r.ntk_eigenvalues_init, c ** (2 * depth) * np.linalg.eigvalsh(k1.ntk), rtol=1e-10)
    # and the analytic K_inf it is held against is that of sigma_w = c too
    kinf1 = np.linalg.eigvalsh(kc.mlp_kernel(X, activation="relu", depth=depth).ntk)
    np.testing.assert_allclose(r.kinf_eigenvalues, c ** (2 * depth) * kinf1, rtol=1e-10)
    assert r.params["sigma_w"] == c


def test_warnings_point_at_the_callers_line_through_the_keyword_wrapper():
    """The DeprecationWarning and the Assumption-1 warning of a wrapped public function name the
    user's line, not the wrapper's (``kernelcalc._validation.warn`` skips wrapper frames)."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            kc.mlp_kernel(X, activation="relu", depth=0, w_std=1.5)      # warns, then refuses depth
        except KernelcalcInputError:
            pass
    dep = [w for w in rec if issubclass(w.category, DeprecationWarning)]
    assert dep and dep[0].filename == __file__


# ---------------------------------------------------------------- model keywords (issue 20, item 4)
# Which models each non-scale keyword configures, written out here independently of kernelcalc._validation.
APPLIES = {"T": ("node", "resnet", "node_untied", "resnet_untied"), "depth": ("resnet", "mlp", "resnet_untied"),
           "solver": ("node",), "gradient": ("node",), "solver_steps": ("node", "node_untied"),
           "rtol": ("node", "deq"), "atol": ("node", "deq"), "max_steps": ("node", "deq")}
NOT_DEFAULT = {"T": 2.5, "depth": 3, "solver": "dopri5", "gradient": "adjoint", "solver_steps": 7, "rtol": 1e-5,
               "atol": 1e-5, "max_steps": 123}


def _takes(name, keyword) -> bool:
    params = inspect.signature(_fn("train" if name == "width_sweep" else name)).parameters   # width_sweep(**train_kw)
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# every entry point whose model is an argument x every model x every keyword it takes that does not apply
MODEL_KW = [(name, m, k) for name, (models, _) in ENTRIES.items() if len(models) > 1 and name != "derive"
            for m in models for k in APPLIES if m not in APPLIES[k] and _takes(name, k)]


def _call_without(name, model, keyword, value):
    """The table's call of ``name`` for ``model``, with ``keyword=value`` (and without the table's own
    ``depth=None`` placeholder when the keyword is depth)."""
    _, call = ENTRIES[name]
    fn = _fn(name)
    if keyword == "depth":
        def fn_depth(*args, **kw):
            kw["depth"] = value
            return fn(*args, **kw)
        return call(fn_depth, model)
    return call(fn, model, **{keyword: value})


@pytest.mark.parametrize("name, model, keyword", MODEL_KW, ids=[f"{n}-{m}-{k}" for n, m, k in MODEL_KW])
def test_a_keyword_that_does_not_configure_the_model_raises(name, model, keyword, monkeypatch):
    calls = _sinks(monkeypatch)
    with pytest.raises(KernelcalcInputError, match=f"{keyword} does not apply to model={model!r}"):
        _call_without(name, model, keyword, NOT_DEFAULT[keyword])
    assert not calls                                   # refused before anything was built


def test_the_model_keyword_table_covers_the_issue_examples():
    Xs, ys = X, Y
    with pytest.raises(KernelcalcInputError, match=r"T does not apply to model='mlp' \(got T=2.0\)"):
        kc.train(Xs, ys, model="mlp", T=2.0, depth=1)
    with pytest.raises(KernelcalcInputError, match=r"depth does not apply to model='node' \(got depth=3\)"):
        kc.train(Xs, ys, model="node", depth=3)
    with pytest.raises(KernelcalcInputError, match=r"T does not apply to model='mlp' \(got T=3.0\)"):
        kc.empirical_ntk(Xs, model="mlp", activation="relu", depth=1, T=3.0)
    assert len(MODEL_KW) > 60                          # the walk above is not empty


# ------------------------------------------------ an explicit default is an explicit value (no silent ignore)
#: The documented default of each model keyword (docs/keywords.md), written out here; the training entry points'
#: Neural ODE takes 4 fixed rk4 steps.  ``depth``, ``rtol``, ``atol`` default to ``None`` ("not passed").
DOCUMENTED_DEFAULT = {"T": 1.0, "solver": "tsit5", "solver_steps": 64, "gradient": "discretize", "max_steps": 100_000}
TRAINING = ("train", "width_sweep", "flow_gap", "trained_ensemble", "compare_predictions")
TRAINING_DEFAULT = dict(DOCUMENTED_DEFAULT, solver="rk4", solver_steps=4)
AT_DEFAULT = [(n, m, k) for n, m, k in MODEL_KW if k in DOCUMENTED_DEFAULT]


@pytest.mark.parametrize("name, model, keyword", AT_DEFAULT, ids=[f"{n}-{m}-{k}" for n, m, k in AT_DEFAULT])
def test_an_inapplicable_keyword_at_its_documented_default_raises(name, model, keyword, monkeypatch):
    """``train(model="mlp", T=1.0)`` is refused like ``T=2.5``: the signature's sentinel ``None`` lets the
    entry point see an explicit value, the documented default included."""
    calls = _sinks(monkeypatch)
    value = (TRAINING_DEFAULT if name in TRAINING else DOCUMENTED_DEFAULT)[keyword]
    with pytest.raises(KernelcalcInputError, match=f"{keyword} does not apply to model={model!r}"):
        _call_without(name, model, keyword, value)
    assert not calls


def _network_sink(monkeypatch):
    """Record every keyword of the one ``Network(...)`` a finite-width entry point builds, then stop."""
    import kernelcalc.empirical.models as models

    built = []

    def network(**kw):
        built.append(kw)
        raise Reached

    monkeypatch.setattr(models, "Network", network)
    return built


def test_the_documented_defaults_still_apply_when_not_passed(monkeypatch):
    built = _network_sink(monkeypatch)
    with pytest.raises(Reached):
        _fn("make_network")("node", activation="tanh", width=4)
    assert {k: built[-1][k] for k in DOCUMENTED_DEFAULT} == DOCUMENTED_DEFAULT
    with pytest.raises(Reached):
        kc.train(X, Y, model="node", activation="tanh", width=4, steps=2)
    assert {k: built[-1][k] for k in ("T", "solver", "solver_steps")} == {"T": 1.0, "solver": "rk4", "solver_steps": 4}
    with pytest.raises(Reached):                       # the default passed where it applies is fine
        kc.train(X, Y, model="node", activation="tanh", width=4, steps=2, T=1.0, solver="rk4", solver_steps=4)
    with pytest.raises(Reached):                       # and so is None, "the model's default", where it does not
        kc.train(X, Y, model="mlp", activation="tanh", width=4, steps=2, depth=1, T=None, solver=None)
    assert built[-1]["model"] == "mlp"


def _cli(args):
    from click.testing import CliRunner

    from kernelcalc.cli import main

    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("args, refused", [
    (["train", "--model", "mlp", "--depth", "1", "--T", "1"], "T"),
    (["width-sweep", "--model", "mlp", "--depth", "1", "--T", "1.0"], "T"),
    (["flow-gap", "--model", "mlp", "--depth", "1", "--T", "1"], "T"),
    (["train", "--model", "node", "--depth", "3"], "depth"),
    (["compare", "--model", "mlp", "--depth", "1", "--solver-steps", "32"], "solver_steps"),
    (["compare", "--model", "resnet", "--depth", "2", "--solver", "tsit5"], "solver"),
    (["compare", "--model", "node", "--depth", "2"], "depth"),
])
def test_cli_refuses_an_option_the_user_set_that_does_not_apply_even_at_its_default(args, refused, monkeypatch):
    built = _network_sink(monkeypatch)
    res = _cli(args + ["--widths" if args[0] in ("compare", "width-sweep") else "--width", "4", "--quiet"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {refused} does not apply to model="), res.output
    assert not built


@pytest.mark.parametrize("args, expect", [
    (["train", "--model", "mlp", "--depth", "1", "--width", "4"], {"model": "mlp"}),
    (["width-sweep", "--model", "mlp", "--depth", "1", "--widths", "4"], {"model": "mlp"}),
    (["train", "--model", "node", "--width", "4"], {"T": 1.0, "solver": "rk4", "solver_steps": 4}),
    (["train", "--model", "node", "--width", "4", "--T", "2"], {"T": 2.0}),
    (["compare", "--model", "mlp", "--depth", "1", "--widths", "4"], {"model": "mlp"}),
    (["compare", "--model", "node", "--widths", "4"], {"T": 1.0, "solver": "tsit5", "solver_steps": 32}),
])
def test_cli_options_left_at_their_default_are_not_forwarded_to_a_model_they_do_not_configure(args, expect,
                                                                                            monkeypatch):
    """``kernelcalc train --model mlp`` works (its --T default stays home); the defaults of the options that
    configure the model are its documented ones (compare: --solver-steps 32)."""
    built = _network_sink(monkeypatch)
    res = _cli(args + ["--quiet"])
    assert isinstance(res.exception, Reached), res.output     # got past the keywords to the network
    assert {k: built[-1][k] for k in expect} == expect


@pytest.mark.parametrize("option", [["--steps", "300"], ["--method", "gd"], ["--lr", "0.1"]])
def test_cli_flow_gap_refuses_the_train_options_it_does_not_take_even_at_their_default(option, monkeypatch):
    built = _network_sink(monkeypatch)
    res = _cli(["flow-gap", "--width", "4", "--quiet"] + option)
    assert res.exit_code == 2 and res.output.strip() == (
        f"Error: flow-gap takes --lrs and --t-max (not --lr, --steps or --method), got {option[0]}"), res.output
    assert not built


def test_model_keywords_default_to_the_sentinel_none():
    """Every entry point whose model is an argument gives each model keyword the signature default ``None``
    ("the model's default"), so that an explicit value, the documented default included, is seen."""
    names = [n for n in kc.__all__ if callable(getattr(kc, n)) and not inspect.isclass(getattr(kc, n))]
    bad, seen = [], 0
    for name in names + ["make_network", "infinite_width_ntk"]:
        params = inspect.signature(_fn(name)).parameters
        if "model" not in params:
            continue
        for k in APPLIES:
            if k in params:
                seen += 1
                if params[k].default is not None:
                    bad.append(f"{name}({k}={params[k].default!r})")
    assert not bad, bad
    assert seen > 20                                   # the walk is not empty
