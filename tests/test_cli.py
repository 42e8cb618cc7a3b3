"""CLI (limit / derive / check): one-line errors, no tracebacks, numbers equal the library's.

The real Neural-ODE kernel is evaluated where its value is the subject (softplus, T = 1);
plumbing and exit-code tests use the cheap stand-in from ``_cheap_kernel``.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from kernelcalc import node_kernel
from kernelcalc.cli import main
from kernelcalc.data import sphere_normalise

from _cheap_kernel import cheap_kernel  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    good = sphere_normalise(np.random.default_rng(1).normal(size=(5, 3)))
    np.save(d / "good.npy", good)
    np.savetxt(d / "good.csv", good, delimiter=",")
    np.save(d / "cube.npy", np.zeros((2, 2, 2)))
    np.save(d / "dup.npy", np.vstack([good, good[:1]]))
    bad = good.copy()
    bad[1, 2] = np.nan
    np.savetxt(d / "nan.csv", bad, delimiter=",")
    np.save(d / "inf.npy", np.where(bad != bad, np.inf, bad))
    (d / "x.json").write_text("[1, 2]")
    np.save(d / "complex.npy", good * (1 + 0.5j))
    np.save(d / "oned.npy", good[0])
    np.save(d / "off.npy", good * 1.1)
    return d


def _one_line_error(result):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error:")
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["limit", "--activation", "foo"], "softplus"),            # lists the known names
    (["limit", "--activation", "log(1+"], "parse"),
    (["limit", "--activation", "x+y"], "x only"),
    (["limit", "--T", "0"], "T must be > 0"),
    (["limit", "--T", "-1"], "T must be > 0"),
    (["limit", "--T", "nan"], "T"),
    (["limit", "--T", "abc"], "--T"),
    (["limit", "--sigma-w", "0"], "sigma_w"),
    (["limit", "--sigma-u", "-1"], "sigma_u"),
    (["limit", "--sigma-v", "0"], "sigma_v"),
    (["limit", "--points", "1"], "points"),
    (["limit", "--data", "{d}/cube.npy"], "shape"),
    (["limit", "--data", "{d}/nan.csv"], "NaN"),
    (["limit", "--data", "{d}/inf.npy"], "inf"),
    (["limit", "--data", "{d}/missing.npy"], "not found"),
    (["limit", "--data", "{d}/x.json"], "extension"),
    (["limit", "--bogus"], "bogus"),
    (["derive", "--activation", "nope"], "unknown activation"),
    (["derive", "--model", "cnn"], "cnn"),
    (["check"], "--data"),
    (["check", "--data", "{d}/missing.csv"], "not found"),
    (["check", "--data", "{d}/cube.npy"], "shape"),
    (["check", "--data", "{d}/nan.csv"], "NaN"),
    (["check", "--data", "{d}/good.npy", "--T", "-2"], "T must be > 0"),
    (["check", "--data", "{d}/good.npy", "--activation", "elu(alpha=x)"], "alpha"),
    # failed before the fix: complex data lost its imaginary part and the commands exited 0
    (["check", "--data", "{d}/complex.npy"], "complex"),
    (["limit", "--data", "{d}/complex.npy"], "complex"),
    # failed before the fix: a 1-D .npy was read as one row, although the docs promise rejection
    (["check", "--data", "{d}/oned.npy"], "1-D"),
    (["limit", "--data", "{d}/oned.npy"], "1-D"),
    (["check", "--data", "{d}/good.npy", "--gram", "sometimes"], "--gram"),
    # the old '--json FILE' spelling: one line that names the new option
    (["limit", "--json", "out.json"], "--json-out out.json"),
    (["check", "--data", "{d}/good.npy", "--json=out.json"], "--json-out out.json"),
])
def test_bad_input_is_one_line(runner, files, args, needle):
    args = [a.format(d=files) for a in args]
    line = _one_line_error(runner.invoke(main, args))
    assert needle in line


@pytest.mark.parametrize("cmd", [[], ["limit"], ["derive"], ["check"]])
def test_help(runner, cmd):
    res = runner.invoke(main, cmd + ["--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def _table(output):
    rows = []
    for ln in output.splitlines():
        parts = ln.split()
        if len(parts) == 3:
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                pass
    return np.array(rows)


def test_limit_table_matches_node_kernel(runner):
    res = runner.invoke(main, ["limit", "--activation", "softplus", "--T", "1"])
    assert res.exit_code == 0, res.output
    assert "NNGP" in res.output and "NTK" in res.output and "Assumption" in res.output
    table = _table(res.output)
    assert table.shape == (11, 3)
    np.testing.assert_allclose(table[:, 0], np.linspace(-1, 1, 11), atol=1e-12)
    # rho = 1: any x with |x|^2 = d, here d = 3
    K = node_kernel(np.ones((1, 3)), activation="softplus", T=1.0)
    assert table[-1, 2] == pytest.approx(K.ntk[0, 0], rel=1e-10)
    assert table[-1, 1] == pytest.approx(K.nngp[0, 0], rel=1e-10)


def test_limit_json_matches_node_kernel(runner):
    res = runner.invoke(main, ["limit", "--activation", "softplus", "--points", "5", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    rho = np.array([r["rho"] for r in doc["table"]])
    np.testing.assert_allclose(rho, [-1, -0.5, 0, 0.5, 1], atol=1e-15)
    # the same kernel in d = 4: x = (1, 1, 1, 1), y_k with x.y_k/d = rho_k and |y_k|^2 = d
    x = np.ones((1, 4))
    e = np.array([1.0, -1.0, 1.0, -1.0])  # orthogonal to x, |e|^2 = d
    y = rho[:, None] * x + np.sqrt(1 - rho[:, None] ** 2) * e
    K = node_kernel(x, y, activation="softplus", T=1.0)
    np.testing.assert_allclose([r["ntk"] for r in doc["table"]], K.ntk[0], rtol=1e-9)
    np.testing.assert_allclose([r["nngp"] for r in doc["table"]], K.nngp[0], rtol=1e-9)
    assert doc["params"] == {"T": 1.0, "sigma_w": 1.0, "sigma_u": 1.0, "sigma_v": 1.0}
    assert doc["assumption1"]["holds"] is True and "derivation" in doc


def test_limit_passes_parameters(runner, cheap_kernel):
    args = ["limit", "-a", "tanh", "--T", "0.7", "--sigma-w", "1.2", "--sigma-u", "0.5", "--sigma-v", "2",
            "--points", "3", "--json"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert cheap_kernel == [dict(T=0.7, sigma_w=1.2, sigma_u=0.5, sigma_v=2.0)]
    ntk = [r["ntk"] for r in json.loads(res.output)["table"]]
    np.testing.assert_allclose(ntk, 4.0 * np.exp(0.7 * 1.44 * np.array([-1.0, 0.0, 1.0])), rtol=1e-12)


def test_limit_with_data_summary(runner, files):
    res = runner.invoke(main, ["limit", "--activation", "softplus", "--data", str(files / "good.csv"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    X = np.loadtxt(files / "good.csv", delimiter=",")
    K = node_kernel(X, activation="softplus").ntk
    eig = np.linalg.eigvalsh(0.5 * (K + K.T))
    s = doc["data"]["ntk"]
    assert doc["data"]["n"] == 5
    assert s["lambda_min"] == pytest.approx(eig[0], rel=1e-10)
    assert s["lambda_max"] == pytest.approx(eig[-1], rel=1e-10)
    assert s["condition_number"] == pytest.approx(eig[-1] / eig[0], rel=1e-8)
    assert s["max_entry"] == pytest.approx(K.max(), rel=1e-12)


def test_limit_data_text(runner, files, cheap_kernel):
    res = runner.invoke(main, ["limit", "--data", str(files / "good.npy")])
    assert res.exit_code == 0, res.output
    assert "lambda_min" in res.output and "condition number" in res.output and "N = 5" in res.output


def test_limit_latex_and_expression_activation(runner, cheap_kernel):
    res = runner.invoke(main, ["limit", "--activation", "log(1+exp(x))", "--latex", "--points", "3"])
    assert res.exit_code == 0, res.output
    assert "\\" in res.output  # some LaTeX


def test_derive(runner):
    for model in ("node", "resnet", "mlp"):
        res = runner.invoke(main, ["derive", "--activation", "elu(alpha=0.5)", "--model", model])
        assert res.exit_code == 0, res.output
        assert res.output.strip()
    res = runner.invoke(main, ["derive", "--activation", "tanh", "--json"])
    assert res.exit_code == 0 and isinstance(json.loads(res.output), dict)


def test_check_ok(runner, files):
    res = runner.invoke(main, ["check", "--data", str(files / "good.npy"), "--activation", "softplus", "--T", "1"])
    assert res.exit_code == 0, res.output
    assert "lambda_min" in res.output and "OK" in res.output


def test_check_json(runner, files, cheap_kernel):
    res = runner.invoke(main, ["check", "--data", str(files / "good.npy"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ok"] is True


@pytest.mark.parametrize("args, reason", [
    (["--activation", "relu"], "Assumption 1"),
    (["--data", "dup.npy"], "duplicate rows"),
    (["--data", "dup.npy", "--gram", "always"], "positive definite"),
])
def test_check_not_ok_exits_1(runner, files, args, reason, cheap_kernel):
    full = ["check", "--data", str(files / "good.npy")] + args
    full = [str(files / a) if a.endswith(".npy") and "/" not in a else a for a in full]
    res = runner.invoke(main, full)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert reason in res.output
    assert "Error: check failed" in res.output


def test_check_normalise(runner, tmp_path, cheap_kernel):
    X = np.random.default_rng(2).normal(size=(4, 3)) * 3
    np.save(tmp_path / "raw.npy", X)
    assert runner.invoke(main, ["check", "--data", str(tmp_path / "raw.npy")]).exit_code == 1
    assert runner.invoke(main, ["check", "--data", str(tmp_path / "raw.npy"), "--normalise"]).exit_code == 0


# ---------------------------------------------------------------------------- safe activation parsing (issue 10)
_ALL_ACTIVATION_COMMANDS = [["limit"], ["derive"], ["check", "--data", "{d}/good.npy"], ["compare"], ["depth-gap"],
                            ["train"], ["width-sweep"], ["flow-gap"], ["sweep-T"], ["divergent-flow"]]


@pytest.mark.parametrize("cmd", _ALL_ACTIVATION_COMMANDS, ids=lambda c: c[0])
def test_code_injection_is_an_input_error_with_no_side_effect(runner, files, tmp_path, monkeypatch, cmd):
    # before the whitelist parser, `limit --activation "__import__('os').system('touch F')"` created F
    monkeypatch.chdir(tmp_path)
    cmd = [c.format(d=files) for c in cmd]
    for spec in ["__import__('os').system('touch F')", f"__import__('os').system('touch {tmp_path}/G')",
                 "open('F', 'w').close()", f"__import__('pathlib').Path('{tmp_path}/G').touch()"]:
        res = runner.invoke(main, cmd + ["--activation", spec])
        assert res.exit_code == 2, res.output
        line = _one_line_error(res)
        assert "not allowed" in line or "unknown function" in line
        assert not (tmp_path / "F").exists() and not (tmp_path / "G").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec, needle", [
    ("lambda x: x", "'lambda' is not allowed"),
    ("leaky_relu(0.1, 0.2)", "leaky_relu takes 1 parameter (alpha), got 2"),
    ("elu(alpha=abc)", "parameter alpha of elu must be a number, got 'abc'"),
    ("x.real", "attribute access"),
    ("x % 2", "'%' is not allowed"),
    ("x**10**10", "exponent 1e+10 is too large"),
    ("exp(x", "cannot parse"),
])
def test_bad_activation_text_exits_2_in_one_line(runner, spec, needle):
    for cmd in ("limit", "derive"):
        res = runner.invoke(main, [cmd, "--activation", spec])
        assert res.exit_code == 2, res.output
        line = _one_line_error(res)
        assert needle in line and "sympify" not in line.lower() and "Sympify" not in line


def test_constant_activation_is_a_clean_report(runner, files, cheap_kernel):
    # '0' crashed with a traceback and exit code 1; a constant activation is a valid input that fails Assumption 1
    res = runner.invoke(main, ["limit", "--activation", "0", "--points", "3"])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert "Assumption 1 fails" in res.output
    res = runner.invoke(main, ["check", "--data", str(files / "good.npy"), "--activation", "0"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "Error: check failed" in res.output and "Assumption 1" in res.output


def test_check_x_abs_x_exits_1(runner, files):
    """kernelcalc check -a 'x*abs(x)' crashed with a one-line input error (exit 2) from node_kernel's
    variance blow-up; the check fails (Assumption 1), so the exit code is 1. Failed before the fix."""
    res = runner.invoke(main, ["check", "--data", str(files / "good.npy"), "--activation", "x*abs(x)"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert "Error: check failed: activation x*abs(x) fails Assumption 1" in res.output
    assert "not computed" in res.output


def test_check_off_sphere_skips_gram_unless_asked(runner, files, cheap_kernel):
    """Off-sphere data: the Gram used to be computed after the sphere test failed (99 s on the
    tester's data). Failed before the fix (one kernel call; no --gram option)."""
    res = runner.invoke(main, ["check", "--data", str(files / "off.npy"), "--json"])
    assert res.exit_code == 1 and cheap_kernel == []
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["lambda_min"] is None and "sphere" in doc["gram_skipped"]
    res = runner.invoke(main, ["check", "--data", str(files / "off.npy"), "--gram", "always", "--json"])
    assert res.exit_code == 1 and len(cheap_kernel) == 1
    X = np.load(files / "off.npy")
    assert json.loads(res.stdout)["lambda_min"] == pytest.approx(np.linalg.eigvalsh(np.exp(X @ X.T / 3))[0],
                                                                 rel=1e-10)


# ---------------------------------------------------------------- one JSON convention for every command
def _options(cmd):
    return {opt: p for p in cmd.params for opt in p.opts}


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_has_the_same_json_options(name):
    """--json was a flag in limit/check/derive but took a FILE in compare, depth-gap, train, width-sweep,
    flow-gap, sweep-T and divergent-flow. Now: --json is a flag (JSON on stdout instead of text) and
    --json-out FILE writes the file, in every command. Failed before the fix for the seven others."""
    opts = _options(main.commands[name])
    assert opts["--json"].is_flag, name
    assert not opts["--json-out"].is_flag and opts["--json-out"].name == "json_out", name


def test_json_flag_and_json_out_agree(runner, tmp_path, cheap_kernel):
    """A former file-taking command (sweep-T): --json gives pure JSON on stdout, --json-out the same file."""
    out = tmp_path / "h.json"
    args = ["sweep-T", "-a", "softplus", "--T", "0.5,1", "--n-inputs", "3", "--dim", "4", "--quiet"]
    res = runner.invoke(main, args + ["--json", "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)                 # stdout holds exactly one JSON document
    assert doc == json.loads(out.read_text())
    assert doc["Ts"] == [0.5, 1.0] and "wrote" in res.stderr
    X = np.random.default_rng(0).normal(size=(3, 4))  # sweep-T's default inputs, seed 0, on the sphere
    X *= 2 / np.linalg.norm(X, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(np.exp(0.5 * X @ X.T / 4))[0]   # the cheap kernel at T = 0.5, by hand
    assert doc["lambda_min"]["softplus"][0] == pytest.approx(lam, rel=1e-10)
    text = runner.invoke(main, args + ["--json-out", str(tmp_path / "t.json")])
    assert text.exit_code == 0 and "lambda_min" in text.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.stdout)                  # without --json: the table


def test_derive_json_out_writes_the_json_document(runner, tmp_path):
    out = tmp_path / "d.json"
    res = runner.invoke(main, ["derive", "-a", "tanh", "--json-out", str(out)])
    assert res.exit_code == 0 and "tanh" in res.stdout
    on_stdout = json.loads(runner.invoke(main, ["derive", "-a", "tanh", "--json"]).stdout)
    assert json.loads(out.read_text()) == on_stdout
