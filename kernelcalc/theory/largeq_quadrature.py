r"""The quadrature of the large-$q$ rule (:class:`~kernelcalc.theory.largeq_table.TabulatedRule` with its series and
tables off), written once for jax.numpy (traced: the rule's compiled regimes) and numpy (eager: the step selection).

With the decomposition $f=A+R$ of :mod:`kernelcalc.theory.largeq` ($f\in\{\phi,\phi'\}$, $A$ a closed-form asymptote,
$R$ analytic and localised on $|x|\le L$), for $(a,b)\sim N(0,[[q_1,c],[c,q_2]])$, $r=c/\sqrt{q_1q_2}$,

$$E[f(a)f(b)] = E[A(a)A(b)] + E[R(a)A(b)] + E[A(a)R(b)] + E[R(a)R(b)].$$

The first term is closed (:meth:`~kernelcalc.theory.largeq.Asymptote.AA`).  Each cross term is a trapezoid sum over
the localised variable $a\sim N(0,q_a)$ on $|a|\le H_a=\min(L,9\sqrt{q_a})$ with the $2k+1$ nodes
$a_i=H_a\,i/k$, $|i|\le k$, $k=\lfloor L/h\rfloor$ (step $H_a/k\le h$),

$$E[R(a)A(b)]\approx\sum_{|i|\le k}\frac{H_a}{k}\,p_{q_a}(a_i)R(a_i)\;m_A\big(\kappa a_i,\,q_b(1-r^2)\big),\qquad
\kappa=c/q_a,$$

with the closed conditional $m_A(\mu,s^2)=E[A(\mu+sZ)]$ (:meth:`~kernelcalc.theory.largeq.Asymptote.conditional`).
The last term is the same sum over the variable of **larger** variance ($|\kappa|\le1$) with the remainder's inner
Gaussian average $G(\kappa a_i,\sqrt{q_b(1-r^2)})$ in place of $m_A$, $G(\mu,s)=E[R(\mu+sZ)]$ tabulated once per
activation (:class:`~kernelcalc.theory.largeq_remainder.RemainderTable`).  ``cross_only``: $E[R(a)A(b)]$ alone, $a$
the first variable (the one cross term of the rule's mixed cells).

**Padded nodes** (``k`` given, traced): the nodes of a finer step, $|i|\le k_{\rm pad}$, with $i/k$ clipped to $\pm1$
and weight zero past $k$: the same sum up to rounding (the clipped nodes add exact zeros), several steps through one
compiled shape.

**Eagerly** (:func:`quadrature_values`, :class:`NumpyQuadrature`) the same function runs on numpy arrays in chunks of
``_NP_CHUNK`` covariances (temporaries of a few MB: the table's gathered coefficients are
$\text{chunk}\times(2k+1)\times d_\mu$ values): no trace, no compile.  The step selection of
:func:`~kernelcalc.theory.largeq_table.choose_tabulated` and the reference of
:func:`~kernelcalc.theory.largeq_table.far_difference` evaluate the quadrature at about $10^2$ covariances only, where
compiling it cost seconds (1-3 s per process, by load) and the sums milliseconds (about 0.1-0.3 ms per
$(C,\dot C)$: 0.1-0.3 s for a whole selection).  The values are the compiled quadrature's to rounding (the same
operations, scipy's special functions for jax's; ``tests/test_largeq_quadrature.py``): a few $10^{-16}$ of
$\sqrt{Ef(a)^2Ef(b)^2}$, up to a few $10^{-14}$ where the ``gelu`` asymptote's closed form takes $q_1q_2-c^2$ at
$r\to\pm1$ and $q\sim10^7$ (XLA fuses it into a multiply-add; the input's own rounding moves it as much).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._lazy import jnp   # deferred: jax is imported on first use
from .largeq import Asymptote
from .largeq_remainder import remainder_table

__all__ = ["quadrature", "quadrature_values", "NumpyQuadrature"]

#: covariances per numpy chunk (temporaries chunk x (2L/h + 1) x d_mu floats: ~4 MB at h = 0.16)
_NP_CHUNK = 16


def quadrature(asymptote: Asymptote, h: float, q1, q2, c, derivative: bool, cross_only: bool = False, k=None,
               xp=None):
    r"""$E[f(a)f(b)]$ (``derivative``: $f=\phi'$) by the quadrature of the module doc, on flat arrays of covariances.

    **Arguments:**

    - ``asymptote``: the decomposition $f=A+R$; ``h``: the outer step (nodes $|i|\le\lfloor L/h\rfloor$).
    - ``q1``, ``q2``, ``c``: flat arrays of one shape ``(B,)``.
    - ``cross_only``: $E[R(a)A(b)]$ alone, $a\sim N(0,q_1)$ localised.
    - ``k``: $L/h'$ of a coarser step $h'$ as a (traced) scalar, evaluated on this step's nodes, those past ``k``
      clipped to the end point and weighted zero; ``None``: $k=\lfloor L/h\rfloor$, static.
    - ``xp``: ``None`` (jax.numpy, traceable) or numpy.

    **Returns:** an array ``(B,)``."""
    asy = asymptote
    tab = remainder_table(asy, derivative)
    X = jnp if xp is None else xp
    L = asy.L
    if k is None:
        k = int(L / h)
        x0 = X.arange(-k, k + 1, dtype=np.float64) / k                    # (n,) on [-1, 1]
        on = None
    else:
        kp = int(L / h)
        i = X.arange(-kp, kp + 1, dtype=np.float64)
        x0, on = X.clip(i / k, -1.0, 1.0), (X.abs(i) <= k).astype(np.float64)
    n = X.sqrt(q1 * q2)
    r = X.where(n > 0, X.clip(c / X.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
    one_m_r2 = X.maximum((1.0 - r) * (1.0 + r), 0.0)

    def nodes(qa):
        """Trapezoid nodes and step over the localised variable a ~ N(0, qa): |a| <= L, or |a| <= 9 sqrt(qa)
        when that is narrower (a small variance: the Gaussian, not R, localises a)."""
        half = X.minimum(L, 9.0 * X.sqrt(qa))[:, None]
        a = half * x0[None, :]
        w = (half / k) * X.exp(-0.5 * a * a / qa[:, None]) / X.sqrt(2 * math.pi * qa[:, None])
        if on is not None:
            w = w * on[None, :]
        return a, w * asy.remainder(a, derivative, xp=xp)

    def cross(qa, qb, a, wR):
        """E[R(a) A(b)], a ~ N(0, qa) localised (nodes a, weights wR), b | a ~ N(kappa a, qb (1 - r^2))."""
        mA = asy.conditional((c / qa)[:, None] * a, (qb * one_m_r2)[:, None], derivative, xp=xp)
        return X.sum(wR * mA, axis=-1)

    a1, w1 = nodes(q1)
    if cross_only:          # E[R(a) A(b)] alone, a ~ N(0, q1) localised
        return cross(q1, q2, a1, w1)
    a2, w2 = nodes(q2)
    big1 = q1 >= q2                                   # integrate over the larger variance: |kappa| <= 1
    qa, qb = X.where(big1, q1, q2), X.where(big1, q2, q1)
    a, wR = X.where(big1[:, None], a1, a2), X.where(big1[:, None], w1, w2)
    G = tab((c / qa)[:, None] * a, X.sqrt(qb * one_m_r2), xp=xp)
    rr = X.sum(wR * G, axis=-1)
    return asy.AA(q1, q2, c, derivative, xp=xp) + cross(q1, q2, a1, w1) + cross(q2, q1, a2, w2) + rr


def quadrature_values(asymptote: Asymptote, h: float, q1, q2, c, derivative: bool = True, cross_only: bool = False,
                      chunk: int = _NP_CHUNK) -> tuple:
    r"""$(C,\dot C)$ (or $(C,)$ without ``derivative``) by :func:`quadrature` in numpy, for numpy covariances
    (broadcast), ``chunk`` covariances at a time (module doc); ``cross_only`` as there.

    **Returns:** numpy arrays of the broadcast shape."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, c)))
    shape = c.shape
    flat = [np.ascontiguousarray(a.reshape(-1)) for a in (q1, q2, c)]
    ds = (False, True) if derivative else (False,)
    outs = [np.empty(flat[0].size) for _ in ds]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for lo in range(0, flat[0].size, chunk):
            part = [v[lo:lo + chunk] for v in flat]
            for o, d in zip(outs, ds):
                o[lo:lo + chunk] = quadrature(asymptote, h, *part, d, cross_only=cross_only, xp=np)
    return tuple(o.reshape(shape) for o in outs)


@dataclasses.dataclass(frozen=True)
class NumpyQuadrature:
    r"""The quadrature alone at the step ``h`` (:class:`~kernelcalc.theory.largeq_table.TabulatedRule` with
    ``far=False, near=False``), evaluated eagerly in numpy (:func:`quadrature_values`): a level of
    :func:`~kernelcalc.theory.largeq_table.choose_tabulated`'s step selection (for
    :func:`~kernelcalc.theory.largeq.level_values`), compiling nothing."""

    asymptote: Asymptote
    h: float

    def expect(self, q1, q2, c, derivative: bool = True, blocked=None):
        r"""$(C,\dot C)$ (or $(C,)$) as numpy arrays; ``blocked`` must be ``None`` (numpy needs no block map)."""
        if blocked is not None:
            raise ValueError("NumpyQuadrature evaluates in numpy chunks: blocked must be None")
        return quadrature_values(self.asymptote, self.h, q1, q2, c, derivative)
