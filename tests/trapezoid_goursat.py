"""The Neural-ODE Goursat problems on a uniform (n+1)^2 grid with the product trapezoid rule, marched row by row
(each row iterated to its fixed point: the row's own diagonal q(t_{i+1}) and the cell (i, i+1) = (i+1, i) couple
back into it) -- the test-only reference of the long-horizon tests (tests/test_long_horizon_panels.py: relu;
tests/test_long_horizon_gelu.py: gelu), each passing its own closed-form dual.  Nothing here is shared with
kernelcalc's solvers; the grid's cells are split exactly at t = s, so the error expands in even powers of h = T/n
even across a kink (Richardson extrapolation in the tests).  ``cum2`` and ``fixed_point``: the whole-grid
trapezoid variant of tests/test_long_horizon.py (sin) and tests/test_polar_fourier.py (erf)."""

import math

import numpy as np


def march(dual, n, T, sw, s0, q=None):
    """S(t, s) = s0 + sw^2 int int C (``dual(q1, q2, c) -> (C, Cdot)``) on the uniform grid (symmetric; ``q``
    None: the self-kernel, q_i = S_ii)."""
    g = sw * sw * (T / n) ** 2 / 4.0
    S = np.zeros((n + 1, n + 1))
    S[0, :] = S[:, 0] = s0
    qq = np.empty(n + 1) if q is None else q
    qq[0] = s0 if q is None else q[0]
    for i in range(n):
        row = S[i, : i + 1]
        Ci = dual(qq[i], qq[: i + 1], row)[0]
        new = np.concatenate([row, row[-1:]])
        qn = new[-1] if q is None else q[i + 1]
        for _ in range(200):
            Cn = dual(qn, np.concatenate([qq[: i + 1], [qn]]), new)[0]          # C_{i+1, j}
            Ce = np.concatenate([Ci, [Cn[i]]])                                      # C_{i, i+1} = C_{i+1, i}
            re = np.concatenate([row, [new[i]]])
            upd = np.concatenate([[s0], s0 + np.cumsum(re[1:] - re[:-1] + g * (Ce[:-1] + Ce[1:] + Cn[:-1] + Cn[1:]))])
            done = np.max(np.abs(upd - new)) <= 1e-15 * np.max(np.abs(upd))
            new = upd
            qn = new[-1] if q is None else qn
            if done:
                break
        S[i + 1, : i + 2] = S[: i + 2, i + 1] = new
        if q is None:
            qq[i + 1] = new[-1]
    return S, qq


def backward(n, T, sw, LT, Cd):
    """Lambda = LT + sw^2 int_t^T int_s^T Cd Lambda on the uniform grid (symmetric), rows from the last."""
    g = sw * sw * (T / n) ** 2 / 4.0
    L = np.zeros((n + 1, n + 1))
    L[n, :] = L[:, n] = LT
    for i in range(n - 1, -1, -1):
        up = L[i + 1, i:].copy()
        new = up.copy()
        new[-1] = LT
        L[i, i:] = L[i:, i] = backward_row(up, new, Cd[i + 1, i:], Cd[i, i:], g, LT, mirror=True)
    return L


def backward_row(up, new, cd_up, cd_new, g, LT, mirror=False):
    """Row i of the backward march from row i + 1 (``up``), iterated to its fixed point from ``new``; ``mirror``: the
    symmetric grid's Lambda_{i+1, i} = Lambda_{i, i+1} (``up[0]`` follows the row).  Also tests/test_node_pwp.py's
    march without the symmetry."""
    for _ in range(200):
        if mirror:
            up[0] = new[1]
        Eu, En = cd_up * up, cd_new * new
        inc = up[:-1] - up[1:] + g * (En[:-1] + En[1:] + Eu[:-1] + Eu[1:])
        upd = np.concatenate([LT + np.cumsum(inc[::-1])[::-1], [LT]])
        done = np.max(np.abs(upd - new)) <= 1e-15 * np.max(np.abs(upd))
        new = upd
        if done:
            break
    return new


def cum2(F, h):
    """int_0^{t_i} int_0^{t_j} F by the cumulative trapezoid rule along both axes."""
    G = np.zeros_like(F)
    G[1:] = np.cumsum(0.5 * h * (F[1:] + F[:-1]), axis=0)
    H = np.zeros_like(G)
    H[:, 1:] = np.cumsum(0.5 * h * (G[:, 1:] + G[:, :-1]), axis=1)
    return H


def fixed_point(step, X):
    """Picard iteration of ``step`` from ``X`` to rounding (1e-15 relative), or an AssertionError."""
    for _ in range(400):
        Y = step(X)
        if np.max(np.abs(Y - X)) <= 1e-15 * np.max(np.abs(Y)):
            return Y
        X = Y
    raise AssertionError("reference Picard iteration did not converge")


def relu_dual(q1, q2, c):
    """relu's (C, Cdot) by the arc-cosine closed forms (Cho and Saul), written here."""
    n = np.sqrt(q1 * q2)
    rho = np.clip(c / n, -1.0, 1.0)
    th = np.arccos(rho)
    return n * (np.sin(th) + (math.pi - th) * rho) / (2 * math.pi), (math.pi - th) / (2 * math.pi)


def goursat_kernel(dual, n, T, sw, theta0):
    """(nngp, ntk) of the Neural ODE with the closed-form ``dual`` (``(q1, q2, c) -> (C, Cdot)``) for two unit-variance
    inputs at angle ``theta0`` (sigma_u = sigma_v = 1) on the n-step grid."""
    Sx, q = march(dual, n, T, sw, 1.0)
    c0 = math.cos(theta0)
    S = Sx if theta0 == 0 else march(dual, n, T, sw, c0, q=q.copy())[0]
    C, Cd = dual(q[:, None], q[None, :], S)
    if theta0 == 0:          # identical inputs: correlation exactly 1 on the diagonal
        Cq, Cdq = dual(q, q, q)
        np.fill_diagonal(C, Cq)
        np.fill_diagonal(Cd, Cdq)
    L = backward(n, T, sw, Cd[n, n], Cd)
    w = np.full(n + 1, T / n)
    w[0] = w[-1] = T / (2 * n)
    return C[n, n], C[n, n] + sw * sw * (w @ (C * L) @ w) + c0 * L[0, 0]


def relu_kernel(n, T, sw, theta0):
    """:func:`goursat_kernel` of relu (:func:`relu_dual`)."""
    return goursat_kernel(relu_dual, n, T, sw, theta0)
