r"""Test-only reference solver for the infinite-width Neural-ODE kernel (shares no code with kernelcalc).

Model: $h_0=\sigma_u Ux/\sqrt d$, $\dot h=\sigma_w W\phi(h)/\sqrt n$ on $[0,T]$, $f=\sigma_v v\cdot\phi(h_T)/\sqrt n$.

$$S(t,s)=\sigma_u^2\tfrac{x\cdot y}d+\sigma_w^2\!\int_0^t\!\!\int_0^s C,\qquad
\Lambda(t,s)=\sigma_v^2\dot C(T,T)+\sigma_w^2\!\int_t^T\!\!\int_s^T\dot C\Lambda,$$

$C=E[\phi(a)\phi(b)]$, $\dot C=E[\phi'(a)\phi'(b)]$, $(a,b)\sim N(0,[[S_{xx}(r,r),S_{xy}],[S_{xy},S_{yy}(q,q)]])$;
$K_{\rm NNGP}=\sigma_v^2C(T,T)$, $K_{\rm NTK}=K_{\rm NNGP}+\sigma_w^2\iint C\Lambda+\sigma_u^2\frac{x\cdot y}d\Lambda(0,0)$.

Method (deliberately different from kernelcalc's Chebyshev/Picard/Hermite machinery):

- uniform time grid $t_i = ih$, $h=T/M$; every double integral by the product trapezoid rule,
  which is the Goursat recurrence
  $S_{ij}=S_{i-1,j}+\sigma_w^2\frac h2\big[\mathcal T_j C_{i\cdot}+\mathcal T_j C_{i-1,\cdot}\big]$
  ($\mathcal T_j$ = cumulative trapezoid on $[0,t_j]$);
- march row by row; each row is solved to its fixed point: Newton on the cross-covariance (its
  Jacobian is $\partial C/\partial c=\dot C$, Price's theorem), plus fixed-point sweeps for the
  self-kernel's diagonal $q(t_i)=S(t_i,t_i)$, which couples into its own row;
- $\Lambda$ is linear: each row is one triangular linear solve;
- the scheme is $O(h^2)$ with an error expansion in even powers of $h$ (Euler–Maclaurin), so
  Romberg extrapolation over $M, 2M, 4M, \dots$ gives high order; the difference of the
  extrapolations from the coarser and the finer grids is the reference's error estimate;
- Gaussian expectations by the 2-D trapezoid rule in Cholesky coordinates on the square
  $|z_i|\le 8.7$ with step $h_z = 2\pi d/44$, $d$ = distance of the nearest complex singularity
  of $\phi(\sqrt{q_{\max}}z)$ from the real axis: the error is
  $\sim(2\pi/h_z)^3e^{-2\pi d/h_z}\approx10^{-14}$ (the factor for the order-4 poles of
  $\phi'^2$), exponentially accurate for analytic $\phi$; checked against mpmath in the tests.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def two_inputs(a, b, c, d=3):
    """Two inputs in R^d (rows) with x.x/d = a, y.y/d = b, x.y/d = c."""
    th = math.acos(c / math.sqrt(a * b))
    x = np.zeros((2, d))
    x[0, 0] = math.sqrt(d * a)
    x[1, 0], x[1, 1] = math.sqrt(d * b) * math.cos(th), math.sqrt(d * b) * math.sin(th)
    return x


# ----------------------------------------------------------------------------- activations
@dataclasses.dataclass(frozen=True)
class Phi:
    """An analytic activation: ``derivs(x) -> (phi, phi', phi'')`` and its nearest pole's distance from the real axis."""

    name: str
    derivs: object
    pole: float


def _tanh(x):
    t = np.tanh(x)
    d = 1.0 - t * t
    return t, d, -2.0 * t * d


def _sigmoid(x):
    s = 0.5 * (1.0 + np.tanh(0.5 * x))
    d = s * (1.0 - s)
    return s, d, d * (1.0 - 2.0 * s)


def _softplus(x):
    s = 0.5 * (1.0 + np.tanh(0.5 * x))
    return np.logaddexp(0.0, x), s, s * (1.0 - s)


TANH = Phi("tanh", _tanh, math.pi / 2)          # poles of tanh at i*pi/2
SOFTPLUS = Phi("softplus", _softplus, math.pi)  # log(1+e^x): branch points at i*pi
SIGMOID = Phi("sigmoid", _sigmoid, math.pi)
PHIS = {p.name: p for p in (TANH, SOFTPLUS, SIGMOID)}


# ----------------------------------------------------------------------------- Gaussian expectations
class GaussRule:
    r"""$E[\phi(a)\phi(b)]$ and $E[\phi'(a)\phi'(b)]$ by the 2-D trapezoid rule in Cholesky coordinates.

    $a=\sqrt{q_a}z_1$, $b=\frac{c}{\sqrt{q_a}}z_1+\sqrt{q_b-c^2/q_a}\,z_2$, $z\sim N(0,I)$, nodes
    $z_k = k h_z$ on the square $|z_1|,|z_2|\le R$ (the Gaussian weight outside is
    $< e^{-R^2/2}\approx 4\cdot10^{-17}$); the weight is separable, so $\phi(a)$ is evaluated on the
    1-D grid only.
    """

    def __init__(self, phi: Phi, q_max: float, R: float = 8.7, digits: float = 44.0, step: float | None = None):
        self.phi = phi
        hz = step if step is not None else min(0.5, 2 * math.pi * phi.pole / math.sqrt(q_max) / digits)
        n = int(math.ceil(R / hz))
        self.z = hz * np.arange(-n, n + 1)
        self.g = hz * np.exp(-self.z**2 / 2) / math.sqrt(2 * math.pi)
        self.step, self.points = hz, self.z.size ** 2

    def expect(self, qa, qb, c, second=False):
        r"""Arrays broadcast to one shape -> $(C, \dot C)$, plus $E[\phi''(a)\phi(b)]$ if ``second``."""
        qa, qb, c = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (qa, qb, c)))
        shape = qa.shape
        qa, qb, c = (v.reshape(-1, 1) for v in (qa, qb, c))
        sa = np.sqrt(qa)
        alpha = c / sa
        beta = np.sqrt(np.maximum(qb - alpha**2, 0.0))
        fa, da, dda = self.phi.derivs(sa * self.z)                                    # (N, n): z1 only
        b = (alpha * self.z)[:, :, None] + (beta * self.z)[:, None, :]                # (N, n1, n2)
        fb, db, _ = self.phi.derivs(b)
        Fb, Db = fb @ self.g, db @ self.g                                             # integrate over z2
        ga = self.g * fa
        out = (np.sum(ga * Fb, axis=1).reshape(shape), np.sum(self.g * da * Db, axis=1).reshape(shape))
        return out + (np.sum(self.g * dda * Fb, axis=1).reshape(shape),) if second else out


# ----------------------------------------------------------------------------- one grid
def _cumtrap(h, n):
    """(n, n) matrix W with (W f)_j = trapezoid of f on [t_0, t_j] (lower triangular)."""
    W = np.tril(np.full((n, n), h))
    W[:, 0] = h / 2
    W[np.arange(n), np.arange(n)] = h / 2
    W[0, 0] = 0.0
    return W


def _self_kernel(E, q0, M, T, sw, tol=1e-14, max_iter=30):
    r"""Self-kernel $S(t_i,t_j)$ of one input: the full symmetric $(M+1)^2$ grid.

    Row $i$ ($j\le i$, symmetry for the rest) has unknowns $r_j=S_{ij}$; the diagonal $r_i=q(t_i)$ is
    also the variance of $a$ in every $C_{il}=C(r_i,q_l,r_l)$ and the $j=i$ cell uses
    $S_{i-1,i}=r_{i-1}$, $C_{i-1,i}=C_{i,i-1}$.  Full Newton: $\partial C/\partial c=\dot C$,
    $\partial C/\partial q_a=\frac12E[\phi''(a)\phi(b)]$ (Price's theorem).
    """
    h = T / M
    n = M + 1
    S = np.full((n, n), float(q0))
    C = np.empty((n, n))
    C[0, 0], _ = E.expect(q0, q0, q0)
    q = np.full(n, float(q0))
    k2 = sw**2 * h / 2
    for i in range(1, n):
        m = i + 1
        W = _cumtrap(h, m)
        if i == 1:
            r = np.full(m, float(q0))
        else:      # linear extrapolation from the two previous rows
            r = np.append(2 * S[i - 1, :i] - S[i - 2, :i], 2 * S[i - 1, i - 1] - S[i - 2, i - 2])
        r[0] = q0
        for it in range(max_iter):
            Crow, Cd, E2 = E.expect(r[-1], np.append(q[:i], r[-1]), r, second=True)
            pS = np.append(S[i - 1, :i], r[-2])
            pC = np.append(C[i - 1, :i], Crow[-2])
            F = pS + k2 * W @ (Crow + pC)
            F[0] = q0
            D = np.diag(Cd)                         # dCrow / dr
            D[:, -1] += 0.5 * E2
            D[-1, -1] += 0.5 * E2[-1]
            Q = np.zeros((m, m))
            Q[-1] = D[-2]                           # pC[i] = Crow[i-1]
            Jac = k2 * W @ (D + Q)
            Jac[-1, -2] += 1.0                      # pS[i] = r[i-1]
            Jac[0] = 0.0
            step = np.linalg.solve(np.eye(m) - Jac, F - r)
            r = r + step
            if np.max(np.abs(step)) < tol * np.max(np.abs(r)):
                break
        else:
            raise RuntimeError(f"self-kernel row {i} did not converge (step {np.max(np.abs(step)):.1e})")
        S[i, :m] = S[:m, i] = r
        q[i] = r[-1]
        C[i, :m] = C[:m, i] = Crow                  # at the last iterate: off by O(step) = O(tol)
    return S


def _cross_kernel(E, qx, qy, s0, M, T, sw, tol=1e-14, max_iter=30):
    """Cross-kernel S_xy on the (M+1)^2 grid given the self-kernel diagonals qx, qy (Newton per row)."""
    h = T / M
    n = M + 1
    k2 = sw**2 * h / 2
    W = _cumtrap(h, n)
    S = np.full((n, n), float(s0))
    C = np.empty((n, n))
    C[0], _ = E.expect(qx[0], qy, S[0])
    for i in range(1, n):
        r = S[i - 1].copy() if i == 1 else 2 * S[i - 1] - S[i - 2]
        r[0] = s0
        for it in range(max_iter):
            Crow, Cd = E.expect(qx[i], qy, r)
            F = S[i - 1] + k2 * W @ (Crow + C[i - 1])
            step = np.linalg.solve(np.eye(n) - k2 * W * Cd[None, :], F - r)
            r = r + step
            if np.max(np.abs(step)) < tol * np.max(np.abs(r)):
                break
        else:
            raise RuntimeError(f"cross-kernel row {i} did not converge (step {np.max(np.abs(step)):.1e})")
        S[i] = r
        C[i] = Crow
    return S


def _kernel_from_S(E, S, qx, qy, s0, M, T, sw, sv):
    """(nngp, ntk) from a converged cross-covariance grid S (Lambda by backward row solves)."""
    h = T / M
    n = M + 1
    C, Cd = E.expect(qx[:, None], qy[None, :], S)
    Wr = _cumtrap(h, n)[::-1, ::-1]                 # (Wr f)_j = trapezoid of f on [t_j, T]
    k2 = sw**2 * h / 2
    Lam = np.empty((n, n))
    Lam[-1] = sv**2 * Cd[-1, -1]
    for i in range(n - 2, -1, -1):
        rhs = Lam[i + 1] + k2 * Wr @ (Cd[i + 1] * Lam[i + 1])
        Lam[i] = np.linalg.solve(np.eye(n) - k2 * Wr * Cd[i][None, :], rhs)
    wt = np.full(n, h)
    wt[[0, -1]] = h / 2
    integral = wt @ (C * Lam) @ wt
    nngp = sv**2 * C[-1, -1]
    return nngp, nngp + sw**2 * integral + s0 * Lam[0, 0]


def grid_kernel(phi: Phi, sxx, syy, sxy, *, M, T, sigma_w, sigma_u, sigma_v, rule: GaussRule):
    """(nngp, ntk) of one input pair on the uniform grid with M intervals (O(h^2))."""
    E = rule
    Sx = _self_kernel(E, sigma_u**2 * sxx, M, T, sigma_w)
    Sy = Sx if syy == sxx else _self_kernel(E, sigma_u**2 * syy, M, T, sigma_w)
    qx, qy = np.diag(Sx).copy(), np.diag(Sy).copy()
    s0 = sigma_u**2 * sxy
    S = Sx if (sxy == sxx and syy == sxx) else _cross_kernel(E, qx, qy, s0, M, T, sigma_w)
    return _kernel_from_S(E, S, qx, qy, s0, M, T, sigma_w, sigma_v)


def romberg(values, p=2):
    """Romberg table for values at h, h/2, h/4, ... with error expansion in h^p, h^2p, ...: the last row."""
    table = [np.asarray(v, dtype=float) for v in values]
    k = 0
    while len(table) > 1:
        k += 1
        f = 2.0 ** (p * k)
        table = [(f * table[i + 1] - table[i]) / (f - 1) for i in range(len(table) - 1)]
    return table[0]


@dataclasses.dataclass(frozen=True)
class Reference:
    """Extrapolated (nngp, ntk) per input pair, with error estimates and the raw per-grid values."""

    nngp: np.ndarray
    ntk: np.ndarray
    err_nngp: np.ndarray
    err_ntk: np.ndarray
    raw: np.ndarray           # (levels, pairs, 2): (nngp, ntk) on each grid
    Ms: tuple
    rule: object


def reference_kernel(phi, pairs, *, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, Ms=(4, 8, 16, 32), rule=None):
    r"""Romberg-extrapolated kernel for each pair ``(sxx, syy, sxy)`` of input second moments $x\cdot y/d$.

    The value extrapolates all grids in ``Ms`` (each the double of the previous one).  The error
    estimate is the difference of the extrapolations from the coarser and from the finer
    ``len(Ms) - 1`` grids (e.g. $(h, h/2, h/4)$ vs $(h/2, h/4, h/8)$): it bounds the error of the
    coarser one, and so, conservatively, of the value.
    """
    phi = PHIS[phi] if isinstance(phi, str) else phi
    if rule is None:      # q_max from a coarse solve of the largest-norm self-kernel, with 10% margin
        v = max(max(p[0], p[1]) for p in pairs) * sigma_u**2
        coarse = GaussRule(phi, 4 * v + 1, digits=20)
        q_max = 1.1 * float(np.max(np.diag(_self_kernel(coarse, v, 8, T, sigma_w))))
        rule = GaussRule(phi, q_max)
    raw = np.array([[grid_kernel(phi, *p, M=M, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, rule=rule)
                     for p in pairs] for M in Ms])
    best = romberg(list(raw))
    err = np.abs(romberg(list(raw[:-1])) - romberg(list(raw[1:])))
    return Reference(best[:, 0], best[:, 1], err[:, 0], err[:, 1], raw, tuple(Ms), rule)


def euler_resnet_kernel(phi, sxx, syy, sxy, *, L, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, rule):
    r"""Exact infinite-width kernel of the weight-tied Euler ResNet of depth L (explicit left sums).

    $S_{\ell m}=S_0+\sigma_w^2\delta^2\sum_{i<\ell,j<m}C_{ij}$ (explicit: no fixed point),
    $\Lambda_{\ell m}=\sigma_v^2\dot C_{LL}+\sigma_w^2\delta^2\sum_{\ell\le i<L,m\le j<L}\dot C_{ij}\Lambda_{i+1,j+1}$,
    $K_{\rm NTK}=\sigma_v^2C_{LL}+\sigma_w^2\delta^2\sum_{i,j<L}C_{ij}\Lambda_{i+1,j+1}+S_0\Lambda_{00}$.
    """
    phi = PHIS[phi] if isinstance(phi, str) else phi
    d = T / L
    n = L + 1

    def self_kernel(s0):
        S = np.full((n, n), s0)
        C = np.zeros((n, n))
        for l in range(n):
            for m in range(l + 1):
                S[l, m] = S[m, l] = s0 + sigma_w**2 * d**2 * C[:l, :m].sum()
            q = np.diag(S)[: l + 1]
            C[l, : l + 1], _ = rule.expect(q[l], q, S[l, : l + 1])
            C[: l + 1, l] = C[l, : l + 1]
        return S

    Sx = self_kernel(sigma_u**2 * sxx)
    Sy = self_kernel(sigma_u**2 * syy)
    qx, qy = np.diag(Sx), np.diag(Sy)
    s0 = sigma_u**2 * sxy
    S = np.full((n, n), s0)
    C = np.zeros((n, n))
    for l in range(n):
        S[l] = s0 + sigma_w**2 * d**2 * np.concatenate([[0.0], np.cumsum(C[:l].sum(axis=0))[:-1]])
        C[l], _ = rule.expect(qx[l], qy, S[l])
    C, Cd = rule.expect(qx[:, None], qy[None, :], S)
    Lam = np.empty((n, n))
    G = np.zeros((n, n))                            # G[i, j] = Cd[i, j] Lam[i+1, j+1]
    for l in range(L, -1, -1):
        for m in range(L, -1, -1):
            Lam[l, m] = sigma_v**2 * Cd[L, L] + sigma_w**2 * d**2 * G[l:L, m:L].sum()
        if l > 0:
            G[l - 1, :L] = Cd[l - 1, :L] * Lam[l, 1:]
    nngp = sigma_v**2 * C[L, L]
    ntk = nngp + sigma_w**2 * d**2 * np.sum(C[:L, :L] * Lam[1:, 1:]) + s0 * Lam[0, 0]
    return nngp, ntk
