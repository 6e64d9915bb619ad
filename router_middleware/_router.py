"""``ResilientRouter``: the LangChain Runnable that routes each request across providers.

The algorithm lives in ``_pipeline.py``, the run scaffold of every entry point in
``_run.py``, its sync and async drivers in ``_drive.py`` and the attempt mechanism in
``_execute.py``, the runtime controls (enable, disable, reset, reload) and the metrics
view in ``_controls.py``; this module holds the router's parts, and derives routers with
tools or a structured output (``_shape.py``, ``_derived.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, SkipValidation

from ._assembly import (
    BreakerListener,
    Listeners,
    build,
    follow_shared_state,
    state_store,
    with_inferred_providers,
)
from ._binding import Binding, ProviderTarget
from ._chat_model import RouterChatModel
from ._classify import ErrorClassifier
from ._clock import Clock, SystemClock
from ._config import RouterConfig
from ._controls import ConfigLike, RuntimeControls
from ._derived import Derived, reshape, shape_key
from ._metrics import ProviderMetrics
from ._observe import MetricsObserver, Observer, Observers
from ._pipeline import Pipeline
from ._routing import CONTROLS
from ._run import ainvoke_run, astream_run, invoke_run, stream_run
from ._shape import Shape, StructuredShape, ToolShape
from ._storage import StateStore
from ._strategies import SelectionStrategy
from ._tokens import TokenCounter
from ._types import LLMRequest, LLMResponse

if TYPE_CHECKING:
    from .settings import RouterSettings

__all__ = ["ResilientRouter"]


class ResilientRouter(RuntimeControls, RunnableSerializable[LanguageModelInput, BaseMessage]):
    """Routes each request to a provider that serves the model, and protects it.

    A request may narrow the providers (routing controls, see ``_routing``): call keyword
    arguments ``only_providers``, ``exclude_providers``, ``require_tags`` (a provider must
    have every tag in its config), ``exclude_tags``, or the same keys in the run config's
    ``configurable``; they never reach the providers as call options.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> router = ResilientRouter(
        ...     {"a": FakeListChatModel(responses=["from a"]),
        ...      "b": FakeListChatModel(responses=["from b"])},
        ...     {"providers": [{"name": "a", "models": [{"name": "m"}], "priority": 1},
        ...                    {"name": "b", "models": [{"name": "m"}], "priority": 2}]},
        ... )
        >>> router.invoke("hi", model="m").content
        'from a'
        >>> router.invoke("hi").response_metadata["router"]["provider"]
        'b'
        >>> router.invoke("hi", exclude_providers=["a"]).content
        'from b'
    """

    router_config: RouterConfig
    # Plain fields, not private attributes: they are read on every request, and pydantic
    # private-attribute reads go through a slow ``__getattr__``.
    pipeline: SkipValidation[Pipeline] = Field(exclude=True, repr=False)
    bindings: SkipValidation[dict[str, Binding]] = Field(exclude=True, repr=False)
    clock: SkipValidation[Clock] = Field(exclude=True, repr=False)
    store: SkipValidation[StateStore] = Field(exclude=True, repr=False)
    listeners: SkipValidation[Listeners] = Field(exclude=True, repr=False)
    observers: SkipValidation[Observers] = Field(exclude=True, repr=False)
    provider_metrics: SkipValidation[dict[str, ProviderMetrics]] = Field(exclude=True, repr=False)
    strategy: SkipValidation[SelectionStrategy | None] = Field(exclude=True, repr=False)
    classifier: SkipValidation[ErrorClassifier | None] = Field(exclude=True, repr=False)
    token_counter: SkipValidation[TokenCounter | None] = Field(exclude=True, repr=False)
    seed: int | None = Field(default=None, exclude=True, repr=False)
    # A derived router (tools bound, a structured output) keeps what it was derived with,
    # the providers that cannot take it, and its root; a root keeps what it derived.
    shape: SkipValidation[Shape | None] = Field(default=None, exclude=True, repr=False)
    unsupported: SkipValidation[dict[str, dict[str, str]]] = Field(
        default_factory=dict, exclude=True, repr=False
    )
    tool_schemas: SkipValidation[list[dict[str, Any]] | None] = Field(
        default=None, exclude=True, repr=False
    )
    root: SkipValidation[ResilientRouter | None] = Field(default=None, exclude=True, repr=False)
    derived: SkipValidation[Derived] = Field(default_factory=Derived, exclude=True, repr=False)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(
        self,
        providers: Mapping[str, ProviderTarget] | None = None,
        config: ConfigLike | None = None,
        *,
        strategy: SelectionStrategy | None = None,
        classifier: ErrorClassifier | None = None,
        clock: Clock | None = None,
        store: StateStore | None = None,
        listeners: list[BreakerListener] | None = None,
        observers: list[Observer] | None = None,
        token_counter: TokenCounter | None = None,
        seed: int | None = None,
    ) -> None:
        """Build a router.

        Args:
            providers: provider name -> runnable, handler or ``{model: runnable}``.
                Handlers may also come from the config's ``handler`` entries (seed style).
            config: a :class:`RouterConfig` or a mapping in our or the seed's shape. Without
                provider entries, every given provider serves the model its runnable names.
            strategy: a strategy object, overriding ``config.strategy``.
            classifier: consulted before the default error classifier.
            clock, store: time and state backends (tests, shared state).
            listeners: called on every circuit-breaker transition.
            observers: hear every attempt, retry, wait and transition (exporters).
            token_counter: estimates a request's input tokens for token limits, context
                windows and budgets, overriding ``config.token_counter``.
            seed: makes backoff jitter repeatable (simulations, tests).
        """
        targets = dict(providers or {})
        cfg = with_inferred_providers(RouterConfig.coerce(config or {}), targets)
        metrics: dict[str, ProviderMetrics] = {}
        clock = clock or SystemClock()
        if store is None:
            store = state_store(cfg.state, clock)
        parts: dict[str, Any] = {
            "clock": clock,
            "store": store,
            "listeners": Listeners(listeners or []),
            "observers": Observers([MetricsObserver(metrics.get), *(observers or [])]),
            "strategy": strategy,
            "classifier": classifier,
            "token_counter": token_counter,
            "seed": seed,
        }
        pipeline, bindings = build(cfg, targets, {}, metrics=metrics, **parts)
        super().__init__(
            router_config=cfg,
            pipeline=pipeline,
            bindings=bindings,
            provider_metrics=metrics,
            **parts,
        )
        follow_shared_state(store, self._wake, self.observers)

    def _wake(self, provider: str) -> None:
        """Another replica released a slot of ``provider``: wake a request waiting here."""
        found = self.pipeline.providers.get(provider)
        if found is not None:
            found.slots.notify()

    @classmethod
    def create(
        cls,
        handlers: Mapping[str, ProviderTarget],
        config_loader: Callable[[], ConfigLike],
        **kwargs: Any,
    ) -> ResilientRouter:
        """Seed parity: ``ResilientRouter.create(handlers, lambda: config)``."""
        return cls(handlers, config_loader(), **kwargs)

    @classmethod
    def from_settings(
        cls,
        runnables: Mapping[str, ProviderTarget],
        settings: RouterSettings | None = None,
        **kwargs: Any,
    ) -> ResilientRouter:
        """Bind configuration from the environment (or ``settings``) to code, by provider name.

        Example:
            >>> import os
            >>> from langchain_core.language_models import FakeListChatModel
            >>> os.environ["LLM_ROUTER_PROVIDERS__LOCAL__MODELS"] = '[{"name": "m"}]'
            >>> model = FakeListChatModel(responses=["x"])
            >>> router = ResilientRouter.from_settings({"local": model})
            >>> router.invoke("hi", model="m").content
            'x'
            >>> del os.environ["LLM_ROUTER_PROVIDERS__LOCAL__MODELS"]
        """
        from .settings import router_from_settings

        return router_from_settings(runnables, settings, router_class=cls, **kwargs)

    @classmethod
    async def acreate(
        cls,
        handlers: Mapping[str, ProviderTarget],
        config_loader: Callable[[], ConfigLike | Awaitable[ConfigLike]],
        **kwargs: Any,
    ) -> ResilientRouter:
        """Like :meth:`create`, for a loader that may be async."""
        loaded = config_loader()
        if inspect.isawaitable(loaded):
            loaded = await loaded
        return cls(handlers, loaded, **kwargs)

    # -- tools, structured output, chat model -----------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> ResilientRouter:
        """A router over the same providers whose calls have ``tools`` bound.

        Each provider binds them through its own ``bind_tools`` (each formats tools its own
        way), once, not per request; ``tool_choice`` means what LangChain means on every
        provider (``"auto"``, ``"any"``/``"required"``, a tool's name, ``True``). Extra
        keyword arguments (``strict``, ``parallel_tool_calls``, ``response_format``) go to
        every provider's ``bind_tools``. Providers that cannot take them are not
        candidates. Binding again replaces the tools, as on a chat model.

        Example:
            >>> from router_middleware.testing import CallTools, ToolCall, ToolCallingChatModel
            >>> def add(a: int, b: int) -> int:
            ...     "Add two integers."
            ...     return a + b
            >>> fake = ToolCallingChatModel(script=[CallTools([ToolCall("add", {"a": 1, "b": 2})])])
            >>> router = ResilientRouter({"a": fake})
            >>> router.bind_tools([add]).invoke("1 + 2?").tool_calls[0]["args"]
            {'a': 1, 'b': 2}
        """
        if isinstance(self.shape, StructuredShape):
            raise AttributeError(
                "a structured-output router has no bind_tools (nor has a chat model's "
                "with_structured_output result): call bind_tools on the router, not on this"
            )
        root = self.root or self
        shape = ToolShape(tools, tool_choice, kwargs)
        key = shape_key("tools", shape.tools, shape.tool_choice, kwargs)
        return root.derived.get(key, lambda: root._derive(shape))

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: str | None = None,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """A router whose answers are ``schema`` objects, built by each provider's own
        ``with_structured_output`` (pydantic class, TypedDict or JSON schema).

        ``method`` (``"function_calling"``, ``"json_schema"``, ``"json_mode"``; each
        provider's default when ``None``) leaves out providers that lack it. An answer that
        does not parse or validate is that provider's failure, so the request fails over;
        the caller gets a valid object or a ``RouterError`` naming each provider's error.
        ``include_raw=True`` gives ``{"raw", "parsed", "parsing_error"}``. Like a chat
        model's, the result has no ``bind_tools`` of its own use: it is built on the root
        router, so tools bound before are dropped. Streaming it yields the one object.
        """
        root = self.root or self
        shape = StructuredShape(schema, method, include_raw, kwargs)
        key = shape_key("structured", [schema], method, include_raw, kwargs)
        return root.derived.get(key, lambda: root._derive(shape))

    def as_chat_model(self) -> RouterChatModel:
        """This router as a ``BaseChatModel``, for code that checks ``isinstance`` or reads
        ``model.profile`` (agent factories, summarization middleware).

        Example:
            >>> from langchain_core.language_models import BaseChatModel, FakeListChatModel
            >>> router = ResilientRouter({"a": FakeListChatModel(responses=["x"])})
            >>> chat = router.as_chat_model()
            >>> isinstance(chat, BaseChatModel), chat.invoke("hi").content
            (True, 'x')
        """
        return RouterChatModel(router=self)

    def _derive(self, shape: Shape) -> ResilientRouter:
        bindings, unsupported = reshape(self.bindings, self.router_config, shape)
        return self.model_copy(
            update={
                "bindings": bindings,
                "shape": shape,
                "unsupported": unsupported,
                "tool_schemas": shape.schemas() if isinstance(shape, ToolShape) else None,
                "root": self,
                "derived": Derived(),
            }
        )

    # -- the Runnable (each entry point is one run scaffold: see _run.py) -------------------

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> BaseMessage:
        return invoke_run(self, input, config, model, kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> BaseMessage:
        return await ainvoke_run(self, input, config, model, kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> Iterator[BaseMessageChunk]:
        if isinstance(self.shape, StructuredShape):  # one validated object, not its pieces
            return super().stream(input, config, model=model, **kwargs)  # type: ignore[return-value]
        return stream_run(self, input, config, model, kwargs)

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[BaseMessageChunk]:
        if isinstance(self.shape, StructuredShape):
            return super().astream(input, config, model=model, **kwargs)  # type: ignore[return-value]
        return astream_run(self, input, config, model, kwargs)

    # -- seed parity ----------------------------------------------------------------------

    def execute(
        self,
        request: LLMRequest | Mapping[str, Any],
        *,
        only_providers: Iterable[str] | None = None,
        exclude_providers: Iterable[str] | None = None,
        require_tags: Iterable[str] | None = None,
        exclude_tags: Iterable[str] | None = None,
    ) -> LLMResponse:
        """Seed parity: route an ``LLMRequest`` (or dict) and return an ``LLMResponse``.

        The keyword arguments are the routing controls, as on :meth:`invoke`.
        """
        req = LLMRequest.coerce(request)
        controls = _controls(only_providers, exclude_providers, require_tags, exclude_tags)
        message = self.invoke(req, model=req.model, **controls)  # type: ignore[arg-type]
        return _response(message)

    async def aexecute(
        self,
        request: LLMRequest | Mapping[str, Any],
        *,
        only_providers: Iterable[str] | None = None,
        exclude_providers: Iterable[str] | None = None,
        require_tags: Iterable[str] | None = None,
        exclude_tags: Iterable[str] | None = None,
    ) -> LLMResponse:
        """Async :meth:`execute`."""
        req = LLMRequest.coerce(request)
        controls = _controls(only_providers, exclude_providers, require_tags, exclude_tags)
        message = await self.ainvoke(req, model=req.model, **controls)  # type: ignore[arg-type]
        return _response(message)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n}={p.circuit_breaker_state}{'' if p.enabled else '(disabled)'}"
            + ("(unsupported)" if n in self.unsupported else "")
            for n, p in self.pipeline.providers.items()
        )
        shape = f", {self.shape!r}" if self.shape is not None else ""
        return (
            f"ResilientRouter(strategy={self.pipeline.strategy.name!r}{shape}, providers: {parts})"
        )

    __str__ = __repr__


def _controls(*values: Iterable[str] | None) -> dict[str, Iterable[str]]:
    """The routing controls given (in ``CONTROLS`` order), as invoke keyword arguments."""
    return {k: v for k, v in zip(CONTROLS, values, strict=True) if v is not None}


def _response(message: BaseMessage) -> LLMResponse:
    info = message.response_metadata.get("router", {})
    return LLMResponse.from_message(message, info.get("provider"), info.get("model"))


RouterChatModel.model_rebuild(_types_namespace={"ResilientRouter": ResilientRouter})
