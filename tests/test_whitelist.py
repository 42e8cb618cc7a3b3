"""Every function of the README's expression whitelist, applied to x, either computes a kernel or gives one
clear line (issue 20, item 2): through ``kc.node_kernel`` and through ``kernelcalc limit``.

References shared with no kernelcalc code: sign and Heaviside are +-1 / 0 or 1 valued, so their NNGP at
identical inputs is sigma_v^2 E[phi^2] = 1 (sign) or 1/2 (Heaviside), at opposite inputs of the odd sign -1;
their derivative almost everywhere is 0, so the NTK of the tied Neural ODE is its NNGP (Lambda = 0).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import kernelcalc as kc
from kernelcalc.cli import main

# The README's list ("exp log sqrt sin cos tan sinh cosh tanh atan asinh erf erfc abs sign floor ceiling
# Heaviside Max Min Piecewise" plus "relu softplus sigmoid gelu silu"), each applied to x.
README_FUNCTIONS = ("exp log sqrt sin cos tan sinh cosh tanh atan asinh erf erfc abs sign floor ceiling Heaviside "
                    "Max Min Piecewise relu softplus sigmoid gelu silu").split()
SPECIAL = {"Max": "Max(x, 0.2*x)", "Min": "Min(x, 0)", "Piecewise": "Piecewise((x, x >= 0), (0.3*x, True))"}
WHITELIST = [SPECIAL.get(f, f"{f}(x)") for f in README_FUNCTIONS] + ["floor(x)+x", "Heaviside(x, 0)"]
#: refused with one line, and why (the words the line must contain)
REFUSED = {"log(x)": "infinite at x = 0", "sqrt(x)": "not a finite real number at x = -30", "tan(x)": "infinite at x = pi/2",
           "floor(x)": "jump at every integer", "ceiling(x)": "jump at every integer",
           "floor(x)+x": "jump at every integer",
           # phi grows faster than linearly: q(t) blows up before T = 1 at these inputs
           "exp(x)": "blows up", "sinh(x)": "blows up", "cosh(x)": "blows up"}

#: T per function (default 0.5): phi growing like exp(|x|) blows up before T = 1 (and costs minutes near it)
T_OF = {"exp(x)": 1.0, "sinh(x)": 1.0, "cosh(x)": 1.0}
X = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]]) * np.sqrt(2.0)   # on the sphere x.x/d = 1


def test_the_list_is_the_readme_list():
    with open(__file__.rsplit("/tests/", 1)[0] + "/README.md", encoding="utf-8") as fh:
        readme = " ".join(fh.read().split())
    m = re.search(r"the functions `([^`]*)` plus\s+`([^`]*)`", readme)
    assert m is not None
    assert (m.group(1) + " " + m.group(2)).split() == README_FUNCTIONS


#: cheap in the default run (closed forms, or refused before any quadrature); the rest are marked slow (the
#: polar-sector and trapezoid rules compile for ~10-30 s each on a busy 2-core machine)
FAST = set(REFUSED) | {"sign(x)", "Heaviside(x)", "sin(x)", "cos(x)", "erf(x)", "relu(x)", "gelu(x)"}


@pytest.mark.parametrize("expr", [e if e in FAST else pytest.param(e, marks=pytest.mark.slow) for e in WHITELIST])
def test_node_kernel_computes_or_refuses_in_one_line(expr):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if expr in REFUSED:
            with pytest.raises(kc.KernelcalcInputError) as err:
                kc.node_kernel(X, activation=expr, T=T_OF.get(expr, 0.5), tol=1e-6)
            msg = str(err.value)
            assert "\n" not in msg and REFUSED[expr] in msg
            return
        k = kc.node_kernel(X, activation=expr, T=T_OF.get(expr, 0.5), tol=1e-6)
    for g in (k.nngp, k.ntk):
        assert np.all(np.isfinite(g)) and np.allclose(g, g.T)
        assert np.all(np.linalg.eigvalsh(g) > -1e-8 * np.abs(g).max())   # positive semi-definite
    if expr == "sign(x)":
        np.testing.assert_allclose(np.diag(k.nngp), 1.0, atol=1e-13)
        np.testing.assert_allclose(k.nngp[0, 2], -1.0, atol=1e-13)
    if expr in ("Heaviside(x)", "Heaviside(x, 0)"):
        np.testing.assert_allclose(np.diag(k.nngp), 0.5, atol=1e-3 if expr == "Heaviside(x, 0)" else 1e-13)
    if expr in ("sign(x)", "Heaviside(x)"):
        np.testing.assert_array_equal(k.ntk, k.nngp)       # phi' = 0 almost everywhere: Lambda = 0


def test_jump_verdicts_and_almost_everywhere_derivative():
    for expr, dphi in (("sign(x)", 0), ("Heaviside(x)", 0), ("floor(x)", 0), ("floor(x)+x", 1), ("ceiling(2*x)", 0)):
        act = kc.resolve_activation(expr)
        assert act.derivative == dphi and act.jumps
        r = kc.analyse(act)
        assert r.phi_lipschitz.holds is False and "jumps at x = 0" in r.phi_lipschitz.reason
        assert r.dphi_lipschitz.holds is False


def test_sign_and_heaviside_closed_forms_against_monte_carlo():
    from kernelcalc.theory.duals import NUMPY_OPS, closed_form_dual

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 100_000))
    for q1, q2, c in ((1.0, 2.0, 0.7), (0.5, 0.5, -0.3)):
        r = c / np.sqrt(q1 * q2)
        a, b = np.sqrt(q1) * z[0], np.sqrt(q2) * (r * z[0] + np.sqrt(1 - r * r) * z[1])
        for expr, f in (("sign(x)", np.sign), ("Heaviside(x)", lambda v: (v > 0).astype(float))):
            d = closed_form_dual(kc.resolve_activation(expr))
            C, Cdot = (float(v) for v in d(q1, q2, c, ops=NUMPY_OPS))
            samples = f(a) * f(b)
            assert abs(C - samples.mean()) < 5 * samples.std() / np.sqrt(samples.size)
            assert Cdot == 0.0
        sign = closed_form_dual(kc.resolve_activation("sign(x)"))
        np.testing.assert_allclose(float(sign(q1, q2, c, ops=NUMPY_OPS)[0]), 2 / np.pi * np.arcsin(r), rtol=1e-13)


@pytest.mark.parametrize("expr", ["sign(x)", "Heaviside(x)", "floor(x)", "ceiling(x)", "floor(x)+x", "log(x)",
                                  "tan(x)", pytest.param("abs(x)", marks=pytest.mark.slow)])
def test_cli_limit_computes_or_gives_one_line(expr):
    res = CliRunner().invoke(main, ["limit", "-a", expr, "--points", "3", "--T", "0.5"])
    out = res.output
    assert "Traceback" not in out and "NameError" not in out and "PrintMethod" not in out
    if expr in REFUSED:
        assert res.exit_code != 0
        errors = [line for line in out.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and REFUSED[expr] in errors[0]
    else:
        assert res.exit_code == 0, out
        rows = [line.split() for line in out.splitlines() if re.match(r"^\s*-?\d\.\d{4}\s", line)]
        assert len(rows) == 3 and all(np.isfinite(float(v)) for r in rows for v in r)
        if expr == "sign(x)":
            assert [float(r[1]) for r in rows] == pytest.approx([-1.0, 0.0, 1.0], abs=1e-9)
