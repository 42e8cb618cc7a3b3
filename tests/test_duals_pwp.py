r"""The closed-form dual of piecewise-polynomial activations (hard-swish, squared relu, user ``Piecewise`` of degree 3
and 4, one that jumps: :mod:`kernelcalc.theory.duals_pwp`; the gap form of the continuous ones,
:func:`kernelcalc.theory.duals_gap.piecewise_polynomial_gap`) against mpmath references written here from the pieces
listed by hand (:data:`PIECES`; no code shared with the Stein recursion of the implementation):

- :func:`_reference`: $E[f(a)g(b)]=\int f(s_1z_1)\,E[g(b)\mid z_1]\,\varphi(z_1)\,dz_1$, the outer integral by
  mpmath Gauss-Legendre on $[-12,12]$ (the Gaussian tail beyond is $<10^{-31}$) split at a fixed grid, at the
  breakpoints $u/s_1$ and on graded points around the conditional breakpoints $u/(\rho s_2)$ (the layers of width
  $\sigma/|\rho|$ near $|\rho|=1$); the inner expectation of each polynomial piece over $b\mid z_1\sim
  N(\rho s_2z_1,q_2\sigma^2)$ in closed form: the piece expanded in the standard unit $t$ and
  $\int_\alpha^\beta t^j\varphi(t)\,dt$ by parts,
  $I_j=(j-1)I_{j-2}+\alpha^{j-1}\varphi(\alpha)-\beta^{j-1}\varphi(\beta)$;
- :func:`_nested`: the same with the inner integral by quadrature too (mp Gauss-Legendre over $z_2$, split at the
  inner breakpoints $(u/s_2-\rho z_1)/\sigma$): it checks :func:`_reference` (adaptive nested ``mp.quad`` took 40 to
  100 s a point, so the references use fixed Gauss-Legendre rules; their convergence was measured against 16 and
  24 nodes and against nested tanh-sinh ``mp.quad``: $<10^{-16}$ relative);
- 1-D expectations $E[f(s z)g(\pm s'z)]$ for the limits $\rho=\pm1$, $q=0$, $c=0$;
- :func:`_drop_reference`: the drop as Price's integral of :func:`_reference`'s $\dot C$ over the angle.
"""

from __future__ import annotations

import bisect
import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from kernelcalc.theory._activation_text import X
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.duals import JAX_OPS, NUMPY_OPS, closed_form_dual
from kernelcalc.theory.duals_pwp import piecewise_polynomial, pwp_joint

F = mp.mpf
HSWISH = "x*Min(Max(x + 3, 0), 6)/6"
RELU2 = "Max(0, x)**2"
USER3 = "Piecewise((x**2 - 1, x > 1), (0, x > -1), (-(x + 1)**3/3, True))"
USER4 = "Piecewise((x - x**4/4 + 0.5, x > 1), (0.75*x + 0.5, x > -0.5), (0.125 + 0.2*(x + 0.5)**2, True))"
JUMP = "Piecewise((x**2, x > 1), (0, True))"     # phi jumps by 1 at 1: Cdot is that of the a.e. derivative
#: activation text -> (breakpoints, the polynomial of each piece in ascending powers of z), listed by hand
PIECES = {
    HSWISH: ((-3, 3), ((0,), (0, "0.5", F(1) / 6), (0, 1))),
    RELU2: ((0,), ((0,), (0, 0, 1))),
    USER3: ((-1, 1), ((-F(1) / 3, -1, -1, -F(1) / 3), (0,), (-1, 0, 1))),
    USER4: (("-0.5", 1), (("0.175", "0.2", "0.2"), ("0.5", "0.75"), ("0.5", 1, 0, 0, "-0.25"))),
    JUMP: ((1,), ((0,), (0, 0, 1))),
}
CONTINUOUS = [HSWISH, RELU2, USER3, USER4]
IDS = ["hswish", "relu2", "user3", "user4"]


# --------------------------------------------------------------------------------------------- the mpmath reference

def _pieces(text):
    """(breakpoints, polynomials of phi, polynomials of phi') as mpf at the working precision."""
    us, polys = PIECES[text]
    us = [F(u) for u in us]
    polys = [[F(c) for c in p] for p in polys]
    return us, polys, [[i * c for i, c in enumerate(p)][1:] or [F(0)] for p in polys]


def _horner(p, z):
    v = F(0)
    for c in reversed(p):
        v = v * z + c
    return v


def _value(us, polys, z):
    """The piecewise polynomial at z (the value at a breakpoint is immaterial)."""
    return _horner(polys[bisect.bisect_right(us, z)], z)


_GL = {}


def _gauss_legendre(n):
    key = (n, mp.mp.prec)
    if key not in _GL:
        _GL[key] = mp.mp.gauss_quadrature(n, "legendre")
    return _GL[key]


GRID = (-12, -8, -5, -3, -1.5, 0, 1.5, 3, 5, 8, 12)


def _integrate(fn, cuts, n, k):
    """The k integrals of ``fn(z) -> k values`` over [-12, 12] split at GRID and the cuts, n-point Gauss-Legendre."""
    x, w = _gauss_legendre(n)
    pts = sorted({F(g) for g in GRID} | {c for c in cuts if -12 < c < 12})
    out = [F(0)] * k
    for a, b in zip(pts[:-1], pts[1:]):
        h, m = (b - a) / 2, (a + b) / 2
        for xi, wi in zip(x, w):
            for i, v in enumerate(fn(m + h * xi)):
                out[i] += h * wi * v
    return out


