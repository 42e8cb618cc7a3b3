r"""The spectrum of a kernel on the sphere: its Gegenbauer (spherical-harmonic) eigenvalues.

On $\mathbb S^{d-1}$ of radius $\sqrt d$ every kernel of kernelcalc is a function $K(\rho)$ of
$\rho=x\cdot y/d$ alone.  The integral operator $(Tf)(x)=\int K(x\cdot y/d)f(y)\,d\sigma(y)$ of the
uniform *probability* measure $\sigma$ then has the spherical harmonics as eigenfunctions; all
$N(d,k)=\dim\mathcal H_k$ harmonics of degree $k$ share the eigenvalue (Funk–Hecke)

$$\mu_k = c_d\int_{-1}^{1}K(\rho)P_k(\rho)(1-\rho^2)^{\frac{d-3}2}d\rho
        = c_d\int_0^\pi K(\cos\theta)P_k(\cos\theta)\sin^{d-2}\theta\,d\theta,\qquad
c_d=\frac{\Gamma(d/2)}{\sqrt\pi\,\Gamma(\frac{d-1}2)},$$

with $P_k=C_k^{(d-2)/2}/C_k^{(d-2)/2}(1)$ the normalised Gegenbauer polynomial
($P_{k+1}=[(2k+d-2)\rho P_k-kP_{k-1}]/(k+d-2)$), and $\sum_kN(d,k)\mu_k=K(1)$ (the trace).

**Quadrature in $\theta$.**  Kinked kernels (relu) have $(1-\rho)^{1/2}$, $(1-\rho)^{3/2}$ terms at
$\rho=\pm1$: not smooth in $\rho$, but analytic in $\theta$ ($\sqrt{1-\rho}=\sqrt2\sin\frac\theta2$), and
so is $\sin^{d-2}\theta$.  So $\mu_k$ is computed by Gauss–Legendre in $\theta\in[0,\pi]$, which converges
exponentially for every kernel that is analytic in $\theta$ (smooth activations; relu MLPs), and the
power-law tail of a relu kernel is its own, not quadrature noise.  The number of nodes starts at
$k_{\max}+64$ and is doubled until the eigenvalues stop changing (the change is part of the bound).

**Kernel values.**  $K(\cos\theta_i)$ at the nodes comes from the model's own kernel function on the
pair $x=\sqrt d e_1$, $y=\sqrt d(\cos\theta_i e_1+\sin\theta_i e_2)$: the per-pair solves the Gram uses
(evaluated pair by pair in blocks small enough for :func:`~kernelcalc.kernels._gram.gram_plan`'s direct
path, so no $\theta$-table interpolation error enters), with the kernel's own ``error_estimate``.

The doubling stops when the change is below the rounding and kernel-error floor, or when it no longer
falls (by 4x per doubling) and is below $10^{-8}K(1)$: then it is the noise of the kernel values themselves (e.g. $\arccos\rho$ near
$\rho=1$ in the relu closed forms), not quadrature error, and it stays in the bound.

**Error bound** per eigenvalue: $\epsilon_k = |\mu_k^{(2n)}-\mu_k^{(n)}| + \max_\rho|\delta K|
+ (k+10)\,u\sum_i|w_iK_iP_k(\rho_i)|$ (quadrature change, the kernel's error estimate -- since
$c_d\int|P_k|(1-\rho^2)^{(d-3)/2}\le1$ -- and rounding).  An eigenvalue with $|\mu_k|\le\epsilon_k$
is not resolved: it is reported as ``nan`` with ``resolved`` false (printed ``< bound``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Mapping

import numpy as np

from .._results import JsonResult, read_only, text_table
from .._validation import KernelcalcInputError, accuracy_shortfall, check_model_keywords, model_scales, positive_int
from .._x64 import float64
from ..theory.activations import resolve_activation
from ..theory.gegenbauer import gauss_legendre, gegenbauer_table, multiplicity, sphere_constant

__all__ = ["SphereSpectrum", "sphere_spectrum", "fit_decay", "max_degree", "MODELS"]

MODELS = ("node", "resnet", "mlp", "deq")
KERNELS = ("nngp", "ntk")
_U = 2.0 ** -53
_MAX_NODES = 8192        # Gauss-Legendre nodes in theta at most
_MARGIN = 64             # nodes beyond k_max of the first rule
_NOISE = 1e-8            # a change that stops falling is accepted as the kernel values' noise only below this (relative)
_NOT_KERNEL_ARGS = ("x1", "x2", "activation", "progress", "outputs", "out", "client")


def _kernel_function(model: str):
    from .. import kernels

    return {"node": kernels.node_kernel, "resnet": kernels.resnet_kernel, "mlp": kernels.mlp_kernel,
            "deq": kernels.deq_kernel}[model]


def _kernel_args(model, kernel_args: dict) -> dict:
    """The kernel keywords validated: scale keywords by the naming table (:func:`model_scales`), the
    others against the kernel function's signature; one that does not apply is an error."""
    if model not in MODELS:
        raise KernelcalcInputError(f"model must be one of {MODELS}, got {model!r}")
    fn = _kernel_function(model)
    where = f"sphere_spectrum(model={model!r})"
    scale_names = [k for k in kernel_args if k.startswith("sigma_") or k in ("w_std", "b_std", "out_w_std", "out_b_std")]
    key = model + ("_untied" if kernel_args.get("weights") == "untied" else "")
    check_model_keywords(key, kernel_args)    # T, depth, solver options: the one table of every entry point
    scales = model_scales(key, fill=True, where=where, **{k: kernel_args[k] for k in scale_names})
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in _NOT_KERNEL_ARGS and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    other = {}
    for name, value in kernel_args.items():
        if name in scale_names:
            continue
        if name not in allowed and not open_ended:
            raise KernelcalcInputError(f"{name} does not apply to {where}; its keywords are "
                                       f"{', '.join(p for p in allowed)}")
        other[name] = value
    return dict(other, **scales)


