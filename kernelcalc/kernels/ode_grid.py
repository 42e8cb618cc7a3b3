r"""The time discretisation of the Neural-ODE Goursat problems and their Picard solves (conventions in
:mod:`kernelcalc.kernels.ode`): the Chebyshev–Lobatto tensor grid (:class:`Discretisation`, composite
elements past $\sigma_wT=3$), the Picard driver with its stopping rule, and the compiled (or numpy) self-kernel,
marginal and cross-kernel solves of one dual kernel on one grid (:func:`_compiled`, :func:`_backend`)."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from ..theory import recursion as rec
from .._validation import KernelcalcInputError
from ..theory.gaussian import DualKernels, Gathered
from ._interp import chebyshev_lobatto
from ._newton import ChordNewton
from ._triangle import CHANGE_FLOOR

_MAX_SWEEPS = 400
_SWEEP_TOL = 2e-15
_STAGNATION = 1e-11       # a Picard change below this that stops decreasing is rounding noise
_M_SEQUENCE = (8, 12, 16, 24, 32, 48, 64, 96, 128)
_ELEMENT_LENGTH = 3.0     # sigma_w * (length of one Chebyshev element) at most
_MAX_NODES = 513          # time nodes of the composite grid at most
_BOUND = 1e150            # |C| and |S| inside the Picard sweeps (see _bounded)
_NUMPY_MAX_WORK = 1.2e8   # a call this small runs in numpy, not jit-compiled (see _backend)
_NUMPY_MAX_WORK_HERMITE = 1e13   # the same for the Mehler series (numpy sums each pair's own terms only)
_NUMPY_MAX_WORK_CLOSED = 1.2e8   # the same for closed forms, the work counted in cells (a dear one: numpy always)
_JIT_BATCH = 256          # pairs per compiled cross-kernel batch (one shape: one compilation per kernel)
_JIT_NORMS = 64           # distinct norms per compiled cross-kernel call at least (padded: one shape)
#: a dear numpy closed form's Newton sweeps (kernels/_newton.py) evaluate (C, Cdot) to ~_LOOSE_DUAL_TOL while the
#: last change is above _LOOSE_CHANGE (measured elu: changes 0.35, 1.7e-3, 1.3e-8, 1e-16: the first two sweeps)
_LOOSE_CHANGE = 1e-2
_LOOSE_DUAL_TOL = 1e-7


def dear_numpy(dual, xp) -> bool:
    r"""Whether ``dual`` evaluated with ``xp`` is a dear numpy rule that gives $(C,\dot C)$ in one evaluation: a closed
    form with special functions (elu's bivariate Mills ratios, the relu sums' orthants: ``points`` > 1) or the
    tabulated polar rule (:mod:`kernelcalc.theory.polar_table`).  Its cross solves take Newton steps from the first
    sweep, and the coarse problems of a pair of norms first, the others started from their solutions."""
    return xp is np and ((dual.method == "closed" and dual.points > 1) or dual.tabulated)


def _relative_change(G, S) -> float:
    """max|G - S| / max|G| (numpy): how far a sweep moved its iterate, relative to the image."""
    return float(np.max(np.abs(G - S))) / max(float(np.max(np.abs(G))), 1e-300)


def _picard(step, S_init, tol=None, max_sweeps=None, xp=jnp, accelerate=None, floor=None):
    r"""Iterate ``S <- step(S)`` until the largest relative change (per problem: leading axis) is
    below ``tol``, or has stagnated at rounding level (below ``_STAGNATION`` and not decreasing), or is
    not finite.  Returns ``(S, last change, sweeps)``; the caller checks the change.  ``xp``: jax.numpy
    (a ``lax.while_loop``, to be traced) or numpy (a Python loop, run at once).  ``accelerate`` (numpy only):
    ``(S, step(S), change, previous change) -> next iterate`` in place of ``step(S)`` while the sweeps go on
    (:class:`~kernelcalc.kernels._newton.ChordNewton`); the change, the stopping test and the returned plain
    image ``step(S)`` stay those of the sweeps.  ``floor`` (per problem, optional): the least scale a change is
    measured against (a cross-covariance of a near-orthogonal pair of an odd $\phi$ is $\sim10^{-16}$ of its natural
    scale $\sqrt{q_xq_y}$, and its rounding alone made relative changes of 1e-2: a spurious stall, warned)."""
    tol = _SWEEP_TOL if tol is None else tol
    max_sweeps = _MAX_SWEEPS if max_sweeps is None else max_sweeps

    def change(S_new, S):
        axes = tuple(range(1, S.ndim))
        num = xp.max(xp.abs(S_new - S), axis=axes)
        den = xp.maximum(xp.max(xp.abs(S_new), axis=axes), 1e-300)
        return xp.max(num / (den if floor is None else xp.maximum(den, floor)))

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
            S_old = state[0]
            state = body(state)
            if accelerate is not None and cond(state):     # going on: the next iterate
                state = (accelerate(S_old, state[0], state[1], state[2]),) + state[1:]
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
    if xp is np:       # the same in two passes: fmin/fmax take b for NaN, and clip +-inf
        return np.fmax(np.fmin(C, b), -b)
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
    t: np.ndarray | None = None   # the time nodes (the spectral grid's; None: the Euler ResNet's layers)

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
    tl, J, w = chebyshev_lobatto(M, T / P)
    A = np.zeros((n, n))
    W = np.zeros(n)
    t = np.empty(n)
    for e in range(P):
        sl = slice(e * M, e * M + M + 1)
        A[sl] = W[None, :]                      # integral over the earlier elements
        A[sl, sl] += J                          # plus the local one
        W[sl] += w
        t[sl] = e * (T / P) + tl
    t[-1] = T
    name = f"chebyshev-lobatto(M={M}, T={T!r})" if P == 1 else f"chebyshev-lobatto(M={M}, elements={P}, T={T!r})"
    return Discretisation(name, A, W[None, :] - A, np.eye(n), W, t)


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

    dear = dear_numpy(dual, xp)

    def dual_of_any(m1, m2, S, derivative=True, tails=None, sym=False, tol=None):
        if sym and halve:
            return _symmetric_from_marginals(dual, m1, m2, S, derivative, xp)
        return dual.from_marginals(m1, m2, S, derivative=derivative, xp=xp, tails=tails, tol=tol)

    loose = xp is np and dual.method == "hermite"

    def sweep_tol(exact=False):
        """Per Picard sweep (numpy Hermite rule): a series tolerance 1e-3 times the last change (a power of
        ten, at most 1e-6; the rule's own once the change is below 1e-6).  A sweep far from convergence need
        not evaluate C exactly: the fixed point, the stopping test (``S_new = step(S)`` with the exact map
        once the change is below ~1e-10) and so the result are those of the full series, and its early
        sweeps sum fewer terms (the Mehler series truncated by correlation at a looser tol, and shorter
        self-kernel coefficients).  Returns ``(tol or None, record)``: ``record(S)`` notes the iterate.
        ``exact``: the exact map from the first sweep (a warm start, already near the fixed point)."""
        if not loose or exact:
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

    def forward(S0, C):
        r"""The forward Picard map at the expectations ``C`` (B, n, n): $S_0+\sigma_w^2\,A\,C\,A^T$ (C clipped by
        :func:`_bounded` inside a sweep)."""
        return S0[:, None, None] + A @ rec.ode_forward_source(_bounded(C, xp, S0), sigma_w) @ A.T

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
            C = dual_of_any(mi, mj, S, derivative=False, tails=None if tl is None else (tl, tl), sym=True, tol=t)
            return forward(S0, C)

        S_init = xp.broadcast_to(S0[:, None, None], (S0.shape[0], n, n))
        return _picard(step, S_init, xp=xp)

    @jit
    def marginals(diag):
        """diag: (U, n) diagonals q(t) of the distinct norms -> their marginals (Hermite coefficients),
        computed once per call and shared by all its cross-kernel batches."""
        return dual.marginal(diag, xp=xp)

    lazy = xp is np and dual.method == "hermite"
    tails_of = dual.shared_tails(xp, only_numpy=True)    # numpy: the tails a call's batches share, computed once

    @jit
    def cross_solve(m, ix, iy, S0, S_start=None, states=None):
        """m: :func:`marginals` of the U distinct norms, ix, iy: (B,) indices into them; S0: (B,)
        -> nngp, ntk (B,) and diagnostics.  ``S_start`` (numpy, Mehler series, a closed form or a tabulated dual):
        ``(B, n, n)`` first iterates near the fixed point (identical inputs: their self-kernels; interpolated
        between solved problems), swept with the exact map from the first sweep; the fixed point and the stopping
        test are those of a cold start.  ``states`` (numpy): a list that receives the solutions S ``(B, n, n)``."""
        warm = S_start is not None
        if warm and not (xp is np and not jumps and (lazy or dual.method == "closed" or dear)):
            raise ValueError("a warm start applies to the numpy Mehler-series, closed-form and tabulated cross solves only")
        if lazy:    # numpy Hermite: the truncated series gathers only the coefficients it sums
            mx = (m[0][ix, :, None],) + tuple(Gathered(a, ix, -1) for a in m[1:])
            my = (m[0][iy, None, :],) + tuple(Gathered(a, iy, -2) for a in m[1:])
        else:
            mx = tuple(a[..., ix, :, None] for a in m)    # fixed marginals
            my = tuple(a[..., iy, None, :] for a in m)
        tl = tails_of(m)                              # once: the series truncation of every sweep, per pair
        if tl is None:
            tails = None
        elif lazy:        # (K, U) tails read by problem: the truncation's bisection gathers the few entries it reads
            tails = (tuple(Gathered(t, ix) for t in tl), tuple(Gathered(t, iy) for t in tl))
        else:
            tails = (tuple(t[:, ix] for t in tl), tuple(t[:, iy] for t in tl))
        # at this solve's cells (fixed variances): the tabulated polar rule, contracted once (R + 1 terms a sweep); a
        # relu sum or a piecewise polynomial of degree 2, exact at anchors and Taylor-updated between
        # (theory/duals_taylor.py)
        cells = None
        if dear and dual.tabulated:
            cells = dual.rule.at_variances(mx[0], my[0])
        elif dear and dual.joint_at_variances is not None:
            cells = dual.joint_at_variances(mx[0], my[0])

        def dual_of(m1, m2, S, derivative=True, tails=None, sym=False, tol=None):
            if cells is not None and m1 is mx and m2 is my:
                out = cells(S)
                return out if derivative else out[0]
            return dual_of_any(m1, m2, S, derivative, tails, sym, None if cells is not None else tol)

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
                return forward(S0, C)
        else:
            current, record = sweep_tol(exact=warm)
            # numpy Mehler series: Newton steps once the sweeps are exact; a dear numpy closed form (elu): from the
            # first sweep, C and Cdot in one evaluation (kernels/_newton.py; measured elu, N = 200 standardised rows:
            # the tensor grid's 622-pair call 2.0 -> 0.9 s.  A cheap closed form loses: sin, cos, erf 1.3-1.8x slower,
            # the linear iterations of the steps cost more than the sweeps they save)
            newton = ChordNewton(A, sigma_w) if lazy or dear else None
            last_change = [math.inf]      # (the first sweep loose: from a warm start too, whose change is ~1e-4)

            def step(S):
                record(S)
                t = current()
                if newton is not None and not lazy and newton.wants_derivative(True):   # a closed form: (C, Cdot)
                    # far from the fixed point (the last change above _LOOSE_CHANGE: the next one, squared by the
                    # Newton step, is above ~1e-5) a relative accuracy of ~1e-7 will do (fewer Gauss nodes of
                    # elu's Mills ratios); the sweeps that stop, and the final (C, Cdot), are exact
                    loose = last_change[0] > _LOOSE_CHANGE
                    C, Cdot = dual_of(mx, my, S, tails=tails, sym=symmetric, tol=_LOOSE_DUAL_TOL if loose else None)
                    G = forward(S0, C)
                    last_change[0] = _relative_change(G, S)
                    newton.keep(G, C, Cdot, exact=not loose)
                    return G
                if newton is not None and newton.wants_derivative(t is None):   # an exact sweep: Cdot too
                    C = dual_of(mx, my, S, derivative=False, tails=tails, sym=symmetric)
                    G = forward(S0, C)
                    # Cdot enters the Newton step's Jacobian: to a relative accuracy eps it adds ~eps times the
                    # change to the next iterate, so a sweep far from the fixed point takes it at 1e-16 / change
                    # (the sweep that stops, a change below 1e-10, and so the final Cdot: the rule's tolerance)
                    change = _relative_change(G, S)
                    t_dot = None if not change > 1e-10 else min(1e-9, 1e-16 / change)
                    t_dot = None if t_dot is None or t_dot <= dual.rule.tol else t_dot
                    Cdot = dual_of((mx[0], mx[2]), (my[0], my[2]), S, derivative=False, sym=symmetric, tol=t_dot,
                                   tails=None if tails is None else ((tails[0][1],), (tails[1][1],)))
                    newton.keep(G, C, Cdot, exact=t_dot is None)
                    return G
                C = dual_of(mx, my, S, derivative=False, tails=tails, sym=symmetric, tol=t)
                return forward(S0, C)

        S_init = S_start if warm else xp.broadcast_to(S0[:, None, None], (S0.shape[0], n, n))
        # a change is measured against 1e-6 of the pair's natural scale at least (CHANGE_FLOOR, _picard's floor)
        scale = xp.sqrt(xp.max(xp.abs(mx[0]), axis=(1, 2)) * xp.max(xp.abs(my[0]), axis=(1, 2)))
        S, dS, nS = _picard(step, S_init, xp=xp, accelerate=None if jumps else newton, floor=CHANGE_FLOOR * scale)
        if states is not None:
            states.append(S)
        # (C, Cdot) of the last sweep when it computed them (Newton: at S_k, whose image S differs from it by
        # less than the stopping test), else at S
        final = None if jumps or newton is None else newton.final(S)
        C, Cdot = final if final is not None else dual_of(mx, my, S, tails=tails, sym=symmetric and not jumps)
        LamT = rec.ode_backward_terminal(Cdot[:, -1, -1], sigma_v)

        def back(Lam):
            return LamT[:, None, None] + B @ rec.ode_backward_source(Cdot, P @ Lam @ P.T, sigma_w) @ B.T

        Lam, dL, nL = _picard(back, xp.broadcast_to(LamT[:, None, None], S.shape), xp=xp)
        integral = xp.einsum("i,bij,j->b", w, C * (P @ Lam @ P.T), w)
        nngp = rec.ode_nngp(C[:, -1, -1], sigma_v)
        ntk = rec.ode_ntk(C[:, -1, -1], integral, S0, Lam[:, 0, 0], sigma_v, sigma_w)
        return nngp, ntk, xp.maximum(dS, dL), xp.maximum(nS, nL)

    return self_solve, cross_solve, marginals



def _marches(disc: Discretisation) -> bool:
    """Whether ``disc`` is the Euler ResNet's, solved by :func:`kernelcalc.kernels._march.euler_march`."""
    return disc.name.startswith("euler(")


def _backend(dual: DualKernels, problems: int, nodes: int) -> str:
    r"""``"numpy"`` when the solves of ``problems`` kernels (all the problems of one call) on ``nodes`` time
    nodes are small enough that running them in numpy beats compiling them, else ``"jax"``.

    The work is $\text{problems}\cdot\text{nodes}^2\cdot\max(\text{terms}, 16)$ (terms: the Hermite series
    length; a closed form: the cells, below).  Measured side by side (softplus, 592 terms, 13 nodes, busy 2-core
    machine): 1024 cross-kernel problems (work 1e8) take 2.2 s in numpy and 0.43 s compiled, but compiling
    the cross-kernel solve takes 1.5-2.5 s (the self-kernel solve ~1.8 s, the marginals ~0.7 s), and the
    first compilation also imports jax (~1-2 s).  Up to :data:`_NUMPY_MAX_WORK` (1.2e8: about 2.5 s of
    numpy, what the compilation and the import cost; the time-grid choice, the sphere's theta tables, the
    per-norm self-kernels, few-pair Grams, the norm interpolation of moderately spread norms) numpy is
    used: the first call on new data, which the Gram plans make, is what counts.  Larger calls are
    compiled once per kernel, in batches of a fixed size (:data:`_JIT_BATCH`) over a fixed number of
    norms (:data:`_JIT_NORMS`), so the calls of one Gram plan share one compilation.
    Closed forms count one per cell, up to :data:`_NUMPY_MAX_WORK_CLOSED` (1.2e8 cells): measured side by side,
    first calls on fresh processes (numpy / compiled): node sin $\sigma_wT=10$ on 2000 standardised rows, 39 032
    pair solves on 65 nodes (1.6e8 cells), 37.3 / 38.6 s; gelu on them at $T=1$ 1.0 / 4.8 s, erf at $T=3$ 2.4 / 5.6 s;
    on the sphere (N = 200, $\sigma_wT=10$) sin 0.7 / 3.4 s, erf 0.6 / 1.8 s, identity 0.2 / 1.3 s.  A dear closed
    form (``points`` > 1: elu, three bivariate Mills ratios per cell) always runs in numpy, with Newton steps
    (:class:`~kernelcalc.kernels._newton.ChordNewton`): its compiled graph takes ~4 s to compile and evaluates a
    cell in ~1.1 µs, numpy in 1.6 µs at 2.4x fewer evaluations (elu on 200 / 2000 standardised rows: 2.3 / 2.5 s
    against 9.5 / 9.7 s).
    The Mehler series has the limit :data:`_NUMPY_MAX_WORK_HERMITE` (1e13, with the work counted at the
    full series length): numpy sums each pair's own truncated series and gathers only those coefficients
    (:func:`~kernelcalc.theory.gaussian.HermiteRule.series`), where the compiled loop runs every batch to
    its largest truncation.  Measured side by side (node tanh, N = 2000 standardised rows, 12 338 pair
    solves, K = 4192, busy 2-core machine): 9.3 s of CPU in numpy against 40-50 s compiled.
    The quadrature rules (trapezoid, polar) are compiled; a tabulated polar rule (or closed form) runs in numpy.
    The choice depends on the sizes only, so a
    given call always takes the same path (the two agree to rounding, ~1e-15 relative)."""
    if not dual.numpy_ok:
        return "jax"
    if dual.method in ("fourier", "polar"):   # numpy only (kernels/_fourier_solve.py; the polar rule tabulated)
        return "numpy"
    if dual.method == "closed":
        return "numpy" if dual.points > 1 or problems * nodes * nodes <= _NUMPY_MAX_WORK_CLOSED else "jax"
    limit = _NUMPY_MAX_WORK_HERMITE if dual.method == "hermite" else _NUMPY_MAX_WORK
    per = max(dual.points, 16)
    return "numpy" if problems * nodes * nodes * per <= limit else "jax"
