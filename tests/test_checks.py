"""kernelcalc.check: numbers computed independently (eigvalsh of node_kernel, ||X||_2 by hand).

The real Neural-ODE kernel is evaluated only where its value is the subject (softplus, T = 1);
flag and plumbing tests use the cheap stand-in from ``_cheap_kernel``.
"""

import dataclasses
import json

import numpy as np
import pytest

from kernelcalc import CheckReport, KernelcalcInputError, check, node_kernel
from kernelcalc.data import sphere_normalise

from _cheap_kernel import cheap_kernel  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def X():
    return sphere_normalise(np.random.default_rng(0).normal(size=(5, 3)))


@pytest.fixture(scope="module")
def report(X):
    return check(X, activation="softplus", T=1.0)


def test_lambda_min_matches_eigvalsh_of_node_kernel(X, report):
    K = node_kernel(X, activation="softplus", T=1.0).ntk
    assert K.shape == (5, 5)
    eig = np.linalg.eigvalsh(0.5 * (K + K.T))
    assert report.lambda_min == pytest.approx(eig[0], rel=1e-12, abs=1e-14)
    assert report.lambda_max == pytest.approx(eig[-1], rel=1e-12)
    assert report.condition_number == pytest.approx(eig[-1] / eig[0], rel=1e-10)
    assert report.lambda_min > 0


def test_step_size_is_inverse_squared_spectral_norm(X, report):
    # independent route: largest eigenvalue of X^T X is ||X||_2^2
    top = np.linalg.eigvalsh(X.T @ X)[-1]
    assert report.step_size == pytest.approx(1.0 / top, rel=1e-12)
    assert report.contraction == pytest.approx(1.0 - report.lambda_min / top, rel=1e-12)
    assert 0 < report.contraction < 1


def test_step_size_hand_example(cheap_kernel):
    # X = sqrt(2) I_2: on the sphere in d = 2, ||X||_2 = sqrt(2), eta = 1/2.
    rep = check(np.sqrt(2.0) * np.eye(2), activation="tanh")
    assert rep.step_size == pytest.approx(0.5, rel=1e-14)
    assert rep.data_norm == pytest.approx(np.sqrt(2.0), rel=1e-14)
    assert rep.min_distance == pytest.approx(2.0, rel=1e-14)


def test_good_data_is_ok(report):
    assert isinstance(report, CheckReport)
    assert report.ok and report.problems == ()
    assert report.on_sphere and report.distinct and not report.parallel
    assert report.assumption1.holds is True
    assert (report.n, report.d) == (5, 3)


def test_params_passed_through(X, cheap_kernel):
    rep = check(X, activation="softplus", T=0.5, sigma_w=0.7, sigma_u=1.3, sigma_v=0.9)
    assert cheap_kernel == [dict(T=0.5, sigma_w=0.7, sigma_u=1.3, sigma_v=0.9)]
    G = X @ X.T / 3
    K = 0.9**2 * np.exp(0.5 * 0.7**2 * G)  # the cheap kernel, by hand
    assert rep.lambda_min == pytest.approx(np.linalg.eigvalsh(K)[0], rel=1e-12)
    assert rep.params["T"] == 0.5 and rep.params["sigma_u"] == 1.3


def test_off_sphere_flagged(X, cheap_kernel):
    Y = X.copy()
    Y[2] *= 1.1
    rep = check(Y, activation="softplus")
    assert not rep.on_sphere and not rep.ok
    assert rep.sphere_deviation == pytest.approx(0.21, rel=1e-10)
    assert any("sphere" in p for p in rep.problems)
    # within a loose tolerance it passes the sphere test
    assert check(Y, activation="softplus", sphere_rtol=0.3).on_sphere


def test_duplicates_flagged_and_singular(X):
    Y = np.vstack([X, X[1]])
    rep = check(Y, activation="softplus")
    assert not rep.distinct and not rep.ok
    assert rep.duplicate_pairs == ((1, 5),)
    assert rep.min_distance == 0.0
    assert abs(rep.lambda_min) < 1e-10 * rep.lambda_max
    assert any("duplicate" in p for p in rep.problems)
    assert any("positive definite" in p for p in rep.problems)
    assert rep.condition_number == np.inf or rep.condition_number > 1e10


def test_antipodal_pair_reported_as_parallel(X, cheap_kernel):
    rep = check(np.vstack([X, -X[0]]), activation="softplus")
    assert rep.distinct and rep.parallel
    assert (0, 5) in rep.parallel_pairs
    assert any("parallel" in w for w in rep.warnings)


def test_relu_fails_assumption_1(X, cheap_kernel):
    rep = check(X, activation="relu")
    assert rep.assumption1.holds is False
    assert not rep.ok
    assert any("Assumption 1" in p for p in rep.problems)


def test_report_is_frozen_and_json(report):
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.n = 3
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["ok"] is True and d["lambda_min"] == pytest.approx(report.lambda_min)
    assert d["step_size"] == pytest.approx(report.step_size)
    text = str(report)
    assert "lambda_min" in text and "step size" in text and "OK" in text


def test_single_row_json_has_no_infinity(cheap_kernel):
    rep = check(np.ones((1, 4)), activation="softplus")
    assert rep.min_distance == np.inf
    json.dumps(rep.to_dict(), allow_nan=False)


@pytest.mark.parametrize("kw, match", [
    ({"T": 0.0}, "T must be > 0"),
    ({"sigma_w": -1.0}, "sigma_w"),
    ({"tol": -1.0}, "tol"),
])
def test_bad_parameters(X, kw, match):
    with pytest.raises(KernelcalcInputError, match=match):
        check(X, activation="softplus", **kw)


def test_bad_data():
    with pytest.raises(KernelcalcInputError, match="NaN"):
        check([[1.0, np.nan]], activation="softplus")
    with pytest.raises(KernelcalcInputError, match="shape"):
        check(np.zeros((2, 2, 2)), activation="softplus")
