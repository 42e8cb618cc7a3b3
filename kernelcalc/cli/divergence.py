"""``kernelcalc divergent-flow``: does the gradient flow of a small SAD network diverge?

A thin layer over :func:`kernelcalc.training.divergent_flow`: polynomial data on $[-1,1]$ (or your
files), a printed summary with the verdict and the fitted exponents (``--json``: JSON on stdout
instead), optional ``--json-out FILE`` and ``--plot``. Input errors are one ``Error: ...`` line (exit code 2); every verdict, ``undetermined`` included,
exits 0, except a run that failed numerically (the flow solver failed or a value became non-finite:
verdict ``undetermined`` with ``failed``), which prints ``Error: run failed: ...`` and exits 1, as in
``kernelcalc train``.
"""

from __future__ import annotations

import click

from kernelcalc.cli import emit, json_options, main
from kernelcalc.cli.analytic import InputError, OneLineCommand, _activation_option, _friendly, renamed_option, scale_options
from kernelcalc.cli.training import exit_if_failed

__all__ = ["divergent_flow_cmd"]


@main.command("divergent-flow", cls=OneLineCommand)
@renamed_option("--solver", "--flow-solver", "flow_solver", str)
@_activation_option
@click.option("--width", type=int, default=2, show_default=True, help="Hidden width n.")
@click.option("--depth", type=int, default=1, show_default=True, help="Hidden layers.")
@scale_options(("sigma_w", "sigma_b", "sigma_v", "sigma_vb"), dict(sigma_w=1.0, sigma_b=1.0, sigma_v=1.0, sigma_vb=1.0))
@click.option("--degree", type=int, default=2, show_default=True, help="Target y = x^degree on [-1, 1].")
@click.option("--n-points", type=int, default=40, show_default=True, help="Number N of equispaced points.")
@click.option("--t-max", type=float, default=1e5, show_default=True, help="Integrate the flow to this time.")
@click.option("--n-records", type=int, default=60, show_default=True, help="Log-spaced records in [1e-2, t-max].")
@click.option("--flow-solver", default="kvaerno5", show_default=True,
              help="The gradient flow's ODE solver: kvaerno5 (implicit, default), kvaerno3/4, or explicit "
                   "tsit5/dopri5/dopri8 (slow at late times). --solver: deprecated old name.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the initial parameters.")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Inputs (.npy/.csv/.txt) instead of x^degree; with no --targets the last column is the target.")
@click.option("--targets", type=click.Path(dir_okay=False), default=None, help="Targets file (N values).")
@json_options
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: loss and |theta| vs t.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_friendly
def divergent_flow_cmd(activation, width, depth, sigma_w, sigma_b, sigma_v, sigma_vb, degree, n_points, t_max, n_records, flow_solver, seed, data, targets,
                       as_json, json_out, plot_path, quiet):
    """Integrate the gradient flow of 1/2|f(X)-y|^2 to t-max (log time) and decide: divergent |theta| -> inf,
    convergent to a critical point, or undetermined; fitted growth exponent of |theta| and loss decay."""
    from kernelcalc.data import load_xy
    from kernelcalc.plotting import plot_divergence
    from kernelcalc.training.divergence import divergent_flow, sad_data

    if targets and not data:
        raise InputError("--targets needs --data")
    X, y = (load_xy(data, targets) if targets else load_xy(data)) if data else sad_data(n_points, degree=degree)
    res = divergent_flow(X, y, activation=activation, width=width, depth=depth, seed=seed, t_max=t_max,
                         n_records=n_records, flow_solver=flow_solver, progress=False if quiet else None, sigma_w=sigma_w,
                         sigma_b=sigma_b, sigma_v=sigma_v, sigma_vb=sigma_vb)
    emit(res, res.summary(), as_json=as_json, json_out=json_out, plot_path=plot_path, plotter=plot_divergence)
    exit_if_failed(res)
