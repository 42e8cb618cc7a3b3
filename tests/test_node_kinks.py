r"""Kinked activations: the relu Neural ODE at 1e-10 against a test-only solver, and the other kinks.

**The reference** (written here, sharing no code with kernelcalc): uniform time grid $t_i=ih$,
$h=T/M$; the Goursat problems by the product trapezoid rule on the cells $[t_{i-1},t_i]\times[t_{j-1},t_j]$,
marching row by row on the triangle $j\le i$ (the two triangles are mirror images for inputs of equal
norm, and the diagonal $t=s$, where relu's $\dot C$ has its $|t-s|$ kink, runs through the grid
nodes, so no cell straddles the kink off its own diagonal); each row is iterated to its fixed point
(the self-kernel's $q(t_i)=S_{ii}$ couples into its own row).  $C$ and $\dot C$ are the arc-cosine
closed forms $C=\frac{\sqrt{q_1q_2}}{2\pi}(\sin\theta+(\pi-\theta)\cos\theta)$,
$\dot C=\frac{\pi-\theta}{2\pi}$.  The cells that the kink cuts are cut along their own diagonal,
which is an axis of symmetry of the product trapezoid rule, so the error expands in even powers of
$h$, and two Richardson steps over $M=64,128,256,512$ remove $h^2$ and $h^4$.

**Measured convergence order** (T = 1, sigma = 1, theta0 = 0, 1.0, 2.5; see
:func:`test_reference_converges_at_second_order`): successive differences of the raw NTK over
M = 32, 64, 128, 256 fall by 4.00 per halving of h (fitted orders 1.999-2.000); the two
twice-extrapolated values from M = 32..128 and 64..256 agree to 1e-14 relative (M = 64..512: the
same values to 3e-15).  Run time ~1.5 s (idle machine).  kernelcalc's collapsed-triangle grid
converges geometrically in its degree (:func:`test_kernelcalc_degree_converges_geometrically`).
"""

import math

import numpy as np
import pytest

import kernelcalc as kc


# ------------------------------------------------------------------ the test-only reference solver
def _relu_duals(q1, q2, c):
    n = np.sqrt(q1 * q2)
    rho = np.clip(np.where(n > 0, c / np.where(n > 0, n, 1.0), 0.0), -1.0, 1.0)
    th = np.arccos(rho)
    return n / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th)), (np.pi - th) / (2 * np.pi)


def _leaky_duals(alpha):
    def duals(q1, q2, c):
        C, Cd = _relu_duals(q1, q2, c)
        return alpha * c + (1 - alpha) ** 2 * C, alpha + (1 - alpha) ** 2 * Cd
    return duals


def _abs_duals(q1, q2, c):
    # |z| = relu(z) + relu(-z): E|a||b| = 2 (C(c) + C(-c)), E[sign a sign b] = 1 - 2 theta / pi
    Cp, Cdp = _relu_duals(q1, q2, c)
    Cm, Cdm = _relu_duals(q1, q2, -c)
    return 2 * (Cp + Cm), 2 * (Cdp - Cdm)


def _cumtrapz(f, h):
    """Cumulative trapezoid along the last axis: out[..., j] = int_0^{t_j}."""
    out = np.zeros_like(f)
    out[..., 1:] = np.cumsum(0.5 * h * (f[..., 1:] + f[..., :-1]), axis=-1)
    return out


