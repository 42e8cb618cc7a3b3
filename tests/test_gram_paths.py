"""Gram plans: the theta table, norm groups and norm interpolation against direct evaluation.

The reference is always ``pair_fn`` evaluated directly at each pair's second moments (no table,
no interpolation), for real kernels (softplus Neural ODE, ResNet, tanh and relu MLPs), and a
closed-form pair function written here (shares no code with the plans).
"""

import warnings

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc.kernels import _gram
from kernelcalc.kernels._interp import ThetaTable, chebyshev_coefficients, lobatto, pivot_columns, theta_of


def _toy_pair(sxx, syy, sxy):
    """A kernel with norm and angle dependence and a relu-like sqrt(1 - rho^2) term."""
    sxx, syy, sxy = np.broadcast_arrays(*(np.asarray(a, float) for a in (sxx, syy, sxy)))
    r = np.sqrt(sxx * syy)
    rho = np.divide(sxy, r, out=np.zeros_like(r), where=r > 0)
    sin = np.sqrt(np.clip(1 - rho**2, 0, None))
    nngp = np.exp(0.3 * (sxx + syy)) * (1 + rho + 0.5 * sin) + 0.1
    ntk = nngp * (1 + np.log1p(sxx) * np.log1p(syy)) + r * (sin + (np.pi - np.arccos(np.clip(rho, -1, 1))) * rho)
    return nngp, ntk


def _direct(a, b, pair):
    """Every pair by ``pair``; on the diagonal of a symmetric Gram x.y/d is x.x/d exactly."""
    b = a if b is None else b
    d = a.shape[1]
    na, nb = np.sum(a * a, 1) / d, np.sum(b * b, 1) / d
    xy = a @ b.T / d
    if b is a:
        np.fill_diagonal(xy, na)
    return pair(na[:, None], nb[None, :], xy)


def _rows(n, d, seed, spread):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x * np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(1 - spread, 1 + spread, (n, 1))


def test_theta_table_reproduces_a_known_function():
    """The piecewise table of cos(3 theta) + sqrt(theta + 1) meets its tolerance at random angles."""
    R = 128
    th = theta_of(lobatto(R))
    F = np.stack([np.cos(3 * th), np.sqrt(th + 1)], -1)
    table = ThetaTable(chebyshev_coefficients(F), 1e-12, np.max(np.abs(F), 0))
    assert table.error <= 1e-12
    q = np.random.default_rng(0).uniform(0, np.pi, 1000)
    k, s = table.index(q.copy())
    flat = table.table.ravel()
    stride = (table.n + 1) * table.P
    got = [table.horner(flat, o * stride + k, s) for o in range(2)]
    np.testing.assert_allclose(got[0], np.cos(3 * q), atol=3e-12)
    np.testing.assert_allclose(got[1], np.sqrt(q + 1), atol=3e-12 * 2)


def test_pivot_columns_are_the_pivots_of_lapack_qr():
    """The norm basis's skeleton (numpy column-pivoted Gram-Schmidt) picks the columns LAPACK's pivoted QR
    (scipy.linalg.qr, geqp3) picks, on orthonormal bases of graded spectra like the norm basis's."""
    from scipy.linalg import qr

    rng = np.random.default_rng(3)
    for _ in range(40):
        L = int(rng.integers(6, 50))
        r = int(rng.integers(1, L))
        A = rng.standard_normal((L, L)) * np.exp(-np.arange(L) * rng.uniform(0.1, 1.0))
        U = np.linalg.svd(A)[0][:, :r]
        assert set(pivot_columns(U.T, r).tolist()) == set(qr(U.T, pivoting=True, mode="r")[1][:r].tolist())


@pytest.mark.parametrize("case", ["sphere", "one norm scaled", "two norms", "zeros and sphere", "all zero",
                                  "spread", "spread with zeros", "cross"])