def _conditional(us, polys_list, m, tau):
    r"""$E[g(b)]$ for $b\sim N(m,\tau^2)$, $\tau>0$, each $g$ of ``polys_list`` (pieces between the breakpoints
    ``us``): per piece $P(m+\tau t)=\sum_jd_jt^j$ and the moments $I_j$ of $\varphi$ over the piece's $t$-interval."""
    ts = [None] + [(u - m) / tau for u in us] + [None]
    cdf = [F(0)] + [mp.ncdf(t) for t in ts[1:-1]] + [F(1)]
    pdf = [F(0)] + [mp.npdf(t) for t in ts[1:-1]] + [F(0)]
    out = []
    for polys in polys_list:
        total = F(0)
        for j, p in enumerate(polys):
            n = len(p)
            d = [tau ** i * sum(p[l] * math.comb(l, i) * m ** (l - i) for l in range(i, n)) for i in range(n)]
            mom = [cdf[j + 1] - cdf[j], pdf[j] - pdf[j + 1]]
            for i in range(2, n):
                lo = ts[j] ** (i - 1) * pdf[j] if ts[j] is not None else 0
                hi = ts[j + 1] ** (i - 1) * pdf[j + 1] if ts[j + 1] is not None else 0
                mom.append((i - 1) * mom[i - 2] + lo - hi)
            total += sum(a * b for a, b in zip(d, mom))
        out.append(total)
    return out


def _correlation(q1, q2, rho, omr):
    """(q1, q2, rho, sigma) as mpf: rho given, or 1 - omr exactly."""
    q1, q2 = F(q1), F(q2)
    if omr is not None:
        omr = F(omr)
        return q1, q2, 1 - omr, mp.sqrt(omr * (2 - omr))
    rho = F(rho)
    return q1, q2, rho, mp.sqrt((1 - rho) * (1 + rho))


def _outer_cuts(us, s1, s2, rho, sg):
    """The breakpoints u / s1 and graded points around the layers at u / (rho s2) (width w = sigma / |rho|; beyond
    10 w a layer is below 1e-22)."""
    cuts = {u / s1 for u in us}
    w = sg / abs(rho)
    if w < 1:
        for u in us:
            cuts |= {u / (rho * s2) + m * w for m in (-10, -3, -1, 0, 1, 3, 10)}
    return cuts


def _reference(text, q1, q2, rho=None, omr=None, n=14, dps=20, cdot_only=False):
    r"""$(C,\dot C)$ (``cdot_only``: $\dot C$) at $\rho$, or at $\rho=1-$``omr`` exactly (module doc)."""
    with mp.workdps(dps):
        us, polys, dpolys = _pieces(text)
        q1, q2, rho, sg = _correlation(q1, q2, rho, omr)
        s1, s2 = mp.sqrt(q1), mp.sqrt(q2)
        pairs = [dpolys] if cdot_only else [polys, dpolys]

        def fn(z):
            g = _conditional(us, pairs, rho * s2 * z, s2 * sg)
            p = mp.npdf(z)
            return [_value(us, f, s1 * z) * gi * p for f, gi in zip(pairs, g)]

        out = _integrate(fn, _outer_cuts(us, s1, s2, rho, sg), n, len(pairs))
        return out[0] if cdot_only else tuple(out)


def _nested(text, q1, q2, rho, n=12, dps=20):
    r"""$(C,\dot C)$ by nested quadrature: $b=s_2(\rho z_1+\sigma z_2)$, the inner integral over $z_2$ split at
    $(u/s_2-\rho z_1)/\sigma$ (module doc)."""
    with mp.workdps(dps):
        us, polys, dpolys = _pieces(text)
        q1, q2, rho, sg = _correlation(q1, q2, rho, None)
        s1, s2 = mp.sqrt(q1), mp.sqrt(q2)

        def fn(z1):
            def inner(z2):
                b, p = s2 * (rho * z1 + sg * z2), mp.npdf(z2)
                return _value(us, polys, b) * p, _value(us, dpolys, b) * p

            e, ed = _integrate(inner, {(u / s2 - rho * z1) / sg for u in us}, n, 2)
            p = mp.npdf(z1)
            return _value(us, polys, s1 * z1) * e * p, _value(us, dpolys, s1 * z1) * ed * p

        return tuple(_integrate(fn, _outer_cuts(us, s1, s2, rho, sg), n, 2))


def _expect(text, q1, q2, sign=1, n=16, dps=20):
    r"""1-D: $(E[\phi(s_1z)\phi(\pm s_2z)], E[\phi'(s_1z)\phi'(\pm s_2z)])$, $z\sim N(0,1)$: the pair at $\rho=\pm1$
    (``sign``)."""
    with mp.workdps(dps):
        us, polys, dpolys = _pieces(text)
        s1, s2 = mp.sqrt(F(q1)), sign * mp.sqrt(F(q2))
        cuts = {u / s for u in us for s in (s1, s2) if s != 0}

        def fn(z):
            p = mp.npdf(z)
            return [_value(us, f, s1 * z) * _value(us, f, s2 * z) * p for f in (polys, dpolys)]

        return tuple(_integrate(fn, cuts, n, 2))


