r"""Gram-matrix assembly shared by every analytic kernel.

A model supplies ``pair_fn(sxx, syy, sxy) -> (nngp, ntk)``: the kernel of one input pair as a
function of the second moments $x\cdot x/d$, $y\cdot y/d$, $x\cdot y/d$ (vectorised).
:func:`gram_plan` validates the inputs, does the global work once and returns a :class:`GramPlan`
whose :meth:`~GramPlan.block` evaluates any tile.  Writing $v=x\cdot x/d$ and
$\theta=\arccos\big(x\cdot y/(d\sqrt{v_xv_y})\big)\in[0,\pi]$, the kernel is $F(v_x,v_y,\theta)$:

- the **sphere / norm-group path**: when the inputs have few distinct norms (one: the sphere),
  each pair of norms $(v_g,v_h)$ has its own function of $\theta$.  It is sampled at
  Chebyshev–Lobatto points in $\theta$ (doubled until the interpolant predicts the new points to
  ``tol``) and read off a piecewise-polynomial table (:class:`~kernelcalc.kernels._interp.ThetaTable`,
  a few flops per entry).  A zero row ($v=0$) is a group whose kernel does not depend on $\theta$.
  The diagonal $\theta=0$ is a node and is copied exactly.  A pair function with a ``theta_scale`` (the Neural
  ODE's large-$q$ rule on the panels) is sampled in the sinh variable of that width
  (:class:`~kernelcalc.kernels._interp.SinhAngle`), on the sphere over its pairs' angles only, and in pieces
  split at its ``theta_seams`` (:mod:`kernelcalc.kernels._theta_pieces`; $\theta=0$ solved apart); ``theta_scale`` is
  given those angles (``angles``: a function returning their range, before any solve: the Neural ODE lets its band 0
  serve a smallest angle just under its edge, :func:`kernelcalc.kernels.ode_kinked_ladder.band_floor`).
- the **norm-interpolation path** (many distinct norms): $F$ interpolated in $t=\log v$ and $\theta$
  (:mod:`kernelcalc.kernels._gram_norms`), its resolutions chosen from measured Chebyshev coefficients and
  its error measured at held-out points and at actual input pairs.
- the **homogeneous path** (``homogeneous=True``: bias-free networks of a positively homogeneous
  $\phi$, relu and leaky relu): $F(v_x,v_y,\theta)=\sqrt{v_xv_y}F(1,1,\theta)$ exactly, so any inputs
  take the sphere table of their directions, scaled by $\sqrt{v_xv_y}$ (no interpolation in the norm).
- **odd kernels** (``odd=True``: bias-free networks of an odd $\phi$, e.g. tanh): $F(v_x,v_y,-c)=-F(v_x,v_y,c)$,
  so every distinct $|c|$ is evaluated once (:class:`_OddPairs`; the table nodes $\theta$, $\pi-\theta$ pair up).
- the **direct path**: every distinct pair evaluated (upper triangle only for a symmetric Gram),
  in blocks with an optional progress bar (few pairs, or closed-form ``cheap_pairs`` off the sphere).

``info["interpolation_error_estimate"]`` is the relative error estimate of the interpolation
(global interpolants plus table), against the largest $|$entry$|$ of each output.  The table
plans evaluate a tile in row chunks on parallel threads (numpy releases the GIL; each chunk writes
its own rows, so the result does not depend on the thread count).

:func:`gram` then evaluates the plan tile by tile with :mod:`kernelcalc.kernels._tiles`
(memory-bounded, optionally into a Zarr store or on a dask cluster).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .._validation import KernelcalcInputError, accuracy_shortfall, as_input_pair, positive_int, progress_disable
from ._gram_base import GramPlan, _TablePlan
from ._gram_norms import NormInterpPlan
from ._theta_pieces import pair_angles, sphere_pieces, values_at_zero
from ._theta_sampling import _theta_samples
from ._interp import SinhAngle, ThetaTable, chebyshev_coefficients

__all__ = ["gram", "gram_plan", "GramPlan", "chebyshev_coefficients", "require_finite",
           "error_estimate", "max_norm", "bucket", "pad_to", "by_correlation"]

_DIRECT_MAX_PAIRS = 48     # below this many pairs, evaluate directly even on the sphere
_DIRECT_MAX_NORM_PAIRS = 2000   # off the sphere, below this many pairs evaluate directly
_NORM_RTOL = 1e-12         # norms closer than this (relative) are one group (the sphere: one group)
_MAX_GROUPS = 6            # more distinct norms than this: interpolate in the norm
_BLOCK = 256
_PIECE_START = 8          # first degree of a piece of the sphere table (_theta_pieces: smooth, often narrow)
_RANGE_PAIRS = 1 << 22     # a sinh-variable sphere table covers its pairs' angles up to this many pairs (else 0..pi)


def _group_index(norms: np.ndarray, reps: np.ndarray) -> np.ndarray:
    """Index of the representative norm of every row (reps sorted, groups separated by > _NORM_RTOL)."""
    idx = np.clip(np.searchsorted(reps, norms), 1, max(reps.size - 1, 1)) if reps.size > 1 else np.zeros(norms.size, int)
    if reps.size > 1:
        left = np.abs(norms - reps[idx - 1]) <= np.abs(norms - reps[idx])
        idx = np.where(left, idx - 1, idx)
    return idx.astype(np.intp)


def _norm_groups(norms: np.ndarray, limit: int) -> np.ndarray | None:
    """Representative norms (sorted) when the norms fall into at most ``limit`` groups of relative
    width _NORM_RTOL, else None."""
    u = np.unique(norms)
    starts = np.concatenate([[True], np.diff(u) > _NORM_RTOL * np.maximum(u[1:], 1e-300)])
    if np.count_nonzero(starts) > limit:
        return None
    return u[starts]


class _GroupPlan(_TablePlan):
    r"""Few distinct norms (one: the sphere): a table in theta for every pair of norm groups.

    Zero rows form a group whose kernel $F(0, v, 0)$ is constant in theta.
    """

    def __init__(self, a, b, same, pair_fn, reps, tol, strict, graded=False):
        super().__init__(a, b, same, {})
        L = reps.size
        self.reps, self.L, self.pieces = reps, L, None
        self.sqrt_reps = np.sqrt(reps)
        self.ga, self.gb = _group_index(self.na, reps), _group_index(self.nb, reps)
        gx, gy = np.triu_indices(L)
        nz = (reps[gx] > 0) & (reps[gy] > 0)
        F = np.zeros((1, gx.size, 2))
        R, err = 0, 0.0
        if nz.any():
            what = "the sphere" if L == 1 else "the norm groups"
            scale_of = getattr(pair_fn, "theta_scale", None) if graded else None
            # the pairs' angles on the sphere (computed once, when asked)
            pairs_range = functools.cache(lambda: pair_angles(self, reps[0], _RANGE_PAIRS) if L == 1 else (0.0, math.pi))
            eps = None if scale_of is None else scale_of(np.unique(np.r_[reps[gx[nz]], reps[gy[nz]]]), angles=pairs_range)
            if eps is not None:   # features down to a width eps at theta = 0: the sinh variable, over the pairs' angles
                lo, hi = pairs_range()
                got = L == 1 and sphere_pieces(
                    pair_fn, reps[0], eps, lo, hi, tol, strict,
                    lambda var: _theta_samples(pair_fn, reps, reps, tol, strict, what, var, _PIECE_START))
                if got:
                    self.pieces, self.F0, self.info = got
                    return
                graded = SinhAngle(eps, lo, hi)
            # where graded nodes stop converging (err None): the graded variable after the sinh one, then uniform in
            # theta (which always returns its err)
            for graded in [graded] + [True] * isinstance(graded, SinhAngle) + [False] * bool(graded):
                Fnz, R, err = _theta_samples(pair_fn, reps[gx[nz]], reps[gy[nz]], tol, strict, what, graded)
                if err is not None:
                    break
            F = np.zeros((R + 1, gx.size, 2))
            F[:, nz] = Fnz
        if (~nz).any():   # pairs with a zero row: x.y = 0, constant in theta
            F[:, ~nz] = np.stack(pair_fn(reps[gx[~nz]], reps[gy[~nz]], np.zeros(np.count_nonzero(~nz))), -1)
        full = np.empty((F.shape[0], L, L, 2))
        full[:, gx, gy], full[:, gy, gx] = F, F
        self.F0 = full[0].copy()                                              # theta = 0: exact nodes
        if isinstance(graded, SinhAngle) and graded.lo > 0:      # (a table from lo > 0: theta = 0 solved apart)
            zero = values_at_zero(pair_fn, reps[gx[nz]], reps[gy[nz]])
            self.F0[gx[nz], gy[nz]], self.F0[gy[nz], gx[nz]] = zero, zero
        scale = np.max(np.abs(full), axis=(0, 1, 2))
        coef = chebyshev_coefficients(full) if R > 0 else full
        # the table's budget: what the sampled series leaves of tol (at least a quarter), so that their sum, the
        # estimate, stays within tol (it took all of tol: silu at sigma_w T = 10, 2.7e-11 + 7.6e-11)
        self.table = ThetaTable(coef.reshape(coef.shape[0], -1), max(tol - err, 0.25 * tol), np.tile(scale, L * L),
                                graded=graded)
        if self.table.error > tol:
            accuracy_shortfall(f"the theta table stopped at degree {self.table.n} x {self.table.P} panels with "
                               f"relative error {self.table.error:.1e} > tol = {tol:.1e}", strict)
        self.flat = self.table.table.ravel()
        on_sphere = L == 1 and reps[0] > 0
        self.info = dict(path="sphere" if on_sphere else "norm groups", theta_nodes=R + 1,
                         table=f"degree {self.table.n} x {self.table.P} panels" + (
                             f" ({graded.describe()})" if isinstance(graded, SinhAngle) else
                             " (graded)" if graded else ""),
                         interpolation_error_estimate=float(err + self.table.error))
        if not on_sphere:
            self.info["norm_groups"] = L

    def _chunk(self, i, j, xy):
        ga, gb = self.ga[i], self.gb[j]
        theta, mask = self._theta(xy, i, j, self.sqrt_reps[ga], self.sqrt_reps[gb])
        if self.pieces is not None:
            out = self.pieces.values(theta)
        else:
            stride = (self.table.n + 1) * self.table.P
            k, s = self.table.index(theta)
            ch = (ga[:, None] * self.L + gb[None, :]) * 2
            out = np.stack([self.table.horner(self.flat, (ch + o) * stride + k, s) for o in range(2)])
        if mask is not None:
            ii, jj = np.nonzero(mask)
            out[:, ii, jj] = self.F0[ga[ii], gb[jj]].T
        return out


class _HomogeneousPlan(GramPlan):
    r"""A kernel with $F(v_x,v_y,\theta)=\sqrt{v_xv_y}\,F(1,1,\theta)$ (bias-free networks of a positively
    homogeneous $\phi$: relu, leaky relu): the sphere table of the unit-norm directions (exact in the
    norms, no interpolation), times $\sqrt{v_xv_y}$; a zero row gives 0."""


    def __init__(self, a, b, same, pair_fn, tol, strict, graded=False):
        super().__init__(a, b, same, {})
        self.ra, self.rb = np.sqrt(self.na), np.sqrt(self.nb)

        def unit(x, r):
            return x / np.where(r > 0, r, 1.0)[:, None]

        ua = unit(a, self.ra)
        ub = ua if same else unit(b, self.rb)
        units = np.concatenate([np.sum(ua * ua, 1), np.sum(ub * ub, 1)]) / self.d
        reps = np.unique(np.where(units > 0.5, 1.0, 0.0))          # the unit sphere (and zero rows)
        self.inner = _GroupPlan(ua, ub, same, pair_fn, reps, tol, strict, graded)
        self.info = dict(self.inner.info, path="homogeneous (sphere table x |x||y|/d)")
        self.info.pop("norm_groups", None)

    def block(self, rows, cols):
        out = self.inner.block(rows, cols)
        rb = self.rb[cols]
        ra = self.ra[rows]
        for r0 in range(0, ra.size, _BLOCK):      # scale by the outer product (symmetric: exactly)
            scale = np.multiply.outer(ra[r0:r0 + _BLOCK], rb)
            for K in out:
                K[r0:r0 + _BLOCK] *= scale
        return out


class _OddPairs:
    r"""``pair_fn`` of an odd kernel, $F(v_x,v_y,-c)=-F(v_x,v_y,c)$ (bias-free networks of an odd $\phi$:
    tanh, erf, sin; the network function is odd in its input): each distinct $(v_x,v_y,|c|)$ is
    evaluated once and the signs applied, so the nodes $\theta$ and $\pi-\theta$ of the tables
    (exactly paired: :func:`~kernelcalc.kernels._interp.lobatto`) cost one solve; $c=0$ gives 0 (not solved)."""

    odd = True      # (the norm interpolation then sums the odd Chebyshev orders in theta only)

    def __init__(self, pair_fn):
        self.pair_fn = pair_fn
        self.prepare = getattr(pair_fn, "prepare", None)
        self.adopt_diagonals = getattr(pair_fn, "adopt_diagonals", None)
        self.window_correlation_cap = getattr(pair_fn, "window_correlation_cap", None)
        planned = getattr(pair_fn, "plan_pairs", None)
        self.plan_pairs = None if planned is None else (lambda n: planned((n + 1) // 2))   # half the solves
        if getattr(pair_fn, "at_angles", None) is not None:
            self.at_angles = self._at_angles

    def _at_angles(self, sxx, syy, theta):
        r"""``pair_fn.at_angles`` of the odd kernel (the graded theta tables sample at angles ~1e-8 from 0 and $\pi$,
        where $\cos\theta$ rounds to $\pm1$): $F(\theta)=-F(\pi-\theta)$ for $\theta>\pi/2$, each distinct angle
        (rounded to 1e-14 rad: the pairs $\theta$, $\pi-\theta$ of the table's nodes) solved once; 0 at $\pi/2$.
        Without it an odd kinked $\phi$ (hardtanh) was sampled at the rounded covariances, the angle near 0 off by
        up to a few per cent."""
        sxx, syy, theta = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (sxx, syy, theta)))
        flip = theta > 0.5 * np.pi
        th = np.round(np.where(flip, np.pi - theta, theta), 14)
        return _folded(self.pair_fn.at_angles, sxx, syy, th, th < 0.5 * np.pi, np.where(flip, -1.0, 1.0))

    def __call__(self, sxx, syy, sxy):
        sxx, syy, sxy = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (sxx, syy, sxy)))
        return _folded(self.pair_fn, sxx, syy, np.abs(sxy), sxy != 0, np.sign(sxy))   # c = 0: F = -F, 0


def _folded(fn, sxx, syy, key, solve, sign):
    """``sign * fn(sxx, syy, key)`` (both outputs) with each distinct ``(sxx, syy, key)`` evaluated once, and 0 where
    ``solve`` is False (same shapes): the odd kernel's folded solves (:class:`_OddPairs`)."""
    keys = np.stack([sxx.ravel(), syy.ravel(), key.ravel()], axis=1)
    unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    wanted = solve.ravel()[first]
    vals = [np.zeros(unique.shape[0]), np.zeros(unique.shape[0])]
    if wanted.any():
        got = fn(unique[wanted, 0], unique[wanted, 1], unique[wanted, 2])
        for v, g in zip(vals, got):
            v[wanted] = np.asarray(g).ravel()
    return tuple((sign.ravel() * v[inverse.ravel()]).reshape(key.shape) for v in vals)


class _HomogeneousPairs:
    r"""``pair_fn`` of a positively homogeneous kernel (bias-free networks of relu, leaky relu, abs):
    $F(v_x,v_y,c)=\sqrt{v_xv_y}\,F(1,1,c/\sqrt{v_xv_y})$, evaluated at unit norms (the pairs of equal norm,
    which the kinked Neural-ODE solver takes on the collapsed-triangle grid to full accuracy); 0 for a zero row."""

    def __init__(self, pair_fn):
        self.pair_fn = pair_fn

    def __call__(self, sxx, syy, sxy):
        sxx, syy, sxy = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (sxx, syy, sxy)))
        r = np.sqrt(sxx * syy)
        pos = r > 0
        c = np.clip(sxy[pos] / r[pos], -1.0, 1.0)
        c[(sxy[pos] == sxx[pos]) & (sxx[pos] == syy[pos])] = 1.0       # identical inputs: exactly parallel
        one = np.ones(c.shape)
        out = []
        for v in self.pair_fn(one, one, c):
            full = np.zeros(sxy.shape)
            full[pos] = r[pos] * np.asarray(v).reshape(c.shape)
            out.append(full)
        return tuple(out)


