r"""Dual kernels as Chebyshev series in the correlation: the polar Fourier expansion of the Gaussian.

For $(a,b)\sim N(0,[[q_1,c],[c,q_2]])$ and $\rho=c/\sqrt{q_1q_2}=\cos\theta$, put $(z_1,z_2)=R(\cos\alpha,\sin\alpha)$:
then $a=\sqrt{q_1}R\cos\alpha$ and $b=\sqrt{q_2}R\cos(\alpha-\theta)$.  Each $f(\sqrt qR\cos\alpha)$ is even in
$\alpha$, a cosine series $\sum_m A_m(R;q)\cos m\alpha$, and the average over $\alpha$ of a product of two such
series shifted by $\theta$ is a cosine series in $\theta$.  Since $\cos m\theta=T_m(\rho)$,

$$E[f(a)g(b)]=\sum_{m\ge0}c_m\,T_m(\rho),\qquad c_0=\int_0^\infty A_0B_0\,Re^{-R^2/2}dR,\quad
c_m=\tfrac12\int_0^\infty A_mB_m\,Re^{-R^2/2}dR\ (m\ge1),$$

a **Chebyshev series in the correlation** whose coefficients are one radial integral of products of
per-variance coefficients $A_m(\cdot;q_1)$, $B_m(\cdot;q_2)$ (:meth:`PolarFourierRule.node_coefficients`).  For
the fixed marginals of a Goursat problem (the variances at its time nodes) the table $c_m(q_i,q_j)$ is built
once per pair of nodes (:meth:`PolarFourierRule.cell_coefficients`) and every later $(C,\dot C)$ is one
Clenshaw sum (:func:`chebyshev_sum`).

**Why it is short.**  $c_m$ decays geometrically at the rate set by the nearest singularity of $C$ in
$\rho$.  For a saturating $\phi$ (tanh, sigmoid) at large $q$ that singularity sits at $\rho\approx1+O(1/q)$:
the power series of the Mehler/Hermite expansion (radius of convergence $1+O(1/q)$) needs $O(q)$ terms
(tanh: about $460q$, 26 000 at $q=57$), the Chebyshev series only $O(\sqrt q)$ (measured: 250 for $C$, 340 for
$\dot C$ at $q=57$, against mpmath within $6\cdot10^{-15}$).

**Quadratures.**  In $\alpha$: the trapezoid rule on $N_k+1$ points of $[0,\pi]$ (a DCT-I by FFT; exponentially
accurate for the periodic analytic integrand), $N_k$ a power of two chosen per radial node $R_k$ at the
largest variance (:func:`choose_polar_fourier`).  In $R$: the trapezoid rule in $x=\log R$ with step $h$ on
$[x_{lo},x_{hi}]$: the integrand $e^{2x}e^{-e^{2x}/2}A_m(e^x)B_m(e^x)$ is analytic in a strip around the real
axis (the singularities of $\phi(\sqrt qR\cos\alpha)$ for tanh-like $\phi$ lie on $\arg R=\pm\pi/2$, i.e.
$\mathrm{Im}\,x=\pm\pi/2$, for every $q$), so the error falls like $e^{-2\pi d/h}$; it decays like $e^{2x}$ at
$-\infty$ and double-exponentially at $+\infty$.  The step is chosen by comparing levels
(:func:`choose_polar_fourier`); the difference is the error estimate.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from ._chebyshev import clenshaw

__all__ = ["PolarFourierRule", "choose_polar_fourier", "chebyshev_sum", "polar_fourier_modes"]

_X_LO = -19.0            # log R: below, R e^{-R^2/2} dR carries < e^{-38}/2 of the constant mode
_X_HI = math.log(9.2)    # above, e^{-R^2/2} < 5e-19
_STEPS = (0.15, 0.12, 0.1, 0.08)   # trapezoid steps in log R tried (coarse to fine)
_CUT_ALIAS = 1e-17       # alpha nodes: the aliased coefficients move c_m by less than this (x the largest c_m)
_CUT_MODE = 1e-9         # modes m kept while some sqrt(w_k) |A_m(R_k)| exceeds this (x scale): c_m ~ its square
_N_MIN, _N_MAX = 16, 1 << 14


def _dct1(F: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Cosine coefficients $A_m$ ($f=\sum_mA_m\cos m\alpha$) from the samples ``F`` (``N+1`` along ``axis``) of an
    even $2\pi$-periodic $f$ at $\alpha_l=\pi l/N$ (trapezoid rule = DCT-I, by a real FFT of the even extension)."""
    F = np.moveaxis(F, axis, -1)
    N = F.shape[-1] - 1
    g = np.concatenate([F, F[..., -2:0:-1]], axis=-1)
    A = np.fft.rfft(g, axis=-1).real / N
    A[..., 0] *= 0.5
    return np.moveaxis(A, -1, axis)


