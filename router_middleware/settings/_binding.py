"""Settings bound to code: a router built, or reloaded, from :class:`RouterSettings`.

Configured providers and the runnables given in code are matched by name, compared
the way variable names compare, and every mismatch is listed at once. The router
class is a parameter (``ResilientRouter`` by default, imported when called), so that
importing the settings never imports the router, which imports them lazily itself.

Example:
    >>> from langchain_core.language_models import FakeListChatModel
    >>> settings = RouterSettings(providers={"Local": {"models": [{"name": "m"}]}},
    ...                           _env_file=None)
    >>> router = router_from_settings({"local": FakeListChatModel(responses=["x"])}, settings)
    >>> list(router.providers), router.invoke("hi", model="m").content
    (['local'], 'x')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._config import RouterConfig
from .._errors import ConfigurationError
from ._model import RouterSettings
from ._origin import sources_under
from ._schema import env_var, normalize_name

if TYPE_CHECKING:
    from .._router import ResilientRouter

__all__ = ["reload_from_settings", "router_from_settings"]


def _bind(
    runnables: Mapping[str, Any], cfg: RouterConfig, settings: RouterSettings
) -> RouterConfig:
    """Rename configured providers to the runnables' spelling; list every mismatch."""
    spelled = {normalize_name(n): n for n in runnables}
    renamed = [
        p
        if p.name in runnables
        else p.model_copy(update={"name": spelled.get(normalize_name(p.name), p.name)})
        for p in cfg.providers
    ]
    configured = {p.name for p in renamed}
    given, origins = ", ".join(runnables) or "none", settings._origins
    problems = [
        f"providers.{p.name}: configured [{sources_under(origins, ('providers', p.name))}], "
        f"but no runnable was given for it (given: {given})"
        for p in renamed
        if p.name not in runnables
    ]
    problems += [
        f"{name!r}: a runnable was given, but no provider {name!r} is configured "
        f"(configured: {', '.join(sorted(configured))}); "
        f"set {env_var(['providers', name, 'models'])}"
        for name in runnables
        if name not in configured
    ]
    if problems:
        raise ConfigurationError(problems)
    return cfg.model_copy(update={"providers": renamed})


def router_from_settings(
    runnables: Mapping[str, Any],
    settings: RouterSettings | None = None,
    *,
    router_class: type[ResilientRouter] | None = None,
    **kwargs: Any,
) -> ResilientRouter:
    """Build a router from settings (read from the environment when ``None``).

    Runnables (or handlers) are matched to configured providers by name, compared the
    way variable names compare; every configured provider needs one and every one needs
    a configured provider. When the settings configure no provider at all, each
    runnable serves the model it names, as with ``ResilientRouter(runnables)``.

    Raises:
        ConfigurationError: listing every problem, each naming the field or variable.
    """
    if router_class is None:
        from .._router import ResilientRouter

        router_class = ResilientRouter
    settings = settings if settings is not None else RouterSettings()
    cfg = settings.to_router_config()
    if cfg.providers:
        cfg = _bind(runnables, cfg, settings)
    return router_class(runnables, cfg, **kwargs)


def reload_from_settings(
    router: ResilientRouter,
    settings: RouterSettings | None = None,
    runnables: Mapping[str, Any] | None = None,
) -> None:
    """Apply new settings to a running router, keeping the state of providers that remain.

    ``runnables`` adds or replaces runnables; the router's current ones stay available.
    Settings that configure no provider keep the router's providers, as
    :func:`router_from_settings` takes them from the code then.
    """
    settings = settings if settings is not None else RouterSettings()
    cfg = settings.to_router_config()
    if not cfg.providers:
        kept = list(router.router_config.providers)
        cfg = RouterConfig.coerce({**cfg.model_dump(exclude={"providers"}), "providers": kept})
    else:
        known = {name: b.target for name, b in router.bindings.items()}
        known.update(runnables or {})
        wanted = {normalize_name(p.name) for p in cfg.providers}
        cfg = _bind({n: t for n, t in known.items() if normalize_name(n) in wanted}, cfg, settings)
    router.apply_config(cfg, runnables)
