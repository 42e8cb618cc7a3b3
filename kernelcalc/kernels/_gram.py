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
  The diagonal $\theta=0$ is a node and is copied exactly.
- the **norm-interpolation path** (many distinct norms): $F$ is interpolated in $t=\log v$ at
  Chebyshev–Lobatto points on the range of the nonzero norms and by a Chebyshev series in
  $\theta$, $F\approx\sum_{kl}\ell_k(t_x)\ell_l(t_y)\sum_r c_{klr}T_r(2\theta/\pi-1)$.  Every
  node is a pair solve, so the degrees are chosen from measured Chebyshev coefficients (not by
  doubling): $R$ from the corners of the norm range, $m$ from a probe along three lines of the
  $(t_x,t_y)$ square; the nodes then come from a two-level combination grid (the full degree in
  $t$ at every other angle, the full degree in $\theta$ on every other norm node) when its mixed
  term, measured at held-out points (the other angles on four norm pairs off the coarse norm grid),
  is below ``tol`` (three times the measured value enters the estimate), else the tensor grid.
  Before the probes the plan hands the pair function its norm range (``prepare_range``: the Neural
  ODE / ResNet solver interpolates its per-norm self-kernel diagonals on it) and, before the grid, the
  number of solves to come (``plan_pairs``: the solver picks numpy or one compilation by their total).  An entry costs $R+1$ small
  matrix-product terms (no gathers).  Checked against direct evaluations at actual input pairs
  of extreme norms.  Zero rows: a 1-D interpolant of $F(0, v, 0)$.
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

import concurrent.futures
import contextlib
import math
import os

import numpy as np

from .._validation import KernelcalcInputError, accuracy_shortfall, as_input_pair, positive_int, progress_disable
from ._interp import (ThetaTable, barycentric_weights, chebyshev_coefficients, chebyshev_matrix, cos_theta,
                      graded_cos_theta, lobatto)

__all__ = ["gram", "gram_plan", "GramPlan", "chebyshev_coefficients", "require_finite",
           "error_estimate", "max_norm", "bucket", "pad_to", "by_correlation"]

_DIRECT_MAX_PAIRS = 48     # below this many pairs, evaluate directly even on the sphere
_DIRECT_MAX_NORM_PAIRS = 2000   # off the sphere, below this many pairs evaluate directly
_NORM_RTOL = 1e-12         # norms closer than this (relative) are one group (the sphere: one group)
_MAX_GROUPS = 6            # more distinct norms than this: interpolate in the norm
_OFF_SPHERE_TOL = 1e-10    # accuracy floor of the norm interpolation (the kernels' accuracy claim)
_R_START, _R_MAX = 16, 1024
_T_PROBES = (12, 24, 48)     # probe degrees in t = log v (doubled while the probe's own tail is unresolved)
_R_MIN = 8                   # fewest theta intervals of the norm-interpolation grid
_BLOCK = 256
_TILE_ENTRIES = 1 << 16    # entries per evaluation chunk (keeps the temporaries in cache)
_NORM_CHUNK_ENTRIES = 24000     # norm interpolation: entries per chunk (its temporaries stay in cache)


