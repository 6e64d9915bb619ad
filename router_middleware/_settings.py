"""Deployment settings: environment variables, a ``.env`` file and a config file, as one model.

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

import difflib
import importlib
import json
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic import model_validator as _model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
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

__all__ = [
    "ENV_PREFIX",
    "Origin",
    "ProviderSettings",
    "RouterSettings",
    "env_reference",
    "env_var",
    "reload_from_settings",
    "router_from_settings",
]

ENV_PREFIX = "LLM_ROUTER_"
_DELIMITER = "__"

Key = tuple[str, ...]


def _norm(name: str) -> str:
    """A provider name as a variable name can spell it."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower())


def env_var(path: Iterable[str | int]) -> str:
    """The variable that sets the field at ``path``.

    Example:
        >>> env_var(["providers", "openai-eu", "priority"])
        'LLM_ROUTER_PROVIDERS__OPENAI_EU__PRIORITY'
    """
    return ENV_PREFIX + _DELIMITER.join(_norm(str(p)).upper() for p in path)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a setting came from.

    ``source`` is ``init``, ``env``, ``.env``, ``json``, ``file`` or ``default``;
    ``detail`` names the variable or the file.

    Example:
        >>> str(Origin("env", "LLM_ROUTER_STRATEGY")), str(Origin("default"))
        ('env LLM_ROUTER_STRATEGY', 'default')
    """

    source: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.source} {self.detail}" if self.detail else self.source


_DEFAULT = Origin("default")


class _FieldProblem(ValueError):
    """A model-level check that blames one field, so the message can name its origin."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


# -- the schema, walked generically ----------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, list[Any], bool]:
    """``(type, constraints, optional)`` with ``Annotated`` and ``| None`` taken off."""
    constraints: list[Any] = []
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *meta = get_args(annotation)
            for m in meta:
                constraints.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, constraints, optional
            annotation = args[0]
        else:
            return annotation, constraints, optional


def _submodel(annotation: Any) -> type[BaseModel] | None:
    inner = _unwrap(annotation)[0]
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _annotation_at(model: type[BaseModel], path: Iterable[str]) -> Any:
    """The annotation at ``path`` (``"*"`` or anything for a dict key or list index)."""
    annotation: Any = model
    for key in path:
        sub = _submodel(annotation)
        if sub is not None:
            field = sub.model_fields.get(key)
            if field is None:
                return None
            annotation = field.annotation
            continue
        inner = _unwrap(annotation)[0]
        if get_origin(inner) in (dict, list):
            annotation = get_args(inner)[-1]
        else:
            return None
    return annotation


def _is_complex(annotation: Any) -> bool:
    inner = _unwrap(annotation)[0]
    return _submodel(inner) is not None or get_origin(inner) in (dict, list, tuple, set)


def _seed_translate(model: type[BaseModel], data: Any) -> Any:
    """Run ``model``'s before-validators: the seed's keys and units become ours."""
    for decorator in model.__pydantic_decorators__.model_validators.values():
        if decorator.info.mode == "before":
            data = decorator.func(data)
    return data


def _canonical(model: type[BaseModel], data: Any) -> Any:
    """``data`` in our key names at every level, so layers merge field by field."""
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = {}
    for key, value in _seed_translate(model, data).items():
        field = model.model_fields.get(key)
        sub = _submodel(field.annotation) if field is not None else None
        inner = _submodel(_annotation_at(model, (key, "*"))) if field is not None else None
        if sub is not None:
            out[key] = _canonical(sub, value)
        elif inner is not None and isinstance(value, Mapping):
            out[key] = {k: _canonical(inner, v) for k, v in value.items()}
        elif inner is not None and isinstance(value, list):
            out[key] = [_canonical(inner, v) for v in value]
        else:
            out[key] = value
    return out


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
        return _seed_translate(ProviderConfig, data)

    @_model_validator(mode="after")
    def _unique_models(self) -> ProviderSettings:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _FieldProblem("models", f"model(s) listed twice: {', '.join(dupes)}")
        return self


