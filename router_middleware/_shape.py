"""How a derived router's calls differ from its root's: bound tools, or a structured output.

``router.bind_tools(...)`` and ``router.with_structured_output(...)`` return routers over
the root's provider state (limits, breakers, metrics) whose calls are reshaped: every
provider binds the tools, or builds its structured output, through its own
implementation, since each formats tools and schemas its own way.

Invariants:

- A shape is applied once per provider and model, when the router is derived and again
  when the root reloads; never per request.
- A provider that cannot take the shape (its ``bind_tools`` raises ``NotImplementedError``,
  its profile or its config denies the capability, it is a handler) is not a candidate for
  the derived router; the reason is kept and named in ``NoProviderAvailableError``.
- ``tool_choice`` means what LangChain means, whichever provider serves: ``"any"`` and
  ``"required"`` force some tool, a name forces that tool, ``True`` forces the only tool.
- A structured answer that does not parse or validate is the provider's failure
  (:class:`~._errors.InvalidStructuredOutputError`), so the request fails over.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from cachetools import LRUCache
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool

from ._config_tools import CapabilitiesConfig
from ._errors import InvalidInputError, InvalidProviderOutputError, InvalidStructuredOutputError

__all__ = ["StructuredAnswer", "StructuredShape", "ToolShape", "Unsupported", "chat_model_of"]

_FORCING = frozenset({"any", "required"})
_NOT_FORCING = frozenset({"auto", "none"})


class Unsupported(Exception):
    """A provider cannot take a shape; the message says why (shown to the caller)."""


def chat_model_of(runnable: Any) -> Any:
    """The model under a chain of ``.bind(...)`` (its class and profile tell what it can do)."""
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    return runnable


def _profile(runnable: Any) -> dict[str, Any]:
    profile = getattr(chat_model_of(runnable), "profile", None)
    return profile if isinstance(profile, dict) else {}


class ToolShape:
    """Tools bound on every provider through its own ``bind_tools``.

    Example:
        >>> from langchain_core.tools import tool
        >>> @tool
        ... def add(a: int, b: int) -> int:
        ...     '''Add two integers.'''
        ...     return a + b
        >>> ToolShape([add], True, {}).tool_choice
        'add'
    """

    __slots__ = ("kwargs", "names", "tool_choice", "tools")

    def __init__(self, tools: Sequence[Any], tool_choice: Any, kwargs: dict[str, Any]) -> None:
        self.tools = list(tools)
        self.names = [_tool_name(t) for t in self.tools]
        self.tool_choice = _normalized_choice(tool_choice, self.names)
        self.kwargs = kwargs

    @property
    def forced(self) -> bool:
        """Whether the request forces a tool call (needs an enforced ``tool_choice``)."""
        return _forces(self.tool_choice)

    def apply(self, runnable: Runnable[Any, Any], caps: CapabilitiesConfig) -> Runnable[Any, Any]:
        _check_tool_capabilities(
            caps, runnable, forced=self.forced, strict=self.kwargs.get("strict")
        )
        if "parallel_tool_calls" in self.kwargs and caps.parallel_tool_calls is False:
            raise Unsupported("its config says it takes no parallel_tool_calls option")
        bind = getattr(runnable, "bind_tools", None)
        if bind is None:
            raise Unsupported(f"{type(runnable).__name__} has no bind_tools")
        kwargs = dict(self.kwargs)
        if self.tool_choice is not None:
            kwargs["tool_choice"] = _choice_for(chat_model_of(runnable), self.tool_choice)
        try:
            bound: Runnable[Any, Any] = bind(self.tools, **kwargs)
        except NotImplementedError:
            raise Unsupported("it cannot bind tools") from None
        return bound

    def schemas(self) -> list[dict[str, Any]] | None:
        """The tools as OpenAI-format schemas, for token estimates; ``None`` when some tool
        has no such form (it is then left out of estimates rather than guessed)."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        try:
            return [convert_to_openai_tool(t) for t in self.tools]
        except Exception:
            return None

    def __repr__(self) -> str:
        return f"ToolShape(tools={self.names}, tool_choice={self.tool_choice!r})"