class _DirectPlan(GramPlan):
    """Every pair evaluated by ``pair_fn`` (a tile of a symmetric Gram on the diagonal: its upper
    triangle only, mirrored)."""


    def __init__(self, a, b, same, pair_fn, chunk, progress):
        super().__init__(a, b, same, dict(path="direct"))
        self.pair_fn, self.chunk, self.progress = pair_fn, chunk, progress

    def _pairs(self, sxx, syy, sxy):
        n_vals, t_vals = np.empty(sxy.shape), np.empty(sxy.shape)
        idx = range(0, sxy.size, self.chunk)
        if self.progress is not False and sxy.size > self.chunk:
            from tqdm.auto import tqdm

            idx = tqdm(idx, desc="kernel pairs", unit="block", disable=progress_disable(self.progress))
        for i in idx:
            sl = slice(i, i + self.chunk)
            n_vals[sl], t_vals[sl] = self.pair_fn(sxx[sl], syy[sl], sxy[sl])
        return n_vals, t_vals

    def block(self, rows, cols):
        na, nb = self.na[rows], self.nb[cols]
        xy = self.a[rows] @ self.b[cols].T / self.d
        # pairs within 1e-12 of parallel summed as the norms are (_inner: relu6's ResNet of two identical rows differed
        # from the same pair inside a larger Gram by 7.8e-10 of max|NTK|; review of stop 38)
        near = np.abs(xy) >= (1.0 - 1e-12) * np.sqrt(np.outer(na, nb))
        if np.any(near):
            r, c = np.nonzero(near)
            xy[r, c] = self._inner(np.arange(self.shape[0])[rows][r], np.arange(self.shape[1])[cols][c])
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
              homogeneous: bool = False, odd: bool = False, strict: bool = False,
              graded_theta: bool = False) -> GramPlan:
    r"""Validate the inputs and choose how to evaluate the Gram of ``pair_fn`` (see module doc).

    ``cheap_pairs``: the pair function is closed-form arithmetic, so off the sphere (and the norm
    groups) every pair is evaluated directly in large blocks (exact, no interpolation error).
    ``homogeneous``: the kernel is $\sqrt{v_xv_y}F(1,1,\theta)$ (:class:`_HomogeneousPlan`), so any
    inputs take the sphere table of their directions.  ``odd``: the kernel is odd in $x\cdot y$
    (:class:`_OddPairs`: half the solves of the theta tables).  ``graded_theta``: the theta tables of the
    sphere and the norm groups use the graded variable (:mod:`~kernelcalc.kernels._interp`; kernels
    with a kink at $\theta=0$); the off-sphere norm interpolation keeps its own grid.
    """
    if odd:
        pair_fn = _OddPairs(pair_fn)
    a, b, same = as_input_pair(x1, x2)
    d = a.shape[1]
    na, nb = np.sum(a * a, axis=1) / d, np.sum(b * b, axis=1) / d
    n_pairs = a.shape[0] * b.shape[0]
    if n_pairs > _DIRECT_MAX_PAIRS and homogeneous and np.any(na > 0) and np.any(nb > 0):
        return _HomogeneousPlan(a, b, same, pair_fn, tol, strict, graded_theta)
    if n_pairs > _DIRECT_MAX_PAIRS:
        reps = _norm_groups(np.concatenate([na, nb]), 1 if cheap_pairs else _MAX_GROUPS)
        if reps is not None and (not cheap_pairs or reps[0] > 0):
            return _GroupPlan(a, b, same, pair_fn, reps, tol, strict, graded_theta)
        distinct = a.shape[0] * (a.shape[0] + 1) // 2 if same else n_pairs
        if not cheap_pairs and distinct > _DIRECT_MAX_NORM_PAIRS:
            return NormInterpPlan(a, b, same, pair_fn, tol, strict)
    if homogeneous:   # few pairs: each at unit norms, scaled (exact; off the sphere the solver's unequal-norm path
        pair_fn = _HomogeneousPairs(pair_fn)   # would be the tensor grid, algebraic for kinks: 5e-7 for relu)
    return _DirectPlan(a, b, same, pair_fn, _BLOCK * 1024 if cheap_pairs else _BLOCK, progress)


