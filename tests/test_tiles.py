"""Tiled Gram engine: tiled == untiled, outputs=, Zarr store (resume, refusals), memory message.

References: the relu MLP kernel is the arc-cosine kernel in closed form (written out here, sharing
no code with kernelcalc); the untiled Gram is one plan.block over all pairs, symmetrised.
"""

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError
from kernelcalc.kernels import _gram, _tiles

zarr = pytest.importorskip("zarr")


def _relu_depth1(X, Y):
    r"""Depth-1 relu MLP (sigma_w = 1, b = 0), neural-tangents convention, in closed form:
    $K = \frac{|x||y|}{2\pi d}(\sin\theta + (\pi-\theta)\cos\theta)$, $\Theta = K + \frac{x\cdot y}{d}\frac{\pi-\theta}{2\pi}$."""
    d = X.shape[1]
    nx, ny = np.linalg.norm(X, axis=1), np.linalg.norm(Y, axis=1)
    cos = np.clip((X @ Y.T) / np.outer(nx, ny), -1, 1)
    if X is Y:
        np.fill_diagonal(cos, 1.0)          # exact angle 0 (arccos is ill-conditioned at 1)
    th = np.arccos(cos)
    K = np.outer(nx, ny) / (2 * np.pi * d) * (np.sin(th) + (np.pi - th) * cos)
    return K, K + (X @ Y.T) / d * (np.pi - th) / (2 * np.pi)


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(_tiles, "DEFAULT_TILE", 16)


