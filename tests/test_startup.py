"""Start-up work (issue 9, item 1): what a fresh process imports, small solves in numpy, the CLI's caches.

- ``import kernelcalc`` / ``kernelcalc.cli`` import neither jax nor diffrax, equinox, optimistix, scipy
  or matplotlib (checked in a fresh interpreter via ``sys.modules``); ``kernelcalc limit`` runs without
  importing jax at all;
- the numpy evaluation of the Goursat solves (small problems) equals the jit-compiled one to rounding,
  and both equal an independent closed form (linear activation: the kernel ODE is linear, solved here
  by a matrix exponential);
- the CLI's symbolic cache returns exactly what it stored, is keyed by the activation, recomputes a
  damaged entry and is off with ``KERNELCALC_JAX_CACHE=0``; the jax cache settings reach jax through
  its environment variables when jax is not imported yet.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEAVY = ("jax", "diffrax", "equinox", "optimistix", "lineax", "scipy", "matplotlib")


def _python(code: str, **env) -> str:
    """stdout of ``code`` in a fresh interpreter that imports this checkout's kernelcalc."""
    full = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    full.pop("JAX_ENABLE_X64", None)
    out = subprocess.run([sys.executable, "-c", code], env=full, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_loads_no_heavy_module():
    loaded = json.loads(_python(
        "import sys, json, kernelcalc, kernelcalc.cli; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"))
    assert loaded == []


def test_limit_runs_without_jax(tmp_path):
    code = ("import sys, json\n"
            "from kernelcalc.cli import main\n"
            "try:\n"
            "    main(['limit', '--activation', 'softplus', '--T', '1', '--points', '3', '--json'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(json.dumps([m for m in ('jax', 'scipy') if m in sys.modules]))\n")
    out = _python(code, KERNELCALC_JAX_CACHE=str(tmp_path / "cache"))
    doc, _, tail = out.rpartition("\n[")
    assert json.loads("[" + tail) == []
    table = json.loads(doc)["table"]
    assert [row["rho"] for row in table] == [-1.0, 0.0, 1.0]


def _linear_node_reference(rho, T, sw, su, sv):
    r"""NNGP and NTK of the identity activation, independently of the package: $C = S$, $\dot C = 1$, so
    $\partial_t\partial_s S = \sigma_w^2 S$ with $S = \sigma_u^2\rho$ on the axes gives
    $S(t,s)=\sigma_u^2\rho\,I_0(2\sigma_w\sqrt{ts})$, and $\Lambda(t,s)=\sigma_v^2 I_0(2\sigma_w\sqrt{(T-t)(T-s)})$.
    The NTK $\sigma_v^2 S(T,T) + \sigma_w^2\iint S\Lambda + S_0\Lambda(0,0)$ by Gauss-Legendre (smooth integrand)."""
    from numpy.polynomial.legendre import leggauss

    i0 = np.i0
    x, w = leggauss(60)
    t, wt = 0.5 * T * (x + 1), 0.5 * T * w
    S = su**2 * rho * i0(2 * sw * np.sqrt(np.outer(t, t)))
    Lam = sv**2 * i0(2 * sw * np.sqrt(np.outer(T - t, T - t)))
    nngp = sv**2 * su**2 * rho * i0(2 * sw * T)
    ntk = nngp + sw**2 * wt @ (S * Lam) @ wt + su**2 * rho * sv**2 * i0(2 * sw * T)
    return nngp, ntk


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_both_backends_match_the_linear_closed_form(backend, x64):   # internals: float64 by the test
    from kernelcalc.kernels.ode import _compiled, chebyshev_discretisation
    from kernelcalc.theory.gaussian import dual_kernels

    dual = dual_kernels("identity")
    assert dual.numpy_ok
    T, sw, su, sv = 1.3, 0.9, 1.1, 0.8
    _, cross, marginals = _compiled(dual, chebyshev_discretisation(24, T, 1), sw, sv, backend)
    rho = np.array([0.5, -0.25, 1.0])
    t = T * (1 - np.cos(np.pi * np.arange(25) / 24)) / 2          # the Chebyshev-Lobatto nodes on [0, T]
    diag = (su**2 * np.i0(2 * sw * t))[None, :]                      # q(t) = S_xx(t, t) for |x|^2/d = 1
    idx = np.zeros(3, np.int64)
    nngp, ntk, change, _ = cross(marginals(diag), idx, idx, su**2 * rho)
    ref = np.array([_linear_node_reference(r, T, sw, su, sv) for r in rho])
    np.testing.assert_allclose(np.asarray(nngp), ref[:, 0], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ntk), ref[:, 1], rtol=1e-11)
    assert float(change) < 1e-11


