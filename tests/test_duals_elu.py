r"""The closed-form ELU dual (:func:`kernelcalc.theory.duals.closed_form_dual`) against an mpmath reference
written here: $E[f(a)g(b)]=\int E[g(b)\mid a]\,f(a)\,dP(a)$, the inner expectation of $b\mid a\sim N(m,\sigma^2)$
in closed form (univariate calculus: $E[b\,\mathbb 1_{b>0}]=m\Phi(m/\sigma)+\sigma\varphi(m/\sigma)$,
$E[e^b\mathbb 1_{b<0}]=e^{m+\sigma^2/2}\Phi(-(m+\sigma^2)/\sigma)$), the outer one by mpmath quadrature split at
the kink and on the scales $1/\sqrt{q}$ and 1.  No code is shared with the bivariate-normal forms tested."""

import math

import mpmath as mp
import numpy as np
import pytest

from kernelcalc.theory.activations import resolve_activation
from kernelcalc.theory.duals import NUMPY_OPS, closed_form_dual


def _reference(q1, q2, rho, alpha):
    """(C, Cdot) of ELU(alpha) at Var a = q1, Var b = q2, corr rho, by mpmath (module doc)."""
    with mp.workdps(20):
        q1, q2, rho, al = mp.mpf(q1), mp.mpf(q2), mp.mpf(rho), mp.mpf(alpha)
        s1, s2 = mp.sqrt(q1), mp.sqrt(q2)
        sg = mp.sqrt(1 - rho * rho) * s2
        phi = lambda x: x if x > 0 else al * (mp.exp(x) - 1)   # noqa: E731
        dphi = lambda x: 1 if x > 0 else al * mp.exp(x)        # noqa: E731

        def inner(u, which):
            m = rho * s2 / s1 * u
            if sg == 0:
                return (phi if which == 0 else dphi)(m)
            t = m / sg
            ex = mp.exp(m + sg * sg / 2) * mp.ncdf(-(m + sg * sg) / sg)
            if which == 0:
                return m * mp.ncdf(t) + sg * mp.npdf(t) + al * (ex - mp.ncdf(-t))
            return mp.ncdf(t) + al * ex

        sc = 1 / s1
        pts = sorted({-mp.inf, mp.inf, 0} | {v * j for v in (sc, -sc) for j in (0.3, 1, 3, 10, 30, 100)}
                     | {mp.mpf(j) for j in (-12, -6, -3, -1, 1, 3, 6, 12)})
        return tuple(float(mp.quad(lambda z, w=w: (phi if w == 0 else dphi)(s1 * z) * inner(s1 * z, w) * mp.npdf(z), pts))
                     for w in (0, 1))


def _check(q1, q2, rho, alpha, rtol):
    dual = closed_form_dual(resolve_activation(f"elu(alpha={alpha})"))
    C, Cdot = dual(q1, q2, rho * math.sqrt(q1 * q2), ops=NUMPY_OPS)
    ref = _reference(q1, q2, rho, alpha)
    assert float(C) == pytest.approx(ref[0], rel=rtol)
    assert float(Cdot) == pytest.approx(ref[1], rel=rtol)
    return float(C), float(Cdot)


