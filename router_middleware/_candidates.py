"""Which of a model's providers may serve one request, and which goes first.

Selection starts from the enabled providers that serve the model (cached per model by
the pipeline); these narrow it per request: the providers the request's routing controls
rule out (by name or tag), a derived router's providers that cannot take its tools or
schema, and providers whose config says they take no images when the input has one, are
left out with the reason (shown when no candidate is left); and in a tool loop, the
provider that made the pending tool calls goes first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._context import RequestContext
from ._errors import NoProviderAvailableError, NoProviderForModelError
from ._provider import Provider

__all__ = ["capable", "preferring", "routed", "serving"]


def serving(providers: Mapping[str, Provider], model: str | None) -> list[Provider]:
    """The enabled providers serving ``model`` (any enabled provider when ``None``)."""
    found = [p for p in providers.values() if p.enabled and (model is None or p.serves(model))]
    if not found:
        served = sorted({m for p in providers.values() if p.enabled for m in p.models})
        raise NoProviderForModelError(model, served)
    return found


def routed(
    candidates: list[Provider], ctx: RequestContext, providers: Mapping[str, Provider]
) -> list[Provider]:
    """The candidates the request's routing controls allow (``ctx.routing`` is set).

    ``providers`` are all the router's, disabled ones included: a name the request gives
    must be one of them.
    """
    routing = ctx.routing
    assert routing is not None
    routing.check(providers)
    reasons: dict[str, str] = {}
    allowed = []
    for p in candidates:
        why = routing.refusal(p.name, p.config.tags)
        if why is None:
            allowed.append(p)
        else:
            reasons[p.name] = why
    if not allowed:
        # A provider the request allows by name may be no candidate at all: say why.
        for name in routing.only or ():
            if name not in reasons:
                p = providers[name]
                reasons[name] = (
                    "disabled" if not p.enabled else f"does not serve model {ctx.model!r}"
                )
        raise NoProviderAvailableError(ctx.model, reasons)
    return allowed


def capable(
    candidates: list[Provider], ctx: RequestContext, blind: frozenset[str]
) -> list[Provider]:
    """The candidates that can take this request: its tools or schema, its images."""
    unsupported = ctx.unsupported or {}
    images = bool(blind) and ctx.has_images()
    reasons: dict[str, str] = {}
    able = []
    for p in candidates:
        why = unsupported.get(p.name, {}).get(ctx.model or p.models[0])
        if why is None and images and p.name in blind:
            why = "its config says it takes no image input"
        if why is None:
            able.append(p)
        else:
            reasons[p.name] = why
    if not able:
        raise NoProviderAvailableError(ctx.model, reasons)
    return able


def preferring(order: Iterable[Provider], name: str) -> list[Provider]:
    """``order`` with provider ``name`` first, if it is there."""
    ordered = list(order)
    for i, p in enumerate(ordered):
        if p.name == name:
            ordered.insert(0, ordered.pop(i))
            break
    return ordered
