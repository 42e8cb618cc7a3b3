r"""The polar-sector rule tabulated in $(\log q_1,\log q_2,\theta)$: the dual kernels of a piecewise activation
without closed form (kinks at 0: ``Piecewise((tanh(x), x > 0), (x, True))``, ``Max(x, tanh(x)/2)``,
``Abs(tanh(x))``) at a few microseconds per evaluation instead of ~100-200.

The polar-sector rule (:class:`~kernelcalc.theory.gaussian_rules.PolarSectorRule`) sums a few thousand integrand
values per covariance (measured 93 us for $C$, 193 us for $(C,\dot C)$ compiled), and a Neural-ODE Gram evaluates it
some $10^5$ times.  But $C$ and $\dot C$ are smooth functions of three numbers: for kinks at 0 the polar sectors
make them analytic in the angle $\theta=\arccos\rho$ on $[0,\pi]$ (the kinks are rays: $\dot C$'s
$\sqrt{1-\rho}$ is linear in $\theta$), and in the variances on $q>0$.  So they are tabulated once per kernel as a
tensor Chebyshev series in $t_i=\log q_i$ over the variances the solves meet (from the smallest announced input norm's
$\sigma_u^2|x|^2/d$ to $1.05\,q(T)$ of the largest, known when the time grid is chosen) and in $\theta$ on $[0,\pi]$:
symmetric in $(q_1,q_2)$, the degrees doubled (8, 16, 32 in $\log q$; 32, 64, 128 in $\theta$, nested Lobatto points)
until the series' tails are below tol/2.  Measured (coefficient tails of the rule at 1e-13): 20-24 in $\log q$ over
$[0.1, 8]$ (the table: 32), about 13 over $[1, 3]$ (16); in $\theta$ 22-28 at $q=0.1$, 31-44 at $q=1$, 40-62 at $q=4$.  Its error is the tails plus a held-out check against the rule at random points; a table that
cannot meet tol is not used (the rule is, as before).  Variances outside the table (a zero input, a later call with
smaller norms) are evaluated by the rule itself.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._x64 import float64
from ._chebyshev import chebyshev_coefficients, chebyshev_matrix, lobatto
from .gaussian_rules import PolarSectorRule, padded_blocked

__all__ = ["TabulatedPolarRule", "tabulate_polar"]

_M_LEVELS = (8, 16, 32)         # Lobatto degrees in log q (doubled while the tail is above tol / 2)
_R_LEVELS = (32, 64, 128)       # ... in theta on [0, pi]
_HELD_OUT = 48                  # random (q1, q2, theta) checked against the rule
_CHUNK = 8192                   # points per contraction (their (points, (m + 1)^2) temporaries stay small)


def _coefficients(F: np.ndarray, axis: int) -> np.ndarray:
    """Chebyshev coefficients along ``axis`` of values at the Lobatto points (increasing)."""
    return np.moveaxis(chebyshev_coefficients(np.moveaxis(F, axis, 0)), 0, axis)


@dataclasses.dataclass(frozen=True, eq=False)
class TabulatedPolarRule:
    r"""$C$ and $\dot C$ of a :class:`~kernelcalc.theory.gaussian_rules.PolarSectorRule` as tensor Chebyshev series
    (module doc).  ``values_np(q1, q2, c) -> (C, Cdot)`` (numpy; the kinked Neural-ODE solvers); ``expect_pairs``
    (jax) is the rule's own."""

    rule: PolarSectorRule
    fn: object                 # the rule's compiled (C, Cdot) (_compiled), for variances outside the table
    t_lo: float
    t_hi: float
    coef: np.ndarray           # (2, m + 1, m + 1, R + 1): C and Cdot
    error: float               # relative to the largest |C|, |Cdot| of the table
    rule_error: float = 0.0    # the rule's own error estimate (the dual's, before the table's was added)

    @property
    def n_angle(self) -> int:
        return self.rule.n_angle

    @property
    def n_radius(self) -> int:
        return self.rule.n_radius

    @property
    def points(self) -> int:
        # (the cost guards price the rule: the jax paths, e.g. the tensor grid of unequal norms, evaluate it)
        return self.rule.points

    @property
    def degrees(self) -> tuple[int, int]:
        """(degree in log q, degree in theta)."""
        return self.coef.shape[1] - 1, self.coef.shape[3] - 1

    def describe(self) -> str:
        m, R = self.degrees
        return (f"polar sectors, {self.n_angle}x4 angles x {self.n_radius} radii, tabulated: Chebyshev degree {m} in "
                f"log q on [{math.exp(self.t_lo):.3g}, {math.exp(self.t_hi):.3g}] and {R} in theta "
                f"(relative error {self.error:.1e})")

    def expect_pairs(self, pairs, q1, q2, c):
        return self.rule.expect_pairs(pairs, q1, q2, c)

    @float64
    def values_np(self, q1, q2, c):
        r"""$(C,\dot C)$ at broadcast arrays (numpy): the table where both variances lie in it, else the rule."""
        q1, q2, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, c)))
        shape = c.shape
        q1, q2, c = (v.ravel() for v in (q1, q2, c))
        out = np.empty((2, c.size))
        lo, hi = math.exp(self.t_lo) * (1 - 1e-12), math.exp(self.t_hi) * (1 + 1e-12)
        inside = (q1 >= lo) & (q1 <= hi) & (q2 >= lo) & (q2 <= hi)
        idx = np.nonzero(inside)[0]
        m, R = self.degrees
        flat = self.coef.reshape(2, (m + 1) ** 2, R + 1)
        span = self.t_hi - self.t_lo
        for s in range(0, idx.size, _CHUNK):
            k = idx[s:s + _CHUNK]
            n = np.sqrt(q1[k] * q2[k])
            rho = np.clip(c[k] / n, -1.0, 1.0)
            T1 = chebyshev_matrix(np.clip(2.0 * (np.log(q1[k]) - self.t_lo) / span - 1.0, -1.0, 1.0) if span > 0 else 0 * n, m)
            T2 = chebyshev_matrix(np.clip(2.0 * (np.log(q2[k]) - self.t_lo) / span - 1.0, -1.0, 1.0) if span > 0 else 0 * n, m)
            Tt = chebyshev_matrix(2.0 * np.arccos(rho) / math.pi - 1.0, R)
            for o in range(2):
                A = (Tt @ flat[o].T).reshape(k.size, m + 1, m + 1)
                out[o, k] = np.einsum("ni,nij,nj->n", T1, A, T2)
        rest = np.nonzero(~inside)[0]
        if rest.size:
            out[:, rest] = padded_blocked(self.fn, q1[rest], q2[rest], c[rest], points=self.rule.points)
        return out[0].reshape(shape), out[1].reshape(shape)