def _means(text, q, n=16, dps=20):
    r"""$(E[\phi(a)], E[\phi'(a)])$, $a\sim N(0,q)$."""
    with mp.workdps(dps):
        us, polys, dpolys = _pieces(text)
        s = mp.sqrt(F(q))
        return tuple(_integrate(lambda z: [_value(us, f, s * z) * mp.npdf(z) for f in (polys, dpolys)],
                                {u / s for u in us}, n, 2))


def _at_zero(text):
    r"""$(\phi(0), \phi'(0))$ from the pieces (no breakpoint of :data:`PIECES` where $\phi'$ jumps is at 0)."""
    us, polys, dpolys = _pieces(text)
    return _value(us, polys, F(0)), _value(us, dpolys, F(0))


def _scales(text, q1, q2):
    r"""$\sqrt{E[\phi(a)^2]E[\phi(b)^2]}$ and the same of $\phi'$ (Cauchy-Schwarz bounds of $|C|$, $|\dot C|$)."""
    e1, e2 = _expect(text, q1, q1), _expect(text, q2, q2)
    return float(mp.sqrt(e1[0] * e2[0])), float(mp.sqrt(e1[1] * e2[1]))


def _dual(text):
    dual = closed_form_dual(resolve_activation(text))
    assert dual is not None and dual.name.startswith("piecewise polynomial"), dual
    return dual


def _rep(text):
    rep = piecewise_polynomial(resolve_activation(text).expr)
    assert rep is not None
    return rep


# ------------------------------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("text", list(PIECES), ids=IDS + ["jump"])
def test_pieces_transcribe_the_activations(text):
    """The hand-listed pieces are the activation (sympy's own evaluation of the text, off the breakpoints), and so are
    their derivatives: the references integrate the right function."""
    expr = sp.sympify(text, locals={"x": X})
    dexpr = sp.diff(expr, X)
    us, polys, dpolys = _pieces(text)
    for z in (-6.1, -3.7, -2.2, -1.3, -0.7, -0.2, 0.3, 0.8, 1.6, 2.9, 3.4, 5.3):
        assert float(_value(us, polys, F(z))) == pytest.approx(float(expr.subs(X, z)), rel=1e-14, abs=1e-14)
        assert float(_value(us, dpolys, F(z))) == pytest.approx(float(dexpr.subs(X, z)), rel=1e-14, abs=1e-14)


def _check(got, ref, scale, rtol, atol):
    """|got - ref| <= rtol |ref| + atol scale; returns the error relative to |ref| and to the scale."""
    got, ref = float(got), float(ref)
    assert abs(got - ref) <= rtol * abs(ref) + atol * scale, (got, ref, (got - ref) / ref if ref else None)
    return (got - ref) / ref if ref else None, (got - ref) / scale if scale else None


#: (q1, q2, rho): equal and unequal variances, negative rho, |rho| = 1 - 1e-6
POINTS = [(1.0, 1.0, 0.5), (2.0, 0.5, -0.7), (3.0, 3.0, 1 - 1e-6), (0.3, 5.0, -(1 - 1e-6))]


@pytest.mark.parametrize("text, q1, q2, rho", [(t, *p) for t in CONTINUOUS for p in POINTS]
                         + [(HSWISH, 20.0, 8.0, 0.9)] + [(JUMP, *p) for p in POINTS[:3]],
                         ids=[f"{i}-{q1}-{q2}-{r:.7g}" for i in IDS for q1, q2, r in POINTS] + ["hswish-20.0-8.0-0.9"]
                         + [f"jump-{q1}-{q2}-{r:.7g}" for q1, q2, r in POINTS[:3]])
def test_pwp_dual_matches_mpmath(text, q1, q2, rho):
    r"""$C$, $\dot C$ against :func:`_reference` at the correlation of the float64 $c$ itself, to 3e-13 relative
    (measured: at most 3.3e-14, user3 at $q=3$, $\rho=1-10^{-6}$, where its $O(q^3)$ terms cancel; hard-swish and
    relu$^2$ 2.6e-15; the jump 1.9e-14 on $C=7\cdot10^{-4}$), or 1e-17 of $\sqrt{E[\phi(a)^2]E[\phi(b)^2]}$ where
    the value is tiny (relu$^2$ at $\rho=-1+10^{-6}$: $C=3.6\cdot10^{-16}$, $\dot C=7.4\cdot10^{-10}$ of a scale 4.5,
    off by 1e-19 of it)."""
    c = rho * math.sqrt(q1 * q2)
    with mp.workdps(20):
        rho_c = F(c) / mp.sqrt(F(q1) * F(q2))
    ref = _reference(text, q1, q2, rho_c)
    got = _dual(text)(q1, q2, c, ops=NUMPY_OPS)
    for g, r, s in zip(got, ref, _scales(text, q1, q2)):
        _check(g, r, s, 3e-13, 1e-17)


