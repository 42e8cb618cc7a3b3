"""Prediction command: ``kernelcalc predict``.

A thin layer over :func:`kernelcalc.predict`: the infinite-width network's mean (and, with
``--cov``, its standard deviation over initialisations) on test inputs after training times
``--t``, printed as a table (``--json``: JSON on stdout instead), optional ``--json-out FILE`` and
``--plot FILE``.  Input errors are one ``Error: ...`` line (exit code 2).
"""

from __future__ import annotations

import math
import os

import click
import numpy as np

from kernelcalc.cli import emit, json_options, main
from kernelcalc.cli.analytic import (InputError, OneLineCommand, _MODEL_SCALE_NOTE, _activation_option,
                                     _friendly, _scales, _scheduler_option, scale_options)

__all__ = ["predict_cmd", "plot_prediction"]


def _times(text: str) -> list[float]:
    out = []
    for v in text.replace(" ", "").split(","):
        if not v:
            continue
        try:
            out.append(math.inf if v.lower() in ("inf", "infinity") else float(v))
        except ValueError:
            raise InputError(f"--t must be a comma-separated list of times >= 0 or 'inf', got {text!r}") from None
    if not out:
        raise InputError(f"--t must hold at least one time, got {text!r}")
    return out


def _labels(path) -> np.ndarray:
    """Targets: a 1-D or 2-D ``.npy`` array, or a text file (one row per training point)."""
    from kernelcalc.data import load_array

    if os.fspath(path).lower().endswith(".npy"):
        if not os.path.exists(path):
            raise InputError(f"labels file not found: {path!r}")
        try:
            y = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read labels {path!r}: {err}") from None
        return y
    y = load_array(path)
    return y[:, 0] if y.shape[1] == 1 else y


def plot_prediction(pred, path=None):
    """Mean on the test points (by index) at every time; +-2 s.d. bands when the variances are known."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    idx = np.arange(pred.mean_test.shape[1])
    sd = pred.std_test
    for i, t in enumerate(pred.times):
        lab = "t = inf" if not np.isfinite(t) else f"t = {t:g}"
        line, = ax.plot(idx, pred.mean_test[i, :, 0], "o-", ms=3, label=lab)
        if sd is not None:
            ax.fill_between(idx, pred.mean_test[i, :, 0] - 2 * sd[i], pred.mean_test[i, :, 0] + 2 * sd[i],
                            color=line.get_color(), alpha=0.15)
    ax.set_xlabel("test point")
    ax.set_ylabel("predicted output" + (" (mean +- 2 s.d.)" if sd is not None else " (mean)"))
    ax.set_title(f"infinite-width prediction ({pred.kernel})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _table(pred, limit: int = 20) -> str:
    lines = [f"kernel={pred.kernel}  solver={pred.info.get('solver')}  N_train={pred.info.get('n_train')}  "
             f"N_test={pred.info.get('n_test')}  cond={pred.info.get('condition_number', float('nan')):.3g}  "
             f"error estimate (mean)={pred.info['error_estimate']['mean']:.2e}"]
    head = ["point"] + [("t=inf" if not np.isfinite(t) else f"t={t:g}") for t in pred.times]
    lines.append(" ".join(f"{h:>22}" if i else f"{h:>6}" for i, h in enumerate(head)))
    sd = pred.std_test
    m = pred.mean_test.shape[1]
    for j in range(min(m, limit)):
        cells = []
        for i in range(len(pred.times)):
            cell = f"{pred.mean_test[i, j, 0]:.6g}" + (f" +- {sd[i, j]:.3g}" if sd is not None else "")
            cells.append(f"{cell:>22}")
        lines.append(f"{j:>6} " + " ".join(cells))
    if m > limit:
        lines.append(f"... ({m - limit} more test points: see --json / --json-out)")
    return "\n".join(lines)


@main.command("predict", cls=OneLineCommand,
              short_help="Infinite-width predictions on test inputs after training time t (mean, s.d.).")
@click.option("--train", "train", type=click.Path(dir_okay=False), required=True, metavar="FILE",
              help="Training inputs (N rows of d numbers; .npy/.csv/.txt).")
@click.option("--labels", type=click.Path(dir_okay=False), required=True, metavar="FILE",
              help="Training targets: N numbers or N rows of k numbers (.npy/.csv/.txt).")
@click.option("--test", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Test inputs (M rows of d numbers). Default: predictions on the training inputs only.")
@click.option("--model", type=click.Choice(["node", "resnet", "mlp", "deq", "node_untied", "resnet_untied"]),
              default="node", show_default=True, help="Whose kernel.")
@_activation_option
@click.option("--T", "T", type=float, default=None, help="Time horizon T > 0 (node, resnet; default 1).")
@click.option("--depth", type=int, default=None, help="Depth (resnet, mlp).")
@scale_options(note=_MODEL_SCALE_NOTE)
@click.option("--t", "t", default="inf", show_default=True, metavar="LIST",
              help="Comma-separated training times >= 0; 'inf' = end of training. With --lr: numbers of steps.")
@click.option("--kernel", type=click.Choice(["ntk", "nngp"]), default="ntk", show_default=True,
              help="ntk: gradient descent/flow; nngp: Bayesian posterior.")
@click.option("--lr", type=float, default=None, help="Discrete gradient descent with this step (default: gradient flow).")
@click.option("--diag-reg", type=float, default=0.0, show_default=True, help="Added to the train Gram's diagonal.")
@click.option("--cov", "cov", is_flag=True, help="Also the variances over initialisations (diagonal covariance).")
@json_options
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: mean (+- 2 s.d. with --cov) on each test point at each time.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_scheduler_option
@_friendly
def predict_cmd(train, labels, test, model, activation, T, depth, sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb, t,
                kernel, lr, diag_reg, cov, as_json, json_out, plot_path, quiet, scheduler):
    """Mean (and with --cov the standard deviation over random initialisations) of the trained
    infinite-width network on the test inputs, at each training time t (kernelcalc.predict)."""
    from kernelcalc.inference import predict
    from kernelcalc.data import load_array

    X = load_array(train)
    y = _labels(labels)
    Xt = load_array(test) if test else None
    kw = {k: v for k, v in _scales(sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb).items() if v is not None}
    if T is not None:
        kw["T"] = T
    if depth is not None:
        kw["depth"] = depth
    if Xt is None and cov:
        raise InputError("--cov needs --test")
    pred = predict(X, y, Xt, model=model, activation=activation, t=_times(t), kernel=kernel, learning_rate=lr,
                   diag_reg=diag_reg, compute_cov="diag" if cov else False, progress=False if quiet else None,
                   **({"client": scheduler} if scheduler else {}), **kw)
    if Xt is None:
        text = f"kernel={pred.kernel}: train predictions only (give --test); see --json for mean_train"
    else:
        text = _table(pred)
    emit(pred, text, as_json=as_json, json_out=json_out, plot_path=plot_path if Xt is not None else None,
         plotter=plot_prediction)
