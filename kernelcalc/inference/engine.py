r"""Predictions from kernel matrices: :func:`predict_from_kernels` (any Grams, a user's own included).

**Conventions.**  The loss is $L=\tfrac12\lVert f(X)-y\rVert^2$, summed over the $N$ training points
and the $k$ outputs (no normalisation); gradient flow $\dot\theta=-\nabla_\theta L$ of the
linearised infinite-width network moves the outputs by $\dot f=-\Theta(f-y)$ (each output column
independently, $\Theta\otimes I_k$).  With $f_0\sim\mathcal{GP}(0,K)$ (NNGP $K$, NTK $\Theta$),
$A=\Theta+\text{diag\_reg}\,I$ on the training set and $\varphi_t(A)=A^{-1}(I-e^{-tA})$,

$$E[f_t(x)]=\Theta_{x X}\varphi_t(A)\,y,\qquad
\mathrm{Cov}[f_t(x),f_t(x')]=K_{xx'}+\Theta_{xX}\varphi_tK_{XX}\varphi_t\Theta_{Xx'}
-\Theta_{xX}\varphi_tK_{Xx'}-K_{xX}\varphi_t\Theta_{Xx'}$$

(Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under gradient
descent", eqs. 15-16: the NTK-GP of neural-tangents' ``gradient_descent_mse_ensemble``), and on the
training set $E[f_t(X)]=(I-e^{-tA})y$.  ``kernel="nngp"`` replaces $\Theta$ by $K$ (training the
readout only; at $t=\infty$ the exact Bayesian posterior $K_{xx'}-K_{xX}A^{-1}K_{Xx'}$).

**Time.**  neural-tangents normalises its loss by the number of targets, $\tfrac12\,\mathrm{mean}$,
and measures time in units of its ``learning_rate``: its time $t_\mathrm{nt}$ is ours
$t=\eta_\mathrm{nt}\,t_\mathrm{nt}/(N k)$ (``N k = y_train.size``).

**Discrete gradient descent** (``learning_rate`` $=\eta$): $f_{s+1}-y=(I-\eta A)(f_s-y)$ exactly, so
$t$ counts steps (non-negative integers or ``inf``) and $\varphi_t(A)=A^{-1}(I-(I-\eta A)^t)$, with the
same mean and covariance formulas.

**Numerics.**  One eigen-decomposition of $A$ in float64 (:class:`~kernelcalc.inference.spectral.Eigensystem`)
serves every time and every test batch; a Gram singular to working precision gives a
:class:`~kernelcalc.KernelcalcAccuracyWarning` and finite predictions (pseudo-inverse at
$t=\infty$, exact zero eigenvalues at finite $t$), never NaN.  Test points go in batches of
``batch_size`` rows (memory $O(N\cdot\text{batch})$ besides the train Grams; ``K_test_train`` may be a
``numpy.memmap`` or Zarr array read batch by batch).  Beyond :data:`KRYLOV_CROSSOVER` training points the
mean is computed matrix-free by Lanczos (:mod:`kernelcalc.inference.krylov`; ``client=`` runs its products on a
dask cluster, from an in-memory or a Zarr Gram).

The eigenbasis engine (the means, the NTK-GP covariances and their first-order error bounds per test batch) and
its cost at data-set scale are in :mod:`kernelcalc.inference.spectral`; this module holds the checks of the
arguments and the driver that picks the solver (eigenbasis, Lanczos, Cholesky).
"""

from __future__ import annotations

import math
import time

import numpy as np
from tqdm.auto import tqdm

from .._validation import (KernelcalcAccuracyWarning, KernelcalcInputError, nonnegative, positive, positive_int,
                           progress_disable, real_array, warn)
from .._results import on_disk
from .result import Prediction
from .direct import CholeskyEngine, CholeskySystem
from .krylov import krylov_run
from .spectral import EPS, Eigensystem, _Dense

__all__ = ["predict_from_kernels", "check_times", "check_targets", "KRYLOV_CROSSOVER"]

