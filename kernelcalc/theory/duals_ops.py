r"""The operations the closed-form duals of :mod:`kernelcalc.theory.duals` are written against: one namespace per
backend (:data:`JAX_OPS`, :data:`NUMPY_OPS`, :data:`SYMPY_OPS`), so each formula is written once for the numeric
and the symbolic paths, and the numerically careful primitives they share.

For centred Gaussian $(a,b)$ with $\mathrm{Var}\,a=q_1$, $\mathrm{Var}\,b=q_2$, $\mathrm{Cov}(a,b)=c$, $n=\sqrt{q_1q_2}$:

- the correlation $\rho=c/n$, clipped to $[-1,1]$ (0 when a variance is 0: ``corr``);
- the angle $\theta=\arccos\rho=2\operatorname{atan2}(\sqrt{1-\rho},\sqrt{1+\rho})$ (:func:`correlation_angle`,
  ``angle``): accurate to relative rounding at $\rho\to\pm1$ and exactly 0 at $\rho=1$, where $\arccos$ of a rounded
  $1-\epsilon$ gives $\sqrt{2\epsilon}$;
- the arc-cosine function $J(c,\Delta)=\Delta+c\beta=n(\sin\theta+(\pi-\theta)\cos\theta)$, $\Delta=n\sin\theta$,
  $\beta=\operatorname{atan2}(\Delta,-c)=\pi-\theta$ (``arc``), by the series
  $J=n\beta^3\sum_{k=1}^{9}(-1)^{k+1}\frac{2k}{(2k+1)!}\beta^{2k-2}$ (:data:`_ARC_SERIES`) for $\beta\le1$, where the
  two terms cancel;
- the Mills ratio $M(x)=e^{x^2/2}\Phi(-x)$ and the bivariate one $R_2(h,k;\rho)=e^{Q(h,k;\rho)}\Phi_2(h,k;\rho)$
  (``mills``, ``mills2``, ``mills2_whitened``: :mod:`kernelcalc.theory.bivariate_normal`; in symbolic output
  $\Phi_2$ is the undefined function :data:`PHI2`);
- the normal CDF $\Phi$ and the bivariate one $\Phi_2(h,k;\rho)$ (``Phi``, ``bvn``).

Importing this module does not import jax: :data:`JAX_OPS` builds its namespace on first use.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import sympy as sp

from . import bivariate_normal as _bvn
from . import bivariate_whitened as _bvw
from .bivariate_whitened import _LOOSE_TOL as LOOSE_TOL

__all__ = ["JAX_OPS", "LOOSE_TOL", "NUMPY_OPS", "NUMPY_OPS_LOOSE", "SYMPY_OPS", "correlation_angle"]


def correlation_angle(rho, xp=np):
    r"""$\theta=\arccos\rho$ as $2\operatorname{atan2}(\sqrt{1-\rho},\sqrt{1+\rho})$ for $\rho\in[-1,1]$: accurate to
    relative rounding near $\rho=\pm1$ (arccos of a rounded $1-\epsilon$ gives $\sqrt{2\epsilon}$), and exactly 0 at
    $\rho=1$.  ``xp``: numpy or jax.numpy."""
    return 2.0 * xp.arctan2(xp.sqrt(1.0 - rho), xp.sqrt(1.0 + rho))


def _angle(xp):
    r"""$\theta=\arccos\rho$, $\rho=c/\sqrt{q_1q_2}$, as $2\operatorname{atan2}(\sqrt{1-\rho},\sqrt{1+\rho})$
    (``xp``: numpy or jax.numpy): accurate at both ends and exact ($\theta=0$) for identical inputs
    ($\sqrt{q\cdot q}=q$ in IEEE arithmetic, so $\rho=1$), where arccos of a rounded $1-\epsilon$ (or an
    FMA-contracted $q_1q_2-c^2$) would give $\sqrt{2\epsilon}\approx2\cdot10^{-8}$; $\pi/2$ (independent)
    when a variance is 0."""

    def angle(q1, q2, c):
        n = xp.sqrt(q1 * q2)
        rho = xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
        return correlation_angle(rho, xp)

    return angle


#: $(-1)^{k+1}\,2k/(2k+1)!$, $k=1..9$: $\sin\beta-\beta\cos\beta=\beta^3\sum_k a_k\beta^{2k-2}$ (see :func:`_arc`).
_ARC_SERIES = tuple((-1) ** (k + 1) * 2 * k / math.factorial(2 * k + 1) for k in range(1, 10))


def _arc(xp):
    r"""$J(c,\Delta)=\Delta+c\beta$, $\beta=\operatorname{atan2}(\Delta,-c)$, for $\Delta\ge0$ (``xp``: numpy or
    jax.numpy): the arc-cosine function $n(\sin\theta+(\pi-\theta)\cos\theta)$ of $c=n\cos\theta$,
    $\Delta=n\sin\theta$, $\beta=\pi-\theta$.  $J\ge0$; for $c\ge0$ both terms are $\ge0$.  For $c<0$ and
    $\beta\le1$ the two terms cancel ($J=n(\sin\beta-\beta\cos\beta)=n(\beta^3/3-\beta^5/30+\dots)$), so
    there $J=n\beta^3\sum_{k=1}^{9}(-1)^{k+1}\frac{2k}{(2k+1)!}\beta^{2k-2}$ (truncation
    $<5\cdot10^{-16}$ relative at $\beta=1$); for $\beta>1$ the direct sum loses at most a factor 3."""

    def arc(c, d):
        beta = xp.arctan2(d, -c)
        if xp is np:    # numpy: the series only where it is used (beta <= 1: near-antiparallel, rare)
            out = d + c * beta
            small = beta <= 1.0
            if np.any(small):
                out = np.array(np.broadcast_to(out, np.broadcast_shapes(np.shape(c), np.shape(d), np.shape(beta))))
                cs, ds, bs = (np.broadcast_to(a, out.shape)[small] for a in (c, d, beta))
                zs = bs * bs
                ser = _ARC_SERIES[-1]
                for a in _ARC_SERIES[-2::-1]:
                    ser = ser * zs + a
                out[small] = np.sqrt(cs * cs + ds * ds) * bs * zs * ser
            return out
        z = beta * beta
        series = _ARC_SERIES[-1]
        for a in _ARC_SERIES[-2::-1]:
            series = series * z + a
        small = xp.sqrt(c * c + d * d) * beta * z * series
        return xp.where(beta <= 1.0, small, d + c * beta)

    return arc


def _correlation(xp):
    r"""$\rho=c/\sqrt{q_1q_2}$ clipped to $[-1,1]$ (0 when a variance is 0)."""

    def corr(q1, q2, c):
        n = xp.sqrt(q1 * q2)
        return xp.where(n > 0, xp.clip(c / xp.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)

    return corr


def _array_ops(xp) -> SimpleNamespace:
    """The operations of the closed forms for the array module ``xp`` (numpy or jax.numpy)."""
    return SimpleNamespace(numpy=xp is np, sqrt=xp.sqrt, arccos=xp.arccos, arcsin=xp.arcsin, exp=xp.exp,
                           sinh=xp.sinh, cosh=xp.cosh, sin=xp.sin, cos=xp.cos, pi=math.pi,
                           clip_unit=lambda r: xp.clip(r, -1.0, 1.0), angle=_angle(xp),
                           arctan2=xp.arctan2, nonneg=lambda v: xp.maximum(v, 0.0), arc=_arc(xp),
                           corr=_correlation(xp), mills=lambda x: _bvn.mills_ratio(x, xp), where=xp.where,
                           stack=lambda arrays: xp.stack(xp.broadcast_arrays(*arrays)),
                           mills2=lambda h, k, r: _bvn.bivariate_mills(h, k, r, xp),
                           mills2_whitened=lambda a, b, r: _bvw.bivariate_mills_whitened(a, b, r, xp),
                           Phi=lambda x: _bvn.normal_cdf(x, xp),
                           bvn=lambda h, k, r: _bvn.bivariate_normal_cdf(h, k, r, xp))


class _JaxOps:
    """:func:`_array_ops` of jax.numpy, built on first use (importing this module does not import jax)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        import jax
        import jax.numpy as jnp

        from .. import _x64

        _x64.jax_imported(jax)  # jax loaded here, inside a float64 scope opened before: x64 on before its first use

        ops = _array_ops(jnp)
        self.__dict__.update(vars(ops))
        return getattr(ops, name)


