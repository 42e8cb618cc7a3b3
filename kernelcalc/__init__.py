"""kernelcalc: infinite-width kernel theory of Neural ODEs, symbolically and numerically.

Public API (explicit re-exports only).

Importing kernelcalc leaves jax's configuration alone (``jax_enable_x64`` stays what the user set):
every public function that runs jax computes in float64 inside the scoped ``jax.enable_x64(True)``
context (see :mod:`kernelcalc._x64`).
"""

from .theory.activations import Activation, ActivationError, BUILTIN_NAMES, resolve_activation
from ._validation import KernelcalcAccuracyError, KernelcalcAccuracyWarning, KernelcalcInputError
from .kernels import Kernel, deq_kernel, mlp_kernel, node_kernel, resnet_kernel

__all__ = [
    "Activation", "ActivationError", "BUILTIN_NAMES", "resolve_activation", "KernelcalcInputError",
    "KernelcalcAccuracyWarning", "KernelcalcAccuracyError",
    "Kernel", "mlp_kernel", "node_kernel", "resnet_kernel", "deq_kernel",
]
__version__ = "0.1.0"
from .studies.checks import CheckReport, check  # noqa: E402
from . import data  # noqa: E402
__all__ += ["CheckReport", "check", "data"]
from .studies.spectrum import Spectrum, spectrum  # noqa: E402
__all__ += ["Spectrum", "spectrum"]
from .theory.assumptions import Assumption1Report, Assumption1Warning, analyse  # noqa: E402
from .theory.symbolic import Derivation, derive  # noqa: E402
__all__ += ["Assumption1Report", "Assumption1Warning", "analyse", "Derivation", "derive"]
# Finite-width models (diffrax, equinox) load on first use: ``import kernelcalc`` stays fast.
_LAZY = {"compare": "empirical", "depth_gap": "empirical", "empirical_ntk": "empirical", "monte_carlo": "empirical",
         "TrainResult": "training", "train": "training", "width_sweep": "training", "flow_gap": "training",
         "divergent_flow": "training", "sweep_T": "studies.horizon"}
__all__ += list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


from .studies.polynomial import feature_rank_bound, lambda_min_table  # noqa: E402
__all__ += ["feature_rank_bound", "lambda_min_table"]
from .studies.certify import CertifiedLambdaMin, certify_lambda_min, certify_ntk, rigorous_kernel  # noqa: E402
__all__ += ["CertifiedLambdaMin", "certify_lambda_min", "certify_ntk", "rigorous_kernel"]
from .studies.sphere_spectrum import SphereSpectrum, sphere_spectrum  # noqa: E402
from .theory.hermite import HermiteCoefficients, hermite_coefficients  # noqa: E402
__all__ += ["SphereSpectrum", "sphere_spectrum", "HermiteCoefficients", "hermite_coefficients"]
from ._validation import KernelcalcClusterError  # noqa: E402
__all__ += ["KernelcalcClusterError"]
