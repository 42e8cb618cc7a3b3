r"""Finite-width networks whose infinite-width limits are the analytic kernels.

Three models, all with parameters as explicit pytrees (``NamedTuple``) and all scalar-output:

- ``"node"`` -- the Neural ODE of :func:`kernelcalc.node_kernel`:

  $$h_0 = \tfrac{\sigma_u}{\sqrt d} U x,\qquad
  \dot h_t = \tfrac{\sigma_w}{\sqrt n} W \phi(h_t)\ (t\in[0,T]),\qquad
  f(x) = \tfrac{\sigma_v}{\sqrt n} v\cdot\phi(h_T),$$

  $U\in\mathbb R^{n\times d}$, $W\in\mathbb R^{n\times n}$, $v\in\mathbb R^n$ iid $N(0,1)$,
  solved with diffrax (fixed-step or adaptive; see :class:`Network`).
- ``"resnet"`` -- the weight-tied Euler ResNet of :func:`kernelcalc.resnet_kernel`, same
  parameters: $h^\ell = h^{\ell-1} + \tfrac TL\tfrac{\sigma_w}{\sqrt n}W\phi(h^{\ell-1})$,
  $f = \tfrac{\sigma_v}{\sqrt n}v\cdot\phi(h^L)$.
- ``"mlp"`` -- the MLP of :func:`kernelcalc.mlp_kernel` (neural-tangents NTK
  parameterisation): $z^1 = \tfrac{\sigma_w}{\sqrt d}W^1x + \sigma_b b^1$,
  $z^{\ell+1} = \tfrac{\sigma_w}{\sqrt n}W^{\ell+1}\phi(z^\ell) + \sigma_b b^{\ell+1}$,
  $f = \tfrac{\sigma_v}{\sqrt n}w^{out}\cdot\phi(z^L) + \sigma_{vb}b^{out}$.

The scale keywords of each model are those of ``docs/naming.md`` (:data:`kernelcalc._validation.MODEL_SCALES`).

The public API is three functions (used by training code as well)::

    net = make_network("node", activation="softplus", width=256, T=1.0)
    params = init_params(jax.random.PRNGKey(0), net, d=3)
    f = model_apply(params, x, net)          # x: (N, d) -> f: (N,)

``model_apply`` is a pure jax function of ``params`` (differentiate it with ``jax.grad``);
``net`` is hashable and static.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .._x64 import float64
from ._extra import extra_apply, extra_describe, extra_init, extra_network_kwargs
from .._validation import DEFAULT_WIDTH, KernelcalcInputError, deprecated, positive, positive_int, renamed_keywords, scale_keywords
from ..theory.activations import Activation, resolve_activation

__all__ = [
    "Network", "NODEParams", "MLPParams", "make_network", "init_params", "model_apply", "batched_apply",
    "SOLVERS", "GRADIENT_MODES", "MODELS", "RK4",
]

MODELS = ("node", "resnet", "mlp", "node_untied", "resnet_untied", "deq")
EXTRA_MODELS = MODELS[3:]   # implemented in .untied / .deq via ._extra
GRADIENT_MODES = ("discretize", "adjoint")


class RK4(diffrax.AbstractERK):
    """The classical 4-stage, 4th-order Runge--Kutta method (fixed step only: no error estimate)."""

    tableau = diffrax.ButcherTableau(
        c=np.array([0.5, 0.5, 1.0]),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    )
    interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


#: solver name -> (constructor, has an embedded error estimate, i.e. usable adaptively)
SOLVERS = {
    "euler": (diffrax.Euler, False),
    "heun": (diffrax.Heun, True),
    "midpoint": (diffrax.Midpoint, True),
    "ralston": (diffrax.Ralston, True),
    "rk4": (RK4, False),
    "bosh3": (diffrax.Bosh3, True),
    "tsit5": (diffrax.Tsit5, True),
    "dopri5": (diffrax.Dopri5, True),
    "dopri8": (diffrax.Dopri8, True),
}


class NODEParams(NamedTuple):
    """Parameters of the Neural ODE and of the weight-tied ResNet: ``U`` (n, d), ``W`` (n, n), ``v`` (n,)."""

    U: jax.Array
    W: jax.Array
    v: jax.Array


class MLPParams(NamedTuple):
    """Parameters of the MLP: hidden ``Ws[l]`` (n, fan_in), ``bs[l]`` (n,); readout ``w_out`` (n,), ``b_out`` ()."""

    Ws: tuple
    bs: tuple
    w_out: jax.Array
    b_out: jax.Array


@dataclasses.dataclass(frozen=True)
class Network:
    r"""A validated, hashable description of one finite-width architecture (no parameters).

    **Fields:** ``model`` (``"node"``, ``"resnet"``, ``"mlp"``), ``activation``
    (:class:`~kernelcalc.Activation`), ``width`` $n$; the scales (``docs/naming.md``): Neural ODE / ResNet
    and their untied variants ``sigma_w``, ``sigma_u``, ``sigma_v``, DEQ also ``sigma_b``, MLP ``sigma_w``,
    ``sigma_b``, ``sigma_v``, ``sigma_vb`` (a field that does not apply keeps its default); ``T``;
    ResNet / MLP: ``depth``; Neural ODE solver: ``solver`` (a name in :data:`SOLVERS`),
    ``solver_steps`` (fixed step $T/\text{solver\_steps}$, or the initial step when adaptive), ``rtol`` /
    ``atol`` (both ``None``: fixed step; else a PID controller), ``gradient``
    (``"discretize"``: differentiate through the solver, diffrax ``RecursiveCheckpointAdjoint``;
    ``"adjoint"``: continuous adjoint, diffrax ``BacksolveAdjoint``), ``max_steps``.
    """

    model: str
    activation: Activation
    width: int
    T: float = 1.0
    sigma_w: float = 1.0
    sigma_u: float = 1.0
    sigma_v: float = 1.0
    depth: int | None = None
    solver: str = "tsit5"
    solver_steps: int = 64
    rtol: float | None = None
    atol: float | None = None
    gradient: str = "discretize"
    max_steps: int = 100_000
    sigma_b: float = 0.0
    sigma_vb: float = 0.0

    @property
    def steps(self) -> int:
        """Deprecated: use ``solver_steps``."""
        deprecated("Network.steps", "Network.solver_steps")
        return self.solver_steps

    @property
    def adaptive(self) -> bool:
        return self.rtol is not None

    def describe(self) -> dict:
        """The parameters that matter for this model, JSON-serialisable."""
        out = {"model": self.model, "activation": self.activation.name, "width": self.width}
        if self.model in ("node", "resnet"):
            out.update(T=self.T, sigma_w=self.sigma_w, sigma_u=self.sigma_u, sigma_v=self.sigma_v)
        if self.model in ("resnet", "mlp"):
            out["depth"] = self.depth
        if self.model == "mlp":
            out.update(sigma_w=self.sigma_w, sigma_b=self.sigma_b, sigma_v=self.sigma_v, sigma_vb=self.sigma_vb)
        if self.model == "node":
            out.update(solver=self.solver, solver_steps=self.solver_steps, rtol=self.rtol, atol=self.atol,
                       gradient=self.gradient)
        if self.model in EXTRA_MODELS:
            out.update(extra_describe(self))
        return out


@renamed_keywords(steps="solver_steps")
@scale_keywords(model_defaults=dict(T=1.0, solver="tsit5", solver_steps=64, gradient="discretize",
                                    max_steps=100_000))
def make_network(model: str = "node", *, activation, width: int = DEFAULT_WIDTH, T=None, depth=None,
                 sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, sigma_b=0.0, sigma_vb=0.0, solver=None, solver_steps=None,
                 rtol=None, atol=None, gradient=None, max_steps=None) -> Network:
    """Validate the arguments and build a :class:`Network` (errors name the argument).

    The scale keywords are those of ``model`` in ``docs/naming.md`` (``sigma_w``, ``sigma_u``,
    ``sigma_v``; DEQ also ``sigma_b``; MLP ``sigma_w``, ``sigma_b``, ``sigma_v``, ``sigma_vb``;
    weight scales > 0, bias scales >= 0); one that does not apply to ``model`` is an error.  ``T``, ``depth``,
    ``solver``, ``solver_steps``, ``rtol``, ``atol``, ``gradient``, ``max_steps`` as the fields of :class:`Network`;
    ``None`` (the default) means the model's default; a keyword that does not configure ``model``, passed with any other value (its default included), is an error (defaults: ``T`` 1.0, ``"tsit5"``, 64 steps, ``"discretize"``,
    100 000 steps).
    """
    if not isinstance(model, str) or model not in MODELS:
        raise KernelcalcInputError(f"model must be one of {MODELS}, got {model!r}")
    act = resolve_activation(activation)
    width = positive_int("width", width)
    kw = dict(model=model, activation=act, width=width)
    scales = {k: v for k, v in dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b,
                                    sigma_vb=sigma_vb).items() if v is not None}   # validated by @scale_keywords
    if model in EXTRA_MODELS:

        if solver != "tsit5":   # the default of the ODE models; any other choice would be silently unused
            raise KernelcalcInputError(f"solver does not apply to model={model!r} (fixed Euler(-Maruyama) steps "
                                       f"or an optimistix equilibrium solve), got solver={solver!r}")
        return Network(**kw, **scales, **extra_network_kwargs(model, T=T, depth=depth, solver_steps=solver_steps, rtol=rtol,
                                                              atol=atol, gradient=gradient, max_steps=max_steps))
    kw.update(scales)
    if model in ("node", "resnet"):
        kw["T"] = positive("T", T)
    if model in ("resnet", "mlp"):
        if depth is None:
            raise KernelcalcInputError(f"depth is required for model={model!r}")
        kw["depth"] = positive_int("depth", depth)
    if model == "node":
        if not isinstance(solver, str) or solver.lower() not in SOLVERS:
            raise KernelcalcInputError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
        solver = solver.lower()
        if gradient not in GRADIENT_MODES:
            raise KernelcalcInputError(
                f"gradient must be 'discretize' (through the solver) or 'adjoint' (continuous adjoint), got {gradient!r}")
        solver_steps = positive_int("solver_steps", solver_steps)
        if (rtol is None) != (atol is None):
            rtol = 1e-8 if rtol is None else rtol
            atol = 1e-8 if atol is None else atol
        if rtol is not None:
            rtol, atol = positive("rtol", rtol), positive("atol", atol)
            if not SOLVERS[solver][1]:
                raise KernelcalcInputError(
                    f"solver={solver!r} has no error estimate; use fixed steps (rtol=atol=None) "
                    f"or an adaptive solver ({', '.join(s for s, (_, a) in SOLVERS.items() if a)})")
        kw.update(solver=solver, solver_steps=solver_steps, rtol=rtol, atol=atol, gradient=gradient,
                  max_steps=positive_int("max_steps", max_steps))
    return Network(**kw)


# ----------------------------------------------------------------------------- parameters
@float64
def init_params(key, net: Network, d: int):
    """iid $N(0,1)$ parameters for ``net`` on inputs of dimension ``d`` (a pytree of float64 arrays)."""
    d = positive_int("d", d)
    n = net.width
    if net.model in EXTRA_MODELS:
        return extra_init(key, net, d)
    if net.model in ("node", "resnet"):
        ku, kw, kv = jax.random.split(key, 3)
        return NODEParams(U=jax.random.normal(ku, (n, d), jnp.float64),
                          W=jax.random.normal(kw, (n, n), jnp.float64),
                          v=jax.random.normal(kv, (n,), jnp.float64))
    keys = jax.random.split(key, 2 * net.depth + 2)
    Ws, bs = [], []
    for layer in range(net.depth):
        fan_in = d if layer == 0 else n
        Ws.append(jax.random.normal(keys[2 * layer], (n, fan_in), jnp.float64))
        bs.append(jax.random.normal(keys[2 * layer + 1], (n,), jnp.float64))
    return MLPParams(Ws=tuple(Ws), bs=tuple(bs), w_out=jax.random.normal(keys[-2], (n,), jnp.float64),
                     b_out=jax.random.normal(keys[-1], (), jnp.float64))


# ----------------------------------------------------------------------------- forward maps
def _node_vector_field(net: Network):
    phi, c = net.activation.jax_fn, net.sigma_w / math.sqrt(net.width)

    def vf(t, h, W):
        return c * (W @ phi(h))

    return vf


def node_solver_kwargs(net: Network) -> dict:
    """Solver, step-size controller, adjoint and ``dt0`` for :func:`diffrax.diffeqsolve`."""
    solver = SOLVERS[net.solver][0]()
    if net.adaptive:
        controller = diffrax.PIDController(rtol=net.rtol, atol=net.atol)
    else:
        controller = diffrax.ConstantStepSize()
    adjoint = diffrax.BacksolveAdjoint(solver=solver, stepsize_controller=controller) \
        if net.gradient == "adjoint" else diffrax.RecursiveCheckpointAdjoint()
    return dict(solver=solver, stepsize_controller=controller, adjoint=adjoint,
                dt0=net.T / net.solver_steps, max_steps=net.max_steps)


def node_input(params: NODEParams, x, net: Network):
    r"""$h_0 = \sigma_u U x/\sqrt d$ for one input ``x`` of shape (d,)."""
    return net.sigma_u / math.sqrt(x.shape[-1]) * (params.U @ x)


def node_flow(params: NODEParams, h0, net: Network, ts=None):
    """Solve the Neural ODE from ``h0`` (n,); returns $h_T$, or $h$ at the times ``ts`` (k, n)."""
    saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts)
    sol = diffrax.diffeqsolve(diffrax.ODETerm(_node_vector_field(net)), t0=0.0, t1=net.T, y0=h0,
                              args=params.W, saveat=saveat, **node_solver_kwargs(net))
    return sol.ys[-1] if ts is None else sol.ys


def _readout(v, hT, net: Network):
    return net.sigma_v / math.sqrt(net.width) * (v @ net.activation.jax_fn(hT))


def resnet_states(params: NODEParams, h0, net: Network):
    r"""The ResNet's states $h^0,\dots,h^L$ from ``h0``: shape (L+1, n) (``h0`` may be batched (N, n) -> (L+1, N, n))."""
    phi, c = net.activation.jax_fn, net.T / net.depth * net.sigma_w / math.sqrt(net.width)

    def step(h, _):
        h_next = h + c * (phi(h) @ params.W.T)
        return h_next, h_next

    _, hs = jax.lax.scan(step, h0, None, length=net.depth)
    return jnp.concatenate([h0[None], hs], axis=0)


