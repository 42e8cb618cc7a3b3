"""The evaluation helpers of the large-q rule's Chebyshev tables (kernelcalc.theory.largeq_chebtab) against
references written here.

- ``cheb_rows`` (three-term recurrence, a ``fori_loop`` under jit) against mpmath's cos(k acos y) at 40 digits, for
  degrees up to 40 on [-1, 1] including the ends (where the recurrence's rounding grows most), and clipped outside.
- ``_pack`` / ``_packed_apply`` (the sparse tables: only the positions nonzero in some panel, one gathered block per
  point) against the plain triple sum over the dense table, written here with np.cos; under jit and in numpy.
- ``_sparsify`` zeroes exactly the positions below 0.1 x the cut in every panel, and nothing else.
- The low and near tables as built (sparse, packed) against the dense sums of the same tables at random points of
  every panel: the packing loses nothing.
"""

import math

import mpmath as mp
import numpy as np
import pytest

from kernelcalc._x64 import scope
from kernelcalc.theory import largeq_chebtab as ct


def _cos_rows(y, d):
    with mp.workdps(40):
        return np.array([[float(mp.cos(k * mp.acos(mp.mpf(float(v))))) for k in range(d)] for v in y])


def test_cheb_rows_match_mpmath_to_rounding():
    import jax
    y = np.concatenate([[-1.0, 1.0, -1.0 + 1e-12, 1.0 - 1e-15, 0.0], np.random.default_rng(0).uniform(-1, 1, 60)])
    ref = _cos_rows(y, 41)
    with scope():
        got_jit = np.asarray(jax.jit(lambda v: ct.cheb_rows(v, 41, jax.numpy))(y))
    got_np = ct.cheb_rows(y, 41, np)
    for got in (got_jit, got_np):
        assert got.shape == (y.size, 41)
        assert np.max(np.abs(got - ref)) <= 2e-13          # k^2 ulp at the ends, k <= 40
        assert np.max(np.abs(got[:, :12] - ref[:, :12])) <= 1e-14
    # clipped outside [-1, 1]; degrees 1 and 2 (no loop)
    assert np.array_equal(ct.cheb_rows(np.array([1.5, -3.0]), 5, np), _cos_rows([1.0, -1.0], 5))
    assert np.array_equal(ct.cheb_rows(np.array([0.3]), 1, np), [[1.0]])
    assert np.allclose(ct.cheb_rows(np.array([0.3]), 2, np), [[1.0, 0.3]], rtol=0, atol=0)


def _dense_sum(table, idx, y):
    """sum_ijk c[p, i, j, k, m] T_i(y1) T_j(y2) T_k(y3), T by np.cos(k arccos y), one point at a time."""
    out = np.zeros((len(idx), table.shape[-1]))
    for b, (p, (y1, y2, y3)) in enumerate(zip(idx, y)):
        T = [np.cos(np.arange(d) * np.arccos(v)) for d, v in zip(table.shape[1:4], (y1, y2, y3))]
        out[b] = np.einsum("ijkm,i,j,k->m", table[p], *T)
    return out


@pytest.mark.parametrize("backend", ["numpy", "jit"])
def test_packed_apply_equals_the_dense_sum(backend):
    import jax
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(6, 5, 4, 7, 2))
    i, j, k = np.indices((5, 4, 7))
    dense[:, (i + j + k) > 8, :] = 0.0             # a total-degree pattern
    dense[:, 0, 3, 0, :] = 0.0                     # and an isolated zero position
    dense[2, 1, 1, 1, 0] = 0.0                     # zero in one panel and table only: kept
    packed = ct._pack(dense)
    assert packed.coef.shape == (6, int(np.sum((i + j + k) <= 8)) - 1, 2)
    assert packed.degrees == (5, 4, 7)
    idx = rng.integers(0, 6, 40)
    y = rng.uniform(-1, 1, (40, 3))
    ref = _dense_sum(dense, idx, y)
    if backend == "numpy":
        rows = [ct.cheb_rows(y[:, a], d, np) for a, d in enumerate(packed.degrees)]
        got = ct._packed_apply(packed, idx, rows, np)
    else:
        with scope():
            got = np.asarray(jax.jit(lambda ii, yy: ct._packed_apply(
                packed, ii, ct._cheb_rows([yy[:, 0], yy[:, 1], yy[:, 2]], packed.degrees, jax.numpy),
                jax.numpy))(idx, y))
    assert np.max(np.abs(got - ref)) <= 1e-13 * np.max(np.abs(ref))
    # a 4-d table (one trailing table) packs with m = 1
    assert ct._pack(dense[..., 0]).coef.shape[-1] == 1


def test_sparsify_drops_only_positions_negligible_in_every_panel():
    rng = np.random.default_rng(2)
    c = rng.normal(size=(5, 3, 4, 6))
    cut = 1e-3
    c[:, 2, :, :] = 1e-6 * rng.uniform(-1, 1, size=(5, 4, 6))      # 1e-6 <= 0.1 cut everywhere: dropped
    c[:, 1, 1, 1] = 5e-5
    c[3, 1, 1, 1] = 2e-4                                            # above 0.1 cut in one panel: kept everywhere
    got = ct._sparsify(c, cut)
    assert np.all(got[:, 2] == 0.0)
    assert np.array_equal(got[:, 1, 1, 1], c[:, 1, 1, 1])
    keep = np.ones(c.shape[1:], bool)
    keep[2] = False
    assert np.array_equal(got[:, keep], c[:, keep])
    assert np.all(c[:, 2] != 0.0)                                   # the input is not modified


def test_built_tables_pack_without_loss():
    """The sparse low and near tables (as the rule gathers them) against the plain sums over their dense form."""
    from kernelcalc.theory.largeq import ASYMPTOTES
    from kernelcalc.theory.largeq_low import _stacked, low_table
    from kernelcalc.theory.largeq_near import _stacked_rr, near_table
    asy = ASYMPTOTES["softplus"]
    rng = np.random.default_rng(3)
    with scope():
        for packed, tables in ((_stacked(asy, (False, True))[0], [low_table(asy, d).rr for d in (False, True)]),
                               (_stacked_rr(asy, (False, True)), [near_table(asy, d).rr for d in (False, True)])):
            dims = packed.degrees
            dense = np.zeros((tables[0].shape[0], *dims, 2))
            for m, t in enumerate(tables):
                dense[:, :t.shape[1], :t.shape[2], :t.shape[3], m] = t
            # most positions are dropped, and the dropped ones are zero in the stored tables
            assert packed.coef.shape[1] < 0.5 * math.prod(dims)
            idx = rng.integers(0, dense.shape[0], 30)
            y = rng.uniform(-1, 1, (30, 3))
            rows = [ct.cheb_rows(y[:, a], d, np) for a, d in enumerate(dims)]
            got = ct._packed_apply(packed, idx, rows, np)
            ref = _dense_sum(dense, idx, y)
            assert np.max(np.abs(got - ref)) <= 1e-15 * max(1.0, np.max(np.abs(ref)))
