r"""Eager evaluation of the large-$q$ rule (:class:`~kernelcalc.theory.largeq_table.TabulatedRule`) by regime: numpy
covariances in, numpy $(C,\dot C)$ out, each regime by its own compiled function.

The rule has five regimes (module doc of :mod:`kernelcalc.theory.largeq_table`): the moment series where
$\min(q_1,q_2)(1-r^2)\ge V_0$ (``far``), the near tables where moreover $\min(q_1,q_2)\ge Q_{\rm near}$ (``near``),
the near tables plus one cross term where only the larger variance is $\ge Q_{\rm near}$ (``low_mixed`` by the low
cross tables, or ``mixed`` by the trapezoid sum without them), the low tables where $Q_{\rm low}\le\min(q_1,q_2)$ and
$\max(q_1,q_2)<Q_{\rm near}$ (``low``), and the quadrature for the rest (``quad``).  Inside a caller's jit the rule
compiles them all into one block that sorts every covariance to its regime (the rule's ``_block``: a stable argsort,
gathers and a loop per regime, 7-9 us per $(C,\dot C)$ on realistic mixes, about 5 s to compile).  Outside, the
regime of each covariance is known before anything is compiled: :func:`eager_values` computes the same masks in
numpy (:func:`regimes`, the same first-match order), partitions the covariances, and evaluates each regime that
occurs by its own jitted function on chunks of one fixed shape (``_CHUNKS``): only the regimes met are compiled (the
quadrature, rare with the tables on, usually never), each covariance costs its regime's own price, and a chunk is
padded with a covariance of its own regime (the regime functions are only finite inside their masks).  The values
are the block's up to rounding (the same functions on the same covariances).  The regime functions are compiled
without XLA's YNNPACK library fusions (``_COMPILER_OPTIONS``, per function: 30-40 % less CPU per $(C,\dot C)$ in
the table regimes).

The four table regimes (``_PARTS``) are evaluated in two parts: ``locate`` computes every elementwise quantity per
covariance (panel indices, local coordinates, signs and weights: e.g.
:func:`~kernelcalc.theory.largeq_near.near_locate`), here in numpy for all covariances of the regime at once, and
only ``finish`` (Chebyshev recurrences, gathers, contractions, $E[A(a)A(b)]$) is compiled, on the located values
packed into one ``(k, B)`` array per dtype (:func:`_split`).  XLA's CPU backend compiles every fusion as its own
kernel (an MLIR and an LLVM pipeline: 10-20 ms each, most of a compile), and an expensive elementwise value with
several consumers (a divide, a square root) gets a fusion of its own: the located quantities were 10-17 kernels
per regime.  Measured on silu's rule (one process each, all four regimes, tables built): trace 0.46 -> 0.26 s,
lowering 0.27 -> 0.18 s, XLA compile 2.55 -> 1.63 s; the numpy part costs ~0.1-0.2 ms per call and regime and
~0.2 us per covariance, the compiled part is as fast as or faster than the whole was (far 2.1 -> 1.8 us per
$(C,\dot C)$, the others within the noise, near up to ~5 % slower).

Every chunk of every regime of a call is dispatched before any result is waited for (:func:`_dispatch`, then
:func:`_collect`): jax runs a chunk on its own thread while Python slices, pads and dispatches the next, so the
Python work overlaps the evaluation on the second core (measured, chunks of one regime at idle: far 2.40 -> 1.89 us
per $(C,\dot C)$ of wall, near 2.98 -> 2.00, low_mixed 2.69 -> 2.33, low 3.91 -> 3.12; the CPU time unchanged)."""

from __future__ import annotations

import functools

import numpy as np

from .._lazy import jax   # deferred: jax is imported on first use
from .largeq_far import far_finish, far_locate, far_mask
from .largeq_low import low_finish, low_locate, low_mask, low_mixed_finish, low_mixed_locate
from .largeq_near import near_finish, near_locate, near_mask

__all__ = ["regimes", "eager_values"]

#: covariances per compiled call of each regime (one shape each: one compile per regime and rule)
_CHUNKS = {"far": 256, "near": 128, "low_mixed": 256, "mixed": 128, "low": 128, "quad": 64}


#: XLA options of the regime functions (per function: no global jax config).  No YNNPACK library fusions: XLA's CPU
#: backend (jaxlib 0.10) hands the small contractions and reductions of these tables to YNNPACK by default, which costs
#: more than XLA's own loops at these sizes: measured on the covariances of a softplus sigma_w T = 10 kernel, chunks
#: of ``_CHUNKS``, both in one process, CPU time per (C, Cdot): far 2.9 -> 2.7 us, near 6.9 -> 4.1, low_mixed
#: 6.0 -> 3.65, low 6.1 -> 4.1 (values within 5e-16 of the norm), and the compiles ~10 % cheaper
_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def regimes(rule) -> tuple:
    r"""``((name, mask), ...)``: the regimes of ``rule`` in the order of the rule's block (the first whose numpy mask
    ``mask(q1, q2, c)`` holds takes a covariance; ``quad``, the rest, last with mask ``None``)."""
    out = []
    if rule.far:
        out.append(("far", far_mask))
    if rule.near_on:
        out.append(("near", near_mask))
    if rule.low_on:
        out.append(("low_mixed", functools.partial(low_mask, mixed=True)))
    if rule.near_on and not rule.low_on:
        out.append(("mixed", functools.partial(near_mask, mixed=True)))
    if rule.low_on:
        out.append(("low", low_mask))
    out.append(("quad", None))
    return tuple(out)


