"""Registry hooks of the models added by :mod:`.untied` and :mod:`.deq` (called from :mod:`.models` / :mod:`.ntk`)."""

from __future__ import annotations

from .._validation import KernelcalcInputError, positive, positive_int
from .deq import deq_apply, deq_init
from .untied import untied_apply, untied_init, untied_ntk

__all__ = ["extra_network_kwargs", "extra_describe", "extra_init", "extra_apply", "extra_ntk"]


def extra_network_kwargs(model, *, T, depth, solver_steps, rtol, atol, gradient, max_steps) -> dict:
    """Validated :class:`~kernelcalc.empirical.Network` fields of ``node_untied``, ``resnet_untied``, ``deq``
    (the scales are validated by :func:`~kernelcalc.empirical.models.make_network`)."""
    kw: dict = {}
    if gradient != "discretize":
        raise KernelcalcInputError(f"gradient={gradient!r} does not apply to model={model!r} "
                                   "(exact reverse mode / implicit differentiation)")
    if model == "deq":
        if depth is not None:
            raise KernelcalcInputError("depth does not apply to model='deq' (an equilibrium, no layers)")
        return dict(kw, rtol=1e-10 if rtol is None else positive("rtol", rtol),
                    atol=1e-10 if atol is None else positive("atol", atol),
                    max_steps=positive_int("max_steps", max_steps))
    if rtol is not None or atol is not None:
        raise KernelcalcInputError(f"rtol/atol do not apply to model={model!r} (fixed Euler(-Maruyama) steps)")
    kw["T"] = positive("T", T)
    if model == "resnet_untied":
        if depth is None:
            raise KernelcalcInputError("depth is required for model='resnet_untied'")
        return dict(kw, depth=positive_int("depth", depth))
    if depth is not None:
        raise KernelcalcInputError("depth does not apply to model='node_untied'; solver_steps sets the Euler-Maruyama steps")
    return dict(kw, solver_steps=positive_int("solver_steps", solver_steps))


def extra_describe(net) -> dict:
    out = dict(sigma_w=net.sigma_w, sigma_u=net.sigma_u, sigma_v=net.sigma_v)
    if net.model == "deq":
        return dict(out, sigma_b=net.sigma_b, rtol=net.rtol, atol=net.atol)
    out["T"] = net.T
    return dict(out, depth=net.depth) if net.model == "resnet_untied" else dict(out, solver_steps=net.solver_steps)


def extra_init(key, net, d):
    return deq_init(key, net, d) if net.model == "deq" else untied_init(key, net, d)


def extra_apply(params, x, net):
    return deq_apply(params, x, net) if net.model == "deq" else untied_apply(params, x, net)


def extra_ntk(params, x1, x2, net):
    """Structured NTK of the untied models (the DEQ uses the Jacobian NTK of :mod:`.ntk`)."""
    return untied_ntk(params, x1, x2, net)
