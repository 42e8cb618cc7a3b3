r"""Empirical (finite-width) NTK of one network: structured contractions or plain Jacobians.

Every weight matrix $W$ of our models enters only through products $W z_j$ (one per layer,
ResNet block or vector-field evaluation $j$), so its per-example gradient is a sum of rank-one
terms $\nabla_W f(x) = \sum_j a_j(x)\, b_j(x)^\top$ with $a_j = \partial f/\partial(Wz_j)$ and
$b_j = z_j$, and its NTK contribution is

$$\Theta_W(x, y) = \sum_{j,k} \big(a_j(x)\cdot a_k(y)\big)\big(b_j(x)\cdot b_k(y)\big).$$

``method="structured"`` computes the $a_j$ (by reverse mode with additive zero probes, batched
over inputs: the exact autodiff cotangents) and the $b_j$ from one batched forward pass, then
evaluates the sum either as two Gram matrices of size $(N_1E)\times(N_2E)$ or by forming
$\nabla_W f = A B^\top$ with one matmul per input, whichever costs fewer flops. For the MLP,
the ResNet and the Neural ODE with fixed-step Euler and ``gradient="discretize"`` this is the
exact discrete sum, so it equals the Jacobian NTK to rounding.

For the Neural ODE with any other solver (or ``gradient="adjoint"``) the structured NTK is the
optimize-then-discretize (continuous adjoint) formula

$$\Theta = \tfrac{\sigma_v^2}{n}\phi(h_T(x))\cdot\phi(h_T(y))
+ \tfrac{\sigma_u^2}{d}(x\cdot y)\,\lambda_0(x)\cdot\lambda_0(y)
+ \tfrac{\sigma_w^2}{n}\!\int_0^T\!\!\int_0^T (\lambda_t(x)\cdot\lambda_s(y))(\phi(h_t(x))\cdot\phi(h_s(y)))\,dt\,ds,$$

with $\lambda_t = \partial f/\partial h_t$ solved backwards with diffrax
($\dot\lambda = -\tfrac{\sigma_w}{\sqrt n}\phi'(h)\odot W^\top\lambda$,
$\lambda_T = \tfrac{\sigma_v}{\sqrt n}v\odot\phi'(h_T)$) and the double integral by Gauss--Legendre
quadrature on ``quad_nodes`` nodes. It agrees with the Jacobian NTK of either gradient mode to
the solver's accuracy (measured in the tests).

``method="jacobian"`` is the naive reference: per-example gradients by ``vmap(grad)``,
flattened and contracted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .._x64 import float64
from .._validation import DEFAULT_WIDTH, KernelcalcInputError, as_input_pair, positive_int, renamed_keywords, scale_keywords
from ..theory.assumptions import warn_if_assumption1_fails
from .._results import Kernel
from ._extra import extra_ntk
from .models import EXTRA_MODELS, Network, NODEParams, _apply_one, init_params, make_network, node_input, node_solver_kwargs

__all__ = ["empirical_ntk", "network_ntk", "jacobian_ntk", "structured_ntk", "METHODS", "flow_guard",
           "require_finite", "warn_assumption1"]

METHODS = ("structured", "jacobian")


# ----------------------------------------------------------------------------- naive reference
@float64
def jacobian_ntk(params, x1, x2, net: Network):
    """``(f(x1), f(x2), Θ)`` by flattening per-example gradients (``vmap(grad)``) and contracting."""
    vg = jax.vmap(jax.value_and_grad(_apply_one), in_axes=(None, 0, None))
    f1, g1 = vg(params, x1, net)
    f2, g2 = (f1, g1) if x2 is None else vg(params, x2, net)
    J1 = jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree_util.tree_leaves(g1)], axis=1)
    J2 = J1 if x2 is None else jnp.concatenate(
        [g.reshape(g.shape[0], -1) for g in jax.tree_util.tree_leaves(g2)], axis=1)
    return f1, f2, J1 @ J2.T


# ----------------------------------------------------------------------------- rank-one sums
def _rank_one_gram(A1, B1, A2, B2):
    r"""$\sum_{j,k}(A_{1,ij}\cdot A_{2,lk})(B_{1,ij}\cdot B_{2,lk})$ for A, B of shape (N, E, n)."""
    N1, E1, n = A1.shape
    N2, E2, m = B2.shape
    gram_cost = N1 * E1 * N2 * E2 * (n + m + 1)
    dense_cost = (N1 * E1 + N2 * E2) * n * m + N1 * N2 * n * m
    if gram_cost <= dense_cost:
        GA = jnp.einsum("ajn,bkn->ajbk", A1, A2)
        GB = jnp.einsum("ajn,bkn->ajbk", B1, B2)
        return jnp.einsum("ajbk,ajbk->ab", GA, GB)
    G1 = jnp.einsum("ajn,ajm->anm", A1, B1).reshape(N1, -1)
    G2 = G1 if A2 is A1 and B2 is B1 else jnp.einsum("ajn,ajm->anm", A2, B2).reshape(N2, -1)
    return G1 @ G2.T


# ----------------------------------------------------------------------------- per-model parts
def _mlp_parts(params, x, net: Network):
    """Forward activations and probe cotangents of the MLP, batched over x (N, d)."""
    phi, n = net.activation.jax_fn, net.width
    L = net.depth

    def forward(probes):
        ins, z = [x], None
        a = x
        for layer in range(L):
            fan_in = a.shape[-1]
            z = net.sigma_w / math.sqrt(fan_in) * (a @ params.Ws[layer].T) + net.sigma_b * params.bs[layer]
            z = z + probes[layer]
            a = phi(z)
            ins.append(a)
        f = net.sigma_v / math.sqrt(n) * (a @ params.w_out) + net.sigma_vb * params.b_out
        return jnp.sum(f), (f, ins)

    probes = [jnp.zeros((x.shape[0], n)) for _ in range(L)]
    deltas, (f, ins) = jax.grad(forward, has_aux=True)(probes)
    return f, ins, deltas


def _mlp_ntk(params, x1, x2, net: Network):
    n = net.width
    f1, ins1, d1 = _mlp_parts(params, x1, net)
    f2, ins2, d2 = (f1, ins1, d1) if x2 is None else _mlp_parts(params, x2, net)
    theta = net.sigma_v**2 / n * (ins1[-1] @ ins2[-1].T) + net.sigma_vb**2
    for layer in range(net.depth):
        fan_in = ins1[layer].shape[-1]
        dd = d1[layer] @ d2[layer].T
        theta = theta + dd * (net.sigma_w**2 / fan_in * (ins1[layer] @ ins2[layer].T) + net.sigma_b**2)
    return f1, f2, theta


def _resnet_parts(params: NODEParams, x, net: Network, depth: int, T: float):
    """Batched states and probe cotangents of the weight-tied Euler ResNet with ``depth`` blocks."""
    phi, n = net.activation.jax_fn, net.width
    c = T / depth * net.sigma_w / math.sqrt(n)
    h0 = jax.vmap(node_input, in_axes=(None, 0, None))(params, x, net)

    def forward(probes):
        def step(h, p):
            z = phi(h)
            h_next = h + c * (z @ params.W.T) + p
            return h_next, z

        hL, zs = jax.lax.scan(step, h0 + probes[0], probes[1:])
        f = net.sigma_v / math.sqrt(n) * (phi(hL) @ params.v)
        return jnp.sum(f), (f, zs, hL)

    probes = jnp.zeros((depth + 1,) + h0.shape)
    lam, (f, zs, hL) = jax.grad(forward, has_aux=True)(probes)
    # lam[l] = df/dh^l; block l (1..L) has W-gradient c * lam[l] phi(h^{l-1})^T
    A = c * jnp.swapaxes(lam[1:], 0, 1)  # (N, L, n)
    B = jnp.swapaxes(zs, 0, 1)           # (N, L, n)
    return f, A, B, lam[0], phi(hL)


def _gauss_nodes(T: float, q: int):
    t, w = np.polynomial.legendre.leggauss(q)
    return jnp.asarray(T / 2 * (t + 1)), jnp.asarray(T / 2 * w)


def _node_adjoint_parts(params: NODEParams, x, net: Network, quad_nodes: int):
    """Continuous-adjoint quantities at Gauss nodes, per input (vmapped)."""
    phi, dphi, n = net.activation.jax_fn, net.activation.jax_derivative, net.width
    c = net.sigma_w / math.sqrt(n)
    ts, wts = _gauss_nodes(net.T, quad_nodes)
    kw = node_solver_kwargs(net)
    kw.pop("adjoint")

    def fwd_vf(t, h, W):
        return c * (W @ phi(h))

    def bwd_vf(t, y, W):
        h, lam = y
        return c * (W @ phi(h)), -c * dphi(h) * (W.T @ lam)

    def one(xi):
        h0 = node_input(params, xi, net)
        sol = diffrax.diffeqsolve(diffrax.ODETerm(fwd_vf), t0=0.0, t1=net.T, y0=h0, args=params.W,
                                  saveat=diffrax.SaveAt(ts=jnp.append(ts, net.T)), **kw)
        hs, hT = sol.ys[:-1], sol.ys[-1]
        lamT = net.sigma_v / math.sqrt(n) * params.v * dphi(hT)
        back = dict(kw, dt0=-kw["dt0"])
        sol_b = diffrax.diffeqsolve(diffrax.ODETerm(bwd_vf), t0=net.T, t1=0.0, y0=(hT, lamT),
                                    args=params.W, saveat=diffrax.SaveAt(ts=jnp.append(ts[::-1], 0.0)),
                                    **back)
        lams = sol_b.ys[1][:-1][::-1]
        lam0 = sol_b.ys[1][-1]
        f = net.sigma_v / math.sqrt(n) * (params.v @ phi(hT))
        return f, c * wts[:, None] * lams, phi(hs), lam0, phi(hT)

    return jax.vmap(one)(x)


@float64
def structured_ntk(params, x1, x2, net: Network, quad_nodes: int = 32):
    """``(f(x1), f(x2), Θ)`` by the structured contraction (see the module docstring)."""
    if net.model == "deq":
        return jacobian_ntk(params, x1, x2, net)   # implicit gradients: no structured form
    if net.model in EXTRA_MODELS:
        return extra_ntk(params, x1, x2, net)
    if net.model == "mlp":
        return _mlp_ntk(params, x1, x2, net)
    if net.model == "resnet" or (net.solver == "euler" and not net.adaptive and net.gradient == "discretize"):
        depth = net.depth if net.model == "resnet" else net.solver_steps
        parts = functools.partial(_resnet_parts, params, net=net, depth=depth, T=net.T)
    else:
        parts = functools.partial(_node_adjoint_parts, params, net=net, quad_nodes=quad_nodes)
    f1, A1, B1, l1, z1 = parts(x1)
    f2, A2, B2, l2, z2 = (f1, A1, B1, l1, z1) if x2 is None else parts(x2)
    x2_ = x1 if x2 is None else x2
    n, d = net.width, x1.shape[-1]
    theta = (net.sigma_v**2 / n * (z1 @ z2.T)
             + net.sigma_u**2 / d * (x1 @ x2_.T) * (l1 @ l2.T)
             + _rank_one_gram(A1, B1, A2, B2))
    return f1, f2, theta


# ----------------------------------------------------------------------------- failures as clear errors
def warn_assumption1(net: Network, context: str, stacklevel: int | None = None) -> None:
    """One :class:`~kernelcalc.Assumption1Warning` for a Neural ODE / ResNet whose activation fails
    Assumption 1 (the MLP is not the subject of that theory). ``stacklevel`` ``None``: the user's line."""
    if net.model in ("node", "resnet"):
        warn_if_assumption1_fails(net.activation, context=context, stacklevel=stacklevel)


