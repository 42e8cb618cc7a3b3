r"""Matrix-free predictions of the mean: Lanczos on the train Gram (for $N$ past the dense crossover).

For each target column $y$, $m$ Lanczos steps on $A=\Theta+\text{diag\_reg}\,I$ from $q_1=y/\lVert y\rVert$
(full re-orthogonalisation) give $AQ_m\approx Q_mT_m$ and

$$\varphi_t(A)\,y\approx\lVert y\rVert\,Q_m\,\varphi_t(T_m)\,e_1$$

for every time at once (one Krylov space serves all $t$: $\varphi_t$ of the small tridiagonal $T_m$
in its eigenbasis).  At $t=\infty$, $\varphi_\infty(\lambda)=1/\lambda$: this is conjugate gradients
(the same iterates in exact arithmetic).  The iteration stops (checks at geometrically spaced
$m$) when, for gradient flow at finite $t$, the a-posteriori truncation bound of :func:`truncation_bound`
(valid for any positive semi-definite Gram) is below ``tol`` relative to $\lVert\varphi_t(A)y\rVert$, and
otherwise (gradient descent, $t=\infty$ by conjugate gradients) when the coefficients $\varphi_t(T_m)e_1$
change by less than ``tol`` (relative) between checks; or at a breakdown (an invariant subspace: exact);
otherwise a
:class:`~kernelcalc.KernelcalcAccuracyWarning` reports the change reached.  One product with $A$
per step: numpy arrays in memory, Zarr/memmap Grams read in row blocks.
"""

from __future__ import annotations

import math
import time

import numpy as np
from tqdm.auto import tqdm

from .._validation import (KernelcalcAccuracyWarning, KernelcalcInputError, accuracy_shortfall, progress_disable,
                           warn)
from .result import Prediction
from .spectral import EPS, batches, phi

__all__ = ["krylov_run", "lanczos_phi", "truncation_bound", "ClusterMatvec"]


