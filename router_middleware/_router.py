"""``ResilientRouter``: the LangChain Runnable that routes each request across providers.

The algorithm lives in ``_pipeline.py``, its sync and async adapters in ``_drive.py`` and
the attempt mechanism in ``_execute.py``; this module opens the router's run, hands it to
the pipeline, and offers the runtime controls (enable, disable, reset, reload) and the
metrics view.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)
from pydantic import ConfigDict, Field, SkipValidation

from ._assembly import BreakerListener, Listeners, build_pipeline, with_inferred_providers
from ._classify import ErrorClassifier
from ._clock import Clock, SystemClock
from ._config import RouterConfig
from ._display import MetricsSnapshot, router_html
from ._drive import adrive, annotate, drive
from ._errors import UnknownProviderError
from ._execute import (
    EMPTY,
    call_async,
    call_sync,
    open_stream_async,
    open_stream_sync,
)
from ._pipeline import Pipeline
from ._provider import Provider, ProviderTarget
from ._storage import InMemoryStore, StateStore
from ._strategies import SelectionStrategy
from ._types import LLMRequest, LLMResponse, check_input

if TYPE_CHECKING:
    from .settings import RouterSettings

__all__ = ["ResilientRouter"]

ConfigLike = RouterConfig | Mapping[str, Any]


class ResilientRouter(RunnableSerializable[LanguageModelInput, BaseMessage]):
    """Routes each request to a provider that serves the model, and protects it.

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
    """

    router_config: RouterConfig
    # Plain fields, not private attributes: they are read on every request, and pydantic
    # private-attribute reads go through a slow ``__getattr__``.
    pipeline: SkipValidation[Pipeline] = Field(exclude=True, repr=False)
    clock: SkipValidation[Clock] = Field(exclude=True, repr=False)
    store: SkipValidation[StateStore] = Field(exclude=True, repr=False)
    listeners: SkipValidation[Listeners] = Field(exclude=True, repr=False)
    strategy: SkipValidation[SelectionStrategy | None] = Field(exclude=True, repr=False)
    classifier: SkipValidation[ErrorClassifier | None] = Field(exclude=True, repr=False)
    seed: int | None = Field(default=None, exclude=True, repr=False)

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
            seed: makes backoff jitter repeatable (simulations, tests).
        """
        targets = dict(providers or {})
        cfg = with_inferred_providers(RouterConfig.coerce(config or {}), targets)
        parts: dict[str, Any] = {
            "clock": clock or SystemClock(),
            "store": store or InMemoryStore(),
            "listeners": Listeners(listeners or []),
            "strategy": strategy,
            "classifier": classifier,
            "seed": seed,
        }
        pipeline = build_pipeline(cfg, targets, {}, **parts)
        super().__init__(router_config=cfg, pipeline=pipeline, **parts)

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

    # -- runtime control --------------------------------------------------------------------

    @property
    def providers(self) -> Mapping[str, Provider]:
        """Provider name -> its live state (``.metrics``, ``.circuit_breaker_state``)."""
        return self.pipeline.providers

    def provider(self, name: str) -> Provider:
        try:
            return self.pipeline.providers[name]
        except KeyError:
            raise UnknownProviderError(name, list(self.pipeline.providers)) from None

    def enable(self, name: str) -> None:
        """Put provider ``name`` back in rotation."""
        self.provider(name).enabled = True
        self.pipeline.invalidate()

    def disable(self, name: str) -> None:
        """Take provider ``name`` out of rotation (requests in flight finish)."""
        self.provider(name).enabled = False
        self.pipeline.invalidate()

    def reset_breaker(self, name: str) -> None:
        """Close provider ``name``'s circuit breaker and forget its failures."""
        self.provider(name).breaker.reset()

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener`` on every breaker transition of any provider."""
        self.listeners.append(listener)

    def apply_config(
        self,
        config: ConfigLike | RouterSettings,
        providers: Mapping[str, ProviderTarget] | None = None,
    ) -> None:
        """Apply a new config at runtime, keeping the state of providers that remain.

        ``providers`` adds or replaces runnables; providers absent from the new config
        are dropped; the others keep their metrics and breaker state.
        """
        from .settings import RouterSettings, reload_from_settings

        if isinstance(config, RouterSettings):
            reload_from_settings(self, config, providers)
            return
        old = self.pipeline.providers
        targets: dict[str, ProviderTarget] = {name: p.target for name, p in old.items()}
        targets.update(providers or {})
        cfg = RouterConfig.coerce(config)
        keep = {p.name for p in cfg.providers}
        self.pipeline = build_pipeline(
            cfg,
            {n: t for n, t in targets.items() if n in keep},
            old,
            clock=self.clock,
            store=self.store,
            listeners=self.listeners,
            strategy=self.strategy,
            classifier=self.classifier,
            seed=self.seed,
        )
        self.router_config = cfg

    def reload(
        self,
        config: ConfigLike | RouterSettings,
        providers: Mapping[str, ProviderTarget] | None = None,
    ) -> None:
        """Alias of :meth:`apply_config`."""
        self.apply_config(config, providers)

    def metrics(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of every provider's metrics and health."""
        providers = {}
        for name, p in self.pipeline.providers.items():
            snap = p.metrics.snapshot()
            snap.update(
                enabled=p.enabled,
                circuit_breaker_state=p.circuit_breaker_state,
                in_flight=p.limiter.in_flight,
            )
            providers[name] = snap
        keys = ("total_requests", "successful_requests", "failed_requests", "rate_limited_requests")
        totals = {k: sum(s[k] for s in providers.values()) for k in keys}
        return MetricsSnapshot({"providers": providers, "totals": totals})

    def _repr_html_(self) -> str:
        return router_html(self)

    # -- the Runnable -------------------------------------------------------------------------

    def _requested_model(self, model: str | None, config: RunnableConfig) -> str | None:
        if model is not None:
            return model
        configurable = config.get("configurable")
        if configurable and "model" in configurable:
            return cast(str, configurable["model"])
        return self.pipeline.config.default_model

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> BaseMessage:
        config, model = self._prepare(input, config, model)
        run = get_callback_manager_for_config(config).on_chain_start(
            None, input, name=self._run_name(config), run_id=config.pop("run_id", None)
        )
        try:
            output, served = drive(self.pipeline, call_sync, input, config, run, model, kwargs)
            self.pipeline.succeed(served, output)
            output = annotate(output, served)
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        run.on_chain_end(output)
        return cast(BaseMessage, output)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> BaseMessage:
        config, model = self._prepare(input, config, model)
        run = await get_async_callback_manager_for_config(config).on_chain_start(
            None, input, name=self._run_name(config), run_id=config.pop("run_id", None)
        )
        try:
            output, served = await adrive(
                self.pipeline, call_async, input, config, run, model, kwargs
            )
            self.pipeline.succeed(served, output)
            output = annotate(output, served)
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end(output)
        return cast(BaseMessage, output)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> Iterator[BaseMessageChunk]:
        config, model = self._prepare(input, config, model)
        run = get_callback_manager_for_config(config).on_chain_start(
            None, input, name=self._run_name(config), run_id=config.pop("run_id", None)
        )
        final: Any = None
        try:
            (first, chunks), served = drive(
                self.pipeline, open_stream_sync, input, config, run, model, kwargs
            )
            if first is not EMPTY:
                self.pipeline.first_token(served)
                try:
                    final = annotate(first, served)
                    yield final
                    for chunk in chunks:
                        final = final + chunk
                        yield chunk
                except BaseException as exc:
                    self.pipeline.fail_after_start(served, exc)
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
                    raise
            self.pipeline.succeed(served, final)
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        run.on_chain_end(final)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[BaseMessageChunk]:
        config, model = self._prepare(input, config, model)
        run = await get_async_callback_manager_for_config(config).on_chain_start(
            None, input, name=self._run_name(config), run_id=config.pop("run_id", None)
        )
        final: Any = None
        try:
            (first, chunks), served = await adrive(
                self.pipeline, open_stream_async, input, config, run, model, kwargs
            )
            if first is not EMPTY:
                self.pipeline.first_token(served)
                try:
                    final = annotate(first, served)
                    yield final
                    async for chunk in chunks:
                        final = final + chunk
                        yield chunk
                except BaseException as exc:
                    self.pipeline.fail_after_start(served, exc)
                    aclose = getattr(chunks, "aclose", None)
                    if aclose is not None:
                        await aclose()
                    raise
            self.pipeline.succeed(served, final)
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end(final)

    # -- driving the pipeline --------------------------------------------------------------

    def _prepare(
        self, value: Any, config: RunnableConfig | None, model: str | None
    ) -> tuple[RunnableConfig, str | None]:
        check_input(value)
        config = ensure_config(config)
        return config, self._requested_model(model, config)

    def _run_name(self, config: RunnableConfig) -> str:
        return config.get("run_name") or self.get_name()

    # -- seed parity ----------------------------------------------------------------------

    def execute(self, request: LLMRequest | Mapping[str, Any]) -> LLMResponse:
        """Seed parity: route an ``LLMRequest`` (or dict) and return an ``LLMResponse``."""
        req = LLMRequest.coerce(request)
        message = self.invoke(req, model=req.model)  # type: ignore[arg-type]
        return _response(message)

    async def aexecute(self, request: LLMRequest | Mapping[str, Any]) -> LLMResponse:
        """Async :meth:`execute`."""
        req = LLMRequest.coerce(request)
        message = await self.ainvoke(req, model=req.model)  # type: ignore[arg-type]
        return _response(message)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n}={p.circuit_breaker_state}{'' if p.enabled else '(disabled)'}"
            for n, p in self.pipeline.providers.items()
        )
        return f"ResilientRouter(strategy={self.pipeline.strategy.name!r}, providers: {parts})"

    __str__ = __repr__


def _response(message: BaseMessage) -> LLMResponse:
    info = message.response_metadata.get("router", {})
    return LLMResponse.from_message(message, info.get("provider"), info.get("model"))
