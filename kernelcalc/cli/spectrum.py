"""Sphere-spectrum command: ``kernelcalc spectrum``.

A thin layer over :func:`kernelcalc.sphere_spectrum`: the eigenvalues mu_k of the NNGP and NTK
integral operators on the sphere S^{d-1} (one per degree k, multiplicity N(d,k)), their error bounds,
the fitted decay and the trace check, as a table (``--json``: JSON on stdout instead), optional
``--json-out FILE`` and ``--plot FILE`` (mu_k against k on log axes).
"""

from __future__ import annotations

import click

from kernelcalc.cli import emit, json_options, main
from kernelcalc.cli.analytic import (_MODEL_SCALE_NOTE, InputError, OneLineCommand, _activation_option, _friendly,
                                     _scales, scale_options)

__all__ = ["spectrum_cmd"]


@main.command("spectrum", cls=OneLineCommand,
              short_help="Eigenvalues mu_k of the NNGP/NTK on the sphere S^{d-1}, decay and trace check.")
@_activation_option
@click.option("--model", type=click.Choice(["node", "resnet", "mlp", "deq"]), default="node", show_default=True,
              help="Which architecture's kernel.")
@click.option("--d", "d", type=int, default=10, show_default=True, help="Input dimension d >= 2 (sphere S^{d-1}).")
@click.option("--k-max", "k_max", type=int, default=40, show_default=True, help="Highest degree k >= 0.")
@click.option("--T", "T", type=float, default=None, help="Horizon T > 0 (node, resnet; default 1).")
@click.option("--depth", type=int, default=None, help="Depth L (resnet, mlp; required there).")
@click.option("--weights", type=click.Choice(["tied", "untied"]), default=None,
              help="Weight-tied (default) or untied in time (node, resnet).")
@scale_options(note=_MODEL_SCALE_NOTE)
@click.option("--kernel", type=click.Choice(["both", "nngp", "ntk"]), default="both", show_default=True,
              help="Which kernel's spectrum.")
@json_options
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write a PNG: mu_k against k on log axes (bounds where not resolved).")
@_friendly
def spectrum_cmd(activation, model, d, k_max, T, depth, weights, sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb,
                 kernel, as_json, json_out, plot_path):
    """Eigenvalues mu_k of the infinite-width NNGP and NTK as integral operators on the sphere S^{d-1}
    (radius sqrt(d), uniform probability measure): one per degree k of the spherical harmonics, with
    multiplicity N(d,k), an error bound each ("< bound" where double precision does not resolve them),
    the fitted decay (power law or exponential) and the trace check sum_k N(d,k) mu_k = K(1).

    Example: kernelcalc spectrum --activation softplus --T 1 --d 10
    """
    from kernelcalc.studies.sphere_spectrum import sphere_spectrum

    args = {k: v for k, v in dict(T=T, depth=depth, weights=weights).items() if v is not None}
    args.update({k: v for k, v in _scales(sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb).items() if v is not None})
    if model in ("resnet", "mlp") and depth is None:
        raise InputError(f"--depth is required for --model {model}")
    res = sphere_spectrum(model=model, activation=activation, d=d, k_max=k_max,
                          kernel=("nngp", "ntk") if kernel == "both" else kernel, **args)

    def plot(result, path):
        from kernelcalc.plotting import plot_sphere_spectrum

        plot_sphere_spectrum(result, path, kernel=result.kernels[-1])

    emit(res, res.table(), as_json=as_json, json_out=json_out, plot_path=plot_path, plotter=plot)