def test_plans_equal_direct_evaluation(case, monkeypatch):
    monkeypatch.setattr(_gram, "_DIRECT_MAX_NORM_PAIRS", 0)
    d = 5
    a = _rows(40, d, 1, 0.0)
    b = None
    if case == "one norm scaled":
        a = 1.7 * a
    elif case == "two norms":
        a[::2] *= 0.6
    elif case == "zeros and sphere":
        a[[3, 17]] = 0.0
    elif case == "all zero":
        a = np.zeros((10, d))
    elif case == "spread":
        a = _rows(40, d, 2, 0.3)
    elif case == "spread with zeros":
        a = _rows(40, d, 2, 0.3)
        a[[0, 9]] = 0.0
    elif case == "cross":
        a, b = _rows(30, d, 3, 0.3), _rows(25, d, 4, 0.2) * 1.2
        b[4] = 0.0
    nngp, ntk, info = _gram.gram(a, b, _toy_pair, tol=1e-12)
    expected = {"sphere": "sphere", "one norm scaled": "sphere", "two norms": "norm groups",
                "zeros and sphere": "norm groups", "all zero": "norm groups"}.get(case, "norm interpolation")
    assert info["path"] == expected
    ref_n, ref_t = _direct(a, b, _toy_pair)
    tol = 1e-11 if expected != "norm interpolation" else 1e-9
    for got, ref in ((nngp, ref_n), (ntk, ref_t)):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * np.max(np.abs(ref)))
    assert info["interpolation_error_estimate"] <= (1e-11 if expected != "norm interpolation" else 1e-9)
    if b is None and expected != "norm interpolation":    # theta = 0 is a node: the diagonal is exact
        np.testing.assert_allclose(np.diag(ntk), np.diag(ref_t), rtol=1e-13)


def test_plan_blocks_tile_the_gram():
    a = _rows(50, 4, 5, 0.3)
    plan = _gram.gram_plan(a, None, _toy_pair)
    full = plan.block(slice(None), slice(None))
    tile = plan.block(slice(10, 30), slice(25, 50))
    for f, t in zip(full, tile):
        np.testing.assert_allclose(t, f[10:30, 25:50], rtol=1e-14, atol=1e-14)


def _subset_check(kernel, x, idx):
    """Fast-path Gram on x vs the direct pair evaluation on the subset idx (both outputs)."""
    K = kernel(x)
    sub = x[idx]
    ref = kernel(sub)            # <= 2000 distinct pairs: the direct path
    assert ref.info["path"] == "direct"
    for got, want in ((K.nngp[np.ix_(idx, idx)], ref.nngp), (K.ntk[np.ix_(idx, idx)], ref.ntk)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.max(np.abs(want)))
    return K


@pytest.mark.parametrize("act, depth, kw", [("relu", 3, dict(sigma_b=0.1)), ("gelu", 2, dict(sigma_w=1.2, sigma_b=0.1)),
                                            ("erf", 3, dict(sigma_w=1.3, sigma_b=0.2)),
                                            pytest.param("tanh", 3, dict(sigma_w=1.5, sigma_b=0.1), marks=pytest.mark.slow)])
def test_off_sphere_mlp_fast_path_equals_direct(act, depth, kw):
    x = _rows(70, 6, 7, 0.3)
    idx = np.arange(0, 70, 3)[:20]
    K = _subset_check(lambda z: kc.mlp_kernel(z, activation=act, depth=depth, **kw), x, idx)
    assert K.info["path"] == ("direct" if act == "relu" else "norm interpolation")
    assert K.info.get("interpolation_error_estimate", 0.0) <= 1e-9


