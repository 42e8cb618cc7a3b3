r"""Extreme eigenvalues of a (kernel Gram) matrix with rigorous residual-based error bounds.

:func:`spectrum` returns the ``k`` smallest or largest eigenvalues of a symmetric matrix $A$
(a numpy array, a Zarr array or group, a :class:`~kernelcalc.Kernel`, or data $X$ with kernel
arguments), each with a bound $b_i$ such that the $i$-th smallest (largest) eigenvalue of the
matrix *as stored* lies in $[\theta_i - b_i, \theta_i + b_i]$.

**Methods** (``method="auto"`` picks by size, see :data:`DENSE_MAX`):

- ``"dense"``: LAPACK ``syevr`` on the wanted index range (``scipy.linalg.eigh(subset_by_index=...)``).
- ``"shift-invert"`` (smallest of a positive definite $A$): one Cholesky factor $A=LL^\top$, then
  Lanczos (ARPACK) on $A^{-1}$, whose largest eigenvalues $1/\lambda_i$ converge in a few
  iterations; two triangular solves per step.
- ``"lanczos"``: ARPACK Lanczos on $x\mapsto Ax$ (the matrix in memory, or read block by block
  from a Zarr array too large for memory).

**Error bounds.** For each Ritz pair $(\theta_i, x_i)$:

1. *Residual.* For any real $\theta$ and $x\ne0$ some eigenvalue of the symmetric $A$ lies within
   $\|Ax-\theta x\|_2/\|x\|_2$ of $\theta$.  The residual is computed in floating point; its
   rounding error is bounded by $\gamma_{N+2}\|A\|_F\|x\|_2$ ($\gamma_m = mu/(1-mu)$,
   $u=2^{-53}$), which is added: $b_i = (\hat r_i + \gamma_{N+2}\|A\|_F\|x_i\| + 2u|\theta_i|\|x_i\|)/\|x_i\|$.
2. *Attribution to the $i$-th eigenvalue* (``verify=True``, matrices in memory).  The Ritz
   values are Rayleigh quotients of (numerically) orthonormal vectors, so by Courant–Fischer
   $\lambda_i\le\theta_i$ up to the rounding already in $b_i$.  The other side is an inertia
   check of $A-sI$, $s=\theta_i-b_i$: for $i=1$ a floating-point Cholesky of
   $A-(s+c)I$ with Rump's shift $c=\frac{\gamma_{N+1}}{1-2\gamma_{N+1}}\operatorname{tr}(A-sI)$ (plus the rounding of the shifted diagonal)
   (S. M. Rump, *Verification of positive definiteness*, BIT 46, 2006): if it completes, $A-sI$ is
   positive definite, so $\lambda_1 > s$ rigorously.  ($b_1$ is first raised to at least $2c$, so
   that the test can pass.)  For $i\ge2$ the number of negative pivots of a Bunch–Kaufman
   $LDL^\top$ of $A-sI$ (Sylvester's law of inertia) must be at most $i-1$; this count is
   backward stable but not interval-verified.  ``which="largest"`` applies the same to $-A$.
   A check that fails makes that bound ``inf`` (with a :class:`~kernelcalc.KernelcalcAccuracyWarning`).
   Without a check (``verify=False``, or Lanczos on an out-of-core Zarr array) the bound is
   the residual bound of step 1 and ``attributed`` is ``False``: some eigenvalue lies within it.

The bounds are for the matrix as stored (its floating-point entries), not for the exact kernel;
add ``Kernel.info["error_estimate"]`` times $N$ (Weyl) for the latter.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Mapping

import numpy as np

from .._x64 import float64
from .._validation import KernelcalcInputError, accuracy_shortfall, positive_int
from .._results import JsonResult, on_disk, read_only

__all__ = ["Spectrum", "spectrum", "DENSE_MAX"]

#: Largest N for which ``method="auto"`` uses dense LAPACK.  Measured side by side (exp kernel Gram,
#: 2-core machine under load): dense syevr subset + check 7.5 s vs shift-invert + check 0.41 s at
#: N = 1000, 15.9 s vs 4.9 s at 2000, 25.4 s vs 6.5 s at 3000; eigvalsh alone 0.91 / 13.1 / 23.4 s.
DENSE_MAX = 256
_U = 2.0 ** -53
_SINGLE_THREAD_FROM = 4096
_BLOCK = 2048


def _gamma(m: int) -> float:
    return m * _U / (1 - m * _U)


@dataclasses.dataclass(frozen=True)
class Spectrum(JsonResult):
    r"""Result of :func:`spectrum`.

    **Fields:** ``values`` (length ``k``, ascending for ``"smallest"``, descending for
    ``"largest"``); ``error_bound`` (length ``k``): the ``i``-th smallest (largest) eigenvalue of the
    stored matrix lies within ``error_bound[i]`` of ``values[i]``; ``attributed`` (length ``k``):
    whether the inertia check tied the bound to that index (else: *some* eigenvalue lies within it);
    ``which``, ``k``, ``n``, ``method``; ``info``: residuals, rounding term, shifts, iterations, seconds.
    """

    values: np.ndarray
    error_bound: np.ndarray
    attributed: tuple
    which: str
    k: int
    n: int
    method: str
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("values", "error_bound"):
            object.__setattr__(self, name, read_only(getattr(self, name)))
        object.__setattr__(self, "attributed", tuple(bool(a) for a in self.attributed))
        object.__setattr__(self, "info", dict(self.info))


# ---------------------------------------------------------------------------- the matrix
def _resolve_matrix(A, kernel_args):
    """(matrix: ndarray or zarr array, source description)."""
    if kernel_args:
        from .. import kernels

        args = dict(kernel_args)
        model = args.pop("model", "node")
        if "outputs" in args:
            raise KernelcalcInputError("spectrum computes the NTK Gram itself: do not pass outputs=")
        fn = kernels.kernel_function(model, args, where="spectrum")
        K = fn(A, outputs=("ntk",), **args)
        return K.ntk, f"{model} NTK Gram of the data"
    from ..kernels import Kernel

    if isinstance(A, Kernel):
        if A.ntk is None:
            raise KernelcalcInputError("the Kernel has no NTK Gram (it was computed with outputs=('nngp',))")
        return A.ntk, "Kernel.ntk"
    if hasattr(A, "keys") and hasattr(A, "attrs") and not hasattr(A, "shape"):   # a zarr group
        if "ntk" not in A:
            raise KernelcalcInputError(f"the Zarr group has no 'ntk' array (members: {sorted(A.keys())})")
        return A["ntk"], "Zarr group 'ntk'"
    if on_disk(A):
        return A, "Zarr array"
    try:
        M = np.asarray(A, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise KernelcalcInputError(f"A must be a real matrix, got {type(A).__name__}: {err}") from None
    return M, "matrix"


def _check_square(A) -> int:
    shape = tuple(A.shape)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise KernelcalcInputError(
            f"A must be a non-empty square matrix, got shape {shape}; for data X pass kernel arguments, "
            "e.g. spectrum(X, model='node', activation='softplus', T=1)")
    return shape[0]


def _blocks(n):
    return [slice(s, min(s + _BLOCK, n)) for s in range(0, n, _BLOCK)]


def _norms_and_asymmetry(A, n):
    r"""($\|A\|_F$, $\max|A_{ij}|$, $\max|A_{ij}-A_{ji}|$, trace), block by block (no $N\times N$ temporary)."""
    fro2, amax, asym, tr = 0.0, 0.0, 0.0, 0.0
    for I in _blocks(n):
        for J in _blocks(n):
            if J.start < I.start:
                continue
            a = np.asarray(A[I, J], dtype=np.float64)
            if not np.isfinite(np.maximum(a.max(), -a.min())):
                raise KernelcalcInputError("A contains NaN or inf")
            w = 1.0 if I == J else 2.0
            fro2 += w * float(np.vdot(a, a))
            amax = max(amax, float(np.maximum(a.max(), -a.min())))
            if I == J:
                tr += float(np.trace(a))
                asym = max(asym, float(np.max(np.abs(a - a.T))))
            else:
                asym = max(asym, float(np.max(np.abs(a - np.asarray(A[J, I], dtype=np.float64).T))))
    return math.sqrt(fro2), amax, asym, tr


def _matvec(A, n):
    if isinstance(A, np.ndarray):
        return lambda x: A @ x
    rows = _blocks(n)

    def mv(x):
        x = np.asarray(x, dtype=np.float64)
        out = np.empty((n,) + x.shape[1:])
        for I in rows:
            out[I] = np.asarray(A[I, :], dtype=np.float64) @ x
        return out

    return mv


# ---------------------------------------------------------------------------- eigen solvers
def _dense(A, n, k, sign):
    import scipy.linalg

    M = A if sign > 0 else -A
    vals, vecs = scipy.linalg.eigh(M, subset_by_index=[0, k - 1], driver="evr", check_finite=False)
    return sign * vals, vecs, {}


def _shift_invert(A, n, k, sign, buf):
    import scipy.linalg
    import scipy.sparse.linalg as sla

    np.copyto(buf, A)
    if sign < 0:
        np.negative(buf, out=buf)
    try:
        L, _ = scipy.linalg.cho_factor(buf, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    solve = lambda x: scipy.linalg.cho_solve((L, True), x, check_finite=False)  # noqa: E731
    op = sla.LinearOperator((n, n), matvec=solve, dtype=np.float64)
    ncv = min(n, max(2 * k + 1, 20))
    mu, vecs = sla.eigsh(op, k=k, which="LA", ncv=ncv, tol=1e-14)
    order = np.argsort(-mu)
    return sign / mu[order], vecs[:, order], dict(lanczos_ncv=ncv)


def _lanczos(A, n, k, sign):
    import scipy.sparse.linalg as sla

    mv = _matvec(A, n)
    op = sla.LinearOperator((n, n), matvec=lambda x: sign * mv(x), matmat=lambda X: sign * mv(X), dtype=np.float64)
    ncv = min(n, max(2 * k + 1, 30))
    try:
        vals, vecs = sla.eigsh(op, k=k, which="SA", ncv=ncv, tol=1e-12, maxiter=max(1000, 20 * n))
    except sla.ArpackNoConvergence as err:
        if err.eigenvalues.size < k:
            return None
        vals, vecs = err.eigenvalues[:k], err.eigenvectors[:, :k]
    order = np.argsort(vals)
    return sign * vals[order], vecs[:, order], dict(lanczos_ncv=ncv)


def _chol_ok(M_minus_shift_buf) -> bool:
    import scipy.linalg

    try:
        scipy.linalg.cholesky(M_minus_shift_buf, lower=True, overwrite_a=True, check_finite=False)
        return True
    except np.linalg.LinAlgError:
        return False


def _negative_pivots(buf) -> int:
    import scipy.linalg

    _, D, _ = scipy.linalg.ldl(buf, lower=True, overwrite_a=True, check_finite=False)
    return _block_negatives(D)


def _block_negatives(D) -> int:
    """Negative eigenvalues of the block-diagonal (1x1 / 2x2) factor of a Bunch-Kaufman LDL^T."""
    n, count, i = D.shape[0], 0, 0
    while i < n:
        if i + 1 < n and D[i + 1, i] != 0.0:
            count += int(np.sum(np.linalg.eigvalsh(D[i:i + 2, i:i + 2]) < 0))
            i += 2
        else:
            count += int(D[i, i] < 0)
            i += 1
    return count


def _lapack_threads(n):
    """Single-threaded scipy BLAS/LAPACK for large factorizations: the threaded OpenBLAS dpotrf of
    scipy's bundled library segfaulted at N = 20 000 here (cf. OpenBLAS#1413, scipy#17436)."""
    import contextlib

    if n <= _SINGLE_THREAD_FROM:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ---------------------------------------------------------------------------- front door