#: the regimes evaluated in two parts: ``locate`` (every elementwise quantity per covariance, in numpy here) and
#: ``finish`` (the table lookups, compiled); :func:`_split`
_PARTS = {"far": (far_locate, far_finish), "near": (near_locate, near_finish),
          "low_mixed": (low_mixed_locate, low_mixed_finish), "low": (low_locate, low_finish)}


@functools.lru_cache(maxsize=128)
def _compiled(rule, derivative: bool, name: str, layout=None):
    """The jitted function of one regime of ``rule`` (compiled per shape on first use): ``(q1, q2, c) -> (C,)`` or
    ``(C, Cdot)``, or with a ``layout`` (:func:`_split`) the ``finish`` of the regime on the located covariances
    packed as ``layout`` says (one ``(B, k)`` array per dtype)."""
    ds = (False, True) if derivative else (False,)
    asy = rule.asymptote
    jit = functools.partial(jax.jit, compiler_options=_COMPILER_OPTIONS)
    if layout is not None:
        finish = _PARTS[name][1]
        return jit(lambda *packed: finish(asy, ds, _unpack(layout, packed), jax.numpy))
    if name == "mixed":
        return jit(lambda q1, q2, c: rule._mixed(asy, q1, q2, c, ds))
    return jit(lambda q1, q2, c: tuple(rule._one(q1, q2, c, d) for d in ds))


def _split(loc, n: int):
    r"""``(layout, packed)``: the located covariances ``loc`` (a pytree of flat numpy arrays over the ``n``
    covariances) as one ``(k, n)`` array per dtype (a row per leaf), and the (hashable) ``layout`` that
    :func:`_unpack` reads them back with: three arguments per compiled call instead of some thirty."""
    leaves, treedef = jax.tree_util.tree_flatten(loc)
    groups = {}
    for i, a in enumerate(leaves):
        groups.setdefault(np.result_type(a).char, []).append(i)
    where, packed = [None] * len(leaves), []
    for g, (char, idx) in enumerate(groups.items()):
        out = np.empty((len(idx), n), np.int32 if char in np.typecodes["AllInteger"] else char)   # panel indices: int32
        for j, i in enumerate(idx):
            out[j] = leaves[i]
            where[i] = (g, j)
        packed.append(out)
    return (treedef, tuple(where)), packed


def _unpack(layout, packed):
    """The pytree of :func:`_split` from its packed arrays (under jit: rows of the arguments)."""
    treedef, where = layout
    return jax.tree_util.tree_unflatten(treedef, [packed[g][j] for g, j in where])


def _dispatch(fn, args, K: int, where) -> list:
    """The calls ``fn(*args)`` over the columns of ``args`` (arrays of one trailing length, all of one regime) in chunks
    of ``K``, the last one padded with its own first column, as ``[(outputs, where[lo:hi]), ...]``: dispatched, not
    waited for (jax runs them while Python dispatches the next; :func:`_collect` waits)."""
    n = args[0].shape[-1]
    pending = []
    for lo in range(0, n, K):
        hi = min(lo + K, n)
        part = [a[..., lo:hi] for a in args]
        if hi - lo < K:
            part = [np.concatenate([a, np.repeat(a[..., :1], K - a.shape[-1], axis=-1)], axis=-1) for a in part]
        pending.append((fn(*part), where[lo:hi]))
    return pending


def _collect(pending, outs) -> None:
    """``outs[k][where] = outputs[k]`` for the ``(outputs, where)`` of :func:`_dispatch` (the padding dropped)."""
    for got, where in pending:
        for o, g in zip(outs, got):
            o[where] = np.asarray(g)[: where.size]


def eager_values(rule, q1, q2, c, derivative: bool = True) -> tuple:
    r"""$(C,\dot C)$ (or $(C,)$ without ``derivative``) of ``rule`` as numpy arrays for numpy covariances (broadcast),
    each regime by its own compiled function (module doc)."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, c)))
    shape = c.shape
    flat = [a.reshape(-1) for a in (q1, q2, c)]
    n = flat[0].size
    outs = [np.empty(n) for _ in range(2 if derivative else 1)]
    rest = np.ones(n, bool)
    ds = (False, True) if derivative else (False,)
    pending = []
    for name, mask in regimes(rule):
        here = rest if mask is None else mask(*flat, xp=np) & rest
        idx = np.flatnonzero(here)
        if idx.size:
            rest &= ~here
            args = [a[idx] for a in flat]
            if name in _PARTS:
                with np.errstate(all="ignore"):   # as under jit: the branches of a where() not taken may overflow; never read
                    loc = _PARTS[name][0](rule.asymptote, *args, ds, np)
                layout, args = _split(loc, idx.size)
                fn = _compiled(rule, derivative, name, layout)
            else:
                fn = _compiled(rule, derivative, name)
            pending += _dispatch(fn, args, _CHUNKS[name], idx)
        if not rest.any():
            break
    _collect(pending, outs)
    return tuple(o.reshape(shape) for o in outs)