def _arccos_mlp(x, depth, sigma_w):
    """Independent reference: the relu MLP (no biases, readout sigma_v = 1) by the arc-cosine recursion in
    numpy, theta from the normalised Gram with the diagonal exactly 0."""
    d = x.shape[1]
    K = sigma_w**2 * (x @ x.T) / d
    np.fill_diagonal(K, sigma_w**2 * np.sum(x * x, 1) / d)
    T = K.copy()
    for layer in range(depth):
        s = 1.0 if layer == depth - 1 else sigma_w
        n = np.sqrt(np.outer(np.diag(K), np.diag(K)))
        theta = np.arccos(np.clip(K / np.where(n > 0, n, 1.0), -1, 1))
        np.fill_diagonal(theta, 0.0)
        C = n / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
        Cdot = (np.pi - theta) / (2 * np.pi)
        K = s**2 * C
        T = K + s**2 * Cdot * T
    return K, T


@pytest.mark.parametrize("depth, sigma_w", [(1, 1.0), (3, 1.4)])
def test_off_sphere_relu_homogeneous_path_equals_the_arccos_recursion(depth, sigma_w):
    """relu without biases: K(lx, my) = lm K(x, y), so any inputs (a zero row too) take the sphere table
    of their directions; against the arc-cosine recursion written here."""
    x = _rows(300, 5, 9, 0.3)
    x[17] = 0.0
    K = kc.mlp_kernel(x, activation="relu", depth=depth, sigma_w=sigma_w)
    assert K.info["path"].startswith("homogeneous")
    ref_n, ref_t = _arccos_mlp(x, depth, sigma_w)
    for got, want in ((K.nngp, ref_n), (K.ntk, ref_t)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-11 * np.max(np.abs(want)))
    assert np.all(K.ntk[17] == 0.0)
    assert np.array_equal(K.ntk, K.ntk.T)


@pytest.mark.parametrize("name", ["node relu", "resnet relu", "mlp leaky_relu"])
def test_off_sphere_homogeneous_path_equals_direct(name):
    """The homogeneous path against direct pair evaluations (blocks of <= 48 pairs: the direct path),
    on and off the diagonal."""
    fn = {"node relu": lambda *z: kc.node_kernel(*z, activation="relu", T=1.0),
          "resnet relu": lambda *z: kc.resnet_kernel(*z, activation="relu", depth=4),
          "mlp leaky_relu": lambda *z: kc.mlp_kernel(*z, activation="leaky_relu", depth=2, sigma_w=1.3)}[name]
    x = _rows(120, 5, 10, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kc.KernelcalcAccuracyWarning)   # relu's time grid converges algebraically
        K = fn(x)
        assert K.info["path"].startswith("homogeneous")
        I, J = np.arange(0, 6), np.arange(60, 68)     # 36 and 48 pairs: the direct path
        blocks = [(I, None), (J[:6], None), (I, J)]
        for rows, cols in blocks:
            ref = fn(x[rows]) if cols is None else fn(x[rows], x[cols])
            assert ref.info["path"] == "direct"
            cols = rows if cols is None else cols
            for got, want in ((K.nngp[np.ix_(rows, cols)], ref.nngp), (K.ntk[np.ix_(rows, cols)], ref.ntk)):
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.max(np.abs(want)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["node softplus", "resnet softplus"])
def test_off_sphere_goursat_fast_path_equals_direct(name):
    x = _rows(70, 6, 8, 0.3)
    idx = np.arange(0, 70, 3)[:20]
    if name == "node softplus":
        fn = lambda z: kc.node_kernel(z, activation="softplus", T=1.0)  # noqa: E731
    else:
        fn = lambda z: kc.resnet_kernel(z, activation="softplus", depth=8)  # noqa: E731
    K = _subset_check(fn, x, idx)
    assert K.info["path"] == "norm interpolation"


