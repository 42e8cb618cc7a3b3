r"""The infinite-width Neural ODE kernel (NNGP and NTK) by Chebyshev spectral collocation in time.

Model (width $n\to\infty$): $h_0=\sigma_u Ux/\sqrt d$, $\dot h_t=\sigma_w W\phi(h_t)/\sqrt n$
on $[0,T]$, $f=\sigma_v v\cdot\phi(h_T)/\sqrt n$, with $U, W, v$ iid $N(0,1)$.  The kernel
solves two Goursat problems (definitions in :mod:`kernelcalc.theory.recursion`):

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
would decay only algebraically (the kink of $\dot C$ along $t=s$), so kinked activations
take the collapsed-triangle grid of :mod:`kernelcalc.kernels.ode_kinked` instead (geometric convergence
across the kink; beyond $\sigma_wT=3$ its composite panels, :mod:`kernelcalc.kernels._panels`, also for gelu).  $M$ is chosen adaptively: doubled until the self-kernel NTK changes by
less than ``tol`` (relative); a grid that cannot reach ``tol`` warns
(:class:`~kernelcalc.KernelcalcAccuracyWarning`, or raises with ``strict=True``).  For
$\sigma_wT>3$ the interval is cut into $\lceil\sigma_wT/3\rceil$ elements with $M+1$ nodes each
(:func:`chebyshev_discretisation`): the same matrix form, spectral accuracy per element, and a
resolution that grows with $\sigma_wT$ (the solution varies like $e^{\sigma_w t}$).

**Solvers.** The forward equation is a Volterra equation with a double integral, so Picard
iteration converges factorially fast, $\|e_k\|\lesssim(\sigma_w^2LT^2)^k/(k!)^2$: each sweep is two
small matrix products per pair plus one batched evaluation of $C$ (about 10–25 sweeps to
$10^{-15}$; ~95 at $\sigma_wT=50$).  The sweeps stop at a relative change of $2\cdot10^{-15}$ or
when the change stagnates at rounding level (below $10^{-11}$ and no longer decreasing); the
achieved change is ``info["sweep_change"]`` and enters ``info["error_estimate"]``.  The backward equation is linear and solved the same way (no expectations).
The self-kernels and the cross-kernels of inputs of one norm (the sphere) are symmetric,
$S(t,s)=S(s,t)$: with a quadrature rule (large $q$, where one expectation costs $10^4$ or more integrand
evaluations) $C$ and $\dot C$ are evaluated on the $n(n+1)/2$ cells $t_i\le s_j$ only and mirrored.
The self-kernels $S_{xx}$ (one per distinct input norm) are solved first, with the diagonal
coupling through $q_x(t)=S_{xx}(t,t)$ updated each sweep; the cross-kernels then use the fixed
diagonals.  Off the sphere the norm-interpolation plan (:mod:`kernelcalc.kernels._gram_norms`) asks only
for the self-kernels of its few grid norms and check rows, not one per distinct input norm.

**Saturating activations at large $q$** (tanh, sigmoid; :meth:`GoursatSolver._fourier_dual`).  On the sphere
every solve shares one diagonal $q(t)$, and for a bounded $\phi$ the duals at a cell are Chebyshev series in the
correlation, $C=\sum_mc_m(q(t_i),q(s_j))T_m(\rho)$, with $O(\sqrt q)$ modes
(:mod:`kernelcalc.theory.polar_fourier`; the Mehler series needs $O(q)$ terms): the tables $c_m$ are built once
per pair of time nodes and every sweep of every pair sums them (:mod:`kernelcalc.kernels._fourier_solve`).
"""

from __future__ import annotations

import time

import numpy as np

from .._x64 import float64
from .._validation import KernelcalcInputError, accuracy_shortfall, as_input_pair, positive, positive_int, scale_keywords
from ..theory.activations import resolve_activation
from ..theory.assumptions import warn_if_assumption1_fails
from ._gram import error_estimate, gram, max_norm
from .._results import Kernel
from .ode_kinked_ladder import use_triangles
from .untied import check_weights, untied_node_kernel
# the time grid, the compiled solves and the solvers live in their own modules; their names stay importable here
from ._interp import chebyshev_lobatto
from .ode_grid import (_MAX_SWEEPS, _M_SEQUENCE, _NUMPY_MAX_WORK, _NUMPY_MAX_WORK_CLOSED, _NUMPY_MAX_WORK_HERMITE,  # noqa: F401
                       Discretisation, _backend, _compiled, _picard, _symmetric_from_marginals, chebyshev_discretisation,
                       time_elements)
from .ode_solver import _TIME_GRIDS, _WORK_LIMIT, GoursatSolver, KinkedGoursatSolver, cost_refusal  # noqa: F401

__all__ = ["node_kernel", "chebyshev_lobatto", "Discretisation", "GoursatSolver", "KinkedGoursatSolver"]



