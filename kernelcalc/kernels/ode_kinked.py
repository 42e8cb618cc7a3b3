r"""The Neural-ODE kernel of a kinked activation on the collapsed-triangle grid (:mod:`._triangle`).

:class:`KinkedSolverMixin` (mixed into :class:`~kernelcalc.kernels.ode.GoursatSolver` as
``kernelcalc.kernels.ode.KinkedGoursatSolver``, so that this module does not import that one) is the solver of
:func:`~kernelcalc.node_kernel` for activations with a kink (relu, leaky relu, abs, elu, user
``Max``/``Abs``/``Piecewise``; gelu beyond $\sigma_wT=3$, where its large variance makes it bend like relu).
Up to $\sigma_wT=3$ the grid is one collapsed-triangle element on $[0,T]^2$; beyond, the composite panels of
:mod:`._panels` (diagonal cells of $\sigma_wh\le1$ in collapsed coordinates, tensor cells off the diagonal, marched
row by row), with the same degree ladder per cell (``_PANEL_LADDERS``).  Pairs of equal norm (the sphere; every pair of a
positively homogeneous $\phi$, whose Gram uses the sphere table of the directions) are solved on the
two triangles $r\ge q$ and $r\le q$ (symmetric), in collapsed coordinates with a sinh map toward the
diagonal whose parameter $\delta$ follows the input angle $\theta_0$ (:func:`._triangle.delta_band`):
the convergence in the degree is geometric for the kink ($\theta_0=0$), the near kink
($0<\theta_0\ll1$) and the conical corner ($\theta_0=\pi$) alike.  Pairs of unequal norm (off the
sphere, non-homogeneous $\phi$) go to the tensor Chebyshev grid, which converges only algebraically
there and says so.

**Degree.** Input angles fall into three bands (:func:`band_of`), each with its own sinh map and
degree $m=n$: band 0 (the self-kernel, $\theta_0\gtrsim0.1$, and $\pi$) is chosen first, the others
when a call first needs them.  A band's degree climbs its ladder (``_BAND_LADDERS``) until the NTK at
its probe angles changes by less than ``tol`` relative to the self-kernel NTK; the coarser of the two
degrees is used, with that change as its error estimate (the convergence is geometric, so the change
is the coarser grid's error).  The largest change of the bands used is ``info["band_changes"]`` and
enters ``info["error_estimate"]``.  On one element (``_ELEMENT_BAND_DELTAS``) bands 1 and 2 are one band, with
$\delta=1/64$.  The grid builds and solves run with one BLAS thread (:func:`._triangle._one_thread`).
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np

from .._x64 import float64
from .._lazy import jnp
from .._validation import accuracy_shortfall
from ..theory import recursion as rec
from ..theory.duals import NUMPY_OPS
from . import _triangle as tri
from . import _panels as pan
from ._anchored import RESIDUAL_TOL, AnchoredDual
from ._qtable import NodeTable, QTable
from ._gram import bucket, flat_pairs, pad_to
from ._interp import barycentric_weights
from ._interp import chebyshev_coefficients, chebyshev_matrix

__all__ = ["KinkedSolverMixin", "band_of", "use_triangles"]

#: sinh-map parameter of each band of input angles (band_of) and the degrees tried for it
_BAND_DELTAS = (1.0, 0.25, 0.0625)
#: the same on one collapsed-triangle element (sigma_w T <= 3): band 2 with delta = 1/64.  Measured (abs, T = 1,
#: NTK error relative to its largest value against degree 56, input angles 1e-7 .. 3e-2): delta = 1/16 needs
#: degree 40 (1.2e-10 at degree 40 for theta_0 = 3e-4, 5.6e-10 at 32), delta = 1/64 errs by <= 5.6e-11 at
#: degree 32 and <= 3.3e-10 at 24; the band-2 solves and grids at degree 32 cost a third of those at 40, and
#: the graded theta table of abs then passes at 129 nodes (257 before: its error at 129 nodes, 1.35e-10 at
#: theta_0 = 4.2e-4, was the band-2 grid error).
#: Bands 1 and 2 are one band there (input angles 2 theta_0 / (1 + sigma_w T) < 0.1, probed at 0.01, 0.003, 0.001
#: times (1 + sigma_w T) / 2): delta = 1/64 errs by <= 2.3e-11 at degree 24 for theta_0 in [0.01, 0.1] (abs, against
#: degree 48), so band 1's own grids (three builds for abs) are not needed.
_ELEMENT_BAND_DELTAS = (1.0, 0.25, 0.015625)
_BAND_LADDERS = ((16, 20, 24, 32, 40), (20, 24, 32, 40), (24, 32, 40, 48))
#: the same per cell of the composite panels (sigma_w T > 3, :mod:`._panels`; each cell has sigma_w h <= 2)
_PANEL_LADDERS = ((12, 16, 20, 24, 32), (16, 20, 24, 32), (20, 24, 32, 40))
_PANEL_SWEEPS = 25         # Picard sweeps of a row of cells (measured 15-22 at sigma_w h = 1), for the cost guard
_TABLE_TOL = 1e-13         # angle tables (_AngleTable) of quadrature duals: target relative accuracy
_TABLE_MAX = 256
_TABLE_MIN_PROBLEMS = 16   # fewer problems (the degree probes): the rule directly (a table costs ~100 sweeps' worth)
_EQUAL_RTOL = 1e-12       # norms this close (relative) are solved as equal
_TABLE_COST_ANGLES = 64    # angles of an angle table (typical; 16-256), for the cost guard
_BATCH = 64                # problems per numpy solve
_OWN_CACHE = 64            # self-kernel solves kept for identical-input pairs (_own_solve)
_QT_TOL = 1e-12            # the (log q, theta) table of a quadrature dual on the panels (_qtable): relative accuracy
_QT_CHUNK = 2048           # expectations per call of its rule (one compiled shape)
_QT_WIDTH = 2.0            # its box width in log q (_qtable._W), for the cost guard
_QT_COST_DEGREE = 14       # its typical variance degree per box, for the cost guard
_QT_COST_ANGLES = 65       # its typical angle nodes per box (49-97 measured at sigma_w T = 5), for the cost guard
_QT_COST_BUILDS = 2.5      # its builds per box (measured 12 builds of 6 boxes at sigma_w T = 5, plus direct values)


class _AngleTable:
    r"""$C$ and $\dot C$ at fixed marginal variances $(q_1, q_2)$ (one pair per grid point) as Chebyshev
    series in the angle $\theta=\arccos(c/\sqrt{q_1q_2})\in[0,\pi]$: for a kink at 0 both are analytic in
    $\theta$ (the polar-sector integrals depend analytically on it), so a few dozen terms reach rounding
    level, and a cross-kernel sweep costs a Clenshaw recurrence per point instead of a quadrature.
    The degree is doubled from 16 until the series predicts the new nodes to ``_TABLE_TOL`` (relative to
    the largest value); the achieved value is ``error``."""

    def __init__(self, dual, q1, q2):
        self.n = np.sqrt(q1 * q2)
        R, vals = 16, self._sample(dual, q1, q2, 16)
        while True:
            new = self._sample(dual, q1, q2, 2 * R, odd=True)
            coef = chebyshev_coefficients(vals)
            u_new = np.sin(0.5 * np.pi * (2 * np.arange(1, 2 * R, 2) - 2 * R) / (2 * R))
            pred = np.einsum("jr,rcp->jcp", chebyshev_matrix(u_new, R), coef)
            scale = np.maximum(np.max(np.abs(vals), axis=(0, 2), keepdims=True), 1e-300)
            err = float(np.max(np.abs(pred - new) / scale))
            merged = np.empty((2 * R + 1,) + vals.shape[1:])
            merged[0::2], merged[1::2] = vals, new
            vals, R = merged, 2 * R
            if err <= _TABLE_TOL or R >= _TABLE_MAX:
                break
        self.coef = chebyshev_coefficients(vals)          # (R+1, 2, P): C and Cdot
        self.error = max(err, 1e-16)

    def _sample(self, dual, q1, q2, R, odd=False):
        k = np.arange(1, R, 2) if odd else np.arange(R + 1)
        u = np.sin(0.5 * np.pi * (2 * k - R) / R)                           # Lobatto points in u
        c = self.n[None, :] * (-np.sin(0.5 * np.pi * u))[:, None]           # cos(theta), theta = pi (u + 1) / 2
        C, Cd = _dual_np(dual, np.broadcast_to(q1, c.shape), np.broadcast_to(q2, c.shape), c, True)
        return np.stack([C, Cd], axis=1)                                   # (nodes, 2, P)

    def __call__(self, c, which):
        """C (``which`` 0) or Cdot (1) at covariances ``c`` (..., P)."""
        n = self.n
        rho = np.clip(np.where(n > 0, c / np.where(n > 0, n, 1.0), 0.0), -1.0, 1.0)
        u = 4.0 / np.pi * np.arctan2(np.sqrt(1.0 - rho), np.sqrt(1.0 + rho)) - 1.0   # 2 theta / pi - 1
        a = self.coef[:, which]
        b1 = np.zeros_like(u)
        b2 = np.zeros_like(u)
        for r in range(a.shape[0] - 1, 0, -1):                             # Clenshaw
            b1, b2 = 2.0 * u * b1 - b2 + a[r], b1
        return u * b1 - b2 + a[0]


@functools.lru_cache(maxsize=16)
def _jitted_dual(dual, derivative: bool):
    """The jax rule of ``dual`` as one compiled function of flat (q1, q2, c)."""
    from .._lazy import jax

    @jax.jit
    def f(q1, q2, c):
        return dual.from_marginals(dual.marginal(q1, derivative, jnp), dual.marginal(q2, derivative, jnp), c,
                                   derivative=derivative, xp=jnp)

    return float64(f)


def _dual_np(dual, q1, q2, c, derivative: bool):
    """$C$ (and $\\dot C$) as numpy arrays: numpy closed forms, else the jax rule on flat arrays padded to
    a power of two (so that the rule compiles for a few shapes only)."""
    if not dual.numpy_ok:
        q1, q2, c = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (q1, q2, c)))
        shape, n = c.shape, c.size
        size = bucket(max(n, 1024))
        flat = [pad_to(a.reshape(-1), size) for a in (q1, q2, c)]
        out = _jitted_dual(dual, derivative)(*flat)
        out = tuple(np.asarray(o)[:n].reshape(shape) for o in (out if derivative else (out,)))
        return out if derivative else out[0]
    xp = np
    m1, m2 = dual.marginal(xp.asarray(q1), derivative, xp), dual.marginal(xp.asarray(q2), derivative, xp)
    out = dual.from_marginals(m1, m2, xp.asarray(c), derivative=derivative, xp=xp)
    return tuple(np.asarray(o) for o in out) if derivative else np.asarray(out)


class _DualC:
    r"""$C(q_1,q_2,c)$ of ``dual`` in numpy, the ``C_of`` of the panel and triangle solvers;
    :meth:`at_variances` gives $c\mapsto C$ at fixed variances (the cross-kernels' wavefronts,
    :func:`._panels._solve_wavefront`): a closed form with ``C_at_variances`` (gelu) computes its variance parts
    once per cell instead of once per Picard sweep (the same values)."""

    def __init__(self, dual):
        self.dual = dual

    def __call__(self, q1, q2, c):
        return _dual_np(self.dual, q1, q2, c, False)

    def at_variances(self, q1, q2):
        prepared = getattr(self.dual.rule, "C_at_variances", None) if (
            self.dual.method == "closed" and self.dual.numpy_ok) else None
        if prepared is None:
            return lambda c: self(q1, q2, c)
        f = prepared(NUMPY_OPS, np.asarray(q1, np.float64), np.asarray(q2, np.float64))
        return lambda c: np.broadcast_to(f(c), np.shape(c))


_HOMOGENEOUS = ("relu", "leaky_relu", "piecewise linear")   # closed forms that depend on c and the angle only


def _homogeneous_closed(dual) -> bool:
    """Whether ``dual`` is a closed form of a positively homogeneous kink (relu, leaky relu, abs, user
    piecewise linear): $C$, $\\dot C$ are functions of $n=\\sqrt{q_1q_2}$, $c$ and the angle alone."""
    return dual.method == "closed" and dual.rule.name.split("(")[0] in _HOMOGENEOUS


def _duals_of_gap(dual, q1, q2, omr):
    r"""$(C,\dot C)$ of a homogeneous kink from $1-\rho$ (``omr``) instead of $c$: the angle
    $\theta=2\operatorname{atan2}(\sqrt{1-\rho},\sqrt{1+\rho})$ keeps its relative accuracy for
    $1-\rho\sim10^{-16}$, where $c/\sqrt{q_1q_2}$ rounded would leave only its first digits."""
    omr = np.clip(omr, 0.0, 2.0)
    theta = 2.0 * np.arctan2(np.sqrt(omr), np.sqrt(2.0 - omr))
    n = np.sqrt(q1 * q2)
    ops = SimpleNamespace(**{**vars(NUMPY_OPS), "angle": lambda a, b, c: theta})
    c = n * np.cos(theta)
    return dual.rule.C_formula(ops, q1, q2, c), dual.rule.Cdot_formula(ops, q1, q2, c)


def _theta_of(omr):
    r"""$\theta=\arccos(1-\text{omr})=2\arcsin\sqrt{\text{omr}/2}$ (relative accuracy at tiny omr)."""
    return 2.0 * np.arcsin(np.sqrt(np.clip(omr, 0.0, 2.0) / 2.0))


def _relu_drop(omr_p, dlt):
    r"""$f(\rho_p)-f(\rho_c)$ for $f(\rho)=\sin\theta+(\pi-\theta)\cos\theta$ ($2\pi C_{\rm relu}/n$),
    $1-\rho_p$ = ``omr_p``, $\rho_p-\rho_c$ = ``dlt`` $\ge0$, with relative accuracy however small ``dlt``:
    $f'(\rho)=\pi-\theta$ gives $f(\rho_p)-f(\rho_c)=\pi\Delta-\int_{\theta_p}^{\theta_c}\theta\sin\theta\,d\theta$;
    the integral by 8-point Gauss-Legendre on $[\theta_p,\theta_c]$ where $\theta_c\le2\theta_p$ (its width
    $\theta_c-\theta_p$ from $\sin$ of the half-angles, without cancellation), else as the difference of
    $\sin\theta-\theta\cos\theta$ (then no cancellation either)."""
    from ..theory.duals import _ARC_SERIES

    omr_c = omr_p + dlt
    tp, tc = _theta_of(omr_p), _theta_of(omr_c)
    x, y = np.sqrt(np.clip(omr_c, 0, 2) / 2), np.sqrt(np.clip(omr_p, 0, 2) / 2)
    den = x * np.sqrt(1 - y * y) + y * np.sqrt(1 - x * x)
    width = 2.0 * np.arcsin(np.where(den > 0, (dlt / 2) / np.where(den > 0, den, 1.0), 0.0))

    def sin_minus(t):   # sin t - t cos t, by its series for t <= 1 (see duals._arc)
        z = t * t
        ser = _ARC_SERIES[-1]
        for a in _ARC_SERIES[-2::-1]:
            ser = ser * z + a
        return np.where(t <= 1.0, t * z * ser, np.sin(t) - t * np.cos(t))

    gx, gw = np.polynomial.legendre.leggauss(8)
    nodes = tp[..., None] + width[..., None] * (gx + 1) / 2
    gl = np.sum(gw * nodes * np.sin(nodes), axis=-1) * width / 2
    integral = np.where(tc <= 2 * tp, gl, sin_minus(tc) - sin_minus(tp))
    return np.pi * dlt - integral


def _gap_drop(dual, n, omr_p, dlt):
    r"""$C(\rho_p)-C(\rho_c)$ of a homogeneous kink $\phi=bz+(a-b)\mathrm{relu}$ ($C=ab\,c+(a-b)^2C_{\rm relu}$)
    from ``omr_p`` $=1-\rho_p$ and ``dlt`` $=\rho_p-\rho_c$, accurate relative to itself (:func:`_relu_drop`)."""
    one = np.float64(1.0)
    at_one = float(dual.rule.C_formula(NUMPY_OPS, one, one, one))   # C at rho = 1: ab + (a-b)^2 / 2
    ab = -float(dual.rule.C_formula(NUMPY_OPS, one, one, -one))     # C at rho = -1: -ab
    amb2 = 2.0 * (at_one - ab)
    return n * (ab * dlt + amb2 / (2 * np.pi) * _relu_drop(omr_p, dlt))


class KinkedSolverMixin:
    r"""Neural-ODE kernel evaluator on the collapsed-triangle grid (module doc); ``M`` is the degree $m=n$.
    Mixed into a :class:`~kernelcalc.kernels.ode.GoursatSolver`, which supplies :meth:`_tensor_factory`
    (the tensor-grid solver of unequal-norm pairs) and, for the panels' cost guard, ``work_limit`` and
    ``cost_message`` (:func:`kernelcalc.kernels.ode.cost_refusal`)."""

    def __init__(self, activation, *, T, sigma_w, sigma_u, sigma_v, v_max, tol=1e-10, M=None, strict=False):
        super().__init__(activation, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, v_max=v_max, tol=tol,
                         M=M, strict=strict, grid=lambda m: self._grid(m, 1.0),
                         scheme="collapsed-triangle spectral collocation (kinked activation)"
                         if _panels_of(T, sigma_w) == 1 else
                         f"collapsed-triangle panels ({_panels_of(T, sigma_w)} panels, kinked or large-q activation)")
        self._tensor = None   # the tensor-grid solver for pairs of unequal norm (made on first use)
        self._unmet: dict = {}   # band -> degree that missed tol (kept by this solver only)
        self._tables: dict = {}  # (grid, diagonal) -> _AngleTable (quadrature duals)
        self._table_error = 0.0
        self._own: dict = {}     # (dual, grid, S0) -> the self-kernel solve of _self_diagonals (_own_solve)
        self._qt = None          # the (log q1, log q2, theta) table of a quadrature dual on the panels (_qtable)
        self._node_tables: dict = {}   # (grid, diagonal) -> NodeTable of self._qt

    def _nodes(self, M) -> int:
        """Time nodes along one axis: $m+1$ (one element) or $Pm+1$ (panels)."""
        return self._panel_count() * int(M) + 1

    def _check_cost(self, dual, pairs: int, n: int, symmetric: bool = False):
        r"""As :meth:`GoursatSolver._check_cost` on one element; on the panels the work is that of their marching:
        pairs $\times$ row sweeps $\times$ cells $\times$ nodes per cell $\times$ the operations per node (the
        expectations, at weight 0.05 for a closed form, and the cell maps' products).  A quadrature rule is
        evaluated through the angle tables (:class:`_AngleTable`): up to three bands of input angles, each a table
        of about ``_TABLE_COST_ANGLES`` angles at every node; a large-$q$ rule (``asymptotic``) once into the
        $(\log q_1,\log q_2,\theta)$ table of :mod:`._qtable` (priced at its boxes
        $\times$ nodes per box $\times$ the rule's points), which the solves then read by Clenshaw sums."""
        P = self._panel_count()
        if P == 1:
            return super()._check_cost(dual, pairs, n, symmetric)
        m = max((int(n) - 1) // P, 1)
        cells = P + P * (P - 1) // 2
        per_cell = (m + 1) ** 2
        if dual.method == "closed":
            factors = [(int(pairs), "pairs"), (_PANEL_SWEEPS, "Picard sweeps per row of cells"),
                       (cells, f"time cells ({P} panels: {P} diagonal, {cells - P} off-diagonal)"),
                       (per_cell, f"nodes per cell (degree {m})"),
                       (0.05 * dual.points + 0.04 * (m + 1), f"operations per node (closed form of price {dual.points} "
                                                             f"at weight 0.05, plus {0.04 * (m + 1):g} for the cell maps)")]
        elif dual.method != "asymptotic":
            factors = [(3, "angle tables (bands of input angles)"), (_TABLE_COST_ANGLES, "angles per table"),
                       (cells, f"time cells ({P} panels: {P} diagonal, {cells - P} off-diagonal)"),
                       (per_cell, f"nodes per cell (degree {m})"),
                       (float(dual.points), "quadrature points per expectation (C and Cdot)")]
        else:
            # the (log q1, log q2, theta) table (_qtable) holds every expectation the solves need; the solves read
            # it by Clenshaw sums (priced as the closed forms' sweeps, at the weight of the angle degree)
            q = max(self.info.get("q_max", 1.0), 1.0)
            q0 = min(self.sigma_u ** 2 * self.v_max, 1.0) if self.v_max > 0 else 1.0
            boxes = int(math.ceil(math.log(q / q0) / _QT_WIDTH)) + 1
            factors = [(boxes * (boxes + 1) // 2, f"boxes of (log q1, log q2) ({boxes} of width {_QT_WIDTH:g} in "
                                                  f"log q, for q from {q0:.3g} to {q:.3g})"),
                       ((_QT_COST_DEGREE + 1) ** 2, f"variance nodes per box (degree {_QT_COST_DEGREE})"),
                       (_QT_COST_ANGLES, "angle nodes per box"),
                       (_QT_COST_BUILDS, "builds per box (its angle range widens as solves of other angles ask)"),
                       (float(dual.points), "quadrature points per expectation (C and Cdot)")]
            self._refuse_if(factors, P)
            factors = [(int(pairs), "pairs"), (_PANEL_SWEEPS, "Picard sweeps per row of cells"),
                       (cells, f"time cells ({P} panels: {P} diagonal, {cells - P} off-diagonal)"),
                       (per_cell, f"nodes per cell (degree {m})"),
                       (0.05 * _QT_COST_ANGLES + 0.04 * (m + 1), f"operations per node (a Clenshaw sum of up to "
                                                                 f"{_QT_COST_ANGLES} terms at weight 0.05, plus "
                                                                 f"{0.04 * (m + 1):g} for the cell maps)")]
        self._refuse_if(factors, P)

    def _refuse_if(self, factors, P):
        """Raise the cost refusal when the product of ``factors`` exceeds the work limit."""
        from .._validation import KernelcalcInputError
        work = math.prod(float(v) for v, _ in factors)
        if work <= self.work_limit:
            return
        q = self.info.get("q_max", float("nan"))
        raise KernelcalcInputError(self.cost_message(
            f"the {self.activation.name} kernel at {self.describe_parameters()}", factors,
            f"the pre-activation variance reaches q = {q:.4g}, on {P} time panels", self.cost_drivers))

    # -- long horizons: composite panels (kernels/_panels.py) ----------------------------------
    def _panel_count(self) -> int:
        return _panels_of(self.T, self.sigma_w)

    def _band_deltas(self) -> tuple:
        """The sinh-map parameter of each band: ``_ELEMENT_BAND_DELTAS`` on one element, ``_BAND_DELTAS`` on panels."""
        return _ELEMENT_BAND_DELTAS if self._panel_count() == 1 else _BAND_DELTAS

    def _grid(self, M, delta):
        r"""The time grid of degree ``M`` and sinh map ``delta``: one collapsed-triangle element
        (:func:`._triangle.triangle_grid`) for $\sigma_wT\le3$, else the composite panels of :mod:`._panels`."""
        P = self._panel_count()
        if P == 1:
            return tri.triangle_grid(int(M), int(M), float(delta), self.T)
        if P * int(M) + 1 > 4 * self.max_nodes:    # before allocating the panels (the solver's limit: max_nodes)
            from .._validation import KernelcalcInputError
            raise KernelcalcInputError(
                f"sigma_w*T = {self.sigma_w * self.T:g} needs {P} time panels ({P * int(M) + 1} nodes, more than the "
                f"limit {self.max_nodes}); reduce T or sigma_w")
        return pan.panel_grid(int(M), P, float(delta), self.T)

    def _fwd(self, C):
        return rec.ode_forward_source(C, self.sigma_w)

    def _bwd(self, Cdot, Lam):
        return rec.ode_backward_source(Cdot, Lam, self.sigma_w)

    def _C(self, dual):
        qt = self._qtable(dual)
        if qt is not None:
            return lambda q1, q2, c: qt(q1, q2, c, 0)
        return _DualC(dual)

    def _qtable(self, dual):
        r"""The :class:`._qtable.QTable` of a large-$q$ dual (``asymptotic``) on the panels (one per solver: every
        degree, band and input angle reads it), else ``None`` (closed forms, Hermite series, and the one-element
        grid, evaluate the dual directly)."""
        if dual.method != "asymptotic" or self._panel_count() == 1:
            return None
        if self._qt is None or self._qt.dual is not dual:
            def evaluate(q1, q2, c):      # fixed-size chunks: one compiled shape of a jax rule, little padding
                C, Cd = np.empty(c.size), np.empty(c.size)
                for lo in range(0, c.size, _QT_CHUNK):
                    sl = slice(lo, lo + _QT_CHUNK)
                    C[sl], Cd[sl] = _dual_np(dual, q1[sl], q2[sl], c[sl], True)
                return C, Cd
            # boxes from the smallest variance q(0) = sigma_u^2 x.x/d of the sphere (one box lower off it)
            q0 = self.sigma_u ** 2 * self.v_max * (1.0 if self.same_norms else math.exp(-2.0))
            self._qt = QTable(evaluate, _QT_TOL, q0=max(q0, 1e-3) * (1.0 - 1e-12))
            self._qt.dual = dual
            self._node_tables = {}
        return self._qt

    def _node_table(self, dual, grid, q):
        """The :class:`._qtable.NodeTable` of ``grid`` for problems sharing one diagonal ``q`` (rows)."""
        key = (grid.name, q[0].tobytes())
        nt = self._node_tables.get(key)
        if nt is None:
            q1, q2 = (a[0] for a in _point_variances(grid, q[:1]))
            nt = self._node_tables[key] = NodeTable(self._qtable(dual), q1, q2)
        return nt

    # -- solves ----------------------------------------------------------------------------------
    def _self_diagonals(self, dual, M, v):
        grid = self._grid(M, 1.0)
        self._check_cost(dual, len(v), self._nodes(M), symmetric=True)
        out = []
        for lo in range(0, len(v), _BATCH):
            S0 = rec.ode_initial(np.asarray(v[lo:lo + _BATCH], dtype=np.float64), self.sigma_u)
            S, q, delta, sweeps = _solve(grid, self._C(dual), S0, self._fwd)
            self._sweeps("self", delta, sweeps, "the pre-activation variance q(t) = E[h_t^2]")
            out.append(q)
            if len(self._own) + S0.size > _OWN_CACHE:
                self._own.clear()
            for i, s0 in enumerate(S0.tolist()):
                self._own[(dual, grid.name, s0)] = (S[i], q[i], delta, sweeps)
        return np.concatenate(out)

    def _own_solve(self, dual, grid, S0):
        r"""The forward solve of identical inputs (their own diagonal, $q=S(t,t)$): the self-kernel solve of
        :meth:`_self_diagonals` when it was made on this grid (the same problem), else solved here."""
        hits = [self._own.get((dual, grid.name, s0)) for s0 in S0.tolist()]
        if all(h is not None for h in hits):
            return (np.stack([h[0] for h in hits]), np.stack([h[1] for h in hits]), max(h[2] for h in hits),
                    max(h[3] for h in hits))
        return _solve(grid, self._C(dual), S0, self._fwd)

    def _pairs(self, dual, M, q, S0, theta0, degrees=None, gap=None):
        """(nngp, ntk) of B pairs of equal norm: ``q`` (B, M+1) their diagonal on the degree-``M`` grid,
        ``S0`` (B,), angles ``theta0``; each band of angles on its own grid (``degrees``: band -> degree).
        ``gap`` (B,): $S_0$ of the parallel pair minus ``S0``, exactly (small angles of a homogeneous kink are
        solved for the deficit from the parallel pair, :meth:`_deficit`)."""
        bands = band_of(theta0, self.sigma_w * self.T)
        if self._panel_count() == 1:      # one element: bands 1 and 2 share band 2's grid (_ELEMENT_BAND_DELTAS)
            bands = np.where(bands == 1, 2, bands)
        if degrees is None:
            degrees = {int(b): self._band_degree(dual, int(b), M) for b in np.unique(bands)}
        grid0 = self._grid(M, 1.0)
        nngp, ntk = np.empty(S0.size), np.empty(S0.size)
        # identical inputs (theta0 = 0) solve their own diagonal (q = S(t, t)), so that the correlation on the
        # diagonal is exactly 1 (a fixed q would differ from S(t, t) by rounding, and arccos turns a relative
        # 1e-16 into an angle of 1e-8: measured 3e-9 in the NTK)
        groups = bands * 2 + (np.asarray(theta0) == 0)
        for key in np.unique(groups):
            b, own = int(key) // 2, bool(key % 2)
            idx = np.nonzero(groups == key)[0]
            Mb = degrees.get(int(b), M)
            grid = self._grid(Mb, self._band_deltas()[b])
            qb = q if Mb == M else _resample(q, grid0, grid)        # q(t) is analytic: interpolate
            for lo in range(0, idx.size, _BATCH):
                sel = idx[lo:lo + _BATCH]
                if not own and b > 0 and gap is not None and _homogeneous_closed(dual):   # near-parallel
                    C, Cdot, dS, nS = self._deficit(dual, grid, qb[sel], S0[sel] + gap[sel], gap[sel])
                    B = C.shape[0]
                elif self._qtable(dual) is not None and isinstance(grid, pan.PanelGrid):
                    C, Cdot, dS, nS = self._table_pairs(dual, grid, qb[sel], S0[sel], own)
                    B = C.shape[0]
                else:
                    table = None if own else self._table(dual, grid, qb[sel])
                    C_of = self._C(dual) if table is None else (
                        lambda q1, q2, c: table(c.reshape(c.shape[0], -1), 0).reshape(c.shape))
                    if table is None and not own and getattr(dual, "points", 1) > 1:   # a dear closed form (elu)
                        C_of = AnchoredDual(lambda q1, q2, c: _dual_np(dual, q1, q2, c, True))
                    S, qk, dS, nS = (self._own_solve(dual, grid, S0[sel]) if own else
                                     _solve(grid, C_of, S0[sel], self._fwd, q=qb[sel]))
                    if isinstance(C_of, AnchoredDual) and C_of.residual() > RESIDUAL_TOL:   # (module _anchored)
                        S, qk, dS, nS = _solve(grid, self._C(dual), S0[sel], self._fwd, q=qb[sel])
                    B = S.shape[0]
                    if table is None:
                        q1, q2 = _point_variances(grid, qk)
                        C, Cdot = _dual_np(dual, q1.reshape(S.shape), q2.reshape(S.shape), S, True)
                    else:
                        flat = S.reshape(B, -1)
                        C, Cdot = table(flat, 0).reshape(S.shape), table(flat, 1).reshape(S.shape)
                C, Cdot = C.reshape(B, -1), Cdot.reshape(B, -1)
                end = _terminal(grid)
                LamT = rec.ode_backward_terminal(Cdot[:, end], self.sigma_v)
                Lam, dL, nL = _backward(grid, Cdot, LamT, self._bwd)
                Lam = Lam.reshape(B, -1)
                integral = (C * Lam) @ grid.omega
                nngp[sel] = rec.ode_nngp(C[:, end], self.sigma_v)
                ntk[sel] = rec.ode_ntk(C[:, end], integral, S0[sel], Lam[:, 0], self.sigma_v, self.sigma_w)
                self._sweeps("cross", max(dS, dL), max(nS, nL),
                             "the cross-covariance S(t, s) or the backward kernel Lambda(t, s)")
        return nngp, ntk

    def _table_pairs(self, dual, grid, q, S0, own):
        r"""$(C,\dot C)$ on the panels of B problems through the :class:`._qtable.QTable`: identical inputs (``own``:
        the diagonal is iterated with the row) evaluate it at every node, the others through the :class:`NodeTable`
        of their shared diagonal ``q``.  Returns ``(C, Cdot, change, sweeps)`` (node arrays ``(B, points)``)."""
        qt = self._qtable(dual)
        if own:
            S, qk, dS, nS = pan.solve(grid, self._C(dual), S0, self._fwd)
            q1, q2 = grid.variances(qk)
            C, Cdot = qt(q1, q2, S)
        else:
            nt = self._node_table(dual, grid, q)
            idx = np.broadcast_to(np.arange(grid.points), (S0.shape[0], grid.points))
            S, _, dS, nS = pan.solve(grid, lambda a, b, c, x: nt(c, x[0], 0), S0, self._fwd, q=q, aux=(idx,))
            C, Cdot = nt(S, idx, 0), nt(S, idx, 1)
        self.info["qtable"] = dict(boxes=len(qt.boxes), builds=qt.builds, evaluations=qt.evaluations, error=qt.error,
                                   direct=qt.direct)
        amplified = qt.error * (1.0 + self.sigma_w * self.T)
        if amplified > 10.0 * self.tol and not getattr(qt, "warned", False):
            qt.warned = True
            accuracy_shortfall(f"the (log q, theta) table of the {self.activation.name} expectations reaches a relative "
                               f"error of only {qt.error:.1e} (x {1 + self.sigma_w * self.T:g} through the time "
                               f"integrals: {amplified:.1e} > 10 tol = {10 * self.tol:.1e})", self.strict)
        return C, Cdot, dS, nS

    def _deficit(self, dual, grid, q, S0_self, gap):
        r"""$(C,\dot C)$ on ``grid`` of B near-parallel pairs of a homogeneous kink, from the deficit
        $D=S_\parallel-S$ against the parallel pair ($S_\parallel$: the same diagonal ``q``, $S_0$ =
        ``S0_self``).  $D$ solves the same Goursat problem, $D=D_0+W\sigma_w^2(C(S_\parallel)-C(S))$ with
        $D_0$ = ``gap`` (exact), and $1-\rho=(1-\rho_\parallel)+D/\sqrt{q_1q_2}$ with $1-\rho_\parallel=0$
        exactly on the diagonal: the angle keeps its relative accuracy at input angles $\theta_0\to0$,
        where $S$ itself would carry only the first digits of $1-\rho\approx\theta_0^2$ (an error
        $\sim\epsilon/\theta_0$ in the angle: measured 1e-8 relative in the abs NTK at $\theta_0=10^{-7}$).
        Returns ``(C, Cdot, change, sweeps)``."""
        B = q.shape[0]
        if isinstance(grid, pan.PanelGrid):      # the same on the panels (node arrays flat)
            q1, q2 = grid.variances(q)
            n = np.sqrt(q1 * q2)
            root = np.where(n > 0, n, 1.0)
            S_par, _, d1, k1 = pan.solve(grid, self._C(dual), S0_self, self._fwd, q=q)
            omr_par = 1.0 - S_par / root
            omr_par[:, grid.on_diagonal] = 0.0
            D, _, d2, k2 = pan.solve(grid, lambda a, b, D, x: _gap_drop(dual, x[0], x[1], D / x[2]), gap, self._fwd,
                                     q=q, aux=(n, omr_par, root))
            C, Cdot = _duals_of_gap(dual, q1, q2, omr_par + D / root)
            return C, Cdot, max(d1, d2), max(k1, k2)
        m1, n1 = grid.m + 1, grid.n + 1
        q1 = np.broadcast_to(q[:, :, None], (B, m1, n1))
        q2 = (q @ grid.Q.T).reshape(B, m1, n1)
        n = np.sqrt(q1 * q2)
        S_par, _, d1, k1 = tri.solve(grid, self._C(dual), S0_self, self._fwd, q=q)
        omr_par = 1.0 - S_par / np.where(n > 0, n, 1.0)
        omr_par[:, :, 0] = 0.0                                 # v = 1: the diagonal, rho = 1 exactly
        root = np.where(n > 0, n, 1.0)
        D, _, d2, k2 = tri.solve(grid, lambda a, b, D: _gap_drop(dual, n, omr_par, D / root), gap, self._fwd, q=q)
        C, Cdot = _duals_of_gap(dual, q1, q2, omr_par + D / root)
        return C, Cdot, max(d1, d2), max(k1, k2)

    def _choose_M(self, dual, v):
        r"""The degree of band 0 (the self-kernel, $\theta_0\ge0.1$ and $\pi$; its diagonal $q(t)$ serves the
        other bands), raised along its ladder until the NTK at the probe angles changes by less than
        ``tol`` (relative to the largest); the other bands are chosen when first needed (:meth:`_band_degree`)."""
        self.info["band_degrees"], self.info["band_changes"] = {}, {}   # shared with the memo of the time grid
        self.info["band_deltas"] = dict(enumerate(self._band_deltas()))
        M, change = self._ladder(dual, 0, v, None, None)
        return M, change

    def _ladder(self, dual, b, v, M0, q0):
        """Degree of band ``b`` (and its last change): its ladder until the probes' NTK changes by < tol."""
        scale = (1.0 + self.sigma_w * self.T) / 2.0
        probes = ((0.0, min(0.1 * scale, 3.0), 1.0, math.pi), (0.01 * scale,), (0.001 * scale,))
        if self._panel_count() == 1:      # band 2 holds band 1's angles too; 0.003: its largest error (abs, relu)
            probes = probes[:2] + ((0.01 * scale, 0.003 * scale, 0.001 * scale),)
        theta = np.array(probes[b])
        S0 = rec.ode_initial(v * np.cos(theta), self.sigma_u)
        gap = rec.ode_initial(2.0 * v * np.sin(theta / 2) ** 2, self.sigma_u)
        prev, change, ref, M_prev = None, float("nan"), None, None
        for M in (_BAND_LADDERS if self._panel_count() == 1 else _PANEL_LADDERS)[b]:
            q, Mq = (self._self_diagonals(dual, M, np.array([v])), M) if b == 0 else (q0, M0)
            ntk = self._pairs(dual, Mq, np.repeat(q, theta.size, axis=0), S0, theta, {b: M}, gap=gap)[1]
            if b > 0 and ref is None:   # relative to the self-kernel NTK, as band 0
                ref = abs(float(self._pairs(dual, M0, q0, np.array([rec.ode_initial(v, self.sigma_u)]),
                                            np.zeros(1), {0: M0})[1][0]))
            elif b == 0:
                ref = float(np.max(np.abs(ntk)))
            if prev is not None:
                change = float(np.max(np.abs(ntk - prev)) / ref) if ref > 0 else 0.0
                if change <= self.tol:
                    # the coarser degree, whose error the change estimates (geometric convergence: the
                    # finer one's error is far smaller, so |K_coarse - K_fine| ~ the coarse error)
                    self.info["band_degrees"][b] = M_prev
                    self.info.setdefault("band_changes", {})[b] = change
                    return M_prev, change
            prev, M_prev = ntk, M
        accuracy_shortfall(
            f"time grid: the NTK at input angles {', '.join(f'{t:.3g}' for t in theta)} still changes by "
            f"{change:.1e} (relative) at degree {M} of the collapsed-triangle grid (sinh map "
            f"delta = {self._band_deltas()[b]:g}), above tol = {self.tol:.1e}", self.strict)
        self._unmet[b] = (M, change)   # not memoised with the grid: a later call chooses (and warns) again
        return M, change

    def _table(self, dual, grid, q):
        """The :class:`_AngleTable` of ``grid`` for problems sharing one diagonal ``q`` (rows), or ``None``
        (a closed form, or different diagonals)."""
        if (dual.method == "closed" or q.shape[0] < _TABLE_MIN_PROBLEMS or not np.all(q == q[:1])
                or isinstance(grid, pan.PanelGrid)):   # (the panels call C on parts of the grid: no node layout here)
            return None
        key = (grid.name, q[0].tobytes())
        table = self._tables.get(key)
        if table is None:
            q1, q2 = (a[0] for a in _point_variances(grid, q[:1]))
            table = self._tables[key] = _AngleTable(dual, q1, q2)
            self.info["angle_table_error"] = max(self.info.get("angle_table_error", 0.0), table.error)
            self._table_error = max(self._table_error, table.error)
        return table

    def relative_error_estimate(self) -> float:
        """As :meth:`GoursatSolver.relative_error_estimate`, with the time-grid change of every band of
        input angles used so far (and of the tensor grid of unequal-norm pairs)."""
        changes = list((self.info.get("band_changes") or {}).values()) + [c for _, c in self._unmet.values()]
        changes.append(self.info.get("time_error_estimate") or 0.0)
        if self._tensor is not None:
            changes.append(self._tensor.info.get("time_error_estimate") or 0.0)
        base = dict(self.info)
        try:
            self.info = dict(base, time_error_estimate=max(changes))
            table = max(self._table_error, self._qt.error if self._qt is not None else 0.0)
            return super().relative_error_estimate() + table * (1.0 + self.sigma_w * self.T)
        finally:
            self.info = base

    def _band_degree(self, dual, b: int, M0: int) -> int:
        """The degree of band ``b`` (chosen on first use; band 0: ``M0``)."""
        if b == 0 or self.M_fixed is not None:
            return M0
        known = self.info.setdefault("band_degrees", {})
        self.info.setdefault("band_changes", {})
        if b in known:
            return known[b]
        if b in self._unmet:
            return self._unmet[b][0]
        q0 = self._cached_diagonals(dual, M0, np.array([self.v_max]))
        return self._ladder(dual, b, self.v_max, M0, q0)[0]

    def _tensor_solver(self):
        """The tensor-grid solver for pairs of unequal norm (made on first use)."""
        if self._tensor is None:
            self._tensor = self._tensor_factory()
            self._tensor.pairs_hint = self.pairs_hint
        return self._tensor

    def __call__(self, sxx, syy, sxy):
        shape, (sxx, syy, sxy), v_unique, inverse = flat_pairs(sxx, syy, sxy)
        dual, M = self._dual_and_M(v_unique)
        nngp, ntk = np.empty(sxy.size), np.empty(sxy.size)
        # equal norms up to rounding (1e-12 relative): solved as equal (the norm of x for both; the
        # resulting error is of the size of the difference)
        equal = np.abs(sxx - syy) <= _EQUAL_RTOL * np.maximum(sxx, syy)
        if np.any(~equal):
            t = self._tensor_solver()
            nngp[~equal], ntk[~equal] = t(sxx[~equal], syy[~equal], sxy[~equal])
            for key in ("M", "time_error_estimate", "sweep_change"):
                if key in t.info:
                    self.info[f"unequal_norms_{key}"] = t.info[key]
            self.info["time_error_estimate"] = max(self.info.get("time_error_estimate") or 0.0,
                                                   t.info.get("time_error_estimate") or 0.0)
        if np.any(equal):
            ix = inverse[: sxx.size][equal]
            diag = self._cached_diagonals(dual, M, v_unique)
            v = sxx[equal]
            root = np.where(v > 0, v, 1.0)
            theta0 = np.where(v > 0, np.arccos(np.clip(sxy[equal] / root, -1.0, 1.0)), 0.0)
            # exactly parallel inputs are the self-kernel (theta0 = 0: the exact kink)
            theta0 = np.where((sxy[equal] == v) | (sxy[equal] == syy[equal]), 0.0, theta0)
            S0 = rec.ode_initial(sxy[equal], self.sigma_u)
            gap = rec.ode_initial(v - sxy[equal], self.sigma_u)    # exact for near-parallel inputs (Sterbenz)
            nngp[equal], ntk[equal] = self._pairs(dual, M, diag[ix], S0, theta0, gap=gap)
        if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
            raise self._blow_up("the kernel")
        return nngp.reshape(shape), ntk.reshape(shape)

    def at_angles(self, sxx, syy, theta):
        r"""(nngp, ntk) at norms ``sxx``, ``syy`` and input angles ``theta`` given as angles (the graded theta
        tables of :mod:`._gram` sample at $\theta\approx10^{-8}$, where $x\cdot y/d=\sqrt{v_xv_y}\cos\theta$
        rounded keeps a few digits of $1-\cos\theta$: an angle error of several per cent, which stalled abs's
        table).  Pairs of equal norm are solved at the exact angle; others as :meth:`__call__`."""
        sxx, syy, theta = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (sxx, syy, theta)))
        equal = np.abs(sxx - syy) <= _EQUAL_RTOL * np.maximum(sxx, syy)
        if not np.all(equal & (sxx > 0)):
            return self(sxx, syy, np.sqrt(sxx * syy) * np.cos(theta))
        shape, v, th = sxx.shape, sxx.ravel(), theta.ravel()
        v_unique, inverse = np.unique(v, return_inverse=True)
        dual, M = self._dual_and_M(v_unique)
        diag = self._cached_diagonals(dual, M, v_unique)
        S0 = rec.ode_initial(v * np.cos(th), self.sigma_u)
        gap = rec.ode_initial(2.0 * v * np.sin(th / 2) ** 2, self.sigma_u)
        nngp, ntk = self._pairs(dual, M, diag[inverse.ravel()], S0, th, gap=gap)
        if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
            raise self._blow_up("the kernel")
        return nngp.reshape(shape), ntk.reshape(shape)


def band_of(theta0, sigma_w_T: float) -> np.ndarray:
    r"""Band of every input angle $\theta_0$: 0 for $\theta_0=0$ (the exact kink) and
    $2\theta_0/(1+\sigma_wT)\ge0.1$, 1 down to $0.01$, 2 below (near kinks closer to the diagonal: a
    stronger sinh map, ``_BAND_DELTAS``).  Measured (relu, T = 1; NTK error against degree 40): for
    $\theta_0\ge0.1$ the plain map ($\delta=1$) at degree 16 errs by at most 6e-12, where
    $\delta=1/16$ errs by 4e-12 and $\delta=1/64$ by 3e-11; for $\theta_0=0.01$-$0.03$, $\delta=1/4$ at
    degree 20 by 2e-11; for $\theta_0=0.003$, $\delta=1/16$ at degree 24 by 1e-10."""
    th = np.asarray(theta0, float)
    est = 2.0 * th / (1.0 + sigma_w_T)
    return np.where((th == 0) | (est >= 0.1), 0, np.where(est >= 0.01, 1, 2))


#: smooth activations that bend like relu along t = s once q is large (their smooth scale 1/sqrt(q) is tiny) and
#: have a closed-form dual: past sigma_w T = 3 they take the panels too (the tensor grid does not converge there)
_RELU_LIKE_AT_LARGE_Q = ("gelu",)


#: smooth activations without a closed-form dual that take the panels for sigma_w T in (lo, hi], where their
#: expectations need the large-q rule (softplus: q(T) ~ 400 at sigma_w T = 5, past the Hermite series' reach), read
#: through the (log q, theta) table of :mod:`._qtable`.  Measured (N = 200 on the sphere, cold, load 3-8): softplus
#: sigma_w T = 5: 118 s, error estimate 6.1e-11 (refused before); sigma_w T = 6: 247 s, 6.8e-5 (warns); sigma_w T = 10:
#: 1474 s, 1.1e-4 (boxes next to the diagonal q1 ~ q2 do not converge in log q at theta ~ 1/sqrt(q)), so beyond hi
#: the tensor grid's cost guard refuses as before.
_LARGE_Q_PANELS = {"softplus": (4.5, 5.0), "silu": (4.5, 5.0)}


def use_triangles(activation, T: float, sigma_w: float) -> bool:
    r"""Whether :func:`~kernelcalc.node_kernel` takes the collapsed-triangle grid: a kinked activation, at every
    $\sigma_wT$ (one element up to 3, composite panels beyond: :mod:`._panels`), the relu-like smooth ones
    (``_RELU_LIKE_AT_LARGE_Q``) beyond $\sigma_wT=3$, and softplus and silu for $4.5<\sigma_wT\le5$
    (``_LARGE_Q_PANELS``)."""
    return bool(activation.is_piecewise_smooth) or (
        activation.name in _RELU_LIKE_AT_LARGE_Q and sigma_w * T > _SINGLE_ELEMENT + 1e-9) or (
        _LARGE_Q_PANELS.get(activation.name, (math.inf, 0.0))[0] + 1e-9 < sigma_w * T
        <= _LARGE_Q_PANELS.get(activation.name, (math.inf, 0.0))[1] + 1e-9)


# -- long horizons: the composite panels of kernels/_panels.py (one dispatch per grid operation) ----------
_SINGLE_ELEMENT = 3.0     # sigma_w * T up to which one collapsed-triangle element is used


def _panels_of(T: float, sigma_w: float) -> int:
    """Panels of the time grid: 1 (one collapsed-triangle element) up to sigma_w T = 3, else
    :func:`._panels.panel_count`."""
    return 1 if sigma_w * T <= _SINGLE_ELEMENT + 1e-9 else pan.panel_count(T, sigma_w)


def _solve(grid, C_of, S0, source, q=None):
    if isinstance(grid, pan.PanelGrid):
        return pan.solve(grid, C_of, S0, source, q=q)
    return tri.solve(grid, C_of, S0, source, q=q)


def _backward(grid, Cdot, LamT, source):
    if isinstance(grid, pan.PanelGrid):
        return pan.backward(grid, Cdot.reshape(Cdot.shape[0], -1), LamT, source)
    return tri.backward(grid, Cdot.reshape(Cdot.shape[0], grid.m + 1, grid.n + 1), LamT, source)


def _point_variances(grid, q):
    """``(q1, q2)`` (B, points): the variances $q(t)$, $q(s)$ at every node of ``grid`` from its diagonal ``q``."""
    if isinstance(grid, pan.PanelGrid):
        return grid.variances(q)
    return np.repeat(q, grid.n + 1, axis=1), q @ grid.Q.T


def _terminal(grid) -> int:
    """Flat index of the node (T, T)."""
    return grid.terminal if isinstance(grid, pan.PanelGrid) else grid.m * (grid.n + 1)


def _resample(q, grid0, grid):
    """The diagonal ``q`` on ``grid0``'s nodes -> on ``grid``'s (interpolation: q(t) is analytic)."""
    if isinstance(grid0, pan.PanelGrid):
        return grid0.resample(q, grid)
    return q @ barycentric_weights(grid0.r, grid.r).T
