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

:func:`gram_plan` does the global work once; :func:`gram` then evaluates the plan tile by tile with
:mod:`kernelcalc.kernels._tiles` (memory-bounded, optionally into a Zarr store or on a dask cluster).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import KernelcalcInputError, accuracy_shortfall, as_input_pair, positive_int

__all__ = ["gram", "gram_plan", "GramPlan", "chebyshev_coefficients", "require_finite",
           "error_estimate", "max_norm"]

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


def _sphere_coefficients(pair_fn, v: float, tol: float, strict: bool):
    """Chebyshev coefficients in theta of (nngp, ntk) on the sphere x.x/d = v; doubles R until the
    interpolant predicts the new nodes to ``tol`` (relative) or says it did not."""
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
        if err <= tol:
            break
        if R >= _R_MAX:
            accuracy_shortfall(
                f"sphere interpolation in theta stopped at {R + 1} nodes with relative error estimate "
                f"{err:.1e} > tol = {tol:.1e}", strict)
            break
    info = dict(path="sphere", theta_nodes=R + 1, interpolation_error_estimate=float(err))
    return chebyshev_coefficients(F), float(np.max(np.abs(F))), info


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


class GramPlan:
    r"""How to evaluate one Gram: the global work is done once at construction (the sphere
    interpolant, the diagonal norms), then :meth:`block` evaluates any rectangular tile.

    ``a`` (N1, d), ``b`` (N2, d) validated inputs; ``same``: ``b is a`` (a symmetric Gram);
    ``info``: the path and its accuracy diagnostics (``interpolation_error_estimate`` is relative).
    """

    def __init__(self, a, b, same, info):
        self.a, self.b, self.same, self.info = a, b, same, info
        self.d = a.shape[1]
        self.na, self.nb = np.sum(a * a, axis=1) / self.d, np.sum(b * b, axis=1) / self.d

    @property
    def shape(self) -> tuple[int, int]:
        return self.a.shape[0], self.b.shape[0]

    def block(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """``(nngp, ntk)`` of ``a[rows]`` x ``b[cols]``."""
        raise NotImplementedError  # pragma: no cover  (abstract)

    def _diagonal_mask(self, rows: slice, cols: slice) -> np.ndarray | None:
        """Where ``i == j`` inside the tile of a symmetric Gram (None when the tile holds no diagonal)."""
        if not self.same:
            return None
        i = np.arange(self.shape[0])[rows]
        j = np.arange(self.shape[1])[cols]
        mask = i[:, None] == j[None, :]
        return mask if mask.any() else None


class _SpherePlan(GramPlan):
    """Every input on the sphere x.x/d = v: a Chebyshev series in theta = arccos(x.y/(dv))."""

    def __init__(self, a, b, same, pair_fn, v, tol, strict):
        coef, scale, info = _sphere_coefficients(pair_fn, v, tol, strict)
        super().__init__(a, b, same, info)
        self.v, self.coef, self.scale = v, jnp.asarray(coef), scale

    def block(self, rows, cols):
        rho = self.a[rows] @ self.b[cols].T / (self.d * self.v)
        mask = self._diagonal_mask(rows, cols)
        if mask is not None:
            rho[mask] = 1.0
        out = _clenshaw_theta(self.coef, jnp.asarray(rho))
        return np.asarray(out[0]), np.asarray(out[1])


class _DirectPlan(GramPlan):
    """Every pair evaluated by ``pair_fn`` (a tile of a symmetric Gram on the diagonal: its upper
    triangle only, mirrored)."""

    def __init__(self, a, b, same, pair_fn, chunk, progress):
        super().__init__(a, b, same, dict(path="direct"))
        self.pair_fn, self.chunk, self.progress = pair_fn, chunk, progress

    def _pairs(self, sxx, syy, sxy):
        n_vals, t_vals = np.empty(sxy.shape), np.empty(sxy.shape)
        idx = range(0, sxy.size, self.chunk)
        if self.progress and sxy.size > self.chunk:
            from tqdm.auto import tqdm

            idx = tqdm(idx, desc="kernel pairs", unit="block")
        for i in idx:
            sl = slice(i, i + self.chunk)
            n_vals[sl], t_vals[sl] = self.pair_fn(sxx[sl], syy[sl], sxy[sl])
        return n_vals, t_vals

    def block(self, rows, cols):
        na, nb = self.na[rows], self.nb[cols]
        xy = self.a[rows] @ self.b[cols].T / self.d
        mask = self._diagonal_mask(rows, cols)
        if mask is not None:   # x.x/d exactly as in the norms: identical inputs give identical moments
            xy[mask] = np.broadcast_to(na[:, None], xy.shape)[mask]
        if self.same and rows == cols:
            iu, ju = np.triu_indices(xy.shape[0])
            n_vals, t_vals = self._pairs(na[iu], nb[ju], xy[iu, ju])
            nngp, ntk = np.empty(xy.shape), np.empty(xy.shape)
            nngp[iu, ju], ntk[iu, ju] = n_vals, t_vals
            nngp[ju, iu], ntk[ju, iu] = n_vals, t_vals
            return nngp, ntk
        n_vals, t_vals = self._pairs(np.broadcast_to(na[:, None], xy.shape).ravel(),
                                     np.broadcast_to(nb[None, :], xy.shape).ravel(), xy.ravel())
        return n_vals.reshape(xy.shape), t_vals.reshape(xy.shape)


def gram_plan(x1, x2, pair_fn, *, tol: float = 1e-12, progress: bool = False, cheap_pairs: bool = False,
              strict: bool = False) -> GramPlan:
    """Validate the inputs and choose how to evaluate the Gram of ``pair_fn`` (see module doc).

    ``cheap_pairs``: the pair function is closed-form arithmetic, so skip interpolation and
    evaluate every pair directly in large blocks (exact, and no error from interpolation).
    """
    a, b, same = as_input_pair(x1, x2)
    d = a.shape[1]
    na, nb = np.sum(a * a, axis=1) / d, np.sum(b * b, axis=1) / d
    v = float(na[0])
    on_sphere = v > 0 and np.all(np.abs(na - v) <= _SPHERE_RTOL * v) and np.all(np.abs(nb - v) <= _SPHERE_RTOL * v)
    if on_sphere and a.shape[0] * b.shape[0] > _DIRECT_MAX_PAIRS and not cheap_pairs:
        return _SpherePlan(a, b, same, pair_fn, v, tol, strict)
    return _DirectPlan(a, b, same, pair_fn, _BLOCK * 1024 if cheap_pairs else _BLOCK, progress)


def gram(x1, x2, pair_fn, *, tol: float = 1e-12, progress: bool | None = False, cheap_pairs: bool = False,
         strict: bool = False, outputs=("nngp", "ntk"), out=None, client=None, config: dict | None = None,
         tile: int | None = None):
    """Validated Gram matrices ``(nngp, ntk, info)`` of ``pair_fn`` on ``x1`` x ``x2`` (see module doc),
    evaluated tile by tile by :mod:`kernelcalc.kernels._tiles`.

    ``outputs``: which Grams to compute (a missing one is returned as ``None``); ``out``: a path or
    ``zarr.Group`` to write them to (the arrays returned are then read-only Zarr arrays);
    ``client``: a ``dask.distributed.Client`` (or scheduler address) to run the tiles on;
    ``config``: what identifies the kernel in a Zarr store (model, activation, parameters);
    ``tile``: the tile side (default :data:`~kernelcalc.kernels._tiles.DEFAULT_TILE`);
    ``progress``: a progress bar over the tiles (``None``: when the Gram has at least 5000**2 entries).
    """
    from . import _tiles

    outputs = _tiles.validate_outputs(outputs)
    tile = _tiles.DEFAULT_TILE if tile is None else positive_int("tile", tile)
    a, b, same = as_input_pair(x1, x2)
    shape = (a.shape[0], b.shape[0])
    _tiles.check_memory(shape, outputs, tile, on_disk=out is not None)
    if progress is None:
        progress = shape[0] * shape[1] >= 5000 ** 2
    rows, cols, _ = _tiles.tile_list(shape, same, tile)
    single = len(rows) == 1 and len(cols) == 1
    if out is None:
        sink = _tiles.MemorySink(shape, outputs)
    else:
        cfg = dict(config or {}, inputs_sha256=_tiles.input_hash(a, b, same), symmetric=bool(same))
        sink = _tiles.open_zarr_sink(out, cfg, shape, outputs, tile, (len(rows), len(cols)))
    own_client = client is not None and isinstance(client, str)
    if client is not None:
        client = _tiles.connect(client)
    try:
        plan = gram_plan(a, None if same else b, pair_fn, tol=tol, progress=bool(progress) and single,
                         cheap_pairs=cheap_pairs, strict=strict)
        engine = _tiles.run_tiles(plan, outputs=outputs, sink=sink, tile=tile, client=client,
                                  progress=bool(progress) and not single)
    finally:
        if own_client:
            client.close()
    arrays = sink.finish(engine["max_abs"])
    info = dict(plan.info, **engine)
    if info["path"] == "direct":
        info["pairs"] = shape[0] * shape[1]
    if out is not None:
        info["out"] = _tiles._describe(out)
    return arrays.get("nngp"), arrays.get("ntk"), info


def _max_abs(K) -> float:
    r"""$\max|K_{ij}|$ without an $N\times N$ temporary (NaN/inf propagate); ``None`` -> 0; a Zarr
    array written by :func:`gram` carries it in its attributes."""
    if K is None:
        return 0.0
    if not isinstance(K, np.ndarray) and hasattr(K, "attrs"):
        return float(K.attrs["max_abs"])
    if K.size == 0:
        return 0.0
    return float(np.maximum(np.max(K), -np.min(K)))


def require_finite(nngp, ntk, what: str) -> None:
    """Raise :class:`KernelcalcInputError` when a computed Gram has an inf or NaN entry (never return one)."""
    for name, K in (("NNGP", nngp), ("NTK", ntk)):
        if math.isfinite(_max_abs(K)):
            continue
        if isinstance(K, np.ndarray):
            i, j = map(int, np.argwhere(~np.isfinite(K))[0])
            where = f"{name}[{i}, {j}] = {K[i, j]}"
        else:
            where = f"an entry of {name} = {_max_abs(K)}"
        raise KernelcalcInputError(
            f"{what} is not finite: {where} (float64 overflow); reduce the input "
            "norms, the weight scales, the depth or the horizon")


def error_estimate(nngp, ntk, *relative: float | None) -> float:
    r"""``info["error_estimate"]``: the estimated largest absolute entrywise error of the returned Grams,
    $\max(\max|K|, \max|\Theta|)\cdot\sum_k \epsilon_k$ for the relative error estimates $\epsilon_k$ of
    the stages (quadrature, time discretisation, interpolation; ``None`` entries are skipped).  A Gram not
    computed (``None``) is skipped."""
    scale = max(_max_abs(nngp), _max_abs(ntk))
    return scale * float(sum(e for e in relative if e is not None))


def max_norm(a: np.ndarray, b: np.ndarray) -> float:
    r"""Largest $x\cdot x/d$ over the rows of both (validated) inputs."""
    return float(max(np.max(np.sum(a * a, axis=1)), np.max(np.sum(b * b, axis=1)))) / a.shape[1]
