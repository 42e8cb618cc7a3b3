"""Input validation shared by every public function: clear errors naming the argument."""

from __future__ import annotations

import contextvars
import functools
import math
import numbers
import warnings

import numpy as np

__all__ = ["real_array", "as_inputs", "as_input_pair", "positive", "positive_int", "nonnegative", "KernelcalcInputError",
           "MODEL_SCALES", "SCALE_NAMES", "DEPRECATED_SCALES", "scale_value", "model_scales", "scale_keywords",
           "KernelcalcAccuracyWarning", "KernelcalcAccuracyError", "accuracy_shortfall", "progress_disable",
           "renamed_keywords", "DEFAULT_WIDTH", "user_stacklevel", "deprecated", "MODEL_KEYWORDS", "check_model_keywords"]

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
    return tuple(scale_value(n, v) for n, v in (("sigma_w", sigma_w), ("sigma_u", sigma_u), ("sigma_v", sigma_v)))


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


class KernelcalcClusterError(RuntimeError):
    """A Gram's tiles could not be computed on the dask cluster (``client=``): a tile failed for good
    (e.g. its workers kept dying), the scheduler was lost, or a tile never arrived.  No partial Gram
    is returned; with ``out=`` the finished tiles are kept and a rerun continues from them."""


def accuracy_shortfall(message: str, strict: bool = False) -> None:
    """Report that a tolerance was not met: warn (default; at the user's line) or raise when ``strict``."""
    if strict:
        raise KernelcalcAccuracyError(message)
    warn(message, KernelcalcAccuracyWarning)


def warn(message: str, category, stacklevel: int | None = None) -> None:
    """:func:`warnings.warn` pointing at the user's line: ``stacklevel=None`` (the default) is the first
    frame outside the kernelcalc package, however many of its frames (decorators such as
    :func:`scale_keywords` and :func:`~kernelcalc._x64.float64`, helpers) lie between; an integer counts
    from the caller of this function as :func:`warnings.warn` does."""
    warnings.warn(message, category, stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1)


# ---------------------------------------------------------------------------- the naming table of the scales
_ODE_SCALES = {"sigma_w": 1.0, "sigma_u": 1.0, "sigma_v": 1.0}

#: Each model's scale keywords and their defaults (``docs/naming.md``): the one spelling of every scale.
MODEL_SCALES = {
    "node": dict(_ODE_SCALES), "resnet": dict(_ODE_SCALES), "node_untied": dict(_ODE_SCALES),
    "resnet_untied": dict(_ODE_SCALES), "deq": dict(_ODE_SCALES, sigma_b=0.0),
    "mlp": {"sigma_w": 1.0, "sigma_b": 0.0, "sigma_v": 1.0, "sigma_vb": 0.0},
}
#: Every scale keyword; the weight scales must be > 0, the bias scales (``sigma_b``, ``sigma_vb``) >= 0.
SCALE_NAMES = ("sigma_w", "sigma_u", "sigma_v", "sigma_b", "sigma_vb")
WEIGHT_SCALES = ("sigma_w", "sigma_u", "sigma_v")
#: The MLP's old keyword names (one release with a DeprecationWarning) -> the new ones.
DEPRECATED_SCALES = {"w_std": "sigma_w", "b_std": "sigma_b", "out_w_std": "sigma_v", "out_b_std": "sigma_vb"}


def scale_value(name: str, value) -> float:
    """One scale keyword validated: a weight scale (``sigma_w``, ``sigma_u``, ``sigma_v``) as a finite
    float > 0, a bias scale (``sigma_b``, ``sigma_vb``) as a finite float >= 0."""
    return positive(name, value) if name in WEIGHT_SCALES else nonnegative(name, value)


def _model_key(model) -> str:
    key = model.strip().lower() if isinstance(model, str) else model
    if key not in MODEL_SCALES:
        raise KernelcalcInputError(f"model must be one of {tuple(MODEL_SCALES)}, got {model!r}")
    return key


