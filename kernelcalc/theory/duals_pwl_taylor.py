r"""A relu sum's $(C,\dot C)$ at fixed variances for the many covariances of a Newton solve: exact values at
anchors, Taylor updates between them.

A cross-kernel solve (:mod:`kernelcalc.kernels.ode_grid`) evaluates $(C,\dot C)$ at every grid cell with the
variances $q_1,q_2$ fixed and a covariance $c$ that moves less and less from sweep to sweep (Newton steps: a change
of ~1e-5 after an interpolated start, then ~1e-10, then rounding).  For a relu sum
$\phi=\alpha+\beta z+\sum_k\gamma_k(z-u_k)_+$ (:mod:`.duals_pwl`), Price's theorem
$\partial_c^mC=E[\phi^{(m)}(a)\phi^{(m)}(b)]$ with $\phi''=\sum_k\gamma_k\delta_{u_k}$ makes every derivative past
$\dot C$ a sum of the bivariate normal density $p$ of $(a,b)$ and its derivatives at the breakpoints
($\partial_cp=\partial_a\partial_bp$):

$$\ddot C=\sum_{kl}\gamma_k\gamma_l\,p,\qquad C^{(3)}=\sum_{kl}\gamma_k\gamma_l\,p\,(AB-e),\qquad
C^{(4)}=\sum_{kl}\gamma_k\gamma_l\,p\,\Big(A^2B^2-4ABe-\frac{q_2}{D}B^2-\frac{q_1}{D}A^2+2e^2+\frac{q_1q_2}{D^2}\Big)$$

at $(a,b)=(u_k,u_l)$, with $D=q_1q_2-c^2$, $A=(q_2a-cb)/D$, $B=(q_1b-ca)/D$, $e=-c/D$
($\partial_ap=-Ap$, $\partial_bp=-Bp$, $\partial_bA=\partial_aB=e$): exponentials, no bivariate normal CDF.

The first call evaluates $(C,\dot C)$ exactly (:func:`~kernelcalc.theory.duals_pwl.pwl_joint`: for two breakpoints
four orthant probabilities a cell, ~90 % of a relu sum's Neural-ODE solve) and these derivatives: the cell's
*anchor* $c_0$.  A later call at $c=c_0+\delta$ takes

$$C\approx C_0+\dot C_0\delta+\ddot C_0\tfrac{\delta^2}2+C^{(3)}_0\tfrac{\delta^3}6+C^{(4)}_0\tfrac{\delta^4}{24},\qquad
\dot C\approx\dot C_0+\ddot C_0\delta+C^{(3)}_0\tfrac{\delta^2}2+C^{(4)}_0\tfrac{\delta^3}6$$

where the remainder of both is below :data:`_EPS` times the cell's scale ($|C_0|+\sqrt{q_1q_2}\,|\dot C_0|$, and
$|\dot C_0|$), and evaluates every other cell exactly, a new anchor.  The remainder after a last term $t_n$ is
estimated as $10\,t_n^2/t_{n-1}$ (terms falling geometrically), and at least $t_{n-1}(|\delta|/r)^2$ with
$r=\sqrt{q_1q_2}-|c_0|$ the distance to the singularity of $p$ at $|\rho|=1$; only $|\delta|\le r/4$ is expanded.
So every value is the closed form's to rounding, and a cell far from its anchor (a cold start's first sweeps) is
simply evaluated.
"""

from __future__ import annotations

import math

import numpy as np

from .duals_ops import NUMPY_OPS
from .duals_pwl import pwl_joint

__all__ = ["ReluSumAtVariances"]

#: a Taylor value is used where its estimated remainder is below this times the cell's scale
_EPS = 1e-16


