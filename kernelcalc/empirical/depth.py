r"""Depth vs the continuous limit, and discretize-then-optimize vs optimize-then-discretize.

:func:`depth_gap` fixes one set of parameters $\theta=(U, W, v)$ and compares the weight-tied
Euler ResNet $f^L$ (depth $L$, step $T/L$) with the Neural ODE $f$ solved accurately, at the
same $\theta$:

$$\text{output gap} = \frac{\|f^L(X) - f(X)\|}{\|f(X)\|},\quad
\text{gradient gap} = \frac{\|\nabla_\theta f^L(X) - \nabla_\theta f(X)\|_F}{\|\nabla_\theta f(X)\|_F},\quad
\text{kernel gap} = \frac{\|\Theta^L - \Theta\|_F}{\|\Theta\|_F},$$

with $\Theta = J J^\top$ the empirical NTK of the same network ($J$ the per-input gradients,
stacked).  Slopes are least-squares fits of log gap vs log $L$ (Euler: $-1$ when everything is
smooth).

:func:`gradient_mode_gap` compares the NODE gradients of the two modes (diffrax
``RecursiveCheckpointAdjoint`` vs ``BacksolveAdjoint``) at several solver tolerances.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .._x64 import float64
from .._validation import DEFAULT_WIDTH, KernelcalcInputError, as_input_pair, positive_int, progress_disable, scale_keywords
from .._results import JsonResult, text_table
from ..kernels.untied import check_weights
from .models import _apply_one, init_params, make_network
from .montecarlo import fit_slope
from .ntk import flow_guard, require_finite, warn_assumption1
from .untied import coarsen, untied_apply

__all__ = ["depth_gap", "DepthGap", "gradient_mode_gap", "GradientModeGap"]


@functools.partial(jax.jit, static_argnames=("net",))
def _value_and_jacobian(params, X, net):
    f, g = jax.vmap(jax.value_and_grad(_apply_one), in_axes=(None, 0, None))(params, X, net)
    J = jnp.concatenate([l.reshape(l.shape[0], -1) for l in jax.tree_util.tree_leaves(g)], axis=1)
    return f, J


def _checked_value_and_jacobian(params, X, net, seed):
    """``(f, J)`` as numpy arrays; a blown-up flow or an overflow is a :class:`KernelcalcInputError`."""
    with flow_guard(net, seed):
        f, J = (np.asarray(v) for v in _value_and_jacobian(params, X, net))
    require_finite(net, f, f, J, seed)
    return f, J


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check_ints(name, values):
    if isinstance(values, (int, np.integer)):
        values = [values]
    try:
        out = [positive_int(name, v) for v in values]
    except TypeError:
        raise KernelcalcInputError(f"{name} must be a sequence of integers >= 1, got {values!r}") from None
    if not out:
        raise KernelcalcInputError(f"{name} must not be empty")
    return out


@dataclasses.dataclass(frozen=True)
class DepthGap(JsonResult):
    """Result of :func:`depth_gap`: per depth the relative output, gradient and kernel gaps, and fitted slopes."""

    depths: tuple
    output_gap: tuple
    gradient_gap: tuple
    kernel_gap: tuple
    slopes: dict
    params: dict

    def table(self) -> str:
        lines = text_table([("depth L", 8, ""), ("|f^L-f|/|f|", 14, ".3e"), ("|grad f^L-grad f|", 18, ".3e"),
                            ("|K^L-K|/|K|", 14, ".3e")],
                           zip(self.depths, self.output_gap, self.gradient_gap, self.kernel_gap))
        lines.append(f"{'slope':>8} {self.slopes['output']:>14.3f} {self.slopes['gradient']:>18.3f} "
                     f"{self.slopes['kernel']:>14.3f}")
        return "\n".join(lines)



@float64
@scale_keywords("node", label="depth_gap (the Neural ODE and the ResNet)")
def depth_gap(X, *, activation, width=DEFAULT_WIDTH, depths: Sequence[int] = (2, 4, 8, 16, 32, 64, 128, 256), T=1.0,
              seed=0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, solver="dopri8", rtol=1e-11, atol=1e-11,
              gradient="discretize", fit_from: int = 1, progress=None, weights: str = "tied") -> DepthGap:
    r"""Gaps between the depth-$L$ weight-tied ResNet and the Neural ODE at the same parameters.

    **Arguments:** ``X`` (N, d) inputs; ``activation``; ``width``; ``depths`` (ints >= 1);
    ``T``, ``sigma_w``, ``sigma_u``, ``sigma_v``; ``seed`` of the shared parameters; the
    reference ODE solve: ``solver``, ``rtol``, ``atol``, ``gradient`` (how $\nabla_\theta f$ of
    the ODE is computed); ``fit_from``: slopes are fitted to ``depths`` >= this value;
    ``progress``: tqdm bar over depths (``None``: auto, when stderr is a terminal; ``True``; ``False``).

    ``weights="untied"``: the untied ResNet vs the untied ODE on one Brownian path
    (:func:`_untied_depth_gap`; ``solver``/``rtol``/``atol``/``gradient`` do not apply).

    **Returns:** a :class:`DepthGap` (``.table()``, ``.to_json()``, ``.slopes``).
    """
    if check_weights(weights) == "untied":
        given = {k: v for k, v, d in (("solver", solver, "dopri8"), ("rtol", rtol, 1e-11), ("atol", atol, 1e-11),
                                       ("gradient", gradient, "discretize")) if v != d}
        if given:
            raise KernelcalcInputError(f"{', '.join(f'{k}={v!r}' for k, v in given.items())} does not apply to "
                                       "weights='untied' (Euler-Maruyama on one Brownian path, exact reverse mode)")
        return _untied_depth_gap(X, activation=activation, width=width, depths=depths, T=T, seed=seed, sigma_w=sigma_w,
                                sigma_u=sigma_u, sigma_v=sigma_v, fit_from=fit_from)
    a, _, _ = as_input_pair(X)
    depths = _check_ints("depths", depths)
    fit_from = positive_int("fit_from", fit_from)
    node = make_network("node", activation=activation, width=width, T=T, sigma_w=sigma_w, sigma_u=sigma_u,
                        sigma_v=sigma_v, solver=solver, rtol=rtol, atol=atol, gradient=gradient)
    seed = positive_int("seed", seed, minimum=0)
    warn_assumption1(node, "depth_gap")
    params = init_params(jax.random.PRNGKey(seed), node, a.shape[1])
    Xj = jnp.asarray(a)
    f, J = _checked_value_and_jacobian(params, Xj, node, seed)
    K = J @ J.T
    out, grad, ker = [], [], []
    for L in tqdm(depths, desc="depths", disable=progress_disable(progress)):
        res = make_network("resnet", activation=activation, width=width, T=T, depth=L, sigma_w=sigma_w,
                           sigma_u=sigma_u, sigma_v=sigma_v)
        fL, JL = _checked_value_and_jacobian(params, Xj, res, seed)
        out.append(_rel(fL, f))
        grad.append(_rel(JL, J))
        ker.append(_rel(JL @ JL.T, K))
    sel = np.asarray(depths) >= fit_from
    ds = np.asarray(depths)[sel]
    slopes = {"output": fit_slope(ds, np.asarray(out)[sel]), "gradient": fit_slope(ds, np.asarray(grad)[sel]),
              "kernel": fit_slope(ds, np.asarray(ker)[sel])}
    return DepthGap(depths=tuple(depths), output_gap=tuple(out), gradient_gap=tuple(grad), kernel_gap=tuple(ker),
                    slopes=slopes, params=dict(node.describe(), depths=depths, seed=seed, n_inputs=a.shape[0],
                                               fit_from=fit_from))


@dataclasses.dataclass(frozen=True)
class GradientModeGap(JsonResult):
    """Result of :func:`gradient_mode_gap`: per tolerance, relative gaps between the two modes' gradients and NTKs."""

    tolerances: tuple
    gradient_gap: tuple
    kernel_gap: tuple
    output_gap: tuple
    params: dict

    def table(self) -> str:
        return "\n".join(text_table([("rtol=atol", 10, ".0e"), ("|f_d-f_a|/|f|", 14, ".3e"),
                                     ("|g_d-g_a|/|g|", 14, ".3e"), ("|K_d-K_a|/|K|", 14, ".3e")],
                                    zip(self.tolerances, self.output_gap, self.gradient_gap, self.kernel_gap)))



