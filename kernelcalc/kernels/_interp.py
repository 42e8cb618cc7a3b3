r"""Interpolation machinery of the Gram plans: Chebyshev series in $\theta$ and in the input norm,
and the piecewise-polynomial table in $\theta$ that every Gram entry is read from.

**Global interpolants.** A kernel is sampled at Chebyshev–Lobatto points $u_k=-\cos(k\pi/R)$,
$\theta=\tfrac\pi2(u+1)\in[0,\pi]$ (and, off the sphere, at Lobatto points in $t=\log v$,
$v=x\cdot x/d$).  Interpolating in $\theta$ rather than $\rho=\cos\theta$ keeps kernels with
$\sqrt{1-\rho^2}$ behaviour at $\rho=\pm1$ (relu arc-cosine) analytic, hence spectrally accurate.

**The table.** Evaluating an $R$-term Chebyshev series at each of $N^2$ entries costs $2R$
flops per entry and output.  Instead $[0,\pi]$ is cut into $P$ equal panels and on each the global
interpolant is replaced by its degree-$n$ interpolant at the $n+1$ Chebyshev points of the panel,
stored as monomial coefficients in the local variable $s\in[-1,1]$; an entry then costs one panel
index and $n$ Horner steps ($n=3..9$, $P\le 8192$, chosen as the cheapest pair whose error,
measured against the global series at points between the fitting nodes of every panel, is
below the tolerance).  The measured error is returned with the table.

**The graded variable.** A kernel with a kink meeting itself at $\theta=0$ (a kinked activation in a
Neural ODE: $K(\theta)-K(0)\approx a\theta+b\theta^2\log\theta$) is not analytic there, and its series in
$u$ converges algebraically (513 to 1025 nodes).  With ``graded=True`` the nodes and panels are placed in
$u$ with $\theta=\Theta(u)=\tfrac\pi2\bigl(1+\sin\tfrac{\pi u}2\bigr)$, an analytic map with
$\Theta'(\pm1)=0$: near $\theta=0$ (and $\pi$) $\theta\approx\tfrac{\pi^3}{16}(1+u)^2$, so
$\theta^2\log\theta$ becomes $(1+u)^4\log(1+u)$, whose Chebyshev coefficients decay like $n^{-9}$
instead of $n^{-5}$.  $\Theta(-u)=\pi-\Theta(u)$, so $\cos\Theta(u)=-\sin(\tfrac\pi2\sin\tfrac{\pi u}2)$ is
exactly odd in $u$ (the pairing of $\theta$ and $\pi-\theta$ is kept).

**The sinh variable** (:class:`SinhAngle`).  A kernel whose features near $\theta=0$ span many scales down to a
width $\varepsilon$ (the Neural ODE of a smooth $\phi$ at large variance $q$, the large-$q$ rule's duals: their
bends at $1-\rho\sim1/q$ at every time) takes $\theta=\varepsilon\sinh\bigl(A\tfrac{1+u}2\bigr)$,
$A=\operatorname{arcsinh}(\pi/\varepsilon)$: nodes spaced geometrically from $\varepsilon$ up (each scale gets a
few), uniformly below.  Measured (softplus, silu at $\sigma_wT=10$, $q(T)$ = 4.2e5, 1.2e5; error of the degree-$R$
interpolant between the nodes): graded $R=64$: 1.3e-9 / 5.7e-8, $R=96$: 3.9e-12 / --; sinh with
$\varepsilon=4/\sqrt{q(T)}$ (about 0.006 / 0.012): $R=32$: 1e-11 / 2.3e-10, $R=48$: 5e-12 / 1.5e-11 (the sphere tables
then stopped at 65 nodes where the graded ones took 129).  On an interval $[\theta_{lo},\theta_{hi}]$ (the pieces of
:mod:`._theta_pieces`) that starts past $10\varepsilon$ the variable is linear.
"""

from __future__ import annotations

import functools

import numpy as np

from ..theory._chebyshev import chebyshev_coefficients, chebyshev_matrix, lobatto

