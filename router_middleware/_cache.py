"""The response cache: answers to identical requests reused, and identical requests in
flight at once made into one provider call.

The run scaffold (``_run``) asks :meth:`ResponseCache.begin` (``abegin`` on the event loop)
once the request's context is built, before routing, and gets one of:

- a :class:`Hit`: the answer, served without routing (no limits, breakers, retries or
  provider call); its cost is 0, and ``response_metadata["router"]`` says
  ``"cache": "hit"`` and names the provider and model that made the answer;
- a :class:`Ticket`: the request is routed; the scaffold hands the ticket the answer once
  it is delivered in full (:meth:`Ticket.store`), or releases it (:meth:`Ticket.release`);
- ``None``: the request has no key (:mod:`._cache_key`), and is routed as if uncached.

What is stored is the final message (an ``AIMessage``, its usage and metadata) and, for a
structured router, the parsed value. A hit gives each caller its own deep copy, so a
caller that edits its answer never edits the cache. Never stored: an error, a stream that
broke or that its consumer closed early, an empty stream, and an answer cut short (its
finish reason is ``length``, ``max_tokens``, ``content_filter``... or it holds invalid tool
calls).

Single flight (``cache.single_flight``): the first of identical requests to miss leads,
making the call; the others follow, waiting for it (threads on an ``Event``, tasks on a
future of their own loop: the event loop is never blocked), at most their own
``deadline_seconds``. When the leader stores an answer, each follower gets it as a hit.
When the leader ends without one (it failed, was cancelled, its answer was cut short, its
stream was closed early), the followers are released and each routes for itself, at once
and in parallel: one caller's error, deadline or cancellation is never handed to another,
and every follower keeps the router's own failover. A leader that is never closed (a sync
stream abandoned unread) releases its followers when it is collected, or their deadline
does.

Example:
    >>> from langchain_core.language_models import FakeListChatModel
    >>> from router_middleware import ResilientRouter
    >>> router = ResilientRouter({"a": FakeListChatModel(responses=["one", "two"])},
    ...                          {"cache": {"enabled": True}})
    >>> router.invoke("hi").content, router.invoke("hi").content
    ('one', 'one')
    >>> router.invoke("hi").response_metadata["router"]["cache"]
    'hit'
    >>> router.metrics()["cache"]["hits"], router.metrics()["cache"]["misses"]
    (2, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache, TTLCache
from langchain_core.messages import AIMessage
from langchain_core.messages.utils import message_chunk_to_message

from ._cache_entry import NO_VALUE, Entry, Hit, cut_short
from ._cache_key import Uncacheable, request_key, shape_document
from ._candidates import capable, routed
from ._errors import RouterError
from ._shape import StructuredAnswer

if TYPE_CHECKING:
    from ._clock import Clock
    from ._config_cache import CacheConfig
    from ._context import RequestContext
    from ._router import ResilientRouter
    from ._steps import Deliver

__all__ = ["ResponseCache", "Ticket"]


class _Flight:
    """Identical requests waiting for their leader's answer."""

    __slots__ = ("entry", "event", "followers", "futures", "owner")

    def __init__(self, owner: tuple[int, Any]) -> None:
        self.owner = owner  # the leader's thread and task: what a follower must not block
        self.entry: Entry | None = None
        self.followers = 0
        self.event = threading.Event()
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