def _march(duals, S0, q, M, T, sw, sv):
    r"""NTK and NNGP of problems with $S(0,\cdot)=S_0$ (B,) on the uniform grid with M steps.

    ``q``: (B, M+1) fixed diagonals, or None (the self-kernel: solved along).  Returns (nngp, ntk, q)."""
    h = T / M
    B = S0.size
    S = np.zeros((B, M + 1, M + 1))          # lower triangle j <= i used (symmetric)
    qq = np.zeros((B, M + 1)) if q is None else q.copy()
    C = np.zeros_like(S)
    Cd = np.zeros_like(S)
    S[:, 0, 0] = S0
    if q is None:
        qq[:, 0] = S0
    C[:, 0, :1], Cd[:, 0, :1] = duals(qq[:, :1], qq[:, :1], S[:, 0, :1])
    for i in range(1, M + 1):
        # S_{i-1, j} for j <= i: j < i from row i-1, j = i by symmetry S_{i-1,i} = S_{i,i-1} (unknown yet)
        Gprev = _cumtrapz(C[:, i - 1, :i], h)            # int_0^{t_j} C(t_{i-1}, .) for j <= i-1
        row = np.concatenate([S[:, i - 1, :i], S[:, i - 1, i - 1:i]], axis=1)   # first guess
        for _ in range(60):
            qi = row[:, i] if q is None else qq[:, i]
            qrow = np.concatenate([qq[:, :i], qi[:, None]], axis=1)
            Ci, Cdi = duals(qi[:, None], qrow, row)
            Gi = _cumtrapz(Ci, h)
            up = np.concatenate([S[:, i - 1, :i], row[:, i - 1:i]], axis=1)    # S_{i-1,i} = S_{i,i-1}
            # the last cell of column i: int_0^{t_i} C(t_{i-1}, .) needs C(t_{i-1}, t_i) = C(t_i, t_{i-1})
            Gp = np.concatenate([Gprev, Gprev[:, -1:] + 0.5 * h * (C[:, i - 1, i - 1:i] + Ci[:, i - 1:i])], axis=1)
            new = up + sw**2 * 0.5 * h * (Gi + Gp)
            done = np.max(np.abs(new - row)) <= 1e-15 * np.max(np.abs(new))
            row = new
            if done:
                break
        S[:, i, : i + 1] = row
        if q is None:
            qq[:, i] = row[:, i]
        C[:, i, : i + 1], Cd[:, i, : i + 1] = duals(qq[:, i:i + 1], qq[:, : i + 1], row)
    il = np.tril_indices(M + 1, -1)
    for A in (C, Cd):                         # mirror to the full square
        A[:, il[1], il[0]] = A[:, il[0], il[1]]
    # backward: Lam_ij = Lam_{i+1,j} + sw^2 h/2 (H_i(j) + H_{i+1}(j)), H_i(j) = int_{t_j}^T (Cd Lam)(t_i, .)
    Lam = np.zeros_like(S)
    LamT = sv**2 * Cd[:, M, M]
    Lam[:, M, :] = LamT[:, None]              # Lambda(T, s) = Lambda_T
    Lam[:, :, M] = LamT[:, None]

    def rev_cumtrapz(f):
        return _cumtrapz(f[..., ::-1], h)[..., ::-1]

    for i in range(M - 1, -1, -1):
        Hnext = rev_cumtrapz(Cd[:, i + 1] * Lam[:, i + 1])
        row = Lam[:, i + 1].copy()
        for _ in range(60):
            full = row.copy()
            full[:, i + 1:] = Lam[:, i + 1:, i]         # Lam_{i,b} = Lam_{b,i} for b > i (known rows)
            Hi = rev_cumtrapz(Cd[:, i] * full)
            new = Lam[:, i + 1] + sw**2 * 0.5 * h * (Hi + Hnext)
            new[:, i + 1:] = full[:, i + 1:]
            done = np.max(np.abs(new - row)) <= 1e-15 * np.max(np.abs(new))
            row = new
            if done:
                break
        Lam[:, i] = row
        Lam[:, :i + 1, i] = row[:, :i + 1]
    w = np.full(M + 1, h)
    w[0] = w[-1] = h / 2
    integral = np.einsum("i,bij,j->b", w, C * Lam, w)
    nngp = sv**2 * C[:, M, M]
    return nngp, nngp + sw**2 * integral + S0 * Lam[:, 0, 0], qq


def reference_ntk(duals, theta0, Ms=(64, 128, 256, 512), T=1.0, sw=1.0, su=1.0, sv=1.0):
    r"""Raw NTKs on the grids ``Ms`` (rows: M) and the twice Richardson-extrapolated values from the
    first three and the last three grids, for inputs on the unit sphere at angles ``theta0``."""
    theta0 = np.asarray(theta0, float)
    raw = []
    for M in Ms:
        _, _, q = _march(duals, np.array([su**2]), None, M, T, sw, sv)
        S0 = su**2 * np.cos(theta0)
        raw.append(_march(duals, S0, np.repeat(q, theta0.size, 0), M, T, sw, sv)[1])
    raw = np.array(raw)
    r1 = (4 * raw[1:] - raw[:-1]) / 3
    r2 = (16 * r1[1:] - r1[:-1]) / 15
    return raw, r2


