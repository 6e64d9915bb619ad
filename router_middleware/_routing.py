"""A request's routing controls: the providers it may use, by name and by tag.

A chain can say "only EU providers" or "never the free tier" without a second router.
The controls come, field by field (the call winning), from the call's keyword arguments
(``router.invoke(x, require_tags=["eu"])``, so ``router.bind(require_tags=["eu"])``
works inside a chain), from the run config's ``configurable``, where ``model`` is read
too (``{"configurable": {"exclude_tags": ["free-tier"]}}``: LangChain's place for the
runtime settings of the runnables in a run, and it reaches a model call deep inside an
agent), and from its ``metadata`` (``{"metadata": {"require_tags": ["eu"]}}``). They
never reach a provider as call options. They become one :class:`Routing`;
``_candidates.routed`` applies it to the request's candidates.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import InvalidInputError

__all__ = ["CONTROLS", "CONTROL_KEYS", "Routing", "requested"]

CONTROLS = ("only_providers", "exclude_providers", "require_tags", "exclude_tags")
"""The keys a call or ``configurable`` sets the controls with, in :class:`Routing`'s order."""

CONTROL_KEYS = frozenset(CONTROLS)


@dataclass(frozen=True)
class Routing:
    """Which providers one request may use (each field given narrows it further).

    Attributes:
        only: the provider names allowed (``None``: any); it says nothing about order.
        exclude: provider names never used.
        tags: a provider must have every one of these ``tags`` in its config.
        exclude_tags: a provider must have none of these.

    Each field takes any iterable of non-empty strings (a lone ``str`` is refused: it
    would be read as its letters); ``only`` is kept as a tuple, the others as frozensets.

    Example:
        >>> routing = Routing(tags=frozenset({"eu"}), exclude_tags=frozenset({"free-tier"}))
        >>> routing.refusal("paris", ["eu", "paid"]) is None
        True
        >>> routing.refusal("dublin", ["eu", "free-tier"])
        "has excluded tag 'free-tier'"
        >>> Routing(tags="eu")  # type: ignore[arg-type]
        Traceback (most recent call last):
        ...
        router_middleware._errors.InvalidInputError: tags must be a list of tags, not the \
single str 'eu' (it would be read as its letters): write ['eu']
    """

    only: tuple[str, ...] | None = None
    exclude: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    exclude_tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Frozen: normalising what was given (a list, a set) is the one write.
        if self.only is not None:
            only = tuple(dict.fromkeys(_strings(self.only, "only", "provider name")))
            object.__setattr__(self, "only", only)
        object.__setattr__(self, "exclude", _frozen(self.exclude, "exclude", "provider name"))
        object.__setattr__(self, "tags", _frozen(self.tags, "tags", "tag"))
        object.__setattr__(self, "exclude_tags", _frozen(self.exclude_tags, "exclude_tags", "tag"))

    @property
    def empty(self) -> bool:
        """Whether it allows every provider (no field narrows anything)."""
        return self.only is None and not (self.exclude or self.tags or self.exclude_tags)

    def check(self, known: Collection[str]) -> None:
        """Refuse a provider name the router does not have (``known``): a typo must not
        silently route elsewhere, nor exclude nothing."""
        named = (("only_providers", self.only or ()), ("exclude_providers", self.exclude))
        for label, names in named:
            unknown = [n for n in names if n not in known]
            if unknown:
                listed = ", ".join(repr(n) for n in sorted(unknown))
                raise InvalidInputError(
                    f"{label} names {listed}, which this router does not have; "
                    f"known providers: {', '.join(sorted(known)) or 'none'}"
                )

    def refusal(self, name: str, tags: Collection[str]) -> str | None:
        """Why the provider ``name`` with config ``tags`` may not serve, or ``None``."""
        if name in self.exclude:
            return "excluded by the request"
        if self.only is not None and name not in self.only:
            return "not among the request's only_providers"
        if self.tags:
            missing = sorted(t for t in self.tags if t not in tags)
            if missing:
                return f"lacks {_tag_list(missing)}"
        if self.exclude_tags:
            found = sorted(t for t in self.exclude_tags if t in tags)
            if found:
                return f"has excluded {_tag_list(found)}"
        return None


def requested(
    options: dict[str, Any],
    configurable: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[Routing | None, dict[str, Any]]:
    """The request's controls (``None`` when they narrow nothing), and its call options
    without them; per field the call wins over ``configurable``, which wins over the run's
    ``metadata``.

    A control given ``None`` counts as not given.

    Example:
        >>> routing, options = requested(
        ...     {"require_tags": ["eu"], "temperature": 0},
        ...     {"require_tags": ["us"], "exclude_providers": ["free"]},
        ... )
        >>> sorted(routing.tags), sorted(routing.exclude), options
        (['eu'], ['free'], {'temperature': 0})
    """
    given: dict[str, tuple[Any, str]] = {}
    for name, source in (("metadata", metadata), ("configurable", configurable)):
        if source:
            for key in CONTROLS:
                value = source.get(key)
                if value is not None:
                    given[key] = (value, f"{name}[{key!r}]")
    if not CONTROL_KEYS.isdisjoint(options):
        for key in CONTROLS:
            value = options.get(key)
            if value is not None:
                given[key] = (value, key)
        options = {k: v for k, v in options.items() if k not in CONTROL_KEYS}
    if not given:
        return None, options
    only = given.get("only_providers")
    routing = Routing(
        None if only is None else tuple(_strings(*only, "provider name")),
        _given(given, "exclude_providers", "provider name"),
        _given(given, "require_tags", "tag"),
        _given(given, "exclude_tags", "tag"),
    )
    return (None if routing.empty else routing), options


def _given(given: Mapping[str, tuple[Any, str]], key: str, what: str) -> frozenset[str]:
    found = given.get(key)
    return frozenset() if found is None else frozenset(_strings(*found, what))


def _frozen(value: Iterable[str], label: str, what: str) -> frozenset[str]:
    if type(value) is frozenset and all(type(v) is str and v for v in value):
        return value  # already what it is stored as (the usual case)
    return frozenset(_strings(value, label, what))


def _strings(value: Any, label: str, what: str) -> list[str]:
    """``value`` as a list of non-empty strings, or an error naming ``label``."""
    if isinstance(value, (str, bytes)):
        raise InvalidInputError(
            f"{label} must be a list of {what}s, not the single {type(value).__name__} "
            f"{value!r} (it would be read as its letters): write [{value!r}]"
        )
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InvalidInputError(f"{label} must be a list of {what}s, not {type(value).__name__}")
    items = list(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidInputError(
                f"{label} holds {item!r} ({type(item).__name__}): "
                f"each {what} must be a non-empty str"
            )
    return items


def _tag_list(tags: list[str]) -> str:
    return ("tag " if len(tags) == 1 else "tags ") + ", ".join(repr(t) for t in tags)
