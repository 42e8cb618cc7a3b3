r"""Piecewise tensor Chebyshev tables of the large-$q$ rule (:mod:`kernelcalc.theory.largeq_near`,
:mod:`kernelcalc.theory.largeq_low`): fitting nodes, truncation, sparse storage and evaluation.

A table holds, per panel of a product of intervals, the coefficients $c_{ijk}$ of
$\sum_{ijk}c_{ijk}T_i(y_1)T_j(y_2)T_k(y_3)$ in local coordinates $y\in[-1,1]$.  The fit takes first-kind Chebyshev
nodes per panel (:func:`_cheb_nodes`, :func:`_cheb_coef`), the truncation keeps the leading degrees per axis down to a
cut (:func:`_truncate`), and since these series decay roughly with the *total* degree, :func:`_sparsify` then zeroes
the positions negligible in every panel (about three quarters of the box) and :func:`_pack` stores only the rest.
Evaluation (:func:`_panel`, :func:`cheb_rows`, :func:`_packed_apply`) gathers one packed block per point and contracts
it with products of Chebyshev rows computed by the three-term recurrence (one loop under jit)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .._lazy import jax, jnp   # deferred: jax is imported on first use

__all__ = ["cheb_rows", "RowBatch"]


def cheb_rows(y, d, xp):
    r"""``(..., d)``: $T_0(y)..T_{d-1}(y)$ for ``y`` clipped to $[-1,1]$, by the three-term recurrence
    $T_{k+1}=2yT_k-T_{k-1}$ (stable on $[-1,1]$; its rounding differs from $\cos(k\arccos y)$ by a few ulp times $k$).
    Under jit the recurrence is one loop (``fori_loop``) over a ``(d, ...)`` buffer: a multiply-add per value where
    $\cos$ costs about 15 ns (it was most of the moment series' run time), and one small loop body to compile where an
    unrolled recurrence is $d$ operations."""
    y = xp.clip(y, -1.0, 1.0)
    if xp is np:
        T = np.empty((d,) + np.shape(y))
        T[0] = 1.0
        for k in range(1, d):
            T[k] = y if k == 1 else 2.0 * y * T[k - 1] - T[k - 2]
        return np.moveaxis(T, 0, -1)
    T = jnp.zeros((d,) + y.shape, y.dtype).at[0].set(1.0)
    if d > 1:
        T = T.at[1].set(y)
    if d > 2:
        T = jax.lax.fori_loop(2, d, lambda k, T: T.at[k].set(2.0 * y * T[k - 1] - T[k - 2]), T)
    return jnp.moveaxis(T, 0, -1)


def _cheb_nodes(n):
    return np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _mid_nodes(n):
    """Interior points halfway (in angle) between the first-kind nodes: held out from the fit."""
    return np.cos(np.pi * np.arange(1, n) / n)


def _cheb_coef(values, axis):
    """Chebyshev coefficients of values at the first-kind nodes (:func:`_cheb_nodes`) along ``axis``."""
    v = np.moveaxis(values, axis, 0)
    n = v.shape[0]
    T = np.cos(np.pi * np.outer(np.arange(n), np.arange(n) + 0.5) / n)
    c = np.tensordot(T, v, axes=(1, 0)) * (2.0 / n)
    c[0] *= 0.5
    return np.moveaxis(c, 0, axis)


def _cross_apply(cross, growth, where, rows, xp):
    r"""``(n_g, B)``: a cross table ``cross`` ``(panels, d_1, n_g, d_z)`` (of the near or the low tables) at the
    located points ``where`` ``(panel index, far, zf)`` with their Chebyshev rows ``(T_1, T_z)`` (the growth factor
    $|\zeta|^e$ of each function applied beyond $Z$, where ``far``)."""
    (idx, far, zf), (T1, Tz) = where, rows
    _, d_1, n_g, d_z = cross.shape
    block = xp.asarray(cross)[idx]                                                # (B, d_1, n_g, d_z)
    v = xp.sum(block * Tz[:, None, None, :d_z], axis=-1)                         # (B, d_1, n_g)
    v = xp.sum(v * T1[:, :d_1, None], axis=1)                                    # (B, n_g)
    return xp.stack([xp.where(far, v[:, j] * zf ** e, v[:, j]) for j, e in enumerate(growth)])


def _stack(tables) -> np.ndarray:
    """The arrays ``tables`` (one leading size) zero-padded on their other axes to the largest sizes, stacked on a new
    trailing axis."""
    dims = [max(t.shape[i] for t in tables) for i in range(1, tables[0].ndim)]
    out = np.zeros((tables[0].shape[0], *dims, len(tables)))
    for m, t in enumerate(tables):
        out[(slice(None),) + tuple(slice(0, n) for n in t.shape[1:]) + (m,)] = t
    return out


def _on_panels(edges, y, square_first=False):
    """The points of local coordinates ``y`` on every panel of ``edges``: ``(P, len(y))``."""
    out = []
    for p, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        u = 0.5 * (np.asarray(y) + 1.0)
        out.append(np.sqrt(lo * lo + (hi * hi - lo * lo) * u) if (square_first and p == 0) else lo + (hi - lo) * u)
    return np.array(out)


def _truncate(coef, axes, cut):
    """The leading degrees along ``axes`` beyond which every coefficient is below ``cut``."""
    a = np.abs(coef)
    keep = []
    for ax in axes:
        other = tuple(i for i in range(a.ndim) if i != ax)
        m = np.max(a, axis=other)
        keep.append(int(np.max(np.nonzero(m > cut)[0], initial=0)) + 1)
    return keep


#: a coefficient position (the same in every panel) is dropped where its largest coefficient over all panels is below
#: _SPARSE times the truncation's cut (:func:`_sparsify`)
_SPARSE = 0.1


def _sparsify(coef, cut):
    r"""``coef`` ``(P, d_1, ..., d_n)`` with zeros at the positions whose coefficients are below ``_SPARSE * cut`` in
    every panel: the tensor Chebyshev series of these tables decay roughly with the *total* degree, so after the
    truncation per axis (:func:`_truncate`) about three quarters of the box's positions are negligible everywhere.
    The tables' held-out errors are measured with those zeros; :func:`_pack` stores only the other positions."""
    coef = np.array(coef)
    coef[:, np.max(np.abs(coef), axis=0) <= _SPARSE * cut] = 0.0
    return coef


@dataclasses.dataclass(frozen=True, eq=False)
class _Packed:
    r"""A table of tensor Chebyshev series ``(P, d_1, d_2, d_3[, m])`` stored at its nonzero positions only: ``coef``
    ``(P, n, m)`` and the degree of each of the ``n`` positions in each variable (``index``: three ``(n,)`` arrays);
    ``degrees``: the box ``(d_1, d_2, d_3)``."""

    coef: np.ndarray
    index: tuple
    degrees: tuple


def _pack(table):
    """:class:`_Packed` of a dense ``(P, d_1, d_2, d_3[, m])`` table: the positions nonzero in some panel (and some
    trailing table), in C order."""
    dense = table if table.ndim == 5 else table[..., None]
    keep = np.any(dense != 0.0, axis=(0, 4))
    return _Packed(np.ascontiguousarray(dense[:, keep, :]), tuple(np.nonzero(keep)), dense.shape[1:4])


def _packed_apply(packed, idx, rows, xp):
    r"""``(B, m)``: $\sum_n c_{p,n}T_{i_n}(y_1)T_{j_n}(y_2)T_{k_n}(y_3)$ at the panels ``idx`` with the Chebyshev rows
    ``rows`` ``(T_1, T_2, T_3)`` (each at least as long as its degree): one gathered ``(n, m)`` block per point."""
    (T1, T2, T3), (i, j, k) = rows, packed.index
    w = T1[:, i] * T2[:, j] * T3[:, k]                                          # (B, n)
    block = xp.asarray(packed.coef)[idx]                                        # (B, n, m)
    return xp.einsum("bn,bnm->bm", w, block)


def _barrier(x):
    return jax.lax.optimization_barrier(x)


def _panel(edges, v, xp, square_first=False):
    """Panel index and local coordinate of ``v`` (clipped to the edges)."""
    e = np.asarray(edges)
    if xp is np:   # minimum/maximum: np.clip's Python wrapper costs more than the rest on the eager path's small calls
        v = np.minimum(np.maximum(v, e[0]), e[-1])
        p = np.searchsorted(e[1:-1], v, side="right")          # in [0, len(e) - 2]
    else:
        v = xp.clip(v, e[0], e[-1])
        # the number of inner edges <= v (searchsorted's side="right"), as elementwise compares: no reduction and
        # no searchsorted helper to trace (its eval_shape costs ~10 ms per lookup), fused into the lookup's consumers
        p = sum(((v >= float(x)).astype(jnp.int32) for x in e[1:-1]), jnp.zeros(v.shape, jnp.int32))
    lo, hi = xp.asarray(e[:-1])[p], xp.asarray(e[1:])[p]
    if square_first:
        y = xp.where(p == 0, 2.0 * (v * v - lo * lo) / (hi * hi - lo * lo) - 1.0, 2.0 * (v - lo) / (hi - lo) - 1.0)
    else:
        y = 2.0 * (v - lo) / (hi - lo) - 1.0
    return p, y


def _cheb_rows(ys, degrees, xp):
    r"""``[(B, d), ...]``: $T_0..T_{d-1}$ at each of ``ys`` (flat, of one length) for ``degrees``, all by one recurrence
    (:func:`cheb_rows`: one loop to compile and run for every table lookup)."""
    T = cheb_rows(xp.stack(ys), max(degrees), xp)
    return [T[i, :, :d] for i, d in enumerate(degrees)]




class RowBatch:
    r"""The Chebyshev rows of several table lookups of one evaluation, computed together: :meth:`ask` registers the
    local coordinates ``y`` (flat, all of one length) and a degree and returns a handle; after :meth:`compute` (one
    recurrence, :func:`_cheb_rows`: one loop to compile and run instead of one per lookup) ``batch[handle]`` is the
    ``(B, d)`` rows."""

    def __init__(self):
        self.ys, self.degrees, self.rows = [], [], None

    def ask(self, y, d: int) -> int:
        self.ys.append(y)
        self.degrees.append(int(d))
        return len(self.ys) - 1

    def compute(self, xp):
        self.rows = _cheb_rows(self.ys, self.degrees, xp)
        return self

    def __getitem__(self, handle):
        return self.rows[handle]
