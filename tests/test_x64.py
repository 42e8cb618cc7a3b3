"""kernelcalc computes in float64 without changing the user's jax configuration.

Each scenario runs in a fresh Python (a subprocess), so this test process's own jax setting does not
matter: one interpreter as a float32 user (x64 off, the jax default), one where the user turned x64 on
globally before ``import kernelcalc``.  The float32 user's own jax code must stay float32 after the
import and after every call (node_kernel, mlp_kernel, empirical_ntk, train, check), and the results
must be float64 and equal to the global-x64 ones.  Before the calls, the float32 process also fills
kernelcalc's module-level jit caches from *outside* the context (float32 traces of the same functions
with the same shapes): they must not be reused inside it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r'''
    import json, sys, warnings
    import numpy as np
    import jax, jax.numpy as jnp

    mode, out = sys.argv[1], sys.argv[2]
    if mode == "global":
        jax.config.update("jax_enable_x64", True)
    warnings.simplefilter("ignore")

    def dtype():
        return str(jnp.ones(3).dtype)

    user_f = jax.jit(lambda x: x * 2.0 + 1.0)          # the user's own function, jitted before import
    rec = {"before": dtype(), "user_jit_before": str(user_f(np.ones(3)).dtype)}

    import kernelcalc as kc
    from kernelcalc._results import Kernel
    rec["after import"] = dtype()
    rec["flag after import"] = bool(jax.config.jax_enable_x64)
    import kernelcalc.kernels.ode_grid
    kernelcalc.kernels.ode_grid._NUMPY_MAX_WORK = 0  # the compiled solves (tiny solves would run in numpy)
    kernelcalc.kernels.ode_grid._NUMPY_MAX_WORK_CLOSED = 0   # (erf: a closed form)
    import kernelcalc.kernels.mlp
    kernelcalc.kernels.mlp._compiled = kernelcalc.kernels.mlp._jitted   # the compiled MLP (closed forms run in numpy)

    rng = np.random.default_rng(0)
    X = kc.data.sphere_normalise(rng.normal(size=(3, 2)))
    y = np.array([0.3, -0.2, 0.5])
    poison = {}
    if mode == "float32":
        # Fill the jit caches from outside the context, with the static arguments and shapes the
        # calls below use first (a float32 trace of each).
        from kernelcalc.kernels import mlp as mlp_mod, ode as ode_mod
        from kernelcalc.theory.gaussian import dual_kernels
        marginals, pair = mlp_mod._compiled(dual_kernels("relu"), 2, 1.0, 0.0, 1.0, 0.0)
        idx = np.zeros(8, np.int32)
        poison["mlp pair"] = str(pair(marginals(np.full(8, 1.0)), idx, idx, np.full(8, 0.5))[1].dtype)
        disc = ode_mod.chebyshev_discretisation(16, 1.0, 1)
        self_solve = ode_mod._compiled(dual_kernels("erf"), disc, 1.0, 1.0, "jax")[0]   # as node_kernel calls it
        poison["ode self solve"] = str(self_solve(np.ones(1))[0].dtype)
        from kernelcalc.empirical.models import make_network
        from kernelcalc.empirical.ntk import network_ntk
        net = make_network("node", activation="erf", width=8, solver="euler", solver_steps=4)
        with jax.enable_x64(True):
            params = kc.empirical.init_params(jax.random.PRNGKey(0), net, 2)
        p32 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
        raw = network_ntk.__wrapped__                         # the module-level jitted function itself
        poison["network_ntk"] = str(raw(p32, np.asarray(X, np.float32), None, net)[2].dtype)
        traces = {"mlp pair": pair, "ode self solve": self_solve, "network_ntk": raw}
        poison["traces before"] = {k: f._cache_size() for k, f in traces.items()}

    results = {}
    results["node"] = kc.node_kernel(X, activation="erf")
    rec["after node_kernel"] = dtype()
    results["mlp"] = kc.mlp_kernel(X, activation="relu", depth=2)
    rec["after mlp_kernel"] = dtype()
    results["empirical"] = kc.empirical_ntk(X, activation="erf", width=8, solver="euler", solver_steps=4)
    rec["after empirical_ntk"] = dtype()
    tr = kc.train(X, y, model="mlp", depth=1, activation="relu", width=8, steps=5, ntk_every=5)
    rec["after train"] = dtype()
    chk = kc.check(X, activation="erf")
    rec["after check"] = dtype()
    rec["user_jit_after"] = str(user_f(np.ones(3)).dtype)
    rec["user_jit_new"] = str(jax.jit(lambda x: jnp.sin(x))(np.ones(3)).dtype)
    rec["flag at end"] = bool(jax.config.jax_enable_x64)
    if mode == "float32":
        poison["traces after"] = {k: f._cache_size() for k, f in traces.items()}
    rec["poison"] = poison

    def leaves(obj, path):
        """(path, value) of every array-like leaf of a result (dataclass fields, dicts, sequences)."""
        import dataclasses
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                yield from leaves(getattr(obj, f.name), f"{path}.{f.name}")
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from leaves(v, f"{path}[{k!r}]")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from leaves(v, f"{path}[{i}]")
        else:
            yield path, obj

    arrays, jax_leaves, dtypes = {}, [], {}
    for name, r in list(results.items()) + [("train", tr), ("check", chk)]:
        for path, v in leaves(r, name):
            if isinstance(v, jax.Array):
                jax_leaves.append(path)
            if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                arrays[path] = v
                dtypes[path] = str(v.dtype)
            elif isinstance(v, (float, np.floating)):
                arrays[path] = np.asarray(v, np.float64)
                dtypes[path] = type(v).__name__
    rec["jax leaves"] = jax_leaves
    rec["dtypes"] = dtypes
    np.savez(out + ".npz", **{f"a{i}": arrays[k] for i, k in enumerate(sorted(arrays))})
    rec["keys"] = sorted(arrays)
    with open(out + ".json", "w") as fh:
        json.dump(rec, fh)
''')

# wall-clock entries differ between runs; everything else must agree
_TIMINGS = ("seconds", "wall", "time_s", "elapsed")


def _start(mode: str, out: pathlib.Path) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), KERNELCALC_JAX_CACHE="0")
    env.pop("JAX_ENABLE_X64", None)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, mode, str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("x64")
    procs = {mode: _start(mode, tmp / mode) for mode in ("float32", "global")}   # both at once
    out = {}
    for mode, p in procs.items():
        log, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"{mode} run failed:\n{log[-4000:]}"
        rec = json.loads((tmp / f"{mode}.json").read_text())
        data = np.load(tmp / f"{mode}.npz")
        rec["arrays"] = {k: data[f"a{i}"] for i, k in enumerate(rec["keys"])}
        out[mode] = rec
    return out


def _check_user_float32_code_stays_float32(runs):
    rec = runs["float32"]
    assert rec["flag after import"] is False and rec["flag at end"] is False
    for key in ("before", "after import", "after node_kernel", "after mlp_kernel", "after empirical_ntk",
                "after train", "after check", "user_jit_before", "user_jit_after", "user_jit_new"):
        assert rec[key] == "float32", (key, rec[key])
    # the global-x64 user keeps float64 too
    assert runs["global"]["after check"] == "float64" and runs["global"]["user_jit_after"] == "float64"


def _check_caches_filled_outside_the_context_are_not_reused(runs):
    poison = runs["float32"]["poison"]
    # the traces made outside really were float32 ...
    assert poison["mlp pair"] == poison["ode self solve"] == poison["network_ntk"] == "float32", poison
    # ... and the kernel calls traced the same jitted functions again (in float64: see the next test)
    for name, n in poison["traces before"].items():
        assert n == 1 and poison["traces after"][name] >= 2, (name, poison)


def _check_results_are_float64_numpy_and_equal_the_global_x64_ones(runs):
    f32, g = runs["float32"], runs["global"]
    assert f32["jax leaves"] == [] and g["jax leaves"] == [], (f32["jax leaves"], g["jax leaves"])
    assert f32["keys"] == g["keys"]
    keys = [k for k in f32["keys"] if not any(t in k for t in _TIMINGS)]
    # every Gram and every trajectory is there
    for need in ("node.ntk", "node.nngp", "mlp.ntk", "empirical.ntk", "train.loss", "check.gram.lambda_min"):
        assert any(k.startswith(need) for k in keys), need
    worst = {}
    for k in keys:
        a, b = f32["arrays"][k], g["arrays"][k]
        assert a.dtype == np.float64 and f32["dtypes"][k] in ("float64", "float"), (k, f32["dtypes"][k])
        assert a.shape == b.shape, k
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1.0)
        same = (a == b) | (np.isnan(a) & np.isnan(b))          # also equal infinities
        with np.errstate(invalid="ignore"):
            worst[k] = float(np.max(np.where(same, 0.0, np.abs(a - b)), initial=0.0)) / scale
    bad = {k: v for k, v in worst.items() if not v <= 1e-14}
    assert not bad, bad


def _relu_mlp_reference(X, depth):
    r"""Depth-``depth`` ReLU MLP NNGP/NTK (w_std = 1, b_std = 0, stax convention) by the arc-cosine
    formulas, in numpy: $K' = \sqrt{q_1q_2}(\sin\theta + (\pi-\theta)\cos\theta)/2\pi$,
    $\dot K = (\pi-\theta)/2\pi$, $\Theta' = K' + \dot K\,\Theta$."""
    K = X @ X.T / X.shape[1]
    ntk = K.copy()
    for _ in range(depth):
        q = np.diag(K)
        n = np.sqrt(np.outer(q, q))
        theta = np.arccos(np.clip(K / n, -1.0, 1.0))
        K, Kdot = n * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi), (np.pi - theta) / (2 * np.pi)
        ntk = K + Kdot * ntk
    return K, ntk


def _check_float32_user_gets_float64_accuracy(runs):
    """Against an independent closed form: float32 arithmetic anywhere would miss by ~1e-7."""
    X = np.random.default_rng(0).normal(size=(3, 2))
    X = X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(2.0)
    nngp, ntk = _relu_mlp_reference(X, 2)
    got = runs["float32"]["arrays"]
    np.testing.assert_allclose(got["mlp.nngp"], nngp, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got["mlp.ntk"], ntk, rtol=0, atol=1e-13)


# Public functions that run no jax (numpy, sympy, flint, validation): they need no context.
NOT_JAX = {
    "kernelcalc": {"resolve_activation", "analyse", "derive", "feature_rank_bound", "predict_from_kernels",
                   "hermite_coefficients"},
    "kernelcalc.empirical": {"make_network", "fit_slope"},
    "kernelcalc.training": {"default_lr", "polynomial_target", "sad_data"},
    "kernelcalc.studies.certify": {"verified_cholesky_bound"},
    "kernelcalc.studies.checks": {"gram_summary"},
    "kernelcalc.studies.comparison": {"plot_model_comparison"},
    "kernelcalc.studies.horizon": {"predicted_steps"},
    "kernelcalc.studies.sphere_spectrum": {"fit_decay", "max_degree"},
    "kernelcalc.studies.polynomial": {"sphere_degree", "harmonic_dimension", "sphere_polynomial_dimension", "feature_degree",
                                      "feature_rank_bound"},
    "kernelcalc.theory.gaussian": {"hermite_order", "choose_step", "expect_mpmath", "hermite_q_limit",
                                   "fourier_dual_kernels"},
}
# Methods of public classes that run jax.
JAX_METHODS = {
    "kernelcalc.theory.gaussian.DualKernels": ("__call__", "C", "marginal", "from_marginals"),
    "kernelcalc.theory.gaussian.TrapezoidRule": ("expect_pairs",),
    "kernelcalc.theory.gaussian.PolarSectorRule": ("expect_pairs",),
    "kernelcalc.theory.gaussian.HermiteRule": ("coefficients", "expect_pairs"),
    "kernelcalc.kernels.ode.GoursatSolver": ("__call__",),
    "kernelcalc.theory.duals.ClosedFormDual": ("__call__",),
}


def test_the_two_subprocess_runs(runs):
    """The checks of the two subprocess runs (a float32 user, a global-x64 user), in one test: pytest-xdist spread
    the four tests that shared the module fixture over both workers, and each built it (26 s of subprocesses)."""
    _check_user_float32_code_stays_float32(runs)
    _check_caches_filled_outside_the_context_are_not_reused(runs)
    _check_results_are_float64_numpy_and_equal_the_global_x64_ones(runs)
    _check_float32_user_gets_float64_accuracy(runs)


def test_every_public_jax_function_computes_in_float64():
    """Each public function of the namespaces users call is wrapped by ``float64`` unless it runs no jax;
    a new public function fails here until it is wrapped or listed in NOT_JAX."""
    import importlib
    import inspect
    import pkgutil

    import kernelcalc
    from kernelcalc._x64 import is_float64

    spaces = ["kernelcalc", "kernelcalc.kernels", "kernelcalc.empirical", "kernelcalc.training",
              "kernelcalc.theory.gaussian"]
    spaces += [m.name for m in pkgutil.iter_modules(kernelcalc.studies.__path__, "kernelcalc.studies.")]
    missing, checked = [], 0
    for space in spaces:
        mod = importlib.import_module(space)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.ismodule(obj) or not callable(obj):
                continue
            checked += 1
            if not is_float64(obj) and name not in NOT_JAX.get(space, ()):
                missing.append(f"{space}.{name}")
    for path, methods in JAX_METHODS.items():
        mod, cls = path.rsplit(".", 1)
        for m in methods:
            checked += 1
            if not is_float64(getattr(getattr(importlib.import_module(mod), cls), m)):
                missing.append(f"{path}.{m}")
    assert not missing, missing
    assert checked > 40
    # the lazy names resolve to the wrapped functions themselves
    assert is_float64(kernelcalc.train) and is_float64(kernelcalc.empirical_ntk) and is_float64(kernelcalc.sweep_T)
    # and the guard is not vacuous: a plain function is not float64
    assert not is_float64(kernelcalc.resolve_activation)


def test_float64_decorator_is_scoped_and_follows_the_callers_trace():
    """In this process: the wrapper turns x64 on for the call only, and inside a trace of the caller's
    (x64 off) it leaves the setting alone.  (Runs whatever this process's setting is.)"""
    import jax
    import jax.numpy as jnp

    from kernelcalc._x64 import float64

    @float64
    def f(x):
        return jnp.asarray(x, jnp.float64) * 2, bool(jax.enable_x64.value)

    with jax.enable_x64(False):
        y, on = f(np.ones(2))
        assert on and y.dtype == np.float64
        assert not jax.enable_x64.value and jnp.ones(1).dtype == np.float32
        seen = []

        @jax.jit
        def user(x):
            y, on = f(x)
            seen.append(on)
            return y

        with pytest.warns(UserWarning, match="float64"):   # jax: a float64 request inside a float32 trace
            assert user(np.ones(2, np.float32)).dtype == np.float32
        assert seen == [False]
    with jax.enable_x64(True):
        assert f(np.ones(2))[0].dtype == np.float64 and jax.enable_x64.value


def test_warnings_still_point_at_the_users_line():
    """The float64 wrapper adds a frame: the Assumption-1 warning of a kernel still names the caller."""
    import warnings

    import kernelcalc as kc

    X = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2.0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        kc.resnet_kernel(X, activation="relu", depth=2)
    got = [w for w in rec if issubclass(w.category, kc.Assumption1Warning)]
    assert len(got) == 1 and got[0].filename == __file__, [(w.filename, w.lineno) for w in got]
