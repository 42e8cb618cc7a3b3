r"""The theta window of the norm-interpolation plan (:class:`~kernelcalc.kernels._gram_norms.NormInterpPlan`) and
the few pairs left outside it, solved directly.

The plan interpolates the kernel in $\theta$ only on the window $[\tfrac\pi2-h,\tfrac\pi2+h]$ of the angles
present.  Its edge is set by the closest pairs of the data, and the table's cost grows toward it: the kernel's
features near $\theta=0$ (the NTK of tanh-like activations peaks there, the sharper the larger the variance) raise
the degree in $\theta$, and the solves near the edge, at correlations near 1, sum the longest Mehler series (node
tanh, variance 8: 0.53 ms per solve at $|\cos\theta|$ = 0.98 against 0.13 ms at 0).  In $d = 10$ the few closest
pairs of N = 2000 rows lie far beyond the rest (standardised rows: the closest at $|\cos\theta|$ = 0.98, the 17th at
0.95, the 300th at 0.90), so the window leaves out the :data:`_DIRECT_PAIRS` closest and they are solved directly,
each at its own norms and inner product (the direct per-pair path; their self-kernels interpolated in $\log v$ where
the solver can, :meth:`~kernelcalc.kernels.ode_solver.GoursatSolver.adopt_diagonals`).  Measured, node tanh on
standardised rows: the table's degree 33 -> 27 and its time 0.48 -> 0.27 s, the first call 1.53 -> 1.29 s.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["NormWindow", "kink_window_cap"]

_MIN_HALF_WIDTH = 0.25 * math.pi     # the theta window is at least [pi/4, 3 pi/4]
_DIRECT_PAIRS = 16           # pairs of largest |cos theta| solved directly, outside the window
_DIRECT_MAX = 20000          # most pairs above a pair function's window cap (solved directly; else refused)
#: direct pairs this close to |cos theta| = 1 (relative) have their self-kernels solved, never interpolated
_SOLVED_BELOW = 1e-4
#: the largest |cos theta| of the window for a kinked activation that does not jump (:func:`kink_window_cap`)
_KINK_CAP = 0.9


def kink_window_cap(activation):
    r"""The largest $|\cos\theta|$ of a norm-interpolation table's window for ``activation`` (a pair function's
    ``window_correlation_cap``), the closer pairs solved directly: :data:`_KINK_CAP` for a kinked activation that
    does not jump, else ``None``.  Near $\theta=0$ a kink's $F(t_x,t_y,\theta)$ is not smooth in the norms where they
    are equal (no interpolant in $\log v$ converges there: hardtanh's Neural ODE on 100 standardised rows in $d=2$,
    window to $\theta=0.004$, erred by 1e-5), and it turns sharper the closer the window's edge.  Measured from 0.95 to
    0.9, 2000 standardised rows in $d=10$ (303 pairs above 0.9): the Neural ODE's relu6 11.8 -> 6.2 s (pair solves
    16868 -> 7778), hard-swish 18.8 -> 9.7 s; the ResNet (depth 8) uncapped -> 0.9: relu6 2.3-3.6 -> 1.8 s, hard-swish
    4.6 -> 2.6 s; 200 standardised rows in $d=2$ (5672 pairs above 0.9): the Neural ODE's hardtanh 31 -> 25 s, relu6
    36 -> 31 s; the ResNet's relu6 uncapped took 13 s and estimated 3e-4 (it warned; before the held-out norms at the
    window's edges it estimated 5e-7 and erred by 1.7e-5), capped 2.3 s, 6.8e-10."""
    return _KINK_CAP if activation.is_piecewise_smooth and not activation.jumps else None


