r"""Monte Carlo over random initialisations, and the analytic-vs-empirical comparison.

:func:`monte_carlo` averages $f(x)f(y)$ (-> NNGP) and the empirical NTK over ``n_samples``
independent networks and attaches standard errors.  :func:`compare` does this for several
widths, sets the result against the analytic kernel (:func:`kernelcalc.node_kernel`,
:func:`~kernelcalc.resnet_kernel` or :func:`~kernelcalc.mlp_kernel`) entry by entry (value,
s.e., relative error, z-score) and fits the slope of the NTK error against width: one network's
NTK fluctuates around the limit with standard deviation $O(n^{-1/2})$, so the root-mean-square
relative error of single-network NTKs should have slope $\approx -1/2$ in log-log.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .._x64 import float64
from .._validation import (DEFAULT_WIDTH, SCALE_NAMES, KernelcalcInputError, as_input_pair, positive_int,
                          progress_disable, renamed_keywords, scale_keywords)
from .._results import JsonResult, Kernel, jsonable as _jsonable, text_table
from .models import init_params, make_network
from ..theory.assumptions import Assumption1Warning
from .ntk import METHODS, flow_guard, network_ntk, require_finite, warn_assumption1

__all__ = ["monte_carlo", "compare", "Comparison", "fit_slope", "fit_line"]


def fit_line(x, y):
    r"""Least-squares line $y\approx mx+b$ over the finite points: ``(m, b, rms residual)``.

    ``(None, None, None)`` when fewer than two finite points or all $x$ equal.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return None, None, None
    slope, icpt = np.polyfit(x[ok], y[ok], 1)
    rms = float(np.sqrt(np.mean((y[ok] - slope * x[ok] - icpt) ** 2)))
    return float(slope), float(icpt), rms


