"""Deployment settings: environment variables, a ``.env`` file and a config file, as one model.

This module holds the models and binds them to routers (:func:`router_from_settings`,
:func:`reload_from_settings`). Reading the layers is ``_settings_sources``; origins and
the error messages that name them, ``_settings_origin``; variable names and the schema
walk, ``_settings_schema``; the variable reference, ``_settings_reference``.

Sources, highest precedence first: keyword arguments, environment variables, the
``.env`` file, the document in ``LLM_ROUTER_CONFIG_JSON``, the file named by
``LLM_ROUTER_CONFIG_FILE`` (TOML, JSON or YAML), then defaults. Documents may use the
seed library's shape (camelCase, milliseconds, a ``providers`` list). A variable is
``LLM_ROUTER_`` plus the field path joined by ``__``. Variable names are
case-insensitive, so a provider key in one matches the configured provider whose name
is equal once lower-cased with every run of other characters read as ``_``
(``LLM_ROUTER_PROVIDERS__OPENAI_EU__PRIORITY`` sets provider ``OpenAI-EU``); a provider
known only from variables is named by its lower-cased key.

Example:
    >>> import os
    >>> env = {"LLM_ROUTER_PROVIDERS__LOCAL__MODELS": '[{"name": "llama3"}]',
    ...        "LLM_ROUTER_RETRY__ATTEMPTS": "2"}
    >>> os.environ.update(env)
    >>> settings = RouterSettings(_env_file=None)
    >>> settings.to_router_config().providers[0].name, settings.retry.attempts
    ('local', 2)
    >>> str(settings.origin("retry.attempts"))
    'env LLM_ROUTER_RETRY__ATTEMPTS'
    >>> for name in env:
    ...     del os.environ[name]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)
from pydantic import model_validator as _model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ._config import (
    CircuitBreakerConfig,
    ModelConfig,
    ProviderConfig,
    RateLimitConfig,
    RetryConfig,
    RouterConfig,
    TimeoutConfig,
    format_validation_error,
)
from ._errors import ConfigurationError
from ._router import ResilientRouter
from ._settings_origin import (
    DEFAULT_ORIGIN,
    FieldProblem,
    Origin,
    describe_errors,
    lookup_origin,
    sources_under,
)
from ._settings_schema import DELIMITER, ENV_PREFIX, Key, env_var, normalize_name, seed_translate
from ._settings_sources import RESOLVED, LayeredSource, Resolution

__all__ = [
    "ProviderSettings",
    "RouterSettings",
    "reload_from_settings",
    "router_from_settings",
]


# -- the models ------------------------------------------------------------------------------


class ProviderSettings(BaseModel):
    """One provider's settings: :class:`ProviderConfig` without the name, which is its key.

    Example:
        >>> ProviderSettings.model_validate(
        ...     {"models": [{"name": "m"}], "rateLimit": {"tokensPerSecond": 5}}
        ... ).rate_limit.requests_per_second
        5.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    type: Literal["openai", "anthropic", "google", "ollama", "custom"] = Field(
        "custom", description="The provider's kind (informational, as in the seed)."
    )
    enabled: bool = Field(True, description="Whether the provider takes requests.")
    priority: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        1, description="Lower is preferred."
    )
    models: Annotated[list[ModelConfig], Field(min_length=1)] = Field(
        description="The models it serves, as a JSON list."
    )
    rate_limit: RateLimitConfig = Field(RateLimitConfig(), description="Admission limits.")
    retry: RetryConfig | None = Field(None, description="Overrides the router-wide retry.")
    circuit_breaker: CircuitBreakerConfig | None = Field(
        None, description="Overrides the router-wide circuit breaker."
    )
    timeouts: TimeoutConfig | None = Field(None, description="Overrides the router-wide timeouts.")

    @_model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        return seed_translate(ProviderConfig, data)

    @_model_validator(mode="after")
    def _unique_models(self) -> ProviderSettings:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FieldProblem("models", f"model(s) listed twice: {', '.join(dupes)}")
        return self


