"""Long horizons: the Neural ODE kernel at sigma_w*T = 10 against an independent solve written here, and the
Euler ResNet at depth 1024 (row-by-row march) against the discrete recursion written here.

Reference solver (:func:`_goursat`): the Goursat problems on a uniform (M+1)^2 grid with the cumulative
product trapezoid rule, iterated (Picard) to a fixed point, then two Richardson steps in h = T/M
(the trapezoid error expands in h^2, h^4, ...).  sin has the closed-form duals
C = exp(-(q1+q2)/2) sinh(c), Cdot = exp(-(q1+q2)/2) cosh(c) (written here), so nothing is shared with
kernelcalc's Chebyshev elements, expectation rules or sphere tables.
"""

import numpy as np
import pytest

import kernelcalc as kc


def _C(q1, q2, c):
    return np.exp(-(q1 + q2) / 2) * np.sinh(c)


def _Cd(q1, q2, c):
    return np.exp(-(q1 + q2) / 2) * np.cosh(c)


def _cum2(F, h):
    """int_0^{t_i} int_0^{t_j} F by the cumulative trapezoid rule along both axes."""
    G = np.zeros_like(F)
    G[1:] = np.cumsum(0.5 * h * (F[1:] + F[:-1]), axis=0)
    H = np.zeros_like(G)
    H[:, 1:] = np.cumsum(0.5 * h * (G[:, 1:] + G[:, :-1]), axis=1)
    return H


def _picard(step, X):
    for _ in range(400):
        Y = step(X)
        if np.max(np.abs(Y - X)) <= 1e-15 * np.max(np.abs(Y)):
            return Y
        X = Y
    raise AssertionError("reference Picard iteration did not converge")


def _goursat(rho, T, sw, M):
    """(NNGP, NTK) of the sin Neural ODE for two unit-norm inputs with x.y/d = rho (sigma_u = sigma_v = 1)."""
    h = T / M
    S_self = _picard(lambda S: 1.0 + sw**2 * _cum2(_C(np.diag(S)[:, None], np.diag(S)[None, :], S), h),
                     np.ones((M + 1, M + 1)))
    q = np.diag(S_self)
    S = _picard(lambda S: rho + sw**2 * _cum2(_C(q[:, None], q[None, :], S), h), np.full((M + 1, M + 1), rho))
    C, Cd = _C(q[:, None], q[None, :], S), _Cd(q[:, None], q[None, :], S)
    rev = lambda F: _cum2(F[::-1, ::-1], h)[::-1, ::-1]       # int_t^T int_s^T  # noqa: E731
    Lam = _picard(lambda L: Cd[-1, -1] + sw**2 * rev(Cd * L), np.full_like(S, Cd[-1, -1]))
    w = np.full(M + 1, h)
    w[[0, -1]] = h / 2
    return C[-1, -1], C[-1, -1] + sw**2 * w @ (C * Lam) @ w + rho * Lam[0, 0]


def _richardson(rho, T, sw, Ms=(64, 128, 256, 512)):
    """Three Richardson steps (h^2, h^4, h^6) over M = 64..512; returns (value, None).
    Measured: the h^6 step changes the NTK at rho = 1 by 2e-11 relative (the limit agrees with kernelcalc
    to ~6e-13)."""
    v = [np.array(_goursat(rho, T, sw, M)) for M in Ms]
    for p in (4, 16, 64):
        v = [(p * b - a) / (p - 1) for a, b in zip(v, v[1:])]
    return v[0], None


def test_sigma_w_T_10_node_kernel_matches_independent_solve():
    X = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2.0)                    # on the sphere: x.x/d = 1
    k = kc.node_kernel(X, activation="sin", T=5.0, sigma_w=2.0)                 # sigma_w T = 10
    scale = np.max(np.abs(k.ntk))
    for i, j in ((0, 0), (0, 1)):
        ref, _ = _richardson(float(X[i] @ X[j] / 2), 5.0, 2.0)
        assert abs(k.nngp[i, j] - ref[0]) <= 1e-9 * scale, (i, j, k.nngp[i, j], ref)
        assert abs(k.ntk[i, j] - ref[1]) <= 1e-9 * scale, (i, j, k.ntk[i, j], ref)
    assert k.info["error_estimate"] <= 1e-9 * scale


def _euler_reference(rho, L, T):
    """The weight-tied Euler ResNet recursion (sin, sigma = 1) as written in kernelcalc.kernels.resnet's doc,
    summed directly with matrices (O(L^3)): S = S0 + d^2 A C A^T by fixed-point iteration."""
    d = T / L
    A = d * np.tril(np.ones((L + 1, L + 1)), -1)
    S_self = _picard(lambda S: 1.0 + A @ _C(np.diag(S)[:, None], np.diag(S)[None, :], S) @ A.T, np.ones((L + 1, L + 1)))
    q = np.diag(S_self)
    S = _picard(lambda S: rho + A @ _C(q[:, None], q[None, :], S) @ A.T, np.full((L + 1, L + 1), rho))
    C, Cd = _C(q[:, None], q[None, :], S), _Cd(q[:, None], q[None, :], S)
    B = d * np.triu(np.ones((L + 1, L + 1)))
    B[:, L] = 0.0
    Lsh = lambda Lam: np.pad(Lam[1:, 1:], ((0, 1), (0, 1)))          # Lam_{i+1, j+1}  # noqa: E731
    Lam = _picard(lambda Lam: Cd[L, L] + B @ (Cd * Lsh(Lam)) @ B.T, np.full_like(S, Cd[L, L]))
    w = d * (np.arange(L + 1) < L)
    return C[L, L], C[L, L] + w @ (C * Lsh(Lam)) @ w + rho * Lam[0, 0]


def test_resnet_march_matches_direct_recursion():
    X = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2.0)
    k = kc.resnet_kernel(X, activation="sin", depth=48, T=2.0)
    ref = _euler_reference(0.6, 48, 2.0)
    np.testing.assert_allclose([k.nngp[0, 1], k.ntk[0, 1]], ref, rtol=1e-12)


@pytest.mark.parametrize("depth", [1024, pytest.param(4096, marks=pytest.mark.slow)])
def test_resnet_deep_computes(depth):
    """Depth 1024-4096 with a closed-form dual is no longer refused (4096: ~20 s on a busy 2-core machine);
    the kernel sits within O(1/L) of the ODE's."""
    X = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2.0)
    k = kc.resnet_kernel(X, activation="sin", depth=depth)
    ode = kc.node_kernel(X, activation="sin")
    assert np.all(np.isfinite(k.ntk))
    assert np.max(np.abs(k.ntk - ode.ntk)) < 1e-3 * np.max(np.abs(ode.ntk))


def test_out_of_reach_is_refused_before_the_rule_is_chosen():
    """tanh at sigma_w*T = 10 with 36 pairs: the cheapest large-q rule is already over the cost limit, so the
    call is refused with the variance named (in seconds: the rule's level is not chosen first)."""
    X = np.random.default_rng(1).normal(size=(8, 4))
    X *= 2.0 / np.linalg.norm(X, axis=1, keepdims=True)
    with pytest.raises(kc.KernelcalcInputError, match=r"q = 5\d"):
        kc.node_kernel(X, activation="tanh", T=10.0)
