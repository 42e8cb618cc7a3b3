r"""The closed-form dual of continuous piecewise-linear activations with breakpoints away from 0
(:mod:`kernelcalc.theory.duals_pwl`, recognised by :func:`kernelcalc.theory.duals.closed_form_dual`) against mpmath
references written here, from the pieces listed by hand (no code shared with the relu-sum form):

- ``_reference``: $E[f(a)g(b)]=\int E[g(b)\mid a]\,f(a)\,dP(a)$, the inner expectation of the pieces of $g$ over
  $b\mid a\sim N(m,\sigma^2)$ in closed form (univariate: $\int_l^r(v+wb)\,dN(m,\sigma^2)=
  (v+wm)(\Phi(\beta)-\Phi(\alpha))+w\sigma(\varphi(\alpha)-\varphi(\beta))$), the outer one by mpmath quadrature split
  at the breakpoints, the breakpoints of the inner pieces mapped back ($a=\frac{s_1}{\rho s_2}(u-\dots)$ is not needed:
  the inner form is smooth in $a$ for $\sigma>0$) and on the scales of $a$;
- ``_reference_2d`` (slow): mp.quad over the plane in whitened coordinates, split at every breakpoint.
"""

import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.duals import JAX_OPS, NUMPY_OPS, closed_form_dual

#: activation text -> its pieces (left end, right end, value at 0 of the line, slope), listed by hand
PIECES = {
    "Max(-1, Min(1, x))": [(-mp.inf, -1, -1, 0), (-1, 1, 0, 1), (1, mp.inf, 1, 0)],
    "Min(Max(x, 0), 6)": [(-mp.inf, 0, 0, 0), (0, 6, 0, 1), (6, mp.inf, 6, 0)],
    "Piecewise((x, x > 1), (0.1*x + 0.9, x > -2), (-0.5*x - 0.3, x > -3), (1.2, True))":
        [(-mp.inf, -3, mp.mpf("1.2"), 0), (-3, -2, mp.mpf("-0.3"), mp.mpf("-0.5")),
         (-2, 1, mp.mpf("0.9"), mp.mpf("0.1")), (1, mp.inf, 0, 1)],
    "Max(x - 0.5, 0)": [(-mp.inf, mp.mpf("0.5"), 0, 0), (mp.mpf("0.5"), mp.inf, mp.mpf("-0.5"), 1)],
}
HARDTANH, RELU6, USER, SHIFTED = PIECES


def _fn(pieces, derivative):
    def f(z):
        for lo, hi, v, w in pieces:
            if lo <= z < hi:
                return w if derivative else v + w * z
        raise AssertionError
    return f


def _inner(pieces, m, sg, derivative):
    """E[g(b)] for b ~ N(m, sg^2), g the pieces (or their slopes)."""
    total = mp.mpf(0)
    for lo, hi, v, w in pieces:
        al, be = (lo - m) / sg, (hi - m) / sg
        mass = mp.ncdf(be) - mp.ncdf(al)
        if derivative:
            total += w * mass
        else:
            total += (v + w * m) * mass + w * sg * (mp.npdf(al) - mp.npdf(be))
    return total


def _reference(pieces, q1, q2, rho):
    with mp.workdps(30):
        q1, q2, rho = mp.mpf(q1), mp.mpf(q2), mp.mpf(rho)
        s1, s2 = mp.sqrt(q1), mp.sqrt(q2)
        sg = mp.sqrt(1 - rho * rho) * s2
        breaks = {p[0] / s1 for p in pieces[1:]}
        pts = sorted({-mp.inf, mp.inf} | breaks | {mp.mpf(j) for j in (-12, -8, -5, -3, -1.5, 0, 1.5, 3, 5, 8, 12)})
        out = []
        for d in (False, True):
            f = _fn(pieces, d)
            out.append(mp.quad(lambda z: f(s1 * z) * _inner(pieces, rho * s2 * z, sg, d) * mp.npdf(z), pts))
        return tuple(float(v) for v in out)


