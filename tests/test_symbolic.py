"""derive(): symbolic recursions agree with the numeric closed forms and with hand formulas."""

import json
import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from kernelcalc import ActivationError, Derivation, derive, resolve_activation
from kernelcalc.theory.duals import closed_form_dual
from kernelcalc.theory.symbolic import (T, c, delta, gaussian_expectation, q1, q2, q_x, q_y, rho, sigma_b, sigma_u,
                                 sigma_v, sigma_vb, sigma_w)

GRID = [(1.0, 1.0, 0.3), (0.7, 2.0, -0.5), (1.5, 0.4, 0.6), (2.0, 2.0, 1.9)]


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "sin", "leaky_relu(0.2)", "x**3 - x"])
def test_closed_form_symbolic_equals_numeric(name):
    """Consistency only: the sympy and numeric closed forms come from the same table (see the quadrature test)."""
    d = derive(name, model="node")
    assert d.closed_form
    C = sp.lambdify((q1, q2, c), d.C, "numpy")
    Cd = sp.lambdify((q1, q2, c), d.Cdot, "numpy")
    dual = closed_form_dual(resolve_activation(name))
    for a, b, cc in GRID:
        num_C, num_Cd = dual(a, b, cc)
        assert C(a, b, cc) == pytest.approx(float(num_C), rel=1e-12, abs=1e-14)
        assert Cd(a, b, cc) == pytest.approx(float(num_Cd), rel=1e-12, abs=1e-14)


def _relu_polar(qa, qb, cc):
    r"""E[relu(a) relu(b)], E[1{a>0} 1{b>0}] by mpmath quadrature in polar Cholesky coordinates.

    With $a=\sqrt{q_a}z_1$, $b=\alpha z_1+\beta z_2$ and $z=r(\cos\theta,\sin\theta)$ the integrands are
    homogeneous in $r$ (degree 2 and 0), so the radial integrals are $\int_0^\infty r^3e^{-r^2/2}dr=2$ and
    $\int_0^\infty re^{-r^2/2}dr=1$; the angular integral runs over the arc where $a, b > 0$.
    """
    sa = mp.sqrt(qa)
    al, be = cc / sa, mp.sqrt(qb - cc**2 / qa)
    lo = max(-mp.pi / 2, mp.atan2(be, al) - mp.pi / 2)          # b > 0 <=> |theta - atan2(be, al)| < pi/2
    C = mp.quad(lambda t: sa * mp.cos(t) * (al * mp.cos(t) + be * mp.sin(t)), [lo, mp.pi / 2]) * 2 / (2 * mp.pi)
    Cdot = mp.quad(lambda t: 1, [lo, mp.pi / 2]) / (2 * mp.pi)
    return float(C), float(Cdot)


def _gauss_hermite_2d(f, df, qa, qb, cc, deg=120):
    """E[f(a)f(b)], E[f'(a)f'(b)] by a 120x120 Gauss-Hermite product rule (f entire: converges super-exponentially)."""
    z, w = np.polynomial.hermite_e.hermegauss(deg)
    w = w / math.sqrt(2 * math.pi)
    sa = math.sqrt(qa)
    al, be = cc / sa, math.sqrt(qb - cc**2 / qa)
    A, B = sa * z[:, None], al * z[:, None] + be * z[None, :]
    W = w[:, None] * w[None, :]
    return float(np.sum(W * f(A) * f(B))), float(np.sum(W * df(A) * df(B)))


@pytest.mark.parametrize("name", ["relu", "erf", "sin"])
def test_closed_form_matches_numeric_quadrature(name):
    """Independent reference: numerical quadrature of E[φ(a)φ(b)], E[φ'(a)φ'(b)] (mpmath polar for relu, Gauss-Hermite)."""
    from scipy.special import erf as sp_erf

    d = derive(name, model="node")
    C = sp.lambdify((q1, q2, c), d.C, "math")
    Cd = sp.lambdify((q1, q2, c), d.Cdot, "math")
    for a, b, cc in GRID:
        if name == "relu":
            with mp.workdps(30):
                eC, eCd = _relu_polar(mp.mpf(a), mp.mpf(b), mp.mpf(cc))
        elif name == "erf":
            eC, eCd = _gauss_hermite_2d(sp_erf, lambda x: 2 / math.sqrt(math.pi) * np.exp(-x * x), a, b, cc)
        else:
            eC, eCd = _gauss_hermite_2d(np.sin, np.cos, a, b, cc)
        assert C(a, b, cc) == pytest.approx(eC, rel=1e-12, abs=1e-14), (a, b, cc)
        assert Cd(a, b, cc) == pytest.approx(eCd, rel=1e-12, abs=1e-14), (a, b, cc)