@pytest.mark.parametrize("activation", ["softplus", "erf", pytest.param("elu", marks=pytest.mark.slow)])   # a Hermite
# series, closed forms (elu: numpy Newton, ~9 s: slow; its Newton solves are checked against the direct path in
# tests/test_offsphere.py)
def test_numpy_and_compiled_solves_agree(activation, x64):
    from kernelcalc.kernels.ode import _compiled, chebyshev_discretisation
    from kernelcalc.theory.gaussian import dual_kernels

    dual = dual_kernels(activation, q_max=4.0)
    if not dual.numpy_ok:
        pytest.skip(f"{activation}: {dual.method} rule (jax only)")
    disc = chebyshev_discretisation(12, 1.0, 1)
    sn, cn, mn = _compiled(dual, disc, 1.2, 0.9, "numpy")
    sj, cj, mj = _compiled(dual, disc, 1.2, 0.9, "jax")
    S0 = np.array([0.7, 1.0, 1.4])
    Sn, dn, kn = sn(S0)
    Sj, dj, kj = sj(S0)
    np.testing.assert_allclose(Sn, np.asarray(Sj), rtol=1e-13, atol=1e-14)
    diag = np.diagonal(Sn, axis1=1, axis2=2)
    ix, iy = np.array([0, 1, 2, 0]), np.array([1, 2, 2, 0])
    c = np.array([0.3, -0.5, 1.4, 0.7])
    for a, b in zip(cn(mn(diag), ix, iy, c)[:2], cj(mj(diag), ix, iy, c)[:2]):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-13, atol=1e-14)


def test_backend_choice():
    from kernelcalc.kernels.ode import _NUMPY_MAX_WORK_CLOSED, _NUMPY_MAX_WORK_HERMITE, _backend
    from kernelcalc.theory.gaussian import dual_kernels

    herm = dual_kernels("softplus", q_max=2.0)
    assert herm.method == "hermite"
    assert _backend(herm, 1, 13) == "numpy"                        # the time-grid choice
    assert _backend(herm, 16, 13) == "numpy"                       # kernelcalc limit's 11 pairs
    assert _backend(herm, 64, 13) == "numpy"                       # theta tables of a large Gram
    assert _backend(herm, 4096, 13) == "numpy"                     # the norm interpolation of a wide spread
    n = int((_NUMPY_MAX_WORK_HERMITE / herm.points) ** 0.5) + 1     # (numpy sums each pair's own series)
    assert _backend(herm, 1, n - 2) == "numpy" and _backend(herm, 1, n) == "jax"
    closed = dual_kernels("erf")
    assert closed.method == "closed"
    n = int(_NUMPY_MAX_WORK_CLOSED ** 0.5) + 1                     # (one per cell)
    assert _backend(closed, 1, n - 2) == "numpy" and _backend(closed, 1, n) == "jax"
    assert _backend(closed, 2000, 65) == "numpy"                   # an off-sphere plan at sigma_w T = 10
    dear = dual_kernels("elu")
    assert dear.method == "closed" and dear.points > 1
    assert _backend(dear, 10**6, 513) == "numpy"                    # a dear closed form: numpy always
    from kernelcalc.theory.gaussian import DualKernels, PolarSectorRule, TrapezoidRule

    for method, rule in (("polar", PolarSectorRule()), ("trapezoid", TrapezoidRule(0.25))):
        quad = DualKernels(herm.activation, method, rule)
        assert not quad.numpy_ok and _backend(quad, 1, 9) == "jax"
    with pytest.raises(ValueError, match="no numpy evaluation"):
        quad.from_marginals((np.ones(2),), (np.ones(2),), np.ones(2), xp=np)
    # the untabulated polar rule also evaluates in numpy (a few covariances, nothing compiled): as compiled
    polar = DualKernels(herm.activation, "polar", PolarSectorRule(24, 40))
    q1, q2, c = np.array([1.0, 0.5, 2.0]), np.array([1.0, 1.5, 0.3]), np.array([0.3, -0.6, 0.77])
    got = polar.from_marginals((q1,), (q2,), c, xp=np)
    ref = polar.from_marginals((q1,), (q2,), c)
    assert np.max(np.abs(np.array(got) - np.array(ref))) < 1e-14


@pytest.mark.slow   # compiles every solve (~5-20 s); the fast check is test_numpy_and_compiled_solves_agree
def test_small_node_kernel_same_on_both_paths(monkeypatch):
    import kernelcalc as kc
    import kernelcalc.kernels.ode_grid as ode_grid

    x = np.array([[1.2, 0.3, -0.4]])
    y = np.array([[0.1, 0.9, 1.1], [-1.0, 0.2, 0.5]])
    a = kc.node_kernel(x, y, activation="softplus", T=0.8)
    monkeypatch.setattr(ode_grid, "_NUMPY_MAX_WORK", 0)            # every solve compiled
    monkeypatch.setattr(ode_grid, "_NUMPY_MAX_WORK_HERMITE", 0)
    b = kc.node_kernel(x, y, activation="softplus", T=0.8)
    assert a.info["M"] == b.info["M"]
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-14, atol=1e-14)


