"""DEQ kernel: relu/erf fixed points solved here with mpmath, Monte Carlo of the optimistix DEQ, errors."""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

import kernelcalc as kc
from kernelcalc import KernelcalcInputError
from kernelcalc.empirical.deq import deq_equilibrium
from kernelcalc.empirical.models import init_params, make_network
from kernelcalc.empirical.ntk import network_ntk

from _monte_carlo_check import assert_within_standard_errors as _check

X = np.array([[1.0, 0.3, -0.4], [0.2, -0.8, 0.9], [0.5, 0.5, 0.1]])
S = X @ X.T / 3


def relu_duals(qx, qy, c):
    n = mp.sqrt(qx * qy)
    th = mp.acos(min(c / n, mp.mpf(1)))
    return n / (2 * mp.pi) * (mp.sin(th) + (mp.pi - th) * mp.cos(th)), (mp.pi - th) / (2 * mp.pi)


def erf_duals(qx, qy, c):
    den = mp.sqrt((1 + 2 * qx) * (1 + 2 * qy))
    return 2 / mp.pi * mp.asin(2 * c / den), 4 / mp.pi / mp.sqrt((1 + 2 * qx) * (1 + 2 * qy) - 4 * c * c)


def reference(duals, sw, su, sb, sv, diag_closed=None):
    """mpmath: diagonal and cross fixed points by findroot, then the Feng-Kolter NTK."""
    a = mp.mpf(sw) ** 2
    N = X.shape[0]
    nngp, ntk = np.empty((N, N)), np.empty((N, N))
    with mp.workdps(40):
        s = [[mp.mpf(su) ** 2 * mp.mpf(S[i, j]) + mp.mpf(sb) ** 2 for j in range(N)] for i in range(N)]
        if diag_closed is not None:
            q = [diag_closed(s[i][i]) for i in range(N)]
        else:
            q = [mp.findroot(lambda q: a * duals(q, q, q)[0] + s[i][i] - q, s[i][i]) for i in range(N)]
        for i in range(N):
            for j in range(N):
                c = q[i] if i == j else mp.findroot(lambda c: a * duals(q[i], q[j], c)[0] + s[i][j] - c, s[i][j])
                C, Cd = duals(q[i], q[j], c)
                nngp[i, j] = float(sv**2 * C)
                ntk[i, j] = float(sv**2 * (C + Cd * c / (1 - a * Cd)))
    return nngp, ntk


def test_relu_closed_form_fixed_point():
    sw, su, sb, sv = 1.1, 0.9, 0.4, 1.3
    k = kc.deq_kernel(X, activation="relu", sigma_w=sw, sigma_u=su, sigma_b=sb, sigma_v=sv)
    # homogeneous map: C(q, q, q) = q/2, so q* = q0 / (1 - sigma_w^2/2)
    nngp, ntk = reference(relu_duals, sw, su, sb, sv, diag_closed=lambda s0: s0 / (1 - mp.mpf(sw) ** 2 / 2))
    assert np.max(np.abs(k.nngp - nngp)) < 1e-10
    assert np.max(np.abs(k.ntk - ntk)) < 1e-10
    assert k.info["error_estimate"] < 1e-9


def test_erf_fixed_point():
    sw, su, sb, sv = 1.2, 1.0, 0.3, 0.8
    k = kc.deq_kernel(X, activation="erf", sigma_w=sw, sigma_u=su, sigma_b=sb, sigma_v=sv)
    nngp, ntk = reference(erf_duals, sw, su, sb, sv)
    assert np.max(np.abs(k.nngp - nngp)) < 1e-10
    assert np.max(np.abs(k.ntk - ntk)) < 1e-10


def test_well_posedness_boundary():
    # relu: sigma_w^2 E[phi'^2] = sigma_w^2 / 2; fine just below 2, error at and above
    kc.deq_kernel(X, activation="relu", sigma_w=math.sqrt(1.9), sigma_u=1.0, sigma_v=1.0)
    with pytest.raises(KernelcalcInputError, match=r"E\[phi'"):
        kc.deq_kernel(X, activation="relu", sigma_w=1.5, sigma_u=1.0, sigma_v=1.0)
    # erf: q* stays finite for every sigma_w, but sigma_w^2 4/(pi sqrt(1+4q*)) >= 1 for large sigma_w
    with pytest.raises(KernelcalcInputError, match=r"E\[phi'\(h\*\)\^2\] < 1"):
        kc.deq_kernel(X, activation="erf", sigma_w=3.0, sigma_u=0.3, sigma_v=1.0)


def test_bad_input():
    for kw, name in ((dict(sigma_w=0.0), "sigma_w"), (dict(sigma_u=-1.0), "sigma_u"), (dict(sigma_v=0), "sigma_v"),
                     (dict(sigma_b=-0.1), "sigma_b")):
        args = {**dict(activation="tanh", sigma_w=0.5, sigma_u=1.0, sigma_v=1.0), **kw}
        with pytest.raises(KernelcalcInputError, match=name):
            kc.deq_kernel(X, **args)
    with pytest.raises(KernelcalcInputError, match="depth"):
        make_network("deq", activation="tanh", width=8, depth=3)


@jax.enable_x64(True)   # this helper builds its own jax arrays: float64 (kernelcalc no longer sets x64 globally)
def _mc(width, n_samples, seed, sw=0.8, su=1.0, sb=0.2):
    net = make_network("deq", activation="tanh", width=width, sigma_w=sw, sigma_u=su, sigma_b=sb)

    @jax.jit
    def one(key):
        p = init_params(key, net, 3)
        h = jax.vmap(deq_equilibrium, in_axes=(None, 0, None))(p, jnp.asarray(X), net)
        z = jnp.tanh(h)
        return z @ z.T / width, network_ntk(p, jnp.asarray(X), None, net)[2]

    nngps, ntks = zip(*[[np.asarray(o) for o in one(k)] for k in jax.random.split(jax.random.PRNGKey(seed), n_samples)])
    return [(np.mean(s, 0), np.std(s, 0, ddof=1) / math.sqrt(n_samples)) for s in (np.array(nngps), np.array(ntks))]


@pytest.mark.slow
def test_monte_carlo_small_width_richardson():
    """Widths 32 and 64; 2*mean(64) - mean(32) cancels the O(1/n) width bias."""
    k = kc.deq_kernel(X, activation="tanh", sigma_w=0.8, sigma_u=1.0, sigma_b=0.2, sigma_v=1.0)
    a, b = _mc(32, 200, 0), _mc(64, 200, 1)
    for i, (name, ref) in enumerate([("nngp", k.nngp), ("ntk", k.ntk)]):
        _check(2 * b[i][0] - a[i][0], np.sqrt(4 * b[i][1] ** 2 + a[i][1] ** 2), ref, 0.0, name)


@pytest.mark.slow
def test_monte_carlo_width_512():
    k = kc.deq_kernel(X, activation="tanh", sigma_w=0.8, sigma_u=1.0, sigma_b=0.2, sigma_v=1.0)
    (nngp, nngp_se), (ntk, ntk_se) = _mc(512, 100, 7)
    # allowed width bias 3/n relative (the small-width runs measure ~1-2/n)
    _check(nngp, nngp_se, k.nngp, 3 / 512 * np.abs(k.nngp), "nngp")
    _check(ntk, ntk_se, k.ntk, 3 / 512 * np.abs(k.ntk), "ntk")
