r"""Functions of the train Gram in its eigenbasis: the dense engine of the predictions.

The train Gram $A$ (the NTK $\Theta$ for ``kernel="ntk"``, the NNGP $K$ for ``"nngp"``) plus
``diag_reg`` is symmetrised and decomposed once, $A=V\Lambda V^\top$ (LAPACK ``syevd``/``syevr`` in
float64); every time and every test batch then costs matrix products only.  The training
dynamics enter through one scalar function per time,

$$\varphi_t(\lambda)=\frac{1-r_t(\lambda)}{\lambda},\qquad
r_t(\lambda)=\begin{cases}e^{-\lambda t}&\text{gradient flow}\\(1-\eta\lambda)^t&\text{gradient descent, step }\eta,\ t\text{ steps}\end{cases}$$

evaluated without cancellation (``expm1``, ``log1p``) and with its limit $\varphi_t(0)=t$ (resp.
$\eta t$) at a zero eigenvalue, so a singular Gram never gives 0/0.  At $t=\infty$,
$\varphi_\infty(\lambda)=1/\lambda$ on the eigenvalues above the working-precision floor
$\tau=N\varepsilon\lambda_\max$ and $0$ below it (the pseudo-inverse; a
:class:`~kernelcalc.KernelcalcAccuracyWarning` says so): the symmetric-indefinite-safe solve.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from tqdm.auto import tqdm

from .._validation import KernelcalcAccuracyWarning, KernelcalcInputError, progress_disable, warn

__all__ = ["Eigensystem", "phi", "EPS", "batches", "lapack_scope", "lapack_threads", "SINGLE_THREAD_ABOVE"]

EPS = float(np.finfo(np.float64).eps)

#: Above this size the LAPACK factorisations run with one OpenBLAS thread (scoped by threadpoolctl):
#: measured on the 2-core machine, a multi-threaded ``potrf`` of a 20000 x 20000 Gram in a process that
#: has run a jax kernel computation segfaults or corrupts the heap (scipy's and numpy's OpenBLAS alike);
#: single-threaded it completes (62 s).  Up to N = 8000 no failure was seen.
SINGLE_THREAD_ABOVE = 8000


def lapack_threads(n: int) -> int | None:
    """BLAS threads for one large LAPACK call: 1 above :data:`SINGLE_THREAD_ABOVE`; otherwise one per core that
    is free now (:func:`_other_runnable`), at least 1; ``None``: no limit (fewer than 2 cores, or no load
    figures on this system).

    Measured on the 2-core machine at load average 9: a 2000 x 2000 ``eigh`` took 41.6 s with two OpenBLAS
    threads and 8.6 s with one (``syevd``; ``syevr`` 45.8 s / 9.2 s): the tridiagonal reduction synchronises its
    threads at each of its $N$ steps, and a thread whose core another process holds stalls all of them.  The
    $N\times N\times M$ products were indifferent (20 GFlop/s either way)."""
    if n > SINGLE_THREAD_ABOVE:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if cores < 2:
        return None
    others = _other_runnable()
    if others is None:
        return None
    return max(1, min(cores, int(cores - others)))


def _other_runnable() -> float | None:
    """Threads of other work runnable now: ``/proc/loadavg``'s running count less this thread (an instant,
    unlike the 1-minute average, which would count this process's own just-finished multi-threaded kernel
    computation); else the 1-minute load average less one."""
    try:
        with open("/proc/loadavg") as fh:
            return max(0.0, float(fh.read().split()[3].split("/")[0]) - 1.0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):
        return None


def lapack_scope(n: int):
    """The context of one large LAPACK call: :func:`lapack_threads` BLAS threads (threadpoolctl scope)."""
    import contextlib

    threads = lapack_threads(n)
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:              # pragma: no cover - threadpoolctl ships with scikit-learn / scipy stacks
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def _residual_factor(lam, t, lr):
    """$1-r_t(\\lambda)$ for eigenvalues ``lam`` (already clipped at 0) and one finite time ``t``."""
    if lr is None:
        return -np.expm1(-lam * t)
    x = lr * lam
    out = np.empty_like(lam)
    small = x < 1.0
    out[small] = -np.expm1(t * np.log1p(-x[small]))
    r = 1.0 - x[~small]
    out[~small] = 1.0 - np.sign(r) ** (t % 2) * np.abs(r) ** t if t == int(t) else 1.0 - r ** t
    return out


def phi(lam: np.ndarray, t: float, lr: float | None, floor: float) -> np.ndarray:
    r"""$\varphi_t(\lambda)$ (module docstring) for eigenvalues ``lam``; ``floor``: $\tau$, the eigenvalues
    treated as zero (clipped to 0 at finite $t$, dropped at $t=\infty$)."""
    lam = np.asarray(lam, dtype=np.float64)
    if math.isinf(t):
        out = np.zeros_like(lam)
        keep = lam > floor
        out[keep] = 1.0 / lam[keep]
        return out
    lc = np.maximum(lam, 0.0)
    zero = lc == 0.0
    out = np.empty_like(lc)
    out[zero] = t if lr is None else lr * t
    out[~zero] = _residual_factor(lc[~zero], t, lr) / lc[~zero]
    return out


class Eigensystem:
    r"""The eigen-decomposition of one train Gram, reused for every time and test batch.

    **Arguments:** ``A``: the train Gram (N, N) (any array that ``np.asarray`` reads; only its
    symmetric part is used); ``diag_reg`` $\ge0$: added to the diagonal (absolute units);
    ``driver``: LAPACK driver of :func:`scipy.linalg.eigh` (``None``: ``"evd"`` up to N = 8000,
    ``"evr"`` above, which needs no $2N^2$ workspace); ``consume``: ``A`` is a float64 array that owns its
    memory and that the caller gives up (:func:`~kernelcalc.predict` with the Gram it computed itself): the
    decomposition overwrites it instead of copying it, which saves one $N\times N$ array ($3.2$ GB at
    $N=20\,000$).
    """

    def __init__(self, A, diag_reg: float = 0.0, driver: str | None = None, consume: bool = False):
        import scipy.linalg

        t0, c0 = time.perf_counter(), time.process_time()
        if consume and isinstance(A, np.ndarray) and A.dtype == np.float64 and A.ndim == 2 and A.base is None \
                and (A.flags.c_contiguous or A.flags.f_contiguous):
            A.setflags(write=True)
            W = A if A.flags.f_contiguous else A.T          # the transpose of a C-ordered array is Fortran-ordered
        else:
            W = np.array(A, dtype=np.float64, copy=True, order="F")
        n = W.shape[0]
        asym = float(np.max(np.abs(W - W.T))) if n <= 4096 else float(
            max(np.max(np.abs(W[i:i + 1024] - W[:, i:i + 1024].T)) for i in range(0, n, 1024)))
        for i in range(0, n, 1024):          # symmetrise in blocks (no second N x N temporary)
            blk = 0.5 * (W[i:i + 1024, i:] + W[i:, i:i + 1024].T)
            W[i:i + 1024, i:] = blk
            W[i:, i:i + 1024] = blk.T
        W[np.diag_indices(n)] += diag_reg
        self.driver = driver or ("evd" if n <= 8000 else "evr")
        self.threads = lapack_threads(n)
        with lapack_scope(n):
            self.lam, self.V = scipy.linalg.eigh(W, overwrite_a=True, check_finite=False, driver=self.driver)
        del W
        self.n = n
        self.lam_max = float(max(abs(self.lam[-1]), abs(self.lam[0]), np.finfo(float).tiny))
        self.floor = n * EPS * self.lam_max          # eigenvalues below: zero to working precision
        self.n_dropped = int(np.sum(self.lam <= self.floor))
        self.lam_min = float(self.lam[0])
        self.asymmetry = asym
        self.seconds = time.perf_counter() - t0
        self.cpu_seconds = time.process_time() - c0

    @property
    def condition_number(self) -> float:
        return self.lam_max / self.lam_min if self.lam_min > 0 else math.inf

    @property
    def kept_min(self) -> float:
        """The smallest eigenvalue above the floor (what $t=\\infty$ divides by)."""
        kept = self.lam[self.lam > self.floor]
        return float(kept[0]) if kept.size else math.inf

    def info(self) -> dict:
        return {"solver": f"eigh (LAPACK sy{self.driver}, float64)", "lambda_min": self.lam_min,
                "lambda_max": float(self.lam[-1]), "condition_number": self.condition_number,
                "singular_floor": self.floor, "eigenvalues_below_floor": self.n_dropped,
                "gram_asymmetry": self.asymmetry, "eigh_seconds": self.seconds,
                "eigh_cpu_seconds": self.cpu_seconds,
                "lapack_threads": self.threads}

    def warn_singular(self, times, what: str = "train Gram") -> None:
        if self.n_dropped:
            at_inf = any(math.isinf(t) for t in times)
            warn(f"the {what} is singular to working precision: {self.n_dropped} eigenvalue(s) <= "
                 f"N*eps*lambda_max = {self.floor:.3g} (lambda_min = {self.lam_min:.3g}, lambda_max = "
                 f"{self.lam_max:.3g}); "
                 + ("at t = inf their directions are dropped (pseudo-inverse), at finite t they are "
                    "treated as exact zeros" if at_inf else "they are treated as exact zeros")
                 + "; pass diag_reg > 0 to regularise", KernelcalcAccuracyWarning)

    def phis(self, times, lr) -> np.ndarray:
        """$\\varphi_t(\\lambda_i)$, shape (len(times), N)."""
        return np.stack([phi(self.lam, t, lr, self.floor) for t in times])

    def perturbation(self, kernel_error: float = 0.0) -> float:
        """Spectral-norm size of the error of the decomposed Gram: the solver's backward error
        ($\\sim N\\varepsilon\\lambda_\\max$) plus ``N * kernel_error`` (entrywise kernel error)."""
        return self.floor + self.n * max(kernel_error, 0.0)

    def check_lr(self, times, lr) -> None:
        """Discrete GD with $\\eta\\lambda_\\max\\ge2$ diverges."""
        if lr is None:
            return
        rate = lr * float(self.lam[-1])
        if rate >= 2.0:
            msg = (f"learning_rate = {lr:.6g} >= 2/lambda_max = {2.0 / float(self.lam[-1]):.6g}: discrete "
                   "gradient descent diverges")
            if any(math.isinf(t) for t in times):
                raise KernelcalcInputError(msg + " (no t = inf limit)")
            warn(msg + "; the predictions follow the diverging linearised iteration", KernelcalcAccuracyWarning)

    # ------------------------------------------------------------------ predictions
    def train_mean(self, y: np.ndarray, phis: np.ndarray) -> np.ndarray:
        """$(I-r_t(A))y = V\\,\\mathrm{diag}(\\lambda\\varphi_t)V^\\top y$ with the *unregularised*
        convention of neural-tangents (``diag_reg`` enters through $\\lambda$); shape (T, N, k)."""
        c = self.V.T @ y                                   # (N, k)
        lam = np.maximum(self.lam, 0.0)
        return np.stack([self.V @ ((lam * p)[:, None] * c) for p in phis])


def batches(m: int, size: int, progress, desc):
    """Start rows of the test batches (a progress bar when there is more than one batch)."""
    starts = range(0, m, size)
    return tqdm(starts, desc=desc, disable=progress_disable(progress) if m > size else True, leave=False)
