r"""One BLAS thread for a scope, cheaply: :func:`one_blas_thread`.

The small matrix products of the kernels (Hermite coefficients, norm-basis sums) run faster on the calling
thread than on several BLAS threads, and on a busy machine waking the threads costs up to 100x the product.
``threadpoolctl.threadpool_limits`` scans the loaded shared libraries at every entry (reads
``/proc/self/maps``: 1-3 ms in a kernelcalc process, more on a loaded machine; measured 94 entries and
0.8 s of a cold off-sphere MLP call at load 7).  A ``ThreadpoolController`` scans once; its ``limit``
contexts cost ~10 us.  The controller is cached per set of BLAS-bearing packages imported (scipy brings its
own OpenBLAS): a library loaded later is seen by the next controller.
"""

from __future__ import annotations

import contextlib
import functools
import sys

__all__ = ["one_blas_thread"]


@functools.lru_cache(maxsize=4)
def _controller(key: tuple[bool, ...]):
    """The threadpoolctl controller of the libraries loaded now (``key``: which BLAS-bearing packages are
    imported); ``None`` without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


def one_blas_thread():
    """A context in which BLAS runs on one thread (entered value: truthy); a null context (``False``)
    without ``threadpoolctl``."""
    controller = _controller(tuple(m in sys.modules for m in ("scipy.linalg", "sklearn", "torch")))
    if controller is None:  # pragma: no cover
        return contextlib.nullcontext(False)
    return controller.limit(limits=1, user_api="blas")
