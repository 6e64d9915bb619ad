"""The Markdown reference of every ``LLM_ROUTER_*`` variable, generated from the models.

``llm-router config reference`` prints it and ``docs/ENV.md`` holds it. The text of
each row is the field's description on the config models (``_config``), the one place
it is written; a field without one fails the generation, so the reference cannot fall
behind the models.

Example:
    >>> "| `LLM_ROUTER_RETRY__ATTEMPTS` | integer >= 1 <= 10,000 | `3` |" in env_reference()
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from ._model import RouterSettings
from ._schema import DELIMITER, ENV_PREFIX, Key, annotation_at, env_var, submodel, unwrap

__all__ = ["env_reference"]

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
- Optional values take `none` to unset them: `LLM_ROUTER_DEADLINE_SECONDS=none` means
  no deadline. An empty variable is an error, not a way to unset one.
- Numbers are bounded so the arithmetic on them stays finite: times from 0.001 s (or 0
  for waits) to 10,000,000 s, counts up to the limits below. `true`/`false` are not numbers.
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
        text = field.description
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
    for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        for c in [*constraints, *field.metadata]:
            if (bound := getattr(c, attr, None)) is not None:
                text += f" {sign} {bound:,}"
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
