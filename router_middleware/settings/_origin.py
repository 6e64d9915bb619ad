"""Where each setting came from, and error messages that say so without quoting values.

Origins are recorded per field path (a ``Key``) as the layers merge; a path with no
entry of its own takes the origin of its longest recorded prefix, so a list set as one
value answers for every item in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .._config import FieldProblem
from ._schema import Key, close_field, env_var

__all__ = [
    "DEFAULT_ORIGIN",
    "Origin",
    "describe_errors",
    "longest_prefix",
    "lookup_origin",
    "sources_under",
]


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


DEFAULT_ORIGIN = Origin("default")


def longest_prefix(known: Mapping[Key, Any], path: Key) -> Key | None:
    """The longest prefix of ``path`` that ``known`` has, if any."""
    return next((path[:n] for n in range(len(path), 0, -1) if path[:n] in known), None)


def lookup_origin(origins: Mapping[Key, Origin], path: Key) -> Origin | None:
    """The origin recorded for ``path`` or, failing that, for its longest prefix."""
    found = longest_prefix(origins, path)
    return origins[found] if found is not None else None


def sources_under(origins: Mapping[Key, Origin], path: Key) -> str:
    """The sources of everything set under ``path``, for a section that has none itself."""
    return ", ".join(
        sorted({str(o) for p, o in origins.items() if path and p[: len(path)] == path})
    )


def describe_errors(
    exc: ValidationError, origins: Mapping[Key, Origin], model: type[BaseModel]
) -> list[str]:
    """One line per error: the field, the reason, and where the value came from.

    A value set as one JSON document (a list given as an object, say) has origins only
    under its path, so those name it; an unknown key gets the field it may mean.
    """
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):
            loc = (*loc, problem.field)
        origin = lookup_origin(origins, loc)
        below = sources_under(origins, loc)
        where = f" [{origin}]" if origin is not None else f" [{below}]" if below else ""
        if origin is None and not below and err["type"] == "missing":
            near = sources_under(origins, loc[:-1])  # name what set its section, if any
            from_ = f"; {'.'.join(loc[:-1])} is from {near}" if near else ""
            where = f" [set {env_var(loc)}{from_}]"
        hint = ""
        if err["type"] == "extra_forbidden" and (close := close_field(model, loc)) is not None:
            hint = f"; did you mean {'.'.join(close)}?"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{'.'.join(loc) or '(settings)'}: {message}{hint}{where}")
    return lines
