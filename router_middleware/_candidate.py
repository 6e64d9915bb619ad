"""What a selection strategy may read about a candidate provider.

The router hands :meth:`~._strategies.SelectionStrategy.order` its own provider objects.
Every one has the :class:`CandidateBase` attributes (identity, priority, price, selection
history) directly; the live readings of :class:`Candidate` (weight, calls in flight,
recent latency, headroom) are read through a :class:`CandidateReader`, which gives the
object itself when it already is a full :class:`Candidate` (a test double, say) and a
read-only view when it is a router :class:`~._provider.Provider`. Nothing else about a
provider is part of the strategy interface.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar, cast

from ._metrics import ProviderMetrics
from ._provider import Provider

__all__ = ["Candidate", "CandidateBase", "CandidateReader", "ranked"]


class CandidateBase(Protocol):
    """What every candidate the router hands a strategy has, as plain attributes."""

    @property
    def name(self) -> str:
        """Unique among the router's providers."""
        ...

    @property
    def priority(self) -> float:
        """Lower is preferred."""
        ...

    @property
    def models(self) -> Sequence[str]:
        """The models it serves."""
        ...

    @property
    def last_selected(self) -> int:
        """The router's selection sequence number when it last picked this one; 0 = never.

        The router stamps it when an attempt is *admitted*, not when it completes, and
        counts picks across all its providers: ``max(last_selected) - c.last_selected``
        over a request's candidates is how many picks ago ``c`` was last chosen.
        """
        ...

    def cost_per_1k(self, model: str | None) -> float:
        """Mean of the input and output price per 1k tokens of ``model`` at this provider."""
        ...


class Candidate(CandidateBase, Protocol):
    """Everything a strategy may read about a candidate: :class:`CandidateBase` and its
    live state. All of it is read-only; reading costs O(1).

    Which built-in strategy reads what: ``round_robin`` ``last_selected``;
    ``cost_priority_round_robin`` ``priority``, ``cost_per_1k``, ``last_selected``;
    ``weighted`` ``name``, ``weight``; ``least_busy`` ``in_flight``, ``max_concurrent``,
    ``priority``, ``last_selected``; ``lowest_latency`` ``latency``,
    ``time_to_first_token``, ``priority``, ``last_selected``; ``usage_based``
    ``token_headroom``, ``request_headroom``, ``priority``, ``last_selected``.
    """

    @property
    def weight(self) -> float:
        """Its configured share of traffic (``weight``, default 1, always > 0)."""
        ...

    @property
    def in_flight(self) -> int:
        """Calls admitted to it and not yet ended."""
        ...

    @property
    def max_concurrent(self) -> int | None:
        """Its cap on calls in flight; ``None`` when uncapped."""
        ...

    @property
    def latency(self) -> float | None:
        """Recent seconds per successful call (an EWMA); ``None`` before the first success."""
        ...

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds to a stream's first chunk, the median of the retained ones; ``None``
        before its first stream."""
        ...

    @property
    def token_headroom(self) -> float | None:
        """LLM tokens its token limits would admit now; ``None`` without token limits."""
        ...

    @property
    def request_headroom(self) -> float | None:
        """Requests its request bucket would admit now; ``None`` without a request rate."""
        ...


C = TypeVar("C", bound=CandidateBase)

_ALPHA = 0.3  # weight of one new sample in the latency EWMA
_TTFT_REFRESH = 16  # successes between two medians of a full time-to-first-token window
_SMALL_WINDOW = 64  # below this many samples the median is cheap: refresh on every success


class _RecentLatency:
    """An EWMA of success latency, from the deltas of the metrics' running totals.

    The metrics publish the number of successes and their mean; between two reads the
    successes that arrived have mean ``(n1*m1 - n0*m0) / (n1 - n0)``, which is blended in as
    that many samples. An estimate not refreshed while the router made ``stale_after`` picks
    is replaced by the new mean instead: a provider tried again after a long pause (it
    recovered, or was only explored) is judged on what it does now. (Where that many picks
    pass between two completions, under heavy concurrency, the estimate is the mean of the
    latest completions.) O(1) and lock-free: racing readers cost at most a sample counted
    twice.
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        # (successes, their total seconds, estimate, last_selected when last refreshed)
        self._state: tuple[int, float, float | None, int] | None = None

    def read(self, metrics: ProviderMetrics, picked: int, stale_after: int) -> float | None:
        n = metrics.successful_requests
        mean = metrics.average_response_time
        if metrics.successful_requests != n:  # a success landed between the two reads
            return self._state[2] if self._state is not None else None
        total = mean * n
        state = self._state
        if state is None:
            self._state = (n, total, mean if n else None, picked)
            return self._state[2]
        n0, total0, estimate, seen = state
        if n == n0:
            return estimate
        if n > n0:
            new = max(0.0, (total - total0) / (n - n0))
            if estimate is None or picked - seen >= stale_after:
                estimate = new
            else:
                estimate += (1 - (1 - _ALPHA) ** (n - n0)) * (new - estimate)
        # n < n0: the metrics were reset; keep the estimate, count from here.
        self._state = (n, total, estimate, picked)
        return estimate


