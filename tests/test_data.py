"""kernelcalc.data: loading (.npy/.csv/.txt), clear errors, sphere normalisation, digits subset."""

import numpy as np
import pytest

from kernelcalc import KernelcalcInputError
from kernelcalc.data import load_array, load_digits_subset, load_xy, sphere_normalise


@pytest.fixture
def X():
    return np.arange(12, dtype=float).reshape(4, 3) - 5.5


def test_npy_roundtrip(tmp_path, X):
    p = tmp_path / "x.npy"
    np.save(p, X)
    out = load_array(p)
    assert out.dtype == np.float64 and out.shape == (4, 3)
    np.testing.assert_array_equal(out, X)


def test_csv_with_header_and_comments(tmp_path, X):
    p = tmp_path / "x.csv"
    p.write_text("# a comment\na,b,c\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n")
    np.testing.assert_array_equal(load_array(str(p)), X)


def test_txt_whitespace(tmp_path, X):
    p = tmp_path / "x.txt"
    np.savetxt(p, X)
    np.testing.assert_allclose(load_array(p), X, rtol=0, atol=0)


def test_one_column_text_is_n_inputs(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("1\n2\n3\n")
    assert load_array(p).shape == (3, 1)


@pytest.mark.parametrize("name, content, match", [
    ("missing.npy", None, "not found"),
    ("x.xyz", "1,2\n", "extension"),
    ("x", "1,2\n", "extension"),
    ("bad.npy", "this is not a numpy file", "cannot read"),
    ("ragged.csv", "1,2\n3\n", "different numbers of columns"),
    ("words.csv", "1,2\nfoo,bar\n", "non-numeric"),
    ("empty.csv", "", "empty"),
    ("nan.csv", "1,2\nnan,3\n", "NaN or inf"),
    ("inf.txt", "1 inf\n", "NaN or inf"),
])
def test_load_array_errors(tmp_path, name, content, match):
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(KernelcalcInputError, match=match):
        load_array(p)


def test_three_dimensional_npy_rejected(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((2, 2, 2)))
    with pytest.raises(KernelcalcInputError, match=r"shape \(N, d\).*\(2, 2, 2\)"):
        load_array(p)


def test_one_dimensional_npy_rejected(tmp_path):
    """docs/cli.md promises that data which is not 2-D is refused; a 1-D .npy used to be read as one
    row (this test failed before the fix: load_array returned shape (1, 3))."""
    p = tmp_path / "x.npy"
    np.save(p, np.ones(3))
    with pytest.raises(KernelcalcInputError, match=r"1-D \(shape \(3,\)\).*reshape"):
        load_array(p)
    # a 1-D target file stays fine: y is a vector
    np.save(tmp_path / "X.npy", np.ones((3, 2)))
    X, y = load_xy(tmp_path / "X.npy", p)
    assert X.shape == (3, 2) and y.shape == (3,)


def test_complex_npy_rejected(tmp_path):
    """A complex .npy lost its imaginary part silently (ComplexWarning only); failed before the fix."""
    p = tmp_path / "c.npy"
    np.save(p, np.array([[1.0, 2.0 + 0.5j], [3.0, 4.0]]))
    with pytest.raises(KernelcalcInputError, match="complex"):
        load_array(p)
    with pytest.raises(KernelcalcInputError, match="complex"):  # as a target file too
        np.save(tmp_path / "X.npy", np.ones((2, 2)))
        load_xy(tmp_path / "X.npy", p)


@pytest.mark.parametrize("ext, delimiter", [(".csv", ","), (".txt", " ")])
def test_complex_text_rejected(tmp_path, ext, delimiter):
    """np.savetxt writes complex numbers as '(1+2j)'; the first such line was taken for a header and
    dropped, the rest read as reals (failed before the fix: load_array returned one row)."""
    p = tmp_path / f"c{ext}"
    np.savetxt(p, np.array([[1.0 + 2.0j, 3.0], [4.0, 5.0]]), delimiter=delimiter)
    with pytest.raises(KernelcalcInputError, match="complex entry"):
        load_array(p)
    q = tmp_path / f"d{ext}"
    q.write_text(f"1{delimiter}2\n3{delimiter}4-1i\n")  # a later row, engineering notation
    with pytest.raises(KernelcalcInputError, match="complex entry '4-1i' on line 2"):
        load_array(q)
    h = tmp_path / f"h{ext}"  # a real header line is still skipped
    h.write_text(f"x1{delimiter}x2\n1{delimiter}2\n")
    np.testing.assert_array_equal(load_array(h), [[1.0, 2.0]])


def test_string_npy_rejected(tmp_path):
    """A .npy of strings was parsed as numbers ('1.5' -> 1.5); it is text, refused since the fix."""
    p = tmp_path / "s.npy"
    np.save(p, np.array([["1.5", "2"], ["3", "4"]]))
    with pytest.raises(KernelcalcInputError, match="dtype <U3 \\(text\\)"):
        load_array(p)


def test_directory_rejected(tmp_path):
    d = tmp_path / "dir.npy"
    d.mkdir()
    with pytest.raises(KernelcalcInputError, match="directory"):
        load_array(d)


def test_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError):
        load_array(tmp_path / "nope.csv")