def _apply_one(params, x, net: Network):
    if net.model in EXTRA_MODELS:
        return extra_apply(params, x, net)
    if net.model == "node":
        return _readout(params.v, node_flow(params, node_input(params, x, net), net), net)
    if net.model == "resnet":
        return _readout(params.v, resnet_states(params, node_input(params, x, net), net)[-1], net)
    phi, n = net.activation.jax_fn, net.width
    z = net.sigma_w / math.sqrt(x.shape[-1]) * (params.Ws[0] @ x) + net.sigma_b * params.bs[0]
    for W, b in zip(params.Ws[1:], params.bs[1:]):
        z = net.sigma_w / math.sqrt(n) * (W @ phi(z)) + net.sigma_b * b
    return net.sigma_v / math.sqrt(n) * (params.w_out @ phi(z)) + net.sigma_vb * params.b_out


@float64
def model_apply(params, x, net: Network):
    """Network output $f(x)$ for inputs ``x`` of shape (N, d) (or (d,)); returns shape (N,) (or ())."""
    x = jnp.asarray(x, jnp.float64)
    if x.ndim == 1:
        return _apply_one(params, x, net)
    return jax.vmap(_apply_one, in_axes=(None, 0, None))(params, x, net)


_FAST_SOLVERS = {"euler": ((), (1.0,)), "rk4": ((0.5, 0.5, 1.0), (1 / 6, 1 / 3, 1 / 3, 1 / 6))}


