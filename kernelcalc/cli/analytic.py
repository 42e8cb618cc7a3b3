"""Analytic commands: ``kernelcalc limit``, ``kernelcalc derive``, ``kernelcalc check``.

Thin layers over :func:`kernelcalc.node_kernel`, :func:`kernelcalc.analyse`,
:func:`kernelcalc.derive` and :func:`kernelcalc.check`; no maths here.  Every input error
is reported as one line ``Error: ...`` (exit code 2), never a traceback.
"""

from __future__ import annotations

import functools

import click
import numpy as np

from kernelcalc._validation import MODEL_KEYWORDS, MODEL_SCALES, KernelcalcClusterError
from kernelcalc.cli import emit, json_options, main

__all__ = ["limit", "derive_cmd", "check_cmd"]


# ---------------------------------------------------------------------------- error plumbing
class InputError(click.ClickException):
    """Bad user input: printed as a single ``Error: ...`` line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the source


class OneLineCommand(click.Command):
    """A command whose usage errors (bad option value, missing option) are one line."""

    def make_context(self, info_name, args, parent=None, **extra):
        old_json = _old_json_file_usage(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:
            if old_json:
                raise InputError(f"--json is a flag (print JSON on stdout instead of text); to write a file use "
                                 f"--json-out {old_json}") from None
            raise InputError(f"{err.format_message()} (see 'kernelcalc {info_name} --help')") from None


def _old_json_file_usage(args) -> str | None:
    """The FILE of the old ``--json FILE`` / ``--json=FILE`` spelling, if ``args`` use it."""
    args = list(args)
    for i, a in enumerate(args):
        if a.startswith("--json="):
            return a.split("=", 1)[1]
        if a == "--json" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            return args[i + 1]
    return None


def _friendly(fn):
    """Turn library input errors (ValueError subclasses) and file errors into :class:`InputError`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, OSError, KernelcalcClusterError) as err:  # KernelcalcInputError, ActivationError, ...
            raise InputError(str(err) or type(err).__name__) from None

    return wrapper


def renamed_option(old: str, new: str, dest: str, type_):
    """A hidden option ``old`` that still works for one release: a one-line ``Warning:`` on stderr, then
    it sets ``dest`` (the option ``new``); giving both is an error. Put it right below ``@main.command``."""

    def deco(f):
        hidden = "renamed_" + dest

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            value = kwargs.pop(hidden)
            if value is not None:
                if click.get_current_context().get_parameter_source(dest).name != "DEFAULT":
                    raise InputError(f"give {new} only ({old} is its deprecated old name), not both")
                click.echo(f"Warning: {old} is deprecated and will be removed in the next release; use {new} "
                           "(same meaning)", err=True)
                kwargs[dest] = value
                click.get_current_context().meta.setdefault(_SET_BY_OLD_NAME, set()).add(dest)
            return f(*args, **kwargs)

        return click.option(old, hidden, type=type_, default=None, hidden=True)(wrapper)

    return deco


# ---------------------------------------------------------------------------- shared options
def _activation_option(f):
    return click.option(
        "--activation", "-a", default="softplus", show_default=True, metavar="SPEC",
        help="Built-in name (softplus, tanh, gelu, relu, ...), a built-in with parameters "
             "('elu(alpha=0.5)'), or an expression in x ('log(1+exp(x))'; numbers, x, pi, E, + - * / **, "
             "exp, log, sqrt, tanh, erf, abs, Max, Min, Piecewise, ...; parsed, never executed).")(f)


_SCALE_HELP = {"sigma_w": "Hidden weight std (> 0).", "sigma_u": "Input weight std (> 0).",
               "sigma_v": "Readout weight std (> 0).", "sigma_b": "Hidden bias std (>= 0).",
               "sigma_vb": "Readout bias std (>= 0)."}
ALL_SCALES = tuple(_SCALE_HELP)


