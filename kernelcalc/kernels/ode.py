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
diagonals.  Off the sphere a Gram plan announces its norm range (:meth:`GoursatSolver.prepare_range`):
$q_v(t)$ is then interpolated in $\log v$ (:mod:`kernelcalc.kernels._diagonals`, a few tens of
self-kernel solves, verified at held-out norms) instead of one solve per distinct norm.

**Saturating activations at large $q$** (tanh, sigmoid; :meth:`GoursatSolver._fourier_dual`).  On the sphere
every solve shares one diagonal $q(t)$, and for a bounded $\phi$ the duals at a cell are Chebyshev series in the
correlation, $C=\sum_mc_m(q(t_i),q(s_j))T_m(\rho)$, with $O(\sqrt q)$ modes
(:mod:`kernelcalc.theory.polar_fourier`; the Mehler series needs $O(q)$ terms): the tables $c_m$ are built once
per pair of time nodes and every sweep of every pair sums them (:mod:`kernelcalc.kernels._fourier_solve`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings

import numpy as np

from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from ..theory import recursion as rec
from .._validation import KernelcalcAccuracyWarning, KernelcalcInputError, accuracy_shortfall, as_input_pair, positive, positive_int, scale_keywords, warn
from ..theory.activations import resolve_activation
from ..theory.assumptions import warn_if_assumption1_fails
from ..theory.gaussian import DEFAULT_TOL, MEMORY_BUDGET, DualKernels, Gathered, dual_kernels, hermite_order, hermite_q_limit
from ..theory.largeq_table import cheapest_tabulated_rule
from ._diagonals import DiagonalInterpolant
from ._interp import chebyshev_lobatto
from ._gram import bucket, by_correlation, error_estimate, flat_pairs, gram, max_norm, pad_to
from .._results import Kernel
from .ode_kinked import KinkedSolverMixin, use_triangles
from .untied import check_weights, untied_node_kernel

__all__ = ["node_kernel", "chebyshev_lobatto", "Discretisation", "GoursatSolver", "KinkedGoursatSolver"]

_MAX_SWEEPS = 400
_SWEEP_TOL = 2e-15
_STAGNATION = 1e-11       # a Picard change below this that stops decreasing is rounding noise
_M_SEQUENCE = (8, 12, 16, 24, 32, 48, 64, 96, 128)
_ELEMENT_LENGTH = 3.0     # sigma_w * (length of one Chebyshev element) at most
_KINK_M_MAX = 32          # kinked phi: C is not smooth at r = 1 (the diagonal t = s), the grid converges
                          # only algebraically; stop here and report the achieved change
_MAX_NODES = 513          # time nodes of the composite grid at most
#: the cost guard's price of one cell of the Euler ResNet's row march beyond its expectations (numpy work per cell:
#: measured about 80 ns per cell and solve, sin at depth 1024-2048: 8.4 s and 21 s for 4 inputs on the sphere; without
#: it a closed-form march was priced at 0.1 per cell, and depth 2^14 ran for more than 5 min instead of refusing)
_MARCH_CELL_OPS = 5.0
_MAX_CACHED_DIAGONALS = 8192   # self-kernel diagonals kept per solver
_MAX_CACHED_MARGINALS = 256    # per-norm marginals kept per solver (~0.1 MB each for a 560-term series)
_WORK_LIMIT = 1e10        # weighted integrand evaluations one Gram may cost (about a minute of CPU) before we refuse
_BOUND = 1e150            # |C| and |S| inside the Picard sweeps (see _bounded)
_COST_SWEEPS = 40        # Picard sweeps a solve is costed at
_NUMPY_MAX_WORK = 1.2e8   # a call this small runs in numpy, not jit-compiled (see _backend)
_NUMPY_MAX_WORK_HERMITE = 1e13   # the same for the Mehler series (numpy sums each pair's own terms only)
_NUMPY_MAX_WORK_CLOSED = 1e6   # the same for closed forms (on fine time grids: the n^3 products dominate)
_JIT_BATCH = 256          # pairs per compiled cross-kernel batch (one shape: one compilation per kernel)
_JIT_NORMS = 64           # distinct norms per compiled cross-kernel call at least (padded: one shape)
_MIN_BATCH = 8            # pairs per cross-kernel batch at least (batches are grouped by correlation)
_GRADED_THETA = 6.0       # sigma_w * T past which smooth activations sample the theta table graded (graded_theta_table)
_MAX_TIME_GRIDS = 32      # memoised (rule, time grid) choices (GoursatSolver._dual_and_M)
#: (parameters, largest norm) -> (rule, M, info, warnings, {x.x/d: q(t)}): the memo of
#: :meth:`GoursatSolver._dual_and_M` and of the self-kernel diagonals on that grid
_TIME_GRIDS: dict = {}


def _picard(step, S_init, tol=None, max_sweeps=None, xp=jnp):
    """Iterate ``S <- step(S)`` until the largest relative change (per problem: leading axis) is
    below ``tol``, or has stagnated at rounding level (below ``_STAGNATION`` and not decreasing), or is
    not finite.  Returns ``(S, last change, sweeps)``; the caller checks the change.  ``xp``: jax.numpy
    (a ``lax.while_loop``, to be traced) or numpy (a Python loop, run at once)."""
    tol = _SWEEP_TOL if tol is None else tol
    max_sweeps = _MAX_SWEEPS if max_sweeps is None else max_sweeps

    def change(S_new, S):
        axes = tuple(range(1, S.ndim))
        num = xp.max(xp.abs(S_new - S), axis=axes)
        return xp.max(num / xp.maximum(xp.max(xp.abs(S_new), axis=axes), 1e-300))

    def cond(state):
        _, delta, prev, k = state
        done = (delta <= tol) | ((delta < _STAGNATION) & (delta >= prev)) | ~xp.isfinite(delta)
        return ~done & (k < max_sweeps)

    def body(state):
        S, delta, _, k = state
        S_new = step(S)
        return S_new, change(S_new, S), delta, k + 1

    big = xp.asarray(1e300)    # "no change measured yet" (finite: a non-finite change means overflow)
    if xp is np:
        state = (S_init, big, big, 0)
        while cond(state):
            state = body(state)
        S, delta, _, k = state
    else:
        S, delta, _, k = jax.lax.while_loop(cond, body, (S_init, big, big, 0))
    # a solution that reached the bound of _bounded has no finite value there: report it as an overflow
    return S, xp.where(xp.max(xp.abs(S)) >= 1e-10 * _bound(S_init, xp), xp.inf, delta), k


def _bound(S0, xp):
    """:data:`_BOUND` times the scale of the initial values (at least 1), at most 1e300."""
    return xp.minimum(_BOUND * xp.maximum(1.0, xp.max(xp.abs(S0))), 1e300)


def _bounded(C, xp, S0):
    r"""$C$ clipped to $\pm$:func:`_bound` (:data:`_BOUND` times the scale of the initial values ``S0``; NaN
    and $\pm\infty$ included) inside a Picard sweep.

    Near a finite-time blow-up (a super-linear $\phi$ such as $x^2$, whose variance solves a Riccati-type
    equation) the early sweeps overshoot the solution by many orders of magnitude: unclipped they overflow
    and the sweeps stop, although the solution is finite on $[0,T]$ and later sweeps would converge to it
    (the Volterra structure settles the early times first).  Clipped, the sweeps go on; a converged solution
    that comes within $10^{-10}$ of the bound (the clipped $C$ integrated) has no finite value, and
    :func:`_picard` reports it as an overflow (the blow-up error).  The bound, $10^{150}$, lies far beyond any variance whose $C$ is representable."""
    b = _bound(S0, xp)
    return xp.clip(xp.nan_to_num(C, nan=b, posinf=b, neginf=-b), -b, b)


_QUADRATURE_RULES = ("asymptotic", "trapezoid", "polar")   # rules whose cost per cell dominates a sweep


def _symmetric_from_marginals(dual, m1, m2, S, derivative, xp):
    r"""``dual.from_marginals(m1, m2, S)`` for a grid symmetric in $(t,s)$: evaluated on the upper triangle
    $t_i\le s_j$ only and mirrored (half the expectations).

    The self-kernel is symmetric, $S_{xx}(t,s)=S_{xx}(s,t)$, and so is every cross-kernel of two inputs of
    the same norm ($S_{xy}(t,s)=E[h_t(x)h_s(y)]$ depends on $x\cdot x=y\cdot y$ and $x\cdot y$ only, which
    are invariant under $x\leftrightarrow y$): on the sphere every Picard sweep needs $C$ at
    $n(n+1)/2$ cells, not $n^2$.  ``m1``/``m2``: marginals broadcastable to ``S`` (``(..., B, n, n)``)."""
    n = S.shape[-1]
    i, j = np.triu_indices(n)
    back = np.zeros((n, n), dtype=np.int64)
    back[i, j] = np.arange(i.size)
    back[j, i] = np.arange(i.size)
    a1 = tuple(xp.broadcast_to(a, a.shape[:-2] + S.shape[-2:])[..., i, j] for a in m1)
    a2 = tuple(xp.broadcast_to(a, a.shape[:-2] + S.shape[-2:])[..., i, j] for a in m2)
    out = dual.from_marginals(a1, a2, S[..., i, j], derivative=derivative, xp=xp)
    return tuple(o[..., back] for o in out) if derivative else out[..., back]


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
def chebyshev_discretisation(M: int, T: float, elements: int = 1) -> Discretisation:
    r"""The spectral Neural-ODE grid: $[0,T]$ cut into ``elements`` equal elements, each with $M+1$
    Chebyshev–Lobatto nodes (neighbours share their end node: $PM+1$ nodes in all).

    $A_{ik}=\int_0^{t_i}\ell_k$ for the piecewise Lagrange basis: the full weights of every earlier
    element plus the local spectral integration matrix of the element holding $t_i$ (block lower
    triangular), $w$ the composite Clenshaw–Curtis weights, $B=\mathbf 1w^\top-A$, $P=I$.  Short
    elements keep the discrete Volterra operator's norm $\sigma_w^2\|A\|^2$ small, so the Picard
    sweeps converge at every $\sigma_wT$ (one element of length $T$ diverges once $\sigma_wT\gtrsim3$).
    """
    P = int(elements)
    n = P * M + 1
    if n > 4 * _MAX_NODES:   # before allocating (4 n^2 floats): the solver's own limit is _MAX_NODES
        raise KernelcalcInputError(
            f"the horizon T = {T:g} needs {P} time elements (sigma_w*T <= {_ELEMENT_LENGTH:g} each; {n} nodes, more than "
            f"the limit {_MAX_NODES}): supported up to "
            f"sigma_w*T ~ {_ELEMENT_LENGTH * (_MAX_NODES - 1) / _M_SEQUENCE[0]:g}; reduce T or sigma_w")
    _, J, w = chebyshev_lobatto(M, T / P)
    A = np.zeros((n, n))
    W = np.zeros(n)
    for e in range(P):
        sl = slice(e * M, e * M + M + 1)
        A[sl] = W[None, :]                      # integral over the earlier elements
        A[sl, sl] += J                          # plus the local one
        W[sl] += w
    name = f"chebyshev-lobatto(M={M}, T={T!r})" if P == 1 else f"chebyshev-lobatto(M={M}, elements={P}, T={T!r})"
    return Discretisation(name, A, W[None, :] - A, np.eye(n), W)


def time_elements(T: float, sigma_w: float) -> int:
    r"""Number of Chebyshev elements: $\lceil\sigma_wT/\ell\rceil$ with $\ell$ = ``_ELEMENT_LENGTH``."""
    return max(1, int(math.ceil(sigma_w * T / _ELEMENT_LENGTH - 1e-9)))


@functools.lru_cache(maxsize=32)
@float64
def _compiled(dual: DualKernels, disc: Discretisation, sigma_w: float, sigma_v: float, backend: str = "jax",
              symmetric: bool = False):
    """``(self_solve, cross_solve)`` for one grid: jit-compiled (``backend="jax"``), or the same code run
    in numpy (``"numpy"``, for problems too small for the compilation to pay; see :func:`_backend`).
    ``symmetric``: every cross-kernel pair has inputs of one norm (the sphere): with a quadrature rule $C$ is
    evaluated on half the grid (:func:`_symmetric_from_marginals`; the self-kernel always is)."""
    if dual.method == "fourier":   # Chebyshev tables per pair of time nodes (numpy only)
        from ._fourier_solve import fourier_solves
        return fourier_solves(dual, disc, sigma_w, sigma_v, _picard)
    if _marches(disc):          # the Euler ResNet: exact row-by-row recursions, O(L^2), no sweeps
        from ._march import euler_march
        L = disc.A.shape[0] - 1
        return euler_march(dual, L, float(disc.w[0]) * L, sigma_w, sigma_v)
    xp = np if backend == "numpy" else jnp
    jit = (lambda f: f) if backend == "numpy" else jax.jit
    A, B, P, w = (xp.asarray(a) for a in (disc.A, disc.B, disc.P, disc.w))
    n = A.shape[0]
    jumps = dual.activation.jumps and dual.method != "hermite"   # (the marginals are the variances alone)
    odd = dual.activation.is_odd
    halve = dual.method in _QUADRATURE_RULES       # symmetric grids: C on the upper triangle only

    def dual_of(m1, m2, S, derivative=True, tails=None, sym=False, tol=None):
        if sym and halve:
            return _symmetric_from_marginals(dual, m1, m2, S, derivative, xp)
        return dual.from_marginals(m1, m2, S, derivative=derivative, xp=xp, tails=tails, tol=tol)

    loose = xp is np and dual.method == "hermite"

    def sweep_tol():
        """Per Picard sweep (numpy Hermite rule): a series tolerance 1e-3 times the last change (a power of
        ten, at most 1e-6; the rule's own once the change is below 1e-6).  A sweep far from convergence need
        not evaluate C exactly: the fixed point, the stopping test (``S_new = step(S)`` with the exact map
        once the change is below ~1e-10) and so the result are those of the full series, and its early
        sweeps sum fewer terms (the Mehler series truncated by correlation at a looser tol, and shorter
        self-kernel coefficients).  Returns ``(tol or None, record)``: ``record(S)`` notes the iterate."""
        if not loose:
            return (lambda: None), (lambda S: None)
        seen = []

        def current():
            if len(seen) < 2:
                return 1e-6
            a, b = seen[-1], seen[-2]
            delta = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-300))
            t = min(1e-6, 1e-3 * delta)
            # close to convergence (a change below 1e-6): the exact map, so that a perturbation never reaches
            # _picard's stagnation test (changes below _STAGNATION)
            if not math.isfinite(t) or t < 1e-9 or t <= dual.rule.tol:
                return None
            return 10.0 ** math.floor(math.log10(t))

        def record(S):
            seen.append(S)
            del seen[:-2]
        return current, record

    @jit
    def self_solve(S0):
        """S0: (U,) initial variances -> S (U, n, n), sweeps, last change."""
        current, record = sweep_tol()

        def step(S):
            record(S)
            t = current()
            extra = {} if t is None else {"tol": t}
            m = dual.marginal(xp.diagonal(S, axis1=1, axis2=2), derivative=False, xp=xp, **extra)   # (U, n)
            mi = tuple(a[..., :, None] for a in m)
            mj = tuple(a[..., None, :] for a in m)
            tl = dual.tails(m, xp, **extra)
            C = dual_of(mi, mj, S, derivative=False, tails=None if tl is None else (tl, tl), sym=True, tol=t)
            return S0[:, None, None] + A @ rec.ode_forward_source(_bounded(C, xp, S0), sigma_w) @ A.T

        S_init = xp.broadcast_to(S0[:, None, None], (S0.shape[0], n, n))
        return _picard(step, S_init, xp=xp)

    @jit
    def marginals(diag):
        """diag: (U, n) diagonals q(t) of the distinct norms -> their marginals (Hermite coefficients),
        computed once per call and shared by all its cross-kernel batches."""
        return dual.marginal(diag, xp=xp)

    lazy = xp is np and dual.method == "hermite"
    last = {}

    def tails_of(m):       # numpy: the tails of the marginals that a call's batches share, computed once
        if xp is not np:
            return dual.tails(m, xp)
        hit = last.get("hit")          # one tuple: atomic under threads
        if hit is None or hit[0] is not m:
            hit = last["hit"] = (m, dual.tails(m, xp))
        return hit[1]

    @jit
    def cross_solve(m, ix, iy, S0):
        """m: :func:`marginals` of the U distinct norms, ix, iy: (B,) indices into them; S0: (B,)
        -> nngp, ntk (B,) and diagnostics."""
        if lazy:    # numpy Hermite: the truncated series gathers only the coefficients it sums
            mx = (m[0][ix, :, None],) + tuple(Gathered(a, ix, -1) for a in m[1:])
            my = (m[0][iy, None, :],) + tuple(Gathered(a, iy, -2) for a in m[1:])
        else:
            mx = tuple(a[..., ix, :, None] for a in m)    # fixed marginals
            my = tuple(a[..., iy, None, :] for a in m)
        tl = tails_of(m)                              # once: the series truncation of every sweep, per pair
        tails = None if tl is None else (tuple(t[:, ix] for t in tl), tuple(t[:, iy] for t in tl))

        if jumps:
            # phi jumps: C(rho) has an infinite slope at rho = 1, so for identical inputs (and opposite ones of an
            # odd phi) the cross map with the fixed diagonals q has spurious fixed points below S_xx, and Picard
            # finds one.  There the cross kernel is +-S_xx: iterate it as the self-kernel, with its own diagonal.
            n0 = xp.sqrt(mx[0][:, 0, 0] * my[0][:, 0, 0])
            rho0 = xp.where(n0 > 0, S0 / xp.where(n0 > 0, n0, 1.0), 0.0)
            self_like = (ix == iy) & ((rho0 == 1.0) | ((rho0 == -1.0) & odd))

            def step(S):
                d = xp.abs(xp.diagonal(S, axis1=1, axis2=2))
                ax = xp.where(self_like[:, None, None], d[:, :, None], mx[0])
                ay = xp.where(self_like[:, None, None], d[:, None, :], my[0])
                C = dual.from_marginals((ax,), (ay,), S, derivative=False, xp=xp)
                return S0[:, None, None] + A @ rec.ode_forward_source(_bounded(C, xp, S0), sigma_w) @ A.T
        else:
            current, record = sweep_tol()

            def step(S):
                record(S)
                C = dual_of(mx, my, S, derivative=False, tails=tails, sym=symmetric, tol=current())
                return S0[:, None, None] + A @ rec.ode_forward_source(_bounded(C, xp, S0), sigma_w) @ A.T

        S_init = xp.broadcast_to(S0[:, None, None], (S0.shape[0], n, n))
        S, dS, nS = _picard(step, S_init, xp=xp)
        C, Cdot = dual_of(mx, my, S, tails=tails, sym=symmetric and not jumps)
        LamT = rec.ode_backward_terminal(Cdot[:, -1, -1], sigma_v)

        def back(Lam):
            return LamT[:, None, None] + B @ rec.ode_backward_source(Cdot, P @ Lam @ P.T, sigma_w) @ B.T

        Lam, dL, nL = _picard(back, xp.broadcast_to(LamT[:, None, None], S.shape), xp=xp)
        integral = xp.einsum("i,bij,j->b", w, C * (P @ Lam @ P.T), w)
        nngp = rec.ode_nngp(C[:, -1, -1], sigma_v)
        ntk = rec.ode_ntk(C[:, -1, -1], integral, S0, Lam[:, 0, 0], sigma_v, sigma_w)
        return nngp, ntk, xp.maximum(dS, dL), xp.maximum(nS, nL)

    return self_solve, cross_solve, marginals


