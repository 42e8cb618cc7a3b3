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
from .._validation import (DEFAULT_WIDTH, KernelcalcInputError, positive, positive_int, progress_disable,
                          renamed_keywords, scale_keywords)
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

    **Failures** (never raised): ``failed`` and ``failure`` (``None``, or what failed and where). If the
    flow solve fails between $t_{j-1}$ and $t_j$, ``flow_loss`` from $t_j$ on is NaN and the gaps are
    taken over the times before; if GD at one step size gets a loss that is NaN/inf or above
    ``divergence_factor`` $\times L_0$, its ``gd_loss`` from that
    comparison time on is NaN and its ``loss_gap`` and ``param_gap`` are NaN (all gaps are NaN when the
    flow fails before $t_1$). The fitted orders use the finite gaps only (NaN with fewer than two).
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
    failed: bool = False
    failure: str | None = None

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
                     f"adaptive steps, flow_rtol={p['flow_rtol']:g})")
        if self.failed:
            lines.append(f"FAILED: {self.failure}")
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
@renamed_keywords(rtol="flow_rtol", atol="flow_atol")
@scale_keywords(model_defaults=dict(T=1.0, solver="rk4", solver_steps=4))
def flow_gap(X, y, *, lrs: Sequence[float] | None = None, t_max=None, n_compare=8, model="node",
             activation="softplus", width=DEFAULT_WIDTH, seed=0, T=None, depth=None, sigma_w=1.0, sigma_u=1.0,
             sigma_v=1.0, sigma_b=0.0, sigma_vb=0.0, solver=None, solver_steps=None, flow_rtol=1e-10, flow_atol=1e-12,
             divergence_factor=1e6, progress=None) -> FlowGap:
    r"""Gap between GD with step $\eta$ and the gradient flow at the same times, for decreasing $\eta$.

    **Arguments:**

    - ``X`` (N, d), ``y`` (N,): training data; model arguments (the scales of ``docs/naming.md``) as in :func:`kernelcalc.train`.
    - ``lrs``: step sizes (default $\eta^*\cdot(1,\tfrac12,\tfrac14,\tfrac18)$, $\eta^*=1/\|X\|^2$).
    - ``t_max``: horizon (default $64\max\eta$); ``n_compare``: number of comparison intervals;
      $t_{\max}/n$ must be a whole multiple of every step size.
    - ``flow_rtol``, ``flow_atol``: tolerances of the adaptive flow solve (keep them far below the gaps;
      ``rtol``/``atol`` are their deprecated names). ``divergence_factor``: as in :func:`kernelcalc.train`,
      a GD run whose loss exceeds this $\times L_0$ (or is NaN/inf) at a comparison time has failed.
      ``progress``: ``None`` (auto), ``True`` or ``False``.

    **Returns:** a :class:`FlowGap` with the gaps per step size and their fitted order. A flow solve or
    GD run that fails numerically is reported in ``failed``/``failure`` (see :class:`FlowGap`), never raised.
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
    flow_rtol, flow_atol = positive("flow_rtol", flow_rtol), positive("flow_atol", flow_atol)
    disable = progress_disable(progress)
    divergence_factor = positive("divergence_factor", divergence_factor)

    net = network(model, activation, width, T, depth, dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v,
                                                          sigma_b=sigma_b, sigma_vb=sigma_vb), solver, solver_steps)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    params0 = init_params(jax.random.PRNGKey(seed), net, X.shape[1])
    loss_fn, gd_step, _ = make_fns(net, Xj, yj)
    flatten = jax.jit(lambda p: ravel_pytree(p)[0])
    times = [j * t_max / n_compare for j in range(n_compare + 1)]

    failures = []
    bar = tqdm(total=n_compare * (1 + len(lrs)), desc="flow vs GD", disable=disable, leave=False)
    with jax.default_matmul_precision("highest"):
        advance = flow_solver(loss_fn, flow_rtol, flow_atol, 1_000_000)
        p, flow_theta, flow_loss, n_ode = params0, [flatten(params0)], [float(loss_fn(params0))], 0
        for j in range(1, n_compare + 1):
            p, ok, ns = advance(p, jnp.asarray(times[j - 1]), jnp.asarray(times[j]), jnp.asarray(lrs[-1]))
            n_ode += int(ns)
            lj = float(loss_fn(p)) if bool(ok) else float("nan")
            if not (bool(ok) and np.isfinite(lj)):
                failures.append(f"the gradient-flow solve failed between t={times[j - 1]:.4g} and t={times[j]:.4g} "
                                f"(width {width}; max_steps or a non-finite state): flow_loss is NaN from "
                                f"t={times[j]:.4g} on and the gaps use the {j} earlier time(s)")
                break
            flow_theta.append(flatten(p))
            flow_loss.append(lj)
            bar.update(1)
        n_flow = len(flow_loss)                 # comparison times the flow reached
        flow_loss += [float("nan")] * (n_compare + 1 - n_flow)
        loss0 = flow_loss[0]
        gd_loss, loss_gap, param_gap = [], [], []
        for lr, m in zip(lrs, counts):
            p, lr_j, curve, dth = params0, jnp.asarray(lr), [loss0], [0.0]
            for j in range(1, n_compare + 1):
                for _ in range(m):
                    p, _l = gd_step(p, lr_j)
                curve.append(float(loss_fn(p)))
                if not (np.isfinite(curve[-1]) and curve[-1] <= divergence_factor * loss0):
                    failures.append(f"GD at lr={lr:.4g} (width {width}) got loss {curve[-1]:.4g} "
                                    f"(divergence_factor {divergence_factor:g} x L0 = {divergence_factor * loss0:.4g}) "
                                    f"by step {j * m} (t={times[j]:.4g}): its gd_loss is NaN from there and its "
                                    "gaps are NaN")
                    curve[-1:] = [float("nan")] * (n_compare + 1 - j)
                    break
                if j < n_flow:
                    dth.append(float(jnp.linalg.norm(flatten(p) - flow_theta[j])))
                bar.update(1)
            gd_loss.append(curve)
            if np.all(np.isfinite(curve)) and n_flow >= 2:   # else no time to compare at
                loss_gap.append(max(abs(a - b) for a, b in zip(curve[:n_flow], flow_loss[:n_flow])) / loss0)
                param_gap.append(max(dth))
            else:
                loss_gap.append(float("nan"))
                param_gap.append(float("nan"))
    bar.close()

    from ..empirical.montecarlo import fit_slope

    params = dict(net.describe(), N=X.shape[0], d=X.shape[1], seed=seed, t_max=t_max, n_compare=n_compare,
                  flow_rtol=flow_rtol, flow_atol=flow_atol, divergence_factor=divergence_factor,
                  gd_steps=[m * n_compare for m in counts])
    return FlowGap(lrs=tuple(lrs), times=tuple(times), flow_loss=tuple(flow_loss), gd_loss=tuple(gd_loss),
                   loss_gap=tuple(loss_gap), param_gap=tuple(param_gap), order_loss=fit_slope(lrs, loss_gap),
                   order_param=fit_slope(lrs, param_gap), params=params,
                   info=dict(seconds=time.perf_counter() - t_start, ode_steps=n_ode,
                             solver="tsit5 (adaptive PID)", flow_times_reached=n_flow),
                   failed=bool(failures), failure="; ".join(failures) or None)