def scale_options(names=ALL_SCALES, defaults: dict | None = None, note: str = ""):
    """Click options ``--sigma-w`` ... for the scale keywords ``names`` (``docs/naming.md``).

    ``defaults``: shown defaults (a fixed model); ``None``: the option defaults to the function's
    own default for the chosen ``--model`` and ``note`` says so; one that does not apply to the
    model is an error (raised by the function, printed as one ``Error:`` line).
    """
    def decorate(f):
        for name in reversed(names):
            default = None if defaults is None else defaults[name]
            f = click.option("--" + name.replace("_", "-"), name, type=float, default=default,
                             show_default=default is not None, help=_SCALE_HELP[name] + note)(f)
        return f

    return decorate


def _scales(sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb) -> dict:
    """The five scale options as keywords (``None``: not given, the model's default)."""
    return dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b, sigma_vb=sigma_vb)


#: ``ctx.meta`` key: the options set through a deprecated old name (:func:`renamed_option`)
_SET_BY_OLD_NAME = "kernelcalc.set_by_old_name"


def model_options(model: str, **values) -> dict:
    """The model options (``--T``, ``--depth``, ``--solver``, ...: keys of
    :data:`~kernelcalc._validation.MODEL_KEYWORDS`) to forward to the Python function: each one the user set
    (click's parameter source; also through its deprecated old name), and each one left at its default
    that configures ``model`` (the command's documented default).  One left at its default that does not
    apply to ``--model`` is not forwarded; one the user set is, so that the function refuses it in one line."""
    ctx = click.get_current_context()
    old_names = ctx.meta.get(_SET_BY_OLD_NAME, set())
    out = {}
    for name, value in values.items():
        given = name in old_names or ctx.get_parameter_source(name).name != "DEFAULT"
        if given or (value is not None and model in MODEL_KEYWORDS[name]):
            out[name] = value
    return out


_MODEL_SCALE_NOTE = " Default: the model's (docs/naming.md); an error if it does not apply to --model."


#: ``--sigma-w``, ``--sigma-u``, ``--sigma-v`` with the Neural ODE's defaults (commands of the node model)
_node_scale_options = scale_options(tuple(MODEL_SCALES["node"]), MODEL_SCALES["node"])


def _node_options(f):
    f = _node_scale_options(f)
    return click.option("--T", "T", type=float, default=1.0, show_default=True, help="ODE time horizon T > 0.")(f)


def _resolve(spec: str):
    from kernelcalc.theory.activations import resolve_activation

    return resolve_activation(spec)


def _node_params(T, sigma_w, sigma_u, sigma_v) -> dict:
    from kernelcalc._validation import model_scales, positive

    return {"T": positive("T", T), **model_scales("node", sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)}


def _scheduler_option(f):
    return click.option(
        "--scheduler", default=None, metavar="ADDRESS",
        help="Run the Gram's tiles on this dask.distributed scheduler (e.g. tcp://host:8786); "
             "an unreachable one is an error after 5 s.")(f)


def _report_dict(report) -> dict:
    return report.to_dict() if hasattr(report, "to_dict") else {"text": str(report)}


