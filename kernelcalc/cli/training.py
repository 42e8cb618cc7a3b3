"""Training commands: ``kernelcalc train``, ``kernelcalc width-sweep`` and ``kernelcalc flow-gap``.

Thin layers over :func:`kernelcalc.train`, :func:`kernelcalc.width_sweep` and
:func:`kernelcalc.training.flow_gap`: a tqdm progress bar, a printed summary (``--json``: JSON
on stdout instead), optional ``--json-out FILE`` and ``--plot``. Input errors are one ``Error: ...``
line (exit code 2); a run that fails numerically (``failed``: loss NaN/inf or past the divergence
factor, the flow solver failed; any width of a sweep, any step size of flow-gap) prints its result
and one ``Error: run failed: ...`` line on stderr and exits with code 1, never a traceback.
"""

from __future__ import annotations


import click
import numpy as np

from kernelcalc.cli import emit, main, random_input_options
from kernelcalc.cli.analytic import (_MODEL_SCALE_NOTE, InputError, OneLineCommand, _activation_option, _friendly,
                                     _scales, model_options, scale_options)

DEFAULT_WIDTH = 256   # kernelcalc._validation.DEFAULT_WIDTH, without importing jax for --help


def exit_if_failed(res) -> None:
    """The CLI's one rule for a numerically failed run: ``Error: run failed: ...`` on stderr, exit code 1."""
    if res.failed:
        click.echo(f"Error: run failed: {' '.join(str(res.failure).split())}", err=True)
        raise click.exceptions.Exit(1)

__all__ = ["train_cmd", "width_sweep_cmd", "flow_gap_cmd"]


def _data(data, targets, digits, n_inputs, dim, seed):
    """(X, y) from files, the digits data set, or random sphere points with a random smooth target."""
    from kernelcalc.data import load_digits_subset, load_xy, sphere_normalise

    if data:
        return load_xy(data, targets) if targets else load_xy(data)
    if targets:
        raise InputError("--targets needs --data")
    if digits:
        return load_digits_subset(digits, seed=seed)
    if n_inputs < 1 or dim < 1:
        raise InputError(f"--n-inputs and --dim must be >= 1, got {n_inputs} and {dim}")
    rng = np.random.default_rng(seed)
    x = sphere_normalise(rng.normal(size=(n_inputs, dim)))
    return x, rng.normal(size=n_inputs)


def _train_options(f):
    for opt in reversed([
        _activation_option,
        click.option("--model", type=click.Choice(["node", "resnet", "mlp"]), default="node", show_default=True),
        click.option("--T", "T", type=float, default=1.0, show_default=True, help="ODE time horizon."),
        click.option("--depth", type=int, default=None, help="Depth (resnet, mlp)."),
        scale_options(note=_MODEL_SCALE_NOTE),
        click.option("--lr", type=float, default=None, help="Step size (default 1/||X||^2, Theorem 2)."),
        click.option("--steps", type=int, default=300, show_default=True, help="GD steps (flow: t = steps*lr)."),
        click.option("--method", type=click.Choice(["gd", "flow"]), default="gd", show_default=True),
        click.option("--divergence-factor", type=float, default=1e6, show_default=True,
                     help="The run has failed (exit code 1) when the loss exceeds this x L0 (or is NaN/inf)."),
        click.option("--data", type=click.Path(dir_okay=False), default=None,
                     help="Inputs (.npy/.csv/.txt); with no --targets the last column is the target."),
        click.option("--targets", type=click.Path(dir_okay=False), default=None, help="Targets file (N values)."),
        click.option("--digits", type=int, default=None, help="Use N images of sklearn's 8x8 digits."),
        *random_input_options(n_inputs=8, dim=32, seed_help="Seed for data and network.", plot_help="Write a PNG."),
    ]):
        f = opt(f)
    return f


def _run(fn, text, plotter, own: dict, *, model, activation, T, depth, sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb,
         divergence_factor, data, targets, digits, n_inputs, dim, seed, as_json, json_out, plot_path, quiet) -> None:
    """The body of every training command: the data, one call of ``fn`` with the command's own keywords ``own``
    and the shared ones (the model with ``--T``/``--depth`` as :func:`~kernelcalc.cli.analytic.model_options`
    forwards them, its scales, the seed, the failure rule, the bar), ``text(res)`` or ``--json``, ``--plot``, and
    exit code 1 for a run that failed."""
    X, y = _data(data, targets, digits, n_inputs, dim, seed)
    res = fn(X, y, **own, model=model, activation=activation, seed=seed, divergence_factor=divergence_factor,
             progress=False if quiet else None, **model_options(model, T=T, depth=depth),
             **_scales(sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb))
    emit(res, text(res), as_json=as_json, json_out=json_out, plot_path=plot_path, plotter=plotter)
    exit_if_failed(res)


@main.command("train", cls=OneLineCommand)
@click.option("--width", type=int, default=DEFAULT_WIDTH, show_default=True)
@_train_options
@_friendly
def train_cmd(width, lr, steps, method, **shared):
    """Train by GD (or gradient flow) on 1/2|u-y|^2 and compare with the NTK bound (1 - lr*lambda0)^k L0."""
    from kernelcalc.plotting import plot_training
    from kernelcalc.training import train

    _run(train, lambda res: res.summary(), plot_training, dict(width=width, lr=lr, steps=steps, method=method),
         **shared)


@main.command("width-sweep", cls=OneLineCommand)
@click.option("--widths", default="64,256,1024", show_default=True, help="Comma-separated widths.")
@_train_options
@_friendly
def width_sweep_cmd(widths, lr, steps, method, **shared):
    """The same training run at several widths: NTK eigenvalues, |theta-theta0|, NTK drift vs width, slopes."""
    from kernelcalc.cli.empirical import _int_list

    widths_l = _int_list("widths", widths)
    from kernelcalc.plotting import plot_width_sweep
    from kernelcalc.training import width_sweep

    _run(width_sweep, lambda res: res.table(), plot_width_sweep,
         dict(widths=widths_l, lr=lr, steps=steps, method=method), **shared)


@main.command("flow-gap", cls=OneLineCommand)
@click.option("--width", type=int, default=DEFAULT_WIDTH, show_default=True)
@click.option("--lrs", default=None, help="Comma-separated step sizes (default 1/||X||^2 times 1, 1/2, 1/4, 1/8).")
@click.option("--t-max", type=float, default=None, help="Horizon (default 64 x the largest step size).")
@click.option("--n-compare", type=int, default=8, show_default=True, help="Comparison intervals on [0, t_max].")
@_train_options
@_friendly
def flow_gap_cmd(width, lrs, t_max, n_compare, lr, steps, method, **shared):
    """GD with decreasing step sizes against the gradient flow at matching times; fitted order of the gap."""
    ctx = click.get_current_context()
    given = [f"--{n}" for n in ("lr", "steps", "method") if ctx.get_parameter_source(n).name != "DEFAULT"]
    if given:       # set by the user, whatever the value: not silently ignored
        raise InputError(f"flow-gap takes --lrs and --t-max (not --lr, --steps or --method), got {', '.join(given)}")
    from kernelcalc.cli.empirical import _float_list

    lrs_l = _float_list("lrs", lrs) if lrs else None
    from kernelcalc.plotting import plot_flow_gap
    from kernelcalc.training import flow_gap

    _run(flow_gap, lambda res: res.table(), plot_flow_gap,
         dict(lrs=lrs_l, t_max=t_max, n_compare=n_compare, width=width), **shared)