def _row_block(n: int) -> int:
    return max(1, 2**24 // n)              # ~128 MB of float64 per block of rows


def _rows_of(A, i, j):
    """Rows ``i:j`` of the Gram as float64, refusing NaN/inf (an on-disk Gram is checked as it is read)."""
    blk = np.asarray(A[i:j], dtype=np.float64)
    if not np.isfinite(blk).all():
        raise KernelcalcInputError(f"K_train contains NaN or inf (rows {i}..{j - 1})")
    return blk


def _block_times(blk, v):
    return blk @ v


def _matvec(A, diag_reg):
    """``v -> (A + diag_reg I) v`` reading an on-disk Gram in row blocks."""
    if isinstance(A, np.ndarray):
        return lambda v: A @ v + diag_reg * v
    n = A.shape[0]
    rows = _row_block(n)

    def mv(v):
        out = np.empty(n)
        for i in range(0, n, rows):
            out[i:i + rows] = _rows_of(A, i, min(i + rows, n)) @ v
        return out + diag_reg * v

    return mv


class ClusterMatvec:
    r"""``v -> (A + diag_reg I) v`` on a ``dask.distributed`` cluster: the Gram's row blocks (about 128 MB
    each) are placed on the workers once -- scattered from memory, or read there from the Zarr array
    itself, so an on-disk Gram never passes through this process -- and each product ships only $v$
    (broadcast) and gathers the blocks' results, in row order.  A block is the same product as in
    :func:`_matvec`'s loop, so the cluster's iterates equal the local ones to rounding (bit for bit when
    both use the same BLAS kernel).  The futures live on ``client``'s loop (``client.gather``), whatever
    default client the process has."""

    def __init__(self, client, A, diag_reg: float):
        from ..kernels._tiles import _scheduler

        self.client, self.diag_reg, self.n = client, diag_reg, A.shape[0]
        rows = _row_block(self.n)
        self.where = _scheduler(client)
        edges = [(i, min(i + rows, self.n)) for i in range(0, self.n, rows)]
        if isinstance(A, np.ndarray):
            self.blocks = client.scatter([_rows_of(A, i, j) for i, j in edges], hash=False)
        else:
            self.blocks = [client.submit(_rows_of, A, i, j, pure=False) for i, j in edges]
        self.products = 0

    def __call__(self, v):
        from .._validation import KernelcalcClusterError

        vf = self.client.scatter(v, broadcast=True, hash=False)
        futures = [self.client.submit(_block_times, b, vf, pure=False) for b in self.blocks]
        try:
            parts = self.client.gather(futures)
        except KernelcalcInputError:
            raise
        except Exception as err:  # a lost worker whose data cannot be recomputed, a lost scheduler
            raise KernelcalcClusterError(f"a Gram-vector product failed on {self.where} "
                                         f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
        out = np.concatenate(parts)
        if out.shape != (self.n,) or not np.isfinite(out).all():
            raise KernelcalcClusterError(f"a Gram-vector product came back from {self.where} malformed or "
                                         "non-finite; no prediction is returned")
        self.products += 1
        return out + self.diag_reg * v

    def close(self):
        self.client.cancel(list(self.blocks))


def lanczos_phi(mv, y: np.ndarray, times, lr, *, tol: float, max_iter: int, check_every: int = 10,
                progress=None):
    r"""$\varphi_t(A)y$ and $(I-r_t(A))y$ for every $t$ by Lanczos (module docstring).

    **Returns:** ``(Z (T, N), R (T, N), info)`` with ``info`` holding the iterations, the last relative
    change, whether it converged, and the Ritz extremes.
    """
    import scipy.linalg

    n = y.shape[0]
    beta0 = float(np.linalg.norm(y))
    T = len(times)
    if beta0 == 0.0:
        return np.zeros((T, n)), np.zeros((T, n)), {"iterations": 0, "change": 0.0, "converged": True}
    max_iter = min(max_iter, n)
    Q = np.empty((max_iter + 1, n))
    Q[0] = y / beta0
    alphas, betas = [], []
    prev, change, converged, breakdown = None, math.inf, False, False
    next_check = check_every
    bar = tqdm(total=max_iter, desc="Lanczos", disable=progress_disable(progress), leave=False)
    lam_max = 0.0
    for j in range(max_iter):
        w = mv(Q[j])
        a = float(Q[j] @ w)
        w -= a * Q[j] + (betas[-1] * Q[j - 1] if j else 0.0)
        before = float(np.linalg.norm(w))
        w -= Q[:j + 1].T @ (Q[:j + 1] @ w)                   # full re-orthogonalisation
        b = float(np.linalg.norm(w))
        if b < 0.7 * before:                                 # Kahan: once more when cancellation was large
            w -= Q[:j + 1].T @ (Q[:j + 1] @ w)
            b = float(np.linalg.norm(w))
        alphas.append(a)
        bar.update(1)
        m = j + 1
        last = m == max_iter
        lam_max = max(lam_max, abs(a) + b + (betas[-1] if betas else 0.0))
        if b <= 10 * n * EPS * max(lam_max, 1e-300):
            breakdown = True
        if breakdown or last or m >= next_check:
            next_check = m + max(check_every, m // 8)                # checks at geometrically spaced sizes
            ev, U = scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(betas[:m - 1]))
            floor = n * EPS * max(abs(ev).max(), 1e-300)
            coef = np.stack([U @ (phi(ev, t, lr, floor) * U[0]) for t in times])        # phi_t(T_m) e1
            if prev is not None:
                pad = np.zeros_like(coef)
                pad[:, :prev.shape[1]] = prev
                change = float(np.max(np.linalg.norm(coef - pad, axis=1) / np.maximum(np.linalg.norm(coef, axis=1),
                                                                                        1e-300)))
            prev = coef
            done = change < tol
            if lr is None:              # gradient flow: the truncation bound at the finite times, the change at inf
                bound = truncation_bound(ev, U, b, beta0, times)
                fin = np.isfinite(bound)
                done = bool(np.all(bound[fin] <= tol * beta0 * np.linalg.norm(coef[fin], axis=1))) and (
                    bool(fin.all()) or change < tol)
            if breakdown or done:
                converged = True
                break
        betas.append(b)
        Q[j + 1] = w / b
    bar.close()
    m = len(alphas)
    lam_c = np.maximum(ev, 0.0)
    Z = beta0 * np.stack([c @ Q[:m] for c in coef])
    R = beta0 * np.stack([(U @ (lam_c * phi(ev, t, lr, floor) * U[0])) @ Q[:m] for t in times])
    info = {"iterations": m, "change": 0.0 if breakdown else change, "converged": converged,
            "breakdown": breakdown, "ritz_min": float(ev[0]), "ritz_max": float(ev[-1])}
    if lr is None:
        info["bound"] = truncation_bound(ev, U, 0.0 if breakdown else b, beta0, times).tolist()
    return Z, R, info


def truncation_bound(ev, U, b_m: float, beta0: float, times, panels: int = 48, nodes: int = 12) -> np.ndarray:
    r"""A bound of the Lanczos truncation error $\lVert\varphi_t(A)y-\beta_0Q_m\varphi_t(T_m)e_1\rVert$ of gradient
    flow, valid for every positive semi-definite $A$ whatever its spectrum (exact arithmetic).

    With $AQ_m=Q_mT_m+b_mq_{m+1}e_m^\top$, $u(s)=\beta_0Q_me^{-sT_m}e_1$ solves $\dot u=-Au+\rho(s)$ with the
    residual $\rho(s)=\beta_0b_m\,h(s)\,q_{m+1}$, $h(s)=e_m^\top e^{-sT_m}e_1=\sum_iU_{mi}U_{1i}e^{-s\theta_i}$
    ($T_m=U\,\mathrm{diag}(\theta)U^\top$); so $e^{-sA}y-u(s)=-\int_0^s e^{-(s-\sigma)A}\rho(\sigma)\,d\sigma$,
    of norm $\le\beta_0b_m\int_0^s|h|$ since $\lVert e^{-\tau A}\rVert\le1$.  Integrating over $s\in[0,t]$
    ($\varphi_t(A)y=\int_0^te^{-sA}y\,ds$):

    $$\lVert\varphi_t(A)y-z_m\rVert\le\beta_0b_m\int_0^t(t-\sigma)\,|h(\sigma)|\,d\sigma .$$

    $h$ is smooth and small near 0 ($h(\sigma)=O(\sigma^{m-1})$: the cancellation that a term-by-term bound
    would lose), so the 1-D integral is evaluated by ``nodes``-point Gauss-Legendre on ``panels`` panels,
    geometric from $\min(t,10^{-2}/\theta_{\max})$ to $t$, plus one panel from 0 (the only approximation: a
    quadrature of a smooth one-dimensional integrand; $|h|$ has kinks only at its few sign changes).
    $t=\infty$ has no such bound (``inf`` is returned; conjugate gradients' error needs $\lambda_{\min}$).
    """
    if b_m == 0.0:
        return np.zeros(len(times))
    xg, wg = np.polynomial.legendre.leggauss(nodes)
    theta = np.maximum(np.asarray(ev, dtype=np.float64), 0.0)
    c = U[-1] * U[0]
    out = np.empty(len(times))
    for k, t in enumerate(times):
        if math.isinf(t):
            out[k] = math.inf
            continue
        if t == 0.0:
            out[k] = 0.0
            continue
        s0 = min(t, 1e-2 / max(float(theta[-1]), 1e-300))
        edges = np.concatenate([[0.0], np.geomspace(s0, t, panels + 1)]) if s0 < t else np.array([0.0, t])
        lo, hi = edges[:-1, None], edges[1:, None]
        sig = (0.5 * (hi - lo) * xg[None] + 0.5 * (hi + lo)).ravel()
        wts = (0.5 * (hi - lo) * wg[None]).ravel()
        h = np.exp(-np.outer(sig, theta)) @ c
        out[k] = beta0 * b_m * float(np.sum(wts * (t - sig) * np.abs(h)))
    return out


def krylov_run(A, y, times, *, kernel, lr, diag_reg, n_test, test_block, batch_size, progress, kernel_error,
               tol, max_iter, info, t0, direct=None, client=None) -> Prediction:
    r"""The mean-only Krylov path of :func:`kernelcalc.inference.engine.run`; ``direct``: a
    :class:`~kernelcalc.inference.direct.CholeskySystem` of the same Gram that gives $t=\infty$ instead
    (Lanczos then serves the finite times alone, which converge far sooner); ``client``: a
    ``dask.distributed`` client or scheduler address for the Gram-vector products (:class:`ClusterMatvec`)."""
    from ..kernels._tiles import own_client

    with own_client(client) as c:
        mv = _matvec(A, diag_reg) if c is None else ClusterMatvec(c, A, diag_reg)
        try:
            return _krylov(mv, A.shape[0], y, times, kernel=kernel, lr=lr, n_test=n_test, test_block=test_block,
                           batch_size=batch_size, progress=progress, kernel_error=kernel_error, tol=tol,
                           max_iter=max_iter, info=info, t0=t0, direct=direct,
                           engine=None if c is None else mv.where)
        finally:
            if c is not None:
                mv.close()


def _krylov(mv, n, y, times, *, kernel, lr, n_test, test_block, batch_size, progress, kernel_error, tol, max_iter,
            info, t0, direct, engine) -> Prediction:
    k = y.shape[1]
    max_iter = 2000 if max_iter is None else int(max_iter)
    inf = np.isinf(times) if direct is not None else np.zeros(len(times), bool)
    lanczos_times = times[~inf]
    Z = np.zeros((len(times), n, k))
    mean_train = np.zeros((len(times), n, k))
    runs = []
    if lanczos_times.size:
        for c in range(k):
            Zc, Rc, ri = lanczos_phi(mv, y[:, c], lanczos_times, lr, tol=tol, max_iter=max_iter, progress=progress)
            Z[~inf, :, c] = Zc
            mean_train[~inf, :, c] = Rc
            runs.append(ri)
    if inf.any():
        Z[inf] = direct.solve(y)
        mean_train[inf] = y
        info["direct"] = direct.info()
    if not runs:
        runs = [{"iterations": 0, "change": 0.0, "converged": True}]
    ritz_max = max(r.get("ritz_max", 0.0) for r in runs)
    if lr is not None and lr * ritz_max >= 2.0:
        msg = (f"learning_rate = {lr:.6g} >= 2/lambda_max = {2.0 / ritz_max:.6g} (Ritz value): discrete gradient "
               "descent diverges")
        if any(math.isinf(t) for t in times):
            raise KernelcalcInputError(msg + " (no t = inf limit)")
        warn(msg + "; the predictions follow the diverging linearised iteration", KernelcalcAccuracyWarning)
    worst = max(r["change"] for r in runs)
    if not all(r["converged"] for r in runs):
        bounds = [max(r.get("bound", [0.0]) or [0.0]) for r in runs]
        accuracy_shortfall(f"Lanczos did not reach the relative tolerance {tol:.1e} in {max_iter} iterations "
                           f"(last change {worst:.2e}, truncation bound {max(bounds):.2e}); raise krylov_max_iter, add "
                           "diag_reg, or use method='eigh'")
    mean_test = None
    zn = np.linalg.norm(Z, axis=1).max(axis=1)
    delta = n * EPS * ritz_max + n * kernel_error
    # the iteration's change, plus rounding: the computed z is that of A + E, ||E|| ~ N eps lambda_max,
    # first order s_t ||E|| ||z|| with s_t = min(t, 1/lambda_min) (Ritz values)
    lo = min(r.get("ritz_min", math.inf) for r in runs)
    s_t = np.array([min(t if lr is None else lr * t, 1.0 / lo if lo > 0 else math.inf) for t in times])
    if lr is None and lanczos_times.size and all("bound" in r for r in runs):
        # the certified truncation bound (truncation_bound) per time, worst over the target columns
        trunc = np.zeros(len(times))
        trunc[~inf] = np.max([r["bound"] for r in runs], axis=0)
        trunc = np.where(np.isfinite(trunc), trunc, worst * zn)          # t = inf by CG: the iteration's change
    else:
        trunc = worst * zn
    s_t = np.where(np.isfinite(s_t), s_t, 0.0)
    s_t[inf] = 0.0                  # the Cholesky solve: per test point below
    t_eff = np.array([t if lr is None else lr * t for t in times])
    err = np.zeros(len(times))
    if n_test:
        mean_test = np.empty((len(times), n_test, k))
        for i in batches(n_test, batch_size, progress, "test batches"):
            j = min(i + batch_size, n_test)
            Ktb = test_block(i, j)[0]
            mean_test[:, i:j] = np.einsum("bn,tnk->tbk", Ktb, Z, optimize=True)
            row = float(np.max(np.linalg.norm(Ktb, axis=1)))
            # rounding, first order: delta ||phi_t(A) theta_x|| ||phi_t(A) y||, with ||phi_t(A) theta_x|| bounded by
            # s_t ||theta_x||, or, where the Cholesky factor exists, by min(t ||theta_x||, c ||A^{-1} theta_x||)
            # (phi_t(lam) <= 1/lam for gradient flow, <= 2/lam for stable gradient descent)
            fac = s_t * row
            if direct is not None:
                pn = float(np.linalg.norm(direct.solve(Ktb.T), axis=0).max())
                fac = np.where(inf, 0.0, np.minimum(t_eff * row, (1.0 if lr is None else 2.0) * pn))
            e = row * trunc * (~inf) + delta * fac * zn + kernel_error * np.abs(Z).sum(axis=1).max(axis=1) + \
                8 * EPS * np.abs(mean_test[:, i:j]).max(axis=(1, 2))
            if inf.any():           # first order: -(A^{-1} theta_x)^T E (A^{-1} y), ||E|| <= delta
                e[inf] += (direct.floor + n * kernel_error) * pn * zn[inf]
            err = np.maximum(err, e)
    info.update({"solver": "krylov (Lanczos, full re-orthogonalisation; " + (
                     "Cholesky at t = inf)" if inf.any() else "CG at t = inf)"),
                 "lanczos": runs, "lambda_max": max(r.get("ritz_max", 0.0) for r in runs),
                 "lambda_min": min(r.get("ritz_min", math.inf) for r in runs),
                 "error_estimate": {"mean": float(err.max()), "mean_per_time": err.tolist()},
                 "n_train": n, "n_test": n_test, "seconds": time.perf_counter() - t0,
                 "matvec": "local" if engine is None else f"dask ({engine})"})
    info["condition_number"] = (info["lambda_max"] / info["lambda_min"] if info["lambda_min"] > 0 else math.inf)
    info["condition_number_note"] = "Ritz values: lambda_min is an upper bound of the Gram's"
    return Prediction(mean_test=mean_test, mean_train=mean_train, cov_test=None, times=times, kernel=kernel,
                      learning_rate=lr, info=info)