class _SphereKernel:
    r"""$K(\cos\theta)$ of one model on $\mathbb S^{d-1}$ (radius $\sqrt d$): (nngp, ntk) at angles, pair by pair."""

    def __init__(self, model, activation, d, args):
        from ..kernels._gram import _DIRECT_MAX_PAIRS

        self.fn, self.activation, self.d, self.args = _kernel_function(model), activation, d, args
        self.block = _DIRECT_MAX_PAIRS          # pairs per call: gram_plan's direct path (no table)
        self.error = 0.0                        # largest absolute error estimate of the values returned
        self.evaluations = 0

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        d = self.d
        x = np.zeros((1, d))
        x[0, 0] = math.sqrt(d)
        out = np.empty((2, theta.size))
        for lo in range(0, theta.size, self.block):
            th = theta[lo:lo + self.block]
            Y = np.zeros((th.size, d))
            Y[:, 0], Y[:, 1] = math.sqrt(d) * np.cos(th), math.sqrt(d) * np.sin(th)
            K = self.fn(x, Y, activation=self.activation, **self.args)
            if K.info.get("path") not in (None, "direct"):       # pragma: no cover  (a change in gram_plan)
                raise AssertionError(f"sphere_spectrum expects per-pair solves, got the {K.info['path']} path")
            out[0, lo:lo + th.size], out[1, lo:lo + th.size] = K.nngp[0], K.ntk[0]
            self.error = max(self.error, float(K.info.get("error_estimate", 0.0)))
        self.evaluations += theta.size
        return out


def _gauss_legendre_theta(n: int, d: int):
    r"""Nodes $\theta_i\in(0,\pi)$ and weights $c_d w_i\sin^{d-2}\theta_i$ (they sum to 1)."""
    x, w = gauss_legendre(n)
    theta = 0.5 * np.pi * (x + 1.0)
    return theta, 0.5 * np.pi * w * sphere_constant(d) * np.sin(theta) ** (d - 2)


def _project(K: np.ndarray, theta, weights, k_max, d):
    """(mu (2, k+1), rounding bound (2, k+1)) of the kernel values K (2, n) at the nodes."""
    P = gegenbauer_table(np.cos(theta), k_max, d)                      # (k+1, n)
    WK = K * weights                                                   # (2, n)
    mu = WK @ P.T
    rnd = (np.arange(k_max + 1) + 10.0) * _U * (np.abs(WK) @ np.abs(P).T)
    return mu, rnd


