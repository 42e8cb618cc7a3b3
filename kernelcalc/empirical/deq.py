r"""Finite-width equilibrium model (DEQ), ``model="deq"``: the network of :func:`kernelcalc.deq_kernel`.

$$h^\star=\tfrac{\sigma_w}{\sqrt n}W\phi(h^\star)+\tfrac{\sigma_u}{\sqrt d}Ux+\sigma_b b,\qquad
f(x)=\tfrac{\sigma_v}{\sqrt n}v\cdot\phi(h^\star),$$

$U, W, b, v$ iid $N(0,1)$ (:class:`DEQParams`).  The equilibrium is found by
:func:`optimistix.fixed_point` with :class:`optimistix.Newton` (``rtol``/``atol`` of the
:class:`~kernelcalc.empirical.Network`, default $10^{-10}$) started at $h=u$, and differentiated by
**implicit differentiation** (:class:`optimistix.ImplicitAdjoint`):
$\partial h^\star=(I-\tfrac{\sigma_w}{\sqrt n}WD)^{-1}(\partial W\text{-}, \partial U\text{-}, \partial b\text{-terms})$,
$D=\mathrm{diag}\,\phi'(h^\star)$.  The empirical NTK is the Jacobian NTK of these gradients.
A Newton solve that does not converge raises (optimistix ``throw=True``): the equilibrium does not
exist or is not reached at this width; the infinite-width condition is $\sigma_w^2E[\phi'(h^\star)^2]<1$.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optimistix as optx

from .._x64 import float64

__all__ = ["DEQParams", "deq_init", "deq_equilibrium", "deq_apply"]


class DEQParams(NamedTuple):
    """Parameters of the DEQ: ``U`` (n, d), ``W`` (n, n), ``b`` (n,), ``v`` (n,)."""

    U: jax.Array
    W: jax.Array
    b: jax.Array
    v: jax.Array


@float64
def deq_init(key, net, d: int) -> DEQParams:
    """iid $N(0,1)$ parameters of the DEQ."""
    n = net.width
    ku, kw, kb, kv = jax.random.split(key, 4)
    normal = lambda k, shape: jax.random.normal(k, shape, jnp.float64)  # noqa: E731
    return DEQParams(U=normal(ku, (n, d)), W=normal(kw, (n, n)), b=normal(kb, (n,)), v=normal(kv, (n,)))


@float64
def deq_equilibrium(params: DEQParams, x, net):
    r"""$h^\star(x)$ for one input ``x`` (d,): optimistix Newton on $h=F(h)$, implicit adjoint."""
    phi, n = net.activation.jax_fn, net.width
    c = net.sigma_w / math.sqrt(n)
    u = net.sigma_u / math.sqrt(x.shape[-1]) * (params.U @ x) + net.sigma_b * params.b

    def F(h, args):
        W, u = args
        return c * (W @ phi(h)) + u

    sol = optx.fixed_point(F, optx.Newton(rtol=net.rtol, atol=net.atol), u, args=(params.W, u),
                           max_steps=min(net.max_steps, 256), adjoint=optx.ImplicitAdjoint(), throw=True)
    return sol.value


@float64
def deq_apply(params: DEQParams, x, net):
    """$f(x)$ for one input (d,) or a batch (N, d)."""
    x = jnp.asarray(x, jnp.float64)
    if x.ndim == 2:
        return jax.vmap(deq_apply, in_axes=(None, 0, None))(params, x, net)
    h = deq_equilibrium(params, x, net)
    return net.sigma_v / math.sqrt(net.width) * (params.v @ net.activation.jax_fn(h))