__all__ = ["chebyshev_lobatto", "chebyshev_coefficients", "lobatto", "theta_of", "cos_theta", "graded_cos_theta", "graded_u_of", "SinhAngle", "chebyshev_matrix", "barycentric_weights",
           "ThetaTable", "pivot_columns"]

_TABLE_DEGREES = (3, 5, 7, 9)
_TABLE_PANELS = tuple(2**k for k in range(5, 14))     # 32 .. 8192
_TEST_POINTS = np.array([-0.97, -0.81, -0.55, -0.23, 0.11, 0.42, 0.69, 0.9])


def theta_of(u):
    r"""$\theta=\tfrac\pi2(u+1)$."""
    return 0.5 * np.pi * (np.asarray(u) + 1.0)


def cos_theta(u):
    r"""$\cos\theta(u)=-\sin(\pi u/2)$: exactly odd in $u$ (so $\cos(\pi-\theta)=-\cos\theta$ bit for bit)."""
    return -np.sin(0.5 * np.pi * np.asarray(u))


def graded_cos_theta(u):
    r"""$\cos\Theta(u)=-\sin(\tfrac\pi2\sin\tfrac{\pi u}2)$ of the graded variable (exactly odd in $u$)."""
    return -np.sin(0.5 * np.pi * np.sin(0.5 * np.pi * np.asarray(u)))


def graded_u_of(theta):
    r"""$u=\Theta^{-1}(\theta)=\tfrac2\pi\arcsin(\tfrac{2\theta}\pi-1)$ (``theta`` is overwritten)."""
    theta *= 2.0 / np.pi
    theta -= 1.0
    np.clip(theta, -1.0, 1.0, out=theta)
    np.arcsin(theta, out=theta)
    theta *= 2.0 / np.pi
    return theta


class SinhAngle:
    r"""The sinh angle variable of the module doc on $[\theta_{lo},\theta_{hi}]$ (default $[0,\pi]$):
    $\theta=\varepsilon\sinh\bigl(a+(b-a)\tfrac{1+u}2\bigr)$, $a,b=\operatorname{arcsinh}(\theta_{lo,hi}/\varepsilon)$,
    $u\in[-1,1]$; where the interval starts at $10\varepsilon$ or later (no feature of width $\varepsilon$ inside),
    $\theta$ is linear in $u$.  The ends are exact."""

    def __init__(self, eps: float, lo: float = 0.0, hi: float = np.pi):
        self.eps, self.lo, self.hi = float(eps), float(lo), float(hi)
        self.graded = self.lo < 10.0 * self.eps
        self.a = float(np.arcsinh(self.lo / self.eps)) if self.graded else self.lo
        self.b = float(np.arcsinh(self.hi / self.eps)) if self.graded else self.hi

    def theta(self, u) -> np.ndarray:
        """The angle at ``u``."""
        u = np.asarray(u, np.float64)
        x = self.a + (self.b - self.a) * 0.5 * (1.0 + u)
        th = self.eps * np.sinh(x) if self.graded else x
        return np.where(u >= 1.0, self.hi, np.where(u <= -1.0, self.lo, th))

    def u_of(self, theta) -> np.ndarray:
        """$u$ of the angle ``theta`` (overwritten)."""
        if self.graded:
            theta *= 1.0 / self.eps
            np.arcsinh(theta, out=theta)
        theta -= self.a
        theta *= 2.0 / (self.b - self.a)
        theta -= 1.0
        np.clip(theta, -1.0, 1.0, out=theta)
        return theta

    def describe(self) -> str:
        span = "" if (self.lo, self.hi) == (0.0, np.pi) else f" on [{self.lo:.3g}, {self.hi:.3g}]"
        return (f"sinh, eps = {self.eps:.3g}" if self.graded else "linear") + span