@pytest.mark.parametrize("text", list(PIECES), ids=IDS + ["jump"])
def test_conditional_expectation_against_quadrature(text):
    r"""The closed-form inner expectation of :func:`_reference` (:func:`_conditional`) against adaptive ``mp.quad``
    of the pieces (and of their derivatives) over $N(m,\tau^2)$, split at the breakpoints: 1e-18 relative at 25
    digits (measured: rounding)."""
    with mp.workdps(25):
        us, polys, dpolys = _pieces(text)
        for m, tau in ((F("0.3"), F("1.7")), (F("-2.5"), F("0.05")), (F("4.1"), F(3)), (F("0.9"), F("1e-6"))):
            got = _conditional(us, [polys, dpolys], m, tau)
            pts = sorted({-mp.inf, mp.inf} | {m + j * tau for j in (-12, -3, 0, 3, 12)}
                         | {u for u in us if abs(u - m) < 12 * tau})
            for g, f in zip(got, (polys, dpolys)):
                want = mp.quad(lambda b: _value(us, f, b) * mp.npdf(b, m, tau), pts)
                assert abs(g - want) <= 1e-18 * max(abs(want), 1), (m, tau, g, want)


@pytest.mark.slow
@pytest.mark.parametrize("text", CONTINUOUS, ids=IDS)
@pytest.mark.parametrize("q1, q2, rho", [(1.0, 1.0, 0.5), (2.0, 0.5, -0.7)])
def test_reference_matches_nested_quadrature(text, q1, q2, rho):
    r""":func:`_reference` (inner expectation in closed form) against :func:`_nested` (inner by quadrature too): 1e-14
    relative (measured at most 1.5e-16; 1.2 to 2.2 s a case)."""
    a, b = _reference(text, q1, q2, rho), _nested(text, q1, q2, rho)
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-14 * abs(y), (x, y)


@pytest.mark.parametrize("text", CONTINUOUS, ids=IDS)
def test_pwp_dual_exact_limits(text):
    r"""$\rho=\pm1$ ($b=\pm\frac{s_2}{s_1}a$: $C=E[\phi(s_1z)\phi(\pm s_2z)]$, equal and unequal variances), a zero
    variance ($C=\phi(0)E[\phi(b)]$, $\dot C=\phi'(0)E[\phi'(b)]$; both zero: $\phi(0)^2$, $\phi'(0)^2$) and $c=0$
    ($C=E[\phi(a)]E[\phi(b)]$), against 1-D mpmath quadrature: 3e-14 of $\max(|\text{ref}|,1)$ (measured 3e-15:
    user3 at $\rho=-1$; hard-swish at $q_1=q_2=0$ gives $C=4.4\cdot10^{-16}$ for 0, relu$^2$ at $q_1=0$
    $\dot C=1.1\cdot10^{-25}$ for 0, the floor $s=10^{-25}$ of a zero variance)."""
    dual = _dual(text)
    phi0, dphi0 = _at_zero(text)
    cases = {(2.0, 2.0, 2.0): _expect(text, 2.0, 2.0, 1), (1.0, 4.0, 2.0): _expect(text, 1.0, 4.0, 1),
             (2.0, 2.0, -2.0): _expect(text, 2.0, 2.0, -1), (1.0, 4.0, -2.0): _expect(text, 1.0, 4.0, -1),
             (0.0, 0.0, 0.0): (phi0 * phi0, dphi0 * dphi0)}
    for q in (0.0, 3.0):      # one variance zero (either)
        m = _means(text, 3.0)
        cases[(q, 3.0 - q, 0.0)] = (phi0 * m[0], dphi0 * m[1])
    m1, m2 = _means(text, 1.5), _means(text, 4.0)
    cases[(1.5, 4.0, 0.0)] = (m1[0] * m2[0], m1[1] * m2[1])
    for (q1, q2, c), ref in cases.items():
        got = dual(q1, q2, c, ops=NUMPY_OPS)
        for g, r in zip(got, ref):
            assert abs(float(g) - float(r)) <= 3e-14 * max(abs(float(r)), 1.0), ((q1, q2, c), float(g), float(r))


@pytest.mark.parametrize("text", [HSWISH] + [pytest.param(t, marks=pytest.mark.slow) for t in (RELU2, USER3, USER4)],
                         ids=["hswish", "relu2", "user3", "user4"])
def test_pwp_dual_under_jax(text, x64):
    r"""jax.numpy (``JAX_OPS``, under ``jax.jit`` as the solvers compile the duals, float64 by the ``x64`` fixture)
    gives numpy's values at random points (with $\rho=\pm1$, $1-\rho=10^{-9}$, $1+\rho=10^{-7}$, a zero variance,
    $c=0$): 1e-14 of the diagonal scale $\sqrt{C(q_1,q_1,q_1)C(q_2,q_2,q_2)}+1$ (the 1 for the zero variance, whose
    scale is 0 and where a 0 comes as up to 7e-15 in either).  Measured: 9e-16 of that (relative to the values up to
    1.6e-13, where $C$ or $\dot C$ cancels to $\sim10^{-3}$ of its scale).  Each activation costs one compilation,
    2 to 4 s (the other three: slow; eager jax operations took ~5.5 s)."""
    import jax

    rng = np.random.default_rng(1)
    q1, q2, r = rng.uniform(0.1, 20.0, 40), rng.uniform(0.1, 20.0, 40), rng.uniform(-1.0, 1.0, 40)
    r[:4] = [1.0, -1.0, 1 - 1e-9, -1 + 1e-7]
    q1[4], r[5] = 0.0, 0.0
    c = r * np.sqrt(q1 * q2)
    dual = _dual(text)
    want = [np.asarray(v) for v in dual(q1, q2, c, ops=NUMPY_OPS)]
    got = [np.asarray(v) for v in jax.jit(lambda a, b, cc: dual(a, b, cc, ops=JAX_OPS))(q1, q2, c)]
    d1, d2 = dual(q1, q1, q1, ops=NUMPY_OPS), dual(q2, q2, q2, ops=NUMPY_OPS)
    for g, w, s1, s2 in zip(got, want, d1, d2):
        assert g.dtype == np.float64
        scale = np.sqrt(np.asarray(s1) * np.asarray(s2)) + 1.0
        assert np.all(np.abs(g - w) <= 1e-14 * scale), np.max(np.abs(g - w) / scale)


