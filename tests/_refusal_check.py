"""The shape every cost refusal of the time solvers must have (tests of the panels, the large-q table and elu)."""

import math
import re

import pytest

DRIVERS = ("sigma_w or T", "sigma_u or the input norm", "the number of points")


def assert_refusal_multiplies_out(msg: str, *needles: str) -> None:
    """``msg``: one line that names ``needles`` and every driver of the cost, and whose factors multiply out
    (to 1 %) to the number of operations it quotes."""
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    quoted = float(re.search(r"would cost about ([0-9.e+]+) operations", msg).group(1))
    factors = re.search(r"\((.*) = [0-9.e+]+; the limit", msg).group(1)
    prod = math.prod(float(f.split()[0]) for f in re.split(r" x (?=[0-9])", factors))
    assert prod == pytest.approx(quoted, rel=1e-2)
    for driver in DRIVERS:
        assert driver in msg, (driver, msg)
