"""The router as a ``BaseChatModel``: for code that checks ``isinstance`` or reads ``profile``.

Agent factories (``create_agent``, ``create_react_agent`` with ``response_format``),
``SummarizationMiddleware`` and deepagents accept only chat models, and read
``model.profile`` (context window, native structured output). :class:`RouterChatModel`
is a chat model over a :class:`~._router.ResilientRouter`.

Invariants:

- It routes exactly like its router: its ``invoke``, ``ainvoke``, ``stream`` and
  ``astream`` are the router's run, with no LLM run of its own. Each provider attempt is
  one chat-model run under the router's run, so token counters
  (``get_usage_metadata_callback``, LangSmith) count each answer once.
- ``bind_tools`` and ``with_structured_output`` are the router's (each provider binds
  through its own implementation); ``bind_tools`` returns a ``RunnableBinding`` over a
  chat model, as partner packages do.
- ``profile`` is merged conservatively from the providers that serve the model: the
  smallest token limits, and a capability only if every one of them has it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from pydantic import ConfigDict, Field, SkipValidation

from ._context import Limits
from ._run import ainvoke_run, astream_run, invoke_run, stream_run
from ._shape import chat_model_of

if TYPE_CHECKING:
    from ._router import ResilientRouter

__all__ = ["RouterChatModel", "merged_profile"]

_LIMITS = ("max_input_tokens", "max_output_tokens")


class RouterChatModel(BaseChatModel):
    """A ``BaseChatModel`` that routes like its router (``ResilientRouter.as_chat_model()``).

    ``temperature``, ``max_tokens`` and ``stop`` are sent to whichever provider serves;
    ``timeout`` is each request's deadline (``deadline_seconds``: a sync call is cut short
    only where its provider has an attempt timeout) and ``max_retries`` caps its provider
    calls at ``max_retries + 1`` (the router's own limits otherwise); ``streaming=True``
    makes ``invoke`` stream from the provider. ``generate()`` works too, under an LLM run
    of its own whose message carries no ``usage_metadata`` (the provider's run reports it).

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> from router_middleware import ResilientRouter
        >>> router = ResilientRouter({"a": FakeListChatModel(responses=["x"])})
        >>> chat = RouterChatModel(router=router)
        >>> chat.invoke("hi").response_metadata["router"]["provider"]
        'a'
    """

    router: SkipValidation[ResilientRouter] = Field(exclude=True, repr=False)
    model_name: str | None = Field(default=None, alias="model")
    """The logical model requests ask for (the router's default model when ``None``)."""
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int | None = None
    streaming: bool = False

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    @property
    def _llm_type(self) -> str:
        return "resilient-router"

    def _resolve_model_profile(self) -> ModelProfile | None:
        return merged_profile(self.router, self.model_name)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="router-middleware",
            ls_model_name=kwargs.get("model") or self._model or "resilient-router",
            ls_model_type="chat",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    @property
    def _model(self) -> str | None:
        return self.model_name or self.router.pipeline.config.default_model

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = {
            k: v
            for k, v in (
                ("temperature", self.temperature),
                ("max_tokens", self.max_tokens),
                ("stop", self.stop or None),
            )
            if v is not None
        }
        options.update(kwargs)
        return options

    def _limits(self) -> Limits | None:
        if self.timeout is None and self.max_retries is None:
            return None
        attempts = None if self.max_retries is None else self.max_retries + 1
        return Limits(self.timeout, attempts)

    # -- the router's run, no LLM run of our own ------------------------------------------

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        if stop is not None:
            kwargs["stop"] = stop
        if self.streaming:
            final: Any = None
            for chunk in self.stream(input, config, **kwargs):
                final = chunk if final is None else final + chunk
            return _as_ai_message(final)
        model = kwargs.pop("model", None) or self._model
        answer = invoke_run(
            self.router, input, config, model, self._options(kwargs), self._limits()
        )
        return answer  # type: ignore[return-value]

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        if stop is not None:
            kwargs["stop"] = stop
        if self.streaming:
            final: Any = None
            async for chunk in self.astream(input, config, **kwargs):
                final = chunk if final is None else final + chunk
            return _as_ai_message(final)
        model = kwargs.pop("model", None) or self._model
        answer = await ainvoke_run(
            self.router, input, config, model, self._options(kwargs), self._limits()
        )
        return answer  # type: ignore[return-value]

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        if stop is not None:
            kwargs["stop"] = stop
        model = kwargs.pop("model", None) or self._model
        chunks = stream_run(
            self.router, input, config, model, self._options(kwargs), self._limits()
        )
        return cast(Iterator[AIMessageChunk], chunks)

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        if stop is not None:
            kwargs["stop"] = stop
        model = kwargs.pop("model", None) or self._model
        chunks = astream_run(
            self.router, input, config, model, self._options(kwargs), self._limits()
        )
        return cast(AsyncIterator[AIMessageChunk], chunks)

    # ``generate()`` (legacy callers) opens an LLM run of ours and lands here: route under
    # it. The provider's run below already reports the answer's usage, so this run's copy
    # goes without it, or usage callbacks would count it twice.
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config: RunnableConfig = {"callbacks": _child(run_manager)} if run_manager else {}
        message = self.invoke(messages, config, stop=stop, **kwargs)
        return _result_without_usage(message)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config: RunnableConfig = {"callbacks": _child(run_manager)} if run_manager else {}
        message = await self.ainvoke(messages, config, stop=stop, **kwargs)
        return _result_without_usage(message)

    # -- tools and structured output: the router's ----------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The router's :meth:`~ResilientRouter.bind_tools`, as a chat model."""
        router = self.router.bind_tools(tools, tool_choice=tool_choice, **kwargs)
        bound = self.model_copy(update={"router": router, "profile": self.profile})
        return RunnableBinding(bound=bound, kwargs={}, config={})

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """The router's :meth:`~ResilientRouter.with_structured_output`, with this model's
        call options."""
        structured = self.router.with_structured_output(
            schema, method=method, include_raw=include_raw, **kwargs
        )
        options = self._options({})
        if self._model is not None:
            options["model"] = self._model
        return structured.bind(**options) if options else structured


def merged_profile(router: ResilientRouter, model: str | None) -> ModelProfile | None:
    """The profile every provider serving ``model`` satisfies: the smallest limits, and
    a capability only if all of them have it. ``None`` when no provider has a profile."""
    profiles = []
    for name, provider in router.pipeline.providers.items():
        if not provider.enabled or (model is not None and not provider.serves(model)):
            continue
        binding = router.bindings.get(name)
        served = model if model is not None else provider.models[0]
        if binding is None or served in binding.unsupported:
            continue
        profile = getattr(chat_model_of(binding.runnable(served)), "profile", None)
        profiles.append(profile if isinstance(profile, dict) else {})
    if not profiles or not any(profiles):
        return None
    merged: dict[str, Any] = {}
    for key in set().union(*profiles):
        values = [p.get(key) for p in profiles]
        if key in _LIMITS:
            known = [v for v in values if isinstance(v, int)]
            if known:
                merged[key] = min(known)
        elif all(isinstance(v, bool) for v in values):
            merged[key] = all(values)
    return cast(ModelProfile, merged)


def _child(run: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun) -> CallbackManager:
    """Callbacks for runs under ``run`` (an LLM run manager has no ``get_child``)."""
    manager = CallbackManager(handlers=[], parent_run_id=run.run_id)
    manager.set_handlers(run.inheritable_handlers)
    manager.add_tags(run.inheritable_tags)
    manager.add_metadata(run.inheritable_metadata)
    return manager


def _result_without_usage(message: AIMessage) -> ChatResult:
    return ChatResult(
        generations=[ChatGeneration(message=message.model_copy(update={"usage_metadata": None}))]
    )


def _as_ai_message(chunk: Any) -> AIMessage:
    if chunk is None:
        return AIMessage("")
    data = chunk.model_dump(exclude={"type", "tool_call_chunks", "chunk_position"})
    return AIMessage(**data)
