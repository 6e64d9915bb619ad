"""The building blocks of the configuration models: bounded number types, the base model
that reads the seed's keys, and the error that blames one field.

Numbers are bounded so that the limiter's and the breaker's arithmetic stays finite, and
a boolean is never read as a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_COUNT",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "ConfigModel",
    "Cost",
    "Count",
    "FieldProblem",
    "Number",
    "Seconds",
    "WaitSeconds",
    "repeated",
    "translate",
]

# Bounds that keep the limiter's and the breaker's float arithmetic finite: a window of
# 1e-320 s overflows ``now // (window / 10)``, a burst of 10**400 overflows ``float()``.
MIN_SECONDS = 0.001
MAX_SECONDS = 10**7
MAX_COUNT = 10**9


def _not_bool(value: Any) -> Any:
    # pydantic reads True as 1 in lax mode; a boolean in a number field is a mistake.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "Input should be a number, not a boolean")
    return value


_NotBool = BeforeValidator(_not_bool)


Number = Annotated[float, _NotBool, Field(allow_inf_nan=False)]
Count = Annotated[int, _NotBool, Field(ge=1)]
Seconds = Annotated[Number, Field(ge=MIN_SECONDS, le=MAX_SECONDS)]
WaitSeconds = Annotated[Number, Field(ge=0, le=MAX_SECONDS)]
Cost = Annotated[Number, Field(ge=0, le=10**6)]


class FieldProblem(ValueError):
    """A model-level check that blames one field, so the message can name it.

    Example:
        >>> FieldProblem("models", "items 0 and 1 have the same name").field
        'models'
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def translate(data: Any, keys: Mapping[str, tuple[str, float]]) -> Any:
    """Rename seed (camelCase) keys to ours, scaling millisecond values to seconds."""
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in keys:
            name, scale = keys[key]
            if name in data:
                raise ValueError(f"both {key!r} and {name!r} given; use one")
            if scale != 1 and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = value * scale
            out[name] = value
        else:
            out[key] = value
    return out


def repeated(names: list[str]) -> str | None:
    """``"items 0 and 2 have the same name"`` for the first repeat, by position only."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            return f"items {first[name]} and {i} have the same name"
        first[name] = i
    return None


class ConfigModel(BaseModel):
    """Frozen, strict about unknown keys, and reading the seed's keys (``_seed``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # The seed's key for a field -> (our field, the factor from its unit to ours).
    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        return translate(data, cls._seed)
