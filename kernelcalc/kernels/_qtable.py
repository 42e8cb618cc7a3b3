r"""$C$ and $\dot C$ of a quadrature dual as one table in $(\log q_1,\log q_2,\theta)$, shared by every solve of a
long-horizon Neural-ODE kernel on the composite panels (:mod:`._panels`).

At large pre-activation variance $q$ an expectation of the large-$q$ rule costs ~0.1 ms
(:class:`~kernelcalc.theory.largeq_table.TabulatedRule`), and a Gram on the panels needs its $(C,\dot C)$ at
every node of several time grids (the degree ladder, three bands of input angles), for every input angle, at
every Picard sweep: $10^7$ and more.  But the values needed are those of one smooth function of three numbers
$(q_1,q_2,\theta)$, $\theta=\arccos(c/\sqrt{q_1q_2})$, on a small set:

- **In the variances**, $\tilde C=C/\sqrt{q_1q_2}$ and $\dot C$ are analytic in $\log q$ (measured for softplus:
  Chebyshev degree 8-13 per unit of width 2 in $\log q$ at $10^{-13}$, from $q=1$ to $4\cdot10^5$).  The table is
  cut into boxes $[iW,(i+1)W]\times[jW,(j+1)W]$ of $(\log q_1,\log q_2)$, $i\ge j$ (the duals are symmetric in
  $(q_1,q_2)$), each a tensor Chebyshev–Lobatto series of degree $d$ per axis, built when a solve first needs
  it (so the range of $q$ needs no guess).
- **In the angle**, at large $q$ the duals are $C^\infty$ but not analytic at $\rho=\pm1$ (the Mehler series of
  a smooth $\phi$ has radius of convergence 1): their features have width $\sim1/\sqrt q$ in $\theta$, and a
  Chebyshev series on all of $[0,\pi]$ needs $>256$ terms for $10^{-13}$ at $q=4\cdot10^5$.  But a solve visits
  only a narrow range of $\theta$ at a given $(q_1,q_2)$ (the self-kernel bounds it below, the antipodal pair
  above: measured $\theta\in[1.31,1.58]$ in the cell $(t,s)\in[9,10]\times[0,1]$ at $\sigma_wT=10$), and near
  $\theta=0$ the sinh-graded variable $\theta=\varepsilon\sinh(a+(b-a)(u+1)/2)$, $\varepsilon=3/\sqrt{q}$ ($q$: the box's largest), makes
  the series converge geometrically again (measured: 33-41 terms for $10^{-14}$ on $[0,1]$ at $q=10^2..4\cdot10^5$).
  So each box holds the range of $\theta$ its queries have asked for (padded), and is rebuilt on the union when
  a query falls outside: it never extrapolates.

**Accuracy.** The angle degree is doubled from 16 until the series predicts the new nodes to ``tol`` relative to
the box's largest value (as :class:`~kernelcalc.kernels.ode_kinked_panels._AngleTable`); the variance degree climbs
``_DEGREES`` until the table predicts held-out points (Chebyshev midpoints in $\log q_1$, $\log q_2$) to ``tol``.
The largest measured error of the boxes is :attr:`QTable.error`, which the solver adds to its error estimate.

A cross-kernel solve (fixed diagonal $q(t)$) evaluates through :class:`NodeTable`: the box series contracted at
each node's $(q_1,q_2)$ to a series in the angle alone (a Clenshaw sum per value, as the angle tables).
"""

from __future__ import annotations

import math

import numpy as np

from ..theory.duals import correlation_angle
from ._interp import chebyshev_coefficients, chebyshev_matrix, lobatto

__all__ = ["QTable", "NodeTable"]

_W = 2.0                    # box width in log q
_DEGREES = (14, 18, 22)     # degree per axis of log q1, log q2 (climbed until the held-out check passes)
_R0, _R_MAX = 12, 192       # angle degree: doubled from R0
_EPS = 3.0                  # graded angle scale eps = _EPS / sqrt(q) (q: the box's smallest)
_PAD = 0.25                 # a box's angle range: the queried range widened by this fraction (and _PAD_MIN)
_PAD_MIN = 0.02
_DIRECT_SHARE = 0.5         # direct evaluations of out-of-range queries allowed per box, as a share of its build
_FIRST_COST = 7000          # the build cost assumed for a box not built yet (degree 14, 33 angles)
_RECENT = 3                 # a box is built on the angle range of the latest requests


