"""No silent accuracy loss: every adaptive loop meets its tolerance or warns (``strict=True``: raises);
hopeless work is refused with a clear message; blow-ups are diagnosed correctly; bad tolerances and
grids are rejected.  Each fallback is forced here.  References are independent of the code under test
(mpmath Bessel functions, closed forms, refinement by the test itself)."""


import mpmath as mp
import warnings

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc.theory import gaussian as g, gaussian_rules
from kernelcalc.theory.activations import resolve_activation
from kernelcalc.kernels import ode, ode_grid, ode_solver

TWO = np.array([[1.0, 1.0], [1.4, -0.2]])


def six_points():
    return np.random.default_rng(0).normal(size=(6, 3))


# -- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(time_nodes=0), "time_nodes"), (dict(time_nodes=1), "time_nodes"),
    (dict(tol=0), "tol"), (dict(tol=-1), "tol"), (dict(tol=1), "tol"), (dict(tol=2.0), "tol"),
])
def test_bad_tol_and_time_nodes_are_rejected(kw, match):
    with pytest.raises(kc.KernelcalcInputError, match=match):
        kc.node_kernel(TWO, activation="softplus", **kw)


# -- time grid ----------------------------------------------------------------------------------

def test_time_grid_shortfall_warns_or_raises(monkeypatch):
    monkeypatch.setattr(ode_solver, "_M_SEQUENCE", (3, 4))    # far too coarse for 1e-10 at T = 2
    with pytest.warns(kc.KernelcalcAccuracyWarning, match="time grid"):
        K = kc.node_kernel(TWO, activation="erf", T=2.0)
    assert K.info["time_error_estimate"] > 1e-10
    with pytest.raises(kc.KernelcalcAccuracyError, match="time grid"):
        kc.node_kernel(TWO, activation="erf", T=2.0, strict=True)


def test_composite_grid_integrates_piecewise_polynomials_exactly():
    disc = ode.chebyshev_discretisation(6, 3.0, 4)
    n = disc.A.shape[0]
    assert n == 4 * 6 + 1
    t = np.concatenate([0.75 * e + 0.75 * (1 - np.cos(np.pi * np.arange(6) / 6)) / 2 for e in range(4)] + [[3.0]])
    f = 5 * t**6 - 2 * t**3 + 1                              # degree 6: exact on every element
    np.testing.assert_allclose(disc.A @ f, 5 * t**7 / 7 - t**4 / 2 + t, rtol=1e-13, atol=1e-12)
    assert disc.w.sum() == pytest.approx(3.0, rel=1e-14)
    np.testing.assert_allclose(disc.B, disc.w[None, :] - disc.A)


def _identity_nngp(rho_s0, T, sw, sv):
    with mp.workdps(30):
        return float(sv**2 * rho_s0 * mp.besseli(0, 2 * sw * T))


def test_identity_long_horizon_converges_and_meets_its_error_estimate():
    """Before: 'did not converge in 400 sweeps' at a relative change of 8.8e-15 (absolute-like stop)."""
    K = kc.node_kernel(TWO, activation="identity", T=15.0)
    S0 = TWO @ TWO.T / 2
    ref = np.array([[_identity_nngp(S0[i, j], 15.0, 1.0, 1.0) for j in range(2)] for i in range(2)])
    err = np.max(np.abs(K.nngp - ref))
    assert err / np.max(np.abs(ref)) < 1e-9
    assert err <= K.info["error_estimate"]
    assert K.info["sweep_change"] < 1e-11


def test_large_sigma_w_uses_elements_and_agrees_under_refinement():
    """sigma_w*T = 6 (erf): several elements; doubling the nodes per element changes < 1e-9."""
    K = kc.node_kernel(TWO, activation="erf", sigma_w=6.0)
    assert K.info["time_elements"] >= 2
    fine = kc.node_kernel(TWO, activation="erf", sigma_w=6.0, time_nodes=2 * K.info["M"])
    assert np.max(np.abs(fine.ntk - K.ntk)) / np.max(np.abs(fine.ntk)) < 1e-9
    assert np.max(np.abs(fine.ntk - K.ntk)) <= K.info["error_estimate"] + 1e-9 * np.max(np.abs(fine.ntk))


# -- Picard sweeps ------------------------------------------------------------------------------

def test_sweep_limit_warns_or_raises(monkeypatch):
    monkeypatch.setattr(ode_grid, "_MAX_SWEEPS", 3)
    ode._compiled.cache_clear()
    try:
        with pytest.warns(kc.KernelcalcAccuracyWarning, match="Picard sweeps"):
            kc.node_kernel(TWO, activation="softplus", sigma_w=1.2345, time_nodes=8)
        with pytest.raises(kc.KernelcalcAccuracyError, match="Picard sweeps"):
            kc.node_kernel(TWO, activation="softplus", sigma_w=1.2345, time_nodes=8, strict=True)
    finally:
        ode._compiled.cache_clear()


# -- Gaussian expectations -----------------------------------------------------------------------

def test_choose_step_says_when_the_finest_step_is_not_enough():
    act = resolve_activation("tanh")
    with pytest.warns(kc.KernelcalcAccuracyWarning, match="trapezoid"):
        g.choose_step((act.numpy_fn, act.numpy_derivative), 1e4, 1e-13)
    with pytest.raises(kc.KernelcalcAccuracyError):
        g.choose_step((act.numpy_fn, act.numpy_derivative), 1e4, 1e-13, strict=True)