def _describe(net: Network, seed) -> str:
    who = f"the {net.activation.name} network (model={net.model!r}, width {net.width}"
    return who + (f", seed {seed})" if seed is not None else ")")


def require_finite(net: Network, f1, f2, theta, seed=None) -> None:
    r"""Raise :class:`KernelcalcInputError` unless the outputs ``f1``, ``f2`` and the NTK ``theta`` are finite.

    A non-finite output means the forward state overflowed: for the Neural ODE the flow
    $\dot h = \tfrac{\sigma_w}{\sqrt n}W\phi(h)$ of an activation that grows faster than linearly
    (e.g. $x^2$) reaches infinity in finite time, so past that time there is no network to measure.
    """
    f_ok = bool(np.isfinite(f1).all() and np.isfinite(f2).all())
    if f_ok and bool(np.isfinite(theta).all()):
        return
    who = _describe(net, seed)
    if net.model == "node":
        what = (f"the finite-width flow blew up before T = {net.T:g}: the state h_t became non-finite"
                if not f_ok else
                f"the backward (gradient) pass of the finite-width flow overflowed before T = {net.T:g}: "
                "the NTK is non-finite")
        hint = ("an activation that grows faster than linearly can make h_t reach infinity in finite time; "
                "reduce T or sigma_w")
    elif net.model == "resnet":
        what = (f"the ResNet states overflowed (non-finite) within {net.depth} blocks at T = {net.T:g}"
                if not f_ok else "the ResNet's NTK overflowed (non-finite)")
        hint = "reduce T or sigma_w"
    else:
        what = (f"the MLP forward pass overflowed (non-finite output) within {net.depth} layers"
                if not f_ok else "the MLP's NTK overflowed (non-finite)")
        hint = "reduce depth, sigma_w or sigma_b, or use an activation that grows more slowly"
    raise KernelcalcInputError(f"{what} for {who}; {hint}")