@float64
def spectrum(A, k: int = 1, which: str = "smallest", *, method: str = "auto", verify: bool = True,
             strict: bool = False, **kernel_args) -> Spectrum:
    r"""The ``k`` smallest or largest eigenvalues of a symmetric matrix, with rigorous error bounds.

    **Arguments:**

    - ``A``: a symmetric matrix (numpy array), a Zarr array, a Zarr group (its ``ntk`` array), a
      :class:`~kernelcalc.Kernel` (its ``ntk``), or data $X$ (N, d) together with kernel arguments:
      ``model`` (``"node"`` default, ``"resnet"``, ``"mlp"``, ``"deq"``; the untied networks with
      ``weights="untied"``) and that kernel's keywords, e.g.
      ``spectrum(X, model="node", activation="softplus", T=1.0)`` (the NTK Gram is computed with
      ``outputs=("ntk",)``; add ``out="gram.zarr"`` to keep it on disk, ``client=`` for dask).
    - ``k``: how many, $1\le k\le N$; ``which``: ``"smallest"`` or ``"largest"``.
    - ``method``: ``"auto"``, ``"dense"``, ``"shift-invert"`` (smallest only), ``"lanczos"``.
    - ``verify``: run the inertia checks that tie each bound to its index (module doc).
    - ``strict``: a failed check raises :class:`~kernelcalc.KernelcalcAccuracyError` instead of warning.

    **Returns:** :class:`Spectrum` with ``values`` and ``error_bound`` (arrays of length ``k``).
    """
    t0 = time.perf_counter()
    if which not in ("smallest", "largest"):
        raise KernelcalcInputError(f"which must be 'smallest' or 'largest', got {which!r}")
    if method not in ("auto", "dense", "shift-invert", "lanczos"):
        raise KernelcalcInputError(f"method must be 'auto', 'dense', 'shift-invert' or 'lanczos', got {method!r}")
    if method == "shift-invert" and which != "smallest":
        raise KernelcalcInputError("method='shift-invert' computes the smallest eigenvalues; use which='smallest'")
    A, source = _resolve_matrix(A, kernel_args)
    n = _check_square(A)
    k = positive_int("k", k)
    if k > n:
        raise KernelcalcInputError(f"k must be between 1 and N = {n}, got k = {k}")
    fro, amax, asym, trace = _norms_and_asymmetry(A, n)
    if asym > 1e-12 * max(amax, 1e-300):
        raise KernelcalcInputError(f"A is not symmetric: max |A_ij - A_ji| = {asym:.3e} (max |A_ij| = {amax:.3e})")

    from ..kernels._tiles import available_memory

    fits = 8.0 * n * n * (1 if isinstance(A, np.ndarray) else 2) <= 0.45 * available_memory()
    if not isinstance(A, np.ndarray) and fits:
        A = np.asarray(A[...], dtype=np.float64)
    in_memory = isinstance(A, np.ndarray)
    if method == "auto":
        if not in_memory:
            method = "lanczos"
        elif n <= DENSE_MAX:
            method = "dense"
        else:
            method = "shift-invert" if which == "smallest" else "lanczos"
    if method in ("dense", "shift-invert") and not in_memory:
        raise KernelcalcInputError(f"method={method!r} needs the {n}x{n} matrix in memory; use method='lanczos'")
    if method == "lanczos" and k >= n - 1:
        method = "dense" if in_memory else method
    sign = 1.0 if which == "smallest" else -1.0
    info: dict = dict(source=source, frobenius_norm=fro, asymmetry=asym)
    buf = np.empty((n, n), order="F") if in_memory and (method == "shift-invert" or verify) else None  # LAPACK order: factored in place

    with _lapack_threads(n):
        if method == "shift-invert":
            got = _shift_invert(A, n, k, sign, buf)
            if got is None:
                info["shift_invert"] = "Cholesky failed (A not numerically positive definite): dense fallback"
                method = "dense"
        if method == "lanczos":
            got = _lanczos(A, n, k, sign)
            if got is None and not in_memory:
                raise KernelcalcInputError(
                    f"Lanczos did not converge to the {k} {which} eigenvalues of the out-of-core {n}x{n} matrix; "
                    "load it into memory (method='shift-invert') on a machine with more memory")
            if got is None:
                info["lanczos"] = "no convergence: dense fallback"
                method = "dense"
        if method == "dense":
            got = _dense(A, n, k, sign)
        vals, X, extra = got
        info.update(extra)

        # --- residual bounds (step 1 of the module doc)
        mv = _matvec(A, n)
        AX = mv(X)
        xnorm = np.linalg.norm(X, axis=0)
        theta = np.einsum("ij,ij->j", X, AX) / xnorm**2                          # Rayleigh quotients
        res = np.linalg.norm(AX - X * theta[None, :], axis=0)
        rounding = _gamma(n + 2) * fro * xnorm + 2 * _U * np.abs(theta) * xnorm
        bound = (res + rounding) / xnorm * (1 + 4 * _U)
        info.update(residuals=(res / xnorm).tolist(), rounding=(rounding / xnorm).tolist())
        order = np.argsort(sign * theta)
        theta, bound = theta[order], bound[order]

        # --- attribution (step 2)
        attributed = [False] * k
        if verify and in_memory:
            shifts = []
            alpha = _gamma(n + 1) / (1 - 2 * _gamma(n + 1))

            def rump_shift(s):
                """Rump's shift for A - sI, plus the rounding of forming the shifted diagonal."""
                return alpha * abs(sign * trace - n * s) + 4 * _U * (amax + abs(s)) + 1e-300

            for i in range(k):
                b = max(bound[i], 2.0 * rump_shift(sign * theta[i] - bound[i]))
                s = sign * theta[i] - b                                               # in the sign*A frame
                np.copyto(buf, A)
                if sign < 0:
                    np.negative(buf, out=buf)
                if i == 0:
                    buf[np.diag_indices(n)] -= s + rump_shift(s)
                    ok = _chol_ok(buf)
                else:
                    buf[np.diag_indices(n)] -= s
                    ok = _negative_pivots(buf) <= i
                shifts.append(sign * s)
                if ok:
                    bound[i], attributed[i] = b, True
                else:
                    bound[i] = math.inf
                    accuracy_shortfall(
                        f"spectrum: the inertia check at {sign * s:.6e} failed for the {i + 1}-th {which} "
                        "eigenvalue (an eigenvalue may have been missed); its error bound is inf", strict)
            info["verification_shifts"] = shifts
            info["verification"] = "Rump-shifted Cholesky (i=1), Bunch-Kaufman LDL^T inertia (i>1)"
    del buf
    info["seconds"] = time.perf_counter() - t0
    return Spectrum(values=theta, error_bound=bound, attributed=tuple(attributed), which=which, k=k, n=n,
                    method=method, info=info)
