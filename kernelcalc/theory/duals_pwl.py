r"""The closed-form dual of a continuous piecewise-linear activation with breakpoints anywhere (hardtanh
``Max(-1, Min(1, x))``, relu6 ``Min(Max(x, 0), 6)``, a shifted relu ``Max(x - 0.5, 0)``, a user ``Piecewise`` of
linear pieces): its recognition (:func:`relu_sum`) and its formula (:func:`pwl_joint`); and of a piecewise-constant
$\phi$ that jumps away from 0 (``sign(x - 0.3)``, ``Heaviside(x - 1)``: :func:`step_sum`, :func:`step_joint`, the
same orthant probabilities, $\dot C=0$).

**Representation.**  A continuous piecewise-linear $\phi$ with breakpoints $u_1<\dots<u_K$ is
$\phi(z)=\alpha+\beta z+\sum_k\gamma_k\,(z-u_k)_+$: $\beta$ the slope left of $u_1$, $\gamma_k$ the jump of the
slope at $u_k$, $\alpha=\phi(0)-\sum_k\gamma_k(-u_k)_+$.

**Expectations.**  $(a,b)$ centred Gaussian, $\mathrm{Var}\,a=q_1$, $\mathrm{Var}\,b=q_2$, $\mathrm{Cov}=c$;
$s_i=\sqrt{q_i}$, $\rho=c/(s_1s_2)$, $\sigma=\sqrt{1-\rho^2}$, $h=u/s_1$, $k=v/s_2$,
$t_1=(\rho h-k)/\sigma$, $t_2=(\rho k-h)/\sigma$, $L=P(a>u,b>v)=\Phi_2(-h,-k;\rho)$:

- $E[(a-u)_+]=s_1\varphi(h)-u\,\Phi(-h)$, $E[a\,(b-v)_+]=c\,\Phi(-k)$ (Stein), $E[a]=0$, $E[ab]=c$;
- $E[(a-u)_+(b-v)_+]=(c+uv)L+s_1s_2\sigma\varphi(h)\varphi(t_1)-v\,s_1\varphi(h)\Phi(t_1)-u\,s_2\varphi(k)\Phi(t_2)$.
  Derivation (standard units $X=a/s_1$, $Y=b/s_2$): Stein's lemma $E[Xg]=E[\partial_Xg]+\rho E[\partial_Yg]$ on
  $g=(Y-k)_+\mathbb 1_{X>h}$, with $Y\,|\,X=h\sim N(\rho h,\sigma^2)$, gives
  $E[(X-h)_+(Y-k)_+]=(\rho+hk)L+\sigma\varphi(h)\varphi(t_1)-k\varphi(h)\Phi(t_1)-h\varphi(k)\Phi(t_2)$
  (Rosenbaum 1961); $\varphi(h)\varphi(t_1)=\varphi(k)\varphi(t_2)$.  At $\sigma=0$, $t_{1,2}=\pm\infty$ by the sign
  of the numerator, and $\Phi(t)=\frac12$ where it is 0 ($\rho=1$, $h=k$: $E[(X-h)_+^2]=(1+h^2)\Phi(-h)-h\varphi(h)$).

So, with $P_k=\Phi(-h_k)$, $Q_l=\Phi(-k_l)$, $L_{kl}=\Phi_2(-h_k,-k_l;\rho)$, $G_{kl}$ the last expectation,

$\dot C=E[\phi'(a)\phi'(b)]=\beta^2+\beta\sum_k\gamma_k(P_k+Q_k)+\sum_{k,l}\gamma_k\gamma_lL_{kl}$,

$C=\alpha^2+\alpha\sum_k\gamma_k(E[(a-u_k)_+]+E[(b-u_k)_+])+\beta^2c+\beta c\sum_k\gamma_k(P_k+Q_k)
+\sum_{k,l}\gamma_k\gamma_lG_{kl}$.

A zero variance ($q_1=0$, a zero input) is the limit: $h=\pm10^{100}$ (0 for $u=0$) and every term stays finite
(measured against $\phi(0)E[\phi(b)]$ in the tests).  $\Phi_2$ is Genz's BVND
(:func:`~kernelcalc.theory.bivariate_normal.bivariate_normal_cdf`, absolute accuracy $\approx10^{-16}$ at every
$\rho$), so $\dot C$ keeps the $\sqrt{1-\rho}$ form of its kinks to rounding.

**Accuracy** (measured against mpmath in tests/test_duals_piecewise.py): the terms of $C$ are $O(q)$; for a bounded
$\phi$ (hardtanh, relu6) $C$ is $O(1)$ at large $q$, so $C$ loses a factor $\sim q$ to cancellation (relative to
$\sqrt{C(q_1,q_1)C(q_2,q_2)}$): $\sim10^{-15}$ at $q\le10$, $10^{-13}$ at $q=10^3$.  A Neural ODE of a bounded $\phi$
reaches $q\le q_0+\sigma_w^2T\max\phi^2$, so the loss stays small there.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

from ._activation_text import X
from ._piecewise import pieces_or_none
from .bivariate_normal import normal_cdf, orthant_probabilities
from .duals_ops import NUMPY_OPS

__all__ = ["relu_sum", "pwl_joint", "pwl_cdot", "step_sum", "step_joint"]

_ROOT_2PI = math.sqrt(2.0 * math.pi)
_TINY = 1e-100    # the floor of s_i in h = u / s_i (a zero variance: h = +-1e100, whose phi underflows to 0)
_HUGE = 1e150     # t at sigma = 0 (its square does not overflow)


def relu_sum(expr: sp.Expr) -> tuple[float, float, tuple[float, ...], tuple[float, ...]] | None:
    r"""$(\alpha,\beta,(u_k),(\gamma_k))$ of ``expr`` when it is a continuous piecewise-linear function of ``x`` with a
    kink (module doc), else ``None``.  The pieces are sympy's (:func:`~kernelcalc.theory._piecewise._pieces`: ``Max``,
    ``Min``, ``Abs``, ``Piecewise`` ...); each must be a real polynomial of degree $\le1$, neighbours must meet
    (no jump), and the representation must reproduce ``expr`` at 200 points (breakpoints, their neighbourhoods, far
    out) to $10^{-12}$ relative before it is accepted."""
    parsed = _linear_pieces(expr)
    if parsed is None:
        return None
    pieces, slopes, values = parsed
    breaks = [float(p.b) for p in pieces[:-1]]
    scale = 1.0 + max(abs(v) for v in values) + max(abs(s) for s in slopes) * (1.0 + max(abs(u) for u in breaks))
    for k, u in enumerate(breaks):      # continuity at each breakpoint
        left, right = values[k] + slopes[k] * u, values[k + 1] + slopes[k + 1] * u
        if abs(left - right) > 1e-12 * scale:
            return None
    beta = slopes[0]
    kept = [(u, slopes[k + 1] - slopes[k]) for k, u in enumerate(breaks) if slopes[k + 1] != slopes[k]]
    if not kept:
        return None
    us, gs = tuple(u for u, _ in kept), tuple(g for _, g in kept)
    zero = next(i for i, p in enumerate(pieces) if p.b == sp.oo or float(p.b) > 0.0)
    phi0 = values[zero]
    alpha = phi0 - sum(g * max(-u, 0.0) for u, g in kept)
    return (alpha, beta, us, gs) if _reproduces(expr, alpha, beta, us, gs, scale) else None


def polynomial_pieces(expr: sp.Expr, max_degree: int):
    """``(pieces, coefficients)`` of ``expr`` when every one of its (at least two) smooth pieces is a real polynomial
    of degree at most ``max_degree`` in ``x`` (each piece's coefficients in ascending powers, a float array), else
    ``None`` (also :mod:`.duals_pwp`'s)."""
    pieces = pieces_or_none(expr)
    if pieces is None or len(pieces) < 2:
        return None
    polys = []
    for p in pieces:
        e = sp.expand(p.expr)
        if e.free_symbols - {X}:
            return None
        try:
            poly = sp.Poly(e, X)
        except sp.PolynomialError:
            return None
        if poly.degree() > max_degree:
            return None
        coeffs = [complex(v) for v in reversed(poly.all_coeffs())]
        if any(v.imag != 0 or not math.isfinite(v.real) for v in coeffs):
            return None
        polys.append(np.array([v.real for v in coeffs]))
    return pieces, polys


def _linear_pieces(expr: sp.Expr):
    """``(pieces, slopes, values)`` of ``expr`` when every one of its (at least two) smooth pieces is a real polynomial
    of degree at most 1 in ``x`` (slope and value at 0 each), else ``None``."""
    parsed = polynomial_pieces(expr, 1)
    if parsed is None:
        return None
    pieces, polys = parsed
    return pieces, [float(c[1]) if c.size > 1 else 0.0 for c in polys], [float(c[0]) for c in polys]


def step_sum(expr: sp.Expr) -> tuple[float, tuple[float, ...], tuple[float, ...]] | None:
    r"""$(\alpha,(u_k),(c_k))$ of ``expr`` when it is piecewise constant with a jump ($\phi=\alpha+\sum_kc_k
    \mathbb 1_{z>u_k}$: ``sign(x - 0.3)``, ``Heaviside(x - 1)``, a ``Piecewise`` of constants), else ``None``; the
    representation must reproduce ``expr`` at 200 points off the breakpoints (where a jump's own value does not enter
    a Gaussian expectation) to $10^{-12}$ relative.  Its dual (:func:`step_joint`) has $\dot C=0$ (the derivative
    almost everywhere, as for ``sign`` and ``Heaviside``)."""
    parsed = _linear_pieces(expr)
    if parsed is None:
        return None
    pieces, slopes, values = parsed
    if any(sl != 0.0 for sl in slopes):
        return None
    kept = [(float(p.b), values[k + 1] - values[k]) for k, p in enumerate(pieces[:-1]) if values[k + 1] != values[k]]
    if not kept:
        return None
    us, cs = tuple(u for u, _ in kept), tuple(c for _, c in kept)
    u = np.array(us)
    z = np.concatenate([np.linspace(-50.0, 50.0, 101) + 1e-7, (u[:, None] + np.array([-1e-3, 1e-3, -0.3, 0.3])).ravel(),
                        [-1e4, 1e4], np.random.default_rng(0).uniform(u[0] - 3.0, u[-1] + 3.0, 40)])
    rep = values[0] + ((z[:, None] > u) * np.array(cs)).sum(axis=1)
    scale = 1.0 + max(abs(v) for v in values)
    return (values[0], us, cs) if _matches(expr, z, rep, 1e-12 * scale) else None


def step_joint(o, rep, q1, q2, c):
    r"""$(C,\dot C)$ of the step sum ``rep`` $=(\alpha,(u_k),(c_k))$ (:func:`step_sum`) with the operations ``o``:
    $C=\alpha^2+\alpha\sum_kc_k(P_k+Q_k)+\sum_{k,l}c_kc_lL_{kl}$ (module doc's $P_k, Q_l, L_{kl}$), $\dot C=0$."""
    alpha, us, cs = rep
    h, k, r = _standardised(o, us, q1, q2, c)
    n = len(us)
    pairs = [(i, j) for i in range(n) for j in range(n)]
    L = _orthants(o, h, k, r, pairs)
    C = alpha * alpha + 0 * c
    for i in range(n):
        C = C + alpha * cs[i] * (o.Phi(-h[i]) + o.Phi(-k[i]))
    for m, (i, j) in enumerate(pairs):
        C = C + cs[i] * cs[j] * L[m]
    return C, 0 * c


def _standardised(o, us, q1, q2, c):
    r"""$h_k=u_k/s_1$, $k_k=u_k/s_2$ (a zero variance: $\pm$:data:`_HUGE`-like limits through ``_TINY``) and $\rho$."""
    s1, s2 = o.sqrt(q1), o.sqrt(q2)
    if not isinstance(o.pi, sp.Basic):
        s1, s2 = o.where(s1 > _TINY, s1, _TINY), o.where(s2 > _TINY, s2, _TINY)
    return [u / s1 for u in us], [u / s2 for u in us], o.corr(q1, q2, c)


def _orthants(o, h, k, r, pairs, omr=None, tails=None, us=None):
    r"""$L_{ij}=P(a>u_i,b>u_j)=\Phi_2(-h_i,-k_j;\rho)$ for the index ``pairs`` (numeric: one call over all; ``omr``:
    $1-\rho$ exactly; ``tails``: the lists $(\Phi(-h_i))$, $(\Phi(-k_j))$ when known).  numpy: the pairs share the
    Gauss-Legendre angles of each correlation (:func:`~kernelcalc.theory.bivariate_normal.orthant_probabilities`), and
    with the breakpoints ``us`` and ``tails`` given, a pair whose mirror $(-u_i,-u_j)$ is also wanted (hardtanh,
    hard-swish: breakpoints $\pm u$) is not evaluated: $L_{i'j'}=P(X<h_i,Y<k_j)=1-P_i-Q_j+L_{ij}$ (exact; absolute
    error $\sim\epsilon$, Genz's own)."""
    if isinstance(o.pi, sp.Basic):
        return [o.bvn(-h[i], -k[j], r) for i, j in pairs]
    z = 0 * (r + h[pairs[0][0]] + k[pairs[0][1]])    # every limit broadcast with the correlation (mixed shapes)
    h, k = [v + z for v in h], [v + z for v in k]
    if tails is not None:
        tails = ([v + z for v in tails[0]], [v + z for v in tails[1]])
    if not getattr(o, "numpy", False):      # (NUMPY_OPS and its variants: the shared-angle orthants below)
        H, K = o.stack([h[i] for i, _ in pairs]), o.stack([k[j] for _, j in pairs])
        return o.bvn(-H, -K, r)
    index = {p: m for m, p in enumerate(pairs)}
    mirror = {}
    if us is not None and tails is not None and len(set(us)) == len(us):    # (distinct breakpoints: an involution)
        where = {u: i for i, u in enumerate(us)}
        for i, j in pairs:
            m = (where.get(-us[i]), where.get(-us[j]))
            if None not in m and m in index and m not in mirror and (i, j) not in mirror and m != (i, j):
                mirror[m] = (i, j)
    todo = [p for p in pairs if p not in mirror]
    H, K = o.stack([h[i] for i, _ in todo]), o.stack([k[j] for _, j in todo])
    T = None if tails is None else (o.stack([tails[0][i] for i, _ in todo]), o.stack([tails[1][j] for _, j in todo]))
    done = dict(zip(todo, orthant_probabilities(H, K, r, omr=omr, tails=T)))
    for (a, b), (i, j) in mirror.items():
        done[(a, b)] = np.clip(1.0 - tails[0][i] - tails[1][j] + done[(i, j)], 0.0, 1.0)
    return [done[p] for p in pairs]


def _matches(expr, z, rep, tol) -> bool:
    """Whether ``expr`` equals the values ``rep`` at the points ``z`` to ``tol`` (times 1 + |z|)."""
    f = sp.lambdify(X, expr, "numpy")
    try:
        with np.errstate(all="ignore"):
            v = np.asarray(f(z), dtype=complex) * np.ones_like(z)
    except (TypeError, ValueError, ArithmeticError, NameError):
        return False
    return bool(np.all(v.imag == 0) and np.all(np.abs(v.real - rep) <= tol * (1.0 + np.abs(z))))


def _reproduces(expr, alpha, beta, us, gs, scale) -> bool:
    """Whether the relu sum equals ``expr`` at 200 points to ``1e-12 * scale`` (relative to the size of z)."""
    u = np.array(us)
    z = np.concatenate([np.linspace(-50.0, 50.0, 101), (u[:, None] + np.array([-1e-3, 0.0, 1e-3, -0.3, 0.3])).ravel(),
                        [-1e4, -1e3, 1e3, 1e4], np.random.default_rng(0).uniform(u[0] - 3.0, u[-1] + 3.0, 40)])
    rep = alpha + beta * z + (np.maximum(z[:, None] - u, 0.0) * np.array(gs)).sum(axis=1)
    return _matches(expr, z, rep, 1e-12 * scale)


def _pdf(o, x):
    return o.exp(-x * x / 2) / (o.sqrt(2 * o.pi) if o.pi is sp.pi else _ROOT_2PI)


def _ratio(o, num, den):
    r"""``num / den`` for ``den >= 0``, with $\pm$:data:`_HUGE` (0 where ``num`` is 0) at ``den = 0``."""
    safe = o.where(den > 0, den, 1.0)
    at_zero = o.where(num > 0, _HUGE, o.where(num < 0, -_HUGE, 0.0))
    return o.where(den > 0, num / safe, at_zero)


def pwl_joint(o, rep, q1, q2, c, omr=None):
    r"""$(C,\dot C)$ of the relu sum ``rep`` $=(\alpha,\beta,(u_k),(\gamma_k))$ (module doc) with the operations
    ``o`` (:data:`~kernelcalc.theory.duals_ops.NUMPY_OPS`, ``JAX_OPS`` or ``SYMPY_OPS``).  ``omr`` (numpy only):
    $1-\rho$, exactly, in place of the correlation of ``c`` (then ``c`` is ignored): $\sigma=\sqrt{(1-\rho)(1+\rho)}$,
    $\rho h-k=(h-k)-(1-\rho)h$ and $\Phi_2$ (:func:`~kernelcalc.theory.bivariate_normal.bivariate_normal_cdf`) take
    it, so that $C$ and $\dot C$ keep their dependence on the angle at $\rho\to1$
    (:func:`~kernelcalc.theory.duals_gap.relu_sum_gap`)."""
    alpha, beta, us, gs = rep
    symbolic = isinstance(o.pi, sp.Basic)
    s1, s2 = o.sqrt(q1), o.sqrt(q2)
    if omr is not None:
        omr = np.clip(np.asarray(omr, np.float64), 0.0, 2.0)
        c = s1 * s2 * (1.0 - omr)
    h, k, r = _standardised(o, us, q1, q2, c)
    n = len(us)
    pairs = [(i, j) for i in range(n) for j in range(n)]
    if omr is None:
        sig = o.sqrt((1 - r) * (1 + r))
        num1 = [r * h[i] - k[j] for i, j in pairs]
        num2 = [r * k[j] - h[i] for i, j in pairs]
    else:
        r = 1.0 - omr
        sig = np.sqrt(omr * (2.0 - omr))
        num1 = [(h[i] - k[j]) - omr * h[i] for i, j in pairs]
        num2 = [(k[j] - h[i]) - omr * k[j] for i, j in pairs]
    P = [o.Phi(-x) for x in h]
    Q = [o.Phi(-x) for x in k]
    ph, pk = [_pdf(o, x) for x in h], [_pdf(o, x) for x in k]
    if symbolic:
        t1 = [x / sig for x in num1]
        t2 = [x / sig for x in num2]
    else:     # one call of each primitive over all pairs (one traced graph under jax)
        t1, t2 = _ratio(o, o.stack(num1), sig), _ratio(o, o.stack(num2), sig)
    L = _orthants(o, h, k, r, pairs, omr, (P, Q), us)
    C = alpha * alpha + beta * beta * c
    for i in range(n):
        g = gs[i]
        C = C + alpha * g * (s1 * ph[i] - us[i] * P[i] + s2 * pk[i] - us[i] * Q[i]) + beta * g * c * (P[i] + Q[i])
    for m, (i, j) in enumerate(pairs):
        u, v = us[i], us[j]
        G = (c + u * v) * L[m] + s1 * s2 * sig * ph[i] * _pdf(o, t1[m]) - v * s1 * ph[i] * o.Phi(t1[m]) \
            - u * s2 * pk[j] * o.Phi(t2[m])
        C = C + gs[i] * gs[j] * G
    return C, _cdot_sum(beta, gs, P, Q, L, pairs) + 0 * c


def _cdot_sum(beta, gs, P, Q, L, pairs):
    r"""$\dot C=\beta^2+\beta\sum_k\gamma_k(P_k+Q_k)+\sum_{k,l}\gamma_k\gamma_lL_{kl}$ (module doc) from the tails
    ``P``, ``Q`` and the orthants ``L`` of the index ``pairs``."""
    Cdot = beta * beta
    for i, g in enumerate(gs):
        Cdot = Cdot + beta * g * (P[i] + Q[i])
    for m, (i, j) in enumerate(pairs):
        Cdot = Cdot + gs[i] * gs[j] * L[m]
    return Cdot


def pwl_cdot(rep, q1, q2, omr):
    r"""$\dot C$ alone of the relu sum ``rep`` (numpy) at $1-\rho$ = ``omr`` (as :func:`pwl_joint` with ``omr``):
    $\beta^2+\beta\sum_k\gamma_k(P_k+Q_k)+\sum_{k,l}\gamma_k\gamma_lL_{kl}$ (module doc)."""
    _, beta, us, gs = rep
    omr = np.clip(np.asarray(omr, np.float64), 0.0, 2.0)
    h, k, r = _standardised(NUMPY_OPS, us, q1, q2, np.sqrt(q1 * q2) * (1.0 - omr))
    n = len(us)
    pairs = [(i, j) for i in range(n) for j in range(n)]
    P, Q = [normal_cdf(-x) for x in h], [normal_cdf(-x) for x in k]
    L = _orthants(NUMPY_OPS, h, k, 1.0 - omr, pairs, omr, (P, Q), us)
    return _cdot_sum(beta, gs, P, Q, L, pairs) + 0 * omr
