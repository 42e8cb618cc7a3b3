r"""Divergent gradient flows of SAD networks: integrate $\dot\theta=-\nabla L(\theta)$ to long times and decide.

Setting (*SAD Neural Networks: Divergent Gradient Flows and Asymptotic Optimality
via o-minimal Structures*, arXiv:2505.09572). For a fully connected network $f_\theta$ with a
Sublinear Analytic Definable activation (logistic, tanh, softplus, GELU, ...) and the squared loss

$$L(\theta)=\tfrac12\sum_{i=1}^N\bigl(f_\theta(x_i)-y_i\bigr)^2,$$

the gradient flow $\dot\theta(t)=-\nabla L(\theta(t))$ either converges to a critical point or
diverges, $\|\theta(t)\|\to\infty$, while $L(\theta(t))$ converges to an asymptotic critical value.
For a polynomial target of degree $\ge2$ on enough points the infimum of $L$ is $0$ but it is not
attained: an analytic network is never exactly the polynomial, yet finite differences of the
activation with diverging weights approximate it, e.g.

$$\frac{\sigma(b+\varepsilon x)+\sigma(b-\varepsilon x)-2\sigma(b)}{\varepsilon^2\sigma''(b)}
= x^2+O(\varepsilon^2)\qquad(\varepsilon\to0),$$

input weights $\varepsilon\to0$, output weights $\sim\varepsilon^{-2}\to\infty$. So a flow that
drives $L$ below every non-optimal critical value must diverge.

**What is computed.** :func:`divergent_flow` integrates the flow with diffrax in the log-time
variable $s=\ln(1+t)$,

$$\frac{d\theta}{ds}=-(1+t)\,\nabla L(\theta)=-e^{s}\,\nabla L(\theta),\qquad s\in[0,\ln(1+t_{\max})]$$

(an exact reparametrisation that starts at $t=0$), records at log-spaced times $t_j$ the loss
$L(t_j)$, $\|\theta(t_j)\|$ and $\|\nabla L(\theta(t_j))\|$, and fits the final window of
``window_decades`` $=w$ decades, $t\in[t_{\rm end}10^{-w},t_{\rm end}]$:

- growth exponent $\beta$: slope of $\ln\|\theta\|$ against $\ln t$ ($\|\theta\|\sim t^\beta$), and
  the log slope $\gamma$: slope of $\|\theta\|$ against $\ln t$ ($\|\theta\|\approx\gamma\ln t+c$);
- loss decay: along the flow $dL/dt=-\|\nabla L\|^2$, so
  $D(t):=t\|\nabla L(\theta(t))\|^2=-dL/d\ln t$. If $L=L_\infty+c\,t^{-\alpha}$ then
  $D=\alpha c\,t^{-\alpha}$: $\alpha$ is minus the slope of $\ln D$ against $\ln t$ (a linear fit that
  needs no guess of $L_\infty$; its rms log-residual says whether $D$ is a power law), and
  $L_\infty=\overline{L(t)-D(t)/\alpha}$ over the window;
- then $\|\dot\theta\|=\|\nabla L\|=\sqrt{D/t}\propto t^{-(1+\alpha)/2}$: the path length
  $\int^\infty\|\nabla L\|\,dt$ is finite when $\alpha>1$ (then $\theta$ converges; the remaining path
  is about $2t\|\nabla L(t)\|/(\alpha-1)$) and infinite when $\alpha\le1$, and
  $\beta\le(1-\alpha)/2$. Always $\|\theta(t)-\theta(0)\|\le\sqrt{t\,L(\theta(0))}$, so $\beta\le\tfrac12$.

**Verdicts** (thresholds are keyword arguments of :func:`divergent_flow`, echoed in ``info``):

- ``"convergent"``: $\|\theta(t_{\rm end})-\theta(t_{\rm end}10^{-w})\|\le$ ``settle_rtol``
  $\cdot\|\theta(t_{\rm end})\|$ and $\|\nabla L(t_{\rm end})\|\le$ ``grad_tol``; the critical value is
  $L(t_{\rm end})$.
- ``"divergent"``: $\beta\ge$ ``min_growth_exponent``; at least ``monotone_fraction`` of the window's
  increments of $\|\theta\|$ are positive; $\theta$ has not settled; $L$ decreased over the window;
  ``min_loss_decay_exponent`` $<\alpha\le$ ``max_loss_decay_exponent`` (the loss approaches its
  asymptote and $\|\nabla L\|\to0$, but not integrably: the default 1.2 is the path-length boundary
  $\alpha=1$ plus a margin for $\|\theta\|\propto\ln t$, where $\alpha=1$); and the power-law fit of
  $D$ holds to an rms log-residual $\le$ ``max_loss_fit_rms`` (the flow is in its asymptotic regime,
  not in a transient between plateaus, which can grow $\|\theta\|$ for a decade and then converge).
- ``"undetermined"`` otherwise, with the reason (too few records, the criteria missed; usually:
  integrate longer), and always for a run that failed numerically (``failed=True``: the solver
  failed or the loss became non-finite; ``failure`` says where, the records up to there are kept).

$L_\infty$ is reported as $0$ when the raw estimate is $\le$ ``asymptote_zero_rtol``
$\cdot L(t_{\rm end})$ (a power-law decay to 0 within the accuracy of the fit, whose $\alpha$ still
drifts), as ``None`` when $\alpha\le0$ or the estimate exceeds $L(t_{\rm end})$ (no power law fits).

**Solvers.** The flow is stiff at late times: the Hessian's top eigenvalue $\lambda_{\max}(\nabla^2L)$
is $O(10^2$--$10^3)$ (it grows with the output weights) while the motion is slow, so an explicit method
(``flow_solver="tsit5"``) needs about $t\,\lambda_{\max}/3$ steps to reach time $t$ (measured: $8\cdot10^5$
Tsit5 steps to $t=10^4$, width-4 softplus net, 40 points). The default ``"kvaerno5"`` is diffrax's
L-stable ESDIRK method with a full Newton root finder whose residual tolerance is raised above the
round-off of the vector field, which grows like $e^s$ (diffrax's default chord iteration, or a fixed
tolerance, stalls there and rejects every step); it reaches $t=10^6$ in a few hundred steps. Both use
diffrax's ``PIDController(flow_rtol, flow_atol)``.

**Network.** The package's MLP (:func:`kernelcalc.empirical.models.make_network` ``("mlp", ...)``,
NTK parametrisation) with biases switched on:

$$z^1=\tfrac{\sigma_w}{\sqrt d}W^1x+\sigma_bb^1,\quad
z^{\ell+1}=\tfrac{\sigma_w}{\sqrt n}W^{\ell+1}\phi(z^\ell)+\sigma_bb^{\ell+1},\quad
f(x)=\tfrac{\sigma_v}{\sqrt n}w^{\rm out}\cdot\phi(z^L)+\sigma_{vb}b^{\rm out}.$$

The scale keywords are the MLP's (``docs/naming.md``): ``sigma_w``, ``sigma_b``, ``sigma_v``,
``sigma_vb``. The MLP's bias scales ``sigma_b``/``sigma_vb`` default to 0 elsewhere (biases
switched off); here both default to 1, so that on 1-D inputs the network can form the
finite differences above (a bias-free 1-D network $\sum_k a_k\sigma(w_kx)$ has no $b$ with
$\sigma''(b)\ne0$ for odd $\sigma$, and no constant term). So no constant input column is appended:
:func:`sad_data` returns plain $(N,1)$ inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from .._x64 import float64
from .._validation import (KernelcalcInputError, _real, nonnegative, positive, positive_int, progress_disable,
                           renamed_keywords, scale_keywords)
from ..empirical.models import batched_apply, init_params, make_network
from .._results import JsonResult
from ._common import validate_xy
from ._flow_verdict import VERDICTS, _decide, _loss_asymptote, _window_fits

__all__ = ["FlowDivergence", "divergent_flow", "polynomial_target", "sad_data", "VERDICTS", "FLOW_SOLVERS"]

#: solver name -> implicit? (implicit ones get a Newton root finder)
FLOW_SOLVERS = {"kvaerno5": True, "kvaerno4": True, "kvaerno3": True, "tsit5": False, "dopri5": False,
                "dopri8": False}

#: the implicit stages' Newton tolerance is at least this many times the vector field's round-off estimate
_ROUNDOFF_SAFETY = 1e3


# ----------------------------------------------------------------------------- data
def polynomial_target(x, coeffs) -> np.ndarray:
    r"""$p(x)=\sum_k c_kx^k$ (``coeffs`` lowest degree first) at 1-D points ``x`` of shape (N,) or (N, 1).

    **Returns:** an (N,) float64 array.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise KernelcalcInputError(f"x must be 1-D points of shape (N,) or (N, 1), got shape {x.shape}")
    try:
        c = np.atleast_1d(np.asarray(coeffs, dtype=np.float64))
    except (TypeError, ValueError):
        raise KernelcalcInputError(f"coeffs must be real numbers, got {coeffs!r}") from None
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)):
        raise KernelcalcInputError(f"coeffs must be a non-empty 1-D list of finite numbers, got {coeffs!r}")
    return np.polynomial.polynomial.polyval(x, c)


