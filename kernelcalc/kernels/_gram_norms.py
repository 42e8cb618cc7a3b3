r"""The norm-interpolation Gram plan: many distinct input norms (data off the sphere).

Writing $v=x\cdot x/d$, $t=\log v$ and $\theta=\arccos\big(x\cdot y/(d\sqrt{v_xv_y})\big)$, the kernel is
$F(v_x,v_y,\theta)$.  $F$ is interpolated in $t=\log v$ at
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
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .._validation import accuracy_shortfall
from ._gram_base import R_MAX, R_START, _TablePlan
from ._interp import barycentric_weights, chebyshev_coefficients, chebyshev_matrix, cos_theta, lobatto

__all__ = ["NormInterpPlan"]

_OFF_SPHERE_TOL = 1e-10    # accuracy floor of the norm interpolation (the kernels' accuracy claim)
_T_PROBES = (12, 24, 48)     # probe degrees in t = log v (doubled while the probe's own tail is unresolved)
_R_MIN = 8                   # fewest theta intervals of the norm-interpolation grid
_NORM_CHUNK_ENTRIES = 24000     # norm interpolation: entries per chunk (its temporaries stay in cache)


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


class NormInterpPlan(_TablePlan):
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

    **Cost (measured, N = 2000 standardised rows, norms 0.13..8, busy 2-core machine).**  The grid is
    $\tfrac12L(L+1)(R+1)$ pair solves: 4930 for the softplus Neural ODE ($L=17$, $R=28$), 11 876 for tanh
    ($L=21$, $R=50$, half of them by oddness), against ~65 on the sphere.  A Neural ODE solve costs ~0.3 ms
    (softplus, 1216 Hermite terms) to ~0.4 ms (tanh, 4192) in numpy: about ten Picard sweeps of a Horner
    sum over each pair's own truncation on $13\times13$ time cells.  Tried and measured, not taken: a
    per-norm-pair degree in $\theta$ (the degrees needed range from 13 at the smallest norms to 28 at the
    largest: at most 30 % fewer solves, and none with nested Lobatto levels); a Cayley variable
    $(v-\sqrt{v_{lo}v_{hi}})/(v+\sqrt{v_{lo}v_{hi}})$ in place of $\log v$ (degree 27-31 against 17-19).
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
        P = R_START
        F = self._call(pair_fn, vx, vy, root * cos_theta(lobatto(P))[:, None])
        while True:
            R, err = _degree_for(_envelope(chebyshev_coefficients(F), np.max(np.abs(F), axis=(0, 1))), target, _R_MIN)
            if (R <= P - 4 and err <= target) or P >= R_MAX:
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
        $D_{ijr}=\sum_{kl}\ell_k(t_i)\ell_l(t_j)c_{klr}$ from two matrix products (no gathers), summed by
        Clenshaw's recurrence."""
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
        # Clenshaw: b_r = D_r + 2u b_{r+1} - b_{r+2} (r = R..1), F = D_0 + u b_1 - b_2 (three passes per degree)
        D, tmp = np.empty_like(u), np.empty_like(u)
        b1, b2 = np.zeros_like(u), np.zeros_like(u)
        u2 = 2.0 * u
        for r in range(R1 - 1, 0, -1):
            np.matmul(C[r], WbT, out=D)
            np.multiply(u2, b1, out=tmp)
            tmp -= b2
            tmp += D
            b1, b2, tmp = tmp, b1, b2
        np.matmul(C[0], WbT, out=D)
        out = np.multiply(u, b1, out=tmp)
        out -= b2
        out += D
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
