r"""Analytic against empirical, in function space: :func:`kernelcalc.predict` against trained ensembles.

For each width $n$, :func:`kernelcalc.trained_ensemble` trains $M$ networks from independent
initialisations; :func:`kernelcalc.predict` (``kernel="ntk"``, ``compute_cov=True``) gives the
infinite-width mean $\mu_t(x)$ and variance $\sigma_t^2(x)=\Sigma_t(x,x)$ of the trained network
(the NTK-GP of Lee et al. 2019, same time convention and, for gradient descent, the same step).
They are held against each other in standard errors:

$$z^{\text{mean}}_{t,j}=\frac{\bar f_{t,j}-\mu_t(x_j)}{\mathrm{se}(\bar f_{t,j})},\qquad
z^{\text{var}}_{t,j}=\frac{s^2_{t,j}-\sigma^2_t(x_j)}{\mathrm{se}(s^2_{t,j})},$$

which are about standard normal when the infinite-width prediction holds at width $n$.

**The gap, free of Monte-Carlo error.** The ensemble statistics cannot show how fast the network
approaches the kernel regime: their Monte-Carlo error $\sigma/\sqrt M$ does not shrink with width. Each
network is therefore also held against the infinite-width dynamics started from **its own**
initial outputs $f_0$ (linear in the residual, $A_t=\Theta_{*X}\Theta^{-1}(I-e^{-t\Theta})$, or
$I-(I-\eta\Theta)^k$ for gradient descent):

$$f^{\text{lin}}_t(x_*)=f_0(x_*)+A_t\,\bigl(y-f_0(X)\bigr),\qquad
\text{gap}(n)=\Bigl(\operatorname{mean}_{i,t>0,j}\bigl(f^{(i)}_t(x_j)-f^{(i),\text{lin}}_t(x_j)\bigr)^2\Bigr)^{1/2}.$$

The finite-width NTK differs from $\Theta$ by $O(n^{-1/2})$ at initialisation and moves by
$O(n^{-1/2})$ during training, so $\text{gap}(n)=O(n^{-1/2})$: ``gap_rate`` is the fitted log-log
slope (theory $-1/2$).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._results import JsonResult, frozen, jsonable, text_table
from .._validation import DEFAULT_WIDTH, KernelcalcInputError, positive_int, scale_keywords
from .._x64 import float64

__all__ = ["PredictionComparison", "compare_predictions"]


def _fit_slope(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])



@dataclasses.dataclass(frozen=True)
class PredictionComparison(JsonResult):
    r"""Result of :func:`compare_predictions`. Immutable, JSON-serialisable (:meth:`to_dict`).

    - ``widths``, ``times`` (and ``steps`` for gradient descent);
    - ``mean_pred``, ``var_pred`` (t, N_test): the infinite-width mean and variance of
      :func:`kernelcalc.predict` (``kernel="ntk"``, ``compute_cov=True``);
    - ``z_mean``, ``z_var`` (widths, t, N_test): the ensemble's deviation from them in standard errors
      (module docstring); ``max_abs_z_mean``, ``max_abs_z_var``, ``rms_z_mean``, ``rms_z_var``: per width;
    - ``gap`` (per width): RMS deviation of each trained network from the infinite-width dynamics
      started at its own initial outputs (times $t>0$); ``gap_rel``: the same divided by the RMS of the
      predicted change $A_t(y-f_0(X))$; ``gap_rate``: fitted log-log slope of ``gap`` against width
      (theory $-1/2$; NaN with fewer than two widths);
    - ``ensembles``: the :class:`~kernelcalc.training.ensemble.TrainedEnsemble` of each width;
      ``prediction``: the reference prediction's :meth:`to_dict`; ``params``; ``info``.
    """

    widths: tuple
    times: tuple
    steps: tuple | None
    mean_pred: np.ndarray
    var_pred: np.ndarray
    z_mean: np.ndarray
    z_var: np.ndarray
    gap: tuple
    gap_rel: tuple
    gap_rate: float
    ensembles: tuple
    prediction: dict
    params: dict
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("mean_pred", "var_pred", "z_mean", "z_var"):
            object.__setattr__(self, name, frozen(getattr(self, name)))

    @property
    def max_abs_z_mean(self) -> tuple:
        return tuple(float(np.max(np.abs(z))) for z in self.z_mean)

    @property
    def max_abs_z_var(self) -> tuple:
        return tuple(float(np.max(np.abs(z))) for z in self.z_var)

    @property
    def rms_z_mean(self) -> tuple:
        return tuple(float(np.sqrt(np.mean(z**2))) for z in self.z_mean)

    @property
    def rms_z_var(self) -> tuple:
        return tuple(float(np.sqrt(np.mean(z**2))) for z in self.z_var)

    @property
    def failed(self) -> bool:
        return any(e.failed for e in self.ensembles)

    def summary(self) -> str:
        p = self.params
        lines = [f"kc.predict(kernel='ntk') against {p['n_networks']} trained {p['model']}/{p['activation']} networks "
                 f"per width ({p['method']}); N_train={p['N_train']}, N_test={p['N_test']}, times "
                 + ", ".join(f"{t:.4g}" for t in self.times)]
        rows = [(w, self.max_abs_z_mean[i], self.rms_z_mean[i], self.max_abs_z_var[i], self.rms_z_var[i],
                 self.gap[i], self.gap_rel[i]) for i, w in enumerate(self.widths)]
        lines += text_table([("width", 6, "d"), ("max|z mean|", 11, ".2f"), ("rms z mean", 10, ".2f"),
                             ("max|z var|", 10, ".2f"), ("rms z var", 9, ".2f"), ("gap", 10, ".3e"),
                             ("gap/change", 10, ".3e")], rows)
        lines.append(f"z: (ensemble - prediction) / standard error, about N(0, 1) if the prediction holds; "
                     f"fitted gap rate (gap ~ width^p): p = {self.gap_rate:.3f} (theory -1/2)")
        for i, e in enumerate(self.ensembles):
            if e.failed:
                lines.append(f"width {self.widths[i]} FAILED: {e.failure}")
        lines.append(f"({self.info.get('seconds', float('nan')):.1f} s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _derived(self) -> dict:
        return dict(max_abs_z_mean=self.max_abs_z_mean, max_abs_z_var=self.max_abs_z_var, rms_z_mean=self.rms_z_mean,
                    rms_z_var=self.rms_z_var, failed=self.failed)


@float64
@scale_keywords(model_defaults=dict(T=1.0, solver="rk4", solver_steps=4))
def compare_predictions(X_train, y_train, X_test, *, model="node", activation="softplus", widths=(DEFAULT_WIDTH,),
                        n_networks=64, t=None, steps=None, learning_rate=None, seed=0, T=None, depth=None,
                        sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, sigma_b=0.0, sigma_vb=0.0, diag_reg=0.0,
                        solver=None, solver_steps=None, flow_rtol=1e-6, flow_atol=1e-8, network_batch=None,
                        progress=None) -> PredictionComparison:
    r"""Hold :func:`kernelcalc.trained_ensemble` against :func:`kernelcalc.predict` over ``widths``.

    **Arguments:** the data ``X_train`` (N, d), ``y_train`` (N,), ``X_test`` (N_test, d); the model
    (``model``, ``activation``, ``T``, ``depth``, the model's scales) and the training schedule
    (``t`` / ``steps`` / ``learning_rate``: gradient flow or descent, as in
    :func:`~kernelcalc.trained_ensemble`); ``widths`` (one ensemble of ``n_networks`` networks per
    width, seeds ``seed``, ``seed + 1``, ... by width); ``diag_reg`` for the prediction; the
    finite network's ``solver``/``solver_steps``, ``flow_rtol``/``flow_atol``, ``network_batch``,
    ``progress`` as in :func:`~kernelcalc.trained_ensemble` (``T``, ``depth``, ``solver``, ``solver_steps``: ``None``,
    the default, means the model's default; one that does not configure ``model`` is an error).

    **Returns:** a :class:`PredictionComparison`: per width the z-scores of the ensemble mean and
    variance against the prediction, the Monte-Carlo-free gap to the infinite-width dynamics and its
    fitted rate (module docstring).
    """
    from ..training.ensemble import trained_ensemble
    from ..training._common import validate_xy

    t_start = time.perf_counter()
    X_train, y_train = validate_xy(X_train, y_train, "X_train", "y_train")
    if X_test is None:
        raise KernelcalcInputError("X_test is required: the comparison is made on the test inputs")
    try:
        widths = tuple(positive_int("widths", w) for w in np.atleast_1d(widths).tolist())
    except (TypeError, ValueError):
        raise KernelcalcInputError(f"widths must be positive integers, got {widths!r}") from None
    if not widths:
        raise KernelcalcInputError("widths must hold at least one width")
    scales = {k: v for k, v in dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b,
                                    sigma_vb=sigma_vb).items() if v is not None}
    # t = 0 (or step 0) always: the gap starts every network's infinite-width dynamics from its own outputs there
    if learning_rate is None and t is not None and not np.any(np.atleast_1d(np.asarray(t, dtype=float)) == 0):
        t = np.concatenate([[0.0], np.atleast_1d(np.asarray(t, dtype=float))])
    if learning_rate is not None and steps is not None and not np.any(np.atleast_1d(np.asarray(steps)) == 0):
        steps = np.concatenate([[0], np.atleast_1d(np.asarray(steps))])
    ensembles = []
    for i, w in enumerate(widths):
        ensembles.append(trained_ensemble(
            X_train, y_train, X_test, model=model, activation=activation, width=w, n_networks=n_networks, t=t,
            steps=steps, learning_rate=learning_rate, seed=seed + i, T=T, depth=depth, **scales, solver=solver,
            solver_steps=solver_steps, flow_rtol=flow_rtol, flow_atol=flow_atol, network_batch=network_batch,
            progress=progress))
    e0 = ensembles[0]
    times = e0.times

    from ..inference import predict

    # one kernel computation: column 0 is y, then each network's residual y - f_0(X_train), width by width
    R = [(y_train[None, :] - e.outputs_train[times.index(0.0)]).T for e in ensembles]      # (N, M) each
    Y = np.column_stack([y_train] + R)
    kernel_kw = {k: v for k, v in dict(model=model, activation=activation, depth=depth, **scales).items()
                 if v is not None}
    if model in ("node", "resnet", "node_untied", "resnet_untied"):
        kernel_kw["T"] = T                                  # the DEQ and the MLP have no horizon
    pred = predict(X_train, Y, X_test, kernel="ntk", compute_cov=True,
                   t=np.asarray(e0.steps if learning_rate is not None else times),
                   learning_rate=learning_rate, diag_reg=diag_reg, **kernel_kw)
    means = np.asarray(pred.mean_test)                                   # (t, N_test, 1 + widths * M)
    mean_pred = means[:, :, 0]
    var_pred = np.diagonal(np.asarray(pred.cov_test), axis1=-2, axis2=-1)

    z_mean, z_var, gap, gap_rel = [], [], [], []
    later = np.asarray(times) > 0
    i0 = times.index(0.0)
    for w, e in enumerate(ensembles):
        z_mean.append((e.mean_test - mean_pred) / e.mean_test_stderr)
        z_var.append((e.var_test - var_pred) / e.var_test_stderr)
        M = e.n_networks
        change = means[:, :, 1 + w * M:1 + (w + 1) * M].transpose(0, 2, 1)             # (t, M, N_test)
        dev = e.outputs_test - e.outputs_test[i0][None] - change
        g = float(np.sqrt(np.mean(dev[later] ** 2))) if later.any() else float("nan")
        size = float(np.sqrt(np.mean(change[later] ** 2))) if later.any() else float("nan")
        gap.append(g)
        gap_rel.append(g / size if size > 0 else float("nan"))
    pred_dict = dict(mean_test=mean_pred, cov_test=np.asarray(pred.cov_test), times=np.asarray(pred.times),
                     kernel=pred.kernel, learning_rate=pred.learning_rate, info=dict(pred.info))
    params = dict(e0.params, widths=list(widths), diag_reg=diag_reg)
    params.pop("width", None)
    info = dict(seconds=time.perf_counter() - t_start)
    return PredictionComparison(widths=widths, times=times, steps=e0.steps, mean_pred=mean_pred, var_pred=var_pred,
                                z_mean=np.asarray(z_mean), z_var=np.asarray(z_var), gap=tuple(gap),
                                gap_rel=tuple(gap_rel), gap_rate=_fit_slope(widths, gap), ensembles=tuple(ensembles),
                                prediction=jsonable(pred_dict), params=params, info=info)
