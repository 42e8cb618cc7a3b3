"""Hermite coefficients tabulated in log q (kernels/_marginal_table.py) against the test's own projection: a
trapezoid rule on a finer grid with its own Hermite recurrence (no code shared with kernelcalc's projection)."""

import math

import numpy as np

from kernelcalc import _x64
from kernelcalc.kernels._marginal_table import CoefficientTable, tabulated_dual
from kernelcalc.theory.gaussian import dual_kernels, series_lengths
from kernelcalc.theory.gaussian_hermite import _numpy_functions


def _coefficients(f, q, K):
    r"""$b_k(q)=E[f(\sqrt q z)He_k(z)]/\sqrt{k!}$, $k<K$: trapezoid rule, step 0.01 on $|z|\le 15$ (exponentially
    accurate for analytic $f$), $He_k/\sqrt{k!}$ by its three-term recurrence times $e^{-z^2/2}$ split as
    $e^{-z^2/4}\cdot e^{-z^2/4}$ so that nothing overflows."""
    z = np.arange(-1500, 1501) * 0.01
    g = 0.01 * f(math.sqrt(q) * z) * np.exp(-0.25 * z * z) / math.sqrt(2 * math.pi)
    h_prev, h = np.zeros_like(z), np.exp(-0.25 * z * z)
    out = np.empty(K)
    for k in range(K):
        out[k] = g @ h
        h_prev, h = h, (z * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
    return out


def test_table_in_log_q_against_a_finer_trapezoid_projection():
    """tanh and sech^2 at 12 random variances in [0.15, 3]: the table (all K terms) within 1e-13 of ||b|| of the
    reference and within ten times its own measured error (or 1e-14); a variance outside the range takes the
    direct projection; the tabulated marginals keep the per-variance lengths (zero beyond them)."""
    with _x64.scope():
        dual = dual_kernels("tanh", q_max=3.0)
        K = dual.rule.K
        rng = np.random.default_rng(1)
        q = np.exp(rng.uniform(math.log(0.15), math.log(3.0), 12))
        for f, f_ref in zip(_numpy_functions(dual.activation), (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2)):
            table = CoefficientTable(dual.rule, f, 0.15, 3.0, 1e-14)
            assert table.ok and table.degree == 32
            got = table(q, np.full(q.shape, K))
            for j, qj in enumerate(q):
                ref = _coefficients(f_ref, qj, K)
                err = np.max(np.abs(got[:, j] - ref)) / np.linalg.norm(ref)
                assert err <= max(10 * table.error, 1e-14) and err <= 1e-13
            outside = table(np.array([5.0]), np.array([K]))[:, 0]
            ref = _coefficients(f_ref, 5.0, K)
            assert np.max(np.abs(outside - ref)) <= 1e-13 * np.linalg.norm(ref)
        tab, err = tabulated_dual(dual, 0.15, 3.0)
        m = tab.marginal(q, xp=np, tol=1e-8)
        L = series_lengths(_numpy_functions(dual.activation)[0], q, K, 1e-8, dual.rule.tol)
        assert np.all(L < K)
        for j in range(q.size):
            assert np.all(m[1][L[j]:, j] == 0.0)