def _angle(q1, q2, c):
    r"""$\theta=2\operatorname{atan2}(\sqrt{1-\rho},\sqrt{1+\rho})$ (relative accuracy near $\rho=\pm1$)."""
    n = np.sqrt(q1 * q2)
    return correlation_angle(np.clip(np.where(n > 0, c / np.where(n > 0, n, 1.0), 0.0), -1.0, 1.0))


class _Box:
    """One box of the table: coefficients ``coef`` ``(2, d+1, d+1, R+1)`` of $\\tilde C$ and $\\dot C$ in
    $(x_1, x_2, u)$, the angle range ``[lo, hi]`` and its map (``eps``, ``a``, ``b``)."""

    def __init__(self, i, j, lo, hi, anchor):
        self.i, self.j, self.lo, self.hi = i, j, float(lo), float(hi)
        self.anchor = anchor
        eps = _EPS / math.sqrt(math.exp(anchor + _W * (max(i, j) + 1)))      # the box's largest variance
        # graded toward theta = 0 when the range comes near it; else (no singular point within 10 eps) plain
        self.eps = eps if self.lo < 10.0 * eps else 1e6 * max(self.hi, 1.0)
        self.a, self.b = math.asinh(self.lo / self.eps), math.asinh(self.hi / self.eps)
        self.coef, self.error, self.d, self.R = None, 0.0, 0, 0
        self.cost, self.direct = 0, 0     # expectations of its build; direct evaluations of queries outside it

    def theta(self, u):
        return self.eps * np.sinh(self.a + (self.b - self.a) * 0.5 * (np.asarray(u) + 1.0))

    def u_of(self, theta):
        return 2.0 * (np.arcsinh(theta / self.eps) - self.a) / (self.b - self.a) - 1.0

    def covers(self, lo, hi) -> bool:
        return self.lo <= lo and hi <= self.hi