def gram(x1, x2, pair_fn, *, tol: float = 1e-12, progress: bool | None = False, cheap_pairs: bool = False,
         homogeneous: bool = False, odd: bool = False, strict: bool = False, outputs=("nngp", "ntk"), out=None, client=None, config: dict | None = None,
         tile: int | None = None, graded_theta: bool = False):
    """Validated Gram matrices ``(nngp, ntk, info)`` of ``pair_fn`` on ``x1`` x ``x2`` (see module doc),
    evaluated tile by tile by :mod:`kernelcalc.kernels._tiles`.

    ``outputs``: which Grams to compute (a missing one is returned as ``None``); ``out``: a path or
    ``zarr.Group`` to write them to (the arrays returned are then read-only Zarr arrays);
    ``client``: a ``dask.distributed.Client`` (or scheduler address) to run the tiles on;
    ``config``: what identifies the kernel in a Zarr store (model, activation, parameters);
    ``tile``: the tile side (default :data:`~kernelcalc.kernels._tiles.DEFAULT_TILE`);
    ``graded_theta``: as in :func:`gram_plan`;
    ``progress``: a progress bar over the tiles: ``None`` (auto) shows it when the Gram has at least
    5000**2 entries *and* stderr is a terminal (tqdm's ``disable=None``); ``True`` always; ``False`` never.
    """
    from . import _tiles

    outputs = _tiles.validate_outputs(outputs)
    tile = _tiles.DEFAULT_TILE if tile is None else positive_int("tile", tile)
    a, b, same = as_input_pair(x1, x2)
    shape = (a.shape[0], b.shape[0])
    _tiles.check_memory(shape, outputs, tile, on_disk=out is not None)
    progress_disable(progress)   # validate: None, True or False
    if progress is None and shape[0] * shape[1] < 5000 ** 2:
        progress = False         # auto: no bar for a small Gram
    rows, cols, _ = _tiles.tile_list(shape, same, tile)
    single = len(rows) == 1 and len(cols) == 1
    if out is None:
        sink = _tiles.MemorySink(shape, outputs)
    else:
        cfg = dict(config or {}, inputs_sha256=_tiles.input_hash(a, b, same), symmetric=bool(same))
        sink = _tiles.open_zarr_sink(out, cfg, shape, outputs, tile, (len(rows), len(cols)))
    with _tiles.own_client(client) as client:     # a client opened here from an address is closed here
        plan = gram_plan(a, None if same else b, pair_fn, tol=tol, progress=progress if single else False,
                         cheap_pairs=cheap_pairs, homogeneous=homogeneous, odd=odd, strict=strict,
                         graded_theta=graded_theta)
        engine = _tiles.run_tiles(plan, outputs=outputs, sink=sink, tile=tile, client=client,
                                  progress=False if single else progress)
    arrays = sink.finish(engine["max_abs"])
    info = dict(plan.info, **engine)
    if odd:
        info["symmetry"] = "odd in x.y: each |x.y| evaluated once"
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


