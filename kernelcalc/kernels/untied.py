r"""Infinite-width kernels of the **untied** (independent-weights) Neural ODE and Euler ResNet.

**Model.** $h^0=\sigma_u Ux/\sqrt d$,
$h^{\ell+1}=h^\ell+\sqrt{\delta}\,\sigma_w W_\ell\phi(h^\ell)/\sqrt n$ ($\delta=T/L$, $W_0,\dots,W_{L-1}$
independent $N(0,1)$ matrices), $f=\sigma_v v\cdot\phi(h^L)/\sqrt n$.  The $\sqrt\delta$ branch scale
is the one under which independent layers survive the limit $L\to\infty$: then
$\sqrt\delta\,W_\ell\to dB_t$, a matrix Brownian motion, and $dh_t=\sigma_w\,dB_t\,\phi(h_t)/\sqrt n$
(the *untied* Neural ODE; with a $1/L$ scale the independent increments would average out).

**NNGP (derivation).** $W_\ell$ is independent of $h^\ell$, so given $h^\ell$ the increment is a
centred Gaussian with covariance $\delta\sigma_w^2\,\phi(h^\ell(x))\cdot\phi(h^\ell(y))/n\to\delta\sigma_w^2C^\ell$
and uncorrelated with $h^\ell$.  Hence $h^\ell$ stays Gaussian with covariance $S^\ell$ and

$$S^{\ell+1}=S^\ell+\delta\sigma_w^2\,C(S^\ell_{xx},S^\ell_{yy},S^\ell_{xy}),\qquad S^0=\sigma_u^2\tfrac{x\cdot y}d,$$

the forward-Euler step of the **diagonal ODE** $\dot S_{xy}(t)=\sigma_w^2C(S_{xx}(t),S_{yy}(t),S_{xy}(t))$
(one time variable: untied layers at different depths are uncorrelated, so there is no Goursat
problem in $(t,s)$).  $K_{\rm NNGP}=\sigma_v^2C(T)$.

**NTK (derivation).** Let $\Theta^\ell(x,y)=\lim\sum_\theta\partial_\theta h^\ell_i(x)\,\partial_\theta h^\ell_i(y)$
over the parameters $U,W_0..W_{\ell-1}$.  Differentiating the block,
$\partial h^{\ell+1}_i=\partial h^\ell_i+\sqrt\delta\frac{\sigma_w}{\sqrt n}\sum_jW_{\ell,ij}\phi'(h^\ell_j)\partial h^\ell_j$
(earlier parameters) and $\partial h^{\ell+1}_i/\partial W_{\ell,ij}=\sqrt\delta\sigma_w\phi(h^\ell_j)/\sqrt n$.
$W_\ell$ is independent of everything at layer $\ell$, so the cross term
$\frac{\sigma_w\sqrt\delta}{\sqrt n}\sum_j W_{\ell,ij}\phi'_j\langle\partial h_i,\partial h_j\rangle$ vanishes as
$n\to\infty$ and

$$\Theta^{\ell+1}=\Theta^\ell+\delta\sigma_w^2\big(\dot C^\ell\,\Theta^\ell+C^\ell\big),\quad \Theta^0=\sigma_u^2\tfrac{x\cdot y}d,\qquad
K_{\rm NTK}=\sigma_v^2\big(C^L+\dot C^L\,\Theta^L\big).$$

So the untied ResNet kernel is **exactly** forward Euler with step $\delta$ for the system
$\dot S=\sigma_w^2C$, $\dot\Theta=\sigma_w^2(\dot C\Theta+C)$, and converges to its solution at rate
$O(1/L)$.  Equivalently (unrolling the linear recursion) with the backward variable
$\Lambda(t)=\sigma_v^2\dot C(T)\exp\int_t^T\sigma_w^2\dot C$, i.e. the **linear backward ODE**
$\dot\Lambda=-\sigma_w^2\dot C\Lambda$, $\Lambda(T)=\sigma_v^2\dot C(T)$:

$$K_{\rm NTK}=\sigma_v^2C(T)+\sigma_w^2\!\int_0^T C(t)\Lambda(t)\,dt+\sigma_u^2\tfrac{x\cdot y}d\,\Lambda(0),$$

the single-integral analogue of the tied kernel's double integral (:mod:`kernelcalc.theory.recursion`);
the discrete version is $\sum_\ell\delta\sigma_w^2C^\ell\Lambda^{\ell+1}$ with
$\Lambda^\ell=(1+\delta\sigma_w^2\dot C^\ell)\Lambda^{\ell+1}$.

**Identity activation** ($C=S_{xy}$, $\dot C=1$): $S(t)=e^{\sigma_w^2t}S_0$,
$\Theta(t)=(1+\sigma_w^2t)e^{\sigma_w^2t}S_0$, so $K_{\rm NNGP}=\sigma_v^2e^{\sigma_w^2T}S_0$ and
$K_{\rm NTK}=\sigma_v^2(2+\sigma_w^2T)e^{\sigma_w^2T}S_0$; the ResNet ($g=1+\delta\sigma_w^2$):
$K_{\rm NNGP}=\sigma_v^2g^LS_0$, $K_{\rm NTK}=\sigma_v^2S_0\,(2g^L+L\delta\sigma_w^2g^{L-1})$.

**Numerics.** The ODE system (4 unknowns per pair: $S_{xx},S_{yy},S_{xy},\Theta$) is solved for a
batch of pairs at once with diffrax (``Dopri8``, PID controller with ``rtol=atol=tol`` in the max
norm).  ``info["time_error_estimate"]`` is the relative NTK change of the largest-norm self pair
between ``tol`` and ``100*tol``.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

from .._x64 import float64
from .._lazy import jax, jnp   # deferred: jax is imported on first use
from .._validation import KernelcalcInputError, as_input_pair, positive, positive_int, positive_sigmas
from ..theory.activations import resolve_activation
from ..theory.gaussian import DEFAULT_TOL, DualKernels, dual_kernels
from ._gram import bucket, error_estimate, gram, max_norm, pad_to, require_finite
from ._gram_norms_window import kink_window_cap
from .._results import Kernel

__all__ = ["untied_node_kernel", "untied_resnet_kernel", "batched_pair_fn", "WEIGHTS", "check_weights"]

WEIGHTS = ("tied", "untied")


def check_weights(weights) -> str:
    """``weights`` validated: ``"tied"`` or ``"untied"``."""
    if not isinstance(weights, str) or weights not in WEIGHTS:
        raise KernelcalcInputError(f"weights must be 'tied' or 'untied', got {weights!r}")
    return weights


def _rhs(dual: DualKernels, sigma_w: float):
    r"""$y=(S_{xx},S_{yy},S_{xy},\Theta)\mapsto\sigma_w^2(C_{xx},C_{yy},C_{xy},\dot C_{xy}\Theta+C_{xy})$ and $(C,\dot C)$."""
    a = sigma_w**2

    def rhs(y):
        qx, qy, c, th = y
        mx, my = dual.marginal(qx), dual.marginal(qy)
        cxx = dual.from_marginals(mx, mx, qx, derivative=False)
        cyy = dual.from_marginals(my, my, qy, derivative=False)
        C, Cd = dual.from_marginals(mx, my, c)
        return (a * cxx, a * cyy, a * C, a * (Cd * th + C)), (C, Cd)

    return rhs


def _readout(rhs, y, sigma_v):
    _, (C, Cd) = rhs(y)
    return sigma_v**2 * C, sigma_v**2 * (C + Cd * y[3])


@functools.lru_cache(maxsize=32)
def _compiled_ode(dual: DualKernels, T: float, sigma_w: float, sigma_v: float, tol: float):
    rhs = _rhs(dual, sigma_w)

    import diffrax   # here, not at the top: ``import kernelcalc`` stays fast (diffrax/equinox ~0.3 s)

    @jax.jit
    def solve(y0):
        term = diffrax.ODETerm(lambda t, y, args: rhs(y)[0])
        ctrl = diffrax.PIDController(rtol=tol, atol=tol, norm=lambda y: jnp.max(
            jnp.stack([jnp.max(jnp.abs(v)) for v in jax.tree_util.tree_leaves(y)])))
        sol = diffrax.diffeqsolve(term, diffrax.Dopri8(), t0=0.0, t1=T, dt0=T / 16, y0=y0,
                                  stepsize_controller=ctrl, max_steps=16384, throw=False)
        yT = jax.tree_util.tree_map(lambda v: v[-1], sol.ys)
        nngp, ntk = _readout(rhs, yT, sigma_v)
        ok = sol.result == diffrax.RESULTS.successful
        return nngp, ntk, yT[0], ok, sol.stats["num_steps"]

    return solve


@functools.lru_cache(maxsize=32)
def _compiled_resnet(dual: DualKernels, T: float, L: int, sigma_w: float, sigma_v: float):
    rhs = _rhs(dual, sigma_w)
    delta = T / L

    @jax.jit
    def solve(y0):
        def step(y, _):
            dy, _ = rhs(y)
            return tuple(v + delta * dv for v, dv in zip(y, dy)), None

        yL, _ = jax.lax.scan(step, y0, None, length=L)
        nngp, ntk = _readout(rhs, yL, sigma_v)
        return nngp, ntk, yL[0], jnp.asarray(True), jnp.asarray(L)

    return solve


def batched_pair_fn(compiled):
    """Wrap a jitted ``compiled(*flat_arrays) -> tuple`` into a ``pair_fn(sxx, syy, sxy)``: broadcast,
    flatten and pad to power-of-two batch sizes (few jit compilations); returns numpy arrays of the shape."""

    def pair_fn(sxx, syy, sxy):
        sxx, syy, sxy = (np.asarray(v, np.float64) for v in (sxx, syy, sxy))
        shape = np.broadcast_shapes(sxx.shape, syy.shape, sxy.shape)
        flat = [np.broadcast_to(v, shape).ravel() for v in (sxx, syy, sxy)]
        n = flat[0].size
        out = compiled(*(jnp.asarray(pad_to(v, bucket(n))) for v in flat))
        return tuple(np.asarray(o)[:n].reshape(shape) for o in out)

    return pair_fn


class _UntiedSolver:
    """``(sxx, syy, sxy) -> (nngp, ntk)`` for the untied ODE (``depth=None``) or ResNet (``depth=L``)."""

    def __init__(self, act, *, T, sigma_w, sigma_u, sigma_v, depth, tol, v_max):
        self.act, self.T, self.sigma_w, self.sigma_u, self.sigma_v = act, T, sigma_w, sigma_u, sigma_v
        self.depth, self.tol = depth, tol
        self.info: dict = {}
        coarse = dual_kernels(act, q_max=max(4.0 * sigma_u**2 * v_max, 1.0), tol=1e-6)
        _, _, q_T, ok, _ = self._solve(coarse, np.array([v_max]), tol=max(tol, 1e-8))
        q_est = float(np.max(q_T))
        if not (math.isfinite(q_est) and bool(np.all(ok))):
            raise KernelcalcInputError(
                f"the pre-activation variance q(t) of the untied {act.name} network blows up before "
                f"T = {T:g} (sigma_w = {sigma_w:g}): phi grows faster than linearly, so the infinite-width "
                "dynamics exist only on a shorter horizon; reduce T or sigma_w")
        self.dual = dual_kernels(act, q_max=1.05 * max(q_est, 1e-3))
        self.info.update(expectation=self.dual.describe(), q_max=q_est)
        if depth is None:
            s = np.array([v_max])
            fine = self._solve(self.dual, [s, s, s], tol=tol)[1]
            rough = self._solve(self.dual, [s, s, s], tol=100 * tol)[1]
            err = float(np.max(np.abs(fine - rough) / np.maximum(np.abs(fine), 1e-300)))
            self.info.update(time_scheme="diffrax Dopri8, PID rtol=atol=" + f"{tol:g}", time_error_estimate=err)
        else:
            self.info.update(time_scheme=f"Euler (exact discrete sums), L={depth}", time_error_estimate=None)

    def _compiled(self, dual, tol):
        if self.depth is None:
            return _compiled_ode(dual, self.T, self.sigma_w, self.sigma_v, float(tol))
        return _compiled_resnet(dual, self.T, int(self.depth), self.sigma_w, self.sigma_v)

    def _solve(self, dual, s, tol):
        """``s`` = (sxx, syy, sxy) arrays (or one array for the three) -> numpy outputs."""
        if not isinstance(s, (list, tuple)):
            s = [s, s, s]
        solve = self._compiled(dual, tol)
        y0 = tuple(jnp.asarray(self.sigma_u**2 * np.asarray(v, np.float64)) for v in (s[0], s[1], s[2], s[2]))
        return tuple(np.asarray(o) for o in solve(y0))

    def relative_error_estimate(self) -> float:
        if self.depth is None:
            return DEFAULT_TOL + self.info["time_error_estimate"]
        per_layer = 1e-15 if self.dual.method == "closed" else DEFAULT_TOL
        return 4 * self.depth * per_layer

    def pair_fn(self):
        def compiled(sxx, syy, sxy):
            nngp, ntk, _, ok, _ = self._compiled(self.dual, self.tol)(
                tuple(self.sigma_u**2 * v for v in (sxx, syy, sxy, sxy)))
            return nngp, ntk, jnp.broadcast_to(ok, nngp.shape)

        inner = batched_pair_fn(compiled)

        def pair_fn(sxx, syy, sxy):
            nngp, ntk, ok = inner(sxx, syy, sxy)
            if not np.all(ok):
                raise KernelcalcInputError(
                    f"the untied {self.act.name} kernel ODE did not reach T = {self.T:g} within 16384 steps at "
                    f"rtol = {self.tol:g} (sigma_w = {self.sigma_w:g}): the variance ODE blows up or the tolerance "
                    "is below what float64 allows; reduce T or sigma_w, or raise tol")
            return nngp, ntk

        pair_fn.window_correlation_cap = kink_window_cap(self.act)     # (a kink: the closest pairs solved directly)
        return pair_fn


def _untied(x1, x2, *, activation, T, sigma_w, sigma_u, sigma_v, depth, tol, progress, model,
            outputs=("nngp", "ntk"), out=None, client=None):
    T = positive("T", T)
    sigma_w, sigma_u, sigma_v = positive_sigmas(sigma_w, sigma_u, sigma_v)
    tol = positive("tol", tol)
    act = resolve_activation(activation)
    t0 = time.perf_counter()
    a, b, same = as_input_pair(x1, x2)
    solver = _UntiedSolver(act, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, depth=depth, tol=tol,
                           v_max=max_norm(a, b))
    params = dict(T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, weights="untied")
    if depth is not None:
        params = dict(depth=depth, **params)
    nngp, ntk, ginfo = gram(a, None if same else b, solver.pair_fn(), tol=max(tol, 1e-12), progress=progress,
                            outputs=outputs, out=out, client=client,
                            config=dict(model=model, activation=act.name, params=dict(params, tol=tol)))
    require_finite(nngp, ntk, f"the untied {act.name} {model} kernel")
    info = dict(solver.info, **ginfo, weights="untied", seconds=time.perf_counter() - t0)
    info["error_estimate"] = error_estimate(nngp, ntk, solver.relative_error_estimate(),
                                            ginfo.get("interpolation_error_estimate"))
    return Kernel(nngp=nngp, ntk=ntk, model=model, activation=act.name, params=params, info=info)


@float64
def untied_node_kernel(x1, x2=None, *, activation, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0,
                       tol: float = 1e-12, progress: bool | None = None, outputs=("nngp", "ntk"), out=None,
                       client=None) -> Kernel:
    r"""Infinite-width NNGP and NTK of the untied Neural ODE $dh=\sigma_w\,dB_t\,\phi(h)/\sqrt n$ on $[0,T]$.

    This is ``node_kernel(..., weights="untied")`` (see the module docstring for the derivation).

    **Arguments:** as :func:`~kernelcalc.node_kernel` (``outputs``, ``out``, ``client``, ``progress``: the
    same tile engine); ``tol``: rtol = atol of the adaptive ODE solve.

    **Returns:** :class:`~kernelcalc.Kernel` (``model="node_untied"``) with
    ``nngp`` $=\sigma_v^2C(T)$, ``ntk`` $=\sigma_v^2(C(T)+\dot C(T)\Theta(T))$.
    """
    return _untied(x1, x2, activation=activation, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v,
                   depth=None, tol=tol, progress=progress, model="node_untied", outputs=outputs, out=out,
                   client=client)


@float64
def untied_resnet_kernel(x1, x2=None, *, activation, depth, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0,
                         progress: bool | None = None, outputs=("nngp", "ntk"), out=None, client=None) -> Kernel:
    r"""Infinite-width NNGP and NTK of the untied Euler ResNet of depth $L$ with $\sqrt{T/L}$ branches.

    This is ``resnet_kernel(..., weights="untied")``: the exact discrete recursion
    $S^{\ell+1}=S^\ell+\delta\sigma_w^2C^\ell$, $\Theta^{\ell+1}=\Theta^\ell+\delta\sigma_w^2(\dot C^\ell\Theta^\ell+C^\ell)$
    (module docstring), $O(1/L)$ from :func:`untied_node_kernel`.

    ``outputs``, ``out``, ``client``, ``progress``: as in :func:`~kernelcalc.node_kernel` (the same tile engine).

    **Returns:** :class:`~kernelcalc.Kernel` (``model="resnet_untied"``).
    """
    depth = positive_int("depth", depth)
    return _untied(x1, x2, activation=activation, T=T, sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v,
                   depth=depth, tol=1e-12, progress=progress, model="resnet_untied", outputs=outputs, out=out,
                   client=client)