def fit_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (NaN when fewer than two positive points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    slope = fit_line(np.log(x[ok]), np.log(y[ok]))[0]
    return float("nan") if slope is None else slope


def _network_kwargs(kw: dict) -> dict:
    names = ("T", "depth", "sigma_w", "sigma_u", "sigma_v", "sigma_b", "sigma_vb",
             "solver", "solver_steps", "rtol", "atol", "gradient")
    unknown = set(kw) - set(names)
    if unknown:
        raise KernelcalcInputError(f"unknown argument(s) {sorted(unknown)}; allowed: {list(names)}")
    return kw


def _samples(a, b, same, *, model, activation, width, n_samples, seed, method, quad_nodes, progress,
             desc=None, **kw):
    """Per-network ``f(x)f(y)`` and NTK, stacked: two arrays of shape (n_samples, N1, N2)."""
    net = make_network(model, activation=activation, width=width, **_network_kwargs(kw))
    n_samples = positive_int("n_samples", n_samples)
    seed = positive_int("seed", seed, minimum=0)
    if method not in METHODS:
        raise KernelcalcInputError(f"method must be one of {METHODS}, got {method!r}")
    quad_nodes = positive_int("quad_nodes", quad_nodes)
    xa, xb = jnp.asarray(a), None if same else jnp.asarray(b)
    keys = jax.random.split(jax.random.PRNGKey(seed), n_samples)
    prods, ntks = [], []
    bar = tqdm(keys, desc=desc or f"{model} width={width}", disable=progress_disable(progress), leave=False)
    for s, k in enumerate(bar):
        params = init_params(k, net, a.shape[1])
        where = f"{seed}, sample {s}"
        with flow_guard(net, where):
            f1, f2, theta = (np.asarray(v) for v in network_ntk(params, xa, xb, net, method, quad_nodes))
        require_finite(net, f1, f2, theta, where)
        prods.append(np.outer(f1, f2))
        ntks.append(theta)
    return net, np.stack(prods), np.stack(ntks)


def _mean_se(samples):
    s = samples.shape[0]
    se = samples.std(axis=0, ddof=1) / math.sqrt(s) if s > 1 else np.full(samples.shape[1:], np.nan)
    return samples.mean(axis=0), se


@float64
@renamed_keywords(steps="solver_steps")
@scale_keywords()
def monte_carlo(x1, x2=None, *, model="node", activation, width=DEFAULT_WIDTH, n_samples=20, seed=0,
                method="structured", quad_nodes=32, progress=None, **kwargs) -> Kernel:
    r"""Monte-Carlo NNGP and NTK of finite-width networks, with standard errors.

    **Arguments:** as :func:`kernelcalc.empirical_ntk` (``model``, ``activation``, ``width``,
    ``T``, ``depth``, the model's scales ``sigma_*`` (``docs/naming.md``), NODE ``solver``/``solver_steps``/``rtol``/``atol``/
    ``gradient``, ``method``), plus ``n_samples`` independent networks drawn from ``seed``
    and ``progress`` (a tqdm bar over the samples: ``None`` auto, ``True``, ``False``).

    **Returns:** a :class:`~kernelcalc.Kernel` with ``nngp`` $=\overline{f(x_i)f(y_j)}$ and
    ``ntk`` $=\overline{\Theta(x_i,y_j)}$ (sample means) and ``stderr`` a :class:`Kernel` of their
    standard errors (sample std / $\sqrt{S}$).  ``info["ntk_rms_dev"]`` is the per-network
    standard deviation of the NTK.
    """
    a, b, same = as_input_pair(x1, x2)
    warn_assumption1(make_network(model, activation=activation, width=width, **_network_kwargs(dict(kwargs))),
                     "monte_carlo")
    net, prods, ntks = _samples(a, b, same, model=model, activation=activation, width=width,
                                n_samples=n_samples, seed=seed, method=method, quad_nodes=quad_nodes,
                                progress=progress, **kwargs)
    nngp, nngp_se = _mean_se(prods)
    ntk, ntk_se = _mean_se(ntks)
    meta = dict(model=f"montecarlo:{model}", activation=net.activation.name,
                params=dict(net.describe(), n_samples=int(n_samples), seed=int(seed)))
    return Kernel(nngp=nngp, ntk=ntk, info={"method": method, "ntk_std": ntks.std(axis=0, ddof=1)
                                            if n_samples > 1 else np.zeros_like(ntk)},
                  stderr=Kernel(nngp=nngp_se, ntk=ntk_se, **meta), **meta)


# ----------------------------------------------------------------------------- comparison
def _analytic(a, b, same, model, activation, kw):
    from ..kernels import model_kernel

    scales = {k: v for k, v in kw.items() if k in SCALE_NAMES}
    return model_kernel(a, None if same else b, model=model, activation=activation, T=kw.get("T", 1.0),
                        depth=kw.get("depth"), **scales)


@dataclasses.dataclass(frozen=True)
class Comparison(JsonResult):
    """Result of :func:`compare`: analytic kernel, Monte-Carlo kernels per width, the entry table and fits.

    ``rows``: one dict per (width, kernel, i, j) with ``analytic``, ``empirical``, ``se``,
    ``rel_err``, ``z``.  ``widths``, ``ntk_rms_rel_err`` (per width: RMS over networks and
    entries of $(\\Theta_s-\\Theta_\\infty)/|\\Theta_\\infty|$), ``ntk_mean_rel_err`` (per width:
    RMS relative error of the Monte-Carlo mean), ``slope`` (fit of ``ntk_rms_rel_err`` vs
    width; theory $-1/2$), ``max_abs_z`` per width and kernel.
    """

    analytic: Kernel
    empirical: tuple
    widths: tuple
    rows: tuple
    ntk_rms_rel_err: tuple
    ntk_mean_rel_err: tuple
    slope: float
    max_abs_z: dict
    params: dict

    def table(self) -> str:
        """The entry table as fixed-width text."""
        cols = [("width", 6, ""), ("kernel", 5, ""), ("i", 3, ""), ("j", 3, ""), ("analytic", 12, ".6f"),
                ("empirical", 12, ".6f"), ("s.e.", 10, ".2e"), ("rel.err", 9, ".2e"), ("z", 7, ".2f")]
        keys = ("width", "kernel", "i", "j", "analytic", "empirical", "se", "rel_err", "z")
        lines = text_table(cols, ([r[k] for k in keys] for r in self.rows))
        lines.append("")
        lines.append(f"{'width':>6} {'NTK rms rel.err (1 net)':>24} {'NTK rel.err of mean':>20} "
                     f"{'max|z| ntk':>10} {'max|z| nngp':>11}")
        for w, e, m in zip(self.widths, self.ntk_rms_rel_err, self.ntk_mean_rel_err):
            lines.append(f"{w:>6} {e:>24.3e} {m:>20.3e} {self.max_abs_z['ntk'][str(w)]:>10.2f} "
                         f"{self.max_abs_z['nngp'][str(w)]:>11.2f}")
        lines.append(f"fitted slope of NTK error vs width: {self.slope:+.3f}  (theory -0.5)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return _jsonable({
            "params": self.params, "widths": list(self.widths), "rows": list(self.rows),
            "ntk_rms_rel_err": list(self.ntk_rms_rel_err), "ntk_mean_rel_err": list(self.ntk_mean_rel_err),
            "slope": self.slope, "max_abs_z": self.max_abs_z, "analytic": self.analytic.to_dict(),
            "empirical": [k.to_dict() for k in self.empirical],
        })


