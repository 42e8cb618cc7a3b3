r"""Certified lower bounds on $\lambda_{\min}$ of a kernel Gram matrix.

Theorem 1's conclusion is $\lambda_{\min}(\Theta^\infty(X, X)) > 0$.  A floating-point eigenvalue
cannot tell $10^{-13}$ from $-10^{-13}$; this module returns a number $s$ with
$\lambda_{\min}(K^\infty)\ge s$ *provably*, given a bound $r$ on the entrywise error of the
computed Gram $\tilde K$ ($|K^\infty_{ij}-\tilde K_{ij}|\le r$).

**Method.**

1. *Weyl.* $|\lambda_i(K^\infty)-\lambda_i(\tilde K)|\le\|K^\infty-\tilde K\|_2\le\|K^\infty-\tilde K\|_F\le Nr$,
   so $\lambda_{\min}(K^\infty)\ge\lambda_{\min}(\tilde K)-Nr$.
2. *Verified Cholesky* (S. M. Rump, "Verification of positive definiteness", BIT Numer. Math. 46
   (2006) 433–452).  For a shift $t$, form $\tilde A=\mathrm{fl}(\tilde K-tI)$ (only the diagonal
   changes; the exact rounding residual $\delta_i=(\tilde K_{ii}-t)-\tilde A_{ii}$ is computed in
   rational arithmetic) and run the floating-point Cholesky factorisation (LAPACK ``dpotrf``).
   If it runs to completion with a finite factor $R$, then by the componentwise backward error of
   Cholesky (Demmel 1989; Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
   Thm. 10.3, whose Lemma 8.4 holds for any order of evaluation of the inner products, so it covers
   blocked and recursive LAPACK/BLAS, with or without FMA),
   $R^TR=\tilde A+\Delta$, $|\Delta|\le\gamma_k|R^T||R|+\tau\mathbf 1\mathbf 1^T$, and
   $\|r_j\|^2\le(\tilde A_{jj}+\tau)/(1-\gamma_k)$, hence
   $$\lambda_{\min}(\tilde A)\ \ge\ -\|\Delta\|_2\ \ge\ -\frac{\gamma_k}{1-\gamma_k}\,\mathrm{tr}\,\tilde A-U,
   \qquad \gamma_k=\frac{ku}{1-ku},\ u=2^{-53},$$
   which is Rump's criterion ($c\ge\frac{\gamma_{n+1}}{1-\gamma_{n+1}}\mathrm{tr}\,A$ plus an
   underflow term).  We take $k=n+3$ rather than Rump's $n+1$: one more rounding for BLAS ``trsm``
   kernels that multiply by a rounded reciprocal of the pivot, one spare.  $U$ bounds the
   gradual-underflow terms (absolute errors $\le\eta=2^{-1074}$ per product or quotient):
   $U=4n\,(2(n+1)+\max(1,\max_i\tilde A_{ii}))\,\eta$, negligible unless the matrix is
   itself near the underflow range.  Therefore
   $$\lambda_{\min}(\tilde K)\ \ge\ t-\max_i|\delta_i|-\frac{\gamma_k}{1-\gamma_k}\,\mathrm{tr}\,\tilde A-U .$$
   Every scalar in this bound is evaluated exactly (``fractions.Fraction``) and the final float is
   rounded down, so the bound holds for the numbers as stored.
3. *The shift.*  $t=\hat\lambda-g$ with $\hat\lambda$ the floating-point smallest eigenvalue (LAPACK
   ``dsyevr``, or one passed in) and $g$ twice the rounding term plus $nu\|\tilde K\|_\infty$ (the
   eigensolver's backward error).  If the factorisation fails, $t$ backs off (halved towards 0, then
   $\hat\lambda-8^kg$) until it succeeds; the bound is then $\approx\hat\lambda-3\,n u\,\mathrm{tr}\tilde K - Nr$.

A bound $\le 0$ is returned as it is (never ``None``): it is still a true statement, and it means
positive definiteness could not be proved — e.g. with a duplicate row, where $\lambda_{\min}=0$ and
the rounding and entry-error terms make the bound negative.

**Kinds of certificate.**

- ``"rigorous"``: $r$ is a proven bound.  :func:`rigorous_kernel` computes the Gram of the closed-form
  kernels (relu / leaky-relu / erf MLP in neural-tangents' ``stax`` NTK parameterisation, and the
  identity-activation Neural ODE) in interval arithmetic (python-flint's ``arb``, from the exact
  float64 data), so $r$ = the largest interval radius plus the float64 rounding of the midpoints.
- ``"a-posteriori discretisation estimate"``: $\tilde K$ from the numerical kernels, with
  $r$ = ``kernel.info["error_estimate"]`` (an estimate, not a proof, of the largest entrywise error);
  the linear algebra on top of it is still rigorous.

Example::

    >>> import numpy as np, kernelcalc as kc
    >>> res = kc.certify_lambda_min(np.diag([3.0, 2.0, 1.0]))
    >>> 0.999 < res.lower_bound <= 1.0
    True
"""

