"""Width sweeps: the same training run at several widths (the paper's global-convergence figure)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .._x64 import float64
from .._validation import KernelcalcInputError, positive_int, progress_disable, renamed_keywords
from .._results import JsonResult
from .run import train

__all__ = ["WidthSweep", "width_sweep"]


# ----------------------------------------------------------------------------- width sweep
@dataclasses.dataclass(frozen=True)
class WidthSweep(JsonResult):
    r"""Result of :func:`width_sweep`: one :class:`TrainResult` per width plus width-wise summaries.

    ``widths``; ``kinf_eigenvalues`` (of $K^\infty$, or ``None``); per width: ``ntk_eigenvalues_init``,
    ``eig_rel_err`` ($\max_i|\mu_i(K_0)-\mu_i(K^\infty)|/\mu_{\max}(K^\infty)$), ``dist_final``
    ($\|\theta_k-\theta_0\|$), ``rel_change`` (group -> $\|\theta_k-\theta_0\|/\|\theta_0\|$), ``ntk_drift``
    (max over the run), ``train_loss``, ``test_loss`` (final); ``slopes``: log-log slopes vs width.

    **Failures:** ``width_failed`` (one flag per width: that width's run failed numerically, see
    :class:`TrainResult`), ``failed`` (any width failed) and ``failure`` (``None``, or each failed width
    with its ``failure``). A failed width's entries are its values at the step where it stopped; it is
    left out of the fitted ``slopes`` of the run (they compare widths at the same step count), not of
    the eigenvalue error at initialisation.
    """

    widths: tuple
    runs: tuple
    kinf_eigenvalues: tuple | None
    eig_rel_err: tuple | None
    dist_final: tuple
    rel_change: dict
    ntk_drift: tuple
    train_loss: tuple
    test_loss: tuple | None
    slopes: dict
    width_failed: tuple = ()
    failed: bool = False
    failure: str | None = None

    def table(self) -> str:
        groups = list(self.rel_change)
        head = (f"{'width':>7} {'L_final/L0':>11} {'test':>10} {'|th-th0|':>9} "
                + " ".join(f"{'rel ' + g:>9}" for g in groups) + f" {'NTK drift':>10} {'eig err':>9}")
        lines = [head]
        for i, w in enumerate(self.widths):
            r = self.runs[i]
            test = f"{self.test_loss[i]:10.3g}" if self.test_loss is not None else f"{'-':>10}"
            eig = f"{self.eig_rel_err[i]:9.3g}" if self.eig_rel_err is not None else f"{'-':>9}"
            lines.append(f"{w:>7} {self.train_loss[i] / r.loss0:11.3g} {test} {self.dist_final[i]:9.4g} "
                         + " ".join(f"{self.rel_change[g][i]:9.3g}" for g in groups)
                         + f" {self.ntk_drift[i]:10.3g} {eig}")
        lines.append("fitted log-log slopes vs width: "
                     + ", ".join(f"{k} {v:+.2f}" for k, v in self.slopes.items()))
        if self.failed:
            lines.append(f"FAILED: {self.failure}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


@float64
@renamed_keywords(rtol="flow_rtol", atol="flow_atol")
def width_sweep(X, y, *, widths: Sequence[int] = (64, 256, 1024), progress=None, **train_kw) -> WidthSweep:
    r"""Run :func:`train` (same data, seed, step size, steps) at each width in ``widths``.

    Lazy-training theory: $\|\theta_k-\theta_0\|$ stays bounded independently of width, while the
    relative change $\|\theta_k-\theta_0\|/\|\theta_0\|$ and the NTK drift shrink (about
    $n^{-1/2}$), and the NTK eigenvalues at initialisation converge to those of $K^\infty$.
    Keyword arguments go to :func:`train` (``width`` is an error here: give ``widths``); ``progress``:
    ``None`` (auto), ``True`` or ``False``. Returns a :class:`WidthSweep` with fitted slopes; a width
    whose run fails numerically is flagged in ``width_failed`` (never raised).
    """
    from ..empirical.montecarlo import fit_slope

    if isinstance(widths, (int, np.integer)) or not len(widths):
        raise KernelcalcInputError(f"widths must be a non-empty list of integers, got {widths!r}")
    if "width" in train_kw:
        raise KernelcalcInputError(f"width does not apply to width_sweep (give widths=[...]), got width={train_kw['width']!r}")
    widths = [positive_int("widths", w) for w in widths]
    progress_disable(progress)
    runs = []
    lam0 = train_kw.pop("lambda0", None)
    for w in widths:
        r = train(X, y, width=w, progress=progress, lambda0=lam0, **train_kw)
        lam0 = r.lambda0 if r.lambda0_source.startswith("lambda_min of the analytic") or lam0 else None
        runs.append(r)
    kinf = runs[0].kinf_eigenvalues
    eig_err = None
    if kinf is not None:
        ki = np.asarray(kinf)
        eig_err = tuple(float(np.max(np.abs(np.asarray(r.ntk_eigenvalues_init) - ki)) / ki[-1]) for r in runs)
    groups = list(runs[0].rel_change_groups)
    rel = {g: tuple(r.rel_change_groups[g][-1] for r in runs) for g in groups}
    dist = tuple(r.dist[-1] for r in runs)
    drift = tuple(max(r.ntk_drift) for r in runs)
    train_loss = tuple(r.final_loss for r in runs)
    test_loss = tuple(r.test_loss[-1] for r in runs) if runs[0].test_loss is not None else None
    failed = tuple(r.failed for r in runs)
    ok = [i for i, f in enumerate(failed) if not f]

    def slope(values):   # failed widths stopped early: not comparable, left out of the fit
        return fit_slope([widths[i] for i in ok], [values[i] for i in ok])

    slopes = {"|theta-theta0|": slope(dist), "NTK drift": slope(drift)}
    slopes.update({f"rel change {g}": slope(rel[g]) for g in groups})
    if eig_err is not None:
        slopes["eig err vs K_inf"] = fit_slope(widths, eig_err)   # at initialisation: every width counts
    failure = "; ".join(f"width {w}: {r.failure}" for w, r in zip(widths, runs) if r.failed) or None
    return WidthSweep(widths=tuple(widths), runs=tuple(runs), kinf_eigenvalues=kinf, eig_rel_err=eig_err,
                      dist_final=dist, rel_change=rel, ntk_drift=drift, train_loss=train_loss,
                      test_loss=test_loss, slopes=slopes, width_failed=failed, failed=any(failed), failure=failure)
