"""A cheap stand-in for ``node_kernel`` in tests that exercise flags, plumbing and exit codes.

The real Neural-ODE kernel costs seconds per call; tests whose subject is not its value
(sphere / parallel flags, CLI exit codes, parameter pass-through) use this instead.
Its NTK, $\\Theta = \\sigma_v^2 e^{T\\sigma_w^2 x\\cdot y/d}$, is strictly positive definite on
distinct inputs of the sphere and exactly singular on repeated rows, like the real one.
"""

import numpy as np
import pytest

import kernelcalc
import kernelcalc.kernels
from kernelcalc import Kernel
from kernelcalc._validation import as_input_pair


@pytest.fixture
def cheap_kernel(monkeypatch):
    """Replace ``node_kernel`` everywhere it is looked up; yields the list of call kwargs."""
    calls = []

    def fake(x1, x2=None, *, activation, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0, outputs=None, client=None):
        params = dict(T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v)
        calls.append(params)
        a, b, _ = as_input_pair(x1, x2)
        G = a @ b.T / a.shape[1]
        ntk = sigma_v**2 * np.exp(T * sigma_w**2 * G)
        return Kernel(nngp=0.5 * ntk, ntk=ntk, model="node", activation=str(activation), params=params,
                      info={"cheap": True})

    monkeypatch.setattr(kernelcalc, "node_kernel", fake)
    monkeypatch.setattr(kernelcalc.kernels, "node_kernel", fake)
    return calls
