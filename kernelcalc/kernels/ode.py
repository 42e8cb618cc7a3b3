r"""The infinite-width Neural ODE kernel (NNGP and NTK) by Chebyshev spectral collocation in time.

Model (width $n\to\infty$): $h_0=\sigma_u Ux/\sqrt d$, $\dot h_t=\sigma_w W\phi(h_t)/\sqrt n$
on $[0,T]$, $f=\sigma_v v\cdot\phi(h_T)/\sqrt n$, with $U, W, v$ iid $N(0,1)$.  The kernel
solves two Goursat problems (definitions in :mod:`kernelcalc.recursion`):

$$S(t,s)=\sigma_u^2\tfrac{x\cdot y}d+\sigma_w^2\!\int_0^t\!\!\int_0^s C(r,q)\,dr\,dq,\qquad
\Lambda(t,s)=\sigma_v^2\dot C(T,T)+\sigma_w^2\!\int_t^T\!\!\int_s^T\dot C\Lambda\,dr\,dq,$$

$C, \dot C$ the dual kernels of $\phi$ under the covariance of $(h_r(x), h_q(y))$, i.e.
$q_x(r)=S_{xx}(r,r)$, $q_y(q)=S_{yy}(q,q)$ and $S_{xy}(r,q)$.

**Discretisation.** $S$ and $\Lambda$ are represented by their values on the tensor grid of
$M+1$ Chebyshev–Lobatto points $t_k=\tfrac T2(1-\cos\tfrac{k\pi}M)$ (both ends included);
$\int_0^{t_i}$ and $\int_{t_i}^T$ become the spectral integration matrices $J$ and
$\tilde J = \mathbf 1 w^\top - J$ ($w$ = Clenshaw–Curtis weights), so
$S = S_0 + \sigma_w^2 J\,C(S)\,J^\top$ and $\Lambda = \Lambda_T + \sigma_w^2\tilde J(\dot C\circ\Lambda)\tilde J^\top$,
and $\iint C\Lambda = w^\top(C\circ\Lambda)w$.  For analytic $\phi$ the solution is analytic in
$(t,s)$ and the error decays **exponentially** in $M$ (spectral order); for relu-like kinks it
decays algebraically.  $M$ is chosen adaptively: doubled until the self-kernel NTK changes by
less than ``tol`` (relative).

**Solvers.** The forward equation is a Volterra equation with a double integral, so Picard
iteration converges factorially fast, $\|e_k\|\lesssim(\sigma_w^2LT^2)^k/(k!)^2$: each sweep is two
small matrix products per pair plus one batched evaluation of $C$ (about 10–25 sweeps to
$10^{-15}$).  The backward equation is linear and solved the same way (no expectations).
The self-kernels $S_{xx}$ (one per distinct input norm) are solved first, with the diagonal
coupling through $q_x(t)=S_{xx}(t,t)$ updated each sweep; the cross-kernels then use the fixed
diagonals.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from .. import recursion as rec
from .._validation import KernelcalcInputError, as_input_pair, positive
from ..activations import resolve_activation
from ..gaussian import DEFAULT_TOL, DualKernels, dual_kernels
from ._gram import error_estimate, gram, max_norm
from ._result import Kernel
from .untied import check_weights, untied_node_kernel

__all__ = ["node_kernel", "chebyshev_lobatto", "Discretisation", "GoursatSolver"]

_MAX_SWEEPS = 400
_SWEEP_TOL = 2e-15
_M_SEQUENCE = (8, 12, 16, 24, 32, 48, 64, 96, 128)


@functools.lru_cache(maxsize=64)
def chebyshev_lobatto(M: int, T: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Nodes $t_k$ ($k=0..M$) on $[0,T]$, integration matrix $J_{ik}=\int_0^{t_i}\ell_k$, weights $w_k=\int_0^T\ell_k$."""
    x = -np.cos(np.pi * np.arange(M + 1) / M)                 # increasing, x_0 = -1, x_M = 1
    V = np.polynomial.chebyshev.chebvander(x, M)              # V[i, j] = T_j(x_i)
    coeffs = np.linalg.solve(V, np.eye(M + 1))                 # column k: Chebyshev coefficients of ell_k
    J = np.empty((M + 1, M + 1))
    for k in range(M + 1):
        J[:, k] = np.polynomial.chebyshev.chebval(x, np.polynomial.chebyshev.chebint(coeffs[:, k], lbnd=-1.0))
    J *= T / 2.0
    J[0] = 0.0
    t = T * (x + 1.0) / 2.0
    return t, J, J[-1].copy()


