"""A tool-calling fake chat model: ``bind_tools``, tool-call answers, structured output.

Public in :mod:`router_middleware.testing`. It is a :class:`ScriptedChatModel`, so faults,
latency, hangs, broken streams and the call counts work as there; it adds the behaviours
:class:`CallTools` and :class:`Structured`, and records every request it receives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import (
    convert_to_openai_function,
    convert_to_openai_tool,
)
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, PrivateAttr

from ._scripted import Behaviour, Reply, ScriptedChatModel, _StreamPlan

__all__ = ["CallRecord", "CallTools", "Structured", "ToolCall", "ToolCallingChatModel"]

METHODS = ("function_calling", "json_schema", "json_mode")
"""The ``with_structured_output`` methods, as LangChain partner packages name them."""

_CHOICES = ("auto", "any", "required", "none")


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a :class:`CallTools` answer; ``id`` is ``call_<n>`` when ``None``
    (the model's n-th generated id), so ids are the same on every run."""

    name: str
    args: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class CallTools:
    """Answer with tool ``calls`` (and ``text`` as content) after ``latency`` seconds.

    Example:
        >>> CallTools([ToolCall("search", {"q": "rain"})], text="Let me look.").calls
        (ToolCall(name='search', args={'q': 'rain'}, id=None),)
    """

    calls: tuple[ToolCall, ...] | list[ToolCall]
    text: str = ""
    latency: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "calls", tuple(self.calls))  # frozen: keep it immutable


@dataclass(frozen=True)
class Structured:
    """Answer ``data`` as the bound structured-output method expects it: a call of the
    schema's tool under ``function_calling``, JSON content under ``json_schema`` and
    ``json_mode`` (and when nothing is bound). One script thus serves every method.

    Example:
        >>> model = ToolCallingChatModel(script=[Structured({"city": "Oslo"})])
        >>> model.with_structured_output({"title": "Place", "type": "object"}).invoke("?")
        {'city': 'Oslo'}
    """

    data: dict[str, Any]
    latency: float = 0.0


@dataclass(frozen=True)
class CallRecord:
    """One request as the model received it: ``messages``, the bound ``tools`` (names),
    ``tool_choice``, the other call ``kwargs`` (``response_format``, ``strict``...), and
    the sampling ``options`` in effect (``temperature``, ``max_tokens``, ``stop``: from the
    call, else the model's fields), however they were given.

    Example:
        >>> model = ToolCallingChatModel()
        >>> _ = model.bind(temperature=0).invoke("hi")
        >>> model.requests[0].messages[0].content, model.requests[0].kwargs
        ('hi', {'temperature': 0})
    """

    messages: list[BaseMessage]
    tools: list[str]
    tool_choice: Any
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _ToolReply(Reply):
    """A :class:`CallTools` with its ids given: a reply the base model can deliver."""

    calls: tuple[ToolCall, ...] = ()


