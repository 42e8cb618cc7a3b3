"""Empirical commands: ``kernelcalc compare`` and ``kernelcalc depth-gap``.

Thin layers over :func:`kernelcalc.compare` and :func:`kernelcalc.depth_gap`: a tqdm progress
bar while running, a printed table (or ``--json``), optional ``--json-out`` and ``--plot`` files.  Input errors
are one ``Error: ...`` line (exit code 2), never a traceback.
"""

from __future__ import annotations

import click
import numpy as np

from kernelcalc.cli import emit, main, random_input_options
from kernelcalc.cli.analytic import (_MODEL_SCALE_NOTE, InputError, OneLineCommand, _activation_option, _friendly,
                                     _node_scale_options, _scales, model_options, renamed_option,
                                     scale_options)

__all__ = ["compare_cmd", "depth_gap_cmd"]


def _int_list(name: str, text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"--{name} must be a comma-separated list of integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise InputError(f"--{name} must be a non-empty list of integers >= 1, got {text!r}")
    return vals


def _float_list(name: str, text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"--{name} must be a comma-separated list of numbers, got {text!r}") from None
    if not vals or not all(0 < v < float("inf") for v in vals):
        raise InputError(f"--{name} must be a non-empty comma-separated list of finite numbers > 0, got {text!r}")
    return vals


def _inputs(data, n_inputs, dim, seed) -> np.ndarray:
    if data:
        from kernelcalc.data import load_array

        return load_array(data)
    if n_inputs < 1 or dim < 1:
        raise InputError(f"--n-inputs and --dim must be >= 1, got {n_inputs} and {dim}")
    from kernelcalc.data import sphere_normalise

    return sphere_normalise(np.random.default_rng(seed).normal(size=(n_inputs, dim)))


def _input_options(f):
    for opt in reversed([
        click.option("--data", type=click.Path(dir_okay=False), default=None,
                     help="Inputs file (N rows of d numbers; .npy/.csv/.txt). Default: random points on the sphere."),
        *random_input_options(n_inputs=4, dim=3, seed_help="Seed for inputs and networks.",
                              plot_help="Write a log-log plot (png)."),
    ]):
        f = opt(f)
    return f


@main.command("compare", cls=OneLineCommand)
@renamed_option("--steps", "--solver-steps", "solver_steps", int)
@_activation_option
@click.option("--model", type=click.Choice(["node", "resnet", "mlp"]), default="node", show_default=True)
@click.option("--T", "T", type=float, default=1.0, show_default=True, help="ODE time horizon (node, resnet).")
@click.option("--depth", type=int, default=None, help="Depth (resnet, mlp).")
@scale_options(note=_MODEL_SCALE_NOTE)
@click.option("--widths", default="64,256,1024", show_default=True, help="Comma-separated widths.")
@click.option("--samples", type=int, default=20, show_default=True, help="Networks per width.")
@click.option("--solver", default="tsit5", show_default=True, help="NODE solver (euler, rk4, tsit5, dopri5, ...).")
@click.option("--solver-steps", type=int, default=32, show_default=True,
              help="NODE fixed solver steps (--steps: deprecated old name).")
@_input_options
@_friendly
def compare_cmd(activation, model, T, depth, sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb, widths, samples, solver, solver_steps, data, n_inputs, dim, seed,
                as_json, json_out, plot_path, quiet):
    """Analytic vs Monte-Carlo empirical kernels: per-entry z-scores and the error-vs-width slope."""
    widths_l = _int_list("widths", widths)
    if samples < 2:
        raise InputError(f"--samples must be >= 2 (standard errors need two networks), got {samples}")
    X = _inputs(data, n_inputs, dim, seed)
    from kernelcalc.empirical import compare

    kw = model_options(model, T=T, depth=depth, solver=solver, solver_steps=solver_steps)
    res = compare(X, activation=activation, widths=widths_l, n_samples=samples, model=model, seed=seed,
                  progress=False if quiet else None, **kw, **_scales(sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb))
    from kernelcalc.plotting import plot_compare

    emit(res, res.table(), as_json=as_json, json_out=json_out, plot_path=plot_path, plotter=plot_compare)


@main.command("depth-gap", cls=OneLineCommand)
@_activation_option
@click.option("--T", "T", type=float, default=1.0, show_default=True, help="ODE time horizon.")
@click.option("--width", type=int, default=256, show_default=True)
@_node_scale_options
@click.option("--depths", default="2,4,8,16,32,64,128,256", show_default=True, help="Comma-separated ResNet depths.")
@click.option("--modes/--no-modes", default=False, show_default=True,
              help="Also compare discretize-then-optimize vs continuous-adjoint gradients.")
@_input_options
@_friendly
def depth_gap_cmd(activation, T, width, sigma_w, sigma_u, sigma_v, depths, modes, data, n_inputs, dim, seed, as_json, json_out, plot_path,
                  quiet):
    """Weight-tied ResNet of depth L vs the Neural ODE at the same parameters: output, gradient, NTK gaps."""
    depths_l = _int_list("depths", depths)
    X = _inputs(data, n_inputs, dim, seed)
    from kernelcalc.empirical import depth_gap, gradient_mode_gap

    scales = dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)
    res = depth_gap(X, activation=activation, width=width, depths=depths_l, T=T, seed=seed,
                    progress=False if quiet else None, **scales)
    text = [res.table()]
    out = {"depth_gap": res.to_dict()}
    if modes:
        gm = gradient_mode_gap(X, activation=activation, width=width, T=T, seed=seed,
                               progress=False if quiet else None, **scales)
        text += ["", "discretize-then-optimize vs optimize-then-discretize (continuous adjoint):", gm.table()]
        out["gradient_modes"] = gm.to_dict()
    from kernelcalc.plotting import plot_depth_gap

    emit(res, "\n".join(text), as_json=as_json, json_out=json_out, plot_path=plot_path, plotter=plot_depth_gap,
         doc=out)
