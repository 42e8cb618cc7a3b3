"""Plots (matplotlib, headless): thin layers over result objects, no maths inside.

Each function takes a result object and a path (or an ``Axes``) and is self-contained.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_compare", "plot_depth_gap"]


def _figure(ax, ncols=1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, [ax]
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.2))
    return fig, list(np.atleast_1d(axes))


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
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


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
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