class _MuteCallbackErrors(logging.Filter):
    def filter(self, record) -> bool:  # jax logs a full traceback before re-raising a callback error
        return "pure_callback failed" not in record.getMessage()


@contextlib.contextmanager
def flow_guard(net: Network, seed=None):
    """Turn a diffrax runtime failure (adaptive solver: ``max_steps`` reached, step size too small) into a
    one-line :class:`KernelcalcInputError` naming the network, without jax's logged traceback."""
    log = logging.getLogger("jax._src.callback")
    mute = _MuteCallbackErrors()
    log.addFilter(mute)
    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        text = str(err)
        if "maximum number of solver steps" in text:
            why = f"the adaptive ODE solver reached max_steps = {net.max_steps} before T = {net.T:g}"
        elif "minimum step size" in text:
            why = f"the adaptive ODE solver's step size collapsed before T = {net.T:g}"
        else:
            raise
        raise KernelcalcInputError(
            f"{why} for {_describe(net, seed)}: the finite-width flow most likely blows up (non-finite state) "
            "before T; reduce T or sigma_w") from None
    finally:
        log.removeFilter(mute)


@float64
@functools.partial(jax.jit, static_argnames=("net", "method", "quad_nodes"))
def network_ntk(params, x1, x2, net: Network, method: str = "structured", quad_nodes: int = 32):
    """Jitted ``(f(x1), f(x2), Θ(x1, x2))`` of the network with parameters ``params``.

    ``x2=None`` means ``x2 = x1`` (and shares the work).
    """
    if method == "jacobian":
        return jacobian_ntk(params, x1, x2, net)
    return structured_ntk(params, x1, x2, net, quad_nodes)


