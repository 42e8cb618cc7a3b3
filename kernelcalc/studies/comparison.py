r"""Tied vs untied vs discrete vs implicit depth on the same data: :func:`compare_models`.

For one activation and horizon $T$ it computes, with the same $(\sigma_w,\sigma_u,\sigma_v)$:

- ``node``: the weight-tied Neural ODE (:func:`kernelcalc.node_kernel`);
- ``node_untied``: the untied Neural ODE $dh=\sigma_w dB_t\phi(h)/\sqrt n$ (``weights="untied"``);
- ``resnet``: the weight-tied Euler ResNet of depth $L$; ``resnet_untied``: the untied ResNet with
  $\sqrt{T/L}$ branches (:func:`kernelcalc.resnet_kernel`);
- ``deq``: the equilibrium model (:func:`kernelcalc.deq_kernel`, bias ``sigma_b``).

and reports the NNGP and NTK against the correlation $\rho=x\cdot y/d$ on the sphere $x\cdot x/d=1$,
and $\lambda_{\min}$ and the condition number $\lambda_{\max}/\lambda_{\min}$ of the NTK Gram on inputs ``X``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._x64 import float64
from .._validation import as_inputs, positive, positive_int, scale_keywords
from .._results import JsonResult

__all__ = ["compare_models", "ModelComparison", "MODEL_LABELS", "plot_model_comparison"]

MODEL_LABELS = {"node": "tied ODE", "node_untied": "untied ODE", "resnet": "tied ResNet-{L}",
                "resnet_untied": "untied ResNet-{L}", "deq": "DEQ"}


@dataclasses.dataclass(frozen=True)
class ModelComparison(JsonResult):
    """Result of :func:`compare_models`.

    **Fields:** ``models`` (keys of :data:`MODEL_LABELS`), ``labels``; ``rho`` (the grid);
    ``nngp``, ``ntk``: per model the kernel at each $\\rho$; ``lambda_min``, ``lambda_max``,
    ``condition``: per model, of the NTK Gram on the data; ``params``.
    """

    models: tuple
    labels: tuple
    rho: tuple
    nngp: dict
    ntk: dict
    lambda_min: dict
    lambda_max: dict
    condition: dict
    params: dict

    def table(self) -> str:
        picks = [i for i, r in enumerate(self.rho) if np.any(np.isclose(r, (-1, -0.5, 0, 0.5, 0.9, 1)))]
        head = f"{'model':>18} " + " ".join(f"{'NTK(' + format(self.rho[i], '.2g') + ')':>10}" for i in picks) + \
            f" {'NNGP(1)':>10} {'lambda_min':>11} {'cond':>10}"
        lines = [head, "-" * len(head)]
        for m, lab in zip(self.models, self.labels):
            lines.append(f"{lab:>18} " + " ".join(f"{self.ntk[m][i]:>10.4f}" for i in picks) +
                         f" {self.nngp[m][-1]:>10.4f} {self.lambda_min[m]:>11.4e} {self.condition[m]:>10.3e}")
        p = self.params
        lines.append(f"activation {p['activation']}, T = {p['T']:g}, depth L = {p['depth']}, sigma_w = {p['sigma_w']:g}, "
                     f"sigma_u = {p['sigma_u']:g}, sigma_v = {p['sigma_v']:g}; Gram on {p['n_inputs']} inputs of dim {p['dim']}")
        return "\n".join(lines)


@float64
@scale_keywords("deq", label="compare_models (tied/untied Neural ODE and ResNet, DEQ)")
def compare_models(X, *, activation, T=1.0, depth=8, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, sigma_b=0.0,
                   n_rho: int = 41) -> ModelComparison:
    r"""Kernels of the five depth models (module docstring) on a $\rho$ grid and on the data ``X``.

    **Arguments:** ``X`` (N, d) inputs for the Gram; ``activation``; ``T`` > 0; ``depth`` $L$ of
    both ResNets; ``sigma_w, sigma_u, sigma_v`` > 0 (shared), ``sigma_b`` >= 0 (DEQ bias);
    ``n_rho`` >= 3 grid points in $\rho\in[-1,1]$.

    **Returns:** :class:`ModelComparison` (``.table()``, ``.to_json()``).
    """
    from .. import kernels as kc
    from ..theory.activations import resolve_activation

    X = as_inputs(X, "X")
    T, sw, su, sv = positive("T", T), sigma_w, sigma_u, sigma_v      # the scales: @scale_keywords
    depth = positive_int("depth", depth)
    n_rho = positive_int("n_rho", n_rho, minimum=3)
    rho = np.unique(np.round(np.concatenate([np.linspace(-1, 1, n_rho), [-0.5, 0.0, 0.5, 0.9]]), 12))
    th = np.arccos(rho)
    grid = np.sqrt(2.0) * np.stack([np.cos(th), np.sin(th)], axis=1)         # x.x/2 = 1, x.y/2 = rho
    x0 = np.array([[np.sqrt(2.0), 0.0]])
    common = dict(activation=activation, sigma_w=sw, sigma_u=su, sigma_v=sv)
    fns = {
        "node": lambda a, b: kc.node_kernel(a, b, T=T, **common),
        "node_untied": lambda a, b: kc.node_kernel(a, b, T=T, weights="untied", **common),
        "resnet": lambda a, b: kc.resnet_kernel(a, b, T=T, depth=depth, **common),
        "resnet_untied": lambda a, b: kc.resnet_kernel(a, b, T=T, depth=depth, weights="untied", **common),
        "deq": lambda a, b: kc.deq_kernel(a, b, sigma_b=sigma_b, **common),
    }
    nngp, ntk, lmin, lmax, cond = {}, {}, {}, {}, {}
    for m, fn in fns.items():
        k = fn(x0, grid)
        nngp[m], ntk[m] = k.nngp[0].tolist(), k.ntk[0].tolist()
        ev = np.linalg.eigvalsh(fn(X, None).ntk)
        lmin[m], lmax[m] = float(ev[0]), float(ev[-1])
        cond[m] = float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")
    labels = tuple(MODEL_LABELS[m].format(L=depth) for m in fns)
    act = resolve_activation(activation).name
    params = dict(activation=act, T=T, depth=depth, sigma_w=sw, sigma_u=su, sigma_v=sv, sigma_b=sigma_b,
                  n_inputs=int(X.shape[0]), dim=int(X.shape[1]))
    return ModelComparison(models=tuple(fns), labels=labels, rho=tuple(rho.tolist()), nngp=nngp, ntk=ntk,
                           lambda_min=lmin, lambda_max=lmax, condition=cond, params=params)


def plot_model_comparison(res: ModelComparison, path: str) -> None:
    """PNG: NNGP and NTK against rho (one line per model) and lambda_min / condition number bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for m, lab in zip(res.models, res.labels):
        style = "--" if "untied" in m else ("-." if m == "deq" else "-")
        ax[0].plot(res.rho, res.nngp[m], style, label=lab)
        ax[1].plot(res.rho, res.ntk[m], style, label=lab)
    for a, name in zip(ax[:2], ("NNGP", "NTK")):
        a.set_xlabel(r"$\rho = x\cdot y/d$ (on $x\cdot x/d=1$)")
        a.set_title(f"{name}, {res.params['activation']}, T = {res.params['T']:g}")
        a.grid(alpha=0.3)
    ax[0].legend()
    pos = np.arange(len(res.models))
    ax[2].bar(pos - 0.2, [res.lambda_min[m] for m in res.models], 0.4, label=r"$\lambda_{\min}$")
    ax2 = ax[2].twinx()
    ax2.bar(pos + 0.2, [res.condition[m] for m in res.models], 0.4, color="C3", label="condition number")
    ax[2].set_xticks(pos, res.labels, rotation=25, ha="right")
    ax[2].set_ylabel(r"$\lambda_{\min}$ of the NTK Gram")
    ax2.set_ylabel("condition number", color="C3")
    ax[2].set_title(f"NTK Gram on {res.params['n_inputs']} inputs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
