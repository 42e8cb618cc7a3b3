r"""The time horizon $T$: $\lambda_{\min}(K^\infty)$ and the predicted convergence rate as functions of $T$.

For a Neural ODE on $[0,T]$ (conventions in :mod:`kernelcalc.kernels.ode`) the limiting NTK Gram
$K^\infty = \Theta(X, X)$ governs training: with $\lambda_0 = \lambda_{\min}(K^\infty) > 0$ and
step size $\eta\le 1/\|X\|_2^2$ (Theorem 2 of Gao et al.), gradient descent on
$L=\tfrac12\|u-y\|^2$ satisfies

$$L_k\le\rho^k L_0,\qquad \rho = 1-\eta\lambda_0,$$

so the loss falls below $\varepsilon L_0$ after at most

$$k_\varepsilon=\Big\lceil\frac{\ln\varepsilon}{\ln\rho}\Big\rceil\quad(\varepsilon=10^{-3})$$

steps, and gradient flow satisfies $L(t)\le e^{-\lambda_0 t}L_0$ with $t=k\eta$ (the convention
of :mod:`kernelcalc.training.run`), reaching $\varepsilon L_0$ by $t_\varepsilon=\ln(1/\varepsilon)/\lambda_0$.

:func:`sweep_T` tabulates $\lambda_{\min}$, $\lambda_{\max}$, the condition number, $\rho$,
$k_\varepsilon$ and $t_\varepsilon$ over a grid of horizons and activations.

**Only $\sigma_wT$ matters.** With $\tau=t/T$ the network is
$dh/d\tau=(\sigma_wT)\,W\phi(h)/\sqrt n$ on $[0,1]$ with the same parameters $U, W, v$, so
$K^\infty(T,\sigma_w)=K^\infty(1,\sigma_wT)$: a sweep over $T$ at fixed $\sigma_w$ is a sweep over
the hidden-weight scale.  With ``sigma_w_scaling="inverse_T"`` the scale is $\sigma_w/T$ (the
choice $\sigma_w\propto1/T$ that keeps the output variance from growing with the horizon), which
makes every number in the table exactly independent of $T$: a consistency check, not new physics.
The pre-activation variance $q(T)$ grows quickly with $\sigma_wT$ (softplus: $q\approx7$ at
$\sigma_wT=2$, $\approx100$ at 4), and with it the cost of the Gaussian expectations inside
:func:`~kernelcalc.node_kernel`: beyond $\sigma_wT\approx2.5$ an entry can take minutes.

An entry whose kernel cannot be computed (e.g. $\phi(x)=x^2$, whose variance ODE blows up in
finite time, so :func:`~kernelcalc.node_kernel` raises or returns a non-finite Gram) is recorded
as NaN with its reason in :attr:`HorizonSweep.failures`; it never raises and never yields a
silently wrong number.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Iterable, Sequence

import numpy as np

from .._x64 import float64
from .._validation import KernelcalcInputError, as_inputs, positive, progress_disable, scale_keywords
from ..theory.activations import ActivationError, resolve_activation
from .._results import JsonResult

__all__ = ["HorizonSweep", "sweep_T", "predicted_steps", "SIGMA_W_SCALINGS"]

#: Accepted values of ``sigma_w_scaling``: $\sigma_w$ as given, or $\sigma_w/T$.
SIGMA_W_SCALINGS = ("fixed", "inverse_T")
#: The loss reduction $\varepsilon$ the step counts refer to.
TARGET = 1e-3
_NAN = float("nan")
#: Warn when node_kernel's own (time or interpolation) error estimate exceeds this.
_ACCURACY_WARN = 1e-6


def predicted_steps(eta_lambda: float, target: float = TARGET) -> float:
    r"""Steps for the bound $\rho^k$, $\rho=1-\eta\lambda_{\min}$, to fall below ``target``.

    **Arguments:** ``eta_lambda`` $=\eta\lambda_{\min}$; ``target`` $\varepsilon\in(0,1)$.

    **Returns:** $k=\lceil\ln\varepsilon/\ln\rho\rceil$ as a float (``ln rho`` via ``log1p`` so that
    $\rho$ close to 1 keeps its digits); ``inf`` when $\rho\ge1$ (no contraction), ``1`` when
    $\rho=0$, ``nan`` when $\rho<0$ ($\eta\lambda_{\min}>1$: outside Theorem 2's step-size range,
    where $\rho^k$ is no bound) or when the input is not finite.
    """
    if not math.isfinite(eta_lambda):
        return _NAN
    if eta_lambda <= 0:
        return math.inf
    if eta_lambda == 1:
        return 1.0
    if eta_lambda > 1:
        return _NAN
    return float(math.ceil(math.log(target) / math.log1p(-eta_lambda)))


# ----------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True)
class HorizonSweep(JsonResult):
    r"""Result of :func:`sweep_T`. Immutable; :meth:`to_dict` / :meth:`to_json` are JSON-serialisable.

    **Fields** (per-activation entries are dicts ``activation name -> tuple over Ts``; a failed
    entry is ``nan``):

    - ``Ts``: the horizons, increasing; ``activations``: activation names, in the order given;
      ``sigma_w_effective``: the $\sigma_w$ used at each $T$ ($\sigma_w$ or $\sigma_w/T$).
    - ``lambda_min``, ``lambda_max``: extreme eigenvalues of the symmetrised $K^\infty$ Gram;
      ``condition_number``: $\lambda_{\max}/\lambda_{\min}$ (``inf`` if $\lambda_{\min}\le0$);
      ``lambda_ratio``: $\lambda_{\min}/\lambda_{\max}$.
    - ``contraction``: $\rho=1-\eta\lambda_{\min}$ (GD bound $L_k\le\rho^kL_0$).
    - ``steps_to_target``: $\lceil\ln 10^{-3}/\ln\rho\rceil$ (``inf`` if $\rho\ge1$, see :func:`predicted_steps`).
    - ``flow_time_to_target``: $\ln(10^3)/\lambda_{\min}$ (gradient flow $L(t)\le e^{-\lambda_{\min}t}L_0$, $t=k\eta$).
    - ``slopes``: least-squares slope of $\log\lambda_{\min}$ against $\log T$ over the entries with
      finite $\lambda_{\min}>0$ (``nan`` with fewer than two).
    - ``failures``: ``activation -> {T: reason}`` for the entries recorded as NaN.
    - ``warnings``: entries that computed but where the bound says nothing (e.g. $\lambda_{\min}\le0$).
    - ``params``: ``N``, ``d``, ``sigma_w``, ``sigma_u``, ``sigma_v``, ``sigma_w_scaling``, ``lr``,
      ``lr_rule``, ``data_norm`` ($\|X\|_2$), ``target``; ``info``: timings and discretisation sizes.
    """

    Ts: tuple
    activations: tuple
    sigma_w_effective: tuple
    lambda_min: dict
    lambda_max: dict
    condition_number: dict
    lambda_ratio: dict
    contraction: dict
    steps_to_target: dict
    flow_time_to_target: dict
    slopes: dict
    failures: dict
    warnings: tuple
    params: dict
    info: dict = dataclasses.field(default_factory=dict)

    def entry(self, activation: str, T: float) -> dict:
        """Every number of one (activation, T) entry, plus its failure reason (or ``None``)."""
        if activation not in self.activations:
            raise KernelcalcInputError(f"activation {activation!r} is not in this sweep: {list(self.activations)}")
        try:
            i = self.Ts.index(float(T))
        except ValueError:
            raise KernelcalcInputError(f"T={T!r} is not in this sweep: {list(self.Ts)}") from None
        keys = ("lambda_min", "lambda_max", "condition_number", "lambda_ratio", "contraction",
                "steps_to_target", "flow_time_to_target")
        out = {k: getattr(self, k)[activation][i] for k in keys}
        out.update(activation=activation, T=self.Ts[i], sigma_w=self.sigma_w_effective[i],
                   failure=self.failures.get(activation, {}).get(self.Ts[i]))
        return out

    def table(self) -> str:
        """Rows $T$; per activation the columns $\\lambda_{\\min}$, $\\rho$ and the steps to $10^{-3}L_0$."""
        p = self.params
        lines = [f"Neural ODE K_inf on N={p['N']} inputs in d={p['d']}: sigma_w={p['sigma_w']:g} "
                 f"({'sigma_w/T' if p['sigma_w_scaling'] == 'inverse_T' else 'fixed'}), "
                 f"sigma_u={p['sigma_u']:g}, sigma_v={p['sigma_v']:g}",
                 f"lr = {p['lr']:.6g} ({p['lr_rule']}); rho = 1 - lr*lambda_min; "
                 f"steps = ceil(ln {p['target']:g} / ln rho)"]
        cell = 34
        lines.append(f"{'':>7} " + " ".join(f"{a[:cell]:^{cell}}" for a in self.activations))
        lines.append(f"{'T':>7} " + " ".join(f"{'lambda_min':>11} {'rho':>12} {'steps':>9}"
                                              for _ in self.activations))
        for i, T in enumerate(self.Ts):
            cells = []
            for a in self.activations:
                lam, rho, k = self.lambda_min[a][i], self.contraction[a][i], self.steps_to_target[a][i]
                if T in self.failures.get(a, {}):
                    cells.append(f"{'failed':>11} {'-':>12} {'-':>9}")
                else:
                    steps = "inf" if k == math.inf else ("-" if math.isnan(k) else f"{int(k)}")
                    cells.append(f"{lam:11.4e} {rho:12.8f} {steps:>9}")
            lines.append(f"{T:7.4g} " + " ".join(cells))

        def slope(a, s):
            used = sum(1 for v in self.lambda_min[a] if math.isfinite(v) and v > 0)
            return f"{a} {s:+.3f} ({used} of {len(self.Ts)} T)" if math.isfinite(s) else f"{a} n/a"

        lines.append("log-log slope of lambda_min vs T: " + ", ".join(slope(a, s) for a, s in self.slopes.items()))
        for a, fails in self.failures.items():
            for T, why in fails.items():
                lines.append(f"failed: {a} at T={T:g}: {why}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()



# ----------------------------------------------------------------------------- validation
def _horizons(Ts) -> tuple[float, ...]:
    if isinstance(Ts, (str, bytes)):
        raise KernelcalcInputError(f"Ts must be a non-empty list of horizons T > 0, got {Ts!r}")
    vals = list(Ts) if isinstance(Ts, Iterable) else [Ts]
    if not vals:
        raise KernelcalcInputError("Ts must be a non-empty list of horizons T > 0, got an empty list")
    out = [positive(f"Ts[{i}]", T) for i, T in enumerate(vals)]
    if len(set(out)) != len(out):
        raise KernelcalcInputError(f"Ts contains a repeated horizon: {out}")
    return tuple(sorted(out))


def _activations(activations) -> tuple:
    if isinstance(activations, str) or not isinstance(activations, Iterable):
        activations = [activations]
    acts = list(activations)
    if not acts:
        raise KernelcalcInputError("activations must be a non-empty list, got an empty list")
    out = []
    for i, spec in enumerate(acts):
        try:
            out.append(resolve_activation(spec))
        except ActivationError as err:
            raise ActivationError(f"activations[{i}]: {err}") from None
    names = [a.name for a in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise KernelcalcInputError(f"activations contains a repeated activation: {repeated}")
    return tuple(out)


# ----------------------------------------------------------------------------- sweep
def _entry(X, act, T, sigma_w, sigma_u, sigma_v):
    """``(GramSummary, kernel info)`` of $K^\\infty$ at one horizon, or ``(None, reason)``."""
    from .checks import gram_summary
    from ..kernels import node_kernel

    try:
        K = node_kernel(X, activation=act, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)
    except (ValueError, RuntimeError, ArithmeticError) as err:  # blow-up, non-convergence, ...
        return None, f"node_kernel raised {type(err).__name__}: {err}"
    ntk = np.asarray(K.ntk)
    if not np.all(np.isfinite(ntk)):
        bad = int(np.sum(~np.isfinite(ntk)))
        return None, (f"K_inf has {bad} non-finite entries of {ntk.size} (the variance ODE of "
                      f"{act.name} may blow up before T={T:g})")
    return gram_summary(ntk), dict(K.info)


@float64
@scale_keywords("node")
def sweep_T(X, *, activations: Sequence = ("softplus", "tanh", "gelu", "sin"),
            Ts: Sequence[float] = (0.25, 0.5, 1.0, 2.0), sigma_w: float = 1.0, sigma_u: float = 1.0,
            sigma_v: float = 1.0, sigma_w_scaling: str = "fixed", lr: float | None = None,
            progress: bool | None = None) -> HorizonSweep:
    r"""$\lambda_{\min}(K^\infty)$ and the predicted GD / gradient-flow rates over horizons $T$ and activations.

    For every activation $\phi$ and horizon $T$: $K^\infty=\Theta(X,X)$ from
    :func:`~kernelcalc.node_kernel` (with $\sigma_w$ or $\sigma_w/T$), its extreme eigenvalues,
    $\rho=1-\eta\lambda_{\min}$ (Theorem 2: $L_k\le\rho^kL_0$), the steps
    $\lceil\ln10^{-3}/\ln\rho\rceil$ to $10^{-3}L_0$ and the flow time $\ln(10^3)/\lambda_{\min}$
    ($L(t)\le e^{-\lambda_{\min}t}L_0$, $t=k\eta$).

    **Arguments:**

    - ``X``: inputs, shape ``(N, d)``, finite (typically on the sphere $\|x\|^2=d$).
    - ``activations``: non-empty list of names, expressions or :class:`~kernelcalc.Activation`
      (a single string is one activation).
    - ``Ts``: non-empty list of distinct horizons, each finite and $>0$ (sorted increasingly).
    - ``sigma_w, sigma_u, sigma_v`` $>0$: weight scales.
    - ``sigma_w_scaling``: ``"fixed"`` ($\sigma_w$ at every $T$) or ``"inverse_T"`` ($\sigma_w/T$).
    - ``lr``: step size $\eta>0$; default $1/\|X\|_2^2$ (Theorem 2, :func:`~kernelcalc.training.default_lr`).
    - ``progress``: a tqdm bar over the (activation, T) entries (``None``: auto, when stderr is a terminal).

    **Returns:** a :class:`HorizonSweep`.  Entries whose kernel fails (raises, or is NaN/inf) are
    NaN with a reason in ``failures``.

    **Raises:** :class:`~kernelcalc.KernelcalcInputError` (or :class:`~kernelcalc.ActivationError`
    for an unknown activation) naming the bad argument.
    """
    from tqdm.auto import tqdm

    from ..empirical.montecarlo import fit_slope
    from ..training import default_lr

    t_start = time.perf_counter()
    X = as_inputs(X, "X")
    acts = _activations(activations)
    Ts = _horizons(Ts)
    if sigma_w_scaling not in SIGMA_W_SCALINGS:
        raise KernelcalcInputError(f"sigma_w_scaling must be one of {SIGMA_W_SCALINGS}, got {sigma_w_scaling!r}")
    if lr is None:
        lr, lr_rule = default_lr(X), "default 1/||X||^2, ||X|| = spectral norm of X (Theorem 2)"
    else:
        lr, lr_rule = positive("lr", lr), "user-given"
    sw_T = tuple(sigma_w / T if sigma_w_scaling == "inverse_T" else sigma_w for T in Ts)

    names = tuple(a.name for a in acts)
    cols = {k: {a: [] for a in names} for k in ("lambda_min", "lambda_max", "condition_number", "lambda_ratio",
                                                "contraction", "steps_to_target", "flow_time_to_target")}
    failures: dict = {}
    warnings: list[str] = []
    entry_info: dict = {a: {} for a in names}
    bar = tqdm(total=len(acts) * len(Ts), desc="sweep-T", disable=progress_disable(progress), leave=False)
    for act in acts:
        for T, sw in zip(Ts, sw_T):
            bar.set_postfix_str(f"{act.name}, T={T:g}")
            t0 = time.perf_counter()
            g, info = _entry(X, act, T, sw, sigma_u, sigma_v)
            if g is None:
                failures.setdefault(act.name, {})[T] = info
                for c in cols.values():
                    c[act.name].append(_NAN)
            else:
                lmin, lmax = g.lambda_min, g.lambda_max
                vals = dict(lambda_min=lmin, lambda_max=lmax, condition_number=g.condition_number,
                            lambda_ratio=lmin / lmax if lmax > 0 else _NAN, contraction=1.0 - lr * lmin,
                            steps_to_target=predicted_steps(lr * lmin, TARGET),
                            flow_time_to_target=math.log(1.0 / TARGET) / lmin if lmin > 0 else math.inf)
                for k, v in vals.items():
                    cols[k][act.name].append(float(v))
                if lmin <= 0:
                    warnings.append(f"{act.name} at T={T:g}: lambda_min = {lmin:.3e} <= 0, K_inf is not "
                                    "positive definite, no convergence is predicted")
                elif lr * lmin > 1:
                    warnings.append(f"{act.name} at T={T:g}: lr*lambda_min = {lr * lmin:.3g} > 1, outside "
                                    "Theorem 2's step-size range; steps not predicted")
                err = max((e for e in (info.get("time_error_estimate"), info.get("interpolation_error_estimate"))
                           if isinstance(e, float) and math.isfinite(e)), default=0.0)
                if err > _ACCURACY_WARN:
                    warnings.append(f"{act.name} at T={T:g}: node_kernel's error estimate is {err:.1e} "
                                    f"(> {_ACCURACY_WARN:g}); treat its digits with care")
                entry_info[act.name][T] = {"M": info.get("M"), "q_max": info.get("q_max"), "error_estimate": err}
            entry_info[act.name].setdefault(T, {})["seconds"] = time.perf_counter() - t0
            bar.update(1)
    bar.close()

    cols = {k: {a: tuple(v) for a, v in c.items()} for k, c in cols.items()}
    slopes = {a: fit_slope(Ts, cols["lambda_min"][a]) for a in names}
    N, d = X.shape
    params = dict(N=N, d=d, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_w_scaling=sigma_w_scaling,
                  lr=lr, lr_rule=lr_rule, data_norm=float(np.linalg.norm(X, 2)), target=TARGET)
    info = dict(seconds=time.perf_counter() - t_start, entries=entry_info)
    return HorizonSweep(Ts=Ts, activations=names, sigma_w_effective=sw_T, slopes=slopes, failures=failures,
                        warnings=tuple(warnings), params=params, info=info, **cols)
