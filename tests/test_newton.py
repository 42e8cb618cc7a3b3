"""Newton steps of the numpy cross-kernel Picard sweeps (kernels/_newton.py): the same fixed point as the
plain sweeps, in fewer sweeps.  (That fixed point against a reference sharing no code with the solver:
tests/test_node_reference.py, the softplus off-sphere pair in the default run; tests/test_offsphere.py,
tanh on standardised rows against the direct per-pair path.)"""

import numpy as np

from kernelcalc import _x64
from kernelcalc.kernels import _newton, ode_grid
from kernelcalc.kernels.ode import GoursatSolver, chebyshev_discretisation


def _solve(monkeypatch, newton: bool):
    """A batch of tanh pairs of unequal norms; the forward (S) sweeps of its cross solves."""
    if not newton:
        monkeypatch.setattr(_newton.ChordNewton, "wants_derivative", lambda self, exact: False)
    sweeps = []
    picard = ode_grid._picard

    def counted(step, S_init, *args, accelerate=None, **kw):
        out = picard(step, S_init, *args, accelerate=accelerate, **kw)
        if accelerate is not None:
            sweeps.append(int(out[2]))
        return out

    monkeypatch.setattr(ode_grid, "_picard", counted)
    solver = GoursatSolver("tanh", T=1.0, sigma_w=1.2, sigma_u=1.0, sigma_v=1.0, tol=1e-10, v_max=1.5,
                           grid=lambda M: chebyshev_discretisation(M, 1.0, 1))
    rng = np.random.default_rng(3)
    vx, vy = rng.uniform(0.2, 1.5, 12), rng.uniform(0.2, 1.5, 12)
    c = np.sqrt(vx * vy) * rng.uniform(-0.97, 0.97, 12)
    with _x64.scope():
        solver._dual_and_M(np.array([1.5]))
        sweeps.clear()             # (the time-grid choice)
        nngp, ntk = solver(vx, vy, c)
    monkeypatch.undo()
    return nngp, ntk, solver.info, sweeps


def test_newton_steps_reach_the_plain_sweeps_fixed_point_in_fewer_sweeps(monkeypatch):
    """Tanh pairs of unequal norms (q up to ~2.5, Mehler series in numpy): the values with the Newton steps equal
    those of the plain sweeps to 1e-13 (relative), and the solve takes fewer sweeps."""
    n1, t1, info1, sweeps1 = _solve(monkeypatch, True)
    n0, t0, info0, sweeps0 = _solve(monkeypatch, False)
    assert info0["M"] == info1["M"] and sweeps0 and len(sweeps0) == len(sweeps1)
    scale = max(np.max(np.abs(t0)), np.max(np.abs(n0)))
    assert max(np.max(np.abs(n1 - n0)), np.max(np.abs(t1 - t0))) <= 1e-13 * scale
    assert max(sweeps1) <= max(sweeps0) - 3          # measured: 8 against 11
    assert info1["sweep_change"] <= 1e-14