def _picard(step, S_init, tol=_SWEEP_TOL, max_sweeps=_MAX_SWEEPS):
    """Iterate ``S <- step(S)`` until the largest relative change is below ``tol``."""

    def cond(state):
        _, delta, k = state
        return (delta > tol) & (k < max_sweeps)

    def body(state):
        S, _, k = state
        S_new = step(S)
        delta = jnp.max(jnp.abs(S_new - S)) / jnp.maximum(jnp.max(jnp.abs(S_new)), 1e-300)
        return S_new, delta, k + 1

    return jax.lax.while_loop(cond, body, (S_init, jnp.asarray(jnp.inf), 0))


@dataclasses.dataclass(frozen=True)
class Discretisation:
    r"""A time grid for the two Goursat problems, as matrices.

    $S = S_0 + \sigma_w^2 A\,C(S)\,A^\top$, $\Lambda = \Lambda_T + \sigma_w^2 B\,(\dot C\circ P\Lambda P^\top)\,B^\top$,
    $\iint C\Lambda \approx w^\top(C\circ P\Lambda P^\top)w$.  Neural ODE: $A=J$,
    $B=\tilde J$, $P=I$, $w$ Clenshaw–Curtis.  Euler ResNet (depth $L$, $\delta=T/L$):
    $A_{\ell i}=\delta[i<\ell]$, $B_{\ell i}=\delta[\ell\le i<L]$, $P$ the shift $\ell\mapsto\ell+1$,
    $w_i=\delta[i<L]$ — the left Riemann sums of the discrete network.
    """

    name: str
    A: np.ndarray
    B: np.ndarray
    P: np.ndarray
    w: np.ndarray

    def __hash__(self):
        return hash((self.name, self.A.shape))

    def __eq__(self, other):
        return isinstance(other, Discretisation) and self.name == other.name and self.A.shape == other.A.shape


@functools.lru_cache(maxsize=16)
def chebyshev_discretisation(M: int, T: float) -> Discretisation:
    """The spectral Neural-ODE grid with M+1 Chebyshev–Lobatto nodes."""
    _, J, w = chebyshev_lobatto(M, T)
    return Discretisation(f"chebyshev-lobatto(M={M}, T={T!r})", J, w[None, :] - J, np.eye(M + 1), w)


@functools.lru_cache(maxsize=32)
def _compiled(dual: DualKernels, disc: Discretisation, sigma_w: float, sigma_v: float):
    A, B, P, w = (jnp.asarray(a) for a in (disc.A, disc.B, disc.P, disc.w))
    n = A.shape[0]

    @jax.jit
    def self_solve(S0):
        """S0: (U,) initial variances -> S (U, n, n), sweeps, last change."""
        def step(S):
            m = dual.marginal(jnp.diagonal(S, axis1=1, axis2=2), derivative=False)   # (U, n)
            mi = jax.tree_util.tree_map(lambda a: a[..., :, None], m)
            mj = jax.tree_util.tree_map(lambda a: a[..., None, :], m)
            C = dual.from_marginals(mi, mj, S, derivative=False)
            return S0[:, None, None] + A @ rec.ode_forward_source(C, sigma_w) @ A.T

        S_init = jnp.broadcast_to(S0[:, None, None], (S0.shape[0], n, n))
        return _picard(step, S_init)

    @jax.jit
    def cross_solve(qx, qy, S0):
        """qx, qy: (B, n) diagonals; S0: (B,) -> nngp, ntk (B,) and diagnostics."""
        mx = jax.tree_util.tree_map(lambda a: a[..., :, None], dual.marginal(qx))    # fixed marginals:
        my = jax.tree_util.tree_map(lambda a: a[..., None, :], dual.marginal(qy))    # computed once

        def step(S):
            C = dual.from_marginals(mx, my, S, derivative=False)
            return S0[:, None, None] + A @ rec.ode_forward_source(C, sigma_w) @ A.T

        S_init = jnp.broadcast_to(S0[:, None, None], (S0.shape[0], n, n))
        S, dS, nS = _picard(step, S_init)
        C, Cdot = dual.from_marginals(mx, my, S)
        LamT = rec.ode_backward_terminal(Cdot[:, -1, -1], sigma_v)

        def back(Lam):
            return LamT[:, None, None] + B @ rec.ode_backward_source(Cdot, P @ Lam @ P.T, sigma_w) @ B.T

        Lam, dL, nL = _picard(back, jnp.broadcast_to(LamT[:, None, None], S.shape))
        integral = jnp.einsum("i,bij,j->b", w, C * (P @ Lam @ P.T), w)
        nngp = rec.ode_nngp(C[:, -1, -1], sigma_v)
        ntk = rec.ode_ntk(C[:, -1, -1], integral, S0, Lam[:, 0, 0], sigma_v, sigma_w)
        return nngp, ntk, jnp.maximum(dS, dL), jnp.maximum(nS, nL)

    return self_solve, cross_solve


