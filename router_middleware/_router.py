"""``ResilientRouter``: the LangChain Runnable that routes each request across providers.

The algorithm lives in ``_pipeline.py`` and the attempt mechanism in ``_execute.py``;
this module opens the router's run, drives the pipeline with threads or asyncio, and
offers the runtime controls (enable, disable, reset, reload) and the metrics view.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)
from pydantic import ConfigDict, Field, SkipValidation

from ._breaker import BreakerTransition
from ._classify import ErrorClassifier
from ._clock import Clock, SystemClock
from ._config import ModelConfig, ProviderConfig, RouterConfig
from ._display import MetricsSnapshot, router_html
from ._errors import ConfigurationError, UnknownProviderError
from ._execute import (
    EMPTY,
    attempt_config,
    attempt_input,
    call_async,
    call_sync,
    open_stream_async,
    open_stream_sync,
)
from ._pipeline import CALL, EVENT, SLEEP, Pipeline, Served
from ._provider import Provider, ProviderTarget
from ._storage import InMemoryStore, StateStore
from ._strategies import SelectionStrategy, get_strategy
from ._types import LLMRequest, LLMResponse, check_input
from ._waiting import wait_for_slot, wait_for_slot_async

if TYPE_CHECKING:
    from ._settings import RouterSettings

__all__ = ["ResilientRouter"]

ConfigLike = RouterConfig | Mapping[str, Any]
BreakerListener = Callable[[BreakerTransition], None]
_T = TypeVar("_T")


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
    listeners: SkipValidation[_Listeners] = Field(exclude=True, repr=False)
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
        cfg = _with_inferred_providers(RouterConfig.coerce(config or {}), targets)
        parts: dict[str, Any] = {
            "clock": clock or SystemClock(),
            "store": store or InMemoryStore(),
            "listeners": _Listeners(listeners or []),
            "strategy": strategy,
            "classifier": classifier,
            "seed": seed,
        }
        pipeline = _build_pipeline(cfg, targets, {}, **parts)
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
        from ._settings import router_from_settings

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
        from ._settings import RouterSettings, reload_from_settings

        if isinstance(config, RouterSettings):
            reload_from_settings(self, config, providers)
            return
        old = self.pipeline.providers
        targets: dict[str, ProviderTarget] = {name: p.target for name, p in old.items()}
        targets.update(providers or {})
        cfg = RouterConfig.coerce(config)
        keep = {p.name for p in cfg.providers}
        self.pipeline = _build_pipeline(
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
        check_input(input)
        config = ensure_config(config)
        model = self._requested_model(model, config)
        run = get_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        try:
            output = self._invoke(input, config, run, model, kwargs)
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        run.on_chain_end(output)
        return output

    def _invoke(
        self,
        value: Any,
        config: RunnableConfig,
        run: CallbackManagerForChainRun,
        model: str | None,
        kwargs: dict[str, Any],
    ) -> BaseMessage:
        pipeline = self.pipeline
        plan = pipeline.run(model)
        step = next(plan)
        while True:
            if step[0] == CALL:
                _, provider, served_model, number, timeout = step
                try:
                    output: BaseMessage = call_sync(
                        provider,
                        served_model,
                        attempt_input(provider, value, served_model),
                        attempt_config(config, run, provider.name, served_model, number),
                        kwargs,
                        timeout,
                    )
                except BaseException as exc:
                    step = plan.send(exc)
                    continue
                served = _finish(plan)
                pipeline.succeed(served, output)
                return _annotate(output, served)
            step = plan.send(self._wait_or_emit(step, run))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> BaseMessage:
        check_input(input)
        config = ensure_config(config)
        model = self._requested_model(model, config)
        run = await get_async_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        try:
            output = await self._ainvoke(input, config, run, model, kwargs)
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end(output)
        return output

    async def _ainvoke(
        self,
        value: Any,
        config: RunnableConfig,
        run: AsyncCallbackManagerForChainRun,
        model: str | None,
        kwargs: dict[str, Any],
    ) -> BaseMessage:
        pipeline = self.pipeline
        plan = pipeline.run(model)
        step = next(plan)
        while True:
            if step[0] == CALL:
                _, provider, served_model, number, timeout = step
                try:
                    output: BaseMessage = await call_async(
                        provider,
                        served_model,
                        attempt_input(provider, value, served_model),
                        attempt_config(config, run, provider.name, served_model, number),
                        kwargs,
                        timeout,
                    )
                except BaseException as exc:
                    step = plan.send(exc)
                    continue
                served = _finish(plan)
                pipeline.succeed(served, output)
                return _annotate(output, served)
            step = plan.send(await self._await_or_emit(step, run))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        model: str | None = None,
        **kwargs: Any,
    ) -> Iterator[BaseMessageChunk]:
        check_input(input)
        config = ensure_config(config)
        model = self._requested_model(model, config)
        run = get_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        final: Any = None
        try:
            pipeline = self.pipeline
            plan = pipeline.run(model)
            step = next(plan)
            while True:
                if step[0] == CALL:
                    _, provider, served_model, number, timeout = step
                    try:
                        first, chunks = open_stream_sync(
                            provider,
                            served_model,
                            attempt_input(provider, input, served_model),
                            attempt_config(config, run, provider.name, served_model, number),
                            kwargs,
                            timeout,
                        )
                    except BaseException as exc:
                        step = plan.send(exc)
                        continue
                    break
                step = plan.send(self._wait_or_emit(step, run))
            served = _finish(plan)
            if first is not EMPTY:
                pipeline.first_token(served)
                try:
                    final = _annotate(first, served)
                    yield final
                    for chunk in chunks:
                        final = final + chunk
                        yield chunk
                except BaseException as exc:
                    pipeline.fail_after_start(served, exc)
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
                    raise
            pipeline.succeed(served, final)
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
        check_input(input)
        config = ensure_config(config)
        model = self._requested_model(model, config)
        run = await get_async_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        final: Any = None
        try:
            pipeline = self.pipeline
            plan = pipeline.run(model)
            step = next(plan)
            while True:
                if step[0] == CALL:
                    _, provider, served_model, number, timeout = step
                    try:
                        first, chunks = await open_stream_async(
                            provider,
                            served_model,
                            attempt_input(provider, input, served_model),
                            attempt_config(config, run, provider.name, served_model, number),
                            kwargs,
                            timeout,
                        )
                    except BaseException as exc:
                        step = plan.send(exc)
                        continue
                    break
                step = plan.send(await self._await_or_emit(step, run))
            served = _finish(plan)
            if first is not EMPTY:
                pipeline.first_token(served)
                try:
                    final = _annotate(first, served)
                    yield final
                    async for chunk in chunks:
                        final = final + chunk
                        yield chunk
                except BaseException as exc:
                    pipeline.fail_after_start(served, exc)
                    aclose = getattr(chunks, "aclose", None)
                    if aclose is not None:
                        await aclose()
                    raise
            pipeline.succeed(served, final)
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end(final)

    def _wait_or_emit(self, step: tuple[Any, ...], run: CallbackManagerForChainRun) -> Any:
        """Carry out a non-call step on this thread; returns what the pipeline expects back."""
        if step[0] == EVENT:
            _emit(run, step[1], step[2])
        elif step[0] == SLEEP or step[2] is None:
            self.clock.sleep(step[1])
        else:
            return wait_for_slot(step[2], step[1])
        return None

    async def _await_or_emit(
        self, step: tuple[Any, ...], run: AsyncCallbackManagerForChainRun
    ) -> Any:
        """Carry out a non-call step without blocking the loop."""
        if step[0] == EVENT:
            await _aemit(run, step[1], step[2])
        elif step[0] == SLEEP or step[2] is None:
            await self.clock.asleep(step[1])
        else:
            return await wait_for_slot_async(step[2], step[1])
        return None

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


class _Listeners(list[BreakerListener]):
    """The router's breaker listeners, called in order; one that raises is logged, not fatal."""

    def __call__(self, transition: BreakerTransition) -> None:
        for listener in list(self):
            try:
                listener(transition)
            except Exception:
                logging.getLogger("router_middleware").exception(
                    "breaker listener %r failed", listener
                )


