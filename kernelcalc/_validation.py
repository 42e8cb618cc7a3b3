"""Input validation shared by every public function: clear errors naming the argument."""

from __future__ import annotations

import functools
import math
import numbers
import warnings

import numpy as np

__all__ = ["real_array", "as_inputs", "as_input_pair", "positive", "positive_int", "nonnegative", "KernelcalcInputError",
           "KernelcalcAccuracyWarning", "KernelcalcAccuracyError", "accuracy_shortfall", "progress_disable",
           "renamed_keywords", "DEFAULT_WIDTH", "user_stacklevel", "deprecated"]

#: The width of a single finite-width network wherever a function builds one and has a default
#: (``train``, ``flow_gap``, ``empirical_ntk``, ``monte_carlo``, ``depth_gap``, ...; see docs/keywords.md).
DEFAULT_WIDTH = 256


class KernelcalcInputError(ValueError):
    """A public function received an invalid argument."""


def real_array(x, name: str) -> np.ndarray:
    """``x`` as a float64 ndarray (any shape), refusing what would be converted with a loss.

    Integer, boolean and float arrays are converted. Complex arrays are refused (``astype(float)``
    would silently drop the imaginary part), as are strings, bytes and other non-numeric dtypes
    (``'1.5'`` is text, not a number); an object array is accepted only when every entry is a
    real number. Errors are :class:`KernelcalcInputError` naming ``name`` and the dtype.
    """
    try:
        raw = np.asarray(x)
    except (TypeError, ValueError) as err:  # e.g. ragged nested lists
        raise KernelcalcInputError(f"{name} must be a real array, got {type(x).__name__}: {err}") from None
    kind = raw.dtype.kind
    if kind == "O":
        for idx, v in np.ndenumerate(raw):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.integer, np.floating)):
                where = f" at index {idx}" if raw.ndim else ""
                raise KernelcalcInputError(
                    f"{name} must be a real numeric array; it has dtype object with an entry of type "
                    f"{type(v).__name__} ({v!r}){where}")
        kind = "f"
    if kind == "c":
        raise KernelcalcInputError(
            f"{name} is complex (dtype {raw.dtype}); kernelcalc needs real inputs and will not drop the "
            "imaginary part silently (pass x.real if that is what you mean)")
    if kind not in "biuf":
        raise KernelcalcInputError(f"{name} must be a real numeric array, got dtype {raw.dtype} "
                                   f"({'text' if kind in 'SU' else 'not a number type'})")
    try:
        return np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise KernelcalcInputError(f"{name} must be a real array: {err}") from None


def as_inputs(x, name: str = "x1") -> np.ndarray:
    """``x`` as a float64 array of shape (N, d), N >= 1, d >= 1, all finite; 1-D means one input.

    Complex, text and other non-numeric arrays are refused (see :func:`real_array`).
    """
    arr = real_array(x, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise KernelcalcInputError(f"{name} must have shape (N, d), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise KernelcalcInputError(f"{name} must have at least one row and one column, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise KernelcalcInputError(f"{name} contains NaN or inf (first at row {i}, column {j})")
    return arr


def as_input_pair(x1, x2=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate ``x1`` and ``x2`` (default ``x1``); returns ``(x1, x2, same)``."""
    a = as_inputs(x1, "x1")
    if x2 is None:
        return a, a, True
    b = as_inputs(x2, "x2")
    if a.shape[1] != b.shape[1]:
        raise KernelcalcInputError(f"x1 and x2 must have the same input dimension d, got {a.shape[1]} and {b.shape[1]}")
    return a, b, False


def _real(name: str, value) -> float:
    if isinstance(value, bool):
        raise KernelcalcInputError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise KernelcalcInputError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise KernelcalcInputError(f"{name} must be finite, got {value!r}")
    return v


def positive(name: str, value) -> float:
    """``value`` as a finite float > 0."""
    v = _real(name, value)
    if v <= 0:
        raise KernelcalcInputError(f"{name} must be > 0, got {value!r}")
    return v


def positive_sigmas(sigma_w, sigma_u, sigma_v) -> tuple[float, float, float]:
    """The three weight scales of the ODE/ResNet/DEQ models, each validated > 0 (errors name the argument)."""
    return tuple(positive(n, v) for n, v in (("sigma_w", sigma_w), ("sigma_u", sigma_u), ("sigma_v", sigma_v)))


def nonnegative(name: str, value) -> float:
    """``value`` as a finite float >= 0."""
    v = _real(name, value)
    if v < 0:
        raise KernelcalcInputError(f"{name} must be >= 0, got {value!r}")
    return v


def positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
            isinstance(value, float) and value.is_integer()):
        raise KernelcalcInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    v = int(value)
    if v < minimum:
        raise KernelcalcInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


class KernelcalcAccuracyWarning(UserWarning):
    """An adaptive numerical loop stopped before it met its tolerance (the result is less accurate
    than asked for; the achieved estimate is in the message and in the result's ``info``)."""


class KernelcalcAccuracyError(RuntimeError):
    """Raised instead of :class:`KernelcalcAccuracyWarning` when the caller passed ``strict=True``."""


def accuracy_shortfall(message: str, strict: bool = False, stacklevel: int = 3) -> None:
    """Report that a tolerance was not met: warn (default) or raise when ``strict``."""
    if strict:
        raise KernelcalcAccuracyError(message)
    import warnings

    warnings.warn(message, KernelcalcAccuracyWarning, stacklevel=stacklevel)


def progress_disable(progress, name: str = "progress"):
    """tqdm's ``disable`` for the package's one ``progress`` convention.

    ``None`` (the default everywhere): auto, tqdm's own ``disable=None`` -- the bar is shown when
    stderr is a terminal; ``True``: always shown; ``False``: never. Anything else is an error.
    """
    if progress is None:
        return None
    if isinstance(progress, (bool, np.bool_)):
        return not bool(progress)
    raise KernelcalcInputError(
        f"{name} must be None (auto: a bar when stderr is a terminal), True or False, got {progress!r}")


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes :func:`warnings.warn`, called in the caller of this helper, point at
    the first frame outside the kernelcalc package (the user's line), however many package frames
    (decorators, helpers) lie between."""
    import os
    import sys

    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(pkg):
        frame, level = frame.f_back, level + 1
    return level


def deprecated(old: str, new: str) -> None:
    """The one :class:`DeprecationWarning` of a renamed spelling: ``old`` still works for one release and
    means ``new``; it points at the user's line."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new} (same meaning)",
                  DeprecationWarning, stacklevel=user_stacklevel())


def renamed_keywords(**old_to_new):
    """Decorator: keyword ``old`` still works for one release, with a :class:`DeprecationWarning`,
    and means exactly ``new`` (giving both is an error). The signature shows the new names only."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise KernelcalcInputError(
                            f"{fn.__name__}: give {new}= only; {old}= is its deprecated old name, not both")
                    deprecated(f"{fn.__name__}({old}=...)", f"{new}=...")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        wrapper.renamed_keywords = dict(getattr(fn, "renamed_keywords", {}), **old_to_new)
        return wrapper

    return deco
