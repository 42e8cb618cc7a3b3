"""Long horizons: the Neural ODE kernel at sigma_w*T = 10 against an independent solve written here, and the
Euler ResNet at depth 1024 (row-by-row march) against the discrete recursion written here.

Reference solver (:func:`_goursat`): the Goursat problems on a uniform (M+1)^2 grid with the cumulative
product trapezoid rule, iterated (Picard) to a fixed point, then two Richardson steps in h = T/M
(the trapezoid error expands in h^2, h^4, ...).  sin has the closed-form duals
C = exp(-(q1+q2)/2) sinh(c), Cdot = exp(-(q1+q2)/2) cosh(c) (written here), so nothing is shared with
kernelcalc's Chebyshev elements, expectation rules or sphere tables.
"""

import numpy as np
from trapezoid_goursat import cum2, fixed_point
import pytest

import kernelcalc as kc


def _C(q1, q2, c):
    return np.exp(-(q1 + q2) / 2) * np.sinh(c)


def _Cd(q1, q2, c):
    return np.exp(-(q1 + q2) / 2) * np.cosh(c)


def _goursat(rho, T, sw, M):
    """(NNGP, NTK) of the sin Neural ODE for two unit-norm inputs with x.y/d = rho (sigma_u = sigma_v = 1)."""
    h = T / M
    S_self = fixed_point(lambda S: 1.0 + sw**2 * cum2(_C(np.diag(S)[:, None], np.diag(S)[None, :], S), h),
                     np.ones((M + 1, M + 1)))
    q = np.diag(S_self)
    S = fixed_point(lambda S: rho + sw**2 * cum2(_C(q[:, None], q[None, :], S), h), np.full((M + 1, M + 1), rho))
    C, Cd = _C(q[:, None], q[None, :], S), _Cd(q[:, None], q[None, :], S)
    rev = lambda F: cum2(F[::-1, ::-1], h)[::-1, ::-1]       # int_t^T int_s^T  # noqa: E731
    Lam = fixed_point(lambda L: Cd[-1, -1] + sw**2 * rev(Cd * L), np.full_like(S, Cd[-1, -1]))
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
    S_self = fixed_point(lambda S: 1.0 + A @ _C(np.diag(S)[:, None], np.diag(S)[None, :], S) @ A.T, np.ones((L + 1, L + 1)))
    q = np.diag(S_self)
    S = fixed_point(lambda S: rho + A @ _C(q[:, None], q[None, :], S) @ A.T, np.full((L + 1, L + 1), rho))
    C, Cd = _C(q[:, None], q[None, :], S), _Cd(q[:, None], q[None, :], S)
    B = d * np.triu(np.ones((L + 1, L + 1)))
    B[:, L] = 0.0
    Lsh = lambda Lam: np.pad(Lam[1:, 1:], ((0, 1), (0, 1)))          # Lam_{i+1, j+1}  # noqa: E731
    Lam = fixed_point(lambda Lam: Cd[L, L] + B @ (Cd * Lsh(Lam)) @ B.T, np.full_like(S, Cd[L, L]))
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
    """tanh at sigma_w*T = 40 with 36 pairs: the cheapest large-q rule is already over the cost limit, so the
    call is refused with the variance named (in seconds: the rule's level is not chosen first).  (At
    sigma_w*T = 10 the tabulated rule of theory/largeq_table.py is no longer over the limit on the first grid.)"""
    X = np.random.default_rng(1).normal(size=(8, 4))
    X *= 2.0 / np.linalg.norm(X, axis=1, keepdims=True)
    with pytest.raises(kc.KernelcalcInputError, match=r"q = 10\d\d"):
        kc.node_kernel(X, activation="tanh", T=40.0)


def test_relu_resnet_self_kernel_against_an_mpmath_recursion():
    """Identical inputs of a kinked phi: the march's diagonal cells must have correlation exactly 1 (Cdot of
    relu ~ (1 - rho)^{1/2}: a rounding of 1e-16 in rho was an error of 4e-9). Reference: the discrete Goursat
    sums of the depth-4 relu ResNet in 30-digit mpmath with the arc-cosine closed forms, written here."""
    import mpmath as mp

    mp.mp.dps = 30

    def cc(q1, q2, c, dot):
        r = max(-1, min(1, c / mp.sqrt(q1 * q2)))
        th = mp.acos(r)
        return (mp.pi - th) / (2 * mp.pi) if dot else mp.sqrt(q1 * q2) / (2 * mp.pi) * (mp.sin(th) + (mp.pi - th) * r)

    def ref(v, L=4):
        g = (mp.mpf(1) / L) ** 2
        S = {}
        for l, m in sorted(((a, b) for a in range(L + 1) for b in range(L + 1)), key=lambda p: (max(p), p)):
            S[l, m] = v + g * sum(cc(S[i, i], S[j, j], S[i, j], False) for i in range(l) for j in range(m))
        Cd = {k: cc(S[k[0], k[0]], S[k[1], k[1]], S[k], True) for k in S}
        Lam = {}
        for l in range(L, -1, -1):
            for m in range(L, -1, -1):
                Lam[l, m] = Cd[L, L] + g * sum(Cd[i, j] * Lam[i + 1, j + 1] for i in range(l, L) for j in range(m, L))
        return (cc(S[L, L], S[L, L], S[L, L], False) + v * Lam[0, 0]
                + g * sum(cc(S[i, i], S[j, j], S[i, j], False) * Lam[i + 1, j + 1] for i in range(L) for j in range(L)))

    rng = np.random.default_rng(3)
    for scale in (0.6, 1.0, 1.7):
        x = rng.normal(size=(1, 5))
        x *= scale * np.sqrt(5) / np.linalg.norm(x)
        K = kc.resnet_kernel(x, activation="relu", depth=4)
        want = float(ref(mp.mpf(float(x[0] @ x[0])) / 5))
        assert abs(K.ntk[0, 0] - want) <= 1e-13 * want
