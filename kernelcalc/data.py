r"""Data loading and normalisation for kernel computations and training runs.

The NTK theory of Gao et al. assumes inputs on the sphere $\|x\|^2 = d$ (so that
$x\cdot y/d\in[-1, 1]$ is a correlation); :func:`sphere_normalise` puts rows there.

- :func:`load_array`: one ``(N, d)`` float array from ``.npy``, ``.csv`` or ``.txt``.
- :func:`load_xy`: inputs and a scalar target, from one file (last column is the
  target) or from two files.
- :func:`load_digits_subset`: a small real data set (sklearn's bundled 8x8 digits,
  no download) on the sphere with a scalar target.

All errors are :class:`~kernelcalc.KernelcalcInputError` (a ``ValueError``) naming the
path and what is wrong with it.
"""

from __future__ import annotations

import os

import numpy as np

from ._validation import KernelcalcInputError, as_inputs, positive_int, real_array

__all__ = ["SUPPORTED_EXTENSIONS", "load_array", "load_xy", "sphere_normalise", "load_digits_subset"]

#: File extensions :func:`load_array` understands.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".npy", ".csv", ".txt")


def _read_raw(path) -> np.ndarray:
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise KernelcalcInputError(
            f"unsupported data file extension {ext or '(none)'!r} for {path!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    if not os.path.exists(path):
        raise KernelcalcInputError(f"data file not found: {path!r}")
    if os.path.isdir(path):
        raise KernelcalcInputError(f"data path is a directory, not a file: {path!r}")
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            delimiter = "," if ext == ".csv" else None
            arr = _read_text(path, delimiter)
    except KernelcalcInputError:
        raise
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise KernelcalcInputError(f"cannot read data file {path!r}: {msg}") from None
    return real_array(arr, f"data file {path!r}")


def _read_text(path: str, delimiter) -> np.ndarray:
    """Text table.  A first line whose every field is non-numeric is a header and is skipped; any other field
    that does not parse (e.g. a typo ``1,2,x`` in the first row) is an error naming its line (the file's line
    number, counting blank and ``#`` comment lines)."""
    with open(path, encoding="utf-8") as fh:
        lines = [(n, ln) for n, ln in enumerate(fh.read().splitlines(), start=1)
                 if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise KernelcalcInputError(f"data file {path!r} is empty")

    def split(line):
        return [c.strip() for c in (line.split(delimiter) if delimiter else line.split())]

    def number(cell):
        try:
            float(cell)
            return True
        except ValueError:
            return False

    for n, line in lines:  # complex entries, e.g. np.savetxt's "(1+2j)": refuse, never a "header"
        cell = next((c for c in split(line) if _complex_cell(c)), None)
        if cell is not None:
            raise KernelcalcInputError(
                f"data file {path!r} has a complex entry {cell!r} on line {n}; kernelcalc needs real data")
    if not any(number(c) for c in split(lines[0][1])):
        lines = lines[1:]  # header: every field non-numeric
        if not lines:
            raise KernelcalcInputError(f"data file {path!r} has a header but no rows")
    rows = []
    for n, line in lines:
        cells = split(line)
        bad = next((c for c in cells if not number(c)), None)
        if bad is not None:
            raise KernelcalcInputError(
                f"data file {path!r}: line {n} has a non-numeric entry {bad!r} ({line[:60]!r}); only a first line "
                "whose every field is non-numeric is taken as a header")
        rows.append([float(c) for c in cells])
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise KernelcalcInputError(f"data file {path!r}: rows have different numbers of columns {sorted(widths)}")
    return np.array(rows, dtype=np.float64)


def _complex_cell(cell: str) -> bool:
    """A text cell that is a complex number but not a real one (``1+2j``, ``(1-2j)``, ``3i``)."""
    try:
        float(cell)
        return False
    except ValueError:
        pass
    if not any(ch.isdigit() for ch in cell):
        return False
    try:
        complex(cell.replace(" ", "").replace("i", "j"))
        return True
    except ValueError:
        return False


def load_array(path) -> np.ndarray:
    r"""Load a data matrix of shape ``(N, d)`` from ``.npy``, ``.csv`` or ``.txt``.

    **Arguments:**

    - ``path``: file path. ``.csv`` is comma-separated, ``.txt`` whitespace-separated;
      a header line (a first line whose every field is non-numeric) and ``#`` comments are skipped; any other
      non-numeric field is an error naming its line. A ``.npy`` file must hold a 2-D
      array (a 1-D array is refused: it could mean one input or ``N`` scalar inputs);
      a one-column text file is ``N`` inputs of dimension ``d = 1``.

    **Returns:** a float64 array of shape ``(N, d)``, all entries finite.

    Raises :class:`~kernelcalc.KernelcalcInputError` for a missing or unreadable file, an
    unsupported extension, an array that is not 2-D, complex or non-numeric entries, or
    NaN/inf entries.
    """
    arr = _read_raw(path)
    name = f"data in {os.fspath(path)!r}"
    if arr.ndim == 0:
        raise KernelcalcInputError(f"{name} is a scalar; expected an (N, d) array")
    if arr.ndim == 1:
        raise KernelcalcInputError(
            f"{name} is 1-D (shape {arr.shape}); expected an (N, d) array, one input per row "
            "(save X.reshape(1, -1) for one input or X.reshape(-1, 1) for N inputs of dimension 1)")
    if arr.ndim > 2:
        raise KernelcalcInputError(f"{name} must have shape (N, d), got shape {arr.shape}")
    return as_inputs(arr, name)


def load_xy(path_x, path_y=None) -> tuple[np.ndarray, np.ndarray]:
    r"""Load inputs ``X`` (N, d) and a scalar target ``y`` (N,).

    With ``path_y=None`` the file at ``path_x`` holds both: its last column is ``y`` and the
    others are ``X`` (it needs at least two columns). Otherwise ``y`` is read from
    ``path_y`` (one column, or a 1-D ``.npy``) and must have one entry per row of ``X``.
    """
    if path_y is None:
        data = load_array(path_x)
        if data.shape[1] < 2:
            raise KernelcalcInputError(
                f"{os.fspath(path_x)!r} has {data.shape[1]} column; need inputs plus a target column "
                "(or pass a separate target file)")
        return np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, -1])
    X = load_array(path_x)
    raw = _read_raw(path_y)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    elif raw.ndim == 2 and raw.shape[0] == 1:
        raw = raw[0]
    if raw.ndim != 1:
        raise KernelcalcInputError(f"target in {os.fspath(path_y)!r} must be one column, got shape {raw.shape}")
    if not np.all(np.isfinite(raw)):
        raise KernelcalcInputError(f"target in {os.fspath(path_y)!r} contains NaN or inf")
    if raw.shape[0] != X.shape[0]:
        raise KernelcalcInputError(
            f"target in {os.fspath(path_y)!r} has {raw.shape[0]} entries but X has {X.shape[0]} rows")
    return X, raw