def _data(n=70, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_tiled_equals_untiled_and_reference(small_tiles):
    X = _data()
    K = kc.mlp_kernel(X, activation="relu", depth=1)
    assert K.info["tiles"] == 15 and K.info["tile"] == 16          # 5x5 grid, upper triangle
    nngp_ref, ntk_ref = _relu_depth1(X, X)
    # relu without bias: the homogeneous path (the sphere table of the directions), within its estimate
    assert K.info["path"].startswith("homogeneous")
    for got, want in ((K.ntk, ntk_ref), (K.nngp, nngp_ref)):
        err = np.max(np.abs(got - want))
        assert err <= K.info["error_estimate"] and err <= 1e-12 * np.max(np.abs(want)), err
    assert np.array_equal(K.ntk, K.ntk.T) and np.array_equal(K.nngp, K.nngp.T)
    # untiled: one block over all pairs, as gram() did before tiles
    one = _gram.gram(X, None, _pair_relu, cheap_pairs=True, tile=10_000)
    tiled = _gram.gram(X, None, _pair_relu, cheap_pairs=True, tile=16)
    assert one[2]["tiles"] == 1 and tiled[2]["tiles"] == 15
    # equal to rounding: a tile's x.y/d is a BLAS product whose rounding depends on the block shape
    scale = np.max(np.abs(one[1]))
    np.testing.assert_allclose(tiled[1], one[1], rtol=0, atol=4 * 2.2e-16 * scale)
    np.testing.assert_allclose(tiled[0], one[0], rtol=0, atol=4 * 2.2e-16 * scale)


def _pair_relu(sxx, syy, sxy):
    """Depth-1 relu MLP kernel of one pair from its moments (numpy, elementwise: tile-independent)."""
    sxx, syy, sxy = np.broadcast_arrays(sxx, syy, sxy)
    cos = np.clip(sxy / np.sqrt(sxx * syy), -1, 1)
    th = np.arccos(cos)
    K = np.sqrt(sxx * syy) / (2 * np.pi) * (np.sin(th) + (np.pi - th) * cos)
    return K, K + sxy * (np.pi - th) / (2 * np.pi)


def test_tiled_sphere_path_matches_single_tile(small_tiles, monkeypatch):
    """The sphere (Chebyshev) path: tiles agree with one block to a few ulp, and K is exactly symmetric."""
    X = kc.data.sphere_normalise(_data(60, 3, seed=1))
    tiled = kc.mlp_kernel(X, activation="tanh", depth=2)
    monkeypatch.setattr(_tiles, "DEFAULT_TILE", 4096)
    one = kc.mlp_kernel(X, activation="tanh", depth=2)
    assert tiled.info["path"] == "sphere" and tiled.info["tiles"] == 10 and one.info["tiles"] == 1
    np.testing.assert_allclose(tiled.ntk, one.ntk, rtol=0, atol=8 * 2.2e-16 * np.max(np.abs(one.ntk)))
    assert np.array_equal(tiled.ntk, tiled.ntk.T)


def test_outputs_keyword(small_tiles):
    X = _data(40)
    both = kc.mlp_kernel(X, activation="relu", depth=1)
    ntk = kc.mlp_kernel(X, activation="relu", depth=1, outputs=("ntk",))
    nngp = kc.mlp_kernel(X, activation="relu", depth=1, outputs=["nngp"])
    assert ntk.nngp is None and nngp.ntk is None and ntk.shape == nngp.shape == (40, 40)
    np.testing.assert_array_equal(ntk.ntk, both.ntk)
    np.testing.assert_array_equal(nngp.nngp, both.nngp)
    assert ntk.info["error_estimate"] > 0 and ntk.to_dict()["nngp"] is None
    assert not ntk.ntk.flags.writeable
    for bad in ("ntk", ("ntk", "ntk"), (), ("NTK",), ("ntk", "nngp", "x"), 3):
        with pytest.raises(KernelcalcInputError, match="outputs"):
            kc.mlp_kernel(X, activation="relu", depth=1, outputs=bad)


def test_memory_message():
    """A Gram that would not fit: a clear message naming out= and outputs=('ntk',), before any work."""
    X = np.random.default_rng(0).normal(size=(400_000, 2))      # 400k^2 x 8 B = 1.3 TB per output
    with pytest.raises(KernelcalcInputError, match=r"out=.*outputs=\('ntk',\)"):
        kc.mlp_kernel(X, activation="relu", depth=1)
    with pytest.raises(KernelcalcInputError, match="out="):
        kc.mlp_kernel(X, activation="relu", depth=1, outputs=("ntk",))
    with pytest.raises(KernelcalcInputError, match="available"):
        _tiles.check_memory((1000, 1000), ("ntk",), 1000, on_disk=False, available=1_000_000)
    _tiles.check_memory((1000, 1000), ("ntk",), 256, on_disk=False, available=100_000_000)


# ---------------------------------------------------------------------------- Zarr
def test_zarr_store_roundtrip_and_resume(tmp_path, small_tiles, monkeypatch):
    X = _data(70)
    ref = kc.mlp_kernel(X, activation="relu", depth=1)
    path = tmp_path / "gram.zarr"
    calls = []

    def crash_after_four(ij):
        calls.append(ij)
        if len(calls) == 4:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(_tiles, "_after_tile", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        kc.mlp_kernel(X, activation="relu", depth=1, out=path)
    g = zarr.open_group(str(path), mode="r")
    assert int(np.sum(np.asarray(g["tiles"][...])[..., 0] == 1)) == 4 and "complete" not in g.attrs

    # a kill between a tile's data and its done mark: that tile is not counted as finished
    def crash_before_mark(ij):
        raise KeyboardInterrupt("simulated kill while writing")

    monkeypatch.setattr(_tiles, "_after_tile", None)
    monkeypatch.setattr(_tiles, "_after_write", crash_before_mark)
    with pytest.raises(KeyboardInterrupt):
        kc.mlp_kernel(X, activation="relu", depth=1, out=path)
    monkeypatch.setattr(_tiles, "_after_write", None)

    computed = []
    monkeypatch.setattr(_tiles, "_after_tile", computed.append)
    K = kc.mlp_kernel(X, activation="relu", depth=1, out=str(path))
    assert K.info["tiles_resumed"] == 4 and K.info["tiles_computed"] == 11
    assert not set(computed) & set(calls)                    # finished tiles were not recomputed
    assert isinstance(K.ntk, zarr.Array) and K.shape == (70, 70)
    np.testing.assert_array_equal(np.asarray(K.ntk[...]), ref.ntk)
    np.testing.assert_array_equal(np.asarray(K.nngp[...]), ref.nngp)
    assert K.info["error_estimate"] == ref.info["error_estimate"]
    assert K.to_dict()["ntk"]["shape"] == [70, 70]
    with pytest.raises(Exception):
        K.ntk[0, 0] = 1.0                                   # read-only
    # a complete store is reopened, nothing recomputed
    again = kc.mlp_kernel(X, activation="relu", depth=1, out=path)
    assert again.info["tiles_computed"] == 0
    # an in-memory zarr group works too
    mem = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    Km = kc.mlp_kernel(X, activation="relu", depth=1, out=mem, outputs=("ntk",))
    np.testing.assert_array_equal(np.asarray(Km.ntk[...]), ref.ntk)
    assert Km.nngp is None and "nngp" not in mem


def test_zarr_refusals(tmp_path, small_tiles):
    X = _data(40)
    path = tmp_path / "g.zarr"
    kc.mlp_kernel(X, activation="relu", depth=1, out=path, outputs=("ntk",))
    before = np.asarray(zarr.open_group(str(path), mode="r")["ntk"][...])
    for kwargs, what in ((dict(depth=2), "params"), (dict(depth=1, outputs=("nngp", "ntk")), "outputs"),
                         (dict(depth=1, sigma_w=2.0), "params")):
        kw = dict(dict(outputs=("ntk",)), **kwargs)
        with pytest.raises(KernelcalcInputError, match=f"another configuration.*{what}"):
            kc.mlp_kernel(X, activation="relu", out=path, **kw)
    with pytest.raises(KernelcalcInputError, match="another configuration.*inputs_sha256"):
        kc.mlp_kernel(X + 1e-9, activation="relu", depth=1, out=path, outputs=("ntk",))
    with pytest.raises(KernelcalcInputError, match="another configuration.*shape"):
        kc.mlp_kernel(X[:30], activation="relu", depth=1, out=path, outputs=("ntk",))
    with pytest.raises(KernelcalcInputError, match="another configuration.*model"):
        kc.node_kernel(X, activation="relu", out=path, outputs=("ntk",))
    np.testing.assert_array_equal(np.asarray(zarr.open_group(str(path), mode="r")["ntk"][...]), before)
    # not writable: a path below a regular file, a file, a foreign zarr group, a non-zarr folder
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    with pytest.raises(KernelcalcInputError, match="out="):
        kc.mlp_kernel(X, activation="relu", depth=1, out=afile / "g.zarr")
    with pytest.raises(KernelcalcInputError, match="existing file"):
        kc.mlp_kernel(X, activation="relu", depth=1, out=afile)
    assert afile.read_text() == "x"
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    foreign.create_array("ntk", shape=(40, 40), dtype="f8")
    with pytest.raises(KernelcalcInputError, match="not written by kernelcalc"):
        kc.mlp_kernel(X, activation="relu", depth=1, out=tmp_path / "foreign.zarr")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.npy").write_text("x")
    with pytest.raises(KernelcalcInputError, match="not a Zarr group"):
        kc.mlp_kernel(X, activation="relu", depth=1, out=folder)
    with pytest.raises(KernelcalcInputError, match="out must be"):
        kc.mlp_kernel(X, activation="relu", depth=1, out=3)


def test_progress_bar_over_tiles(small_tiles, capsys):
    X = _data(40)
    kc.mlp_kernel(X, activation="relu", depth=1, progress=True)
    assert "Gram tiles" in capsys.readouterr().err
    kc.mlp_kernel(X, activation="relu", depth=1)              # default (auto): only from N = 5000
    assert "Gram tiles" not in capsys.readouterr().err


@pytest.mark.parametrize("outputs, budget", [(("ntk",), 1.3), (("nngp", "ntk"), 2.3)])
def test_peak_memory_is_the_outputs_plus_tiles(monkeypatch, outputs, budget):
    """numpy's allocations (traced by tracemalloc): one N x N array per output plus tile temporaries."""
    import tracemalloc

    monkeypatch.setattr(_tiles, "DEFAULT_TILE", 128)
    X = _data(1200, 3)
    kc.mlp_kernel(X[:50], activation="relu", depth=1)            # compile outside the measurement
    tracemalloc.start()
    K = kc.mlp_kernel(X, activation="relu", depth=1, outputs=outputs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one = 8 * 1200 * 1200
    assert peak <= budget * one, peak / one
    assert K.ntk.shape == (1200, 1200)


def test_resume_after_a_real_sigkill(tmp_path, small_tiles):
    """A child process writing the Gram to Zarr is killed with SIGKILL mid-way (between or during tile
    writes, whenever the kill lands); a restart finishes it with the finished tiles kept, equal bit for bit to
    the in-memory Gram and to the closed form."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    path = tmp_path / "gram.zarr"
    child = textwrap.dedent(f"""
        import time, numpy as np, kernelcalc as kc
        from kernelcalc.kernels import _tiles
        _tiles.DEFAULT_TILE = 16
        _tiles._after_tile = lambda ij: time.sleep(0.3)     # slow tiles: the kill lands mid-run
        X = np.random.default_rng(0).normal(size=(70, 4))
        kc.mlp_kernel(X, activation="relu", depth=1, out={str(path)!r})
        print("finished")
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", child], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            g = zarr.open_group(str(path), mode="r")
            done = int(np.sum(np.asarray(g["tiles"][...])[..., 0] == 1))
        except Exception:                      # store not created yet / being written
            done = 0
        if done >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the child ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    g = zarr.open_group(str(path), mode="r")
    finished = int(np.sum(np.asarray(g["tiles"][...])[..., 0] == 1))
    assert 3 <= finished < 15 and "complete" not in g.attrs      # 15 = 5*6/2 upper-triangle tiles of 16 rows

    X = np.random.default_rng(0).normal(size=(70, 4))
    K = kc.mlp_kernel(X, activation="relu", depth=1, out=path)
    assert K.info["tiles_resumed"] == finished and K.info["tiles_computed"] == 15 - finished
    ref = kc.mlp_kernel(X, activation="relu", depth=1)          # same tiles, in memory
    np.testing.assert_array_equal(np.asarray(K.ntk[...]), ref.ntk)
    np.testing.assert_array_equal(np.asarray(K.nngp[...]), ref.nngp)
    nngp, ntk = _relu_depth1(X, X)
    np.testing.assert_allclose(np.asarray(K.nngp[...]), nngp, rtol=0, atol=1e-12 * np.max(np.abs(nngp)))
    np.testing.assert_allclose(np.asarray(K.ntk[...]), ntk, rtol=0, atol=1e-12 * np.max(np.abs(ntk)))