# ---------------------------------------------------------------------------- limit
def correlation_inputs(rhos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Inputs in $d = 2$ on the sphere $\|x\|^2 = d$ with $x\cdot y_k/d = \rho_k$.

    ``x = sqrt(2) (1, 0)`` and ``y_k = sqrt(2) (rho_k, sqrt(1 - rho_k^2))``.  The node kernel
    depends on the inputs only through $x\cdot y/d$, $\|x\|^2/d$ and $\|y\|^2/d$, so this
    two-dimensional table is the table for every $d$.
    """
    rhos = np.asarray(rhos, dtype=np.float64)
    x = np.sqrt(2.0) * np.array([[1.0, 0.0]])
    y = np.sqrt(2.0) * np.stack([rhos, np.sqrt(np.clip(1.0 - rhos**2, 0.0, None))], axis=1)
    return x, y


@main.command("limit", cls=OneLineCommand, short_help="Neural-ODE NNGP/NTK: Assumption 1, recursion, table vs rho.")
@_activation_option
@_node_options
@click.option("--data", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Optional data (.npy/.csv/.txt, one input per row): summarise its NTK and NNGP Gram matrices.")
@click.option("--points", type=int, default=11, show_default=True,
              help="Number of correlations rho in the table (evenly spaced in [-1, 1], >= 2).")
@click.option("--latex", is_flag=True, help="Print the recursion as LaTeX instead of text.")
@json_options
@_scheduler_option
@_friendly
def limit(activation, T, sigma_w, sigma_u, sigma_v, data, points, latex, as_json, json_out, scheduler):
    """Infinite-width Neural-ODE NNGP/NTK: activation analysis, recursion, kernel table.

    Prints the Assumption-1 report for the activation, the kernel recursion, and a table of
    the limiting NNGP K(x, y) and NTK Theta(x, y) against the correlation rho = x.y/d for
    inputs on the sphere |x|^2 = |y|^2 = d.  With --data, also a summary of the NTK and NNGP
    Gram matrices of the data (entries, lambda_min, lambda_max, condition number).

    Example: kernelcalc limit --activation softplus --T 1
    """
    act = _resolve(activation)
    params = _node_params(T, sigma_w, sigma_u, sigma_v)
    if points < 2:
        raise InputError(f"--points must be >= 2, got {points}")
    X = None
    if data is not None:
        from kernelcalc.data import load_array

        X = load_array(data)
    elif scheduler is not None:
        raise InputError("--scheduler applies only with --data (it runs the data's Gram on a dask cluster)")

    from kernelcalc.cli._cache import symbolic_results
    from kernelcalc.kernels import node_kernel
    from kernelcalc.studies.checks import gram_summary

    report, derivation = symbolic_results(act, "node")   # analyse + derive, cached on disk per activation
    rhos = np.linspace(-1.0, 1.0, points)
    x, y = correlation_inputs(rhos)
    K = node_kernel(x, y, activation=act, **params)
    table = [{"rho": float(r), "nngp": float(a), "ntk": float(b)} for r, a, b in zip(rhos, K.nngp[0], K.ntk[0])]
    grams = None
    if X is not None:
        G = node_kernel(X, activation=act, **params, client=scheduler)   # connects, and closes its client
        from kernelcalc.studies.checks import data_problems

        grams = {"n": int(X.shape[0]), "d": int(X.shape[1]),
                 "ntk": gram_summary(G.ntk).to_dict(), "nngp": gram_summary(G.nngp).to_dict(),
                 "warnings": list(data_problems(X))}     # off the sphere, duplicate rows: as `check` says

    doc = {"activation": act.to_dict(), "params": params, "assumption1": _report_dict(report),
           "derivation": derivation.to_dict() if hasattr(derivation, "to_dict") else derivation.text(),
           "table": table}
    if grams is not None:
        doc["data"] = {"path": str(data), **grams}

    out = [f"Neural ODE infinite-width kernel: activation = {act.name}, T = {params['T']:g}, "
           f"sigma_w = {params['sigma_w']:g}, sigma_u = {params['sigma_u']:g}, sigma_v = {params['sigma_v']:g}",
           "", "== Activation (Assumption 1) ==", str(report).rstrip(),
           "", "== Recursion ==", (derivation.latex() if latex else derivation.text()).rstrip(),
           "", "== Kernel on the sphere |x|^2 = |y|^2 = d, rho = x.y/d ==",
           f"{'rho':>8}  {'NNGP':>20}  {'NTK':>20}"]
    out += [f"{row['rho']:8.4f}  {row['nngp']:20.12g}  {row['ntk']:20.12g}" for row in table]
    if grams is not None:
        out += ["", f"== Gram matrices of {data} (N = {grams['n']}, d = {grams['d']}) =="]
        for name in ("ntk", "nngp"):
            s = grams[name]
            cond = s["condition_number"]
            cond = ("inf (lambda_min <= 0 or within its error bound of 0: the Gram is singular)" if cond is None
                    else format(cond, ".6e"))
            out += [f"{name.upper():>4}: entries min {s['min_entry']:.6g}, max {s['max_entry']:.6g}, "
                    f"mean {s['mean_entry']:.6g}; lambda_min {s['lambda_min']:.6e}, "
                    f"lambda_max {s['lambda_max']:.6e}, condition number {cond}"]
        out += [f"warning: {w}" for w in grams["warnings"]]
    emit(None, "\n".join(out), as_json=as_json, json_out=json_out, doc=doc)


# ---------------------------------------------------------------------------- derive
@main.command("derive", cls=OneLineCommand)
@_activation_option
@click.option("--model", type=click.Choice(["node", "resnet", "mlp"]), default="node", show_default=True,
              help="Which architecture's kernel recursion to derive.")
@click.option("--latex", is_flag=True, help="Print LaTeX instead of text.")
@scale_options(note=" Default: symbolic; an error if it does not apply to --model (docs/naming.md).")
@json_options
@_friendly
def derive_cmd(activation, model, latex, sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb, as_json, json_out):
    """Symbolic NNGP/NTK recursion for an activation and an architecture.

    Example: kernelcalc derive --activation tanh --model resnet --latex
    """
    act = _resolve(activation)
    from kernelcalc.cli._cache import symbolic_results

    scales = dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b, sigma_vb=sigma_vb)
    if any(v is not None for v in scales.values()):      # numbers substituted: derived here, not cached
        from kernelcalc.theory.symbolic import derive

        d = derive(act, model=model, **scales)
    else:
        _, d = symbolic_results(act, model, report=False)   # derive, cached on disk per activation and model
    emit(d, (d.latex() if latex else d.text()).rstrip(), as_json=as_json, json_out=json_out)


# ---------------------------------------------------------------------------- check
@main.command("check", cls=OneLineCommand)
@renamed_option("--tol", "--singular-tol", "singular_tol", float)
@click.option("--data", type=click.Path(dir_okay=False), required=True, metavar="FILE",
              help="Data (.npy/.csv/.txt), one input per row.")
@_activation_option
@_node_options
@click.option("--singular-tol", type=float, default=1e-10, show_default=True,
              help="The NTK Gram counts as singular when lambda_min <= this (--tol: deprecated old name).")
@click.option("--sphere-rtol", type=float, default=1e-8, show_default=True,
              help="Relative tolerance of the test |x|^2 = d.")
@click.option("--normalise", is_flag=True, help="Scale the rows onto the sphere |x|^2 = d first.")
@click.option("--gram", type=click.Choice(["if_applicable", "always"]), default="if_applicable", show_default=True,
              help="Compute the NTK Gram (the slow part) only if the cheap checks (Assumption 1, sphere, "
                   "distinct rows) pass, or always.")
@click.option("--certify", is_flag=True,
              help="Also prove a lower bound on lambda_min (verified Cholesky plus the Gram's entry error bound): "
                   "rigorous for the identity activation, an a-posteriori discretisation estimate otherwise. "
                   "The check fails unless the bound is > 0. Needs the Gram (see --gram).")
@json_options
@_scheduler_option
@click.pass_context
@_friendly
def check_cmd(ctx, data, activation, T, sigma_w, sigma_u, sigma_v, singular_tol, sphere_rtol, normalise, gram, certify,
              as_json, json_out, scheduler):
    """Check data and activation against the Neural-ODE NTK theory.

    Reports Assumption 1, whether the rows lie on the sphere and are distinct, the NTK Gram's
    lambda_min and condition number, the Theorem-2 step size eta = 1/||X||_2^2 and the
    predicted loss contraction 1 - eta*lambda_min.  With --certify, also a proven lower bound
    lambda_min_certified (and the kind of certificate).  Exit code 1 when a check fails
    (lambda_min <= singular-tol, Assumption 1 fails, data off the sphere, duplicate rows, the Gram cannot be
    computed, or with --certify a certified bound <= 0).  When a cheap check already fails the Gram
    (and the certificate) is skipped unless --gram always.

    Example: kernelcalc check --data X.npy --activation softplus --T 1
    """
    from kernelcalc.studies.checks import check
    from kernelcalc.data import load_array, sphere_normalise

    X = load_array(data)
    if normalise:
        X = sphere_normalise(X)
    act = _resolve(activation)
    params = _node_params(T, sigma_w, sigma_u, sigma_v)
    report = check(X, activation=act, singular_tol=singular_tol, sphere_rtol=sphere_rtol, gram=gram, certify=certify, **params,
                   client=scheduler)   # the address: check connects, and closes its client
    emit(report, str(report), as_json=as_json, json_out=json_out)
    if not report.ok:
        click.echo("Error: check failed: " + "; ".join(" ".join(p.split()) for p in report.problems), err=True)
        ctx.exit(1)
