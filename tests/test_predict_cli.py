"""``kernelcalc predict``: the numbers equal the library's reference formulas; one-line errors."""

import json
import math

import numpy as np
import pytest
import scipy.linalg as sl
from click.testing import CliRunner

from kernelcalc.cli import main

from test_predict import relu_mlp_grams


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(16, 3))
    np.save(d / "X.npy", X[:12])
    np.save(d / "y.npy", np.cos(X[:12, 0]))
    np.save(d / "Xt.npy", X[12:])
    np.save(d / "Xt5.npy", rng.normal(size=(2, 5)))
    return d, X


def test_cli_predict_matches_the_reference_and_writes_json_and_plot(files):
    d, X = files
    res = CliRunner().invoke(main, ["predict", "--train", str(d / "X.npy"), "--labels", str(d / "y.npy"), "--test",
                                    str(d / "Xt.npy"), "--model", "mlp", "--depth", "1", "--activation", "relu",
                                    "--t", "2,inf", "--cov", "--json-out", str(d / "p.json"), "--plot",
                                    str(d / "p.png"), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((d / "p.json").read_text())
    K, Th = relu_mlp_grams(X, X)
    y = np.cos(X[:12, 0])
    for i, t in enumerate([2.0, math.inf]):
        M = np.linalg.inv(Th[:12, :12]) if math.isinf(t) else np.linalg.solve(
            Th[:12, :12], np.eye(12) - sl.expm(-Th[:12, :12] * t))
        mean = Th[12:, :12] @ M @ y
        cov = (K[12:, 12:] + Th[12:, :12] @ M @ K[:12, :12] @ M @ Th[:12, 12:] - Th[12:, :12] @ M @ K[:12, 12:]
               - K[12:, :12] @ M @ Th[:12, 12:])
        np.testing.assert_allclose(np.array(doc["mean_test"])[i, :, 0], mean, atol=1e-9)
        np.testing.assert_allclose(np.array(doc["cov_test"])[i], np.diag(cov), atol=1e-9)
    assert doc["times"][1] == "inf" and (d / "p.png").stat().st_size > 1000
    assert "t=inf" in res.output


@pytest.mark.parametrize("extra, match", [
    (["--t", "1,-2"], "t must be >= 0"),
    (["--t", "soon"], "--t must be"),
    (["--test", "Xt5.npy"], "X_test has input dimension 5"),
    (["--T", "2"], "T does not apply to model='mlp'"),
])
def test_cli_predict_bad_input_is_one_line(files, extra, match):
    d, _ = files
    extra = [str(d / e) if e.endswith(".npy") else e for e in extra]
    args = ["predict", "--train", str(d / "X.npy"), "--labels", str(d / "y.npy"), "--model", "mlp", "--depth", "1",
            "--activation", "relu", *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert match in res.output and res.output.strip().count("\n") == 0, res.output
