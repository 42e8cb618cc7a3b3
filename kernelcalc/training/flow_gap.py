r"""Gradient descent against gradient flow: the gap at matching times as the step size shrinks.

Gradient descent $\theta_{k+1}=\theta_k-\eta\nabla L(\theta_k)$ is the explicit Euler scheme for the
gradient flow $\dot\theta=-\nabla L(\theta)$. On a fixed horizon $[0,t_{\max}]$ its global error is
first order: for smooth $L$,

$$\max_{k\eta\le t_{\max}}\|\theta_k-\theta(k\eta)\|\le C(t_{\max})\,\eta,\qquad
|L(\theta_k)-L(\theta(k\eta))|\le C'(t_{\max})\,\eta ,$$

so the GD loss curve converges to the flow's, and the linear-convergence statement for the flow
($L(t)\le e^{-\lambda_0t}L_0$ in the lazy regime) is the $\eta\to0$ limit of Theorem 2's
$(1-\eta\lambda_0)^kL_0$ (note $(1-\eta\lambda_0)^{t/\eta}\to e^{-\lambda_0t}$).

:func:`flow_gap` runs the flow once (diffrax Tsit5, tight tolerances) and GD for each step size,
compares them at common times $t_j=j\,t_{\max}/n$ and fits the order $p$ in
$\text{gap}\propto\eta^p$ (theory: $p=1$).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._x64 import float64
from .._validation import KernelcalcInputError, positive, positive_int, scale_keywords
from .._results import JsonResult
from ._common import default_lr, flow_solver, make_fns, network, validate_xy

__all__ = ["FlowGap", "flow_gap"]


@dataclasses.dataclass(frozen=True)
class FlowGap(JsonResult):
    r"""Result of :func:`flow_gap`. Immutable, JSON-serialisable.

    ``lrs`` (step sizes $\eta$, decreasing), ``times`` (comparison times $t_j$), ``flow_loss``
    ($L(\theta(t_j))$), ``gd_loss`` ($L(\theta_{t_j/\eta})$ per step size, list of lists),
    ``loss_gap`` ($\max_j|L^{GD}_j-L^{flow}_j|/L_0$ per step size), ``param_gap``
    ($\max_j\|\theta^{GD}_j-\theta(t_j)\|$ per step size), ``order_loss`` and ``order_param`` (fitted
    log-log slopes of the gaps vs $\eta$; theory 1), ``params`` (what made it), ``info``.
    """

    lrs: tuple
    times: tuple
    flow_loss: tuple
    gd_loss: tuple
    loss_gap: tuple
    param_gap: tuple
    order_loss: float
    order_param: float
    params: dict
    info: dict = dataclasses.field(default_factory=dict)

    def table(self) -> str:
        p = self.params
        lines = [f"GD vs gradient flow on {p['model']}/{p['activation']} width {p['width']}, N={p['N']}, "
                 f"horizon t_max = {self.times[-1]:.4g} ({len(self.times) - 1} comparison times)",
                 f"flow loss: {self.flow_loss[0]:.4g} -> {self.flow_loss[-1]:.4g}",
                 f"{'lr':>10} {'GD steps':>9} {'max|dL|/L0':>11} {'max|dtheta|':>12} {'final L_gd':>11}"]
        for i, lr in enumerate(self.lrs):
            lines.append(f"{lr:10.4g} {round(self.times[-1] / lr):9d} {self.loss_gap[i]:11.3e} "
                         f"{self.param_gap[i]:12.3e} {self.gd_loss[i][-1]:11.4g}")
        lines.append(f"fitted order (gap ~ lr^p): loss p = {self.order_loss:.3f}, parameters p = "
                     f"{self.order_param:.3f}   (explicit Euler: p = 1)")
        lines.append(f"({self.info.get('seconds', float('nan')):.1f} s; flow: {self.info.get('ode_steps')} "
                     f"adaptive steps, rtol={p['rtol']:g})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()



def _step_counts(lrs, dt_compare):
    """GD steps between comparison times for each step size; they must be whole numbers."""
    counts = []
    for lr in lrs:
        m = dt_compare / lr
        if abs(m - round(m)) > 1e-9 * m or round(m) < 1:
            raise KernelcalcInputError(
                f"t_max/n_compare = {dt_compare:.6g} must be a whole multiple of every lr; lr = {lr:.6g} "
                f"gives {m:.6g} steps")
        counts.append(int(round(m)))
    return counts


@float64
@scale_keywords()
def flow_gap(X, y, *, lrs: Sequence[float] | None = None, t_max=None, n_compare=8, model="node",
             activation="softplus", width=256, seed=0, T=1.0, depth=None, sigma_w=1.0, sigma_u=1.0,
             sigma_v=1.0, sigma_b=0.0, sigma_vb=0.0, solver="rk4", solver_steps=4, rtol=1e-10, atol=1e-12, progress=False) -> FlowGap:
    r"""Gap between GD with step $\eta$ and the gradient flow at the same times, for decreasing $\eta$.

    **Arguments:**

    - ``X`` (N, d), ``y`` (N,): training data; model arguments (the scales of ``docs/naming.md``) as in :func:`kernelcalc.train`.
    - ``lrs``: step sizes (default $\eta^*\cdot(1,\tfrac12,\tfrac14,\tfrac18)$, $\eta^*=1/\|X\|^2$).
    - ``t_max``: horizon (default $64\max\eta$); ``n_compare``: number of comparison intervals;
      $t_{\max}/n$ must be a whole multiple of every step size.
    - ``rtol``, ``atol``: tolerances of the adaptive flow solve (keep them far below the gaps).

    **Returns:** a :class:`FlowGap` with the gaps per step size and their fitted order.
    """
    from jax.flatten_util import ravel_pytree

    from ..empirical.models import init_params
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    X, y = validate_xy(X, y)
    if lrs is None:
        eta = default_lr(X)
        lrs = [eta / 2**i for i in range(4)]
    if isinstance(lrs, (int, float, np.number)) or not len(lrs):
        raise KernelcalcInputError(f"lrs must be a non-empty list of step sizes, got {lrs!r}")
    lrs = sorted((positive("lr", v) for v in lrs), reverse=True)
    n_compare = positive_int("n_compare", n_compare)
    t_max = 64 * lrs[0] if t_max is None else positive("t_max", t_max)
    counts = _step_counts(lrs, t_max / n_compare)
    rtol, atol = positive("rtol", rtol), positive("atol", atol)

    net = network(model, activation, width, T, depth, dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v,
                                                          sigma_b=sigma_b, sigma_vb=sigma_vb), solver, solver_steps)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    params0 = init_params(jax.random.PRNGKey(seed), net, X.shape[1])
    loss_fn, gd_step, _ = make_fns(net, Xj, yj)
    flatten = jax.jit(lambda p: ravel_pytree(p)[0])
    times = [j * t_max / n_compare for j in range(n_compare + 1)]

    bar = tqdm(total=n_compare * (1 + len(lrs)), desc="flow vs GD", disable=not progress, leave=False)
    with jax.default_matmul_precision("highest"):
        advance = flow_solver(loss_fn, rtol, atol, 1_000_000)
        p, flow_theta, flow_loss, n_ode = params0, [flatten(params0)], [float(loss_fn(params0))], 0
        for j in range(1, n_compare + 1):
            p, ok, ns = advance(p, jnp.asarray(times[j - 1]), jnp.asarray(times[j]), jnp.asarray(lrs[-1]))
            if not bool(ok):
                raise RuntimeError(f"gradient-flow solve failed between t={times[j - 1]:.4g} and t={times[j]:.4g}")
            n_ode += int(ns)
            flow_theta.append(flatten(p))
            flow_loss.append(float(loss_fn(p)))
            bar.update(1)
        loss0 = flow_loss[0]
        gd_loss, loss_gap, param_gap = [], [], []
        for lr, m in zip(lrs, counts):
            p, lr_j, curve, dth = params0, jnp.asarray(lr), [loss0], [0.0]
            for j in range(1, n_compare + 1):
                for _ in range(m):
                    p, _l = gd_step(p, lr_j)
                curve.append(float(loss_fn(p)))
                dth.append(float(jnp.linalg.norm(flatten(p) - flow_theta[j])))
                bar.update(1)
            if not np.all(np.isfinite(curve)):
                raise KernelcalcInputError(f"GD diverged at lr = {lr:.4g}; use smaller step sizes")
            gd_loss.append(curve)
            loss_gap.append(max(abs(a - b) for a, b in zip(curve, flow_loss)) / loss0)
            param_gap.append(max(dth))
    bar.close()

    from ..empirical.montecarlo import fit_slope

    params = dict(net.describe(), N=X.shape[0], d=X.shape[1], seed=seed, t_max=t_max, n_compare=n_compare,
                  rtol=rtol, atol=atol, gd_steps=[m * n_compare for m in counts])
    return FlowGap(lrs=tuple(lrs), times=tuple(times), flow_loss=tuple(flow_loss), gd_loss=tuple(gd_loss),
                   loss_gap=tuple(loss_gap), param_gap=tuple(param_gap), order_loss=fit_slope(lrs, loss_gap),
                   order_param=fit_slope(lrs, param_gap), params=params,
                   info=dict(seconds=time.perf_counter() - t_start, ode_steps=n_ode,
                             solver="tsit5 (adaptive PID)"))