@pytest.mark.parametrize("text", CONTINUOUS, ids=IDS)
def test_one_minus_rho_path_matches_the_correlation_path(text):
    r"""``pwp_joint(..., omr=1 - rho)`` equals the path of $c$ at moderate $\rho$ (0.7, -0.2, -0.9, 0.95):
    1e-14 of the diagonal scale (measured 1e-15)."""
    rep = _rep(text)
    q1, q2 = np.array([1.0, 2.0, 0.5, 3.0]), np.array([1.0, 0.7, 4.0, 3.0])
    omr = np.array([0.3, 1.2, 1.9, 0.05])
    a = pwp_joint(NUMPY_OPS, rep, q1, q2, None, omr=omr)
    b = pwp_joint(NUMPY_OPS, rep, q1, q2, (1 - omr) * np.sqrt(q1 * q2))
    d1, d2 = pwp_joint(NUMPY_OPS, rep, q1, q1, q1), pwp_joint(NUMPY_OPS, rep, q2, q2, q2)
    for x, y, s1, s2 in zip(a, b, d1, d2):
        assert np.all(np.abs(x - y) <= 1e-14 * np.sqrt(s1 * s2)), np.max(np.abs(x - y) / np.sqrt(s1 * s2))


@pytest.mark.parametrize("text, q1, q2, omrs", [(HSWISH, 1.0, 1.0, (1e-12, 1e-10, 1e-8)),
                                                (USER3, 2.0, 2.0, (1e-12, 1e-8)), (USER4, 1.0, 1.0, (1e-12,)),
                                                (HSWISH, 1.0, 1.2, (1e-12,))],
                         ids=["hswish", "user3", "user4", "hswish-unequal"])
def test_one_minus_rho_path_near_one_against_mpmath(text, q1, q2, omrs):
    r"""At $1-\rho=10^{-12}\dots10^{-8}$ given exactly, $C$ and $\dot C$ against :func:`_reference` at the mpf
    $\rho=1-$``omr``: 3e-14 relative (measured 2.8e-15; the path of the rounded $c=(1-\text{omr})q$ is off by 6e-12
    at $10^{-12}$, user3).  At equal variances the $\sqrt{1-\rho}$ term of the jumps of $\phi'$ moves $\dot C$ from its
    value at $\rho=1$ by 3.5e-9 (hard-swish) to 1.4e-7 (user3) relative at $10^{-12}$: far above the tolerance."""
    rep = _rep(text)
    cdot1 = float(pwp_joint(NUMPY_OPS, rep, q1, q2, None, omr=0.0)[1])
    for omr in omrs:
        C, Cdot = (float(v) for v in pwp_joint(NUMPY_OPS, rep, q1, q2, None, omr=omr))
        ref = _reference(text, q1, q2, omr=omr)
        _check(C, ref[0], 0.0, 3e-14, 0.0)
        _check(Cdot, ref[1], 0.0, 3e-14, 0.0)
        if q1 == q2:
            assert abs(Cdot - cdot1) > 1e-9 * abs(Cdot)


def _drop_reference(text, q1, q2, omr_p, dlt, nodes, n=12):
    r"""$C(\rho_p)-C(\rho_c)=\sqrt{q_1q_2}\int_{\theta_p}^{\theta_c}\dot C(\cos\theta)\sin\theta\,d\theta$ (Price),
    $\dot C$ from :func:`_reference` at $1-\rho=2\sin^2(\theta/2)$ exactly, ``nodes``-point Gauss-Legendre in
    $\theta$ on panels split where $\theta$ is 1/4 to 4 times a gap $|u_i/s_1-u_j/s_2|$ (the layers of unequal
    variances)."""
    with mp.workdps(20):
        omr_p, dlt = F(omr_p), F(dlt)
        tp, tc = 2 * mp.asin(mp.sqrt(omr_p / 2)), 2 * mp.asin(mp.sqrt((omr_p + dlt) / 2))
        us = [F(u) for u in PIECES[text][0]]
        gaps = {abs(u / mp.sqrt(F(q1)) - v / mp.sqrt(F(q2))) for u in us for v in us}
        edges = sorted({tp, tc} | {g * f for g in gaps for f in (0.25, 0.5, 1, 2, 4) if tp < g * f < tc})
        x, w = _gauss_legendre(nodes)
        total = F(0)
        for a, b in zip(edges[:-1], edges[1:]):
            h, m = (b - a) / 2, (a + b) / 2
            for xi, wi in zip(x, w):
                th = m + h * xi
                cdot = _reference(text, q1, q2, omr=2 * mp.sin(th / 2) ** 2, n=n, cdot_only=True)
                total += h * wi * cdot * mp.sin(th)
        return mp.sqrt(F(q1) * F(q2)) * total


