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

**The engine of the predictions** (:class:`_Dense`, per test batch; the conventions and formulas are those of
:mod:`kernelcalc.inference.engine`).  The mean is $E[f_t(x)]=\Theta_{xX}\varphi_t(A)y$ with $\varphi_t(A)y$ formed
once per time.  Its error from an error $E$ of $A$ ($\lVert E\rVert\le\delta$) is to first order, at $t=\infty$,
$-(A^{-1}\theta_x)^\top E\,A^{-1}y$, bounded by $\delta\,\lVert\varphi_t(A)\theta_x\rVert\,\lVert\varphi_t(A)y\rVert$ (the
bound used at every $t$), plus the Grams' entrywise error and rounding.  The NNGP posterior
variance is $k_{xx}-B^\top\psi_t B$, $B=V^\top k_{Xx}$, $\psi_t=2\varphi_t-\lambda\varphi_t^2$; the NTK-GP variance
$k_{xx}+P^\top KP-2P^\top k_{Xx}$ with $P=\varphi_t(A)\theta_x$, whose first-order error is
$2\,(\varphi_t(A)(KP-k_x))^\top EP$ (exact at $t=\infty$), bounded through :data:`EXACT_COV_BOUND_MAX`.

**At data-set scale (the NTK-GP variances).**  With $U=2N^2M$ flops (one $N\times N$ by $N\times M$ product,
$M$ test points, $T$ times) the eigenbasis costs the decomposition plus $(1+2T)\,U$:
$B=V^\top\Theta_{Xx}$ once, then per time $X_t=V(\varphi_t\odot B)$ and $KX_t$, the variance being
$k_{xx}+\mathrm{colsum}(X_t\odot KX_t)-2\,\mathrm{colsum}(X_t\odot K_{Xx})$ in the original basis (the
eigenbasis form $V^\top K V$ pays only when $2N+M<(T-1)M$).  No method found here does the finite-$t$ variances
to $10^{-10}$ without the decomposition: shared real poles (one Cholesky factorisation each) or one repeated
pole (shift-and-invert Krylov) reach only $10^{-4}$ with 32 poles, resp. $8\times10^{-2}$ at degree 32, for
$\varphi_t$ over a condition number of $2\times10^6$ and $t=10^{-3}\ldots10^{3}$
(``benchmarks/bench_predict.py --real-poles``), while $N=20\,000$, $M=2000$, $T=8$ is $17U=2.7\times10^{13}$
flops besides the decomposition.
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


# ---------------------------------------------------------------------------------- the dense engine
#: Up to this many training points the NTK-GP variance's error estimate uses $\lVert\varphi_t(A)(KP-k_x)\rVert$
#: exactly (one more $N\times N\times M$ product per time); above it the bound $\max\varphi_t\,\lVert KP-k_x\rVert$
#: (an upper bound of the same first-order term: looser, never smaller), which saves a third of the per-time work.
EXACT_COV_BOUND_MAX = 4000