def model_scales(model, *, defaults: dict | None = None, fill: bool = True, where: str | None = None,
                 **given) -> dict:
    r"""The validated scale keywords of ``model`` (the naming table :data:`MODEL_SCALES`).

    **Arguments:** ``model`` (a key of :data:`MODEL_SCALES`); ``given``: the scale keywords as
    passed, ``None`` meaning "not passed"; the MLP's old names ``w_std``, ``b_std``, ``out_w_std``,
    ``out_b_std`` are mapped to ``sigma_w``, ``sigma_b``, ``sigma_v``, ``sigma_vb`` with a
    :class:`DeprecationWarning` (both spellings at once is an error); ``defaults``: the defaults of
    the caller (default: the table's); ``fill``: add the defaults of the scales not given;
    ``where``: what to name in the errors (default ``model=...``).

    **Returns:** ``{name: float}`` in the table's order: the given (and, with ``fill``, the default)
    value of each of the model's scales, weight scales $>0$, bias scales $\ge0$.

    **Raises:** :class:`KernelcalcInputError` naming the keyword and the model for a scale that
    does not apply to ``model`` (passed at all, i.e. not ``None``), an unknown keyword, or a bad value.
    """
    key = _model_key(model)
    table = MODEL_SCALES[key]
    where = where or f"model={key!r}"
    values = {}
    for name, value in given.items():
        if value is None:
            continue
        new = DEPRECATED_SCALES.get(name)
        if new is not None:
            if key != "mlp":
                raise KernelcalcInputError(f"{name} (the old MLP name of {new}) does not apply to {where}; "
                                           f"its scale keywords are {', '.join(table)}")
            if given.get(new) is not None:
                raise KernelcalcInputError(f"give {new} or its deprecated old name {name}, not both "
                                           f"(got {new}={given[new]!r} and {name}={value!r})")
            deprecated(name, f"{new} (the MLP's scales are sigma_w, sigma_b, sigma_v, sigma_vb)")
            name = new
        elif name not in SCALE_NAMES:
            raise KernelcalcInputError(f"unknown keyword argument {name}={value!r} for {where}")
        if name not in table:
            raise KernelcalcInputError(f"{name} does not apply to {where}; its scale keywords are {', '.join(table)}")
        values[name] = scale_value(name, value)
    if fill:
        base = table if defaults is None else {**table, **{k: v for k, v in defaults.items() if k in table}}
        values = {name: values[name] if name in values else scale_value(name, base[name]) for name in table}
    return {name: values[name] for name in table if name in values}


#: Keywords that configure one kind of model only: keyword -> the models (keys of :data:`MODEL_SCALES`) it applies
#: to (docs/keywords.md).  ``T``: the time horizon of the ODE models and ResNets; ``depth``: the layers of a ResNet
#: or an MLP; ``solver``, ``gradient``: the Neural ODE's own solver and its gradient mode; ``solver_steps``: its
#: fixed steps (the untied ODE's Euler-Maruyama steps); ``rtol``, ``atol``, ``max_steps``: the adaptive Neural ODE
#: solve or the DEQ's equilibrium solve.
MODEL_KEYWORDS = {
    "T": ("node", "resnet", "node_untied", "resnet_untied"),
    "depth": ("resnet", "mlp", "resnet_untied"),
    "solver": ("node",),
    "gradient": ("node",),
    "solver_steps": ("node", "node_untied"),
    "rtol": ("node", "deq"),
    "atol": ("node", "deq"),
    "max_steps": ("node", "deq"),
}
#: True while a public entry point runs: the entry points it calls in turn forward their caller's keywords
#: for every model, so only the outermost call (the user's) is checked against :data:`MODEL_KEYWORDS`.
_INSIDE_ENTRY_POINT = contextvars.ContextVar("kernelcalc_inside_entry_point", default=False)


def check_model_keywords(model, given: dict, where: str | None = None) -> None:
    """Raise :class:`KernelcalcInputError` for a keyword of :data:`MODEL_KEYWORDS` that ``given`` passes (any value
    but ``None``, the sentinel "not passed": the function's documented default included) although it does not
    apply to ``model``."""
    key = _model_key(model)
    for name, value in given.items():
        models = MODEL_KEYWORDS.get(name)
        if models is None or key in models or value is None:
            continue
        raise KernelcalcInputError(f"{name} does not apply to {where or f'model={key!r}'} (got {name}={value!r}); "
                                   f"{name} configures model={' / '.join(repr(m) for m in models)} only")