class _RecentTTFT:
    """The median of the retained stream times to first token, refreshed lazily.

    The metrics keep no running total of these (only a window), so unlike
    :class:`_RecentLatency` this is the window's median, recomputed when successes
    arrived: on each one while the window is small, every ``_TTFT_REFRESH`` after.
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: tuple[int, int, float | None] | None = None  # (successes, samples, p50)

    def read(self, metrics: ProviderMetrics) -> float | None:
        n = metrics.successful_requests
        state = self._state
        if state is not None:
            n0, count, value = state
            if n == n0:
                return value
            batching = value is not None and count >= _SMALL_WINDOW
            if batching and 0 < n - n0 < _TTFT_REFRESH:
                return value
        window = metrics.time_to_first_token
        value = window.percentile(50)
        self._state = (n, window.count, value)
        return value


class _ProviderCandidate:
    """A router :class:`Provider` read as a :class:`Candidate`."""

    __slots__ = ("_latency", "_provider", "_stale_after", "_ttft", "models", "name", "priority")

    def __init__(self, provider: Provider, stale_after: int) -> None:
        self._provider = provider
        self._stale_after = stale_after
        self._latency = _RecentLatency()
        self._ttft = _RecentTTFT()
        # Fixed for a provider's life (a reload builds new providers, and so new views).
        self.name: str = provider.name
        self.priority: float = provider.priority
        self.models: Sequence[str] = provider.models

    @property
    def last_selected(self) -> int:
        return self._provider.last_selected

    def cost_per_1k(self, model: str | None) -> float:
        return self._provider.cost_per_1k(model)

    @property
    def weight(self) -> float:
        return self._provider.config.weight

    @property
    def in_flight(self) -> int:
        return self._provider.limiter.in_flight

    @property
    def max_concurrent(self) -> int | None:
        return self._provider.limiter.concurrency.max_concurrent

    @property
    def latency(self) -> float | None:
        p = self._provider
        return self._latency.read(p.metrics, p.last_selected, self._stale_after)

    @property
    def time_to_first_token(self) -> float | None:
        return self._ttft.read(self._provider.metrics)

    @property
    def token_headroom(self) -> float | None:
        return self._provider.token_headroom

    @property
    def request_headroom(self) -> float | None:
        bucket = self._provider.limiter.bucket
        return None if bucket is None else bucket.tokens

    def __repr__(self) -> str:
        return f"Candidate({self._provider.name!r})"


class CandidateReader:
    """Reads any candidate the router hands a strategy as a :class:`Candidate`.

    Keep one per strategy instance: a router provider's view remembers what its recent
    latency needs (the view of each provider is kept, at most ``_MAX_VIEWS`` of them).
    ``stale_after`` is how many picks of a provider may pass before its latency estimate
    is replaced, rather than blended, by the next samples.

    Example:
        >>> from router_middleware import ResilientRouter
        >>> from router_middleware.testing import ScriptedChatModel
        >>> router = ResilientRouter({"a": ScriptedChatModel()})
        >>> read = CandidateReader()
        >>> c = read(router.providers["a"])
        >>> c.name, c.weight, c.in_flight, c.max_concurrent, c.latency
        ('a', 1.0, 0, None, None)
    """

    __slots__ = ("_stale_after", "_views")

    _MAX_VIEWS = 1024

    def __init__(self, *, stale_after: int = 50) -> None:
        if stale_after < 1:
            raise ValueError(f"stale_after must be >= 1, not {stale_after!r}")
        self._stale_after = stale_after
        # id(provider) -> its view, which holds the provider (so the id is not reused).
        self._views: dict[int, _ProviderCandidate] = {}

    def __call__(self, candidate: CandidateBase) -> Candidate:
        if not isinstance(candidate, Provider):
            return cast(Candidate, candidate)
        view = self._views.get(id(candidate))
        if view is None or view._provider is not candidate:
            if len(self._views) >= self._MAX_VIEWS:
                self._views.clear()  # providers replaced by many reloads: start over
            view = _ProviderCandidate(candidate, self._stale_after)
            self._views[id(candidate)] = view
        return view

    def all(self, candidates: Sequence[CandidateBase]) -> list[Candidate]:
        """Each of ``candidates`` read, in order."""
        return [self(c) for c in candidates]


def ranked(candidates: Sequence[C], keys: list[tuple[Any, ...]]) -> Iterator[C]:
    """``candidates`` by ascending key, lazily: O(n) for the first, O(log n) for each next.

    ``keys[i]`` belongs to ``candidates[i]`` and ends with ``i``, so no two keys are equal
    and equal rankings keep the given order. ``keys`` is consumed.
    """
    heapq.heapify(keys)
    while keys:
        yield candidates[heapq.heappop(keys)[-1]]
