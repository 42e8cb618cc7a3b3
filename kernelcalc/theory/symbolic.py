r"""Symbolic derivation of the kernel recursions: :func:`derive`.

Everything is built by calling the recursion functions of :mod:`kernelcalc.theory.recursion` on
sympy symbols, functions, ``Integral`` and ``Sum`` objects -- the symbolic and the numeric
paths share one definition of every recursion.  The dual kernels
$C(q_1,q_2,c) = E[\phi(a)\phi(b)]$ and $\dot C = E[\phi'(a)\phi'(b)]$ are the closed forms of
:mod:`kernelcalc.theory.duals` where they exist, else the unevaluated Gaussian integral

$$E[f(a)g(b)] = \int\!\!\int f(a)g(b)\,
\frac{\exp\!\big(-\frac{q_2a^2 - 2cab + q_1b^2}{2(q_1q_2-c^2)}\big)}{2\pi\sqrt{q_1q_2-c^2}}\,da\,db .$$

Symbols: ``rho`` $=x\cdot y/d$, ``q_x`` $=|x|^2/d$, ``q_y`` $=|y|^2/d$, ``sigma_w``,
``sigma_u``, ``sigma_v`` (and ``sigma_b``, ``sigma_vb`` for the MLP), ``T``; for the Neural
ODE the time variables ``t, s`` and integration variables ``r, q``; for the ResNet the layer
indices ``k, m, i, j``, depth ``L`` and step ``delta = T/L``.

Example::

    >>> from kernelcalc import derive
    >>> d = derive("relu", model="mlp", depth=1)
    >>> print(d.text())            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools

import sympy as sp

from . import recursion as rec
from .activations import Activation, X, resolve_activation
from .duals import closed_form_dual
from .._validation import model_scales

__all__ = ["Derivation", "derive", "gaussian_expectation", "MODELS"]

MODELS = ("node", "resnet", "mlp", "node_untied", "resnet_untied", "deq")

# ----------------------------------------------------------------------------- symbols
q1, q2 = sp.symbols("q_1 q_2", positive=True)
c = sp.Symbol("c", real=True)
rho = sp.Symbol("rho", real=True)
q_x, q_y = sp.symbols("q_x q_y", positive=True)
sigma_w, sigma_u, sigma_v, sigma_b, sigma_vb = sp.symbols("sigma_w sigma_u sigma_v sigma_b sigma_vb",
                                                          nonnegative=True)
_SCALE_SYMBOLS = {"sigma_w": sigma_w, "sigma_u": sigma_u, "sigma_v": sigma_v, "sigma_b": sigma_b, "sigma_vb": sigma_vb}
T = sp.Symbol("T", positive=True)
t, s, r, q = sp.symbols("t s r q", nonnegative=True)
L = sp.Symbol("L", integer=True, positive=True)
ell = sp.Symbol("ell", integer=True, positive=True)
k, m, i, j = sp.symbols("k m i j", integer=True, nonnegative=True)
delta = sp.Symbol("delta", positive=True)
K_NNGP, K_NTK = sp.symbols("K_NNGP K_NTK")
_a, _b = sp.symbols("a b", real=True)

_SYMBOL_DOC = {
    "rho": "x·y/d", "q_x": "|x|²/d", "q_y": "|y|²/d",
    "sigma_w": "std of the hidden weights W", "sigma_u": "std of the input weights U",
    "sigma_v": "std of the readout weights v", "sigma_b": "std of the hidden biases (MLP, DEQ)",
    "sigma_vb": "std of the readout bias (MLP)", "T": "time horizon", "L": "depth",
    "delta": "step T/L", "q_1, q_2, c": "Var a, Var b, Cov(a, b) of the centred Gaussian (a, b)",
}


def gaussian_expectation(f: sp.Expr, g: sp.Expr, v1, v2, cov) -> sp.Integral:
    r"""Unevaluated $E[f(a)g(b)]$, $(a,b)$ centred Gaussian with variances ``v1, v2``, covariance ``cov``.

    ``f`` and ``g`` are expressions in :data:`kernelcalc.theory.activations.X`.  When the three
    arguments coincide ($a = b$ almost surely) the one-dimensional integral is returned.
    """
    fa = f.subs(X, _a)
    if v1 == v2 == cov:
        dens = sp.exp(-_a**2 / (2 * v1)) / sp.sqrt(2 * sp.pi * v1)
        return sp.Integral(fa * g.subs(X, _a) * dens, (_a, -sp.oo, sp.oo))
    det = v1 * v2 - cov**2
    dens = sp.exp(-(v2 * _a**2 - 2 * cov * _a * _b + v1 * _b**2) / (2 * det)) / (2 * sp.pi * sp.sqrt(det))
    return sp.Integral(fa * g.subs(X, _b) * dens, (_a, -sp.oo, sp.oo), (_b, -sp.oo, sp.oo))


def _duals(act: Activation):
    """(C, Cdot, closed) as callables of (q1, q2, c) returning sympy expressions."""
    cf = closed_form_dual(act)
    if cf is not None:
        return (lambda a, b, cc: cf.symbolic(a, b, cc)[0]), (lambda a, b, cc: cf.symbolic(a, b, cc)[1]), True
    phi, dphi = act.expr, act.derivative
    return (lambda a, b, cc: gaussian_expectation(phi, phi, a, b, cc)), \
        (lambda a, b, cc: gaussian_expectation(dphi, dphi, a, b, cc)), False


# ----------------------------------------------------------------------------- result
#: columns of 2-D pretty-printed formulas at most; wider ones (the relu sums' and elu's duals: thousands of columns)
#: are printed on one line in sympy's linear syntax, which a terminal wraps
_PRETTY_WIDTH = 200

@dataclasses.dataclass(frozen=True)
class Derivation:
    r"""Symbolic infinite-width kernels of one model and activation (see :func:`derive`).

    **Fields:** ``activation``; ``model`` (``"node" | "resnet" | "mlp"``); ``depth`` (None:
    symbolic ``L``); ``phi``, ``dphi`` ($\phi$, $\phi'$ in ``x``); ``C``, ``Cdot`` (the dual
    kernels in ``q_1, q_2, c``); ``closed_form`` (whether they are closed forms);
    ``equations`` (sympy ``Eq``: the recursion, then $K_{\rm NNGP}$ and $K_{\rm NTK}$);
    ``nngp`` and ``ntk`` (right-hand sides; ``ntk`` is $K^\infty$); ``notes``; ``scales``: the
    ``(name, value)`` pairs substituted for the scale symbols (empty: all symbolic).
    """

    activation: Activation
    model: str
    depth: int | None
    phi: sp.Expr
    dphi: sp.Expr
    C: sp.Expr
    Cdot: sp.Expr
    closed_form: bool
    equations: tuple
    nngp: sp.Expr
    ntk: sp.Expr
    notes: tuple = ()
    scales: tuple = ()

    @property
    def symbols(self) -> dict[str, sp.Symbol]:
        """The free symbols of ``ntk`` by name (for ``subs``)."""
        return {str(v): v for v in self.ntk.free_symbols | self.nngp.free_symbols}

    def _title(self) -> str:
        what = {"node": "Neural ODE", "resnet": "weight-tied Euler ResNet", "mlp": "MLP",
                "node_untied": "untied Neural ODE", "resnet_untied": "untied Euler ResNet",
                "deq": "deep equilibrium model"}[self.model]
        depth = "" if self.model in ("node", "node_untied", "deq") else f", depth {'L' if self.depth is None else self.depth}"
        return f"Infinite-width NNGP/NTK of the {what}{depth}, activation {self.activation.name}"

    def text(self) -> str:
        def pp(e):
            art = sp.pretty(e, use_unicode=True, wrap_line=False)
            if max((len(line) for line in art.splitlines()), default=0) <= _PRETTY_WIDTH:
                return art
            return f"{sp.sstr(e.lhs)} = {sp.sstr(e.rhs)}" if isinstance(e, sp.Eq) else sp.sstr(e)   # (one line)

        kind = "closed form" if self.closed_form else "Gaussian expectation, no closed form known"
        out = [self._title(), "",
               f"φ(x)  = {self.phi}", f"φ'(x) = {self.dphi}", "",
               f"Dual kernels ({kind}), (a, b) ~ N(0, [[q_1, c], [c, q_2]]):",
               pp(sp.Eq(sp.Function("C")(q1, q2, c), self.C, evaluate=False)),
               pp(sp.Eq(sp.Function("Cdot")(q1, q2, c), self.Cdot, evaluate=False)), "",
               "Recursion:"]
        for eq in self.equations:
            out += [pp(eq), ""]
        if self.notes:
            out += ["Notes:"] + ["  - " + n for n in self.notes]
        return "\n".join(out).rstrip() + "\n"

    def latex(self) -> str:
        def row(lhs, rhs):
            return f"  {lhs if isinstance(lhs, str) else sp.latex(lhs)} &= {sp.latex(rhs)}"

        rows = [row(r"\phi(x)", self.phi), row(r"\phi'(x)", self.dphi),
                row(sp.Function("C")(q1, q2, c), self.C), row(sp.Function("Cdot")(q1, q2, c), self.Cdot)]
        rows += [row(eq.lhs, eq.rhs) for eq in self.equations]
        body = " \\\\\n".join(rows)
        return f"% {self._title()}\n\\begin{{align*}}\n{body}\n\\end{{align*}}\n"

    def to_dict(self) -> dict:
        return {
            "model": self.model, "depth": self.depth, "activation": self.activation.to_dict(),
            "phi": str(self.phi), "dphi": str(self.dphi), "closed_form": self.closed_form,
            "C": str(self.C), "Cdot": str(self.Cdot),
            "equations": [{"lhs": str(e.lhs), "rhs": str(e.rhs), "latex": sp.latex(e)} for e in self.equations],
            "nngp": str(self.nngp), "ntk": str(self.ntk), "notes": list(self.notes),
            "symbols": dict(_SYMBOL_DOC), "scales": {k: str(v) for k, v in self.scales},
        }

    def __str__(self) -> str:
        return self.text()


# ----------------------------------------------------------------------------- models
def _node(Cf, Cdf):
    S, Sxx, Syy = sp.Function("S"), sp.Function("S_xx"), sp.Function("S_yy")
    Cn, Cdn, Lam = sp.Function("C"), sp.Function("Cdot"), sp.Function("Lambda")
    S0 = rec.ode_initial(rho, sigma_u)
    eqs = [
        sp.Eq(sp.Derivative(S(t, s), t, s), rec.ode_forward_source(Cn(t, s), sigma_w)),
        sp.Eq(S(t, s), S0 + sp.Integral(rec.ode_forward_source(Cn(r, q), sigma_w), (q, 0, s), (r, 0, t))),
        sp.Eq(Cn(t, s), Cf(Sxx(t, t), Syy(s, s), S(t, s))),
        sp.Eq(Cdn(t, s), Cdf(Sxx(t, t), Syy(s, s), S(t, s))),
        sp.Eq(sp.Derivative(Lam(t, s), t, s), rec.ode_backward_source(Cdn(t, s), Lam(t, s), sigma_w)),
        sp.Eq(Lam(t, s), rec.ode_backward_terminal(Cdn(T, T), sigma_v)
              + sp.Integral(rec.ode_backward_source(Cdn(r, q), Lam(r, q), sigma_w), (q, s, T), (r, t, T))),
    ]
    nngp = rec.ode_nngp(Cn(T, T), sigma_v)
    ntk = rec.ode_ntk(Cn(T, T), sp.Integral(Cn(t, s) * Lam(t, s), (s, 0, T), (t, 0, T)), S0, Lam(0, 0),
                      sigma_v, sigma_w)
    notes = ("S_xx, S_yy solve the S-equation with rho replaced by q_x = |x|²/d, q_y = |y|²/d",
             "0 <= t, s <= T; r, q are integration variables")
    return eqs, nngp, ntk, notes


def _resnet(Cf, Cdf, depth):
    S, Sxx, Syy = sp.IndexedBase("S"), sp.IndexedBase("S_xx"), sp.IndexedBase("S_yy")
    Cn, Cdn, Lam = sp.IndexedBase("C"), sp.IndexedBase("Cdot"), sp.IndexedBase("Lambda")
    Ld = L if depth is None else sp.Integer(depth)
    S0 = rec.ode_initial(rho, sigma_u)
    eqs = [
        sp.Eq(delta, T / Ld),
        sp.Eq(S[k, m], S0 + delta**2 * sp.Sum(rec.ode_forward_source(Cn[i, j], sigma_w),
                                              (j, 0, m - 1), (i, 0, k - 1))),
        sp.Eq(Cn[i, j], Cf(Sxx[i, i], Syy[j, j], S[i, j])),
        sp.Eq(Cdn[i, j], Cdf(Sxx[i, i], Syy[j, j], S[i, j])),
        sp.Eq(Lam[k, m], rec.ode_backward_terminal(Cdn[Ld, Ld], sigma_v)
              + delta**2 * sp.Sum(rec.ode_backward_source(Cdn[i, j], Lam[i + 1, j + 1], sigma_w),
                                  (j, m, Ld - 1), (i, k, Ld - 1))),
    ]
    nngp = rec.ode_nngp(Cn[Ld, Ld], sigma_v)
    ntk = rec.ode_ntk(Cn[Ld, Ld], delta**2 * sp.Sum(Cn[i, j] * Lam[i + 1, j + 1], (j, 0, Ld - 1), (i, 0, Ld - 1)),
                      S0, Lam[0, 0], sigma_v, sigma_w)
    notes = (f"layer indices 0 <= k, m <= {Ld}; hidden state h_(k+1) = h_k + delta*sigma_w*W*phi(h_k)/sqrt(n)",
             "left Riemann sums of the Neural-ODE integrals (the backward sum uses Lambda at the right end)",
             "S_xx, S_yy solve the S-equation with rho replaced by q_x = |x|²/d, q_y = |y|²/d")
    return eqs, nngp, ntk, notes


def _mlp(Cf, Cdf, depth):
    K, Th = sp.IndexedBase("K"), sp.IndexedBase("Theta")
    Kxx, Kyy = sp.IndexedBase("K_xx"), sp.IndexedBase("K_yy")
    Cn, Cdn = sp.IndexedBase("C"), sp.IndexedBase("Cdot")
    Ld = L if depth is None else sp.Integer(depth)
    eqs = [
        sp.Eq(K[1], rec.mlp_input_nngp(rho, sigma_w, sigma_b)),
        sp.Eq(Th[1], K[1]),
        sp.Eq(Cn[ell], Cf(Kxx[ell], Kyy[ell], K[ell])),
        sp.Eq(Cdn[ell], Cdf(Kxx[ell], Kyy[ell], K[ell])),
        sp.Eq(K[ell + 1], rec.mlp_nngp_step(Cn[ell], sigma_w, sigma_b)),
        sp.Eq(Th[ell + 1], rec.mlp_ntk_step(K[ell + 1], Cdn[ell], Th[ell], sigma_w)),
    ]
    notes = [f"hidden layers ell = 1..{Ld} (K[ell+1] for ell < {Ld}); the readout K_NNGP, K_NTK uses "
             f"C[{Ld}], Cdot[{Ld}], Theta[{Ld}] with (sigma_v, sigma_vb)",
             "K_xx, K_yy follow the same recursion with rho replaced by q_x = |x|²/d, q_y = |y|²/d"]
    if depth is None:
        nngp = rec.mlp_nngp_step(Cn[L], sigma_v, sigma_vb)
        ntk = rec.mlp_ntk_step(K_NNGP, Cdn[L], Th[L], sigma_v)
        return eqs, nngp, ntk, tuple(notes)
    # Unroll the recursion into explicit expressions of rho, q_x, q_y.
    Kc, Kx, Ky = (rec.mlp_input_nngp(v, sigma_w, sigma_b) for v in (rho, q_x, q_y))
    Th_c = Kc
    for layer in range(1, depth + 1):
        w, b = (sigma_w, sigma_b) if layer < depth else (sigma_v, sigma_vb)
        C_c, Cd_c = Cf(Kx, Ky, Kc), Cdf(Kx, Ky, Kc)
        K_next = rec.mlp_nngp_step(C_c, w, b)
        Th_c = rec.mlp_ntk_step(K_next, Cd_c, Th_c, w)
        Kx, Ky, Kc = rec.mlp_nngp_step(Cf(Kx, Kx, Kx), w, b), rec.mlp_nngp_step(Cf(Ky, Ky, Ky), w, b), K_next
    notes.append("K_NNGP and K_NTK are written out explicitly in rho, q_x, q_y")
    return eqs, Kc, Th_c, tuple(notes)


@functools.lru_cache(maxsize=128)
def _derive(act: Activation, model: str, depth: int | None) -> Derivation:
    Cf, Cdf, closed = _duals(act)
    if model == "node":
        eqs, nngp, ntk, notes = _node(Cf, Cdf)
    elif model == "resnet":
        eqs, nngp, ntk, notes = _resnet(Cf, Cdf, depth)
    elif model in _EXTRA:
        eqs, nngp, ntk, notes = _EXTRA[model](Cf, Cdf, depth)
    else:
        eqs, nngp, ntk, notes = _mlp(Cf, Cdf, depth)
    nngp_rhs = nngp
    ntk_rhs = ntk.subs(K_NNGP, nngp) if model == "mlp" and depth is None else ntk
    eqs = list(eqs) + [sp.Eq(K_NNGP, nngp_rhs), sp.Eq(K_NTK, ntk)]
    return Derivation(activation=act, model=model, depth=depth, phi=act.expr, dphi=act.derivative,
                      C=Cf(q1, q2, c), Cdot=Cdf(q1, q2, c), closed_form=closed, equations=tuple(eqs),
                      nngp=nngp_rhs, ntk=ntk_rhs, notes=notes)


def derive(activation: "str | sp.Expr | Activation", model: str = "node", depth: int | None = None, *,
           sigma_w=None, sigma_u=None, sigma_v=None, sigma_b=None, sigma_vb=None) -> Derivation:
    r"""The NNGP/NTK recursion and $K^\infty$ of a model as sympy objects.

    **Arguments:**

    - ``activation``: an :class:`~kernelcalc.Activation`, a built-in name or an expression in ``x``.
    - ``model``: ``"node"`` (Neural ODE: double integrals over $[0,T]^2$), ``"resnet"``
      (weight-tied Euler ResNet: double sums with step $\delta = T/L$) or ``"mlp"``.
    - ``depth``: number of layers for ``"resnet"`` / ``"mlp"`` (hidden layers of the MLP);
      ``None`` keeps a symbolic depth ``L``.  The MLP with an integer depth is unrolled into
      an explicit expression of ``rho``, ``q_x``, ``q_y``.  Not used by ``"node"``.
    - ``"node_untied"`` / ``"resnet_untied"``: independent weights in time (a diagonal ODE / Euler
      sum in one time variable, linear NTK equation); ``"deq"``: the equilibrium model (fixed points,
      Feng--Kolter NTK); see :mod:`kernelcalc.kernels.untied` and :mod:`kernelcalc.kernels.deq`.
    - The model's scale keywords (``docs/naming.md``): ``sigma_w``, ``sigma_u``, ``sigma_v`` (Neural
      ODE, ResNets; DEQ also ``sigma_b``), ``sigma_w``, ``sigma_b``, ``sigma_v``, ``sigma_vb`` (MLP).
      ``None`` (default) keeps the symbol; a number (weight scales $>0$, bias scales $\ge0$) is
      substituted, e.g. ``derive("tanh", model="mlp", sigma_w=2)``. A scale of another model is a
      :class:`~kernelcalc.KernelcalcInputError`.

    **Returns:** a :class:`Derivation` (``.text()``, ``.latex()``, ``.to_dict()``).
    """
    act = resolve_activation(activation)
    if not isinstance(model, str) or model.strip().lower() not in MODELS:
        raise ValueError(f"model must be one of {', '.join(repr(x) for x in MODELS)}; got {model!r}")
    model = model.strip().lower()
    if depth is not None:
        if model in ("node", "node_untied", "deq"):
            raise ValueError("depth is only used by model='resnet', 'resnet_untied' or 'mlp'; this model has "
                             f"continuous depth T (got depth={depth!r})")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer or None, got {depth!r}")
    given = dict(sigma_w=sigma_w, sigma_u=sigma_u, sigma_v=sigma_v, sigma_b=sigma_b, sigma_vb=sigma_vb)
    chosen = model_scales(model, fill=False, **given)        # validates; the values as given are substituted
    result = _derive(act, model, depth)
    if not chosen:
        return result
    values = tuple((name, sp.nsimplify(given[name], rational=True)) for name in chosen)   # 0.5 -> 1/2
    subs = {_SCALE_SYMBOLS[name]: v for name, v in values}
    return dataclasses.replace(result, equations=tuple(e.subs(subs) for e in result.equations),
                               nngp=result.nngp.subs(subs), ntk=result.ntk.subs(subs), scales=values,
                               notes=result.notes + ("substituted " + ", ".join(f"{n} = {v}" for n, v in values),))


# ----------------------------------------------------------------------------- untied and equilibrium models
def _node_untied(Cf, Cdf, depth):
    S, Sxx, Syy, Th = sp.Function("S"), sp.Function("S_xx"), sp.Function("S_yy"), sp.Function("Theta")
    Cn, Cdn = sp.Function("C"), sp.Function("Cdot")
    S0 = rec.ode_initial(rho, sigma_u)
    eqs = [
        sp.Eq(sp.Derivative(S(t), t), rec.ode_forward_source(Cn(t), sigma_w)), sp.Eq(S(0), S0),
        sp.Eq(Cn(t), Cf(Sxx(t), Syy(t), S(t))), sp.Eq(Cdn(t), Cdf(Sxx(t), Syy(t), S(t))),
        sp.Eq(sp.Derivative(Th(t), t), sigma_w**2 * (Cdn(t) * Th(t) + Cn(t))), sp.Eq(Th(0), S0),
    ]
    notes = ("dh = sigma_w dB_t phi(h)/sqrt(n): independent layers, so one time variable (no Goursat problem)",
             "S_xx, S_yy solve the S-equation with rho replaced by q_x, q_y",
             "equivalently K_NTK = sigma_v² C(T) + sigma_w² ∫ C Lambda dt + S(0) Lambda(0), "
             "dLambda/dt = -sigma_w² Cdot Lambda, Lambda(T) = sigma_v² Cdot(T)")
    return eqs, rec.ode_nngp(Cn(T), sigma_v), sigma_v**2 * (Cn(T) + Cdn(T) * Th(T)), notes


def _resnet_untied(Cf, Cdf, depth):
    S, Sxx, Syy, Th = (sp.IndexedBase(n) for n in ("S", "S_xx", "S_yy", "Theta"))
    Cn, Cdn = sp.IndexedBase("C"), sp.IndexedBase("Cdot")
    Ld = L if depth is None else sp.Integer(depth)
    S0 = rec.ode_initial(rho, sigma_u)
    eqs = [
        sp.Eq(delta, T / Ld), sp.Eq(S[0], S0), sp.Eq(Th[0], S0),
        sp.Eq(S[k + 1], S[k] + delta * rec.ode_forward_source(Cn[k], sigma_w)),
        sp.Eq(Cn[k], Cf(Sxx[k], Syy[k], S[k])), sp.Eq(Cdn[k], Cdf(Sxx[k], Syy[k], S[k])),
        sp.Eq(Th[k + 1], Th[k] + delta * sigma_w**2 * (Cdn[k] * Th[k] + Cn[k])),
    ]
    notes = (f"h_(k+1) = h_k + sqrt(delta)*sigma_w*W_k*phi(h_k)/sqrt(n), independent W_k, 0 <= k < {Ld}",
             "exactly forward Euler for the untied Neural-ODE system (O(1/L) from it)")
    return eqs, rec.ode_nngp(Cn[Ld], sigma_v), sigma_v**2 * (Cn[Ld] + Cdn[Ld] * Th[Ld]), notes


def _deq(Cf, Cdf, depth):
    Ss, Sx, Sy = sp.symbols("S_star S_xx_star S_yy_star", real=True)
    eqs = [
        sp.Eq(Sx, sigma_w**2 * Cf(Sx, Sx, Sx) + sigma_u**2 * q_x + sigma_b**2),
        sp.Eq(Sy, sigma_w**2 * Cf(Sy, Sy, Sy) + sigma_u**2 * q_y + sigma_b**2),
        sp.Eq(Ss, sigma_w**2 * Cf(Sx, Sy, Ss) + sigma_u**2 * rho + sigma_b**2),
    ]
    C, Cd = Cf(Sx, Sy, Ss), Cdf(Sx, Sy, Ss)
    notes = ("h* = sigma_w W phi(h*)/sqrt(n) + sigma_u U x/sqrt(d) + sigma_b b; fixed points of the covariance map",
             "well posed iff sigma_w² Cdot(S_xx_star, S_xx_star, S_xx_star) < 1 (and likewise for y)",
             "NTK: Theta_h = S_star/(1 - sigma_w² Cdot) (Feng & Kolter 2020), plus the readout")
    return eqs, sigma_v**2 * C, sigma_v**2 * (C + Cd * Ss / (1 - sigma_w**2 * Cd)), notes


_EXTRA = {"node_untied": _node_untied, "resnet_untied": _resnet_untied, "deq": _deq}