class NormWindow:
    """The window and the direct pairs of :class:`~kernelcalc.kernels._gram_norms.NormInterpPlan` (a mixin: the
    plan's inputs ``a``, ``b``, norms ``na``, ``nb``, its solve counter and info, and its columns' Lobatto points)."""

    def _window(self, cap=None):
        r"""Half-width $h$ of the theta window $[\tfrac\pi2-h,\tfrac\pi2+h]$ and the pairs solved directly
        ``(rows of a, rows of b)``: the window holds every pair present (the diagonal of a symmetric Gram and zero
        rows excluded; at least $[\pi/4, 3\pi/4]$) but the :data:`_DIRECT_PAIRS` of largest $|\cos\theta|$, when
        leaving them out widens the smallest angle of the window by a tenth at least (module doc).  Found by row
        blocks in two passes: the rows' largest $|\cos\theta|$, then the pairs above a bound of the
        ``_DIRECT_PAIRS + 1``-th largest.  ``cap``: the pair function's largest $|\cos\theta|$ for the window (a
        kinked activation: near $\theta=0$ the kernel is not smooth in the norms where they are equal, so no
        interpolant in $\log v$ converges); every pair above it is solved directly (at most :data:`_DIRECT_MAX`)."""
        def unit(x, v):       # rows of norm 1 (zero rows stay 0)
            r = np.sqrt(v * self.d)
            return x / np.where(r > 0, r, 1.0)[:, None]

        ua = unit(self.a, self.na)
        ub = ua if self.same else unit(self.b, self.nb)
        n1, n2 = self.shape
        step = max(1, (1 << 20) // max(n2, 1))
        blocks = [(r0, min(r0 + step, n1)) for r0 in range(0, n1, step)]

        def cosines(r0, r1):
            """``(c0, |cos theta|)`` of rows r0..r1 with the rows c0.. of b (a symmetric Gram: c0 = r0 and the
            entries on and below the diagonal 0, so that each pair is counted once)."""
            c0 = r0 if self.same else 0
            c = np.abs(ua[r0:r1] @ ub[c0:].T)
            if self.same:
                c[:, : r1 - r0] = np.triu(c[:, : r1 - r0], 1)
            return c0, c

        # every pair is counted in one row: the pairs at or above the keep-th largest row maximum hold the keep
        # largest pairs (and those above a cap, counted in the same pass)
        row_max, above = [], 0
        for r0, r1 in blocks:
            c = cosines(r0, r1)[1]
            row_max.append(np.max(c, axis=1))
            above += 0 if cap is None else int(np.count_nonzero(c > cap))
        row_max = np.concatenate(row_max)
        keep = _DIRECT_PAIRS + 1 + (0 if cap is None else self._direct_limit(above, cap))
        largest = float(np.max(row_max)) if row_max.size else 0.0
        direct = (np.empty(0, np.intp), np.empty(0, np.intp))
        if row_max.size:
            floor = np.partition(row_max, -keep)[-keep] if row_max.size > keep else -1.0
            top, rows, cols = [], [], []
            for r0, r1 in blocks:
                c0, c = cosines(r0, r1)
                i, j = np.nonzero(c >= floor)
                val = c[i, j]
                if val.size > keep:      # (many ties: the block's keep largest hold its share)
                    sel = np.argpartition(val, -keep)[-keep:]
                    i, j, val = i[sel], j[sel], val[sel]
                top.append(val), rows.append(i + r0), cols.append(j + c0)
            top, rows, cols = (np.concatenate(x) for x in (top, rows, cols))
            order = np.argsort(-top, kind="stable")[:keep]
            top, rows, cols = top[order], rows[order], cols[order]
            edge = float(top[-1]) if top.size == keep else largest

            def smallest_angle(c):      # the window's smallest angle for a largest |cos theta| c
                return min(math.acos(min(c, 1.0)), 0.5 * math.pi - _MIN_HALF_WIDTH)

            # the pairs above the cap (all of them: keep counts them), then the _DIRECT_PAIRS closest of the rest where
            # that widens the window's smallest angle by a tenth
            if cap is not None and largest > cap:
                largest = cap
            if smallest_angle(edge) >= 1.1 * smallest_angle(largest):
                largest = edge
            ours = top > largest
            direct = (rows[ours], cols[ours])
        theta_lo = math.acos(min(largest, 1.0))
        return max(_MIN_HALF_WIDTH, min(0.5 * math.pi, (0.5 * math.pi - theta_lo) * (1.0 + 1e-9))), direct

    @staticmethod
    def _direct_limit(count: int, cap: float) -> int:
        r"""``count``, the pairs with $|\cos\theta|$ above ``cap``, or a refusal past :data:`_DIRECT_MAX` (each is a
        pair solve)."""
        if count > _DIRECT_MAX:
            from .._validation import KernelcalcInputError
            raise KernelcalcInputError(
                f"{count} pairs of inputs are within {math.degrees(math.acos(cap)):.1f} degrees of parallel (or "
                f"antiparallel); with a kinked activation off the sphere each is its own Neural-ODE solve (the limit is "
                f"{_DIRECT_MAX}): use fewer points, more input dimensions, or inputs of one norm (data.sphere_normalise)")
        return count

    def _solve_direct(self, pair_fn, checked_norms) -> None:
        r"""Solve the pairs outside the window (:meth:`_window`) directly, at their own norms and $x\cdot y/d$
        (:meth:`_inner`); ``direct_entries``: ``(rows, columns, values (n, 2))`` of their Gram entries (a symmetric
        Gram's both ways), written by :meth:`_put_direct`.

        Their self-kernels first: interpolated in $\log v$ from those of the columns' Lobatto points (all solved, the
        finest degree in $t$ the plan reached) where that is measured to meet tol/100 at the check rows' norms
        (``checked_norms``, solved directly), else solved.  (From the first degree's points, relu6's on 2000
        standardised rows missed by 8.7e-10, and the 303 pairs above its window cap solved 600 self-kernels: 2.4 s.)
        The norms of pairs within :data:`_SOLVED_BELOW` of $|\cos\theta|=1$ are always solved: there a kink's kernel
        moves like the square root of its diagonals' error (duplicate rows, the ResNet of relu6: 3.5e-9 of max|NTK|
        from diagonals interpolated to 6e-16, its estimate 4.2e-10; review of stop 38)."""
        ia, ib = self.direct
        vals = np.empty((0, 2))
        if ia.size:
            na, nb, xy = self.na[ia], self.nb[ib], self._inner(ia, ib)
            self._direct_self_kernels(pair_fn, checked_norms, na, nb, xy)
            self.solves += ia.size
            vals = np.stack(pair_fn(na, nb, xy), axis=-1)
        if self.same:
            ia, ib, vals = np.concatenate([ia, ib]), np.concatenate([ib, ia]), np.concatenate([vals, vals])
        self.direct_entries = (ia, ib, vals)

    def _direct_self_kernels(self, pair_fn, checked_norms, na, nb, xy):
        """The direct pairs' self-kernels (:meth:`_solve_direct`), for a pair function that prepares them."""
        adopt, prepare = getattr(pair_fn, "adopt_diagonals", None), getattr(pair_fn, "prepare", None)
        if prepare is None:
            return
        root = np.sqrt(na * nb)
        close = (root > 0) & (root - np.abs(xy) <= _SOLVED_BELOW * root)
        if np.any(close):
            prepare(np.concatenate([na[close], nb[close]]))
        rest = np.concatenate([na[~close], nb[~close]])
        adopted = False
        if adopt is not None and rest.size:
            adopted, deviation = adopt(rest, self._v(self.col_nodes), checked_norms)
            self.info["direct_self_kernels"] = dict(interpolated=adopted, deviation=deviation,
                                                    solved_close=int(np.count_nonzero(close)))
        if rest.size and not adopted:
            prepare(rest)

    def _put_direct(self, out, i, j):
        """Write the directly solved pairs that fall in the chunk of rows ``i`` x columns ``j`` (both increasing)
        into ``out`` (2, len(i), len(j))."""
        ra, cb, vals = self.direct_entries
        pi = np.minimum(np.searchsorted(i, ra), i.size - 1)
        pj = np.minimum(np.searchsorted(j, cb), j.size - 1)
        hit = (i[pi] == ra) & (j[pj] == cb)
        out[:, pi[hit], pj[hit]] = vals[hit].T
