r"""The dual of a piecewise-polynomial activation at fixed variances, for the many covariances of a Newton solve:
exact values at anchors, Taylor updates between them.

A cross-kernel solve (:mod:`kernelcalc.kernels.ode_grid`) evaluates $(C,\dot C)$ at every grid cell with the
variances $q_1,q_2$ fixed and a covariance $c$ that moves less and less from sweep to sweep (Newton steps: a change
of ~1e-5 after an interpolated start, then ~1e-10, then rounding).  Price's theorem
$\partial_c^mC=E[\phi^{(m)}(a)\phi^{(m)}(b)]$ gives the Taylor coefficients.  A continuous piecewise polynomial of
degree $d\le2$ (a relu sum, :mod:`.duals_pwl`: $d=1$; hard-swish, squared relu, :mod:`.duals_pwp`: $d=2$) with
breakpoints $u_k$, where $\phi^{(i)}$ jumps by $J_{ki}$, has for $m>d$ only Dirac masses and their derivatives,
$\phi^{(m)}=\sum_k\sum_{i\le d}J_{ki}\,\delta^{(m-1-i)}_{u_k}$, so

$$C^{(m)}=\sum_{kl}\sum_{ij}J_{ki}J_{lj}\;p\,G_{m-1-i,\,m-1-j}\Big|_{(a,b)=(u_k,u_l)},$$

$p$ the bivariate normal density of $(a,b)$ and $\partial_a^\alpha\partial_b^\beta p=(-1)^{\alpha+\beta}pG_{\alpha\beta}$
(bivariate Hermite polynomials: $G_{00}=1$, $G_{\alpha+1,\beta}=AG_{\alpha\beta}-\Lambda_{11}\alpha G_{\alpha-1,\beta}
-\Lambda_{12}\beta G_{\alpha,\beta-1}$, $G_{\alpha,\beta+1}=BG_{\alpha\beta}-\Lambda_{12}\alpha G_{\alpha-1,\beta}
-\Lambda_{22}\beta G_{\alpha,\beta-1}$, $\Lambda=\Sigma^{-1}=\frac1D\begin{pmatrix}q_2&-c\\-c&q_1\end{pmatrix}$,
$D=q_1q_2-c^2$, $(A,B)=\Lambda(a,b)$): exponentials, no bivariate normal CDF.  A relu sum ($J_{k1}=\gamma_k$) has
$\ddot C=\sum\gamma_k\gamma_lp$, $C^{(3)}=\sum\gamma_k\gamma_lpG_{11}$, $C^{(4)}=\sum\gamma_k\gamma_lpG_{22}$.  At $d=2$,
$\ddot C=E[\phi''\phi'']$ with $\phi''=R+\sum_kJ_{k1}\delta_{u_k}$, $R=r_0+\sum_kr_k\mathbb 1_{z>u_k}$ piecewise constant
($r_k=J_{k2}$): $E[RR]$ is a step sum's dual (:func:`~kernelcalc.theory.duals_pwl.step_joint`, orthant
probabilities), $E[R(a)\,\delta(b-v)]=p_b(v)\,(r_0+\sum_kr_k\Phi((\mu-u_k)/\sigma))$ with $a\,|\,b=v\sim N(cv/q_2,D/q_2)$,
and $E[\delta\delta]=p$.

The first call evaluates $(C,\dot C)$ exactly (the closed form: for two breakpoints four orthant probabilities a
cell, ~90 % of a relu sum's Neural-ODE solve) and $\ddot C,C^{(3)},C^{(4)}$: the cell's *anchor* $c_0$.  A later call
at $c=c_0+\delta$ takes

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

from .bivariate_normal import normal_cdf
from .duals_ops import NUMPY_OPS
from .duals_pwl import pwl_joint

__all__ = ["TaylorAtVariances", "relu_sum_at_variances", "pwp_at_variances"]

#: a Taylor value is used where its estimated remainder is below this times the cell's scale
_EPS = 1e-16
#: the order K of the expansion of C (Cdot: K - 1).  Measured (relu6, 2000 standardised rows): K = 6 and 8 accept
#: 86 % and 98 % of the moves of 1e-3 (K = 4: 6 %) but their anchors cost 1.3x and 2.2x, and the exact cells fell
#: only 13 % and 19 % (most are the first anchor of each solve): 7.3 s -> 8.0 s and 9.2 s
_ORDER = 4
#: orders past it computed for the remainder estimate (the next term itself: an estimate from the last terms summed
#: alone missed where they vanish at the anchor, C''' and C'''' of a user piecewise polynomial near c = 0, and accepted
#: moves 3e-8 off; review of stop 35.  One order: the derivatives that vanish by symmetry (hardtanh at c = 0: the even
#: ones) alternate; two cost more per anchor: hard-swish on 2000 standardised rows 19.5 s against 18.3, busy box)
_CHECK = 1
#: cells per block of an anchor's exact evaluation: its temporaries (four breakpoint pairs a cell, sixteen Hermite
#: polynomials) stay in cache and are not fresh pages each call.  Measured, the Hermite polynomials alone: 986 ns a cell
#: at 160 000 cells (the pair ladder's batches), 110 ns at 4000-16 000
_BLOCK = 8192


def relu_sum_at_variances(rep):
    r"""``(q1, q2) -> TaylorAtVariances`` of the relu sum ``rep`` $=(\alpha,\beta,(u_k),(\gamma_k))$ ($J_{k1}=\gamma_k$)."""
    _, _, us, gs = rep
    jumps = tuple((0.0, g) for g in gs)
    return lambda q1, q2: TaylorAtVariances(lambda a, b, c: pwl_joint(NUMPY_OPS, rep, a, b, c), us, jumps, q1, q2)


def pwp_at_variances(rep, joint):
    r"""``(q1, q2) -> TaylorAtVariances`` of the continuous piecewise polynomial ``rep`` of degree 2
    (:func:`~kernelcalc.theory.duals_pwp.piecewise_polynomial`: $D_k=\sum_ie_{ki}(z-u_k)^i$, so $J_{ki}=i!\,e_{ki}$) whose
    closed form is ``joint(q1, q2, c, w) -> (C, Cdot, sum_kl w_k w_l P(a > u_k, b > u_l))`` (the orthants it computes
    anyway: :func:`~kernelcalc.theory.duals_pwp.pwp_joint` with weights); ``None`` for another degree or a $\phi$
    that jumps."""
    p0, us, es = rep[:3]
    if any(len(e) > 3 for e in es) or len(p0) > 3 or any(e[0] != 0.0 for e in es):
        return None
    jumps = tuple(tuple(math.factorial(i) * (e[i] if i < len(e) else 0.0) for i in range(3)) for e in es)
    if not any(j[2] for j in jumps):
        return None
    regular = (2.0 * (p0[2] if len(p0) > 2 else 0.0), tuple(j[2] for j in jumps))
    return lambda q1, q2: TaylorAtVariances(lambda a, b, c: joint(a, b, c, regular[1]), us, jumps, q1, q2, regular)


def _hermite(A, B, L11, L12, L22, order):
    r"""$G_{\alpha\beta}$ for $\alpha,\beta\le$ ``order`` (module doc's recurrence), a dict."""
    G = {(0, 0): np.ones_like(A)}
    for i in range(order + 1):
        if i:
            G[(i, 0)] = A * G[(i - 1, 0)] - L11 * (i - 1) * G.get((i - 2, 0), 0.0)
        for j in range(1, order + 1):
            G[(i, j)] = B * G[(i, j - 1)] - L12 * i * G.get((i - 1, j - 1), 0.0) - L22 * (j - 1) * G.get((i, j - 2), 0.0)
    return G


def _density(u, v, L11, L12, L22, norm):
    """``(p, A, B)`` at the breakpoints ``(u, v)``: the density and $(A,B)=\\Lambda(u,v)$."""
    A, B = L11 * u + L12 * v, L12 * u + L22 * v
    return norm * np.exp(-0.5 * (A * u + B * v)), A, B


class TaylorAtVariances:
    r"""``c -> (C, Cdot)`` at the fixed variances ``q1``, ``q2`` (broadcast with every ``c`` it is called with) of a
    continuous piecewise polynomial of degree $\le2$: exact at anchors (``joint(q1, q2, c) -> (C, Cdot)``, 1-D),
    Taylor-updated between (module doc).  ``us``: the breakpoints; ``jumps[k][i]``: $J_{ki}$, the jump of
    $\phi^{(i)}$ at $u_k$ ($i\le$ the degree); ``regular``: at degree 2, $(r_0,(r_k))$ of the piecewise-constant part
    $R$ of $\phi''$ (``None`` at degree 1).  ``exact_cells`` counts the cells evaluated by the closed form,
    ``taylor_cells`` those updated."""

    def __init__(self, joint, us, jumps, q1, q2, regular=None):
        self.joint, self.us, self.jumps, self.regular = joint, tuple(us), tuple(jumps), regular
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
        c0, C0, Cd0, *d, r = self.anchor          # d: the derivatives of orders 2.._ORDER + _CHECK
        dl = c - c0
        x = np.abs(dl)
        K = _ORDER
        # the remainders: the next terms computed (_CHECK orders past the sum) four times over, and at least the
        # geometric extrapolation of the last two terms summed, and their ratio to the distance to |rho| = 1
        # (an overflow, a huge move or a derivative past the float range, is an infinite remainder: evaluated exactly)
        with np.errstate(over="ignore", invalid="ignore"):
            nxt = [np.abs(d[m - 2]) * x ** m / math.factorial(m) for m in range(K - 1, K + 1 + _CHECK)]   # C: K-1 ..
            nd = [np.abs(d[m - 2]) * x ** (m - 1) / math.factorial(m - 1) for m in range(K - 1, K + 1 + _CHECK)]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio2 = np.where(r > 0, (x / np.where(r > 0, r, 1.0)) ** 2, np.inf)
            rem_C, rem_Cd = (np.maximum.reduce([4.0 * sum(t[2:]), t[0] * ratio2,
                                                np.where(t[0] > 0, 10.0 * t[1] * t[1] / t[0],
                                                         np.where(t[1] > 0, np.inf, 0.0))]) for t in (nxt, nd))
        n = np.sqrt(q1 * q2)
        ok = (x <= 0.25 * r) & (rem_C <= _EPS * (np.abs(C0) + n * np.abs(Cd0))) & (rem_Cd <= _EPS * np.abs(Cd0))
        ok |= x == 0.0
        fk, fk1 = math.factorial(K), math.factorial(K - 1)
        d = d[:K - 1]                                 # (orders 2..K summed)
        C, Cd = d[-1] / fk, d[-1] / fk1            # Horner: C = C0 + sum_m d_m dl^m / m!, Cdot = sum_m d_m dl^(m-1) / (m-1)!
        for m in range(K - 1, 1, -1):
            C = C * dl + d[m - 2] / math.factorial(m)
            Cd = Cd * dl + d[m - 2] / math.factorial(m - 1)
        C = C0 + dl * (Cd0 + dl * C)
        Cd = Cd0 + dl * Cd
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
        """The anchor at 1-D ``q1``, ``q2``, ``c``: ``(c, C, Cdot, d_2, .., d_{K + _CHECK}, r)`` (the derivatives of C of
        orders 2 to K + :data:`_CHECK`, K = :data:`_ORDER`, and the distance r to |rho| = 1) reshaped to ``shape``; in
        blocks of :data:`_BLOCK` cells."""
        n = c.size
        if n <= _BLOCK:
            return tuple(v.reshape(shape) for v in self._exact_block(q1, q2, c))
        parts = [self._exact_block(q1[s:s + _BLOCK], q2[s:s + _BLOCK], c[s:s + _BLOCK]) for s in range(0, n, _BLOCK)]
        return tuple(np.concatenate(vs).reshape(shape) for vs in zip(*parts))

    def _exact_block(self, q1, q2, c):
        """:meth:`_exact` of one block (1-D)."""
        C, Cd, *orthants = self.joint(q1, q2, c)
        D = q1 * q2 - c * c
        live = D > 0.0
        iD = 1.0 / np.where(live, D, 1.0)
        L11, L12, L22 = q2 * iD, -c * iD, q1 * iD
        norm = np.sqrt(iD) / (2.0 * math.pi)
        degree = 1 if self.regular is None else 2
        top = _ORDER + _CHECK
        d = {m: np.zeros_like(c) for m in range(2, top + 1)}
        # every pair of breakpoints at once (rows): the density and its Hermite polynomials, then each order's sum
        us = np.array(self.us)
        U, V = np.repeat(us, us.size)[:, None], np.tile(us, us.size)[:, None]
        p, A, B = _density(U, V, L11, L12, L22, norm)
        G = _hermite(A, B, L11, L12, L22, top - 2)
        J = np.array(self.jumps)                                    # (K, degree + 1)
        for m in range(degree + 1, top + 1):
            for i in range(1, degree + 1):          # (J_k0 = 0: phi is continuous)
                for j in range(1, degree + 1):
                    w = np.outer(J[:, i], J[:, j]).ravel()
                    if np.any(w):
                        d[m] += w @ (p * G[(m - 1 - i, m - 1 - j)])
        if degree == 2:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):   # (cells not live: discarded below)
                d[2] = self._second(q1, q2, c, D, np.outer(J[:, 1], J[:, 1]).ravel() @ p, orthants[0])
        r = np.sqrt(np.maximum(q1 * q2, 0.0)) - np.abs(c)
        r = np.where(live & (r > 0), r, 0.0)      # (no expansion: a zero variance, |rho| = 1)
        d = [np.where(live, d[m], 0.0) for m in range(2, top + 1)]
        return tuple(np.array(np.broadcast_to(v, (c.size,))) for v in (c, C, Cd, *d, r))

    def _second(self, q1, q2, c, D, masses, orthants):
        r"""$\ddot C=E[\phi''\phi'']$ at degree 2 (module doc): $E[RR]=r_0^2+r_0\sum_kr_k(P_k+Q_k)+$ ``orthants``
        ($\sum_{kl}r_kr_lP(a>u_k,b>u_l)$), the cross terms $E[R(a)\,\delta(b-v)]$ (and mirrored) and ``masses``
        ($\sum_{kl}J_{k1}J_{l1}p$, the Dirac masses' part, from the anchor's densities)."""
        r0, rs = self.regular
        kept = [(u, g) for u, g in zip(self.us, rs) if g != 0.0]
        out = r0 * r0 + orthants
        if r0 != 0.0:
            for u, g in kept:
                out = out + r0 * g * (normal_cdf(-u / np.sqrt(np.maximum(q1, 1e-300)))
                                      + normal_cdf(-u / np.sqrt(np.maximum(q2, 1e-300))))
        for qb in (q2, q1):           # E[R(a) delta(b - v)] = p_b(v) E[R(a) | b = v], then with a and b swapped
            qs = np.maximum(qb, 1e-300)
            sig = np.sqrt(np.maximum(D, 0.0) / qs)
            sig = np.where(sig > 0, sig, 1e-300)
            for v, jv in zip(self.us, self.jumps):
                if jv[1] != 0.0:
                    cond = r0 + sum(g * normal_cdf((c * v / qs - u) / sig) for u, g in kept)
                    out = out + jv[1] * np.exp(-0.5 * v * v / qs) / np.sqrt(2 * math.pi * qs) * cond
        return out + masses