# ---------------------------------------------------------------------------------------- tests
THETAS = np.array([0.0, 1.0, 2.5])


@pytest.fixture(scope="module")
def relu_reference():
    return reference_ntk(_relu_duals, THETAS, Ms=(32, 64, 128, 256))


def test_reference_converges_at_second_order(relu_reference):
    raw, r2 = relu_reference
    d = np.abs(np.diff(raw, axis=0))
    order = np.log2(d[:-1] / d[1:])
    assert np.all(np.abs(order - 2.0) < 0.05), order            # measured: 2.00
    assert np.max(np.abs(r2[1] - r2[0]) / np.abs(r2[1])) < 1e-12   # the reference's own error estimate


def _unit_inputs(thetas, d=3):
    """Unit-sphere (x.x/d = 1) inputs: the first row and one row per angle ``thetas``."""
    rows = [np.r_[math.sqrt(d), np.zeros(d - 1)]]
    for t in thetas:
        rows.append(math.sqrt(d) * np.r_[math.cos(t), math.sin(t), np.zeros(d - 2)])
    return np.array(rows)


def test_relu_node_at_1e10_with_honest_estimate(relu_reference):
    _, r2 = relu_reference
    ref, ref_err = r2[1], np.abs(r2[1] - r2[0])
    X = _unit_inputs(THETAS[1:])
    K = kc.node_kernel(X, activation="relu")
    got = np.r_[K.ntk[0, 0], K.ntk[0, 1:]]
    err = np.abs(got - ref)
    assert np.all(err <= 1e-10 * np.abs(ref) + ref_err), (err, ref_err)
    # the estimate bounds the true error (up to the reference's own, ~1e-12)
    assert np.max(err) <= K.info["error_estimate"] + np.max(ref_err)
    assert K.info["error_estimate"] <= 10 * 1e-10 * np.max(np.abs(K.ntk))


@pytest.mark.parametrize("activation, duals", [
    ("leaky_relu", _leaky_duals(0.01)),
    pytest.param("abs(x)", _abs_duals, marks=pytest.mark.slow),      # sympy proves the homogeneity: slow
    pytest.param("Piecewise((x, x >= 0), (0.1*x, True))", _leaky_duals(0.1), marks=pytest.mark.slow),
])
def test_other_kinks_against_reference(activation, duals):
    raw, r2 = reference_ntk(duals, np.array([0.0, 1.0]), Ms=(32, 64, 128))
    ref = r2[0]
    X = _unit_inputs([1.0])
    K = kc.node_kernel(X, activation=activation)
    got = np.r_[K.ntk[0, 0], K.ntk[0, 1]]
    # three grids: the reference is good to ~1e-9 here (its error: the raw differences' h^6 remainder)
    assert np.all(np.abs(got - ref) <= 1e-8 * np.abs(ref)), (got, ref)


def test_kernelcalc_degree_converges_geometrically(relu_reference):
    """The collapsed-triangle grid's error against the reference falls geometrically in the degree M
    (measured: 2e-6, 3e-10, 5e-12, 5e-14 at M = 4, 6, 8, 10 for the self-kernel, about -1.3 decades per
    degree; an algebraic order p would give about -0.1 p here)."""
    from kernelcalc.kernels.ode import KinkedGoursatSolver
    ref = relu_reference[1][1]
    Ms = np.array([4, 6, 8, 10])
    errs = []
    for M in Ms:
        s = KinkedGoursatSolver("relu", T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, M=int(M), v_max=1.0)
        errs.append(np.abs(s(np.ones(THETAS.size), np.ones(THETAS.size), np.cos(THETAS))[1] - ref) / np.abs(ref))
    errs = np.maximum(np.array(errs), 1e-16)
    slope = np.polyfit(Ms, np.log10(errs), 1)[0]                 # per angle
    assert np.all(slope < -0.8), slope
    assert np.all(errs[-1] < 1e-11), errs