@pytest.mark.parametrize("case", ["spread", "cross", "zero rows"])
def test_norm_interpolation_error_estimate_bounds_the_error(case, monkeypatch):
    """The off-sphere estimate (relative, times the largest entry) is at least the actual error against
    direct evaluation (zero rows: their own interpolant of F(0, v, 0), in both inputs of a cross Gram)."""
    monkeypatch.setattr(_gram, "_DIRECT_MAX_NORM_PAIRS", 0)
    a = _rows(60, 7, 11, 0.3)
    b = None if case == "spread" else _rows(45, 7, 12, 0.25) * 0.9
    if case == "zero rows":
        a[[5, 17]], b[3] = 0.0, 0.0
    nngp, ntk, info = _gram.gram(a, b, _toy_pair, tol=1e-12)
    assert info["path"] == "norm interpolation"
    ref_n, ref_t = _direct(a, b, _toy_pair)
    scale = max(np.max(np.abs(ref_n)), np.max(np.abs(ref_t)))
    err = max(np.max(np.abs(nngp - ref_n)), np.max(np.abs(ntk - ref_t)))
    assert err <= 1e-9 * scale
    assert info["interpolation_error_estimate"] * scale >= err


def _kinked_pair(sxx, syy, sxy):
    """A pair function with a kink in the norm (|v - 1|): no polynomial in log v reaches 1e-10."""
    sxx, syy, sxy = np.broadcast_arrays(*(np.asarray(a, float) for a in (sxx, syy, sxy)))
    k = 1.0 + np.abs(sxx - 1.0) + np.abs(syy - 1.0) + 0.5 * sxy
    return k, 2.0 * k


def test_norm_interpolation_says_when_it_misses_tol(monkeypatch):
    monkeypatch.setattr(_gram, "_DIRECT_MAX_NORM_PAIRS", 0)
    a = _rows(40, 5, 13, 0.3)
    with pytest.warns(kc.KernelcalcAccuracyWarning, match="norm interpolation"):
        _, _, info = _gram.gram(a, None, _kinked_pair)
    assert info["interpolation_error_estimate"] > 1e-9
    with pytest.raises(kc.KernelcalcAccuracyError, match="norm interpolation"):
        _gram.gram(a, None, _kinked_pair, strict=True)


@pytest.mark.slow
def test_off_sphere_node_fast_path_within_its_estimate(monkeypatch):
    """node_kernel off the sphere: the norm-interpolation Gram against the direct per-pair solves
    (1e-8 relative), and info["error_estimate"] covers the actual difference."""
    x = _rows(24, 5, 14, 0.3)
    ref = kc.node_kernel(x, activation="softplus", T=0.5)
    assert ref.info["path"] == "direct"
    monkeypatch.setattr(_gram, "_DIRECT_MAX_NORM_PAIRS", 0)
    K = kc.node_kernel(x, activation="softplus", T=0.5)
    assert K.info["path"] == "norm interpolation"
    scale = max(np.max(np.abs(ref.nngp)), np.max(np.abs(ref.ntk)))
    err = max(np.max(np.abs(K.nngp - ref.nngp)), np.max(np.abs(K.ntk - ref.ntk)))
    assert err <= 1e-8 * scale
    assert K.info["error_estimate"] >= err


def test_odd_pairs_solve_each_correlation_magnitude_once():
    """_OddPairs: one evaluation per distinct (vx, vy, |c|), the signs applied, c = 0 exactly 0 (not evaluated)."""
    from kernelcalc.kernels._gram import _OddPairs

    seen = []

    def pair(sxx, syy, sxy):
        seen.append(np.size(sxy))
        return np.sin(sxy) * (1 + sxx) * syy, sxy**3 + sxy * sxx

    c = np.array([0.3, -0.3, 0.0, 0.7, -0.7, -0.2])
    v = np.full(6, 1.5)
    got = _OddPairs(pair)(v, v, c)
    assert seen == [3]                                     # |c| in {0.2, 0.3, 0.7}
    want = pair(v, v, c)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("model", ["mlp", "node"])