from __future__ import annotations

import dataclasses
import math
import time
from fractions import Fraction

import numpy as np

from .._x64 import float64
from .._validation import KernelcalcInputError, as_inputs, nonnegative, positive_int, scale_keywords
from ..theory.activations import resolve_activation
from ._interval import _flint, interval_grams, rigorous_available
from .._results import JsonResult, Kernel

__all__ = ["CertifiedLambdaMin", "certify_lambda_min", "certify_ntk", "rigorous_kernel",
           "verified_cholesky_bound", "RIGOROUS", "ESTIMATE"]

RIGOROUS = "rigorous"
ESTIMATE = "a-posteriori discretisation estimate"
_KINDS = {"rigorous": RIGOROUS, "estimate": ESTIMATE}

_U = Fraction(1, 2**53)           # unit roundoff of binary64, round to nearest
_ETA = Fraction(1, 2**1074)       # smallest positive subnormal
_MAX_ATTEMPTS = 64


def _gamma(k: int) -> Fraction:
    r"""$\gamma_k = ku/(1-ku)$, exactly."""
    return k * _U / (1 - k * _U)


def _down(x: Fraction) -> float:
    """The largest float <= x."""
    f = float(x)
    if Fraction(f) > x:
        f = math.nextafter(f, -math.inf)
    return f


def _up(x: Fraction) -> float:
    """The smallest float >= x."""
    f = float(x)
    if Fraction(f) < x:
        f = math.nextafter(f, math.inf)
    return f


# ---------------------------------------------------------------------------- verified Cholesky
def verified_cholesky_bound(A: np.ndarray, shift: float) -> Fraction | None:
    r"""Rump's verified Cholesky test of $A-tI$ ($t$ = ``shift``): a rational number $L$ with
    $\lambda_{\min}(A)\ge L$ proven, or ``None`` when the floating-point factorisation of
    $\mathrm{fl}(A-tI)$ does not run to completion.

    **Arguments:** ``A`` exactly symmetric, finite float64 ``(n, n)``; ``shift`` a finite float.

    **Returns:** $L = t-\max_i|\delta_i|-\frac{\gamma_{n+3}}{1-\gamma_{n+3}}\mathrm{tr}\,\tilde A-U$
    (see the module docstring), or ``None``.
    """
    from scipy.linalg import lapack

    n = A.shape[0]
    diag = np.diag(A).copy()
    shifted = diag - shift                                  # rounded to nearest
    # Knuth's TwoSum: the rounding error of each shifted diagonal entry, exactly (a float)
    back = shifted - diag
    residual = (diag - (shifted - back)) + (-shift - back)
    At = np.array(A.T, dtype=np.float64, order="F", copy=True)   # A is symmetric: a plain copy
    At[np.diag_indices(n)] = shifted
    R, info = lapack.dpotrf(At, lower=0, clean=0, overwrite_a=1)
    # OpenBLAS' potrf only tests "pivot <= 0", which a NaN passes: demand a finite factor too
    if info != 0 or not (np.all(np.diag(R) > 0) and np.isfinite(R).all()):
        return None
    # every pivot was > 0, so every shifted diagonal entry is > 0 and the trace is positive:
    # fsum is correctly rounded, |fsum - trace| <= u * trace
    trace = Fraction(math.fsum(shifted)) / (1 - _U)
    delta = Fraction(float(np.max(np.abs(residual))))
    g = _gamma(n + 3)
    underflow = 4 * n * (2 * (n + 1) + max(Fraction(1), Fraction(float(shifted.max())))) * _ETA
    return Fraction(shift) - delta - g / (1 - g) * trace - underflow