_FOURIER_MIN_TERMS = 2048   # Mehler terms beyond which a saturating phi takes the "fourier" dual (GoursatSolver._fourier_dual)
_FOURIER_Q_MAX = 400.0      # ... up to this variance (tanh: about 1100 Chebyshev modes)


def _saturating(act) -> bool:
    r"""Whether $\phi$ is bounded on the real line (numerically: finite and flat far out on both sides)."""
    with np.errstate(all="ignore"):
        far = np.asarray(act.numpy_fn(np.array([-1e4, -1e3, 1e3, 1e4])), dtype=float)
        near = np.asarray(act.numpy_fn(np.linspace(-10.0, 10.0, 201)), dtype=float)
    if not (np.all(np.isfinite(far)) and np.all(np.isfinite(near))):
        return False
    scale = max(float(np.max(np.abs(near))), 1e-300)
    return bool(abs(far[0] - far[1]) <= 1e-6 * scale and abs(far[2] - far[3]) <= 1e-6 * scale)


def _marches(disc: Discretisation) -> bool:
    """Whether ``disc`` is the Euler ResNet's, solved by :func:`kernelcalc.kernels._march.euler_march`."""
    return disc.name.startswith("euler(")


def _backend(dual: DualKernels, problems: int, nodes: int) -> str:
    r"""``"numpy"`` when the solves of ``problems`` kernels (all the problems of one call) on ``nodes`` time
    nodes are small enough that running them in numpy beats compiling them, else ``"jax"``.

    The work is $\text{problems}\cdot\text{nodes}^2\cdot\max(\text{terms}, 16)$ (terms: the Hermite series
    length; 1 for a closed form).  Measured side by side (softplus, 592 terms, 13 nodes, busy 2-core
    machine): 1024 cross-kernel problems (work 1e8) take 2.2 s in numpy and 0.43 s compiled, but compiling
    the cross-kernel solve takes 1.5-2.5 s (the self-kernel solve ~1.8 s, the marginals ~0.7 s), and the
    first compilation also imports jax (~1-2 s).  Up to :data:`_NUMPY_MAX_WORK` (1.2e8: about 2.5 s of
    numpy, what the compilation and the import cost; the time-grid choice, the sphere's theta tables, the
    per-norm self-kernels, few-pair Grams, the norm interpolation of moderately spread norms) numpy is
    used: the first call on new data, which the Gram plans make, is what counts.  Larger calls are
    compiled once per kernel, in batches of a fixed size (:data:`_JIT_BATCH`) over a fixed number of
    norms (:data:`_JIT_NORMS`), so the calls of one Gram plan share one compilation.
    Closed forms (a few flops per cell, on time grids of up to 513 nodes for kinked ones, where the
    $n^3$ matrix products dominate) keep the limit 1e6 (:data:`_NUMPY_MAX_WORK_CLOSED`).
    The Mehler series has the limit :data:`_NUMPY_MAX_WORK_HERMITE` (1e13, with the work counted at the
    full series length): numpy sums each pair's own truncated series and gathers only those coefficients
    (:func:`~kernelcalc.theory.gaussian.HermiteRule.series`), where the compiled loop runs every batch to
    its largest truncation.  Measured side by side (node tanh, N = 2000 standardised rows, 12 338 pair
    solves, K = 4192, busy 2-core machine): 9.3 s of CPU in numpy against 40-50 s compiled.
    The quadrature rules (trapezoid, polar) are jax only.  The choice depends on the sizes only, so a
    given call always takes the same path (the two agree to rounding, ~1e-15 relative)."""
    if not dual.numpy_ok:
        return "jax"
    if dual.method == "fourier":   # numpy only (kernels/_fourier_solve.py)
        return "numpy"
    limit = _NUMPY_MAX_WORK_HERMITE if dual.method == "hermite" else min(_NUMPY_MAX_WORK, _NUMPY_MAX_WORK_CLOSED)
    per = 16 if dual.method == "closed" else max(dual.points, 16)   # a closed form's price: numpy still the cheaper
    return "numpy" if problems * nodes * nodes * per <= limit else "jax"


