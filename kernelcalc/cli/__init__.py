"""Command-line interface: ``kernelcalc <command>``; thin layers over the library.

Each sub-module registers its commands on :data:`main`:
``analytic`` (limit, derive, check), ``empirical`` (compare, depth-gap),
``training`` (train, width-sweep, flow-gap), ``horizon`` (sweep-T), ``divergence`` (divergent-flow),
``models`` (compare-models).
"""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kernelcalc")
def main():
    """kernelcalc: infinite-width NTK / NNGP kernels of Neural ODEs, ResNets and MLPs."""


def write_outputs(result, json_path=None, plot_path=None, plotter=None) -> None:
    """Write ``result.to_dict()`` as JSON and/or ``plotter(result, plot_path)``; say what was written."""
    import json

    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result.to_dict(), fh, indent=1)
        click.echo(f"wrote {json_path}")
    if plot_path and plotter is not None:
        plotter(result, plot_path)
        click.echo(f"wrote {plot_path}")


def _register() -> None:
    import importlib

    for mod in ("analytic", "empirical", "training", "horizon", "divergence", "models"):
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as err:  # a sub-module not written yet
            if err.name != f"{__name__}.{mod}":
                raise


_register()