class ToolCallingChatModel(ScriptedChatModel):
    """A :class:`ScriptedChatModel` that calls tools and gives structured output.

    Its script may also hold :class:`CallTools` and :class:`Structured`; ``bind_tools``
    and ``with_structured_output`` work as in partner packages (a ``str`` or
    :class:`Reply` answers plain text, so ``Reply('{"wrong": 1}')`` is a bad structured
    answer). Every call is recorded in ``requests``.

    Args:
        supports_tools: when ``False``, ``bind_tools`` raises ``NotImplementedError``.
        structured_output_methods: the ``with_structured_output`` methods it accepts.
        model_name: reported in ``response_metadata``.
        max_input_tokens: reported in ``profile`` (left out when ``None``).
        temperature, max_tokens, stop: sampling defaults, as a partner model has them
            (a call's own values win); what was in effect is in ``CallRecord.options``.

    Example:
        >>> from pydantic import BaseModel
        >>> class City(BaseModel):
        ...     name: str
        >>> model = ToolCallingChatModel(script=[Structured({"name": "Oslo"})] * 2)
        >>> model.with_structured_output(City).invoke("?")
        City(name='Oslo')
        >>> model.with_structured_output(City, method="json_schema").invoke("?")
        City(name='Oslo')
        >>> model.requests[0].tool_choice, model.requests[1].kwargs["response_format"]["type"]
        ('City', 'json_schema')
    """

    supports_tools: bool = True
    structured_output_methods: tuple[str, ...] = METHODS
    model_name: str = "fake-tools"
    max_input_tokens: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None

    _requests: list[CallRecord] = PrivateAttr(default_factory=list)
    _ids: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "tool-calling-fake"

    @property
    def requests(self) -> list[CallRecord]:
        """Every request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def _resolve_model_profile(self) -> ModelProfile | None:
        profile = ModelProfile(
            tool_calling=self.supports_tools,
            structured_output="json_schema" in self.structured_output_methods,
        )
        if self.max_input_tokens is not None:
            profile["max_input_tokens"] = self.max_input_tokens
        return profile

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` (in OpenAI format) and ``tool_choice``, checked as LangChain does.

        Example:
            >>> ToolCallingChatModel().bind_tools([], tool_choice="search")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: tool_choice 'search' is not a bound tool nor one of ...
        """
        if not self.supports_tools:
            raise NotImplementedError(f"{self.model_name} does not support tool calling")
        formatted = [convert_to_openai_tool(t, strict=kwargs.get("strict")) for t in tools]
        _check_tool_choice(tool_choice, _tool_names(formatted))
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: str = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers parsed into ``schema`` (pydantic class, TypedDict or JSON schema),
        built as ``ChatOpenAI`` builds it; ``include_raw`` gives ``raw``, ``parsed`` and
        ``parsing_error``. A method outside ``structured_output_methods`` raises
        ``ValueError``."""
        if method not in METHODS:
            raise ValueError(f"unknown structured output method {method!r}; use one of {METHODS}")
        if method not in self.structured_output_methods:
            raise ValueError(
                f"{self.model_name} does not support structured output method {method!r} "
                f"(it supports {self.structured_output_methods})"
            )
        if schema is None and method != "json_mode":
            raise ValueError(f"method {method!r} needs a schema")
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if schema is not None:  # what LangChain traces; the call itself never sees it
            kwargs["ls_structured_output_format"] = {
                "kwargs": {"method": method, "strict": strict},
                "schema": schema,
            }
        llm: Runnable[Any, Any]
        parser: Runnable[Any, Any]
        if method == "function_calling":
            assert schema is not None
            name = convert_to_openai_tool(schema)["function"]["name"]
            if strict is not None:
                kwargs["strict"] = strict
            llm = self.bind_tools([schema], tool_choice=name, **kwargs)
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        else:
            llm = self.bind(response_format=_response_format(schema, method, strict), **kwargs)
            parser = (
                PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
            )
        if include_raw:
            parser_assign = RunnablePassthrough.assign(
                parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
            )
            parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
            parser_with_fallback = parser_assign.with_fallbacks(
                [parser_none], exception_key="parsing_error"
            )
            return RunnableMap(raw=llm) | parser_with_fallback
        return llm | parser

    # -- the hooks of ScriptedChatModel -------------------------------------------------

    def _begin(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], stop: list[str] | None = None
    ) -> Behaviour:
        step = self._next()
        given = {"temperature": self.temperature, "max_tokens": self.max_tokens, "stop": self.stop}
        given.update({k: kwargs[k] for k in ("temperature", "max_tokens") if k in kwargs})
        if stop is not None:
            given["stop"] = stop
        record = CallRecord(
            messages=list(messages),
            tools=_tool_names(kwargs.get("tools") or []),
            tool_choice=kwargs.get("tool_choice"),
            kwargs={k: v for k, v in kwargs.items() if k not in ("tools", "tool_choice")},
            options={k: v for k, v in given.items() if v is not None},
        )
        with self._lock:  # ids are drawn in call order, under the lock
            self._requests.append(record)
            return self._resolve(step, kwargs)

    def _resolve(self, step: Any, kwargs: dict[str, Any]) -> Behaviour:
        """A script's step as a behaviour the base model plays, ids given."""
        if isinstance(step, Structured):
            name = _structured_tool(kwargs, step.data)
            if name is None:
                return Reply(json.dumps(step.data), step.latency)
            step = CallTools([ToolCall(name, step.data)], latency=step.latency)
        if not isinstance(step, CallTools):
            return step  # type: ignore[no-any-return]
        calls = []
        for call in step.calls:
            if call.id is None:
                self._ids += 1
                call = replace(call, id=f"call_{self._ids}")
            calls.append(call)
        return _ToolReply(step.text, step.latency, tuple(calls))

    def _message(self, reply: Reply) -> AIMessage:
        message = super()._message(reply)
        calls = reply.calls if isinstance(reply, _ToolReply) else ()
        return AIMessage(
            content=message.content,
            tool_calls=[tool_call(name=c.name, args=c.args, id=c.id) for c in calls],
            usage_metadata=message.usage_metadata,
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": "tool_calls" if calls else "stop",
            },
        )

    def _plan(self, message: AIMessage) -> _StreamPlan:
        """Its words (none for a bare tool call), each call's args in two halves, then
        the usage and metadata chunk: the chunks add up to what ``invoke`` answers."""
        words = super()._plan(message).pieces if message.text or not message.tool_calls else []
        calls = [chunk for i, c in enumerate(message.tool_calls) for chunk in _halves(i, c)]
        last = AIMessageChunk(
            content="",
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            chunk_position="last",
        )
        return _StreamPlan(words + calls, last=last)


