"""``kernelcalc compare-models``: tied/untied Neural ODE, tied/untied ResNet-L and DEQ on the same data.

A thin layer over :func:`kernelcalc.studies.comparison.compare_models`; errors are one ``Error: ...`` line.
"""

from __future__ import annotations

import click

from kernelcalc.cli import emit, json_options, main
from kernelcalc.cli.analytic import OneLineCommand, _friendly, scale_options
from kernelcalc.cli.empirical import _inputs

__all__ = ["compare_models_cmd"]


@main.command("compare-models", cls=OneLineCommand,
              short_help="NNGP/NTK vs rho, lambda_min and condition number: tied/untied ODE, ResNet-L, DEQ.")
@click.option("--activation", "-a", default="softplus", show_default=True, help="Activation (name or expression in x).")
@click.option("--T", "T", type=float, default=1.0, show_default=True, help="Horizon T > 0 of the ODEs and ResNets.")
@click.option("--depth", "-L", type=int, default=8, show_default=True, help="Depth L of both ResNets.")
@scale_options(("sigma_w", "sigma_u", "sigma_v", "sigma_b"), dict(sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, sigma_b=0.0),
               note=" (sigma_b: the DEQ's only.)")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Inputs file for the Gram (N rows of d numbers). Default: random points on the sphere.")
@click.option("--n-inputs", type=int, default=16, show_default=True, help="Number of random sphere inputs N.")
@click.option("--dim", type=int, default=8, show_default=True, help="Input dimension d of random inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the inputs.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: NNGP and NTK vs rho, lambda_min and condition number per model.")
@json_options
@_friendly
def compare_models_cmd(activation, T, depth, sigma_w, sigma_u, sigma_v, sigma_b, data, n_inputs, dim, seed,
                       plot_path, as_json, json_out):
    """Tied vs untied weights, discrete vs continuous vs implicit depth: the infinite-width kernels of the
    tied Neural ODE, untied Neural ODE, tied and untied ResNet-L and the DEQ on the same inputs."""
    from kernelcalc.studies.comparison import compare_models, plot_model_comparison

    X = _inputs(data, n_inputs, dim, seed)
    res = compare_models(X, activation=activation, T=T, depth=depth, sigma_w=sigma_w, sigma_u=sigma_u,
                         sigma_v=sigma_v, sigma_b=sigma_b)
    emit(res, res.table(), as_json=as_json, json_out=json_out, plot_path=plot_path, plotter=plot_model_comparison)