class QTable:
    r"""The table (module doc) of the quadrature dual ``dual`` (evaluated by ``evaluate(q1, q2, c)`` ->
    ``(C, Cdot)`` on flat arrays), accurate to ``tol`` relative to each box's largest value."""

    def __init__(self, evaluate, tol: float, q0: float = 1.0):
        self._evaluate = evaluate
        self.anchor = math.log(q0)   # boxes [anchor + i W, anchor + (i + 1) W] in log q: q0, the smallest variance
        self.tol = float(tol)
        self.boxes: dict = {}
        self.evaluations = 0      # expectations evaluated (the cost)
        self.builds = 0           # box builds, rebuilds on a wider angle range included
        self.error = 0.0          # largest measured error of the boxes (relative)
        self.direct = 0           # expectations evaluated directly (queries outside a box's range)
        self._seen: dict = {}     # box -> angle ranges requested outside it
        self._direct: dict = {}   # box -> direct evaluations since its last build

    # -- building -------------------------------------------------------------------------------
    def _values(self, box, x1, x2, u):
        r"""$(\tilde C,\dot C)$ ``(len(u), n1, n2, 2)`` at the tensor points (symmetric boxes: each unordered pair
        of variances once)."""
        lq1 = self.anchor + (box.i + 0.5 * (x1 + 1.0)) * _W
        lq2 = self.anchor + (box.j + 0.5 * (x2 + 1.0)) * _W
        th = box.theta(u)
        K1, K2 = np.meshgrid(np.arange(x1.size), np.arange(x2.size), indexing="ij")
        keep = (K1 >= K2) if (box.i == box.j and x1.size == x2.size and np.array_equal(x1, x2)) else np.ones_like(K1, bool)
        q1 = np.exp(lq1[K1[keep]])
        q2 = np.exp(lq2[K2[keep]])
        Q1 = np.broadcast_to(q1[None, :], (th.size, q1.size)).ravel()
        Q2 = np.broadcast_to(q2[None, :], (th.size, q2.size)).ravel()
        n = np.sqrt(Q1 * Q2)
        c = n * np.cos(np.repeat(th, q1.size))
        C, Cd = self._evaluate(Q1, Q2, c)
        self.evaluations += Q1.size
        out = np.empty((th.size, x1.size, x2.size, 2))
        vals = np.stack([C / n, Cd], axis=-1).reshape(th.size, -1, 2)
        out[:, K1[keep], K2[keep]] = vals
        if not np.all(keep):
            out[:, K2[keep], K1[keep]] = vals
        return out

    def _build(self, box):
        """Fill ``box`` (its angle range fixed): angle degree doubled, then the variance degree checked."""
        for d in _DEGREES:
            x = lobatto(d)
            R = _R0
            vals = self._values(box, x, x, lobatto(R))
            while True:
                new = self._values(box, x, x, lobatto(2 * R)[1::2])
                coef = chebyshev_coefficients(vals)
                pred = np.tensordot(chebyshev_matrix(lobatto(2 * R)[1::2], R), coef, axes=(1, 0))
                scale = np.maximum(np.max(np.abs(vals), axis=(0, 1, 2)), 1e-300)
                err_u = float(np.max(np.abs(pred - new) / scale))
                merged = np.empty((2 * R + 1,) + vals.shape[1:])
                merged[0::2], merged[1::2] = vals, new
                vals, R = merged, 2 * R
                if err_u <= self.tol or R >= _R_MAX:
                    break
            coef = chebyshev_coefficients(vals)                                  # (R+1, d+1, d+1, 2) in u
            coef = chebyshev_coefficients(np.moveaxis(coef, 1, 0))               # in x1
            coef = chebyshev_coefficients(np.moveaxis(coef, 2, 0))               # in x2: (x2, x1, u, 2)
            box.coef = np.ascontiguousarray(np.transpose(coef, (3, 1, 0, 2)))    # (2, x1, x2, u)
            box.d, box.R = d, R
            # held-out check in the variances: Chebyshev midpoints of both axes, at every 4th angle node
            xm = np.cos(np.pi * (np.arange(d) + 0.5) / d)[:: max(1, d // 4)]
            um = lobatto(R)[::4]
            ref = self._values(box, xm, xm + 0.0, um)                            # (u, x1, x2, 2)
            got = self._series(box, xm[:, None, None], xm[None, :, None], um[None, None, :])   # (2, x1, x2, u)
            err_q = float(np.max(np.abs(np.moveaxis(got, 0, -1).transpose(2, 0, 1, 3) - ref) / scale))
            box.error = max(err_u, err_q, 1e-16)
            if err_q <= self.tol:
                break
        self.builds += 1
        self.error = max(self.error, box.error)

    @staticmethod
    def _series(box, x1, x2, u):
        """The box series at broadcast points ``(x1, x2, u)``: ``(2, *shape)``."""
        shape = np.broadcast_shapes(np.shape(x1), np.shape(x2), np.shape(u))
        x1, x2, u = (a.ravel() for a in np.broadcast_arrays(x1, x2, u))
        d1 = box.d + 1
        flat = box.coef.transpose(3, 0, 1, 2).reshape(box.R + 1, -1)          # (u, 2 x1 x2)
        out = np.empty((2, x1.size))
        for lo in range(0, x1.size, 4096):
            sl = slice(lo, lo + 4096)
            A = (chebyshev_matrix(u[sl], box.R) @ flat).reshape(-1, 2, d1, d1)
            A = np.einsum("nwkl,nk->nwl", A, chebyshev_matrix(x1[sl], box.d))
            out[:, sl] = np.einsum("nwl,nl->wn", A, chebyshev_matrix(x2[sl], box.d))
        return out.reshape((2,) + shape)

    def box(self, i: int, j: int, lo: float, hi: float, outside: int = 0):
        r"""The box ``(i, j)`` for queried angles ``[lo, hi]`` (``outside`` values outside the box), or ``None``: those
        values are to be evaluated by the rule directly (the first sweeps of a solve, at its first guess, and a few
        stragglers) until such direct evaluations exceed ``_DIRECT_SHARE`` of the box's build cost; then the box is
        built (or rebuilt) on the angles of the latest ``_RECENT`` requests (with its old range), widened by
        ``_PAD``."""
        old = self.boxes.get((i, j))
        if old is not None and old.covers(lo, hi):
            return old
        seen = self._seen.setdefault((i, j), [])
        seen.append((lo, hi))
        cost = old.cost if old is not None else _FIRST_COST
        direct = self._direct.get((i, j), 0)
        if direct + outside <= _DIRECT_SHARE * cost:   # a few values (Picard transients, stragglers): directly
            self._direct[(i, j)] = direct + outside
            self.direct += outside
            return None
        # build on the angles of the latest requests (the first sweeps of a solve ask at its first guess)
        lo, hi = min(a for a, _ in seen[-_RECENT:]), max(b for _, b in seen[-_RECENT:])
        self._direct[(i, j)] = 0
        if old is not None:
            lo, hi = min(lo, old.lo), max(hi, old.hi)
        w = hi - lo
        lo, hi = max(0.0, lo - _PAD * w - _PAD_MIN), min(math.pi, hi + _PAD * w + _PAD_MIN)
        box = _Box(i, j, lo, hi, self.anchor)
        before = self.evaluations
        self._build(box)
        box.cost = self.evaluations - before
        self.boxes[(i, j)] = box
        return box

    def direct_values(self, q1, q2, c):
        r"""``(2, n)``: $(C,\dot C)$ by the rule itself (queries outside a box's range)."""
        C, Cd = self._evaluate(q1, q2, c)
        return np.stack([C, Cd])

    # -- evaluation -----------------------------------------------------------------------------
    def locate(self, q1, q2):
        """``(x1, x2, i, j)``: box indices and local coordinates in [-1, 1], the larger variance first."""
        l1, l2 = np.log(q1) - self.anchor, np.log(q2) - self.anchor
        swap = l2 > l1
        l1, l2 = np.where(swap, l2, l1) / _W, np.where(swap, l1, l2) / _W
        i, j = np.floor(l1).astype(np.int64), np.floor(l2).astype(np.int64)
        return 2.0 * (l1 - i) - 1.0, 2.0 * (l2 - j) - 1.0, i, j

    def __call__(self, q1, q2, c, which=(0, 1)):
        r"""$C$ (``which`` 0), $\dot C$ (1) or both (``(0, 1)``: a tuple) at arbitrary covariances (broadcast)."""
        q1, q2, c = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (q1, q2, c)))
        shape = c.shape
        q1, q2, c = q1.ravel(), q2.ravel(), c.ravel()
        th = _angle(q1, q2, c)
        x1, x2, i, j = self.locate(q1, q2)
        out = np.empty((2, c.size))
        key = i * 100003 + j
        for k in np.unique(key):
            sel = np.nonzero(key == k)[0]
            ik, jk = int(i[sel[0]]), int(j[sel[0]])
            box = self.boxes.get((ik, jk))
            inside = np.zeros(sel.size, bool) if box is None else (th[sel] >= box.lo) & (th[sel] <= box.hi)
            if not np.all(inside):
                out_sel = sel if box is None else sel[~inside]
                box = self.box(ik, jk, float(th[out_sel].min()), float(th[out_sel].max()), out_sel.size)
                if box is None:                      # evaluated directly
                    out[:, out_sel] = self.direct_values(q1[out_sel], q2[out_sel], c[out_sel])
                    out[0, out_sel] /= np.sqrt(q1[out_sel] * q2[out_sel])
                    sel = sel[inside]
                    box = self.boxes.get((ik, jk))
            if sel.size:
                out[:, sel] = self._series(box, x1[sel], x2[sel], box.u_of(th[sel]))
        out[0] *= np.sqrt(q1 * q2)
        if isinstance(which, tuple):
            return tuple(out[w].reshape(shape) for w in which)
        return out[which].reshape(shape)


