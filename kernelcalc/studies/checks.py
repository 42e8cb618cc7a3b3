r"""Pre-flight checks of a data set against the hypotheses of the Neural-ODE NTK theory.

:func:`check` answers, for data $X\in\mathbb R^{N\times d}$ and an activation $\phi$:

- does $\phi$ satisfy Assumption 1 (see :func:`kernelcalc.analyse`)?
- are the rows on the sphere $\|x\|^2 = d$?
- are the rows distinct, and is any pair parallel ($x_i = \pm x_j$)?
- is the limiting NTK Gram $\Theta^\infty(X, X)$ strictly positive definite:
  $\lambda_{\min} > \texttt{singular\_tol}$, and how well conditioned is it?
- with ``certify=True``: a *proven* lower bound ``lambda_min_certified`` on $\lambda_{\min}$
  (:mod:`kernelcalc.studies.certify`: verified Cholesky plus the Gram's entrywise error bound);
- the step size of Theorem 2 of Gao et al., $\eta = 1/\|X\|_2^2$ ($\|X\|_2$ the spectral
  norm of the data matrix), and the predicted per-step contraction of the training loss
  $1 - \eta\,\lambda_{\min}$.

Example::

    >>> import numpy as np, kernelcalc
    >>> X = kernelcalc.data.sphere_normalise(np.random.default_rng(0).normal(size=(5, 3)))
    >>> rep = kernelcalc.check(X, activation="softplus")      # doctest: +SKIP
    >>> rep.ok, rep.lambda_min > 0                            # doctest: +SKIP
    (True, True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from .._x64 import float64
from .._results import JsonResult, jsonable

from .._validation import (KernelcalcInputError, as_inputs, nonnegative, positive, positive_int, renamed_keywords,
                           scale_keywords, warn)
from ..theory.activations import resolve_activation

__all__ = ["CheckReport", "GramSummary", "check", "gram_summary", "GRAM_MODES"]

#: Values of ``check(..., gram=...)``: compute the NTK Gram only while no other check has failed
#: (default), or always.
GRAM_MODES = ("if_applicable", "always")

#: Two rows are "parallel" when $|\cos\angle(x_i, x_j)| \ge 1 - $ this.
PARALLEL_COS_TOL = 1e-10
#: Two rows are duplicates when $\|x_i - x_j\| \le$ this times $(1 + \max_k\|x_k\|)$.
DUPLICATE_RTOL = 1e-12


@dataclasses.dataclass(frozen=True)
class GramSummary:
    r"""Entry and spectrum statistics of a symmetric Gram matrix $K$ (``N x N``).

    ``condition_number`` is $\lambda_{\max}/\lambda_{\min}$, or ``inf`` when
    $\lambda_{\min}\le 0$ or within its error bound of 0 (the Gram is singular).
    """

    n: int
    min_entry: float
    max_entry: float
    mean_entry: float
    lambda_min: float
    lambda_max: float
    condition_number: float
    lambda_min_error_bound: float = math.nan
    lambda_max_error_bound: float = math.nan

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))


def gram_summary(K) -> GramSummary:
    r""":class:`GramSummary` of a symmetric matrix; $\lambda_{\min}$, $\lambda_{\max}$ from
    :func:`kernelcalc.studies.spectrum.spectrum` (with their error bounds)."""
    from .spectrum import spectrum

    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise KernelcalcInputError(f"Gram matrix must be square and non-empty, got shape {K.shape}")
    if not (np.isfinite(K.max()) and np.isfinite(K.min())):
        raise KernelcalcInputError("Gram matrix contains NaN or inf")
    low, high = spectrum(K, 1, "smallest"), spectrum(K, 1, "largest")
    lmin, lmax = float(low.values[0]), float(high.values[0])
    # (a lambda_min within its error bound of 0 is 0: duplicate rows, whose x.y/d is exact, gave 9.9e-32 and a
    # condition number 2.9e31 where rounding had given -4.6e-16 and inf)
    singular = not lmin > max(0.0, float(low.error_bound[0]))
    return GramSummary(
        n=int(K.shape[0]), min_entry=float(K.min()), max_entry=float(K.max()), mean_entry=float(K.mean()),
        lambda_min=lmin, lambda_max=lmax, condition_number=math.inf if singular else lmax / lmin,
        lambda_min_error_bound=float(low.error_bound[0]), lambda_max_error_bound=float(high.error_bound[0]))


@dataclasses.dataclass(frozen=True)
class CheckReport(JsonResult):
    r"""Result of :func:`check`. Immutable; :meth:`to_dict` is JSON-serialisable.

    **Fields:**

    - ``model``, ``activation``, ``params``: what was checked (the model's kernel keywords, e.g. ``T``,
      ``sigma_w``, ``sigma_u``, ``sigma_v`` of the Neural ODE, and ``singular_tol``, ``sphere_rtol``);
      ``n``, ``d``: the data shape.
    - ``assumption1``: the :class:`~kernelcalc.theory.assumptions.Assumption1Report`.
    - ``on_sphere``: every row has $|\|x\|^2/d - 1| \le$ ``sphere_rtol``;
      ``sphere_deviation`` is the worst $|\|x\|^2/d - 1|$.
    - ``distinct``: no two rows are equal; ``duplicate_pairs`` lists (up to 10) equal pairs;
      ``min_distance`` is $\min_{i<j}\|x_i - x_j\|$ (``inf`` for one row).
    - ``parallel``: some pair has $x_i = \pm x_j$ up to scale (``parallel_pairs``, up to 10);
      antipodal pairs make the Gram singular for odd or even activations.
    - ``gram``: :class:`GramSummary` of the limiting NTK Gram $\Theta^\infty(X,X)$;
      ``lambda_min``, ``lambda_max``, ``condition_number`` repeat its spectrum. ``None`` when
      the Gram was not computed; then ``gram_skipped`` says why, and ``lambda_min``,
      ``lambda_max``, ``condition_number`` and ``contraction`` are NaN (``null`` in JSON).
    - ``data_norm``: $\|X\|_2$; ``step_size``: $\eta = 1/\|X\|_2^2$;
      ``contraction``: $1 - \eta\lambda_{\min}$, the predicted per-step loss factor.
    - ``lambda_min_certified`` (only with ``certify=True``, else ``None``): $s$ with
      $\lambda_{\min}(\Theta^\infty)\ge s$ proven given the entry radius (may be $\le 0$: not proved);
      ``certificate``: ``"rigorous"`` (identity activation: interval-arithmetic Gram) or
      ``"a-posteriori discretisation estimate"`` (float Gram, $r$ = ``info["error_estimate"]``);
      ``entry_radius``: that $r$; ``certification``: the full
      :class:`~kernelcalc.studies.certify.CertifiedLambdaMin`.
    - ``ok``: no problems; ``problems``: why not; ``warnings``: things worth knowing
      that do not by themselves invalidate the theory's conclusion, including every warning the Gram's
      computation issued (accuracy shortfalls, :class:`~kernelcalc.KernelcalcAccuracyWarning`; they are also
      issued as warnings).
    """

    activation: str
    params: Mapping[str, Any]
    n: int
    d: int
    assumption1: Any
    on_sphere: bool
    sphere_deviation: float
    distinct: bool
    duplicate_pairs: tuple[tuple[int, int], ...]
    min_distance: float
    parallel: bool
    parallel_pairs: tuple[tuple[int, int], ...]
    gram: GramSummary | None
    data_norm: float
    step_size: float
    contraction: float
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    gram_skipped: str | None = None
    certification: Any = None
    model: str = "node"

    @property
    def lambda_min_certified(self) -> float | None:
        return None if self.certification is None else self.certification.lower_bound

    @property
    def certificate(self) -> str | None:
        return None if self.certification is None else self.certification.certificate

    @property
    def entry_radius(self) -> float | None:
        return None if self.certification is None else self.certification.entry_radius

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def lambda_min(self) -> float:
        return math.nan if self.gram is None else self.gram.lambda_min

    @property
    def lambda_max(self) -> float:
        return math.nan if self.gram is None else self.gram.lambda_max

    @property
    def condition_number(self) -> float:
        return math.nan if self.gram is None else self.gram.condition_number

    def to_dict(self) -> dict:
        a1 = self.assumption1
        out = {
            "ok": self.ok, "problems": list(self.problems), "warnings": list(self.warnings),
            "model": self.model, "activation": self.activation, "params": dict(self.params), "n": self.n, "d": self.d,
            "assumption1": a1.to_dict() if hasattr(a1, "to_dict") else str(a1),
            "on_sphere": self.on_sphere, "sphere_deviation": self.sphere_deviation,
            "distinct": self.distinct, "duplicate_pairs": [list(p) for p in self.duplicate_pairs],
            "min_distance": self.min_distance,
            "parallel": self.parallel, "parallel_pairs": [list(p) for p in self.parallel_pairs],
            "gram": None if self.gram is None else self.gram.to_dict(), "gram_skipped": self.gram_skipped,
            "lambda_min": self.lambda_min, "lambda_max": self.lambda_max,
            "condition_number": self.condition_number,
            "data_norm": self.data_norm, "step_size": self.step_size, "contraction": self.contraction,
        }
        if self.certification is not None:
            out.update(lambda_min_certified=self.lambda_min_certified, certificate=self.certificate,
                       entry_radius=self.entry_radius, certification=self.certification.to_dict())
        return _jsonable(out)

    def __str__(self) -> str:
        p = self.params
        yes = {True: "yes", False: "NO"}
        def row(label, value):
            return f"  {label:<27} {value}"

        par = "yes " + str(list(self.parallel_pairs)) if self.parallel else "no"
        lines = [
            f"check: {'' if self.model == 'node' else f'model={self.model}, '}activation={self.activation}, "
            + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items()
                        if k not in ("singular_tol", "sphere_rtol")) + f"; data N={self.n}, d={self.d}",
            "",
            "Assumption 1:",
            *("  " + ln for ln in str(self.assumption1).splitlines()),
            "",
            "Data:",
            row("on sphere |x|^2 = d", f"{yes[self.on_sphere]} (worst |(|x|^2/d) - 1| = {self.sphere_deviation:.3e})"),
            row("distinct rows", f"{yes[self.distinct]} (min pairwise distance {self.min_distance:.6g})"),
            row("parallel pair x = +-y", par),
            "",
            "NTK Gram Theta(X, X):",
            *([row("not computed", " ".join(self.gram_skipped.split()))] if self.gram is None else [
                row("lambda_min", f"{self.lambda_min:.6e}"),
                row("lambda_max", f"{self.lambda_max:.6e}"),
                row("condition number", f"{self.condition_number:.6e}"),
                *self._certificate_rows(row),
                row("entries min / mean / max",
                    f"{self.gram.min_entry:.6g} / {self.gram.mean_entry:.6g} / {self.gram.max_entry:.6g}")]),
            "",
            "Gradient descent (Theorem 2 of Gao et al.):",
            row("||X||_2 (spectral norm)", f"{self.data_norm:.6g}"),
            row("step size eta = 1/||X||_2^2", f"{self.step_size:.6e}"),
            row("contraction 1 - eta*lmin", "not computed (no Gram)" if self.gram is None
                else f"{self.contraction:.12g}"),
            "",
        ]
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.ok:
            lines.append("OK: all checks passed")
        else:
            lines.append("NOT OK:")
            lines.extend(f"  - {msg}" for msg in self.problems)
        return "\n".join(lines)

    def _certificate_rows(self, row) -> list[str]:
        if self.certification is None:
            return []
        c = self.certification
        return [row("lambda_min certified >=", f"{c.lower_bound:.6e} ({c.certificate})"),
                row("  entry radius r, N*r", f"{c.entry_radius:.3e}, {c.perturbation_bound:.3e}"),
                row("  rounding bound", f"{c.rounding_bound:.3e} (verified Cholesky, {c.attempts} tried)")]


#: Kernel keywords that :func:`check` sets itself: the NTK Gram of ``X``, in memory, on ``client``.
_CHECK_SETS = ("outputs", "out", "progress")
#: The models whose theory (Gao et al.: the Neural ODE and its Euler ResNet) has Assumption 1 as a
#: hypothesis: for them a failed Assumption 1 is a problem, for the others (MLP, DEQ) a warning.
ASSUMPTION1_MODELS = ("node", "resnet")


@float64
@renamed_keywords(tol="singular_tol")
@scale_keywords()
def check(X, *, activation, model="node", singular_tol=1e-10, sphere_rtol=1e-8, gram="if_applicable", client=None,
          certify: bool = False, **kernel_args) -> CheckReport:
    r"""Check data ``X`` (N, d) and ``activation`` against the NTK theory of ``model``.

    **Arguments:**

    - ``X``: data matrix, one input per row (finite).
    - ``activation``: name, ``"elu(alpha=0.5)"``, expression in ``x`` or
      :class:`~kernelcalc.Activation`.
    - ``model``: every model with an analytic kernel: ``"node"`` (default; ``weights="untied"``: the
      untied Neural ODE), ``"resnet"`` (also ``weights="untied"``), ``"mlp"``, ``"deq"``.
    - ``kernel_args``: that model's kernel keywords, as in its kernel function
      (:func:`kernelcalc.node_kernel`: ``T``, ``sigma_w``, ``sigma_u``, ``sigma_v``, ``weights``, ...;
      :func:`kernelcalc.mlp_kernel`: ``depth``, ``sigma_w``, ``sigma_b``, ...); one that does not apply
      to the model is an error.  ``outputs``, ``out`` and ``progress`` are check's own business.
    - ``singular_tol``: the NTK Gram counts as singular when $\lambda_{\min}\le$ ``singular_tol``
      (``tol`` is its deprecated name: in :func:`kernelcalc.node_kernel` ``tol`` is the time-discretisation
      accuracy, which ``check`` leaves at node_kernel's default).
    - ``sphere_rtol``: tolerance of the sphere test $|\|x\|^2/d - 1|\le$ ``sphere_rtol``.
    - ``gram``: ``"if_applicable"`` (default) computes the NTK Gram (the expensive part: seconds
      to minutes) only when the cheap checks (Assumption 1, sphere, distinct rows) pass, since
      otherwise the verdict is already "not OK"; the report then has ``gram=None``,
      NaN ``lambda_min`` and the reason in ``gram_skipped``. ``"always"`` computes it anyway.
    - ``certify``: also prove a lower bound on $\lambda_{\min}$ (``report.lambda_min_certified``, see
      :mod:`kernelcalc.studies.certify`); the report is then not ok unless the bound is $> 0$.
      Needs the Gram: with ``gram="if_applicable"`` and a failed cheap check there is no certificate
      (``lambda_min_certified`` is ``None``).
    - ``client``: a ``dask.distributed.Client`` or scheduler address: the NTK Gram's tiles run there.

    Assumption 1 is a hypothesis of the Neural-ODE theory (``model="node"``, ``"resnet"``): there a
    failure is a problem; for ``"mlp"`` and ``"deq"`` it is reported as a warning.

    **Returns:** a :class:`CheckReport`; ``report.ok`` is ``False`` when
    $\lambda_{\min}\le$ ``singular_tol``, Assumption 1 fails (Neural ODE, ResNet), a row is off the
    sphere, two rows are equal, or the Gram cannot be computed (e.g. the variance ODE of an activation
    that grows faster than linearly blows up before ``T``); ``report.problems`` says which. It never
    raises for a failed hypothesis, only for invalid arguments.
    """
    import inspect

    from ..kernels import kernel_function
    from ..kernels._tiles import own_client

    for name in _CHECK_SETS:
        if name in kernel_args:
            raise KernelcalcInputError(f"check computes the NTK Gram of X in memory itself: do not pass {name}=")
    fn = kernel_function(model, kernel_args, where="check")     # a keyword the model does not take: an error
    sig = inspect.signature(fn).parameters
    missing = [n for n, p in sig.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "activation"
               and p.default is inspect.Parameter.empty and n not in kernel_args]
    if missing:
        raise KernelcalcInputError(f"check(model={model!r}) needs {', '.join(f'{n}=' for n in missing)} "
                                   f"(as {fn.__name__} does)")
    # the model's parameters as the report records them: the horizon's default, then what was passed
    model_params = {**({"T": sig["T"].default} if "T" in sig else {}), **kernel_args}
    if "T" in model_params:
        model_params["T"] = positive("T", model_params["T"])
    if "depth" in model_params:
        model_params["depth"] = positive_int("depth", model_params["depth"])
    # an unreachable scheduler is an input error, not a failed check; a client opened here is closed here
    with own_client(client) as client:
        return _check(X, activation=activation, model=model, kernel=fn, model_params=model_params,
                      singular_tol=singular_tol, sphere_rtol=sphere_rtol, gram=gram, client=client, certify=certify)


def _check(X, *, activation, model, kernel, model_params, singular_tol, sphere_rtol, gram, client,
           certify) -> CheckReport:
    """The body of :func:`check` (``kernel``: the model's kernel function; ``client``: ``None`` or a
    connected ``Client``)."""
    import warnings as _warnings

    from ..theory.assumptions import Assumption1Warning, analyse

    if not isinstance(certify, (bool, np.bool_)):
        raise KernelcalcInputError(f"certify must be True or False, got {certify!r}")
    dtype = getattr(X, "dtype", None)
    X = as_inputs(X, "X")
    act = resolve_activation(activation)
    params = {**model_params,
              "singular_tol": nonnegative("singular_tol", singular_tol), "sphere_rtol": nonnegative("sphere_rtol", sphere_rtol)}
    if not isinstance(gram, str) or gram not in GRAM_MODES:
        raise KernelcalcInputError(f"gram must be one of {GRAM_MODES}, got {gram!r}")
    n, d = X.shape
    problems: list[str] = []
    warnings: list[str] = []

    # --- Assumption 1
    a1 = analyse(act)
    holds = getattr(a1, "holds", None)
    if holds is False and model not in ASSUMPTION1_MODELS:
        summary = getattr(a1, "summary", None) or "see the Assumption-1 report"
        warnings.append(f"activation {act.name} fails Assumption 1 (a hypothesis of the Neural-ODE theory, "
                        f"not of model={model!r}): {summary}")
    elif holds is False:
        summary = getattr(a1, "summary", None) or "see the Assumption-1 report"
        problems.append(f"activation {act.name} fails Assumption 1: {summary}")
    elif holds is None:
        warnings.append(f"Assumption 1 could not be decided for {act.name}")

    # --- sphere, distinct / parallel
    sphere_deviation = float(np.max(np.abs(np.einsum("ij,ij->i", X, X) / d - 1.0)))
    on_sphere = bool(sphere_deviation <= params["sphere_rtol"])
    dup, par, min_dist = _pairs(X)
    problems.extend(data_problems(X, sphere_rtol=params["sphere_rtol"], dtype=dtype, pairs=(dup, par, min_dist)))
    antipodal = [p for p in par if p not in set(dup)]
    if antipodal:
        warnings.append(f"parallel rows x_i = -x_j (or a multiple): {antipodal[:5]}; the Gram is singular "
                        "for odd or even activations")

    # --- NTK Gram spectrum (skipped when the verdict is already decided, unless gram="always")
    gram_info, skipped = None, None
    if gram == "if_applicable" and problems:
        skipped = ("skipped because the verdict is already NOT OK (" + "; ".join(p.split(":")[0] for p in problems)
                   + "); pass gram='always' (CLI: --gram always) to compute it")
    else:
        try:
            # the accuracy warnings of the computation go into the report (and are issued again below, so the
            # user still sees them); Assumption 1 is reported in ``problems`` already
            with _warnings.catch_warnings(record=True) as caught:
                _warnings.simplefilter("always")
                _warnings.simplefilter("ignore", Assumption1Warning)
                K = kernel(X, activation=act, **model_params, outputs=("ntk",),
                           **({} if client is None else dict(client=client)))
            gram_info = gram_summary(K.ntk)
        except KernelcalcInputError as err:  # e.g. the variance ODE blows up before T
            skipped = f"the NTK Gram could not be computed: {err}"
            problems.append(skipped)
        for w in caught:
            if str(w.message) not in warnings:
                warnings.append(str(w.message))
            warn(str(w.message), w.category)
    if gram_info is not None and not gram_info.lambda_min > params["singular_tol"]:
        # Weyl: the eigenvalues of the computed Gram lie within ||E||_2 <= n max|E_ij| of the exact ones
        bound = max(gram_info.lambda_min_error_bound, n * float(K.info.get("error_estimate") or 0.0))
        if dup:
            problems.append(f"NTK Gram is not strictly positive definite: lambda_min = {gram_info.lambda_min:.3e} "
                            f"(it is singular: rows {dup[0][0]} and {dup[0][1]} are equal)")
        elif abs(gram_info.lambda_min) <= bound:
            problems.append(f"NTK Gram is numerically singular: lambda_min = {gram_info.lambda_min:.3e} is within its "
                            f"error bound {bound:.1e} of 0 (<= singular_tol = {params['singular_tol']:g}); this does not "
                            "prove that the Gram is singular (certify=True / --certify gives a proven lower bound)")
        else:
            problems.append(f"NTK Gram is not strictly positive definite to singular_tol: lambda_min = "
                            f"{gram_info.lambda_min:.3e} <= singular_tol = {params['singular_tol']:g} (error bound "
                            f"{bound:.1e})")
    certification = (_certify(X, act, model, model_params, K, gram_info) if certify and gram_info is not None
                     else None)
    if certification is not None and not certification.positive_definite:
        problems.append(f"lambda_min > 0 is not proved: certified lower bound {certification.lower_bound:.3e} "
                        f"({certification.certificate}, entry radius {certification.entry_radius:.1e})")
    lambda_min = math.nan if gram_info is None else gram_info.lambda_min

    # --- Theorem 2 step size and contraction
    data_norm = float(np.linalg.norm(X, 2))
    step = 1.0 / data_norm**2
    return CheckReport(
        activation=act.name, params=params, n=n, d=d, assumption1=a1,
        on_sphere=on_sphere, sphere_deviation=sphere_deviation,
        distinct=not dup, duplicate_pairs=tuple(dup[:10]), min_distance=min_dist,
        parallel=bool(par), parallel_pairs=tuple(par[:10]),
        gram=gram_info, data_norm=data_norm, step_size=step, contraction=1.0 - step * lambda_min,
        problems=tuple(problems), warnings=tuple(warnings), gram_skipped=skipped,
        certification=certification, model=model)


def _certify(X, act, model, model_params, K, gram):
    """Certified lambda_min of the NTK Gram: rigorous (arb) for the closed forms (identity Neural ODE,
    relu/erf MLP), else against the float Gram ``K`` and its ``info["error_estimate"]`` (see
    :func:`kernelcalc.studies.certify.certify_ntk`)."""
    from .certify import certify_ntk

    return certify_ntk(X, model=model, activation=act, kernel=K, lambda_estimate=gram.lambda_min, **model_params)


def data_problems(X, *, sphere_rtol: float = 1e-8, dtype=None, pairs=None) -> tuple[str, ...]:
    r"""What is wrong with data ``X`` (N, d) for the sphere theory, one line each: rows off the sphere
    $|\|x\|^2/d-1|>$ ``sphere_rtol`` (the worst row and its deviation; float32 data is named, with the remedy)
    and duplicate rows (the NTK Gram is then singular).  Shared by :func:`check` and ``kernelcalc limit --data``.

    ``dtype``: the data's dtype before conversion to float64, if known; ``pairs``: :func:`_pairs` of ``X``
    when already computed."""
    X = np.asarray(X, dtype=np.float64)
    d = X.shape[1]
    out = []
    sq = np.einsum("ij,ij->i", X, X)
    dev = sq / d - 1.0
    i = int(np.argmax(np.abs(dev)))
    if not abs(dev[i]) <= sphere_rtol:
        single = dtype is not None and np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float16))
        hint = (f"the data is {np.dtype(dtype).name}, whose rounding alone is ~{np.finfo(dtype).eps:.0e}: pass float64 "
                "data (kernelcalc.data.sphere_normalise in float64) or raise sphere_rtol (CLI: --sphere-rtol)"
                if single else "use kernelcalc.data.sphere_normalise, or raise sphere_rtol (CLI: --sphere-rtol)")
        out.append(f"data not on the sphere |x|^2 = d = {d}: row {i} has |x|^2/d - 1 = {dev[i]:.2e} (|x|^2 = "
                   f"{sq[i]:.17g}), beyond sphere_rtol = {sphere_rtol:g}; {hint}")
    dup = (pairs or _pairs(X))[0]
    if dup:
        out.append(f"duplicate rows {', '.join(f'{i}={j}' for i, j in dup[:5])}"
                   f"{' ...' if len(dup) > 5 else ''} (the NTK Gram is singular)")
    return tuple(out)


def _pairs(X: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]], float]:
    """(duplicate pairs, parallel pairs incl. duplicates, min pairwise distance), pairs i < j.

    Works in row blocks so memory stays O(block * N); distances come from exact differences
    (``cdist``), so near-duplicates are not lost to cancellation.
    """
    n = X.shape[0]
    if n < 2:
        return [], [], math.inf
    from scipy.spatial.distance import cdist

    norms = np.linalg.norm(X, axis=1)
    dup_tol = DUPLICATE_RTOL * (1.0 + float(norms.max()))
    block = max(1, (1 << 22) // n)
    dup: list[tuple[int, int]] = []
    par: list[tuple[int, int]] = []
    min_dist = math.inf
    cols = np.arange(n)
    for a in range(0, n, block):
        rows = np.arange(a, min(a + block, n))
        upper = cols[None, :] > rows[:, None]
        dist = cdist(X[rows], X)
        if upper.any():
            min_dist = min(min_dist, float(dist[upper].min()))
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.nan_to_num((X[rows] @ X.T) / np.outer(norms[rows], norms))
        is_dup = upper & (dist <= dup_tol)
        is_par = upper & ((np.abs(cos) >= 1.0 - PARALLEL_COS_TOL) | is_dup)
        dup += [(int(rows[i]), int(j)) for i, j in np.argwhere(is_dup)]
        par += [(int(rows[i]), int(j)) for i, j in np.argwhere(is_par)]
    return dup, par, min_dist


_jsonable = jsonable  # one JSON conversion for every result type