_RESOLVED: ContextVar[_Resolution | None] = ContextVar("router_settings", default=None)


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
        env_nested_delimiter=_DELIMITER,
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
    config_file: Path | None = Field(
        None, exclude=True, description="A TOML, JSON or YAML file of settings."
    )
    config_json: str | None = Field(
        None, exclude=True, repr=False, description="A whole configuration as one JSON document."
    )

    _origins: dict[Key, Origin] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        token = _RESOLVED.set(None)
        try:
            try:
                super().__init__(**values)
            except ValidationError as exc:
                found = _RESOLVED.get() or _Resolution()
                raise ConfigurationError(found.problems + _describe(exc, found.origins)) from None
            found = _RESOLVED.get() or _Resolution()
            if found.problems:
                raise ConfigurationError(found.problems)
        finally:
            _RESOLVED.reset(token)
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
        return (_LayeredSource(settings_cls, init_settings, env_settings, dotenv_settings),)

    @_model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        data = _seed_translate(RouterConfig, data)
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
            raise _FieldProblem(
                "default_model", f"{model!r} is served by no provider (served: {', '.join(served)})"
            )
        return self

    def origin(self, path: str | Iterable[str | int]) -> Origin:
        """Where the value at ``path`` (``"providers.openai.priority"``) came from."""
        key = tuple(path.split(".")) if isinstance(path, str) else tuple(str(p) for p in path)
        return _lookup(self._origins, key) or _DEFAULT

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


# -- the layers ------------------------------------------------------------------------------


class _Resolution:
    __slots__ = ("origins", "problems")

    def __init__(self) -> None:
        self.origins: dict[Key, Origin] = {}
        self.problems: list[str] = []


Layer = tuple[dict[str, Any], Callable[[Key], Origin]]


