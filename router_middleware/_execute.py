"""Mechanism of one provider attempt: its child run, its timeouts, its stream.

The pipeline decides *which* provider and *whether* to try again; this module only runs
an attempt, sync or async, as a child run of the router's run (tagged with the provider
and the attempt number), and turns silence into :class:`ProviderTimeoutError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

from ._errors import ProviderTimeoutError
from ._provider import Provider
from ._types import LLMRequest, request_from_input

__all__ = [
    "EMPTY",
    "attempt_config",
    "attempt_input",
    "call_async",
    "call_sync",
    "open_stream_async",
    "open_stream_sync",
]

EMPTY: Any = object()
"""First 'chunk' of a stream that produced nothing: a valid, empty answer."""

if sys.version_info >= (3, 11):
    _timeout = asyncio.timeout
else:  # pragma: no cover - exercised on 3.10 only
    _timeout = None


def attempt_config(
    config: RunnableConfig,
    run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
    provider: str,
    model: str,
    number: int,
) -> RunnableConfig:
    """The config of one attempt: a child of the router's run, tagged for tracing.

    The tags and metadata ride in the config rather than on the child callback manager
    (where LangChain merges metadata dicts on every call): the provider's run gets them
    when it configures its callbacks, and so do runs nested inside it.
    """
    out: RunnableConfig = {
        **config,
        "callbacks": run_manager.get_child(),
        "tags": [
            *config.get("tags", ()),
            f"router:provider={provider}",
            f"router:attempt={number}",
        ],
        "metadata": {
            **config.get("metadata", {}),
            "router_provider": provider,
            "router_model": model,
            "router_attempt": number,
        },
    }
    out.pop("run_name", None)
    out.pop("run_id", None)
    return out


def attempt_input(
    provider: Provider, value: Any, model: str, options: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """What this provider takes, and the keyword options to call it with.

    A handler takes everything in its ``LLMRequest`` (a handler has no ``**kwargs``): the
    call's options land in ``max_tokens``/``temperature`` or in ``metadata``. A runnable
    takes chat input, with the options (and an ``LLMRequest``'s own) as invoke kwargs.
    """
    if provider.is_handler:
        if isinstance(value, LLMRequest):
            request = dataclasses.replace(value, model=model)
        else:
            request = request_from_input(value, model)
        return (request.with_options(options) if options else request), {}
    if isinstance(value, LLMRequest):
        return value.to_messages(), {**value.options(), **options}
    return value, options


def call_sync(
    provider: Provider,
    model: str,
    value: Any,
    config: RunnableConfig,
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Any:
    """Invoke one attempt on this thread; preempt it only if an attempt timeout is set.

    A sync call cannot be cancelled: on timeout it is abandoned in its worker thread.
    """
    runnable = provider.runnable(model)
    token = var_child_runnable_config.set(config)
    try:
        if provider.timeouts.attempt_seconds is None or timeout is None:
            return runnable.invoke(value, config, **kwargs)
        return _in_thread(provider.name, timeout, runnable.invoke, value, config, **kwargs)
    finally:
        var_child_runnable_config.reset(token)


async def call_async(
    provider: Provider,
    model: str,
    value: Any,
    config: RunnableConfig,
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Any:
    """Await one attempt, cancelling it if it outlives ``timeout``."""
    runnable = provider.runnable(model)
    token = var_child_runnable_config.set(config)
    try:
        if timeout is None:
            return await runnable.ainvoke(value, config, **kwargs)
        return await _within(
            provider.name, "attempt", timeout, runnable.ainvoke(value, config, **kwargs)
        )
    finally:
        var_child_runnable_config.reset(token)


async def _within(provider: str, phase: str, timeout: float, awaitable: Any) -> Any:
    try:
        if _timeout is not None:
            async with _timeout(timeout):
                return await awaitable
        return await asyncio.wait_for(awaitable, timeout)  # pragma: no cover - 3.10
    except TimeoutError as exc:
        if isinstance(exc, ProviderTimeoutError):
            raise
        raise ProviderTimeoutError(provider, phase, timeout) from None


def _in_thread(provider: str, timeout: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
    done = threading.Event()
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, fn(*args, **kwargs)))
        except BaseException as exc:  # handed to the caller's thread
            box.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name=f"router-attempt-{provider}", daemon=True).start()
    if not done.wait(timeout):
        raise ProviderTimeoutError(provider, "attempt", timeout)
    ok, value = box[0]
    if ok:
        return value
    raise value


# -- streams ----------------------------------------------------------------------------


def open_stream_sync(
    provider: Provider,
    model: str,
    value: Any,
    config: RunnableConfig,
    kwargs: dict[str, Any],
    timeout: float | None,
) -> tuple[Any, Iterator[Any]]:
    """Start a stream and wait for its first chunk (``EMPTY`` if it yields none)."""
    runnable = provider.runnable(model)
    first_limit = _tighter(provider.timeouts.first_token_seconds, timeout)
    idle = provider.timeouts.idle_seconds
    token = var_child_runnable_config.set(config)
    try:
        chunks: Iterator[Any] = iter(runnable.stream(value, config, **kwargs))
        if first_limit is not None or idle is not None:
            chunks = _TimedIterator(chunks, provider.name, first_limit, idle)
        return next(chunks, EMPTY), chunks
    finally:
        var_child_runnable_config.reset(token)


async def open_stream_async(
    provider: Provider,
    model: str,
    value: Any,
    config: RunnableConfig,
    kwargs: dict[str, Any],
    timeout: float | None,
) -> tuple[Any, AsyncIterator[Any]]:
    """Start an async stream and await its first chunk (``EMPTY`` if it yields none)."""
    runnable = provider.runnable(model)
    first_limit = _tighter(provider.timeouts.first_token_seconds, timeout)
    token = var_child_runnable_config.set(config)
    try:
        chunks = runnable.astream(value, config, **kwargs).__aiter__()
        try:
            if first_limit is None:
                first = await chunks.__anext__()
            else:
                first = await _within(provider.name, "first_token", first_limit, chunks.__anext__())
        except StopAsyncIteration:
            return EMPTY, chunks
        except BaseException:
            await _aclose(chunks)
            raise
        return first, _idle_guard(chunks, provider.name, provider.timeouts.idle_seconds, config)
    finally:
        var_child_runnable_config.reset(token)


async def _idle_guard(
    chunks: AsyncIterator[Any], provider: str, idle: float | None, config: RunnableConfig
) -> AsyncIterator[Any]:
    try:
        while True:
            token = var_child_runnable_config.set(config)
            try:
                if idle is None:
                    chunk = await chunks.__anext__()
                else:
                    chunk = await _within(provider, "idle", idle, chunks.__anext__())
            except StopAsyncIteration:
                return
            finally:
                var_child_runnable_config.reset(token)
            yield chunk
    finally:
        await _aclose(chunks)


async def _aclose(chunks: AsyncIterator[Any]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def _tighter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class _TimedIterator:
    """A sync stream read by a worker thread, so silence can time out the reader.

    Used only when a first-token or idle timeout is configured: a blocking iterator
    cannot be interrupted, so the reader waits on a queue instead.
    """

    def __init__(
        self, source: Iterator[Any], provider: str, first: float | None, idle: float | None
    ) -> None:
        self._queue: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._provider = provider
        self._limit = first
        self._idle = idle
        self._phase = "first_token"
        self._stop = threading.Event()
        thread = threading.Thread(
            target=self._pump, args=(source,), name=f"router-stream-{provider}", daemon=True
        )
        thread.start()

    def _pump(self, source: Iterator[Any]) -> None:
        try:
            for chunk in source:
                self._queue.put((0, chunk))
                if self._stop.is_set():
                    break
            self._queue.put((1, None))
        except BaseException as exc:
            self._queue.put((2, exc))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        limit = self._limit
        try:
            kind, item = self._queue.get(timeout=limit)
        except queue.Empty:
            self._stop.set()
            raise ProviderTimeoutError(self._provider, self._phase, limit or 0.0) from None
        self._phase, self._limit = "idle", self._idle
        if kind == 0:
            return item
        if kind == 1:
            raise StopIteration
        raise item

    def close(self) -> None:
        self._stop.set()