# ------------------------------------------------------------------ graded theta variable (sphere tables)
def _kinked_model(theta):
    r"""A closed-form stand-in of a kinked Neural-ODE kernel: $K(\theta)-K(0)\approx-0.34\theta+\theta^2\log\theta$
    at $\theta=0$ (the measured shape), smooth elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tlog = np.where(theta > 0, theta**2 * np.log(np.where(theta > 0, theta, 1.0)), 0.0)
    return 1.0 - 0.34 * theta + tlog + 0.2 * np.cos(3 * theta)


def _model_pair(vx, vy, c):
    theta = np.arccos(np.clip(c / np.sqrt(vx * vy), -1.0, 1.0))
    K = _kinked_model(theta)
    return K, 2.0 * K


def test_graded_theta_table_resolves_a_kink_at_theta_zero():
    """The graded variable reaches 1e-10 with at most 129 nodes where uniform theta needs 513 or more, and
    the Gram read from its table matches the closed form at held-out angles within the reported estimate."""
    from kernelcalc.kernels._gram import _theta_samples, gram
    one = np.ones(1)
    _, R_graded, err_graded = _theta_samples(_model_pair, one, one, 1e-10, False, "test", graded=True)
    _, R_uniform, _ = _theta_samples(_model_pair, one, one, 1e-10, False, "test")
    assert R_graded <= 128 and err_graded <= 1e-10, (R_graded, err_graded)
    assert R_uniform >= 512, R_uniform
    thetas = np.r_[1e-4, 3e-3, 0.05, 0.3, 1.7, 3.1, np.pi - 1e-3]
    X = _unit_inputs(thetas)
    nngp, ntk, info = gram(X, None, _model_pair, tol=1e-10, graded_theta=True)
    assert "(graded)" in info["table"] and info["theta_nodes"] <= 129, info
    want = _kinked_model(thetas)
    err = np.max(np.abs(nngp[0, 1:] - want))
    assert err <= info["interpolation_error_estimate"] * np.max(np.abs(nngp)) + 1e-15, (err, info)
    assert err <= 1e-9, err


@pytest.mark.slow
def test_relu_sphere_table_is_graded_and_honest(relu_reference):
    """relu's Gram through the sphere table (graded theta) against the independent reference (8 s)."""
    _, r2 = relu_reference
    ref, ref_err = r2[1], np.abs(r2[1] - r2[0])
    X = _unit_inputs(np.r_[THETAS[1:], np.linspace(0.2, 3.0, 6)])       # 9 rows: 81 pairs > the direct limit
    K = kc.node_kernel(X, activation="relu", tol=1e-8)
    assert K.info["path"].startswith("homogeneous") and "(graded)" in K.info["table"], K.info
    assert K.info["theta_nodes"] <= 65, K.info["theta_nodes"]
    got = np.r_[K.ntk[0, 0], K.ntk[0, 1:3]]
    err = np.abs(got - ref)
    assert np.max(err) <= K.info["error_estimate"] + np.max(ref_err), (err, K.info["error_estimate"])
    assert np.all(err <= 1e-8 * np.abs(ref) + ref_err), err