DROPS = [(1.0, 1.0, 0.0, 1e-12, 3), (1.0, 1.0, 0.0, 1e-6, 3), (1.0, 1.0, 0.0, 1e-3, 4), (1.0, 1.0, 1e-10, 1e-12, 3),
         (1.0, 1.0, 1e-10, 1e-9, 3), (1.0, 1.0, 1e-10, 1e-3, 4)]


def test_drop_of_hard_swish_against_mpmath():
    r"""The gap form's drop $C(\rho_p)-C(\rho_c)$ of hard-swish ($q_1=q_2=1$, $1-\rho_p=0$ and $10^{-10}$,
    $\rho_p-\rho_c=10^{-12}$ to $10^{-3}$) relative to itself, against :func:`_drop_reference`: 1e-13 (measured 3.5e-16;
    a difference of two float64 values of $C$ would keep ~4 digits at $10^{-12}$); and its ``duals`` at $1-\rho_c$
    against :func:`_reference`."""
    form = _dual(HSWISH).gap_form
    q1, q2, omr_p, dlt, _ = (np.array(v) for v in zip(*DROPS))
    drop = form.drop(q1, q2, omr_p, dlt)
    C, Cdot = form.duals(q1, q2, omr_p + dlt)
    for i, (a, b, o, d, nodes) in enumerate(DROPS):
        _check(drop[i], _drop_reference(HSWISH, a, b, o, d, nodes), 0.0, 1e-13, 0.0)
    for i in (2, 5):
        ref = _reference(HSWISH, q1[i], q2[i], omr=F(omr_p[i]) + F(dlt[i]))
        _check(C[i], ref[0], 0.0, 3e-14, 0.0)
        _check(Cdot[i], ref[1], 0.0, 3e-14, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("text", [HSWISH, USER3], ids=["hswish", "user3"])
@pytest.mark.parametrize("q1, q2, omr_p, dlt", [(2.0, 2.5, 0.0, 1e-3), (2.0, 2.5, 1e-10, 1e-8), (1.0, 1.02, 0.0, 1e-3),
                                                (1.0, 1.02, 1e-4, 1e-3), (1.0, 1.0004, 0.0, 1e-6),
                                                (1.0, 1.0004, 1e-7, 1e-6)])
def test_drop_at_unequal_variances_against_mpmath(text, q1, q2, omr_p, dlt):
    r"""Unequal variances, where the angles cross the layers $\theta\sim|h_i-k_j|$ (0.03 at $q_2=1.02$, 6e-4 at
    1.0004, 0.075 for user3 at 2/2.5): 3e-10 relative.  Measured (reference converged: 8, 12 and 16 nodes a panel
    agree): at most 6e-14 for hard-swish, but user3 -5.7e-11 at (2, 2.5, 0, 1e-3) and 1.0e-11 at (1, 1.02, 0, 1e-3);
    beyond this range, with $\rho_p=1$, -8.9e-10 at $\Delta=10^{-2}$, 1.9e-9 at $3\cdot10^{-2}$ (user3, 2/2.5) and
    -2.4e-9 at $0.1$ (hard-swish): the 6-node rule of the smooth rest across a layer."""
    got = _dual(text).gap_form.drop(q1, q2, omr_p, dlt)
    _check(got, _drop_reference(text, q1, q2, omr_p, dlt, 8), 0.0, 3e-10, 0.0)


@pytest.mark.parametrize("text, degree", [(HSWISH, 2), (RELU2, 2), (USER3, 3), (USER4, 4), ("Max(0, x)**3", 3),
                                          ("Max(0, x)*x**3", 4), (JUMP, 2)])
def test_recognised(text, degree):
    """Continuous piecewise polynomials (and one that jumps) with a piece of degree 2 to 4 take this dual; the
    continuous ones with a gap form, the one that jumps without (its drop is not Price's integral of Cdot)."""
    assert piecewise_polynomial(sp.sympify(text, locals={"x": X})) is not None
    dual = _dual(text)
    assert f"degree {degree};" in dual.name, dual.name
    assert (dual.gap_form is None) == (text == JUMP)


@pytest.mark.parametrize("text", ["Max(-1, Min(1, x))", "Piecewise((x, x > 1), (0.5*x + 0.5, True))",
                                  "Piecewise((x**5, x > 0), (0, True))", "Max(0, x)**5",
                                  "Piecewise((x, x > 0), (tanh(x), True))",
                                  "Piecewise((x**2, x > 0), (exp(x) - 1, True))",
                                  "x**2", "x**2 + Max(0, x)*tanh(x)"])
def test_not_recognised(text):
    """Piecewise linear (the relu sums' dual), a piece of degree 5, a non-polynomial piece, a single polynomial: no
    piecewise-polynomial representation, and another dual (or none)."""
    assert piecewise_polynomial(sp.sympify(text, locals={"x": X})) is None
    dual = closed_form_dual(resolve_activation(text))
    assert dual is None or not dual.name.startswith("piecewise polynomial"), dual.name


# ------------------------------------------------------------------------------------------- review fixes (stop 32)

@pytest.mark.parametrize("q", [1e-13, 1e-8, 1e-4])
def test_small_variances_keep_relative_accuracy(q):
    """Near 0 the activations below are the polynomials of their middle piece, whose Gaussian moments are exact
    (Isserlis): E[a^2 b^2] = q1 q2 + 2c^2; hard-swish x/2 + x^2/6 gives c/4 + (q1 q2 + 2c^2)/36.  The breakpoints
    (-1.2; +-3) are ~1e3 standard deviations away or more, so the other pieces add nothing in float64.  Before, the
    terms of a breakpoint below 0 were expanded about it and cancelled: C = -8.9e-16 at q = 1e-13 (exact 3e-26)."""
    q1, q2 = q, 2.0 * q
    c = 0.3 * math.sqrt(q1 * q2)
    sq = closed_form_dual(resolve_activation("Piecewise((x**2, x > -1.2), (1.44 - 2.4*(x + 1.2), True))"))
    C, Cd = sq(np.array(q1), np.array(q2), np.array(c), ops=NUMPY_OPS)
    assert abs(C / (q1 * q2 + 2 * c * c) - 1) < 1e-13 and abs(Cd / (4 * c) - 1) < 1e-13
    hs = closed_form_dual(resolve_activation("x*Min(Max(x + 3, 0), 6)/6"))
    C, Cd = hs(np.array(q1), np.array(q2), np.array(c), ops=NUMPY_OPS)
    assert abs(C / (c / 4 + (q1 * q2 + 2 * c * c) / 36) - 1) < 1e-13
    assert abs(Cd / (0.25 + c / 9) - 1) < 1e-13            # phi' = 1/2 + x/3: E = 1/4 + c/9


def test_mixed_shapes_broadcast_like_elementwise_calls():
    """A scalar variance with an array of covariances (and the gap form's 1 - rho): the orthants' limits are
    broadcast with the correlation (before, the pair axis lined up with the covariances: off by 0.46)."""
    hs = closed_form_dual(resolve_activation("x*Min(Max(x + 3, 0), 6)/6"))
    c = np.array([0.1, -0.3])
    C, Cd = hs(1.0, 2.0, c, ops=NUMPY_OPS)
    for i, ci in enumerate(c):
        Ci, Cdi = hs(1.0, 2.0, ci, ops=NUMPY_OPS)
        assert abs(C[i] - Ci) < 1e-15 and abs(Cd[i] - Cdi) < 1e-15
    omr = np.array([1e-6, 0.5])
    C, _ = hs.gap_form.duals(1.0, 2.0, omr)
    for i, oi in enumerate(omr):
        assert abs(C[i] - hs.gap_form.duals(1.0, 2.0, oi)[0]) < 1e-15
    ht = closed_form_dual(resolve_activation("Max(-1, Min(1, x))"))
    c4 = np.array([0.1, 0.5, 0.7, 0.9])
    assert np.allclose(ht(1.0, 1.0, c4, ops=NUMPY_OPS)[0], [ht(1.0, 1.0, x, ops=NUMPY_OPS)[0] for x in c4],
                       rtol=0, atol=1e-15)


def test_linear_pieces_with_a_jump_away_from_zero():
    """x Heaviside(x - 1) (linear pieces, a jump at 1: neither a relu sum nor a step sum) is a piecewise polynomial;
    C = E[a b 1{a > 1, b > 1}] against a 2-D mpmath quadrature split at the breakpoint (rho = 0.3, q = 1)."""
    d = closed_form_dual(resolve_activation("x*Heaviside(x - 1)"))
    assert d is not None and d.name.startswith("piecewise polynomial") and d.gap_form is None
    rho = mp.mpf("0.3")
    s = mp.sqrt(1 - rho * rho)
    pdf = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)                                  # noqa: E731
    with mp.workdps(20):
        def inner(z1):       # E[b 1{b > 1} | a = z1], b = rho z1 + s z2: closed in z2 (a normal tail moment)
            t = (1 - rho * z1) / s
            return rho * z1 * mp.ncdf(-t) + s * pdf(t)
        ref = mp.quad(lambda z: z * inner(z) * pdf(z), [1, 4, 12])
    C, _ = d(1.0, 1.0, 0.3, ops=NUMPY_OPS)
    assert abs(float(C) - float(ref)) < 1e-14 * float(ref)


