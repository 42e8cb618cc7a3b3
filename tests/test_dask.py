"""Tiles on a real dask.distributed LocalCluster equal the local Gram bit for bit; unreachable scheduler."""

import time

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError
from kernelcalc.kernels import _tiles

distributed = pytest.importorskip("distributed")


def _cluster(processes):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                                       dashboard_address=None)
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module", params=[False, pytest.param(True, marks=pytest.mark.slow)],
                ids=["threads", "processes"])
def client(request):
    """Two in-process workers (fast, default run), or two worker processes (slow: the plan really is
    pickled, shipped and rebuilt in other interpreters; about 30 s of start-up and jit compilation)."""
    cluster, c = _cluster(request.param)
    yield c
    c.close()
    cluster.close()


@pytest.mark.usefixtures("x64")    # it evaluates plan.block itself (kernelcalc's tile task enters float64)
def test_plan_survives_pickling():
    """What the worker processes receive: the plan, cloudpickled; its tiles are bit for bit the same."""
    import pickle

    import cloudpickle

    from kernelcalc.kernels import _gram

    X = np.random.default_rng(1).normal(size=(12, 3))
    seen = []
    real = _gram.gram_plan
    try:
        _gram.gram_plan = lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
        kc.mlp_kernel(X, activation="relu", depth=2, sigma_b=0.1)                   # direct closed form
        kc.mlp_kernel(kc.data.sphere_normalise(X), activation="tanh", depth=1)      # sphere plan
        kc.mlp_kernel(X, activation="relu", depth=2)                                # homogeneous plan
    finally:
        _gram.gram_plan = real
    assert [type(p).__name__ for p in seen] == ["_DirectPlan", "_GroupPlan", "_HomogeneousPlan"]
    for plan in seen:
        copy = pickle.loads(cloudpickle.dumps(plan))
        for a, b in zip(copy.block(slice(0, 7), slice(3, 12)), plan.block(slice(0, 7), slice(3, 12))):
            np.testing.assert_array_equal(a, b)


def test_local_cluster_equals_local(client, monkeypatch, tmp_path):
    monkeypatch.setattr(_tiles, "DEFAULT_TILE", 16)
    X = np.random.default_rng(3).normal(size=(50, 3))
    local = kc.mlp_kernel(X, activation="relu", depth=2)
    remote = kc.mlp_kernel(X, activation="relu", depth=2, client=client)
    assert remote.info["engine"] == "dask" and local.info["engine"] == "local" and remote.info["tiles"] == 10
    np.testing.assert_array_equal(remote.ntk, local.ntk)
    np.testing.assert_array_equal(remote.nngp, local.nngp)
    # a Chebyshev-on-the-sphere plan, rectangular, written to Zarr from the cluster's tiles
    S = kc.data.sphere_normalise(X)
    local = kc.mlp_kernel(S, S[:20], activation="tanh", depth=1, outputs=("ntk",))
    remote = kc.mlp_kernel(S, S[:20], activation="tanh", depth=1, outputs=("ntk",), client=client,
                           out=tmp_path / "g.zarr")
    assert local.info["path"] == "sphere"
    np.testing.assert_array_equal(np.asarray(remote.ntk[...]), local.ntk)


def test_unreachable_scheduler_is_a_clear_error_within_seconds():
    import socket

    with socket.socket() as s:                 # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(KernelcalcInputError, match=f"cannot reach the dask scheduler at 'tcp://127.0.0.1:{port}'"):
        kc.mlp_kernel(np.eye(3), activation="relu", depth=1, client=f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 15
    with pytest.raises(KernelcalcInputError, match="client must be"):
        kc.mlp_kernel(np.eye(3), activation="relu", depth=1, client=42)


def test_cli_unreachable_scheduler(tmp_path):
    from click.testing import CliRunner

    from kernelcalc.cli import main

    X = kc.data.sphere_normalise(np.random.default_rng(0).normal(size=(5, 3)))
    np.save(tmp_path / "X.npy", X)
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["check", "--data", str(tmp_path / "X.npy"), "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code == 2 and "cannot reach the dask scheduler" in res.output, res.output
    assert time.perf_counter() - t0 < 20
    res = CliRunner().invoke(main, ["limit", "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code == 2 and "--scheduler applies only with --data" in res.output


def test_off_sphere_node_on_cluster_records_the_time_grid(client, monkeypatch):
    """The direct (per-pair) ODE plan: same Gram as locally, and info (M, error estimate) is complete."""
    monkeypatch.setattr(_tiles, "DEFAULT_TILE", 4)
    X = np.random.default_rng(5).normal(size=(6, 2))
    local = kc.node_kernel(X, activation="tanh", time_nodes=8)
    remote = kc.node_kernel(X, activation="tanh", time_nodes=8, client=client)
    assert remote.info["path"] == "direct" and remote.info["tiles"] == 3
    # the same solves, batched per tile on the workers (and per Gram here): BLAS may sum in another order
    np.testing.assert_allclose(remote.ntk, local.ntk, rtol=1e-14, atol=1e-15)
    assert remote.info["M"] == local.info["M"] == 8
    # the estimate carries 10x the last Picard change, a rounding-level number that the summation order moves
    assert remote.info["error_estimate"] == pytest.approx(local.info["error_estimate"], rel=0.05)
