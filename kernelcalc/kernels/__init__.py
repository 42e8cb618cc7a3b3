"""Infinite-width kernels: MLP, weight-tied Euler ResNet, Neural ODE (one result type)."""

from ._result import Kernel
from .mlp import mlp_kernel
from .ode import node_kernel
from .resnet import resnet_kernel

__all__ = ["Kernel", "mlp_kernel", "node_kernel", "resnet_kernel"]
