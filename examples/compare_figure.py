"""The width figure: Monte-Carlo empirical NTK/NNGP of Neural ODEs vs the analytic node_kernel.

Prints the entry table (value, s.e., relative error, z-score) and the fitted slope of the NTK
error against width (theory -1/2); saves a log-log plot.  A few minutes on 2 cores.

    python examples/compare_figure.py [--activation softplus] [--widths 64,256,1024] [--samples 20]
"""

import argparse

import numpy as np

from kernelcalc.empirical import compare
from kernelcalc.plotting import plot_compare
from kernelcalc.data import sphere_normalise


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--activation", default="softplus")
    p.add_argument("--T", type=float, default=1.0)
    p.add_argument("--widths", default="64,256,1024")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--inputs", type=int, default=6)
    p.add_argument("--out", default="compare.png")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    x = np.random.default_rng(0).normal(size=(a.inputs, 3))
    X = sphere_normalise(x)  # on the sphere |x|^2 = d
    res = compare(X, activation=a.activation, T=a.T, widths=[int(w) for w in a.widths.split(",")],
                  n_samples=a.samples, solver="tsit5", solver_steps=32)
    print(res.table())
    plot_compare(res, a.out)
    print(f"wrote {a.out}")
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(res.to_json(indent=1))


if __name__ == "__main__":
    main()
