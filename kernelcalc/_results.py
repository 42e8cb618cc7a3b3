"""The one immutable result type shared by every kernel (analytic, empirical, Monte Carlo)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

import numpy as np

__all__ = ["Kernel", "JsonResult", "jsonable", "on_disk"]


def on_disk(a) -> bool:
    """``a`` is an on-disk (Zarr) array rather than an in-memory numpy array."""
    return a is not None and not isinstance(a, np.ndarray) and hasattr(a, "attrs") and hasattr(a, "shape")


def read_only(a, dtype=np.float64) -> np.ndarray:
    """``a`` copied into a new read-only array of ``dtype``: a field of an immutable result."""
    arr = np.array(a, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


def frozen(a):
    """A read-only float64 array: ``None`` and Zarr arrays as they are; a float64 array that is already
    read-only and owns its memory (what the kernels return) without a copy; anything else copied."""
    if a is None or on_disk(a):
        return a
    if isinstance(a, np.ndarray) and a.dtype == np.float64 and not a.flags.writeable and a.base is None:
        return a
    return read_only(a)


def _array_dict(a):
    """JSON form of one Gram: a nested list, ``None`` (not computed), or where a Zarr array lives."""
    if a is None:
        return None
    if on_disk(a):
        return {"zarr_store": str(getattr(a, "store", "")), "path": str(getattr(a, "path", "")), "shape": list(a.shape)}
    return a.tolist()


class JsonResult:
    """Mixin for the frozen result dataclasses: :meth:`to_dict` (the fields plus :meth:`_derived`,
    converted by :func:`jsonable`) and :meth:`to_json`. Results with a nested layout override ``to_dict``."""

    def _derived(self) -> dict:
        """Computed properties to include in :meth:`to_dict` (none by default)."""
        return {}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(self._derived())
        return jsonable(d)

    def to_json(self, **kw) -> str:
        """:meth:`to_dict` as a JSON string (``kw`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), **kw)


@dataclasses.dataclass(frozen=True)
class Kernel(JsonResult):
    r"""NNGP and NTK Gram matrices of one model on inputs ``x1`` (rows) and ``x2`` (columns).

    **Fields:**

    - ``nngp``: $K(x_i, y_j) = E[f(x_i) f(y_j)]$ at initialisation, shape ``(N1, N2)`` (analytic, or
      the sample mean of :func:`~kernelcalc.monte_carlo`); ``None`` for the empirical kernel of one
      network (:func:`~kernelcalc.empirical_ntk`: one network has no expectation; its outputs are
      ``info["f1"]``, ``info["f2"]``) and when not asked for (``outputs=("ntk",)``).
    - ``ntk``: $\Theta(x_i, y_j) = E[\nabla_\theta f(x_i)\cdot\nabla_\theta f(y_j)]$, shape ``(N1, N2)``.
    - ``model``: ``"mlp"``, ``"resnet"``, ``"node"`` (analytic) or ``"empirical:..."``.
    - ``activation``: the activation's name.
    - ``params``: the parameters that produced it (``T``, ``sigma_w``, ``depth`` ...).
    - ``info``: diagnostics (discretisation sizes, estimated errors, timings).
    - ``stderr``: for Monte-Carlo estimates, a :class:`Kernel` of standard errors; else ``None``.

    Arrays are read-only.  Use :meth:`replace` to derive a modified copy.

    **Missing and on-disk outputs.** A Gram that was not asked for (``outputs=("ntk",)`` of the
    analytic kernels) is ``None``; at least one of ``nngp``, ``ntk`` is an array.  A Gram written
    to a Zarr group (``out=``) is the read-only ``zarr.Array`` itself (``K.ntk[i:j, k:l]`` reads a
    block, ``np.asarray(K.ntk)`` loads it all); :meth:`to_dict` then records where it lives
    instead of the entries.
    """

    nngp: np.ndarray | None
    ntk: np.ndarray | None
    model: str
    activation: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stderr: "Kernel | None" = None

    def __post_init__(self):
        nngp, ntk = frozen(self.nngp), frozen(self.ntk)
        if nngp is None and ntk is None:
            raise ValueError("a Kernel needs at least one of nngp, ntk")
        if nngp is not None and ntk is not None and tuple(nngp.shape) != tuple(ntk.shape):
            raise ValueError(f"nngp shape {nngp.shape} != ntk shape {ntk.shape}")
        object.__setattr__(self, "nngp", nngp)
        object.__setattr__(self, "ntk", ntk)
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "info", dict(self.info))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple((self.ntk if self.ntk is not None else self.nngp).shape)

    def replace(self, **changes) -> "Kernel":
        """A copy with some fields replaced (like ``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary."""
        out = {
            "model": self.model, "activation": self.activation,
            "params": jsonable(self.params), "info": jsonable(self.info),
            "nngp": _array_dict(self.nngp), "ntk": _array_dict(self.ntk),
        }
        if self.stderr is not None:
            out["stderr"] = {"nngp": _array_dict(self.stderr.nngp), "ntk": _array_dict(self.stderr.ntk)}
        return out


def jsonable(obj):
    """Plain JSON types (shared by every result type); non-finite floats become ``None``; a nested result
    (a :class:`JsonResult` field, e.g. the runs of a sweep) becomes its :meth:`~JsonResult.to_dict`."""
    if isinstance(obj, JsonResult):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def text_table(columns, rows) -> list[str]:
    """Fixed-width text lines: ``columns`` is ``[(title, width, format spec)]``, ``rows`` an iterable of
    value tuples; returns the header, a rule and one line per row (callers append footers)."""
    head = " ".join(f"{title:>{width}}" for title, width, _ in columns)
    lines = [head, "-" * len(head)]
    lines += [" ".join(f"{v:>{width}{spec}}" for v, (_, width, spec) in zip(row, columns)) for row in rows]
    return lines
