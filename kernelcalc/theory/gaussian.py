r"""Bivariate Gaussian expectations $E[f(a)g(b)]$, $(a,b)\sim N(0, [[q_1, c],[c, q_2]])$.

Three rules behind one front door, :func:`dual_kernels` (for $C=E[\phi\phi]$ and
$\dot C = E[\phi'\phi']$) and :func:`gaussian_expectation` (any pair $f, g$):

- **closed forms** (:mod:`kernelcalc.theory.duals`): relu/step arc-cosine, leaky relu, erf
  arcsin, gelu, sin/cos, every polynomial (Isserlis);
- **Cartesian trapezoid** for smooth activations. With $a=\sqrt{q_1}z_1$,
  $b=\sqrt{q_2}(r z_1+\sqrt{1-r^2}\,z_2)$, $r=c/\sqrt{q_1q_2}$,
  $E[f(a)g(b)] = \sum_{i,j} w_i w_j f(a_i)g(b_{ij})$ on the grid $z=kh$, $|z|\le 9$,
  $w_k = h\,e^{-z_k^2/2}/\sqrt{2\pi}$. For integrands analytic in the strip
  $|\mathrm{Im}\,z| < \delta$ the error is $O(e^{-2\pi\delta/h})$; Gauss–Hermite of the same
  size converges far slower (see shared/NUMERICS.md). The step $h$ is chosen by
  :func:`choose_step`: halve until the 1-D moments $E[f(\sqrt{q_{\max}}z)^2]$ of $\phi$ and
  $\phi'$ agree with the next halving to ``tol``;
- **polar-sector Gauss–Legendre** for activations with kinks at 0 and no closed form
  (elu with $\alpha\ne1$, user ``Max``/``Abs``/``Piecewise``): in polar coordinates
  $(z_1,z_2)=R(\cos\alpha,\sin\alpha)$ the kink lines $a=0$, $b=0$ are rays, so each of the
  four angular sectors has a smooth integrand; Gauss–Legendre in angle and in $R\in[0,10]$.

and **mpmath** (:func:`expect_mpmath`), a slow nested adaptive quadrature at arbitrary
precision (split at the kinks) used as the reference in the tests.

All numeric rules are jax functions (float64) that broadcast over arrays of covariances; the closed
forms and the Hermite series also run in numpy (``xp=numpy``), for small problems where compiling does not pay.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import mpmath as mp
import numpy as np
import sympy as sp

from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from .._validation import accuracy_shortfall
from .activations import Activation, ActivationError, X, array_functions, resolve_activation
from .duals import NUMPY_OPS, closed_form_dual
from .largeq import asymptote_of
from .largeq_table import choose_tabulated

__all__ = [
    "TrapezoidRule", "PolarSectorRule", "HermiteRule", "hermite_order", "choose_step", "dual_kernels", "DualKernels",
    "gaussian_expectation", "expect_mpmath", "DEFAULT_TOL", "MEMORY_BUDGET", "hermite_q_limit", "choose_polar",
    "Gathered", "fourier_dual_kernels",
]

#: Target relative accuracy of every Gaussian expectation.
DEFAULT_TOL = 1e-13
_ZMAX = 9.0
_CHUNK = 2048  # covariances per vectorised block at most
#: Bytes of work arrays one vectorised block of a quadrature rule may allocate.
MEMORY_BUDGET = 256 * 2**20


def _correlation(q1, q2, c, xp=jnp):
    r"""$r = c/\sqrt{q_1q_2}$ clipped to $[-1, 1]$ and $\sqrt{1-r^2}$; $r = 0$ when a variance is 0
    (a zero input row or a zero weight scale: that variable is the constant 0, independent of the other).
    ``xp``: the array module (jax.numpy, or numpy)."""
    n = xp.sqrt(q1 * q2)
    positive = n > 0
    r = xp.where(positive, xp.clip(c / xp.where(positive, n, 1.0), -1.0, 1.0), 0.0)
    return r, xp.sqrt(xp.maximum(1.0 - r * r, 0.0))


def _block_size(points: int) -> int:
    """Covariances per block so that a block's work arrays (``points`` float64 quadrature values per
    covariance, a few arrays of them) stay within :data:`MEMORY_BUDGET`."""
    return int(max(1, min(_CHUNK, MEMORY_BUDGET // (4 * 8 * max(points, 1)))))


def _blocked(fn: Callable, q1, q2, c, points: int = 1):
    """Apply ``fn(q1, q2, c) -> tuple`` over flattened covariances in blocks sized by :func:`_block_size`."""
    q1, q2, c = jnp.broadcast_arrays(jnp.asarray(q1, jnp.float64), jnp.asarray(q2, jnp.float64),
                                     jnp.asarray(c, jnp.float64))
    shape = q1.shape
    n = int(np.prod(shape)) if shape else 1
    flat = [a.reshape(-1) for a in (q1, q2, c)]
    chunk = _block_size(points)
    if n <= chunk:
        out = fn(*flat)
    else:
        pad = (-n) % chunk
        blocks = [jnp.concatenate([a, jnp.ones(pad)]).reshape(-1, chunk) for a in flat]
        out = jax.lax.map(lambda t: fn(*t), tuple(blocks))
        out = tuple(o.reshape(-1)[:n] for o in out)
    return tuple(o.reshape(shape) for o in out)


@dataclasses.dataclass(frozen=True)
class TrapezoidRule:
    r"""Product trapezoid rule in Cholesky coordinates for smooth $f, g$ (see module doc)."""

    step: float
    zmax: float = _ZMAX

    @functools.cached_property
    def nodes_weights(self) -> tuple[np.ndarray, np.ndarray]:
        k = int(math.floor(self.zmax / self.step))
        z = self.step * np.arange(-k, k + 1, dtype=np.float64)
        return z, self.step * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    @float64
    def expect_pairs(self, pairs: tuple[tuple[Callable, Callable], ...], q1, q2, c):
        """$(E[f_k(a) g_k(b)])_k$ for several $(f_k, g_k)$ sharing the grid; broadcasts."""
        z, w = (jnp.asarray(v) for v in self.nodes_weights)

        def block(q1, q2, c):
            r, s = _correlation(q1, q2, c)
            a = jnp.sqrt(q1)[:, None] * z[None, :]                                    # (B, n)
            b = jnp.sqrt(q2)[:, None, None] * (r[:, None, None] * z[None, :, None]
                                               + s[:, None, None] * z[None, None, :])  # (B, n, n)
            return tuple(jnp.einsum("i,bi,bij,j->b", w, f(a), g(b), w) for f, g in pairs)

        return _blocked(block, q1, q2, c, points=self.points)

    @property
    def points(self) -> int:
        """Integrand evaluations per covariance."""
        return int(2 * math.floor(self.zmax / self.step) + 1) ** 2


def _gauss_legendre(n: int, lo: float, hi: float):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (hi - lo) * x + 0.5 * (hi + lo), 0.5 * (hi - lo) * w


@dataclasses.dataclass(frozen=True)
class PolarSectorRule:
    r"""Gauss–Legendre on the four angular sectors cut by the kink rays $a=0$, $b=0$.

    $E[f(a)g(b)] = \frac1{2\pi}\int_0^{2\pi}\!\!\int_0^{R_{\max}} f(\sqrt{q_1}R\cos\alpha)\,
    g(\sqrt{q_2}R\cos(\alpha-\beta))\,e^{-R^2/2}R\,dR\,d\alpha$, $\beta=\arccos r$.
    Exact up to rounding for piecewise-linear $f, g$; geometric convergence for piecewise-analytic.
    """

    n_angle: int = 48
    n_radius: int = 64
    rmax: float = 10.0

    @float64
    def expect_pairs(self, pairs, q1, q2, c):
        ua, wa = (jnp.asarray(v) for v in _gauss_legendre(self.n_angle, 0.0, 1.0))
        R, wR = (jnp.asarray(v) for v in _gauss_legendre(self.n_radius, 0.0, self.rmax))
        wR = wR * R * jnp.exp(-0.5 * R * R) / (2 * jnp.pi)

        def block(q1, q2, c):
            r, _ = _correlation(q1, q2, c)
            beta = jnp.arccos(r)
            cuts = jnp.sort(jnp.stack([jnp.full_like(beta, 0.5 * jnp.pi), jnp.full_like(beta, 1.5 * jnp.pi),
                                       jnp.mod(beta + 0.5 * jnp.pi, 2 * jnp.pi),
                                       jnp.mod(beta + 1.5 * jnp.pi, 2 * jnp.pi)], axis=1), axis=1)
            lo = cuts
            hi = jnp.concatenate([cuts[:, 1:], cuts[:, :1] + 2 * jnp.pi], axis=1)          # (B, 4)
            alpha = lo[:, :, None] + (hi - lo)[:, :, None] * ua[None, None, :]            # (B, 4, na)
            walpha = (hi - lo)[:, :, None] * wa[None, None, :]
            a = jnp.sqrt(q1)[:, None, None, None] * jnp.cos(alpha)[..., None] * R          # (B, 4, na, nR)
            b = jnp.sqrt(q2)[:, None, None, None] * jnp.cos(alpha - beta[:, None, None])[..., None] * R
            return tuple(jnp.einsum("bsa,bsar,r->b", walpha, f(a) * g(b), wR) for f, g in pairs)

        return _blocked(block, q1, q2, c, points=self.points)

    @property
    def points(self) -> int:
        """Integrand evaluations per covariance."""
        return 4 * self.n_angle * self.n_radius


_HERMITE_H, _HERMITE_ZMAX, _HERMITE_KMAX = 0.02, 14.0, 8192


@functools.lru_cache(maxsize=8)
def _hermite_functions(K: int, h: float = _HERMITE_H, zmax: float = _HERMITE_ZMAX):
    r"""Grid $z$, weights $h e^{-z^2/4}/\sqrt{2\pi}$ and $\psi_k(z)e^{-z^2/4}$, $\psi_k=He_k/\sqrt{k!}$, $k<K$."""
    n = int(round(zmax / h))
    z = h * np.arange(-n, n + 1, dtype=np.float64)
    half = np.exp(-0.25 * z * z)
    psi = np.empty((K, z.size))
    prev, cur = np.zeros_like(z), half.copy()
    for k in range(K):
        psi[k] = cur
        prev, cur = cur, (z * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
    return z, h * half / math.sqrt(2 * math.pi), psi


def _hermite_step(K: int) -> float:
    r"""Trapezoid step of the Hermite coefficients of a $K$-term series: the integrand $f(\sqrt q z)\,He_k(z)
    e^{-z^2/2}$ oscillates at frequency up to about $\sqrt K$ (plus the bandwidth of $f$), so
    $h=\pi/(1.6(\sqrt K+16))$, between 0.02 (``_HERMITE_H``, the step at $K=8192$) and 0.04.  Measured against
    $h=0.02$ for tanh, softplus, sin, gelu, silu and sigmoid, $K=256..6000$, $q=0.5..30$: at most
    $8.5\cdot10^{-16}$ of $\sqrt{\sum_k\hat f_k^2}$; the coefficients cost $1/h$ (up to half the work)."""
    return max(_HERMITE_H, min(0.04, math.pi / (1.6 * (math.sqrt(K) + 16.0))))


_GEMM_ONE_THREAD = 1 << 18   # OpenBLAS runs a matrix product of at most m*n*k = 2^18 multiply-adds on one thread


def _one_blas_thread():
    """A context in which BLAS runs on one thread (``threadpoolctl``; a null context without it).  Entering it
    scans the loaded libraries (~2 ms): one context around many products, not one per product."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib
        return contextlib.nullcontext(False)
    return threadpool_limits(limits=1, user_api="blas")


