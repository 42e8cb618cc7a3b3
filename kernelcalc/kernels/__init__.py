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


#: The models with an analytic kernel function, by name: what ``model=`` of the studies
#: (:func:`kernelcalc.check`, :func:`kernelcalc.spectrum`, :func:`kernelcalc.certify_ntk`) accepts.
#: The untied Neural ODE and ResNet are ``model="node"``/``"resnet"`` with ``weights="untied"``.
KERNEL_FUNCTIONS = {"node": "node_kernel", "resnet": "resnet_kernel", "mlp": "mlp_kernel", "deq": "deq_kernel"}


def kernel_function(model, kwargs: dict | None = None, *, where: str = "this function"):
    """The kernel function of ``model`` (looked up now, by name, in this module), after checking that it
    takes every keyword in ``kwargs``: one that it does not take is a
    :class:`~kernelcalc.KernelcalcInputError` naming it, the model and the keywords that do apply."""
    import inspect
    import sys

    from .._validation import KernelcalcInputError

    if not isinstance(model, str) or model not in KERNEL_FUNCTIONS:
        raise KernelcalcInputError(f"model must be one of {tuple(KERNEL_FUNCTIONS)} in {where}, got {model!r}"
                                   + (" (the untied networks: model='node' or 'resnet' with weights='untied')"
                                      if isinstance(model, str) and model.endswith("_untied") else ""))
    fn = getattr(sys.modules[__name__], KERNEL_FUNCTIONS[model])
    params = inspect.signature(fn).parameters      # through the decorators (functools.wraps)
    takes = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "activation"]
    bad = sorted(set(kwargs or ()) - set(takes) - {"activation"})
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bad = []                                   # a function with **kwargs checks its keywords itself
    if bad:
        raise KernelcalcInputError(f"{', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not apply to model={model!r} "
                                   f"in {where}; its kernel keywords are {', '.join(takes)}")
    return fn