#: Training-set size above which ``method="auto"`` leaves the eigen-decomposition for the mean (Lanczos for the
#: finite times, one Cholesky factorisation at t = inf).  Measured side by side (``benchmarks/bench_predict.py
#: --crossover``; softplus Neural ODE NTK on the sphere, d = 10, M = N / 10 test points, 8 times, the 2-core
#: machine at load average 8.6-9.7, LAPACK threads = free cores): Lanczos + Cholesky over eigh took 1.09 at
#: N = 1000, 1.18 at 1500, 0.84-0.88 at 2000 and 0.34 at 4000 (127-142 Lanczos iterations); both agreed to
#: 2e-11.  A second run with the truncation-bound stopping rule (113-127 iterations, while an N = 12000 run
#: shared the cores, load 10.8): 0.90 at 1500, 0.50 at 2000, 0.22 at 4000.  The crossover is at about 1500 on
#: this machine.  The error estimates agree too since the matrix-free path bounds the rounding of
#: phi_t(A) theta_x through the Cholesky factor (N = 2000: 4.9e-6 against eigh's 4.8e-6, measured difference
#: 2.3e-11; before, 3.7e-2).
KRYLOV_CROSSOVER = 1500

#: From this many training points on, the stages (decomposition, test points x times) show progress bars
#: (``progress=None``: when stderr is a terminal; ``True``: always; ``False``: never).
LONG_WORK = 2000
_COV = {False: None, None: None, "diag": "diag", True: "full", "full": "full"}


# ---------------------------------------------------------------------------------- validation
def check_times(t, learning_rate) -> np.ndarray:
    """``t`` (None, a number, or a 1-D sequence; ``None``/``inf`` = end of training) as a float array."""
    if t is None:
        return np.array([math.inf])
    if isinstance(t, str):
        raise KernelcalcInputError(f"t must be a number, a sequence of numbers or None, got {t!r}")
    arr = real_array(t, "t").reshape(-1)
    if arr.size == 0:
        raise KernelcalcInputError("t must hold at least one time")
    if np.isnan(arr).any():
        raise KernelcalcInputError(f"t contains NaN: {arr.tolist()}")
    if (arr < 0).any():
        raise KernelcalcInputError(f"t must be >= 0 (a time of training), got {float(arr[arr < 0][0])!r}")
    if learning_rate is not None:
        fin = arr[np.isfinite(arr)]
        if (fin != np.round(fin)).any():
            raise KernelcalcInputError(
                "with a learning_rate, t counts gradient-descent steps and must be whole numbers (or inf), "
                f"got {float(fin[fin != np.round(fin)][0])!r}")
    return arr


