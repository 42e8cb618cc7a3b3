r"""Infinite-width NNGP and NTK of the deep equilibrium model (DEQ).

**Model.** $h^\star=\frac{\sigma_w}{\sqrt n}W\phi(h^\star)+\frac{\sigma_u}{\sqrt d}Ux+\sigma_b b$,
$f(x)=\frac{\sigma_v}{\sqrt n}v\cdot\phi(h^\star)$, all weights iid $N(0,1)$.

**NNGP.** At infinite width $h^\star_i(x)$ is Gaussian (the limit of the weight-tied iteration
$h^{\ell+1}=\frac{\sigma_w}{\sqrt n}W\phi(h^\ell)+u$) with covariance $q^\star$ solving the fixed point
of the covariance map

$$q^\star_{xy}=\sigma_w^2\,C(q^\star_{xx},q^\star_{yy},q^\star_{xy})+\sigma_u^2\tfrac{x\cdot y}d+\sigma_b^2,$$

first on the diagonal ($q^\star_{xx}=\sigma_w^2E[\phi(\sqrt{q^\star_{xx}}z)^2]+\sigma_u^2\frac{x\cdot x}d+\sigma_b^2$),
then the cross-covariance with the diagonals fixed.  $K_{\rm NNGP}=\sigma_v^2C^\star$.

**NTK (derivation).** Implicit differentiation of the equilibrium gives
$\partial h^\star=\frac{\sigma_w}{\sqrt n}WD\,\partial h^\star+\big(\frac{\sigma_w}{\sqrt n}\partial W\phi(h^\star)
+\frac{\sigma_u}{\sqrt d}\partial U x+\sigma_b\partial b\big)$, $D=\mathrm{diag}\,\phi'(h^\star)$.  The
parameter inner product of the explicit terms tends to $q^\star_{xy}$; that of the propagated term to
$\sigma_w^2\dot C^\star\Theta_h$ (the readout $v$ is not used in the forward pass, so the gradient
independence of Tensor Programs applies and the cross terms vanish).  The pre-activation NTK
therefore solves the linear fixed point $\Theta_h=q^\star_{xy}+\sigma_w^2\dot C^\star\Theta_h$:

$$\Theta_h=\frac{q^\star_{xy}}{1-\sigma_w^2\dot C^\star},\qquad
K_{\rm NTK}=\sigma_v^2\big(C^\star+\dot C^\star\Theta_h\big),$$

$C^\star,\dot C^\star$ at $(q^\star_{xx},q^\star_{yy},q^\star_{xy})$.  This is Feng & Kolter (2020),
"On the neural tangent kernel of equilibrium models": $\Theta^\star=\Sigma^\star/(1-\dot\Sigma^\star)$
(their $\Sigma^\star=q^\star$, $\dot\Sigma^\star=\sigma_w^2\dot C^\star$), the $L\to\infty$ limit of the
MLP recursion $\Theta^{\ell+1}=\Sigma^{\ell+1}+\dot\Sigma^\ell\Theta^\ell$; plus the readout layer.

**Well-posedness.** The kernel exists when (i) the diagonal iteration from
$q_0=\sigma_u^2\frac{x\cdot x}d+\sigma_b^2$ converges to a finite $q^\star$ at which the variance map is
stable ($g'(q^\star)<1$), and (ii) $\sigma_w^2E[\phi'(h^\star)^2]=\sigma_w^2\dot C(q^\star,q^\star,q^\star)<1$
(the linearised equilibrium $I-\frac{\sigma_w}{\sqrt n}WD$ stays invertible in the limit: the spectral
radius of $\frac{\sigma_w}{\sqrt n}WD$ tends to $\sqrt{\sigma_w^2E[\phi'^2]}$).  Condition (ii) makes the
cross map $c\mapsto\sigma_w^2C(q_x,q_y,c)+\dots$ a contraction (rate $\sigma_w^2|\dot C|\le
\sigma_w^2\sqrt{\dot C_{xx}\dot C_{yy}}<1$), so $q^\star_{xy}$ is unique.  Otherwise
:class:`~kernelcalc.KernelcalcInputError` names the violated condition.  relu: $q^\star=q_0/(1-\sigma_w^2/2)$,
well posed iff $\sigma_w^2<2$.

**Numerics.** Fixed points by :func:`optimistix.fixed_point` of Steffensen's map (the physical iteration
accelerated by Aitken's $\Delta^2$, quadratic convergence also at contraction factors near 1; the slope
check then confirms the fixed point attracts), ``rtol = atol = 1e-13``; ``info["error_estimate"]`` propagates the last residual through the
contraction factor ($|y-y^\star|\le|g(y)-y|/(1-r)$).
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from .._validation import KernelcalcInputError, as_input_pair, scale_keywords
from ..theory.activations import resolve_activation
from ..theory.gaussian import DEFAULT_TOL, DualKernels, dual_kernels
from ._gram import _max_abs, error_estimate, gram, max_norm, require_finite
from .._results import Kernel
from .untied import batched_pair_fn

__all__ = ["deq_kernel"]

_RTOL = 1e-13
_MAX_STEPS = 2_000


def _fixed_point(g, y0):
    r"""The fixed point $y^\star=g(y^\star)$ of an elementwise map (each entry of ``y`` a scalar problem: one
    variance, or one covariance with its marginals fixed), by Steffensen's method: the plain iteration
    accelerated by Aitken's $\Delta^2$, $G(y)=y-\frac{(g(y)-y)^2}{g(g(y))-2g(y)+y}$, iterated by
    :func:`optimistix.fixed_point`.  It converges quadratically, also where the plain iteration's rate
    $g'(y^\star)$ is close to 1 (an Aitken step is kept only where it lowers the residual $|g(y)-y|$, else
    the plain step is taken) (relu at $\sigma_w^2/2=0.99998$: the plain iteration needs $\sim10^6$ steps),
    needs no derivative (autodiff of $C(q,q,q)$ is NaN for kinked $\phi$), and is exact in one step for a
    linear map (relu's $q\mapsto\sigma_w^2q/2+s$).  The caller checks that $y^\star$ attracts
    ($g'(y^\star)<1$).  Returns ``(y, ok, residual max|g(y) - y|)``."""
    import optimistix as optx   # here, not at the top: ``import kernelcalc`` stays fast

    def aitken(y, _):
        gy = g(y)
        d1, d2 = gy - y, g(gy) - 2.0 * gy + y
        step = y - d1 * d1 / jnp.where(d2 == 0, 1.0, d2)
        # safeguard: keep the Aitken step only where it lowers the residual (a step out of the domain, such
        # as a negative variance, gives NaN there and is refused), else take the plain step
        better = (d2 != 0) & (jnp.abs(g(step) - step) < jnp.abs(d1))
        return jnp.where(better, step, gy)

    sol = optx.fixed_point(aitken, optx.FixedPointIteration(rtol=_RTOL, atol=_RTOL), y0,
                           max_steps=_MAX_STEPS, throw=False)
    y = sol.value
    res = jnp.max(jnp.abs(g(y) - y))
    ok = (sol.result == optx.RESULTS.successful) & jnp.all(jnp.isfinite(y)) & jnp.isfinite(res)
    return y, ok, res


def _vs_one(r: float) -> str:
    """``r`` printed with the fewest digits (at least 4) that keep its side of 1 (0.99998 is not "1")."""
    for digits in range(4, 18):
        text = f"{r:.{digits}g}"
        if math.isnan(r) or ((float(text) < 1) == (r < 1) and (float(text) == 1) == (r == 1)):
            return text
    return repr(r)


@functools.lru_cache(maxsize=32)
def _compiled(dual: DualKernels, sigma_w: float, sigma_u: float, sigma_b: float, sigma_v: float):
    a = sigma_w**2

    @jax.jit
    def diagonal(v):
        s = sigma_u**2 * v + sigma_b**2
        g = lambda q: a * dual.C(q, q, q) + s  # noqa: E731
        q, ok, res = _fixed_point(g, s)
        # g'(q*): stability of the diagonal fixed point (central difference: C(q, q, q) has an infinite
        # derivative in c at c = q for kinked phi, so autodiff of g gives nan)
        h = 1e-5 * jnp.maximum(q, 1e-8)
        slope = a * (dual.C(q + h, q + h, q + h) - dual.C(q - h, q - h, q - h)) / (2 * h)
        r = a * dual(q, q, q)[1]                              # sigma_w^2 E[phi'(h*)^2]
        return q, jnp.broadcast_to(ok, q.shape), res, slope, r

    @jax.jit
    def cross(sxx, syy, sxy):
        qx, okx, resx, slx, rx = diagonal(sxx)
        qy, oky, resy, sly, ry = diagonal(syy)
        mx, my = dual.marginal(qx), dual.marginal(qy)
        s = sigma_u**2 * sxy + sigma_b**2
        c, okc, resc = _fixed_point(lambda c: a * dual.from_marginals(mx, my, c, derivative=False) + s, s)
        # identical inputs: c* = q* exactly (the separately iterated c* differs by ~tol, which costs
        # sqrt(tol) in the angle of kinked duals at rho = 1)
        c = jnp.where((sxy == sxx) & (sxx == syy), qx, c)
        C, Cd = dual.from_marginals(mx, my, c)
        theta_h = c / (1.0 - a * Cd)
        nngp, ntk = sigma_v**2 * C, sigma_v**2 * (C + Cd * theta_h)
        r = jnp.maximum(rx, ry)
        worst = jnp.maximum(jnp.max(r), jnp.max(jnp.maximum(slx, sly)))
        # |y - y*| <= residual / (1 - rate); the cross error is amplified by 1/(1 - a Cd) in the NTK
        gap = jnp.maximum(1.0 - worst, 1e-300)
        err = (jnp.maximum(jnp.maximum(resx, resy), resc) / gap) / gap
        ok = jnp.broadcast_to(okx & oky & okc, nngp.shape)
        return nngp, ntk, ok, jnp.broadcast_to(jnp.maximum(r, jnp.maximum(slx, sly)), nngp.shape), \
            jnp.broadcast_to(err, nngp.shape), jnp.broadcast_to(jnp.maximum(qx, qy), nngp.shape)

    return diagonal, cross


def _condition_error(act, sigma_w, rate, q, v):
    return KernelcalcInputError(
        f"the {act.name} DEQ is not well posed at sigma_w = {sigma_w:g} (input x.x/d = {v:.4g}): the equilibrium "
        f"kernel needs sigma_w^2 E[phi'(h*)^2] < 1 and a stable variance fixed point q* = sigma_w^2 E[phi(h*)^2] + "
        f"sigma_u^2 x.x/d + sigma_b^2 (slope < 1), but the contraction factor is {_vs_one(rate)} >= 1 at q* = {q:.6g}; "
        "the fixed point is not unique or not attracting; reduce sigma_w")


@float64
@scale_keywords("deq")
def deq_kernel(x1, x2=None, *, activation, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, sigma_b=0.0,
               progress: bool | None = None, outputs=("nngp", "ntk"), out=None, client=None) -> Kernel:
    r"""Infinite-width NNGP and NTK of the deep equilibrium model (see the module docstring).

    **Arguments:** ``x1`` (N1, d), ``x2`` (N2, d) or ``None``; ``activation``; ``sigma_w``,
    ``sigma_u``, ``sigma_v`` > 0 (scales of $W$, $U$, $v$; default 1), ``sigma_b`` >= 0 (bias scale; default 0).
    ``outputs``, ``out``, ``client``, ``progress``: as in :func:`~kernelcalc.node_kernel` (tiles, Zarr, dask;
    the same tile engine).

    **Returns:** :class:`~kernelcalc.Kernel` (``model="deq"``) with ``nngp`` $=\sigma_v^2C^\star$ and
    ``ntk`` $=\sigma_v^2(C^\star+\dot C^\star q^\star_{xy}/(1-\sigma_w^2\dot C^\star))$; ``info`` holds the
    largest contraction factor $\max(\sigma_w^2E[\phi'^2], g'(q^\star))$ and the largest $q^\star$.

    **Raises:** :class:`~kernelcalc.KernelcalcInputError` when the fixed point does not exist, is not
    reached, or $\sigma_w^2E[\phi'(h^\star)^2]\ge1$.
    """
    act = resolve_activation(activation)
    t0 = time.perf_counter()
    a, b, same = as_input_pair(x1, x2)
    v_max = max_norm(a, b)
    # range of the quadrature: the largest q* (coarse rule first), as in the ODE kernels
    coarse = dual_kernels(act, q_max=max(4.0 * (sigma_u**2 * v_max + sigma_b**2), 1.0), tol=1e-6)
    q, ok, _, slope, r = (np.asarray(o) for o in _compiled(coarse, sigma_w, sigma_u, sigma_b, sigma_v)[0](
        jnp.asarray([v_max])))
    if not (bool(ok[0]) and math.isfinite(float(q[0]))):
        q0 = sigma_u**2 * v_max + sigma_b**2
        r0 = float(sigma_w**2 * coarse(jnp.asarray(q0), jnp.asarray(q0), jnp.asarray(q0))[1])
        raise KernelcalcInputError(
            f"the {act.name} DEQ variance map q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_u^2 x.x/d + sigma_b^2 has no "
            f"finite fixed point reachable from q0 = {sigma_u**2 * v_max + sigma_b**2:.4g} (sigma_w = {sigma_w:g}): the "
            f"iteration diverges or does not converge in {_MAX_STEPS} steps (the well-posedness condition is "
            f"sigma_w^2 E[phi'(h*)^2] < 1; at q0 it is {_vs_one(r0)}); reduce sigma_w")
    if max(float(r[0]), float(slope[0])) >= 1:
        raise _condition_error(act, sigma_w, max(float(r[0]), float(slope[0])), float(q[0]), v_max)
    dual = dual_kernels(act, q_max=1.05 * max(float(q[0]), 1e-3))
    _, cross = _compiled(dual, sigma_w, sigma_u, sigma_b, sigma_v)
    inner = batched_pair_fn(cross)
    state = dict(rate=0.0, err=0.0, q_max=0.0)

    def pair_fn(sxx, syy, sxy):
        nngp, ntk, ok, rate, err, qm = inner(sxx, syy, sxy)
        i = int(np.argmax(np.where(np.isnan(rate), np.inf, rate)))
        if not rate.flat[i] < 1:
            # name the input that fails: the rate of a pair is the larger of its two inputs' rates
            v = np.unique(np.concatenate([np.ravel(sxx), np.ravel(syy)]))
            qv, _, _, sl, rv = (np.asarray(o) for o in _compiled(dual, sigma_w, sigma_u, sigma_b, sigma_v)[0](
                jnp.asarray(v)))
            worst = np.maximum(np.where(np.isnan(rv), np.inf, rv), np.where(np.isnan(sl), np.inf, sl))
            j = int(np.argmax(worst))
            raise _condition_error(act, sigma_w, float(worst[j]), float(qv[j]), float(v[j]))
        if not np.all(ok):
            raise KernelcalcInputError(
                f"the {act.name} DEQ fixed point did not converge in {_MAX_STEPS} iterations (sigma_w = {sigma_w:g}, "
                f"largest contraction factor sigma_w^2 E[phi'^2] = {_vs_one(float(np.max(rate)))}, must be < 1)")
        state.update(rate=max(state["rate"], float(np.max(rate))), err=max(state["err"], float(np.max(err))),
                     q_max=max(state["q_max"], float(np.max(qm))))
        return nngp, ntk

    pair_fn.state = state     # running maxima: the tile engine merges the workers' copies (client=)
    params = dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_b=sigma_b, sigma_v=sigma_v)
    nngp, ntk, ginfo = gram(a, None if same else b, pair_fn, tol=1e-12, progress=progress, outputs=outputs,
                            out=out, client=client, config=dict(model="deq", activation=act.name, params=params))
    require_finite(nngp, ntk, f"the {act.name} DEQ kernel")
    info = dict(expectation=dual.describe(), contraction_factor=state["rate"], q_max=state["q_max"],
                fixed_point_error_estimate=state["err"], **ginfo, seconds=time.perf_counter() - t0)
    scale = max(_max_abs(nngp), _max_abs(ntk), 1e-300)
    gap = 1.0 - state["rate"]
    info["error_estimate"] = error_estimate(nngp, ntk, DEFAULT_TOL / gap**2, state["err"] / scale,
                                            ginfo.get("interpolation_error_estimate"))
    return Kernel(nngp=nngp, ntk=ntk, model="deq", activation=act.name, params=params, info=info)
