"""Command-line interface: ``kernelcalc <command>``; thin layers over the library.

Each sub-module registers its commands on :data:`main`:
``analytic`` (limit, derive, check), ``empirical`` (compare, depth-gap),
``training`` (train, width-sweep, flow-gap), ``horizon`` (sweep-T), ``divergence`` (divergent-flow),
``models`` (compare-models), ``spectrum`` (spectrum).
"""

from __future__ import annotations

import click

__all__ = ["main", "enable_compilation_cache", "compilation_cache_folder"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kernelcalc")
@click.pass_context
def main(ctx):
    """kernelcalc: infinite-width NTK / NNGP kernels of Neural ODEs, ResNets and MLPs.

    Compiled kernels are cached on disk between runs (KERNELCALC_JAX_CACHE: the folder, default
    ~/.cache/kernelcalc/jax; "0" turns the cache off).
    """
    from kernelcalc._x64 import scope

    # The command runs in float64 (the library's functions enter this scope themselves; the CLI
    # holds it for the whole command), scoped: a CliRunner or a notebook keeps its own jax setting.
    # The scope does not import jax (commands such as ``limit`` may never need it).
    ctx.with_resource(scope())
    enable_compilation_cache()
    import warnings

    previous = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        # Assumption1Warning, KernelcalcAccuracyWarning, ...: one "Warning: ..." line on stderr, no source line
        click.echo(f"Warning: {' '.join(str(message).split())}", err=True)

    warnings.showwarning = one_line
    ctx.call_on_close(lambda: setattr(warnings, "showwarning", previous))


#: jax options of the persistent compilation cache: every compiled kernel is cached, however small
#: or quick to compile (jax's defaults skip those under 1 s of compile time).
_CACHE_OPTIONS = {"jax_persistent_cache_min_compile_time_secs": 0.0, "jax_persistent_cache_min_entry_size_bytes": 0}


def compilation_cache_folder() -> str | None:
    """The folder of the CLI's jax compilation cache: ``$KERNELCALC_JAX_CACHE``, else
    ``$XDG_CACHE_HOME/kernelcalc/jax``, else ``~/.cache/kernelcalc/jax`` (per user: under the user's
    home); ``None`` when ``KERNELCALC_JAX_CACHE=0`` turns the cache off."""
    import os

    folder = os.environ.get("KERNELCALC_JAX_CACHE")
    if folder == "0":
        return None
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "kernelcalc", "jax")
    return folder


def enable_compilation_cache() -> str | None:
    """Turn on jax's persistent compilation cache for this process (the CLI only: the library never
    changes the user's jax configuration).  Returns the folder, or None when disabled/unavailable.

    jax itself is not imported here (that alone takes about a second, and ``limit``, ``derive`` and
    small kernels never need it): while it is not imported yet the settings go into the ``JAX_*``
    environment variables that jax reads when it is first imported; if it already is, into
    ``jax.config``."""
    import os
    import sys

    folder = compilation_cache_folder()
    if folder is None:
        return None
    try:
        os.makedirs(folder, exist_ok=True)
        settings = dict(_CACHE_OPTIONS, jax_compilation_cache_dir=folder)
        if "jax" in sys.modules:
            for name, value in settings.items():
                sys.modules["jax"].config.update(name, value)
        else:
            for name, value in settings.items():
                os.environ[name.upper()] = str(value)
    except (OSError, AttributeError):   # unwritable folder or an old jax: run without the cache
        return None
    return folder


def json_options(f):
    """The one JSON convention of every command: ``--json`` (flag) prints the result as one JSON
    document on stdout *instead of* the text; ``--json-out FILE`` writes the same document to FILE
    (the text is still printed). Both may be given."""
    f = click.option("--json-out", "json_out", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Also write the result as JSON to FILE.")(f)
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as one JSON document on stdout instead of text.")(f)


def random_input_options(*, n_inputs: int, dim: int, seed_help: str, plot_help: str) -> list:
    """The options shared by the commands that build networks on data: ``--n-inputs``/``--dim`` of the
    random inputs (on the sphere), ``--seed``, the JSON options, ``--plot`` and ``--quiet``."""
    return [
        click.option("--n-inputs", type=int, default=n_inputs, show_default=True,
                     help="Number N of random inputs (on the sphere |x|^2 = d)."),
        click.option("--dim", type=int, default=dim, show_default=True, help="Input dimension d of random inputs."),
        click.option("--seed", type=int, default=0, show_default=True, help=seed_help),
        json_options,
        click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help=plot_help),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]


def dumps(doc) -> str:
    """One JSON document (non-finite numbers become ``null``)."""
    import json

    from kernelcalc._results import jsonable

    return json.dumps(jsonable(doc), indent=2, allow_nan=False)


def emit(result, text, *, as_json=False, json_out=None, plot_path=None, plotter=None, doc=None) -> None:
    """Print ``text`` (or, with ``as_json``, the JSON document ``doc``, default ``result.to_dict()``),
    write ``doc`` to ``json_out`` and ``plotter(result, plot_path)``; "wrote FILE" notes go to stderr,
    so stdout holds the result only."""
    if doc is None:
        doc = result.to_dict()
    click.echo(dumps(doc) if as_json else text)
    if json_out:
        with open(json_out, "w") as fh:
            fh.write(dumps(doc) + "\n")
        click.echo(f"wrote {json_out}", err=True)
    if plot_path and plotter is not None:
        plotter(result, plot_path)
        click.echo(f"wrote {plot_path}", err=True)


def _register() -> None:
    import importlib

    for mod in ("analytic", "empirical", "training", "horizon", "divergence", "models", "spectrum"):
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as err:  # a sub-module not written yet
            if err.name != f"{__name__}.{mod}":
                raise


_register()
