"""A sphere Gram's entries against direct pair solves (the long-horizon sphere-table tests of
tests/test_long_horizon_wavefront.py and tests/test_long_horizon_softplus.py)."""

import numpy as np

import kernelcalc as kc


def assert_table_meets_direct_solves(x, k, activation, T, closest, random):
    """The Gram ``k`` of the rows ``x`` (on the sphere) at its ``closest`` closest pairs and ``random`` random ones
    against ``node_kernel`` of each pair alone (one pair per call: the direct path, no theta table): the difference
    within the sum of the two error estimates, and ``k``'s estimate below 1e-9 of max|NTK|."""
    G = x @ x.T / x.shape[1]
    iu = np.triu_indices(x.shape[0], 1)
    order = np.argsort(-G[iu])
    pick = np.concatenate([order[:closest], np.random.default_rng(2).choice(order.size, random, replace=False)])
    i, j = iu[0][pick], iu[1][pick]
    got = np.stack([k.nngp[i, j], k.ntk[i, j]])
    ref, ref_err = np.empty_like(got), 0.0
    for p, (a, b) in enumerate(zip(i, j)):
        d = kc.node_kernel(x[a][None], x[b][None], activation=activation, T=T)
        ref[:, p] = d.nngp[0, 0], d.ntk[0, 0]
        ref_err = max(ref_err, d.info["error_estimate"])
    diff = np.max(np.abs(got - ref))
    assert diff <= k.info["error_estimate"] + ref_err, (diff, k.info["error_estimate"], ref_err)
    assert k.info["error_estimate"] <= 1e-9 * np.max(np.abs(k.ntk))
