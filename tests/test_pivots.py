"""The numpy column-pivoted QR order of the norm basis (kernels/_pivots.py) against LAPACK's geqp3 (scipy)."""

import numpy as np
from scipy.linalg import qr

from kernelcalc.kernels._pivots import pivot_order


def test_pivot_order_equals_lapack_geqp3_on_orthonormal_bases():
    """Transposed orthonormal bases of graded random columns (the norm basis' shape: r <= 3/4 L, L <= 49): the
    first r pivots are LAPACK's."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        L = int(rng.integers(5, 50))
        r = int(rng.integers(1, max(2, int(0.75 * L))))
        Y = rng.standard_normal((L, r + 5)) @ np.diag(np.exp(-rng.uniform(0, 30, r + 5)))
        U = np.linalg.svd(Y, full_matrices=False)[0][:, :r]
        assert np.array_equal(pivot_order(U.T, r), qr(U.T, pivoting=True, mode="r")[1][:r])