def sad_data(n: int = 40, *, degree: int = 2, seed: int | None = None, coeffs=None) -> tuple[np.ndarray, np.ndarray]:
    r"""1-D inputs on $[-1,1]$ and a polynomial target: the setting of the SAD divergence theorem.

    **Arguments:**

    - ``n``: number of points $N\ge1$.
    - ``degree``: target $y=x^{\text{degree}}$ (ignored when ``coeffs`` is given). The theorem is about
      degree $\ge2$ and $N$ large relative to the architecture.
    - ``seed``: ``None`` for the equispaced grid $x_i=-1+2i/(N-1)$; an integer for $N$ sorted uniform
      draws on $[-1,1]$.
    - ``coeffs``: polynomial coefficients, lowest degree first (see :func:`polynomial_target`).

    **Returns:** ``(X, y)``, ``X`` of shape (N, 1) (no bias column: the MLP has biases) and ``y`` (N,).
    """
    n = positive_int("n", n)
    if seed is None:
        x = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    else:
        x = np.sort(np.random.default_rng(seed).uniform(-1.0, 1.0, n))
    if coeffs is None:
        degree = positive_int("degree", degree, minimum=0)
        coeffs = [0.0] * degree + [1.0]
    return x[:, None], polynomial_target(x, coeffs)


