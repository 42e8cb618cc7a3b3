"""lambda_min(K_inf) and the predicted GD rate vs the horizon T for softplus, tanh, gelu, sin and x**2:
16 points on the sphere in d=8, T on a log grid from 0.1 to 4 (sigma_w = 0.5), lr = 1/||X||^2 (Theorem 2).
Prints the table; writes sweep_T.png and sweep_T.json.  About 1.5 minutes on 2 cores with the default
4 horizons (jit compilation dominates: 2-10 s per (activation, T) entry; ``--points 8`` for a denser
figure takes about twice as long).

    python examples/sweep_T_figure.py [--points 4] [--sigma-w 0.5] [--out sweep_T]

The kernel depends on T and sigma_w only through sigma_w*T (rescale time by T), so the default
sigma_w = 0.5 on T <= 4 is the same sweep as sigma_w = 1 on T <= 2; it keeps the pre-activation
variance q(T) small enough for the fast Gaussian-expectation rules (at sigma_w*T = 4, softplus
reaches q(T) ~ 100 and each entry takes minutes).  x**2 blows up in finite time: its entries past
the blow-up horizon are reported as failures (NaN with the reason), not computed.
"""

import argparse

import numpy as np

from kernelcalc.studies.horizon import sweep_T
from kernelcalc.plotting import plot_horizon
from kernelcalc.data import sphere_normalise

ap = argparse.ArgumentParser()
ap.add_argument("--points", type=int, default=4, help="number of horizons, log-spaced in [0.1, 4]")
ap.add_argument("--sigma-w", type=float, default=0.5)
ap.add_argument("--out", default="sweep_T")
a = ap.parse_args()

N, d = 16, 8
X = np.random.default_rng(0).normal(size=(N, d))
X = sphere_normalise(X)
Ts = [float(f"{T:.3g}") for T in np.geomspace(0.1, 4.0, a.points)]

res = sweep_T(X, activations=("softplus", "tanh", "gelu", "sin", "x**2"), Ts=Ts, sigma_w=a.sigma_w, progress=True)
print(res.table())
print(f"({res.info['seconds']:.0f} s)")
plot_horizon(res, a.out + ".png")
with open(a.out + ".json", "w") as fh:
    fh.write(res.to_json(indent=1))
print(f"wrote {a.out}.png, {a.out}.json")
