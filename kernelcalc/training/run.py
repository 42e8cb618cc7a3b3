r"""One training run held against the NTK prediction: gradient descent and gradient flow.

For the squared loss $L(\theta)=\tfrac12\|u(\theta)-y\|^2$, $u=f_\theta(X)\in\mathbb R^N$, one
gradient-descent step with step size $\eta$ moves the outputs by
$u_{k+1}-y\approx(I-\eta K_k)(u_k-y)$, $K_k$ the network's NTK Gram at step $k$. If $K_k$ stays
close to the infinite-width kernel $K^\infty$ (lazy training) with $\lambda_0=\lambda_{\min}(K^\infty)>0$,
then (Theorem 2 of Gao et al.) for $\eta\le 1/\|X\|^2$

$$L(\theta_k)\le(1-\eta\lambda_0)^k\,L(\theta_0),$$

a conservative bound (the linearised dynamics contract by $(1-\eta\lambda_0)^2$ per step). Gradient
flow $\dot\theta=-\nabla L(\theta)$ is reported at the times $t_k=k\eta$ GD would reach, against
$e^{-\lambda_0 t_k}L(\theta_0)$.

- :func:`train` -- one run; returns a :class:`TrainResult` (immutable, JSON-serialisable) with
  the loss, the test loss, the distance from initialisation $\|\theta_k-\theta_0\|$ (total and
  per parameter group), the finite-width NTK's $\lambda_{\min}$ and its drift
  $\|K_k-K_0\|_F/\|K_0\|_F$ (every ``ntk_every`` steps), and the bound.

A run that fails numerically -- the loss becomes NaN/inf or grows past ``divergence_factor``
$\times L_0$, or the gradient-flow solver fails -- stops early with ``failed=True`` and a ``failure``
naming what happened and where (step, time); it never raises. Bad input raises
:class:`~kernelcalc.KernelcalcInputError`.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from .._x64 import float64
from .._validation import (DEFAULT_WIDTH, KernelcalcInputError, deprecated, positive, positive_int, progress_disable,
                          renamed_keywords, scale_keywords)
from ..empirical.models import batched_apply
from ._common import (closing_lines, default_lr, flow_solver, group_names, group_sq_norms, make_fns, network,
                      validate_xy)
from .._results import JsonResult

__all__ = ["TrainResult", "train", "default_lr", "infinite_width_ntk"]

METHODS = ("gd", "flow")


# ----------------------------------------------------------------------------- helpers


@float64
@scale_keywords(model_defaults=dict(T=1.0))
def infinite_width_ntk(X, *, model="node", activation, T=None, depth=None, sigma_w=1.0, sigma_u=1.0,
                       sigma_v=1.0, sigma_b=0.0, sigma_vb=0.0) -> np.ndarray | None:
    """The analytic $K^\\infty$ Gram of ``model`` on ``X`` (``None`` if that model's kernel is unavailable).

    ``model``: a name of :data:`kernelcalc.empirical.models.MODELS`; its scale keywords as in
    ``docs/naming.md`` (one that does not apply to ``model`` is an error); ``T``: the horizon of the ODE models and
    ResNets (default ``None``: 1.0; an error for another model), ``depth``: of the ResNets and the MLP.
    """
    from ..kernels import model_kernel

    scales = {k: v for k, v in dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b,
                                    sigma_vb=sigma_vb).items() if v is not None}
    try:
        k = model_kernel(X, model=model, activation=activation, T=T, depth=depth, **scales)
    except NotImplementedError:
        return None
    return np.asarray(k.ntk, dtype=np.float64)


def _linear_prediction(mu, E, r0, lr, method):
    r"""$k\mapsto\tfrac12\|(I-\eta K)^k r_0\|^2$ (GD) or $\tfrac12\|e^{-k\eta K}r_0\|^2$ (flow), $K=E\,\mathrm{diag}(\mu)E^\top$."""
    c2 = (E.T @ r0) ** 2

    def predict(k):
        factor = (1.0 - lr * mu) ** (2 * k) if method == "gd" else np.exp(-2.0 * lr * k * mu)
        return float(0.5 * np.sum(factor * c2))

    return predict


# ----------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True)
class TrainResult(JsonResult):
    r"""One training run (:func:`train`). Immutable, JSON-serialisable (:meth:`to_dict`, :meth:`to_json`).

    **Per recorded step** (arrays of equal length, index ``i`` at step ``steps_recorded[i]``):
    ``times`` ($t_k=k\eta$), ``loss``, ``test_loss`` (or ``None``), ``bound``
    ($(1-\eta\lambda_0)^kL_0$ for GD, $e^{-\lambda_0t_k}L_0$ for flow), ``dist`` ($\|\theta_k-\theta_0\|$),
    ``dist_groups`` (name -> list), ``rel_change_groups`` ($\|\theta_k-\theta_0\|/\|\theta_0\|$ per group).

    **NTK records** (every ``ntk_every`` steps): ``ntk_steps``, ``ntk_lambda_min``, ``ntk_drift``
    ($\|K_k-K_0\|_F/\|K_0\|_F$).

    **Kernel-regime prediction:** ``linear_prediction`` -- the loss of the linearised dynamics
    $r_k=(I-\eta K)^k r_0$ (GD) or $r(t)=e^{-tK}r_0$ (flow) from the actual initial residual
    $r_0=u_0-y$, with $K=K^\infty$ (or the width-$n$ $K_0$, see ``linear_prediction_source``); unlike
    the worst-case bound it follows every eigen-direction, $L_k=\tfrac12\sum_i(1-\eta\mu_i)^{2k}(e_i\cdot r_0)^2$.

    **Summary:** ``lambda0`` ($\lambda_{\min}(K^\infty)$), ``lambda0_source``, ``lambda_min_init``
    (finite-width $K_0$), ``lr`` and ``lr_rule``, ``loss0``, ``final_loss``, ``bound_slack``
    ($\max_k L_k/\text{bound}_k$; $\le 1$ means the bound held), ``steps_to_1e-3`` (first recorded step with
    $L_k<10^{-3}L_0$ or ``None``), ``params`` (what made the run), ``info``.

    **Failure:** ``failed`` (the run stopped early on a numerical failure) and ``failure`` (``None``, or
    what happened and where: step, time, width); the records stop at the last good step.
    ``diverged`` and ``reason`` are deprecated read-only aliases of ``failed`` and ``failure`` (one release).
    """

    params: dict
    lr: float
    lr_rule: str
    lambda0: float | None
    lambda0_source: str
    lambda_min_init: float
    steps_recorded: tuple
    times: tuple
    loss: tuple
    test_loss: tuple | None
    bound: tuple | None
    dist: tuple
    dist_groups: dict
    rel_change_groups: dict
    ntk_steps: tuple
    ntk_lambda_min: tuple
    ntk_drift: tuple
    ntk_eigenvalues_init: tuple
    kinf_eigenvalues: tuple | None
    failed: bool = False
    failure: str | None = None
    info: dict = dataclasses.field(default_factory=dict)
    linear_prediction: tuple | None = None
    linear_prediction_source: str = ""

    @property
    def diverged(self) -> bool:
        """Deprecated: use ``failed``."""
        deprecated("TrainResult.diverged", "TrainResult.failed")
        return self.failed

    @property
    def reason(self) -> str:
        """Deprecated: use ``failure`` (``""`` here where ``failure`` is ``None``)."""
        deprecated("TrainResult.reason", "TrainResult.failure")
        return self.failure or ""

    @property
    def loss0(self) -> float:
        return self.loss[0]

    @property
    def final_loss(self) -> float:
        return self.loss[-1]

    @property
    def bound_slack(self) -> float | None:
        """$\\max_k L_k/\\text{bound}_k$ over recorded steps (``None`` without a bound)."""
        if self.bound is None:
            return None
        r = [l / b for l, b in zip(self.loss, self.bound) if b > 0 and math.isfinite(l)]
        return max(r) if r else None

    @property
    def steps_to(self) -> dict:
        """First recorded step with $L_k<\\varepsilon L_0$ for $\\varepsilon=10^{-1},10^{-2},10^{-3}$."""
        out = {}
        for eps in (1e-1, 1e-2, 1e-3):
            hit = [s for s, l in zip(self.steps_recorded, self.loss) if l < eps * self.loss0]
            out[f"{eps:g}"] = hit[0] if hit else None
        return out

    def summary(self) -> str:
        p = self.params
        lines = [f"{p['method']} on {p['model']}/{p['activation']} width {p['width']}, N={p['N']}, d={p['d']}, "
                 f"T={p.get('T')}, {p['steps']} steps",
                 f"step size lr = {self.lr:.4g}  ({self.lr_rule})"]
        if self.lambda0 is not None:
            lines.append(f"lambda_min(K_inf) = {self.lambda0:.4g} ({self.lambda0_source}); "
                         f"lr*lambda0 = {self.lr * self.lambda0:.4g}")
        lines.append(f"lambda_min(K_0) at width {p['width']} = {self.lambda_min_init:.4g}")
        lines.append(f"loss: L0 = {self.loss0:.4g} -> {self.final_loss:.4g} "
                     f"(ratio {self.final_loss / self.loss0:.3g})")
        if self.bound is not None:
            lines.append(f"bound {self.info.get('bound_formula')}: final {self.bound[-1]:.4g}; "
                         f"max loss/bound = {self.bound_slack:.4g} "
                         f"({'bound held' if self.bound_slack <= 1 else 'finite-width slack above 1'})")
        if self.linear_prediction:
            lines.append(f"linearised kernel dynamics ({self.linear_prediction_source}): final "
                         f"{self.linear_prediction[-1]:.4g} (actual {self.final_loss:.4g})")
        lines.append("steps to loss < eps*L0: " + ", ".join(f"{k}: {v}" for k, v in self.steps_to.items()))
        if self.test_loss is not None:
            lines.append(f"test loss: {self.test_loss[0]:.4g} -> {self.test_loss[-1]:.4g}")
        lines.append(f"|theta - theta0| final = {self.dist[-1]:.4g}  ("
                     + ", ".join(f"{g}: {v[-1]:.3g}" for g, v in self.dist_groups.items()) + ")")
        if self.ntk_drift:
            lines.append(f"NTK drift |K_k-K_0|/|K_0| max = {max(self.ntk_drift):.4g}; "
                         f"lambda_min(K_k) final = {self.ntk_lambda_min[-1]:.4g}")
        return "\n".join(lines + closing_lines(self))

    def __str__(self) -> str:
        return self.summary()

    def _derived(self) -> dict:
        return dict(loss0=self.loss0, final_loss=self.final_loss, bound_slack=self.bound_slack,
                    steps_to=self.steps_to)


# ----------------------------------------------------------------------------- train


@float64
@renamed_keywords(rtol="flow_rtol", atol="flow_atol")
@scale_keywords(model_defaults=dict(T=1.0, solver="rk4", solver_steps=4))
def train(X, y, *, model="node", activation="softplus", width=DEFAULT_WIDTH, seed=0, T=None, depth=None,
          lr=None, steps=200, method="gd", X_test=None, y_test=None, record_every=None, ntk_every=None,
          sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, sigma_b=0.0, sigma_vb=0.0, solver=None, solver_steps=None,
          flow_rtol=1e-6, flow_atol=1e-8, divergence_factor=1e6, lambda0=None, quad_nodes=16,
          progress=None) -> TrainResult:
    r"""Train a finite-width network on $L=\tfrac12\|u-y\|^2$ and hold it against the NTK bound.

    **Arguments:**

    - ``X`` (N, d), ``y`` (N,): training data (no NaN/inf; ``y`` one entry per row).
    - ``model``: ``"node"`` (default), ``"resnet"``, ``"mlp"``, ``"node_untied"``, ``"resnet_untied"`` or
      ``"deq"``; ``activation``; ``width`` $n$ (default 256);
      ``seed`` (initial parameters); ``T`` (node/resnet, tied or untied; default 1.0); ``depth`` (resnet, resnet_untied,
      mlp);
      the model's scales (``docs/naming.md``: ``sigma_w, sigma_u, sigma_v`` for node/resnet (and ``sigma_b``
      for the DEQ), ``sigma_w, sigma_b, sigma_v, sigma_vb`` for the MLP; one of another model is an error);
      ``node_untied``: ``solver_steps`` Euler--Maruyama steps; Neural ODE forward solver ``solver`` with ``solver_steps``
      fixed steps (default ``"rk4"``, 4). For ``T``, ``depth``, ``solver``, ``solver_steps``: ``None`` (the default) means the model's default; a keyword that does not configure ``model``, passed with any other value (its default included), is an error (``docs/keywords.md``).
    - ``lr``: step size $\eta>0$; default $1/\|X\|^2$ (Theorem 2; $\|X\|$ spectral norm of ``X``).
    - ``steps`` $\ge1$: GD steps (flow: integrate to $t=\text{steps}\cdot\eta$).
    - ``method``: ``"gd"`` or ``"flow"`` (gradient flow by diffrax Tsit5, adaptive with
      ``flow_rtol``/``flow_atol``, reported at $t_k=k\eta$; ``rtol``/``atol`` are their deprecated names).
    - ``X_test``, ``y_test``: optional held-out data (test loss $\tfrac12\|u_{test}-y_{test}\|^2$).
    - ``record_every``: record loss/distances every this many steps (default: about 200 records);
      ``ntk_every``: recompute the finite-width NTK every this many steps (default: about 10 times per run).
    - ``lambda0``: override $\lambda_0$ (default: $\lambda_{\min}$ of the analytic $K^\infty$ of ``model``;
      if unavailable, of the finite-width $K_0$, said so in ``lambda0_source``).
    - ``divergence_factor``: stop as failed when $L_k>$ this $\times L_0$ (or NaN/inf).
    - ``progress``: ``None`` (auto: a bar when stderr is a terminal), ``True`` or ``False``.

    **Returns:** a :class:`TrainResult`; a numerically failed run has ``failed=True`` and ``failure``
    (it never raises for that; bad input raises :class:`~kernelcalc.KernelcalcInputError`).
    """
    from ..empirical.models import init_params
    from ..empirical.ntk import network_ntk, require_finite

    t_start = time.perf_counter()
    X, y = validate_xy(X, y)
    if (X_test is None) != (y_test is None):
        raise KernelcalcInputError("give both X_test and y_test, or neither")
    if X_test is not None:
        X_test, y_test = validate_xy(X_test, y_test, "X_test", "y_test")
        if X_test.shape[1] != X.shape[1]:
            raise KernelcalcInputError(f"X_test has d={X_test.shape[1]} columns but X has d={X.shape[1]}")
    if method not in METHODS:
        raise KernelcalcInputError(f"method must be 'gd' or 'flow', got {method!r}")
    steps = positive_int("steps", steps)
    disable = progress_disable(progress)
    if lr is None:
        lr, lr_rule = default_lr(X), "default 1/||X||^2, ||X|| = spectral norm of X (Theorem 2)"
    else:
        lr, lr_rule = positive("lr", lr), "user-given"
    record_every = max(1, steps // 200) if record_every is None else positive_int("record_every", record_every)
    ntk_every = max(record_every, steps // 10) if ntk_every is None else positive_int("ntk_every", ntk_every)
    divergence_factor = positive("divergence_factor", divergence_factor)
    flow_rtol, flow_atol = positive("flow_rtol", flow_rtol), positive("flow_atol", flow_atol)
    scales = dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b, sigma_vb=sigma_vb)
    net = network(model, activation, width, T, depth, scales, solver, solver_steps)
    N, d = X.shape
    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    params0 = init_params(jax.random.PRNGKey(seed), net, d)
    groups = group_names(params0)
    norm0_groups = np.sqrt(np.asarray(group_sq_norms(params0)))
    loss_fn, gd_step, stats = make_fns(net, Xj, yj)
    test_loss_fn = None
    if X_test is not None:
        Xt, yt = jnp.asarray(X_test), jnp.asarray(y_test)
        test_loss_fn = jax.jit(lambda p: 0.5 * jnp.sum((batched_apply(p, Xt, net) - yt) ** 2))

    def ntk_of(p):
        return np.asarray(network_ntk(p, Xj, None, net, quad_nodes=quad_nodes)[2])

    K0 = ntk_of(params0)
    u0 = np.asarray(batched_apply(params0, Xj, net))
    require_finite(net, u0, u0, K0, seed)   # no finite network at initialisation: bad input, not a failed run
    eig0, vec0 = np.linalg.eigh(K0)
    kinf_eigs, lin_basis, lin_src = None, (eig0, vec0), f"width-{width} NTK at init"
    if lambda0 is not None:
        lam0, lam_src = positive("lambda0", lambda0), "user-given"
    else:
        Kinf = infinite_width_ntk(X, model=model, activation=activation, T=T, depth=depth, **scales)
        if Kinf is not None:
            kinf_eigs, kinf_vecs = np.linalg.eigh(Kinf)
            lin_basis, lin_src = (kinf_eigs, kinf_vecs), "analytic K_inf"
            lam0, lam_src = float(kinf_eigs[0]), f"lambda_min of the analytic K_inf ({model}_kernel)"
        else:
            lam0, lam_src = float(eig0[0]), f"lambda_min of the width-{width} NTK at init (no analytic {model} kernel)"
    rate = 1.0 - lr * lam0
    predict = _linear_prediction(*lin_basis, u0 - y, lr, method)

    rec = dict(steps=[], times=[], loss=[], test=[], bound=[], dist=[], dg=[], lin=[])
    ntk_rec = dict(steps=[], lam=[], drift=[])
    K0_norm = np.linalg.norm(K0)
    failure = None
    loss0 = None

    def record(k, p, loss=None):
        nonlocal loss0
        l, sq = stats(p, params0)
        l = float(l) if loss is None else loss
        if loss0 is None:
            loss0 = l
        rec["steps"].append(k)
        rec["times"].append(k * lr)
        rec["loss"].append(l)
        rec["lin"].append(predict(k))
        if test_loss_fn is not None:
            rec["test"].append(float(test_loss_fn(p)))
        rec["bound"].append(loss0 * (rate ** k if method == "gd" else math.exp(-lam0 * k * lr)))
        sq = np.asarray(sq)
        rec["dist"].append(float(np.sqrt(sq.sum())))
        rec["dg"].append(np.sqrt(sq))
        return l

    def record_ntk(k, p):
        K = K0 if k == 0 else ntk_of(p)
        ntk_rec["steps"].append(k)
        ntk_rec["lam"].append(float(np.linalg.eigvalsh(K)[0]) if np.all(np.isfinite(K)) else float("nan"))
        ntk_rec["drift"].append(float(np.linalg.norm(K - K0) / K0_norm))

    def check(l, k):
        if not math.isfinite(l):
            return f"loss became {l} at step {k} (t={k * lr:.4g}, width {width}, lr={lr:.4g}); reduce lr"
        if l > divergence_factor * max(loss0, 1e-300):
            return (f"loss {l:.3g} exceeded divergence_factor {divergence_factor:g} x L0 = "
                    f"{divergence_factor * loss0:.3g} at step {k} (t={k * lr:.4g}, width {width}, lr={lr:.4g}); "
                    "reduce lr")
        return None

    ntk_s = 0.0

    def after_step(k, p):
        """Record at step ``k`` (loss, distances; the NTK every ``ntk_every``); return a failure or ``None``."""
        nonlocal ntk_s
        if k % record_every == 0 or k == steps:
            why = check(record(k, p), k)
            if why:
                return why
        if k % ntk_every == 0 or k == steps:
            t0 = time.perf_counter()
            record_ntk(k, p)
            ntk_s += time.perf_counter() - t0
        return None

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=f"{method} width {width}", disable=disable, leave=False)
    p = params0
    record(0, p)
    record_ntk(0, p)
    flow_info = {}
    with jax.default_matmul_precision("highest"):
        if method == "gd":
            lr_j = jnp.asarray(lr)
            for k in range(1, steps + 1):
                p_new, l_prev = gd_step(p, lr_j)   # loss at p (step k-1)
                l_prev = float(l_prev)
                failure = check(l_prev, k - 1)
                if failure:
                    break
                p = p_new
                bar.update(1)
                failure = after_step(k, p)
                if failure:
                    break
        else:
            advance = flow_solver(loss_fn, flow_rtol, flow_atol, 100_000)
            dt0 = jnp.asarray(lr)
            n_ode = 0
            marks = sorted(set(list(range(record_every, steps + 1, record_every))
                               + list(range(ntk_every, steps + 1, ntk_every)) + [steps]))
            prev = 0
            for k in marks:
                p_new, ok, ns = advance(p, jnp.asarray(prev * lr), jnp.asarray(k * lr), dt0)
                n_ode += int(ns)
                bar.update(k - prev)
                if not bool(ok):
                    failure = (f"gradient-flow ODE solver failed between t={prev * lr:.4g} and t={k * lr:.4g} "
                               f"(steps {prev}..{k}, width {width}; max_steps 100000 or a non-finite state)")
                    break
                p, prev = p_new, k
                failure = after_step(k, p)
                if failure:
                    break
            flow_info = dict(ode_steps=n_ode, flow_rtol=flow_rtol, flow_atol=flow_atol, solver="tsit5 (adaptive PID)")
    bar.close()

    dg = np.array(rec["dg"])
    dist_groups = {g: dg[:, i].tolist() for i, g in enumerate(groups)}
    rel_groups = {g: (dg[:, i] / norm0_groups[i]).tolist() for i, g in enumerate(groups)}
    seconds = time.perf_counter() - t_start
    run_params = dict(net.describe(), method=method, steps=steps, seed=seed, N=N, d=d,
                      record_every=record_every, ntk_every=ntk_every, T=T if model != "mlp" else None)
    info = dict(seconds=seconds, ntk_seconds=ntk_s, lr_times_lambda0=lr * lam0,
                bound_formula="(1 - lr*lambda0)^k * L0" if method == "gd" else "exp(-lambda0 * t_k) * L0",
                spectral_norm_X=float(np.linalg.norm(X, 2)), **flow_info)
    return TrainResult(
        params=run_params, lr=lr, lr_rule=lr_rule, lambda0=lam0, lambda0_source=lam_src,
        lambda_min_init=float(eig0[0]), steps_recorded=tuple(rec["steps"]), times=tuple(rec["times"]),
        loss=tuple(rec["loss"]), test_loss=tuple(rec["test"]) if test_loss_fn is not None else None,
        bound=tuple(rec["bound"]), dist=tuple(rec["dist"]),
        dist_groups=dist_groups, rel_change_groups=rel_groups, ntk_steps=tuple(ntk_rec["steps"]),
        ntk_lambda_min=tuple(ntk_rec["lam"]), ntk_drift=tuple(ntk_rec["drift"]),
        ntk_eigenvalues_init=tuple(eig0.tolist()),
        kinf_eigenvalues=None if kinf_eigs is None else tuple(kinf_eigs.tolist()),
        linear_prediction=tuple(rec["lin"]), linear_prediction_source=lin_src,
        failed=failure is not None, failure=failure, info=info)