# ----------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True)
class FlowDivergence(JsonResult):
    r"""One long-time gradient-flow run (:func:`divergent_flow`). Immutable, JSON-serialisable.

    **Per record** (equal-length tuples, log-spaced times): ``times`` $t_j$, ``loss`` $L(\theta(t_j))$,
    ``param_norm`` $\|\theta(t_j)\|$, ``grad_norm`` $\|\nabla L(\theta(t_j))\|$ (the values at $t=0$ are
    ``info["loss_init"]``, ``info["param_norm_init"]``, ``info["grad_norm_init"]``).

    **Verdict:** ``verdict`` (one of :data:`VERDICTS`) and ``reason`` (the criteria with their numbers).

    **Failure:** ``failed`` (the run stopped early: the flow solver failed or a value became
    non-finite; the verdict is then ``"undetermined"``) and ``failure`` (``None``, or what and where).

    **Fits over the final window** (``None`` where not defined): ``norm_growth_exponent`` $\beta$
    ($\|\theta\|\sim t^\beta$), ``norm_log_slope`` $\gamma$ ($\|\theta\|\approx\gamma\ln t+c$),
    ``loss_decay_exponent`` $\alpha$ ($L\approx L_\infty+c\,t^{-\alpha}$ from
    $-dL/d\ln t=t\|\nabla L\|^2\propto t^{-\alpha}$; ``None`` for a convergent run), ``loss_asymptote``
    $L_\infty$ (0 when consistent with 0, ``None`` when no power law fits; for a convergent run the
    critical value $L(t_{\rm end})$).

    ``params``: what made the run (architecture, data size, solver, tolerances). ``info``: the
    thresholds, the window, every fitted number (``loss_decay_exponent_fit``, ``loss_fit_rms_log``,
    ``loss_asymptote_raw`` and a note, ``grad_norm_slope`` $=-(1+\alpha)/2$, ``growth_bound``
    $(1-\alpha)/2$, ``remaining_path`` for $\alpha>1$, ``settle_ratio``, ``monotone_fraction``), the
    values at $t=0$, the final parameters ``theta_final`` (flat, in ``jax.flatten_util.ravel_pytree``
    order of :class:`~kernelcalc.empirical.models.MLPParams`), solver statistics and ``seconds``.
    """

    times: tuple
    loss: tuple
    param_norm: tuple
    grad_norm: tuple
    verdict: str
    reason: str
    norm_growth_exponent: float | None
    norm_log_slope: float | None
    loss_decay_exponent: float | None
    loss_asymptote: float | None
    params: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)
    failed: bool = False
    failure: str | None = None

    @property
    def final_loss(self) -> float:
        return self.loss[-1] if self.loss else float("nan")

    @property
    def loss_drop(self) -> float:
        r"""$L(\theta(0))/L(\theta(t_{\rm end}))$: the factor by which the flow reduced the loss."""
        if not self.loss:
            return float("nan")
        l0 = self.info.get("loss_init", float("nan"))
        return l0 / self.final_loss if self.final_loss > 0 else float("inf")

    def summary(self) -> str:
        p, i = self.params, self.info
        f = lambda v, fmt=".4g": "n/a" if v is None else format(v, fmt)  # noqa: E731
        last = lambda seq: seq[-1] if seq else None  # noqa: E731
        lines = [f"gradient flow of 1/2|f(X)-y|^2: {p.get('activation')} MLP, width {p.get('width')}, depth "
                 f"{p.get('depth')} ({p.get('n_params')} parameters), N={p.get('N')}, d={p.get('d')}, seed {p.get('seed')}",
                 f"integrated to t = {f(last(self.times))} (t_max = {p.get('t_max'):g}) with {p.get('flow_solver')} "
                 f"in s = ln(1+t): {i.get('ode_steps')} steps ({i.get('ode_rejected_steps')} rejected), "
                 f"{i.get('seconds', float('nan')):.1f} s",
                 f"loss {f(i.get('loss_init'))} -> {f(last(self.loss))} (x1/{f(self.loss_drop, '.3g')}); "
                 f"|theta| {f(i.get('param_norm_init'))} -> {f(last(self.param_norm))}; "
                 f"|grad L| {f(i.get('grad_norm_init'))} -> {f(last(self.grad_norm))}"]
        w = i.get("window") or {}
        if w:
            lines.append(f"final window t in [{f(w.get('t_start'))}, {f(w.get('t_end'))}] ({w.get('n')} records): "
                         f"beta = dln|theta|/dln t = {f(self.norm_growth_exponent)}, "
                         f"gamma = d|theta|/dln t = {f(self.norm_log_slope)}, "
                         f"|theta(t_end)-theta(t_start)|/|theta| = {f(i.get('settle_ratio'), '.3g')}")
            if self.verdict == "convergent":
                lines.append(f"critical value L = {f(self.loss_asymptote)}")
            else:
                lines.append(f"loss L ~ L_inf + c t^-alpha (fit of -dL/dln t = t|grad L|^2 ~ t^-alpha, rms log-residual "
                             f"{f(i.get('loss_fit_rms_log'), '.2g')}): alpha = {f(i.get('loss_decay_exponent_fit'))}, "
                             f"L_inf = {f(self.loss_asymptote)}; |grad L| ~ t^{f(i.get('grad_norm_slope'), '.3g')}"
                             + (f"; bound beta <= (1-alpha)/2 = {f(i.get('growth_bound'))}"
                                if i.get("growth_bound") is not None else ""))
                lines.append(f"  ({i.get('loss_asymptote_note')})")
        lines.append(f"verdict: {self.verdict.upper()} -- {self.reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _derived(self) -> dict:
        return dict(final_loss=self.final_loss, loss_drop=self.loss_drop)


# ----------------------------------------------------------------------------- the flow
@functools.lru_cache(maxsize=16)
@float64
def _flow_fns(net, d: int, solver: str, rtol: float, atol: float, newton_rtol: float, newton_atol: float,
              max_steps: int):
    """Jitted ``advance(theta, s0, s1, X, y)`` and ``stats(theta, X, y)`` on flat parameters.

    Cached per setup (and jit-cached per data shape), so repeated runs compile once.
    """
    import diffrax
    import optimistix as optx
    from jax.flatten_util import ravel_pytree

    _, unravel = ravel_pytree(init_params(jax.random.PRNGKey(0), net, d))
    solver_cls = {"kvaerno5": diffrax.Kvaerno5, "kvaerno4": diffrax.Kvaerno4, "kvaerno3": diffrax.Kvaerno3,
                  "tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}[solver]

    def outputs(theta, X):
        return batched_apply(unravel(theta), X, net)

    def loss(theta, X, y):
        r = outputs(theta, X) - y
        return 0.5 * jnp.sum(r * r)

    grad = jax.grad(loss)

    def vf(s, theta, args):  # d theta / ds, s = ln(1 + t)
        return -jnp.exp(s) * grad(theta, *args)

    def roundoff_scale(theta, X, y):
        # the terms summed in grad L = J^T (f - y): its round-off is about eps times this
        return jnp.linalg.norm(jax.jacfwd(outputs)(theta, X)) * (jnp.linalg.norm(outputs(theta, X))
                                                                + jnp.linalg.norm(y))

    @jax.jit
    def advance(theta, s0, s1, X, y):
        if FLOW_SOLVERS[solver]:
            # Newton with a fresh Jacobian per iteration; its residual tolerance stays above the round-off of
            # e^s grad L (which grows like e^s), else every step is rejected at late times.
            floor = _ROUNDOFF_SAFETY * jnp.finfo(theta.dtype).eps * jnp.exp(s1) * roundoff_scale(theta, X, y)
            slv = solver_cls(root_finder=optx.Newton(rtol=newton_rtol, atol=jnp.maximum(newton_atol, floor)))
        else:
            slv = solver_cls()
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), slv, t0=s0, t1=s1, dt0=None, y0=theta, args=(X, y),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            saveat=diffrax.SaveAt(t1=True), max_steps=max_steps, throw=False)
        return sol.ys[-1], sol.result, sol.stats["num_steps"], sol.stats["num_rejected_steps"]

    @jax.jit
    def stats(theta, X, y):
        val, g = jax.value_and_grad(loss)(theta, X, y)
        return val, jnp.linalg.norm(theta), jnp.linalg.norm(g)

    return advance, stats