@float64
def batched_apply(params, X, net):
    r"""$f(X)$ for a batch ``X`` (N, d): the same map as :func:`kernelcalc.empirical.models.model_apply`.

    For the Neural ODE with a fixed-step ``euler``/``rk4`` solver and for the ResNet, the state of
    the whole batch is one $(N, n)$ array stepped by ``lax.scan`` (matrix-matrix products), which
    differentiates far faster than ``vmap`` over per-input ``diffeqsolve`` calls; other
    configurations fall back to ``model_apply``.
    """
    fast_node = net.model == "node" and not net.adaptive and net.solver in _FAST_SOLVERS
    if not (fast_node or net.model == "resnet"):
        return model_apply(params, X, net)
    phi = net.activation.jax_fn
    c = net.sigma_w / math.sqrt(net.width)
    h0 = net.sigma_u / math.sqrt(X.shape[-1]) * (X @ params.U.T)

    def vf(h):
        return c * (phi(h) @ params.W.T)

    if net.model == "resnet":
        n_steps, dt, rk = net.depth, net.T / net.depth, "euler"
    else:
        n_steps, dt, rk = net.solver_steps, net.T / net.solver_steps, net.solver

    def step(h, _):
        if rk == "euler":
            return h + dt * vf(h), None
        k1 = vf(h)
        k2 = vf(h + 0.5 * dt * k1)
        k3 = vf(h + 0.5 * dt * k2)
        k4 = vf(h + dt * k3)
        return h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

    hT, _ = jax.lax.scan(step, h0, None, length=n_steps)
    return net.sigma_v / math.sqrt(net.width) * (phi(hT) @ params.v)
