"""Predictions from kernels: the trained infinite-width ensemble's mean and covariance on test points.

Linear algebra on Grams (layer above ``kernels``; no finite-width network code).
"""

from .engine import predict_from_kernels
from .predict import predict
from .result import Prediction

__all__ = ["Prediction", "predict", "predict_from_kernels"]
