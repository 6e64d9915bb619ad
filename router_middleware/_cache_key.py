"""The response cache's key: what makes two requests the same logical request.

A key is the SHA-256 of one canonical JSON document, so inputs of any size make a key of
64 characters. The document holds, and only holds:

- the messages, each as its type, content, name, tool calls (name, arguments, id),
  ``tool_call_id`` and role: a message's ``id``, ``response_metadata``,
  ``usage_metadata`` and ``additional_kwargs`` are left out (they describe a run, not what
  is asked); an ``LLMRequest`` adds its ``max_tokens``, ``temperature`` and ``metadata``;
- the logical model asked for (not the provider's);
- the call options (sampling options, ``stop``...), keys sorted;
- the shape of a derived router: its tools as OpenAI-format schemas sorted (the order they
  were bound in does not matter), ``tool_choice`` and the binding options; or its output
  schema (a class by its qualified name and JSON schema), method and ``include_raw``;
- the values of the run-config metadata keys named in ``cache.key_metadata`` (an absent
  key and a ``None`` value differ), so two tenants never share an entry.

A request holding a value that has no canonical JSON form (an object in the options, a
tool without an OpenAI-format schema) has no key: it is routed and never cached, rather
than keyed by something that may collide.

Example:
    >>> from langchain_core.messages import HumanMessage
    >>> a = request_key("m", [HumanMessage("hi", id="1")], {}, None, {}, ())
    >>> b = request_key("m", [HumanMessage("hi", id="2")], {}, None, {}, ())
    >>> a == b, len(a), a == request_key("other", "hi", {}, None, {}, ())
    (True, 64, False)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages

from ._shape import Shape, StructuredShape, ToolShape
from ._types import LLMRequest

__all__ = ["Uncacheable", "request_key", "shape_document"]

_VERSION = 1  # part of every key: a change of the document's form never reuses old entries


class Uncacheable(Exception):
    """A request with no canonical form: it is routed, never cached."""


def request_key(
    model: str | None,
    input: Any,
    options: Mapping[str, Any],
    shape: Any,
    metadata: Mapping[str, Any] | None,
    key_metadata: Sequence[str],
) -> str:
    """The key of one request (``shape``: :func:`shape_document`'s, or ``None``).

    Raises:
        Uncacheable: some part has no canonical JSON form.
    """
    if type(input) is str:  # the common prompt: no message built
        messages: Any = input
    elif isinstance(input, LLMRequest):
        messages = [
            [_message(m) for m in input.to_messages()],
            input.max_tokens,
            input.temperature,
            input.metadata,
        ]
    else:
        try:
            converted = convert_to_messages(input)
        except Exception:
            raise Uncacheable("input that is not chat messages") from None
        messages = [_message(m) for m in converted]
    metadata = metadata or {}
    tenant = [[k, metadata[k]] if k in metadata else [k] for k in key_metadata]
    return hashlib.sha256(
        _canonical([_VERSION, model, messages, options, shape, tenant])
    ).hexdigest()


def shape_document(shape: Shape | None, tool_schemas: list[dict[str, Any]] | None) -> Any:
    """A derived router's part of every key: computed once per router (a schema's JSON
    schema costs more than routing).

    Raises:
        Uncacheable: a tool has no OpenAI-format schema.
    """
    if shape is None:
        return None
    if isinstance(shape, ToolShape):
        if tool_schemas is None:
            raise Uncacheable("a tool without an OpenAI-format schema")
        tools = sorted(tool_schemas, key=lambda s: _canonical(s))
        return ["tools", tools, shape.tool_choice, _plain(shape.kwargs)]
    if isinstance(shape, StructuredShape):
        return [
            "schema",
            _schema(shape.schema),
            shape.method,
            shape.include_raw,
            _plain(shape.kwargs),
        ]
    raise Uncacheable(f"unknown shape {type(shape).__name__}")


def _message(message: BaseMessage) -> list[Any]:
    calls = getattr(message, "tool_calls", None)
    return [
        message.type,
        message.content,
        message.name,
        [[c["name"], c["args"], c.get("id")] for c in calls] if calls else None,
        getattr(message, "tool_call_id", None),
        getattr(message, "role", None),  # a ChatMessage's
    ]


def _schema(schema: Any) -> Any:
    if isinstance(schema, Mapping):
        return _plain(schema)
    name = f"{getattr(schema, '__module__', '')}.{getattr(schema, '__qualname__', schema)}"
    json_schema = getattr(schema, "model_json_schema", None)
    if json_schema is not None:  # a pydantic class
        return [name, json_schema()]
    from langchain_core.utils.function_calling import convert_to_openai_tool

    try:  # a TypedDict, a function
        return [name, convert_to_openai_tool(schema)]
    except Exception:
        raise Uncacheable(f"an output schema {name} without a JSON schema") from None


def _plain(value: Any) -> Any:
    """``value`` if it has a canonical JSON form (checked now, once)."""
    _canonical(value)
    return value


def _canonical(value: Any) -> bytes:
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
        )
    except (TypeError, ValueError) as exc:  # a value of no JSON form, or a cycle
        raise Uncacheable(str(exc)) from None
    return text.encode("utf-8", "surrogatepass")


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # a pydantic value (a message in the options)
    if dump is not None and not isinstance(value, type):
        return [type(value).__qualname__, dump(mode="json")]
    raise TypeError(f"a {type(value).__name__} in the request has no canonical form")
