r"""The closed-form dual of a continuous piecewise-polynomial activation (hard-swish ``x*Min(Max(x + 3, 0), 6)/6``,
squared relu ``Max(0, x)**2``, a user ``Piecewise`` of polynomial pieces): its recognition
(:func:`piecewise_polynomial`) and its formula (:func:`pwp_joint`), by truncated bivariate normal moments.

**Representation.**  A $\phi$ with breakpoints $u_1<\dots<u_K$ and polynomial pieces $P_0,\dots,P_K$ (of
degree $\le$ :data:`MAX_DEGREE`) is

$$\phi(z)=P_0(z)+\sum_{k=1}^K D_k(z)\,\mathbb 1_{z>u_k},\qquad D_k=P_k-P_{k-1}=\sum_{i\ge0}e_{ki}\,(z-u_k)^i$$

($e_{k0}$ the jump of $\phi$ at $u_k$, $e_{k1}$ that of $\phi'$); $\phi'$ has the same form, with $P_0'$ and $D_k'$.  Where
$\phi$ jumps, $\dot C$ is that of its derivative almost everywhere (as for ``sign`` and the step sums,
:func:`~kernelcalc.theory.duals_pwl.step_joint`).

**Expectations.**  $(a,b)$ centred Gaussian, $\mathrm{Var}\,a=q_1$, $\mathrm{Var}\,b=q_2$, $\mathrm{Cov}=c$; standard
units $X=a/s_1$, $Y=b/s_2$ ($s_i=\sqrt{q_i}$, correlation $\rho$, $\sigma=\sqrt{1-\rho^2}$), $h_k=u_k/s_1$,
$k_l=u_l/s_2$.  With $F_i(X)=(X-h)^i\mathbb 1_{X>h}$ for a truncated term ($k\ge1$) and $F_i=X^i$ for $P_0$ ($h=0$,
no indicator), $G_j(Y)$ alike,

$$E[\phi(a)\phi(b)]=\sum_{k,l=0}^K\sum_{i,j}e_{ki}e_{lj}\,s_1^is_2^j\,T^{kl}_{ij},\qquad T_{ij}=E[F_i(X)G_j(Y)].$$

Stein's lemma for the correlated pair, $E[Xg]=E[\partial_Xg]+\rho E[\partial_Yg]$, on $g=F_{i-1}G_j$ gives the
recursion (the indicator's derivative is a Dirac mass at the truncation point)

$$T_{ij}=-hT_{i-1,j}+(i-1)T_{i-2,j}+[i=1]\,\varphi(h)A_j+\rho\big(jT_{i-1,j-1}+[j=0]\,\varphi(k)B_{i-1}\big),$$

and on $g=F_0G_{j-1}$ (with $Y$) the row $i=0$: $T_{0j}=-kT_{0,j-1}+(j-1)T_{0,j-2}+[j=1]\,\varphi(k)B_0
+\rho\,\varphi(h)A_{j-1}$; the bracketed terms exist only for a truncated factor, and $h$ (or $k$) enters only there.
$A_j=E[G_j(Y)\,|\,X=h]$, $B_i=E[F_i(X)\,|\,Y=k]$ are moments of $N(\mu,\sigma^2)$: untruncated,
$m_j=\mu m_{j-1}+(j-1)\sigma^2m_{j-2}$; truncated, $w_j=E[V^j\mathbb 1_{V>0}]$ for $V\sim N(\mu,\sigma^2)$,
$\mu=\rho h-k$ (or $\rho k-h$): $w_0=\Phi(\mu/\sigma)$, $w_1=\sigma\varphi(\mu/\sigma)+\mu w_0$,
$w_j=(j-1)\sigma^2w_{j-2}+\mu w_{j-1}$ (at $\sigma=0$ the point mass $\mu^j\mathbb 1_{\mu>0}$, $\frac12$ at
$\mu=0$).  $T_{00}$ is $1$, $\Phi(-h)$, $\Phi(-k)$ or $\Phi_2(-h,-k;\rho)$ (Genz's BVND,
:func:`~kernelcalc.theory.bivariate_normal.orthant_probabilities`).  With degree-1 pieces this is the relu sum's
formula (:mod:`.duals_pwl`, Rosenbaum 1961).

**Tails.**  Expanded about a breakpoint below 0, $D_k(z)\mathbb 1_{z>u_k}$ at a small variance is a sum of terms
$(u_k/s)^i$ that cancel to $O(q^{\deg})$ (C came out $-8.9\cdot10^{-16}$ for an exact $3\cdot10^{-26}$).  So the sum
starts from the piece just left of 0, $P_m$, and each breakpoint adds a *tail*: $u_k\ge0$ the upper one
$D_k\mathbb 1_{z>u_k}$, $u_k<0$ the lower one $-D_k\mathbb 1_{z<u_k}$, in the reflected variable $X\to-X$ (an upper
truncation at $-h$, coefficients times $-(-1)^i$, and correlation $-\rho$ with an unreflected partner: $1-\rho$ becomes
$2-(1-\rho)$).  Every truncated term is then a small tail at a small variance, and the values keep their relative
accuracy (tests: $q=10^{-13}$ to $10^{-4}$).

A zero variance is the limit $s_i\to$ :data:`_TINY` ($h=\pm u/10^{-25}$: the powers $h^i$, $i\le2\cdot$
:data:`MAX_DEGREE`, stay finite, and $\varphi(h)=0$).

**Accuracy** (tests/test_duals_pwp.py, against mpmath quadrature split at the breakpoints): the terms are
$O(q^{D})$ for degree $D$; a bounded piece cancels them, as for the relu sums (:mod:`.duals_pwl`).
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

from .duals_pwl import _matches, _orthants, _pdf, _ratio, polynomial_pieces

__all__ = ["piecewise_polynomial", "pwp_joint", "MAX_DEGREE"]

#: the highest piece degree recognised (the terms grow like q^degree; hard-swish and squared relu have 2)
MAX_DEGREE = 4
_TINY = 1e-25     # the floor of s_i in h = u / s_i (a zero variance)


def piecewise_polynomial(expr: sp.Expr):
    r"""``(p0, us, es, pm)`` of ``expr`` when it is a piecewise polynomial of degree at most :data:`MAX_DEGREE` with a
    piece of degree 2 or more, or with linear pieces and a jump (module doc), else ``None``: ``p0`` the coefficients of $P_0$ in powers of $z$, ``us`` the
    breakpoints where the piece changes, ``es[k]`` the coefficients $e_{k0},e_{k1},\dots$ of $D_k$ in powers of
    $z-u_k$, ``pm`` those of the piece just left of 0 in powers of $z$.  The pieces are sympy's (:func:`~kernelcalc.theory._piecewise._pieces`); the representation must
    reproduce ``expr`` at 200 points off the breakpoints (where a jump's own value does not enter a Gaussian
    expectation) to $10^{-12}$ relative before it is accepted.  Continuous piecewise-linear activations are
    the relu sums' (:func:`~kernelcalc.theory.duals_pwl.relu_sum`), not this."""
    parsed = polynomial_pieces(expr, MAX_DEGREE)
    if parsed is None:
        return None
    pieces, polys = parsed
    us, es = [], []
    scale = 1.0 + max(float(np.max(np.abs(c))) for c in polys)
    for k, p in enumerate(pieces[:-1]):
        u = float(p.b)
        d = np.zeros(MAX_DEGREE + 1)
        d[: polys[k + 1].size] += polys[k + 1]
        d[: polys[k].size] -= polys[k]
        e = _taylor_shift(d, u)
        if abs(e[0]) <= 1e-12 * scale * (1.0 + abs(u)) ** MAX_DEGREE:     # continuous at u (rounding of the shift)
            e[0] = 0.0
        if np.any(e != 0.0):
            us.append(u)
            es.append(tuple(float(v) for v in np.trim_zeros(e, "b")))
    if not us or (max(len(c) for c in polys) < 3 and all(e[0] == 0.0 for e in es)):   # continuous linear: a relu sum
        return None
    middle = sum(1 for p in pieces[:-1] if float(p.b) < 0.0)         # the piece just left of 0 (or holding it)
    rep = (tuple(float(v) for v in polys[0]), tuple(us), tuple(es), tuple(float(v) for v in polys[middle]))
    z = np.concatenate([np.linspace(-20.0, 20.0, 101), (np.array(us)[:, None] + np.array([-1e-3, 1e-3, -0.3, 0.3])).ravel(),
                        [-1e3, -1e2, 1e2, 1e3], np.random.default_rng(0).uniform(us[0] - 3.0, us[-1] + 3.0, 40)])
    tol = 1e-12 * scale * (1.0 + np.abs(z)) ** (MAX_DEGREE - 1)
    return rep if _matches(expr, z, _evaluate(rep, z), tol) else None