def fit_decay(k, mu) -> dict | None:
    r"""The decay law of positive eigenvalues ``mu`` at degrees ``k`` (``None`` with fewer than 4).

    Two three-parameter families are fitted to $\log\mu$ by least squares: a power law with its next
    order, $\mu\approx Ak^{p}(1+c/k)$ ($\log\mu=a+p\log k+c/k$; relu tails approach $k^{-d}$ slowly, see
    ``shared/NUMERICS.md``), and an exponential with a power prefactor, $\mu\approx Ae^{\beta k}k^{b}$.
    The exponential family contains the pure power law ($\beta=0$), so the choice is made on the
    fitted local decay rate $d\log\mu/dk=\beta+b/k$ at the end of the range $k_{hi}$: exponential when
    $|\beta|>|b|/k_{hi}$ *and* its fit is not worse than the power law's (RMS within a factor 2), else
    power.  Returns ``kind`` (``"power"``/``"exponential"``), ``exponent`` ($p$, or $\beta$ with
    $\mu\sim e^{\beta k}$), ``rms_power``, ``rms_exponential`` (RMS residuals of $\log\mu$), ``fit_range``.
    """
    k, mu = np.asarray(k, float), np.asarray(mu, float)
    keep = (k >= 1) & np.isfinite(mu) & (mu > 0)
    k, y = k[keep], np.log(mu[keep]) if keep.any() else np.array([])
    if k.size < 4:
        return None

    def lsq(cols):
        A = np.stack(cols, axis=1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        return coef, float(np.sqrt(np.mean((A @ coef - y) ** 2)))

    one = np.ones_like(k)
    power, rms_power = lsq([one, np.log(k), 1.0 / k])
    expo, rms_exp = lsq([one, k, np.log(k)])
    exponential = abs(expo[1]) > abs(expo[2]) / k[-1] and rms_exp <= 2 * rms_power + 1e-12
    if exponential:
        kind, exponent, law = "exponential", float(expo[1]), "mu_k ~ A exp(beta k) k^b"
    else:
        kind, exponent, law = "power", float(power[1]), "mu_k ~ A k^p (1 + c/k)"
    return dict(kind=kind, exponent=exponent, law=law, rms_power=rms_power, rms_exponential=rms_exp,
                fit_range=(int(k[0]), int(k[-1])), points=int(k.size))


def _tail_degrees(k, mu, resolved):
    """Degrees of the fit: the resolved positive eigenvalues in the upper three quarters of the resolved range."""
    ok = resolved & (mu > 0) & (k >= 1)
    if not ok.any():
        return np.zeros(0, int)
    hi = int(k[ok][-1])
    return k[ok & (k >= max(2, hi // 4))]


@dataclasses.dataclass(frozen=True)
class SphereSpectrum(JsonResult):
    r"""Result of :func:`sphere_spectrum`: eigenvalues of the kernel's integral operator on $\mathbb S^{d-1}$.

    **Fields:** ``degrees`` $k=0..k_{\max}$; ``mu_nngp``, ``mu_ntk`` ($\mu_k$ for the uniform probability
    measure on the sphere of radius $\sqrt d$; ``nan`` where not resolved; ``None`` for a kernel not
    asked for); ``multiplicity`` $N(d,k)$; ``err_nngp``, ``err_ntk`` (error bound of each $\mu_k$);
    ``resolved_nngp``, ``resolved_ntk`` ($|\mu_k|$ above its bound); ``decay_nngp``, ``decay_ntk``
    (:func:`fit_decay` of the resolved tail, or ``None``); ``trace_check`` (per kernel: $\sum_kN(d,k)\mu_k$
    over the computed degrees, $K(1)$, their difference); ``model``, ``activation``, ``d``, ``params``,
    ``info`` (nodes, kernel error estimate, quadrature change, evaluations).
    """

    degrees: np.ndarray
    mu_nngp: np.ndarray | None
    mu_ntk: np.ndarray | None
    multiplicity: np.ndarray
    err_nngp: np.ndarray | None
    err_ntk: np.ndarray | None
    resolved_nngp: np.ndarray | None
    resolved_ntk: np.ndarray | None
    decay_nngp: dict | None
    decay_ntk: dict | None
    trace_check: dict
    model: str
    activation: str
    d: int
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("degrees", "multiplicity"):
            object.__setattr__(self, name, read_only(getattr(self, name), np.int64))
        for name in ("mu_nngp", "mu_ntk", "err_nngp", "err_ntk", "resolved_nngp", "resolved_ntk"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, read_only(v, bool if name.startswith("resolved") else np.float64))
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "info", dict(self.info))

    @property
    def kernels(self) -> tuple:
        """The kernels computed, of ``("nngp", "ntk")``."""
        return tuple(n for n in KERNELS if getattr(self, "mu_" + n) is not None)

    def eigenvalues(self, kernel: str = "ntk") -> np.ndarray:
        r"""$\mu_k$ repeated $N(d,k)$ times (the operator's eigenvalues with multiplicity), ``nan`` where not resolved."""
        return np.repeat(getattr(self, "mu_" + kernel), self.multiplicity)

    def table(self) -> str:
        def cell(mu, err, ok):
            return f"{mu:.6e}" if ok else f"< {err:.0e}"

        cols = [("k", 4, "d"), ("N(d,k)", 10, "d")]
        for n in self.kernels:
            cols += [(f"mu_{n}", 13, "s"), (f"err_{n}", 9, ".1e")]
        rows = []
        for i, k in enumerate(self.degrees):
            row = [int(k), int(self.multiplicity[i])]
            for n in self.kernels:
                mu, err, ok = getattr(self, "mu_" + n)[i], getattr(self, "err_" + n)[i], getattr(self, "resolved_" + n)[i]
                row += [cell(mu, err, ok), float(err)]
            rows.append(row)
        what = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        lines = [f"Eigenvalues mu_k of the {self.model} kernel ({self.activation}{', ' + what if what else ''}) on "
                 f"S^{self.d - 1} (radius sqrt(d), uniform probability measure)"]
        lines += text_table(cols, rows)
        for n in self.kernels:
            dec = getattr(self, "decay_" + n)
            tc = self.trace_check[n]
            if dec is None:
                lines.append(f"{n}: too few resolved eigenvalues to fit a decay")
            elif dec["kind"] == "power":
                lines.append(f"{n}: power-law decay mu_k ~ k^{dec['exponent']:.3f} (fit k = {dec['fit_range'][0]}.."
                             f"{dec['fit_range'][1]}, with a 1/k correction)")
            else:
                lines.append(f"{n}: exponential decay mu_k ~ exp({dec['exponent']:.4f} k) = {math.exp(dec['exponent']):.4f}^k "
                             f"(fit k = {dec['fit_range'][0]}..{dec['fit_range'][1]})")
            lines.append(f"{n}: trace sum_k N(d,k) mu_k = {tc['sum']:.12g} vs K(1) = {tc['K1']:.12g} "
                         f"(difference {tc['difference']:.1e}; degrees > {self.degrees[-1]} not included)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _kernel_choice(kernel) -> tuple:
    names = (kernel,) if isinstance(kernel, str) else tuple(kernel)
    bad = [n for n in names if n not in KERNELS]
    if bad or not names:
        raise KernelcalcInputError(f"kernel must be 'nngp', 'ntk' or both, got {kernel!r}")
    return tuple(n for n in KERNELS if n in names)


def max_degree() -> int:
    """The largest ``k_max`` the quadrature resolves (nodes at most :data:`_MAX_NODES`)."""
    return _MAX_NODES // 2 - _MARGIN


@float64
def sphere_spectrum(*, model: str = "node", activation, d: int, k_max: int = 40, kernel=KERNELS,
                    strict: bool = False, **kernel_args) -> SphereSpectrum:
    r"""Eigenvalues $\mu_k$ of the NNGP/NTK integral operators on the sphere $\mathbb S^{d-1}$ (module doc).

    **Arguments:**

    - ``model``: ``"node"``, ``"resnet"``, ``"mlp"`` or ``"deq"``; ``activation``: name, expression or
      :class:`~kernelcalc.Activation`.
    - ``d`` $\ge2$: the input dimension (sphere of radius $\sqrt d$); ``k_max`` $\ge0$: the highest degree.
    - ``kernel``: ``"nngp"``, ``"ntk"`` or both (default).
    - ``kernel_args``: every argument of the model's kernel function (``T=``, ``depth=``, ``weights=``,
      ``tol=``, the scale keywords ``sigma_w=`` ...); one that does not apply to ``model`` is an error.
    - ``strict``: raise :class:`~kernelcalc.KernelcalcAccuracyError` when the quadrature does not settle
      (else a :class:`~kernelcalc.KernelcalcAccuracyWarning`); also passed to the kernel.

    **Returns:** :class:`SphereSpectrum`.

    **Raises:** :class:`~kernelcalc.KernelcalcInputError` for $d<2$, $k_{\max}<0$, a $k_{\max}$ beyond the
    quadrature's resolution (it names the largest it resolves), a keyword that does not apply.
    """
    d = positive_int("d", d, minimum=2)
    k_max = positive_int("k_max", k_max, minimum=0)
    if k_max > max_degree():
        raise KernelcalcInputError(
            f"k_max = {k_max} is too large for the resolution: the quadrature (at most {_MAX_NODES} Gauss-Legendre "
            f"nodes in theta) resolves degrees k <= {max_degree()}")
    names = _kernel_choice(kernel)
    act = resolve_activation(activation)
    args = _kernel_args(model, dict(kernel_args))
    accepted = inspect.signature(_kernel_function(model)).parameters
    if "strict" in accepted:
        args["strict"] = strict
    if "progress" in accepted:
        args["progress"] = False
    if model in ("resnet", "mlp") and "depth" not in args:
        raise KernelcalcInputError(f"sphere_spectrum(model={model!r}) needs depth=")
    K_at = _SphereKernel(model, act, d, args)
    K1 = K_at(np.zeros(1))[:, 0]
    n = k_max + _MARGIN
    theta, w = _gauss_legendre_theta(n, d)
    mu, rnd = _project(K_at(theta), theta, w, k_max, d)
    previous = math.inf
    while True:
        n2 = 2 * n
        theta, w = _gauss_legendre_theta(n2, d)
        mu2, rnd = _project(K_at(theta), theta, w, k_max, d)
        change = np.abs(mu2 - mu)
        floor = rnd + K_at.error
        mu, n = mu2, n2
        if np.all(change <= np.maximum(floor, 1e-15 * np.max(np.abs(K1)))):
            break
        if np.max(change) > 0.25 * previous and np.max(change) <= _NOISE * np.max(np.abs(K1)):
            # stagnation: the change is the noise of the kernel values (e.g. arccos near rho = 1), not
            # quadrature error (which falls exponentially for a kernel analytic in theta); it is in the bound
            break
        previous = float(np.max(change))
        if 2 * n > _MAX_NODES:
            accuracy_shortfall(f"sphere_spectrum: the eigenvalues still change by {np.max(change - floor):.1e} at "
                               f"{n} Gauss-Legendre nodes in theta (kernel not smooth in theta?)", strict)
            break
    err = change + rnd + K_at.error
    resolved = np.abs(mu) > err
    k = np.arange(k_max + 1)
    mult = np.array([multiplicity(int(j), d) for j in k])
    fields = {}
    trace = {}
    for o, name in enumerate(KERNELS):
        if name not in names:
            fields.update({f"{p}_{name}": None for p in ("mu", "err", "resolved", "decay")})
            continue
        tail = _tail_degrees(k, mu[o], resolved[o])
        fields[f"mu_{name}"] = np.where(resolved[o], mu[o], np.nan)
        fields[f"err_{name}"] = err[o]
        fields[f"resolved_{name}"] = resolved[o]
        fields[f"decay_{name}"] = fit_decay(tail, mu[o][tail])
        s = float(np.sum(mult * mu[o]))
        trace[name] = dict(sum=s, K1=float(K1[o]), difference=float(K1[o] - s),
                           relative=float((K1[o] - s) / K1[o]) if K1[o] else float("nan"),
                           bound=float(np.sum(mult * err[o])))
    params = {k_: v for k_, v in args.items() if k_ not in ("strict", "progress")}
    info = dict(nodes=n, kernel_error_estimate=K_at.error, quadrature_change=float(np.max(change)),
                kernel_evaluations=K_at.evaluations, quadrature="Gauss-Legendre in theta")
    return SphereSpectrum(degrees=k, multiplicity=mult, trace_check=trace, model=model, activation=act.name, d=d,
                          params=params, info=info, **fields)