# ---------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True)
class CertifiedLambdaMin(JsonResult):
    r"""Result of :func:`certify_lambda_min`. Immutable; :meth:`to_dict` is JSON-serialisable.

    **Fields:**

    - ``lower_bound``: $s$ with $\lambda_{\min}(K^\infty)\ge s$ for every symmetric $K^\infty$ within
      ``entry_radius`` of the given matrix entrywise (a float rounded down; may be $\le 0$).
    - ``positive_definite``: ``lower_bound > 0`` (positive definiteness is proved).
    - ``certificate``: ``"rigorous"`` or ``"a-posteriori discretisation estimate"`` (what ``entry_radius`` is).
    - ``entry_radius``: $r$ used (including the rounding of a symmetrisation, if any).
    - ``lambda_estimate``: the floating-point $\hat\lambda_{\min}$ of the given matrix.
    - ``shift``: the $t$ whose verified Cholesky succeeded; ``attempts``: factorisations tried.
    - ``rounding_bound``: $t-\lambda$ bound of the Cholesky test (the part lost to rounding);
      ``perturbation_bound``: $N r$ (Weyl).
    - ``n``: the matrix size; ``seconds``: time taken; ``reason``: why positive definiteness is not
      proved (``None`` when it is).
    """

    lower_bound: float
    positive_definite: bool
    certificate: str
    entry_radius: float
    lambda_estimate: float
    shift: float
    attempts: int
    rounding_bound: float
    perturbation_bound: float
    n: int
    seconds: float
    reason: str | None = None

    def __str__(self) -> str:
        s = (f"lambda_min >= {self.lower_bound:.6e} ({self.certificate}; entry radius {self.entry_radius:.3e}, "
             f"float lambda_min {self.lambda_estimate:.6e})")
        return s if self.reason is None else f"{s}: {self.reason}"


def _square_matrix(K) -> np.ndarray:
    if np.ndim(K) != 2:
        raise KernelcalcInputError(f"K must be a real square matrix, got shape {np.shape(K)}")
    A = as_inputs(K, "K")                      # float64, finite, non-empty
    if A.shape[0] != A.shape[1]:
        raise KernelcalcInputError(f"K must be a real square matrix, got shape {A.shape}")
    return A