def _taylor_shift(coeffs: np.ndarray, u: float) -> np.ndarray:
    r"""Coefficients in powers of $z-u$ of the polynomial with ascending ``coeffs`` in $z$: $e_i=P^{(i)}(u)/i!$."""
    n = coeffs.size
    return np.array([sum(math.comb(m, i) * coeffs[m] * u ** (m - i) for m in range(i, n)) for i in range(n)])


def _evaluate(rep, z):
    """The activation of ``rep`` at the points ``z`` (numpy)."""
    p0, us, es = rep[:3]
    out = np.polynomial.polynomial.polyval(z, np.array(p0))
    for u, e in zip(us, es):
        out = out + (z > u) * np.polynomial.polynomial.polyval(z - u, np.array(e))
    return out


def derivative(rep):
    r"""The representation of $\phi'$ (module doc): $P_0'$ and $D_k'$ (a piece of $D_k'$ may be constant: a jump of
    $\phi'$ at $u_k$)."""
    p0, us, es, pm = rep
    dp0, dpm = (tuple(i * p[i] for i in range(1, len(p))) or (0.0,) for p in (p0, pm))
    des = tuple(tuple(i * e[i] for i in range(1, len(e))) or (0.0,) for e in es)
    return dp0, us, des, dpm


def kink(e) -> float:
    r"""The jump $e_{k1}$ of $\phi'$ at a breakpoint whose increment has the coefficients ``e`` (powers of $z-u_k$)."""
    return e[1] if len(e) > 1 else 0.0