@pytest.mark.parametrize("q, rho, alpha", [(0.1, -0.9, 1.0), (10.0, 0.999999, 1.0), (1e4, 0.5, 0.5)])
def test_elu_dual_matches_mpmath(q, rho, alpha):
    """1e-12 relative at small, moderate and large variance (the large one in the bivariate Mills-ratio branch)."""
    _check(q, q, rho, alpha, 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("q", [0.1, 1.0, 10.0, 1e2, 1e4])
@pytest.mark.parametrize("rho", [-0.999999, -0.9, -0.3, 0.0, 0.5, 0.9, 0.999999, 1.0])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu_dual_matches_mpmath_everywhere(q, rho, alpha):
    _check(q, q, rho, alpha, 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("q1, q2, rho, alpha", [(1e6, 1e6, -0.999999, 1.0), (1e6, 1e6, 0.999999, 1.0),
                                                (1e6, 1e6, 0.3, 0.5), (1e4, 3e3, -0.5, 1.0), (2e5, 1e2, 0.9, 0.7)])
def test_elu_dual_at_large_variances(q1, q2, rho, alpha):
    """The long-horizon range (q up to 1e6, also unequal): 1e-13 (was 1.1e-11 at q = 1e6, rho = -0.999999,
    before the Mills ratios were taken from their whitened distances)."""
    _check(q1, q2, rho, alpha, 1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("q2, rho", [(0.5, -0.7), (0.5, 0.95), (30.0, 0.2), (30.0, -0.999)])
def test_elu_dual_unequal_variances(q2, rho):
    _check(2.0, q2, rho, 0.7, 1e-12)


def test_elu_dual_jax_equals_numpy_and_is_used_by_default():
    """The jax evaluation (every branch under ``where``) equals numpy's, also in the large-q branch; the
    dual_kernels front door picks the closed form for elu of any alpha."""
    from kernelcalc.theory.gaussian import dual_kernels

    dual = closed_form_dual(resolve_activation("elu(alpha=0.5)"))
    q = np.array([0.1, 2.0, 2.0, 1e3, 1e4])
    c = q * np.array([-0.5, 1.0, 0.3, -0.6, 0.999])
    num = np.array(dual(q, q, c, ops=NUMPY_OPS))
    import jax

    from kernelcalc._x64 import float64

    jx = np.array([np.asarray(v) for v in float64(jax.jit(lambda q, c: dual(q, q, c)))(q, c)])
    np.testing.assert_allclose(jx, num, rtol=1e-14)
    assert dual_kernels("elu").method == "closed" and dual_kernels("elu(alpha=0.3)").method == "closed"


def test_elu_dual_in_jax_at_large_unequal_variances():
    """The compiled dual at q = 919 / 107, rho = 0.714, against the mpmath reference: there a Gauss node of the
    bivariate Mills ratio asks erfcx at 26.6, where jax's own returns 0 (wrong on [26.543, 26.642]); Cdot was off by
    1.9e-4 relative, a DEQ or untied elu kernel silently by ~1e-6.  The asymptotic series above 20
    (:func:`kernelcalc.theory.bivariate_normal._erfcx`) restores 1e-12."""
    import jax

    from kernelcalc._x64 import float64

    dual = closed_form_dual(resolve_activation("elu"))
    q1, q2, rho = 919.0, 107.0, 0.714
    got = float64(jax.jit(lambda a, b, c: dual(a, b, c)))(q1, q2, rho * math.sqrt(q1 * q2))
    ref = _reference(q1, q2, rho, 1.0)
    assert float(got[0]) == pytest.approx(ref[0], rel=1e-12)
    assert float(got[1]) == pytest.approx(ref[1], rel=1e-12)


def test_jax_erfcx_against_mpmath():
    r"""erfcx in jax.numpy (kernelcalc's, :func:`kernelcalc.theory.bivariate_normal._erfcx`) against mpmath's
    $e^{z^2}\operatorname{erfc}(z)$ on [0, 60], densely across jax's faulty band [26.543, 26.642] and the switch at 20:
    3e-15 relative."""
    import jax.numpy as jnp

    from kernelcalc._x64 import float64
    from kernelcalc.theory.bivariate_normal import _erfcx

    z = np.concatenate([np.linspace(0.0, 60.0, 241), np.linspace(26.5, 26.7, 81), np.linspace(19.9, 20.1, 21)])
    got = np.asarray(float64(lambda v: _erfcx(jnp.asarray(v), jnp))(z))
    with mp.workdps(30):
        want = np.array([float(mp.exp(mp.mpf(v) ** 2) * mp.erfc(mp.mpf(v))) for v in z])
    np.testing.assert_allclose(got, want, rtol=3e-15)


@pytest.mark.parametrize("typed, builtin", [
    ("Piecewise((x, x > 0), (exp(x) - 1, True))", "elu"),
    ("Piecewise((x, x >= 0), (0.5*exp(x) - 0.5, True))", "elu(alpha=0.5)"),
    ("Max(x, 0.2*x)", "leaky_relu(0.2)"),
    ("Max(0, x)", "relu"),
])
def test_user_typed_kinked_activations_take_the_builtin_closed_form(typed, builtin):
    """A user-typed piecewise activation equal to a built-in gets its closed form (the same numbers, also
    at large q) and the kinked Neural-ODE time grid; a near miss (``exp(x) - 2``) does not."""
    from kernelcalc.kernels.ode_kinked import use_triangles

    user, ref = resolve_activation(typed), resolve_activation(builtin)
    du, dr = closed_form_dual(user), closed_form_dual(ref)
    assert du is not None and use_triangles(user, 1.0, 1.0)
    q = np.array([0.3, 2.0, 50.0, 2e3])
    c = q * np.array([0.9, -0.4, 0.2, 1.0])
    np.testing.assert_allclose(np.array(du(q, q, c, ops=NUMPY_OPS)), np.array(dr(q, q, c, ops=NUMPY_OPS)),
                               rtol=1e-15, atol=1e-15)
    assert closed_form_dual(resolve_activation("Piecewise((x, x > 0), (exp(x) - 2, True))")) is None


def test_user_expressions_are_recognised_after_the_numeric_probe():
    """The numeric probe of closed_form_dual only skips references that differ: expressions equal to a reference
    but typed differently are still recognised (sympy proves them), and unequal ones are not mistaken for one."""
    from kernelcalc.theory.duals import _differs_numerically, _values_at_probes
    import sympy as sp
    from kernelcalc.theory.activations import X
    assert closed_form_dual(resolve_activation("Max(x, 0)")).name == "relu"
    assert closed_form_dual(resolve_activation("x*erfc(-x/sqrt(2))/2")).name == "gelu"
    assert closed_form_dual(resolve_activation("cos(-x)")).name == "cos"
    assert closed_form_dual(resolve_activation("abs(x)")).name == "piecewise linear(1, -1)"
    assert closed_form_dual(resolve_activation("Piecewise((x, x > 0), (2*exp(x) - 2, True))")).name.startswith("elu")
    values = _values_at_probes(sp.Abs(X))
    assert _differs_numerically(values, sp.Max(0, X)) and not _differs_numerically(values, sp.sqrt(X**2))
    # a value that does not evaluate never counts as a difference (the simplify decides)
    assert not _differs_numerically(None, sp.Max(0, X))
