"""A real dask cluster in *other processes* (``dask scheduler`` + ``dask worker`` subprocesses), reached by
its address, as a user does: the CLI's ``--scheduler ADDRESS`` and the API's ``client="tcp://..."``,
with and without a default ``Client`` in this process, repeated; every Gram equals the local one bit
for bit, no NaN, no hang (each call under a timeout); a worker SIGKILLed mid-run; a tile that fails
for good is one clear error.  The references are the Grams computed in this process without dask
(a different engine: the local tile loop)."""

import contextlib
import json
import operator
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcClusterError, KernelcalcInputError
from kernelcalc.kernels import _tiles

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]     # the checkout: the subprocesses import this kernelcalc
CALL_TIMEOUT = 90.0                            # seconds per call (a hang fails the test, never blocks it)
REPEAT = 5


# ---------------------------------------------------------------------------- the cluster
def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _spawn(args, log: Path) -> subprocess.Popen:
    """``python -m dask ARGS`` in its own process group (so the nanny's worker processes go with it)."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "dask", *args], env=_env(), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """End ``proc`` and its process group (SIGTERM, then SIGKILL after 10 s)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for_workers(address: str, n: int) -> None:
    with distributed.Client(address, set_as_default=False, timeout="20s") as c:
        c.wait_for_workers(n, timeout=120)


