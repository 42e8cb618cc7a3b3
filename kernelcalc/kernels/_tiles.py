r"""The tile engine behind every Gram matrix: memory-bounded, resumable on disk, distributable.

A :class:`~kernelcalc.kernels._gram_base.GramPlan` evaluates any rectangular tile of a Gram.  This
module decides *which* tiles, *where* they run and *where* they go:

- **Tiles.** The $N_1\times N_2$ Gram is cut into square tiles of side ``tile`` (2048 by
  default).  For a symmetric Gram only the tiles on or above the diagonal are computed; the
  tile $(I, J)$, $J>I$, is written to both $K_{IJ}$ and $K_{JI}=K_{IJ}^\top$, and a diagonal
  tile keeps its upper triangle and mirrors it.  Every entry $K_{ij}$, $i\le j$, is therefore
  the plan's value of the pair $(x_i, x_j)$ and $K$ is exactly symmetric, without the two extra
  $N\times N$ copies of $(K+K^\top)/2$.  Peak memory: the requested outputs ($\le 2$ arrays
  of $N_1\times N_2$) plus a few tiles.
- **Sinks.** In memory (``numpy`` arrays), or a Zarr group (``out=``) with one array per output
  (``ntk``, ``nngp``), chunked exactly by the tiles, and a small array ``tiles`` of shape
  ``(n_I, n_J, 3)``: ``[done, max|nngp|, max|ntk|]`` per tile, written *after* the tile's data.
  A run that is killed and restarted recomputes only the tiles whose ``done`` flag is missing
  (a tile interrupted while being written is not marked, so it is recomputed).  The group's
  attributes hold the configuration (model, activation, parameters, shapes, outputs, tile size,
  a SHA-256 of the inputs); a store made with another configuration is refused, never overwritten.
- **Engines.** A plain loop in this process (the plans are vectorised and multi-threaded
  inside), or a dask graph on a ``dask.distributed`` cluster (``client=``): the plan is shipped
  once to every worker (``Client.scatter(..., broadcast=True)``, cloudpickle), each task
  evaluates one tile, and the results are written by this process as they arrive.  A tile is
  the same computation on a worker as here, so the cluster's Gram equals the local one bit for bit.
  ``client=`` is a ``Client`` (used, left open) or a scheduler address (a client of kernelcalc's
  own, never the process's default, closed after the call).  The futures are tracked on that
  client's loop, whatever default client the process has.  A worker that dies has its tiles
  rescheduled by dask; a tile that fails for good, arrives malformed or never arrives raises
  :class:`~kernelcalc.KernelcalcClusterError`; a tile with a NaN/inf entry is evaluated again here.
  A model's ``pair_fn`` may carry ``state``, a dict of running maxima (the DEQ's contraction
  factor): each worker's copy comes back with its tiles and is merged here by ``max``.
"""

from __future__ import annotations

import hashlib
import json
import contextlib
import math
import os
from pathlib import Path

import numpy as np

from .._x64 import float64
from .._validation import KernelcalcClusterError, KernelcalcInputError, progress_disable

__all__ = ["OUTPUTS", "DEFAULT_TILE", "validate_outputs", "check_memory", "available_memory",
           "input_hash", "connect", "own_client", "run_tiles", "ZarrSink", "open_zarr_sink"]

OUTPUTS = ("nngp", "ntk")
DEFAULT_TILE = 2048
_FORMAT = "kernelcalc-gram/1"
_CONNECT_TIMEOUT_S = 5.0

#: Test hooks: called as ``hook(tile_index)`` after a tile's data is written (``_after_write``)
#: and after it is marked done (``_after_tile``).  ``None`` in normal use.
_after_write = None
_after_tile = None


# ---------------------------------------------------------------------------- validation
def validate_outputs(outputs) -> tuple[str, ...]:
    """``outputs`` as a tuple in canonical order, a non-empty subset of ``("nngp", "ntk")``."""
    if isinstance(outputs, str):
        raise KernelcalcInputError(
            f"outputs must be a tuple of 'nngp' and/or 'ntk', got the string {outputs!r} "
            f"(did you mean outputs=({outputs!r},)?)")
    try:
        asked = list(outputs)
    except TypeError:
        raise KernelcalcInputError(f"outputs must be a tuple of 'nngp' and/or 'ntk', got {outputs!r}") from None
    bad = [o for o in asked if o not in OUTPUTS]
    if bad or not asked or len(set(asked)) != len(asked):
        raise KernelcalcInputError(
            f"outputs must be a non-empty tuple of distinct names from ('nngp', 'ntk'), got {outputs!r}")
    return tuple(o for o in OUTPUTS if o in asked)


