"""The settings models: :class:`RouterSettings` and :class:`ProviderSettings`.

Their fields are those of :class:`RouterConfig` and :class:`ProviderConfig`, inherited
from the same field classes (``RouterFields``, ``ProviderFields``), so each type,
default and description is written once, in ``_config``. Only the shape differs:
providers are keyed by name, and two fields say where more settings are.

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
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, ValidationError
from pydantic import model_validator as _model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .._config import (
    FieldProblem,
    ProviderConfig,
    ProviderFields,
    RouterConfig,
    RouterFields,
    format_validation_error,
    unserved_default,
)
from .._errors import ConfigurationError
from ._origin import DEFAULT_ORIGIN, Origin, describe_errors, lookup_origin
from ._schema import DELIMITER, ENV_PREFIX, Key, descend, normalize_name, seed_translate
from ._sources import RESOLVED, LayeredSource, Resolution

__all__ = ["ProviderSettings", "RouterSettings"]


class ProviderSettings(ProviderFields):
    """One provider's settings: :class:`ProviderConfig` without the name, which is its key.

    Example:
        >>> ProviderSettings.model_validate(
        ...     {"models": [{"name": "m"}], "rateLimit": {"tokensPerSecond": 5}}
        ... ).rate_limit.requests_per_second
        5.0
    """


class RouterSettings(BaseSettings, RouterFields):
    """The router's configuration as a deployment provides it.

    Sources, highest precedence first: keyword arguments, environment variables, the
    ``.env`` file, the document in ``LLM_ROUTER_CONFIG_JSON``, the file named by
    ``LLM_ROUTER_CONFIG_FILE`` (TOML, JSON or YAML), then defaults. A variable is
    ``LLM_ROUTER_`` plus the field path joined by ``__``, in any case; a provider key in
    one matches the configured provider whose name is equal once lower-cased with every
    run of other characters read as ``_``. Construction raises
    :class:`ConfigurationError` listing every problem, each naming the field and where
    its value came from, never the value itself.

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

    providers: dict[str, ProviderSettings] = Field(
        default_factory=dict, description="The providers, keyed by name."
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
                    found.problems + describe_errors(exc, found.origins, type(self))
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

    @_model_validator(mode="after")
    def _default_model_served(self) -> RouterSettings:
        unserved_default(self.default_model, (m for p in self.providers.values() for m in p.models))
        return self

    def origin(self, path: str | Iterable[str | int]) -> Origin:
        """Where the value at ``path`` (``"providers.openai.priority"``) came from."""
        key = tuple(path.split(".")) if isinstance(path, str) else tuple(str(p) for p in path)
        return lookup_origin(self._origins, key) or DEFAULT_ORIGIN

    def shown(self) -> dict[str, Any]:
        """The settings as JSON data fit to print: secrets masked, ``repr=False`` fields left out.

        Example:
            >>> "config_json" in RouterSettings(_env_file=None).shown()
            False
        """
        shown: dict[str, Any] = _visible(type(self), self.model_dump(mode="json"))
        return shown

    def explain(self) -> Iterator[tuple[str, Any, Origin]]:
        """Every effective value as ``(dotted path, value, origin)``, as :meth:`shown` has it."""
        yield from _leaves(self.shown(), (), self.origin)
        if self.config_file is not None:  # excluded from dumps, but worth showing
            yield "config_file", str(self.config_file), self.origin("config_file")

    def to_router_config(self) -> RouterConfig:
        """The :class:`RouterConfig` these settings describe: a field-by-field mapping."""
        fields = {f: getattr(self, f) for f in RouterFields.model_fields}
        providers = [
            ProviderConfig(name=name, **{f: getattr(p, f) for f in ProviderFields.model_fields})
            for name, p in self.providers.items()
        ]
        try:
            return RouterConfig(providers=providers, **fields)
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc)) from None


def _visible(model: type[BaseModel], data: Any) -> Any:
    """``data`` without the fields ``model`` keeps out of its repr, at every level."""
    if not isinstance(data, dict):
        return data
    return {
        key: descend(model, key, value, _visible)
        for key, value in data.items()
        if (field := model.model_fields.get(key)) is not None and field.repr
    }


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
                raise FieldProblem("providers", f"item {i} needs a 'name' (a string)")
            name = entry["name"]
            if name in keyed:
                first = list(keyed).index(name)
                raise FieldProblem("providers", f"items {first} and {i} have the same name")
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
