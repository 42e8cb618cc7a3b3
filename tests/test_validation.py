"""kernelcalc._validation.as_inputs: arrays that would lose information in a float cast are refused.

Before the fix ``as_inputs`` used ``np.asarray(x, dtype=float64)``: a complex array lost its
imaginary part (only a ``ComplexWarning``), a string array was parsed as numbers, and an object
array with ``None`` gave a misleading "NaN" message.
"""

import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError
from kernelcalc._validation import as_input_pair, as_inputs, real_array


def test_complex_rejected():
    """Failed before the fix: returned [[1., 3.]] (imaginary part dropped)."""
    with pytest.raises(KernelcalcInputError, match=r"x1 is complex \(dtype complex128\)"):
        as_inputs(np.array([[1 + 2j, 3.0]]))
    with pytest.raises(KernelcalcInputError, match="complex"):  # zero imaginary part: still a complex dtype
        as_inputs(np.array([[1 + 0j, 3.0]]))
    with pytest.raises(KernelcalcInputError, match="x2 is complex"):
        as_input_pair(np.ones((2, 2)), [[1j, 1.0]])


def test_complex_rejected_by_public_functions():
    """The public entry points all go through as_inputs: no silent real part anywhere."""
    Xc = np.ones((3, 2), dtype=complex)
    with pytest.raises(KernelcalcInputError, match="X is complex"):
        kc.check(Xc, activation="softplus")
    with pytest.raises(KernelcalcInputError, match="X is complex"):
        kc.data.sphere_normalise(Xc)
    with pytest.raises(KernelcalcInputError, match="x1 is complex"):
        kc.empirical_ntk(Xc, activation="tanh", width=4)


@pytest.mark.parametrize("bad, match", [
    (np.array([["1.5", "2"]]), r"dtype <U3 \(text\)"),           # was parsed as [[1.5, 2.0]]
    (np.array([[b"1", b"2"]]), r"dtype \|S1 \(text\)"),
    (np.array([[1.0, None]], dtype=object), r"entry of type NoneType \(None\) at index \(0, 1\)"),
    (np.array([[1.0, "a"]], dtype=object), "entry of type str"),
    (np.array([[1.0, 2j]], dtype=object), "entry of type complex"),
    (np.array([[1.0, True]], dtype=object), "entry of type bool"),
    ([[1.0, 2.0], [3.0]], "must be a real array"),                  # ragged
])
def test_non_numeric_rejected(bad, match):
    with pytest.raises(KernelcalcInputError, match=match):
        as_inputs(bad, "x1")


def test_real_inputs_still_accepted():
    np.testing.assert_array_equal(as_inputs([[1, 2], [3, 4]]), [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(as_inputs(np.array([[1.0, 2.0]], dtype=object)), [[1.0, 2.0]])
    np.testing.assert_array_equal(as_inputs(np.array([True, False])), [[1.0, 0.0]])
    np.testing.assert_array_equal(as_inputs(np.array([[1, 2]], dtype=np.int8)), [[1.0, 2.0]])
    assert as_inputs(np.float32([[0.5]])).dtype == np.float64
    assert real_array(3, "s").shape == ()