@pytest.mark.parametrize("text, q1, q2, rho", [(HSWISH, 2.0, 0.5, -0.7), (HSWISH, 6.0, 3.0, 0.9), (RELU2, 1.0, 2.5, 0.6)],
                         ids=["hswish-neg", "hswish-high", "relu2"])
def test_pwp_at_variances_taylor_updates_against_mpmath(text, q1, q2, rho):
    r"""The dual at fixed variances of a Newton solve (:mod:`kernelcalc.theory.duals_taylor`: exact at an anchor,
    Taylor updates with $\ddot C$ = the step part of $\phi''$ from the joint's orthants plus its Dirac masses, and
    $C^{(3)},C^{(4)}$ from the density's Hermite polynomials, between).  At $c_0+\delta$,
    $\delta/\sqrt{q_1q_2}=10^{-5}$ and $-3\cdot10^{-7}$, the values are Taylor updates (counted) and agree with
    :func:`_reference` at the moved covariance to 1e-13 of the scales (a wrong $\ddot C$ or $C^{(3)}$ would move
    $\dot C$ by $\sim10^{-5}$ or $10^{-10}$); $C^{(4)}$, below the reach of these moves, equals the central
    difference of $C^{(3)}$ at anchors $\pm h$, $h/\sqrt{q_1q_2}=10^{-4}$ and $5\cdot10^{-5}$, Richardson-extrapolated,
    to 1e-8."""
    from kernelcalc.theory.duals_taylor import pwp_at_variances

    rep = piecewise_polynomial(resolve_activation(text).expr)
    make = pwp_at_variances(rep, lambda a, b, c, w: pwp_joint(NUMPY_OPS, rep, a, b, c, None, w))
    n = math.sqrt(q1 * q2)
    cells = make(np.array([q1]), np.array([q2]))
    cells(np.array([rho * n]))
    scales = _scales(text, q1, q2)
    for k, move in enumerate((1e-5, -3e-7)):
        got = [float(v[0]) for v in cells(np.array([(rho + move) * n]))]
        assert cells.taylor_cells == k + 1 and cells.exact_cells == 1
        with mp.workdps(20):
            rho_c = F((rho + move) * n) / mp.sqrt(F(q1) * F(q2))
        for g, r, s in zip(got, _reference(text, q1, q2, rho_c), scales):
            _check(g, r, s, 1e-13, 1e-17)

    def central(h):        # the central difference of C''' over anchors at c0 +- h
        side = [make(np.array([q1]), np.array([q2])) for _ in range(2)]
        for cell, sign in zip(side, (1, -1)):
            cell(np.array([rho * n + sign * h]))
        return (side[0].anchor[4][0] - side[1].anchor[4][0]) / (2 * h)

    d4 = (4 * central(5e-5 * n) - central(1e-4 * n)) / 3      # Richardson: O(h^4)
    assert abs(cells.anchor[5][0] - d4) <= 1e-8 * max(abs(d4), abs(cells.anchor[4][0]) / n), (cells.anchor[5][0], d4)


