r"""The kernel recursions, written once for symbolic (sympy) and numeric (numpy/jax) use.

Every function here is plain arithmetic on its arguments, so it works on sympy
expressions (for :func:`kernelcalc.derive`) and on arrays (for the numeric kernels) alike.
Notation: $C = E[\phi(a)\phi(b)]$ and $\dot C = E[\phi'(a)\phi'(b)]$ for
$(a, b)$ centred Gaussian with the current covariance.

**MLP** (neural-tangents ``stax.Dense`` in NTK parameterisation, then $\phi$):

$$K^{1} = \sigma_w^2\,\tfrac{x\cdot y}{d} + \sigma_b^2,\quad \Theta^{1} = K^{1},\qquad
K^{\ell+1} = \sigma_w^2 C^{\ell} + \sigma_b^2,\quad
\Theta^{\ell+1} = K^{\ell+1} + \sigma_w^2\dot C^{\ell}\Theta^{\ell}.$$

**Neural ODE** $h_0=\sigma_u U x/\sqrt d$, $\dot h = \sigma_w W\phi(h)/\sqrt n$,
$f = \sigma_v v\cdot\phi(h_T)/\sqrt n$:

$$\partial_t\partial_s S = \sigma_w^2 C(t,s),\ S|_{t=0\ \mathrm{or}\ s=0} = \sigma_u^2\tfrac{x\cdot y}{d};\qquad
\partial_t\partial_s\Lambda = \sigma_w^2\dot C(t,s)\Lambda(t,s),\ \Lambda|_{t=T\ \mathrm{or}\ s=T} = \sigma_v^2\dot C(T,T);$$

$$K_{\rm NNGP} = \sigma_v^2 C(T,T),\qquad
K_{\rm NTK} = \sigma_v^2 C(T,T) + \sigma_w^2\!\int_0^T\!\!\int_0^T C\Lambda\,dt\,ds
+ \sigma_u^2\tfrac{x\cdot y}{d}\Lambda(0,0).$$

The weight-tied Euler ResNet of depth $L$ replaces each $\int_0^t dr$ by the left
Riemann sum $\frac TL\sum_{\ell < tL/T}$ (and $\int_t^T$ by the matching right sum).
"""

from __future__ import annotations

__all__ = [
    "mlp_input_nngp", "mlp_nngp_step", "mlp_ntk_step",
    "ode_initial", "ode_forward_source", "ode_backward_terminal", "ode_backward_source",
    "ode_nngp", "ode_ntk",
]


# ----------------------------------------------------------------------------- MLP
def mlp_input_nngp(xy_over_d, sigma_w, sigma_b):
    r"""First dense layer: $K^1 = \sigma_w^2\,x\cdot y/d + \sigma_b^2$ (and $\Theta^1 = K^1$)."""
    return sigma_w**2 * xy_over_d + sigma_b**2


def mlp_nngp_step(C, sigma_w, sigma_b):
    r"""Dense layer after $\phi$: $K^{\ell+1} = \sigma_w^2 C^\ell + \sigma_b^2$."""
    return sigma_w**2 * C + sigma_b**2


def mlp_ntk_step(nngp_next, Cdot, ntk_prev, sigma_w):
    r"""$\Theta^{\ell+1} = K^{\ell+1} + \sigma_w^2\,\dot C^\ell\,\Theta^\ell$."""
    return nngp_next + sigma_w**2 * Cdot * ntk_prev


# ----------------------------------------------------------------------------- Neural ODE
def ode_initial(xy_over_d, sigma_u):
    r"""Boundary value of the forward Goursat problem: $S(t,0)=S(0,s)=\sigma_u^2\,x\cdot y/d$."""
    return sigma_u**2 * xy_over_d


def ode_forward_source(C, sigma_w):
    r"""Right-hand side of $\partial_t\partial_s S = \sigma_w^2 C(t,s)$."""
    return sigma_w**2 * C


def ode_backward_terminal(Cdot_TT, sigma_v):
    r"""Terminal value of the backward problem: $\Lambda(t,T)=\Lambda(T,s)=\sigma_v^2\dot C(T,T)$."""
    return sigma_v**2 * Cdot_TT


def ode_backward_source(Cdot, Lam, sigma_w):
    r"""Right-hand side of $\partial_t\partial_s \Lambda = \sigma_w^2 \dot C(t,s)\Lambda(t,s)$."""
    return sigma_w**2 * Cdot * Lam


def ode_nngp(C_TT, sigma_v):
    r"""$K_{\rm NNGP} = \sigma_v^2 C(T,T)$."""
    return sigma_v**2 * C_TT


def ode_ntk(C_TT, integral_C_Lambda, S0, Lam_00, sigma_v, sigma_w):
    r"""$K_{\rm NTK} = \sigma_v^2 C(T,T) + \sigma_w^2\iint C\Lambda + S_0\,\Lambda(0,0)$, $S_0 = \sigma_u^2 x\cdot y/d$."""
    return sigma_v**2 * C_TT + sigma_w**2 * integral_C_Lambda + S0 * Lam_00
