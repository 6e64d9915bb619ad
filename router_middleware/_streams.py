"""Mechanism of one streamed attempt: its first chunk, the rest, and its closing.

A stream's slot is released after the provider's stream is closed, on every ending
(see ``_lease``). A sync stream with first-token or idle limits is read by one reader
thread that fetches a chunk only when the consumer asks for one and closes the provider
stream itself before it tells the lease the call has ended; without such limits it is
read on the caller's thread, and the deadline is checked at each chunk. An async stream
is read on the event loop, every wait bounded by the idle limit and the deadline.
"""

from __future__ import annotations

import contextvars
import json
import math
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

from ._binding import as_chunk
from ._clock import Clock
from ._errors import IncompleteStreamError, ProviderTimeoutError
from ._execute import tighter, within
from ._lease import Lease
from ._pipeline import EMPTY

__all__ = [
    "END",
    "AsyncChunks",
    "SyncChunks",
    "malformed",
    "open_stream_async",
    "open_stream_sync",
]

END: Any = object()
"""What a stream's ``next`` returns once the stream has finished."""


# -- sync streams ------------------------------------------------------------------------


class SyncChunks:
    """The rest of a sync stream, read on the caller's thread.

    ``next`` returns the next chunk or :data:`END`; ``close`` closes the provider's
    stream. The deadline (a clock time) is checked as each chunk arrives: a blocking
    iterator cannot be interrupted without a thread.
    """

    __slots__ = ("_clock", "_deadline", "_provider", "_source")

    def __init__(self, source: Iterator[Any], provider: str, clock: Clock, deadline: float):
        self._source = source
        self._provider = provider
        self._clock = clock
        self._deadline = deadline

    def next(self) -> Any:
        try:
            chunk = next(self._source, END)
        except json.JSONDecodeError as exc:
            raise malformed(self._provider, exc) from exc
        if chunk is END:
            return END
        if self._clock.now() > self._deadline:
            self.close()
            raise ProviderTimeoutError(self._provider, "deadline", 0.0)
        return as_chunk(chunk, self._provider)

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


class _ReadChunks:
    """The rest of a sync stream, fetched by one reader thread, one chunk per request.

    The reader never reads ahead: it asks the provider for a chunk only when the consumer
    asks for one, so a consumer that stops early leaves nothing buffered. On close, end
    or timeout the reader closes the provider stream itself (a generator can only be
    closed by the thread running it), then tells the lease the call has ended.
    """

    _CHUNK, _DONE, _ERROR = 0, 1, 2

    def __init__(
        self,
        open_source: Callable[[], Iterator[Any]],
        lease: Lease,
        first: float | None,
        idle: float | None,
        clock: Clock,
        deadline: float,
    ) -> None:
        self._provider = lease.provider.name
        self._limits = (first, idle)
        self._phase = 0
        self._clock = clock
        self._deadline = deadline
        self._demand = threading.Semaphore(0)
        self._items: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._closed = False
        self._lease = lease
        lease.detach()
        context = contextvars.copy_context()
        try:
            threading.Thread(
                target=context.run,
                args=(self._pump, open_source),
                name=f"router-stream-{self._provider}",
                daemon=True,
            ).start()
        except BaseException:  # no reader, so no stream: nothing will report its end
            lease.call_ended()
            raise

    def _pump(self, open_source: Callable[[], Iterator[Any]]) -> None:
        source: Iterator[Any] | None = None
        try:
            source = iter(open_source())
            while True:
                self._demand.acquire()
                if self._closed:
                    return
                item = next(source, END)
                if item is END:
                    self._items.put((self._DONE, None))
                    return
                self._items.put((self._CHUNK, item))
        except BaseException as exc:
            self._items.put((self._ERROR, exc))
        finally:
            try:
                close = getattr(source, "close", None)
                if close is not None:
                    close()
            finally:
                self._lease.call_ended()

    def next(self) -> Any:
        limit, phase = self._limits[self._phase], ("first_token", "idle")[self._phase]
        left = self._deadline - self._clock.now()
        if left != math.inf and (limit is None or left < limit):
            limit, phase = max(left, 0.0), "deadline"
        self._demand.release()
        try:
            kind, item = self._items.get(timeout=limit)
        except queue.Empty:
            self.close()
            raise ProviderTimeoutError(self._provider, phase, limit or 0.0) from None
        self._phase = 1
        if kind == self._CHUNK:
            return as_chunk(item, self._provider)
        if kind == self._DONE:
            return END
        if isinstance(item, json.JSONDecodeError):
            raise malformed(self._provider, item) from item
        raise item

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._demand.release()