def _near_parallel_slopes(activation, gaps):
    r"""$(K(\theta)-K(0))/\theta$ of the NTK at input angles with $1-\cos\theta$ = ``gaps`` (powers of 2; d = 4, so
    that $x\cdot y/d$ is exact and the inputs carry the angle to the last bit)."""
    rows = [np.r_[2.0, 0.0, 0.0, 0.0]]
    for g in gaps:
        c = 1.0 - g
        rows.append(np.r_[2.0 * c, 2.0 * math.sqrt(g * (2.0 - g)), 0.0, 0.0])
    K = kc.node_kernel(np.array(rows[:1]), np.array(rows), activation=activation)
    k = np.asarray(K.ntk)[0]
    theta = 2.0 * np.arcsin(np.sqrt(np.asarray(gaps) / 2.0))
    return (k[1:] - k[0]) / theta


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "abs(x)"])
def test_near_parallel_inputs_are_solved_to_full_accuracy(activation):
    r"""At input angles $\theta_0\approx10^{-7}$-$10^{-5}$ the cross-covariance differs from the parallel one by
    $\sim\theta_0^2\approx10^{-14}$; read off $S$ it keeps two digits, and the kink's angle error $\epsilon/\theta_0$
    reached 1e-8 relative in the abs NTK (the slope $(K(\theta)-K(0))/\theta$ was off by 0.4 % at $\theta=10^{-6}$).
    $K$ is $K(0)+K_1\theta+O(\theta^2\log\theta)$, so the slopes at $1.7\cdot10^{-7}$, $1.4\cdot10^{-6}$ and
    $1.1\cdot10^{-5}$ must agree to $O(\theta)$: within 1e-4 relative (before the deficit solve: relu 7.8e-4 off at
    $1.7\cdot10^{-7}$).  16 s."""
    s = _near_parallel_slopes(activation, [2.0**-46, 2.0**-40, 2.0**-34])
    assert np.all(np.abs(s - s[-1]) <= 1e-4 * np.abs(s[-1])), s


