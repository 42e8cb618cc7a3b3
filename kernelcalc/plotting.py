"""Plots (matplotlib, headless): thin layers over result objects, no maths inside.

Each function takes a result object and a path (or an ``Axes``) and is self-contained.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_compare", "plot_depth_gap", "plot_flow_gap", "plot_training", "plot_width_sweep", "plot_sphere_spectrum"]


def _figure(ax, ncols=1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, [ax]
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.2))
    return fig, list(np.atleast_1d(axes))


def _finish(fig, path):
    """Tight layout; save to ``path`` (PNG, 120 dpi) when given; return the figure."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _fit_line(ax, x, y, slope, **kw):
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (y > 0) & np.isfinite(y)
    if ok.sum() < 2 or not np.isfinite(slope):
        return
    logc = np.mean(np.log(y[ok]) - slope * np.log(x[ok]))
    xs = np.array([x[ok].min(), x[ok].max()])
    ax.plot(xs, np.exp(logc) * xs**slope, "--", **kw)


def plot_compare(comparison, path=None, ax=None):
    """Log-log NTK relative error vs width (single networks and the Monte-Carlo mean) with the fitted slope,
    next to the analytic-vs-empirical NTK/NNGP entries of the widest network (error bars: 1 s.e.)."""
    fig, axes = _figure(ax, ncols=1 if ax is not None else 2)
    w = np.asarray(comparison.widths, float)
    a0 = axes[0]
    a0.loglog(w, comparison.ntk_rms_rel_err, "o-", label=f"one network (slope {comparison.slope:+.2f})")
    a0.loglog(w, comparison.ntk_mean_rel_err, "s-", label="Monte-Carlo mean")
    _fit_line(a0, w, comparison.ntk_rms_rel_err, comparison.slope, color="gray")
    a0.loglog(w, comparison.ntk_rms_rel_err[0] * (w / w[0]) ** -0.5, ":", color="k", label="width$^{-1/2}$")
    a0.set_xlabel("width n")
    a0.set_ylabel("relative NTK error vs analytic")
    a0.set_title(f"{comparison.params.get('model')} / {comparison.analytic.activation}")
    a0.legend(fontsize=8)
    if len(axes) > 1:
        a1 = axes[1]
        wmax = comparison.widths[-1]
        for name, marker in (("ntk", "o"), ("nngp", "s")):
            rows = [r for r in comparison.rows if r["width"] == wmax and r["kernel"] == name]
            a1.errorbar([r["analytic"] for r in rows], [r["empirical"] for r in rows],
                        yerr=[r["se"] for r in rows], fmt=marker, capsize=3, label=name.upper())
        lo, hi = a1.get_xlim()
        a1.plot([lo, hi], [lo, hi], "k:", lw=1)
        a1.set_xlabel("analytic (infinite width)")
        a1.set_ylabel(f"Monte Carlo, width {wmax}")
        a1.legend(fontsize=8)
    return _finish(fig, path)


def plot_depth_gap(result, path=None, ax=None):
    """Log-log output, gradient and kernel gaps of the depth-L ResNet vs the Neural ODE, with fitted slopes."""
    fig, axes = _figure(ax)
    a0 = axes[0]
    L = np.asarray(result.depths, float)
    for key, label, marker in (("output", "$\\|f^L-f\\|$", "o"), ("gradient", "$\\|\\nabla f^L-\\nabla f\\|$", "s"),
                               ("kernel", "$\\|K^L-K\\|$", "^")):
        vals = getattr(result, f"{key}_gap")
        a0.loglog(L, vals, marker + "-", label=f"{label} (slope {result.slopes[key]:+.2f})")
    a0.loglog(L, result.output_gap[0] * (L / L[0]) ** -1.0, ":", color="k", label="$L^{-1}$")
    a0.set_xlabel("depth L")
    a0.set_ylabel("relative gap to the Neural ODE")
    a0.set_title(f"{result.params.get('activation')}, width {result.params.get('width')}")
    a0.legend(fontsize=8)
    return _finish(fig, path)


