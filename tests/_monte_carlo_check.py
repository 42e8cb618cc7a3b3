"""The acceptance rule of the Monte-Carlo tests of finite-width kernels: every entry of the estimate lies
within 4 standard errors (plus a known ``bias``, e.g. the width or time-discretisation bias) of the reference."""

import numpy as np


def assert_within_standard_errors(est, se, ref, bias, what):
    z = (est - ref) / se
    print(what, "max|z|", np.max(np.abs(z)), "max rel err", np.max(np.abs(est - ref) / np.abs(ref)))
    assert np.all(np.abs(est - ref) <= 4 * se + bias), (what, z)
