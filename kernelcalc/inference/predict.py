r"""``predict``: the infinite-width predictions of a model on test inputs (its kernels, then
:func:`~kernelcalc.inference.engine.run`)."""

from __future__ import annotations

import inspect
import time

import numpy as np

from .._validation import (DEPRECATED_SCALES, SCALE_NAMES, KernelcalcInputError, as_inputs, model_scales, nonnegative,
                           positive)
from .._x64 import float64
from .. import kernels
from ..kernels import deq_kernel, mlp_kernel, node_kernel, resnet_kernel
from .engine import _check_cov, _check_kernel, _default_batch, check_targets, check_times, run
from .result import Prediction

__all__ = ["predict", "KERNEL_FUNCTIONS"]

#: ``model=`` -> the kernel function (``"node_untied"``/``"resnet_untied"`` mean ``weights="untied"``); its
#: signature says which keywords apply; the call looks the function up in :mod:`kernelcalc.kernels`.
KERNEL_FUNCTIONS = {"node": node_kernel, "resnet": resnet_kernel, "mlp": mlp_kernel, "deq": deq_kernel}
_OWN = ("x1", "x2", "activation", "outputs", "out", "client", "progress")


def _kernel_call(model, kernel_kwargs):
    """The kernel function of ``model`` and its keyword arguments, refusing any that does not apply."""
    key = model.strip().lower() if isinstance(model, str) else model
    kernel_kwargs = {k: v for k, v in kernel_kwargs.items() if v is not None}   # None: not passed
    given = {k: kernel_kwargs.pop(k) for k in list(kernel_kwargs) if k in SCALE_NAMES or k in DEPRECATED_SCALES}
    if key in KERNEL_FUNCTIONS or key in ("node_untied", "resnet_untied"):
        table_key = f"{key}_untied" if kernel_kwargs.get("weights") == "untied" and key in ("node", "resnet") else key
        kernel_kwargs.update(model_scales(table_key, where=f"model={model!r}", **given))   # the model's scales, filled
    if key in ("node_untied", "resnet_untied"):
        if kernel_kwargs.get("weights", "untied") != "untied":
            raise KernelcalcInputError(f"model={model!r} means weights='untied'; got weights={kernel_kwargs['weights']!r}")
        kernel_kwargs = dict(kernel_kwargs, weights="untied")
        key = key.split("_")[0]
    if key not in KERNEL_FUNCTIONS:
        raise KernelcalcInputError(f"model must be one of node, resnet, mlp, deq, node_untied, resnet_untied; "
                                   f"got {model!r}")
    params = inspect.signature(KERNEL_FUNCTIONS[key]).parameters
    fn = getattr(kernels, KERNEL_FUNCTIONS[key].__name__)
    allowed = [p for p in params if p not in _OWN and p not in SCALE_NAMES]
    for name in kernel_kwargs:
        if name in SCALE_NAMES:
            continue           # validated above (model_scales names the model)
        if name not in allowed:
            raise KernelcalcInputError(f"{name} does not apply to model={model!r}; its kernel arguments are "
                                       f"{', '.join(allowed)} and its scale keywords")
    opts = {p for p in ("outputs", "out", "client", "progress") if p in params}
    if kernel_kwargs.get("weights") == "untied":          # the untied kernels have no tiled Gram (yet)
        opts -= {"outputs", "out", "client"}
    return fn, kernel_kwargs, opts