def _reference_2d(pieces, q1, q2, rho, dps=20):
    """mp.quad over the plane: a = s1 z1, b = s2 (rho z1 + r z2), split at every breakpoint in z1 and z2."""
    with mp.workdps(dps):
        q1, q2, rho = mp.mpf(q1), mp.mpf(q2), mp.mpf(rho)
        s1, s2, r = mp.sqrt(q1), mp.sqrt(q2), mp.sqrt(1 - rho * rho)
        out = []
        for d in (False, True):
            f = _fn(pieces, d)

            def inner(z1):
                cuts = {(p[0] / s2 - rho * z1) / r for p in pieces[1:]}
                pts = sorted({-mp.inf, mp.inf} | {c for c in cuts if abs(c) < 40} | {mp.mpf(0)})
                return mp.quad(lambda z2: f(s2 * (rho * z1 + r * z2)) * mp.npdf(z2), pts)

            pts = sorted({-mp.inf, mp.inf, mp.mpf(0)} | {p[0] / s1 for p in pieces[1:]})
            out.append(mp.quad(lambda z1: f(s1 * z1) * inner(z1) * mp.npdf(z1), pts))
        return tuple(float(v) for v in out)


def _dual(text):
    dual = closed_form_dual(resolve_activation(text))
    assert dual is not None and dual.name.startswith("relu sum(")
    return dual


def _check(text, q1, q2, rho, rtol, reference=_reference):
    r"""C and Cdot to ``rtol`` of their scales: C against $\sqrt{C(q_1,q_1,q_1)C(q_2,q_2,q_2)}$ (C crosses 0),
    Cdot against $\sqrt{\dot C\dot C}$ on the diagonals (the kernels' own scales)."""
    dual = _dual(text)
    C, Cd = (float(v) for v in dual(q1, q2, rho * math.sqrt(q1 * q2), ops=NUMPY_OPS))
    ref = reference(PIECES[text], q1, q2, rho)
    d1, d2 = dual(q1, q1, q1, ops=NUMPY_OPS), dual(q2, q2, q2, ops=NUMPY_OPS)
    scale_C, scale_Cd = math.sqrt(float(d1[0] * d2[0])), math.sqrt(float(d1[1] * d2[1]))
    assert abs(C - ref[0]) <= rtol * scale_C, (C, ref[0], (C - ref[0]) / scale_C)
    assert abs(Cd - ref[1]) <= rtol * scale_Cd, (Cd, ref[1], (Cd - ref[1]) / scale_Cd)
    return (C - ref[0]) / scale_C, (Cd - ref[1]) / scale_Cd


@pytest.mark.parametrize("text, q1, q2, rho", [(HARDTANH, 1.0, 1.0, 0.5), (RELU6, 10.0, 3.0, -0.99),
                                               pytest.param(USER, 0.3, 1.0, 0.999, marks=pytest.mark.slow),
                                               (SHIFTED, 1e3, 1e3, 0.9)])
