"""Real data: N images of sklearn's 8x8 digits on the sphere (d=64), scalar target (k-4.5)/4.5.
Prints lambda_min(K_inf), trains a softplus Neural ODE with lr = 1/||X||^2 against the bound,
reports train vs test loss; writes train_digits.png / .json.

    python examples/train_digits.py [--n 100] [--width 512] [--steps 300]
"""

import argparse

import numpy as np

from kernelcalc import train
from kernelcalc.data import load_digits_subset
from kernelcalc.plotting import plot_training

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=100)
ap.add_argument("--width", type=int, default=512)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--out", default="train_digits")
a = ap.parse_args()

X_all, y_all = load_digits_subset(a.n + 100, seed=0)
X, y, Xt, yt = X_all[:a.n], y_all[:a.n], X_all[a.n:], y_all[a.n:]
r = train(X, y, activation="softplus", width=a.width, steps=a.steps, X_test=Xt, y_test=yt, progress=True)
print(r.summary())
plot_training(r, a.out + ".png")
with open(a.out + ".json", "w") as fh:
    fh.write(r.to_json())
print(f"wrote {a.out}.png, {a.out}.json")