JAX_OPS = _JaxOps()
NUMPY_OPS = _array_ops(np)
#: :data:`NUMPY_OPS` at a relative accuracy of ~1e-7 (``DualKernels.from_marginals(..., tol)``, a closed form's
#: Newton sweep far from its fixed point): the whitened bivariate Mills ratios take fewer nodes; the rest is exact
NUMPY_OPS_LOOSE = SimpleNamespace(**{**vars(NUMPY_OPS), "mills2_whitened": lambda a, b, r: _bvw.bivariate_mills_whitened(
    a, b, r, np, tol=LOOSE_TOL)})
#: $\Phi_2(h,k;\rho)$ in symbolic output (an undefined function: the bivariate normal CDF)
PHI2 = sp.Function("Phi_2")
SYMPY_OPS = SimpleNamespace(sqrt=sp.sqrt, arccos=sp.acos, arcsin=sp.asin, exp=sp.exp, sinh=sp.sinh,
                            cosh=sp.cosh, sin=sp.sin, cos=sp.cos, pi=sp.pi, clip_unit=lambda r: r,
                            angle=lambda q1, q2, c: sp.acos(c / sp.sqrt(q1 * q2)), arctan2=sp.atan2,
                            nonneg=lambda v: v, arc=lambda c, d: d + c * sp.atan2(d, -c),
                            corr=lambda q1, q2, c: c / sp.sqrt(q1 * q2),
                            mills=lambda x: sp.exp(x**2 / 2) * sp.erfc(x / sp.sqrt(2)) / 2,
                            mills2=lambda h, k, r: sp.exp(sp.cancel((h**2 - 2 * r * h * k + k**2) / (2 * (1 - r**2))))
                            * PHI2(h, k, r),
                            Phi=lambda x: sp.erfc(-x / sp.sqrt(2)) / 2, bvn=PHI2)
