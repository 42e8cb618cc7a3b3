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
from typing import Sequence

import numpy as np

from .._x64 import float64
from .._validation import KernelcalcInputError, as_inputs, positive, positive_int
from ..theory.activations import resolve_activation
from .._results import JsonResult

__all__ = ["harmonic_dimension", "sphere_polynomial_dimension", "feature_degree", "feature_rank_bound",
           "LambdaMinTable", "lambda_min_table", "sphere_degree"]

#: Largest N whose Gram eigenvalues are computed densely (eigvalsh); above, kc.spectrum (Lanczos / shift-invert).
_DENSE_N = 2000

MODELS = ("mlp", "resnet", "node")


def harmonic_dimension(k: int, d: int) -> int:
    r"""$\dim\mathcal H_k(\mathbb S^{d-1})=\binom{k+d-1}{d-1}-\binom{k+d-3}{d-1}$ (spherical harmonics of degree $k$)."""
    from ..theory.gegenbauer import multiplicity

    return multiplicity(positive_int("k", k, minimum=0), positive_int("d", d))


def sphere_polynomial_dimension(D: int, d: int, parity: int | None = None) -> int:
    r"""Dimension of polynomials of degree $\le D$ on $\mathbb S^{d-1}$; with ``parity`` only degrees
    $k\equiv$ ``parity`` $\pmod 2$ (homogeneous polynomials of degree $D$: ``parity = D % 2``)."""
    return sum(harmonic_dimension(k, d) for k in range(D + 1) if parity is None or k % 2 == parity % 2)


def sphere_degree(N: int, d: int) -> int:
    r"""The degree that $N$ points on $\mathbb S^{d-1}$ resolve: the smallest $k$ with
    $\sum_{j\le k}N(d,j)\ge N$ (the dimension of polynomials of degree $\le k$ on the sphere)."""
    N, d = positive_int("N", N), positive_int("d", d, minimum=2)
    k, total = 0, harmonic_dimension(0, d)
    while total < N:
        k += 1
        total += harmonic_dimension(k, d)
    return k


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
            rank = "-" if r["rank"] is None else str(r["rank"])
            lines.append(f"{name:>10} {r['activation']:>10} {rank:>5} {bound:>6} "
                         + " ".join(f"{v:9.1e}" for v in r["ratio"]))
            if r.get("lambda_min_predicted") is not None:
                pad = " " * 17
                lines.append(f"{pad}lambda_min " + " ".join(f"{v:9.1e}" for v in r["lambda_min"]))
                lines.append(f"{pad} predicted " + " ".join(
                    ("<" if b else " ") + f"{v:8.1e}" for v, b in zip(r["lambda_min_predicted"], r["predicted_is_bound"]))
                    + "   (N mu_k, k = " + ",".join(str(k) for k in r["degree"]) + ")")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()



def _extremes(K: np.ndarray, n: int) -> tuple[float, float]:
    """(lambda_min, lambda_max) of ``K[:n, :n]``: eigvalsh up to ``_DENSE_N``, else :func:`kernelcalc.spectrum`."""
    if n <= _DENSE_N:
        ev = np.linalg.eigvalsh(K[:n, :n])
        return float(ev[0]), float(ev[-1])
    from .spectrum import spectrum

    A = np.ascontiguousarray(K[:n, :n])
    return (float(spectrum(A, 1, "smallest", verify=False).values[0]),
            float(spectrum(A, 1, "largest", method="lanczos", verify=False).values[0]))


def _sphere_prediction(model, depth, activation, T, d, Ns):
    r"""$N\hat\mu_{k(N)}$ per $N$ (:func:`sphere_degree`): $\hat\mu_k=\mu_k$ when resolved; at a degree
    whose eigenvalue vanishes by parity (bias-free relu: odd $k\ge3$) while a neighbour $k\pm1$ is
    resolved, the smaller resolved neighbour (the Gram's smallest block then comes from the other
    parity); else the bound of $\mu_k$, and the prediction is flagged as an upper bound."""
    from .sphere_spectrum import sphere_spectrum

    ks = [sphere_degree(n, d) for n in Ns]
    args = dict(depth=depth) if model == "mlp" else dict(depth=depth, T=T) if model == "resnet" else dict(T=T)
    sp = sphere_spectrum(model=model, activation=activation, d=d, k_max=max(ks) + 1, kernel="ntk", **args)
    ok, mu, err = sp.resolved_ntk, sp.mu_ntk, sp.err_ntk
    pred, is_bound = [], []
    for n, k in zip(Ns, ks):
        near = [j for j in (k - 1, k + 1) if j >= 0 and ok[j]]
        if ok[k]:
            value, bound = mu[k], False
        elif near:
            value, bound = min(mu[j] for j in near), False
        else:
            value, bound = err[k], True
        pred.append(float(n * value))
        is_bound.append(bound)
    return dict(degree=tuple(ks), lambda_min_predicted=tuple(pred), predicted_is_bound=tuple(is_bound))