def plot_flow_gap(result, path=None, ax=None):
    """Loss curves of GD (each step size) and of the gradient flow, next to the log-log gap vs step size
    with the fitted order (explicit Euler: 1)."""
    fig, axes = _figure(ax, ncols=1 if ax is not None else 2)
    t = np.asarray(result.times)
    a0 = axes[0]
    a0.semilogy(t, result.flow_loss, "k-", lw=2, label="gradient flow")
    for lr, curve in zip(result.lrs, result.gd_loss):
        a0.semilogy(t, curve, "o--", ms=3, label=f"GD lr={lr:.3g}")
    a0.set_xlabel("time t = k lr")
    a0.set_ylabel("training loss")
    a0.legend(fontsize=8)
    if len(axes) > 1:
        a1 = axes[1]
        lrs = np.asarray(result.lrs)
        a1.loglog(lrs, result.loss_gap, "o-", label=f"max |L_GD - L_flow|/L0 (p={result.order_loss:.2f})")
        a1.loglog(lrs, result.param_gap, "s-", label=f"max |theta_GD - theta_flow| (p={result.order_param:.2f})")
        _fit_line(a1, lrs, result.param_gap, 1.0, color="gray")
        a1.set_xlabel("step size lr")
        a1.set_ylabel("gap on [0, t_max]")
        a1.legend(fontsize=8)
    return _finish(fig, path)


def plot_training(result, path=None, ax=None):
    """A :class:`~kernelcalc.training.TrainResult`: loss (and test loss) vs the NTK bound, distance from
    initialisation (total and per parameter group), and the NTK drift / lambda_min over training."""
    fig, axes = _figure(ax, ncols=1 if ax is not None else 3)
    s = np.asarray(result.steps_recorded, float)
    a0 = axes[0]
    a0.semilogy(s, result.loss, "-", label="train loss")
    if result.test_loss is not None:
        a0.semilogy(s, result.test_loss, "-", label="test loss")
    if result.bound is not None:
        a0.semilogy(s, result.bound, "--", color="k", label=result.info.get("bound_formula", "bound"))
    if getattr(result, "linear_prediction", None):
        a0.semilogy(s, result.linear_prediction, ":", color="C3",
                    label=f"linearised ({result.linear_prediction_source})")
    a0.axhline(1e-3 * result.loss0, color="gray", lw=0.8, ls=":", label="1e-3 L0")
    p = result.params
    a0.set_title(f"{p['method']} {p['model']}/{p['activation']} n={p['width']}, lr={result.lr:.3g}", fontsize=9)
    a0.set_xlabel("step k")
    a0.set_ylabel("loss")
    a0.legend(fontsize=8)
    if len(axes) > 1:
        a1 = axes[1]
        a1.plot(s, result.dist, "k-", label="total")
        for g, v in result.dist_groups.items():
            a1.plot(s, v, "-", label=g)
        a1.set_xlabel("step k")
        a1.set_ylabel(r"$\|\theta_k-\theta_0\|$")
        a1.legend(fontsize=8)
        a2 = axes[2]
        a2.plot(result.ntk_steps, result.ntk_drift, "o-", label=r"$\|K_k-K_0\|/\|K_0\|$")
        a2.set_xlabel("step k")
        a2.set_ylabel("NTK drift")
        a3 = a2.twinx()
        a3.plot(result.ntk_steps, result.ntk_lambda_min, "s--", color="C1", label=r"$\lambda_{\min}(K_k)$")
        if result.lambda0 is not None:
            a3.axhline(result.lambda0, color="C1", lw=0.8, ls=":", label=r"$\lambda_0$")
        a3.set_ylabel(r"$\lambda_{\min}$")
        a2.legend(loc="upper left", fontsize=8)
        a3.legend(loc="lower right", fontsize=8)
    return _finish(fig, path)