def test_pwp_at_variances_where_the_last_terms_vanish():
    r"""Review of stop 35: with C''' and C'''' near 0 at the anchor (``Piecewise((x**2, x > 1), (2*x - 1, x > -1), (-3,
    True))`` at $q_2=1$, $c\approx0$) an estimate from the last terms alone accepted moves whose $C^{(5)}$ term was
    3e-8 of $\dot C$.  The remainder is now estimated from the next two terms too: over 3000 random cells (q 0.3-30,
    moves $10^{-8}$-$10^{-1}$ of $\sqrt{q_1q_2}$, the reviewer's two among them, at q = 27 and 1000) of this function,
    hard-swish and hardtanh (whose even derivatives vanish at $c=0$), every value is within 1e-14 of the closed form's,
    relative to $\sqrt{C(q_1,q_1)C(q_2,q_2)}$ and alike for $\dot C$ (measured: at most 7e-15, hardtanh at q ~ 20, where the
    closed form itself moves by 6e-15 of that scale when c moves by 1e-15 relative: its cancellations, duals_pwl's
    module doc; 3e-14 at q ~ 1e3)."""
    from kernelcalc.theory.duals_pwl import pwl_joint, relu_sum
    from kernelcalc.theory.duals_taylor import pwp_at_variances, relu_sum_at_variances

    rng = np.random.default_rng(11)
    m = 3000
    q1, q2 = 10 ** rng.uniform(-0.5, 1.5, m), 10 ** rng.uniform(-0.5, 1.5, m)
    q1[:2], q2[:2] = (27.390478281619707, 1000.0), 1.0
    n = np.sqrt(q1 * q2)
    c0 = np.where(rng.uniform(size=m) < 0.3, 0.0, rng.uniform(-0.95, 0.95, m)) * n
    c0[:2] = 0.021375236030448014, 0.0005020075291176763
    c1 = c0 + 10 ** rng.uniform(-8, -1, m) * rng.choice([-1, 1], m) * n
    c1[:2] = 0.035775236030448014, 1.3205020075291178
    c1 = np.clip(c1, -0.999 * n, 0.999 * n)
    USER2 = "Piecewise((x**2, x > 1), (2*x - 1, x > -1), (-3, True))"
    cases = []
    for text in (USER2, HSWISH):
        rep = piecewise_polynomial(resolve_activation(text).expr)
        joint = lambda a, b, c, rep=rep: pwp_joint(NUMPY_OPS, rep, a, b, c)        # noqa: E731
        cases.append((pwp_at_variances(rep, lambda a, b, c, w, rep=rep: pwp_joint(NUMPY_OPS, rep, a, b, c, None, w)),
                      joint))
    rep = relu_sum(resolve_activation("Max(-1, Min(1, x))").expr)
    cases.append((relu_sum_at_variances(rep), lambda a, b, c: pwl_joint(NUMPY_OPS, rep, a, b, c)))
    for make, joint in cases:
        cells = make(q1, q2)
        cells(c0)
        got = cells(c1)
        ref = joint(q1, q2, c1)
        for g, r, i in zip(got, ref, (0, 1)):
            scale = np.sqrt(joint(q1, q1, q1)[i] * joint(q2, q2, q2)[i])
            assert np.max(np.abs(g - r) / scale) <= 1e-14, (i, np.max(np.abs(g - r) / scale))
        assert cells.taylor_cells > m / 4
