"""How a provider is called: its runnable per model, apart from its live state.

A :class:`Binding` turns what the user gave for a provider (a runnable, a handler, or a
mapping of model to runnable) into one runnable per served model, built once. The live
state (limits, breaker, metrics) is the :class:`~._provider.Provider`; a router derived
with tools or a structured output shares the state and reshapes only the calls
(:meth:`Binding.reshaped`, see ``_shape``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableLambda
from pydantic import BaseModel

from ._errors import ConfigurationError, InvalidProviderOutputError
from ._history import portable_history
from ._redact import register_secrets_of
from ._shape import StructuredShape, Unsupported
from ._types import LLMRequest, message_from_handler_output, request_from_input

if TYPE_CHECKING:
    from ._config_tools import CapabilitiesConfig
    from ._shape import Shape

__all__ = ["Binding", "ProviderTarget", "as_chunk", "as_message"]

ProviderTarget = Runnable[Any, Any] | Callable[..., Any] | Mapping[str, Runnable[Any, Any]]
"""What serves a provider: a runnable (bound to the chosen model when the provider serves
several), a handler ``(LLMRequest) -> LLMResponse`` (sync or async), or a mapping from
model name to the runnable that serves it."""

_warned_self_retry: set[str] = set()
_warn_lock = threading.Lock()


class Binding:
    """The runnables of one provider, one per model it serves.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> binding = Binding("local", FakeListChatModel(responses=["x"]), ("m",))
        >>> binding.runnable("m").invoke("hi").content
        'x'
    """

    __slots__ = (
        "_runnables",
        "is_handler",
        "models",
        "name",
        "read",
        "stream_usage",
        "target",
        "unsupported",
    )

    def __init__(self, name: str, target: ProviderTarget, models: tuple[str, ...]) -> None:
        self.name = name
        self.target = target
        self.models = models
        # Its keys may be echoed in its errors (an OpenAI 401 repeats the key): scrub them
        # from every router error, log line and event.
        register_secrets_of(target)
        self.is_handler, self._runnables = _runnables_for(name, target, models)
        self.read: Callable[[Any, str], Any] = as_message
        self.unsupported: dict[str, str] = {}
        """Model -> why this binding cannot serve it (a shape it cannot take)."""
        self.stream_usage = frozenset(
            m for m, r in self._runnables.items() if _streams_without_usage(r)
        )
        """Models whose client streams no usage unless asked (``stream_usage=True``)."""
        for runnable in {id(r): r for r in self._runnables.values()}.values():
            _warn_if_self_retrying(name, runnable)

    def runnable(self, model: str) -> Runnable[Any, Any]:
        """The runnable that serves ``model`` here (already bound to it)."""
        return self._runnables[model]

    @classmethod
    def calling(
        cls,
        like: Binding,
        runnables: Mapping[str, Runnable[Any, Any]],
        read: Callable[[Any, str], Any],
        unsupported: Mapping[str, str],
    ) -> Binding:
        """``like``'s provider served by other runnables (an agent's model-call handler)."""
        out = object.__new__(cls)
        out.name, out.target, out.models, out.is_handler = (
            like.name,
            like.target,
            like.models,
            False,
        )
        out.read = read
        out._runnables = dict(runnables)
        out.unsupported = dict(unsupported)
        return out

    def reshaped(self, shape: Shape, caps: CapabilitiesConfig) -> Binding:
        """This provider's calls with tools bound or a structured output, per model.

        A model the provider cannot serve so is listed in ``unsupported`` with the reason.
        """
        out = object.__new__(Binding)
        out.name, out.target, out.models, out.is_handler = (
            self.name,
            self.target,
            self.models,
            self.is_handler,
        )
        out.read = shape.read if isinstance(shape, StructuredShape) else as_message
        out.stream_usage = self.stream_usage
        out._runnables, out.unsupported = {}, {}
        for model in self.models:
            try:
                out._runnables[model] = self._reshape(shape, caps, model)
            except Unsupported as why:
                out.unsupported[model] = str(why)
        return out

    def _reshape(self, shape: Shape, caps: CapabilitiesConfig, model: str) -> Runnable[Any, Any]:
        target = self.target
        if self.is_handler:
            raise Unsupported("a handler takes an LLMRequest, with no tools or schema")
        if isinstance(target, Mapping):
            return shape.apply(target[model], caps)
        assert isinstance(target, Runnable)
        if len(self.models) == 1:
            return shape.apply(target, caps)
        # One runnable serving several models: ``.bind(model=m)`` would be lost under a
        # structured-output chain, so copy the client with its model set where it can be.
        copy = _with_model(target, model)
        if copy is not None:
            return shape.apply(copy, caps)
        if isinstance(shape, StructuredShape):
            raise Unsupported("one runnable serves several models: give a runnable per model")
        return shape.apply(target, caps).bind(model=model)

    def arguments(
        self, value: Any, model: str, options: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """What this provider takes, and the keyword options to call it with.

        A handler takes everything in its ``LLMRequest`` (a handler has no ``**kwargs``):
        the call's options land in ``max_tokens``/``temperature`` or in ``metadata``. A
        runnable takes chat input, with the options (and an ``LLMRequest``'s own) as
        invoke kwargs.
        """
        if self.is_handler:
            if isinstance(value, LLMRequest):
                request = dataclasses.replace(value, model=model)
            else:
                request = request_from_input(value, model)
            return (request.with_options(options) if options else request), {}
        if isinstance(value, LLMRequest):
            return value.to_messages(), {**value.options(), **options}
        if type(value) is list:
            # A tool loop another provider began: its ids and blocks made fit for this one.
            return portable_history(value, self.name), options
        return value, options

    def __repr__(self) -> str:
        kind = "handler" if self.is_handler else "runnable"
        return f"Binding({self.name!r}, {kind}, models={list(self._runnables)})"


def as_message(value: Any, provider: str) -> BaseMessage:
    """A provider's answer as a message: a runnable that returns a ``str`` (a chain ending
    in a parser) gives an ``AIMessage``; ``None`` or anything else is the provider's
    failure, not an answer to pass on."""
    if isinstance(value, BaseMessage):
        return value
    if isinstance(value, str):
        return AIMessage(value)
    raise InvalidProviderOutputError(
        provider, f"returned {type(value).__name__}; expected a message or a str"
    )


def as_chunk(value: Any, provider: str) -> BaseMessage:
    """A streamed chunk as a message chunk, like :func:`as_message` for one answer (a
    handler streams its whole answer as one message)."""
    if isinstance(value, BaseMessage):
        return value
    if isinstance(value, str):
        return AIMessageChunk(content=value)
    raise InvalidProviderOutputError(
        provider, f"streamed a {type(value).__name__}; expected message chunks or str"
    )


def _streams_without_usage(runnable: Runnable[Any, Any]) -> bool:
    # ChatOpenAI and its kin report a stream's usage only when asked to.
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    return "stream_usage" in getattr(type(runnable), "model_fields", {}) and not getattr(
        runnable, "stream_usage", False
    )


def _with_model(target: Runnable[Any, Any], model: str) -> Runnable[Any, Any] | None:
    if isinstance(target, BaseModel):
        for field in ("model_name", "model", "model_id"):
            if field in type(target).model_fields:
                return target.model_copy(update={field: model})
    return None


def _runnables_for(
    name: str, target: ProviderTarget, models: tuple[str, ...]
) -> tuple[bool, dict[str, Runnable[Any, Any]]]:
    if isinstance(target, Mapping):
        missing = [m for m in models if m not in target]
        extra = [m for m in target if m not in models]
        if missing or extra:
            raise ConfigurationError(
                f"provider {name!r}: runnables given for models {sorted(target)} but its config "
                f"lists {list(models)}"
            )
        return False, {m: _as_runnable(name, target[m]) for m in models}
    if isinstance(target, Runnable):
        if len(models) == 1:
            return False, {models[0]: target}
        return False, {m: target.bind(model=m) for m in models}
    if callable(target):
        handler = _handler_runnable(name, target)
        return True, dict.fromkeys(models, handler)
    raise ConfigurationError(
        f"provider {name!r}: expected a Runnable, a handler function or a mapping of model to "
        f"Runnable, got {type(target).__name__}"
    )


def _as_runnable(name: str, value: Any) -> Runnable[Any, Any]:
    if not isinstance(value, Runnable):
        raise ConfigurationError(
            f"provider {name!r}: per-model targets must be Runnables, got {type(value).__name__}"
        )
    return value


def _handler_runnable(name: str, handler: Callable[..., Any]) -> Runnable[Any, Any]:
    """Wrap a seed-style handler so each attempt is a child run like any runnable's."""
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )

    if is_async:

        async def acall(request: LLMRequest) -> BaseMessage:
            return message_from_handler_output(await handler(request), name)

        def call(request: LLMRequest) -> BaseMessage:
            return message_from_handler_output(_run_coroutine_sync(handler(request)), name)

        return RunnableLambda(call, afunc=acall, name=name)

    def call_sync(request: LLMRequest) -> BaseMessage:
        return message_from_handler_output(handler(request), name)

    return RunnableLambda(call_sync, name=name)