def plot_width_sweep(sweep, path=None, ax=None):
    """A :class:`~kernelcalc.training.WidthSweep`: NTK eigenvalues at init vs those of K_inf, and log-log
    distance from init, relative parameter change and NTK drift vs width (fitted slopes), train vs test loss."""
    fig, axes = _figure(ax, ncols=1 if ax is not None else 3)
    w = np.asarray(sweep.widths, float)
    a0 = axes[0]
    a0.loglog(w, sweep.dist_final, "o-", label=rf"$\|\theta-\theta_0\|$ (slope {sweep.slopes['|theta-theta0|']:+.2f})")
    a0.loglog(w, sweep.ntk_drift, "s-", label=f"NTK drift (slope {sweep.slopes['NTK drift']:+.2f})")
    _fit_line(a0, w, sweep.ntk_drift, sweep.slopes["NTK drift"], color="gray")
    for g, v in sweep.rel_change.items():
        a0.loglog(w, v, "^:", label=f"rel. change {g} ({sweep.slopes['rel change ' + g]:+.2f})")
    a0.set_xlabel("width n")
    a0.legend(fontsize=7)
    if len(axes) > 1:
        a1 = axes[1]
        for i, r in enumerate(sweep.runs):
            a1.semilogy(np.arange(len(r.ntk_eigenvalues_init)), np.sort(r.ntk_eigenvalues_init), "o-", ms=3,
                        label=f"K_0, n={sweep.widths[i]}")
        if sweep.kinf_eigenvalues is not None:
            a1.semilogy(np.arange(len(sweep.kinf_eigenvalues)), np.sort(sweep.kinf_eigenvalues), "k*--",
                        label=r"$K^\infty$")
        a1.set_xlabel("index")
        a1.set_ylabel("NTK eigenvalue at init")
        a1.legend(fontsize=7)
        a2 = axes[2]
        a2.loglog(w, sweep.train_loss, "o-", label="final train loss")
        if sweep.test_loss is not None:
            a2.loglog(w, sweep.test_loss, "s-", label="final test loss")
        a2.set_xlabel("width n")
        a2.legend(fontsize=8)
    return _finish(fig, path)


def plot_horizon(result, path=None, ax=None):
    """A :class:`~kernelcalc.studies.horizon.HorizonSweep`: log-log lambda_min(K_inf) vs the horizon T per activation
    (fitted slope in the legend), next to the predicted GD steps to 1e-3 L0 vs T. Failed entries are gaps."""
    fig, axes = _figure(ax, ncols=1 if ax is not None else 2)
    T = np.asarray(result.Ts, float)
    sw = result.params["sigma_w"]
    scaling = f"sigma_w = {sw:g}/T" if result.params.get("sigma_w_scaling") == "inverse_T" else f"sigma_w = {sw:g}"
    for i, a in enumerate(result.activations):
        lam = np.asarray(result.lambda_min[a], float)
        shown = np.where(lam > 0, lam, np.nan)
        slope = result.slopes[a]
        label = f"{a} (slope {slope:+.2f})" if np.isfinite(slope) else a
        axes[0].loglog(T, shown, "o-", color=f"C{i}", label=label)
        if len(axes) > 1:
            steps = np.asarray(result.steps_to_target[a], float)
            axes[1].loglog(T, np.where(np.isfinite(steps), steps, np.nan), "s-", color=f"C{i}", label=a)
    axes[0].set_xlabel("horizon T")
    axes[0].set_ylabel(r"$\lambda_{\min}(K^\infty)$")
    axes[0].set_title(f"N={result.params['N']}, d={result.params['d']}, {scaling}", fontsize=9)
    axes[0].legend(fontsize=8)
    if len(axes) > 1:
        axes[1].set_xlabel("horizon T")
        axes[1].set_ylabel(f"predicted GD steps to {result.params['target']:g} L0")
        axes[1].set_title(f"lr = {result.params['lr']:.3g}", fontsize=9)
        axes[1].set_xlim(axes[0].get_xlim())     # the same horizons in both panels (no crowded minor-tick labels)
        axes[1].legend(fontsize=8)
    return _finish(fig, path)