def test_drop_of_a_homogeneous_kink_is_relatively_accurate():
    r"""$C(\rho_p)-C(\rho_p-\Delta)$ of abs ($C=\frac2\pi(\sqrt{1-\rho^2}+\rho\arcsin\rho)$ at unit variances)
    from $1-\rho_p$ and $\Delta$, against mpmath at 50 digits, for $\Delta$ down to $10^{-20}$ (the deficit
    solve of near-parallel inputs relies on it; the difference of two float64 values would keep no digit)."""
    import mpmath as mp

    from kernelcalc.theory.duals import closed_form_dual

    form = closed_form_dual(kc.theory.activations.resolve_activation("abs(x)")).gap_form
    omr = np.array([0.0, 0.0, 1e-12, 1e-6, 0.3, 1.2, 1e-6])
    dlt = np.array([1e-20, 1e-8, 1e-14, 1e-16, 1e-10, 0.5, 1e-6])
    got = form.drop(np.ones_like(omr), np.ones_like(omr), omr, dlt)
    with mp.workdps(50):
        C = lambda r: 2 / mp.pi * (mp.sqrt(1 - r * r) + r * mp.asin(r))  # noqa: E731
        want = [float(C(1 - mp.mpf(o)) - C(1 - mp.mpf(o) - mp.mpf(d))) for o, d in zip(omr, dlt)]
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_relu_off_the_sphere_few_pairs_at_1e10(relu_reference):
    r"""Few pairs (the direct path) of rows off the sphere: relu is positively homogeneous, so
    $K(x,y)=\sqrt{v_xv_y}K(\hat x,\hat y)$; each pair is solved at unit norms on the collapsed-triangle grid
    (before: the tensor grid of unequal norms, 5e-7 with a warning), against the reference times the norms."""
    import warnings
    _, r2 = relu_reference
    ref, ref_err = r2[1], np.abs(r2[1] - r2[0])
    scales = np.array([0.7, 1.6, 1.0])
    X = _unit_inputs(THETAS[1:]) * scales[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", kc.KernelcalcAccuracyWarning)
        K = kc.node_kernel(X, activation="relu")
    got = np.array([K.ntk[0, 0], K.ntk[0, 1], K.ntk[0, 2], K.ntk[1, 1]])
    want = np.array([scales[0] ** 2 * ref[0], scales[0] * scales[1] * ref[1], scales[0] * scales[2] * ref[2],
                     scales[1] ** 2 * ref[0]])
    err = np.abs(got - want)
    assert np.all(err <= 1e-10 * np.abs(want) + 3 * np.max(ref_err)), err
    assert np.max(err) <= K.info["error_estimate"] + 3 * np.max(ref_err)


def _elu_pairs_against_a_fixed_grid(vx, vy, cos, M, T=1.0):
    """elu pairs of unequal norm (``vx``, ``vy``, input correlations ``cos``) by the kinked solver and by the tensor
    equations on a fixed grid of ``M`` intervals per element, with their own self-kernels:
    ``(solver, relative deviation)``."""
    from kernelcalc import _x64
    from kernelcalc.kernels.ode import GoursatSolver, chebyshev_discretisation
    from kernelcalc.kernels.ode_grid import time_elements
    from kernelcalc.kernels.ode_solver import KinkedGoursatSolver

    c = cos * np.sqrt(vx * vy)
    with _x64.scope():
        solver = KinkedGoursatSolver("elu", T=T, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=2.0)
        nngp, ntk = solver(vx, vy, c)
        fine = GoursatSolver("elu", T=T, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=2.0, M=M, max_nodes=1000,
                             grid=lambda m: chebyshev_discretisation(m, T, time_elements(T, 1.0)))
        ref_n, ref_t = fine(vx, vy, c)
    return solver, max(np.max(np.abs(ntk - ref_t)), np.max(np.abs(nngp - ref_n))) / np.max(np.abs(ref_t))


def test_unequal_norm_pairs_take_a_grid_judged_at_their_correlation():
    r"""A kinked, non-homogeneous activation (elu) off the sphere: pairs of unequal norm take the tensor grid judged
    on a pair at the cap of their correlation (0.95, 0.99), not on identical inputs (the kink's limit, which had driven
    it to 128 intervals: a 200-row standardised Gram took 355 s), with the self-kernel diagonals $q(t)$ of the
    collapsed triangles (the tensor grid's own converge only algebraically, and had limited these pairs to 2.6e-12 at
    16 intervals).  Four pairs (norm ratios 4, 1.1 and 1.001, input correlations 0.5 to 0.99) against the same tensor
    equations on a fixed fine grid (64 intervals; its own diagonals: 128 moves it by 2e-15), within 2e-12 of the
    largest |NTK| and within the solver's own estimate; the pairs up to 0.95 take 12 intervals, those up to 0.99 16."""
    solver, err = _elu_pairs_against_a_fixed_grid(np.array([0.5, 1.0, 1.0, 1.0]), np.array([2.0, 1.1, 1.001, 1.001]),
                                                  np.array([0.5, 0.9, 0.98, 0.99]), 64)
    assert solver.info["unequal_norms_M"] <= 12 and solver.info["unequal_norms_high_M"] <= 16
    assert "unequal_norms_close_M" not in solver.info
    assert err <= 2e-12 and err <= solver.relative_error_estimate()


@pytest.mark.slow    # ~9 s; the default run keeps the unequal-norm pairs on one element (both grids' tests above)
def test_unequal_norm_pairs_on_the_panels():
    r"""As above at $\sigma_wT=4$, where the collapsed triangles are four panels (their diagonals interpolated per
    panel at the two tensor elements' nodes): against the tensor equations on 64 intervals per element (96 moves it by
    2.3e-13), within 5e-13 of the largest |NTK| (the tensor grid with its own diagonals took 48 intervals and erred by
    1.4e-12 against 96).  ~3 s."""
    solver, err = _elu_pairs_against_a_fixed_grid(np.array([0.5, 1.0, 1.0, 1.0]), np.array([2.0, 1.1, 1.3, 1.001]),
                                                  np.array([0.5, 0.9, -0.7, 0.99]), 64, T=4.0)
    assert solver.info["unequal_norms_M"] <= 16
    assert err <= 5e-13 and err <= solver.relative_error_estimate()


@pytest.mark.slow
def test_unequal_norm_pairs_closer_than_the_cap_take_the_fine_grid():
    """Pairs of unequal norm beyond |cos| = 0.99 (here 0.999, norm ratio 1.001: nearly identical inputs, at the kink's
    limit) take both collapsed triangles, each pair on its own ladder (:mod:`kernelcalc.kernels.ode_kinked_pair`; the
    tensor grid judged at identical inputs took 64-128 intervals before), the others the coarse tensor grid, in one
    call: both against the tensor equations on a fixed grid of 128 intervals within 1e-10 of the largest |NTK|."""
    from kernelcalc.kernels.ode_kinked_pair import _PAIR_LADDER

    solver, err = _elu_pairs_against_a_fixed_grid(np.array([1.0, 0.5]), np.array([1.001, 2.0]), np.array([0.999, 0.5]),
                                                  128)
    assert solver.info["unequal_norms_close_M"] in _PAIR_LADDER and solver.info["unequal_norms_M"] <= 12
    assert err <= 1e-10


@pytest.mark.slow
def test_elu_off_the_sphere_direct_pairs_against_the_direct_path():
    """Node elu on 80 standardised rows (the norm interpolation): the direct pairs' self-kernels are interpolated in
    the tensor solver that takes them (measured at the check rows' norms); the three closest pairs against the direct
    path (a Gram of the pair's rows and the row of largest norm, which fixes the same time grids and rules; every
    self-kernel solved) within 1e-10 of max|NTK|.  ~10 s."""
    import warnings

    rng = np.random.default_rng(4)
    x = rng.standard_normal((80, 10)) * rng.uniform(0.4, 1.6, (80, 1))
    x = (x - x.mean(0)) / x.std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kc.Assumption1Warning)
        K = kc.node_kernel(x, activation="elu", T=1.0)
        assert K.info["path"] == "norm interpolation" and K.info["direct_pairs"] >= 16     # (and any above the cap)
        assert K.info["direct_self_kernels"]["interpolated"] and K.info["direct_self_kernels"]["deviation"] <= 1e-12
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        c = np.abs(u @ u.T)
        np.fill_diagonal(c, 0.0)
        big = int(np.argmax(np.sum(x * x, axis=1)))
        scale = np.max(np.abs(K.ntk))
        for i, j in zip(*np.unravel_index(np.argsort(-c, axis=None)[:6:2], c.shape)):
            D = kc.node_kernel(x[[int(i), int(j)] + ([big] if big not in (i, j) else [])], activation="elu", T=1.0)
            assert D.info["path"] == "direct"
            assert abs(K.ntk[i, j] - D.ntk[0, 1]) <= 1e-10 * scale and abs(K.nngp[i, j] - D.nngp[0, 1]) <= 1e-10 * scale


