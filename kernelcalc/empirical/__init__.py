"""Finite-width networks in jax/diffrax and their empirical kernels (cross-checks of the theory).

- :mod:`.models`: ``make_network``, ``init_params``, ``model_apply`` (Neural ODE, ResNet, MLP).
- :mod:`.ntk`: :func:`empirical_ntk` (structured contraction or naive Jacobian).
- :mod:`.montecarlo`: :func:`monte_carlo`, :func:`compare` (analytic vs empirical).
- :mod:`.depth`: :func:`depth_gap`, :func:`gradient_mode_gap`.
"""

from .depth import DepthGap, GradientModeGap, depth_gap, gradient_mode_gap
from .models import MLPParams, Network, NODEParams, init_params, make_network, model_apply
from .montecarlo import Comparison, compare, fit_slope, monte_carlo
from .ntk import empirical_ntk

__all__ = [
    "MLPParams", "Network", "NODEParams", "init_params", "make_network", "model_apply", "empirical_ntk",
    "monte_carlo", "compare", "Comparison", "fit_slope", "depth_gap", "DepthGap", "gradient_mode_gap",
    "GradientModeGap",
]
