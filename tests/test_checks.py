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
    rep = check(Y, activation="softplus", gram="always")
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
    ({"singular_tol": -1.0}, "singular_tol"),
])
def test_bad_parameters(X, kw, match):
    with pytest.raises(KernelcalcInputError, match=match):
        check(X, activation="softplus", **kw)


def test_bad_data():
    with pytest.raises(KernelcalcInputError, match="NaN"):
        check([[1.0, np.nan]], activation="softplus")
    with pytest.raises(KernelcalcInputError, match="shape"):
        check(np.zeros((2, 2, 2)), activation="softplus")


# ---------------------------------------------------------------- the Gram only when it can matter
@pytest.mark.parametrize("make_bad, cause", [
    (lambda X: X * np.r_[1.0, 1.0, 1.1, 1.0, 1.0][:, None], "not on the sphere"),
    (lambda X: np.vstack([X, X[3]]), "duplicate rows"),
])
def test_failed_hypothesis_skips_the_gram(X, cheap_kernel, make_bad, cause):
    """Off-sphere data used to be followed by the full Gram (99 s on the tester's data) although the
    verdict was already NOT OK; failed before the fix (one node_kernel call was recorded)."""
    rep = check(make_bad(X), activation="softplus")
    assert cheap_kernel == []                      # node_kernel was not called
    assert not rep.ok and rep.gram is None
    assert np.isnan(rep.lambda_min) and np.isnan(rep.contraction) and np.isnan(rep.condition_number)
    assert cause in rep.gram_skipped and "gram='always'" in rep.gram_skipped
    assert not any("positive definite" in p for p in rep.problems)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert d["gram"] is None and d["lambda_min"] is None and cause in d["gram_skipped"]
    assert "not computed" in str(rep) and cause in str(rep)
    # on request it is computed: the cheap kernel by hand
    full = check(make_bad(X), activation="softplus", gram="always")
    assert len(cheap_kernel) == 1 and full.gram_skipped is None
    Y = make_bad(X)
    K = np.exp(Y @ Y.T / 3)
    assert full.lambda_min == pytest.approx(np.linalg.eigvalsh(K)[0], rel=1e-10, abs=1e-13)


def test_assumption1_failure_skips_the_gram(X, cheap_kernel):
    rep = check(X, activation="relu")
    assert cheap_kernel == [] and rep.gram is None and "Assumption 1" in rep.gram_skipped


def test_good_data_computes_the_gram(X, cheap_kernel):
    rep = check(X, activation="softplus")
    assert len(cheap_kernel) == 1 and rep.gram is not None and rep.gram_skipped is None


def test_gram_mode_validated(X):
    with pytest.raises(KernelcalcInputError, match="gram must be one of"):
        check(X, activation="softplus", gram="sometimes")


def test_x_abs_x_reports_not_ok_instead_of_raising(X):
    """check(X, 'x*abs(x)') raised KernelcalcInputError from node_kernel (phi grows quadratically, so
    the variance ODE blows up before T = 1); it must report ok=False. Failed before the fix."""
    rep = check(X, activation="x*abs(x)")
    assert not rep.ok and rep.assumption1.holds is False
    assert any("fails Assumption 1" in p for p in rep.problems)
    # asked for the Gram anyway: the kernel's refusal becomes a reported problem, not an exception
    rep = check(X, activation="x*abs(x)", gram="always")
    assert not rep.ok and rep.gram is None and np.isnan(rep.lambda_min)
    assert any(p.startswith("the NTK Gram could not be computed") for p in rep.problems)
    assert rep.gram_skipped.startswith("the NTK Gram could not be computed")


def test_kernel_refusal_is_a_problem(X, monkeypatch):
    """Any KernelcalcInputError of node_kernel on hypotheses that hold becomes a problem (ok=False)."""
    import kernelcalc.kernels

    def refuse(*a, **k):
        raise KernelcalcInputError("sigma_w*T = 50 exceeds the supported limit")

    monkeypatch.setattr(kernelcalc.kernels, "node_kernel", refuse)
    rep = check(X, activation="softplus")
    assert not rep.ok and rep.gram is None
    assert rep.problems == ("the NTK Gram could not be computed: sigma_w*T = 50 exceeds the supported limit",)