def _halves(index: int, call: Any) -> list[AIMessageChunk]:
    """A tool call as two chunks: name and id come with the first half of its args."""
    args = json.dumps(call["args"])
    cut = len(args) // 2  # an object's JSON has 2 characters or more: both halves non-empty
    first = tool_call_chunk(name=call["name"], args=args[:cut], id=call["id"], index=index)
    rest = tool_call_chunk(name=None, args=args[cut:], id=None, index=index)
    return [AIMessageChunk(content="", tool_call_chunks=[c]) for c in (first, rest)]


def _tool_names(tools: Sequence[Any]) -> list[str]:
    """Bound tools' names (a built-in tool such as ``{"type": "web_search"}``: its type)."""
    names = []
    for tool in tools:
        spec = tool if isinstance(tool, dict) else convert_to_openai_tool(tool)
        names.append(
            str(spec.get("function", {}).get("name") or spec.get("name") or spec.get("type"))
        )
    return names


def _check_tool_choice(choice: Any, names: list[str]) -> None:
    """Accept what LangChain accepts: a mode, a bound tool's name, ``True`` for the only
    tool, or a provider-format dict."""
    if choice is None or isinstance(choice, dict):
        return
    if isinstance(choice, str) and (choice in _CHOICES or choice in names):
        return
    if choice is True and len(names) == 1:
        return
    raise ValueError(
        f"tool_choice {choice!r} is not a bound tool nor one of {_CHOICES} "
        f"(True needs exactly one tool); bound tools: {names}"
    )


def _structured_tool(kwargs: dict[str, Any], data: dict[str, Any]) -> str | None:
    """The tool a :class:`Structured` answer calls, or ``None`` to answer JSON content.

    The call's own kwargs say which method is bound (LangChain strips its
    ``ls_structured_output_format`` before the model sees them): a ``response_format``
    means ``json_schema``/``json_mode``; else the tool ``tool_choice`` names means
    ``function_calling``. With no tool named (an agent's ``tool_choice="any"`` over its
    tools and the schema's), the last bound tool whose parameters fit ``data``: agents
    append the schema's tool after their own.
    """
    tools = kwargs.get("tools") or []
    names = _tool_names(tools)
    if kwargs.get("response_format") is not None or not names:
        return None
    choice = kwargs.get("tool_choice")
    if isinstance(choice, dict):
        choice = choice.get("function", {}).get("name") or choice.get("name")
    if choice in names:
        return str(choice)
    fitting = [n for n, t in zip(names, tools, strict=True) if _fits(t, data)]
    return fitting[-1] if fitting else names[-1]


def _fits(tool: Any, data: dict[str, Any]) -> bool:
    spec = tool if isinstance(tool, dict) else convert_to_openai_tool(tool)
    parameters = spec.get("function", {}).get("parameters") or {}
    properties = set(parameters.get("properties") or {})
    required = set(parameters.get("required") or ())
    return set(data) <= properties and required <= set(data)


def _response_format(
    schema: dict[str, Any] | type | None, method: str, strict: bool | None
) -> dict[str, Any]:
    """The ``response_format`` OpenAI takes for ``json_mode`` or ``json_schema``."""
    if method == "json_mode":
        return {"type": "json_object"}
    spec = dict(convert_to_openai_function(cast(Any, schema), strict=strict))
    spec["schema"] = spec.pop("parameters")
    return {"type": "json_schema", "json_schema": spec}
