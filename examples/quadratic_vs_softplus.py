r"""Proposition 3: a polynomial (quadratic) activation makes the NTK feature space finite-dimensional,
so $\lambda_{\min}(K^\infty)$ collapses to ~0 once N exceeds it; softplus keeps $\lambda_{\min}>0$.

Prints $\lambda_{\min}(K^\infty)$ of the Neural ODE (T=0.3: the quadratic ODE blows up in finite time at T=1) on N random sphere points in d=3 as N grows.

    python examples/quadratic_vs_softplus.py
"""

import numpy as np

from kernelcalc import node_kernel


def table(d=3, Ns=(4, 8, 12, 16, 24, 32, 48), acts=("x**2", "softplus"), T=0.3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(max(Ns), d))
    X *= np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)
    rows = []
    for N in Ns:
        row = [N]
        for a in acts:
            K = node_kernel(X[:N], activation=a, T=T).ntk
            ev = np.linalg.eigvalsh(K)
            row.append(ev[0] / ev[-1])
        rows.append(row)
    return acts, rows


if __name__ == "__main__":
    acts, rows = table()
    print(f"{'N':>4} " + " ".join(f"{'lmin/lmax ' + a:>22}" for a in acts))
    for r in rows:
        print(f"{r[0]:>4} " + " ".join(f"{v:22.3e}" for v in r[1:]))
