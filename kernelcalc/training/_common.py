"""Helpers shared by the training runs (:mod:`.run`, :mod:`.width`, :mod:`.flow_gap`, :mod:`.divergence`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import KernelcalcInputError, as_inputs
from ..empirical.models import batched_apply, make_network

__all__ = ["default_lr", "group_names", "group_sq_norms", "network", "make_fns", "flow_solver", "validate_xy",
           "closing_lines"]


def default_lr(X) -> float:
    r"""Theorem 2's step size $\eta=1/\|X\|^2$, $\|X\|$ the spectral norm of the $(N, d)$ data matrix.

    (Inputs in the package's convention: rows of ``X`` as given, typically on the sphere
    $\|x\|^2=d$; the network scales them by $1/\sqrt d$ internally.)
    """
    X = as_inputs(X, "X")
    return 1.0 / float(np.linalg.norm(X, 2)) ** 2


def group_names(params) -> list[str]:
    return list(params._fields)


def group_sq_norms(tree) -> jnp.ndarray:
    """Squared Frobenius norm of each top-level field of a NamedTuple pytree."""
    return jnp.stack([sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(getattr(tree, f)))
                      for f in tree._fields])


def network(model, activation, width, T, depth, scales: dict, solver, solver_steps):
    """The finite-width network of a run (the Neural ODE with ``solver_steps`` fixed ``solver`` steps, the
    untied Neural ODE with ``solver_steps`` Euler--Maruyama steps); ``scales``: the scale keywords as passed
    (``None``: not passed; ``make_network`` rejects the ones that do not apply to ``model``).  ``T``, ``solver``,
    ``solver_steps`` arrive for every model (the entry point's documented defaults where the user passed none;
    one passed for a model it does not configure was refused by the entry point, ``MODEL_KEYWORDS``)."""
    solver_kw = {"node": dict(solver=solver, solver_steps=solver_steps),
                 "node_untied": dict(solver_steps=solver_steps)}.get(model, {})
    return make_network(model, activation=activation, width=width, T=T, depth=depth, **scales, **solver_kw)


def closing_lines(res) -> list[str]:
    """The last lines of a run's text: ``FAILED: <failure>`` for a failed run, then the time it took."""
    return ([f"FAILED: {res.failure}"] if res.failed else []) + [f"({res.info.get('seconds', float('nan')):.1f} s)"]


def make_fns(net, X, y):
    def loss_fn(params):
        r = batched_apply(params, X, net) - y
        return 0.5 * jnp.sum(r**2)

    @jax.jit
    def gd_step(params, lr):
        loss, g = jax.value_and_grad(loss_fn)(params)
        return jax.tree_util.tree_map(lambda p, gi: p - lr * gi, params, g), loss

    @jax.jit
    def stats(params, params0):
        diff = jax.tree_util.tree_map(lambda a, b: a - b, params, params0)
        return loss_fn(params), group_sq_norms(diff)

    return loss_fn, gd_step, stats


def flow_solver(loss_fn, rtol, atol, max_steps):
    import diffrax

    grad = jax.grad(loss_fn)

    def vf(t, theta, args):
        return jax.tree_util.tree_map(jnp.negative, grad(theta))

    @jax.jit
    def advance(theta, t0, t1, dt0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), diffrax.Tsit5(), t0=t0, t1=t1, dt0=dt0, y0=theta,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            saveat=diffrax.SaveAt(t1=True), max_steps=max_steps, throw=False)
        theta1 = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
        return theta1, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]

    return advance


def validate_xy(X, y, name="X", yname="y"):
    X = as_inputs(X, name)
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise KernelcalcInputError(f"{yname} must be a real array, got {type(y).__name__}") from None
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise KernelcalcInputError(f"{yname} must be a 1-D array of scalar targets, got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise KernelcalcInputError(f"{yname} has {y.shape[0]} entries but {name} has {X.shape[0]} rows")
    if not np.all(np.isfinite(y)):
        raise KernelcalcInputError(f"{yname} contains NaN or inf")
    return X, y