def _single_thread_product(a: np.ndarray, b: np.ndarray, limited: bool = False) -> np.ndarray:
    r"""``a @ b.T`` (numpy, 2-D) as blocks of at most $2^{18}$ multiply-adds, each of which OpenBLAS runs on
    the calling thread.  The numpy Hermite coefficients of a small solve are a product of a few million
    multiply-adds; on several BLAS threads it is no faster, and on a busy machine waking them costs up to
    100x the product (measured: 27 ms instead of 0.3 ms).  The blocks also make the result independent of
    the BLAS thread setting (the same in every thread: dask tiles equal local ones bit for bit).  A larger
    product (the coefficients of many variances: the self-kernels of many norms) runs as one product
    with BLAS limited to one thread (``threadpoolctl``; measured 0.08 s against 0.55 s in blocks, whose
    shapes degenerate into matrix-vector products, for 832 variances x 560 terms)."""
    m, k = a.shape
    n = b.shape[0]
    if m * n * k <= _GEMM_ONE_THREAD or limited:     # (limited: the caller holds BLAS to one thread)
        return a @ b.T
    try:       # one product on one BLAS thread: ~7x faster than the blocks (which degenerate into GEMVs)
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        pass
    else:
        with threadpool_limits(limits=1, user_api="blas"):
            return a @ b.T
    rows = max(1, min(m, _GEMM_ONE_THREAD // k))
    cols = max(1, _GEMM_ONE_THREAD // (rows * k))
    out = np.empty((m, n))
    for r0 in range(0, m, rows):
        for c0 in range(0, n, cols):
            out[r0:r0 + rows, c0:c0 + cols] = a[r0:r0 + rows] @ b[c0:c0 + cols].T
    return out


@dataclasses.dataclass(frozen=True)
class HermiteRule:
    r"""Mehler expansion: $E[f(a)g(b)] = \sum_{k<K} \hat f_k(q_1)\hat g_k(q_2)\,r^k$, $r=c/\sqrt{q_1q_2}$.

    $\hat f_k(q) = E[f(\sqrt q z)He_k(z)]/\sqrt{k!}$ (normalised Hermite coefficients, by the
    trapezoid rule with $h=0.02$ on $|z|\le14$).  By Cauchy–Schwarz the truncation error is
    at most $\sqrt{\sum_{k\ge K}\hat f_k^2\sum_{k\ge K}\hat g_k^2}$ for every $|r|\le1$;
    $K$ is chosen so this is below ``tol`` relative to $\sqrt{E f^2 E g^2}$ at $q_{\max}$
    (Parseval, $\sum_k\hat f_k^2=E[f^2]$, is checked at the same time).  The coefficients
    depend on the marginal variances only, so for fixed marginals (the cross-kernels of the
    ODE/ResNet/MLP recursions) each evaluation costs $K$ multiply-adds.

    **Truncation by correlation.**  Where $|r|\le\bar r<1$ far fewer terms are needed: for
    $k_0\le K$, $\big|\sum_{k_0\le k<K}\hat f_k\hat g_k r^k\big|\le\bar r^{k_0}
    \sqrt{\tau_f(k_0)\tau_g(k_0)}\sqrt{Ef^2\,Eg^2}$ (Cauchy–Schwarz) with the relative tails
    $\tau_f(k_0)=\sum_{k\ge k_0}\hat f_k^2/\sum_k\hat f_k^2$.  Given ``tails``, :meth:`series`
    truncates per *problem* (an index of the leading axis of $r$, e.g. one input pair and its
    $n\times n$ time cells): $k_0$ is the smallest with this bound below ``tol``, for $\bar r$ and
    $\tau$ the largest over the problem's cells, so the result meets the full series' accuracy and
    depends on the problem alone (not on the others evaluated with it: bit for bit the same in any
    batch).  The loop runs to the largest $k_0$ of the batch, so batches of similar correlation gain most.
    """

    K: int
    tol: float = DEFAULT_TOL

    @float64
    def coefficients(self, f: Callable, q, xp=jnp):
        r"""$(\hat f_k(q))_{k<K}$ with the $k$ axis first: shape ``(K, *q.shape)`` (``xp``: jax.numpy or numpy)."""
        z, w, psi = (xp.asarray(v) for v in _hermite_functions(self.K, _hermite_step(self.K)))
        q = xp.asarray(q, xp.float64)
        F = f(xp.sqrt(q)[..., None] * z) * w                           # (*q.shape, n_z)
        if xp is np:
            return np.moveaxis(_single_thread_product(F.reshape(-1, z.size), psi).reshape(F.shape[:-1] + (-1,)), -1, 0)
        return xp.moveaxis(F @ psi.T, -1, 0)

    @staticmethod
    def relative_tail(b, xp=jnp):
        r"""$\tau(k)=\sum_{j\ge k}b_j^2/\sum_j b_j^2$ of coefficients ``b`` of shape ``(K, P, ...)``: the
        largest over the axes after the second, shape ``(K, P)`` (0 where the coefficients all vanish)."""
        sq = (b * b).reshape(b.shape[0], b.shape[1], -1)
        tail = xp.flip(xp.cumsum(xp.flip(sq, 0), axis=0), 0)
        total = tail[:1]
        rel = xp.where(total > 0, tail / xp.where(total > 0, total, 1.0), 0.0)
        return xp.max(rel, axis=2)

    @staticmethod
    def terms(tail_f, tail_g, r, tol, xp=jnp):
        r"""Terms $k_0$ per problem (class doc), shape ``(P,)``: the smallest $k_0$ with
        $\bar r^{k_0}\sqrt{\tau_f(k_0)\tau_g(k_0)}\le$ ``tol``, $\bar r$ the largest $|r|$ of the problem
        (``r``: shape ``(P, ...)``); $K$ when there is none.  ``tail_f``, ``tail_g``: ``(K, P)``."""
        K = tail_f.shape[0]
        rbar = xp.max(xp.abs(r).reshape(r.shape[0], -1), axis=1)                 # (P,)
        k = xp.arange(K)[:, None]
        power = xp.where(rbar[None, :] > 0, rbar[None, :] ** k, (k == 0).astype(xp.float64))
        ok = power * xp.sqrt(tail_f * tail_g) <= tol                             # (K, P)
        return xp.where(xp.any(ok, axis=0), xp.argmax(ok, axis=0), K)

    @classmethod
    def series(cls, bf, bg, r, xp=jnp, tol=None, tails=None):
        r"""$\sum_k bf_k\,bg_k\,r^k$ by Horner (k axis first in ``bf``, ``bg``; ``xp``: jax.numpy or numpy).

        With ``tol`` and ``tails`` = ``(tail_f, tail_g)`` (:meth:`relative_tail` per problem, ``(K, P)``,
        P the leading axis of ``r``; ``bf``, ``bg`` then have shape ``(K, P, ...)`` or broadcast to it),
        truncated per problem by correlation (class doc); else all $K$ terms."""
        K = bf.shape[0]
        if xp is np and tol is not None and tails is not None:
            return _truncated_horner(bf, bg, r, _terms_numpy(tails[0], tails[1], r, tol))
        acc = xp.zeros(xp.broadcast_shapes(bf.shape[1:], bg.shape[1:], xp.shape(r)))
        if tol is None or tails is None:
            k_max = K
        else:
            k0 = cls.terms(tails[0], tails[1], r, tol, xp)                           # (P,)
            k_max = xp.max(k0)
            # a problem's terms k >= k0 vanish exactly (0 * finite), so each problem sums its own k0 terms
            keep = (xp.arange(K)[:, None] < k0[None, :]).reshape((K, k0.shape[0]) + (1,) * (bf.ndim - 2))
            bf = xp.where(keep, bf, 0.0)
        if xp is np:
            term = np.empty_like(acc)
            for k in range(int(k_max) - 1, -1, -1):
                acc *= r
                acc += np.multiply(bf[k], bg[k], out=term)
            return acc
        return jax.lax.fori_loop(K - k_max, K, lambda i, acc: acc * r + bf[K - 1 - i] * bg[K - 1 - i], acc)

    @float64
    def expect_pairs(self, pairs, q1, q2, c):
        q1, q2, c = (jnp.asarray(v, jnp.float64) for v in (q1, q2, c))
        r, _ = _correlation(q1, q2, c)
        return tuple(self.series(self.coefficients(f, q1), self.coefficients(g, q2), r, tol=self.tol) for f, g in pairs)



# Per-variance series lengths (numpy Hermite rule).  Variances are binned in log2 q by half octaves; a bin's
# length is the one its upper edge needs.
_LENGTH_BINS_PER_OCTAVE = 2
_LENGTH_Q_FLOOR = 2.0 ** -20


@functools.lru_cache(maxsize=256)
def _bin_tail(f: Callable, K: int, tol: float, j: int) -> tuple[np.ndarray, int]:
    r"""The relative tail $	au(L) = \sum_{S>k\ge L}\hat f_k(q_j)^2/\sum_{k<S}\hat f_k(q_j)^2$ of the variance
    bin $j$ (upper edge $q_j = 2^{j/2}$; coefficients of the rule itself, at its step) and the series length
    for ``tol``: the smallest multiple of 16 with $	au(L)\le$ ``tol``$^2$, the criterion by which
    :func:`hermite_order` chose $K$ at $q_{\max}$.  The span $S$ of coefficients computed doubles from 128
    up to $K$ until $L\le 3S/4$: a length is trusted where the coefficients were seen to stay below the
    bound over a quarter of the span beyond it (else, at $S = K$, near or past $q_{\max}$, the full $K$)."""
    q = np.array([2.0 ** (j / _LENGTH_BINS_PER_OCTAVE)])
    z, w, psi = _hermite_functions(K, _hermite_step(K))
    F = f(np.sqrt(q)[:, None] * z) * w
    span = min(K, 128)
    while True:
        b = _single_thread_product(F, psi[:span])[0]
        sq = b * b
        total = float(np.sum(sq))
        if total == 0.0:
            return np.zeros(span), 16
        tail = np.cumsum(sq[::-1])[::-1] / total
        L = _length_from_tail(tail, tol, span)
        if L is not None:
            return tail, L
        if span >= K:
            return tail, K
        span = min(K, 2 * span)


def _length_from_tail(tail: np.ndarray, tol: float, span: int) -> int | None:
    """The trusted length of :func:`_bin_tail` from a tail over ``span`` terms (``None``: not trusted)."""
    ok = np.nonzero(tail <= tol**2)[0]
    if ok.size:
        L = max(16, math.ceil(int(ok[0]) / 16.0) * 16)
        if L <= 0.75 * span:
            return int(L)
    return None


@functools.lru_cache(maxsize=1024)
def _bin_length(f: Callable, K: int, tol: float, j: int, rule_tol: float) -> int:
    """The series length of bin ``j`` for ``tol`` >= ``rule_tol`` (:func:`_bin_tail`, computed once at the
    rule's tolerance: a looser one reads a shorter length off the same tail)."""
    tail, L = _bin_tail(f, K, rule_tol, j)
    if tol <= rule_tol:
        return L
    if L >= K and tail.size < K:      # pragma: no cover (the span reached K)
        return K
    short = _length_from_tail(tail, tol, tail.size)
    return min(L, short) if short is not None else L


@functools.lru_cache(maxsize=64)
def _numpy_functions(activation: Activation) -> tuple[Callable, Callable]:
    """``array_functions(activation, "numpy")``, one pair of function objects per activation (the keys of the
    per-bin caches above: :func:`array_functions` builds some afresh at every call)."""
    return array_functions(activation, "numpy")


def series_lengths(f: Callable, q, K: int, tol: float, rule_tol: float | None = None) -> np.ndarray:
    r"""Per-variance Hermite series lengths $L(q)\le K$ (integers, the shape of ``q``): $\hat f_k(q)$ for
    $k\ge L(q)$ may be dropped with the same tail bound $\sum_{k\ge L}\hat f_k^2\le\mathrm{tol}^2\,E f^2$ that
    $K$ met at $q_{\max}$ (:func:`hermite_order`).  The variances are binned by half octaves in $\log_2 q$
    and a bin takes the length of its upper edge $2^{j/2}$ (:func:`_bin_length`: the coefficients of one
    variance, cached per activation, $K$ and bin), under the assumption :class:`HermiteRule` already makes
    for all $q\le q_{\max}$: the relative tail grows with $q$.  The length depends on $q$ alone (not on the
    batch), so results stay independent of batching."""
    q = np.asarray(q, np.float64)
    finite = np.isfinite(q)
    with np.errstate(invalid="ignore"):
        j = np.ceil(np.log2(np.maximum(np.where(finite, q, 1.0), _LENGTH_Q_FLOOR)) * _LENGTH_BINS_PER_OCTAVE)
    bins, inverse = np.unique(j.astype(np.int64), return_inverse=True)
    rule_tol = tol if rule_tol is None else min(tol, rule_tol)
    lengths = np.array([_bin_length(f, K, tol, int(b), rule_tol) for b in bins], dtype=np.int64)
    return np.where(finite, lengths[inverse].reshape(q.shape), K)      # (a non-finite variance: all K terms)


def short_coefficients(rule: "HermiteRule", f: Callable, q, tol: float | None = None) -> np.ndarray:
    r""":meth:`HermiteRule.coefficients` in numpy, shape ``(K, *q.shape)``, with the terms $k\ge L(q)$ of each
    variance (:func:`series_lengths`) set to zero and never computed: the variances of one length share one
    product with the first $L$ rows of the rule's Hermite functions, so the coefficients of a small variance
    cost $L(q)/K$ of the full series (the kept terms are the full series' own, to rounding).  ``tol``: the
    lengths' tolerance (never below the rule's, its default)."""
    q = np.asarray(q, np.float64)
    flat = q.reshape(-1)
    L = series_lengths(f, flat, rule.K, rule.tol if tol is None else max(tol, rule.tol), rule.tol)
    z, w, psi = _hermite_functions(rule.K, _hermite_step(rule.K))
    out = np.zeros((rule.K, flat.size))
    with _one_blas_thread() as held:
        for length in np.unique(L):
            sel = np.nonzero(L == length)[0]
            F = f(np.sqrt(flat[sel])[:, None] * z) * w
            out[:length, sel] = _single_thread_product(F, psi[:length], limited=bool(held)).T
    return out.reshape((rule.K,) + q.shape)


def short_relative_tail(b: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    r""":meth:`HermiteRule.relative_tail` (numpy) of coefficients ``b`` ``(K, P, ...)`` whose terms at and beyond
    ``lengths`` ``(P, ...)`` vanish (:func:`short_coefficients`): the cumulative sums run over each problem's
    longest length only (zero beyond it, as the full sums are)."""
    K, P = b.shape[0], b.shape[1]
    per_problem = np.asarray(lengths).reshape(P, -1).max(axis=1)
    out = np.zeros((K, P))
    for length in np.unique(per_problem):
        sel = np.nonzero(per_problem == length)[0]
        out[:length, sel] = HermiteRule.relative_tail(b[:length, sel], np)
    return out


class Gathered:
    r"""Hermite coefficients ``a`` $(K, U, \dots)$ of $U$ distinct marginals, read by problem: acts in
    :meth:`HermiteRule.series` (numpy, truncated by correlation) as ``a[:, index]`` with a unit axis inserted
    at ``axis`` (``None``: none; e.g. ``-1`` gives ``a[:, index][..., None]``) without forming it: only the
    terms below the largest truncation $k_0$ are gathered."""

    def __init__(self, a: np.ndarray, index: np.ndarray, axis: int | None = None):
        self.a, self.index, self.axis = a, np.asarray(index), axis
        rows = (self.index.shape[0],) + a.shape[2:]
        if axis is not None:          # the shape of np.expand_dims(rows, axis)
            at = axis % (len(rows) + 1)
            rows = rows[:at] + (1,) + rows[at:]
        self.shape = (a.shape[0],) + rows
        self.ndim = len(self.shape)

    def terms(self, k_max: int, order=None) -> np.ndarray:
        """The first ``k_max`` terms, problems in ``order`` (all, as indexed, when ``None``)."""
        idx = self.index if order is None else self.index[order]
        out = self.a[:k_max][:, idx]
        return out if self.axis is None else np.expand_dims(out, self.axis)

    def __getitem__(self, k):
        return self.terms(self.shape[0])[k]


def _terms_numpy(tail_f, tail_g, r, tol) -> np.ndarray:
    r""":meth:`HermiteRule.terms` in numpy by bisection: $\bar r^{k}\sqrt{\tau_f(k)\tau_g(k)}$ is nonincreasing
    in $k$ (both factors are, also in floating point), so the smallest $k$ that meets ``tol`` is found from
    $\log_2K$ evaluations per problem instead of $K$ (the same $k_0$)."""
    K, P = tail_f.shape
    rbar = np.max(np.abs(r).reshape(r.shape[0], -1), axis=1)
    rbar = np.broadcast_to(rbar, (P,))
    cols = np.arange(P)
    lo, hi = np.zeros(P, np.intp), np.full(P, K, np.intp)        # k0 in [lo, hi]; hi = K: none meets tol
    while np.any(lo < hi):
        mid = np.minimum((lo + hi) // 2, K - 1)
        with np.errstate(under="ignore"):
            power = np.where(rbar > 0, rbar ** mid, (mid == 0).astype(np.float64))
        good = power * np.sqrt(tail_f[mid, cols] * tail_g[mid, cols]) <= tol
        open_ = lo < hi
        hi = np.where(open_ & good, mid, hi)
        lo = np.where(open_ & ~good, mid + 1, lo)
    return hi


def _truncated_horner(bf, bg, r, k0) -> np.ndarray:
    r"""$\sum_{k<k_{0,p}} bf_k\,bg_k\,r^k$ per problem $p$ (the leading axis of ``r``) by Horner in numpy, each
    problem summing exactly its own $k_{0,p}$ terms (as :meth:`HermiteRule.series` does by zeroing the others,
    so bit for bit the same), without touching coefficients beyond the largest $k_0$: the problems are put
    in decreasing order of $k_0$, and the step of degree $k$ updates the prefix of those with $k_0>k$."""
    shape = np.broadcast_shapes(bf.shape[1:], bg.shape[1:], np.shape(r))
    P = shape[0] if shape else 1
    order = np.argsort(-k0, kind="stable")
    ks = k0[order]
    k_max = int(ks[0]) if ks.size else 0

    def take(a):               # the first k_max terms, problems in order (a factor shared by all: as is)
        if isinstance(a, Gathered):
            return a.terms(k_max, order if P > 1 else None)
        a = a[:k_max]
        if a.ndim - 1 == len(shape) and a.shape[1] == P and P > 1:
            return a[:, order]
        return a

    f, g = take(bf), take(bg)
    rr = np.broadcast_to(r, shape)[order] if P > 1 else np.broadcast_to(r, shape)
    acc, term = np.zeros(shape), np.empty(shape)
    active = np.searchsorted(-ks, -np.arange(k_max), side="left")     # problems with k0 > k
    for k in range(k_max - 1, -1, -1):
        m = int(active[k])
        fk = f[k, :m] if f.ndim - 1 == len(shape) and f.shape[1] == P else f[k]
        gk = g[k, :m] if g.ndim - 1 == len(shape) and g.shape[1] == P else g[k]
        a = acc[:m]
        a *= rr[:m]
        a += np.multiply(fk, gk, out=term[:m])
    if P > 1:
        out = np.empty(shape)
        out[order] = acc
        return out
    return acc


def hermite_order(functions: tuple[Callable, ...], q_max: float, tol: float = DEFAULT_TOL,
                  k_max: int = _HERMITE_KMAX) -> int | None:
    """Smallest $K$ (a multiple of 16) whose Mehler tail is below ``tol`` at ``q_max``; ``None`` if > ``k_max``."""
    z, w, psi = _hermite_functions(k_max)
    worst = 0
    for f in functions:
        vals = np.asarray(f(math.sqrt(max(q_max, 1e-3)) * z))
        b = psi @ (w * vals)
        total = float(np.sum(w * np.exp(-0.25 * z * z) * vals**2))       # E[f^2] (trapezoid)
        if total == 0.0:
            continue
        tail = np.cumsum((b**2)[::-1])[::-1] / total                   # tail[K] = sum_{k>=K} / E f^2
        if abs(float(np.sum(b**2)) - total) > 1e3 * tol * total:       # Parseval fails: not resolved
            return None
        ok = np.nonzero(tail <= tol**2)[0]
        if ok.size == 0:
            return None
        worst = max(worst, int(ok[0]))
    return max(16, int(math.ceil(worst / 16.0)) * 16)


def hermite_q_limit(functions: tuple[Callable, ...], tol: float = DEFAULT_TOL, k_max: int = _HERMITE_KMAX,
                    q_hi: float = 1e8) -> float:
    r"""Largest variance $q$ (to 5 %) at which the Mehler series of ``functions`` still converges to
    ``tol`` within ``k_max`` terms (bisection in $\log q$; $+\infty$ when it does at ``q_hi``)."""
    if hermite_order(functions, q_hi, tol, k_max) is not None:
        return math.inf
    lo, hi = math.log(1e-3), math.log(q_hi)
    if hermite_order(functions, 1e-3, tol, k_max) is None:
        return 0.0
    while hi - lo > 0.05:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if hermite_order(functions, math.exp(mid), tol, k_max) is not None else (lo, mid)
    return math.exp(lo)


def _step_and_error(functions, q_max, tol, h0, h_min):
    """(h, estimated relative error of the 1-D moments at step h, met)."""
    q = max(float(q_max), 1e-3)
    h = h0
    prev = None
    change = math.inf
    while h >= h_min:
        z, w = TrapezoidRule(h).nodes_weights
        vals = np.array([float(np.sum(w * np.asarray(f(np.sqrt(q) * z)) ** 2)) for f in functions])
        if prev is not None:
            change = float(np.max(np.abs(vals - prev) / np.maximum(np.abs(vals), 1e-300)))
            if np.all(np.abs(vals - prev) <= tol * np.maximum(np.abs(vals), 1e-300) + 1e-300):
                return 2 * h, change, True   # the coarser step is already accurate to ~tol (exponential convergence)
        prev = vals
        h /= 2
    return h * 2, change, False


def choose_step(functions: tuple[Callable, ...], q_max: float, tol: float = DEFAULT_TOL,
                h0: float = 0.5, h_min: float = 0.01, strict: bool = False) -> float:
    r"""Trapezoid step $h$ for which $E[f(\sqrt{q}z)^2]$, $q=q_{\max}$, is converged to ``tol``.

    Halves $h$ until two successive values agree to ``tol`` (relative) and returns the coarser
    one: the trapezoid error decays like $e^{-2\pi\delta/h}$, so the difference of the two is
    the error of the coarser step.  When even ``h_min`` does not meet ``tol`` it returns ``h_min``
    and says so (:class:`~kernelcalc.KernelcalcAccuracyWarning`, or the error when ``strict``).
    """
    h, change, met = _step_and_error(functions, q_max, tol, h0, h_min)
    if not met:
        accuracy_shortfall(f"trapezoid rule: step h = {h:g} (the finest allowed) leaves a relative change of "
                           f"{change:.1e} > tol = {tol:.1e} in E[phi(sqrt(q) z)^2] at q = {q_max:.4g}", strict)
    return h


_POLAR_LEVELS = ((8, 16), (12, 24), (16, 32), (24, 40), (32, 56), (48, 64), (64, 96))


@float64
def choose_polar(activation: Activation, q_max: float, tol: float = DEFAULT_TOL,
                 strict: bool = False) -> tuple[PolarSectorRule, float]:
    r"""The smallest :class:`PolarSectorRule` of ``_POLAR_LEVELS`` whose $C$ and $\dot C$ agree with the
    next finer level to ``tol`` (relative to $\sqrt{E f^2 E g^2}$) at $q_{\max}$ for correlations
    $r\in\{-1,-0.7,0,0.5,0.9,0.99,1\}$ (Gauss–Legendre converges geometrically on each smooth sector,
    so the difference estimates the coarser error).  Returns ``(rule, error estimate)``; warns (or
    raises when ``strict``) if even the finest level misses ``tol``."""
    q = max(float(q_max), 1e-3)
    r = np.array([-1.0, -0.7, 0.0, 0.5, 0.9, 0.99, 1.0])
    qs, cs = np.full(r.shape, q), q * r
    pairs = ((activation.jax_fn, activation.jax_fn), (activation.jax_derivative, activation.jax_derivative))

    def values(level):
        na, nr = level
        out = PolarSectorRule(na, nr).expect_pairs(pairs, qs, qs, cs)
        return np.stack([np.asarray(o) for o in out])

    prev = values(_POLAR_LEVELS[0])
    scale = np.maximum(np.max(np.abs(prev), axis=1, keepdims=True), 1e-300)
    err = math.inf
    for coarse, fine in zip(_POLAR_LEVELS, _POLAR_LEVELS[1:]):
        cur = values(fine)
        err = float(np.max(np.abs(cur - prev) / scale))
        if err <= tol:
            return PolarSectorRule(*coarse), max(err, 1e-16)
        prev = cur
    accuracy_shortfall(f"polar-sector rule for {activation.name}: the finest level {_POLAR_LEVELS[-1]} still "
                       f"changes by {err:.1e} > tol = {tol:.1e} at q = {q:.4g}", strict)
    return PolarSectorRule(*_POLAR_LEVELS[-1]), err


@dataclasses.dataclass(frozen=True)
class DualKernels:
    r"""$(q_1,q_2,c)\mapsto(C,\dot C)$ for one activation, with the rule that computes it.

    ``method`` is ``"closed"``, ``"hermite"``, ``"trapezoid"``, ``"polar"`` or ``"asymptotic"``
    (large variances: :class:`~kernelcalc.theory.largeq_table.TabulatedRule`, or the window rule
    :class:`~kernelcalc.theory.largeq.AsymptoticRule` when built by hand), or ``"fourier"``
    (:class:`~kernelcalc.theory.polar_fourier.PolarFourierRule`, numpy only: a Chebyshev series in the correlation,
    chosen by the Neural-ODE solver for saturating activations at moderately large $q$).  Call it on arrays,
    or split the work: :meth:`marginal` precomputes what depends on one variance only
    (Hermite coefficients), :meth:`from_marginals` finishes for given covariances $c$.
    """

    activation: Activation
    method: str
    rule: object  # ClosedFormDual | HermiteRule | TrapezoidRule | PolarSectorRule | TabulatedRule (| AsymptoticRule)
    #: estimated relative error of one expectation (the achieved tolerance of the rule)
    error_estimate: float = DEFAULT_TOL
    #: why this rule was chosen when it is a fallback ("" otherwise)
    note: str = ""

    @property
    def points(self) -> int:
        r"""Cost of one $(C,\dot C)$ evaluation for fixed marginals, in integrand evaluations (or series terms)."""
        if self.method == "hermite":
            return self.rule.K
        return getattr(self.rule, "points", 1)   # (fourier: the Chebyshev modes of one Clenshaw sum)

    @property
    def numpy_ok(self) -> bool:
        """Whether :meth:`marginal` and :meth:`from_marginals` also run with ``xp=numpy`` (closed forms and
        the Hermite series: a few array operations per evaluation; the quadrature rules are jax only)."""
        return self.method in ("closed", "hermite", "fourier")

    @float64
    def marginal(self, q, derivative: bool = True, xp=jnp, tol=None):
        """Everything that depends on the variance ``q`` alone (a tuple of arrays); ``xp``: jax.numpy or
        numpy (see :attr:`numpy_ok`).  ``tol`` (numpy Hermite rule only): the tolerance of the per-variance
        series lengths (:func:`series_lengths`; default the rule's: a looser one for a Picard sweep far
        from convergence, whose coefficients need not be exact; then pass the same ``tol`` to :meth:`tails`)."""
        self._check_sweep_tol(tol, xp)
        q = xp.asarray(q, xp.float64)
        if self.method == "fourier":    # numpy only (polar_fourier)
            return self.rule.marginal(np.asarray(q), derivative)
        if self.method != "hermite":
            return (q,)
        fs = (_numpy_functions(self.activation) if xp is np else array_functions(self.activation, "jax"))[: 2 if derivative else 1]
        if xp is np:       # per-variance lengths: a small variance carries a short series (short_coefficients)
            return (q,) + tuple(short_coefficients(self.rule, f, q, tol) for f in fs)
        return (q,) + tuple(self.rule.coefficients(f, q, xp) for f in fs)

    def _check_sweep_tol(self, tol, xp):
        if tol is not None and (self.method != "hermite" or xp is not np):
            raise ValueError("a series tolerance applies to the numpy Hermite rule only")

    def tails(self, m, xp=jnp, tol=None):
        """The Hermite rule's :meth:`HermiteRule.relative_tail` of every coefficient array of the marginals
        ``m`` (``(K, U, ...)`` coefficients of U variances -> one ``(K, U)`` array each; ``None`` for the
        other rules).  Computed once for marginals that many evaluations share, gathered per problem and
        passed to ``from_marginals(..., tails=(tails_1, tails_2))``.  ``tol``: as given to :meth:`marginal`."""
        self._check_sweep_tol(tol, xp)
        if self.method != "hermite":
            return None
        if xp is np:       # numpy marginals are short per variance (marginal): sum each over its length
            fs = _numpy_functions(self.activation)
            t = self.rule.tol if tol is None else max(tol, self.rule.tol)
            return tuple(short_relative_tail(b, series_lengths(f, m[0], self.rule.K, t, self.rule.tol))
                         for f, b in zip(fs, m[1:]))
        return tuple(HermiteRule.relative_tail(b, xp) for b in m[1:])

    @float64
    def from_marginals(self, m1, m2, c, derivative: bool = True, xp=jnp, tails=None, tol=None):
        r"""$C$ (and $\dot C$ if ``derivative``) for marginals from :meth:`marginal` and covariance ``c``
        (``xp`` as there).  ``tails``: ``(tails(m1), tails(m2))`` when known (the Mehler series is
        truncated by correlation; :class:`HermiteRule`).  ``tol`` (numpy Hermite rule only): the truncation
        tolerance instead of the rule's (never below it; for a Picard sweep far from convergence)."""
        self._check_sweep_tol(tol, xp)
        q1, q2 = m1[0], m2[0]
        c = xp.asarray(c, xp.float64)
        shape = xp.broadcast_shapes(q1.shape, q2.shape, c.shape)
        if self.method == "fourier":    # numpy only (polar_fourier)
            out = self.rule.from_marginals(m1, m2, np.asarray(c), derivative)
            out = tuple(np.broadcast_to(o, shape) for o in (out if derivative else (out,)))
            return out if derivative else out[0]
        if self.method == "hermite":
            r, _ = _correlation(q1, q2, c, xp)
            out = tuple(HermiteRule.series(m1[i], m2[i], r, xp, tol=self.rule.tol if tol is None else max(tol, self.rule.tol),
                                           tails=None if tails is None else (tails[0][i - 1], tails[1][i - 1]))
                        for i in ((1, 2) if derivative else (1,)))
        elif self.method == "closed" and xp is np and not derivative:
            out = (self.rule.C_formula(NUMPY_OPS, q1, q2, c),)     # C alone (the Picard sweeps: no Cdot)
        elif self.method == "closed":
            out = self.rule(q1, q2, c, ops=NUMPY_OPS if xp is np else None)[: 2 if derivative else 1]
        elif xp is np:
            raise ValueError(f"the {self.method} rule has no numpy evaluation (see DualKernels.numpy_ok)")
        elif self.method == "asymptotic":
            out = self.rule.expect(q1, q2, c, derivative=derivative, blocked=_blocked)
        else:
            f, df = self.activation.jax_fn, self.activation.jax_derivative
            out = self.rule.expect_pairs(((f, f), (df, df))[: 2 if derivative else 1], q1, q2, c)
        out = tuple(xp.broadcast_to(o, shape) for o in out)
        return out if derivative else out[0]

    @float64
    def __call__(self, q1, q2, c):
        r"""$(C, \dot C)$, broadcasting over arrays."""
        return self.from_marginals(self.marginal(q1), self.marginal(q2), c)

    @float64
    def C(self, q1, q2, c, xp=jnp):
        """$C$ only (``xp`` as in :meth:`marginal`)."""
        return self.from_marginals(self.marginal(q1, False, xp), self.marginal(q2, False, xp), c, derivative=False, xp=xp)

    def describe(self) -> str:
        if self.method == "closed":
            text = f"closed form ({self.rule.name})"
        elif self.method == "hermite":
            text = f"Mehler/Hermite series, {self.rule.K} terms"
        elif self.method == "fourier":
            text = self.rule.describe()
        elif self.method == "trapezoid":
            text = f"trapezoid, step {self.rule.step:g}, |z| <= {self.rule.zmax:g}"
        elif self.method == "asymptotic" and hasattr(self.rule, "describe"):
            text = self.rule.describe()
        elif self.method == "asymptotic":
            text = (f"large-q asymptote ({self.rule.asymptote.family}) + localised remainder, step {self.rule.h:g} "
                    f"on |x| <= {self.rule.asymptote.L:g}, {self.rule.n_inner} inner nodes")
        else:
            text = f"polar sectors, {self.rule.n_angle}x4 angles x {self.rule.n_radius} radii"
        return f"{text} ({self.note})" if self.note else text


_METHODS = ("auto", "closed", "hermite", "trapezoid", "polar", "asymptotic")


def require_integrable(act: Activation) -> None:
    r"""Refuse (one-line :class:`~kernelcalc.theory.activations.ActivationError`, a
    :class:`~kernelcalc.KernelcalcInputError`) an activation whose Gaussian expectations cannot be computed:
    $\phi$ not real and finite on all of $\mathbb R$ (:attr:`Activation.real_line_defect`: ``log(x)``,
    ``sqrt(x)``, ``tan(x)``), or jumping at every integer (``floor``, ``ceiling``: the quadratures here are
    exact for kinks and jumps at 0 only, and would converge algebraically across the others)."""
    why = act.real_line_defect
    if why is not None:
        raise ActivationError(f"no kernel for the activation {act.name}: {why}, but a Gaussian pre-activation takes "
                              "every real value, so phi must be real and finite on all of R (for example "
                              "log(1+exp(x)) instead of log(x))")
    if act.expr.has(sp.floor, sp.ceiling):
        raise ActivationError(f"no kernel for the activation {act.name}: floor/ceiling jump at every integer, and "
                              "kernelcalc's Gaussian quadratures handle kinks and jumps at x = 0 only (sign, Heaviside, "
                              "abs, Max, Min, Piecewise at 0); across the other jumps they would converge only "
                              "algebraically")


@float64
def dual_kernels(activation, *, q_max: float = 10.0, tol: float = DEFAULT_TOL,
                 method: str = "auto", strict: bool = False) -> DualKernels:
    r"""The $(C, \dot C)$ evaluator for ``activation``, accurate to ``tol`` for variances $\le q_{\max}$.

    ``method="auto"`` picks a closed form when one exists, polar sectors for kinks at 0,
    the Mehler/Hermite series when it converges within 8192 terms, else the large-q asymptote +
    localised remainder with a tabulated inner average (:mod:`kernelcalc.theory.largeq_table`) when the activation has one, else the trapezoid rule
    (the fallback is named in :meth:`DualKernels.describe`, and a trapezoid rule that cannot meet
    ``tol`` warns, or raises when ``strict``).  ``error_estimate`` of the result is the achieved
    relative accuracy.
    """
    act = resolve_activation(activation)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    require_integrable(act)
    if method in ("auto", "closed"):
        dual = closed_form_dual(act)
        if dual is not None:
            return DualKernels(act, "closed", dual)
        if method == "closed":
            raise ValueError(f"no closed-form dual kernel is known for {act.name!r}")
    if method == "polar" or (method == "auto" and act.is_piecewise_smooth):
        rule, err = choose_polar(act, q_max, tol, strict)
        return DualKernels(act, "polar", rule, error_estimate=max(err, tol))
    fns = (act.numpy_fn, act.numpy_derivative)
    note = ""
    if method in ("auto", "hermite"):
        K = hermite_order(fns, q_max, tol)
        if K is not None:
            return DualKernels(act, "hermite", HermiteRule(K, tol), error_estimate=tol)
        if method == "hermite":
            raise ValueError(f"the Hermite series of {act.name!r} does not converge to {tol:g} "
                             f"within {_HERMITE_KMAX} terms at q_max={q_max:g}")
        note = f"fallback: the Hermite series needs more than {_HERMITE_KMAX} terms at q_max = {q_max:.4g}"
    asy = asymptote_of(act)
    if method == "asymptotic" or (method == "auto" and asy is not None):
        if asy is None:
            raise ValueError(f"no large-q asymptote is known for {act.name!r}")
        rule, err = choose_tabulated(act, q_max, tol, strict, blocked=_blocked)
        return DualKernels(act, "asymptotic", rule, error_estimate=max(err, tol), note=note)
    h, change, met = _step_and_error(fns, q_max, tol, 0.5, 0.01)
    if not met:
        accuracy_shortfall(f"Gaussian expectations of {act.name}: the trapezoid rule at its finest step "
                           f"h = {h:g} reaches a relative accuracy of only {change:.1e} > tol = {tol:.1e} at "
                           f"q_max = {q_max:.4g}" + (f" ({note})" if note else ""), strict)
    return DualKernels(act, "trapezoid", TrapezoidRule(h), error_estimate=max(tol, change if not met else tol),
                       note=note)


def fourier_dual_kernels(activation, *, q_max: float, tol: float = DEFAULT_TOL) -> DualKernels:
    r"""The ``"fourier"`` :class:`DualKernels` of a smooth ``activation`` for variances up to ``q_max``: $C$ and
    $\dot C$ as Chebyshev series in the correlation (:mod:`kernelcalc.theory.polar_fourier`; numpy only), with the
    measured difference of two radial steps as ``error_estimate``."""
    from .polar_fourier import choose_polar_fourier

    act = resolve_activation(activation)
    rule, err = choose_polar_fourier(array_functions(act, "numpy"), float(q_max), tol, act.name)
    return DualKernels(act, "fourier", rule, error_estimate=max(err, tol))


@float64
def gaussian_expectation(f, g, q1, q2, c, *, method: str = "auto", tol: float = DEFAULT_TOL):
    r"""$E[f(a)g(b)]$ for $(a,b)\sim N(0,[[q_1,c],[c,q_2]])$, vectorised over the covariances.

    ``f``, ``g``: activation specs (names, expressions, :class:`Activation`).
    ``method``: ``"auto"`` (closed form when $f=g$ has one, else quadrature), ``"trapezoid"``,
    ``"polar"`` or ``"mpmath"`` (slow reference; scalars only).
    """
    fa, ga = resolve_activation(f), resolve_activation(g)
    if method == "mpmath":
        return expect_mpmath(fa.expr, ga.expr, float(q1), float(q2), float(c))
    if method in ("auto", "closed") and fa == ga and closed_form_dual(fa) is not None:
        return dual_kernels(fa, method="closed").C(q1, q2, c)
    kinks = fa.is_piecewise_smooth or ga.is_piecewise_smooth
    if method == "polar" or (method == "auto" and kinks):
        rule = PolarSectorRule()
    elif method in ("auto", "trapezoid"):
        q_max = float(np.max(np.maximum(np.asarray(q1), np.asarray(q2))))
        rule = TrapezoidRule(choose_step((fa.numpy_fn, ga.numpy_fn), q_max, tol))
    else:
        raise ValueError(f"method must be 'auto', 'trapezoid', 'polar' or 'mpmath', got {method!r}")
    return rule.expect_pairs(((fa.jax_fn, ga.jax_fn),), q1, q2, c)[0]


def _kinks(expr: sp.Expr) -> list[float]:
    """Real points where ``expr`` (or its derivative) is not smooth: arguments of Heaviside/Max/...=0."""
    pts: set[float] = set()
    if expr.has(sp.Piecewise, sp.Heaviside, sp.Abs, sp.sign, sp.Max, sp.Min, sp.DiracDelta):
        pts.add(0.0)
    return sorted(pts)


def expect_mpmath(f: sp.Expr, g: sp.Expr, q1: float, q2: float, c: float, dps: int = 20, zmax: int = 12) -> float:
    r"""High-precision reference $E[f(a)g(b)]$ by nested adaptive (tanh-sinh) quadrature in mpmath.

    Gauss–Legendre (mpmath's degree-doubling ``quad``) on unit pieces of $|z|\le 12$
    (the Gaussian tail beyond is below $10^{-31}$), split at the kinks of $f$ and $g$
    (assumed at argument 0). Slow (seconds); for tests and spot checks.
    """
    with mp.workdps(dps):
        fm = sp.lambdify(X, f, "mpmath")
        gm = sp.lambdify(X, g, "mpmath")
        q1m, q2m, cm = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
        r = cm / mp.sqrt(q1m * q2m)
        r = max(min(r, mp.mpf(1)), mp.mpf(-1))
        s = mp.sqrt(1 - r * r)
        pdf = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)  # noqa: E731
        kink_g = bool(_kinks(g))

        def pieces(extra):
            pts = sorted(set([mp.mpf(k) for k in range(-zmax, zmax + 1)] + [p for p in extra if abs(p) < zmax]))
            return pts

        def inner(z1):
            if s == 0:
                return gm(mp.sqrt(q2m) * r * z1)
            pts = pieces([-r * z1 / s] if kink_g else [])
            return mp.quad(lambda z2: gm(mp.sqrt(q2m) * (r * z1 + s * z2)) * pdf(z2), pts, method="gauss-legendre")

        val = mp.quad(lambda z1: fm(mp.sqrt(q1m) * z1) * inner(z1) * pdf(z1), pieces([0]), method="gauss-legendre")
        return float(val)