def jumps(rep) -> bool:
    r"""Whether $\phi$ itself jumps (some $e_{k0}\ne0$): its $\dot C$ is then the a.e. derivative's, as for ``sign``."""
    return any(e[0] != 0.0 for e in rep[2])


def _terms(rep):
    r"""``[(coefficients by power, side)]`` of the form that sums small tails (module doc, *Tails*): $P_m$ untruncated
    (side 0), then each $D_k$: at $u_k\ge0$ the upper tail (side $+1$), at $u_k<0$ the lower one $-D_k\mathbb 1_{z<u_k}$
    in the reflected variable (side $-1$: coefficients times $-(-1)^i$)."""
    _, us, es, pm = rep
    out = [(tuple(pm), 0)]
    for u, e in zip(us, es):
        out.append((tuple(e), 1) if u >= 0 else (tuple(-((-1) ** i) * v for i, v in enumerate(e)), -1))
    return out


def _dterms(rep):
    r""":func:`_terms` of $\phi'$."""
    return _terms(derivative(rep))


def pwp_joint(o, rep, q1, q2, c, omr=None, jump_part=False):
    r"""$(C,\dot C)$ of the piecewise polynomial ``rep`` (:func:`piecewise_polynomial`) with the operations ``o``
    (:data:`~kernelcalc.theory.duals_ops.NUMPY_OPS`, ``JAX_OPS`` or ``SYMPY_OPS``).  ``omr`` (numpy only): $1-\rho$,
    exactly, in place of the correlation of ``c`` (then ``c`` is ignored): $\sigma=\sqrt{(1-\rho)(1+\rho)}$,
    $\rho h-k=(h-k)-(1-\rho)h$ and $\Phi_2$ take it (the gap form).  ``jump_part``: also $\dot C_J=\sum_{kl}e_{k1}e_{l1}
    L_{kl}$, the part of $\dot C$ of the jumps of $\phi'$ (:func:`~kernelcalc.theory.duals_gap.piecewise_polynomial_gap`),
    $L_{kl}=P(a>u_k,b>u_l)$; or, given weights $w_k$ (a sequence), $\sum_{kl}w_kw_lL_{kl}$ from the same orthants (the
    step part of $\phi''$: :mod:`~kernelcalc.theory.duals_taylor`)."""
    symbolic = isinstance(o.pi, sp.Basic)
    s1, s2 = o.sqrt(q1), o.sqrt(q2)
    if omr is not None:
        omr = np.clip(np.asarray(omr, np.float64), 0.0, 2.0)
        c = s1 * s2 * (1.0 - omr)
    if not symbolic:
        s1, s2 = o.where(s1 > _TINY, s1, _TINY), o.where(s2 > _TINY, s2, _TINY)
    us = rep[1]
    r = o.corr(q1, q2, c) if omr is None else 1.0 - omr
    sig = o.sqrt((1 - r) * (1 + r)) if omr is None else np.sqrt(omr * (2.0 - omr))
    terms, dterms = _terms(rep), _dterms(rep)
    side = [t[1] for t in terms]                                       # 0: P_m, +1 upper tail, -1 lower (reflected)
    h = [0] + [sd * u / s1 for sd, u in zip(side[1:], us)]            # the thresholds in the reflected variables
    k = [0] + [sd * u / s2 for sd, u in zip(side[1:], us)]
    K = len(us)
    deg = max(len(t[0]) for t in terms) - 1
    P = [1] + [o.Phi(-x) for x in h[1:]]
    Q = [1] + [o.Phi(-x) for x in k[1:]]
    ph = [0] + [_pdf(o, x) for x in h[1:]]
    pk = [0] + [_pdf(o, x) for x in k[1:]]
    # the orthants of the truncated pairs: one call per sign of the reflected correlation (numpy: shared
    # Gauss-Legendre angles, mirrored pairs derived)
    L = {}
    for sgn in (1, -1):
        pairs = [(a, b) for a in range(1, K + 1) for b in range(1, K + 1) if side[a] * side[b] == sgn]
        if pairs:
            rr = r if sgn > 0 else -r
            oo = omr if (omr is None or sgn > 0) else 2.0 - omr
            L.update(zip(pairs, _orthants(o, h, k, rr, pairs, oo, (P, Q), [0] + [sd * u for sd, u in zip(side[1:], us)])))
    C = Cdot = 0
    s1p = [1, s1] + [None] * (deg - 1)
    s2p = [1, s2] + [None] * (deg - 1)
    for i in range(2, deg + 1):
        s1p[i], s2p[i] = s1p[i - 1] * s1, s2p[i - 1] * s2
    for a in range(K + 1):
        for b in range(K + 1):
            fa, sa = terms[a]
            gb, sb = terms[b]
            T00 = L[(a, b)] if (a and b) else (P[a] if a else (Q[b] if b else 1))
            T = _table(o, symbolic, len(fa) - 1, len(gb) - 1, T00, r, sig, h[a], k[b], sa, sb, ph[a], pk[b], omr)
            C = C + _contract(fa, gb, T, s1p, s2p)
            Cdot = Cdot + _contract(dterms[a][0], dterms[b][0], T, s1p, s2p)
    if jump_part is False:
        return C + 0 * c, Cdot + 0 * c
    jumps = [kink(e) for e in rep[2]] if jump_part is True else list(jump_part)
    # the jumps' part sum_kl e_k1 e_l1 P(a > u_k, b > u_l): a lower tail's orthant is its reflected one's complement
    cdot_j = 0
    for a in range(1, K + 1):
        for b in range(1, K + 1):
            sa, sb = side[a], side[b]
            up = L[(a, b)]
            if sa < 0 and sb < 0:
                up = 1 - P[a] - Q[b] + up          # P(X > h, Y > k) from P(X < h, Y < k)
            elif sa < 0:
                up = Q[b] - up                     # P(X > h, Y > k) = P(Y > k) - P(X < h, Y > k)
            elif sb < 0:
                up = P[a] - up
            cdot_j = cdot_j + jumps[a - 1] * jumps[b - 1] * up
    return C + 0 * c, Cdot + 0 * c, cdot_j + 0 * c


