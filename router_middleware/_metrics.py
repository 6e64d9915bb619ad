"""Per-provider metrics: outcome counters, token usage, cost and latency percentiles.

The accounting rule: every time a request turns to a provider it is one *provider
request*, which ends in exactly one of success, failure, throttled (the provider's own 429),
rate limited (the router's own limit) or cancelled. So ``successful + failed + throttled +
rate_limited + cancelled == total_requests`` holds at every instant, and retries,
fallbacks, timeouts and breaker trips are tallies on the side. The router feeds these
counters through its metrics observer (``_observe.MetricsObserver``).

Memory is constant however many requests are recorded: latencies live in fixed rings.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = ["LatencyWindow", "ProviderMetrics", "usage_from_message"]

_PERCENTILES = (50, 95, 99)


class LatencyWindow:
    """The most recent ``size`` samples, in seconds, in a preallocated ring.

    Recording is O(1) and never allocates. Percentiles interpolate linearly between the
    closest ranks of the retained samples. Not thread-safe on its own:
    :class:`ProviderMetrics` guards its windows with its lock.

    Example:
        >>> w = LatencyWindow(size=4)
        >>> for seconds in (9.0, 1.0, 2.0, 3.0, 4.0):
        ...     w.record(seconds)
        >>> w.count, w.percentile(50), w.percentile(100)
        (4, 2.5, 4.0)
    """

    __slots__ = ("_buf", "_count", "_next", "_size")

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size!r}")
        self._size = size
        self._buf = array("d", [0.0]) * size
        self._next = 0
        self._count = 0

    @property
    def size(self) -> int:
        """How many samples the window retains."""
        return self._size

    @property
    def count(self) -> int:
        """How many samples the window holds now (at most :attr:`size`)."""
        return self._count

    def record(self, seconds: float) -> None:
        """Add a sample, overwriting the oldest once the window is full."""
        self._buf[self._next] = seconds
        self._next = (self._next + 1) % self._size
        if self._count < self._size:
            self._count += 1

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0 to 100) of the retained samples; ``None`` when empty."""
        return self.percentiles((p,))[p]

    def percentiles(self, ps: Iterable[float] = _PERCENTILES) -> dict[float, float | None]:
        """Several percentiles for the price of one sort: ``{p: value}``."""
        ps = tuple(ps)
        for p in ps:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile must be within [0, 100], not {p!r}")
        # Until the ring wraps only its head is filled; once full, order does not matter.
        samples = sorted(self._buf[: self._count])
        return {p: _interpolate(samples, p) for p in ps}

    def copy(self) -> LatencyWindow:
        """An independent copy, so percentiles can be sorted outside a lock."""
        other = LatencyWindow.__new__(LatencyWindow)
        other._size = self._size
        other._buf = array("d", self._buf)
        other._next = self._next
        other._count = self._count
        return other

    def clear(self) -> None:
        """Forget every sample, keeping the buffer."""
        self._next = 0
        self._count = 0

    def __repr__(self) -> str:
        p50 = self.percentile(50)
        median = "-" if p50 is None else f"{p50:.3f}s"
        return f"LatencyWindow(size={self._size}, count={self._count}, p50={median})"


def _interpolate(samples: list[float], p: float) -> float | None:
    if not samples:
        return None
    rank = p / 100 * (len(samples) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(samples) - 1)
    return samples[lo] + (samples[hi] - samples[lo]) * (rank - lo)