_GRADED_THETA = 6.0       # sigma_w * T past which smooth activations sample the theta table graded (graded_theta_table)


def graded_theta_table(sigma_w_T: float) -> bool:
    r"""Whether the sphere's $\theta$ table of a smooth activation is sampled in the graded variable of
    :mod:`._interp` (nodes clustered at $\theta=0$ and $\pi$): past $\sigma_wT$ = ``_GRADED_THETA`` (6).

    At long horizons nearby inputs decorrelate exponentially (the deficit $S_\parallel-S$ grows like
    $e^{\lambda t}$), so $K(\theta)$ varies on a scale $\sim e^{-\lambda T/2}$ near $\theta=0$ (and $\pi$):
    uniform nodes in $\theta$ resolve it only with many of them.  Measured (index from which the NTK's
    Chebyshev coefficients stay below 1e-10 of max|K|; sin / cos / erf): at $\sigma_wT=10$ uniform ~240 / ~224 /
    ~128 (sin, cos: the table took 513 nodes), graded ~160 / ~150 / ~100 (257 / 257 / 129 nodes); at
    $\sigma_wT=7$ the two are even (sin ~112 / ~105, erf ~90 / ~90), and at $\sigma_wT=3$-$5$ the uniform series
    is shorter (sin 80-96 against 96-128)."""
    return sigma_w_T > _GRADED_THETA


def check_tol(tol) -> float:
    """``tol`` as a float in (0, 1) (a relative accuracy target)."""
    tol = positive("tol", tol)
    if tol >= 1:
        raise KernelcalcInputError(f"tol must be a relative accuracy in (0, 1), got {tol!r}")
    return tol


