"""A 2-D Gaussian expectation by nested composite Gauss–Legendre, written for the tests (shares no code
with kernelcalc): the outer variable a ~ N(0, q1) and the inner b | a ~ N(c a / q1, q2 - c²/q1), each on
panels graded toward its centre and toward the kinks at 0 (24 points per panel)."""

import numpy as np

_X, _W = np.polynomial.legendre.leggauss(24)
_STEPS = (-13, -10, -8, -6, -5, -4, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 13)
_NEAR = (0, 0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64)


def _panels(center, width):
    pts = {center + width * k for k in _STEPS}
    lo, hi = center - 13 * width, center + 13 * width
    pts |= {s * d for d in _NEAR for s in (1, -1) if lo < s * d < hi}
    return np.array(sorted(pts))


def _nodes(pts):
    a, b = pts[:-1, None], pts[1:, None]
    return (0.5 * (b - a) * _X + 0.5 * (a + b)).ravel(), (0.5 * (b - a) * _W).ravel()


def expect_gl(f, g, q1, q2, c):
    """E[f(a) g(b)] for (a, b) ~ N(0, [[q1, c], [c, q2]])."""
    a, wa = _nodes(_panels(0.0, np.sqrt(q1)))
    pa = np.exp(-a * a / (2 * q1)) / np.sqrt(2 * np.pi * q1)
    s2 = q2 - c * c / q1
    if s2 <= 0:
        return float(np.sum(wa * pa * f(a) * g(c / q1 * a)))
    inner = np.empty_like(a)
    for i, ai in enumerate(a):
        mu = c / q1 * ai
        b, wb = _nodes(_panels(mu, np.sqrt(s2)))
        inner[i] = np.sum(wb * g(b) * np.exp(-(b - mu) ** 2 / (2 * s2))) / np.sqrt(2 * np.pi * s2)
    return float(np.sum(wa * pa * f(a) * inner))


_DIAG = {}


def norm_gl(f, q1, q2):
    """sqrt(E f(a)^2 E f(b)^2), a ~ N(0, q1), b ~ N(0, q2) (memoised per function and variance): the kernel's scale."""
    for q in (q1, q2):
        if (f, q) not in _DIAG:
            _DIAG[f, q] = expect_gl(f, f, q, q, q)
    return float(np.sqrt(_DIAG[f, q1] * _DIAG[f, q2]))
