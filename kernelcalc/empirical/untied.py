r"""Finite-width **untied** networks: ``model="resnet_untied"`` and ``model="node_untied"``.

``resnet_untied`` (depth $L$, $\delta=T/L$) is the network of :func:`kernelcalc.resnet_kernel`
with ``weights="untied"``:

$$h^0=\tfrac{\sigma_u}{\sqrt d}Ux,\qquad h^{\ell+1}=h^\ell+\sqrt\delta\,\tfrac{\sigma_w}{\sqrt n}W_\ell\phi(h^\ell),\qquad
f=\tfrac{\sigma_v}{\sqrt n}v\cdot\phi(h^L),$$

with independent $W_0,\dots,W_{L-1}$.  ``node_untied`` is the untied Neural ODE
$dh=\sigma_w\,dB_t\,\phi(h)/\sqrt n$ (a matrix Brownian motion $B$), simulated by Euler--Maruyama
on ``solver_steps`` equal steps: the same map with $L=$ ``solver_steps``, where $\sqrt\delta W_k$ is the Brownian
increment over step $k$ (an SDE has no higher-order deterministic solver, so ``solver``, ``rtol``,
``atol`` and ``gradient="adjoint"`` do not apply).  Parameters: :class:`UntiedParams`.

The NTK is the exact structured sum (one rank-one term per independent layer),

$$\Theta=\tfrac{\sigma_v^2}n\phi(h^L(x))\cdot\phi(h^L(y))+\tfrac{\sigma_u^2}d(x\cdot y)\lambda^0(x)\cdot\lambda^0(y)
+\tfrac{\delta\sigma_w^2}n\sum_\ell(\lambda^{\ell+1}(x)\cdot\lambda^{\ell+1}(y))(\phi(h^\ell(x))\cdot\phi(h^\ell(y))),$$

$\lambda^\ell=\partial f/\partial h^\ell$ by reverse mode with zero probes.

:func:`coarsen` maps the parameters of a fine network (``solver_steps`` $=M$) to those of the depth-$L$
ResNet driven by the **same Brownian path** ($L\mid M$): $W^{(L)}_\ell=\sqrt{L/M}\sum_{k\in\text{block }\ell}W_k$
(again iid $N(0,1)$).  That is what :func:`kernelcalc.depth_gap` with ``weights="untied"`` compares;
Euler--Maruyama with non-commuting noise has strong order $1/2$, so its gaps decay like $L^{-1/2}$.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._x64 import float64

__all__ = ["UntiedParams", "untied_layers", "untied_init", "untied_apply", "untied_ntk", "coarsen"]


class UntiedParams(NamedTuple):
    """Parameters of the untied networks: ``U`` (n, d), ``Ws`` (L, n, n), ``v`` (n,)."""

    U: jax.Array
    Ws: jax.Array
    v: jax.Array


def untied_layers(net) -> int:
    """Number of independent layers: ``depth`` (ResNet) or ``solver_steps`` (Euler--Maruyama of the untied ODE)."""
    return net.depth if net.model == "resnet_untied" else net.solver_steps


@float64
def untied_init(key, net, d: int) -> UntiedParams:
    """iid $N(0,1)$ parameters of an untied network."""
    n, L = net.width, untied_layers(net)
    ku, kw, kv = jax.random.split(key, 3)
    return UntiedParams(U=jax.random.normal(ku, (n, d), jnp.float64),
                        Ws=jax.random.normal(kw, (L, n, n), jnp.float64),
                        v=jax.random.normal(kv, (n,), jnp.float64))


def _forward(params: UntiedParams, x, net, probes=None):
    """Batched forward pass (x: (N, d)); ``probes`` (L+1, N, n) are added to $h^0..h^L$."""
    phi, n, L = net.activation.jax_fn, net.width, params.Ws.shape[0]
    c = math.sqrt(net.T / L) * net.sigma_w / math.sqrt(n)
    h0 = net.sigma_u / math.sqrt(x.shape[-1]) * (x @ params.U.T)
    if probes is None:
        probes = jnp.zeros((L + 1,) + h0.shape)

    def step(h, inp):
        W, p = inp
        z = phi(h)
        return h + c * (z @ W.T) + p, z

    hL, zs = jax.lax.scan(step, h0 + probes[0], (params.Ws, probes[1:]))
    f = net.sigma_v / math.sqrt(n) * (phi(hL) @ params.v)
    return f, zs, hL, c


@float64
def untied_apply(params: UntiedParams, x, net):
    """$f(x)$ for one input (d,) or a batch (N, d)."""
    x = jnp.asarray(x, jnp.float64)
    if x.ndim == 1:
        return _forward(params, x[None], net)[0][0]
    return _forward(params, x, net)[0]


def _parts(params, x, net):
    L, n = params.Ws.shape[0], net.width

    def total(probes):
        f, zs, hL, _ = _forward(params, x, net, probes)
        return jnp.sum(f), (f, zs, hL)

    lam, (f, zs, hL) = jax.grad(total, has_aux=True)(jnp.zeros((L + 1, x.shape[0], n)))
    return f, lam, zs, net.activation.jax_fn(hL)


@float64
def untied_ntk(params: UntiedParams, x1, x2, net):
    """``(f(x1), f(x2), Θ)`` by the structured sum of the module docstring (exact, equals the Jacobian NTK)."""
    n, d, L = net.width, x1.shape[-1], params.Ws.shape[0]
    c2 = net.T / L * net.sigma_w**2 / n
    f1, l1, z1, p1 = _parts(params, x1, net)
    f2, l2, z2, p2 = (f1, l1, z1, p1) if x2 is None else _parts(params, x2, net)
    xb = x1 if x2 is None else x2
    theta = (net.sigma_v**2 / n * (p1 @ p2.T) + net.sigma_u**2 / d * (x1 @ xb.T) * (l1[0] @ l2[0].T)
             + c2 * jnp.sum(jnp.einsum("lan,lbn->lab", l1[1:], l2[1:]) * jnp.einsum("lan,lbn->lab", z1, z2), axis=0))
    return f1, f2, theta


def coarsen(params: UntiedParams, L: int) -> UntiedParams:
    r"""Parameters of the depth-``L`` untied ResNet on the same Brownian path ($L$ must divide $M$)."""
    M, n, _ = params.Ws.shape
    if M % L:
        raise ValueError(f"depth {L} does not divide the number of fine steps {M}")
    Ws = params.Ws.reshape(L, M // L, n, n).sum(axis=1) * math.sqrt(L / M)
    return UntiedParams(U=params.U, Ws=Ws, v=params.v)