@float64
@renamed_keywords(solver="flow_solver", rtol="flow_rtol", atol="flow_atol", max_steps="flow_max_steps")
@scale_keywords("mlp", label="divergent_flow (its SAD network is an MLP)")
def divergent_flow(X, y, *, activation="softplus", width: int, depth: int = 1, seed: int = 0,
                   t_max: float = 1e5, t_min: float = 1e-2, n_records: int = 60, sigma_w: float = 1.0,
                   sigma_b: float = 1.0, sigma_v: float = 1.0, sigma_vb: float = 1.0, init_scale: float = 1.0,
                   flow_solver: str = "kvaerno5", flow_rtol: float = 1e-8, flow_atol: float = 1e-10,
                   newton_rtol: float = 1e-6, newton_atol: float = 1e-9, flow_max_steps: int = 100_000,
                   window_decades: float = 1.0, min_growth_exponent: float = 0.01,
                   monotone_fraction: float = 0.9, settle_rtol: float = 1e-3, grad_tol: float = 1e-6,
                   min_loss_decay_exponent: float = 0.0, max_loss_decay_exponent: float = 1.2,
                   max_loss_fit_rms: float = 0.1, asymptote_zero_rtol: float = 0.25, min_window_records: int = 4,
                   progress: bool | None = None) -> FlowDivergence:
    r"""Integrate the gradient flow of $L=\tfrac12\|f_\theta(X)-y\|^2$ to $t_{\max}$ and say whether it diverges.

    The flow $\dot\theta=-\nabla L(\theta)$, $\theta(0)=$ ``init_scale`` $\cdot\,\theta_0$ ($\theta_0$ iid
    $N(0,1)$ from ``seed``), is solved in $s=\ln(1+t)$, $d\theta/ds=-e^s\nabla L$ (module docstring),
    one ``diffeqsolve`` per interval between records. $L$, $\|\theta\|$, $\|\nabla L\|$ are recorded at
    ``n_records`` times log-spaced on $[t_{\min},t_{\max}]$, and the final ``window_decades`` decades are
    fitted for $\beta$, $\gamma$, $\alpha$, $L_\infty$.

    **Arguments:**

    - ``X`` (N, d), ``y`` (N,): the data (finite; one target per row). :func:`sad_data` makes 1-D
      polynomial data.
    - ``activation``, ``width`` $n\ge1$ (required: the theorem is about small networks, typically 2--4;
      the package's default width 256 would be a different experiment), ``depth`` (hidden layers $\ge1$),
      ``seed``; ``sigma_w`` $>0$, ``sigma_b`` $\ge0$, ``sigma_v`` $>0$, ``sigma_vb`` $\ge0$: hidden weight,
      hidden bias, readout weight and readout bias scales of the NTK-parametrised MLP (``docs/naming.md``;
      all default 1 here, biases on); ``init_scale`` $>0$.
    - ``t_max`` $>0$; ``t_min``: first record, $0<t_{\min}<t_{\max}$; ``n_records`` $\ge2$.
    - ``flow_solver``: a name in :data:`FLOW_SOLVERS` (default ``"kvaerno5"``, implicit; ``"tsit5"`` is
      explicit and stability-limited, fine for $t_{\max}\lesssim10^3$); ``flow_rtol``, ``flow_atol``: the
      ``PIDController``;
      ``newton_rtol``, ``newton_atol``: the implicit stages' Newton iteration (its residual tolerance is
      $\max(\texttt{newton\_atol},\,10^3\,\epsilon\,e^s\|J\|(\|f\|+\|y\|))$, $J=\partial f(X)/\partial\theta$);
      ``flow_max_steps``: per interval between records. (``solver``, ``rtol``, ``atol``, ``max_steps``
      are the deprecated names of these four: in :func:`~kernelcalc.train` and
      :func:`~kernelcalc.empirical_ntk` those words mean the network's own ODE solver.)
    - Thresholds (module docstring): ``window_decades`` $w$, ``min_growth_exponent``, ``monotone_fraction``,
      ``settle_rtol``, ``grad_tol``, ``min_loss_decay_exponent``, ``max_loss_decay_exponent``,
      ``max_loss_fit_rms``, ``asymptote_zero_rtol``, ``min_window_records``.
    - ``progress``: a tqdm bar over the intervals: ``None`` (auto: when stderr is a terminal), ``True``, ``False``.

    **Returns:** a :class:`FlowDivergence`. A solver failure or a non-finite loss ends the run early with
    ``failed=True``, the ``failure`` and verdict ``"undetermined"`` (the records up to there are kept);
    it never raises.

    **Raises:** :class:`~kernelcalc.KernelcalcInputError` (naming the argument) on bad input.

    Example (a few seconds, most of it compilation)::

        X, y = sad_data(40, degree=2)
        res = divergent_flow(X, y, width=2, seed=1, t_max=1e5)
        res.verdict, res.norm_growth_exponent, res.loss_decay_exponent   # 'divergent', 0.19, 0.61
    """
    t_start = time.perf_counter()
    X, y = validate_xy(X, y)
    t_max = positive("t_max", t_max)
    t_min = positive("t_min", t_min)
    if t_min >= t_max:
        raise KernelcalcInputError(f"t_min must be < t_max, got t_min={t_min!r} and t_max={t_max!r}")
    n_records = positive_int("n_records", n_records, minimum=2)
    if not isinstance(flow_solver, str) or flow_solver.lower() not in FLOW_SOLVERS:
        raise KernelcalcInputError(f"flow_solver must be one of {sorted(FLOW_SOLVERS)}, got {flow_solver!r}")
    flow_solver = flow_solver.lower()
    init_scale = positive("init_scale", init_scale)
    flow_rtol, flow_atol = positive("flow_rtol", flow_rtol), positive("flow_atol", flow_atol)
    newton_rtol, newton_atol = positive("newton_rtol", newton_rtol), positive("newton_atol", newton_atol)
    flow_max_steps = positive_int("flow_max_steps", flow_max_steps)
    disable = progress_disable(progress)
    seed = positive_int("seed", seed, minimum=0)
    th = dict(
        window_decades=positive("window_decades", window_decades),
        min_growth_exponent=nonnegative("min_growth_exponent", min_growth_exponent),
        monotone_fraction=nonnegative("monotone_fraction", monotone_fraction),
        settle_rtol=positive("settle_rtol", settle_rtol), grad_tol=positive("grad_tol", grad_tol),
        min_loss_decay_exponent=_real("min_loss_decay_exponent", min_loss_decay_exponent),
        max_loss_decay_exponent=_real("max_loss_decay_exponent", max_loss_decay_exponent),
        max_loss_fit_rms=positive("max_loss_fit_rms", max_loss_fit_rms),
        asymptote_zero_rtol=nonnegative("asymptote_zero_rtol", asymptote_zero_rtol),
        min_window_records=positive_int("min_window_records", min_window_records, minimum=2))
    if th["monotone_fraction"] > 1:
        raise KernelcalcInputError(f"monotone_fraction must be in [0, 1], got {monotone_fraction!r}")
    if th["min_loss_decay_exponent"] >= th["max_loss_decay_exponent"]:
        raise KernelcalcInputError(
            f"min_loss_decay_exponent must be < max_loss_decay_exponent, got {min_loss_decay_exponent!r} "
            f"and {max_loss_decay_exponent!r}")
    net = make_network("mlp", activation=activation, width=width, depth=depth, sigma_w=sigma_w, sigma_b=sigma_b,
                       sigma_v=sigma_v, sigma_vb=sigma_vb)
    N, d = X.shape

    import diffrax
    from jax.flatten_util import ravel_pytree
    from tqdm.auto import tqdm

    theta = init_scale * ravel_pytree(init_params(jax.random.PRNGKey(seed), net, d))[0]
    advance, stats = _flow_fns(net, d, flow_solver, flow_rtol, flow_atol, newton_rtol, newton_atol, flow_max_steps)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    rec = dict(t=[], loss=[], pnorm=[], gnorm=[], theta=[])
    n_steps = n_rej = 0
    failure = None
    with jax.default_matmul_precision("highest"):
        l0, p0, g0 = (float(v) for v in stats(theta, Xj, yj))
        s_prev, t_prev = 0.0, 0.0
        times = np.logspace(math.log10(t_min), math.log10(t_max), n_records)
        for t in tqdm(times, desc="gradient flow", disable=disable, leave=False):
            s = math.log1p(t)
            new, result, ns, nr = advance(theta, jnp.asarray(s_prev), jnp.asarray(s), Xj, yj)
            n_steps, n_rej = n_steps + int(ns), n_rej + int(nr)
            if result != diffrax.RESULTS.successful:
                failure = (f"the flow's ODE solver ({flow_solver}) failed between t={t_prev:.4g} and t={t:.4g}: "
                           f"{diffrax.RESULTS[result]}")
                break
            lv, pv, gv = (float(v) for v in stats(new, Xj, yj))
            if not all(map(math.isfinite, (lv, pv, gv))):
                failure = f"non-finite values at t={t:.4g} (loss {lv}, |theta| {pv}, |grad L| {gv})"
                break
            theta, s_prev, t_prev = new, s, float(t)
            for key, v in zip(("t", "loss", "pnorm", "gnorm", "theta"), (float(t), lv, pv, gv, np.asarray(theta))):
                rec[key].append(v)

    fit = None
    if len(rec["t"]) >= 2:
        fit = _window_fits(rec["t"], rec["loss"], rec["pnorm"], rec["gnorm"], np.asarray(rec["theta"]),
                           th["window_decades"])
    if failure:
        failure += f" (records up to t={rec['t'][-1]:.4g})" if rec["t"] else " (no records)"
        verdict, reason = "undetermined", failure
    elif fit is None:
        verdict, reason = "undetermined", "fewer than 2 records"
    else:
        verdict, reason = _decide(fit, rec["gnorm"][-1], rec["pnorm"][-1], th)

    beta = gamma = alpha = l_inf = None
    note = "no fit"
    if fit is not None:
        beta, gamma = fit["beta"], fit["gamma"]
        alpha, l_inf, note = _loss_asymptote(fit, verdict, rec["loss"][-1], th)
    window_keys = ("n", "t_start", "t_end")
    info = dict(
        thresholds=th, loss_init=l0, param_norm_init=p0, grad_norm_init=g0,
        window=None if fit is None else {k: fit[k] for k in window_keys},
        settle_ratio=None if fit is None else fit["settle"],
        monotone_fraction=None if fit is None else fit["monotone"],
        loss_decay_exponent_fit=None if fit is None else fit["alpha"],
        loss_fit_rms_log=None if fit is None else fit["fit_rms"],
        loss_coefficient=None if fit is None else fit["c"],
        loss_asymptote_raw=None if fit is None else fit["l_inf_raw"], loss_asymptote_note=note,
        grad_norm_slope=None if fit is None else fit["grad_slope"],
        growth_bound=None if fit is None else fit["growth_bound"],
        remaining_path=None if fit is None else fit["remaining_path"],
        theta_final=np.asarray(theta).tolist(), ode_steps=n_steps, ode_rejected_steps=n_rej,
        seconds=time.perf_counter() - t_start)
    run_params = dict(net.describe(), init_scale=init_scale, seed=seed, N=N, d=d,
                      n_params=int(theta.size), t_max=t_max, t_min=t_min, n_records=n_records,
                      flow_solver=flow_solver, flow_rtol=flow_rtol, flow_atol=flow_atol, newton_rtol=newton_rtol,
                      newton_atol=newton_atol, flow_max_steps=flow_max_steps,
                      time_variable="s = ln(1+t): d theta/ds = -e^s grad L")
    return FlowDivergence(
        times=tuple(rec["t"]), loss=tuple(rec["loss"]), param_norm=tuple(rec["pnorm"]),
        grad_norm=tuple(rec["gnorm"]), verdict=verdict, reason=reason, norm_growth_exponent=beta,
        norm_log_slope=gamma, loss_decay_exponent=alpha, loss_asymptote=l_inf, params=run_params, info=info,
        failed=failure is not None, failure=failure)
