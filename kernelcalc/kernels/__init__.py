"""Infinite-width kernels: MLP, Euler ResNet and Neural ODE (weight-tied or untied), DEQ (one result type)."""

from .._results import Kernel
from .deq import deq_kernel
from .mlp import mlp_kernel
from .ode import node_kernel
from .resnet import resnet_kernel

__all__ = ["Kernel", "mlp_kernel", "node_kernel", "resnet_kernel", "deq_kernel"]