class GoursatSolver:
    r"""Kernel evaluator for the Neural ODE or the weight-tied ResNet at fixed $(\phi, T, \sigma)$.

    ``solver(sxx, syy, sxy)`` maps input second moments $x\cdot x/d$, $y\cdot y/d$, $x\cdot y/d$
    (arrays of one shape) to ``(nngp, ntk)``.  ``grid(M)`` gives the :class:`Discretisation`;
    with ``M=None`` it is refined through ``_M_SEQUENCE`` until the self-kernel NTK of the largest
    norm changes by less than ``tol`` (spectral ODE grid); a fixed ``M`` is used as is (ResNet depth).
    """

    def __init__(self, activation, *, T, sigma_w, sigma_u, sigma_v, grid, v_max, tol=1e-10, M=None,
                 scheme="Chebyshev-Lobatto spectral collocation"):
        self.activation = resolve_activation(activation)
        self.T, self.sigma_w, self.sigma_u, self.sigma_v = T, sigma_w, sigma_u, sigma_v
        self.grid, self.scheme = grid, scheme
        self.tol = tol
        self.M_fixed = M
        self.v_max = float(v_max)   # largest input x.x/d of the whole Gram: fixes the quadrature range
        self.info: dict = {}

    def _self_diagonals(self, dual, M, v):
        self_solve, _ = _compiled(dual, self.grid(M), self.sigma_w, self.sigma_v)
        S, delta, sweeps = self_solve(jnp.asarray(rec.ode_initial(v, self.sigma_u)))
        self.info["self_sweeps"] = max(int(sweeps), self.info.get("self_sweeps", 0))
        return np.asarray(jnp.diagonal(S, axis1=1, axis2=2))

    def _dual_and_M(self, v_unique):
        if "M" in self.info:
            return self._dual, self.info["M"]
        v_max = max(self.v_max, float(np.max(v_unique)))
        # A coarse rule first to learn the largest pre-activation variance q(T), then the final rule.
        coarse = dual_kernels(self.activation, q_max=max(4.0 * self.sigma_u**2 * v_max, 1.0), tol=1e-6)
        q_est = float(np.max(self._self_diagonals(coarse, self.M_fixed or 16, np.array([v_max]))))
        if not math.isfinite(q_est):
            raise KernelcalcInputError(
                f"the pre-activation variance q(t) = E[h_t^2] of the {self.activation.name} network blows up "
                f"before T = {self.T:g} (sigma_w = {self.sigma_w:g}): phi grows faster than linearly, so the "
                "infinite-width dynamics exist only on a shorter horizon; reduce T or sigma_w")
        dual = dual_kernels(self.activation, q_max=1.05 * q_est)
        self.info["expectation"] = dual.describe()
        self.info["q_max"] = q_est
        if self.M_fixed is not None:
            M, err = int(self.M_fixed), None
        else:
            M, err = self._choose_M(dual, v_max)
        self.info.update(M=M, time_error_estimate=err, time_scheme=self.scheme)
        self._dual = dual
        return dual, M

    def relative_error_estimate(self) -> float:
        """Relative error estimate of one kernel value: expectations, time grid, Picard sweeps."""
        return DEFAULT_TOL + (self.info.get("time_error_estimate") or 0.0) + 10 * _SWEEP_TOL

    def _choose_M(self, dual, v):
        prev, change = None, float("nan")
        for M in _M_SEQUENCE:
            q = self._self_diagonals(dual, M, np.array([v]))
            _, cross = _compiled(dual, self.grid(M), self.sigma_w, self.sigma_v)
            ntk = float(cross(jnp.asarray(q), jnp.asarray(q), jnp.asarray([rec.ode_initial(v, self.sigma_u)]))[1][0])
            if prev is not None:
                scale = max(abs(ntk), abs(prev))  # both 0 for a zero activation: converged, not 0/0
                change = abs(ntk - prev) / scale if scale > 0 else 0.0
                if change <= self.tol:
                    return M, change
            prev = ntk
        return M, change

    def __call__(self, sxx, syy, sxy):
        sxx, syy, sxy = (np.asarray(a, dtype=np.float64) for a in (sxx, syy, sxy))
        shape = sxy.shape
        sxx, syy, sxy = (np.broadcast_to(a, shape).ravel() for a in (sxx, syy, sxy))
        v_unique, inverse = np.unique(np.concatenate([sxx, syy]), return_inverse=True)
        dual, M = self._dual_and_M(v_unique)
        diag = self._self_diagonals(dual, M, v_unique)                        # (U, M+1)
        qx, qy = diag[inverse[: sxx.size]], diag[inverse[sxx.size:]]
        _, cross = _compiled(dual, self.grid(M), self.sigma_w, self.sigma_v)
        n = sxy.size
        pad = _bucket(n) - n                       # fixed batch sizes: few jit compilations
        qx, qy = (np.concatenate([a, np.repeat(a[:1], pad, axis=0)]) for a in (qx, qy))
        s0 = np.concatenate([rec.ode_initial(sxy, self.sigma_u), np.repeat(rec.ode_initial(sxy[:1], self.sigma_u), pad)])
        nngp, ntk, delta, sweeps = cross(jnp.asarray(qx), jnp.asarray(qy), jnp.asarray(s0))
        nngp, ntk = np.asarray(nngp)[:n], np.asarray(ntk)[:n]
        if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
            raise KernelcalcInputError(
                f"the {self.activation.name} kernel is not finite on [0, T = {self.T:g}] (sigma_w = "
                f"{self.sigma_w:g}): the variance ODE blows up; reduce T or sigma_w")
        self.info["cross_sweeps"] = max(int(sweeps), self.info.get("cross_sweeps", 0))
        if int(sweeps) >= _MAX_SWEEPS:
            raise RuntimeError(f"Neural-ODE kernel iteration did not converge in {_MAX_SWEEPS} sweeps "
                               f"(last relative change {float(delta):.2e}); T*sigma_w may be too large")
        return nngp.reshape(shape), ntk.reshape(shape)