@float64
def certify_lambda_min(K, entry_radius: float = 0.0, *, radius_kind: str = "rigorous",
                       lambda_estimate: float | None = None) -> CertifiedLambdaMin:
    r"""A proven lower bound on $\lambda_{\min}$ of every symmetric matrix within ``entry_radius`` of ``K``.

    Verified Cholesky of $K-tI$ (Rump 2006) with rigorous rounding-error bounds, then Weyl's
    inequality $\lambda_{\min}(K^\infty)\ge\lambda_{\min}(K)-N r$ (see :mod:`kernelcalc.studies.certify`).

    **Arguments:**

    - ``K``: real square matrix (finite).  It must be symmetric up to ``entry_radius``
      ($\max|K-K^T|/2\le r$); an asymmetric one is symmetrised and its rounding added to $r$.
    - ``entry_radius``: $r\ge0$ with $|K^\infty_{ij}-K_{ij}|\le r$ for the matrix $K^\infty$ of interest
      (0: the matrix as stored).
    - ``radius_kind``: ``"rigorous"`` ($r$ is a proven bound) or ``"estimate"`` ($r$ is an
      a-posteriori error estimate): only the label of the certificate.
    - ``lambda_estimate``: a floating-point $\lambda_{\min}(K)$ already at hand (saves one ``eigvalsh``);
      a wrong value costs retries, never validity.

    **Returns:** :class:`CertifiedLambdaMin`; ``lower_bound`` is $\le 0$ when positive definiteness
    cannot be proved (``reason`` says why).
    """
    t0 = time.perf_counter()
    A = _square_matrix(K)
    r = Fraction(nonnegative("entry_radius", entry_radius))
    if not isinstance(radius_kind, str) or radius_kind not in _KINDS:
        raise KernelcalcInputError(f"radius_kind must be 'rigorous' or 'estimate', got {radius_kind!r}")
    if lambda_estimate is not None:
        lambda_estimate = float(lambda_estimate)
        if not math.isfinite(lambda_estimate):
            raise KernelcalcInputError(f"lambda_estimate must be finite, got {lambda_estimate!r}")
    n = A.shape[0]
    asym = float(np.max(np.abs(A - A.T))) / 2
    if asym > 0:
        if Fraction(asym) > r:
            raise KernelcalcInputError(
                f"K is not symmetric: max |K - K^T|/2 = {asym:.3e} exceeds entry_radius = {float(r):.3e}; pass a "
                "symmetric matrix, or an entry radius that covers the asymmetry")
        A = 0.5 * (A + A.T)     # one rounding per entry: |error| <= u |fl(x)| / (1 - u) (+ eta if subnormal)
        r += _U / (1 - _U) * Fraction(float(np.max(np.abs(A)))) + _ETA
    if lambda_estimate is None:
        from scipy.linalg import eigvalsh

        lambda_estimate = float(eigvalsh(A, subset_by_index=[0, 0], driver="evr")[0])
    # margin: twice the Cholesky rounding term, plus the eigensolver's backward error
    g = _gamma(n + 3)
    scale = float(np.max(np.sum(np.abs(A), axis=1)))
    rounding = float(g / (1 - g)) * float(np.sum(np.abs(np.diag(A)))) + n * 2.0**-53 * scale
    margin = 2.0 * rounding + 1e-300
    bound, shift, attempts = None, lambda_estimate, 0
    while bound is None and attempts < _MAX_ATTEMPTS:
        # first lambda_hat - margin; after a failure the smaller of lambda_hat / 2^k and lambda_hat - 8^k margin
        shift = lambda_estimate - margin * 8.0**attempts
        if lambda_estimate > 0 and attempts:
            shift = min(shift, lambda_estimate * 0.5**attempts)
        attempts += 1
        bound = verified_cholesky_bound(A, shift)
    perturbation = n * r
    if bound is None:   # pragma: no cover - the shifted matrix is diagonally dominant long before
        lower, rounding_bound = -math.inf, math.inf
        reason = f"the floating-point Cholesky factorisation failed for every shift down to {shift:.3e}"
    else:
        lower = _down(bound - perturbation)
        rounding_bound = _up(Fraction(shift) - bound)
        reason = None
        if not lower > 0:
            reason = (f"positive definiteness is not proved: lambda_min(K) >= {_down(bound):.3e} (float estimate "
                      f"{lambda_estimate:.3e}, rounding bound {rounding_bound:.1e}) minus N*r = {_up(perturbation):.3e}")
    return CertifiedLambdaMin(
        lower_bound=lower, positive_definite=bool(lower > 0), certificate=_KINDS[radius_kind],
        entry_radius=_up(r), lambda_estimate=lambda_estimate, shift=float(shift), attempts=attempts,
        rounding_bound=rounding_bound, perturbation_bound=_up(perturbation), n=n,
        seconds=time.perf_counter() - t0, reason=reason)