__all__ += ["plot_horizon"]


def plot_divergence(result, path=None, ax=None):
    """One or several :class:`~kernelcalc.training.divergence.FlowDivergence` runs on log axes: the loss
    (solid) and |grad L| (dotted) vs t, with the fitted L_inf + c t^-alpha over the final window (dashed), next
    to |theta| vs t with the fitted t^beta (dashed). Each run is labelled with its activation, width and verdict."""
    runs = list(result) if isinstance(result, (list, tuple)) else [result]
    fig, axes = _figure(ax, ncols=1 if ax is not None else 2)
    for k, r in enumerate(runs):
        if not r.times:
            continue
        t, color, p, info = np.asarray(r.times, float), f"C{k}", r.params, r.info
        label = f"{p.get('activation')} n={p.get('width')} N={p.get('N')}: {r.verdict}"
        axes[0].loglog(t, r.loss, "-", color=color, label=label)
        axes[0].loglog(t, r.grad_norm, ":", color=color, lw=1)
        w, c, alpha = info.get("window") or {}, info.get("loss_coefficient"), r.loss_decay_exponent
        if w and c is not None and alpha is not None and r.loss_asymptote is not None:
            ts = np.geomspace(w["t_start"], w["t_end"], 20)
            axes[0].loglog(ts, r.loss_asymptote + c * ts ** -alpha, "--", color="k", lw=1)
        if len(axes) > 1:
            beta = r.norm_growth_exponent
            axes[1].loglog(t, r.param_norm, "-", color=color,
                           label=label + (f", beta={beta:.3f}" if beta is not None and r.verdict != "convergent" else ""))
            if w and beta is not None:
                sel = t >= w["t_start"]
                _fit_line(axes[1], t[sel], np.asarray(r.param_norm)[sel], beta, color="k", lw=1)
    axes[0].set_xlabel("t")
    axes[0].set_ylabel(r"loss $L(\theta(t))$ (solid), $\|\nabla L\|$ (dotted)")
    axes[0].legend(fontsize=7)
    if len(axes) > 1:
        axes[1].set_xlabel("t")
        axes[1].set_ylabel(r"$\|\theta(t)\|$")
        axes[1].legend(fontsize=7)
    return _finish(fig, path)


__all__ += ["plot_divergence"]


def plot_sphere_spectrum(results, path=None, ax=None, kernel="ntk", label=None):
    r"""$\mu_k$ against $k$ on log axes for one or several :class:`~kernelcalc.studies.sphere_spectrum.SphereSpectrum`
    (one curve each; degree 0 is drawn at $k=0.8$ on the log axis).  Unresolved eigenvalues are drawn as
    their bound (open downward triangles, "< bound"), never as numbers.  ``label``: a function of the
    result for the legend (default: the activation)."""
    fig, axes = _figure(ax)
    a = axes[0]
    results = results if isinstance(results, (list, tuple)) else [results]
    for i, res in enumerate(results):
        k = np.maximum(np.asarray(res.degrees, float), 0.8)
        mu = np.asarray(getattr(res, "mu_" + kernel), float)
        err = np.asarray(getattr(res, "err_" + kernel), float)
        ok = np.asarray(getattr(res, "resolved_" + kernel), bool)
        color = f"C{i % 10}"
        pos = ok & (mu > 0)
        a.loglog(k[pos], mu[pos], ".-", color=color, ms=4, lw=0.8, label=label(res) if label else res.activation)
        if (~ok).any():
            a.loglog(k[~ok], err[~ok], "v", color=color, mfc="none", ms=4, alpha=0.6)
    a.set_xlabel("degree k")
    a.set_ylabel(rf"$\mu_k$ ({kernel.upper()}; $\triangledown$: below the error bound)")
    first = results[0]
    a.set_title(f"{first.model} {kernel.upper()} eigenvalues on $S^{{{first.d - 1}}}$")
    a.legend(fontsize=8)
    return _finish(fig, path)
