"""Command-line interface: ``kernelcalc <command>``; thin layers over the library.

Each sub-module registers its commands on :data:`main`:
``analytic`` (limit, derive, check), ``empirical`` (compare, depth-gap),
``training`` (train, width-sweep, flow-gap), ``horizon`` (sweep-T), ``divergence`` (divergent-flow).
"""

from __future__ import annotations

import click

__all__ = ["main", "enable_compilation_cache"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kernelcalc")
def main():
    """kernelcalc: infinite-width NTK / NNGP kernels of Neural ODEs, ResNets and MLPs.

    Compiled kernels are cached on disk between runs (KERNELCALC_JAX_CACHE: the folder, default
    ~/.cache/kernelcalc/jax; "0" turns the cache off).
    """
    enable_compilation_cache()


def enable_compilation_cache() -> str | None:
    """Turn on jax's persistent compilation cache for this process (the CLI only: the library never
    changes the user's jax configuration).  Returns the folder, or None when disabled/unavailable."""
    import os

    folder = os.environ.get("KERNELCALC_JAX_CACHE")
    if folder == "0":
        return None
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "kernelcalc", "jax")
    try:
        os.makedirs(folder, exist_ok=True)
        import jax

        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except (OSError, AttributeError):   # unwritable folder or an old jax: run without the cache
        return None
    return folder


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

    for mod in ("analytic", "empirical", "training", "horizon", "divergence"):
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as err:  # a sub-module not written yet
            if err.name != f"{__name__}.{mod}":
                raise


_register()
