"""kernelcalc: infinite-width kernel theory of Neural ODEs, symbolically and numerically.

Public API (explicit re-exports only).
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from .activations import Activation, ActivationError, BUILTIN_NAMES, resolve_activation  # noqa: E402
from ._validation import KernelcalcAccuracyError, KernelcalcAccuracyWarning, KernelcalcInputError  # noqa: E402
from .kernels import Kernel, deq_kernel, mlp_kernel, node_kernel, resnet_kernel  # noqa: E402

__all__ = [
    "Activation", "ActivationError", "BUILTIN_NAMES", "resolve_activation", "KernelcalcInputError",
    "KernelcalcAccuracyWarning", "KernelcalcAccuracyError",
    "Kernel", "mlp_kernel", "node_kernel", "resnet_kernel", "deq_kernel",
]
__version__ = "0.1.0"
from .checks import CheckReport, check  # noqa: E402
from . import data  # noqa: E402
__all__ += ["CheckReport", "check", "data"]
from .assumptions import Assumption1Report, analyse  # noqa: E402
from .symbolic import Derivation, derive  # noqa: E402
__all__ += ["Assumption1Report", "analyse", "Derivation", "derive"]
from .empirical import compare, depth_gap, empirical_ntk, monte_carlo  # noqa: E402
__all__ += ["compare", "depth_gap", "empirical_ntk", "monte_carlo"]
from .training import TrainResult, divergent_flow, flow_gap, train, width_sweep  # noqa: E402
__all__ += ["TrainResult", "train", "width_sweep", "flow_gap", "divergent_flow"]
from .horizon import sweep_T  # noqa: E402
__all__ += ["sweep_T"]
from .polynomial import feature_rank_bound, lambda_min_table  # noqa: E402
__all__ += ["feature_rank_bound", "lambda_min_table"]
