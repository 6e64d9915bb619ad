"""Assistant prefill: which providers continue a partial answer, and how they are asked.

A provider that prefills takes a conversation ending in an assistant message as the
start of its own answer, and streams only what follows it (Anthropic's models do; OpenAI's
chat completions answer such a message instead). A config declares it per provider with
``capabilities.prefill``; left unset, it is detected from the client's class. A broken
stream resumes on such a provider from where it broke (see ``_resume``).

Example:
    >>> [m.type for m in prefilled("Write a haiku", "Autumn moon")]
    ['human', 'ai']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableBinding

from ._types import LLMRequest

__all__ = ["can_prefill", "prefill_targets", "prefilled"]

# Chat model classes that continue a trailing assistant message rather than answer it.
_PREFILL_CLASSES = frozenset({"ChatAnthropic", "ChatAnthropicVertex"})


def can_prefill(runnable: Runnable[Any, Any]) -> bool:
    """Whether ``runnable`` is a chat model known to continue an assistant prefix.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> can_prefill(FakeListChatModel(responses=["x"]))
        False
    """
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    return any(cls.__name__ in _PREFILL_CLASSES for cls in type(runnable).__mro__)


def prefilled(value: Any, prefix: str) -> Any:
    """The request's input ``value`` with ``prefix`` as the assistant's partial answer.

    Example:
        >>> [m.type for m in prefilled("Write a haiku", "Autumn moon")]
        ['human', 'ai']
    """
    if isinstance(value, LLMRequest):
        return dataclasses.replace(value, messages=[*value.to_messages(), AIMessage(prefix)])
    return [*_messages(value), AIMessage(prefix)]


def _messages(value: Any) -> list[BaseMessage]:
    if isinstance(value, str):
        return convert_to_messages([value])
    if isinstance(value, PromptValue):
        return value.to_messages()
    return convert_to_messages(value)


def prefill_targets(
    declared: Mapping[str, bool | None], runnables: Iterable[tuple[str, str, Runnable[Any, Any]]]
) -> Collection[tuple[str, str]]:
    """The (provider, model) pairs that continue a prefix: as declared in a provider's
    ``capabilities.prefill``, else as detected (:func:`can_prefill`)."""
    found = set()
    for provider, model, runnable in runnables:
        says = declared.get(provider)
        if says or (says is None and can_prefill(runnable)):
            found.add((provider, model))
    return frozenset(found)
