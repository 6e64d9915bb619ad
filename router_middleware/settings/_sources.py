"""The layers of settings, read and merged into one input with each value's origin.

Lowest precedence first: the file named by ``LLM_ROUTER_CONFIG_FILE`` (TOML, JSON or
YAML), the document in ``LLM_ROUTER_CONFIG_JSON``, the ``.env`` file, environment
variables, then keyword arguments. Documents are translated from the seed library's
shape first, so layers merge field by field; provider keys match across layers the way
variable names compare. Problems are collected, never raised, so that one error lists
them all.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from ._origin import DEFAULT_ORIGIN, Origin, longest_prefix
from ._schema import (
    DELIMITER,
    ENV_PREFIX,
    Key,
    annotation_at,
    canonical,
    close_field,
    env_var,
    first_unknown,
    is_complex,
    normalize_name,
    unwrap,
)

__all__ = ["RESOLVED", "LayeredSource", "Resolution"]


class Resolution:
    """What reading the layers found: each value's origin, and every problem."""

    __slots__ = ("origins", "problems")

    def __init__(self) -> None:
        self.origins: dict[Key, Origin] = {}
        self.problems: list[str] = []


# pydantic-settings calls the source from inside the settings' __init__ and keeps only
# the merged input: this hands the rest back to that __init__.
RESOLVED: ContextVar[Resolution | None] = ContextVar("router_settings", default=None)


Layer = tuple[dict[str, Any], Callable[[Key], Origin]]


class LayeredSource(PydanticBaseSettingsSource):
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
        found = Resolution()
        RESOLVED.set(found)
        model, problems = self.settings_cls, found.problems
        init: Layer = (self._init, lambda _: Origin("init"))
        env = _variables(model, self._env, "env", problems)
        dotenv = _variables(model, self._dotenv, ".env", problems)

        def meta(name: str) -> tuple[Any, str, str]:
            """The value of ``name``, the name problems give it, and the source that set it."""
            for data, origin_of in (init, env, dotenv):
                if data.get(name) is not None:
                    origin = origin_of((name,))
                    return data[name], origin.detail or name, origin.source
            return None, "", ""

        # Problems name the variable and its source, never its value: a secret pasted
        # into LLM_ROUTER_CONFIG_FILE must not come back in a "cannot read" message.
        documents = []
        for name, kind in (("config_file", "file"), ("config_json", "json")):
            value, where, source = meta(name)
            if value is None:
                continue
            found_here: list[str] = []
            if kind == "file":
                doc = _read_file(Path(value), where, found_here)
                origin = Origin("file", str(value))
            else:
                doc = _parse_json(str(value), where, found_here)
                origin = Origin("json", env_var([name]))
            documents.append(_document(model, doc, origin, where, found_here))
            problems.extend(f"{p} [{source}]" for p in found_here)
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
        (tuple(k.lower()[len(prefix) :].split(DELIMITER)), k.upper(), v)
        for k, v in variables.items()
        if k.lower().startswith(prefix) and v is not None
    ]
    # Sections before fields: a JSON value for a section, then single fields on top of it.
    for path, var, raw in sorted(found, key=lambda item: (len(item[0]), item[0])):
        if "" in path or first_unknown(model, path) is not None:
            close = None if "" in path else close_field(model, path)
            hint = f"; did you mean {env_var(close)}?" if close else ""
            problems.append(f"{var}: unknown setting{hint} [{source}]")
            continue
        target = annotation_at(model, path)
        optional = unwrap(target)[2]
        value: Any = raw
        if not raw.strip():
            # An empty variable is more often a slip than a wish to unset: say how to.
            how = "`none` to turn it off, " if optional else ""
            problems.append(
                f"{var}: empty; give a value, {how}or remove the variable for the default"
                f" [{source}]"
            )
            continue
        if optional and raw.strip().lower() in ("none", "null"):
            value = None
        elif is_complex(target):
            known = len(problems)
            value = _parse_json(raw, var, problems)
            if len(problems) > known:
                continue
        piece: Any = value
        for key in reversed(path):
            piece = {key: piece}
        try:
            piece = canonical(model, piece)
        except ValueError as exc:
            problems.append(f"{var}: {exc} [{source}]")
            continue
        _merge(data, piece, lambda _: DEFAULT_ORIGIN, {})
        names[tuple(normalize_name(p) for p in path)] = var

    def origin_of(path: Key) -> Origin:
        found = longest_prefix(names, tuple(normalize_name(p) for p in path))
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
    problems.append(f"{where}: unsupported file type; name a .toml, .json or .yaml file")
    return None


def _optional_module(name: str, where: str, problems: list[str]) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        package = {"yaml": "pyyaml"}.get(name, name)
        problems.append(f"{where}: reading this file needs `pip install {package}`")
        return None


def _document(
    model: type[BaseModel], doc: Any, origin: Origin, where: str, problems: list[str]
) -> Layer:
    data: dict[str, Any] = {}
    if isinstance(doc, Mapping):
        try:
            data = canonical(model, doc)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    elif doc is not None:
        problems.append(f"{where}: expected a mapping of settings, got {type(doc).__name__}")
    return data, lambda _: origin


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
            same = [k for k in into if normalize_name(k) == normalize_name(key)]
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