class StructuredAnswer:
    """A structured answer: the provider's message (for usage and metadata) and the value."""

    __slots__ = ("parsed", "raw", "value")

    def __init__(self, raw: BaseMessage, parsed: Any, include_raw: bool) -> None:
        self.raw = raw
        self.parsed = parsed
        self.value = (
            {"raw": raw, "parsed": parsed, "parsing_error": None} if include_raw else parsed
        )


class StructuredShape:
    """A structured output built by every provider's own ``with_structured_output``.

    Each provider is asked with ``include_raw=True``, so a parse failure is seen (and the
    request fails over) rather than raised from inside the provider's chain.
    """

    __slots__ = ("include_raw", "kwargs", "method", "name", "schema")

    def __init__(
        self, schema: Any, method: str | None, include_raw: bool, kwargs: dict[str, Any]
    ) -> None:
        self.schema = schema
        self.method = method
        self.include_raw = include_raw
        self.kwargs = kwargs
        self.name = _schema_name(schema)

    def apply(self, runnable: Runnable[Any, Any], caps: CapabilitiesConfig) -> Runnable[Any, Any]:
        return _StructuredCall(runnable, self.build(runnable, caps), self, caps)

    def build(self, runnable: Runnable[Any, Any], caps: CapabilitiesConfig) -> Runnable[Any, Any]:
        """The provider's own structured-output chain for this schema."""
        methods = caps.structured_output
        if self.method == "function_calling":
            _check_tool_capabilities(caps, runnable, forced=True, strict=self.kwargs.get("strict"))
        elif self.kwargs.get("strict") and caps.strict is False:
            raise Unsupported("its config says it takes no strict schemas")
        if methods is not None and (not methods or (self.method and self.method not in methods)):
            raise Unsupported(f"its config lists structured output methods {methods}")
        native = methods is not None or _profile(runnable).get("structured_output") is not False
        if self.method == "json_schema" and not native:
            raise Unsupported("its model profile says it has no native structured output")
        build = getattr(runnable, "with_structured_output", None)
        if build is None:
            raise Unsupported(f"{type(runnable).__name__} has no with_structured_output")
        kwargs = dict(self.kwargs)
        if self.method is not None:
            kwargs["method"] = self.method
        try:
            built: Runnable[Any, Any] = build(self.schema, include_raw=True, **kwargs)
        except NotImplementedError:
            raise Unsupported("it cannot give structured output") from None
        except ValueError as exc:  # e.g. a method it does not implement
            raise Unsupported(f"structured output: {exc}") from None
        return built

    def read(self, value: Any, provider: str) -> StructuredAnswer:
        """The answer, or the provider's failure when it does not fit the schema."""
        if not (isinstance(value, dict) and "raw" in value):
            raise InvalidProviderOutputError(
                provider, f"structured output returned {type(value).__name__}, not a raw answer"
            )
        raw, parsed, error = value["raw"], value.get("parsed"), value.get("parsing_error")
        if error is not None or parsed is None:
            raise InvalidStructuredOutputError(provider, self.name, raw, error)
        if not isinstance(raw, BaseMessage):
            raise InvalidProviderOutputError(provider, f"returned {type(raw).__name__}")
        return StructuredAnswer(raw, parsed, self.include_raw)

    def __repr__(self) -> str:
        return f"StructuredShape({self.name}, method={self.method!r})"


Shape = ToolShape | StructuredShape


