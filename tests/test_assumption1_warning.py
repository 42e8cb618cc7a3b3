"""warn_if_assumption1_fails / Assumption1Warning: one warning when Assumption 1 fails, none otherwise.

Before the fix no warning existed: a kernel for an activation that fails Assumption 1 (relu,
x^2, identity) was returned without a word.
"""

import time
import warnings

import pytest

import kernelcalc
import kernelcalc.theory.assumptions as A
from kernelcalc import Assumption1Warning
from kernelcalc.theory.assumptions import warn_if_assumption1_fails


def _caught(fn, *args, **kw):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args, **kw)
    return out, [w for w in rec if issubclass(w.category, Assumption1Warning)]


def test_exported_and_a_user_warning():
    assert kernelcalc.Assumption1Warning is A.Assumption1Warning
    assert "Assumption1Warning" in kernelcalc.__all__
    assert issubclass(Assumption1Warning, UserWarning)


@pytest.mark.parametrize("act, reason", [
    ("relu", "φ' is not Lipschitz"),
    ("x**2", "φ is not Lipschitz"),
    ("identity", "φ is linear"),
    ("leaky_relu(0.2)", "φ' is not Lipschitz"),
])
def test_failing_activation_warns_once(act, reason):
    report, got = _caught(warn_if_assumption1_fails, act, context="node_kernel")
    assert report.holds is False
    assert len(got) == 1
    msg = str(got[0].message)
    assert msg.startswith(f"node_kernel: activation {kernelcalc.resolve_activation(act).name} fails Assumption 1")
    assert reason in msg
    assert got[0].filename == __file__        # default stacklevel 2: the caller's caller (here _caught)


@pytest.mark.parametrize("act", ["tanh", "softplus", "elu", "floor(x + sin(x))"])  # holds, holds, holds, undetermined
def test_holding_or_undetermined_activation_is_silent(act):
    report, got = _caught(warn_if_assumption1_fails, act)
    assert report.holds is not False and got == []


def test_stacklevel_points_at_the_kernel_caller():
    def kernel(act):  # what a kernel function does, with an explicit stacklevel
        warn_if_assumption1_fails(act, context="kernel", stacklevel=2)

    _, got = _caught(kernel, "relu")
    call_line = _caught.__code__.co_firstlineno + 3    # 'out = fn(*args, **kw)': the user's call of kernel
    assert (got[0].filename, got[0].lineno) == (__file__, call_line)


def test_default_stacklevel_is_the_first_line_outside_kernelcalc():
    """stacklevel=None (the default): the first frame outside the package, whatever decorators or
    helpers of kernelcalc lie between (here: none, so the line in this file that called it)."""
    def user_code(act):
        warn_if_assumption1_fails(act, context="kernel")   # <- this line

    _, got = _caught(user_code, "relu")
    assert (got[0].filename, got[0].lineno) == (__file__, user_code.__code__.co_firstlineno + 1)


def test_analysis_is_cached_per_activation(monkeypatch):
    """The sympy analysis runs once per Activation; later calls cost microseconds."""
    calls = []
    real = A._analyse_unguarded

    def counting(act):
        calls.append(act.name)
        return real(act)

    monkeypatch.setattr(A, "_analyse_unguarded", counting)
    expr = "tanh(x) + x**2/7919"  # a fresh expression: not in the cache yet
    _caught(warn_if_assumption1_fails, expr)
    t0 = time.perf_counter()
    for _ in range(50):
        _caught(warn_if_assumption1_fails, expr)
    per_call = (time.perf_counter() - t0) / 50
    assert calls == [expr]
    assert per_call < 0.05   # generous (shared CPUs); measured ~1e-5 s


def test_analytic_node_and_resnet_kernels_warn_when_assumption1_fails():
    """Issue 10: no warning when a kernel was computed for an activation that fails Assumption 1 (relu:
    phi' is not Lipschitz). The reference is the symbolic verdict of analyse(); softplus holds: no warning."""
    import warnings

    import numpy as np

    kc = kernelcalc
    X = kc.data.sphere_normalise(np.random.default_rng(0).normal(size=(2, 3)))
    assert kc.analyse("relu").holds is False and kc.analyse("softplus").holds is True
    with pytest.warns(kc.Assumption1Warning, match="node_kernel: activation relu fails Assumption 1"):
        kc.node_kernel(X, activation="relu", time_nodes=8)
    with pytest.warns(kc.Assumption1Warning, match="resnet_kernel"):
        kc.resnet_kernel(X, activation="relu", depth=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", kc.Assumption1Warning)
        kc.resnet_kernel(X, activation="softplus", depth=2)
