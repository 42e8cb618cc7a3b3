r"""An ensemble of finite-width networks trained from independent initialisations: the empirical side of
:func:`kernelcalc.predict`.

Each of ``n_networks`` networks $f_{\theta^{(i)}}$, $\theta^{(i)}_0$ iid from :func:`~kernelcalc.empirical.models.init_params`,
is trained on the squared loss (the convention of :func:`kernelcalc.predict` and :func:`kernelcalc.train`)

$$L(\theta)=\tfrac12\|f_\theta(X)-y\|^2 ,$$

by **gradient flow** $\dot\theta=-\nabla L(\theta)$ (``learning_rate=None``; diffrax Tsit5 with a PID
controller on the whole ensemble at once) or by **gradient descent**
$\theta_{k+1}=\theta_k-\eta\nabla L(\theta_k)$ (``learning_rate=``$\eta$), whose step $k$ is the time
$t=k\eta$. The networks are stacked along a leading axis and trained with ``jax.vmap`` (one compiled
step for the whole ensemble, or for chunks of ``network_batch`` networks).

At each requested time the outputs $F_{ij}=f_{\theta^{(i)}(t)}(x_j)$ ($M$ networks) give the sample mean
$\bar f_j$ and the unbiased sample variance $s_j^2$, with their standard errors

$$\mathrm{se}(\bar f_j)=\frac{s_j}{\sqrt M},\qquad
\mathrm{se}(s_j^2)=\sqrt{\frac{\hat\mu_{4,j}}{M}-\frac{(M-3)\,s_j^4}{M(M-1)}},$$

$\hat\mu_{4,j}$ the sample fourth central moment ($\mathrm{Var}\,s^2=\mu_4/M-\sigma^4(M-3)/(M(M-1))$ for iid
samples; $\sqrt{2/(M-1)}\,s^2$ for Gaussian outputs). In the infinite-width limit these tend to the
mean and the diagonal of the covariance of :func:`kernelcalc.predict` with ``kernel="ntk"``
(Lee et al. 2019); :func:`kernelcalc.compare_predictions` holds the two against each other.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from .._results import JsonResult, frozen, text_table
from .._validation import (DEFAULT_WIDTH, KernelcalcInputError, as_inputs, positive, positive_int, progress_disable,
                           scale_keywords)
from .._x64 import float64
from ._common import closing_lines, network, validate_xy

__all__ = ["TrainedEnsemble", "trained_ensemble", "ensemble_stats"]




def ensemble_stats(F: np.ndarray):
    r"""Sample mean, unbiased variance and their standard errors over axis ``-2`` (networks) of ``F``.

    ``F``: (..., M, N) outputs of $M$ networks at $N$ points. Returns ``(mean, var, mean_stderr,
    var_stderr)``, each (..., N): see the module docstring for the formulas (``M >= 2``).
    """
    F = np.asarray(F, dtype=np.float64)
    M = F.shape[-2]
    mean = F.mean(axis=-2)
    dev = F - mean[..., None, :]
    var = (dev**2).sum(axis=-2) / (M - 1)
    mu4 = (dev**4).mean(axis=-2)
    var_var = mu4 / M - (M - 3) * var**2 / (M * (M - 1))
    return mean, var, np.sqrt(var / M), np.sqrt(np.maximum(var_var, 0.0))


@dataclasses.dataclass(frozen=True)
class TrainedEnsemble(JsonResult):
    r"""Result of :func:`trained_ensemble`. Immutable, JSON-serialisable (:meth:`to_dict`).

    **Per requested time** (axis 0, ``times``; for gradient descent also ``steps`` $k=t/\eta$):

    - ``mean_test``, ``var_test`` (t, N_test): ensemble mean and unbiased variance of $f(X_{test})$;
      ``mean_test_stderr``, ``var_test_stderr``: their standard errors (module docstring);
    - ``mean_train``, ``var_train``, ``mean_train_stderr``, ``var_train_stderr`` (t, N_train): the same on
      the training inputs;
    - ``loss`` (t,): the ensemble average of $L=\tfrac12\|f(X)-y\|^2$;
    - ``outputs_test`` (t, M, N_test), ``outputs_train`` (t, M, N_train): every network's outputs
      (network $i$ is the same initialisation at every time).

    ``params``: the settings (model and its scales, width, ``n_networks``, ``seed``, ``method``
    ``"gd"``/``"flow"``, ``learning_rate``, solver); ``info``: timings, flow solver statistics.
    **Failure** (never raised): ``failed`` and ``failure`` -- a network's outputs became NaN/inf (the
    statistics then carry NaN), or the gradient-flow solver failed.
    """

    times: tuple
    steps: tuple | None
    mean_test: np.ndarray | None
    var_test: np.ndarray | None
    mean_test_stderr: np.ndarray | None
    var_test_stderr: np.ndarray | None
    mean_train: np.ndarray
    var_train: np.ndarray
    mean_train_stderr: np.ndarray
    var_train_stderr: np.ndarray
    loss: tuple
    outputs_test: np.ndarray | None
    outputs_train: np.ndarray
    params: dict
    info: dict = dataclasses.field(default_factory=dict)
    failed: bool = False
    failure: str | None = None

    def __post_init__(self):
        for name in ("mean_test", "var_test", "mean_test_stderr", "var_test_stderr", "mean_train", "var_train",
                     "mean_train_stderr", "var_train_stderr", "outputs_test", "outputs_train"):
            object.__setattr__(self, name, frozen(getattr(self, name)))

    @property
    def n_networks(self) -> int:
        return int(self.outputs_train.shape[1])

    def summary(self) -> str:
        p = self.params
        how = (f"gradient descent, learning_rate {p['learning_rate']:.4g}" if p["method"] == "gd"
               else f"gradient flow (diffrax tsit5, rtol {p['flow_rtol']:g})")
        lines = [f"{self.n_networks} {p['model']}/{p['activation']} networks of width {p['width']} trained by {how}; "
                 f"N_train={p['N_train']}, N_test={p['N_test']}, d={p['d']}"]
        rows = []
        for i, t in enumerate(self.times):
            k = "-" if self.steps is None else str(self.steps[i])
            if self.mean_test is not None:
                m, v = self.mean_test[i], self.var_test[i]
                rows.append((f"{t:.4g}", k, f"{self.loss[i]:.4g}", f"{np.mean(np.abs(m)):.4g}",
                             f"{np.mean(self.mean_test_stderr[i]):.3g}", f"{np.mean(v):.4g}",
                             f"{np.mean(self.var_test_stderr[i]):.3g}"))
            else:
                rows.append((f"{t:.4g}", k, f"{self.loss[i]:.4g}", "-", "-", "-", "-"))
        lines += text_table([("t", 10, ""), ("step", 6, ""), ("mean loss", 10, ""), ("mean|f_test|", 12, ""),
                             ("se(mean)", 9, ""), ("mean var", 10, ""), ("se(var)", 9, "")], rows)
        return "\n".join(lines + closing_lines(self))

    def __str__(self) -> str:
        return self.summary()


@functools.lru_cache(maxsize=1)
def _compiled() -> dict:
    """The ensemble's jitted building blocks (``net`` static; data, step size and times traced), built once
    per process so that repeated calls with the same network and data shapes reuse the compilation."""
    import diffrax
    import jax
    import jax.numpy as jnp

    from ..empirical.models import batched_apply, init_params

    def neg_grad(P, X, y, net):
        def loss(p):
            return 0.5 * jnp.sum((batched_apply(p, X, net) - y) ** 2)

        return jax.tree_util.tree_map(jnp.negative, jax.vmap(jax.grad(loss))(P))

    def outputs(P, X_all, net):
        return jax.vmap(lambda p: batched_apply(p, X_all, net))(P)

    @functools.partial(jax.jit, static_argnames=("net", "d"))
    def init(keys, net, d):
        return jax.vmap(lambda k: init_params(k, net, d))(keys)

    @functools.partial(jax.jit, static_argnames=("net",))
    def advance(P, k, lr, X, y, net):
        """``k`` gradient-descent steps of size ``lr`` for every network of ``P``."""
        return jax.lax.fori_loop(0, k, lambda _, Q: jax.tree_util.tree_map(
            lambda a, g: a + lr * g, Q, neg_grad(Q, X, y, net)), P)

    @functools.partial(jax.jit, static_argnames=("net", "rtol", "atol", "max_steps"))
    def flow(P, ts, X, y, X_all, net, rtol, atol, max_steps):
        """Gradient flow of the whole ensemble (one adaptive Tsit5 solve); the outputs on ``X_all`` at ``ts``."""
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda s, Q, args: neg_grad(Q, X, y, net)), diffrax.Tsit5(), t0=0.0, t1=ts[-1],
            dt0=None, y0=P, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            saveat=diffrax.SaveAt(ts=ts, fn=lambda s, Q, args: outputs(Q, X_all, net)),
            max_steps=max_steps, throw=False)
        return sol.ys, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]

    return dict(init=init, advance=advance, outputs=jax.jit(outputs, static_argnames=("net",)), flow=flow)


def _times_schedule(t, steps, learning_rate):
    """Validated ``(times, steps or None, lr or None)`` (times ascending as given, float)."""
    if learning_rate is None:
        if steps is not None:
            raise KernelcalcInputError("steps applies to gradient descent: give learning_rate= too "
                                       "(or t= for gradient flow)")
        if t is None:
            raise KernelcalcInputError("give t= (times of gradient flow), or learning_rate= with steps= or t= "
                                       "(gradient descent)")
        times = _times(t)
        return times, None, None
    lr = positive("learning_rate", learning_rate)
    if t is not None:
        raise KernelcalcInputError("with learning_rate (gradient descent) give steps= (step counts k, time t = k * "
                                   "learning_rate), not t= (kc.predict's t counts steps when it has a learning_rate)")
    if steps is None:
        raise KernelcalcInputError("give steps= (gradient-descent step counts) with learning_rate")
    ks = np.atleast_1d(np.asarray(steps))
    if ks.ndim != 1 or ks.size == 0 or not all(float(k) == int(k) and int(k) >= 0 for k in ks.tolist()):
        raise KernelcalcInputError(f"steps must be one or more integers >= 0, got {steps!r}")
    ks = [int(k) for k in ks.tolist()]
    return tuple(k * lr for k in ks), tuple(ks), lr


def _times(t):
    try:
        arr = np.atleast_1d(np.asarray(t, dtype=np.float64))
    except (TypeError, ValueError):
        raise KernelcalcInputError(f"t must be a number or a 1-D array of times, got {t!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise KernelcalcInputError(f"t must be a number or a 1-D array of times, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise KernelcalcInputError(f"t must be finite (a trained ensemble cannot reach t = inf), got {t!r}")
    if np.any(arr < 0):
        raise KernelcalcInputError(f"t must be >= 0, got {arr[arr < 0][0]!r}")
    return tuple(float(x) for x in arr)


@float64
@scale_keywords(model_defaults=dict(T=1.0, solver="rk4", solver_steps=4))
def trained_ensemble(X_train, y_train, X_test=None, *, model="node", activation="softplus", width=DEFAULT_WIDTH,
                     n_networks=64, t=None, steps=None, learning_rate=None, seed=0, T=None, depth=None,
                     sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, sigma_b=0.0, sigma_vb=0.0, solver=None, solver_steps=None,
                     flow_rtol=1e-6, flow_atol=1e-8, max_flow_steps=100_000, network_batch=None,
                     progress=None) -> TrainedEnsemble:
    r"""Train ``n_networks`` finite-width networks from independent initialisations; ensemble statistics at times $t$.

    **Arguments:**

    - ``X_train`` (N, d), ``y_train`` (N,): training data; ``X_test`` (N_test, d) or ``None``.
    - ``model``: ``"node"``, ``"resnet"``, ``"mlp"``, ``"node_untied"``, ``"resnet_untied"`` or ``"deq"``;
      ``activation``; ``width`` $n$; ``n_networks`` $M\ge2$; ``seed``: network $i$ starts from
      ``init_params(jax.random.split(PRNGKey(seed), M)[i])``.
    - ``T`` (Neural ODE / ResNet horizon), ``depth`` (ResNets, MLP) and the model's scales
      (``docs/naming.md``; one of another model is an error). The Neural ODE's forward pass uses
      ``solver`` (``"rk4"`` or ``"euler"`` on the fast batched path; any solver of
      :data:`~kernelcalc.empirical.models.SOLVERS`) with ``solver_steps`` fixed steps; ``node_untied`` takes
      ``solver_steps`` Euler--Maruyama steps. Defaults: ``T`` 1.0, ``solver`` ``"rk4"``, ``solver_steps`` 4; for these and
      ``depth``, ``None`` (the default) means the model's default; a keyword that does not configure ``model``, passed with any other value (its default included), is an error.
    - Time: ``learning_rate=None`` -- gradient flow, ``t`` a time or array of times $\ge0$ (diffrax Tsit5,
      adaptive with ``flow_rtol``/``flow_atol``, at most ``max_flow_steps`` steps);
      ``learning_rate=``$\eta$ -- gradient descent, ``steps`` the step counts $k$ (``t`` is then an
      error). Time is that of $\dot\theta=-\nabla L$ with $L=\tfrac12\|f(X)-y\|^2$ (GD: $t=k\eta$),
      as in :func:`kernelcalc.predict`, whose ``t`` with a ``learning_rate`` is the step count $k$:
      ``trained_ensemble(..., learning_rate=eta, steps=k)`` goes with
      ``predict(..., learning_rate=eta, t=k)``, ``trained_ensemble(..., t=t)`` with ``predict(..., t=t)``.
    - ``network_batch``: train this many networks at a time (default: all; lower it to bound memory).
    - ``progress``: ``None`` (auto), ``True`` or ``False`` (a bar over network batches).

    **Returns:** a :class:`TrainedEnsemble`. A network whose outputs become NaN/inf, or a failed flow
    solve, gives ``failed=True`` with the reason (the statistics then hold NaN); bad input raises
    :class:`~kernelcalc.KernelcalcInputError`.
    """
    import jax
    import jax.numpy as jnp

    t_start = time.perf_counter()
    X_train, y_train = validate_xy(X_train, y_train, "X_train", "y_train")
    N, d = X_train.shape
    if X_test is not None:
        X_test = as_inputs(X_test, "X_test")
        if X_test.shape[1] != d:
            raise KernelcalcInputError(f"X_test has d={X_test.shape[1]} columns but X_train has d={d}")
    n_networks = positive_int("n_networks", n_networks, minimum=2)
    times, ks, lr = _times_schedule(t, steps, learning_rate)
    flow_rtol, flow_atol = positive("flow_rtol", flow_rtol), positive("flow_atol", flow_atol)
    max_flow_steps = positive_int("max_flow_steps", max_flow_steps)
    batch = n_networks if network_batch is None else min(positive_int("network_batch", network_batch), n_networks)
    disable = progress_disable(progress)
    scales = dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b, sigma_vb=sigma_vb)
    net = network(model, activation, width, T, depth, scales, solver, solver_steps)

    X_all = jnp.asarray(np.vstack([X_train] + ([X_test] if X_test is not None else [])))
    Xj, yj = jnp.asarray(X_train), jnp.asarray(y_train)
    order = np.argsort(times, kind="stable")
    t_sorted = [times[i] for i in order]

    fns = _compiled()
    failure = None
    flow_stats = dict(ode_steps=0)

    if lr is not None:
        k_sorted = [ks[i] for i in order]

        def run(P):
            outs, k_prev = [], 0
            for k in k_sorted:
                P = fns["advance"](P, jnp.asarray(k - k_prev, dtype=jnp.int32), jnp.asarray(lr), Xj, yj, net)
                k_prev = k
                outs.append(fns["outputs"](P, X_all, net))
            return jnp.stack(outs), True
    else:
        t1 = float(t_sorted[-1])

        def run(P):
            if t1 == 0.0:
                return fns["outputs"](P, X_all, net)[None].repeat(len(t_sorted), axis=0), True
            ys, ok, n = fns["flow"](P, jnp.asarray(t_sorted), Xj, yj, X_all, net, flow_rtol, flow_atol, max_flow_steps)
            flow_stats["ode_steps"] = max(flow_stats["ode_steps"], int(n))
            return ys, bool(ok)

    keys = jax.random.split(jax.random.PRNGKey(seed), n_networks)
    chunks = []
    from tqdm.auto import tqdm

    bar = tqdm(total=n_networks, desc=f"ensemble width {width}", disable=disable, leave=False)
    with jax.default_matmul_precision("highest"):
        for start in range(0, n_networks, batch):
            P0 = fns["init"](keys[start:start + batch], net, d)
            F, ok = run(P0)
            chunks.append(np.asarray(F))
            if not ok and failure is None:
                failure = (f"gradient-flow ODE solver failed for networks {start}..{min(start + batch, n_networks) - 1} before "
                           f"t={t1:.4g} (max_flow_steps={max_flow_steps} or a non-finite state)")
            bar.update(min(batch, n_networks - start))
    bar.close()
    F = np.concatenate(chunks, axis=1)                    # (t sorted, M, N + N_test)
    F = F[np.argsort(order, kind="stable")]               # back to the requested order
    if failure is None and not np.all(np.isfinite(F)):
        bad = np.argwhere(~np.isfinite(F).all(axis=2))
        ti, i = map(int, bad[0])
        failure = (f"network {i} has non-finite outputs at t={times[ti]:.4g} ({len(np.unique(bad[:, 1]))} of "
                   f"{n_networks} networks); " + ("reduce learning_rate" if lr is not None else
                                                   "the gradient flow left the finite range"))
    F_train, F_test = F[:, :, :N], (F[:, :, N:] if X_test is not None else None)
    st_train = ensemble_stats(F_train)
    st_test = ensemble_stats(F_test) if F_test is not None else (None,) * 4
    losses = tuple(float(v) for v in 0.5 * np.mean(np.sum((F_train - y_train) ** 2, axis=2), axis=1))
    params = dict(net.describe(), n_networks=n_networks, seed=seed, N_train=N,
                  N_test=0 if X_test is None else X_test.shape[0], d=d, method="gd" if lr is not None else "flow",
                  learning_rate=lr, requested_t=None if t is None else list(_times(t)))
    if lr is None:
        params.update(flow_rtol=flow_rtol, flow_atol=flow_atol, flow_solver="tsit5 (adaptive PID)")
    info = dict(seconds=time.perf_counter() - t_start, network_batch=batch, **(flow_stats if lr is None else {}))
    return TrainedEnsemble(times=times, steps=ks, mean_test=st_test[0], var_test=st_test[1],
                           mean_test_stderr=st_test[2], var_test_stderr=st_test[3], mean_train=st_train[0],
                           var_train=st_train[1], mean_train_stderr=st_train[2], var_train_stderr=st_train[3],
                           loss=losses, outputs_test=F_test, outputs_train=F_train, params=params, info=info,
                           failed=failure is not None, failure=failure)