class RouterSettings(BaseSettings):
    """The router's configuration as a deployment provides it (see the module docstring).

    Field names and units are those of :class:`RouterConfig`; providers are keyed by
    name. Construction raises :class:`ConfigurationError` listing every problem, each
    naming the field and where its value came from, never the value itself.

    Example:
        >>> settings = RouterSettings(
        ...     strategy="cost_priority_round_robin",
        ...     providers={"a": {"models": [{"name": "m"}]}}, _env_file=None,
        ... )
        >>> settings.to_router_config().strategy, str(settings.origin("strategy"))
        ('cost_priority_round_robin', 'init')
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    strategy: str = Field(
        "round_robin",
        description="How providers are ordered: `round_robin` or `cost_priority_round_robin`.",
    )
    default_model: str | None = Field(
        None, description="The model of requests that name none; some provider must serve it."
    )
    providers: dict[str, ProviderSettings] = Field(
        default_factory=dict, description="The providers, keyed by name."
    )
    retry: RetryConfig = Field(RetryConfig(), description="Retries on one provider.")
    circuit_breaker: CircuitBreakerConfig = Field(
        CircuitBreakerConfig(), description="When a failing provider leaves rotation."
    )
    timeouts: TimeoutConfig = Field(TimeoutConfig(), description="Per-attempt time limits.")
    max_wait_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        5.0, description="How long a request may wait for a provider with free capacity."
    )
    deadline_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        120.0, description="Limit on one request end to end, retries included."
    )
    max_attempts: Annotated[int, Field(ge=1)] = Field(
        10, description="The most provider calls one request may make."
    )
    max_cooldown_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        300.0, description="Cap on how long one Retry-After keeps a provider cooling down."
    )
    config_file: Path | None = Field(
        None, exclude=True, description="A TOML, JSON or YAML file of settings."
    )
    config_json: str | None = Field(
        None, exclude=True, repr=False, description="A whole configuration as one JSON document."
    )

    _origins: dict[Key, Origin] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        token = RESOLVED.set(None)
        try:
            try:
                super().__init__(**values)
            except ValidationError as exc:
                found = RESOLVED.get() or Resolution()
                raise ConfigurationError(
                    found.problems + describe_errors(exc, found.origins)
                ) from None
            found = RESOLVED.get() or Resolution()
            if found.problems:
                raise ConfigurationError(found.problems)
        finally:
            RESOLVED.reset(token)
        self._origins = found.origins

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # One source merges every layer, so provider names match across layers and each
        # value's origin is known; pydantic's own sources only supply the raw variables.
        return (LayeredSource(settings_cls, init_settings, env_settings, dotenv_settings),)

    @_model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        data = seed_translate(RouterConfig, data)
        if isinstance(data, Mapping) and "providers" in data:
            data = {**data, "providers": _providers_by_name(data["providers"])}
        return data

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from ._strategies import strategy_names

        if value not in strategy_names():
            known = ", ".join(strategy_names())
            raise ValueError(f"unknown strategy {value!r}; expected one of {known}")
        return value

    @_model_validator(mode="after")
    def _default_model_served(self) -> RouterSettings:
        model = self.default_model
        served = sorted({m.name for p in self.providers.values() for m in p.models})
        if model is not None and served and model not in served:
            raise FieldProblem(
                "default_model", f"{model!r} is served by no provider (served: {', '.join(served)})"
            )
        return self

    def origin(self, path: str | Iterable[str | int]) -> Origin:
        """Where the value at ``path`` (``"providers.openai.priority"``) came from."""
        key = tuple(path.split(".")) if isinstance(path, str) else tuple(str(p) for p in path)
        return lookup_origin(self._origins, key) or DEFAULT_ORIGIN

    def explain(self) -> Iterator[tuple[str, Any, Origin]]:
        """Every effective value as ``(dotted path, value, origin)``, secrets masked."""
        yield from _leaves(self.model_dump(mode="json"), (), self.origin)
        if self.config_file is not None:  # excluded from dumps, but worth showing
            yield "config_file", str(self.config_file), self.origin("config_file")

    def to_router_config(self) -> RouterConfig:
        """The :class:`RouterConfig` these settings describe: a field-by-field mapping."""
        fields = {f: getattr(self, f) for f in RouterConfig.model_fields if f != "providers"}
        providers = [
            ProviderConfig(name=name, **{f: getattr(p, f) for f in ProviderSettings.model_fields})
            for name, p in self.providers.items()
        ]
        try:
            return RouterConfig(providers=providers, **fields)
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc)) from None


def _leaves(
    value: Any, path: Key, origin: Callable[[Key], Origin]
) -> Iterator[tuple[str, Any, Origin]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, (*path, str(k)), origin)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, str(i)), origin)
    else:
        yield ".".join(path), value, origin(path)


def _providers_by_name(value: Any) -> Any:
    """Key the seed's ``providers`` list by name; reject names that collide."""
    if isinstance(value, list):
        keyed: dict[str, Any] = {}
        for i, entry in enumerate(value):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise FieldProblem("providers", f"providers[{i}] needs a 'name' (a string)")
            name = entry["name"]
            if name in keyed:
                raise FieldProblem("providers", f"duplicate provider name {name!r}")
            keyed[name] = {k: v for k, v in entry.items() if k not in ("name", "handler")}
        value = keyed
    if isinstance(value, Mapping):
        seen: dict[str, str] = {}
        for name in map(str, value):
            other = seen.setdefault(normalize_name(name), name)
            if other != name:
                raise FieldProblem(
                    "providers",
                    f"duplicate provider name: {other!r} and {name!r} are one name to variables",
                )
    return value


# -- binding settings to code ----------------------------------------------------------------


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
    router_class: type[ResilientRouter] = ResilientRouter,
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