class ProviderMetrics:
    """Thread-safe counters for one provider.

    Read the counters as attributes; only the ``record_*`` methods change them, each
    holding the lock for a handful of additions. ``last_request_time`` is wall-clock epoch
    seconds (for display, unlike the monotonic clock the policies use).
    ``average_response_time`` is the mean over successes only; ``average_failure_time``
    the mean over failures whose latency was known.

    Example:
        >>> m = ProviderMetrics(wall=lambda: 1700000000.0)
        >>> m.record_success(0.25, input_tokens=12, output_tokens=30, cost=0.0004)
        >>> m.record_failure(1.0, timeout=True, fallback=True)
        >>> m.total_requests, m.successful_requests, m.timeouts, m.fallbacks
        (2, 1, 1, 1)
        >>> m.average_response_time, m.last_request_time
        (0.25, 1700000000.0)
    """

    __slots__ = (
        "_failure_seconds",
        "_latency",
        "_lock",
        "_success_seconds",
        "_timed_failures",
        "_ttft",
        "_wall",
        "cancelled",
        "circuit_breaker_trips",
        "cost",
        "failed_requests",
        "fallbacks",
        "input_tokens",
        "last_request_time",
        "output_tokens",
        "rate_limited_requests",
        "retries",
        "successful_requests",
        "throttled",
        "timeouts",
        "total_requests",
    )

    total_requests: int
    successful_requests: int
    failed_requests: int
    rate_limited_requests: int
    cancelled: int
    circuit_breaker_trips: int
    retries: int
    fallbacks: int
    timeouts: int
    throttled: int
    input_tokens: int
    output_tokens: int
    cost: float
    last_request_time: float | None
    _success_seconds: float
    _failure_seconds: float
    _timed_failures: int

    def __init__(self, *, window: int = 1024, wall: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._wall = wall
        self._latency = LatencyWindow(window)
        self._ttft = LatencyWindow(window)
        self._zero()

    def _zero(self) -> None:
        self.total_requests = 0
        self.successful_requests = 0
        self.failed_requests = 0
        self.rate_limited_requests = 0
        self.cancelled = 0
        self.circuit_breaker_trips = 0
        self.retries = 0
        self.fallbacks = 0
        self.timeouts = 0
        self.throttled = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.last_request_time = None
        self._success_seconds = 0.0
        self._failure_seconds = 0.0
        self._timed_failures = 0
        self._latency.clear()
        self._ttft.clear()

    def record_success(
        self,
        latency: float,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        """A provider request answered after ``latency`` seconds."""
        with self._lock:
            self.total_requests += 1
            self.successful_requests += 1
            self.last_request_time = self._wall()
            self._success_seconds += latency
            self._latency.record(latency)
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self.cost += cost

    def record_usage(self, input_tokens: int, output_tokens: int, cost: float) -> None:
        """Tokens a provider billed for an answer the router did not take (one that did
        not fit the schema)."""
        with self._lock:
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self.cost += cost

    def record_failure(
        self,
        latency: float | None,
        *,
        timeout: bool = False,
        fallback: bool = False,
        throttled: bool = False,
    ) -> None:
        """A provider request failed; ``fallback`` when the request then left this provider.

        ``throttled`` when the provider itself refused it as over its limit (a 429): the
        provider request then counts in :attr:`throttled`, apart from ``failed_requests``
        and from the router's own ``rate_limited_requests``.
        """
        with self._lock:
            self.total_requests += 1
            if throttled:
                self.throttled += 1
            else:
                self.failed_requests += 1
            self.last_request_time = self._wall()
            self.timeouts += timeout
            self.fallbacks += fallback
            if latency is not None:
                self._failure_seconds += latency
                self._timed_failures += 1

    def record_rate_limited(self) -> None:
        """A provider request was turned away by this provider's rate limit."""
        with self._lock:
            self.total_requests += 1
            self.rate_limited_requests += 1
            self.last_request_time = self._wall()

    def record_cancelled(self) -> None:
        """A provider request was cancelled before it finished."""
        with self._lock:
            self.total_requests += 1
            self.cancelled += 1
            self.last_request_time = self._wall()

    def record_retry(self) -> None:
        """The router is about to try this provider again; the try counts on its own."""
        with self._lock:
            self.retries += 1

    def record_trip(self) -> None:
        """This provider's circuit breaker opened."""
        with self._lock:
            self.circuit_breaker_trips += 1

    def record_first_token(self, seconds: float) -> None:
        """A stream produced its first chunk ``seconds`` after the call started."""
        with self._lock:
            self._ttft.record(seconds)

    @property
    def average_response_time(self) -> float:
        """Mean seconds per successful request; ``0.0`` before the first success."""
        with self._lock:
            return _mean(self._success_seconds, self.successful_requests)

    @property
    def average_failure_time(self) -> float:
        """Mean seconds per failed request with a known latency; ``0.0`` when none."""
        with self._lock:
            return _mean(self._failure_seconds, self._timed_failures)

    @property
    def success_rate(self) -> float | None:
        """Successes over all provider requests; ``None`` before the first one."""
        with self._lock:
            return _rate(self.successful_requests, self.total_requests)

    @property
    def latency(self) -> LatencyWindow:
        """A copy of the recent successful latencies."""
        with self._lock:
            return self._latency.copy()

    @property
    def time_to_first_token(self) -> LatencyWindow:
        """A copy of the recent stream times to first token."""
        with self._lock:
            return self._ttft.copy()

    def snapshot(self) -> dict[str, Any]:
        """Every counter, mean, rate and percentile as one flat, JSON-serialisable dict."""
        with self._lock:
            out: dict[str, Any] = {
                "total_requests": self.total_requests,
                "successful_requests": self.successful_requests,
                "failed_requests": self.failed_requests,
                "rate_limited_requests": self.rate_limited_requests,
                "cancelled": self.cancelled,
                "circuit_breaker_trips": self.circuit_breaker_trips,
                "retries": self.retries,
                "fallbacks": self.fallbacks,
                "timeouts": self.timeouts,
                "throttled": self.throttled,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "cost": self.cost,
                "last_request_time": self.last_request_time,
                "average_response_time": _mean(self._success_seconds, self.successful_requests),
                "average_failure_time": _mean(self._failure_seconds, self._timed_failures),
                "success_rate": _rate(self.successful_requests, self.total_requests),
            }
            latency = self._latency.copy()
            ttft = self._ttft.copy()
        # Sorting the windows happens on the copies, outside the lock.
        for prefix, window in (("latency", latency), ("ttft", ttft)):
            for p, value in window.percentiles(_PERCENTILES).items():
                out[f"{prefix}_p{p}"] = value
        return out

    def reset(self) -> None:
        """Zero every counter and empty both windows."""
        with self._lock:
            self._zero()

    def __repr__(self) -> str:
        return (
            f"ProviderMetrics(total={self.total_requests}, ok={self.successful_requests}, "
            f"failed={self.failed_requests}, throttled={self.throttled}, "
            f"rate_limited={self.rate_limited_requests}, cancelled={self.cancelled}, "
            f"avg={self.average_response_time:.3f}s)"
        )


def _mean(total: float, n: int) -> float:
    return total / n if n else 0.0


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def usage_from_message(message: object) -> tuple[int, int]:
    """``(input_tokens, output_tokens)`` from a message's ``usage_metadata``, else ``(0, 0)``.

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
        >>> usage_from_message(AIMessage("hi", usage_metadata=usage))
        (7, 3)
        >>> usage_from_message(HumanMessage("hi"))
        (0, 0)
    """
    # Only AI messages (and chunks) carry usage; getattr spares an isinstance chain.
    usage = getattr(message, "usage_metadata", None)
    if not usage:
        return 0, 0
    return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
