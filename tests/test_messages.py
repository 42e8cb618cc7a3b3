"""Messages that must say the true thing (issue 20, item 3): each test asserts the number the message or the
result must contain, computed independently here."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import kernelcalc as kc


# ------------------------------------------------------------------ cost refusals
def _factors_and_product(msg: str):
    m = re.search(r"would cost about ([0-9.e+]+) operations \((.*?) = ([0-9.e+]+);", msg)
    assert m is not None, msg
    # the factors: " x " outside parentheses (a factor's own explanation may multiply inside them)
    parts, depth, start, text = [], 0, 0, m.group(2)
    for k, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and text.startswith(" x ", k):
            parts.append(text[start:k])
            start = k + 3
    parts.append(text[start:])
    factors = [float(f.strip().split()[0]) for f in parts if f.strip()]
    return factors, float(m.group(1)), float(m.group(3))


def _refusal(drivers=None, grid=None, n=1025, pairs=8, activation="tanh", method="auto"):
    from kernelcalc.kernels.ode import GoursatSolver, chebyshev_discretisation
    from kernelcalc.theory.gaussian import dual_kernels

    solver = GoursatSolver(activation, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0,
                           grid=grid or (lambda M: chebyshev_discretisation(M, 1.0, 1)))
    if drivers is not None:
        solver.cost_drivers = drivers
    with pytest.raises(kc.KernelcalcInputError) as err:
        solver._check_cost(dual_kernels(activation, q_max=2.0, method=method), pairs, n)
    return str(err.value)


def test_resnet_cost_refusal_multiplies_out_and_names_depth():
    from kernelcalc.kernels.resnet import cost_drivers

    msg = _refusal(cost_drivers(1024))        # the sizes of resnet_kernel(X3, "tanh", depth=1024): 8 pairs
    factors, quoted, product = _factors_and_product(msg)
    assert quoted == product
    assert math.prod(factors) == pytest.approx(quoted, rel=2e-3)      # the printed factors give the product
    assert "1025^2" in msg and 1025 ** 2 in [int(f) for f in factors] and 8 in factors
    assert msg.rsplit("; reduce ", 1)[1].startswith("depth")


def test_node_cost_refusal_multiplies_out():
    msg = _refusal(n=241, pairs=6, activation="softplus(x)", method="trapezoid")   # quadrature points at weight 1
    factors, quoted, _ = _factors_and_product(msg)
    assert math.prod(factors) == pytest.approx(quoted, rel=2e-3)
    assert "sigma_w or T" in msg and "depth" not in msg
    # every factor named: T and sigma_w, the pairs, the sweeps, the time nodes (cells 241^2), the quadrature points
    assert factors[:3] == [6, 40, 241 ** 2], factors
    for part in ("T = 1,", "sigma_w = 1,", "6 pairs", "40 Picard sweeps", "241^2", "quadrature points at weight 1"):
        assert part in msg, (part, msg)


@pytest.mark.slow    # ~45 s: the refusal comes after the dual's tables are built
def test_resnet_cost_refusal_end_to_end():
    # (depth 1024 computes since issue 17's row march: 4.4 s, estimate 2.7e-13; 16384 is 2.7e8 time cells)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(kc.KernelcalcInputError) as err:
            kc.resnet_kernel(np.eye(3) * np.sqrt(3.0), activation="tanh", depth=16384)
    factors, quoted, _ = _factors_and_product(str(err.value))
    # (to the quoted three significant figures of the product and of its 75.4 operations per cell)
    assert math.prod(factors) == pytest.approx(quoted, rel=5e-3) and "reduce depth" in str(err.value)


# ------------------------------------------------------------------ quadratic near its blow-up
def _quadratic_q(q0: float, T: float, M: int) -> float:
    r"""q(T) = S(T, T) of the Neural ODE with phi = x^2 (sigma's 1): S = q0 + \iint C, C = q(r) q(s) + 2 S(r, s)^2,
    by the product trapezoid rule on an M-cell grid, iterated to convergence (independent of kernelcalc)."""
    h = T / M
    J = np.zeros((M + 1, M + 1))
    for i in range(1, M + 1):
        J[i, : i + 1] = h
        J[i, 0] = J[i, i] = h / 2
    S = np.full((M + 1, M + 1), q0)
    for _ in range(500):
        q = np.diag(S)
        new = np.minimum(q0 + J @ (np.outer(q, q) + 2 * S * S) @ J.T, 1e100)
        done = np.max(np.abs(new - S) / new) < 1e-14
        S = new
        if done:
            break
    return S[-1, -1]


def test_quadratic_near_blow_up_computes_and_agrees_with_an_independent_solve():
    q0 = 1.735                        # x.x/d of the tutorial's third point
    x = np.array([[math.sqrt(q0)]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kc.Assumption1Warning)
        k = kc.node_kernel(x, activation="quadratic", T=0.68)
        a, b, c = (_quadratic_q(q0, 0.68, M) for M in (40, 80, 160))
        r1, r2 = (4 * b - a) / 3, (4 * c - b) / 3                   # Romberg: the trapezoid's error is even in h
        q_T = (16 * r2 - r1) / 15
        np.testing.assert_allclose(k.nngp[0, 0], 3 * q_T**2, rtol=1e-4)   # E[(sqrt(q) z)^4] = 3 q^2
        assert k.nngp[0, 0] > 5e4
        assert _quadratic_q(q0, 0.75, 150) == 1e100                 # the independent solve blows up by 0.75 ...
        with pytest.raises(kc.KernelcalcInputError, match="blows up"):
            kc.node_kernel(x, activation="quadratic", T=0.75)          # ... and so does the kernel


# ------------------------------------------------------------------ DEQ fixed points near the edge
def test_deq_relu_at_contraction_099998_computes_the_closed_form_fixed_point():
    sw = 1.4142                                 # sigma_w^2 / 2 = 0.99998: q* = q0 / (1 - sigma_w^2 / 2) = 5.2e4 q0
    X = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2.0)      # x.x/d = 1
    k = kc.deq_kernel(X, activation="relu", sigma_w=sw)
    q_star = 1.0 / (1.0 - sw**2 / 2)
    np.testing.assert_allclose(k.info["q_max"], q_star, rtol=1e-9)
    np.testing.assert_allclose(np.diag(k.nngp), q_star / 2, rtol=1e-9)   # E[relu(h)^2] = q*/2


def test_deq_refusals_print_the_condition_truly_and_name_the_failing_input():
    # sin: E[sin^2] = (1 - e^{-2q})/2, E[cos^2] = (1 + e^{-2q})/2; the plain diagonal iteration, done here
    sw, norms = 1.4, (0.234, 1.735)
    rates = {}
    for v in norms:
        q = v
        for _ in range(10_000):
            q = sw**2 * (1 - math.exp(-2 * q)) / 2 + v
        rates[v] = sw**2 * (1 + math.exp(-2 * q)) / 2
    assert rates[0.234] > 1 > rates[1.735]
    x = np.sqrt(np.array([[0.234], [1.735]]))
    with pytest.raises(kc.KernelcalcInputError) as err:
        kc.deq_kernel(x, activation="sin", sigma_w=sw)
    msg = str(err.value)
    assert "x.x/d = 0.234" in msg and "1.735" not in msg
    assert f"{rates[0.234]:.4g}" in msg
    # relu beyond the edge: sigma_w^2/2 = 1.00012 is printed as more than 1, never as "1"
    with pytest.raises(kc.KernelcalcInputError) as err:
        kc.deq_kernel(np.array([[1.0]]), activation="relu", sigma_w=1.4143)
    shown = re.search(r"(?:at q0 it is|contraction factor is) ([0-9.e+-]+)", str(err.value)).group(1)
    assert float(shown) > 1 and float(shown) == pytest.approx(1.4143**2 / 2, rel=1e-4)


# ------------------------------------------------------------------ check / limit --data
@pytest.fixture(scope="module")
def sphere_data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(10, 5))
    return np.sqrt(5.0) * X / np.linalg.norm(X, axis=1, keepdims=True)


def test_float32_sphere_message_prints_the_deviation_and_the_remedy(sphere_data):
    X32 = sphere_data.astype(np.float32)
    dev = np.abs(np.einsum("ij,ij->i", X32.astype(np.float64), X32.astype(np.float64)) / 5 - 1)
    i = int(np.argmax(dev))
    assert 1e-9 < dev[i] < 1e-6                      # float32 rounding: beyond the default sphere_rtol 1e-8
    rep = kc.check(X32, activation="softplus")          # the Gram is skipped: the verdict is already NOT OK
    msg = next(p for p in rep.problems if "sphere" in p)
    assert f"row {i} has |x|^2/d - 1 = " in msg
    shown = float(re.search(r"\|x\|\^2/d - 1 = ([-0-9.e+]+)", msg).group(1))
    assert abs(shown) == pytest.approx(dev[i], rel=0.01)
    assert "float32" in msg and "float64" in msg and "--sphere-rtol" in msg
    assert "contraction 1 - eta*lmin" in str(rep) and "nan" not in str(rep).split("contraction 1 - eta*lmin")[1].split("\n")[0]


def test_numerically_singular_gram_is_not_called_a_proof(sphere_data):
    X = sphere_data[:6].copy()
    X[5] = X[4] + 1e-7 * np.array([1.0, -1.0, 0.0, 0.0, 0.0])     # distinct, but lambda_min ~ 1e-14
    X[5] *= np.sqrt(5.0) / np.linalg.norm(X[5])
    rep = kc.check(X, activation="softplus", T=0.5)
    assert rep.distinct
    msg = next(p for p in rep.problems if "Gram" in p)
    assert "numerically singular" in msg and "within its error bound" in msg
    lmin, bound = (float(v) for v in re.search(r"lambda_min = ([-0-9.e+]+) is within its error bound ([0-9.e+-]+)",
                                               msg).groups())
    K = kc.node_kernel(X, activation="softplus", T=0.5, outputs=("ntk",))
    assert lmin == pytest.approx(np.linalg.eigvalsh(K.ntk)[0], abs=1e-3 * bound + 1e-15)
    assert abs(lmin) <= bound


def test_limit_data_warns_about_off_sphere_and_duplicate_rows(tmp_path, sphere_data):
    from click.testing import CliRunner

    from kernelcalc.cli import main

    X = np.vstack([sphere_data[:4], sphere_data[1]]) * np.array([1.0, 1.0, 1.0, 1.0, 1.1])
    np.save(tmp_path / "X.npy", X)
    res = CliRunner().invoke(main, ["limit", "-a", "sin", "--points", "2", "--T", "0.5", "--data", str(tmp_path / "X.npy")])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "warning: data not on the sphere" in out and "warning: duplicate rows 1=4" in out
    assert "condition number inf\n" not in out and "condition number inf (" in out


# ------------------------------------------------------------------ nothing dropped
def test_csv_header_is_all_non_numeric_and_a_typo_is_an_error_naming_its_line(tmp_path):
    from kernelcalc.data import load_array

    (tmp_path / "h.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(load_array(str(tmp_path / "h.csv")), [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "typo.csv").write_text("1,2,x\n4,5,6\n7,8,9\n")
    with pytest.raises(kc.KernelcalcInputError, match=r"line 1 has a non-numeric entry 'x'"):
        load_array(str(tmp_path / "typo.csv"))
    (tmp_path / "later.csv").write_text("# comment\n1,2,3\n\n4,5,y\n")
    with pytest.raises(kc.KernelcalcInputError, match=r"line 4 has a non-numeric entry 'y'"):
        load_array(str(tmp_path / "later.csv"))


def test_breakpoint_away_from_zero_with_a_non_polynomial_piece_is_refused_in_one_line():
    """A kink at x = 1 next to a tanh piece has no closed form, and the polar-sector rule is exact at x = 0 only: a
    one-line error at once (before: the finest polar level, still 8e-6 off, and a Neural-ODE kernel that ran for
    minutes at N = 5), for the kernels and the CLI alike."""
    import time

    from click.testing import CliRunner

    from kernelcalc.cli import main

    act = "Piecewise((x, x > 1), (tanh(x - 1) + 1, True))"
    start = time.perf_counter()
    for call in (lambda: kc.node_kernel(np.eye(3) * math.sqrt(3.0), activation=act),
                 lambda: kc.mlp_kernel(np.eye(3) * math.sqrt(3.0), activation=act, depth=2)):
        with pytest.raises(kc.KernelcalcInputError) as err:
            call()
        assert "\n" not in str(err.value) and "x = 1 (away from 0)" in str(err.value) and "tanh(x - 1)" in str(err.value)
    assert time.perf_counter() - start < 30.0
    result = CliRunner().invoke(main, ["limit", "--activation", act, "--T", "1"])
    assert result.exit_code != 0 and "Traceback" not in result.output and "away from 0" in result.output


def test_check_report_keeps_the_accuracy_warnings_of_its_computation(sphere_data):
    import json

    # a jump (its C has an infinite slope at rho = 1) and a nearly parallel pair: the time grid of small input angles
    # converges slowly and warns.  (sign(x) on three rows no longer warns: odd, its antiparallel pairs are mirrored
    # onto identical ones, exactly)
    X = sphere_data[:3]
    X = np.vstack([X, X[0] + 0.01 * np.eye(X.shape[1])[1]])
    X = X * np.sqrt(X.shape[1]) / np.linalg.norm(X, axis=1, keepdims=True)
    with pytest.warns(kc.KernelcalcAccuracyWarning, match="time grid") as rec:
        rep = kc.check(X, activation="sign(x - 0.3)", T=0.5, gram="always")
    issued = [str(w.message) for w in rec if issubclass(w.category, kc.KernelcalcAccuracyWarning)]
    assert issued and all(m in rep.warnings for m in issued)
    assert all(m in json.loads(json.dumps(rep.to_dict()))["warnings"] for m in issued)


@pytest.mark.slow   # the coarse self-kernel march before the guard: ~3-9 s
def test_deep_resnet_refusal_names_depth_and_multiplies_out():
    """resnet sin at depth 2^14 (closed-form dual): refused before the march (which ran for more than 5 min, with
    10 GB of dense matrices, before), the factors multiply to the quoted number, and depth is named."""
    x = np.eye(3) * math.sqrt(3.0)
    with pytest.raises(kc.KernelcalcInputError) as err:
        kc.resnet_kernel(x, activation="sin", depth=2**14)
    msg = str(err.value)
    factors, quoted, total = _factors_and_product(msg)
    assert math.isclose(math.prod(factors), total, rel_tol=0.05) and math.isclose(total, quoted, rel_tol=0.05)
    assert "depth (depth + 1 = 16385 time nodes)" in msg and "\n" not in msg


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_huge_horizon_is_one_line_error_before_allocating(activation):
    """sigma_w*T = 1e6: a one-line input error (before: a MemoryError traceback allocating the time grid)."""
    with pytest.raises(kc.KernelcalcInputError) as err:
        kc.node_kernel(np.eye(2) * math.sqrt(2.0), activation=activation, T=1e6)
    assert "reduce T or sigma_w" in str(err.value) and "\n" not in str(err.value)


def test_time_grid_ladder_checks_the_cost_before_each_rung(monkeypatch):
    """Each rung of the time-grid ladder checks the call's cost before solving there (tanh at T = 40 was refused
    only after the ladder's solves, 455 s), and the first rung at the second rung's degree (the ladder compares two:
    the call's degree is at least the second; softplus at sigma_w T = 20 spent 38 s of CPU on the first rung before
    the second one's check refused): a guard that refuses past the first rung's nodes stops the ladder before any
    solve of the final rule, and the first check prices the first rung's own solves in."""
    from kernelcalc.kernels import ode, ode_solver

    monkeypatch.setattr(ode_solver, "_TIME_GRIDS", {})   # a grid memoised by an earlier test skips the ladder
    first = ode.chebyshev_discretisation(ode._M_SEQUENCE[0], 1.0, 1).A.shape[0]
    second = ode.chebyshev_discretisation(ode._M_SEQUENCE[1], 1.0, 1).A.shape[0]
    solved, checks = [], []
    real_check, real_self = ode.GoursatSolver._check_cost, ode.GoursatSolver._self_diagonals

    def check(self, dual, pairs, n, symmetric=False, climbed=()):
        real_check(self, dual, pairs, n, symmetric, climbed)
        if getattr(self, "_final", None) is dual:
            checks.append((n, list(climbed)))
            if n > first:                                           # the final rule past the first rung
                raise kc.KernelcalcInputError(f"refused at {n} nodes")

    def self_diagonals(self, dual, M, v):
        solved.append((id(dual), M))
        return real_self(self, dual, M, v)

    def choose_M(self, dual, v, _real=ode.GoursatSolver._choose_M):
        self._final = dual
        return _real(self, dual, v)

    monkeypatch.setattr(ode.GoursatSolver, "_check_cost", check)
    monkeypatch.setattr(ode.GoursatSolver, "_self_diagonals", self_diagonals)
    monkeypatch.setattr(ode.GoursatSolver, "_choose_M", choose_M)
    with pytest.raises(kc.KernelcalcInputError, match="refused at"):
        kc.node_kernel(np.eye(2) * math.sqrt(2.0), activation="tanh", T=1.0)
    assert checks == [(second, [first])], checks
    final_ids = {i for i, _ in solved}
    assert len(final_ids) == 1, solved            # only the coarse rule's self-kernels (learning q(T)) were solved


def test_time_grid_ladder_prices_the_rungs_it_climbed():
    """The tensor grid's refusal counts the rungs of its ladder: their work enters the pairs factor as pair-equivalents
    (a rung at k nodes: a self-kernel and a pair, each k^2 cells), the printed factors still multiply out, and the
    parts of the first factor add up to it."""
    import types

    from kernelcalc.kernels.ode import GoursatSolver, chebyshev_discretisation

    solver = GoursatSolver("softplus", T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=1.0,
                           grid=lambda M: chebyshev_discretisation(M, 1.0, 1))
    dual = types.SimpleNamespace(method="polar", points=2000)    # a quadrature rule: its points at weight 1
    with pytest.raises(kc.KernelcalcInputError) as err:
        solver._check_cost(dual, 6, 241)
    base, _, _ = _factors_and_product(str(err.value))
    with pytest.raises(kc.KernelcalcInputError) as err:
        solver._check_cost(dual, 6, 241, climbed=[121, 161])
    msg = str(err.value)
    factors, quoted, _ = _factors_and_product(msg)
    assert math.prod(factors) == pytest.approx(quoted, rel=2e-3)
    parts = re.search(r"pairs \(6 of the call \+ ([0-9.e+]+) for the 2 rungs of the time-grid ladder at 121, 161 time", msg)
    assert parts is not None, msg
    assert factors[0] == pytest.approx(6 + float(parts.group(1)), rel=1e-3)
    # each rung: 2 problems of k^2 cells at (points + 0.04 k) per cell, against 241^2 cells at (points + 0.04 * 241)
    points = base[3] - 0.04 * 241
    expect = sum(2 * k * k * (points + 0.04 * k) for k in (121, 161)) / (241 ** 2 * base[3])
    assert float(parts.group(1)) == pytest.approx(expect, rel=1e-2)


@pytest.mark.slow   # ~3 s of CPU: the coarse time grids before the error
def test_bounded_activation_past_the_supported_horizon_is_a_clear_out_of_reach_error():
    """cos at sigma_w T = 40 (audit): the tensor grid's sweeps diverge; one line that says the horizon is out of reach
    and what to reduce (it said "the time solver failed ... please report this")."""
    with pytest.raises(kc.KernelcalcInputError) as err:
        kc.node_kernel(np.eye(2) * math.sqrt(2.0), activation="cos", T=40.0)
    msg = str(err.value)
    assert "\n" not in msg and "reduce T or sigma_w" in msg and "sigma_w*T = 40" in msg, msg
    assert "please report" not in msg, msg
