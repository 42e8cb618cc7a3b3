"""Tiles on a real dask.distributed LocalCluster equal the local Gram bit for bit; unreachable scheduler."""

import time

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError
from kernelcalc.kernels import _tiles

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    # processes=True: the plan really is pickled, shipped and rebuilt in other interpreters
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


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