def _compiled(rule, activation):
    """The rule's (C, Cdot) as one compiled function of flat (q1, q2, c) (jax; the build's and the fallback's)."""
    from .._lazy import jax

    pairs = ((activation.jax_fn, activation.jax_fn), (activation.jax_derivative, activation.jax_derivative))
    return jax.jit(lambda q1, q2, c: rule.expect_pairs(pairs, q1, q2, c))


def _exact(fn, rule, Q1, Q2, TH):
    """The rule's (C, Cdot) (``fn``: :func:`_compiled`) at arrays of variances and angles."""
    n = np.sqrt(Q1 * Q2)
    C, D = padded_blocked(fn, Q1.ravel(), Q2.ravel(), (n * np.cos(TH)).ravel(), points=rule.points)
    return np.stack([C.reshape(Q1.shape), D.reshape(Q1.shape)])


def _values(fn, rule, t, th):
    """(2, m + 1, m + 1, R + 1) values at the log-variances ``t`` (both axes; symmetric: i <= j evaluated) and angles
    ``th``."""
    q = np.exp(t)
    i, j = np.triu_indices(t.size)
    Q1 = np.repeat(q[i][:, None], th.size, axis=1)
    Q2 = np.repeat(q[j][:, None], th.size, axis=1)
    TH = np.broadcast_to(th, Q1.shape)
    got = _exact(fn, rule, Q1, Q2, TH)              # (2, pairs, R + 1)
    F = np.empty((2, t.size, t.size, th.size))
    F[:, i, j] = got
    F[:, j, i] = got
    return F


