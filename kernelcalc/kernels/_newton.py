r"""Newton steps for the Picard sweeps of a cross-kernel Goursat solve (numpy Mehler series; a dear numpy closed form).

A cross-kernel solve iterates $S\leftarrow G(S)=S_0+\sigma_w^2A\,C(S)\,A^\top$ with fixed marginals (the
self-kernel diagonals $q_x(t)$, $q_y(s)$), so $C$ depends on $S$ cell by cell, through the covariance
$c=S_{ij}$ alone, and by Price's theorem $\partial C/\partial c=E[\phi'(a)\phi'(b)]=\dot C$.  The Jacobian of the
map is therefore the linear Volterra operator

$$G'(S)\,\delta=\sigma_w^2A\,(\dot C\circ\delta)\,A^\top .$$

Plain sweeps converge linearly (measured, tanh at $\sigma_wT=1$: the change falls by 30-50x per sweep, so from
a change of $10^{-6}$, where the sweeps switch to the exact series, six more full-accuracy sweeps reach the
stopping test $2\cdot10^{-15}$; those sweeps and the final $(C,\dot C)$ are most of a solve).  From the first
exact sweep on, every sweep also evaluates $\dot C$ and the next iterate is the Newton step
$S_{k+1}=S_k+\delta$, $\delta=(G(S_k)-S_k)+G'(S_k)\,\delta$, which squares the error (from a change of ~1e-7 to
rounding).  The linear equation is solved by its own fixed-point iteration (matrix products on the $n\times n$
grid only, no series: it converges at the plain sweeps' rate, in a few dozen microseconds per batch).  The sweep
that meets the stopping test has then evaluated $C$ and $\dot C$ already: the solve's final $(C,\dot C)$
(:meth:`ChordNewton.final`) are those, at the last iterate $S_k$ rather than at its image $G(S_k)$ (a relative
difference below the stopping test's $2\cdot10^{-15}$), so no further series is summed.

The fixed point and the stopping test are unchanged: the solve still stops on the change
$\max|G(S_k)-S_k|/\max|G(S_k)|$ of a plain sweep and returns the plain image $G(S_k)$
(:func:`kernelcalc.kernels.ode_grid._picard`); only the iterates visited on the way differ.  Measured on the
norm-interpolation table of node tanh (1680 pairs, 13 time nodes): the exact series per solve fell from 6 sweeps
of $C$ plus the final $(C,\dot C)$ to two sweeps of $(C,\dot C)$, and the Gram moved by at most 1e-14.  A step that
does not reduce the change (a map far from affine, the clipping of :func:`~kernelcalc.kernels.ode_grid._bounded`
near a blow-up) turns the steps off for the rest of the solve: plain sweeps.

A dear closed form (elu: three bivariate Mills ratios per cell, ``points`` > 1) takes the steps from the first sweep,
its $(C,\dot C)$ in one evaluation (the two share the Mills ratios: measured 1.6 µs per cell either way).  Measured on
the tensor-grid solves of elu's norm-interpolation plan (622 pairs, 17 nodes): 2.0 -> 0.9 s.  A cheap closed form
does not take them: its linear iterations cost more than the sweeps they save (sin, cos, erf measured 1.3-1.8x
slower with them).
"""

from __future__ import annotations

import numpy as np

from ..theory import recursion as rec

__all__ = ["ChordNewton"]

_LINEAR_TOL = 1e-12      # relative change at which the linear iteration for the step stops
_LINEAR_MAX = 100        # its iterations at most (it converges like the plain sweeps: ~10)


class ChordNewton:
    r"""The Newton steps of one batched cross-kernel solve (module doc).

    **Arguments:** ``A``: the grid's integration matrix $(n, n)$; ``sigma_w``; ``operator`` (optional): the
    Jacobian's linear map $X\mapsto$ the forward map's image of $X=\dot C\circ\delta$ on another grid.

    ``wants_derivative(exact)``: whether the sweep about to run (exact or not) should also evaluate $\dot C$
    (every exact sweep while the steps are on); ``keep(G, C, Cdot)`` stores that sweep's image and duals; calling
    the object with ``(S, G, change, previous change)`` returns the next iterate: $S+\delta$, or the plain image
    ``G`` (before $\dot C$ is known, or once the steps are off); ``final(S)``: the stored ``(C, Cdot)`` when ``S``
    is the image of the sweep that computed them, else ``None``."""

    def __init__(self, A, sigma_w: float, operator=None):
        self.A, self.sigma_w = A, sigma_w
        #: the Jacobian's linear map of $\dot C\circ\delta$ (default the tensor grid's $\sigma_w^2A(\cdot)A^\top$; the
        #: collapsed triangle's deficit solves pass their own, :func:`kernelcalc.kernels._triangle.solve`)
        self.operator = operator or (lambda X: A @ rec.ode_forward_source(X, sigma_w) @ A.T)
        self.J = None
        self.off = False
        self.last = None
        self.exact = True

    def wants_derivative(self, exact: bool) -> bool:
        return exact and not self.off

    def keep(self, G, C, Cdot, exact: bool = True) -> None:
        self.J = np.asarray(Cdot)
        self.last = (G, C, Cdot)
        self.exact = exact           # (a Cdot for the Jacobian only, at a looser tolerance: never the final one)

    def final(self, S):
        last = self.last
        return None if last is None or last[0] is not S or not self.exact else last[1:]

    def __call__(self, S, G, delta, prev):
        if self.J is None or self.off or self.last is None or self.last[0] is not G:
            return G
        if not delta < prev:          # the last step did not help: plain sweeps from here
            self.off = True
            return G
        r = G - S
        d = r
        for _ in range(_LINEAR_MAX):
            new = r + self.operator(self.J * d)
            change = float(np.max(np.abs(new - d))) / max(float(np.max(np.abs(new))), 1e-300)
            d = new
            if change <= _LINEAR_TOL:
                return S + d
            if not np.isfinite(change):
                break
        self.off = True               # the linear iteration did not settle: plain sweeps
        return G