def scale_keywords(model: str | None = None, *, label: str | None = None, model_defaults: dict | None = None):
    r"""Decorator of a public function that builds a model: its scale keywords obey :func:`model_scales`.

    ``model``: the model the function builds (fixed), or ``None``: the function's ``model``
    argument.  The scale keywords of the call (``sigma_w`` ... ``sigma_vb`` and the deprecated MLP
    names), ``None`` meaning not passed, are validated by :func:`model_scales` with the function's
    own defaults; the function then receives, for every scale keyword it declares, the validated
    value if it applies to the model and ``None`` otherwise; a function with ``**kwargs`` that
    declares none receives the model's scales there.  So a scale that does not apply raises
    :class:`KernelcalcInputError` (naming it and the model) instead of a ``TypeError`` or being ignored.
    Likewise every keyword of :data:`MODEL_KEYWORDS` (``T``, ``depth``, the solver options) that the user
    passes to a model it does not configure (:func:`check_model_keywords`), whatever its value: such a keyword's
    signature default is ``None`` ("the model's default"), so an explicit value, the documented default
    included, is seen; only the outermost entry point checks them, since the ones it calls receive its
    keywords for every model.
    ``label``: how the errors name a fixed model (default ``model=...``).
    ``model_defaults``: ``{keyword: value}``, the documented defaults of the function's keywords of
    :data:`MODEL_KEYWORDS` whose signature default is the sentinel ``None``; after the check the function
    receives these values for the ones not passed (or passed as ``None``).
    """
    import functools
    import inspect

    def decorate(fn):
        sig = inspect.signature(fn)
        declared = [n for n in SCALE_NAMES if n in sig.parameters]
        for n in declared:
            assert sig.parameters[n].kind is inspect.Parameter.KEYWORD_ONLY, (fn.__name__, n)
        defaults = {n: sig.parameters[n].default for n in declared}
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())

        fills = dict(model_defaults or {})
        for n in fills:                               # a sentinel default, so that an explicit value is seen
            assert n in MODEL_KEYWORDS and sig.parameters[n].default is None, (fn.__name__, n)
            assert sig.parameters[n].kind is inspect.Parameter.KEYWORD_ONLY, (fn.__name__, n)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            given = {k: kwargs.pop(k) for k in list(kwargs) if k in SCALE_NAMES or k in DEPRECATED_SCALES}
            chosen = model
            if chosen is None and "model" in kwargs:
                chosen = kwargs["model"]
            elif chosen is None:                      # positional or the default: bind the call
                bound = sig.bind_partial(*args, **kwargs).arguments
                chosen = bound.get("model", sig.parameters["model"].default)
                if chosen is inspect.Parameter.empty:    # a required model not given: the call's own TypeError
                    return fn(*args, **kwargs, **given)
            scales = model_scales(chosen, defaults=defaults, where=label, fill=bool(declared) or var_kw, **given)
            outermost = not _INSIDE_ENTRY_POINT.get()
            if outermost and model is None:           # the user's own keywords for the model of the call (a fixed
                #                                          model's signature has only keywords that apply)
                try:
                    passed = dict(sig.bind_partial(*args, **kwargs).arguments)
                except TypeError:                     # the call's own TypeError, raised by fn below
                    passed = {}
                passed.update(passed.pop(next((n for n, p in sig.parameters.items()
                                               if p.kind is inspect.Parameter.VAR_KEYWORD), ""), None) or {})
                check_model_keywords(chosen, passed, label)
            for n, value in fills.items():
                if kwargs.get(n) is None:
                    kwargs[n] = value
            if declared:
                kwargs.update({n: scales.get(n) for n in declared})
            else:
                kwargs.update(scales)
            token = _INSIDE_ENTRY_POINT.set(True) if outermost else None
            try:
                return fn(*args, **kwargs)
            finally:
                if token is not None:
                    _INSIDE_ENTRY_POINT.reset(token)

        return wrapper

    return decorate


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
    warn(f"{old} is deprecated and will be removed in the next release; use {new} (same meaning)",
         DeprecationWarning)


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