def test_closed_forms_against_textbook_values():
    """Independent reference: textbook values of the arc-cosine and arcsin kernels."""
    relu = derive("relu", model="mlp")
    # arc-cosine kernel: C(1,1,0) = 1/(2 pi), Cdot(1,1,0) = 1/4, C(q,q,q) = q/2
    assert float(relu.C.subs({q1: 1, q2: 1, c: 0})) == pytest.approx(1 / (2 * math.pi), rel=1e-14)
    assert float(relu.Cdot.subs({q1: 1, q2: 1, c: 0})) == pytest.approx(0.25, rel=1e-14)
    assert float(relu.C.subs({q1: 3, q2: 3, c: 3})) == pytest.approx(1.5, rel=1e-14)
    erf = derive("erf", model="mlp")
    a, b, cc = 0.7, 1.3, 0.4
    expect = 2 / math.pi * math.asin(2 * cc / math.sqrt((1 + 2 * a) * (1 + 2 * b)))
    assert float(erf.C.subs({q1: a, q2: b, c: cc})) == pytest.approx(expect, rel=1e-14)


def _relu_mlp_depth1(r, qx, qy, sw, sb, sv, svb):
    """Hand-written arc-cosine NNGP/NTK of x -> Dense(sw, sb) -> relu -> Dense(sv, svb)."""
    k, kx, ky = sw**2 * r + sb**2, sw**2 * qx + sb**2, sw**2 * qy + sb**2
    n = math.sqrt(kx * ky)
    th = math.acos(k / n)
    nngp = sv**2 * n * (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi) + svb**2
    ntk = nngp + sv**2 * (math.pi - th) / (2 * math.pi) * k
    return nngp, ntk


def test_mlp_relu_depth1_against_arccos_formula():
    """Independent reference: the arc-cosine formula written by hand here."""
    d = derive("relu", model="mlp", depth=1)
    vals = {q_x: 1.1, q_y: 0.8, sigma_w: 1.3, sigma_b: 0.2, sigma_v: 0.9, sigma_vb: 0.1}
    nngp = sp.lambdify(rho, d.nngp.subs(vals), "math")
    ntk = sp.lambdify(rho, d.ntk.subs(vals), "math")
    for r in (-0.9, -0.3, 0.0, 0.45, 0.9):
        e_nngp, e_ntk = _relu_mlp_depth1(r, 1.1, 0.8, 1.3, 0.2, 0.9, 0.1)
        assert nngp(r) == pytest.approx(e_nngp, rel=1e-13)
        assert ntk(r) == pytest.approx(e_ntk, rel=1e-13)


def test_mlp_relu_depth2_unrolls_the_layer_recursion():
    """Independent reference: the depth-2 relu recursion unrolled by hand."""
    d = derive("relu", model="mlp", depth=2)
    vals = {q_x: 1.0, q_y: 1.0, sigma_w: 1.0, sigma_b: 0.0, sigma_v: 1.0, sigma_vb: 0.0, rho: 0.5}
    # hand: K1 = 0.5 (diagonal 1); layer 1 -> K2 = C(1,1,.5), diag K2 = 1/2; Theta2 = K2 + Cdot * K1
    th = math.acos(0.5)
    k2 = (math.sin(th) + (math.pi - th) * 0.5) / (2 * math.pi)
    theta2 = k2 + (math.pi - th) / (2 * math.pi) * 0.5
    th2 = math.acos(k2 / 0.5)
    nngp = 0.5 * (math.sin(th2) + (math.pi - th2) * math.cos(th2)) / (2 * math.pi)
    ntk = nngp + (math.pi - th2) / (2 * math.pi) * theta2
    assert float(d.nngp.subs(vals)) == pytest.approx(nngp, rel=1e-13)
    assert float(d.ntk.subs(vals)) == pytest.approx(ntk, rel=1e-13)