class Ticket:
    """A routed request's promise to the cache: :meth:`store` its answer or :meth:`release`."""

    __slots__ = ("_cache", "_flight", "_key", "_open")

    def __init__(self, cache: ResponseCache, key: str, flight: _Flight | None) -> None:
        self._cache, self._key, self._flight, self._open = cache, key, flight, True

    def store(self, message: Any, parsed: Any = NO_VALUE) -> None:
        """Keep ``message`` (and a structured router's ``parsed`` value) unless it was cut."""
        if not self._open:
            return
        entry = None
        if isinstance(message, AIMessage) and not cut_short(message):
            kept = parsed if parsed is NO_VALUE else copy.deepcopy(parsed)  # a sentinel stays
            entry = Entry(message.model_copy(deep=True), kept)
        self._cache._done(self._key, self._flight, entry)
        self._open = False

    def keep(self, deliver: Deliver) -> None:
        """Store what an invoke delivered: the provider's message (annotated, priced) and, for
        a structured router, the parsed value."""
        result = deliver.result
        if type(result) is StructuredAnswer:
            self.store(result.raw, result.parsed)
        else:
            self.store(deliver.lease.message)

    def keep_stream(self, final: Any, outcome: BaseException | None) -> None:
        """Store a stream's chunks summed, if it ended normally and was not empty."""
        if outcome is None and final is not None:
            self.store(message_chunk_to_message(final))
        else:
            self.release()

    def release(self) -> None:
        """The request ended without an answer to keep: release its followers."""
        if self._open:
            self._open = False
            self._cache._done(self._key, self._flight, None)

    def __del__(self) -> None:  # a leader never closed must not strand its followers
        if getattr(self, "_open", False):
            self.release()


