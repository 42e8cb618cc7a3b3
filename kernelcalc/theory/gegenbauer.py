r"""Gegenbauer polynomials of the sphere $\mathbb S^{d-1}$: Funk–Hecke eigenvalues of dot-product kernels.

A kernel $K(\rho)$, $\rho=x\cdot y/d$, on the sphere of radius $\sqrt d$ with the uniform probability
measure has the eigenvalue $\mu_k=c_d\int_{-1}^1K(\rho)P_k(\rho)(1-\rho^2)^{(d-3)/2}d\rho$ on the
spherical harmonics of degree $k$, with $c_d=\Gamma(d/2)/(\sqrt\pi\,\Gamma(\frac{d-1}2))$ and
$P_k=C_k^{(d-2)/2}/C_k^{(d-2)/2}(1)$ the normalised Gegenbauer polynomial.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["sphere_constant", "gegenbauer_table", "monomial_eigenvalues", "gauss_legendre", "multiplicity"]


def multiplicity(k: int, d: int) -> int:
    r"""$N(d,k)=\dim\mathcal H_k(\mathbb S^{d-1})=\binom{k+d-1}{d-1}-\binom{k+d-3}{d-1}$ (spherical harmonics of degree $k$)."""
    return math.comb(k + d - 1, d - 1) - (math.comb(k + d - 3, d - 1) if k >= 2 else 0)


def sphere_constant(d: int) -> float:
    r"""$c_d=\Gamma(d/2)/(\sqrt\pi\,\Gamma((d-1)/2))$: $c_d\int_0^\pi\sin^{d-2}\theta\,d\theta=1$."""
    return math.exp(math.lgamma(d / 2) - math.lgamma((d - 1) / 2)) / math.sqrt(math.pi)


def gegenbauer_table(rho, k_max: int, d: int) -> np.ndarray:
    r"""$P_k(\rho)$ for $k=0..k_{\max}$ (leading axis), normalised Gegenbauer polynomials of $\mathbb S^{d-1}$
    ($P_k(1)=1$), by the forward recurrence $P_{k+1}=[(2k+d-2)\rho P_k-kP_{k-1}]/(k+d-2)$, $P_1=\rho$
    (stable on $[-1,1]$)."""
    rho = np.asarray(rho, np.float64)
    P = np.empty((k_max + 1,) + rho.shape)
    P[0] = 1.0
    if k_max >= 1:
        P[1] = rho
    for k in range(1, k_max):
        P[k + 1] = ((2 * k + d - 2) * rho * P[k] - k * P[k - 1]) / (k + d - 2)
    return P


@functools.lru_cache(maxsize=16)
def monomial_eigenvalues(j_max: int, k_max: int, d: int) -> np.ndarray:
    r"""$\gamma_{jk}=c_d\int_{-1}^1\rho^jP_k(\rho)(1-\rho^2)^{(d-3)/2}d\rho$ for $j\le j_{\max}$, $k\le k_{\max}$:
    the eigenvalues of the kernel $\rho^j$ (zero unless $j\ge k$ and $j-k$ even), by Gauss–Jacobi
    quadrature with weight $(1-\rho^2)^{(d-3)/2}$, exact for these polynomials.  Read-only ``(j_max+1, k_max+1)``."""
    from scipy.special import roots_jacobi

    a = (d - 3) / 2
    n = (j_max + k_max) // 2 + 2
    x, w = roots_jacobi(n, a, a)
    w = w / np.sum(w)                                          # c_d times the weights (they integrate 1 to 1)
    P = gegenbauer_table(x, k_max, d)                          # (k+1, n)
    powers = x[None, :] ** np.arange(j_max + 1)[:, None]       # (j+1, n)
    G = (powers * w) @ P.T
    j, k = np.meshgrid(np.arange(j_max + 1), np.arange(k_max + 1), indexing="ij")
    G[(j < k) | ((j - k) % 2 == 1)] = 0.0                      # exact zeros (parity, degree)
    G.setflags(write=False)
    return G


@functools.lru_cache(maxsize=32)
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Gauss–Legendre nodes and weights on $[-1,1]$ to full double precision (numpy only, no scipy:
    ``kernelcalc limit`` shows Hermite coefficients without importing it; scipy's ``roots_legendre`` is
    moreover only good to about $10^{-13}$ at large $n$: measured $\sum_iw_ix_i^2-2/3=2.7\cdot10^{-13}$ at
    $n=1000$).  Tricomi's asymptotic nodes $x_i\approx(1-\frac{n-1}{8n^3})\cos\frac{\pi(4i-1)}{4n+2}$, then
    Newton steps on $P_n$ (three-term recurrence) until they stop moving; $w_i=2/((1-x_i^2)P_n'(x_i)^2)$.
    Ascending read-only arrays."""
    n = int(n)
    i = np.arange(1, n + 1)
    x = (1.0 - (n - 1) / (8.0 * n ** 3)) * np.cos(np.pi * (4 * i - 1) / (4 * n + 2))

    def legendre(x):
        p0, p1 = np.ones_like(x), x.copy()
        for k in range(1, n):
            p0, p1 = p1, ((2 * k + 1) * x * p1 - k * p0) / (k + 1)
        return p1, n * (x * p1 - p0) / (x * x - 1.0)

    for _ in range(10):
        p, dp = legendre(x)
        step = p / dp
        x = x - step
        if np.max(np.abs(step)) < 1e-15:
            break
    p, dp = legendre(x)
    w = 2.0 / ((1.0 - x * x) * dp * dp)
    x, w = x[::-1].copy(), w[::-1].copy()
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w