class NodeTable:
    r"""The :class:`QTable` at fixed nodes: for each node $n$ (variances ``q1[n]``, ``q2[n]``) the series of
    $\tilde C$ and $\dot C$ in its box's angle variable, contracted over the variances.  ``__call__(c, idx,
    which)`` evaluates at covariances ``c`` of the nodes ``idx`` (same shape) by a Clenshaw sum; a covariance
    outside a box's angle range rebuilds that box on the wider range (the table never extrapolates)."""

    def __init__(self, table: QTable, q1, q2):
        self.table = table
        self.q1, self.q2 = np.asarray(q1, np.float64).ravel(), np.asarray(q2, np.float64).ravel()
        self.n = np.sqrt(self.q1 * self.q2)
        self.x1, self.x2, self.i, self.j = table.locate(self.q1, self.q2)
        self.key = self.i * 100003 + self.j
        self.keys = {int(k): np.nonzero(self.key == k)[0] for k in np.unique(self.key)}
        R = max(b.R for b in table.boxes.values()) if table.boxes else _R0
        self.coef = np.zeros((2, R + 1, self.q1.size))       # (C or Cdot, angle degree, node)
        self.eps, self.a, self.b = np.ones(self.q1.size), np.zeros(self.q1.size), np.ones(self.q1.size)
        self.lo, self.hi = np.zeros(self.q1.size), np.full(self.q1.size, -1.0)   # empty ranges: filled on use
        self.built: dict = {}

    def _fill(self, k, box):
        sel = self.keys[k]
        T1 = chebyshev_matrix(self.x1[sel], box.d)
        T2 = chebyshev_matrix(self.x2[sel], box.d)
        co = np.einsum("wklr,kn,ln->wrn", box.coef, T1.T, T2.T, optimize=True)   # (2, R+1, n)
        if co.shape[1] > self.coef.shape[1]:
            grown = np.zeros((2, co.shape[1], self.coef.shape[2]))
            grown[:, : self.coef.shape[1]] = self.coef
            self.coef = grown
        self.coef[:, :, sel] = 0.0
        self.coef[:, : co.shape[1], sel] = co
        self.eps[sel], self.a[sel], self.b[sel] = box.eps, box.a, box.b
        self.lo[sel], self.hi[sel] = box.lo, box.hi
        self.built[k] = box

    def __call__(self, c, idx, which: int):
        c = np.asarray(c, np.float64)
        idx = np.asarray(idx)
        n = self.n[idx]
        th = _angle(self.q1[idx], self.q2[idx], c)
        bad = (th < self.lo[idx]) | (th > self.hi[idx])
        direct = None
        if np.any(bad):     # boxes not read here yet (fill them), or too narrow (direct values, or a rebuild)
            kb, tb = self.key[idx[bad]], th[bad]
            for k in np.unique(kb):
                k = int(k)
                sel = self.keys[k]
                ik, jk = int(self.i[sel[0]]), int(self.j[sel[0]])
                box = self.table.boxes.get((ik, jk))
                if box is not None and self.built.get(k) is not box:
                    self._fill(k, box)               # built (or widened) since this table last read it
                tk = tb[kb == k]
                out = tk[(tk < self.lo[sel[0]]) | (tk > self.hi[sel[0]])]
                if out.size:
                    box = self.table.box(ik, jk, float(out.min()), float(out.max()), int(out.size))
                    if box is not None:
                        self._fill(k, box)
            still = (th < self.lo[idx]) | (th > self.hi[idx])
            if np.any(still):
                nodes = idx[still]
                direct = (still, self.table.direct_values(self.q1[nodes], self.q2[nodes], c[still])[which])
                th = np.where(still, 0.5 * (self.lo[idx] + self.hi[idx]), th)   # a harmless angle, overwritten
        u = 2.0 * (np.arcsinh(th / self.eps[idx]) - self.a[idx]) / (self.b[idx] - self.a[idx]) - 1.0
        a = self.coef[which]                         # (R+1, nodes)
        b1 = np.zeros_like(u)
        b2 = np.zeros_like(u)
        u2 = 2.0 * u
        for r in range(a.shape[0] - 1, 0, -1):       # Clenshaw
            b1, b2 = u2 * b1 - b2 + a[r][idx], b1
        val = u * b1 - b2 + a[0][idx]
        if which == 0:
            val = val * n
        if direct is not None:
            val[direct[0]] = direct[1]
        return val
