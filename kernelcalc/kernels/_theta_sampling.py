r"""The sphere's $\theta$ series of a Gram plan (:mod:`kernelcalc.kernels._gram`): its samples at Lobatto points in
$\theta$ (or in the graded or sinh variable of :mod:`._interp`), doubled until the interpolant predicts the new ones
to ``tol``, or until its Chebyshev tail is resolved (:func:`_resolved_tail`).  :mod:`._theta_pieces` samples each
piece of a split table with it."""

from __future__ import annotations

import math

import numpy as np

from .._validation import accuracy_shortfall
from ._gram_base import R_MAX, R_START
from ._interp import SinhAngle, chebyshev_coefficients, chebyshev_matrix, cos_theta, graded_cos_theta, lobatto

__all__ = ["_theta_samples", "_resolved_tail"]


def _theta_samples(pair_fn, vx, vy, tol: float, strict: bool, what: str, graded: bool = False, r_start: int = R_START):
    """Values ``(R+1, G, 2)`` of (nngp, ntk) at the Lobatto points in theta (``graded``: in the graded
    variable of :mod:`~kernelcalc.kernels._interp`, or in the :class:`~kernelcalc.kernels._interp.SinhAngle`
    given) for the G norm pairs (vx[g], vy[g]) (all nonzero); R
    doubled until the interpolant predicts the new points (direct solves at held-out angles) to ``tol``
    (relative to the largest value of each output), or says it did not.  Returns (F, R, err); ``err`` is
    ``None`` when graded sampling stopped converging (a doubling from at least 65 nodes made the measured
    error larger: the solves very close to theta = 0, which only the graded nodes reach, disagree with
    the rest), so that the caller samples in theta instead."""
    root = np.sqrt(vx * vy)[None, :]
    sinh = graded if isinstance(graded, SinhAngle) else None
    cos_of = (lambda u: np.cos(sinh.theta(u))) if sinh is not None else graded_cos_theta if graded else cos_theta

    at_angles = getattr(pair_fn, "at_angles", None) if graded else None

    def sample(u):
        c = root * cos_of(u)[:, None]
        if at_angles is not None:   # the exact angle pi sin^2(pi (1 + u) / 4) of the graded variable (theta ~ 1e-8)
            th = np.pi * np.sin(0.25 * np.pi * (1.0 + np.asarray(u))) ** 2 if sinh is None else sinh.theta(u)
            th = np.broadcast_to(th[:, None], c.shape)
            vals = at_angles(np.broadcast_to(vx, c.shape), np.broadcast_to(vy, c.shape), th)
        else:
            vals = pair_fn(np.broadcast_to(vx, c.shape), np.broadcast_to(vy, c.shape), c)
        return np.stack(vals, axis=-1)                                     # (len(u), G, 2)

    R = r_start
    F = sample(lobatto(R))
    prev = math.inf
    while True:
        resolved = _resolved_tail(F, R)
        if resolved is not None and resolved <= tol:     # converged on the R+1 nodes already: no doubling, after
            u_chk = lobatto(2 * R)[1::2][np.linspace(0, R - 1, _TAIL_CHECKS).astype(int)]   # a few held-out solves
            pred = np.tensordot(chebyshev_matrix(u_chk, R), chebyshev_coefficients(F), axes=(1, 0))
            scale = np.maximum(np.max(np.abs(F), axis=(0, 1)), 1e-300)
            measured = float(np.max(np.abs(pred - sample(u_chk)) / scale))
            if max(resolved, 2.0 * measured) <= tol:
                return F, R, max(resolved, 2.0 * measured)
        u_new = lobatto(2 * R)[1::2]
        F_new = sample(u_new)
        predicted = np.tensordot(chebyshev_matrix(u_new, R), chebyshev_coefficients(F), axes=(1, 0))
        scale = np.max(np.abs(np.concatenate([F, F_new])), axis=(0, 1))
        err = float(np.max(np.abs(predicted - F_new) / np.maximum(scale, 1e-300)))
        merged = np.empty((2 * R + 1,) + F.shape[1:])
        merged[0::2], merged[1::2] = F, F_new
        F, R = merged, 2 * R
        if err <= tol:
            break
        if graded and R >= 128 and err > prev:   # no progress: samples near theta = 0 disagree (see _GroupPlan)
            return F, R, None
        prev = err
        if R >= R_MAX:
            accuracy_shortfall(f"{what}: interpolation in theta stopped at {R + 1} nodes with relative error "
                               f"estimate {err:.1e} > tol = {tol:.1e}", strict)
            break
    return F, R, err


_TAIL_FROM = 64         # theta nodes - 1 from which a resolved coefficient tail ends the doubling
_TAIL_FACTOR = 10.0     # error estimate of a resolved series: this times its tail coefficients
_TAIL_CHECKS = 8        # held-out solves that confirm a resolved series (their error, doubled, bounds the estimate)


def _resolved_tail(F, R: int):
    r"""The error estimate of the degree-``R`` interpolant of the samples ``F`` ``(R+1, G, 2)`` from its own
    Chebyshev coefficients, or ``None`` when they do not show a resolved series.

    The doubling of :func:`_theta_samples` validates the degree-$R$ interpolant by $R$ new samples and then
    keeps all $2R+1$: a series that is already resolved at $R$ costs twice the solves it needs (sin, cos at
    $\sigma_wT=10$: 513 nodes where 257 suffice).  Resolved means: $R\ge$ ``_TAIL_FROM`` and the largest
    coefficient of the last eighth, relative to the largest value of each output, is below $10^{-6}$ of the
    largest of the first eighth (the decay is visible over the whole range).  For a geometrically decaying
    series the interpolation error is bounded by a few times its trailing coefficients (truncation plus
    aliasing: $2\sum_{j>R}|c_j|$); the estimate is ``_TAIL_FACTOR`` times the tail.  :func:`_theta_samples` then
    solves ``_TAIL_CHECKS`` held-out angles (midpoints between the nodes) and keeps the series only when twice
    their error is within ``tol`` too, with it as a floor of the estimate (at the solves' noise floor the tail
    alone underestimates: measured sin at $\sigma_wT=10$, tail estimate 6e-13, error between the nodes 1.6e-12)."""
    if R < _TAIL_FROM:
        return None
    coef = np.abs(chebyshev_coefficients(F))
    scale = np.maximum(np.max(np.abs(F), axis=(0, 1)), 1e-300)
    k = R // 8
    head = float(np.max(coef[:k] / scale))
    tail = float(np.max(coef[R + 1 - k:] / scale))
    if not (math.isfinite(tail) and tail <= 1e-6 * head):
        return None
    return _TAIL_FACTOR * tail