def barycentric_weights(nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""``W[i, k]`` $=\ell_k(x_i)$, the Lagrange basis of the Chebyshev–Lobatto ``nodes`` at ``x``
    (second barycentric form, weights $(-1)^k$, halved at the ends; exact 1 at a node)."""
    m = nodes.size - 1
    w = (-1.0) ** np.arange(m + 1)
    w[0] *= 0.5
    w[-1] *= 0.5
    x = np.asarray(x, float).ravel()
    W = np.subtract(x[:, None], nodes[None, :])                 # the differences, then overwritten in place
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(w[None, :], W, out=W)
        total = np.sum(W, axis=1, keepdims=True)
        np.divide(W, total, out=W)
    rows = np.flatnonzero(~np.isfinite(total[:, 0]))           # an exact hit makes the row's sum infinite
    if rows.size:
        exact = x[rows, None] == nodes[None, :]
        hit = exact.any(axis=1)
        W[rows[hit]] = exact[hit].astype(float)
    return W


def interval_weights(x, lo: float, hi: float, m: int) -> np.ndarray:
    r"""``W[i, k]``: the Lagrange basis of the degree-``m`` Chebyshev–Lobatto points of [``lo``, ``hi``] at ``x``
    (clipped into it; a zero-length interval maps every ``x`` to its middle node coordinate 0), as
    :func:`barycentric_weights` in $u=(2x-\mathrm{lo}-\mathrm{hi})/(\mathrm{hi}-\mathrm{lo})$: the interpolants
    in $\log v$ and $\log q$ of the norm plan, the solver's diagonals and the marginal tables."""
    u = (2.0 * np.asarray(x, np.float64) - lo - hi) / max(hi - lo, 1e-300)
    return barycentric_weights(lobatto(m), np.clip(u, -1.0, 1.0))


class ThetaTable:
    r"""Piecewise-polynomial table in $\theta\in[0,\pi]$ of ``C`` channels, built from their global
    Chebyshev coefficients ``coef`` (shape ``(R+1, C)``, in $u=2\theta/\pi-1$).

    ``n``, ``P``: local degree and number of panels; ``error``: the largest measured deviation
    from the global series, relative to ``scale`` (the largest $|$value$|$ per channel group);
    ``table``: shape ``(C, n+1, P)``; ``graded``: the series is in the graded variable (module doc), or in the
    :class:`SinhAngle` given, and the panels are equal in $u$ (an entry's $\theta$ is mapped to $u$ first).
    """

    def __init__(self, coef: np.ndarray, tol: float, scale: np.ndarray | float, max_panels: int = 8192,
                 graded: "bool | SinhAngle" = False):
        self.variable = graded if isinstance(graded, SinhAngle) else None
        self.graded = bool(graded)
        coef = np.asarray(coef, float)
        R = coef.shape[0] - 1
        scale = np.maximum(np.broadcast_to(np.asarray(scale, float), coef.shape[1:]), 1e-300)
        best = None
        for n in _TABLE_DEGREES:                   # cheapest evaluation first: fewest Horner steps
            s_fit = -np.cos(np.pi * (np.arange(n + 1) + 0.5) / (n + 1))         # Chebyshev points
            inv_vander = np.linalg.inv(np.vander(s_fit, n + 1, increasing=True))
            for P in (p for p in _TABLE_PANELS if p <= max_panels):
                table, err = self._fit(coef, R, n, P, s_fit, inv_vander, scale)
                if best is None or err < best[2]:
                    best = (n, P, err, table)
                if err <= tol:
                    break
            if best[2] <= tol:
                break
        self.n, self.P, self.error, self.table = best

    @staticmethod
    def _fit(coef, R, n, P, s_fit, inv_vander, scale):
        panels = np.arange(P)[:, None]
        def values(s):   # global series at local points s of every panel (equal in u): (P, len(s), C)
            u = (panels + 0.5 * (s[None, :] + 1.0)) * (2.0 / P) - 1.0
            return (chebyshev_matrix(u, R) @ coef).reshape(P, s.size, -1)
        local = np.einsum("qj,pjc->cqp", inv_vander, values(s_fit))              # (C, n+1, P)
        powers = _TEST_POINTS[:, None] ** np.arange(n + 1)[None, :]              # (T, n+1)
        predicted = np.einsum("tq,cqp->ptc", powers, local)
        err = np.max(np.abs(predicted - values(_TEST_POINTS)) / scale)
        return local, float(err)

    def index(self, theta: np.ndarray):
        """Panel index and local coordinate $s\\in[-1,1]$ of every $\\theta$ (``theta`` may be overwritten)."""
        if self.graded:          # (a SinhAngle is graded too: its own variable)
            t = (graded_u_of if self.variable is None else self.variable.u_of)(theta)
            t += 1.0
            t *= 0.5 * self.P
        else:
            t = theta * (self.P / np.pi)
        k = np.minimum(t.astype(np.intp), self.P - 1)
        t -= k
        t *= 2.0
        t -= 1.0
        return k, t

    def horner(self, flat: np.ndarray, base: np.ndarray, s: np.ndarray) -> np.ndarray:
        r"""$\sum_q$ ``flat[base + q P]`` $s^q$ (``flat``: a table with the panel axis last, raveled)."""
        n, P = self.n, self.P
        acc = np.take(flat, base + n * P)
        for q in range(n - 1, -1, -1):
            acc *= s
            acc += np.take(flat, base + q * P)
        return acc


def pivot_columns(A: np.ndarray, k: int, first=()) -> np.ndarray:
    r"""The first ``k`` column pivots of the QR factorisation of ``A`` with column pivoting (Businger–Golub:
    at each step the column of largest norm orthogonal to those already chosen; what LAPACK ``geqp3`` picks,
    ties aside) by modified Gram–Schmidt in numpy: the empirical-interpolation points of a small basis
    (``A`` = $U^T$, at most ~100 x 100) without importing ``scipy.linalg`` (~0.25 s of a cold first call).
    ``first``: columns chosen before the pivoting, returned first and in full; each counts toward ``k`` where its
    norm orthogonal to those before it is at least 1/100 of the largest (one that is nearly dependent would leave
    the interpolation ill-conditioned: the pivoting takes one more)."""
    R = np.array(A, dtype=np.float64, copy=True)
    piv: list[int] = []
    counted = 0
    for j in first:
        j = int(j)
        norms = np.einsum("ij,ij->j", R, R)
        piv.append(j)
        if norms[j] > 0.0:
            q = R[:, j] / np.sqrt(norms[j])
            R -= np.outer(q, q @ R)
            counted += norms[j] >= 1e-4 * float(np.max(norms))
    while counted < min(k, R.shape[1]) and len(piv) < R.shape[1]:
        norms = np.einsum("ij,ij->j", R, R)
        norms[piv] = -1.0
        j = int(np.argmax(norms))
        piv.append(j)
        q = R[:, j] / max(np.sqrt(norms[j]), 1e-300)
        R -= np.outer(q, q @ R)
        counted += 1
    return np.array(piv, dtype=np.intp)


@functools.lru_cache(maxsize=64)
def chebyshev_lobatto(M: int, T: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Nodes $t_k$ ($k=0..M$) on $[0,T]$, integration matrix $J_{ik}=\int_0^{t_i}\ell_k$, weights $w_k=\int_0^T\ell_k$."""
    x = -np.cos(np.pi * np.arange(M + 1) / M)                 # increasing, x_0 = -1, x_M = 1
    V = np.polynomial.chebyshev.chebvander(x, M)              # V[i, j] = T_j(x_i)
    coeffs = np.linalg.solve(V, np.eye(M + 1))                 # column k: Chebyshev coefficients of ell_k
    J = np.empty((M + 1, M + 1))
    for k in range(M + 1):
        J[:, k] = np.polynomial.chebyshev.chebval(x, np.polynomial.chebyshev.chebint(coeffs[:, k], lbnd=-1.0))
    J *= T / 2.0
    J[0] = 0.0
    t = T * (x + 1.0) / 2.0
    return t, J, J[-1].copy()
