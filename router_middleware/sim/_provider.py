"""The simulated provider: a chat model that misbehaves like real ones, on a schedule.

It is public as :class:`router_middleware.testing.SimulatedProvider`; the simulator
gives each provider of a scenario one, its faults set from the scenario's ``Fault``.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, PrivateAttr

from ..testing import Behaviour, Fail, Hang, Reply, ScriptedChatModel, http_error

__all__ = ["SimulatedProvider", "Window"]

Window = tuple[float, float]
"""``(start, end)`` seconds after a :class:`SimulatedProvider`'s epoch; ``end`` excluded."""

# The 95th percentile of a standard normal: turns a p50/p95 pair into a lognormal spread.
_Z95 = 1.6448536269514722


class SimulatedProvider(ScriptedChatModel):
    """A provider that misbehaves like real ones: for demos, load tests and your own tests.

    Each call draws its fate, in this order: inside an ``outages`` window it fails fast
    with HTTP 503; inside a ``rate_limit_bursts`` window with HTTP 429 and
    ``Retry-After: retry_after``; else it hangs with probability ``hang_rate`` (for
    ``hang_seconds`` of event-loop time, so only a timeout ends it), fails with
    probability ``failure_rate`` (``failure()``), or answers. Latency is lognormal with
    median ``latency`` and 95th percentile ``latency_p95`` (constant when ``None``), spent
    on ``clock``. Windows count from ``epoch`` on ``clock`` (the first call's time when
    ``None``). Draws come from a generator seeded with ``seed``: a run is repeatable.
    A ``script``, when given, is played first, as in :class:`ScriptedChatModel`.

    Example:
        >>> from router_middleware.testing import FakeClock, SimulatedProvider
        >>> clock = FakeClock()
        >>> model = SimulatedProvider(outages=[(0.0, 5.0)], clock=clock, epoch=0.0)
        >>> model.invoke("hi")
        Traceback (most recent call last):
        ...
        router_middleware.testing.HTTPStatusError: HTTP 503
        >>> clock.advance(5.0)
        >>> model.invoke("hi").content, model.faults
        ('ok', {'outage': 1, 'ok': 1})
    """

    latency_p95: float | None = None
    outages: list[Window] = Field(default_factory=list)
    rate_limit_bursts: list[Window] = Field(default_factory=list)
    retry_after: float = 1.0
    hang_rate: float = 0.0
    hang_seconds: float = 300.0
    epoch: float | None = None

    _epoch: float | None = PrivateAttr(default=None)
    _faults: dict[str, int] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._epoch = self.epoch

    @property
    def _llm_type(self) -> str:
        return "simulated"

    @property
    def faults(self) -> dict[str, int]:
        """How many calls met each fate so far: ``ok``, ``outage``, ``rate_limited``, ..."""
        with self._lock:
            return dict(self._faults)

    def _next(self) -> Behaviour:
        with self._lock:
            if not self.script and self.default is None:
                self._calls += 1
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
                fate, step = self._draw()
                self._faults[fate] = self._faults.get(fate, 0) + 1
                return step
        return super()._next()

    def _draw(self) -> tuple[str, Behaviour]:
        now = self.clock.now()
        if self._epoch is None:
            self._epoch = now
        t = now - self._epoch
        # Every call draws the same numbers whatever its fate, so adding a window to a
        # scenario leaves the fate of the calls outside it unchanged.
        hang, fail, latency = self._rng.random(), self._rng.random(), self._latency()
        fast = latency / 10  # an error page comes back sooner than an answer
        if any(start <= t < end for start, end in self.outages):
            return "outage", Fail(http_error(503), fast)
        if any(start <= t < end for start, end in self.rate_limit_bursts):
            return "rate_limited", Fail(http_error(429, retry_after=self.retry_after), fast)
        if hang < self.hang_rate:
            return "hang", Hang(self.hang_seconds)
        if fail < self.failure_rate:
            return "failure", Fail(self.failure(), latency)
        return "ok", Reply(None, latency)

    def _latency(self) -> float:
        median = self.latency() if callable(self.latency) else self.latency
        if self.latency_p95 is None or median <= 0 or self.latency_p95 <= median:
            return median
        sigma = math.log(self.latency_p95 / median) / _Z95
        return median * math.exp(self._rng.gauss(0.0, sigma))