# ---------------------------------------------------------------------------- interval-arithmetic kernels
@float64
@scale_keywords()
def rigorous_kernel(X, *, model: str, activation, prec: int = 128, **params) -> Kernel:
    r"""NNGP and NTK Gram of a closed-form kernel in interval arithmetic (python-flint ``arb``).

    The data's float64 entries are converted to arb exactly and every operation is enclosed, so the
    exact kernel of the float64 data lies within ``info["ntk_radius"]`` (resp. ``"nngp_radius"``)
    of the returned float64 midpoints, entrywise, *provably*.

    **Arguments:**

    - ``X``: data ``(N, d)``; ``model``: ``"mlp"`` or ``"node"``.
    - ``activation``: for ``"mlp"``: relu, leaky_relu or erf (neural-tangents ``stax`` NTK
      parameterisation, as :func:`kernelcalc.mlp_kernel`; ``params``: ``depth``, ``sigma_w``,
      ``sigma_b``, ``sigma_v``, ``sigma_vb``).  For ``"node"``: identity, where
      $K_{\rm NTK}=\sigma_u^2\sigma_v^2\,[2I_0(2\sigma_wT)+\sigma_wT\,I_1(2\sigma_wT)]\,x\cdot y/d$ and
      $K_{\rm NNGP}=\sigma_u^2\sigma_v^2I_0(2\sigma_wT)\,x\cdot y/d$ ($S=\sigma_u^2\frac{x\cdot y}dI_0(2\sigma_w\sqrt{ts})$,
      $\Lambda=\sigma_v^2I_0(2\sigma_w\sqrt{(T-t)(T-s)})$, and the series of
      $\sigma_w^2\iint I_0I_0$ sums to $\sigma_wTI_1(2\sigma_wT)$); ``params``: ``T``, ``sigma_w``,
      ``sigma_u``, ``sigma_v``.
    - ``prec``: working precision in bits.

    **Returns:** :class:`~kernelcalc.Kernel` (midpoints) with ``info``: ``ntk_radius``,
    ``nngp_radius``, ``error_estimate`` (their max; proven bounds), ``certificate="rigorous"``.
    """
    flint = _flint()
    t0 = time.perf_counter()
    X = as_inputs(X, "X")
    act = resolve_activation(activation)
    prec = positive_int("prec", prec, minimum=53)
    (nngp, ntk), used = interval_grams(X, model, act, prec, params, flint)
    info = dict(ntk_radius=_up(ntk.radius), nngp_radius=_up(nngp.radius), certificate=RIGOROUS, prec=prec,
                method="arb interval arithmetic", seconds=time.perf_counter() - t0)
    info["error_estimate"] = max(info["ntk_radius"], info["nngp_radius"])
    return Kernel(nngp=nngp.mid, ntk=ntk.mid, model=model, activation=act.name, params=used, info=info)


# ---------------------------------------------------------------------------- kernels -> certificate
@float64
@scale_keywords()
def certify_ntk(X, *, model: str = "node", activation, kernel: Kernel | None = None,
                lambda_estimate: float | None = None, **params) -> CertifiedLambdaMin:
    r"""Certified lower bound on $\lambda_{\min}$ of the limiting NTK Gram $\Theta^\infty(X, X)$.

    Closed-form kernels (relu / leaky-relu / erf MLP, identity Neural ODE) are computed in interval
    arithmetic by :func:`rigorous_kernel`: certificate ``"rigorous"``.  Every other kernel is computed
    in floating point (:func:`~kernelcalc.node_kernel`, :func:`~kernelcalc.mlp_kernel`,
    :func:`~kernelcalc.resnet_kernel`) and certified with $r$ = ``info["error_estimate"]``:
    certificate ``"a-posteriori discretisation estimate"``.

    **Arguments:** ``X`` (N, d); ``model``: every model with a kernel function, ``"node"``, ``"mlp"``,
    ``"resnet"``, ``"deq"`` (the untied networks: ``weights="untied"``); ``activation``;
    ``kernel``: an already computed floating-point :class:`~kernelcalc.Kernel` of ``X`` for the
    a-posteriori path (not recomputed); ``lambda_estimate``: see :func:`certify_lambda_min`;
    ``params``: the model's parameters (as for its kernel function; its scales: ``docs/naming.md``).

    **Returns:** :class:`CertifiedLambdaMin`.
    """
    from .. import kernels

    act = resolve_activation(activation)
    fn = kernels.kernel_function(model, params, where="certify_ntk")
    if rigorous_available(model, act) and params.get("weights", "tied") == "tied":
        K = rigorous_kernel(X, model=model, activation=act, **params)
        return certify_lambda_min(K.ntk, K.info["ntk_radius"], radius_kind="rigorous", lambda_estimate=lambda_estimate)
    if kernel is None:
        kernel = fn(X, activation=act, **params)
    r = kernel.info.get("error_estimate")
    if r is None:
        raise KernelcalcInputError(f"the {model} kernel carries no info['error_estimate']: nothing to certify against")
    return certify_lambda_min(kernel.ntk, r, radius_kind="estimate", lambda_estimate=lambda_estimate)