@float64
@scale_keywords("node")
def gradient_mode_gap(X, *, activation, width=DEFAULT_WIDTH, tolerances: Sequence[float] = (1e-4, 1e-6, 1e-8, 1e-10),
                      T=1.0, seed=0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, solver="tsit5",
                      progress=None) -> GradientModeGap:
    r"""Discretize-then-optimize vs optimize-then-discretize gradients of one Neural ODE.

    For each tolerance ``tol`` the ODE is solved adaptively (``rtol = atol = tol``) and the
    per-input parameter gradients are computed both by differentiating through the solver
    (``"discretize"``) and by the continuous adjoint (``"adjoint"``); returns the relative
    differences of outputs, gradients and NTKs.  For smooth $\phi$ the gap shrinks with the
    tolerance; for kinked $\phi$ (relu) it need not. ``width`` defaults to 256; ``progress``: ``None``
    (auto), ``True`` or ``False``.
    """
    a, _, _ = as_input_pair(X)
    try:
        tolerances = [float(t) for t in tolerances]
    except TypeError:
        raise KernelcalcInputError(f"tolerances must be a sequence of positive numbers, got {tolerances!r}") from None
    if not tolerances or any(not t > 0 for t in tolerances):
        raise KernelcalcInputError(f"tolerances must be a non-empty sequence of positive numbers, got {tolerances!r}")
    seed = positive_int("seed", seed, minimum=0)
    common = dict(activation=activation, width=width, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v,
                  solver=solver)
    params = None
    out, grad, ker = [], [], []
    Xj = jnp.asarray(a)
    for tol in tqdm(tolerances, desc="tolerances", disable=progress_disable(progress)):
        nd = make_network("node", rtol=tol, atol=tol, gradient="discretize", **common)
        na = make_network("node", rtol=tol, atol=tol, gradient="adjoint", **common)
        if params is None:
            warn_assumption1(nd, "gradient_mode_gap")
            params = init_params(jax.random.PRNGKey(seed), nd, a.shape[1])
        fd, Jd = _checked_value_and_jacobian(params, Xj, nd, seed)
        fa, Ja = _checked_value_and_jacobian(params, Xj, na, seed)
        out.append(_rel(fa, fd))
        grad.append(_rel(Ja, Jd))
        ker.append(_rel(Ja @ Ja.T, Jd @ Jd.T))
    return GradientModeGap(tolerances=tuple(tolerances), gradient_gap=tuple(grad), kernel_gap=tuple(ker),
                           output_gap=tuple(out), params=dict(common, activation=str(activation), seed=seed))


