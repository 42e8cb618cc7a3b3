r"""The Hermite view of an activation: normalised Hermite coefficients of $\phi(\sqrt q\,z)$.

With $z\sim N(0,1)$ and the orthonormal Hermite polynomials $\psi_j=He_j/\sqrt{j!}$,

$$\phi(\sqrt q\,z)=\sum_{j\ge0}a_j\,\psi_j(z),\qquad a_j=E[\phi(\sqrt q\,z)\psi_j(z)],\qquad
\sum_ja_j^2=E[\phi(\sqrt q\,z)^2].$$

Mehler's formula gives the **dual activation** (the one-layer NNGP): for $(u,v)$ centred Gaussian with
variances $q$ and correlation $\rho$, $E[\phi(u)\phi(v)]=\sum_ja_j^2\rho^j$ (the same series as
:class:`~kernelcalc.theory.gaussian.HermiteRule`).  On the sphere $\mathbb S^{d-1}$ (radius $\sqrt d$) the
one-hidden-layer MLP NNGP without biases is $K(\rho)=\sigma_v^2\sum_ja_j^2\rho^j$ with $q=\sigma_w^2$, so its
Gegenbauer eigenvalues are
$$\mu_k=\sigma_v^2\sum_{j\ge k,\ j\equiv k\ (2)}a_j^2\,\gamma_{jk},\qquad
\gamma_{jk}=c_d\!\int_{-1}^1\rho^jP_k(\rho)(1-\rho^2)^{\frac{d-3}2}d\rho>0$$
(:meth:`HermiteCoefficients.sphere_eigenvalues`): $\mu_k>0$ exactly when some $a_j\ne0$ with $j\ge k$,
$j\equiv k$: a polynomial $\phi$ of degree $p$ ($a_j=0$ for $j>p$) gives $\mu_k=0$ for $k>p$, the
numerical face of the non-polynomial condition of Assumption 1.

**Quadrature.**  $a_j$ by Gauss–Legendre on $[-Z,Z]$, $Z=12+2\sqrt{k_{\max}+1}$ (beyond the turning
point $\sqrt{4k}$ of $\psi_k$), split at the kinks of $\phi$ (so relu's coefficients converge
exponentially, not as $O(h^2)$), with $\psi_je^{-z^2/4}$ from the stable three-term recurrence; the nodes
per piece are doubled until the coefficients change by less than the rounding floor.
``error_bound[j]`` = that change + rounding ($u\sum_i|w_i\phi\psi_j|$ times a safety factor).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from .._results import JsonResult, read_only
from .._validation import KernelcalcInputError, accuracy_shortfall, positive, positive_int
from .activations import resolve_activation
from .gaussian import HermiteRule, _kinks
from .gegenbauer import gauss_legendre

__all__ = ["HermiteCoefficients", "hermite_coefficients"]

_U = 2.0 ** -53
_MAX_NODES = 1 << 15        # Gauss-Legendre nodes per piece at most


@dataclasses.dataclass(frozen=True)
class HermiteCoefficients(JsonResult):
    r"""Result of :func:`hermite_coefficients`.

    **Fields:** ``activation`` (name), ``q``, ``k_max``; ``coefficients`` $a_0..a_{k_{\max}}$ of
    $\phi(\sqrt q z)=\sum_ja_j He_j(z)/\sqrt{j!}$; ``error_bound`` (per coefficient); ``resolved``
    ($|a_j|$ above its bound); ``polynomial_degree``: $p$ when $\phi$ is a polynomial of degree $p$ (then
    $a_j=0$ for $j>p$, checked numerically: those are below their bounds), else ``None``; ``second_moment``
    $E[\phi(\sqrt qz)^2]$ (Parseval: $\sum_ja_j^2$ up to the tail beyond $k_{\max}$); ``info``.
    """

    activation: str
    q: float
    k_max: int
    coefficients: np.ndarray
    error_bound: np.ndarray
    resolved: np.ndarray
    polynomial_degree: int | None
    second_moment: float
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name, dtype in (("coefficients", np.float64), ("error_bound", np.float64), ("resolved", bool)):
            object.__setattr__(self, name, read_only(getattr(self, name), dtype))
        object.__setattr__(self, "info", dict(self.info))

    @property
    def tail(self) -> float:
        r"""$\sum_{j>k_{\max}}a_j^2=E[\phi^2]-\sum_{j\le k_{\max}}a_j^2$ (Parseval; $\ge0$ up to rounding)."""
        return max(self.second_moment - float(np.sum(self.coefficients ** 2)), 0.0)

    def dual(self, rho) -> np.ndarray:
        r"""The dual activation $\hat\phi(\rho)=E[\phi(u)\phi(v)]\approx\sum_{j\le k_{\max}}a_j^2\rho^j$
        ($u,v$ variance $q$, correlation $\rho$; the error is at most :attr:`tail` for $|\rho|\le1$)."""
        a = self.coefficients
        return HermiteRule.series(a, a, np.asarray(rho, np.float64), xp=np)

    def sphere_eigenvalues(self, d: int, k_max: int | None = None) -> np.ndarray:
        r"""Gegenbauer eigenvalues $\mu_k=\sum_ja_j^2\gamma_{jk}$ of the dual activation on $\mathbb S^{d-1}$
        (module doc), $k=0..k_{\max}$ (default: this result's ``k_max``): the one-hidden-layer MLP NNGP
        with $q=\sigma_w^2$ (times $\sigma_v^2$).  Each is short of the true one by at most :attr:`tail`."""
        from .gegenbauer import monomial_eigenvalues

        d = positive_int("d", d, minimum=2)
        k_max = self.k_max if k_max is None else positive_int("k_max", k_max, minimum=0)
        if k_max > self.k_max:
            raise KernelcalcInputError(f"k_max = {k_max} exceeds the coefficients computed (k_max = {self.k_max})")
        G = monomial_eigenvalues(self.k_max, k_max, d)
        return (self.coefficients ** 2) @ G

    def table(self, n: int | None = None) -> str:
        n = self.k_max + 1 if n is None else min(n, self.k_max + 1)
        cells = [f"a_{j} = {a:+.6g}" if ok else f"a_{j} = 0 (< {e:.0e})"
                 for j, (a, e, ok) in enumerate(zip(self.coefficients[:n], self.error_bound[:n], self.resolved[:n]))]
        deg = ("polynomial of degree " + str(self.polynomial_degree)) if self.polynomial_degree is not None \
            else "not a polynomial: infinitely many nonzero"
        return (f"Hermite coefficients of {self.activation}(sqrt({self.q:g}) z) = sum_j a_j He_j(z)/sqrt(j!) ({deg}):\n  "
                + ", ".join(cells))

    def __str__(self) -> str:
        return self.table()


def _activation_function(act):
    f = act.numpy_fn

    def phi(x):
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(f(x), np.float64) * np.ones_like(x)

    return phi


def _coefficients(phi, q, k_max, pieces, m):
    """(a, rounding bound) with ``m`` Gauss-Legendre nodes on each piece."""
    x, w = gauss_legendre(m)
    z = np.concatenate([0.5 * (b - a) * x + 0.5 * (a + b) for a, b in pieces])
    wz = np.concatenate([0.5 * (b - a) * w for a, b in pieces])
    half = np.exp(-0.25 * z * z)
    F = phi(math.sqrt(q) * z) * wz * half / math.sqrt(2 * math.pi)           # phi * w * e^{-z^2/4}/sqrt(2 pi)
    a, rnd = np.empty(k_max + 1), np.empty(k_max + 1)
    prev, cur = np.zeros_like(z), half                                        # psi_j(z) e^{-z^2/4}
    for j in range(k_max + 1):
        a[j] = F @ cur
        rnd[j] = np.abs(F) @ np.abs(cur)
        prev, cur = cur, (z * cur - math.sqrt(j) * prev) / math.sqrt(j + 1)
    second = float(np.sum(F * phi(math.sqrt(q) * z) * half))
    return a, rnd, second


def hermite_coefficients(activation, q: float = 1.0, k_max: int = 20, *, strict: bool = False) -> HermiteCoefficients:
    r"""Normalised Hermite coefficients $a_j=E[\phi(\sqrt q z)He_j(z)]/\sqrt{j!}$, $j=0..k_{\max}$ (module doc).

    **Arguments:** ``activation`` (name, expression or :class:`~kernelcalc.Activation`); ``q`` $>0$: the
    pre-activation variance; ``k_max`` $\ge0$; ``strict``: raise instead of warning when the quadrature
    does not settle.

    **Returns:** :class:`HermiteCoefficients` (coefficients, error bounds, ``polynomial_degree``, the dual
    activation series and its sphere eigenvalues).

    >>> h = hermite_coefficients("x**2", q=1.0, k_max=4)
    >>> [round(float(a), 12) for a in h.coefficients[h.resolved]], h.polynomial_degree
    ([1.0, 1.414213562373], 2)
    """
    act = resolve_activation(activation)
    q = positive("q", q)
    k_max = positive_int("k_max", k_max, minimum=0)
    if k_max > 2000:
        raise KernelcalcInputError(f"k_max = {k_max} is too large: at most 2000 Hermite coefficients are resolved")
    phi = _activation_function(act)
    Z = 12.0 + 2.0 * math.sqrt(k_max + 1)
    cuts = [-Z] + [c / math.sqrt(q) for c in _kinks(act.expr) if abs(c) < Z * math.sqrt(q)] + [Z]
    pieces = list(zip(cuts[:-1], cuts[1:]))
    m = 2 * k_max + 64
    a, rnd, second = _coefficients(phi, q, k_max, pieces, m)
    if not (np.all(np.isfinite(a)) and math.isfinite(second)):
        raise KernelcalcInputError(f"the Hermite coefficients of {act.name}(sqrt({q:g}) z) are not finite "
                                   "(phi grows too fast for a Gaussian second moment)")
    scale = max(math.sqrt(abs(second)), 1e-300)
    while True:
        a2, rnd, second = _coefficients(phi, q, k_max, pieces, 2 * m)
        change = np.abs(a2 - a)
        a, m = a2, 2 * m
        floor = 16 * _U * (rnd + scale)
        if np.all(change <= floor):
            break
        if 2 * m > _MAX_NODES:
            accuracy_shortfall(f"hermite_coefficients: the coefficients of {act.name} still change by "
                               f"{np.max(change):.1e} at {m} nodes per piece", strict)
            break
    err = change + 16 * _U * (rnd + scale)
    resolved = np.abs(a) > err
    degree = act.polynomial_degree if act.is_polynomial else None
    info = dict(nodes_per_piece=m, pieces=[list(p) for p in pieces], largest_change=float(np.max(change)))
    if degree is not None:
        beyond = resolved[degree + 1:]
        info["numerical_degree_check"] = bool(not beyond.any())
        if beyond.any():
            accuracy_shortfall(f"hermite_coefficients: {act.name} is a polynomial of degree {degree} but "
                               f"coefficients beyond it are above their bounds", strict)
    return HermiteCoefficients(activation=act.name, q=q, k_max=k_max, coefficients=a, error_bound=err,
                               resolved=resolved, polynomial_degree=degree, second_moment=second, info=info)
