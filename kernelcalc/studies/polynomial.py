r"""Polynomial activations and the rank of the NTK (Proposition 3 of Gao et al.).

If $\phi$ is a polynomial of degree $p$, every feature $\partial f_\theta(x)/\partial\theta$ of a
network with finitely many layers is a polynomial in $x$ of bounded degree $D$, so the infinite-width
Gram $K^\infty(X,X)$ has rank at most $\dim\mathcal P_D(\mathbb S^{d-1})$ whatever the data: once
$N$ exceeds it, $\lambda_{\min}(K^\infty)=0$ and the NTK convergence guarantee is lost.

- MLP of depth $L$ without biases: $f$ is homogeneous of degree $D=p^L$ when $\phi=x^p$ (a monomial;
  then only harmonics of degree $k\equiv D \pmod 2$ survive on the sphere), else of degree $\le p^L$.
- Weight-tied Euler ResNet of depth $L$: $h_L$ has degree $p^L$ and $f=v\cdot\phi(h_L)$ degree $D=p^{L+1}$
  (odd in $x$ when $\phi$ is an odd monomial).
- Neural ODE: for $p=1$ the flow map is linear ($D=1$, rank $\le d$); for $p\ge2$ the flow map of a
  polynomial vector field is not a polynomial (the ResNet degree $p^{L+1}\to\infty$), so there is
  **no** finite bound. The limit kernel is then a power series in $x\cdot y/d$ and can stay strictly
  positive definite: the collapse is a finite-depth phenomenon (measured in :func:`lambda_min_table`).

The dimension of polynomials of degree $\le D$ restricted to $\mathbb S^{d-1}$ is
$\sum_{k\le D}\dim\mathcal H_k$ with $\dim\mathcal H_k=\binom{k+d-1}{d-1}-\binom{k+d-3}{d-1}$.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from .._x64 import float64
from .._validation import KernelcalcInputError, as_inputs, positive, positive_int
from ..theory.activations import resolve_activation
from .._results import JsonResult

__all__ = ["harmonic_dimension", "sphere_polynomial_dimension", "feature_degree", "feature_rank_bound",
           "LambdaMinTable", "lambda_min_table"]

MODELS = ("mlp", "resnet", "node")


def harmonic_dimension(k: int, d: int) -> int:
    r"""$\dim\mathcal H_k(\mathbb S^{d-1})=\binom{k+d-1}{d-1}-\binom{k+d-3}{d-1}$ (spherical harmonics of degree $k$)."""
    k, d = positive_int("k", k, minimum=0), positive_int("d", d)
    return math.comb(k + d - 1, d - 1) - (math.comb(k + d - 3, d - 1) if k >= 2 else 0)


def sphere_polynomial_dimension(D: int, d: int, parity: int | None = None) -> int:
    r"""Dimension of polynomials of degree $\le D$ on $\mathbb S^{d-1}$; with ``parity`` only degrees
    $k\equiv$ ``parity`` $\pmod 2$ (homogeneous polynomials of degree $D$: ``parity = D % 2``)."""
    return sum(harmonic_dimension(k, d) for k in range(D + 1) if parity is None or k % 2 == parity % 2)


def _model(model: str) -> str:
    if model not in MODELS:
        raise KernelcalcInputError(f"model must be one of {MODELS}, got {model!r}")
    return model


def feature_degree(activation, model: str, depth: int | None = None) -> tuple[int | None, int | None]:
    r"""``(D, parity)``: the NTK features of ``model`` are polynomials of degree $\le D$ in $x$.

    ``D`` is ``None`` when no finite bound exists (non-polynomial $\phi$, or the Neural ODE with
    $p\ge2$); ``parity`` is the parity of every feature when it has one (MLP with a monomial
    $\phi$: homogeneous of degree $D$; ResNet/ODE with an odd monomial: odd), else ``None``. ``depth`` $L$ is required for ``"mlp"`` and ``"resnet"``.
    """
    act = resolve_activation(activation)
    model = _model(model)
    if not act.is_polynomial:
        return None, None
    p = act.polynomial_degree
    if p == 0:
        raise KernelcalcInputError(f"activation {act.name} is constant: every NTK feature is trivial")
    odd_monomial = _is_monomial(act) and p % 2 == 1
    if model == "node":
        return (1, 1 if odd_monomial else None) if p == 1 else (None, None)
    L = positive_int("depth", depth)
    if model == "mlp":
        D = p**L
        return D, (D % 2 if _is_monomial(act) else None)
    return p ** (L + 1), (1 if odd_monomial else None)


def _is_monomial(act) -> bool:
    import sympy as sp

    return len(sp.Poly(act.expr, *act.expr.free_symbols).terms()) == 1


def feature_rank_bound(activation, model: str, d: int, depth: int | None = None) -> int | None:
    r"""Upper bound on $\operatorname{rank}K^\infty(X,X)$ for any data on $\mathbb S^{d-1}$ (``None``: no finite bound).

    The NTK Gram is $J J^\top$ with rows of $J$ the features $\partial_\theta f(x_i)$, polynomials of
    degree $\le D$ (:func:`feature_degree`), so its rank is at most $\dim\mathcal P_D(\mathbb S^{d-1})$.
    """
    D, parity = feature_degree(activation, model, depth)
    return None if D is None else sphere_polynomial_dimension(D, positive_int("d", d), parity)


@dataclasses.dataclass(frozen=True)
class LambdaMinTable(JsonResult):
    r"""Result of :func:`lambda_min_table`: $\lambda_{\min}/\lambda_{\max}$ of $K^\infty$ on the first $N$ rows.

    ``Ns``; ``rows``: one dict per (model, depth, activation) with ``ratio`` (tuple over ``Ns``),
    ``lambda_min`` (tuple), ``rank`` (numerical rank of the largest Gram, eigenvalues above
    ``rank_rtol`` $\lambda_{\max}$), ``rank_bound`` (:func:`feature_rank_bound`, ``None`` if none),
    ``collapse_N`` (first $N$ with ratio $\le$ ``rank_rtol``, or ``None``); ``params``.
    """

    Ns: tuple
    rows: tuple
    params: dict

    def table(self) -> str:
        head = f"{'model':>10} {'activation':>10} {'rank':>5} {'bound':>6} " + " ".join(f"{'N=' + str(n):>9}"
                                                                                       for n in self.Ns)
        lines = [f"lambda_min/lambda_max of K_inf on the first N of {self.params['N']} points on S^{self.params['d'] - 1}"
                 f" (rank: eigenvalues > {self.params['rank_rtol']:g} lambda_max)", head]
        for r in self.rows:
            name = r["model"] + (f" L={r['depth']}" if r["depth"] else f" T={self.params['T']:g}")
            bound = "-" if r["rank_bound"] is None else str(r["rank_bound"])
            lines.append(f"{name:>10} {r['activation']:>10} {r['rank']:>5} {bound:>6} "
                         + " ".join(f"{v:9.1e}" for v in r["ratio"]))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()



@float64
def lambda_min_table(X, Ns: Sequence[int], *, activations=("x**2", "softplus"),
                     models=(("mlp", 1), ("mlp", 2), ("resnet", 1), ("node", None)), T=0.3,
                     rank_rtol=1e-10) -> LambdaMinTable:
    r"""$\lambda_{\min}(K^\infty)$ as the data set grows, for polynomial and non-polynomial activations.

    **Arguments:** ``X`` (N, d) inputs (the first $N$ rows are used for each $N$ in ``Ns``);
    ``activations``; ``models``: ``(model, depth)`` pairs (``depth`` ``None`` for ``"node"``); ``T``:
    horizon of the ResNet and Neural ODE (a quadratic Neural ODE blows up in finite time, so keep
    $T$ small); ``rank_rtol``: relative eigenvalue threshold for the numerical rank.

    **Returns:** a :class:`LambdaMinTable`.
    """
    from ..kernels import mlp_kernel, node_kernel, resnet_kernel

    X = as_inputs(X, "X")
    T, rank_rtol = positive("T", T), positive("rank_rtol", rank_rtol)
    Ns = [positive_int("N", n) for n in Ns]
    if not Ns or max(Ns) > X.shape[0]:
        raise KernelcalcInputError(f"Ns must be non-empty and at most N = {X.shape[0]}, got {Ns}")
    X = X[: max(Ns)]
    rows = []
    for model, depth in models:
        _model(model)
        for a in activations:
            if model == "mlp":
                K = mlp_kernel(X, activation=a, depth=depth).ntk
            elif model == "resnet":
                K = resnet_kernel(X, activation=a, depth=depth, T=T).ntk
            else:
                K = node_kernel(X, activation=a, T=T).ntk
            ev_full = np.linalg.eigvalsh(K)
            lam, ratio = [], []
            for n in Ns:
                ev = np.linalg.eigvalsh(K[:n, :n])
                lam.append(float(ev[0]))
                ratio.append(float(ev[0] / ev[-1]))
            collapse = next((n for n, r in zip(Ns, ratio) if r <= rank_rtol), None)
            rows.append(dict(model=model, depth=depth, activation=resolve_activation(a).name, ratio=tuple(ratio),
                             lambda_min=tuple(lam), rank=int(np.sum(ev_full > rank_rtol * ev_full[-1])),
                             rank_bound=feature_rank_bound(a, model, X.shape[1], depth), collapse_N=collapse))
    return LambdaMinTable(Ns=tuple(Ns), rows=tuple(rows),
                          params=dict(N=X.shape[0], d=X.shape[1], T=T, rank_rtol=rank_rtol))
