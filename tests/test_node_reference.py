"""node_kernel (nonlinear φ) against the independent reference solver in ``tests/reference_node.py``.

The reference shares no code with kernelcalc: uniform time grid, product trapezoid, Newton row
marching, Romberg extrapolation in h, Gaussian expectations by a 2-D trapezoid rule written
there.  These tests first demonstrate the reference's own accuracy (Gaussian rule against mpmath
and against a finer rule, O(h²) order, convergence of the extrapolations) and then assert the
2×2 NNGP and NTK Gram matrices of ``kc.node_kernel`` against it.
"""

import mpmath as mp
import numpy as np
import pytest

import kernelcalc as kc
import reference_node as rn

TOL = 1e-8          # agreement target (relative); the reference's estimate must be far below it

# (activation, |x|^2/d, |y|^2/d, x.y/d, parameters)
CASES = {
    "tanh-sphere": ("tanh", 1.0, 1.0, 0.3, dict(T=1.0)),
    "softplus-off-sphere": ("softplus", 0.7, 1.4, 0.4, dict(T=1.0)),
    "tanh-sigmas": ("tanh", 0.9, 1.2, -0.5, dict(T=0.7, sigma_u=1.3, sigma_v=0.8, sigma_w=1.5)),
    "softplus-sigmas": ("softplus", 0.9, 1.2, 0.6, dict(T=0.7, sigma_u=1.3, sigma_v=0.8, sigma_w=1.5)),
}
FAST = ["tanh-sphere", "softplus-off-sphere", pytest.param("tanh-sigmas", marks=pytest.mark.slow)]


_cache: dict = {}


def reference(case):
    if case not in _cache:
        act, a, b, c, kw = CASES[case]
        _cache[case] = rn.reference_kernel(act, [(a, a, a), (a, b, c), (b, b, b)], **kw)
    return _cache[case]


def as_gram(v):
    """(xx, xy, yy) -> 2x2 matrix."""
    return np.array([[v[0], v[1]], [v[1], v[2]]])


# ----------------------------------------------------------------------------- the reference's own accuracy
def _mp_expectation(f, qa, qb, c):
    """E[f(a) f(b)] by nested mpmath quadrature in Cholesky coordinates (2-D)."""
    sa = mp.sqrt(qa)
    al, be = c / sa, mp.sqrt(qb - c**2 / qa)
    inner = lambda z1: mp.quad(lambda z2: mp.exp(-z2**2 / 2) * f(al * z1 + be * z2), [-mp.inf, 0, mp.inf])  # noqa: E731
    return mp.quad(lambda z1: mp.exp(-z1**2 / 2) * f(sa * z1) * inner(z1), [-mp.inf, 0, mp.inf]) / (2 * mp.pi)


MP_PHI = {"tanh": (mp.tanh, lambda x: 1 - mp.tanh(x) ** 2),
          "softplus": (lambda x: mp.log1p(mp.exp(x)), lambda x: 1 / (1 + mp.exp(-x)))}


@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_gauss_rule_diagonal_matches_mpmath(name):
    """Independent reference: 1-D mpmath quadrature of E[φ(a)²], E[φ'(a)²] (a ~ N(0, q), c = q)."""
    rule = rn.GaussRule(rn.PHIS[name], q_max=3.0)
    for q in (0.5, 1.7, 3.0):
        C, Cd = rule.expect(q, q, q)
        with mp.workdps(25):
            for F, val in zip(MP_PHI[name], (C, Cd)):
                exact = mp.quad(lambda z: mp.exp(-z**2 / 2) * F(mp.sqrt(q) * z) ** 2, [-mp.inf, 0, mp.inf]) / mp.sqrt(2 * mp.pi)
                assert abs(val - float(exact)) <= 1e-13 * float(exact), (q, val, exact)