def _cores() -> int:
    """CPU cores this process may run on (threads for the chunks of a tile)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover  (not on Linux)
        return max(1, os.cpu_count() or 1)


def _theta_samples(pair_fn, vx, vy, tol: float, strict: bool, what: str, graded: bool = False):
    """Values ``(R+1, G, 2)`` of (nngp, ntk) at the Lobatto points in theta (``graded``: in the graded
    variable of :mod:`~kernelcalc.kernels._interp`) for the G norm pairs (vx[g], vy[g]) (all nonzero); R
    doubled until the interpolant predicts the new points (direct solves at held-out angles) to ``tol``
    (relative to the largest value of each output), or says it did not.  Returns (F, R, err); ``err`` is
    ``None`` when graded sampling stopped converging (a doubling from at least 65 nodes made the measured
    error larger: the solves very close to theta = 0, which only the graded nodes reach, disagree with
    the rest), so that the caller samples in theta instead."""
    root = np.sqrt(vx * vy)[None, :]
    cos_of = graded_cos_theta if graded else cos_theta

    at_angles = getattr(pair_fn, "at_angles", None) if graded else None

    def sample(u):
        c = root * cos_of(u)[:, None]
        if at_angles is not None:   # the exact angle pi sin^2(pi (1 + u) / 4) of the graded variable (theta ~ 1e-8)
            th = np.broadcast_to((np.pi * np.sin(0.25 * np.pi * (1.0 + np.asarray(u))) ** 2)[:, None], c.shape)
            vals = at_angles(np.broadcast_to(vx, c.shape), np.broadcast_to(vy, c.shape), th)
        else:
            vals = pair_fn(np.broadcast_to(vx, c.shape), np.broadcast_to(vy, c.shape), c)
        return np.stack(vals, axis=-1)                                     # (len(u), G, 2)

    R = _R_START
    F = sample(lobatto(R))
    prev = math.inf
    while True:
        u_new = lobatto(2 * R)[1::2]
        F_new = sample(u_new)
        predicted = np.tensordot(chebyshev_matrix(u_new, R), chebyshev_coefficients(F), axes=(1, 0))
        scale = np.max(np.abs(np.concatenate([F, F_new])), axis=(0, 1))
        err = float(np.max(np.abs(predicted - F_new) / np.maximum(scale, 1e-300)))
        merged = np.empty((2 * R + 1,) + F.shape[1:])
        merged[0::2], merged[1::2] = F, F_new
        F, R = merged, 2 * R
        if err <= tol:
            break
        if graded and R >= 128 and err > prev:   # no progress: samples near theta = 0 disagree (see _GroupPlan)
            return F, R, None
        prev = err
        if R >= _R_MAX:
            accuracy_shortfall(f"{what}: interpolation in theta stopped at {R + 1} nodes with relative error "
                               f"estimate {err:.1e} > tol = {tol:.1e}", strict)
            break
    return F, R, err


def _envelope(coef: np.ndarray, scale: np.ndarray, axis: int = 0) -> np.ndarray:
    """Largest |Chebyshev coefficient| of every degree along ``axis`` over all other axes, relative to
    ``scale`` (the largest |value| of each output, the last axis)."""
    c = np.abs(np.moveaxis(coef, axis, 0)) / np.maximum(scale, 1e-300)
    return np.max(c.reshape(c.shape[0], -1), axis=1)


def _tail(env: np.ndarray) -> float:
    r"""Estimated truncation error beyond the highest degree of a Chebyshev series: twice the size $e_1$
    of its highest coefficients times $\rho/(1-\rho)$, $\rho$ the decay per degree measured over its
    last four (in pairs, since for a function with a parity, e.g. odd in $\theta-\pi/2$ for an odd
    activation, every other coefficient vanishes).  A series that has not started to decay
    ($\rho > 0.9$) gets $20e_1$."""
    if env.size < 4:
        return 2.0 * float(np.max(env))
    e1, e0 = float(np.max(env[-2:])), float(np.max(env[-4:-2]))
    rho = math.sqrt(e1 / e0) if e0 > 0 else 0.0
    return 2.0 * e1 * (min(rho, 0.9) / (1.0 - min(rho, 0.9)))


def _degree_for(env: np.ndarray, target: float, minimum: int = 1) -> tuple[int, float]:
    r"""Smallest degree $n\ge$ ``minimum`` whose truncation estimate $2\sum_{k>n}$ ``env``$_k$ is below
    ``target`` (the last coefficients of a resolved series are rounding noise); ``(n, estimate)``.
    When none is, the full degree with the estimate $2\,$``env``$_{-1}$."""
    R = env.size - 1
    tail = 2.0 * np.concatenate([np.cumsum(env[::-1])[::-1][1:], [0.0]])       # tail[n] = 2 sum_{k>n}
    ok = [n for n in range(min(minimum, R), R) if tail[n] <= target]
    if ok:
        return ok[0], float(tail[ok[0]])
    return R, float(2.0 * env[-1])


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


class GramPlan:
    r"""How to evaluate one Gram: the global work is done once at construction (the interpolants,
    the diagonal norms), then :meth:`block` evaluates any rectangular tile.

    ``a`` (N1, d), ``b`` (N2, d) validated inputs; ``same``: ``b is a`` (a symmetric Gram);
    ``info``: the path and its accuracy diagnostics (``interpolation_error_estimate`` is relative).
    :meth:`block` of a tile on the diagonal of a symmetric Gram returns an exactly symmetric tile (its
    upper triangle mirrored): the tile engine relies on it.
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

    def _theta(self, rho, rows, cols, ra, rb):
        """theta (in place of ``rho``, the inner products x.y/d of the tile) from the norms ``ra``, ``rb``
        (sqrt of v; 0 for zero rows, whose theta is set to 0); the diagonal of a symmetric Gram is exactly 0."""
        denom = ra[:, None] * rb[None, :]
        np.divide(rho, denom, out=rho, where=denom > 0)
        rho[denom == 0] = 1.0
        np.clip(rho, -1.0, 1.0, out=rho)
        mask = self._diagonal_mask(rows, cols)
        if mask is not None:
            rho[mask] = 1.0
        return np.arccos(rho, out=rho), mask


