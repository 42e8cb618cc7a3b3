"""Tied vs untied weights, discrete vs continuous vs implicit depth, on the same data.

Writes docs/figures/compare_models.png and prints the table of ``kernelcalc compare-models``:
NNGP/NTK against rho, lambda_min and the condition number of the NTK Gram on 16 sphere inputs.

    python examples/compare_models.py [activation] [T]
"""

import sys

import numpy as np

from kernelcalc.studies.comparison import compare_models, plot_model_comparison
from kernelcalc.data import sphere_normalise

activation = sys.argv[1] if len(sys.argv) > 1 else "softplus"
T = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
x = np.random.default_rng(0).normal(size=(16, 8))
X = sphere_normalise(x)
res = compare_models(X, activation=activation, T=T, depth=8)
print(res.table())
plot_model_comparison(res, "docs/figures/compare_models.png")
print("wrote docs/figures/compare_models.png")
