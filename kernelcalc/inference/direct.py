r"""The end of training ($t=\infty$) by one Cholesky factorisation: the direct engine for large $N$.

$A=\Theta+\text{diag\_reg}\,I=LL^\top$ (LAPACK ``potrf``, $N^3/3$ flops: about a quarter of an
eigen-decomposition's work, and all of it BLAS-3), then $A^{-1}y$, and per test batch
$P=A^{-1}\Theta_{Xx}$ by triangular solves:

$$E[f_\infty(x)]=\Theta_{xX}A^{-1}y,\qquad
\mathrm{Var}[f_\infty(x)]=K_{xx}+P^\top K_{XX}P-2P^\top K_{Xx}\ \ (\text{ntk}),\quad
K_{xx}-K_{xX}A^{-1}K_{Xx}\ \ (\text{nngp}).$$

A Gram that is not positive definite to working precision (``potrf`` fails, or the reciprocal
condition number from ``pocon`` is below $N\varepsilon$) is not solved here: the caller falls back
to the eigen-decomposition, whose pseudo-inverse handles it (and says so in ``info["solver"]``).
"""

from __future__ import annotations

import time

import numpy as np

from .spectral import EPS, lapack_scope

__all__ = ["CholeskySystem"]


class CholeskySystem:
    """``CholeskySystem.factor(A, diag_reg)``: the factor, or ``None`` when $A$ is not numerically positive definite."""

    def __init__(self, L, anorm, rcond, n, seconds):
        self.L, self.anorm, self.rcond, self.n, self.seconds = L, anorm, rcond, n, seconds
        self.floor = n * EPS * anorm                    # backward error of the factorisation (2-norm scale)

    @classmethod
    def factor(cls, A, diag_reg: float):
        import scipy.linalg
        from scipy.linalg import lapack

        t0 = time.perf_counter()
        W = np.array(A, dtype=np.float64, copy=True, order="F")
        n = W.shape[0]
        for i in range(0, n, 1024):
            blk = 0.5 * (W[i:i + 1024, i:] + W[i:, i:i + 1024].T)
            W[i:i + 1024, i:] = blk
            W[i:, i:i + 1024] = blk.T
        W[np.diag_indices(n)] += diag_reg
        anorm = max(float(np.abs(W[:, i:i + 1024]).sum(axis=0).max()) for i in range(0, n, 1024))   # no N x N temporary
        try:
            with lapack_scope(n):
                L, _ = scipy.linalg.cho_factor(W, lower=True, overwrite_a=True, check_finite=False)
                rcond, info = lapack.dpocon(L, anorm, uplo="L")
        except np.linalg.LinAlgError:
            return None
        if info != 0 or rcond < n * EPS:
            return None
        return cls(L, anorm, float(rcond), n, time.perf_counter() - t0)

    def solve(self, B):
        import scipy.linalg

        with lapack_scope(self.n):
            return scipy.linalg.cho_solve((self.L, True), B, check_finite=False)

    @property
    def condition_number(self) -> float:
        return 1.0 / self.rcond

    def info(self) -> dict:
        return {"solver": "cholesky (LAPACK potrf, float64; t = inf)", "condition_number": self.condition_number,
                "condition_number_note": "1-norm estimate (LAPACK pocon)", "lambda_max_bound": self.anorm,
                "factor_seconds": self.seconds}


class CholeskyEngine:
    """The batch interface of the dense engine for $t=\\infty$ alone (see the module docstring)."""

    def __init__(self, cs: CholeskySystem, y, kernel, nngp_train, kernel_error):
        self.cs, self.kernel, self.nngp_train, self.kernel_error = cs, kernel, nngp_train, kernel_error
        self.z = cs.solve(y)                                            # A^{-1} y, (N, k)
        self.delta = cs.floor + cs.n * kernel_error
        self.ynorm = float(np.linalg.norm(y, axis=0).max())
        self.err_mean = np.zeros(1)
        self.err_cov = np.zeros(1)
        self.znorm = float(np.linalg.norm(self.z, axis=0).max())

    def want_Kt(self, n_test):
        pass

    def batch(self, Ktb, cov, nngp_tb=None, tt=None, tick=None):
        mean = (Ktb @ self.z)[None]
        P = self.cs.solve(Ktb.T)                                        # A^{-1} theta_{X x}, (N, b)
        pn = float(np.linalg.norm(P, axis=0).max())
        # first order: d mean = -(A^{-1} theta_x)^T E (A^{-1} y), ||E|| <= delta
        self.err_mean = np.maximum(self.err_mean, self.delta * pn * self.znorm
                                   + self.kernel_error * float(np.abs(self.z).sum(axis=0).max())
                                   + 8 * EPS * float(np.abs(mean).max()))
        if cov is None:
            return mean, None
        full = cov == "full"
        if self.kernel == "nngp":
            c = tt - Ktb @ P if full else tt - np.einsum("bn,nb->b", Ktb, P)
            err = 2 * self.delta * pn**2 + self.kernel_error * (1 + 2 * float(np.abs(P).sum(axis=0).max()))
        else:
            KP = self.nngp_train @ P
            if full:
                cross = P.T @ nngp_tb.T
                c = tt + P.T @ KP - cross - cross.T
            else:
                c = tt + np.einsum("nb,nb->b", P, KP) - 2.0 * np.einsum("nb,bn->b", P, nngp_tb)
            # first order in E: d var = 2 (A^{-1}(K P - k_x))^T E P (one more solve)
            W = self.cs.solve(KP - nngp_tb.T)
            pw = float((np.linalg.norm(W, axis=0) * np.linalg.norm(P, axis=0)).max())
            err = 2 * self.delta * pw + self.kernel_error * (1 + float(np.abs(P).sum(axis=0).max())) ** 2
        self.err_cov = np.maximum(self.err_cov, err)
        if full:
            c = 0.5 * (c + c.T)
        return mean, c[None]
