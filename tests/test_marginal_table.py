"""Hermite coefficients tabulated in log q (kernels/_marginal_table.py) against the test's own projection: a
trapezoid rule on a finer grid with its own Hermite recurrence (no code shared with kernelcalc's projection)."""

import math

import numpy as np

from kernelcalc import _x64
from kernelcalc.kernels._marginal_table import CoefficientTable, tabulated_dual
from kernelcalc.theory.gaussian import dual_kernels, series_lengths
from kernelcalc.theory.gaussian_hermite import _numpy_functions


def _coefficients(f, q, K):
    r"""$b_k(q)=E[f(\sqrt q z)He_k(z)]/\sqrt{k!}$, $k<K$: trapezoid rule, step 0.01 on $|z|\le 15$ (exponentially
    accurate for analytic $f$), $He_k/\sqrt{k!}$ by its three-term recurrence times $e^{-z^2/2}$ split as
    $e^{-z^2/4}\cdot e^{-z^2/4}$ so that nothing overflows."""
    z = np.arange(-1500, 1501) * 0.01
    g = 0.01 * f(math.sqrt(q) * z) * np.exp(-0.25 * z * z) / math.sqrt(2 * math.pi)
    h_prev, h = np.zeros_like(z), np.exp(-0.25 * z * z)
    out = np.empty(K)
    for k in range(K):
        out[k] = g @ h
        h_prev, h = h, (z * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
    return out


def test_table_in_log_q_against_a_finer_trapezoid_projection():
    """tanh and sech^2 at 12 random variances in [0.15, 3]: the table (all K terms) within 1e-13 of ||b|| of the
    reference and within ten times its own measured error (or 1e-14); a variance outside the range takes the
    direct projection; the tabulated marginals keep the per-variance lengths (zero beyond them)."""
    with _x64.scope():
        dual = dual_kernels("tanh", q_max=3.0)
        K = dual.rule.K
        rng = np.random.default_rng(1)
        q = np.exp(rng.uniform(math.log(0.15), math.log(3.0), 12))
        for f, f_ref in zip(_numpy_functions(dual.activation), (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2)):
            table = CoefficientTable(dual.rule, f, 0.15, 3.0, 1e-14)
            assert table.ok and table.degree == 32
            got = table(q, np.full(q.shape, K))
            for j, qj in enumerate(q):
                ref = _coefficients(f_ref, qj, K)
                err = np.max(np.abs(got[:, j] - ref)) / np.linalg.norm(ref)
                assert err <= max(10 * table.error, 1e-14) and err <= 1e-13
            outside = table(np.array([5.0]), np.array([K]))[:, 0]
            ref = _coefficients(f_ref, 5.0, K)
            assert np.max(np.abs(outside - ref)) <= 1e-13 * np.linalg.norm(ref)
        tab, err = tabulated_dual(dual, 0.15, 3.0)
        m = tab.marginal(q, xp=np, tol=1e-8)
        L = series_lengths(_numpy_functions(dual.activation)[0], q, K, 1e-8, dual.rule.tol)
        assert np.all(L < K)
        for j in range(q.size):
            assert np.all(m[1][L[j]:, j] == 0.0)


def _second_call_against_a_fresh_solver(first, second):
    """A tanh Goursat solver called at the norm pairs ``first`` then ``second`` (``(vx, vy)`` each): the second call
    against the same call on a fresh solver, to rounding."""
    from kernelcalc.kernels.ode import GoursatSolver, chebyshev_discretisation

    def solver():
        return GoursatSolver("tanh", T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, tol=1e-10, v_max=2.0,
                             grid=lambda M: chebyshev_discretisation(M, 1.0, 1))

    (vx, vy), (new_x, new_y) = first, second
    with _x64.scope():
        s = solver()
        s(vx, vy, 0.3 * np.sqrt(vx * vy))
        got = s(new_x, new_y, 0.6 * np.sqrt(new_x * new_y))
        ref = solver()(new_x, new_y, 0.6 * np.sqrt(new_x * new_y))
    for g, r in zip(got, ref):
        assert np.max(np.abs(g - r)) <= 1e-14 * np.max(np.abs(r))


def test_a_norm_new_to_the_marginal_store_gets_its_own_series_tails():
    """A solver's numpy Mehler calls share one store of marginals (written in place when a call brings a new norm,
    their series tails cached by the store's identity): a call with a new norm equals the same call on a fresh
    solver, to rounding."""
    _second_call_against_a_fresh_solver((np.array([0.5, 0.8, 1.1, 0.5]), np.array([0.8, 1.1, 0.5, 1.1])),
                                        (np.array([1.7, 0.5, 1.7]), np.array([0.8, 1.7, 1.7])))


def test_a_full_marginal_store_is_rebuilt_with_every_norm_of_the_call(monkeypatch):
    """When a call's new norms overflow the solver's marginal cache, the cache is cleared and rebuilt with every
    norm of that call, those it held before included (they were missing from the store: a KeyError): the call
    equals the same call on a fresh solver, to rounding."""
    from kernelcalc.kernels import _marginal_table

    monkeypatch.setattr(_marginal_table, "_MAX_CACHED", 4)
    # 1.1 cached by the first call; 1.7 and 0.9 new: 5 norms > 4
    _second_call_against_a_fresh_solver((np.array([0.5, 0.8, 1.1]), np.array([0.8, 1.1, 0.5])),
                                        (np.array([1.1, 1.7, 0.9]), np.array([1.7, 0.9, 1.1])))


def test_a_marginal_store_pickles_with_its_tails():
    """A solver sent to Dask workers in other processes pickles its marginal store: the tuple subclass keeps its tails
    (unpickling had failed with "missing 1 required positional argument: 'tails'"; the off-sphere Neural ODE on a
    process cluster raised)."""
    import pickle

    from kernelcalc.kernels._marginal_table import MarginalStore

    m = MarginalStore((np.arange(3.0), np.ones((2, 2))), (np.full(2, 0.5),))
    r = pickle.loads(pickle.dumps(m))
    assert type(r) is MarginalStore and len(r) == 2 and np.array_equal(r[1], m[1])
    assert len(r.tails) == 1 and np.array_equal(r.tails[0], m.tails[0])