def _untied_depth_gap(X, *, activation, width=64, depths=(2, 4, 8, 16, 32), T=1.0, seed=0, sigma_w=1.0,
                     sigma_u=1.0, sigma_v=1.0, fine_steps=None, fit_from=1):
    r"""Gaps between the depth-$L$ untied ResNet and the untied Neural ODE on the **same Brownian path**.

    The reference is ``node_untied`` with ``fine_steps`` $=M$ Euler--Maruyama steps (default
    $4\,\mathrm{lcm}(\text{depths})$); the ResNet of depth $L$ uses :func:`coarsen` of its parameters.
    Gradients are taken w.r.t. the fine parameters (the coarse gradient spread over its block,
    times $\sqrt{L/M}$), so the gradient gap compares like with like; the NTK is unchanged by this
    (:func:`coarsen` is a co-isometry).  Expect slopes $\approx-1/2$ (strong order of Euler--Maruyama).

    **Returns:** :class:`~kernelcalc.empirical.DepthGap`.
    """
    a, _, _ = as_input_pair(X)
    depths = _check_ints("depths", depths)
    lcm = math.lcm(*depths)
    M = positive_int("fine_steps", 4 * lcm if fine_steps is None else fine_steps)
    if M % lcm:
        raise ValueError(f"fine_steps = {M} must be a multiple of every depth {depths}")
    seed = positive_int("seed", seed, minimum=0)
    common = dict(activation=activation, width=width, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)
    fine = make_network("node_untied", solver_steps=M, **common)
    params = init_params(jax.random.PRNGKey(seed), fine, a.shape[1])
    Xj = jnp.asarray(a)

    def flat(g, L):
        Ws = jnp.repeat(g.Ws, M // L, axis=1 if g.Ws.ndim == 4 else 0) * math.sqrt(L / M)
        return jnp.concatenate([g.U.reshape(g.U.shape[0], -1), Ws.reshape(Ws.shape[0], -1), g.v], axis=1)

    def value_and_jac(p, net):
        f, g = jax.vmap(jax.value_and_grad(untied_apply), in_axes=(None, 0, None))(p, Xj, net)
        return np.asarray(f), np.asarray(flat(g, p.Ws.shape[0]))

    f, J = value_and_jac(params, fine)
    K = J @ J.T
    out, grad, ker = [], [], []
    for L in depths:
        net = make_network("resnet_untied", depth=L, **common)
        fL, JL = value_and_jac(coarsen(params, L), net)
        out.append(_rel(fL, f))
        grad.append(_rel(JL, J))
        ker.append(_rel(JL @ JL.T, K))
    sel = np.asarray(depths) >= positive_int("fit_from", fit_from)
    ds = np.asarray(depths)[sel]
    slopes = {k: fit_slope(ds, np.asarray(v)[sel]) for k, v in (("output", out), ("gradient", grad), ("kernel", ker))}
    return DepthGap(depths=tuple(depths), output_gap=tuple(out), gradient_gap=tuple(grad), kernel_gap=tuple(ker),
                    slopes=slopes, params=dict(fine.describe(), weights="untied", depths=depths, seed=seed,
                                               n_inputs=a.shape[0], fit_from=int(fit_from)))