@float64
@scale_keywords("node")
def node_kernel(x1, x2=None, *, activation, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0,
                tol: float = 1e-10, time_nodes: int | None = None, progress: bool | None = None,
                outputs=("nngp", "ntk"), out=None, client=None, strict: bool = False, weights: str = "tied") -> Kernel:
    r"""Infinite-width NNGP and NTK of the Neural ODE $dh/dt=\sigma_w W\phi(h)/\sqrt n$ on $[0,T]$.

    **Arguments:**

    - ``x1``: inputs, shape ``(N1, d)`` (a 1-D array is one input); ``x2``: ``(N2, d)`` or ``None`` (= ``x1``).
    - ``activation``: name (``"softplus"``), expression (``"log(1+exp(x))"``) or :class:`~kernelcalc.Activation`.
    - ``T`` > 0: time horizon; ``sigma_w, sigma_u, sigma_v`` > 0: weight scales of $W, U, v$.
    - ``tol`` in $(0,1)$: relative accuracy target of the time discretisation (Gaussian expectations are
      computed to ~1e-13); ``time_nodes`` $\ge 2$: fix the number $M$ of Chebyshev intervals per time
      element instead ($[0,T]$ is cut into $\lceil\sigma_wT\rceil$ elements).
    - ``strict``: raise :class:`~kernelcalc.KernelcalcAccuracyError` instead of warning
      (:class:`~kernelcalc.KernelcalcAccuracyWarning`) when an adaptive stage (time grid, Picard sweeps,
      quadrature, sphere interpolation) cannot meet its tolerance.

    **Returns:** :class:`~kernelcalc.Kernel` with ``nngp`` $=\sigma_v^2C(T,T)$ and
    ``ntk`` $=\sigma_v^2C(T,T)+\sigma_w^2\iint C\Lambda + \sigma_u^2\frac{x\cdot y}d\Lambda(0,0)$,
    shape ``(N1, N2)``; ``info`` records $M$, the elements, the expectation rule, sweep counts and
    changes, timings and ``error_estimate`` (largest absolute entrywise error, estimated from the achieved
    quadrature accuracy, time-grid refinement change and last Picard change).

    Inputs on a common sphere ($x\cdot x/d$ the same for all) take the fast path: the kernel is
    a function of $\theta=\arccos(x\cdot y/x\cdot x)$ alone, interpolated by Chebyshev series in $\theta$.

    **Scale:** ``outputs``: which Grams, ``("nngp", "ntk")`` (default), ``("ntk",)`` or ``("nngp",)``
    (one not computed is ``None``; peak memory is one $N_1\times N_2$ array per output plus a few
    tiles).  ``out``: a path or ``zarr.Group``: the Grams are written tile by tile to Zarr arrays
    ``ntk``/``nngp`` and returned as read-only Zarr arrays; a killed run restarted with the same
    arguments continues from the finished tiles; a store of another configuration is refused.
    ``client``: a ``dask.distributed.Client`` or scheduler address: the tiles run as a dask graph on
    that cluster.  ``progress``: a progress bar over the tiles (``None``, auto: when $N_1N_2\ge 5000^2$
    and stderr is a terminal; ``True``; ``False``).

    Large $\sigma_wT$, $\sigma_u$ or input norms make the pre-activation variance $q$ large.  On the sphere,
    tanh, sigmoid and other bounded smooth $\phi$ then take Chebyshev series in the correlation tabulated per
    pair of time nodes (:mod:`kernelcalc.theory.polar_fourier`; $\sigma_wT=10$ at N = 200 in a few times the
    $T=1$ time).  Past the Hermite series' reach, softplus, silu, tanh and sigmoid otherwise take the large-$q$ rule of
    :mod:`kernelcalc.theory.largeq` (closed-form asymptote + localised remainder: its cost does not grow with
    $q$, its accuracy is measured and reported); when the Gaussian expectations would still cost many minutes
    the call is refused with a :class:`~kernelcalc.KernelcalcInputError` that names the variance and the limit.

    ``weights="untied"``: independent weights in time, $dh=\sigma_w dB_t\phi(h)/\sqrt n$
    (:func:`kernelcalc.kernels.untied.untied_node_kernel`; its ODE rtol is ``min(tol, 1e-12)``).
    """
    if check_weights(weights) == "untied":
        if time_nodes is not None:
            raise KernelcalcInputError("time_nodes does not apply to weights='untied' (adaptive ODE solve)")
        return untied_node_kernel(x1, x2, activation=activation, T=T, sigma_w=sigma_w, sigma_u=sigma_u,
                                  sigma_v=sigma_v, tol=min(positive("tol", tol), 1e-12), progress=progress,
                                  outputs=outputs, out=out, client=client)
    T = positive("T", T)
    tol = check_tol(tol)
    if time_nodes is not None:
        time_nodes = positive_int("time_nodes", time_nodes, minimum=2)
    act = resolve_activation(activation)
    warn_if_assumption1_fails(act, context="node_kernel")
    t0 = time.perf_counter()
    a, b, same = as_input_pair(x1, x2)
    P = time_elements(T, sigma_w)
    kinked = use_triangles(act, T, sigma_w)
    if kinked:    # a kink on the diagonal t = s: the two-triangle grid
        solver = KinkedGoursatSolver(act, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, tol=tol,
                                     M=time_nodes, v_max=max_norm(a, b), strict=strict)
    else:
        solver = GoursatSolver(act, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, tol=tol, M=time_nodes,
                               grid=lambda M: chebyshev_discretisation(M, T, P), v_max=max_norm(a, b), strict=strict)
    solver.info["time_elements"] = P
    solver.pairs_hint = min(a.shape[0] * (a.shape[0] + 1) // 2 if same else a.shape[0] * b.shape[0], 65)
    norms = np.concatenate([np.sum(a * a, axis=1), np.sum(b * b, axis=1)])
    # the sphere, to rounding (1e-12: the Gram's norm groups, so that it is one group: the fourier dual's tables
    # are per pair of norms); the cost guard's estimate
    solver.same_norms = bool(np.ptp(norms) <= 1e-12 * np.max(norms))
    # no biases: a positively homogeneous phi (relu) gives K(lx, my) = lm K(x, y), any inputs take the sphere
    # table; an odd phi (tanh) gives K(x, -y) = -K(x, y), half the solves
    nngp, ntk, ginfo = gram(a, None if same else b, solver, homogeneous=act.is_positively_homogeneous,
                            odd=act.is_odd, tol=max(tol, 1e-12), progress=progress, strict=strict,
                            outputs=outputs, out=out, client=client, graded_theta=kinked or graded_theta_table(sigma_w * T),
                            config=dict(model="node", activation=act.name, params=dict(
                                T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, tol=tol, time_nodes=time_nodes)))
    info = dict(solver.info, **ginfo, seconds=time.perf_counter() - t0)
    info["error_estimate"] = error_estimate(nngp, ntk, solver.relative_error_estimate(),
                                            ginfo.get("interpolation_error_estimate"))
    _check_estimate(info["error_estimate"], nngp, ntk, tol, strict)
    params = dict(T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)
    return Kernel(nngp=nngp, ntk=ntk, model="node", activation=act.name, params=params, info=info)


def _check_estimate(estimate: float, nngp, ntk, tol: float, strict: bool) -> None:
    r"""Never silently above $10\,$tol: the sum of the stages' estimates (each met its own tolerance, but the
    expectations' error is amplified by $1+\sigma_wT$ through the time integrals; audit: tanh at $\sigma_wT=10$, N = 3,
    1.1e-9 of max |NTK| without a warning) warns (raises when ``strict``) when it passes $10\,$tol relative to the
    largest entry."""
    from ._gram import _max_abs

    scale = max(_max_abs(nngp), _max_abs(ntk))
    if scale > 0 and estimate > 10.0 * tol * scale:
        accuracy_shortfall(f"node_kernel: the error estimate {estimate / scale:.1e} (relative to the largest entry) "
                           f"exceeds 10 tol = {10.0 * tol:.1e}", strict)