def _bucket(n: int) -> int:
    """Smallest power of two >= max(n, 8)."""
    return 1 << max(3, (n - 1).bit_length())


def node_kernel(x1, x2=None, *, activation, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0,
                tol: float = 1e-10, time_nodes: int | None = None, progress: bool = False,
                weights: str = "tied") -> Kernel:
    r"""Infinite-width NNGP and NTK of the Neural ODE $dh/dt=\sigma_w W\phi(h)/\sqrt n$ on $[0,T]$.

    **Arguments:**

    - ``x1``: inputs, shape ``(N1, d)`` (a 1-D array is one input); ``x2``: ``(N2, d)`` or ``None`` (= ``x1``).
    - ``activation``: name (``"softplus"``), expression (``"log(1+exp(x))"``) or :class:`~kernelcalc.Activation`.
    - ``T`` > 0: time horizon; ``sigma_w, sigma_u, sigma_v`` > 0: weight scales of $W, U, v$.
    - ``tol``: relative accuracy target of the time discretisation (Gaussian expectations are
      computed to ~1e-13); ``time_nodes``: fix the number $M$ of Chebyshev intervals instead.

    **Returns:** :class:`~kernelcalc.Kernel` with ``nngp`` $=\sigma_v^2C(T,T)$ and
    ``ntk`` $=\sigma_v^2C(T,T)+\sigma_w^2\iint C\Lambda + \sigma_u^2\frac{x\cdot y}d\Lambda(0,0)$,
    shape ``(N1, N2)``; ``info`` records $M$, the expectation rule, sweep counts and timings.

    Inputs on a common sphere ($x\cdot x/d$ the same for all) take the fast path: the kernel is
    a function of $\theta=\arccos(x\cdot y/x\cdot x)$ alone, interpolated by Chebyshev series in $\theta$.

    ``weights="untied"``: independent weights in time, $dh=\sigma_w dB_t\phi(h)/\sqrt n$
    (:func:`kernelcalc.kernels.untied.untied_node_kernel`; its ODE rtol is ``min(tol, 1e-12)``).
    """
    if check_weights(weights) == "untied":
        if time_nodes is not None:
            raise KernelcalcInputError("time_nodes does not apply to weights='untied' (adaptive ODE solve)")
        return untied_node_kernel(x1, x2, activation=activation, T=T, sigma_w=sigma_w, sigma_u=sigma_u,
                                  sigma_v=sigma_v, tol=min(positive("tol", tol), 1e-12), progress=progress)
    T = positive("T", T)
    sigma_w, sigma_u, sigma_v = (positive(n, v) for n, v in
                                 (("sigma_w", sigma_w), ("sigma_u", sigma_u), ("sigma_v", sigma_v)))
    act = resolve_activation(activation)
    t0 = time.perf_counter()
    a, b, same = as_input_pair(x1, x2)
    solver = GoursatSolver(act, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, tol=tol, M=time_nodes,
                           grid=lambda M: chebyshev_discretisation(M, T), v_max=max_norm(a, b))
    nngp, ntk, ginfo = gram(a, None if same else b, solver, tol=max(tol, 1e-12), progress=progress)
    info = dict(solver.info, **ginfo, seconds=time.perf_counter() - t0)
    info["error_estimate"] = error_estimate(nngp, ntk, solver.relative_error_estimate(),
                                            ginfo.get("interpolation_error_estimate"))
    params = dict(T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)
    return Kernel(nngp=nngp, ntk=ntk, model="node", activation=act.name, params=params, info=info)
