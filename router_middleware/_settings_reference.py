"""The Markdown reference of every ``LLM_ROUTER_*`` variable, generated from the models.

``llm-router config reference`` prints it and ``docs/ENV.md`` holds it; a field without
a description (its own or one from :data:`_HELP`) fails the generation, so the
reference cannot fall behind the models.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from ._settings import RouterSettings
from ._settings_schema import DELIMITER, ENV_PREFIX, Key, annotation_at, env_var, submodel, unwrap

__all__ = ["env_reference"]

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
        if (sub := submodel(field.annotation)) is not None and not unwrap(field.annotation)[2]
    }
    rows = [f"| `{v}` | {t} | {d} | {h} |" for v, t, d, h in _rows(settings_cls, (), sections)]
    return _REFERENCE_HEAD + "\n".join(rows) + "\n"


def _rows(
    model: type[BaseModel], path: Key, sections: dict[type, str]
) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        here = (*path, name)
        var = ENV_PREFIX + DELIMITER.join(here).upper()
        text = field.description or _HELP.get(f"{model.__name__}.{name}")
        if text is None:
            raise ValueError(f"{model.__name__}.{name} needs a description for the reference")
        sub = submodel(field.annotation)
        inner = submodel(annotation_at(model, (name, "*")))
        if sub is not None and unwrap(field.annotation)[2] and sub in sections:
            yield f"{var}__*", "section", "router-wide", f"{text} Fields as `{sections[sub]}__*`."
        elif sub is not None:
            yield from _rows(sub, here, sections)
        elif inner is not None and get_origin(unwrap(field.annotation)[0]) is dict:
            yield from _rows(inner, (*here, "<NAME>"), sections)
        elif inner is not None:
            keys = ", ".join(f"`{k}`" for k in inner.model_fields)
            yield var, "JSON list", _default(field), f"{text} Each item has {keys}."
        else:
            yield var, _type(field), _default(field), text


def _type(field: FieldInfo) -> str:
    kind, constraints, optional = unwrap(field.annotation)
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