class _TablePlan(GramPlan):
    """A plan whose entries are read from tables: evaluated in row chunks that keep the temporaries
    in cache; a tile on the diagonal of a symmetric Gram computes its upper triangle and mirrors it."""


    def _chunk_entries(self) -> int:
        """Entries per evaluation chunk."""
        return _TILE_ENTRIES

    def _threads(self):
        """Context for the chunk loop (the norm plan's small matrix products run single-threaded)."""
        return contextlib.nullcontext()

    def _chunk(self, i: np.ndarray, j: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """``(2, len(i), len(j))``: (nngp, ntk) of rows ``a[i]`` x ``b[j]`` (``xy``: their x.y/d, overwritten)."""
        raise NotImplementedError  # pragma: no cover  (abstract)

    def block(self, rows, cols):
        ia, jb = np.arange(self.shape[0])[rows], np.arange(self.shape[1])[cols]
        sym = self.same and np.array_equal(ia, jb)
        out = (np.empty((ia.size, jb.size)), np.empty((ia.size, jb.size)))   # two arrays that own their memory
        step = max(1, self._chunk_entries() // max(jb.size, 1))
        chunks = [slice(r0, min(r0 + step, ia.size)) for r0 in range(0, ia.size, step)]
        # x.y/d of the whole tile in one product (small ones are slow in BLAS), computed into the second
        # output: each chunk reads its own entries before it overwrites them (no third N x N array)
        xy = np.matmul(self.a[ia], self.b[jb].T, out=out[1])
        xy /= self.d

        def run(r):            # rows r: reads its own x.y/d, writes its own rows (chunks are independent)
            c0 = r.start if sym else 0
            out[0][r, c0:], out[1][r, c0:] = self._chunk(ia[r], jb[c0:], xy[r, c0:])

        workers = min(len(chunks), _cores())
        with self._threads():
            if workers > 1:    # numpy releases the GIL in its loops: the chunks run in parallel threads
                with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                    list(pool.map(run, chunks))
            else:
                for r in chunks:
                    run(r)
        if sym:
            for K in out:
                for r in chunks:
                    K[r.stop:, r] = K[r, r.stop:].T
                    low = np.tril_indices(r.stop - r.start, -1)       # inside the chunk's own square
                    square = K[r, r]                                  # a view
                    square[low] = square.T[low]
        return out


class _GroupPlan(_TablePlan):
    r"""Few distinct norms (one: the sphere): a table in theta for every pair of norm groups.

    Zero rows form a group whose kernel $F(0, v, 0)$ is constant in theta.
    """

    def __init__(self, a, b, same, pair_fn, reps, tol, strict, graded=False):
        super().__init__(a, b, same, {})
        L = reps.size
        self.reps, self.L = reps, L
        self.ga, self.gb = _group_index(self.na, reps), _group_index(self.nb, reps)
        gx, gy = np.triu_indices(L)
        nz = (reps[gx] > 0) & (reps[gy] > 0)
        F = np.zeros((1, gx.size, 2))
        R, err = 0, 0.0
        if nz.any():
            what = "the sphere" if L == 1 else "the norm groups"
            Fnz, R, err = _theta_samples(pair_fn, reps[gx[nz]], reps[gy[nz]], tol, strict, what, graded)
            if err is None:       # graded nodes stopped converging: sample uniformly in theta
                graded = False
                Fnz, R, err = _theta_samples(pair_fn, reps[gx[nz]], reps[gy[nz]], tol, strict, what)
            F = np.zeros((R + 1, gx.size, 2))
            F[:, nz] = Fnz
        if (~nz).any():   # pairs with a zero row: x.y = 0, constant in theta
            F[:, ~nz] = np.stack(pair_fn(reps[gx[~nz]], reps[gy[~nz]], np.zeros(np.count_nonzero(~nz))), -1)
        full = np.empty((F.shape[0], L, L, 2))
        full[:, gx, gy], full[:, gy, gx] = F, F
        self.F0 = full[0]                                                     # theta = 0: exact nodes
        scale = np.max(np.abs(full), axis=(0, 1, 2))
        coef = chebyshev_coefficients(full) if R > 0 else full
        self.table = ThetaTable(coef.reshape(coef.shape[0], -1), tol, np.tile(scale, L * L), graded=graded)
        if self.table.error > tol:
            accuracy_shortfall(f"the theta table stopped at degree {self.table.n} x {self.table.P} panels with "
                               f"relative error {self.table.error:.1e} > tol = {tol:.1e}", strict)
        self.flat = self.table.table.ravel()
        self.sqrt_reps = np.sqrt(reps)
        on_sphere = L == 1 and reps[0] > 0
        self.info = dict(path="sphere" if on_sphere else "norm groups", theta_nodes=R + 1,
                         table=f"degree {self.table.n} x {self.table.P} panels" + (" (graded)" if graded else ""),
                         interpolation_error_estimate=float(err + self.table.error))
        if not on_sphere:
            self.info["norm_groups"] = L

    def _chunk(self, i, j, xy):
        ga, gb = self.ga[i], self.gb[j]
        theta, mask = self._theta(xy, i, j, self.sqrt_reps[ga], self.sqrt_reps[gb])
        stride = (self.table.n + 1) * self.table.P
        k, s = self.table.index(theta)
        ch = (ga[:, None] * self.L + gb[None, :]) * 2
        out = np.stack([self.table.horner(self.flat, (ch + o) * stride + k, s) for o in range(2)])
        if mask is not None:
            ii, jj = np.nonzero(mask)
            out[:, ii, jj] = self.F0[ga[ii], gb[jj]].T
        return out


class _NormInterpPlan(_TablePlan):
    r"""Many distinct norms: Chebyshev interpolation in $t=\log v$ times the theta table (module doc).

    The resolutions are chosen from measured Chebyshev coefficients, so that few (expensive) pair
    solves are made: the degree $R$ in $\theta$ from the samples at the corners of the norm range
    (the smallest $R$ whose coefficient tail $2\sum_{k>R}|c_k|$ is below ``tol``/4), the degree $m$
    in $t$ from a probe along three lines of the $(t_x,t_y)$ square ($t_y=t_{\min}$, $t_y=t_{\max}$,
    $t_y=t_x$) at $m_p+1$ Lobatto points and four angles; then one batch of
    $\tfrac12(m+1)(m+2)\,(R+1)$ solves (symmetric pairs once) gives the tensor interpolant.

    The table's theta tail is the smaller of the extrapolation from its top coefficients (:func:`_tail`,
    pessimistic when they are at rounding level) and four times the deviation measured at held-out
    angles (:meth:`_held_out_theta`, ~12 x 6 solves), never below twice the top coefficient; both are in
    ``info["norm_tails"]`` (``theta_extrapolated``, ``theta_held_out``).
    """

    def __init__(self, a, b, same, pair_fn, tol, strict):
        super().__init__(a, b, same, {})
        self.tol = tol = max(tol, _OFF_SPHERE_TOL)
        norms = np.concatenate([self.na, self.nb])
        nz = norms[norms > 0]
        self.t_lo, self.t_hi = float(np.log(nz.min())), float(np.log(nz.max()))
        v_lo, v_hi = float(nz.min()), float(nz.max())
        self.check_rows = self._check_rows()
        checked_norms = np.concatenate([self.na[self.check_rows[0]], self.nb[self.check_rows[1]]])
        prepare = getattr(pair_fn, "prepare", None)     # solve the per-norm work of the probes in one batch
        prepare_range = getattr(pair_fn, "prepare_range", None)
        if prepare_range is not None:   # the per-norm work interpolated on the norm range (check rows: direct)
            prepare_range(nz, exact=checked_norms)
            prepare = None
        elif prepare is not None:
            prepare(np.concatenate([[v_lo, v_hi], np.exp(self._t_nodes(_T_PROBES[0])), checked_norms]))
        # theta resolution from the corners of the norm range
        R, err_theta = self._theta_degree(pair_fn, np.array([v_hi, v_lo]), np.array([v_hi, v_hi]), tol / 2, strict)
        m, err_t, m_probe = self._probe_degree(pair_fn, v_hi, tol / 2)
        if err_t > tol / 2:
            accuracy_shortfall(f"the norm interpolation: degree {m} in log|x|^2 leaves a relative error estimate "
                               f"{err_t:.1e} > tol/2 = {tol / 2:.1e}", strict)
        if m >= 4 and R >= _R_MIN:       # the combination grid needs m and R even
            m, R = m + m % 2, R + R % 2
        if prepare is not None:
            prepare(np.exp(self._t_nodes(m)))
        self.m, self.t_nodes = m, self._t_nodes(m)
        L = m + 1
        # the combination grid may use what the two tails leave of 3/4 of tol (at least tol/4)
        coef, Z, scale, grid = self._sample(pair_fn, m, R, max(0.75 * tol - err_theta - err_t, tol / 4))
        grid_theta, grid_t = grid["theta"], grid["t"]
        self.scale = scale
        self.Z = Z                                            # (L+1, 2): F(0, v_l, 0) and F(0, 0, 0)
        self.L, self.R = L, R
        # c[r, k, l, o] -> rowcoef[k, (r, o, l)]: a row's weights times it gives D before the column weights
        self.rowcoef = np.ascontiguousarray(coef.transpose(1, 0, 3, 2)).reshape(L, -1)
        self.Wa = self._weights(self.na)
        self.Wb = self.Wa if self.same else self._weights(self.nb)
        self.info = dict(path="norm interpolation", theta_nodes=R + 1, norm_nodes=L, norm_probe_nodes=m_probe + 1,
                         table=f"Chebyshev degree {R} in theta x {L} x {L} norm nodes",
                         norm_range=(v_lo, v_hi))
        self.info["norm_grid"] = grid["kind"]
        if "rejected_combination_mixed" in grid:
            self.info["rejected_combination_mixed"] = grid["rejected_combination_mixed"]
        self.info["norm_tails"] = dict(theta=err_theta, t=err_t, grid_theta=grid_theta, grid_t=grid_t, mixed=grid["mixed"],
                                      theta_extrapolated=grid["theta_extrapolated"],
                                      theta_held_out=grid["theta_held_out"])
        # each tail: the probe's estimate or the grid's own (extrapolated from its highest coefficients)
        estimate = max(err_theta, grid_theta) + max(err_t, grid_t) + grid["mixed"]
        checked = self._check(pair_fn)
        self.info["interpolation_check"] = checked
        self.info["pair_solves"] = self.solves
        self.info["interpolation_error_estimate"] = float(max(estimate, checked))
        if max(estimate, checked) > 10 * tol:
            accuracy_shortfall(f"the norm interpolation misses tol = {tol:.1e}: relative error estimate "
                               f"{estimate:.1e}, measured at input pairs {checked:.1e}", strict)

    solves = 0

    def _chunk_entries(self) -> int:
        return _NORM_CHUNK_ENTRIES

    def _threads(self):
        # matrix products with an inner dimension of L ~ 10 are memory bound: threads only add overhead
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover
            return contextlib.nullcontext()
        return threadpool_limits(limits=1, user_api="blas")

    def _call(self, pair_fn, vx, vy, c):
        self.solves += int(np.size(c))
        return np.stack(pair_fn(np.broadcast_to(vx, c.shape), np.broadcast_to(vy, c.shape), c), -1)

    def _t_nodes(self, m):
        return self.t_lo + 0.5 * (self.t_hi - self.t_lo) * (lobatto(m) + 1.0)

    def _theta_degree(self, pair_fn, vx, vy, target, strict):
        """Degree R in theta from the Chebyshev coefficients at the norm pairs (vx, vy): Lobatto points
        doubled from _R_START until the tail beyond some degree R <= (points - 5) is below ``target``.
        Returns (R, tail estimate)."""
        root = np.sqrt(vx * vy)[None, :]
        P = _R_START
        F = self._call(pair_fn, vx, vy, root * cos_theta(lobatto(P))[:, None])
        while True:
            R, err = _degree_for(_envelope(chebyshev_coefficients(F), np.max(np.abs(F), axis=(0, 1))), target, _R_MIN)
            if (R <= P - 4 and err <= target) or P >= _R_MAX:
                break
            new = self._call(pair_fn, vx, vy, root * cos_theta(lobatto(2 * P)[1::2])[:, None])
            merged = np.empty((2 * P + 1,) + F.shape[1:])
            merged[0::2], merged[1::2] = F, new
            F, P = merged, 2 * P
        if err > target:
            accuracy_shortfall(f"the norm interpolation: the theta series at {P + 1} points leaves a relative "
                               f"error estimate {err:.1e} > {target:.1e}", strict)
        return R, err

    def _probe_degree(self, pair_fn, v_hi, target):
        """Degree m in t from the Chebyshev coefficients of F along three lines of the (t_x, t_y) square
        at a few angles (the probe degree doubles while its own tail is not resolved).  Returns
        (m, tail estimate of degree m, probe degree)."""
        cos = np.cos(np.pi * np.array([0.0, 0.4, 0.8]))[:, None, None]
        for mp in _T_PROBES:
            v = np.exp(self._t_nodes(mp))
            vx = np.stack([v, v, v])                                  # (3 lines, mp+1)
            vy = np.stack([np.full_like(v, v[0]), np.full_like(v, v_hi), v])
            c = np.sqrt(vx * vy)[None] * cos
            F = self._call(pair_fn, vx[None], vy[None], c)           # (3 angles, 3 lines, mp+1, 2)
            env = _envelope(chebyshev_coefficients(np.moveaxis(F, 2, 0)), np.max(np.abs(F), axis=(0, 1, 2)))
            m, err = _degree_for(env, target, minimum=2)
            if m < mp - 1 or mp == _T_PROBES[-1]:
                return m, err, mp
        raise AssertionError("unreachable")  # pragma: no cover

    def _sample(self, pair_fn, m, R, target):
        r"""Chebyshev coefficients ``coef`` (R+1, L, L, 2) in theta of F at the Lobatto points in t
        (symmetric pairs solved once), Z the zero-row values (or None), the scale per output and the
        grid's diagnostics.

        When m and R are even, a two-level *combination grid* first:
        $F\approx I_{m,R/2}F + I_{m/2,R}F - I_{m/2,R/2}F$ (the full degree in t only at every other
        angle, the full degree in theta only on every other norm node; the three grids are nested, so
        the last costs no solve).  Its error beyond the two tensor tails is the mixed term
        $(I_m-I_{m/2})\otimes(I-I_{R/2})F$, estimated from the highest theta coefficients of the
        t-detail $(I_m-I_{m/2})I_{R/2}F$ (:func:`_tail`); above ``target`` the remaining points are
        solved (the full tensor grid)."""
        L = m + 1
        v = np.exp(self._t_nodes(m))
        cos = cos_theta(lobatto(R))
        kx, ky = np.triu_indices(L)
        F = np.full((R + 1, L, L, 2), np.nan)

        def solve(th, px, py):          # F at theta indices th for node pairs (px, py), mirrored
            vals = self._call(pair_fn, v[px], v[py], np.sqrt(v[px] * v[py])[None, :] * cos[th][:, None])
            F[th[:, None], px[None, :], py[None, :]] = vals
            F[th[:, None], py[None, :], px[None, :]] = vals

        planned = getattr(pair_fn, "plan_pairs", None)
        if planned is not None:         # the solves to come, at most (a solver may choose its backend by them)
            planned(kx.size * (R + 1))
        combo = m >= 4 and m % 2 == 0 and R >= _R_MIN and R % 2 == 0
        coarse = np.arange(0, R + 1, 2) if combo else np.arange(R + 1)
        solve(coarse, kx, ky)
        grid = dict(kind="tensor", mixed=0.0)
        if combo:
            rest = np.setdiff1d(np.arange(R + 1), coarse)
            even = (kx % 2 == 0) & (ky % 2 == 0)
            solve(rest, kx[even], ky[even])
            sub = np.arange(0, L, 2)
            lift_w = barycentric_weights(lobatto(m // 2), lobatto(m))            # (L, m/2 + 1)

            def lift(c):
                return np.einsum("ka,rabo,lb->rklo", lift_w, c, lift_w)

            scale = np.nanmax(np.abs(F), axis=(0, 1, 2))
            cA = chebyshev_coefficients(F[coarse])
            cC = lift(chebyshev_coefficients(F[coarse][:, sub][:, :, sub]))
            cB = chebyshev_coefficients(F[:, sub][:, :, sub])
            combined = lift(cB)
            combined[: coarse.size] += cA - cC
            # the mixed term measured at held-out points: the other angles on four norm pairs off the
            # coarse norm grid (odd node indices), where the combination is not exact (kept for the tensor)
            odd = sorted({1, L - 2, 2 * (L // 4) + 1})
            hx, hy = np.array(odd + [odd[0]]), np.array(odd + [odd[-1]])        # the diagonal and a corner
            solve(rest, hx, hy)
            T_rest = chebyshev_matrix(lobatto(R)[rest], R)
            predicted = np.einsum("ar,rko->ako", T_rest, combined[:, hx, hy])
            measured = float(np.max(np.abs(predicted - F[rest][:, hx, hy]) / np.maximum(scale, 1e-300)))
            mixed = 3.0 * measured
            if 3.0 * measured <= max(target, self.tol):
                coef = combined
                grid = dict(kind=f"combination ({L} x {R // 2 + 1} + {m // 2 + 1} x {R + 1})", mixed=mixed,
                            mixed_measured=measured,
                            theta=_tail(_envelope(cB, scale)),
                            t=_tail(_envelope(chebyshev_coefficients(np.moveaxis(F[coarse], 1, 0)), scale)))
            else:
                grid["rejected_combination_mixed"] = measured
                todo = ~even & ~np.isin(kx * L + ky, hx * L + hy)
                solve(rest, kx[todo], ky[todo])
        if grid["kind"] == "tensor":
            coef = chebyshev_coefficients(F)
            scale = np.max(np.abs(F), axis=(0, 1, 2))
            grid.update(theta=_tail(_envelope(coef, scale)),
                        t=_tail(_envelope(chebyshev_coefficients(np.moveaxis(F, 1, 0)), scale)))
        held = self._held_out_theta(pair_fn, coef, v, scale)
        grid["theta_extrapolated"] = grid["theta"]
        grid["theta_held_out"] = held
        # the extrapolated tail meets noise-level top coefficients with a capped decay rate (up to 18x
        # the highest coefficient); the held-out angles measure the theta error where the top coefficients
        # are largest: the estimate is the smaller of the two, never below twice the highest coefficient
        top = 2.0 * float(np.max(_envelope(coef, scale)[-2:]))
        grid["theta"] = min(grid["theta"], max(4.0 * held, top))
        Z = None
        if np.any(self.na == 0) or np.any(self.nb == 0):
            vz = np.concatenate([v, [0.0]])
            Z = self._call(pair_fn, np.zeros(L + 1), vz, np.zeros(L + 1))
        return coef, Z, scale, grid

    def _held_out_theta(self, pair_fn, coef, v, scale) -> float:
        r"""Largest relative deviation of the theta series ``coef`` (R+1, L, L, 2) from direct solves at
        held-out angles (up to 12 midpoints between the Lobatto nodes in $u=2\theta/\pi-1$) on the norm
        node pairs where its two highest coefficients are largest (four pairs, and the two end corners)."""
        R = coef.shape[0] - 1
        L = coef.shape[1]
        top = np.max(np.abs(coef[-2:]) / np.maximum(scale, 1e-300), axis=(0, 3))       # (L, L)
        top = np.triu(top) + np.tril(np.full((L, L), -1.0), -1)
        flat = np.argsort(top.ravel())[::-1][:4]
        px, py = np.unravel_index(flat, (L, L))
        px, py = np.concatenate([px, [0, L - 1]]), np.concatenate([py, [0, L - 1]])
        keep = np.unique(px * L + py)
        px, py = keep // L, keep % L
        nodes = lobatto(R)
        mids = 0.5 * (nodes[1:] + nodes[:-1])
        u = mids[np.unique(np.linspace(0, mids.size - 1, min(12, mids.size)).round().astype(int))]
        vals = self._call(pair_fn, v[px][None, :], v[py][None, :],
                          np.sqrt(v[px] * v[py])[None, :] * cos_theta(u)[:, None])      # (U, pairs, 2)
        T = chebyshev_matrix(u, R)                                                          # (U, R+1)
        pred = np.einsum("ar,rpo->apo", T, coef[:, px, py])
        return float(np.max(np.abs(pred - vals) / np.maximum(scale, 1e-300)))

    def _weights(self, norms):
        t = np.log(np.where(norms > 0, norms, 1.0))
        if self.t_hi == self.t_lo:
            W = np.ones((norms.size, self.L)) / self.L
        else:
            W = barycentric_weights(self._t_nodes(self.m), np.clip(t, self.t_lo, self.t_hi))
        return W

    def _chunk(self, i, j, xy):
        r"""$F_{ij}=\sum_r T_r(u_{ij})\,D_{ijr}$, $u=2\theta/\pi-1$, with
        $D_{ijr}=\sum_{kl}\ell_k(t_i)\ell_l(t_j)c_{klr}$ from two matrix products (no gathers)."""
        na, nb = self.na[i], self.nb[j]
        theta, _ = self._theta(xy, i, j, np.sqrt(na), np.sqrt(nb))
        Wa, Wb = self.Wa[i], self.Wb[j]
        L, R1 = self.L, self.R + 1
        # rows (i, o) of C_r = sum_k l_k(t_i) c[r, k, :, o]; D_r = C_r @ Wb^T, accumulated at once
        C = (Wa @ self.rowcoef).reshape(i.size, R1, 2, L).transpose(1, 0, 2, 3).reshape(R1, 2 * i.size, L)
        WbT = np.ascontiguousarray(Wb.T)
        u = np.repeat(theta, 2, axis=0)              # (2 rows, cols): one row per (row, output)
        u *= 2.0 / np.pi
        u -= 1.0
        out = C[0] @ WbT
        buf = np.empty_like(out)
        if R1 > 1:
            np.matmul(C[1], WbT, out=buf)
            buf *= u
            out += buf
        u2 = 2.0 * u
        t0, t1 = np.ones_like(u), u
        for r in range(2, R1):
            t0 *= -1.0
            t0 += u2 * t1                            # T_r = 2u T_{r-1} - T_{r-2}
            t0, t1 = t1, t0
            np.matmul(C[r], WbT, out=buf)
            buf *= t1
            out += buf
        out = out.reshape(i.size, 2, j.size).transpose(1, 0, 2)
        zx, zy = na == 0, nb == 0
        if self.Z is not None and (zx.any() or zy.any()):   # a zero row: F(0, v, 0), no theta
            for o in range(2):
                out[o][np.ix_(zx, ~zy)] = (Wb @ self.Z[:L, o])[~zy][None, :]
                out[o][np.ix_(~zx, zy)] = (Wa @ self.Z[:L, o])[~zx][:, None]
                out[o][np.ix_(zx, zy)] = self.Z[L, o]
        return out

    def _check_rows(self):
        """Rows of ``a`` and ``b`` for :meth:`_check`: the extreme norms and three random ones each."""
        rng = np.random.default_rng(0)

        def pick(v):
            extremes = [np.argmin(np.where(v > 0, v, np.inf)), np.argmax(v)]
            return np.unique(np.concatenate([extremes, rng.integers(0, v.size, 3)]))

        return pick(self.na), pick(self.nb)

    def _check(self, pair_fn) -> float:
        """Largest relative deviation from direct evaluations at input pairs of extreme norms."""
        ia, ib = self.check_rows
        self.solves += ia.size * ib.size
        got = [np.concatenate([g[:, ib] for g in gs]) for gs in
               zip(*(self.block(slice(i, i + 1), slice(None)) for i in ia))]
        xy = self.a[ia] @ self.b[ib].T / self.d
        if self.same:   # x.x/d exactly as in the norms (as the direct path does)
            hit = ia[:, None] == ib[None, :]
            xy[hit] = np.broadcast_to(self.na[ia][:, None], xy.shape)[hit]
        ref = pair_fn(np.broadcast_to(self.na[ia][:, None], xy.shape), np.broadcast_to(self.nb[ib][None, :], xy.shape), xy)
        return float(max(np.max(np.abs(g - r)) / max(sc, 1e-300) for g, r, sc in zip(got, ref, self.scale)))


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
    (exactly paired: :func:`~kernelcalc.kernels._interp.lobatto`) cost one solve; $c=0$ gives 0."""

    def __init__(self, pair_fn):
        self.pair_fn = pair_fn
        self.prepare = getattr(pair_fn, "prepare", None)
        self.prepare_range = getattr(pair_fn, "prepare_range", None)
        planned = getattr(pair_fn, "plan_pairs", None)
        self.plan_pairs = None if planned is None else (lambda n: planned((n + 1) // 2))   # half the solves

    def __call__(self, sxx, syy, sxy):
        sxx, syy, sxy = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (sxx, syy, sxy)))
        shape = sxy.shape
        keys = np.stack([sxx.ravel(), syy.ravel(), np.abs(sxy.ravel())], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        vals = self.pair_fn(unique[:, 0], unique[:, 1], unique[:, 2])
        sign = np.sign(sxy.ravel())
        return tuple((sign * np.asarray(v).ravel()[inverse.ravel()]).reshape(shape) for v in vals)


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
            return _NormInterpPlan(a, b, same, pair_fn, tol, strict)
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
    shape = sxy.shape
    sxx, syy, sxy = (np.broadcast_to(a, shape).ravel() for a in (sxx, syy, sxy))
    v_unique, inverse = np.unique(np.concatenate([sxx, syy]), return_inverse=True)
    return shape, (sxx, syy, sxy), v_unique, inverse
