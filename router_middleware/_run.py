"""One run scaffold for every entry point: invoke, ainvoke, stream and astream.

Each opens the router's chain run, builds the :class:`~._context.RequestContext` (the one
place before routing, where the response cache looks), drives the plan to delivery,
annotates the answer (the one place after), reports how delivery ended, and closes the
run on every ending. ``batch``/``abatch`` are LangChain's, over invoke/ainvoke.

With a response cache (``_cache``), the run asks it once the context is built: a hit is
the run's whole answer (replayed as chunks when streamed); otherwise its ticket is handed
the answer delivered in full, or released on any other ending. Without one, the cost is
one attribute read.

Observers that hear requests (tracers) are told when each starts and how it ends, around
all its attempt events, on the caller's thread or task; without one, that costs one call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.messages import BaseMessage, BaseMessageChunk, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)

from ._cache_entry import Hit
from ._chain_run import astart, message_of, relays_tokens, start
from ._context import Limits, RequestContext
from ._drive import adrive, afinish, delivered, drive, finish
from ._errors import InvalidInputError
from ._history import last_tool_provider
from ._relay import Relay
from ._resume import streaming_of
from ._routing import CONTROL_KEYS, requested
from ._types import check_input

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from ._router import ResilientRouter

__all__ = ["ainvoke_run", "astream_run", "invoke_run", "stream_run"]


def _context(
    router: ResilientRouter,
    pipeline: Pipeline,
    value: Any,
    config: RunnableConfig | None,
    model: str | None,
    kwargs: dict[str, Any],
    *,
    stream: bool,
    limits: Limits | None = None,
) -> RequestContext:
    check_input(value)
    config = ensure_config(config)
    configurable = config.get("configurable")
    if model is None:
        if configurable and "model" in configurable:
            model = configurable["model"]
        else:
            model = pipeline.default_model
    if model is not None and not isinstance(model, str):
        raise InvalidInputError(f"model must be a str, not {type(model).__name__}")
    prefer = None
    if (
        type(value) is list
        and value
        and isinstance(value[-1], ToolMessage)
        and pipeline.config.tool_loop.stick_to_provider
    ):
        prefer = last_tool_provider(value)
    routing = None
    # Three truth tests for the many requests without controls (empty options,
    # configurable and metadata); the controls are parsed, and taken out of the options,
    # only when set.
    metadata = config.get("metadata")
    if (
        (kwargs and not CONTROL_KEYS.isdisjoint(kwargs))
        or (configurable and not CONTROL_KEYS.isdisjoint(configurable))
        or (metadata and not CONTROL_KEYS.isdisjoint(metadata))
    ):
        routing, kwargs = requested(kwargs, configurable, metadata)
    deadline, attempts = pipeline.deadline_seconds, pipeline.max_attempts
    if limits is not None:
        deadline = limits.deadline_seconds if limits.deadline_seconds is not None else deadline
        attempts = limits.max_attempts if limits.max_attempts is not None else attempts
    streaming = pipeline.streaming  # None unless the router resumes broken streams
    if (kwargs and "streaming" in kwargs) or (configurable and "streaming" in configurable):
        kwargs = dict(kwargs)  # a provider never sees the control
        asked = kwargs.pop("streaming", None)
        if asked is None and configurable:
            asked = configurable["streaming"]
        streaming = streaming_of(asked, pipeline.config.streaming)
    ctx = RequestContext(
        model,
        value,
        kwargs,
        config,
        stream=stream,
        unsupported=router.unsupported,
        prefer=prefer,
        deadline_seconds=deadline,
        max_attempts=attempts,
        counter=pipeline.counter,
        tools=router.tool_schemas,
        routing=routing,
    )
    if streaming is not None and streaming.resume != "off":
        ctx.streaming = streaming
    return ctx


def invoke_run(
    router: ResilientRouter,
    value: Any,
    config: RunnableConfig | None,
    model: str | None,
    kwargs: dict[str, Any],
    limits: Limits | None = None,
    *,
    relay_tokens: bool = True,
) -> BaseMessage:
    # Each read of a router field goes through pydantic: the pipeline is read once.
    pipeline = router.pipeline
    ctx = _context(router, pipeline, value, config, model, kwargs, stream=False, limits=limits)
    manager = get_callback_manager_for_config(ctx.config)
    if relay_tokens and manager.handlers and relays_tokens(router, manager):
        ctx.stream = True
        final: Any = None
        for chunk in stream_run(router, value, config, model, kwargs, prepared=(ctx, manager)):
            final = chunk if final is None else final + chunk
        return message_of(final)
    run = start(router, ctx, manager)
    told = pipeline.observer.started(ctx.model, False)  # None unless a tracer listens
    ticket = None
    if (cache := pipeline.cache) is not None:
        found = cache.begin(router, ctx)
        if isinstance(found, Hit):
            output: BaseMessage = found.value()
            if told is not None:
                told.finished(None, cached=True)
            run.on_chain_end(output)
            return output
        ticket = found
    clock = pipeline.clock
    plan = pipeline.run(ctx)
    try:
        deliver = drive(plan, router.bindings, ctx, clock, run)
        output = delivered(deliver)
        finish(plan, None, clock, run)
    except BaseException as exc:
        if ticket is not None:
            ticket.release()
        plan.close()  # may still report an attempt: the request ends after it
        if told is not None:
            told.finished(exc)
        run.on_chain_error(exc)
        raise
    if ticket is not None:
        ticket.keep(deliver)
    if told is not None:
        told.finished(None)
    run.on_chain_end(output)
    return output


async def ainvoke_run(
    router: ResilientRouter,
    value: Any,
    config: RunnableConfig | None,
    model: str | None,
    kwargs: dict[str, Any],
    limits: Limits | None = None,
    *,
    relay_tokens: bool = True,
) -> BaseMessage:
    # Each read of a router field goes through pydantic: the pipeline is read once.
    pipeline = router.pipeline
    ctx = _context(router, pipeline, value, config, model, kwargs, stream=False, limits=limits)
    manager = get_async_callback_manager_for_config(ctx.config)
    if relay_tokens and manager.handlers and relays_tokens(router, manager):
        ctx.stream = True
        final: Any = None
        chunks = astream_run(router, value, config, model, kwargs, prepared=(ctx, manager))
        async for chunk in chunks:
            final = chunk if final is None else final + chunk
        return message_of(final)
    run = await astart(router, ctx, manager)
    told = pipeline.observer.started(ctx.model, False)  # None unless a tracer listens
    ticket = None
    if (cache := pipeline.cache) is not None:
        found = await cache.abegin(router, ctx)
        if isinstance(found, Hit):
            output: BaseMessage = found.value()
            if told is not None:
                told.finished(None, cached=True)
            await run.on_chain_end(output)
            return output
        ticket = found
    clock = pipeline.clock
    plan = pipeline.run(ctx)
    try:
        deliver = await adrive(plan, router.bindings, ctx, clock, run)
        output = delivered(deliver)
        await afinish(plan, None, clock, run)
    except BaseException as exc:
        if ticket is not None:
            ticket.release()
        plan.close()  # may still report an attempt: the request ends after it
        if told is not None:
            told.finished(exc)
        await run.on_chain_error(exc)
        raise
    if ticket is not None:
        ticket.keep(deliver)
    if told is not None:
        told.finished(None)
    await run.on_chain_end(output)
    return output


def stream_run(
    router: ResilientRouter,
    value: Any,
    config: RunnableConfig | None,
    model: str | None,
    kwargs: dict[str, Any],
    limits: Limits | None = None,
    *,
    prepared: tuple[RequestContext, CallbackManager] | None = None,
) -> Iterator[BaseMessageChunk]:
    """The chunks of one routed stream; ``prepared`` (an invoke whose tokens are relayed:
    its context and callbacks) ends the run with the message rather than the chunk sum."""
    pipeline = router.pipeline
    if prepared is None:
        ctx = _context(router, pipeline, value, config, model, kwargs, stream=True, limits=limits)
        manager = get_callback_manager_for_config(ctx.config)
    else:
        ctx, manager = prepared
    run = start(router, ctx, manager)
    told = pipeline.observer.started(ctx.model, True)  # None unless a tracer listens
    ticket = None
    final: Any = None
    if (cache := pipeline.cache) is not None:
        found = cache.begin(router, ctx)
        if isinstance(found, Hit):
            try:
                for chunk in found.chunks():
                    final = chunk if final is None else final + chunk
                    yield chunk
            except BaseException as exc:  # the consumer closed early
                if told is not None:
                    told.finished(exc)
                run.on_chain_error(exc)
                raise
            if told is not None:
                told.finished(None, cached=True)
            run.on_chain_end(final if prepared is None else message_of(final))
            return
        ticket = found
    clock = pipeline.clock
    plan = pipeline.run(ctx)
    try:
        relay = Relay(drive(plan, router.bindings, ctx, clock, run))
        try:
            yield from relay.sync(plan, router.bindings, ctx, clock, run)
        finally:
            final = relay.final
        if ticket is not None:
            ticket.keep_stream(final, relay.outcome)
    except BaseException as exc:
        if ticket is not None:
            ticket.release()
        plan.close()
        if told is not None:
            told.finished(exc)
        run.on_chain_error(exc)
        raise
    if told is not None:
        told.finished(None)
    run.on_chain_end(final if prepared is None else message_of(final))


async def astream_run(
    router: ResilientRouter,
    value: Any,
    config: RunnableConfig | None,
    model: str | None,
    kwargs: dict[str, Any],
    limits: Limits | None = None,
    *,
    prepared: tuple[RequestContext, AsyncCallbackManager] | None = None,
) -> AsyncIterator[BaseMessageChunk]:
    """Async :func:`stream_run`."""
    pipeline = router.pipeline
    if prepared is None:
        ctx = _context(router, pipeline, value, config, model, kwargs, stream=True, limits=limits)
        manager = get_async_callback_manager_for_config(ctx.config)
    else:
        ctx, manager = prepared
    run = await astart(router, ctx, manager)
    told = pipeline.observer.started(ctx.model, True)  # None unless a tracer listens
    ticket = None
    final: Any = None
    if (cache := pipeline.cache) is not None:
        found = await cache.abegin(router, ctx)
        if isinstance(found, Hit):
            try:
                for chunk in found.chunks():
                    final = chunk if final is None else final + chunk
                    yield chunk
            except BaseException as exc:  # the consumer closed early
                if told is not None:
                    told.finished(exc)
                await run.on_chain_error(exc)
                raise
            if told is not None:
                told.finished(None, cached=True)
            await run.on_chain_end(final if prepared is None else message_of(final))
            return
        ticket = found
    clock = pipeline.clock
    plan = pipeline.run(ctx)
    try:
        relay = Relay(await adrive(plan, router.bindings, ctx, clock, run))
        relayed = relay.asynchronous(plan, router.bindings, ctx, clock, run)
        try:
            async for chunk in relayed:
                yield chunk
        finally:
            final = relay.final
            await relayed.aclose()  # closed early: it settles the attempt now, not at GC
        if ticket is not None:
            ticket.keep_stream(final, relay.outcome)
    except BaseException as exc:
        if ticket is not None:
            ticket.release()
        plan.close()
        if told is not None:
            told.finished(exc)
        await run.on_chain_error(exc)
        raise
    if told is not None:
        told.finished(None)
    await run.on_chain_end(final if prepared is None else message_of(final))