def check_targets(y, n: int) -> tuple[np.ndarray, bool]:
    """``y_train`` as a float64 (N, k) array; returns ``(y, was_1d)``."""
    arr = real_array(y, "y_train")
    if arr.ndim not in (1, 2):
        raise KernelcalcInputError(f"y_train must have shape (N,) or (N, k), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise KernelcalcInputError(f"y_train has {arr.shape[0]} rows but there are {n} training points")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise KernelcalcInputError(f"y_train contains NaN or inf (first at row {int(np.argwhere(bad)[0][0])})")
    return (arr[:, None] if arr.ndim == 1 else arr), arr.ndim == 1


def _check_kernel(kernel) -> str:
    if kernel not in ("ntk", "nngp"):
        raise KernelcalcInputError(f"kernel must be 'ntk' or 'nngp', got {kernel!r}")
    return kernel


def _check_cov(compute_cov):
    if isinstance(compute_cov, (bool, np.bool_)) or compute_cov is None or compute_cov in ("diag", "full"):
        return _COV[bool(compute_cov) if isinstance(compute_cov, np.bool_) else compute_cov]
    raise KernelcalcInputError(f"compute_cov must be False, 'diag' or True, got {compute_cov!r}")


def _square(A, name: str) -> np.ndarray:
    arr = real_array(A, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 1:
        raise KernelcalcInputError(f"{name} must be a square (N, N) Gram, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise KernelcalcInputError(f"{name} contains NaN or inf")
    return arr


def _square_on_disk(A):
    """An on-disk (Zarr) train Gram, kept on disk (checked for NaN/inf block by block as the products read it)."""
    if len(A.shape) != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
        raise KernelcalcInputError(f"K_train must be a square (N, N) Gram, got shape {tuple(A.shape)}")
    return A


def _rows(A, name: str, n: int):
    """A (M, N) test-train Gram: kept as it is (numpy, memmap or Zarr; read in batches)."""
    if A is None:
        return None
    if not hasattr(A, "shape") or not hasattr(A, "__getitem__"):
        A = real_array(A, name)
    if len(A.shape) == 1 and A.shape[0] == n:
        A = np.asarray(A, dtype=np.float64)[None, :]
    if len(A.shape) != 2 or A.shape[1] != n:
        raise KernelcalcInputError(f"{name} must have shape (N_test, {n}) (one row per test point, one column "
                                   f"per training point), got shape {tuple(A.shape)}")
    return A


def _test_test(A, name: str, m: int, cov):
    """The test-test Gram: full (M, M), or only its diagonal (M,) (enough for ``compute_cov="diag"``)."""
    if A is None:
        return None
    arr = real_array(A, name)
    if arr.shape == (m,):
        if cov == "full":
            raise KernelcalcInputError(f"{name} is a diagonal ({m},); compute_cov=True needs the full ({m}, {m}) Gram")
    elif arr.shape != (m, m):
        raise KernelcalcInputError(f"{name} must have shape ({m}, {m}) or its diagonal ({m},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise KernelcalcInputError(f"{name} contains NaN or inf")
    return arr


def _block(A, i, j, name):
    blk = np.asarray(A[i:j], dtype=np.float64)
    if not np.isfinite(blk).all():
        raise KernelcalcInputError(f"{name} contains NaN or inf (rows {i}..{j - 1})")
    return blk


def _default_batch(n: int) -> int:
    return int(max(1, min(4096, 2**24 // max(n, 1))))       # ~128 MB per (N, batch) float64 block


def run(A, y, times, *, kernel, lr, diag_reg, cov, nngp_train, n_test, test_block, batch_size,
        progress, method, kernel_error, tol=1e-10, max_iter=None, info_extra=None, client=None,
        consume: bool = False) -> Prediction:
    """The driver shared by :func:`predict_from_kernels` and :func:`~kernelcalc.predict`:
    ``test_block(i, j)`` returns ``(K_trained (b, N), nngp (b, N) or None, test-test or None)``."""
    t0 = time.perf_counter()
    n = A.shape[0]
    if method not in ("auto", "eigh", "krylov", "cholesky"):
        raise KernelcalcInputError(f"method must be 'auto', 'eigh', 'krylov' or 'cholesky', got {method!r}")
    at_inf = bool(np.all(np.isinf(times)))
    auto = method == "auto"
    solver = method
    gram_on_disk = not isinstance(A, np.ndarray)
    if auto:
        if n > KRYLOV_CROSSOVER and cov is None:
            solver = "krylov"
        elif n > KRYLOV_CROSSOVER and at_inf and lr is None:
            solver = "cholesky"
        else:
            solver = "eigh"
    if solver == "krylov" and cov is not None:
        raise KernelcalcInputError("method='krylov' computes the mean only; use method='eigh' for compute_cov")
    if solver == "cholesky" and not (at_inf and lr is None):
        raise KernelcalcInputError("method='cholesky' is the end of gradient flow only (t = inf, no learning_rate)")
    info = dict(info_extra or {})
    if cov == "full":
        batch_size = n_test
    batch_size = positive_int("batch_size", batch_size) if batch_size is not None else _default_batch(n)
    info["batch_size"] = min(batch_size, max(n_test, 1))
    if solver == "krylov":
        direct = None
        # t = inf by one Cholesky factorisation instead of CG, where the Gram is in this process's memory
        if auto and lr is None and np.isinf(times).any() and client is None and not gram_on_disk:
            direct = CholeskySystem.factor(A, diag_reg)
        return krylov_run(A, y, times, kernel=kernel, lr=lr, diag_reg=diag_reg, n_test=n_test, test_block=test_block,
                          batch_size=batch_size, progress=progress, kernel_error=kernel_error, tol=tol,
                          max_iter=max_iter, info=info, t0=t0, direct=direct, client=client)
    long_work = progress_disable(progress) if (n >= LONG_WORK or progress is True) else True
    stage = tqdm(total=1, desc=f"{'Cholesky' if solver == 'cholesky' else 'eigen'}-decomposition of the {n} x {n} "
                 "Gram", disable=long_work, leave=False)
    cs = CholeskySystem.factor(A, diag_reg) if solver == "cholesky" else None
    if cs is not None:
        es, eng = cs, CholeskyEngine(cs, y, kernel, nngp_train, kernel_error)
        mean_train = y[None].copy()
    else:
        if solver == "cholesky":
            info["cholesky_fallback"] = "the Gram is not positive definite to working precision: eigen-decomposition"
        es = Eigensystem(A, diag_reg, consume=consume)
        es.warn_singular(times)
        es.check_lr(times, lr)
        eng = _Dense(es, y, times, lr, kernel, nngp_train, kernel_error)
        mean_train = es.train_mean(y, eng.phis)
    stage.update(1)
    stage.close()
    mean_test = cov_test = None
    if n_test:
        mean_test = np.empty((len(times), n_test, y.shape[1]))
        if cov == "diag":
            cov_test = np.empty((len(times), n_test))
        if kernel == "ntk" and cov is not None:
            eng.want_Kt(n_test)
        per_time = cov is not None and not isinstance(eng, CholeskyEngine)
        bar = tqdm(total=n_test * (len(times) if per_time else 1), unit="point", leave=False, disable=long_work,
                   desc="test points" + (f" x {len(times)} times" if per_time and len(times) > 1 else ""))
        for i in range(0, n_test, batch_size):
            j = min(i + batch_size, n_test)
            Ktb, ntb, tt = test_block(i, j)
            m, c = eng.batch(Ktb, cov, ntb, tt, tick=(lambda: bar.update(j - i)) if per_time else None)
            if not per_time:
                bar.update(j - i)
            mean_test[:, i:j] = m
            if cov == "diag":
                cov_test[:, i:j] = c
            elif cov == "full":
                cov_test = c
        bar.close()
    info.update(es.info())
    err = {"mean": float(eng.err_mean.max()) if n_test else float(es.floor * eng.ynorm)}
    if cov is not None:
        err["cov"] = float(eng.err_cov.max())
        err["cov_per_time"] = eng.err_cov.tolist()
        if cov == "full":
            mins = [float(np.linalg.eigvalsh(c)[0]) for c in cov_test] if n_test <= 4000 else \
                [float(np.diagonal(c).min()) for c in cov_test]
        else:
            mins = [float(c.min()) for c in cov_test]
        info["cov_min_eigenvalue"] = min(mins)
        info["cov_min_eigenvalue_per_time"] = mins
        if min(mins) < -max(err["cov"], 10 * EPS * float(np.abs(cov_test).max())):
            warn(f"the predicted covariance has an eigenvalue {min(mins):.3g} below minus its error estimate "
                 f"{err['cov']:.3g}: the kernel matrices are not a consistent (positive semi-definite) pair",
                 KernelcalcAccuracyWarning)
    err["mean_per_time"] = eng.err_mean.tolist()
    info["error_estimate"] = err
    info["n_train"], info["n_test"] = n, n_test
    info["seconds"] = time.perf_counter() - t0
    return Prediction(mean_test=mean_test, mean_train=mean_train, cov_test=cov_test, times=times, kernel=kernel,
                      learning_rate=lr, info=info)


def predict_from_kernels(K_train, y_train, K_test_train=None, K_test_test=None, *, nngp=None, t=None,
                         kernel: str = "ntk", diag_reg: float = 0.0, compute_cov=False, learning_rate=None,
                         batch_size: int | None = None, method: str = "auto", kernel_error: float = 0.0,
                         krylov_tol: float = 1e-10, krylov_max_iter: int | None = None, client=None,
                         progress: bool | None = None) -> Prediction:
    r"""Mean and covariance of the infinite ensemble of trained infinite-width networks, from Grams.

    The conventions (loss $\tfrac12\lVert f-y\rVert^2$, the NTK-GP covariance of Lee et al. 2019,
    the map to neural-tangents' time $t=\eta_\mathrm{nt}t_\mathrm{nt}/(Nk)$, discrete steps) are those
    of :mod:`kernelcalc.inference.engine`.

    **Arguments:**

    - ``K_train``: (N, N) train Gram of the trained kernel: the NTK $\Theta$ for ``kernel="ntk"``, the
      NNGP $K$ for ``kernel="nngp"``.  ``y_train``: targets (N,) or (N, k).
    - ``K_test_train``: (M, N) test-train Gram of the same kernel (or ``None``: train predictions only);
      any array sliceable by rows (numpy, memmap, Zarr), read ``batch_size`` rows at a time.
    - ``K_test_test``: for ``kernel="nngp"`` with ``compute_cov``: the (M, M) NNGP test-test Gram, or its
      diagonal (M,) for ``compute_cov="diag"``.  It does not apply to ``kernel="ntk"`` (the
      covariance there starts from the NNGP: pass it in ``nngp``).
    - ``nngp``: for ``kernel="ntk"`` with ``compute_cov``: the tuple ``(nngp_train, nngp_test_train,
      nngp_test_test)`` of NNGP Grams, shapes (N, N), (M, N) and (M, M) or (M,) (the diagonal, for
      ``compute_cov="diag"``).  Does not apply otherwise.
    - ``t``: a time, a sequence of times, or ``None`` / ``inf`` (end of training); $\ge0$.  With
      ``learning_rate`` the number of gradient-descent steps (whole numbers or ``inf``).
    - ``kernel``: ``"ntk"`` (gradient descent / flow of every layer) or ``"nngp"`` (Bayesian posterior;
      at finite $t$, training of the readout only).
    - ``diag_reg`` $\ge0$: added to the train Gram's diagonal (absolute units; neural-tangents'
      ``diag_reg_absolute_scale=True``).
    - ``compute_cov``: ``False``, ``"diag"`` (the variances) or ``True`` (the full (M, M) covariance;
      all test points in one batch).
    - ``learning_rate``: ``None`` = gradient flow; $\eta>0$ = discrete gradient descent, exactly
      $(I-\eta A)^t$.
    - ``batch_size``: test rows per batch (default: about 128 MB per (N, batch) block).
    - ``method``: ``"auto"``: the eigen-decomposition up to :data:`KRYLOV_CROSSOVER` training points;
      above it Lanczos for the mean alone (its $t=\infty$ by one Cholesky factorisation, which beats
      conjugate gradients on these ill-conditioned Grams), one Cholesky factorisation for $t=\infty$
      alone with covariance (:mod:`kernelcalc.inference.direct`), else the eigen-decomposition;
      or ``"eigh"``, ``"krylov"`` (mean only; ``krylov_tol``, ``krylov_max_iter`` are its relative
      tolerance and iteration cap), ``"cholesky"`` ($t=\infty$ of gradient flow only).
    - ``kernel_error``: the Grams' entrywise absolute error (e.g. a Kernel's ``info["error_estimate"]``),
      propagated into the error estimates.
    - ``client``: a ``dask.distributed.Client`` or a scheduler address (``"tcp://host:8786"``) for the
      matrix-free path: the train Gram's row blocks are placed on the workers once and every Lanczos
      product runs there (:class:`~kernelcalc.inference.krylov.ClusterMatvec`).  Applies to
      ``method="krylov"`` (and ``"auto"``, which then takes it for the mean); an error otherwise.
      ``K_train`` may be a Zarr array (a kernel's ``out=`` store): the Krylov path reads it in row blocks
      (on the workers with ``client``) and never loads it whole; $t=\infty$ is then conjugate gradients.
    - ``progress``: a progress bar over the test batches / Lanczos iterations (``None``: auto).

    **Returns:** :class:`~kernelcalc.Prediction`.

    **Raises:** :class:`~kernelcalc.KernelcalcInputError` for inconsistent shapes, NaN, ``t < 0``, a
    covariance for ``"ntk"`` without ``nngp``, or an argument that does not apply.
    """
    kernel = _check_kernel(kernel)
    cov = _check_cov(compute_cov)
    lr = None if learning_rate is None else positive("learning_rate", learning_rate)
    diag_reg = nonnegative("diag_reg", diag_reg)
    kernel_error = nonnegative("kernel_error", kernel_error)
    times = check_times(t, lr)
    A = _square_on_disk(K_train) if on_disk(K_train) else _square(K_train, "K_train")
    n = A.shape[0]
    if client is not None and (cov is not None or method not in ("auto", "krylov")):
        raise KernelcalcInputError("client applies only to the matrix-free path (method='krylov' or 'auto', mean "
                                   f"only); got method={method!r}" + (" with compute_cov" if cov is not None else ""))
    if client is not None:
        method = "krylov"
    matrix_free = method == "krylov" or (method == "auto" and n > KRYLOV_CROSSOVER and cov is None)
    if on_disk(A) and not matrix_free:
        A = _square(A[:], "K_train")                 # the dense engines need it in memory (and checked)
    y, _ = check_targets(y_train, n)
    Ktd = _rows(K_test_train, "K_test_train", n)
    m = 0 if Ktd is None else Ktd.shape[0]
    nngp_train = ntd = None
    tt = None
    if kernel == "ntk":
        if K_test_test is not None:
            raise KernelcalcInputError("K_test_test does not apply to kernel='ntk' (its covariance starts from the "
                                       "NNGP): pass nngp=(nngp_train, nngp_test_train, nngp_test_test)")
        if cov is not None:
            if nngp is None:
                raise KernelcalcInputError("compute_cov for kernel='ntk' needs the NNGP Grams: pass nngp=(nngp_train, "
                                           "nngp_test_train, nngp_test_test) (the NTK-GP covariance of Lee et al. 2019)")
            if not isinstance(nngp, (tuple, list)) or len(nngp) != 3:
                raise KernelcalcInputError("nngp must be the tuple (nngp_train, nngp_test_train, nngp_test_test)")
            nngp_train = _square(nngp[0], "nngp[0] (nngp_train)")
            if nngp_train.shape != A.shape:
                raise KernelcalcInputError(f"nngp_train has shape {nngp_train.shape}, K_train {A.shape}")
            ntd = _rows(nngp[1], "nngp[1] (nngp_test_train)", n)
            if (0 if ntd is None else ntd.shape[0]) != m:
                raise KernelcalcInputError(f"nngp_test_train must have shape ({m}, {n}) like K_test_train")
            tt = _test_test(nngp[2], "nngp[2] (nngp_test_test)", m, cov) if m else None
            if m and tt is None:
                raise KernelcalcInputError("compute_cov needs the NNGP test-test Gram nngp[2] (or its diagonal)")
        elif nngp is not None:
            raise KernelcalcInputError("nngp applies only with compute_cov (the NTK-GP covariance); the mean "
                                       "needs the NTK alone")
    else:
        if nngp is not None:
            raise KernelcalcInputError("nngp does not apply to kernel='nngp' (K_train, K_test_train, K_test_test "
                                       "are already the NNGP Grams)")
        if cov is not None and m:
            if K_test_test is None:
                raise KernelcalcInputError("compute_cov needs K_test_test (the (M, M) NNGP test-test Gram, or its "
                                           "diagonal)")
            tt = _test_test(K_test_test, "K_test_test", m, cov)
        elif K_test_test is not None and cov is None:
            raise KernelcalcInputError("K_test_test applies only with compute_cov")
    if cov is not None and not m:
        raise KernelcalcInputError("compute_cov needs test points (K_test_train)")

    def test_block(i, j):
        blk = _block(Ktd, i, j, "K_test_train")
        nb = None if ntd is None else _block(ntd, i, j, "nngp_test_train")
        if tt is None:
            tb = None
        elif cov == "full":
            tb = tt
        else:
            tb = tt[i:j] if tt.ndim == 1 else np.diagonal(tt)[i:j]
        return blk, nb, tb

    return run(A, y, times, kernel=kernel, lr=lr, diag_reg=diag_reg, cov=cov, nngp_train=nngp_train, n_test=m,
               test_block=test_block, batch_size=batch_size, progress=progress, method=method,
               kernel_error=kernel_error, tol=krylov_tol, max_iter=krylov_max_iter, client=client)