class ReluSumAtVariances:
    r"""``c -> (C, Cdot)`` of the relu sum ``rep`` at the fixed variances ``q1``, ``q2`` (broadcast with every ``c``
    it is called with): exact at anchors, Taylor-updated between (module doc).  ``exact_cells`` counts the cells
    evaluated by the closed form, ``taylor_cells`` those updated."""

    def __init__(self, rep, q1, q2):
        self.rep = rep
        self.q1, self.q2 = np.asarray(q1, np.float64), np.asarray(q2, np.float64)
        self.anchor = None
        self.exact_cells = self.taylor_cells = 0

    def __call__(self, c):
        c = np.asarray(c, np.float64)
        q1, q2 = (np.broadcast_to(np.maximum(q, 0.0), c.shape) for q in (self.q1, self.q2))
        if self.anchor is None or self.anchor[0].shape != c.shape:
            self.anchor = self._exact(q1.ravel(), q2.ravel(), c.ravel(), c.shape)
            self.exact_cells += c.size
            return self.anchor[1].copy(), self.anchor[2].copy()
        c0, C0, Cd0, d2, d3, d4, r = self.anchor
        dl = c - c0
        x = np.abs(dl)
        # terms of C (t3, t4) and of Cdot (u2 = t3 * 3 / dl, u3 = t4 * 4 / dl) and their remainders
        t3, t4 = np.abs(d3) * x ** 3 / 6.0, np.abs(d4) * x ** 4 / 24.0
        u2, u3 = np.abs(d3) * x * x / 2.0, np.abs(d4) * x ** 3 / 6.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio2 = np.where(r > 0, (x / np.where(r > 0, r, 1.0)) ** 2, np.inf)
            rem_C = np.maximum(np.where(t3 > 0, 10.0 * t4 * t4 / t3, np.where(t4 > 0, np.inf, 0.0)), t3 * ratio2)
            rem_Cd = np.maximum(np.where(u2 > 0, 10.0 * u3 * u3 / u2, np.where(u3 > 0, np.inf, 0.0)), u2 * ratio2)
        n = np.sqrt(q1 * q2)
        ok = (x <= 0.25 * r) & (rem_C <= _EPS * (np.abs(C0) + n * np.abs(Cd0))) & (rem_Cd <= _EPS * np.abs(Cd0))
        ok |= x == 0.0
        C = C0 + dl * (Cd0 + dl * (0.5 * d2 + dl * (d3 / 6.0 + dl * (d4 / 24.0))))
        Cd = Cd0 + dl * (d2 + dl * (0.5 * d3 + dl * (d4 / 6.0)))
        bad = ~ok
        nbad = int(np.count_nonzero(bad))
        self.taylor_cells += c.size - nbad
        if nbad:
            self.exact_cells += nbad
            fresh = self._exact(q1[bad], q2[bad], c[bad], (nbad,))
            for store, value in zip(self.anchor, fresh):
                store[bad] = value
            C[bad], Cd[bad] = fresh[1], fresh[2]
        return C, Cd

    def _exact(self, q1, q2, c, shape):
        """The anchor at 1-D ``q1``, ``q2``, ``c``: ``(c, C, Cdot, C'', C''', C'''', r)`` reshaped to ``shape``."""
        C, Cd = pwl_joint(NUMPY_OPS, self.rep, q1, q2, c)
        _, _, us, gs = self.rep
        D = q1 * q2 - c * c
        live = D > 0.0
        Dl = np.where(live, D, 1.0)
        iD = 1.0 / Dl
        norm = iD ** 0.5 / (2.0 * math.pi)
        e = -c * iD
        A1, B1 = q2 * iD, q1 * iD
        d2 = np.zeros_like(c)
        d3, d4 = np.zeros_like(c), np.zeros_like(c)
        for u, gu in zip(us, gs):
            for v, gv in zip(us, gs):
                A, B = (q2 * u - c * v) * iD, (q1 * v - c * u) * iD
                p = gu * gv * norm * np.exp(-0.5 * (q2 * u * u - 2.0 * c * u * v + q1 * v * v) * iD)
                AB = A * B
                d2 += p
                d3 += p * (AB - e)
                d4 += p * (AB * AB - 4.0 * AB * e - A1 * B * B - B1 * A * A + 2.0 * e * e + A1 * B1)
        r = np.sqrt(np.maximum(q1 * q2, 0.0)) - np.abs(c)
        r = np.where(live & (r > 0), r, 0.0)      # (no expansion: a zero variance, |rho| = 1)
        d2, d3, d4 = (np.where(live, d, 0.0) for d in (d2, d3, d4))
        return tuple(np.array(np.broadcast_to(v, (c.size,))).reshape(shape)
                     for v in (c, C, Cd, d2, d3, d4, r))
