"""The CLI's on-disk cache of symbolic results: the Assumption-1 report and the derivation (text, LaTeX,
JSON) of an activation and model.

The sympy work behind ``kernelcalc limit`` and ``kernelcalc derive`` (limits, suprema, pretty printing)
takes about half a second per activation and gives the same answer every time, so the CLI keeps it in
``<cache folder>/kernelcalc-symbolic/<key>.json`` (the folder of :func:`kernelcalc.cli.compilation_cache_folder`,
per user; ``KERNELCALC_JAX_CACHE=0`` turns this cache off too).

**Safety.**  The key is the SHA-256 of everything the results depend on: the activation (name,
``sympy.srepr`` of its expression, parameters, built-in family), the model, the versions of kernelcalc
and sympy, and the source text of the modules that compute them (``theory/activations.py``,
``assumptions.py``, ``symbolic.py``, ``duals.py``, ``duals_ops.py``, ``recursion.py``): editing any of them, or
upgrading sympy, is a miss.  An entry that cannot be read or does not match its key is recomputed and rewritten;
files are written atomically (temporary file, then rename), and a cache that cannot be written is
skipped silently (the command works without it).  The library itself never reads or writes this cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile

__all__ = ["CachedDerivation", "symbolic_results", "cache_key"]

_SOURCES = ("activations.py", "assumptions.py", "symbolic.py", "duals.py", "recursion.py", "duals_ops.py")
_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class CachedDerivation:
    """What the CLI prints of a :class:`~kernelcalc.Derivation`: its ``text()``, ``latex()`` and ``to_dict()``."""

    text_: str
    latex_: str
    doc: dict

    def text(self) -> str:
        return self.text_

    def latex(self) -> str:
        return self.latex_

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.doc))   # a fresh copy


def _source_digest() -> str:
    theory = pathlib.Path(__file__).resolve().parent.parent / "theory"
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode())
        h.update((theory / name).read_bytes())
    return h.hexdigest()


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kernelcalc")
    except PackageNotFoundError:   # run from a source tree that is not installed: the source digest decides
        return "unknown"


def cache_key(act, model: str) -> str:
    """The entry name for ``act`` (an :class:`~kernelcalc.Activation`) and ``model`` (see module doc)."""
    import sympy as sp

    material = [_FORMAT, _package_version(), sp.__version__, _source_digest(), act.name, sp.srepr(act.expr),
                [list(p) for p in act.params], act.builtin, model]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def _folder() -> pathlib.Path | None:
    from kernelcalc.cli import compilation_cache_folder

    base = compilation_cache_folder()
    return None if base is None else pathlib.Path(base) / "kernelcalc-symbolic"


def _report_from(doc: dict):
    from kernelcalc.theory.assumptions import Assumption1Report, Verdict

    names = ("phi_lipschitz", "dphi_lipschitz", "nonlinear", "non_polynomial")
    verdicts = {k: Verdict(doc[k]["holds"], doc[k]["reason"], doc[k]["constant"]) for k in names}
    return Assumption1Report(doc["activation"], doc["expr"], **verdicts)


def _report_fields(report) -> dict:
    return {"activation": report.activation, "expr": report.expr,
            **{k: dataclasses.asdict(v) for k, v in report.verdicts.items()}}


def _read(path: pathlib.Path, key: str) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != key:
        return None
    return doc


def _write(path: pathlib.Path, doc: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    except OSError:   # read-only or full disk: run without the cache
        try:
            os.unlink(tmp)
        except (OSError, NameError):
            pass


def symbolic_results(act, model: str = "node", *, report: bool = True):
    """``(Assumption1Report or None, CachedDerivation)`` for ``act`` and ``model``, from the cache or
    computed (and stored).  A report read from the cache is also handed to
    :func:`kernelcalc.theory.assumptions.remember_analysis`, so the kernels' Assumption-1 check does not
    redo it."""
    from kernelcalc.theory.assumptions import analyse, remember_analysis

    folder = _folder()
    key = path = doc = None
    if folder is not None:
        key = cache_key(act, model)
        path = folder / f"{key}.json"
        doc = _read(path, key)
        if doc is not None and (not report or "report" in doc):
            try:
                rep = _report_from(doc["report"]) if report else None
                derivation = CachedDerivation(doc["text"], doc["latex"], doc["derivation"])
            except (KeyError, TypeError):
                doc = None
            else:
                if rep is not None:
                    remember_analysis(act, rep)
                return rep, derivation
    from kernelcalc.theory.symbolic import derive

    d = derive(act, model=model)
    derivation = CachedDerivation(d.text(), d.latex(), d.to_dict())
    rep = analyse(act) if report else None
    if path is not None:
        new = {"key": key, "text": derivation.text_, "latex": derivation.latex_, "derivation": derivation.doc}
        if rep is not None:
            new["report"] = _report_fields(rep)
        elif doc is not None and isinstance(doc.get("report"), dict):
            new["report"] = doc["report"]       # keep what an earlier ``limit`` stored
        _write(path, new)
    return rep, derivation