def test_pwl_dual_matches_mpmath(text, q1, q2, rho):
    _check(text, q1, q2, rho, 1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("text", [HARDTANH, RELU6, USER])
@pytest.mark.parametrize("q", [0.3, 1.0, 10.0, 1e3])
@pytest.mark.parametrize("rho", [-0.99, -0.5, 0.0, 0.5, 0.9, 0.999])
def test_pwl_dual_matches_mpmath_everywhere(text, q, rho):
    """Equal and unequal variances (q, q / 3): 1e-12 of the scales at q <= 10, 1e-12 at q = 1e3 (the cancellation
    of the O(q) terms of a bounded phi: module doc of duals_pwl, measured ~1e-14)."""
    _check(text, q, q, rho, 1e-12)
    _check(text, q, q / 3, rho, 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("text, q1, q2, rho", [(HARDTANH, 1.0, 2.0, 0.5), (USER, 10.0, 1.0, -0.5)])
def test_reference_matches_plane_quadrature(text, q1, q2, rho):
    """The 1-D reference against mp.quad over the plane (both references, to 1e-14)."""
    a, b = _reference(PIECES[text], q1, q2, rho), _reference_2d(PIECES[text], q1, q2, rho)
    assert a == pytest.approx(b, rel=1e-14, abs=1e-15)


def test_pwl_dual_at_zero_variance():
    r"""$q_1=0$ (a zero input): $C=\phi(0)E[\phi(b)]$, $\dot C=E[\phi'(b)]$ times the limit $P(a>u)$ (1/2 at $u=0$,
    relu's convention)."""
    ht, r6 = _dual(HARDTANH), _dual(RELU6)
    C, Cd = ht(0.0, 2.0, 0.0, ops=NUMPY_OPS)
    assert abs(float(C)) < 1e-15 and float(Cd) == pytest.approx(math.erf(0.5), rel=1e-14)   # P(|b| < 1), b ~ N(0, 2)
    C, Cd = r6(0.0, 4.0, 0.0, ops=NUMPY_OPS)
    assert float(C) == 0.0 and float(Cd) == pytest.approx(0.5 * (0.5 - 0.5 * math.erfc(3 / math.sqrt(2))), rel=1e-14)
    C, Cd = _dual(USER)(0.0, 0.0, 0.0, ops=NUMPY_OPS)
    assert float(C) == pytest.approx(0.81, rel=1e-14) and float(Cd) == pytest.approx(0.01, rel=1e-14)


@pytest.mark.slow
def test_pwl_dual_under_jax():
    """jax.numpy gives numpy's values (the solvers that compile duals)."""
    q1, q2 = np.array([0.3, 1.0, 10.0, 2.0]), np.array([0.3, 2.0, 10.0, 7.0])
    c = np.array([0.3, -1.2, 9.99, 0.0])
    for text in (HARDTANH, USER):
        a, b = _dual(text)(q1, q2, c, ops=NUMPY_OPS), _dual(text)(q1, q2, c, ops=JAX_OPS)
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-14)


@pytest.mark.parametrize("text", [HARDTANH, RELU6, USER, SHIFTED, "Piecewise((x, x > 0), (0.1*x, x > -2), (0.3*x + 0.4, True))",
                                  "Abs(x - 1) + 0.5*x", "Max(x, 0) - Max(x - 6, 0)"])
def test_recognised(text):
    assert closed_form_dual(resolve_activation(text)).name.startswith("relu sum(")


@pytest.mark.parametrize("text, name", [("relu", "relu"), ("Max(0, x)", "relu"), ("leaky_relu", "leaky_relu"),
                                        ("Abs(x)", "piecewise linear"), ("Piecewise((x, x > 0), (0.2*x, True))",
                                                                         "piecewise linear"), ("elu", "elu"),
                                        ("x", "polynomial")])
def test_homogeneous_and_named_keep_their_duals(text, name):
    assert closed_form_dual(resolve_activation(text)).name.split("(")[0] == name


@pytest.mark.parametrize("text", ["sign(x)", "Heaviside(x - 1)", "Piecewise((x, x > 0), (x - 1, True))",
                                  "Piecewise((x, x > 0), (tanh(x), True))", "Max(0, x)**2", "Max(0, x - 1)*x",
                                  "Piecewise((x, x > 1), (x**2, True))", "tanh(Max(x, -1))"])
def test_not_recognised(text):
    dual = closed_form_dual(resolve_activation(text))
    assert dual is None or not dual.name.startswith("relu sum(")


#: piecewise-constant activations that jump away from 0, their pieces by hand (value, slope 0)
STEPS = {
    "sign(x - 0.3)": [(-mp.inf, mp.mpf("0.3"), -1, 0), (mp.mpf("0.3"), mp.inf, 1, 0)],
    "Heaviside(x - 1)": [(-mp.inf, 1, 0, 0), (1, mp.inf, 1, 0)],
    "sign(x + 1) + 0.5*Heaviside(x - 2)": [(-mp.inf, -1, -1, 0), (-1, 2, 1, 0), (2, mp.inf, mp.mpf("1.5"), 0)],
    "Piecewise((1, x > 1), (-0.5, True))": [(-mp.inf, 1, mp.mpf("-0.5"), 0), (1, mp.inf, 1, 0)],
}


@pytest.mark.parametrize("text", list(STEPS))
@pytest.mark.parametrize("q1, q2, rho", [(1.0, 1.0, 0.5), (0.3, 2.0, -0.9), (10.0, 10.0, 0.999), (1e3, 20.0, -0.3)])
def test_step_sum_dual_matches_mpmath(text, q1, q2, rho):
    r"""A jump away from 0 (``sign(x - 0.3)``; before, the polar-sector rule, which assumes the kink at 0: an estimate of
    1.3e-2 and a warning): $C$ from $\Phi_2$ orthants against the mpmath reference of the pieces, 1e-13 of
    $\sqrt{C(q_1,q_1,q_1)C(q_2,q_2,q_2)}$; $\dot C=0$ (the derivative almost everywhere, as for ``sign``)."""
    dual = closed_form_dual(resolve_activation(text))
    assert dual is not None and dual.name.startswith("step sum(")
    C, Cd = (float(v) for v in dual(q1, q2, rho * math.sqrt(q1 * q2), ops=NUMPY_OPS))
    ref = _reference(STEPS[text], q1, q2, rho)[0]
    scale = math.sqrt(float(dual(q1, q1, q1, ops=NUMPY_OPS)[0] * dual(q2, q2, q2, ops=NUMPY_OPS)[0]))
    assert abs(C - ref) <= 1e-13 * scale, (C, ref)
    assert Cd == 0.0


@pytest.mark.parametrize("text, jumps", [("sign(x)", True), ("Heaviside(x)", True), ("Max(-1, Min(1, x))", False),
                                         ("Piecewise((x, x > 0), (x - 1, True))", True)])
def test_step_sum_is_only_for_jumps_away_from_zero(text, jumps):
    """sign and Heaviside keep their own duals; continuous activations and a jump with slopes are not step sums.
    ``jumps`` sees a Piecewise's jump between its pieces too (sympy's derivative of a Piecewise shows no Dirac part:
    before, ``Piecewise((1, x > 1), (-0.5, True))`` was not known to jump, took the polar-sector rule and 4 sphere rows
    took minutes; it is a step sum now, checked against mpmath above)."""
    act = resolve_activation(text)
    dual = closed_form_dual(act)
    assert dual is None or not dual.name.startswith("step sum(")
    assert act.jumps == jumps
    assert resolve_activation("Piecewise((1, x > 1), (-0.5, True))").jumps


# ----------------------------------------------------------------------------- the dual at fixed variances
def _density_derivatives(rep, q1, q2, c):
    r"""$\sum_{kl}\gamma_k\gamma_l\,\partial_c^mp(u_k,u_l)$, $m=0,1,2$ ($p$ the bivariate normal density of covariance
    ``[[q1, c], [c, q2]]``), by sympy differentiation of $p$ in $c$ (not the heat-equation identity the module uses)."""
    a, b, cc = sp.symbols("a b c", real=True)
    D = q1 * q2 - cc ** 2
    p = sp.exp(-(q2 * a ** 2 - 2 * cc * a * b + q1 * b ** 2) / (2 * D)) / (2 * sp.pi * sp.sqrt(D))
    _, _, us, gs = rep
    return [float(sum(gu * gv * sp.diff(p, cc, m).subs({a: u, b: v, cc: c}).evalf(30)
                      for u, gu in zip(us, gs) for v, gv in zip(us, gs))) for m in (0, 1, 2)]


@pytest.mark.parametrize("text, q1, q2, rho", [(HARDTANH, 1.3, 0.7, 0.6), (RELU6, 8.0, 3.0, -0.9),
                                               pytest.param(USER, 0.4, 2.0, 0.95, marks=pytest.mark.slow)])
def test_relu_sum_at_variances_taylor_updates_against_mpmath(text, q1, q2, rho):
    r"""``relu_sum_at_variances`` (the relu sum's dual at fixed variances of a Newton solve: exact at an anchor, Taylor
    updates with $\ddot C,C^{(3)},C^{(4)}$ from the density between).  Its derivatives at the anchor equal sympy's of
    the density to 1e-13 relative; at $c_0+\delta$, $\delta/\sqrt{q_1q_2}=10^{-5}$ and $-3\cdot10^{-7}$ (a Newton
    solve's later sweeps) the values are *Taylor updates* (counted) and agree with the mpmath reference at the moved
    covariance to 1e-13 of the scales; a move of 0.2 is evaluated exactly (a new anchor), not extrapolated."""
    from kernelcalc.theory.duals_pwl import relu_sum
    from kernelcalc.theory.duals_taylor import relu_sum_at_variances

    rep = relu_sum(resolve_activation(text).expr)
    n = math.sqrt(q1 * q2)
    cells = relu_sum_at_variances(rep)(np.array([q1]), np.array([q2]))
    cells(np.array([rho * n]))
    assert cells.exact_cells == 1 and cells.taylor_cells == 0
    got = [float(v[0]) for v in cells.anchor[3:6]]
    np.testing.assert_allclose(got, _density_derivatives(rep, q1, q2, rho * n), rtol=1e-13, atol=0)
    d1, d2 = _dual(text)(q1, q1, q1, ops=NUMPY_OPS), _dual(text)(q2, q2, q2, ops=NUMPY_OPS)
    scale_C, scale_Cd = math.sqrt(float(d1[0] * d2[0])), math.sqrt(float(d1[1] * d2[1]))
    for k, move in enumerate((1e-5, -3e-7)):
        C, Cd = (float(v[0]) for v in cells(np.array([(rho + move) * n])))
        assert cells.taylor_cells == k + 1 and cells.exact_cells == 1
        ref = _reference(PIECES[text], q1, q2, rho + move)
        assert abs(C - ref[0]) <= 1e-13 * scale_C, (C, ref[0])
        assert abs(Cd - ref[1]) <= 1e-13 * scale_Cd, (Cd, ref[1])
    cells(np.array([(rho - 0.2) * n]))
    assert cells.exact_cells == 2


@pytest.mark.parametrize("block", [None, 600])
def test_relu_sum_at_variances_many_cells_equal_the_closed_form(block, monkeypatch):
    r"""4000 random cells ($q$ 0.2..8, $|\rho|\le0.98$) of hardtanh and relu6 moved by $\delta/\sqrt{q_1q_2}$ up to
    $10^{-3}$..$10^{-10}$: every value within 1e-14 of the closed form at the moved covariance (relative to
    $|C|+\sqrt{q_1q_2}|\dot C|$, and to $|\dot C|$); at $10^{-5}$ at least 95 % of the cells are Taylor updates, at
    $10^{-3}$ most are evaluated (the remainder estimate refuses them).  Zero variances and $|\rho|=1$ are always
    evaluated.  ``block``: the anchors evaluated in blocks of 600 cells (the last one partial), as a large batch is."""
    from kernelcalc.theory import duals_taylor
    from kernelcalc.theory.duals_pwl import pwl_joint, relu_sum
    from kernelcalc.theory.duals_taylor import relu_sum_at_variances

    if block is not None:
        monkeypatch.setattr(duals_taylor, "_BLOCK", block)

    rng = np.random.default_rng(0)
    m = 4000
    q1, q2, rho = rng.uniform(0.2, 8, m), rng.uniform(0.2, 8, m), rng.uniform(-0.98, 0.98, m)
    n = np.sqrt(q1 * q2)
    for text in (HARDTANH, RELU6):
        rep = relu_sum(resolve_activation(text).expr)
        for move, least, most in ((1e-3, 0.0, 0.3), (1e-5, 0.95, 1.0), (1e-10, 1.0, 1.0)):
            cells = relu_sum_at_variances(rep)(q1, q2)
            cells(rho * n)
            c = (rho + move * rng.uniform(-1, 1, m)) * n
            C, Cd = cells(c)
            Ce, Cde = pwl_joint(NUMPY_OPS, rep, q1, q2, c)
            assert np.max(np.abs(C - Ce) / (np.abs(Ce) + n * np.abs(Cde))) <= 1e-14
            assert np.max(np.abs(Cd - Cde) / np.abs(Cde)) <= 1e-14
            assert least <= cells.taylor_cells / m <= most, (text, move, cells.taylor_cells / m)
        cells = relu_sum_at_variances(rep)(np.array([0.0, 1.0]), np.array([1.0, 1.0]))
        cells(np.array([0.0, 1.0]))
        C, Cd = cells(np.array([0.0, 1.0 - 1e-12]))
        assert cells.taylor_cells == 1 and cells.exact_cells == 3       # (c unchanged at the zero variance)
        np.testing.assert_allclose(np.stack([C, Cd]), np.stack(pwl_joint(NUMPY_OPS, rep, np.array([0.0, 1.0]),
                                   np.array([1.0, 1.0]), np.array([0.0, 1.0 - 1e-12]))), rtol=0, atol=1e-15)
