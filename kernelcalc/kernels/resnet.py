r"""Infinite-width kernel of the weight-tied Euler ResNet, the depth-$L$ discretisation of the Neural ODE.

Model: $h^0=\sigma_u Ux/\sqrt d$, $h^\ell = h^{\ell-1} + \delta\,\sigma_w W\phi(h^{\ell-1})/\sqrt n$
($\delta = T/L$, the same $W$ in every layer), $f=\sigma_v v\cdot\phi(h^L)/\sqrt n$.  Its kernel
solves the discrete Goursat problems (left Riemann sums of the ODE's integrals):

$$S_{\ell m} = \sigma_u^2\tfrac{x\cdot y}d + \sigma_w^2\delta^2\!\sum_{i<\ell,\,j<m}\! C_{ij},\qquad
\Lambda_{\ell m} = \sigma_v^2\dot C_{LL} + \sigma_w^2\delta^2\!\sum_{\ell\le i<L,\ m\le j<L}\!\dot C_{ij}\Lambda_{i+1,j+1},$$

$K_{\rm NTK} = \sigma_v^2 C_{LL} + \sigma_w^2\delta^2\sum_{i,j<L} C_{ij}\Lambda_{i+1,j+1} + \sigma_u^2\frac{x\cdot y}d\Lambda_{00}$.
These finite sums are evaluated exactly by marching them row by row
(:func:`kernelcalc.kernels._march.euler_march`: $O(L^2)$ work, one pass, no Picard sweeps and no
$O(L^3)$ matrix products, so depths 1024–4096 compute), inside the same
:class:`~kernelcalc.kernels.ode.GoursatSolver` as :func:`~kernelcalc.node_kernel` (expectation rule, sphere
tables, cost guard).  As $L\to\infty$ the kernel converges to
``node_kernel`` with error $O(1/L)$ for smooth $\phi$.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from .._x64 import float64
from .._validation import as_input_pair, positive, positive_int, scale_keywords
from ..theory.activations import resolve_activation
from ..theory.assumptions import warn_if_assumption1_fails
from ._gram import error_estimate, gram, max_norm
from ._gram_norms_window import kink_window_cap
from .._results import Kernel
from .ode import Discretisation, GoursatSolver
from .untied import check_weights, untied_resnet_kernel

__all__ = ["resnet_kernel", "euler_discretisation"]


@functools.lru_cache(maxsize=16)
def euler_discretisation(L: int, T: float) -> Discretisation:
    """Matrices of the weight-tied Euler ResNet of depth L on [0, T] (see :class:`Discretisation`)."""
    delta = T / L
    idx = np.arange(L + 1)
    A = delta * (idx[None, :] < idx[:, None])                                   # i < l
    B = delta * ((idx[None, :] >= idx[:, None]) & (idx[None, :] < L))          # l <= i < L
    P = np.eye(L + 1, k=1)                                                      # (P Lam P^T)_ij = Lam_{i+1,j+1}
    w = delta * (idx < L)
    return Discretisation(f"euler(L={L}, T={T!r})", A.astype(float), B.astype(float), P, w.astype(float))


@functools.lru_cache(maxsize=16)
def _march_discretisation(L: int, T: float) -> Discretisation:
    r""":func:`euler_discretisation` as the solver uses it: the Euler ResNet is solved by its row march
    (:func:`kernelcalc.kernels._march.euler_march`), which reads only $L$ and $\delta=T/L$, so $A$, $B$, $P$ are
    zero-stride stand-ins of the right shape (no memory: the dense matrices take $3\cdot8(L+1)^2$ bytes, 6.4 GB at
    depth $2^{14}$, before the cost guard could speak)."""
    delta = T / L
    idx = np.arange(L + 1)
    shape = np.broadcast_to(np.zeros(()), (L + 1, L + 1))
    return Discretisation(f"euler(L={L}, T={T!r})", shape, shape, shape, (delta * (idx < L)).astype(float))


def cost_drivers(depth: int) -> tuple[str, ...]:
    """What drives the cost of a ResNet kernel solve, for the advice of a cost refusal: ``depth`` first (its
    ``depth + 1`` layers are the time nodes), then the scales and the number of points."""
    return (f"depth (depth + 1 = {depth + 1} time nodes)", "sigma_w, T, sigma_u or the input norm (the variance q)",
            "the number of points")


@float64
@scale_keywords("resnet")
def resnet_kernel(x1, x2=None, *, activation, depth, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0,
                  progress: bool | None = None, outputs=("nngp", "ntk"), out=None, client=None,
                  strict: bool = False, weights: str = "tied") -> Kernel:
    r"""Infinite-width NNGP and NTK of the weight-tied Euler ResNet of depth ``depth`` on $[0,T]$.

    Same arguments and result as :func:`~kernelcalc.node_kernel`, plus ``depth`` $=L\ge1$ (no ``tol``,
    ``time_nodes``: the sums are exact).  ``strict``: raise
    :class:`~kernelcalc.KernelcalcAccuracyError` instead of warning when the Picard sweeps, the
    quadrature or the sphere interpolation cannot meet their tolerance.
    ``weights="untied"``: independent $W_\ell$ with $\sqrt{T/L}$ branches
    (:func:`kernelcalc.kernels.untied.untied_resnet_kernel`).
    """
    if check_weights(weights) == "untied":
        return untied_resnet_kernel(x1, x2, activation=activation, depth=depth, T=T, sigma_w=sigma_w,
                                    sigma_u=sigma_u, sigma_v=sigma_v, progress=progress, outputs=outputs, out=out,
                                    client=client)
    depth = positive_int("depth", depth)
    T = positive("T", T)
    act = resolve_activation(activation)
    warn_if_assumption1_fails(act, context="resnet_kernel")
    t0 = time.perf_counter()
    a, b, same = as_input_pair(x1, x2)
    solver = GoursatSolver(act, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, M=depth,
                           grid=lambda L: _march_discretisation(L, T), scheme="Euler (exact discrete sums)",
                           v_max=max_norm(a, b), strict=strict, max_nodes=float("inf"))
    solver.cost_drivers = cost_drivers(depth)
    solver.window_correlation_cap = kink_window_cap(act)    # (a kink: the closest pairs off the sphere solved directly)
    # no biases: a positively homogeneous phi (relu) gives K(lx, my) = lm K(x, y), any inputs take the sphere
    # table; an odd phi (tanh) gives K(x, -y) = -K(x, y), half the solves
    nngp, ntk, ginfo = gram(a, None if same else b, solver, homogeneous=act.is_positively_homogeneous,
                            odd=act.is_odd, tol=1e-12, progress=progress, strict=strict,
                            outputs=outputs, out=out, client=client,
                            config=dict(model="resnet", activation=act.name, params=dict(
                                depth=depth, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)))
    info = dict(solver.info, **ginfo, seconds=time.perf_counter() - t0)
    info["error_estimate"] = error_estimate(nngp, ntk, solver.relative_error_estimate(),
                                            ginfo.get("interpolation_error_estimate"))
    params = dict(depth=depth, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)
    return Kernel(nngp=nngp, ntk=ntk, model="resnet", activation=act.name, params=params, info=info)