class _BlowUp(KernelcalcInputError):
    """The solution is not finite (a blow-up or an overflow): a finer time grid may still resolve it."""


class GoursatSolver:
    r"""Kernel evaluator for the Neural ODE or the weight-tied ResNet at fixed $(\phi, T, \sigma)$.

    ``solver(sxx, syy, sxy)`` maps input second moments $x\cdot x/d$, $y\cdot y/d$, $x\cdot y/d$
    (arrays of one shape) to ``(nngp, ntk)``.  ``grid(M)`` gives the :class:`Discretisation`;
    with ``M=None`` it is refined through ``_M_SEQUENCE`` until the self-kernel NTK of the largest
    norm changes by less than ``tol`` (spectral ODE grid); a fixed ``M`` is used as is (ResNet depth).
    Every shortfall (grid, Picard sweeps, quadrature) warns
    (:class:`~kernelcalc.KernelcalcAccuracyWarning`) or, with ``strict``, raises; the achieved
    values are in ``info`` and in :meth:`relative_error_estimate`.
    """

    def __init__(self, activation, *, T, sigma_w, sigma_u, sigma_v, grid, v_max, tol=1e-10, M=None,
                 scheme="Chebyshev-Lobatto spectral collocation", strict=False, max_nodes=_MAX_NODES):
        self.activation = resolve_activation(activation)
        self.T, self.sigma_w, self.sigma_u, self.sigma_v = T, sigma_w, sigma_u, sigma_v
        self.grid, self.scheme = grid, scheme
        self.tol = tol
        self.M_fixed = M
        self.strict = strict
        self.max_nodes = max_nodes
        self.v_max = float(v_max)   # largest input x.x/d of the whole Gram: fixes the quadrature range
        self.pairs_hint = 1         # pairs the Gram will evaluate (to refuse hopeless work early)
        self.same_norms = False     # whether all its inputs share one norm (the sphere: symmetric problems)
        self.info: dict = {}
        self._diagonals: dict = {}  # x.x/d -> q(t) on the final grid (the Gram's plans call us several times)
        self._shared_diagonals: dict = {}   # the same, shared by the calls that reuse this time grid (memo)
        self._shortfalls = 0        # accuracy warnings issued by this solver's sweeps
        #: what drives the cost of a solve, for the advice of a cost refusal (:func:`cost_refusal`)
        self.cost_drivers = ("sigma_w or T (time nodes)", "sigma_u or the input norm (the variance q)",
                             "the number of points")
        self._interp = None         # DiagonalInterpolant of the Gram's norm range (prepare_range)
        self._planned_pairs = 0     # pair solves a Gram plan announced (plan_pairs): the backend's work
        self._marginals: dict = {}  # x.x/d -> its Gaussian marginals on the final grid (numpy rules)

    # -- diagnostics -------------------------------------------------------------------------
    def _blow_up(self, what: str) -> "_BlowUp":
        """The right error for a non-finite solution: super-linear phi, float64 overflow, or the solver."""
        f = self.activation.numpy_fn
        with np.errstate(all="ignore"):
            big = np.array([-500.0, -50.0, 50.0, 500.0])
            vals = np.abs(np.asarray(f(big), dtype=float))
            x = np.linspace(-50, 50, 2001)
            slope = np.abs(np.asarray(self.activation.numpy_derivative(x), dtype=float))
        lip = float(np.max(slope[np.isfinite(slope)], initial=1.0))
        superlinear = (not np.all(np.isfinite(vals))
                       or max(vals[0] / 500, vals[3] / 500) > 2.0 * max(vals[1] / 50, vals[2] / 50) + 1e-12)
        where = f"on [0, T = {self.T:g}] (sigma_w = {self.sigma_w:g}, sigma_u = {self.sigma_u:g})"
        if superlinear:
            return _BlowUp(
                f"{what} of the {self.activation.name} network blows up {where}: phi grows faster than "
                "linearly, so the infinite-width dynamics exist only on a shorter horizon; reduce T or sigma_w")
        # |phi(h)| <= |phi(0)| + lip |h|: q(t) grows at most like exp(2 sigma_w lip t)
        log_bound = math.log(max(self.sigma_u**2 * self.v_max, 1e-300) + 1.0) + 2.0 * self.sigma_w * lip * self.T
        if log_bound > 700:
            return _BlowUp(
                f"{what} of the {self.activation.name} network overflows float64 {where}: phi grows "
                f"linearly (|phi'| <= {lip:.3g}), so q(T) can reach exp({log_bound:.0f}) > 1.8e308; "
                "reduce T, sigma_w or the input norm")
        return _BlowUp(
            f"{what} of the {self.activation.name} network is not finite {where}, although phi grows at "
            f"most linearly (q(T) <= exp({log_bound:.0f})): the time solver failed ({self.info.get('M')} "
            f"intervals per element, {self.info.get('time_elements', 1)} elements); please report this")

    def _sweeps(self, key: str, delta, sweeps, what: str):
        """Record the Picard diagnostics of one solve and check them."""
        delta, sweeps = float(delta), int(sweeps)
        self.info[f"{key}_sweeps"] = max(sweeps, self.info.get(f"{key}_sweeps", 0))
        if not math.isfinite(delta):
            raise self._blow_up(what)
        self.info["sweep_change"] = max(delta, self.info.get("sweep_change", 0.0))
        if delta > _STAGNATION:
            self._shortfalls += 1
            accuracy_shortfall(
                f"{what}: the Picard sweeps stopped after {sweeps} sweeps at a relative change of {delta:.1e} "
                f"(> {_STAGNATION:g}); sigma_w*T = {self.sigma_w * self.T:g} may be too large", self.strict)

    def _check_cost(self, dual, pairs: int, n: int, symmetric: bool = False):
        """Refuse (clear error naming the limit) when a solve would take many minutes.  ``symmetric``: the
        problems are symmetric in $(t,s)$ (self-kernels, same-norm pairs), so a quadrature rule evaluates
        $n(n+1)/2$ cells per sweep (:func:`_symmetric_from_marginals`), not $n^2$."""
        unit = 0.05 if dual.method in ("hermite", "closed", "fourier") else 1.0   # series terms are cheap multiply-adds
        if _marches(self.grid(self.M_fixed or _M_SEQUENCE[0])):          # Euler ResNet: one pass, C and Cdot per cell
            sweeps = (1, "pass (row march)")
            per_cell = 2 * unit * dual.points + _MARCH_CELL_OPS
            per_cell_label = (f"operations per cell (C and Cdot: 2 x {dual.points} quadrature points at weight {unit:g}, "
                              f"plus {_MARCH_CELL_OPS:g} for the row march)")
        else:
            sweeps = (_COST_SWEEPS, "Picard sweeps")
            per_cell = unit * dual.points + 0.04 * n       # the expectations, and 2 matrix products per sweep
            per_cell_label = (f"operations per cell ({dual.points} quadrature points at weight {unit:g}, plus {0.04 * n:g} "
                              "for the matrix products)")
        half = symmetric and dual.method in _QUADRATURE_RULES and not _marches(self.grid(self.M_fixed or _M_SEQUENCE[0]))
        cells = (n * (n + 1) // 2, f"time cells ({n}({n}+1)/2: symmetric in t, s)") if half else (n * n, f"time cells ({n}^2)")
        work = pairs * sweeps[0] * cells[0] * per_cell
        if work <= _WORK_LIMIT:
            return
        q = self.info.get("q_max", float("nan"))
        detail = f", the Hermite series needs more than 8192 terms beyond q ~ {hermite_q_limit((self.activation.numpy_fn, self.activation.numpy_derivative)):.3g}, and the trapezoid rule needs step {dual.rule.step:g}" if dual.method == "trapezoid" else ""
        raise KernelcalcInputError(cost_refusal(
            f"the {self.activation.name} kernel at {self.describe_parameters()}",
            [(pairs, "pairs"), sweeps, cells, (per_cell, per_cell_label)],
            f"the pre-activation variance reaches q = {q:.4g}, on {n} time nodes{detail}", self.cost_drivers))

    def describe_parameters(self) -> str:
        return (f"T = {self.T:g}, sigma_w = {self.sigma_w:g}, sigma_u = {self.sigma_u:g}, largest x.x/d = "
                f"{self.v_max:.3g}")

    def _nodes(self, M) -> int:
        """Time nodes of the grid ``M`` (per axis)."""
        return self.grid(M).A.shape[0]

    # -- solves ----------------------------------------------------------------------------------
    def _self_diagonals(self, dual, M, v):
        disc = self.grid(M)
        nodes = disc.A.shape[0]
        self._check_cost(dual, len(v), nodes, symmetric=True)
        batch = self._batch(dual, nodes)
        self_solve = _compiled(dual, disc, self.sigma_w, self.sigma_v, _backend(dual, len(v), nodes))[0]
        out = []
        for lo in range(0, len(v), batch):
            S, delta, sweeps = self_solve(rec.ode_initial(np.asarray(v[lo:lo + batch], dtype=np.float64), self.sigma_u))
            self._sweeps("self", delta, sweeps, "the pre-activation variance q(t) = E[h_t^2]")
            S = np.asarray(S)
            out.append(S if S.ndim == 2 else np.diagonal(S, axis1=1, axis2=2))   # the march returns diagonals
        return np.concatenate(out)

    def _padded(self, dual, M, v):
        """The norms ``v`` of a self-kernel solve, padded to a power of two when it is compiled (few shapes);
        numpy solves take them as they are (padding would only add work)."""
        if _backend(dual, len(v), self._nodes(M)) == "numpy":
            return v
        return pad_to(v, bucket(v.size))

    @staticmethod
    def _batch(dual, nodes: int) -> int:
        """Problems per solve: a power of two whose work arrays (n^2 cells and, for the Hermite rule,
        n x K coefficients per problem, a few of each) stay within the memory budget."""
        per = 8 * 8 * nodes * max(nodes, dual.points if dual.method == "hermite" else 1)
        return 1 << int(math.floor(math.log2(max(MEMORY_BUDGET // per, 1))))

    def _dual_and_M(self, v_unique):
        r"""The expectation rule and the time grid $M$ of this kernel (fixed at the first call).

        They depend on the parameters and the largest input norm only, so they are memoised across
        calls (a bounded cache, :data:`_TIME_GRIDS`): a second Gram of the same kernel skips the grid
        refinement.  The warnings of the first computation are recorded with it and issued again at
        every call that reuses it (a shortfall is never silent); a strict failure is not cached."""
        if "M" in self.info:
            return self._dual, self.info["M"]
        v_max = max(self.v_max, float(np.max(v_unique)))
        self.v_max = v_max
        key = (self.activation, self.T, self.sigma_w, self.sigma_u, self.sigma_v, self.tol, self.M_fixed,
               self.max_nodes, self.scheme, self.strict, self.pairs_hint, v_max,
               self.grid(self.M_fixed or _M_SEQUENCE[0]).name, self.same_norms)   # (same_norms: the fourier dual)
        hit = _TIME_GRIDS.get(key)
        if hit is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                dual, M = self._choose_dual_and_M(v_max)
            hit = (dual, M, dict(self.info), [(str(w.message), w.category) for w in caught], {})
            if len(_TIME_GRIDS) >= _MAX_TIME_GRIDS:
                _TIME_GRIDS.pop(next(iter(_TIME_GRIDS)))
            _TIME_GRIDS[key] = hit
        dual, M, info, caught, self._shared_diagonals = hit
        self.info.update(info)
        self._dual = dual
        for message, category in caught:          # at the user's line, through the user's filters
            warn(message, category)
        return dual, M

    def _choose_dual_and_M(self, v_max):
        """:meth:`_dual_and_M` without the cache."""
        nodes = self._nodes(self.M_fixed or _M_SEQUENCE[0])
        if nodes > self.max_nodes:
            raise KernelcalcInputError(
                f"sigma_w*T = {self.sigma_w * self.T:g} needs {self.info.get('time_elements', 1)} time elements "
                f"({nodes} nodes, more than the limit {self.max_nodes}): supported up to sigma_w*T ~ "
                f"{_ELEMENT_LENGTH * (self.max_nodes - 1) / _M_SEQUENCE[0]:g}"
                + ("" if self.M_fixed is None else " at this time_nodes") + "; reduce T or sigma_w")
        # A coarse rule first to learn the largest pre-activation variance q(T), then the final rule.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KernelcalcAccuracyWarning)   # only q(T) is needed, to ~1e-6
            self.info["q_max"] = max(4.0 * self.sigma_u**2 * v_max, 1.0)     # a first guess, for messages
            coarse = dual_kernels(self.activation, q_max=self.info["q_max"], tol=1e-6)
            strict, self.strict = self.strict, False
            try:
                for M in ((self.M_fixed,) if self.M_fixed else (16, 32, 64)):
                    try:
                        q_est = float(np.max(self._self_diagonals(coarse, M, np.array([v_max]))))
                        break
                    except _BlowUp:     # a coarse grid can overflow near a blow-up where finer ones do not
                        if M == 64:
                            raise
            finally:
                self.strict = strict
        if not math.isfinite(q_est):
            raise self._blow_up("the pre-activation variance q(t) = E[h_t^2]")
        self.info["q_max"] = q_est
        dual = self._fourier_dual(q_est)
        if dual is None:
            self._refuse_early(q_est)
            dual = dual_kernels(self.activation, q_max=1.05 * q_est, strict=self.strict)
        self.info["expectation"] = dual.describe()
        self.info["expectation_error_estimate"] = dual.error_estimate
        self.info.pop("sweep_change", None)
        self._check_cost(dual, self.pairs_hint, self._nodes(self.M_fixed or _M_SEQUENCE[0]), self.same_norms)
        if self.M_fixed is not None:
            M, err = int(self.M_fixed), None
        else:
            M, err = self._choose_M(dual, v_max)
        self.info.update(M=M, time_error_estimate=err, time_scheme=self.scheme, time_nodes=self._nodes(M))
        return dual, M

    def _fourier_dual(self, q_est: float):
        r"""The ``"fourier"`` dual (:func:`~kernelcalc.theory.gaussian.fourier_dual_kernels`: Chebyshev series in
        the correlation, tabulated per pair of time nodes by :mod:`kernelcalc.kernels._fourier_solve`) when it
        applies, else ``None``: inputs of one norm (the sphere: every solve shares one diagonal), a Neural-ODE
        grid (not the ResNet march), a smooth saturating $\phi$ without closed form (tanh, sigmoid, bounded user
        expressions), at variances where the Mehler series would need more than ``_FOURIER_MIN_TERMS`` terms and
        the Chebyshev series fewer than about a thousand (:data:`_FOURIER_Q_MAX`)."""
        act = self.activation
        if (not self.same_norms or _marches(self.grid(self.M_fixed or _M_SEQUENCE[0])) or act.is_piecewise_smooth
                or act.is_polynomial or act.jumps or q_est > _FOURIER_Q_MAX or not _saturating(act)):
            return None
        from ..theory.duals import closed_form_dual
        if closed_form_dual(act) is not None:
            return None
        K = hermite_order((act.numpy_fn, act.numpy_derivative), 1.05 * q_est)
        if K is not None and K <= _FOURIER_MIN_TERMS:
            return None
        from ..theory.gaussian import DEFAULT_TOL, fourier_dual_kernels
        dual = fourier_dual_kernels(act, q_max=1.05 * q_est)
        # a rule that does not settle (an activation whose complex singularities crowd the real axis) is not used
        return dual if dual.error_estimate <= 10.0 * DEFAULT_TOL else None

    def _refuse_early(self, q_est: float) -> None:
        """Past the Hermite series' reach, check the cost with the cheapest large-q rule before choosing the
        rule's level (which itself evaluates ~10^7 integrands): a hopeless call is refused in seconds."""
        cheapest = cheapest_tabulated_rule(self.activation)
        if cheapest is None or self.activation.is_polynomial:
            return
        fns = (self.activation.numpy_fn, self.activation.numpy_derivative)
        if hermite_order(fns, 1.05 * q_est) is None:
            self._check_cost(DualKernels(self.activation, "asymptotic", cheapest), self.pairs_hint,
                             self._nodes(self.M_fixed or _M_SEQUENCE[0]), self.same_norms)

    def relative_error_estimate(self) -> float:
        r"""Relative error estimate of one kernel value: the achieved expectation accuracy (amplified by
        $1+\sigma_wT$ through the time integrals), the time-grid refinement change, the last Picard change
        and (off the sphere) ten times the measured interpolation error of the self-kernel diagonals."""
        quad = self.info.get("expectation_error_estimate", DEFAULT_TOL) * (1.0 + self.sigma_w * self.T)
        sweeps = 10.0 * max(self.info.get("sweep_change", 0.0), _SWEEP_TOL)
        diagonals = 10.0 * self.info.get("diagonal_interpolation_error", 0.0)   # q enters C, C' with O(1) weight
        return quad + (self.info.get("time_error_estimate") or 0.0) + sweeps + diagonals

    def _choose_M(self, dual, v):
        prev, change, M_done = None, float("nan"), _M_SEQUENCE[0]
        jumps = self.activation.jumps
        blown = None
        for M in _M_SEQUENCE:
            if (prev is not None or blown is not None) and (
                    self.grid(M).A.shape[0] > self.max_nodes or ((dual.method == "polar" or jumps) and M > _KINK_M_MAX)):
                break
            # the call's own cost at this degree (the final degree is at least this one): refuse before the solves
            # of the ladder, not after them (tanh at T = 40 was refused after 455 s)
            self._check_cost(dual, self.pairs_hint, self._nodes(M), self.same_norms)
            M_done = M
            try:
                q = self._self_diagonals(dual, M, np.array([v]))
                cross, marginals, _ = self._cross(dual, M, 1, symmetric=True)
                zero = np.zeros(1, np.int32)
                # phi that jumps: the self-kernel is exact on any grid (it is iterated with its own diagonal), so
                # the grid is judged on a pair at correlation 1/2 (C is not smooth near the diagonal t = s)
                s0 = rec.ode_initial(0.5 * v if jumps else v, self.sigma_u)
                _, ntk, delta, _ = cross(marginals(q), zero, zero, np.asarray([s0], dtype=np.float64))
                ntk = float(ntk[0])
                if not (math.isfinite(float(delta)) and math.isfinite(ntk)):
                    raise self._blow_up("the kernel")
            except _BlowUp as err:
                # near a finite-time blow-up a coarse grid can overflow where the solution is finite: refine
                blown, prev = err, None
                continue
            blown = None
            if prev is not None:
                scale = max(abs(ntk), abs(prev))  # both 0 for a zero activation: converged, not 0/0
                change = abs(ntk - prev) / scale if scale > 0 else 0.0
                if change <= self.tol:
                    return M, change
            prev = ntk
        if blown is not None:
            raise blown
        M = M_done
        accuracy_shortfall(
            f"time grid: the {'NTK at correlation 1/2' if jumps else 'self-kernel NTK'} still changes by {change:.1e} (relative) at {M} Chebyshev intervals "
            f"per element ({self.grid(M).A.shape[0]} nodes), above tol = {self.tol:.1e}"
            + (" (a kinked activation: the kernel is not smooth on the diagonal t = s, so the grid converges only "
               "algebraically)" if dual.method == "polar" or jumps else ""), self.strict)
        return M, change

    def prepare(self, norms) -> None:
        """Solve the self-kernels of the input norms ``norms`` (x.x/d) in one batch, ahead of the pair
        calls that will need them (a Gram plan's probes)."""
        v = np.unique(np.asarray(norms, dtype=np.float64))
        dual, M = self._dual_and_M(v)
        self._cached_diagonals(dual, M, v)

    def prepare_range(self, norms, exact=()) -> None:
        r"""The Gram plan will call with many norms in the range of ``norms`` (x.x/d): interpolate the
        self-kernel diagonals $q_v(t)$ in $\log v$ on that range
        (:class:`~kernelcalc.kernels._diagonals.DiagonalInterpolant`, relative accuracy ``tol``/10,
        at least 1e-14) instead of one self-kernel solve per distinct norm.  ``exact``: norms solved
        directly (the plan's check rows: their pair values then share no interpolated diagonal).  The
        measured interpolation error is ``info["diagonal_interpolation_error"]`` and enters
        :meth:`relative_error_estimate`; a miss warns."""
        v = np.asarray(norms, dtype=np.float64)
        v = v[v > 0]
        if v.size == 0 or v.max() <= v.min() * (1.0 + 1e-9):
            return
        lo, hi = float(v.min()), float(v.max())
        dual, M = self._dual_and_M(np.array([hi]))
        target = max(0.1 * self.tol, 1e-14)

        def solve(u):
            return self._self_diagonals(dual, M, self._padded(dual, M, u))[: u.size]

        interp = DiagonalInterpolant(solve, lo, hi, target, exact)
        self._interp = interp
        self._diagonals.update(interp.exact)
        self.info.update(diagonal_interpolation_error=interp.error, diagonal_interpolation_nodes=interp.degree + 1)
        if not interp.met:
            accuracy_shortfall(f"the self-kernel diagonals q(t): interpolation in log|x|^2 at {interp.degree + 1} "
                               f"norms leaves a relative error {interp.error:.1e} > {target:.1e}", self.strict)

    def _cached_diagonals(self, dual, M, v):
        """Self-kernel diagonals q(t) of the norms ``v`` on the final grid, each solved once per solver, and
        memoised with the time grid for later calls when their sweeps met the tolerance (a solve that
        warned is kept by this solver only, so that a later call solves it again and warns again).  Norms
        in the range of :meth:`prepare_range` are interpolated instead."""
        known = self._diagonals
        for x in v.tolist():
            if x not in known and x in self._shared_diagonals:
                known[x] = self._shared_diagonals[x]
        missing = np.array([x for x in v.tolist() if x not in known])
        values = {}
        if missing.size and self._interp is not None:
            inside = self._interp.covers(missing)
            values = dict(zip(missing[inside].tolist(), self._interp(missing[inside])))
            missing = missing[~inside]
        if missing.size:
            if len(known) + missing.size > _MAX_CACHED_DIAGONALS:
                known.clear()
            before = self._shortfalls
            new = self._self_diagonals(dual, M, self._padded(dual, M, missing))
            known.update(zip(missing.tolist(), new))
            if self._shortfalls == before:
                if len(self._shared_diagonals) + missing.size > _MAX_CACHED_DIAGONALS:
                    self._shared_diagonals.clear()
                self._shared_diagonals.update(zip(missing.tolist(), new))
        return np.stack([values[x] if x in values else known[x] for x in v.tolist()])

    def plan_pairs(self, pairs: int) -> None:
        """A Gram plan announces about ``pairs`` pair solves in its next calls (the norm-interpolation
        grid, in a few calls): the backend (:func:`_backend`) is chosen by their total work, so that the
        calls share one compilation, or all run in numpy."""
        self._planned_pairs = int(pairs)

    def _cross(self, dual, M, pairs, symmetric=False):
        """``(cross, marginals, backend)``: the cross-kernel solve for a call of ``pairs`` pairs, the
        marginals it takes (from the diagonals; numpy where the rule allows, so that only the solve is
        ever compiled) and the backend (:func:`_backend`)."""
        disc = self.grid(M)
        nodes = disc.A.shape[0]
        self._check_cost(dual, pairs, nodes, symmetric)
        backend = _backend(dual, max(pairs, self._planned_pairs) if pairs > _MIN_BATCH else pairs, nodes)
        _, cross, marginals = _compiled(dual, disc, self.sigma_w, self.sigma_v, backend,
                                        symmetric and dual.method in _QUADRATURE_RULES)
        if dual.numpy_ok:
            marginals = functools.partial(dual.marginal, xp=np)
        return cross, marginals, backend

    def _marginals_of(self, dual, v, diag, marginals, size):
        """The marginals of the norms ``v`` (diagonals ``diag``, ``(U, n)``), padded to ``size`` norms; with a
        numpy rule each norm's are computed once per solver (the Gram plan's calls share most norms)."""
        if not dual.numpy_ok:
            return marginals(pad_to(diag, size))
        cache = self._marginals
        missing = [i for i, x in enumerate(v.tolist()) if x not in cache]
        if missing:
            if len(cache) + len(missing) > _MAX_CACHED_MARGINALS:
                cache.clear()
            m = marginals(diag[missing])                       # q (U, n), coefficients (K, U, n)
            for j, i in enumerate(missing):
                cache[float(v[i])] = tuple(a[..., j, :] for a in m)
        parts = [cache[x] for x in v.tolist()]
        if len(parts) == 1 and dual.method == "fourier":   # one norm (the sphere): views, no copy (no padding:
            # the fourier solves index the norms, they have no fixed shapes)
            return tuple(a[..., None, :] for a in parts[0])
        idx = pad_to(np.arange(v.size), size)
        return tuple(np.stack([p[c] for p in parts], axis=-2)[..., idx, :] for c in range(len(parts[0])))

    @float64
    def __call__(self, sxx, syy, sxy):
        shape, (sxx, syy, sxy), v_unique, inverse = flat_pairs(sxx, syy, sxy)
        dual, M = self._dual_and_M(v_unique)
        n = sxy.size
        cross, marginals, backend = self._cross(dual, M, n, symmetric=bool(np.all(sxx == syy)))
        nodes = self.grid(M).A.shape[0]
        fixed = backend == "jax" and dual.method == "hermite"
        if fixed:   # one shape for every large call: one compilation (closed forms and the quadrature rules,
            # on grids of up to 513 nodes where padding costs more than compiling, keep fitted shapes)
            batch = min(self._batch(dual, nodes), _JIT_BATCH)
            norms = max(bucket(v_unique.size), _JIT_NORMS)
        else:
            batch = min(self._batch(dual, nodes), max(_MIN_BATCH, bucket(n) // 4))
            norms = bucket(v_unique.size)
        marg = self._marginals_of(dual, v_unique, self._cached_diagonals(dual, M, v_unique), marginals, norms)
        # Batches of similar input correlation |rho|: the Mehler series is truncated per batch by its
        # largest |r| (HermiteRule.series), so sorted batches sum far fewer terms.
        order = by_correlation(sxx, syy, sxy)
        ix_all, iy_all = inverse[: sxx.size][order], inverse[sxx.size:][order]
        s0_all = rec.ode_initial(sxy, self.sigma_u)[order]
        nngp, ntk = np.empty(n), np.empty(n)
        for lo in range(0, n, batch):      # memory-bounded batches of fixed sizes: few jit compilations
            sl = slice(lo, min(lo + batch, n))
            m = sl.stop - sl.start
            size = batch if fixed else (m if backend == "numpy" else min(bucket(m), batch))   # numpy: no padding
            bx, by, b0 = (pad_to(a[sl], size) for a in (ix_all, iy_all, s0_all))
            k, t, delta, sweeps = cross(marg, bx, by, b0)
            nngp[order[sl]], ntk[order[sl]] = np.asarray(k)[:m], np.asarray(t)[:m]
            self._sweeps("cross", delta, sweeps, "the cross-covariance S(t, s) or the backward kernel Lambda(t, s)")
        if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
            raise self._blow_up("the kernel")
        return nngp.reshape(shape), ntk.reshape(shape)


class KinkedGoursatSolver(KinkedSolverMixin, GoursatSolver):
    r"""The Neural-ODE solver of kinked activations on the collapsed-triangle grid
    (:mod:`kernelcalc.kernels.ode_kinked`); pairs of unequal norm go to the tensor Chebyshev grid."""

    work_limit = _WORK_LIMIT      # the cost guard of the panels (ode_kinked does not import this module)

    @staticmethod
    def cost_message(what, factors, why, drivers) -> str:
        return cost_refusal(what, factors, why, drivers)

    def _tensor_factory(self) -> GoursatSolver:
        T = self.T
        return GoursatSolver(self.activation, T=T, sigma_w=self.sigma_w, sigma_u=self.sigma_u, sigma_v=self.sigma_v,
                             tol=self.tol, strict=self.strict, v_max=self.v_max,
                             grid=lambda M: chebyshev_discretisation(M, T, time_elements(T, self.sigma_w)))


def cost_refusal(what: str, factors, why: str, drivers) -> str:
    r"""The one message of every cost refusal: ``what`` would cost $W=\prod_k f_k$ (each factor printed, so the
    quoted product is the product of the printed factors) above the limit, ``why``, and the advice naming
    every parameter in ``drivers`` that drives the cost.

    **Arguments:** ``factors``: ``[(value, label), ...]``; ``drivers``: the parameters (text) to reduce."""
    work = math.prod(float(v) for v, _ in factors)
    shown = " x ".join(f"{v:d} {label}" if isinstance(v, int) else f"{v:.6g} {label}" for v, label in factors)
    advice = ", ".join(drivers[:-1]) + (" or " if len(drivers) > 1 else "") + drivers[-1]
    return (f"{what} would cost about {work:.3g} operations ({shown} = {work:.3g}; the limit is {_WORK_LIMIT:.0e}): "
            f"{why}; reduce {advice}")


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
    params = dict(T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)
    return Kernel(nngp=nngp, ntk=ntk, model="node", activation=act.name, params=params, info=info)