def test_hermite_fallback_is_named_and_its_accuracy_reported():
    # a user expression has no registered large-q asymptote (built-in tanh takes kernelcalc.theory.largeq)
    with pytest.warns(kc.KernelcalcAccuracyWarning):
        dual = g.dual_kernels("1.5*tanh(x)", q_max=200.0)
    assert dual.method == "trapezoid"
    assert "more than 8192 terms" in dual.describe()
    assert dual.error_estimate > 1e-13
    # the Hermite limit for tanh (poles at z = i pi / (2 sqrt q)) lies between 10 and 100
    act = resolve_activation("tanh")
    assert 10 < g.hermite_q_limit((act.numpy_fn, act.numpy_derivative)) < 100


def test_mlp_strict_and_honest_estimate_at_a_hermite_fallback():
    X = six_points() / 2
    with pytest.raises(kc.KernelcalcAccuracyError):
        kc.mlp_kernel(X, activation="1.5*tanh(x)", depth=1, sigma_w=12.0, strict=True)
    with pytest.warns(kc.KernelcalcAccuracyWarning):
        K = kc.mlp_kernel(X, activation="1.5*tanh(x)", depth=1, sigma_w=12.0)
    assert "fallback" in K.info["expectation"]
    assert K.info["expectation_error_estimate"] > 1e-13
    assert K.info["error_estimate"] >= K.info["expectation_error_estimate"] * np.max(np.abs(K.ntk))


def test_quadrature_blocks_respect_the_memory_budget(monkeypatch):
    rule = g.TrapezoidRule(0.01)
    assert g._block_size(rule.points) * rule.points * 8 * 4 <= g.MEMORY_BUDGET
    monkeypatch.setattr(gaussian_rules, "MEMORY_BUDGET", 2**20)  # force many tiny blocks
    q = np.linspace(0.5, 2.0, 37)
    c = 0.3 * q
    erf = g.dual_kernels("erf")                                 # closed form (arcsine), independent of the rule
    (num,) = g.TrapezoidRule(0.1).expect_pairs(((erf.activation.jax_fn, erf.activation.jax_fn),), q, q, c)
    np.testing.assert_allclose(np.asarray(num), np.asarray(erf.C(q, q, c)), rtol=1e-12)


def test_time_solver_batches_respect_the_memory_budget():
    dual = g.DualKernels(resolve_activation("tanh"), "hermite", g.HermiteRule(8192))
    for nodes in (17, 97, 400):
        batch = ode.GoursatSolver._batch(dual, nodes)
        assert batch == 1 or batch * 8 * 8 * nodes * 8192 <= g.MEMORY_BUDGET
        assert batch & (batch - 1) == 0


def test_adaptive_polar_rule_is_smaller_and_matches_mpmath():
    act = resolve_activation("elu")
    dual = g.dual_kernels(act, q_max=2.0, method="polar")   # elu has a closed form; the rule on its own
    assert dual.method == "polar" and dual.rule.n_angle * dual.rule.n_radius < 48 * 64
    with mp.workdps(25):   # r = 1: E[elu(sqrt(q) z)^2], split at the kink
        f = lambda z: (z if z > 0 else mp.e**z - 1) ** 2 * mp.npdf(z / mp.sqrt(2.0)) / mp.sqrt(2.0)  # noqa: E731
        ref = float(mp.quad(f, [-40, 0, 40]))
    assert float(dual.C(2.0, 2.0, 2.0)) == pytest.approx(ref, rel=1e-12)


def test_polar_rule_shortfall_warns(monkeypatch):
    monkeypatch.setattr(gaussian_rules, "_POLAR_LEVELS", ((2, 2), (3, 3)))
    with pytest.warns(kc.KernelcalcAccuracyWarning, match="polar"):
        g.dual_kernels("elu", q_max=2.0, method="polar")


# -- refusals and diagnoses ----------------------------------------------------------------------

@pytest.mark.parametrize("kw, scale", [
    (dict(sigma_w=40.0), 1.0),       # before: > 600 s (sigma_w*T = 10 now computes: the tabulated large-q rule)
])
def test_hopeless_tanh_cases_are_refused_quickly_naming_the_limit(kw, scale):
    with pytest.raises(kc.KernelcalcInputError, match=r"pre-activation variance reaches q = .*the limit is|the limit is .*reduce"):
        kc.node_kernel(six_points() * scale, activation="tanh", **kw)


@pytest.mark.slow   # ~10 s each
@pytest.mark.parametrize("kw, scale", [
    (dict(sigma_u=10.0, sigma_v=10.0), 1.0),        # once a 65 GB allocation, then a refusal
    (dict(), 1e3),                                  # |x|^2 = 1e6 d, once refused
])
def test_formerly_hopeless_tanh_cases_compute_within_tolerance(kw, scale):
    """The tabulated large-q rule makes these affordable: a finite, symmetric Gram whose error estimate
    meets 10 tol, without an accuracy warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", kc.KernelcalcAccuracyWarning)
        k = kc.node_kernel(six_points() * scale, activation="tanh", **kw)
    assert np.all(np.isfinite(k.ntk)) and np.allclose(k.ntk, k.ntk.T, rtol=1e-12)
    assert k.info["error_estimate"] <= 10 * 1e-10 * np.max(np.abs(k.ntk))


def test_overflow_is_not_called_superlinear_growth():
    with pytest.raises(kc.KernelcalcInputError, match="overflows float64") as err:
        kc.node_kernel(TWO, activation="identity", sigma_u=1e150, T=12.0)     # q(T) ~ 1e300 I0(24) > 1.8e308
    assert "faster than linearly" not in str(err.value)
    with pytest.raises(kc.KernelcalcInputError, match="faster than linearly"):
        kc.node_kernel(TWO, activation="x**2", T=3.0)


def test_too_many_time_elements_are_refused():
    with pytest.raises(kc.KernelcalcInputError, match="time elements"):
        kc.node_kernel(TWO, activation="identity", sigma_w=1000.0)