@float64
def lambda_min_table(X, Ns: Sequence[int], *, activations=("x**2", "softplus"),
                     models=(("mlp", 1), ("mlp", 2), ("resnet", 1), ("node", None)), T=0.3,
                     rank_rtol=1e-10, sphere_prediction: bool = False) -> LambdaMinTable:
    r"""$\lambda_{\min}(K^\infty)$ as the data set grows, for polynomial and non-polynomial activations.

    **Arguments:** ``X`` (N, d) inputs (the first $N$ rows are used for each $N$ in ``Ns``);
    ``activations``; ``models``: ``(model, depth)`` pairs (``depth`` ``None`` for ``"node"``); ``T``:
    horizon of the ResNet and Neural ODE (a quadratic Neural ODE blows up in finite time, so keep
    $T$ small); ``rank_rtol``: relative eigenvalue threshold for the numerical rank.

    ``sphere_prediction``: the inputs lie on the sphere $x\cdot x=d$ (spread uniformly): add the
    spectrum's prediction $\lambda_{\min}(K_N)\approx N\mu_{k(N)}$, with $\mu_k$ the NTK's
    eigenvalues on the sphere (:func:`~kernelcalc.sphere_spectrum`) and $k(N)$ the degree $N$ points
    resolve (:func:`sphere_degree`), as ``lambda_min_predicted``, ``degree`` and ``predicted_is_bound``
    of every row.  The Gram of $N$ well-spread points has eigenvalues $\approx N\mu_k$ in blocks of
    $N(d,k)$; once $N$ passes $\sum_{j<k}N(d,j)$ the degree-$k$ block is the smallest.  Above
    $N=2000$ the extreme eigenvalues are measured with :func:`~kernelcalc.spectrum` (shift-invert /
    Lanczos) and the numerical ``rank`` is ``None``.

    **Returns:** a :class:`LambdaMinTable`.
    """
    from ..kernels import mlp_kernel, node_kernel, resnet_kernel

    X = as_inputs(X, "X")
    T, rank_rtol = positive("T", T), positive("rank_rtol", rank_rtol)
    Ns = [positive_int("N", n) for n in Ns]
    if not Ns or max(Ns) > X.shape[0]:
        raise KernelcalcInputError(f"Ns must be non-empty and at most N = {X.shape[0]}, got {Ns}")
    X = X[: max(Ns)]
    if sphere_prediction:
        norms = np.sum(X * X, axis=1) / X.shape[1]
        if X.shape[1] < 2 or np.max(np.abs(norms - 1.0)) > 1e-8:
            raise KernelcalcInputError("sphere_prediction needs inputs on the sphere x.x = d (d >= 2); "
                                       f"x.x/d ranges over [{norms.min():.6g}, {norms.max():.6g}]")
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
            rank = None
            if X.shape[0] <= _DENSE_N:
                ev_full = np.linalg.eigvalsh(K)
                rank = int(np.sum(ev_full > rank_rtol * ev_full[-1]))
            lam, ratio = [], []
            for n in Ns:
                lo, hi = _extremes(K, n)
                lam.append(lo)
                ratio.append(lo / hi)
            collapse = next((n for n, r in zip(Ns, ratio) if r <= rank_rtol), None)
            row = dict(model=model, depth=depth, activation=resolve_activation(a).name, ratio=tuple(ratio),
                       lambda_min=tuple(lam), rank=rank,
                       rank_bound=feature_rank_bound(a, model, X.shape[1], depth), collapse_N=collapse)
            if sphere_prediction:
                row.update(_sphere_prediction(model, depth, a, T, X.shape[1], Ns))
            rows.append(row)
    return LambdaMinTable(Ns=tuple(Ns), rows=tuple(rows),
                          params=dict(N=X.shape[0], d=X.shape[1], T=T, rank_rtol=rank_rtol,
                                      sphere_prediction=bool(sphere_prediction)))
