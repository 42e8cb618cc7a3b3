"""Horizon command: ``kernelcalc sweep-T``.

A thin layer over :func:`kernelcalc.studies.horizon.sweep_T`: lambda_min of the limiting NTK Gram and the
predicted gradient-descent rate over a grid of horizons T and activations, printed as a table
(``--json``: JSON on stdout instead), optional ``--json-out FILE`` and ``--plot``.  Input errors are
one ``Error: ...`` line (exit code 2); an entry whose kernel fails is reported in the table, never a
traceback.
"""

from __future__ import annotations

import click

from kernelcalc.cli import emit, json_options, main
from kernelcalc.cli.analytic import InputError, OneLineCommand, _friendly, _node_scale_options
from kernelcalc.cli.empirical import _float_list, _inputs

__all__ = ["sweep_T_cmd"]


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside parentheses, so ``'Max(0, x),tanh'`` is two activations."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _sweep_inputs(data, digits, n_inputs, dim, seed):
    """Inputs only: a file (every column an input coordinate), N digits images, or random sphere points."""
    if data and digits:
        raise InputError("give --data or --digits, not both")
    if digits:
        from kernelcalc.data import load_digits_subset

        return load_digits_subset(digits, seed=seed)[0]
    return _inputs(data, n_inputs, dim, seed)


@main.command("sweep-T", cls=OneLineCommand,
              short_help="lambda_min(K_inf) and the predicted GD rate vs the horizon T, per activation.")
@click.option("--activation", "-a", default="softplus,tanh,gelu", show_default=True, metavar="LIST",
              help="Comma-separated activations: built-in names, built-ins with parameters ('elu(alpha=0.5)') "
                   "or sympy expressions in x ('x**2').")
@click.option("--T", "Ts", default="0.25,0.5,1,2", show_default=True, metavar="LIST",
              help="Comma-separated horizons T > 0.")
@_node_scale_options
@click.option("--inverse-T", "--scale-sigma-w", "inverse_T", is_flag=True,
              help="Use sigma_w/T at each horizon (sigma_w proportional to 1/T) instead of a fixed sigma_w.")
@click.option("--lr", type=float, default=None, help="Step size (default 1/||X||^2, Theorem 2).")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Inputs file (N rows of d numbers; .npy/.csv/.txt). Default: random points on the sphere.")
@click.option("--digits", type=int, default=None, help="Use N images of sklearn's 8x8 digits as inputs.")
@click.option("--n-inputs", type=int, default=16, show_default=True, help="Number of random sphere inputs N.")
@click.option("--dim", type=int, default=8, show_default=True, help="Input dimension d of random inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the inputs.")
@json_options
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: lambda_min vs T (log-log) and steps to 1e-3 vs T.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_friendly
def sweep_T_cmd(activation, Ts, sigma_w, sigma_u, sigma_v, inverse_T, lr, data, digits, n_inputs, dim, seed,
                as_json, json_out, plot_path, quiet):
    """lambda_min of the infinite-width NTK Gram K_inf, rho = 1 - lr*lambda_min and the steps to reach
    1e-3 L0 (Theorem 2: L_k <= rho^k L0), as functions of the horizon T, for several activations."""
    acts = _split_top_level(activation)
    if not acts:
        raise InputError(f"--activation must be a non-empty comma-separated list, got {activation!r}")
    T_list = _float_list("T", Ts)
    X = _sweep_inputs(data, digits, n_inputs, dim, seed)
    from kernelcalc.studies.horizon import sweep_T
    from kernelcalc.plotting import plot_horizon

    res = sweep_T(X, activations=acts, Ts=T_list, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v,
                  sigma_w_scaling="inverse_T" if inverse_T else "fixed", lr=lr, progress=False if quiet else None)
    emit(res, res.table(), as_json=as_json, json_out=json_out, plot_path=plot_path, plotter=plot_horizon)
