"""The immutable result of :func:`~kernelcalc.predict` and :func:`~kernelcalc.predict_from_kernels`."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from .._results import JsonResult, frozen, jsonable

__all__ = ["Prediction"]




@dataclasses.dataclass(frozen=True)
class Prediction(JsonResult):
    r"""Mean (and covariance) of the infinite ensemble of infinite-width networks at times ``times``.

    **Fields:**

    - ``mean_test``: shape ``(len(times), N_test, k)``: $E[f_t(X_\mathrm{test})]$ (``None`` without test
      points); ``k`` is the number of outputs (1 for a 1-D ``y_train``).
    - ``mean_train``: shape ``(len(times), N_train, k)``: $E[f_t(X_\mathrm{train})]$.
    - ``cov_test``: ``None`` (``compute_cov=False``), the variances ``(len(times), N_test)``
      (``compute_cov="diag"``) or the full covariances ``(len(times), N_test, N_test)``
      (``compute_cov=True``), the same for every output column.
    - ``times``: the times, shape ``(len(times),)``; ``inf`` is the end of training.  With a
      ``learning_rate`` they count gradient-descent steps.
    - ``kernel``: ``"ntk"`` (gradient descent / flow) or ``"nngp"`` (Bayesian posterior; at finite $t$,
      training of the readout layer only).
    - ``learning_rate``: ``None`` (gradient flow) or the step of discrete gradient descent.
    - ``info``: the eigen-solver used (``solver``), the extreme eigenvalues and ``condition_number``
      of the (regularised) train Gram, ``error_estimate`` (``{"mean": ..., "cov": ...}``: estimated
      largest absolute errors), ``cov_min_eigenvalue`` (most negative eigenvalue of a full
      covariance, or smallest variance, before clipping nothing: the covariance is only symmetrised),
      timings, and the kernel's own ``info`` where :func:`~kernelcalc.predict` computed it.

    Arrays are read-only.
    """

    mean_test: np.ndarray | None
    mean_train: np.ndarray
    cov_test: np.ndarray | None
    times: np.ndarray
    kernel: str
    learning_rate: float | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("mean_test", "mean_train", "cov_test", "times"):
            object.__setattr__(self, name, frozen(getattr(self, name)))
        object.__setattr__(self, "info", dict(self.info))

    @property
    def std_test(self) -> np.ndarray | None:
        """Standard deviations ``(len(times), N_test)`` from ``cov_test`` (negative roundoff clipped at 0)."""
        if self.cov_test is None:
            return None
        var = self.cov_test if self.cov_test.ndim == 2 else np.diagonal(self.cov_test, axis1=1, axis2=2)
        return np.sqrt(np.maximum(var, 0.0))

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary (``inf`` times become ``None``; see :func:`~kernelcalc._results.jsonable`)."""
        return jsonable({"kernel": self.kernel, "learning_rate": self.learning_rate,
                         "times": [str(t) if not np.isfinite(t) else float(t) for t in self.times],
                         "mean_test": self.mean_test, "mean_train": self.mean_train, "cov_test": self.cov_test,
                         "info": self.info})
