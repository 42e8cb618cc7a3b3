"""The well-posedness figure: weight-tied ResNet of depth L vs the Neural ODE at the same parameters.

Softplus (smooth): output, gradient and NTK gaps all decay like 1/L.  Relu: the output gap decays
like 1/L; the gradient gap is what it is -- see the printed slopes.  Also prints the agreement of
the two gradient modes (discretize-then-optimize vs continuous adjoint).  A few minutes on 2 cores.

    python examples/depth_gap_figure.py [--width 256] [--out depth_gap.png]
"""

import argparse

import numpy as np

from kernelcalc.empirical import depth_gap, gradient_mode_gap
from kernelcalc.data import sphere_normalise


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depths", default="2,4,8,16,32,64,128,256")
    p.add_argument("--out", default="depth_gap.png")
    p.add_argument("--modes", action="store_true", help="also run the gradient-mode comparison (slower)")
    a = p.parse_args()
    depths = [int(v) for v in a.depths.split(",")]
    x = np.random.default_rng(0).normal(size=(4, 3))
    X = sphere_normalise(x)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kernelcalc.plotting import plot_depth_gap

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2), sharey=True)
    for ax, act in zip(axes, ("softplus", "relu")):
        r = depth_gap(X, activation=act, width=a.width, depths=depths)
        print(f"\n{act}, width {a.width}:\n{r.table()}")
        plot_depth_gap(r, ax=ax)
        if a.modes:
            g = gradient_mode_gap(X, activation=act, width=min(a.width, 64), tolerances=[1e-5, 1e-8, 1e-11])
            print(f"gradient modes ({act}):\n{g.table()}")
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
