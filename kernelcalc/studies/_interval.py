r"""The closed-form kernels in interval arithmetic (python-flint ``arb``), for :func:`~kernelcalc.rigorous_kernel`.

The relu / leaky-relu / erf MLP (the ``stax`` recursion of :mod:`kernelcalc.theory.recursion` on arb
entries, with the arc-cosine and erf duals enclosed) and the identity-activation Neural ODE (a Bessel closed
form).  The data's float64 entries are converted to arb exactly, so each Gram entry is an enclosure of the
exact kernel of the float64 data; :class:`_Midpoints` keeps the float64 midpoints and a rigorous bound on
their distance to the exact values.  The certificate built on them is in :mod:`kernelcalc.studies.certify`.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .._validation import MODEL_SCALES, KernelcalcInputError, model_scales, positive, positive_int
from ..theory.activations import resolve_activation

__all__: list[str] = []     # internal: rigorous_kernel and certify_ntk in kernelcalc.studies.certify are public


def _flint():
    try:
        import flint
    except ImportError:  # pragma: no cover - python-flint is in the [certify] extra
        raise KernelcalcInputError("rigorous kernels need python-flint: pip install 'kernelcalc[certify]'") from None
    return flint


_MLP_DUALS = ("relu", "leaky_relu", "erf")


def _arb_dual(name: str, alpha: float, flint):
    r"""$(C, \dot C)(q_1, q_2, c)$ in arb for the closed-form activations of :mod:`kernelcalc.theory.duals`.

    ``same=True`` means the two inputs are identical, so $c = q_1 = q_2$ and $\rho = 1$ exactly.
    The correlation $\rho=c/\sqrt{q_1q_2}$ is intersected with $[-1,1]$ and $1-\rho^2$ with
    $[0,\infty)$: both hold for the exact values (Cauchy–Schwarz), so the enclosures stay valid.
    """
    arb = flint.arb
    pi = arb.pi()
    unit = arb(0, 1)                    # the interval [-1, 1]
    one = arb(1)

    def relu(q1, q2, c, same):
        nrm = (q1 * q2).sqrt()
        rho = one if same else (c / nrm).intersection(unit)
        theta = rho.acos()
        sin = (one - rho * rho).nonnegative_part().sqrt()
        return nrm / (2 * pi) * (sin + (pi - theta) * rho), (pi - theta) / (2 * pi)

    if name == "relu":
        return relu
    if name == "leaky_relu":
        a = arb(alpha)
        b = (1 - a) ** 2

        def leaky(q1, q2, c, same):
            C, Cd = relu(q1, q2, c, same)
            return a * c + b * C, a + b * Cd

        return leaky

    def erf(q1, q2, c, same):
        P = (1 + 2 * q1) * (1 + 2 * q2)
        return 2 / pi * (2 * c / P.sqrt()).asin(), 4 / (pi * (P - 4 * c * c).sqrt())

    return erf


def _mlp_activation(act) -> tuple[str, float]:
    from ..theory.duals import closed_form_dual

    dual = closed_form_dual(act)
    name = None if dual is None else dual.name.split("(")[0]
    if name not in _MLP_DUALS:
        raise KernelcalcInputError(
            f"no interval-arithmetic closed form for the MLP with activation {act.name}: supported are "
            f"{', '.join(_MLP_DUALS)} (use certify_ntk for an a-posteriori certificate)")
    return name, (act.param("alpha") if name == "leaky_relu" else 0.0)


def _is_identity(act) -> bool:
    from ..theory.activations import X as _x

    return act.expr == _x


class _Midpoints:
    """Float64 midpoints of arb entries and a rigorous bound on |exact - midpoint| (``radius``)."""

    def __init__(self, n: int, flint):
        self.arb = flint.arb
        self.mid = np.empty((n, n))
        self._max = flint.arb(0)

    def put(self, i: int, j: int, x) -> None:
        f = float(x.mid())
        err = (x - self.arb(f)).abs_upper()     # an exact upper bound (an arb point)
        if not err.is_finite():
            raise KernelcalcInputError(f"interval kernel entry [{i}, {j}] is not finite: {x}")
        if err > self._max:                     # exact comparison of points
            self._max = err
        self.mid[i, j] = self.mid[j, i] = f

    @property
    def radius(self) -> Fraction:
        return _arb_upper_fraction(self._max)


def _arb_upper_fraction(x) -> Fraction:
    """An exact rational upper bound of the arb ``x``."""
    man, exp = x.upper().mid().man_exp()
    man, exp = int(man), int(exp)
    return Fraction(man) * (Fraction(2) ** exp)


def interval_grams(X: np.ndarray, model: str, act, prec: int, params: dict, flint):
    """The NNGP and NTK Grams of ``X`` (validated, (N, d)) as :class:`_Midpoints` at ``prec`` bits, and the
    parameters used: ``((nngp, ntk), used)``; ``model`` is ``"node"`` or ``"mlp"``."""
    n, d = X.shape
    old = flint.ctx.prec
    flint.ctx.prec = prec
    try:
        A = flint.arb_mat(X.tolist())                       # exact: every float64 is an arb point
        G = (A * A.transpose()) / d                          # x.y/d, enclosed
        if model == "node":
            return _node_identity(G, n, act, params, flint)
        if model == "mlp":
            return _mlp(G, X, act, params, flint)
        raise KernelcalcInputError(f"model must be 'mlp' or 'node' for a rigorous kernel, got {model!r}")
    finally:
        flint.ctx.prec = old


def _node_identity(G, n, act, params, flint):
    if not _is_identity(act):
        raise KernelcalcInputError(
            f"the rigorous Neural-ODE kernel is closed-form for the identity activation only, got {act.name} "
            "(use certify_ntk for an a-posteriori certificate)")
    used = _node_params(params)
    arb = flint.arb
    T, sw, su, sv = (arb(used[k]) for k in ("T", "sigma_w", "sigma_u", "sigma_v"))
    z = 2 * sw * T
    base = su**2 * sv**2
    c_ntk = base * (2 * z.bessel_i(0) + sw * T * z.bessel_i(1))
    c_nngp = base * z.bessel_i(0)
    nngp, ntk = _Midpoints(n, flint), _Midpoints(n, flint)
    for i in range(n):
        for j in range(i, n):
            g = G[i, j]
            nngp.put(i, j, c_nngp * g)
            ntk.put(i, j, c_ntk * g)
    return (nngp, ntk), used


def _node_params(params) -> dict:
    allowed = {"T", "sigma_w", "sigma_u", "sigma_v"}
    extra = set(params) - allowed
    if extra:
        raise KernelcalcInputError(f"unknown parameter(s) {sorted(extra)} for model 'node'; allowed: {sorted(allowed)}")
    return {"T": positive("T", params.get("T", 1.0)),
            **model_scales("node", **{k: v for k, v in params.items() if k != "T"})}


def _mlp_params(params) -> dict:
    allowed = {"depth", *MODEL_SCALES["mlp"]}
    extra = set(params) - allowed
    if extra:
        raise KernelcalcInputError(f"unknown parameter(s) {sorted(extra)} for model 'mlp'; allowed: {sorted(allowed)}")
    if "depth" not in params:
        raise KernelcalcInputError("model 'mlp' needs depth (the number of hidden layers)")
    used = {"depth": positive_int("depth", params["depth"])}
    used.update(model_scales("mlp", **{k: v for k, v in params.items() if k != "depth"}))
    return used


def _mlp(G, X, act, params, flint):
    r"""The ``stax`` recursion of :mod:`kernelcalc.theory.recursion` (``mlp_input_nngp``, ``mlp_nngp_step``,
    ``mlp_ntk_step``) on arb entries, one input pair at a time."""
    from ..theory import recursion as rec

    name, alpha = _mlp_activation(act)
    used = _mlp_params(params)
    arb = flint.arb
    dual = _arb_dual(name, alpha, flint)
    depth = used["depth"]
    w, b, ow, ob = (arb(used[k]) for k in ("sigma_w", "sigma_b", "sigma_v", "sigma_vb"))
    n = X.shape[0]
    # per-input layer variances q_l(x), l = 1..depth (the diagonal recursion, rho = 1 exactly)
    q = [[rec.mlp_input_nngp(G[i, i], w, b)] for i in range(n)]
    for i in range(n):
        for _ in range(depth - 1):
            qi = q[i][-1]
            q[i].append(rec.mlp_nngp_step(dual(qi, qi, qi, True)[0], w, b))
    if name != "erf" and any(qq.contains(0) for qs in q for qq in qs):
        raise KernelcalcInputError("a layer variance of some input is 0 (a zero row with sigma_b = 0): "
                                   "the arc-cosine kernel's angle is undefined there; use mlp_kernel")
    nngp, ntk = _Midpoints(n, flint), _Midpoints(n, flint)
    for i in range(n):
        for j in range(i, n):
            same = i == j or bool(np.array_equal(X[i], X[j]))
            k = rec.mlp_input_nngp(G[i, j], w, b)
            theta = k
            for layer in range(depth):
                ws, bs = (ow, ob) if layer == depth - 1 else (w, b)
                qi, qj = q[i][layer], q[j][layer]
                if same:
                    k = qi
                C, Cdot = dual(qi, qj, k, same)
                k = rec.mlp_nngp_step(C, ws, bs)
                theta = rec.mlp_ntk_step(k, Cdot, theta, ws)
            nngp.put(i, j, k)
            ntk.put(i, j, theta)
    return (nngp, ntk), used


def rigorous_available(model: str, activation) -> bool:
    """Whether :func:`rigorous_kernel` covers ``model`` with ``activation`` (and python-flint is installed)."""
    try:
        _flint()
    except KernelcalcInputError:  # pragma: no cover
        return False
    act = resolve_activation(activation)
    if model == "node":
        return _is_identity(act)
    if model == "mlp":
        try:
            _mlp_activation(act)
        except KernelcalcInputError:
            return False
        return True
    return False