def by_correlation(sxx, syy, sxy) -> np.ndarray:
    r"""The order of the pairs by $|\rho|=|x\cdot y|/\sqrt{x\cdot x\,y\cdot y}$ (a zero row: 0): batches of
    similar correlation evaluate the Mehler series with fewer terms (:class:`~kernelcalc.theory.gaussian.HermiteRule`)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.abs(sxy) / np.sqrt(sxx * syy)
    return np.argsort(np.where(np.isfinite(rho), rho, 0.0), kind="stable")


def bucket(n: int) -> int:
    """Smallest power of two >= max(n, 8): padded batch sizes, so jit compiles only a few shapes."""
    return 1 << max(3, (int(n) - 1).bit_length())


def pad_to(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` padded along axis 0 to ``size`` rows by repeating its first row (padding is discarded)."""
    return np.concatenate([a, np.repeat(a[:1], size - len(a), axis=0)])


def flat_pairs(sxx, syy, sxy):
    """``(shape, (sxx, syy, sxy) broadcast and flattened in float64, the distinct norms, each norm's index
    into them)``: what a pair solver's ``__call__`` works on."""
    sxx, syy, sxy = (np.asarray(a, dtype=np.float64) for a in (sxx, syy, sxy))
    shape = np.broadcast_shapes(sxx.shape, syy.shape, sxy.shape)
    sxx, syy, sxy = (np.broadcast_to(a, shape).ravel() for a in (sxx, syy, sxy))
    v_unique, inverse = np.unique(np.concatenate([sxx, syy]), return_inverse=True)
    return shape, (sxx, syy, sxy), v_unique, inverse
