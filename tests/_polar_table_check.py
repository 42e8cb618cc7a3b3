"""Shared by the polar-table tests: a kernel with the tabulated dual (the default) against the same kernel with the
rule itself (the table switched off), and random points of a table's range with angles near 0 and pi."""

import math
import warnings

import numpy as np

import kernelcalc as kc


def assert_table_equals_the_rule(monkeypatch, kernel, rtol=1e-12):
    """``kernel()`` (a Gram) with the tabulated dual and with the rule itself (``_polar_table`` off, the solvers'
    memo cleared around each): NTK and NNGP within ``rtol`` of max|NTK|."""
    from kernelcalc.kernels import ode_solver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kc.Assumption1Warning)
        ode_solver._TIME_GRIDS.clear()
        K = kernel()
        assert "tabulated" in K.info["expectation"]
        ode_solver._TIME_GRIDS.clear()
        monkeypatch.setattr(ode_solver.GoursatSolver, "_polar_table", lambda self, dual, v, q: dual)
        R = kernel()
        ode_solver._TIME_GRIDS.clear()
    assert "tabulated" not in R.info["expectation"]
    scale = np.max(np.abs(R.ntk))
    assert np.max(np.abs(K.ntk - R.ntk)) <= rtol * scale and np.max(np.abs(K.nngp - R.nngp)) <= rtol * scale


def random_points(rng, q_lo, q_hi, n):
    """``(q1, q2, c)``: log-uniform variances in [q_lo, q_hi]; a third of the angles uniform on [0, pi], a third within
    1e-8..1 of 0, a third of pi (where a kink's sqrt(1 - rho) lives)."""
    q1, q2 = np.exp(rng.uniform(math.log(q_lo), math.log(q_hi), (2, n)))
    th = np.concatenate([rng.uniform(0, math.pi, n // 3), 10 ** rng.uniform(-8, 0, n // 3),
                         math.pi - 10 ** rng.uniform(-8, 0, n - 2 * (n // 3))])
    return q1, q2, np.sqrt(q1 * q2) * np.cos(th)