def sphere_normalise(X) -> np.ndarray:
    r"""Scale each row onto the sphere $\|x\|^2 = d$ (``d`` = number of columns).

    Raises :class:`~kernelcalc.KernelcalcInputError` if a row is zero (it has no direction).
    """
    X = as_inputs(X, "X")
    norms = np.linalg.norm(X, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise KernelcalcInputError(f"X row {int(zero[0])} is zero and cannot be normalised onto the sphere")
    return X * (np.sqrt(X.shape[1]) / norms)[:, None]


def load_digits_subset(n: int, *, seed: int = 0, digit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""``n`` images from scikit-learn's bundled 8x8 digits (1797 images, no download).

    **Arguments:**

    - ``n``: number of images (1 to 1797), drawn without replacement.
    - ``seed``: seed for the draw (reproducible).
    - ``digit``: if given (0-9), the target is one-vs-rest $y = +1$ for that digit,
      $-1$ otherwise; if ``None``, the digit value centred and scaled,
      $y = (k - 4.5)/4.5 \in [-1, 1]$.

    **Returns:** ``(X, y)``: ``X`` of shape ``(n, 64)`` with rows on the sphere
    $\|x\|^2 = 64$ (pixel intensities, centred per image so that no two images are
    parallel merely through brightness; constant images are dropped), ``y`` of shape ``(n,)``.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images, labels = np.asarray(data.data, dtype=np.float64), np.asarray(data.target)
    centred = images - images.mean(axis=1, keepdims=True)
    keep = np.linalg.norm(centred, axis=1) > 0
    centred, labels = centred[keep], labels[keep]
    n = positive_int("n", n)
    if n > centred.shape[0]:
        raise KernelcalcInputError(f"n must be <= {centred.shape[0]} (size of the digits data set), got {n}")
    if digit is not None:
        if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= int(digit) <= 9:
            raise KernelcalcInputError(f"digit must be an integer in 0..9 or None, got {digit!r}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(centred.shape[0], size=n, replace=False)
    X = sphere_normalise(centred[idx])
    k = labels[idx].astype(np.float64)
    y = np.where(k == int(digit), 1.0, -1.0) if digit is not None else (k - 4.5) / 4.5
    return X, y
