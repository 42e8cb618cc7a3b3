"""CLI: ``kernelcalc compare`` / ``kernelcalc depth-gap`` -- one-line errors, JSON and plot outputs."""

import json

import pytest
from click.testing import CliRunner

from kernelcalc.cli import main


@pytest.mark.parametrize("args, needle", [
    (["compare", "--widths", "64,x"], "--widths"),
    (["compare", "--widths", "0"], "--widths"),
    (["compare", "--samples", "1"], "--samples"),
    (["compare", "--activation", "nope"], "nope"),
    (["depth-gap", "--width", "0"], "width"),
    (["depth-gap", "--depths", "4,-2"], "--depths"),
    (["depth-gap", "--n-inputs", "0"], "--n-inputs"),
])
def test_bad_input_is_one_line(args, needle):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    err = [line for line in r.output.strip().splitlines() if line.startswith("Error")]
    assert len(err) == 1 and needle in err[0]


@pytest.mark.slow
def test_depth_gap_command_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "g.json", tmp_path / "g.png"
    r = CliRunner().invoke(main, ["depth-gap", "--activation", "softplus", "--width", "16", "--depths", "4,8,16",
                                  "--json-out", str(out), "--plot", str(png), "--quiet"])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["depth_gap"]["slopes"]["output"] < -0.8
    assert png.stat().st_size > 1000


from _cheap_kernel import cheap_kernel  # noqa: E402,F401  (fixture)

TINY = ["--widths", "4,8", "--samples", "2", "--n-inputs", "2", "--dim", "2", "--solver", "euler", "--solver-steps", "4",
        "--quiet"]


def test_compare_json_flag_prints_json_and_json_out_writes_it(tmp_path, cheap_kernel):
    """compare's --json took a FILE while limit/check/derive's --json was a flag; now --json prints the
    JSON on stdout and --json-out FILE writes it. Failed before the fix ('--json' needed a value)."""
    out = tmp_path / "c.json"
    r = CliRunner().invoke(main, ["compare", "-a", "softplus", "--json", "--json-out", str(out)] + TINY)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["widths"] == [4, 8] and len(doc["empirical"]) == 2
    # the analytic side is the cheap stand-in kernel: sigma_v^2 exp(T x.y/d) on the diagonal = e
    assert doc["analytic"]["ntk"][0][0] == pytest.approx(2.718281828459045, rel=1e-14)


def test_compare_blown_up_flow_is_one_error_line(cheap_kernel):
    """compare -a 'x**2' --T 3 printed a table of NaN and exited 0; now one Error line (exit 2) and
    one Warning line for Assumption 1. Failed before the fix."""
    r = CliRunner().invoke(main, ["compare", "-a", "x**2", "--T", "3"] + TINY + ["--solver-steps", "64"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 2, r.output
    assert lines[0].startswith("Warning: compare: activation x**2 fails Assumption 1")
    assert lines[1].startswith("Error: the finite-width flow blew up before T = 3")
