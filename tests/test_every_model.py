"""One machinery for every model with a kernel (issue 20, item 5): the DEQ and the untied networks go
through the same tile engine as the others (``outputs=``, ``out=``, ``client=``), ``spectrum`` and
``check`` (and its certificate) take every model.

References: the same kernel computed in memory by the local tile loop (the Zarr sink and the dask
engine are the code under test), and for ``check(model="mlp")`` the relu arc-cosine recursion
written out here in numpy."""

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError
from kernelcalc.kernels import _tiles

X = kc.data.sphere_normalise(np.random.default_rng(7).normal(size=(24, 3)))       # 3 x 3 tiles of 8

def _off_sphere():
    """10 rows off the sphere (the direct plan), by increasing norm, the largest on the sphere (the DEQ's
    quadrature range, hence its compiled functions, are those of X)."""
    Z = np.random.default_rng(8).normal(size=(10, 3))
    Z = Z[np.argsort(np.sum(Z * Z, 1))]
    return Z / np.sqrt(np.sum(Z[-1] ** 2) / 3)


X_OFF = _off_sphere()


@pytest.fixture(scope="module")
def threads_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


CALLS = {
    "deq": lambda x, **kw: kc.deq_kernel(x, activation="tanh", sigma_w=0.8, **kw),
    "node-untied": lambda x, **kw: kc.node_kernel(x, activation="tanh", T=0.5, weights="untied", **kw),
    "resnet-untied": lambda x, **kw: kc.resnet_kernel(x, activation="tanh", depth=3, weights="untied", **kw),
}
# the untied Neural ODE shares _untied() (and so the engine plumbing) with the untied ResNet; its adaptive
# ODE solves cost ~15 s of compilation and table sampling: in the slow set
SLOW = pytest.mark.slow
TILE = 8


def _with_plan(fn):
    """``(fn(), the GramPlan it evaluated)``."""
    from kernelcalc.kernels import _gram

    seen = []
    real = _gram.gram_plan
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_gram, "gram_plan", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
        return fn(), seen[-1]


