"""Infinite-width kernels: MLP, Euler ResNet and Neural ODE (weight-tied or untied), DEQ (one result type)."""

from .._results import Kernel
from .._x64 import float64
from .deq import deq_kernel
from .mlp import mlp_kernel
from .ode import node_kernel
from .resnet import resnet_kernel

__all__ = ["Kernel", "mlp_kernel", "node_kernel", "resnet_kernel", "deq_kernel", "model_kernel"]


@float64
def model_kernel(x1, x2=None, *, model: str, activation, T=1.0, depth=None, **scales) -> Kernel:
    """The analytic kernel of the finite-width ``model`` (a name of :data:`kernelcalc.empirical.models.MODELS`).

    ``T`` goes to the Neural ODE and ResNet models, ``depth`` to the ResNets and the MLP; ``scales``
    are the model's scale keywords (``docs/naming.md``; the kernel function rejects the others).
    """
    untied = {"weights": "untied"} if model.endswith("_untied") else {}
    if model in ("node", "node_untied"):
        return node_kernel(x1, x2, activation=activation, T=T, **untied, **scales)
    if model in ("resnet", "resnet_untied"):
        return resnet_kernel(x1, x2, activation=activation, depth=depth, T=T, **untied, **scales)
    if model == "deq":
        return deq_kernel(x1, x2, activation=activation, **scales)
    if model == "mlp":
        return mlp_kernel(x1, x2, activation=activation, depth=depth, **scales)
    from .._validation import KernelcalcInputError

    raise KernelcalcInputError(f"model must be one of node, resnet, mlp, node_untied, resnet_untied, deq; got {model!r}")