def test_odd_kernel_path_equals_the_plain_path(model, monkeypatch):
    """tanh without biases: the odd path (half the theta solves) against the same Gram with the
    symmetry switched off, on and off the sphere."""
    from kernelcalc.theory.activations import Activation

    fn = {"mlp": lambda z: kc.mlp_kernel(z, activation="tanh", depth=2, sigma_w=1.3),
          "node": lambda z: kc.node_kernel(z, activation="tanh", T=0.8)}[model]
    sphere = _rows(60, 4, 11, 0.0)
    off = _rows(70, 4, 12, 0.3)
    fast = [fn(sphere), fn(off)]
    monkeypatch.setattr(Activation, "is_odd", property(lambda self: False))
    plain = [fn(sphere), fn(off)]
    for f, p in zip(fast, plain):
        assert f.info["path"] == p.info["path"]
        for a, b in ((f.nngp, p.nngp), (f.ntk, p.ntk)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * np.max(np.abs(b)))


def test_window_leaves_out_the_closest_pairs_against_a_sort():
    """The norm plan's window (``_gram_norms_window``): the pairs left out are the 16 of largest |cos theta| (a
    symmetric Gram: each pair once, the diagonal excluded) by a full sort, the window's edge at the 17th; only
    when that widens its smallest angle by a tenth; rectangular Grams too."""
    from kernelcalc.kernels._gram_base import GramPlan
    from kernelcalc.kernels._gram_norms import NormInterpPlan

    rng = np.random.default_rng(5)
    for trial in range(30):
        n, d = int(rng.integers(20, 300)), int(rng.integers(2, 12))
        a = rng.standard_normal((n, d)) * rng.uniform(0.5, 2, (n, 1))
        if trial % 3 == 0:
            a[3] = 1.3 * a[7]                       # a parallel pair: |cos| = 1
        same = trial % 2 == 0
        b = a if same else rng.standard_normal((int(rng.integers(20, 300)), d))
        plan = NormInterpPlan.__new__(NormInterpPlan)
        GramPlan.__init__(plan, a, b, same, {})
        half, (ri, ci) = plan._window()
        ua, ub = (z / np.linalg.norm(z, axis=1, keepdims=True) for z in (a, b))
        c = np.abs(ua @ ub.T)
        if same:
            c[np.tril_indices(n)] = -1.0
        ranked = np.sort(c, axis=None)[::-1]
        theta = lambda v: min(np.arccos(min(v, 1.0)), 0.25 * np.pi)      # noqa: E731
        if theta(ranked[16]) >= 1.1 * theta(ranked[0]):
            assert ri.size == np.count_nonzero(c > ranked[16]) and np.all(c[ri, ci] > ranked[16])
            edge = ranked[16]
        else:
            assert ri.size == 0
            edge = ranked[0]
        assert np.isclose(half, max(0.25 * np.pi, (0.5 * np.pi - np.arccos(min(edge, 1.0))) * (1 + 1e-9)), rtol=1e-12)


def test_norm_plan_doubles_an_unresolved_theta_degree(monkeypatch):
    """A theta degree too low for the pairs inside the norm range (the corners' degree forced to 6) is doubled
    until the table's estimate is within 5 tol: the Gram of the closed-form toy kernel within 1e-9 of its direct
    evaluation, with no accuracy warning."""
    from kernelcalc.kernels import _gram_norms

    found = _gram_norms.NormInterpPlan._theta_degree

    def low(self, *args):
        R, err, scale, points = found(self, *args)
        return 6, err, scale, points

    monkeypatch.setattr(_gram_norms.NormInterpPlan, "_theta_degree", low)
    monkeypatch.setattr(_gram, "_DIRECT_MAX_NORM_PAIRS", 0)
    a = _rows(40, 5, 2, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", kc.KernelcalcAccuracyWarning)
        nngp, ntk, info = _gram.gram(a, None, _toy_pair, tol=1e-12)
    assert info["theta_degree_doubled"] >= 1 and info["theta_nodes"] >= 13
    for got, ref in zip((nngp, ntk), _direct(a, None, _toy_pair)):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.max(np.abs(ref)))