def test_node_equations_are_integrals():
    """Structural check of the Neural-ODE equations (integral form, sigma_w = 0 limit)."""
    d = derive("softplus", model="node")
    assert isinstance(d, Derivation) and not d.closed_form
    assert isinstance(d.C, sp.Integral) and isinstance(d.Cdot, sp.Integral)
    Cn, Lam = sp.Function("C"), sp.Function("Lambda")
    assert d.nngp == sigma_v**2 * Cn(T, T)
    integrals = list(d.ntk.atoms(sp.Integral))
    assert len(integrals) == 1 and len(integrals[0].limits) == 2
    assert all(lim[1:] == (0, T) for lim in integrals[0].limits)
    # sigma_w = 0: no hidden dynamics, NTK = sigma_v^2 C(T,T) + sigma_u^2 rho Lambda(0,0)
    assert sp.simplify(d.ntk.subs(sigma_w, 0) - (sigma_v**2 * Cn(T, T) + sigma_u**2 * rho * Lam(0, 0))) == 0
    lam_eq = [e for e in d.equations if e.lhs == Lam(sp.Symbol("t", nonnegative=True), sp.Symbol("s", nonnegative=True))]
    assert len(lam_eq) == 1 and lam_eq[0].rhs.has(sp.Integral)


def test_resnet_sums_with_step_T_over_L():
    """Structural check: the L = 1 ResNet sum written out by hand."""
    d = derive("tanh", model="resnet", depth=1)
    assert any(e.lhs == delta and e.rhs == T for e in d.equations)  # delta = T/1
    assert d.ntk.has(sp.Sum)
    # L = 1: the double sum has the single term C[0,0] Lambda[1,1]
    C, Lam = sp.IndexedBase("C"), sp.IndexedBase("Lambda")
    expect = sigma_v**2 * C[1, 1] + delta**2 * sigma_w**2 * C[0, 0] * Lam[1, 1] + sigma_u**2 * rho * Lam[0, 0]
    assert sp.simplify(d.ntk.doit() - expect) == 0
    assert derive("tanh", model="resnet").ntk.has(sp.Symbol("L", integer=True, positive=True))


def test_gaussian_expectation_integral_form():
    """Independent reference: scipy dblquad of the printed integral against E[ab] = c and the erf kernel."""
    from scipy import integrate

    a, b, cc = 1.2, 0.8, 0.5
    # E[ab] = c and E[erf(a) erf(b)] = the closed form: the density is the right one
    for f, expect in [(sp.Symbol("x", real=True), cc),
                      (sp.erf(sp.Symbol("x", real=True)),
                       2 / math.pi * math.asin(2 * cc / math.sqrt((1 + 2 * a) * (1 + 2 * b))))]:
        I = gaussian_expectation(f, f, q1, q2, c).subs({q1: a, q2: b, c: cc})
        (va, _, _), (vb, _, _) = I.limits
        g = sp.lambdify((va, vb), I.function, modules=["scipy", "numpy"])
        val, _ = integrate.dblquad(lambda y, x: g(x, y), -12, 12, -12, 12, epsabs=1e-11)
        assert val == pytest.approx(expect, abs=1e-8)
    one_d = gaussian_expectation(sp.Symbol("x", real=True) ** 2, sp.Integer(1), q1, q1, q1)
    assert len(one_d.limits) == 1
    assert float(one_d.subs(q1, 2.0).doit()) == pytest.approx(2.0, rel=1e-12)  # E[a^2] = q


def test_output_forms():
    """Output formats: text, LaTeX and JSON carry the equations."""
    for act, model in (("softplus", "node"), ("erf", "resnet"), ("relu", "mlp")):
        d = derive(act, model=model)
        text, tex = d.text(), d.latex()
        assert "K_NTK" in text and "φ'(x)" in text
        assert "\\begin{align*}" in tex and "\\end{align*}" in tex and "K_{NTK}" in tex
        doc = json.loads(json.dumps(d.to_dict()))
        assert doc["model"] == model and doc["activation"]["builtin"] == act.split("(")[0]
        assert doc["closed_form"] is (act != "softplus")
        assert doc["equations"] and all({"lhs", "rhs", "latex"} <= set(e) for e in doc["equations"])


def test_validation():
    """Input validation: bad model, depth and activation raise clear errors."""
    with pytest.raises(ValueError, match="'node', 'resnet', 'mlp'"):
        derive("tanh", model="cnn")
    with pytest.raises(ValueError, match="depth"):
        derive("tanh", model="node", depth=3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="depth"):
            derive("tanh", model="mlp", depth=bad)
    with pytest.raises(ActivationError):
        derive("nope", model="mlp")
    assert derive(resolve_activation("tanh"), model="MLP").model == "mlp"
    assert derive("log(1+exp(x))").model == "node"
