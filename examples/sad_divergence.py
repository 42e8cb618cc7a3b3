r"""SAD networks: the gradient flow of a small MLP fitting $y=x^2$ diverges, $\|\theta(t)\|\to\infty$.

For a sublinear analytic activation (softplus, tanh, ...) a network is never exactly $x^2$ on 40
points, but $\inf L=0$: finite differences of $\sigma$ with input weights $\varepsilon\to0$ and output
weights $\sim\varepsilon^{-2}$ approximate $x^2$. So the gradient flow of $L=\tfrac12\|f_\theta(X)-y\|^2$
drives the loss to 0 only by sending the weights to infinity ("SAD Neural Networks", arXiv:2505.09572).
Three runs to $t=10^6$ (log time, implicit Kvaerno5):

1. softplus, width 2, $x^2$ on 40 points: divergent, $\|\theta\|\sim t^{\beta}$, $L\sim t^{-\alpha}\to0$;
2. tanh, width 4, the same data: divergent as well;
3. control: softplus, width 2, $x^2$ on only 4 points (fewer than the 7 parameters): the flow interpolates
   and converges to a global minimum with bounded weights.

Writes ``sad_divergence.png`` (loss and $\|\theta\|$ against $t$). About 30 s on 2 cores, most of it
compilation.

    python examples/sad_divergence.py
"""

import time

from kernelcalc.plotting import plot_divergence
from kernelcalc.training import divergent_flow, sad_data

if __name__ == "__main__":
    X, y = sad_data(40, degree=2)
    X4, y4 = sad_data(4, degree=2)
    runs = [("softplus, width 2, x^2 on 40 points", X, y, dict(activation="softplus", width=2, seed=1)),
            ("tanh, width 4, x^2 on 40 points", X, y, dict(activation="tanh", width=4, seed=0)),
            ("control: softplus, width 2, x^2 on 4 points", X4, y4, dict(activation="softplus", width=2, seed=0))]
    results = []
    for title, Xi, yi, kw in runs:
        t0 = time.perf_counter()
        res = divergent_flow(Xi, yi, t_max=1e6, **kw)
        print(f"== {title} ({time.perf_counter() - t0:.1f} s)\n{res.summary()}\n")
        results.append(res)
    plot_divergence(results, "sad_divergence.png")
    print("wrote sad_divergence.png")