def open_stream_sync(
    lease: Lease,
    runnable: Runnable[Any, Any],
    value: Any,
    config: RunnableConfig,
    kwargs: dict[str, Any],
    timeout: float | None,
    clock: Clock,
    deadline: float,
) -> tuple[Any, SyncChunks | _ReadChunks]:
    """Start a stream and wait for its first chunk (``EMPTY`` if it yields none)."""
    timeouts = lease.provider.timeouts
    token = var_child_runnable_config.set(config)
    try:
        if timeouts.first_token_seconds is None and timeouts.idle_seconds is None:
            source = iter(runnable.stream(value, config, **kwargs))
            chunks: SyncChunks | _ReadChunks = SyncChunks(
                source, lease.provider.name, clock, deadline
            )
        else:
            chunks = _ReadChunks(
                lambda: runnable.stream(value, config, **kwargs),
                lease,
                tighter(timeouts.first_token_seconds, timeout),
                timeouts.idle_seconds,
                clock,
                deadline,
            )
        try:
            first = chunks.next()
        except BaseException:
            chunks.close()
            raise
        return (EMPTY if first is END else first), chunks
    finally:
        var_child_runnable_config.reset(token)


# -- async streams -----------------------------------------------------------------------


class AsyncChunks:
    """The rest of an async stream: ``await next()`` gives the next chunk or :data:`END`,
    within the idle limit and the request's deadline; ``await close()`` closes the
    provider's stream, and must be awaited on every ending."""

    __slots__ = ("_clock", "_config", "_deadline", "_idle", "_provider", "_source")

    def __init__(
        self,
        source: AsyncIterator[Any],
        provider: str,
        idle: float | None,
        config: RunnableConfig,
        clock: Clock,
        deadline: float,
    ) -> None:
        self._source = source
        self._provider = provider
        self._idle = idle
        self._config = config
        self._clock = clock
        self._deadline = deadline

    async def next(self) -> Any:
        limit, phase = self._idle, "idle"
        left = self._deadline - self._clock.now()
        if left != math.inf and (limit is None or left < limit):
            limit, phase = max(left, 0.0), "deadline"
        token = var_child_runnable_config.set(self._config)
        try:
            chunk = await anext_within(self._source, self._provider, phase, limit)
        finally:
            var_child_runnable_config.reset(token)
        return chunk if chunk is END else as_chunk(chunk, self._provider)

    async def close(self) -> None:
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()


async def open_stream_async(
    lease: Lease,
    runnable: Runnable[Any, Any],
    value: Any,
    config: RunnableConfig,
    kwargs: dict[str, Any],
    timeout: float | None,
    clock: Clock,
    deadline: float,
) -> tuple[Any, AsyncChunks]:
    """Start an async stream and await its first chunk (``EMPTY`` if it yields none)."""
    name = lease.provider.name
    timeouts = lease.provider.timeouts
    token = var_child_runnable_config.set(config)
    try:
        source = runnable.astream(value, config, **kwargs).__aiter__()
        chunks = AsyncChunks(source, name, timeouts.idle_seconds, config, clock, deadline)
        try:
            first_limit = tighter(timeouts.first_token_seconds, timeout)
            first = await anext_within(source, name, "first_token", first_limit)
            if first is not END:
                first = as_chunk(first, name)
        except BaseException:
            await chunks.close()
            raise
    finally:
        var_child_runnable_config.reset(token)
    return (EMPTY if first is END else first), chunks


async def anext_within(
    source: AsyncIterator[Any], provider: str, phase: str, limit: float | None
) -> Any:
    """The next chunk of ``source`` within ``limit`` seconds, or :data:`END`."""
    try:
        if limit is None:
            return await source.__anext__()
        return await within(provider, phase, limit, source.__anext__())
    except StopAsyncIteration:
        return END
    except json.JSONDecodeError as exc:
        raise malformed(provider, exc) from exc


def malformed(provider: str, error: json.JSONDecodeError) -> IncompleteStreamError:
    """A chunk that does not parse (the OpenAI SDK raises ``json.JSONDecodeError``, a
    ``ValueError`` that would read as a bug in the caller's code): the provider's stream
    is broken, so it fails over (and may resume) like any other that ends early.

    Example:
        >>> import json
        >>> try:
        ...     json.loads('{"choices": [')
        ... except json.JSONDecodeError as exc:
        ...     str(malformed("a", exc))
        "provider 'a': malformed stream chunk (Expecting value: line 1 column 14 (char 13))"
    """
    return IncompleteStreamError(provider, f"malformed stream chunk ({error})")