def _quarter_odd(F: np.ndarray, N: int) -> np.ndarray:
    r"""Odd-mode cosine coefficients $A_{2j+1}$, $j<N/2$, of an even $f$ with $f(\pi-\alpha)=-f(\alpha)$, from its
    samples at $\alpha_l=\pi l/N$, $l\le N/2$, along axis 1 (``F`` ``(nodes, N/2+1, Q)``): the DCT-I sum folds into
    $A_{2j+1}=\frac4N\big[\tfrac12f_0+\sum_{0<l<N/2}f_l\cos\frac{\pi(2j+1)l}N\big]$, a DCT-III of length $N/2$."""
    import scipy.fft

    return scipy.fft.dct(F[:, : N // 2], type=3, axis=1) * (2.0 / N)


def _quarter_even(F: np.ndarray, N: int) -> np.ndarray:
    r"""Even-mode cosine coefficients $A_{2j}$, $j\le N/2$, of an even $f$ with $f(\pi-\alpha)=f(\alpha)$, from its
    samples at $\alpha_l=\pi l/N$, $l\le N/2$, along axis 1: a DCT-I of length $N/2+1$ ($A_0$ halved)."""
    import scipy.fft

    A = scipy.fft.dct(F, type=1, axis=1) * (2.0 / N)
    A[:, 0] *= 0.5
    return A


@dataclasses.dataclass(frozen=True, eq=False)
class PolarFourierRule:
    r"""$E[f(a)g(b)]=\sum_mc_mT_m(\rho)$ by the polar Fourier expansion (module doc).

    ``fns``: the numpy callables $(\phi,\phi')$; ``h``: the step in $x=\log R$; ``n_alpha``: the $\alpha$ nodes
    (a power of two) per radial node $x_k=x_{lo}+kh$; ``modes``: the Chebyshev coefficients kept (the same for
    $\phi$ and $\phi'$: the larger); ``q_max``: the largest variance the node counts were chosen for."""

    fns: tuple
    h: float
    n_alpha: tuple
    modes: int
    q_max: float
    name: str = ""
    #: ``"odd"`` ($\phi$ odd: its modes are odd, $\phi'$'s even), ``"odd+const"`` ($\phi-\phi(0)$ odd: sigmoid; the
    #: same plus $\phi$'s mode 0) or ``""``: the modes that vanish by symmetry are set to exactly 0
    parity: str = ""

    @functools.cached_property
    def x(self) -> np.ndarray:
        return _X_LO + self.h * np.arange(len(self.n_alpha))

    @functools.cached_property
    def sqrt_w(self) -> np.ndarray:
        r"""$\sqrt{w_k}$, $w_k=h\,e^{2x_k}e^{-e^{2x_k}/2}$ (the radial weights)."""
        x = self.x
        return np.sqrt(self.h * np.exp(2.0 * x - 0.5 * np.exp(2.0 * x)))

    @functools.cached_property
    def _groups(self):
        """``[(N, node indices, cos alpha (N+1,))]``: radial nodes sharing an alpha count."""
        n = np.asarray(self.n_alpha)
        return [(int(N), np.nonzero(n == N)[0], np.cos(np.pi * np.arange(int(N) + 1) / int(N)))
                for N in np.unique(n)]

    @property
    def points(self) -> int:
        """Terms of one evaluation (a Clenshaw sum of :attr:`modes` terms)."""
        return int(self.modes)

    @property
    def radial_nodes(self) -> int:
        return len(self.n_alpha)

    def node_coefficients(self, q, derivative: bool = False) -> np.ndarray:
        r"""$\sqrt{w_k}\,s_m A_m(R_k;q)$ for $f=\phi$ (``derivative``: $\phi'$), $s_0=1$, $s_m=1/\sqrt2$: shape
        ``(modes, radial nodes, *q.shape)`` (modes first: the layout of the marginals), so that
        $c_m=\sum_k$ (node coefficients of $q_1$)(of $q_2$)."""
        q = np.asarray(q, np.float64)
        f = self.fns[1 if derivative else 0]
        root = np.sqrt(np.maximum(q, 0.0)).reshape(-1)
        out = np.zeros((self.modes, self.radial_nodes, root.size))
        R = np.exp(self.x)
        # the symmetry about alpha = pi / 2 of an odd phi (phi - phi(0) for "odd+const"; phi' is then even): half the
        # angles, and a quarter-wave transform (only the nonzero modes)
        half = {"": None, "odd": "odd", "odd+const": "odd"}[self.parity]
        if half and derivative:
            half = "even"
        shift = float(f(np.zeros(1))[0]) if (half == "odd" and self.parity == "odd+const") else 0.0
        for N, idx, ca in self._groups:
            if half:
                ca = ca[: N // 2 + 1]
            with np.errstate(over="ignore"):
                F = f((R[idx][:, None, None] * ca[:, None]) * root)           # (nodes, angles, Q)
            F = np.broadcast_to(F, (idx.size, ca.size, root.size))
            if half == "odd":
                A, first, step = _quarter_odd(F - shift, N), 1, 2             # modes 1, 3, ..., N - 1
            elif half == "even":
                A, first, step = _quarter_even(F, N), 0, 2                    # modes 0, 2, ..., N
            else:
                A, first, step = _dct1(F, axis=1), 0, 1                       # modes 0, 1, ..., N
            count = min(A.shape[1], len(range(first, self.modes, step)))
            A = A[:, :count] * (self.sqrt_w[idx, None, None] * math.sqrt(0.5))
            if first == 0:
                A[:, 0] *= math.sqrt(2.0)                                     # s_0 = 1
            out[first:first + step * count:step, idx, :] = np.moveaxis(A, 1, 0)
        if shift:
            out[0] = shift * self.sqrt_w[:, None]    # the constant phi(0): mode 0 at every radius
        if not half and self.parity:   # the modes that vanish by symmetry: exactly 0 (chebyshev_sum then skips them)
            if derivative:
                out[1::2] = 0.0
            else:
                out[2::2] = 0.0
                if self.parity == "odd":
                    out[0] = 0.0
        return out.reshape((self.modes, self.radial_nodes) + q.shape)

    @staticmethod
    def cell_coefficients(A1: np.ndarray, A2: np.ndarray) -> np.ndarray:
        r"""$c_m$ ``(modes, ...)`` from the node coefficients ``(modes, radial nodes, ...)`` of the two variances
        (broadcasting over the trailing axes: one radial contraction per mode)."""
        return np.einsum("mk...,mk...->m...", A1, A2)

    def marginal(self, q, derivative: bool = True):
        """``(q, node coefficients of phi[, of phi'])``."""
        q = np.asarray(q, np.float64)
        return (q, self.node_coefficients(q)) + ((self.node_coefficients(q, True),) if derivative else ())

    def from_marginals(self, m1, m2, c, derivative: bool = True):
        r"""$C$ (and $\dot C$) from :meth:`marginal` of the two variances and the covariances ``c`` (broadcast)."""
        q1, q2 = m1[0], m2[0]
        n = np.sqrt(q1 * q2)
        rho = np.where(n > 0, np.clip(np.asarray(c, np.float64) / np.where(n > 0, n, 1.0), -1.0, 1.0), 0.0)
        out = tuple(chebyshev_sum(self.cell_coefficients(m1[i], m2[i]), rho)
                    for i in ((1, 2) if derivative else (1,)))
        return out if derivative else out[0]

    def describe(self) -> str:
        return (f"polar Fourier series: a Chebyshev series in the correlation, {self.modes} modes, "
                f"{self.radial_nodes} radial nodes (step {self.h:g} in log R), {min(self.n_alpha)}-{max(self.n_alpha)} "
                "angles")


def chebyshev_sum(coef: np.ndarray, rho: np.ndarray) -> np.ndarray:
    r"""$\sum_m c_mT_m(\rho)$ for ``coef`` ``(modes, ...)`` broadcasting against ``rho`` ``(...)`` (Clenshaw).  A series
    of one parity (all odd or all even $m\ge1$ vanish exactly; tanh, and sigmoid less its constant) is summed over
    its nonzero terms only, in $T_2(\rho)=2\rho^2-1$ ($T_{m+2}+T_{m-2}=2T_2T_m$): half the work."""
    rho = np.asarray(rho, np.float64)
    M = coef.shape[0]
    nz = np.any(coef.reshape(M, -1) != 0, axis=1)
    odd_used, even_used = bool(np.any(nz[1::2])), bool(np.any(nz[2::2]))
    shape = np.broadcast_shapes(coef.shape[1:], rho.shape)
    if M <= 2 or (odd_used and even_used):
        return clenshaw(coef, rho)
    t2 = 2.0 * rho * rho - 1.0
    if not odd_used:         # sum_j a_j T_{2j}(rho) = sum_j a_j T_j(T_2(rho))
        return clenshaw(coef[0::2], t2)
    # sum_j a_j T_{2j+1}: y_j = T_{2j+1} obeys y_{j+1} = 2 T_2 y_j - y_{j-1} with y_0 = T_1 = y_{-1} = rho, so the
    # Clenshaw sum ends in (a_0 + 2 T_2 b_1 - b_2) rho - b_1 rho
    a = coef[1::2]
    b1, b2 = np.zeros(shape), np.zeros(shape)
    for j in range(a.shape[0] - 1, 0, -1):
        b1, b2 = 2.0 * t2 * b1 - b2 + a[j], b1
    return (a[0] + 2.0 * t2 * b1 - b2 - b1) * rho + coef[0]


def _parity(f) -> str:
    r"""``"odd"`` when $\phi$ is odd, ``"odd+const"`` when $\phi-\phi(0)$ is (to rounding, at sample points), else
    ``""``."""
    z = np.array([0.1, 0.37, 0.9, 1.7, 2.6, 4.1, 7.3, 15.0])
    with np.errstate(all="ignore"):
        p, m, zero = (np.asarray(f(v), dtype=float) * np.ones_like(z) for v in (z, -z, 0.0 * z))
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        return ""
    scale = max(float(np.max(np.abs(p))), 1e-300)
    if np.max(np.abs(p + m - 2.0 * zero)) > 1e-14 * scale:
        return ""
    return "odd" if float(np.max(np.abs(zero))) <= 1e-15 * scale else "odd+const"


def polar_fourier_modes(fns, q: float, h: float = 0.1) -> int:
    """The modes the rule keeps at variance ``q`` (for cost estimates): one :func:`choose_polar_fourier` sizing."""
    return _sizing(fns, q, h)[1]


def _alias_cut(scale, node_max):
    r"""The size below which a node's cosine coefficients may be dropped (aliased): an error $e$ in
    $\sqrt{w_k}A_m(R_k)$ moves $c_m$ by about $e$ times the node's largest $\sqrt{w_k}|A_m|$ (``node_max``), so
    ``_CUT_ALIAS`` times ``scale``$^2$ over that; but not below the rounding of the node's own transform
    ($10^{-15}$ of ``node_max``), which no refinement removes."""
    weighted = _CUT_ALIAS * scale * scale / np.maximum(node_max, _CUT_ALIAS * scale)
    return np.maximum(weighted, 1e-15 * np.asarray(node_max))


def _sizing(fns, q_max: float, h: float):
    r"""``(n_alpha per radial node, modes, resolved)`` for variances up to ``q_max``: at each radial node the cosine
    coefficients of $f(\sqrt{q_{\max}}R_k\cos\alpha)$ ($f=\phi,\phi'$) are computed on a reference grid, doubled
    until its upper half carries no significant coefficient (so that the reference itself is not aliased); the
    modes kept are those where some $\sqrt{w_k}|A_m|$ exceeds ``_CUT_MODE`` (relative to the largest), and $N_k$
    the smallest power of two beyond which all coefficients are below ``_CUT_ALIAS`` (weighted as they enter
    $c_m$).  ``resolved`` is False when a node would need more than ``_N_MAX`` angles."""
    x = _X_LO + h * np.arange(int(math.floor((_X_HI - _X_LO) / h)) + 1)
    R = np.exp(x)
    sw = np.sqrt(h * np.exp(2.0 * x - 0.5 * np.exp(2.0 * x)))
    u = math.sqrt(q_max) * R
    # a first reference grid per node (f(u cos alpha) bends on the scale 1/u near alpha = pi/2), then doubled
    n_ref = np.clip(2 ** np.ceil(np.log2(64 + 48.0 * u)), 64, _N_MAX).astype(int)

    def reference(idx_all):
        out = []
        for f in fns:
            Af = np.zeros((idx_all.size, int(n_ref[idx_all].max()) + 1))
            for N in np.unique(n_ref[idx_all]):
                sel = np.nonzero(n_ref[idx_all] == N)[0]
                ca = np.cos(np.pi * np.arange(N + 1) / N)
                with np.errstate(over="ignore"):
                    Af[sel, : N + 1] = _dct1(f(u[idx_all[sel], None] * ca[None, :]) * np.ones((sel.size, 1)))
            out.append(np.abs(Af) * sw[idx_all, None])
        return out

    A = reference(np.arange(x.size))
    resolved = True
    for _ in range(8):
        scale = max(float(np.max(a)) for a in A)
        # a node's reference is unresolved while its upper half holds coefficients above the alias cut
        node_max = np.maximum(np.max(np.stack([np.max(a, axis=1) for a in A]), axis=0), 1e-300)
        upper = np.array([max(float(np.max(a[k, n_ref[k] // 2: n_ref[k] + 1])) for a in A) for k in range(x.size)])
        bad = np.nonzero(upper > _alias_cut(scale, node_max))[0]
        if bad.size == 0:
            break
        if np.any(n_ref[bad] >= _N_MAX):
            resolved = False
            break
        n_ref[bad] *= 2
        redo = reference(bad)
        width = max(A[0].shape[1], redo[0].shape[1])
        A = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in A]
        for a, r in zip(A, redo):
            a[bad] = 0.0
            a[bad, : r.shape[1]] = r
    else:
        resolved = False
    scale = max(float(np.max(a)) for a in A)
    big = np.max(np.stack([np.max(a, axis=0) for a in A]), axis=0) > _CUT_MODE * scale
    modes = int(np.max(np.nonzero(big)[0], initial=0)) + 2
    n_alpha = []
    for k in range(x.size):
        # an error e in sqrt(w_k) A_m(R_k) moves c_m by about e times this node's largest sqrt(w_k) |A_m|: the aliases
        # (the coefficients beyond N_k) must be below _CUT_ALIAS relative to the largest c_m, over that
        node = np.max(np.stack([a[k] for a in A]), axis=0)
        tail = node > _alias_cut(scale, float(np.max(node)))
        m_tail = int(np.max(np.nonzero(tail)[0], initial=0)) + 1
        # the DCT on N + 1 points aliases A_m with A_{2N-m}: exact for the modes m <= N once all beyond N vanish
        n_alpha.append(int(min(_N_MAX, 2 ** math.ceil(math.log2(max(_N_MIN, m_tail + 1))))))
    return tuple(n_alpha), modes, resolved


def choose_polar_fourier(fns, q_max: float, tol: float, name: str = ""):
    r"""The :class:`PolarFourierRule` for variances up to ``q_max``: sized by :func:`_sizing` (with 10 % headroom
    in $q$), and the coarsest radial step of ``_STEPS`` whose $C$ and $\dot C$ agree with the next finer step's to
    ``tol`` (relative to $\sqrt{Ef(a)^2Ef(b)^2}$) at variances $q\in\{q_{\max}/16,q_{\max}/4,q_{\max}\}$ (equal,
     ratio 1/2) and correlations $\rho\in\{-1,-0.5,0,0.5,0.9,0.99,0.999,1\}$.  Returns ``(rule, error
    estimate)``: the difference found (or, when no step settles, the last one; ``inf`` when the angles cannot
    resolve $\phi(\sqrt{q_{\max}}R\cos\alpha)$ within ``_N_MAX`` nodes)."""
    q_size = 1.1 * float(q_max)
    qs = np.array([q_max / 16.0, q_max / 4.0, q_max])
    q1 = np.concatenate([qs, qs])
    q2 = np.concatenate([qs, 0.5 * qs])
    parity = _parity(fns[0])
    rho = np.array([-1.0, -0.5, 0.0, 0.5, 0.9, 0.99, 0.999, 1.0])

    unresolved = []

    def values(h):
        n_alpha, modes, resolved = _sizing(fns, q_size, h)
        if not resolved:
            unresolved.append(h)
        rule = PolarFourierRule(tuple(fns), h, n_alpha, modes, q_size, name, parity)
        m1, m2 = rule.marginal(q1), rule.marginal(q2)
        vals = rule.from_marginals(m1, m2, rho[:, None] * np.sqrt(q1 * q2)[None, :])
        diag1 = rule.from_marginals(m1, m1, q1)
        diag2 = rule.from_marginals(m2, m2, q2)
        norms = tuple(np.sqrt(np.abs(a * b)) for a, b in zip(diag1, diag2))
        return rule, vals, norms

    prev_rule, prev, _ = values(_STEPS[0])
    err = math.inf
    for h in _STEPS[1:]:
        rule, cur, norms = values(h)
        err = max(float(np.max(np.abs(a - b) / np.maximum(s, 1e-300))) for a, b, s in zip(cur, prev, norms))
        if err <= tol and not unresolved:
            return prev_rule, max(err, 1e-16)
        prev_rule, prev = rule, cur
    return prev_rule, (math.inf if unresolved else err)
