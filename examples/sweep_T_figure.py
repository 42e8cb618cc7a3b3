"""lambda_min(K_inf) and the predicted GD rate vs the horizon T.

Default (issue 17): softplus, tanh and sin on T in [0.25, 10] (sigma_w = 1, so sigma_w*T reaches 10), 16 points
on the sphere in d = 8, lr = 1/||X||^2 (Theorem 2).  Prints the table; writes sweep_T.png and sweep_T.json.
An entry that node_kernel refuses (its cost guard: the Gaussian expectations at the pre-activation variance
q(T) reached would take too long) is reported as a failure with the reason, never a silent number.

    python examples/sweep_T_figure.py [--points 8] [--t-min 0.25] [--t-max 10] [--sigma-w 1]
                                      [--activations softplus,tanh,sin] [--out sweep_T]

The kernel depends on T and sigma_w only through sigma_w*T (rescale time by T).  The earlier gallery figure
(softplus, tanh, gelu, sin, x**2 on [0.1, 4] at sigma_w = 0.5) is
``--activations softplus,tanh,gelu,sin,x**2 --t-min 0.1 --t-max 4 --sigma-w 0.5 --points 4``.
"""

import argparse

import numpy as np

from kernelcalc.studies.horizon import sweep_T
from kernelcalc.plotting import plot_horizon
from kernelcalc.data import sphere_normalise

ap = argparse.ArgumentParser()
ap.add_argument("--points", type=int, default=8, help="number of horizons, log-spaced in [t-min, t-max]")
ap.add_argument("--t-min", type=float, default=0.25)
ap.add_argument("--t-max", type=float, default=10.0)
ap.add_argument("--sigma-w", type=float, default=1.0)
ap.add_argument("--activations", default="softplus,tanh,sin")
ap.add_argument("--out", default="sweep_T")
a = ap.parse_args()

N, d = 16, 8
X = np.random.default_rng(0).normal(size=(N, d))
X = sphere_normalise(X)
Ts = [float(f"{T:.3g}") for T in np.geomspace(a.t_min, a.t_max, a.points)]

res = sweep_T(X, activations=tuple(a.activations.split(",")), Ts=Ts, sigma_w=a.sigma_w, progress=True)
print(res.table())
print(f"({res.info['seconds']:.0f} s)")
plot_horizon(res, a.out + ".png")
with open(a.out + ".json", "w") as fh:
    fh.write(res.to_json(indent=1))
print(f"wrote {a.out}.png, {a.out}.json")