def _run_coroutine_sync(coro: Any) -> Any:
    """Run an async handler from sync code, even under a running loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[Any] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=runner, name="router-middleware-handler")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _warn_if_self_retrying(name: str, runnable: Runnable[Any, Any]) -> None:
    # No RunnableRetry can exist unless its module was loaded: do not import it for this.
    retry_module = sys.modules.get("langchain_core.runnables.retry")
    retry_type = getattr(retry_module, "RunnableRetry", ())
    inner: Any = runnable
    while isinstance(inner, RunnableBinding) and not isinstance(inner, retry_type):
        inner = inner.bound
    retries = getattr(inner, "max_retries", 0)
    # ``None`` on a client that has the field means "the SDK's default" (ChatOpenAI's
    # client then retries twice on its own), which is retrying too.
    unset = retries is None and "max_retries" in getattr(type(inner), "model_fields", {})
    if not (isinstance(inner, retry_type) or unset or (isinstance(retries, int) and retries > 0)):
        return
    with _warn_lock:
        if name in _warned_self_retry:
            return
        _warned_self_retry.add(name)
    setting = "max_retries unset, so its SDK's default" if unset else f"max_retries={retries}"
    warnings.warn(
        f"provider {name!r} retries on its own ({type(inner).__name__}, {setting}); the "
        "router owns retrying, so build it with max_retries=0 to avoid multiplied retries "
        "and delayed failover",
        RuntimeWarning,
        stacklevel=5,
    )