class _LayeredSource(PydanticBaseSettingsSource):
    """Reads every layer, lowest precedence first, and merges them into one input."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: PydanticBaseSettingsSource,
        env: PydanticBaseSettingsSource,
        dotenv: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._init: dict[str, Any] = dict(getattr(init, "init_kwargs", {}))
        self._env: Mapping[str, str | None] = getattr(env, "env_vars", {})
        self._dotenv: Mapping[str, str | None] = getattr(dotenv, "env_vars", {})

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every layer at once

    def __call__(self) -> dict[str, Any]:
        found = _Resolution()
        _RESOLVED.set(found)
        model, problems = self.settings_cls, found.problems
        init: Layer = (self._init, lambda _: Origin("init"))
        env = _variables(model, self._env, "env", problems)
        dotenv = _variables(model, self._dotenv, ".env", problems)

        def meta(name: str) -> Any:
            return next((d[name] for d, _ in (init, env, dotenv) if d.get(name) is not None), None)

        documents = []
        if (path := meta("config_file")) is not None:
            where = f"{env_var(['config_file'])}={path}"
            doc = _read_file(Path(path), where, problems)
            documents.append(_document(model, doc, Origin("file", str(path)), problems))
        if (text := meta("config_json")) is not None:
            doc = _parse_json(str(text), env_var(["config_json"]), problems)
            documents.append(
                _document(model, doc, Origin("json", env_var(["config_json"])), problems)
            )
        merged: dict[str, Any] = {}
        for data, origin_of in (*documents, dotenv, env, init):
            _merge(merged, data, origin_of, found.origins)
        return merged


def _variables(
    model: type[BaseModel], variables: Mapping[str, str | None], source: str, problems: list[str]
) -> Layer:
    data: dict[str, Any] = {}
    names: dict[Key, str] = {}
    prefix = ENV_PREFIX.lower()
    found = [
        (tuple(k.lower()[len(prefix) :].split(_DELIMITER)), k.upper(), v)
        for k, v in variables.items()
        if k.lower().startswith(prefix) and v is not None
    ]
    # Sections before fields: a JSON value for a section, then single fields on top of it.
    for path, var, raw in sorted(found, key=lambda item: (len(item[0]), item[0])):
        if path[0] not in model.model_fields or "" in path:
            close = difflib.get_close_matches(path[0], list(model.model_fields), 1)
            hint = f"; did you mean {env_var([close[0]])}?" if close else ""
            problems.append(f"{var}: unknown setting{hint} [{source}]")
            continue
        target = _annotation_at(model, path)
        value: Any = raw
        if _unwrap(target)[2] and raw.strip().lower() in ("", "none", "null"):
            value = None
        elif _is_complex(target):
            known = len(problems)
            value = _parse_json(raw, var, problems)
            if len(problems) > known:
                continue
        piece: Any = value
        for key in reversed(path):
            piece = {key: piece}
        try:
            piece = _canonical(model, piece)
        except ValueError as exc:
            problems.append(f"{var}: {exc} [{source}]")
            continue
        _merge(data, piece, lambda _: _DEFAULT, {})
        names[tuple(_norm(p) for p in path)] = var

    def origin_of(path: Key) -> Origin:
        found = _longest(names, tuple(_norm(p) for p in path))
        return Origin(source, names[found] if found else "")

    return data, origin_of


def _parse_json(text: str, where: str, problems: list[str]) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # its message quotes no input, only a position
        problems.append(
            f"{where}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        )
        return None


def _read_file(path: Path, where: str, problems: list[str]) -> Any:
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(f"{where}: cannot read the file ({exc.strerror or type(exc).__name__})")
        return None
    if suffix == ".json":
        return _parse_json(raw.decode("utf-8"), where, problems)
    if suffix == ".toml":
        # The standard library reads TOML from 3.11; before, the optional tomli does.
        name = "tomllib" if sys.version_info >= (3, 11) else "tomli"
        toml = _optional_module(name, where, problems)
        if toml is None:
            return None
        try:
            return toml.loads(raw.decode("utf-8"))
        except toml.TOMLDecodeError as exc:  # its message gives a position, no input
            problems.append(f"{where}: malformed TOML ({exc})")
            return None
    if suffix in (".yaml", ".yml"):
        yaml = _optional_module("yaml", where, problems)
        if yaml is None:
            return None
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            # Its str() quotes the offending line, which may hold a secret: keep the position.
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problems.append(
                f"{where}: malformed YAML ({getattr(exc, 'problem', None) or 'syntax'}{at})"
            )
            return None
    problems.append(
        f"{where}: unsupported file type {suffix or '(none)'}; use .toml, .json or .yaml"
    )
    return None


def _optional_module(name: str, where: str, problems: list[str]) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        package = {"yaml": "pyyaml"}.get(name, name)
        problems.append(f"{where}: reading this file needs `pip install {package}`")
        return None


def _document(model: type[BaseModel], doc: Any, origin: Origin, problems: list[str]) -> Layer:
    data: dict[str, Any] = {}
    if isinstance(doc, Mapping):
        try:
            data = _canonical(model, doc)
        except ValueError as exc:
            problems.append(f"{origin.detail}: {exc}")
    elif doc is not None:
        problems.append(
            f"{origin.detail}: expected a mapping of settings, got {type(doc).__name__}"
        )
    return data, lambda _: origin


def _providers_by_name(value: Any) -> Any:
    """Key the seed's ``providers`` list by name; reject names that collide."""
    if isinstance(value, list):
        keyed: dict[str, Any] = {}
        for i, entry in enumerate(value):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise _FieldProblem("providers", f"providers[{i}] needs a 'name' (a string)")
            name = entry["name"]
            if name in keyed:
                raise _FieldProblem("providers", f"duplicate provider name {name!r}")
            keyed[name] = {k: v for k, v in entry.items() if k not in ("name", "handler")}
        value = keyed
    if isinstance(value, Mapping):
        seen: dict[str, str] = {}
        for name in map(str, value):
            other = seen.setdefault(_norm(name), name)
            if other != name:
                raise _FieldProblem(
                    "providers",
                    f"duplicate provider name: {other!r} and {name!r} are one name to variables",
                )
    return value


def _merge(
    into: dict[str, Any],
    layer: Mapping[str, Any],
    origin_of: Callable[[Key], Origin],
    origins: dict[Key, Origin],
    path: Key = (),
    layer_path: Key = (),
) -> None:
    for key, value in layer.items():
        target = key
        if path == ("providers",) and key not in into:
            same = [k for k in into if _norm(k) == _norm(key)]
            target = same[0] if len(same) == 1 else key
        here, there = (*path, target), (*layer_path, key)
        if isinstance(value, Mapping):
            if not isinstance(into.get(target), dict):
                into[target] = {}
            _merge(into[target], value, origin_of, origins, here, there)
            continue
        into[target] = value
        for old in [p for p in origins if p[: len(here)] == here]:
            del origins[old]
        origins[here] = origin_of(there)


