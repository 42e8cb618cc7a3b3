r"""Training dynamics held against the NTK prediction.

- :mod:`.run` -- :func:`train`: one gradient-descent or gradient-flow run on
  $L=\tfrac12\|u-y\|^2$ against the bound $(1-\eta\lambda_0)^kL_0$, $\lambda_0=\lambda_{\min}(K^\infty)$.
- :mod:`.width` -- :func:`width_sweep`: the same run at several widths (lazy-training slopes).
- :mod:`.flow_gap` -- :func:`flow_gap`: GD against the gradient flow at matching times as $\eta\to0$.
- :mod:`.divergence` -- :func:`divergent_flow`: long-time gradient flow of a SAD network; divergent or convergent?
- :mod:`.ensemble` -- :func:`trained_ensemble`: many networks trained from independent initialisations (mean,
  variance and their standard errors of $f_t$), the empirical side of :func:`kernelcalc.predict`.
"""

from ..empirical.models import batched_apply
from .run import TrainResult, default_lr, infinite_width_ntk, train
from .width import WidthSweep, width_sweep
from .flow_gap import FlowGap, flow_gap
from .divergence import FlowDivergence, divergent_flow, polynomial_target, sad_data
from .ensemble import TrainedEnsemble, trained_ensemble

__all__ = ["TrainResult", "train", "default_lr", "infinite_width_ntk", "batched_apply",
           "WidthSweep", "width_sweep", "FlowGap", "flow_gap",
           "FlowDivergence", "divergent_flow", "polynomial_target", "sad_data", "TrainedEnsemble", "trained_ensemble"]