def test_load_xy_single_file(tmp_path, X):
    p = tmp_path / "xy.npy"
    np.save(p, X)
    x, y = load_xy(p)
    np.testing.assert_array_equal(x, X[:, :2])
    np.testing.assert_array_equal(y, X[:, 2])


def test_load_xy_single_column_needs_target(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("1\n2\n")
    with pytest.raises(KernelcalcInputError, match="target"):
        load_xy(p)


def test_load_xy_two_files(tmp_path, X):
    px, py = tmp_path / "x.npy", tmp_path / "y.csv"
    np.save(px, X)
    py.write_text("1\n-1\n2\n0.5\n")
    x, y = load_xy(px, py)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, [1, -1, 2, 0.5])
    np.save(tmp_path / "y.npy", np.array([1.0, 2.0, 3.0, 4.0]))
    assert load_xy(px, tmp_path / "y.npy")[1].shape == (4,)


def test_load_xy_length_mismatch(tmp_path, X):
    px, py = tmp_path / "x.npy", tmp_path / "y.csv"
    np.save(px, X)
    py.write_text("1\n2\n")
    with pytest.raises(KernelcalcInputError, match="2 entries but X has 4 rows"):
        load_xy(px, py)


def test_sphere_normalise():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 5)) * rng.uniform(0.1, 10, size=(7, 1))
    S = sphere_normalise(X)
    np.testing.assert_allclose((S**2).sum(axis=1), 5.0, rtol=1e-14)
    # direction unchanged: S is a positive multiple of X row by row
    ratio = S / X
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, 5)), rtol=1e-12)
    assert np.all(ratio > 0)


def test_sphere_normalise_zero_row():
    with pytest.raises(KernelcalcInputError, match="row 1 is zero"):
        sphere_normalise([[1.0, 0.0], [0.0, 0.0]])


def test_digits_subset_regression_target():
    X, y = load_digits_subset(30, seed=3)
    assert X.shape == (30, 64) and y.shape == (30,)
    np.testing.assert_allclose((X**2).sum(axis=1), 64.0, rtol=1e-12)
    k = y * 4.5 + 4.5  # digit values, centred/scaled into [-1, 1]
    np.testing.assert_allclose(k, np.round(k), atol=1e-12)
    assert k.min() >= 0 and k.max() <= 9
    X2, y2 = load_digits_subset(30, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(load_digits_subset(30, seed=4)[0], X)


def test_digits_subset_one_vs_rest():
    X, y = load_digits_subset(50, seed=1, digit=7)
    _, yk = load_digits_subset(50, seed=1)
    k = np.round(yk * 4.5 + 4.5)
    np.testing.assert_array_equal(y, np.where(k == 7, 1.0, -1.0))


def test_digits_subset_bad_args():
    with pytest.raises(KernelcalcInputError, match="n must be"):
        load_digits_subset(0, seed=0)
    with pytest.raises(KernelcalcInputError, match="n must be <="):
        load_digits_subset(10**6, seed=0)
    with pytest.raises(KernelcalcInputError, match="digit"):
        load_digits_subset(5, seed=0, digit=10)