def _longest(known: Mapping[Key, Any], path: Key) -> Key | None:
    return next((path[:n] for n in range(len(path), 0, -1) if path[:n] in known), None)


def _lookup(origins: Mapping[Key, Origin], path: Key) -> Origin | None:
    found = _longest(origins, path)
    return origins[found] if found is not None else None


def _sources_under(origins: Mapping[Key, Origin], path: Key) -> str:
    """The sources of everything set under ``path``, for a section that has none itself."""
    return ", ".join(
        sorted({str(o) for p, o in origins.items() if path and p[: len(path)] == path})
    )


def _describe(exc: ValidationError, origins: Mapping[Key, Origin]) -> list[str]:
    """One line per error: the field, the reason, and where the value came from."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, _FieldProblem):
            loc = (*loc, problem.field)
        origin = _lookup(origins, loc)
        where = f" [{origin}]" if origin is not None else ""
        if origin is None and err["type"] == "missing":  # name what set its section, if any
            near = _sources_under(origins, loc[:-1])
            from_ = f"; {'.'.join(loc[:-1])} is from {near}" if near else ""
            where = f" [set {env_var(loc)}{from_}]"
        lines.append(
            f"{'.'.join(loc) or '(settings)'}: {err['msg'].removeprefix('Value error, ')}{where}"
        )
    return lines


# -- binding settings to code ----------------------------------------------------------------


def _bind(
    runnables: Mapping[str, Any], cfg: RouterConfig, settings: RouterSettings
) -> RouterConfig:
    """Rename configured providers to the runnables' spelling; list every mismatch."""
    spelled = {_norm(n): n for n in runnables}
    renamed = [
        p
        if p.name in runnables
        else p.model_copy(update={"name": spelled.get(_norm(p.name), p.name)})
        for p in cfg.providers
    ]
    configured = {p.name for p in renamed}
    given, origins = ", ".join(runnables) or "none", settings._origins
    problems = [
        f"providers.{p.name}: configured [{_sources_under(origins, ('providers', p.name))}], "
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
        known = {name: p.target for name, p in router.providers.items()}
        known.update(runnables or {})
        wanted = {_norm(p.name) for p in cfg.providers}
        cfg = _bind({n: t for n, t in known.items() if _norm(n) in wanted}, cfg, settings)
    router.apply_config(cfg, runnables)


# -- the variable reference ------------------------------------------------------------------

_HELP = {
    "ModelConfig.name": "The model's name, as requests name it.",
    "ModelConfig.cost_per_1k_input_tokens": "Price of 1,000 input tokens.",
    "ModelConfig.cost_per_1k_output_tokens": "Price of 1,000 output tokens.",
    "ModelConfig.max_tokens": "The model's token limit (informational).",
    "RateLimitConfig.requests_per_second": "Token-bucket refill rate; none for no rate limit.",
    "RateLimitConfig.burst": "Bucket size; by default one second's worth of requests.",
    "RateLimitConfig.max_concurrent": "Calls in flight at once; none for no cap.",
    "RetryConfig.enabled": "Whether to retry on the same provider at all.",
    "RetryConfig.attempts": "Tries on one provider, the first included (1: no retry).",
    "RetryConfig.initial_backoff_seconds": "Wait before the first retry.",
    "RetryConfig.max_backoff_seconds": "Cap on any wait between two tries.",
    "RetryConfig.multiplier": "Growth of the wait from one retry to the next.",
    "RetryConfig.jitter": "Draw each wait between 0 and its value (full jitter).",
    "CircuitBreakerConfig.enabled": "Whether failures can open the breaker.",
    "CircuitBreakerConfig.threshold": "Failures within the sampling window that open it.",
    "CircuitBreakerConfig.sampling_duration_seconds": "The window failures are counted in.",
    "CircuitBreakerConfig.reset_timeout_seconds": "How long it stays open before a probe.",
    "CircuitBreakerConfig.half_open_max_calls": "Probe calls let through at once when half-open.",
    "CircuitBreakerConfig.failure_rate_threshold": "Also open at this failure share (0-1).",
    "CircuitBreakerConfig.minimum_calls": "Calls needed in the window before the rate counts.",
    "TimeoutConfig.attempt_seconds": "Limit on one whole call; none for no limit.",
    "TimeoutConfig.first_token_seconds": "Limit on the wait for a stream's first chunk.",
    "TimeoutConfig.idle_seconds": "Limit on silence between two chunks of a stream.",
}

_REFERENCE_HEAD = """\
# Environment variables

Generated from `RouterSettings` by `llm-router config reference`: do not edit by hand.

Precedence, highest first: environment variables, the `.env` file in the working
directory, the document in `LLM_ROUTER_CONFIG_JSON`, the file named by
`LLM_ROUTER_CONFIG_FILE`, then the defaults below. Both documents may use the seed
library's shape (camelCase keys, milliseconds, a `providers` list).

- A variable is `LLM_ROUTER_` plus the field path joined by `__`, in any case.
- A section can also be set at once as JSON: `LLM_ROUTER_RETRY='{"attempts": 5}'`;
  single-field variables override it.
- `<NAME>` is a provider's name, lower-cased, every other character run written `_`:
  `LLM_ROUTER_PROVIDERS__OPENAI_EU__PRIORITY` sets provider `OpenAI-EU` of the config
  file. A provider known only from variables is named by its lower-cased key.
- Optional values take `none` to unset them, e.g. `LLM_ROUTER_DEADLINE_SECONDS=none`.
- Unknown variables with the `LLM_ROUTER_` prefix are errors, not silently ignored.

| Variable | Type | Default | Meaning |
|---|---|---|---|
"""


def env_reference(settings_cls: type[BaseSettings] = RouterSettings) -> str:
    """The Markdown reference of every variable, as in ``docs/ENV.md``."""
    sections = {
        sub: env_var([name])
        for name, field in settings_cls.model_fields.items()
        if (sub := _submodel(field.annotation)) is not None and not _unwrap(field.annotation)[2]
    }
    rows = [f"| `{v}` | {t} | {d} | {h} |" for v, t, d, h in _rows(settings_cls, (), sections)]
    return _REFERENCE_HEAD + "\n".join(rows) + "\n"


def _rows(
    model: type[BaseModel], path: Key, sections: dict[type, str]
) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        here = (*path, name)
        var = ENV_PREFIX + _DELIMITER.join(here).upper()
        text = field.description or _HELP.get(f"{model.__name__}.{name}")
        if text is None:
            raise ValueError(f"{model.__name__}.{name} needs a description for the reference")
        sub = _submodel(field.annotation)
        inner = _submodel(_annotation_at(model, (name, "*")))
        if sub is not None and _unwrap(field.annotation)[2] and sub in sections:
            yield f"{var}__*", "section", "router-wide", f"{text} Fields as `{sections[sub]}__*`."
        elif sub is not None:
            yield from _rows(sub, here, sections)
        elif inner is not None and get_origin(_unwrap(field.annotation)[0]) is dict:
            yield from _rows(inner, (*here, "<NAME>"), sections)
        elif inner is not None:
            keys = ", ".join(f"`{k}`" for k in inner.model_fields)
            yield var, "JSON list", _default(field), f"{text} Each item has {keys}."
        else:
            yield var, _type(field), _default(field), text


def _type(field: FieldInfo) -> str:
    kind, constraints, optional = _unwrap(field.annotation)
    if get_origin(kind) is Literal:
        text = " \\| ".join(f"`{a}`" for a in get_args(kind))
    else:
        names = {bool: "bool", int: "integer", float: "number", str: "text", Path: "path"}
        text = (
            "secret" if kind is SecretStr else names.get(kind, getattr(kind, "__name__", str(kind)))
        )
    for c in [*field.metadata, *constraints]:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(c, attr, None) is not None:
                text += f" {sign} {getattr(c, attr)}"
    return text + (" or `none`" if optional else "")


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value != {} else "none"
