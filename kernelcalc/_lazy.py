"""Deferred imports: ``from .._lazy import jax, jnp`` instead of ``import jax, jax.numpy as jnp``.

Importing jax costs about a second (most of it ml_dtypes registering its dtypes with numpy), and
many uses of kernelcalc never need it: the CLI's ``limit``/``derive``, small kernels solved in numpy
(:mod:`kernelcalc.kernels.ode`), the symbolic analysis.  The names here are stand-ins that import
the real module on their first attribute access (``jax.jit``, ``jnp.asarray``, ...) and forward to it,
so the code that uses them reads as usual.  ``loaded()`` says whether jax has been imported yet.
"""

from __future__ import annotations

import importlib
import sys

from . import _x64

__all__ = ["jax", "jnp", "loaded"]


class _Deferred:
    """A module imported on first attribute access."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        if attr in _Deferred.__slots__ or attr.startswith("__"):   # an unset slot or a protocol probe (copy, pickle)
            raise AttributeError(attr)
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        if getattr(_x64._local, "active", False) and _x64._local.ctx is None:
            _x64.jax_imported(sys.modules["jax"])       # float64 from jax's first operation on
        return getattr(module, attr)

    def __reduce__(self):   # pickled by name (a closure sent to a dask worker may capture one)
        return (_Deferred, (self._name,))

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}{'' if self._module is None else ' (imported)'}>"


jax = _Deferred("jax")
jnp = _Deferred("jax.numpy")


def loaded(name: str = "jax") -> bool:
    """Whether the module ``name`` has been imported in this process (by anyone)."""
    return name in sys.modules