def _contract(f, g, T, s1p, s2p):
    r"""$\sum_{ij}f_ig_js_1^is_2^jT_{ij}$ (zero coefficients skipped)."""
    total = 0
    for i, fi in enumerate(f):
        if fi == 0:
            continue
        for j, gj in enumerate(g):
            if gj == 0:
                continue
            total = total + (fi * gj) * (s1p[i] * s2p[j]) * T[i][j]
    return total


def _conditional(o, symbolic, n, mu, sig, truncated):
    r"""Moments $0..n$ of $N(\mu,\sigma^2)$: $E[V^j]$, or $E[V^j\mathbb 1_{V>0}]$ when ``truncated`` (module doc;
    $\sigma=0$ the point mass, $\Phi(0)=\frac12$ at $\mu=0$)."""
    if n < 0:
        return []
    if truncated:
        t = mu / sig if symbolic else _ratio(o, mu, sig)
        out = [o.Phi(t)]
        if n >= 1:
            out.append(sig * _pdf(o, t) + mu * out[0])
    else:
        out = [1]
        if n >= 1:
            out.append(mu)
    for j in range(2, n + 1):
        out.append((j - 1) * sig * sig * out[j - 2] + mu * out[j - 1])
    return out


def _table(o, symbolic, n1, n2, T00, r, sig, h, k, side_f, side_g, ph, pk, omr):
    r"""$T_{ij}=E[F_i(X)G_j(Y)]$, $i\le n_1$, $j\le n_2$ (module doc's recursion), in the reflected variables of the
    sides ``side_f``, ``side_g`` ($-1$: $X\to-X$; 0: untruncated): correlation $\pm\rho$, thresholds ``h``, ``k`` already
    reflected.  With ``omr`` the conditional means $\mu=\rho'h-k$ come from $1-\rho$ without cancellation."""
    trunc_f, trunc_g = side_f != 0, side_g != 0
    sf, sg = (side_f or 1), (side_g or 1)
    r = r * (sf * sg)
    if trunc_f:    # A_j = E[G_j(Y) | X = h]: Y | X = h ~ N(rho h, sigma^2); G_j centred at k when truncated
        mu = (r * h - k) if omr is None else sg * ((sf * h - sg * k) - omr * sf * h)
        A = _conditional(o, symbolic, n2, mu, sig, trunc_g)
    if trunc_g:
        mu = (r * k - h) if omr is None else sf * ((sg * k - sf * h) - omr * sg * k)
        B = _conditional(o, symbolic, n1, mu, sig, trunc_f)
    hh = h if trunc_f else 0
    kk = k if trunc_g else 0
    T = [[None] * (n2 + 1) for _ in range(n1 + 1)]
    T[0][0] = T00
    for j in range(1, n2 + 1):
        v = -kk * T[0][j - 1] if trunc_g else 0
        if j >= 2:
            v = v + (j - 1) * T[0][j - 2]
        if j == 1 and trunc_g:
            v = v + pk * B[0]
        if trunc_f:
            v = v + r * ph * A[j - 1]
        T[0][j] = v
    for i in range(1, n1 + 1):
        for j in range(n2 + 1):
            v = -hh * T[i - 1][j] if trunc_f else 0
            if i >= 2:
                v = v + (i - 1) * T[i - 2][j]
            if i == 1 and trunc_f:
                v = v + ph * A[j]
            w = j * T[i - 1][j - 1] if j >= 1 else 0
            if j == 0 and trunc_g:
                w = w + pk * B[i - 1]
            T[i][j] = v + r * w
    return T
