r"""The verdict of a long-time gradient flow (:func:`~kernelcalc.divergent_flow`) from its records.

Fits over the final ``window_decades`` decades of the log-spaced records (:func:`_window_fits`: the growth
exponent $\beta$ and log slope $\gamma$ of $\|\theta\|$, the loss-decay exponent $\alpha$ from
$-dL/d\ln t=t\|\nabla L\|^2$, the raw asymptote $L_\infty$, the settling of $\theta$), the decision
``"divergent"`` / ``"convergent"`` / ``"undetermined"`` with its reason (:func:`_decide`) and the reported
asymptote (:func:`_loss_asymptote`).  The criteria and thresholds are in :mod:`kernelcalc.training.divergence`.
"""

from __future__ import annotations

import math

import numpy as np

from ..empirical.montecarlo import fit_line

__all__ = ["VERDICTS"]

VERDICTS = ("divergent", "convergent", "undetermined")


def _window_fits(times, loss, pnorm, gnorm, thetas, window_decades) -> dict:
    """Fits over the records with $t\\ge t_{end}10^{-w}$ (see the module docstring)."""
    t, L, P, G = (np.asarray(a, float) for a in (times, loss, pnorm, gnorm))
    sel = np.nonzero(t >= t[-1] * 10.0 ** (-window_decades) * (1 - 1e-12))[0]
    lt = np.log(t[sel])
    beta = fit_line(lt, np.log(P[sel]))[0]
    gamma = fit_line(lt, P[sel])[0]
    D = t[sel] * G[sel] ** 2                      # -dL/d ln t along the flow
    with np.errstate(divide="ignore"):
        m, b, rms = fit_line(lt, np.where(D > 0, np.log(D), np.nan))
    alpha = None if m is None else -m
    l_inf_raw = c = None
    if alpha is not None and alpha > 0:
        c = math.exp(b) / alpha
        l_inf_raw = float(np.mean(L[sel] - D / alpha))
    remaining = 2 * t[sel[-1]] * G[sel[-1]] / (alpha - 1) if alpha is not None and alpha > 1 else None
    dP = np.diff(P[sel])
    i0, i1 = sel[0], sel[-1]
    return dict(
        n=int(sel.size), t_start=float(t[i0]), t_end=float(t[i1]), beta=beta, gamma=gamma,
        alpha=alpha, c=c, l_inf_raw=l_inf_raw, fit_rms=rms,
        grad_slope=None if alpha is None else -(1 + alpha) / 2,
        growth_bound=(1 - alpha) / 2 if alpha is not None and alpha > 0 else None, remaining_path=remaining,
        monotone=float(np.mean(dP > 0)) if dP.size else float("nan"),
        settle=float(np.linalg.norm(thetas[i1] - thetas[i0]) / max(np.linalg.norm(thetas[i1]), 1e-300)),
        loss_ratio=float(L[i0] / L[i1]) if L[i1] > 0 else float("inf"),
    )


def _decide(fit: dict, grad_end: float, norm_end: float, th: dict) -> tuple[str, str]:
    """(verdict, reason) from the window fits and the thresholds ``th``."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3g}"  # noqa: E731
    if fit["n"] < th["min_window_records"]:
        return "undetermined", (f"only {fit['n']} records in the final {th['window_decades']:g} decade(s) "
                                f"(need {th['min_window_records']}): increase n_records or t_max")
    settled = fit["settle"] <= th["settle_rtol"]
    if settled and grad_end <= th["grad_tol"]:
        return "convergent", (f"theta settled: |theta(t_end)-theta(t_end/{10 ** th['window_decades']:g})|/|theta| = "
                              f"{fit['settle']:.3g} <= settle_rtol {th['settle_rtol']:g} and |grad L| = "
                              f"{grad_end:.3g} <= grad_tol {th['grad_tol']:g}: a critical point")
    alpha = fit["alpha"]
    checks = {
        f"|theta| grows (beta = {fmt(fit['beta'])} >= {th['min_growth_exponent']:g})":
            fit["beta"] is not None and fit["beta"] >= th["min_growth_exponent"],
        f"|theta| increases monotonically ({fit['monotone']:.0%} of steps, need {th['monotone_fraction']:.0%})":
            fit["monotone"] >= th["monotone_fraction"],
        f"theta has not settled (|dtheta|/|theta| = {fit['settle']:.3g} > {th['settle_rtol']:g})": not settled,
        f"the loss decreases (x1/{fit['loss_ratio']:.3g} over the window)": fit["loss_ratio"] > 1,
        f"|grad L| -> 0 non-integrably ({th['min_loss_decay_exponent']:g} < alpha = {fmt(alpha)} <= "
        f"{th['max_loss_decay_exponent']:g})":
            alpha is not None and th["min_loss_decay_exponent"] < alpha <= th["max_loss_decay_exponent"],
        f"-dL/dln t is a power law (rms log-residual {fmt(fit['fit_rms'])} <= {th['max_loss_fit_rms']:g})":
            fit["fit_rms"] is not None and fit["fit_rms"] <= th["max_loss_fit_rms"],
    }
    if all(checks.values()):
        return "divergent", "; ".join(checks)
    hints = []
    if settled:
        hints.append(f"theta settled but |grad L| = {grad_end:.3g} > grad_tol {th['grad_tol']:g}")
    elif alpha is not None and alpha > th["max_loss_decay_exponent"]:
        hints.append(f"|grad L| ~ t^-{(1 + alpha) / 2:.3g} is integrable: remaining path ~ "
                     f"{fit['remaining_path']:.3g} vs |theta| = {norm_end:.3g}, which points to convergence")
    elif alpha is None or alpha <= th["min_loss_decay_exponent"]:
        hints.append("the loss decay is still accelerating (a transient)")
    elif fit["fit_rms"] is not None and fit["fit_rms"] > th["max_loss_fit_rms"]:
        hints.append("the loss is not yet in a power-law regime (a transient)")
    if not settled and (fit["beta"] is None or fit["beta"] < th["min_growth_exponent"]):
        hints.append("theta neither settled nor clearly growing")
    hints.append("integrate longer (increase t_max)")
    missed = [k for k, ok in checks.items() if not ok]
    return "undetermined", "not met: " + "; ".join(missed) + " -- " + "; ".join(hints)


def _loss_asymptote(fit: dict, verdict: str, l_end: float, th: dict) -> tuple[float | None, float | None, str]:
    r"""``(alpha, L_inf, note)`` as reported: for a convergent run the critical value $L(t_{end})$ (no
    $\alpha$); else the fitted $\alpha$ and $L_\infty$: 0 within ``asymptote_zero_rtol`` of $L(t_{end})$,
    ``None`` when no power law fits (module docstring of :mod:`kernelcalc.training.divergence`)."""
    if verdict == "convergent":
        return None, l_end, "critical value L(t_end)"
    alpha, raw = fit["alpha"], fit["l_inf_raw"]
    if raw is None:
        return alpha, None, "no L_inf estimate: the loss decay is accelerating over the window (alpha <= 0)"
    if raw <= th["asymptote_zero_rtol"] * l_end:
        return alpha, 0.0, (f"L_inf ~ 0: raw estimate {raw:.3g} = {raw / l_end:.2g} L(t_end) <= "
                            f"{th['asymptote_zero_rtol']:g} L(t_end), a power-law decay to 0")
    if raw <= l_end:
        return alpha, raw, f"L_inf = {raw:.4g} > 0: the loss levels off at an asymptotic critical value"
    return alpha, None, f"no L_inf estimate: raw {raw:.3g} exceeds L(t_end) = {l_end:.3g} (no power law fits)"
