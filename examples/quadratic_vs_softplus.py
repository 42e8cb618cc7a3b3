r"""Proposition 3: a polynomial activation makes the NTK feature space finite-dimensional.

For $\phi(x)=x^2$ every network with finitely many layers has polynomial features of bounded degree
$D$ (MLP depth $L$: $2^L$; weight-tied ResNet depth $L$: $2^{L+1}$), so $\lambda_{\min}(K^\infty)$
collapses to round-off once $N>\dim\mathcal P_D(\mathbb S^{d-1})$ (column "bound"), while softplus keeps
$\lambda_{\min}>0$. The Neural ODE (the $L\to\infty$ limit, $T=0.3$: the quadratic ODE blows up in
finite time near $T=1$) has no finite bound and, measured here, no collapse either.

48 random points on $\mathbb S^2$ ($d=3$); about 30 s on 2 cores.

    python examples/quadratic_vs_softplus.py
"""

import numpy as np

from kernelcalc.studies.polynomial import lambda_min_table
from kernelcalc.data import sphere_normalise

if __name__ == "__main__":
    d = 3
    X = np.random.default_rng(0).normal(size=(48, d))
    X = sphere_normalise(X)
    table = lambda_min_table(X, (4, 6, 8, 12, 16, 24, 30, 36, 48),
                             models=(("mlp", 1), ("mlp", 2), ("resnet", 1), ("resnet", 2), ("node", None)), T=0.3)
    print(table)
