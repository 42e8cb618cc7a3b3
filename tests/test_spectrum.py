"""spectrum(): values against numpy.linalg.eigvalsh, the true value inside error_bound, bad input."""

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError
from kernelcalc.studies.spectrum import spectrum


def _spd(n, seed=0, cond=1e6):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.geomspace(1.0 / cond, 1.0, n) * 10
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


@pytest.mark.parametrize("method", ["dense", "shift-invert", "lanczos"])
@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_against_eigvalsh(method, which):
    if method == "shift-invert" and which == "largest":
        pytest.skip("shift-invert is for the smallest")
    A = _spd(120, seed=1, cond=1e2)
    ref = np.linalg.eigvalsh(A)
    ref = ref[:3] if which == "smallest" else ref[::-1][:3]
    sp = spectrum(A, k=3, which=which, method=method)
    assert sp.method == method and sp.values.shape == sp.error_bound.shape == (3,)
    assert all(sp.attributed)
    err = np.abs(sp.values - ref)
    assert np.all(err <= sp.error_bound), (err, sp.error_bound)
    assert np.all(sp.error_bound < 1e-9)                  # and the bounds are not vacuous
    np.testing.assert_allclose(sp.values, ref, rtol=1e-9, atol=1e-12)
    assert sp.to_dict()["k"] == 3


def test_kernel_inputs_and_check_uses_it(tmp_path):
    X = kc.data.sphere_normalise(np.random.default_rng(2).normal(size=(40, 3)))
    K = kc.mlp_kernel(X, activation="relu", depth=2)
    ref = np.linalg.eigvalsh(K.ntk)
    for A in (K, K.ntk):
        sp = spectrum(A)
        assert abs(sp.values[0] - ref[0]) <= sp.error_bound[0] and sp.attributed[0]
    sp = spectrum(X, model="mlp", activation="relu", depth=2, which="largest", k=2)
    assert np.all(np.abs(sp.values - ref[::-1][:2]) <= sp.error_bound)
    zarr = pytest.importorskip("zarr")
    Kz = kc.mlp_kernel(X, activation="relu", depth=2, out=tmp_path / "g.zarr", outputs=("ntk",))
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")
    for A in (g, g["ntk"], Kz):
        sp = spectrum(A, k=2)
        assert np.all(np.abs(sp.values - ref[:2]) <= sp.error_bound)
    sp = spectrum(g, k=2, method="lanczos", verify=False)
    assert np.all(np.abs(sp.values - ref[:2]) <= sp.error_bound) and not any(sp.attributed)


def test_indefinite_and_missed_eigenvalue():
    """An indefinite matrix: shift-invert falls back to dense; a bound that cannot be attributed is inf."""
    rng = np.random.default_rng(4)
    B = rng.normal(size=(60, 60))
    A = B + B.T
    ref = np.linalg.eigvalsh(A)
    sp = spectrum(A, k=2, method="shift-invert")
    assert sp.method == "dense" and np.all(np.abs(sp.values - ref[:2]) <= sp.error_bound)
    # a degenerate pair: Lanczos may return either copy, the check decides
    D = np.diag(np.r_[1.0, 1.0, np.arange(2, 40)])
    sp = spectrum(D, k=2)
    np.testing.assert_allclose(sp.values, [1.0, 1.0], atol=1e-12)
    assert np.all(np.abs(sp.values - 1.0) <= sp.error_bound)


def test_bad_input():
    A = _spd(10)
    for k in (0, 11, -1, 2.5):
        with pytest.raises(KernelcalcInputError, match="k"):
            spectrum(A, k=k)
    with pytest.raises(KernelcalcInputError, match="which"):
        spectrum(A, which="middle")
    with pytest.raises(KernelcalcInputError, match="method"):
        spectrum(A, method="qr")
    with pytest.raises(KernelcalcInputError, match="square"):
        spectrum(np.ones((3, 4)))
    with pytest.raises(KernelcalcInputError, match="symmetric"):
        spectrum(A + np.triu(np.ones((10, 10)), 1) * 1e-3)
    with pytest.raises(KernelcalcInputError, match="NaN"):
        spectrum(np.full((3, 3), np.nan))
    with pytest.raises(KernelcalcInputError, match="model"):
        spectrum(np.eye(3), model="cnn", activation="relu")


def test_ill_conditioned_smallest_by_shift_invert():
    A = _spd(150, seed=5, cond=1e9)
    ref = np.linalg.eigvalsh(A)[:2]
    sp = spectrum(A, k=2, method="shift-invert")
    assert sp.method == "shift-invert" and all(sp.attributed)
    assert np.all(np.abs(sp.values - ref) <= sp.error_bound) and np.all(sp.error_bound < 1e-10)
    np.testing.assert_allclose(sp.values, ref, rtol=1e-5)
