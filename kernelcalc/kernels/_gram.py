r"""Gram-matrix assembly shared by every analytic kernel.

A model supplies ``pair_fn(sxx, syy, sxy) -> (nngp, ntk)``: the kernel of one input pair as a
function of the second moments $x\cdot x/d$, $y\cdot y/d$, $x\cdot y/d$ (vectorised).
:func:`gram` validates the inputs and evaluates it on all pairs, choosing between

- the **sphere path**: when every input has the same $v=x\cdot x/d$, the kernel depends on
  $\theta=\arccos(x\cdot y/(dv))\in[0,\pi]$ only. It is computed at Chebyshev–Lobatto points in
  $\theta$ (doubled until the interpolant predicts the new points to ``tol``), then the
  Chebyshev series is evaluated at every pair.  Interpolating in $\theta$ rather than $\rho$ keeps
  kernels with $\sqrt{1-\rho^2}$ behaviour at $\rho=\pm1$ (relu arc-cosine) smooth.  The diagonal
  $\theta=0$ is a node, so it is reproduced exactly.
- the **direct path**: every distinct pair evaluated (upper triangle only for a symmetric Gram),
  in blocks with an optional progress bar.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import as_input_pair

__all__ = ["gram", "chebyshev_coefficients"]

_DIRECT_MAX_PAIRS = 48     # below this many pairs, evaluate directly even on the sphere
_SPHERE_RTOL = 1e-12
_R_START, _R_MAX = 16, 1024
_BLOCK = 256


def chebyshev_coefficients(values: np.ndarray) -> np.ndarray:
    r"""Chebyshev coefficients $c_j$ of the interpolant through values at $u_k=-\cos(k\pi/R)$, $k=0..R$.

    ``values``: shape ``(R+1, ...)``. Returns the same shape; $p(u)=\sum_j c_jT_j(u)$.
    """
    f = np.asarray(values)[::-1]                       # now at x_m = cos(m pi / R)
    R = f.shape[0] - 1
    m = np.arange(R + 1)
    cos = np.cos(np.pi * np.outer(m, m) / R)           # cos(j m pi / R)
    wts = np.ones(R + 1)
    wts[0] = wts[-1] = 0.5
    c = (2.0 / R) * np.tensordot(cos * wts[None, :], f, axes=(1, 0))
    c[0] *= 0.5
    c[-1] *= 0.5
    return c


def _lobatto(R: int) -> np.ndarray:
    return -np.cos(np.pi * np.arange(R + 1) / R)


def _sphere(pair_fn, v: float, rho: np.ndarray, tol: float, info: dict):
    """Kernel on the sphere x.x/d = v at correlations ``rho`` via Chebyshev interpolation in theta."""
    theta_of = lambda u: 0.5 * np.pi * (u + 1.0)  # noqa: E731
    R = _R_START
    u = _lobatto(R)
    F = np.stack(pair_fn(v, v, v * np.cos(theta_of(u))), axis=-1)          # (R+1, 2)
    while True:
        u_new = _lobatto(2 * R)[1::2]
        F_new = np.stack(pair_fn(v, v, v * np.cos(theta_of(u_new))), axis=-1)
        predicted = np.polynomial.chebyshev.chebval(u_new, chebyshev_coefficients(F)).T
        scale = np.max(np.abs(np.concatenate([F, F_new])), axis=0)
        err = np.max(np.abs(predicted - F_new) / np.maximum(scale, 1e-300))
        merged = np.empty((2 * R + 1, 2))
        merged[0::2], merged[1::2] = F, F_new
        F, R = merged, 2 * R
        if err <= tol or R >= _R_MAX:
            break
    info.update(path="sphere", theta_nodes=R + 1, interpolation_error_estimate=float(err))
    out = _clenshaw_theta(jnp.asarray(chebyshev_coefficients(F)), jnp.asarray(rho))
    return np.asarray(out[0]), np.asarray(out[1])


@jax.jit
def _clenshaw_theta(coef, rho):
    r"""$\sum_j c_j T_j(u)$, $u = 2\arccos(\rho)/\pi - 1$, for coefficient columns (nngp, ntk)."""
    u = 2.0 * jnp.arccos(jnp.clip(rho, -1.0, 1.0)) / jnp.pi - 1.0

    def body(i, carry):
        b1, b2 = carry
        c = coef[coef.shape[0] - 1 - i]
        return 2.0 * u[None] * b1 - b2 + c[:, None, None], b1

    zeros = jnp.zeros((coef.shape[1],) + u.shape)
    b1, b2 = jax.lax.fori_loop(0, coef.shape[0] - 1, body, (zeros, zeros), unroll=8)  # partly fused, bounded compile
    return u[None] * b1 - b2 + coef[0][:, None, None]


def _direct(pair_fn, sxx, syy, sxy, progress: bool, block: int):
    nngp, ntk = np.empty(sxy.shape), np.empty(sxy.shape)
    idx = range(0, sxy.size, block)
    if progress and sxy.size > block:
        from tqdm.auto import tqdm

        idx = tqdm(idx, desc="kernel pairs", unit="block")
    for i in idx:
        sl = slice(i, i + block)
        nngp[sl], ntk[sl] = pair_fn(sxx[sl], syy[sl], sxy[sl])
    return nngp, ntk


def gram(x1, x2, pair_fn, *, tol: float = 1e-12, progress: bool = False, cheap_pairs: bool = False):
    """Validated Gram matrices ``(nngp, ntk, info)`` of ``pair_fn`` on ``x1`` x ``x2`` (see module doc).

    ``cheap_pairs``: the pair function is closed-form arithmetic, so skip interpolation and
    evaluate every pair directly in large blocks (exact, and no error from interpolation).
    """
    a, b, same = as_input_pair(x1, x2)
    d = a.shape[1]
    na, nb = np.sum(a * a, axis=1) / d, np.sum(b * b, axis=1) / d
    xy = a @ b.T / d
    info: dict = {}
    v = float(na[0])
    on_sphere = v > 0 and np.all(np.abs(na - v) <= _SPHERE_RTOL * v) and np.all(np.abs(nb - v) <= _SPHERE_RTOL * v)
    if on_sphere and xy.size > _DIRECT_MAX_PAIRS and not cheap_pairs:
        rho = xy / v
        if same:
            np.fill_diagonal(rho, 1.0)
        nngp, ntk = _sphere(pair_fn, v, rho, tol, info)
    else:
        if same:
            iu, ju = np.triu_indices(a.shape[0])
            sxx, syy, sxy = na[iu], na[ju], xy[iu, ju]
        else:
            sxx, syy, sxy = (np.broadcast_to(na[:, None], xy.shape).ravel(),
                             np.broadcast_to(nb[None, :], xy.shape).ravel(), xy.ravel())
        n_vals, t_vals = _direct(pair_fn, sxx, syy, sxy, progress, _BLOCK * 1024 if cheap_pairs else _BLOCK)
        if same:
            nngp, ntk = np.empty(xy.shape), np.empty(xy.shape)
            nngp[iu, ju], ntk[iu, ju] = n_vals, t_vals
            nngp[ju, iu], ntk[ju, iu] = n_vals, t_vals
        else:
            nngp, ntk = n_vals.reshape(xy.shape), t_vals.reshape(xy.shape)
        info.update(path="direct", pairs=int(sxy.size))
    if same:  # exact symmetry
        nngp, ntk = 0.5 * (nngp + nngp.T), 0.5 * (ntk + ntk.T)
    return nngp, ntk, info
