"""How settings are addressed: variable names, and the settings schema walked generically.

A variable is ``LLM_ROUTER_`` plus the field path joined by ``__``; a provider name is
spelled as a variable can spell it (:func:`normalize_name`). The schema helpers read
pydantic annotations (``Annotated``, ``| None``, nested models, dicts and lists of
them) so that sources, error messages and the variable reference need no per-field code.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = [
    "DELIMITER",
    "ENV_PREFIX",
    "Key",
    "annotation_at",
    "canonical",
    "close_field",
    "descend",
    "env_var",
    "first_unknown",
    "is_complex",
    "normalize_name",
    "seed_translate",
    "submodel",
    "unwrap",
]

ENV_PREFIX = "LLM_ROUTER_"
DELIMITER = "__"

Key = tuple[str, ...]
"""A field path, as in ``("providers", "openai", "priority")``."""


def normalize_name(name: str) -> str:
    """A provider name as a variable name can spell it."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower())


def env_var(path: Iterable[str | int]) -> str:
    """The variable that sets the field at ``path``.

    Example:
        >>> env_var(["providers", "openai-eu", "priority"])
        'LLM_ROUTER_PROVIDERS__OPENAI_EU__PRIORITY'
    """
    return ENV_PREFIX + DELIMITER.join(normalize_name(str(p)).upper() for p in path)


# -- the schema, walked generically ----------------------------------------------------------


def unwrap(annotation: Any) -> tuple[Any, list[Any], bool]:
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


def submodel(annotation: Any) -> type[BaseModel] | None:
    """The model ``annotation`` names, once unwrapped, if it names one."""
    inner = unwrap(annotation)[0]
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def annotation_at(model: type[BaseModel], path: Iterable[str]) -> Any:
    """The annotation at ``path`` (``"*"`` or anything for a dict key or list index)."""
    annotation: Any = model
    for key in path:
        sub = submodel(annotation)
        if sub is not None:
            field = sub.model_fields.get(key)
            if field is None:
                return None
            annotation = field.annotation
            continue
        inner = unwrap(annotation)[0]
        if get_origin(inner) in (dict, list):
            annotation = get_args(inner)[-1]
        else:
            return None
    return annotation


def first_unknown(model: type[BaseModel], path: Sequence[str]) -> tuple[int, list[str]] | None:
    """Where ``path`` leaves the schema: the first key naming no field, and the fields there.

    Dict keys and list indexes are any key; past a plain value, nothing is a field.

    Example:
        >>> from router_middleware import RouterConfig
        >>> first_unknown(RouterConfig, ["retry", "atempts"])[0]
        1
    """
    annotation: Any = model
    for i, key in enumerate(path):
        sub = submodel(annotation)
        if sub is not None:
            if key not in sub.model_fields:
                return i, list(sub.model_fields)
            annotation = sub.model_fields[key].annotation
            continue
        inner = unwrap(annotation)[0]
        if get_origin(inner) not in (dict, list):
            return i, []
        annotation = get_args(inner)[-1]
    return None


def close_field(model: type[BaseModel], path: Sequence[str]) -> Key | None:
    """The path ``path`` was likely meant as, when a key in it names no field.

    Example:
        >>> from router_middleware import RouterConfig
        >>> close_field(RouterConfig, ["providers", "0", "retry", "atempts"])
        ('providers', '0', 'retry', 'attempts')
    """
    found = first_unknown(model, path)
    if found is None:
        return None
    i, names = found
    close = difflib.get_close_matches(path[i], names, 1)
    return (*path[:i], close[0]) if close else None


def is_complex(annotation: Any) -> bool:
    """Whether a variable for this field holds JSON: a model, dict, list, tuple or set."""
    inner = unwrap(annotation)[0]
    return submodel(inner) is not None or get_origin(inner) in (dict, list, tuple, set)


def seed_translate(model: type[BaseModel], data: Any) -> Any:
    """Run ``model``'s before-validators: the seed's keys and units become ours."""
    for decorator in model.__pydantic_decorators__.model_validators.values():
        if decorator.info.mode == "before":
            data = decorator.func(data)
    return data


def descend(
    model: type[BaseModel], key: str, value: Any, visit: Callable[[type[BaseModel], Any], Any]
) -> Any:
    """``value`` of ``model``'s field ``key``, with ``visit(submodel, part)`` applied to
    every part the schema says is a model: the field itself, or each item of a dict or
    list of models. Unknown keys and plain values come back as they are."""
    field = model.model_fields.get(key)
    if field is None:
        return value
    sub = submodel(field.annotation)
    if sub is not None:
        return visit(sub, value)
    inner = submodel(annotation_at(model, (key, "*")))
    if inner is not None and isinstance(value, Mapping):
        return {k: visit(inner, v) for k, v in value.items()}
    if inner is not None and isinstance(value, list):
        return [visit(inner, v) for v in value]
    return value


def canonical(model: type[BaseModel], data: Any) -> Any:
    """``data`` in our key names at every level, so layers merge field by field."""
    if not isinstance(data, Mapping):
        return data
    return {
        key: descend(model, key, value, canonical)
        for key, value in seed_translate(model, data).items()
    }
