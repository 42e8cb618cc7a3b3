"""Shared by the off-sphere tests: a Neural-ODE Gram against the direct per-pair path (each pair of rows a Gram of
its own) at chosen pairs."""

import warnings

import numpy as np

import kernelcalc as kc


def assert_pairs_match_direct(x, activation, choose, bound):
    """``node_kernel(x)`` against two-row calls at the pairs ``choose(n, cos, i, j)`` picks (indices into the upper
    triangle ``i < j``; ``n`` the row norms, ``cos`` the |cosines| between rows): each within the Gram's error
    estimate and ``bound`` of its max|NTK|.  Returns the number of pairs checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kc.Assumption1Warning)
        K = kc.node_kernel(x, activation=activation)
        n = np.linalg.norm(x, axis=1)
        cos = np.abs(x @ x.T) / np.outer(n, n)
        i, j = np.triu_indices(x.shape[0], 1)
        pick = choose(n, cos, i, j)
        scale = np.max(np.abs(K.ntk))
        for p in pick:
            D = kc.node_kernel(x[[i[p], j[p]]], activation=activation)
            err = abs(K.ntk[i[p], j[p]] - D.ntk[0, 1]) / scale
            assert err <= min(K.info["error_estimate"] / scale, bound), (i[p], j[p], cos[i[p], j[p]], err)
    return len(pick)