@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_gauss_rule_matches_a_finer_rule_off_diagonal(name):
    """Independent reference: the same rule with step 0.05 on |z| <= 10 (error e^-2πd/h ~ 1e-50)."""
    rule = rn.GaussRule(rn.PHIS[name], q_max=3.0)
    fine = rn.GaussRule(rn.PHIS[name], q_max=3.0, R=10.0, step=0.05)
    qa = np.array([3.0, 0.6, 2.0, 1.0])
    qb = np.array([2.5, 3.0, 2.0, 0.4])
    c = np.array([-2.0, 0.3, 1.999, 0.0])
    for v, w in zip(rule.expect(qa, qb, c, second=True), fine.expect(qa, qb, c, second=True)):
        np.testing.assert_allclose(v, w, rtol=1e-13, atol=1e-15)
    assert rule.points < fine.points / 5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_gauss_rule_off_diagonal_matches_2d_mpmath(name):
    """Independent reference: nested 2-D mpmath quadrature (slow: ~30 s per case)."""
    rule = rn.GaussRule(rn.PHIS[name], q_max=3.0)
    C, Cd = rule.expect(3.0, 2.4, 1.5)
    with mp.workdps(20):
        for F, val in zip(MP_PHI[name], (C, Cd)):
            exact = float(_mp_expectation(F, mp.mpf(3.0), mp.mpf(2.4), mp.mpf(1.5)))
            assert abs(val - exact) <= 1e-13 * abs(exact)


@pytest.mark.parametrize("case", FAST)
def test_reference_is_second_order_and_its_extrapolations_converge(case):
    """Self-check of the reference: raw values O(h²) (difference ratio ≈ 4); extrapolations agree to 1e-9."""
    ref = reference(case)
    diffs = np.diff(ref.raw, axis=0)                        # (levels-1, pairs, 2)
    ratios = diffs[:-1] / diffs[1:]
    assert np.all((ratios > 3.5) & (ratios < 4.5)), ratios
    for val, err in ((ref.nngp, ref.err_nngp), (ref.ntk, ref.err_ntk)):
        assert np.all(err <= 1e-9 * np.abs(val)), err / np.abs(val)


def test_reference_grid_solution_is_the_fixed_point():
    """Self-check: Newton row marching reaches the fixed point (re-solving from a perturbed start changes nothing)."""
    rule = rn.GaussRule(rn.TANH, q_max=2.0)
    S = rn._self_kernel(rule, 1.0, 8, 1.0, 1.0)
    S_tight = rn._self_kernel(rule, 1.0, 8, 1.0, 1.0, tol=1e-16, max_iter=100)
    np.testing.assert_allclose(S, S_tight, rtol=1e-14)
    q = np.diag(S).copy()
    X = rn._cross_kernel(rule, q, q, 1.0, 8, 1.0, 1.0)
    np.testing.assert_allclose(X, S, rtol=1e-13)          # cross-kernel of x with itself = self-kernel


# ----------------------------------------------------------------------------- node_kernel against it
@pytest.mark.parametrize("case", FAST + [pytest.param("softplus-sigmas", marks=pytest.mark.slow)])
def test_node_kernel_matches_independent_reference(case):
    """Independent reference: tests/reference_node.py (Romberg-extrapolated trapezoid Goursat solver)."""
    act, a, b, c, kw = CASES[case]
    ref = reference(case)
    K = kc.node_kernel(rn.two_inputs(a, b, c), activation=act, **kw)
    for name, val, err in (("nngp", ref.nngp, ref.err_nngp), ("ntk", ref.ntk, ref.err_ntk)):
        R, E = as_gram(val), as_gram(err)
        got = getattr(K, name)
        tol = np.maximum(TOL * np.abs(R), 5 * E)
        rel = np.max(np.abs(got - R) / np.abs(R))
        print(f"{case} {name}: max rel err {rel:.2e}, reference error estimate {np.max(E / np.abs(R)):.2e}")
        assert np.all(np.abs(got - R) <= tol), (name, got, R, (got - R) / R)
