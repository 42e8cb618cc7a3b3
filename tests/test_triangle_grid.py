r"""The collapsed-triangle quadrature maps W, V, omega against brute-force integrals of their definitions.

**The reference** (written here, sharing no code with kernelcalc): on $[0,1]$, nodes $r_k$ ($k=0..m$) and
$w_l$ ($l=0..n$) Chebyshev–Lobatto on $[0,1]$, $v=1-g(w)$, $g(w)=\delta\sinh(aw)$, $a=\operatorname{arcsinh}(1/\delta)$;
the basis function of node $(k,l)$ is $L_k(r)\,\ell_l(w)$ (Lagrange products written here).  For the lower-triangle
point $(t, s=tv_i)$ the definitions (module doc of ``kernelcalc.kernels._triangle``) give

$$W_{(t,s),(k,l)} = 2\int_0^s r L_k(r)\!\int_0^1\!\ell_l(w(v))\,dv\,dr + \int_s^t r L_k(r)\!\int_0^{s/r}\!\ell_l(w(v))\,dv\,dr,$$
$$V_{(t,s),(k,l)} = 2\int_t^1 r L_k(r)\!\int_{t/r}^1\!\ell_l\,dv\,dr + \int_t^1 r L_k(r)\!\int_{s/r}^{t/r}\!\ell_l\,dv\,dr,\qquad
\omega_{(k,l)} = 2\int_0^1 rL_k(r)\,dr\int_0^1\ell_l\,dv,$$

with $w(v)=\operatorname{arcsinh}((1-v)/\delta)/a$.  The inner integrals are taken in $w$
($\int_0^x\ell_l(w(v))\,dv=\int_{w(x)}^1\ell_l(w)g'(w)\,dw$), both levels by adaptive ``scipy.integrate.quad``.
A small grid (m = 5, n = 6, delta = 1/4: a curved sinh map) keeps it at ~0.3 s.
"""

import math

import numpy as np
import pytest
from scipy.integrate import quad

from kernelcalc.kernels import _triangle

M, N, DELTA = 5, 6, 0.25
A = math.asinh(1.0 / DELTA)


def _lobatto(n):
    return np.array([0.5 - 0.5 * math.cos(math.pi * k / n) for k in range(n + 1)])


def _lagrange(nodes, k, x):
    return math.prod((x - nodes[j]) / (nodes[k] - nodes[j]) for j in range(len(nodes)) if j != k)


R_NODES = _lobatto(M)
W_NODES = _lobatto(N)


def _inner(l, x):
    """int_0^x ell_l(w(v)) dv for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    w_lo = math.asinh(min(1.0, 1.0 - x) / DELTA) / A
    return quad(lambda w: _lagrange(W_NODES, l, w) * DELTA * A * math.cosh(A * w), w_lo, 1.0,
                epsabs=1e-15, epsrel=1e-13)[0]


def _outer(k, fun, lo, hi):
    if hi <= lo:
        return 0.0
    return quad(lambda r: r * _lagrange(R_NODES, k, r) * fun(r), lo, hi, epsabs=1e-15, epsrel=1e-13, limit=100)[0]


def _W_entry(t, s, k, l):
    return 2.0 * _outer(k, lambda r: 1.0, 0.0, s) * _inner(l, 1.0) + _outer(k, lambda r: _inner(l, s / r), s, t)


def _V_entry(t, s, k, l):
    return (2.0 * _outer(k, lambda r: _inner(l, 1.0) - _inner(l, t / r), t, 1.0)
            + _outer(k, lambda r: _inner(l, t / r) - _inner(l, s / r), t, 1.0))


@pytest.fixture(scope="module")
def grid():
    return _triangle._unit_grid(M, N, DELTA)


def test_nodes_are_the_documented_ones(grid):
    assert np.allclose(grid.r, R_NODES, rtol=0, atol=1e-15)
    v_ref = 1.0 - DELTA * np.sinh(A * W_NODES)
    assert np.allclose(grid.v, v_ref, rtol=0, atol=1e-15)


@pytest.mark.parametrize("i, li, k, l", [(3, 2, 1, 4), (1, 3, 4, 2), (4, 1, 2, 6), (2, 4, 0, 3)])
def test_W_and_V_entries_against_brute_force(grid, i, li, k, l):
    t = R_NODES[i]
    s = t * grid.v[li]
    row, col = i * (N + 1) + li, k * (N + 1) + l
    scale = np.max(np.abs(grid.W))
    assert abs(grid.W[row, col] - _W_entry(t, s, k, l)) < 1e-12 * scale
    assert abs(grid.V[row, col] - _V_entry(t, s, k, l)) < 1e-12 * scale


def test_omega_and_exactness_for_functions_of_the_later_time(grid):
    """omega against its definition; and for C(r, q) = f(max(r, q)), f a polynomial of degree <= m (exact on the
    tensor grid), W C = 2 int_0^s f(r) r dr + s int_s^t f(r) dr in closed form (f(r) = r^j)."""
    for k, l in ((0, 0), (3, 5), (5, 2)):
        ref = 2.0 * _outer(k, lambda r: 1.0, 0.0, 1.0) * _inner(l, 1.0)
        assert abs(grid.omega[k * (N + 1) + l] - ref) < 1e-13
    t = np.repeat(R_NODES, N + 1)
    s = t * np.tile(grid.v, M + 1)
    for j in range(M + 1):
        F = np.repeat(R_NODES**j, N + 1)
        exact = 2.0 * s ** (j + 2) / (j + 2) + s * (t ** (j + 1) - s ** (j + 1)) / (j + 1)
        assert np.max(np.abs(grid.W @ F - exact)) < 1e-13
        # int_t^1 int_s^1 f(max(r,q)) = int_t^1 int_t^1 f(max) + (t - s) int_t^1 f(r) dr
        sq = 2.0 * ((1.0 - t ** (j + 2)) / (j + 2) - t * (1.0 - t ** (j + 1)) / (j + 1))
        back = sq + (t - s) * (1.0 - t ** (j + 1)) / (j + 1)
        assert np.max(np.abs(grid.V @ F - back)) < 1e-13