def test_hermite_series_and_closed_forms_in_numpy(x64):
    import jax.numpy as jnp

    from kernelcalc.theory.duals import JAX_OPS, NUMPY_OPS, closed_form_dual
    from kernelcalc.theory.activations import resolve_activation
    from kernelcalc.theory.gaussian import HermiteRule

    rng = np.random.default_rng(3)
    bf, bg, r = rng.normal(size=(40, 5, 1)), rng.normal(size=(40, 1, 4)), rng.uniform(-1, 1, size=(5, 4))
    compiled = HermiteRule.series(jnp.asarray(bf), jnp.asarray(bg), jnp.asarray(r))
    np.testing.assert_allclose(HermiteRule.series(bf, bg, r, np), np.asarray(compiled), rtol=1e-13, atol=1e-14)
    q1, q2 = rng.uniform(0.2, 3, 6), rng.uniform(0.2, 3, 6)
    c = np.sqrt(q1 * q2) * rng.uniform(-1, 1, 6)
    for name in ("relu", "erf", "gelu", "sin", "x**3 - x"):
        dual = closed_form_dual(resolve_activation(name))
        for u, v in zip(dual(q1, q2, c, ops=NUMPY_OPS), dual(q1, q2, c, ops=JAX_OPS)):
            np.testing.assert_allclose(u, np.asarray(v), rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------- the CLI's caches
def _limit_json(runner, *extra):
    from kernelcalc.cli import main

    res = runner.invoke(main, ["limit", "--activation", "tanh", "--T", "0.5", "--points", "3", "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_symbolic_cache_round_trip(tmp_path, monkeypatch):
    from kernelcalc.cli import _cache

    runner = CliRunner()
    monkeypatch.setenv("KERNELCALC_JAX_CACHE", "0")
    uncached = _limit_json(runner)
    monkeypatch.setenv("KERNELCALC_JAX_CACHE", str(tmp_path))
    first = _limit_json(runner)
    entries = list((tmp_path / "kernelcalc-symbolic").glob("*.json"))
    assert len(entries) == 1
    calls = []
    monkeypatch.setattr("kernelcalc.theory.symbolic.derive", lambda *a, **k: calls.append(a) or 1 / 0)
    second = _limit_json(runner)                           # served from the file: derive is not called
    assert calls == [] and first == second == uncached
    monkeypatch.undo()
    monkeypatch.setenv("KERNELCALC_JAX_CACHE", str(tmp_path))
    from kernelcalc.theory.activations import resolve_activation

    assert entries[0].stem == _cache.cache_key(resolve_activation("tanh"), "node")
    assert _cache.cache_key(resolve_activation("tanh"), "resnet") != entries[0].stem
    assert _cache.cache_key(resolve_activation("softplus"), "node") != entries[0].stem
    entries[0].write_text("{not json")                     # a damaged entry is recomputed and rewritten
    assert _limit_json(runner) == uncached
    assert json.loads(entries[0].read_text())["key"] == entries[0].stem


def test_derive_cache_keeps_the_report_and_matches(tmp_path, monkeypatch):
    from kernelcalc.cli import main

    runner = CliRunner()
    monkeypatch.setenv("KERNELCALC_JAX_CACHE", "0")
    plain = runner.invoke(main, ["derive", "--activation", "tanh", "--latex"]).output
    monkeypatch.setenv("KERNELCALC_JAX_CACHE", str(tmp_path))
    _limit_json(runner)
    assert runner.invoke(main, ["derive", "--activation", "tanh", "--latex"]).output == plain
    assert runner.invoke(main, ["derive", "--activation", "tanh", "--latex"]).output == plain
    (entry,) = (tmp_path / "kernelcalc-symbolic").glob("*.json")
    assert "report" in json.loads(entry.read_text())


def test_cache_off_writes_nothing(tmp_path, monkeypatch):
    from kernelcalc.cli import compilation_cache_folder, enable_compilation_cache

    monkeypatch.setenv("KERNELCALC_JAX_CACHE", "0")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert compilation_cache_folder() is None and enable_compilation_cache() is None
    _limit_json(CliRunner())
    assert list(tmp_path.iterdir()) == []
    monkeypatch.delenv("KERNELCALC_JAX_CACHE")
    assert compilation_cache_folder() == str(tmp_path / ".cache" / "kernelcalc" / "jax")   # per user


def test_jax_cache_settings_reach_jax_through_the_environment(tmp_path):
    folder = tmp_path / "jc"
    out = json.loads(_python(
        "import sys, json, os\n"
        "from kernelcalc.cli import enable_compilation_cache\n"
        "f = enable_compilation_cache()\n"
        "before = 'jax' in sys.modules\n"
        "import jax\n"
        "print(json.dumps([f, before, jax.config.jax_compilation_cache_dir,\n"
        "                  jax.config.jax_persistent_cache_min_compile_time_secs,\n"
        "                  jax.config.jax_persistent_cache_min_entry_size_bytes]))\n",
        KERNELCALC_JAX_CACHE=str(folder)))
    assert out == [str(folder), False, str(folder), 0.0, 0]
    assert folder.is_dir()