class ResponseCache:
    """Answers by request key: a ``TTLCache`` on the router's clock, bounded in entries and
    in bytes, guarded by one lock (held for dictionary operations only); hit, miss and
    coalesced counters. Shared by a root router and every router derived from it."""

    def __init__(self, config: CacheConfig, clock: Clock) -> None:
        self.config = config
        self.key_metadata = tuple(config.key_metadata)
        if config.max_bytes is None:
            self._store: TTLCache[str, Entry] = TTLCache(
                config.max_entries, config.ttl_seconds, timer=clock.now
            )
        else:
            # One bound for both: each entry weighs at least max_bytes / max_entries, so
            # at most max_entries fit, and never more than max_bytes of estimated size.
            floor = config.max_bytes / config.max_entries
            self._store = TTLCache(
                config.max_bytes,
                config.ttl_seconds,
                timer=clock.now,
                getsizeof=lambda e: max(e.size, floor),
            )
        # Reentrant: a leader abandoned unclosed is released by the garbage collector, which
        # may run on this thread while it holds the lock.
        self._lock = threading.RLock()
        self._flights: dict[str, _Flight] = {}
        # A derived router's part of the key, by shape (held, so its id stays its own).
        self._shapes: LRUCache[int, tuple[Any, Any]] = LRUCache(256)
        self.hits = self.misses = self.coalesced = 0
        self.hits_by_provider: dict[str, int] = {}

    def begin(self, router: ResilientRouter, ctx: RequestContext) -> Hit | Ticket | None:
        """A hit, or the ticket of a request to route; waits on this thread for an
        identical request in flight."""
        key = self._key(router, ctx)
        if key is None:
            return None
        found = self._claim(key, router, ctx, None)
        if type(found) is not _Flight:
            return found  # type: ignore[return-value]
        found.event.wait(ctx.deadline_seconds)  # _claim never follows a leader of this thread
        return self._followed(key, found, router, ctx)

    async def abegin(self, router: ResilientRouter, ctx: RequestContext) -> Hit | Ticket | None:
        """Async :meth:`begin`: waits on a future, never blocking the event loop."""
        key = self._key(router, ctx)
        if key is None:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        found = self._claim(key, router, ctx, future)
        if type(found) is not _Flight:
            return found  # type: ignore[return-value]
        with contextlib.suppress(asyncio.TimeoutError):  # past its deadline: route itself
            await asyncio.wait_for(future, ctx.deadline_seconds)
        return self._followed(key, found, router, ctx)

    def metrics(self) -> dict[str, Any]:
        """Hits, misses, followers served by a leader (``coalesced``), what is stored, the
        leaders in flight and the followers ``waiting`` for them."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "coalesced": self.coalesced,
                "entries": len(self._store),
                "in_flight": len(self._flights),
                "waiting": sum(f.followers for f in self._flights.values()),
                "hits_by_provider": dict(self.hits_by_provider),
            }

    def clear(self) -> None:
        """Forget every stored answer (requests in flight still complete)."""
        with self._lock:
            self._store.clear()

    # -- mechanism ---------------------------------------------------------------------------

    def _key(self, router: ResilientRouter, ctx: RequestContext) -> str | None:
        try:
            shape = router.shape
            document = None
            if shape is not None:
                found = self._shapes.get(id(shape))
                if found is None or found[0] is not shape:
                    found = (shape, shape_document(shape, router.tool_schemas))
                    with self._lock:
                        self._shapes[id(shape)] = found
                document = found[1]
            metadata = ctx.config.get("metadata")
            return request_key(
                ctx.model, ctx.input, ctx.options, document, metadata, self.key_metadata
            )
        except Uncacheable:
            return None

    def _claim(
        self,
        key: str,
        router: ResilientRouter,
        ctx: RequestContext,
        future: asyncio.Future[None] | None,
    ) -> Hit | Ticket | _Flight:
        task = None if future is None else asyncio.current_task()
        owner = (threading.get_ident(), task)
        with self._lock:
            entry = self._store.get(key)
            if entry is not None and self._permits(entry, router, ctx):
                return self._hit(entry, router)
            flight = self._flights.get(key) if self.config.single_flight else None
            # Never wait for a leader that only this caller can move on (a stream it has
            # not finished reading): on this thread, unless both are tasks and not the same.
            if flight is not None and (
                flight.owner[0] != owner[0]
                or (task is not None and flight.owner[1] not in (None, task))
            ):
                if future is not None:
                    flight.futures.append((future.get_loop(), future))
                flight.followers += 1
                return flight
            self.misses += 1
            if flight is None and self.config.single_flight:
                self._flights[key] = flight = _Flight(owner)
                return Ticket(self, key, flight)
            return Ticket(self, key, None)

    def _followed(
        self, key: str, flight: _Flight, router: ResilientRouter, ctx: RequestContext
    ) -> Hit | Ticket:
        entry = flight.entry
        with self._lock:
            if entry is not None and self._permits(entry, router, ctx):
                self.coalesced += 1
                return self._hit(entry, router)
            self.misses += 1
        return Ticket(self, key, None)  # released: route for itself, and store

    def _hit(self, entry: Entry, router: ResilientRouter) -> Hit:
        self.hits += 1
        if entry.provider is not None:
            by = self.hits_by_provider
            by[entry.provider] = by.get(entry.provider, 0) + 1
        return Hit(entry, bool(getattr(router.shape, "include_raw", False)))

    def _permits(self, entry: Entry, router: ResilientRouter, ctx: RequestContext) -> bool:
        """Scope ``provider``: whether the answer's provider may serve this request (enabled,
        serving the model, allowed by its routing controls, able to take its shape)."""
        if self.config.scope == "model":
            return True
        pipeline = router.pipeline
        try:
            candidates = pipeline.candidates(ctx.model)
            if ctx.routing is not None:
                candidates = routed(candidates, ctx, pipeline.providers)
            if ctx.unsupported:
                candidates = capable(candidates, ctx, frozenset())
        except RouterError:
            return False
        return any(p.name == entry.provider for p in candidates)

    def _done(self, key: str, flight: _Flight | None, entry: Entry | None) -> None:
        with self._lock:
            if entry is not None:
                # ValueError: larger than the whole cache: served, never kept.
                with contextlib.suppress(ValueError):
                    self._store[key] = entry
            if flight is not None:
                self._flights.pop(key, None)
                flight.entry = entry
                futures, flight.futures = flight.futures, []
        if flight is None:
            return
        flight.event.set()
        for loop, future in futures:
            with contextlib.suppress(RuntimeError):  # a closed loop: its waiter is gone
                loop.call_soon_threadsafe(_wake, future)

    def __repr__(self) -> str:
        c = self.config
        return f"ResponseCache(scope={c.scope!r}, ttl={c.ttl_seconds}, entries={len(self._store)})"


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