def available_memory() -> int:
    """Bytes of memory available to this process now (psutil when installed, else ``os.sysconf``)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover  (psutil is usually there)
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_memory(shape, outputs, tile: int, on_disk: bool, available: int | None = None) -> None:
    """Raise :class:`KernelcalcInputError` when the Gram (or, on disk, its tiles) would not fit in memory."""
    n1, n2 = shape
    work = 16 * 8 * min(tile, n1) * min(tile, n2)      # a tile's temporaries (both outputs, Clenshaw state)
    need = work + (0 if on_disk else 8 * n1 * n2 * len(outputs))
    have = available_memory() if available is None else available
    if need <= 0.9 * have:
        return
    if on_disk:
        raise KernelcalcInputError(
            f"a {tile}x{tile} tile needs about {_gb(work)} but only {_gb(have)} of memory is available; "
            "pass a smaller tile")
    ntk_only = work + 8 * n1 * n2
    hint = ("pass out='gram.zarr' to write the Gram tile by tile to disk"
            + ("" if outputs == ("ntk",) else
               f", and/or outputs=('ntk',) to compute only the NTK (about {_gb(ntk_only)})"))
    raise KernelcalcInputError(
        f"the {n1}x{n2} Gram matrices {outputs} need about {_gb(need)} of memory but only {_gb(have)} "
        f"is available: {hint}")


def input_hash(a: np.ndarray, b: np.ndarray, same: bool) -> str:
    """SHA-256 of the inputs (shapes and float64 bytes): identifies the data in a Zarr store."""
    h = hashlib.sha256()
    for arr in (a,) if same else (a, b):
        h.update(repr(arr.shape).encode())
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- tiles
def _edges(n: int, tile: int) -> list[slice]:
    return [slice(s, min(s + tile, n)) for s in range(0, n, tile)]


def tile_list(shape, same: bool, tile: int) -> tuple[list[slice], list[slice], list[tuple[int, int]]]:
    """Row and column slices, and the tiles ``(I, J)`` to compute (``J >= I`` for a symmetric Gram)."""
    rows, cols = _edges(shape[0], tile), _edges(shape[1], tile)
    todo = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not same or j >= i]
    return rows, cols, todo


@float64
def _tile_task(plan, rows: slice, cols: slice, keep: tuple[bool, bool]):
    """One tile ``(nngp, ntk)`` of ``plan`` (``None`` for an output not asked for), and the pair
    function's running maxima (:func:`pair_state`).  Module-level so that dask workers import it by
    reference."""
    out = plan.block(rows, cols)
    return tuple(np.asarray(t, dtype=np.float64) if k else None for t, k in zip(out, keep)), pair_state(plan)


def pair_state(plan) -> dict | None:
    """A copy of ``plan``'s pair-function ``state`` (a dict of running maxima that a model's
    ``pair_fn`` may carry, e.g. the DEQ's contraction factor), or ``None``.  A worker updates its own
    copy of the plan; the engine merges the copies back by ``max`` (:func:`merge_pair_state`)."""
    fn = getattr(plan, "pair_fn", None)
    fn = getattr(fn, "pair_fn", fn)           # an _OddPairs wrapper
    state = getattr(fn, "state", None)
    return dict(state) if isinstance(state, dict) else None


def merge_pair_state(plan, state: dict | None) -> None:
    """Fold a worker's :func:`pair_state` into this process's plan (running maxima: ``max``)."""
    if not state:
        return
    fn = getattr(plan, "pair_fn", None)
    fn = getattr(fn, "pair_fn", fn)
    mine = getattr(fn, "state", None)
    if isinstance(mine, dict):
        for k, v in state.items():
            mine[k] = max(mine.get(k, v), v)


def _check_tile(ij, tiles, shape, keep, client) -> tuple:
    """A tile received from the cluster has the tile's shape and float64 entries, one per output asked
    for; anything else (never expected) is a :class:`KernelcalcClusterError`, never a Gram with holes."""
    ok = isinstance(tiles, tuple) and len(tiles) == len(keep) and all(
        (t is None) if not k else (isinstance(t, np.ndarray) and t.shape == shape and t.dtype == np.float64)
        for t, k in zip(tiles, keep))
    if not ok:
        raise KernelcalcClusterError(
            f"tile {ij} of the Gram came back from {_scheduler(client)} malformed "
            f"(expected float64 arrays of shape {shape}); no Gram is returned")
    return tiles


# ---------------------------------------------------------------------------- sinks
class MemorySink:
    """Write tiles into in-memory arrays (one per output)."""

    def __init__(self, shape, outputs):
        self.arrays = {name: np.empty(shape) for name in outputs}
        self.done = set()
        self.stats: dict = {}

    def write(self, name, rows, cols, t):
        target = self.arrays[name]
        if t.shape == target.shape and t.dtype == target.dtype and t.flags.c_contiguous and t.base is None:
            self.arrays[name] = t     # one tile is the whole Gram: keep it (no N x N copy)
        else:
            target[rows, cols] = t

    def mark(self, ij, maxima):
        self.done.add(ij)
        self.stats[ij] = maxima

    def finish(self, max_abs):
        for a in self.arrays.values():
            a.setflags(write=False)
        return self.arrays


class ZarrSink:
    """Tiles into a Zarr group (arrays ``ntk``/``nngp`` chunked by tile, plus the ``tiles`` done-mask)."""

    def __init__(self, group, outputs, n_tiles):
        self.group = group
        self.outputs = outputs
        self.arrays = {name: group[name] for name in outputs}
        self.tiles = group["tiles"]
        marks = np.asarray(self.tiles[...])
        self.done = {(int(i), int(j)) for i, j in np.argwhere(marks[..., 0] == 1.0)}
        self.stats = {ij: tuple(marks[ij][1:]) for ij in self.done}

    def write(self, name, rows, cols, t):
        self.arrays[name][rows, cols] = t

    def mark(self, ij, maxima):
        self.tiles[ij[0], ij[1], :] = np.array([1.0, *maxima])
        self.done.add(ij)
        self.stats[ij] = maxima

    def finish(self, max_abs):
        for name, value in max_abs.items():
            self.arrays[name].attrs["max_abs"] = value
        self.group.attrs["complete"] = True
        try:
            ro = _read_only_group(self.group)
        except Exception:  # pragma: no cover  (a store that cannot be reopened read-only)
            ro = self.group
        return {name: ro[name] for name in self.outputs}


def _read_only_group(group):
    import zarr

    store = group.store
    if hasattr(store, "with_read_only"):
        store = store.with_read_only(True)
    return zarr.open_group(store=store, path=group.path, mode="r")


def _zarr():
    try:
        import zarr
    except ImportError:  # pragma: no cover
        raise KernelcalcInputError("out= needs the zarr package: pip install 'kernelcalc[dist]'") from None
    return zarr


def _describe(out) -> str:
    return str(out) if isinstance(out, (str, os.PathLike)) else f"{type(out).__name__} {getattr(out, 'store', '')}"


def open_zarr_sink(out, config: dict, shape, outputs, tile: int, n_tiles: tuple[int, int]) -> ZarrSink:
    """Create the Zarr group ``out`` (a path or a ``zarr.Group``) for this Gram, or reopen one made
    with the same configuration; refuse (never overwrite) anything else."""
    zarr = _zarr()
    config = json.loads(json.dumps(dict(config, format=_FORMAT, shape=list(shape), outputs=list(outputs),
                                        tile=int(tile)), default=str))
    if isinstance(out, (str, os.PathLike)):
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise KernelcalcInputError(f"out={str(out)!r} is an existing file, not a Zarr group; refusing to overwrite it")
        parent = path.parent if not path.exists() else path
        if not parent.is_dir():
            raise KernelcalcInputError(f"out={str(out)!r}: the folder {str(parent)!r} does not exist or is not a folder")
        if not os.access(parent, os.W_OK):
            raise KernelcalcInputError(f"out={str(out)!r} is not writable (no write permission on {str(parent)!r})")
        if path.exists() and any(path.iterdir()) and not (path / "zarr.json").exists():
            raise KernelcalcInputError(f"out={str(out)!r} is a non-empty folder that is not a Zarr group; "
                                       "refusing to write into it")
        try:
            group = zarr.open_group(str(path), mode="a")
        except Exception as err:
            raise KernelcalcInputError(f"out={str(out)!r} cannot be opened as a Zarr group: {err}") from None
    elif hasattr(out, "create_array") and hasattr(out, "attrs"):
        group = out
    else:
        raise KernelcalcInputError(f"out must be a path or a zarr.Group, got {type(out).__name__}")

    existing = dict(group.attrs).get("kernelcalc")
    members = sorted(group.keys())
    if existing is None:
        if members:
            raise KernelcalcInputError(
                f"out={_describe(out)} already holds arrays {members} not written by kernelcalc; "
                "refusing to overwrite them (choose another path)")
        try:
            for name in outputs:
                group.create_array(name, shape=shape, chunks=(tile, tile), dtype="f8", fill_value=np.nan)
            group.create_array("tiles", shape=(*n_tiles, 3), chunks=(1, 1, 3), dtype="f8", fill_value=0.0)
            group.attrs["kernelcalc"] = config
        except Exception as err:  # a read-only store, permissions, a full disk
            raise KernelcalcInputError(f"out={_describe(out)} is not writable: {type(err).__name__}: {err}") from None
        return ZarrSink(group, outputs, n_tiles)
    diff = sorted(k for k in set(existing) | set(config) if existing.get(k) != config.get(k))
    if diff:
        details = "; ".join(f"{k}: stored {existing.get(k)!r}, now {config.get(k)!r}" for k in diff[:4])
        raise KernelcalcInputError(
            f"out={_describe(out)} holds a Gram of another configuration ({details}); refusing to overwrite "
            "it: use another path, or delete it yourself")
    return ZarrSink(group, outputs, n_tiles)


# ---------------------------------------------------------------------------- dask
def connect(client_or_address, timeout: float = _CONNECT_TIMEOUT_S):
    """A ``dask.distributed.Client``: ``client_or_address`` itself, or a new client connected to the
    scheduler at that address (``"tcp://host:8786"``) within ``timeout`` seconds, else a clear error.

    A client made here from an address is not the process's default client (``set_as_default=False``:
    kernelcalc never changes global state) and belongs to the caller, who closes it (:func:`own_client`)."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        raise KernelcalcInputError("client= needs dask.distributed: pip install 'kernelcalc[dist]'") from None
    if isinstance(client_or_address, Client):
        return client_or_address
    if not isinstance(client_or_address, str):
        raise KernelcalcInputError(
            f"client must be a dask.distributed.Client or a scheduler address string, got "
            f"{type(client_or_address).__name__}")
    try:
        return Client(client_or_address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise KernelcalcInputError(
            f"cannot reach the dask scheduler at {client_or_address!r} within {timeout:g} s "
            f"({type(err).__name__}: {err}); start one with 'dask scheduler' or check the address") from None


@contextlib.contextmanager
def own_client(client_or_address):
    """``with own_client(client) as c:`` -- ``c`` is ``connect(client)`` (``None`` stays ``None``);
    a client that this made from an address is closed on exit, a ``Client`` object passed in is left open."""
    if client_or_address is None:
        yield None
        return
    client = connect(client_or_address)
    try:
        yield client
    finally:
        if client is not client_or_address:
            client.close()


def _scheduler(client) -> str:
    """``"the dask cluster at tcp://..."`` (for the messages)."""
    try:
        return f"the dask cluster at {client.scheduler.address}"
    except Exception:  # a client without a scheduler connection
        return "the dask cluster"


def _tile_failure(client, ij, result) -> Exception:
    """The exception for a tile future that did not finish: the computation's own kernelcalc error as
    it is (the same as without dask), anything else (a killed worker, a lost scheduler, a worker that
    cannot import kernelcalc) as one :class:`KernelcalcClusterError` line."""
    exc = result[1] if isinstance(result, tuple) and len(result) == 3 else result
    if isinstance(exc, BaseException) and type(exc).__module__.split(".")[0] == "kernelcalc":
        return exc
    what = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else repr(exc)
    what = " ".join(what.split())[:300]
    return KernelcalcClusterError(
        f"tile {ij} of the Gram failed on {_scheduler(client)} ({what}); no Gram is "
        "returned. Check the workers (they need kernelcalc and the same versions), then run again; with out= "
        "the finished tiles are kept")


def _tile_results_dask(client, plan, rows, cols, todo, keep):
    """Yield ``((I, J), (nngp, ntk), state)`` as the cluster finishes them (a dask graph: one task per
    tile on the broadcast plan).

    The futures are tracked on ``client``'s own event loop (``as_completed(..., loop=client.loop)``):
    without it dask looks up the process's *default* client, which fails when there is none and races
    (lost or NaN tiles, hangs) when it is another client (docs: NUMERICS.md).  A tile whose worker dies
    is rescheduled by dask; a tile that fails for good raises; the tasks still running are cancelled."""
    from distributed import as_completed

    plan_future = client.scatter(plan, broadcast=True, hash=False)
    futures = {client.submit(_tile_task, plan_future, rows[i], cols[j], keep, pure=False): (i, j) for i, j in todo}
    try:
        for fut, result in as_completed(list(futures), loop=client.loop, with_results=True, raise_errors=False):
            ij = futures.pop(fut, None)
            if ij is None:                    # pragma: no cover  (a future reported twice)
                continue
            if fut.status != "finished":
                raise _tile_failure(client, ij, result)
            yield (ij, *result)
            fut.release()
    finally:
        if futures:
            client.cancel(list(futures))
        plan_future.release()


# ---------------------------------------------------------------------------- engine
def _consume(plan, results, rows, cols, keep, sink, bar, client) -> int:
    """Write each ``(ij, tiles, state)`` of ``results`` into ``sink`` (checked when it comes from the
    cluster; see :func:`run_tiles`); returns how many cluster tiles were evaluated again here."""
    recomputed = 0
    for ij, tiles, state in results:
        i, j = ij
        if client is not None:
            tiles = _check_tile(ij, tiles, (rows[i].stop - rows[i].start, cols[j].stop - cols[j].start), keep, client)
            if not all(t is None or np.isfinite(t).all() for t in tiles):
                tiles, state = _tile_task(plan, rows[i], cols[j], keep)   # never trust a non-finite remote tile
                recomputed += 1
            merge_pair_state(plan, state)
        maxima = [math.nan, math.nan]
        for k, (name, t) in enumerate(zip(OUTPUTS, tiles)):
            if t is None:
                continue
            maxima[k] = float(np.maximum(np.max(t), -np.min(t)))   # NaN and inf propagate
            sink.write(name, rows[i], cols[j], t)
            if plan.same and i != j:
                sink.write(name, cols[j], rows[i], t.T)
        if _after_write is not None:
            _after_write(ij)
        sink.mark(ij, tuple(maxima))
        if _after_tile is not None:
            _after_tile(ij)
        if bar is not None:
            bar.update(1)
    return recomputed


def run_tiles(plan, *, outputs, sink, tile: int, client=None, progress: bool | None = False) -> dict:
    """Evaluate every missing tile of ``plan`` into ``sink``; returns engine diagnostics.

    ``outputs``: the validated outputs; ``sink``: :class:`MemorySink` or :class:`ZarrSink`.

    Every tile is written exactly once, complete: a tile from the cluster is checked (shape, dtype);
    one with a NaN or inf entry is evaluated again here (the same deterministic computation, so the
    Gram is the one this process would compute; a kernel that really overflows then reports it as
    without dask); and a tile that never arrived is an error.  No Gram with missing entries is returned.
    """
    rows, cols, todo = tile_list(plan.shape, plan.same, tile)
    pending = [ij for ij in todo if ij not in sink.done]
    keep = tuple(name in outputs for name in OUTPUTS)
    if client is not None or len(pending) < len(todo):
        # One pair here first: a plan's lazily fixed global state (e.g. the ODE time grid M and its
        # error estimate) is then set in this process, recorded in info, and shipped to the workers.
        plan.block(slice(0, 1), slice(0, 1))
    bar = None
    if progress is not False and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), initial=len(todo) - len(pending), desc="Gram tiles", unit="tile",
                   disable=progress_disable(progress))
    if client is None:
        results = ((ij, *_tile_task(plan, rows[ij[0]], cols[ij[1]], keep)) for ij in pending)
    else:
        results = _tile_results_dask(client, plan, rows, cols, pending, keep)
    try:
        recomputed = _consume(plan, results, rows, cols, keep, sink, bar, client)
    finally:
        results.close()       # an error here: the cluster's remaining tasks are cancelled now, not at GC
        if bar is not None:
            bar.close()
    missing = [ij for ij in todo if ij not in sink.done]
    if missing:
        raise KernelcalcClusterError(
            f"{len(missing)} of the Gram's {len(todo)} tiles never arrived (first: {missing[0]}) from "
            f"{_scheduler(client) if client is not None else 'the tile loop'}; "
            "no Gram is returned")
    stats = np.array([sink.stats[ij] for ij in todo])
    info = dict(tile=int(tile), tiles=len(todo), tiles_computed=len(pending), tiles_resumed=len(todo) - len(pending),
                engine="dask" if client is not None else "local",
                max_abs={name: float(np.max(stats[:, k])) for k, name in enumerate(OUTPUTS) if name in outputs})
    if recomputed:
        info["tiles_recomputed_locally"] = recomputed
    return info