def test_odd_kinked_activation_mirrors_obtuse_angles():
    r"""hardtanh (odd, kinks at $\pm1$): at $\theta_0=\pi$ the inputs stay antiparallel, $h_t(-x)=-h_t(x)$, so the kernel
    has the kink of $\theta_0=0$ there; the kinked solver solves $\theta_0>\pi/2$ as $\pi-\theta_0$ (exact: the
    equations are odd in $S$) and its ladder probes $\pi/2$ for $\pi$ (it had warned: the probe at $\pi$ still changed by
    2.2e-8).  Pairs of unequal norm at obtuse angles against the tensor equations on a fixed 128-interval grid (no
    mirror there; its own self-kernels converge like $M^{-4}$: 32 / 64 / 128 intervals differ from the solver by
    2.8e-9 / 1.7e-10 / 1.1e-11), within 2e-11 of the largest |NTK|, without a warning."""
    import warnings

    from kernelcalc import _x64
    from kernelcalc.kernels.ode import GoursatSolver, chebyshev_discretisation
    from kernelcalc.kernels.ode_solver import KinkedGoursatSolver

    vx, vy, cos = np.array([0.7, 1.0, 2.0]), np.array([1.6, 1.3, 0.5]), np.array([-0.8, -0.95, -0.3])
    c = cos * np.sqrt(vx * vy)
    with _x64.scope(), warnings.catch_warnings():
        warnings.simplefilter("error", kc.KernelcalcAccuracyWarning)
        solver = KinkedGoursatSolver("Max(-1,Min(1,x))", T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=2.0)
        nngp, ntk = solver(vx, vy, c)
        fine = GoursatSolver("Max(-1,Min(1,x))", T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, v_max=2.0, M=128,
                             grid=lambda m: chebyshev_discretisation(m, 1.0, 1))
        ref_n, ref_t = fine(vx, vy, c)
    scale = np.max(np.abs(ref_t))
    assert np.max(np.abs(ntk - ref_t)) <= 2e-11 * scale and np.max(np.abs(nngp - ref_n)) <= 2e-11 * scale