class _Dense:
    """The eigenbasis computation shared by every batch (the engine of the module docstring)."""

    def __init__(self, es: Eigensystem, y, times, lr, kernel, nngp_train, kernel_error):
        self.es, self.times, self.lr, self.kernel = es, times, lr, kernel
        self.phis = es.phis(times, lr)                                 # (T, N)
        lam = np.maximum(es.lam, 0.0)
        self.psis = 2.0 * self.phis - lam * self.phis**2               # nngp: K^{-1}(I - r_t^2)
        self.c = es.V.T @ y                                            # (N, k)
        self.Z = np.stack([es.V @ (p[:, None] * self.c) for p in self.phis])   # phi_t(A) y, (T, N, k)
        self.nngp_train = nngp_train
        self.Kt = None                                                  # V^T K V, on demand
        self.kernel_error = kernel_error
        self.delta = es.perturbation(kernel_error)
        self.ynorm = float(np.linalg.norm(y, axis=0).max())
        self.znorm = np.linalg.norm(self.Z, axis=1).max(axis=1)
        self.z1 = np.abs(self.Z).sum(axis=1).max(axis=1)
        self.err_mean = np.zeros(len(times))
        self.err_cov = np.zeros(len(times))

    def want_Kt(self, n_test: int) -> None:
        r"""Rotate the NNGP into the eigenbasis once ($G=V^\top KV$, $4N^3$ flops) when that is cheaper than the
        per-time products: with $G$ each time costs one $N\times N\times M$ product, without it two
        ($\varphi_t(A)\theta_x=V(\varphi_t\odot V^\top\theta_x)$, then $K$ times it), so $G$ pays when
        $2N+M<(T-1)M$ ($T$ times, $M$ test points)."""
        n, m, nt = self.es.n, n_test, len(self.times)
        if self.nngp_train is not None and self.Kt is None and 2 * n + m < (nt - 1) * m:
            self.Kt = self.es.V.T @ (self.nngp_train @ self.es.V)

    def batch(self, Ktb, cov, nngp_tb=None, tt=None, tick=None):
        """Mean (T, b, k) and covariance (T, b) / (T, b, b) of one test batch (``tick()`` after each time)."""
        es = self.es
        tick = tick or (lambda: None)
        mean = np.einsum("bn,tnk->tbk", Ktb, self.Z, optimize=True)
        B = es.V.T @ Ktb.T                                            # (N, b): the test rows in the eigenbasis
        # first order in the error E of A (||E|| <= delta): d mean = theta_x^T D phi_t(A)[E] y, which at t = inf is
        # -(A^{-1} theta_x)^T E (A^{-1} y): |.| <= delta ||phi_t(A) theta_x|| ||phi_t(A) y|| (used at every t)
        pn = np.array([np.linalg.norm(p[:, None] * B, axis=0).max() for p in self.phis])
        self.err_mean = np.maximum(self.err_mean, self.delta * pn * self.znorm + self.kernel_error * self.z1
                                   + 8 * EPS * np.abs(mean).max(axis=(1, 2)))
        if cov is None:
            return mean, None
        full = cov == "full"
        out = []
        if self.kernel == "nngp":
            for psi in self.psis:
                if full:
                    out.append(tt - B.T @ (psi[:, None] * B))
                else:
                    out.append(tt - np.einsum("nb,n,nb->b", B, psi, B, optimize=True))
                tick()
            pn = np.array([np.linalg.norm(p[:, None] * B, axis=0).max() for p in self.phis])
            # ||psi_t(A) k_x||_1 <= sqrt(N) ||psi_t(A) k_x||_2 (no extra product with V)
            p1 = np.sqrt(es.n) * np.array([np.linalg.norm(p[:, None] * B, axis=0).max() for p in self.psis])
            self.err_cov = np.maximum(self.err_cov, 2 * self.delta * pn**2 + self.kernel_error * (1 + 2 * p1))
        else:
            # P = phi_t(A) theta_x and C = k_x in the eigenbasis (with G = V^T K V: one product per time), or in the
            # original basis (P = V (phi_t . V^T theta_x), then K P: two products per time)
            eig = self.Kt is not None
            C = es.V.T @ nngp_tb.T if eig else nngp_tb.T                  # (N, b)
            errs = []
            for p in self.phis:
                P = p[:, None] * B
                if eig:
                    KP = self.Kt @ P
                else:
                    P = es.V @ P
                    KP = self.nngp_train @ P
                if full:
                    cross = P.T @ C
                    c = tt + P.T @ KP - cross - cross.T
                else:
                    c = tt + np.einsum("nb,nb->b", P, KP) - 2.0 * np.einsum("nb,nb->b", P, C)
                out.append(c)
                tick()
                # first order in E: d var = 2 (phi_t(A)(K P - k_x))^T E P, exact at t = inf (P = A^{-1} theta_x)
                if eig:
                    W = p[:, None] * (KP - C)
                elif es.n <= EXACT_COV_BOUND_MAX:           # ||phi_t(A)(K P - k_x)|| exactly: one more product
                    W = p[:, None] * (es.V.T @ (KP - C))
                else:                                       # <= max phi_t ||K P - k_x||: no third product
                    W = float(np.max(p)) * (KP - C)
                errs.append(self._cov_error(W, P))
            self.err_cov = np.maximum(self.err_cov, np.array(errs))
        cov_b = np.stack(out)
        if full:
            cov_b = 0.5 * (cov_b + np.swapaxes(cov_b, 1, 2))
        return mean, cov_b

    def _cov_error(self, W, P) -> float:
        """First-order error of the NTK-GP variances from ``W`` $\approx\varphi_t(A)(KP-k_x)$ (or a column-wise
        upper bound of its norms) and ``P`` $=\varphi_t(A)\theta_x$, plus the Grams' entrywise error."""
        pw = float((np.linalg.norm(W, axis=0) * np.linalg.norm(P, axis=0)).max())
        p1 = math.sqrt(self.es.n) * float(np.linalg.norm(P, axis=0).max())      # >= ||phi_t(A) theta_x||_1
        return 2 * self.delta * pw + self.kernel_error * (1 + p1) ** 2