@pytest.fixture(scope="module")
def refs():
    """The in-memory Grams (local tile loop, tiles of 8), computed once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_tiles, "DEFAULT_TILE", TILE)
        deq_off, plan = _with_plan(lambda: CALLS["deq"](X_OFF))
        return {"deq": CALLS["deq"](X), "resnet-untied": CALLS["resnet-untied"](X), "deq-off": deq_off,
                "deq-off-plan": plan}


@pytest.fixture
def tiles8(monkeypatch):
    monkeypatch.setattr(_tiles, "DEFAULT_TILE", TILE)


@pytest.mark.parametrize("name", [pytest.param("deq", marks=SLOW), pytest.param("node-untied", marks=SLOW), "resnet-untied"])
def test_zarr_dask_and_outputs_equal_the_in_memory_gram(name, refs, threads_client, tmp_path, tiles8):
    call = CALLS[name]
    ref = refs[name] if name in refs else call(X)
    assert ref.info["tiles"] == 6 and ref.info["engine"] == "local"
    z = call(X, out=tmp_path / "g.zarr", outputs=("ntk",))
    assert z.nngp is None and z.info["out"] and z.info["tiles_computed"] == 6
    np.testing.assert_array_equal(np.asarray(z.ntk[...]), ref.ntk)
    d = call(X, client=threads_client)
    assert d.info["engine"] == "dask"
    np.testing.assert_array_equal(d.ntk, ref.ntk)
    np.testing.assert_array_equal(d.nngp, ref.nngp)
    assert d.info["error_estimate"] == ref.info["error_estimate"]
    with pytest.raises(KernelcalcInputError, match="another configuration"):
        call(X[:, ::-1], out=tmp_path / "g.zarr", outputs=("ntk",))     # other data: refused, not overwritten


def test_deq_off_sphere_direct_tiles_keep_the_fixed_point_diagnostics(refs, threads_client, tiles8):
    """The direct plan evaluates the fixed points tile by tile: the contraction factor and error
    estimate of every tile reach the result, on the cluster as locally (worker processes:
    tests/test_dask_address.py)."""
    ref = refs["deq-off"]
    d = kc.deq_kernel(X_OFF, activation="tanh", sigma_w=0.8, client=threads_client, outputs=("ntk",))
    assert ref.info["path"] == "direct" and ref.info["tiles"] == 3 and d.nngp is None
    np.testing.assert_array_equal(d.ntk, ref.ntk)
    for key in ("contraction_factor", "q_max", "fixed_point_error_estimate"):
        assert d.info[key] == ref.info[key], key


def test_pair_state_of_a_shipped_plan_is_merged_back(refs):
    """What a worker process does: evaluate tiles on its own (unpickled) copy of the plan.  Its running
    maxima reach this process's plan through the engine's merge, so the result's diagnostics are those
    of every tile wherever it ran."""
    import cloudpickle

    plan, ref = refs["deq-off-plan"], refs["deq-off"]
    assert _tiles.pair_state(plan) == dict(rate=ref.info["contraction_factor"], err=ref.info["fixed_point_error_estimate"],
                                          q_max=ref.info["q_max"])

    copy = cloudpickle.loads(cloudpickle.dumps(plan))          # what a worker receives: the maxima travel
    assert copy.pair_fn.state is not plan.pair_fn.state and _tiles.pair_state(copy) == _tiles.pair_state(plan)
    saved = dict(plan.pair_fn.state)

    def tile_on_worker(rows, cols):          # (on this plan itself: a copy would compile its own jits)
        plan.pair_fn.state.update(rate=0.0, err=0.0, q_max=0.0)
        tiles, state = _tiles._tile_task(plan, rows, cols, (True, True))
        np.testing.assert_array_equal(tiles[1], ref.ntk[rows, cols])
        return state

    try:
        first_state = tile_on_worker(slice(0, 8), slice(0, 8))
        last_state = tile_on_worker(slice(8, 10), slice(8, 10))      # the rows of largest norm
        assert first_state["q_max"] < last_state["q_max"] == ref.info["q_max"]
        plan.pair_fn.state.update(first_state)
        _tiles.merge_pair_state(plan, last_state)
        assert _tiles.pair_state(plan) == {k: max(first_state[k], last_state[k]) for k in first_state}
    finally:
        plan.pair_fn.state.update(saved)


def test_spectrum_of_every_model(refs, threads_client, tiles8):
    for kw, K in ((dict(model="deq", sigma_w=0.8), refs["deq"]),
                  (dict(model="resnet", weights="untied", depth=3), refs["resnet-untied"])):
        sp = kc.spectrum(X, k=2, activation="tanh", client=threads_client, **kw)
        ref = np.linalg.eigvalsh(K.ntk)[:2]
        assert np.all(np.abs(sp.values - ref) <= sp.error_bound + 1e-14 * ref[-1]), (kw, sp.values, ref)
    with pytest.raises(KernelcalcInputError, match="model must be one of"):
        kc.spectrum(X, model="deq_untied", activation="tanh")
    with pytest.raises(KernelcalcInputError, match="depth does not apply to model='deq'"):
        kc.spectrum(X, model="deq", activation="tanh", depth=2)


def _relu_mlp_ntk(X, depth):
    r"""NTK of the bias-free relu MLP, neural-tangents' NTK parameterisation with unit scales, from the
    arc-cosine kernel (Cho & Saul): $C=\frac{\sqrt{q_xq_y}}{2\pi}(\sin\theta+(\pi-\theta)\cos\theta)$,
    $\dot C=\frac{\pi-\theta}{2\pi}$, $K^{\ell+1}=C^\ell$, $\Theta^{\ell+1}=K^{\ell+1}+\dot C^\ell\Theta^\ell$."""
    S = X @ X.T / X.shape[1]
    theta = S.copy()
    for _ in range(depth):
        q = np.sqrt(np.outer(np.diag(S), np.diag(S)))
        t = np.arccos(np.clip(S / q, -1.0, 1.0))
        C = q * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        S, theta = C, C + (np.pi - t) / (2 * np.pi) * theta
    return theta


def test_check_mlp_relu_against_the_arc_cosine_closed_form():
    ref = np.linalg.eigvalsh(_relu_mlp_ntk(X, 2))
    rep = kc.check(X, model="mlp", activation="relu", depth=2)
    assert rep.ok, rep.problems
    assert rep.model == "mlp" and rep.params["depth"] == 2 and rep.to_dict()["model"] == "mlp"
    assert abs(rep.lambda_min - ref[0]) <= rep.gram.lambda_min_error_bound + 1e-14 * ref[-1]
    assert abs(rep.lambda_max - ref[-1]) <= rep.gram.lambda_max_error_bound + 1e-14 * ref[-1]
    # relu fails Assumption 1 of the Neural-ODE theory: a warning for the MLP, a problem for the ODE
    assert any("Assumption 1" in w and "model='mlp'" in w for w in rep.warnings)
    assert any("Assumption 1" in p for p in kc.check(X, activation="relu").problems)
    assert str(rep).startswith("check: model=mlp, activation=relu, depth=2, sigma_w=1, sigma_b=0")
    cert = kc.check(X, model="mlp", activation="relu", depth=2, certify=True)
    assert cert.ok and cert.certificate == "rigorous"
    assert 0 < cert.lambda_min_certified <= ref[0] * (1 + 1e-12)


@pytest.mark.parametrize("kw, kernel", [
    (dict(model="deq", sigma_w=0.8), lambda refs: refs["deq"]),
    pytest.param(dict(model="node", weights="untied", T=0.5), lambda refs: CALLS["node-untied"](X), marks=SLOW),
    (dict(model="resnet", weights="untied", depth=3), lambda refs: refs["resnet-untied"]),
    (dict(model="resnet", depth=3), lambda refs: kc.resnet_kernel(X, activation="tanh", depth=3)),
], ids=["deq", "node-untied", "resnet-untied", "resnet"])
def test_check_takes_every_model_and_its_keywords(kw, kernel, refs, tiles8):
    rep = kc.check(X, activation="tanh", **kw)
    ref = np.linalg.eigvalsh(kernel(refs).ntk)[0]
    assert rep.ok, rep.problems
    assert abs(rep.lambda_min - ref) <= rep.gram.lambda_min_error_bound + 1e-14
    assert {k: rep.params[k] for k in kw if k != "model"} == {k: v for k, v in kw.items() if k != "model"}
    cert = kc.check(X, activation="tanh", certify=True, **kw)
    assert cert.certificate == "a-posteriori discretisation estimate" and 0 < cert.lambda_min_certified <= rep.lambda_min


@pytest.mark.parametrize("kw, match", [
    (dict(model="mlp"), r"check\(model='mlp'\) needs depth="),
    (dict(model="mlp", depth=2, T=1.0), "T does not apply to model='mlp'"),
    (dict(model="deq", sigma_vb=0.1), "sigma_vb does not apply to model='deq'"),
    (dict(model="deq", T=1.0), "T does not apply to model='deq'"),
    (dict(model="node_untied"), "weights='untied'"),
    (dict(model="cnn"), "model must be one of"),
    (dict(outputs=("ntk",)), "do not pass outputs="),
    (dict(model="resnet", depth=0), "depth must be an integer >= 1"),
    (dict(T=-1.0), "T must be"),
])
def test_check_keyword_errors_are_one_line(kw, match):
    with pytest.raises(KernelcalcInputError, match=match) as err:
        kc.check(X, activation="tanh", **kw)
    assert "\n" not in str(err.value)

