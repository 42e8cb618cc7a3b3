r"""Gradient descent vs gradient flow: the gap at matching times shrinks like the step size.

GD with step $\eta$ is explicit Euler on $\dot\theta=-\nabla L$, so on a fixed horizon the gap in
parameters and in loss is $O(\eta)$. Softplus Neural ODE, width 256, 8 sphere points in d=16,
$\eta=\eta^*/2^i$ with $\eta^*=1/\|X\|^2$. About a minute on 2 cores.

    python examples/flow_gap_figure.py      # prints the table, writes flow_gap.png
"""

import numpy as np

from kernelcalc.plotting import plot_flow_gap
from kernelcalc.training import flow_gap
from kernelcalc.data import sphere_normalise


def sphere(N, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d))
    return sphere_normalise(x), rng.normal(size=N)


if __name__ == "__main__":
    X, y = sphere(8, 16)
    res = flow_gap(X, y, width=256, progress=True)
    print(res)
    plot_flow_gap(res, "flow_gap.png")
    print("wrote flow_gap.png")