def _tail(coef: np.ndarray, axis: int, scale: np.ndarray) -> float:
    """Twice the largest |coefficient| of the two highest degrees along ``axis``, relative to ``scale`` (per output)."""
    c = np.abs(np.moveaxis(coef, axis, 1))[:, -2:]
    return float(np.max(np.max(c.reshape(2, -1), axis=1) / scale)) * 2.0


@float64
def tabulate_polar(dual, q_lo: float, q_hi: float, tol: float):
    r"""A :class:`TabulatedPolarRule` of the polar dual ``dual`` (its rule and activation) for variances in
    $[q_{lo},q_{hi}]$ (module doc), or ``None`` when its degrees cannot meet ``tol`` (relative to the largest $|C|$,
    $|\dot C|$): then the rule itself."""
    rule = dual.rule
    if not isinstance(rule, PolarSectorRule) or not (0 < q_lo <= q_hi and math.isfinite(q_hi)):
        return None
    fn = _compiled(rule, dual.activation)
    t_lo, t_hi = math.log(q_lo), math.log(q_hi)
    mi, ri = 0, 0
    m, R = _M_LEVELS[mi], _R_LEVELS[ri]

    def nodes(m, R):
        return (t_lo + (t_hi - t_lo) * (lobatto(m) + 1.0) / 2.0 if t_hi > t_lo else np.full(m + 1, t_lo),
                math.pi * (lobatto(R) + 1.0) / 2.0)

    F = _values(fn, rule, *nodes(m, R))
    while True:
        coef = _coefficients(_coefficients(_coefficients(F, 1), 2), 3)
        scale = np.maximum(np.max(np.abs(F).reshape(2, -1), axis=1), 1e-300)
        tail_t = _tail(coef, 2, scale) if t_hi > t_lo else 0.0
        tail_th = _tail(coef, 3, scale)
        if tail_t <= tol / 2 and tail_th <= tol / 2:
            break
        if tail_th > tol / 2 and ri + 1 < len(_R_LEVELS):
            ri += 1
            R2 = _R_LEVELS[ri]
            t, th = nodes(m, R2)
            G = np.empty(F.shape[:3] + (R2 + 1,))
            G[..., 0::2], G[..., 1::2] = F, _values(fn, rule, t, th[1::2])
            F, R = G, R2
        elif tail_t > tol / 2 and mi + 1 < len(_M_LEVELS):
            mi += 1
            m = _M_LEVELS[mi]
            F = _values(fn, rule, *nodes(m, R))
        else:
            return None
    table = TabulatedPolarRule(rule, fn, t_lo, t_hi, coef, max(tail_t, tail_th))
    # held-out: random variances (log-uniform) and angles against the rule
    rng = np.random.default_rng(0)
    q1 = np.exp(rng.uniform(t_lo, t_hi, _HELD_OUT))
    q2 = np.exp(rng.uniform(t_lo, t_hi, _HELD_OUT))
    # (a third near theta = 0 and pi, where the kinks' sqrt(1 - rho) and the large-q layers are)
    th = np.concatenate([rng.uniform(0.0, math.pi, _HELD_OUT - 2 * (_HELD_OUT // 3)),
                         10.0 ** rng.uniform(-8, 0, _HELD_OUT // 3), math.pi - 10.0 ** rng.uniform(-8, 0, _HELD_OUT // 3)])
    ref = _exact(fn, rule, q1, q2, th)
    got = np.stack(table.values_np(q1, q2, np.sqrt(q1 * q2) * np.cos(th)))
    held = float(np.max(np.max(np.abs(got - ref), axis=1) / scale))
    error = max(tail_t, tail_th, 3.0 * held)
    if not error <= tol:
        return None
    return dataclasses.replace(table, error=error)