@float64
@renamed_keywords(steps="solver_steps")
@scale_keywords(model_defaults=dict(T=1.0, gradient="discretize", solver="tsit5", solver_steps=64))
def empirical_ntk(x1, x2=None, *, model="node", activation, width=DEFAULT_WIDTH, seed=0, T=None, depth=None,
                  gradient=None, solver=None, solver_steps=None, rtol=None, atol=None,
                  sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, sigma_b=0.0, sigma_vb=0.0,
                  method="structured", quad_nodes=32, params=None) -> Kernel:
    r"""Finite-width NTK of one randomly initialised network.

    **Arguments:**

    - ``x1`` (N1, d), ``x2`` (N2, d) or ``None`` (= ``x1``).
    - ``model``: ``"node"``, ``"resnet"``, ``"mlp"``, ``"node_untied"``, ``"resnet_untied"`` or
      ``"deq"`` (:mod:`kernelcalc.empirical.untied`, :mod:`kernelcalc.empirical.deq`); ``activation``;
      ``width`` $n$ (default 256);
      ``seed`` (parameters ``init_params(PRNGKey(seed))``) or explicit ``params``.
    - The model's scales (``docs/naming.md``): Neural ODE / ResNet (tied or untied) ``sigma_w``,
      ``sigma_u``, ``sigma_v``; DEQ also ``sigma_b``; MLP ``sigma_w``, ``sigma_b``, ``sigma_v``,
      ``sigma_vb`` (as :func:`kernelcalc.mlp_kernel`). A scale of another model is an error.
    - Neural ODE / ResNet: ``T``; ResNet/MLP: ``depth``.
    - Neural ODE: ``solver`` (``euler``, ``heun``, ``midpoint``, ``ralston``, ``rk4``,
      ``bosh3``, ``tsit5``, ``dopri5``, ``dopri8``), ``solver_steps`` (fixed step ``T/solver_steps``;
      ``steps`` is its deprecated name), ``rtol``/``atol`` (adaptive when given), ``gradient``
      (``"discretize"`` or ``"adjoint"``). Defaults: ``T`` 1.0, ``"tsit5"``, 64 steps, ``"discretize"``; for these
      and ``depth``, ``None`` (the default) means the model's default; a keyword that does not configure ``model``, passed with any other value (its default included), is an error.
    - ``method``: ``"structured"`` (default) or ``"jacobian"`` (naive reference; the only one
      in which ``gradient`` changes the result for non-Euler solvers); ``quad_nodes``:
      Gauss--Legendre nodes of the continuous-adjoint NODE form.

    **Returns:** a :class:`~kernelcalc.Kernel` with ``ntk`` $=\nabla_\theta f(x_i)\cdot
    \nabla_\theta f(y_j)$ and ``nngp=None``: one network has no NNGP ($E[f(x)f(y)]$ is an average
    over initialisations, see :func:`kernelcalc.monte_carlo`); its outputs are ``info["f1"]``
    $=f(x_i)$ and ``info["f2"]`` $=f(y_j)$, with the method and the wall time.

    For a Neural ODE or ResNet whose activation fails Assumption 1 an
    :class:`~kernelcalc.Assumption1Warning` is issued (once per call).

    Raises :class:`~kernelcalc.KernelcalcInputError` when the network overflows (for the Neural
    ODE: the finite-width flow blows up before ``T``, e.g. $\phi = x^2$ at ``T = 3``) instead of
    returning a NaN kernel.
    """
    a, b, same = as_input_pair(x1, x2)
    net = make_network(model, activation=activation, width=width, T=T, depth=depth, sigma_w=sigma_w,
                       sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b, sigma_vb=sigma_vb, solver=solver,
                       solver_steps=solver_steps, rtol=rtol, atol=atol, gradient=gradient)
    if method not in METHODS:
        raise KernelcalcInputError(f"method must be one of {METHODS}, got {method!r}")
    quad_nodes = positive_int("quad_nodes", quad_nodes)
    warn_assumption1(net, "empirical_ntk")
    if params is None:
        seed = positive_int("seed", seed, minimum=0)
        params = init_params(jax.random.PRNGKey(seed), net, a.shape[1])
    else:
        seed = None
    t0 = time.perf_counter()
    with flow_guard(net, seed):
        f1, f2, theta = network_ntk(params, jnp.asarray(a), None if same else jnp.asarray(b), net, method,
                                    quad_nodes)
        theta = np.asarray(theta)
        f1, f2 = np.asarray(f1), np.asarray(f2)
    require_finite(net, f1, f2, theta, seed)
    wall = time.perf_counter() - t0
    return Kernel(nngp=None, ntk=theta, model=f"empirical:{model}", activation=net.activation.name,
                  params=dict(net.describe(), seed=seed),
                  info={"method": method, "f1": f1, "f2": f2, "seconds": wall, "quad_nodes": quad_nodes})
