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