def _clients_on_scheduler(address: str) -> int:
    """Clients connected to the scheduler, not counting the one asking (nor dask's fire-and-forget)."""
    with distributed.Client(address, set_as_default=False, timeout="20s") as c:
        names = c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients))
        return len([n for n in names if n != c.id and n != "fire-and-forget"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded worker processes, started once for this module."""
    tmp = tmp_path_factory.mktemp("dask-cluster")
    sched_file = tmp / "scheduler.json"
    procs = []
    try:
        procs.append(_spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                             "--scheduler-file", str(sched_file)], tmp / "scheduler.log"))
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip().endswith("}"):
            assert procs[0].poll() is None and time.monotonic() < deadline, (tmp / "scheduler.log").read_text()
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(_spawn(["worker", address, "--nthreads", "1", "--nworkers", "2", "--no-dashboard",
                             "--memory-limit", "0"], tmp / "workers.log"))
        _wait_for_workers(address, 2)
        yield types.SimpleNamespace(address=address, tmp=tmp)
    finally:
        for p in reversed(procs):
            _stop(p)


TILE = 32       # the 150 x 150 Gram in 15 tiles


@pytest.fixture(scope="module")
def data():
    """Data on the sphere and the local references: computed here without dask, with the same tiles
    (tiles of another size may differ in the last bit: numpy's products of other shapes)."""
    X = kc.data.sphere_normalise(np.random.default_rng(20).normal(size=(150, 5)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_tiles, "DEFAULT_TILE", TILE)
        ref = types.SimpleNamespace(
            X=X, mlp=kc.mlp_kernel(X, activation="relu", depth=2),
            node=kc.node_kernel(X, activation="tanh", outputs=("ntk",)),
            check=kc.check(X, activation="tanh"))
    whole = kc.mlp_kernel(X, activation="relu", depth=2)          # one tile: the same to a few roundings
    np.testing.assert_allclose(ref.mlp.ntk, whole.ntk, rtol=2e-15, atol=0)
    return ref


def _within(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread; a call still running after ``seconds`` fails the test."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as err:   # noqa: BLE001  (re-raised below)
            box["error"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} hung: still running after {seconds:g} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def _default_client(address, open_one: bool):
    """A default ``Client(address)`` in this process (the case that returned NaN and hung), or none."""
    if not open_one:
        assert distributed.client._get_global_client() is None
        yield None
        return
    with distributed.Client(address, timeout="20s") as c:
        assert distributed.default_client() is c
        yield c
    assert c.status == "closed"


def _same(got, ref):
    got = np.asarray(got[...])
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got, ref)


def _same_summary(got: dict, ref: dict):
    """Two Gram summaries (``GramSummary.to_dict()``) of the same Gram: the entries' statistics equal,
    the eigenvalues within their error bounds (the Rayleigh quotients vary in the last bits between
    runs of the same matrix: threaded BLAS sums)."""
    for key in ("n", "min_entry", "max_entry", "mean_entry"):
        assert got[key] == ref[key], key
    for key in ("lambda_min", "lambda_max"):
        assert abs(got[key] - ref[key]) <= got[key + "_error_bound"] + ref[key + "_error_bound"], key
    assert got["lambda_min_error_bound"] < 1e-12 * got["lambda_max"]


@pytest.fixture
def small_tiles(monkeypatch):
    """The 150 x 150 Gram is 15 tasks on the cluster."""
    monkeypatch.setattr(_tiles, "DEFAULT_TILE", TILE)


# ---------------------------------------------------------------------------- the API
@pytest.mark.parametrize("with_default", [False, True], ids=["no-default-client", "default-client"])
def test_api_by_address_equals_local(cluster, data, small_tiles, with_default):
    before = _clients_on_scheduler(cluster.address)
    with _default_client(cluster.address, with_default) as default:
        for _ in range(REPEAT):
            K = _within(CALL_TIMEOUT, kc.mlp_kernel, data.X, activation="relu", depth=2, client=cluster.address)
            assert K.info["engine"] == "dask" and K.info["tiles"] == 15
            _same(K.ntk, data.mlp.ntk)
            _same(K.nngp, data.mlp.nngp)
        K = _within(CALL_TIMEOUT, kc.node_kernel, data.X, activation="tanh", outputs=("ntk",), client=cluster.address)
        assert K.info["engine"] == "dask" and K.nngp is None
        _same(K.ntk, data.node.ntk)
        for _ in range(2):             # (five times through the CLI below)
            rep = _within(CALL_TIMEOUT, kc.check, data.X, activation="tanh", client=cluster.address)
            assert rep.ok, rep.problems
            _same_summary(rep.gram.to_dict(), data.check.gram.to_dict())
        if default is not None:          # kernelcalc neither closed nor replaced the user's default client
            assert distributed.default_client() is default
            assert default.submit(operator.add, 1, 2).result(timeout=30) == 3
    # every client that kernelcalc opened from the address is closed again
    deadline = time.monotonic() + 10
    while _clients_on_scheduler(cluster.address) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _clients_on_scheduler(cluster.address) == before


def test_api_with_a_client_object_and_zarr(cluster, data, small_tiles, tmp_path):
    """A ``Client`` object passed in is used and left open; the cluster's tiles go to Zarr."""
    with distributed.Client(cluster.address, set_as_default=False, timeout="20s") as c:
        K = _within(CALL_TIMEOUT, kc.mlp_kernel, data.X, activation="relu", depth=2, outputs=("ntk",),
                    client=c, out=tmp_path / "g.zarr")
        assert c.status == "running"
    _same(K.ntk, data.mlp.ntk)


@pytest.fixture(scope="module")
def krylov_case(data, tmp_path_factory):
    """40 training points (a Zarr NTK Gram), 20 test points."""
    X = data.X[:60]
    y = np.sin(3 * X[:40, 0]) + X[:40, 1]
    K = kc.mlp_kernel(X[:40], activation="relu", depth=2, outputs=("ntk",), out=tmp_path_factory.mktemp("kr") / "g.zarr")
    Kte = np.asarray(kc.mlp_kernel(X[40:], X[:40], activation="relu", depth=2, outputs=("ntk",)).ntk)
    return types.SimpleNamespace(X=X, y=y, K=K, Kte=Kte, times=[0.5, 5.0, np.inf])


class _Rows:
    """A Gram in memory that is read like an on-disk one (row slices; ``attrs``): the local row-block loop."""

    def __init__(self, a):
        self.a, self.shape, self.attrs = a, a.shape, {}

    def __getitem__(self, key):
        return self.a[key]


def test_krylov_prediction_by_address_equals_local(cluster, krylov_case, monkeypatch):
    """The matrix-free predictions with their Lanczos products on the cluster (``client=`` an address), from an
    on-disk (Zarr) Gram that the workers read themselves: the same row-block products as the local loop, bit
    for bit."""
    from kernelcalc.inference import krylov

    monkeypatch.setattr(krylov, "_row_block", lambda n: 20)          # the 40 x 40 Gram in 2 blocks
    c = krylov_case
    disk = kc.predict_from_kernels(_Rows(np.asarray(c.K.ntk[:])), c.y, c.Kte, t=c.times, method="krylov")
    assert disk.info["matvec"] == "local"
    P = _within(CALL_TIMEOUT, kc.predict_from_kernels, c.K.ntk, c.y, c.Kte, t=c.times, client=cluster.address)
    assert P.info["matvec"].startswith("dask") and P.info["lanczos"] == disk.info["lanczos"]
    _same(P.mean_test, disk.mean_test)
    _same(P.mean_train, disk.mean_train)
    with pytest.raises(KernelcalcInputError, match="client applies only"):
        kc.predict_from_kernels(np.asarray(c.K.ntk[:]), c.y, c.Kte, t=c.times, method="eigh", client=cluster.address)


@pytest.mark.slow
def test_krylov_predict_on_the_cluster_equals_the_in_memory_prediction(cluster, krylov_case, small_tiles, tmp_path):
    """kc.predict with the Gram's tiles and the Lanczos products on the cluster, the Gram in Zarr (``out=``),
    repeated: the local in-memory prediction (A @ v in one product) to rounding, within the error estimate."""
    c = krylov_case
    Xtr, Xte = c.X[:40], c.X[40:]
    local = kc.predict(Xtr, c.y, Xte, model="mlp", activation="relu", depth=2, t=c.times, method="krylov")
    for repeat in range(2):
        Q = _within(CALL_TIMEOUT, kc.predict, Xtr, c.y, Xte, model="mlp", activation="relu", depth=2, t=c.times,
                    method="krylov", client=cluster.address, out=tmp_path / f"p{repeat}.zarr")
        assert Q.info["matvec"].startswith("dask") and Q.info["kernel_info"]["engine"] == "dask"
        err = np.max(np.abs(Q.mean_test - local.mean_test))
        assert err <= 1e-12 * np.abs(local.mean_test).max() and err <= Q.info["error_estimate"]["mean"]


@pytest.mark.slow
def test_cli_predict_with_a_scheduler_equals_local(cluster, krylov_case, small_tiles, tmp_path, monkeypatch):
    """``kernelcalc predict --scheduler ADDRESS`` past the crossover (the Gram's tiles and the Lanczos products
    on the cluster) against the same command without it."""
    import kernelcalc.inference.engine as engine

    monkeypatch.setattr(engine, "KRYLOV_CROSSOVER", 10)
    c = krylov_case
    for name, a in (("X", c.X[:40]), ("y", c.y), ("Xt", c.X[40:])):
        np.save(tmp_path / f"{name}.npy", a)
    args = ["predict", "--train", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--test",
            str(tmp_path / "Xt.npy"), "--model", "mlp", "-a", "relu", "--depth", "2", "--t", "0.5,5", "--json",
            "--quiet"]
    local = _cli(*args)
    remote = _cli(*args, "--scheduler", cluster.address)
    assert local["info"]["matvec"] == "local" and remote["info"]["matvec"].startswith("dask")
    ref = np.array(local["mean_test"])
    assert np.max(np.abs(np.array(remote["mean_test"]) - ref)) <= 1e-12 * np.abs(ref).max()


@pytest.mark.slow
def test_deq_by_address_merges_the_workers_diagnostics(cluster, monkeypatch):
    """The DEQ's direct plan evaluates fixed points in the worker processes: the Gram and the
    diagnostics (contraction factor, largest q*, error estimates) equal the local ones (about 20 s: the
    workers compile the fixed points)."""
    monkeypatch.setattr(_tiles, "DEFAULT_TILE", 4)
    Z = np.random.default_rng(8).normal(size=(10, 3))
    Z = Z[np.argsort(np.sum(Z * Z, 1))]                  # the largest norm in the last tile
    ref = kc.deq_kernel(Z, activation="tanh", sigma_w=0.8)
    got = _within(CALL_TIMEOUT * 2, kc.deq_kernel, Z, activation="tanh", sigma_w=0.8, client=cluster.address)
    assert got.info["engine"] == "dask" and got.info["path"] == "direct" and got.info["tiles"] == 6
    _same(got.ntk, ref.ntk)
    _same(got.nngp, ref.nngp)
    for key in ("contraction_factor", "q_max", "fixed_point_error_estimate", "error_estimate"):
        assert got.info[key] == ref.info[key], key


def test_off_sphere_norm_plan_by_address_equals_local(cluster, small_tiles):
    """Standardised rows (many norms: the norm interpolation, its 16 closest pairs solved directly in this process
    and shipped with the plan): the tiles evaluated by the workers of a scheduler in other processes equal the local
    Gram of the same tiles, bit for bit."""
    rng = np.random.default_rng(21)
    X = rng.normal(size=(150, 6)) * rng.uniform(0.4, 1.6, (150, 1))
    X = (X - X.mean(0)) / X.std(0)
    ref = kc.mlp_kernel(X, activation="tanh", depth=2)
    assert ref.info["path"] == "norm interpolation" and ref.info["direct_pairs"] == 16
    got = _within(CALL_TIMEOUT, kc.mlp_kernel, X, activation="tanh", depth=2, client=cluster.address)
    assert got.info["engine"] == "dask" and got.info["direct_pairs"] == 16
    _same(got.ntk, ref.ntk)
    _same(got.nngp, ref.nngp)


# ---------------------------------------------------------------------------- the CLI
def _cli(*args):
    from click.testing import CliRunner

    from kernelcalc.cli import main

    res = _within(CALL_TIMEOUT, CliRunner().invoke, main, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def cli_local(data, tmp_path_factory):
    """The data file, and the CLI's check and limit documents computed without dask (same tiles)."""
    path = str(tmp_path_factory.mktemp("cli") / "X.npy")
    np.save(path, data.X)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_tiles, "DEFAULT_TILE", TILE)
        check = _cli("check", "--data", path, "-a", "tanh", "--json")
        limit = _cli("limit", "--data", path, "-a", "tanh", "--points", "3", "--json")["data"]
    assert check["ok"]
    _same_summary(check["gram"], data.check.gram.to_dict())
    return types.SimpleNamespace(path=path, check=check, limit=limit)


def _cli_runs(cluster, cli_local, with_default, limit_repeat):
    run, path, local_check, local_limit = _cli, cli_local.path, cli_local.check, cli_local.limit
    with _default_client(cluster.address, with_default):
        for i in range(REPEAT):
            remote = run("check", "--data", path, "-a", "tanh", "--json", "--scheduler", cluster.address)
            assert remote["ok"], remote["problems"]
            _same_summary(remote["gram"], local_check["gram"])
            if i < limit_repeat:
                remote = run("limit", "--data", path, "-a", "tanh", "--points", "3", "--json",
                             "--scheduler", cluster.address)["data"]
                for name in ("ntk", "nngp"):
                    _same_summary(remote[name], local_limit[name])


@pytest.mark.parametrize("with_default", [False, True], ids=["no-default-client", "default-client"])
def test_cli_scheduler_equals_local(cluster, cli_local, small_tiles, with_default):
    """``kernelcalc check --scheduler ADDRESS`` five times, ``kernelcalc limit --data ... --scheduler`` once."""
    _cli_runs(cluster, cli_local, with_default, limit_repeat=1)


@pytest.mark.slow
@pytest.mark.parametrize("with_default", [False, True], ids=["no-default-client", "default-client"])
def test_cli_limit_scheduler_repeated(cluster, cli_local, small_tiles, with_default):
    """``kernelcalc limit --data ... --scheduler ADDRESS`` five times too (about 10 s more)."""
    _cli_runs(cluster, cli_local, with_default, limit_repeat=REPEAT)


# ---------------------------------------------------------------------------- failures
def test_worker_killed_mid_run(cluster, data, monkeypatch):
    """SIGKILL to a worker process while its tiles run: dask reschedules them, and the Gram is the
    local one (or the call fails with one clear line); never a NaN."""
    extra = _spawn(["worker", cluster.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                    "--memory-limit", "0"], cluster.tmp / "extra-worker.log")
    try:
        _wait_for_workers(cluster.address, 3)
        monkeypatch.setattr(_tiles, "DEFAULT_TILE", 8)           # 190 tiles
        local = kc.mlp_kernel(data.X, activation="relu", depth=2)
        killed = []

        def kill_at_first_tile(ij):
            if not killed:
                os.killpg(extra.pid, signal.SIGKILL)
                extra.wait(10)
                killed.append(ij)

        monkeypatch.setattr(_tiles, "_after_tile", kill_at_first_tile)
        try:
            K = _within(CALL_TIMEOUT, kc.mlp_kernel, data.X, activation="relu", depth=2, client=cluster.address)
        except KernelcalcClusterError as err:       # allowed: one clear line
            assert "\n" not in str(err) and "dask cluster" in str(err)
        else:
            assert K.info["tiles"] == 190
            _same(K.ntk, local.ntk)
            _same(K.nngp, local.nngp)
        assert killed and extra.returncode == -signal.SIGKILL
    finally:
        _stop(extra)


def test_a_tile_that_fails_for_good_is_one_clear_error(cluster):
    """A tile task that raises on the worker: the kernel's own errors come back as they are; anything
    else is a one-line KernelcalcClusterError naming the tile and the scheduler (no partial Gram)."""
    from kernelcalc._validation import positive

    rows = [slice(0, 2)]
    with distributed.Client(cluster.address, set_as_default=False, timeout="20s") as c:
        broken = types.SimpleNamespace(block=operator.add)           # slice + slice: TypeError on the worker
        with pytest.raises(KernelcalcClusterError, match=r"tile \(0, 0\) of the Gram failed on the dask cluster "
                                                         r"at tcp://127\.0\.0\.1:\d+ \(TypeError"):
            _within(CALL_TIMEOUT, list, _tiles._tile_results_dask(c, broken, rows, rows, [(0, 0)], (True, True)))
        invalid = types.SimpleNamespace(block=positive)               # kernelcalc's own input error
        with pytest.raises(KernelcalcInputError):
            _within(CALL_TIMEOUT, list, _tiles._tile_results_dask(c, invalid, rows, rows, [(0, 0)], (True, True)))


def test_a_bad_or_missing_tile_from_the_cluster_is_never_written(monkeypatch):
    """The engine's checks on what the cluster returns (no cluster needed: the result stream is faked):
    a tile with a NaN is evaluated again here, a malformed one or a lost one is a one-line
    KernelcalcClusterError; never a Gram with NaN or uninitialised entries."""
    from kernelcalc.kernels import _gram

    X = kc.data.sphere_normalise(np.random.default_rng(3).normal(size=(20, 3)))
    seen = []
    real = _gram.gram_plan
    monkeypatch.setattr(_gram, "gram_plan", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    monkeypatch.setattr(_tiles, "DEFAULT_TILE", 8)
    ref = kc.mlp_kernel(X, activation="relu", depth=2)
    plan = seen[-1]

    def stream(nan=(), lost=(), bad=()):
        def fake(client, plan, rows, cols, todo, keep):
            for ij in todo:
                tiles, state = _tiles._tile_task(plan, rows[ij[0]], cols[ij[1]], keep)
                if ij in lost:
                    continue
                if ij in nan:
                    tiles = tuple(np.where(np.eye(*t.shape, dtype=bool), np.nan, t) for t in tiles)
                if ij in bad:
                    tiles = (tiles[0][:-1], tiles[1])
                yield ij, tiles, state
        return fake

    def run(**faults):
        monkeypatch.setattr(_tiles, "_tile_results_dask", stream(**faults))
        sink = _tiles.MemorySink(plan.shape, ("nngp", "ntk"))
        info = _tiles.run_tiles(plan, outputs=("nngp", "ntk"), sink=sink, tile=8, client=object())
        return info, sink.finish(info["max_abs"])

    info, arrays = run(nan=[(0, 1), (2, 2)])
    assert info["tiles_recomputed_locally"] == 2 and info["tiles"] == 6
    np.testing.assert_array_equal(arrays["ntk"], ref.ntk)
    np.testing.assert_array_equal(arrays["nngp"], ref.nngp)
    with pytest.raises(KernelcalcClusterError, match=r"1 of the Gram's 6 tiles never arrived \(first: \(1, 2\)\)"):
        run(lost=[(1, 2)])
    with pytest.raises(KernelcalcClusterError, match=r"tile \(0, 2\) of the Gram came back from the dask cluster malformed"):
        run(bad=[(0, 2)])
