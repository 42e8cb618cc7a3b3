r"""The quadrature rules of the bivariate Gaussian expectations of :mod:`kernelcalc.theory.gaussian`: the Cartesian
trapezoid (:class:`TrapezoidRule`, its step chosen by :func:`choose_step`) for smooth activations, the polar-sector
Gauss–Legendre rule (:class:`PolarSectorRule`, levels chosen by :func:`choose_polar`) for kinks at 0, and the
memory-bounded blocking of their vectorised evaluation (``MEMORY_BUDGET``)."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np

from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from .._validation import accuracy_shortfall
from .activations import Activation

#: Target relative accuracy of every Gaussian expectation.
DEFAULT_TOL = 1e-13
_ZMAX = 9.0
_CHUNK = 2048  # covariances per vectorised block at most
#: Bytes of work arrays one vectorised block of a quadrature rule may allocate.
MEMORY_BUDGET = 256 * 2**20


def _correlation(q1, q2, c, xp=jnp, complement: bool = True):
    r"""$r = c/\sqrt{q_1q_2}$ clipped to $[-1, 1]$ and $\sqrt{1-r^2}$ (``None`` without ``complement``); $r = 0$ when
    a variance is 0 (a zero input row or a zero weight scale: that variable is the constant 0, independent of the
    other).  ``xp``: the array module (jax.numpy, or numpy)."""
    n = xp.sqrt(q1 * q2)
    positive = n > 0
    r = xp.where(positive, xp.clip(c / xp.where(positive, n, 1.0), -1.0, 1.0), 0.0)
    return r, (xp.sqrt(xp.maximum(1.0 - r * r, 0.0)) if complement else None)


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


#: covariances per compiled call of a rule's block outside a caller's jit (:func:`padded_blocked`): every eager
#: evaluation of one large-q rule (the step selection of ``choose_tabulated``, ``far_difference``, and the kinked
#: solvers' ``TabulatedRule.values_np``, :mod:`kernelcalc.theory.largeq_table`) pads to this one shape, so the rule compiles once per process (the block
#: with its five regimes costs ~5 s to compile; the step selection and the solver compiled it twice, at two shapes)
EVAL_CHUNK = 512


def padded_blocked(fn, q1, q2, c, points: int = 1, chunk: int = EVAL_CHUNK):
    r"""``fn(q1, q2, c) -> tuple`` (a compiled block of a rule) on flattened covariances, in chunks of one fixed
    shape: $\min$(``chunk``, the memory-bounded block of ``points`` work values per covariance), the last chunk padded
    with $(q_1,q_2,c)=(1,1,0)$ (dropped).  The eager twin of :func:`_blocked` (which maps a traced ``fn``): numpy in,
    numpy out, the same compiled shape for every call with the same ``fn``, ``points`` and ``chunk``.  ``fn`` computes
    each covariance on its own, so the padding changes no value."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, c)))
    shape, n = c.shape, c.size
    flat = [a.reshape(-1) for a in (q1, q2, c)]
    K = min(chunk, _block_size(points))
    outs = None
    for lo in range(0, max(n, 1), K):
        hi = min(lo + K, n)
        part = [np.concatenate([a[lo:hi], np.full(K - (hi - lo), fill)]) for a, fill in zip(flat, (1.0, 1.0, 0.0))]
        got = fn(*part)
        if outs is None:
            outs = [np.empty(n) for _ in got]
        for o, g in zip(outs, got):
            o[lo:hi] = np.asarray(g)[: hi - lo]
    return tuple(o.reshape(shape) for o in outs)


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

    def _sectors(self, xp, beta):
        r"""Angles ``(B, 4, na)``, their weights, and the radii and radial weights (with $Re^{-R^2/2}/2\pi$) of the
        rule at the angles ``beta`` (``(B,)``) between the two variables."""
        ua, wa = (xp.asarray(v) for v in _gauss_legendre(self.n_angle, 0.0, 1.0))
        R, wR = (xp.asarray(v) for v in _gauss_legendre(self.n_radius, 0.0, self.rmax))
        wR = wR * R * xp.exp(-0.5 * R * R) / (2 * math.pi)
        cuts = xp.sort(xp.stack([xp.full_like(beta, 0.5 * math.pi), xp.full_like(beta, 1.5 * math.pi),
                                 xp.mod(beta + 0.5 * math.pi, 2 * math.pi),
                                 xp.mod(beta + 1.5 * math.pi, 2 * math.pi)], axis=1), axis=1)
        lo = cuts
        hi = xp.concatenate([cuts[:, 1:], cuts[:, :1] + 2 * math.pi], axis=1)          # (B, 4)
        alpha = lo[:, :, None] + (hi - lo)[:, :, None] * ua[None, None, :]            # (B, 4, na)
        return alpha, (hi - lo)[:, :, None] * wa[None, None, :], R, wR

    def _sum(self, xp, pairs, q1, q2, c):
        """The rule on flat arrays of covariances, ``xp`` numpy or jax.numpy: one array per pair."""
        r, _ = _correlation(q1, q2, c, xp, complement=False)
        beta = xp.arccos(r)
        alpha, walpha, R, wR = self._sectors(xp, beta)
        a = xp.sqrt(q1)[:, None, None, None] * xp.cos(alpha)[..., None] * R          # (B, 4, na, nR)
        b = xp.sqrt(q2)[:, None, None, None] * xp.cos(alpha - beta[:, None, None])[..., None] * R
        return tuple(xp.einsum("bsa,bsar,r->b", walpha, f(a) * g(b), wR) for f, g in pairs)

    def tensor_np(self, pairs, q, theta):
        r"""The rule on the tensor grid of variances ``q`` (both variables) and angles ``theta`` = arccos(correlation),
        numpy: one ``(len(q), len(q), len(theta))`` array per pair.  For one angle the sectors' nodes do not depend on
        the variances, so $E[f(a)g(b)]=\sum_p w_p f(\sqrt{q_1}u_p)g(\sqrt{q_2}v_p)$ is a matrix product over the
        nodes $p$: $2\,|q|$ function values per node and angle instead of $|q|^2$ (a table's build,
        :mod:`kernelcalc.theory.polar_table`)."""
        q, theta = np.asarray(q, np.float64), np.asarray(theta, np.float64)
        s = np.sqrt(q)[:, None]
        out = [np.empty((q.size, q.size, theta.size)) for _ in pairs]
        alpha, walpha, R, wR = self._sectors(np, theta)
        for k in range(theta.size):
            u = (np.cos(alpha[k])[..., None] * R).ravel()                           # (P,) nodes of a
            v = (np.cos(alpha[k] - theta[k])[..., None] * R).ravel()               # ... of b
            w = (walpha[k][..., None] * wR).ravel()
            with np.errstate(all="ignore"):
                for o, (f, g) in zip(out, pairs):
                    o[:, :, k] = (f(s * u) * w) @ g(s * v).T
        return tuple(out)

    @float64
    def expect_pairs(self, pairs, q1, q2, c):
        return _blocked(lambda q1, q2, c: self._sum(jnp, pairs, q1, q2, c), q1, q2, c, points=self.points)

    def expect_pairs_np(self, pairs, q1, q2, c):
        r""":meth:`expect_pairs` in numpy (``pairs`` of numpy functions; broadcasts, in blocks of covariances): no jax
        dispatch or compilation (the level selection of :func:`choose_polar`: 9 of the 47 s of a kink-at-0 activation's first
        Neural-ODE Gram went to compiling and dispatching its levels in jax)."""
        q1, q2, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, c)))
        shape, flat = c.shape, [a.ravel() for a in (q1, q2, c)]
        K = _block_size(self.points)            # (the work arrays of a block within MEMORY_BUDGET)
        with np.errstate(all="ignore"):
            parts = [self._sum(np, pairs, *(a[lo:lo + K] for a in flat)) for lo in range(0, max(c.size, 1), K)]
        return tuple(np.concatenate([p[i] for p in parts]).reshape(shape) for i in range(len(pairs)))

    @property
    def points(self) -> int:
        """Integrand evaluations per covariance."""
        return 4 * self.n_angle * self.n_radius

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


def numpy_pairs(activation, derivative: bool = True) -> tuple:
    r"""The pairs $(\phi,\phi)$ and (``derivative``) $(\phi',\phi')$ of numpy functions whose expectations are $C$ and
    $\dot C$ (the polar rule's numpy evaluations)."""
    f, df = activation.numpy_fn, activation.numpy_derivative
    return ((f, f), (df, df))[: 2 if derivative else 1]


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
    pairs = numpy_pairs(activation)

    def values(level):        # (numpy: a few covariances, no jax dispatch or compilation per level)
        na, nr = level
        return np.stack(PolarSectorRule(na, nr).expect_pairs_np(pairs, qs, qs, cs))

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