class _StructuredCall(Runnable[Any, Any]):
    """A provider's structured-output chain that takes call options.

    A chain built with ``include_raw=True`` starts with a map, which drops invoke kwargs,
    and ``.bind()`` is lost under ``with_structured_output``: so the options are set on a
    copy of the model and the chain built on it, once per distinct options.
    """

    def __init__(
        self,
        model: Runnable[Any, Any],
        built: Runnable[Any, Any],
        shape: StructuredShape,
        caps: CapabilitiesConfig,
    ) -> None:
        self._model, self._built, self._shape, self._caps = model, built, shape, caps
        self._by_options: LRUCache[str, Runnable[Any, Any]] = LRUCache(16)
        self._lock = threading.Lock()

    def _chain(self, options: dict[str, Any]) -> Runnable[Any, Any]:
        if not options:
            return self._built
        key = json.dumps(options, sort_keys=True, default=repr)
        with self._lock:
            chain = self._by_options.get(key)
        if chain is None:
            chain = self._shape.build(_with_options(self._model, options), self._caps)
            with self._lock:
                self._by_options[key] = chain
        return chain

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._chain(kwargs).invoke(input, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._chain(kwargs).ainvoke(input, config)

    def __repr__(self) -> str:
        return f"_StructuredCall({type(self._model).__name__}, {self._shape!r})"


def _with_options(model: Any, options: dict[str, Any]) -> Any:
    """A copy of ``model`` with call options set as its fields (``stop`` included)."""
    fields = getattr(type(model), "model_fields", None)
    if not isinstance(fields, dict):
        raise InvalidInputError(
            f"options {sorted(options)} cannot reach {type(model).__name__}'s structured output"
        )
    aliases = {f.alias: name for name, f in fields.items() if f.alias}
    update = {}
    for key, value in options.items():
        name = key if key in fields else aliases.get(key)
        if name is None:
            raise InvalidInputError(
                f"option {key!r} is no field of {type(model).__name__}, so it cannot reach "
                "its structured output"
            )
        update[name] = value
    return model.model_copy(update=update)


def _check_tool_capabilities(
    caps: CapabilitiesConfig, runnable: Any, *, forced: bool, strict: Any
) -> None:
    if caps.tools is False:
        raise Unsupported("its config says it cannot call tools")
    if caps.tools is None and _profile(runnable).get("tool_calling") is False:
        raise Unsupported("its model profile says it cannot call tools")
    if forced and caps.tool_choice is False:
        raise Unsupported("its config says it does not enforce tool_choice")
    if strict and caps.strict is False:
        raise Unsupported("its config says it takes no strict schemas")


def _tool_name(tool: Any) -> str:
    try:
        return str(convert_to_openai_tool(tool)["function"]["name"])
    except (KeyError, TypeError, ValueError):  # a provider's built-in tool dict
        return str(tool.get("name") or tool.get("type")) if isinstance(tool, dict) else str(tool)


def _schema_name(schema: Any) -> str:
    if isinstance(schema, type):
        return schema.__name__
    if isinstance(schema, dict):
        return str(schema.get("title") or schema.get("name") or "the schema")
    return type(schema).__name__


def _normalized_choice(choice: Any, names: Sequence[str]) -> Any:
    """LangChain's meaning of ``tool_choice``, in the one spelling every provider takes."""
    if choice is None or choice is False:
        return None
    if choice is True:
        if len(names) != 1:
            raise ValueError(f"tool_choice=True needs exactly one tool; {len(names)} given")
        return names[0]
    if not isinstance(choice, str):
        return choice  # a provider's own spelling (a dict): passed on as it is
    if choice in _FORCING:
        return "any"
    if choice not in _NOT_FORCING and choice not in names:
        raise ValueError(f"tool_choice {choice!r} names no bound tool; tools: {list(names)}")
    return choice


def _forces(choice: Any) -> bool:
    if isinstance(choice, dict):  # {"type": "auto" | "none"} leaves the choice to the model
        kind = choice.get("type")
        return kind not in _NOT_FORCING
    return choice is not None and choice not in _NOT_FORCING


def _choice_for(model: Any, choice: Any) -> Any:
    # ChatAnthropic reads any string but "any"/"auto" as a tool's name.
    if choice == "none" and type(model).__name__ == "ChatAnthropic":
        return {"type": "none"}
    return choice