@float64
@renamed_keywords(steps="solver_steps")
@scale_keywords(model_defaults=dict(T=1.0))
def compare(X, *, activation, T=None, widths: Sequence[int] = (64, 256, 1024), n_samples=20, model="node",
            seed=0, method="structured", quad_nodes=32, progress=None, analytic: Kernel | None = None,
            **kwargs) -> Comparison:
    r"""Analytic vs Monte-Carlo kernels on the inputs ``X`` for several widths.

    **Arguments:** ``X`` (N, d); ``activation``; ``T`` (the ODE models and ResNets; default ``None``: 1.0, an
    error for another model); ``widths`` (ints >= 1);
    ``n_samples`` networks per width; ``model`` (``"node"``, ``"resnet"``, ``"mlp"``, ...) and the
    model's parameters (its scales: ``docs/naming.md``) as in :func:`kernelcalc.empirical_ntk`; ``analytic``: a precomputed
    analytic :class:`Kernel` (default: computed here); ``progress``: tqdm bars (``None``: auto, when
    stderr is a terminal; ``True``; ``False``).

    **Returns:** a :class:`Comparison` (``.table()``, ``.to_json()``, ``.slope``).
    """
    a, _, _ = as_input_pair(X)
    if isinstance(widths, (int, np.integer)):
        widths = [widths]
    try:
        widths = [positive_int("widths", w) for w in widths]
    except TypeError:
        raise KernelcalcInputError(f"widths must be a sequence of integers >= 1, got {widths!r}") from None
    if not widths:
        raise KernelcalcInputError("widths must not be empty")
    kw: dict[str, Any] = dict(kwargs)
    if model in ("node", "resnet", "node_untied", "resnet_untied"):
        kw["T"] = T
    net0 = make_network(model, activation=activation, width=widths[0], **_network_kwargs(kw))  # validate early
    warn_assumption1(net0, "compare")
    if analytic is None:
        with warnings.catch_warnings():
            if net0.model in ("node", "resnet"):  # warned once above
                warnings.simplefilter("ignore", Assumption1Warning)
            analytic = _analytic(a, a, True, model, activation, kw)
    iu = np.triu_indices(a.shape[0])
    rows, emp, rms, mean_err = [], [], [], []
    maxz: dict = {"ntk": {}, "nngp": {}}
    for w in tqdm(widths, desc="widths", disable=progress_disable(progress)):
        net, prods, ntks = _samples(a, a, True, model=model, activation=activation, width=w, n_samples=n_samples,
                                    seed=seed, method=method, quad_nodes=quad_nodes, progress=progress, **kw)
        nngp, nngp_se = _mean_se(prods)
        ntk, ntk_se = _mean_se(ntks)
        meta = dict(model=f"montecarlo:{model}", activation=net.activation.name,
                    params=dict(net.describe(), n_samples=int(n_samples), seed=int(seed)))
        emp.append(Kernel(nngp=nngp, ntk=ntk, stderr=Kernel(nngp=nngp_se, ntk=ntk_se, **meta), **meta))
        ref = np.abs(analytic.ntk[iu])
        rms.append(float(np.sqrt(np.mean(((ntks[:, iu[0], iu[1]] - analytic.ntk[iu]) / ref) ** 2))))
        mean_err.append(float(np.sqrt(np.mean(((ntk[iu] - analytic.ntk[iu]) / ref) ** 2))))
        for name, val, se, ana in (("ntk", ntk, ntk_se, analytic.ntk), ("nngp", nngp, nngp_se, analytic.nngp)):
            zs = []
            for i, j in zip(*iu):
                z = (val[i, j] - ana[i, j]) / se[i, j] if se[i, j] > 0 else float("nan")
                zs.append(abs(z))
                rows.append({"width": w, "kernel": name, "i": int(i), "j": int(j), "analytic": float(ana[i, j]),
                             "empirical": float(val[i, j]), "se": float(se[i, j]),
                             "rel_err": float(abs(val[i, j] - ana[i, j]) / abs(ana[i, j])) if ana[i, j] else float("nan"),
                             "z": float(z)})
            maxz[name][str(w)] = float(np.nanmax(zs)) if np.isfinite(zs).any() else float("nan")
    params = dict(model=model, activation=analytic.activation, widths=widths, n_samples=int(n_samples),
                  seed=int(seed), method=method, **{k: v for k, v in kw.items()})
    return Comparison(analytic=analytic, empirical=tuple(emp), widths=tuple(widths), rows=tuple(rows),
                      ntk_rms_rel_err=tuple(rms), ntk_mean_rel_err=tuple(mean_err),
                      slope=fit_slope(widths, rms), max_abs_z=maxz, params=params)