def _build_pipeline(
    cfg: RouterConfig,
    targets: Mapping[str, ProviderTarget],
    previous: Mapping[str, Provider],
    *,
    clock: Clock,
    store: StateStore,
    listeners: _Listeners,
    strategy: SelectionStrategy | None,
    classifier: ErrorClassifier | None,
    seed: int | None,
) -> Pipeline:
    missing = [p.name for p in cfg.providers if p.name not in targets and p.handler is None]
    unknown = [n for n in targets if n not in {p.name for p in cfg.providers}]
    problems = [f"providers.{n}: configured, but no runnable or handler was given" for n in missing]
    problems += [f"{n!r}: a runnable or handler was given, but no provider config" for n in unknown]
    if problems:
        raise ConfigurationError(problems)
    built = []
    for pc in cfg.providers:
        provider = Provider(
            pc,
            targets.get(pc.name, pc.handler),
            cfg,
            clock=clock,
            store=store,
            on_transition=listeners,
            rng=None if seed is None else random.Random(f"{seed}:{pc.name}"),
        )
        if pc.name in previous:
            provider.adopt_state(previous[pc.name])
        built.append(provider)
    return Pipeline(built, cfg, strategy or get_strategy(cfg.strategy), clock, classifier)


def _finish(plan: Any) -> Served:
    try:
        plan.send(None)
    except StopIteration as stop:
        return cast(Served, stop.value)
    raise RuntimeError("routing plan did not finish after a successful attempt")


def _annotate(output: _T, served: Served) -> _T:
    metadata = getattr(output, "response_metadata", None)
    if isinstance(metadata, dict):
        metadata["router"] = served.metadata()
    return output


def _response(message: BaseMessage) -> LLMResponse:
    info = message.response_metadata.get("router", {})
    return LLMResponse.from_message(message, info.get("provider"), info.get("model"))


def _emit(run: CallbackManagerForChainRun, name: str, data: Any) -> None:
    if run.handlers:
        run.get_child().on_custom_event(name, data, run_id=run.run_id)


async def _aemit(run: AsyncCallbackManagerForChainRun, name: str, data: Any) -> None:
    if run.handlers:
        await run.get_child().on_custom_event(name, data, run_id=run.run_id)


def _with_inferred_providers(
    cfg: RouterConfig, targets: Mapping[str, ProviderTarget]
) -> RouterConfig:
    """Without provider entries, each given runnable serves the model it names."""
    if cfg.providers or not targets:
        return cfg
    inferred = []
    for name, target in targets.items():
        if isinstance(target, Mapping):
            models = list(target)
        else:
            named = getattr(target, "model_name", None) or getattr(target, "model", None)
            models = [named if isinstance(named, str) and named else name]
        inferred.append(ProviderConfig(name=name, models=[ModelConfig(name=m) for m in models]))
    return RouterConfig.model_validate({**cfg.model_dump(), "providers": inferred})