@float64
def predict(X_train, y_train, X_test=None, *, model: str = "node", activation, t=None, kernel: str = "ntk",
            diag_reg: float = 0.0, compute_cov=False, learning_rate=None, batch_size: int | None = None,
            method: str = "auto", krylov_tol: float = 1e-10, krylov_max_iter: int | None = None, out=None, client=None,
            progress: bool | None = None, **kernel_kwargs) -> Prediction:
    r"""What the trained infinite-width network predicts: mean (and covariance over initialisations)
    of $f_t$ on ``X_test`` after training time ``t`` on $(X_\mathrm{train}, y_\mathrm{train})$.

    The kernels of ``model`` are computed (float64) and handed to the engine of
    :func:`~kernelcalc.predict_from_kernels`, whose conventions apply: loss
    $\tfrac12\lVert f(X)-y\rVert^2$ (unnormalised: neural-tangents' time is
    $t_\mathrm{nt}=t\,Nk/\eta_\mathrm{nt}$), gradient flow $\dot f=-\Theta(f-y)$, mean
    $\Theta_{xX}\varphi_t(\Theta)y$ with $\varphi_t(\lambda)=(1-e^{-\lambda t})/\lambda$, and the NTK-GP
    covariance of Lee et al. 2019 (eqs. 15-16), which needs both the NNGP and the NTK.

    **Arguments:**

    - ``X_train`` (N, d), ``y_train`` (N,) or (N, k), ``X_test`` (M, d) or ``None`` (train only).
    - ``model``: ``"node"`` (:func:`~kernelcalc.node_kernel`), ``"resnet"``, ``"mlp"``, ``"deq"``,
      ``"node_untied"``, ``"resnet_untied"``; ``activation``; and every argument and scale keyword of
      that kernel function (``T``, ``depth``, ``sigma_w`` ..., ``tol``, ``time_nodes``, ``strict``),
      ``weights=`` included.  A keyword that does not apply to ``model`` is an error.
    - ``t``, ``kernel``, ``diag_reg``, ``compute_cov``, ``learning_rate``, ``batch_size``, ``method``,
      ``krylov_tol``, ``krylov_max_iter``, ``progress``: as in :func:`~kernelcalc.predict_from_kernels`.
    - ``out``, ``client``: as the kernels' (Zarr store, dask client) for the train Gram.  On the matrix-free
      path (``method="krylov"``, or ``"auto"`` past :data:`~kernelcalc.inference.engine.KRYLOV_CROSSOVER`
      without covariance) the Lanczos products then read the Gram from that store in row blocks, and run
      on the same cluster (:class:`~kernelcalc.inference.krylov.ClusterMatvec`).

    Test kernels are computed ``batch_size`` test points at a time (memory bounded for any M); for
    ``compute_cov="diag"`` only the diagonal blocks of the test-test Gram are computed.

    **Returns:** :class:`~kernelcalc.Prediction`; ``info["kernel_info"]`` is the train kernel's info, and
    the kernels' error estimates are propagated into ``info["error_estimate"]``.
    """
    kernel = _check_kernel(kernel)
    cov = _check_cov(compute_cov)
    lr = None if learning_rate is None else positive("learning_rate", learning_rate)
    diag_reg = nonnegative("diag_reg", diag_reg)
    times = check_times(t, lr)
    Xtr = as_inputs(X_train, "X_train")
    y, _ = check_targets(y_train, Xtr.shape[0])
    Xte = None
    if X_test is not None:
        Xte = as_inputs(X_test, "X_test")
        if Xte.shape[1] != Xtr.shape[1]:
            raise KernelcalcInputError(f"X_test has input dimension {Xte.shape[1]} but X_train has {Xtr.shape[1]}")
    if cov is not None and Xte is None:
        raise KernelcalcInputError("compute_cov needs test points (X_test)")
    fn, kw, opts = _kernel_call(model, dict(kernel_kwargs))
    for name, value in (("out", out), ("client", client)):
        if value is not None and name not in opts:
            raise KernelcalcInputError(f"{name} does not apply to model={model!r} (its kernel has no tiled Gram)")
    need = ("nngp", "ntk") if (kernel == "ntk" and cov is not None) else (kernel,)
    t0 = time.perf_counter()
    extra = {"progress": progress} if "progress" in opts else {}
    train_kw = dict(kw, **extra)
    if "outputs" in opts:
        train_kw["outputs"] = need
    if out is not None:
        train_kw["out"] = out
    if client is not None:
        train_kw["client"] = client
    Ktr = fn(Xtr, activation=activation, **train_kw)
    kernel_seconds = time.perf_counter() - t0
    errors = [float(Ktr.info.get("error_estimate", 0.0) or 0.0)]
    A = getattr(Ktr, kernel)
    nngp_train = Ktr.nngp if need == ("nngp", "ntk") else None
    train_info, train_params, train_activation = dict(Ktr.info), dict(Ktr.params), getattr(Ktr, "activation", None)
    del Ktr                 # the eigen-decomposition may then overwrite the Gram instead of copying it
    test_kw = dict(kw, **extra)
    if "outputs" in opts:
        test_kw["outputs"] = need
    m = 0 if Xte is None else Xte.shape[0]
    full_tt = None

    def test_block(i, j):
        nonlocal full_tt, kernel_seconds
        s = time.perf_counter()
        Kb = fn(Xte[i:j], Xtr, activation=activation, **test_kw)
        errors.append(float(Kb.info.get("error_estimate", 0.0) or 0.0))
        ntb = Kb.nngp if need == ("nngp", "ntk") else None
        tb = None
        if cov is not None:
            if cov == "full":
                if full_tt is None:
                    full_tt = fn(Xte, activation=activation, **dict(test_kw, outputs=("nngp",)) if "outputs" in opts
                                 else test_kw)
                    errors.append(float(full_tt.info.get("error_estimate", 0.0) or 0.0))
                tb = np.asarray(full_tt.nngp)
            else:
                Kt = fn(Xte[i:j], activation=activation, **(dict(test_kw, outputs=("nngp",)) if "outputs" in opts
                                                           else test_kw))
                errors.append(float(Kt.info.get("error_estimate", 0.0) or 0.0))
                tb = np.diagonal(np.asarray(Kt.nngp)).copy()
        kernel_seconds += time.perf_counter() - s
        return np.asarray(getattr(Kb, kernel)), (None if ntb is None else np.asarray(ntb)), tb

    info = {"model": model, "activation": train_activation, "params": train_params, "kernel_info": train_info}
    if batch_size is None and cov != "full":
        batch_size = _default_batch(Xtr.shape[0])
    res = run(A, y, times, kernel=kernel, lr=lr, diag_reg=diag_reg, cov=cov, nngp_train=nngp_train, n_test=m,
              test_block=test_block, batch_size=batch_size, progress=progress, method=method,
              kernel_error=errors[0], tol=krylov_tol, max_iter=krylov_max_iter,
              info_extra=info, client=client, consume=True)
    res.info["kernel_seconds"] = kernel_seconds
    res.info["kernel_error_estimate"] = max(errors)
    return res
