r"""float64 for kernelcalc's jax code without touching the user's jax configuration.

jax computes in float32 unless ``jax_enable_x64`` is on.  ``import kernelcalc`` does **not** turn it on
(as diffrax, equinox and neural-tangents do not): every public function that runs jax is wrapped by
:func:`float64`, which runs it inside ``jax.enable_x64(True)``, jax's scoped, thread-local
context manager.  So

- kernelcalc computes in float64 whatever the user's setting (the same numbers, bit for bit, as
  in a process where the user enabled x64 globally), and
- the user's own jax code keeps the user's precision: after ``import kernelcalc`` and after any
  kernelcalc call, ``jnp.ones(3).dtype`` is what it was before, and a function the user jits is
  traced in the user's precision.

**jit caches.** The x64 flag is part of jax's trace context and jit cache key, so a function jitted
at module level (or a jitted closure kept in an ``lru_cache``) is traced separately inside and outside
the context: a float32 trace made outside is never reused inside.  What a cache must not hold is a
jax array *created* outside the context (a float32 constant captured in a closure); the cached
builders that create jax constants are wrapped by :func:`float64` themselves, so whoever calls them
first, their constants are float64.

**Threads.** ``jax.enable_x64`` is thread-local: work handed to another thread (dask workers in
threads, ``concurrent.futures``) must enter it there; the one such entry point, the tile task of
:mod:`kernelcalc.kernels._tiles`, is wrapped (and dask worker processes, which never import
kernelcalc's old global switch, are covered by the same wrapper).

**What comes back.** The result objects (:class:`~kernelcalc.Kernel`, ``TrainResult``, ``Comparison``,
``DepthGap``, ...) hold numpy arrays and Python floats, never jax arrays.  The jax building blocks
(``init_params``, ``model_apply``, ``batched_apply``, the :class:`~kernelcalc.theory.gaussian.DualKernels`
methods) return jax float64 arrays: pass them back to kernelcalc, convert them with ``np.asarray``, or
compute with them inside ``with jax.enable_x64(True):`` -- outside it jax silently turns a float64
array into float32 at the next operation.  Called inside the user's own ``jax.jit``/``jax.grad``/``vmap``
they follow the user's precision (one trace cannot mix the two settings), so a float32 user who
differentiates ``model_apply`` gets float32 gradients; for float64 there, trace inside
``with jax.enable_x64(True):``.  ``Activation.jax_fn`` and ``jax_derivative`` are plain jax functions:
they follow the caller's precision.

**No jax import.** This module does not import jax: many uses of kernelcalc never need it (the
CLI's ``limit``, small kernels solved in numpy, the symbolic analysis; see :mod:`kernelcalc._lazy`).
A scope opened before jax is loaded switches x64 on the moment jax is first touched through
:mod:`kernelcalc._lazy` (its hook :func:`jax_imported`), or at the next nested kernelcalc call if
something imported jax directly; it is switched off when the outermost call returns.

The command-line interface runs each command inside the same scope (:func:`scope`) (the CLI owns its process, but a
``CliRunner`` in a test or a notebook does not).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from typing import Callable, TypeVar

__all__ = ["float64", "is_float64", "scope", "jax_imported"]

_F = TypeVar("_F", bound=Callable)
#: per thread: ``active`` -- a float64 scope of kernelcalc is open here; ``ctx`` -- the
#: ``jax.enable_x64(True)`` context it entered (``None`` while jax is not loaded yet)
_local = threading.local()


def _tracing(jax, args, kwargs) -> bool:
    """Whether a jax transformation (jit, grad, vmap, scan bodies, ...) is tracing right now."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # pragma: no cover  (a jax without it: tell by the arguments)
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        return any(isinstance(a, jax.core.Tracer) for a in leaves)
    return not trace_state_clean()


def _switch_on(jax) -> None:
    """Enter ``jax.enable_x64(True)`` for this thread's open scope (once)."""
    if getattr(_local, "ctx", None) is None and not jax.enable_x64.value:
        ctx = jax.enable_x64(True)
        ctx.__enter__()
        _local.ctx = ctx


def jax_imported(jax) -> None:
    """Hook of :mod:`kernelcalc._lazy`: jax is being used inside an open scope that began before jax
    was loaded: switch x64 on now, before its first operation."""
    if getattr(_local, "active", False) and _local.ctx is None:
        _switch_on(jax)


@contextlib.contextmanager
def scope(args=(), kwargs=None):
    """Context manager: float64 jax inside, the caller's setting outside (see the module docstring).

    Nested scopes are free; a scope opened while the user's own jax transformation is tracing, or
    where x64 is already on, changes nothing."""
    if getattr(_local, "active", False):          # nested: the outer scope owns the switch
        jax = sys.modules.get("jax")
        if jax is not None and _local.ctx is None:
            _switch_on(jax)                        # jax was imported directly since the scope opened
        yield
        return
    jax = sys.modules.get("jax")
    if jax is not None and (jax.enable_x64.value or _tracing(jax, args, kwargs or {})):
        yield                                      # x64 already on, or the user's trace decides
        return
    _local.active, _local.ctx = True, None
    try:
        if jax is not None:
            _switch_on(jax)
        yield
    finally:
        ctx = _local.ctx
        _local.active, _local.ctx = False, None
        if ctx is not None:
            ctx.__exit__(None, None, None)


def float64(fn: _F) -> _F:
    """Decorator: run ``fn`` inside :func:`scope` (``jax.enable_x64(True)``, scoped and thread-local,
    without importing jax).

    Called where x64 is already on (a nested kernelcalc call, or the user's global setting) it just
    calls ``fn``; called while a jax transformation of the user's is tracing (``fn`` inside the user's
    ``jax.jit``/``jax.grad`` with x64 off), it also just calls ``fn``: one trace cannot mix the two
    settings (diffrax fails on int64/int32 loop counters), so ``fn`` then follows the user's precision.
    The wrapper keeps ``fn``'s name, docstring and signature and is marked ``__kernelcalc_float64__``.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if getattr(_local, "active", False):       # the common nested case: one attribute lookup
            if _local.ctx is None and "jax" in sys.modules:
                _switch_on(sys.modules["jax"])
            return fn(*args, **kwargs)
        with scope(args, kwargs):
            return fn(*args, **kwargs)

    wrapper.__kernelcalc_float64__ = True
    return wrapper


def is_float64(fn) -> bool:
    """``fn`` is wrapped by :func:`float64` (directly, or under ``functools.lru_cache``/``wraps``)."""
    while fn is not None:
        if getattr(fn, "__kernelcalc_float64__", False):
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False
