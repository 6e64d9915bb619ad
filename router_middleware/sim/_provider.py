"""The simulated provider: a chat model that misbehaves like real ones, on a schedule.

It is public as :class:`router_middleware.testing.SimulatedProvider`; the simulator
gives each provider of a scenario one, its faults set from the scenario's ``Fault``.
A provider may also count tokens as a real one does: report usage from its own count
of each prompt, refuse prompts beyond its context window, and enforce a tokens-per-minute
limit (``_meter``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from pydantic import Field, PrivateAttr

from .._types import usage
from ..testing import Behaviour, Fail, Hang, Reply, ScriptedChatModel, http_error
from ..testing._scripted import _StreamPlan
from ._meter import Charge, Refused, TokenMeter

__all__ = ["SimulatedProvider", "Window", "count_prompt_tokens"]

Window = tuple[float, float]
"""``(start, end)`` seconds after a :class:`SimulatedProvider`'s epoch; ``end`` excluded."""

# The 95th percentile of a standard normal: turns a p50/p95 pair into a lognormal spread.
_Z95 = 1.6448536269514722

# The call options that cap an answer, as providers name them.
_OUTPUT_OPTIONS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def count_prompt_tokens(messages: Sequence[BaseMessage]) -> int:
    """A simulated provider's own token count of a prompt: a token per 4 characters of
    each message, 3 per message and 3 priming the reply, as OpenAI counts overheads.

    It is not the router's estimate (LangChain's ``count_tokens_approximately`` counts
    the role's characters and no priming), as no real provider counts like the router:
    the router learns the difference from the usage it is told (its calibration).

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> count_prompt_tokens([HumanMessage("x" * 400)])
        106
    """
    return 3 + sum(3 + math.ceil(len(m.text) / 4) for m in messages)


@dataclass(frozen=True)
class _Answer(Reply):
    """An answer of a metered provider: its usage, and its charge to settle at the end."""

    prompt: int = 0
    output: int = 0
    charge: Charge | None = None


@dataclass(frozen=True)
class _Failure(Fail):
    """A failure of a metered provider: it read the prompt, generated nothing."""

    prompt: int = 0
    charge: Charge | None = None


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

    Token counting is off by default (answers report the fixed ``usage``). Any of
    ``tokens_per_minute``, ``max_input_tokens`` or ``answer_tokens`` turns it on: the
    provider counts each prompt (``count_tokens``) and, after the outage and burst
    windows, answers HTTP 400 ``context_length_exceeded`` to a prompt over
    ``max_input_tokens``, then HTTP 429 (``rate_limit_exceeded``, with the seconds until
    it fits as ``Retry-After``) to one its tokens-per-minute window cannot hold: it
    charges prompt plus ``max_tokens`` (``output_reserve`` when the call sets none) on
    arrival, corrected to the usage when the call ends (a failure used the prompt; a
    hang or a cut call keeps it all). An answer is ``answer_tokens`` long (drawn; a
    token per 4 characters of its text when ``None``), at most the call's ``max_tokens``
    or ``output_reserve``, and reports that usage. ``token_log``,
    ``token_refusals`` and ``peak_window`` read its window.

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
        >>> metered = SimulatedProvider(tokens_per_minute=300, clock=clock)
        >>> metered.invoke("x" * 400, max_tokens=150).usage_metadata["input_tokens"]
        106
        >>> metered.invoke("hi", max_tokens=200)
        Traceback (most recent call last):
        ...
        router_middleware.testing.HTTPStatusError: HTTP 429 (rate_limit_exceeded)
        >>> metered.peak_window, metered.faults
        ((256, 0.0), {'ok': 1, 'token_limited': 1})
    """

    latency_p95: float | None = None
    outages: list[Window] = Field(default_factory=list)
    rate_limit_bursts: list[Window] = Field(default_factory=list)
    retry_after: float = 1.0
    hang_rate: float = 0.0
    hang_seconds: float = 300.0
    epoch: float | None = None
    tokens_per_minute: int | None = None
    max_input_tokens: int | None = None
    answer_tokens: tuple[int, int] | None = None
    output_reserve: int = 1024
    count_tokens: Callable[[Sequence[BaseMessage]], int] = count_prompt_tokens

    _epoch: float | None = PrivateAttr(default=None)
    _faults: dict[str, int] = PrivateAttr(default_factory=dict)
    _meter: TokenMeter | None = PrivateAttr(default=None)
    # The prompt's tokens and the call's max_tokens, from _begin to _next on one thread.
    _call: threading.local = PrivateAttr(default_factory=threading.local)

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._epoch = self.epoch
        low, high = self.answer_tokens or (0, 0)
        if not 0 <= low <= high:
            raise ValueError("answer_tokens must be (LOW, HIGH) with 0 <= LOW <= HIGH")
        if (
            self.tokens_per_minute is not None
            or self.max_input_tokens is not None
            or self.answer_tokens is not None
        ):
            self._meter = TokenMeter(self.tokens_per_minute)

    @property
    def _llm_type(self) -> str:
        return "simulated"

    @property
    def faults(self) -> dict[str, int]:
        """How many calls met each fate so far: ``ok``, ``outage``, ``rate_limited``, ..."""
        with self._lock:
            return dict(self._faults)

    @property
    def counts_tokens(self) -> bool:
        """Whether it counts tokens (a token limit, a context window or ``answer_tokens``)."""
        return self._meter is not None

    @property
    def token_log(self) -> list[Charge]:
        """Each call its token window charged, in arrival order (empty when not metered)."""
        return [] if self._meter is None else self._meter.log

    @property
    def token_refusals(self) -> list[Refused]:
        """Each call its tokens-per-minute limit refused (a 429), in order."""
        return [] if self._meter is None else self._meter.refused

    @property
    def peak_window(self) -> tuple[int, float | None]:
        """The most tokens its 60 s window held, and when (seconds from its epoch)."""
        return (0, None) if self._meter is None else self._meter.peak

    def _begin(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], stop: list[str] | None = None
    ) -> Behaviour:
        if self._meter is not None:
            asked = next((kwargs[k] for k in _OUTPUT_OPTIONS if kwargs.get(k) is not None), None)
            self._call.request = (self.count_tokens(messages), asked)
        return super()._begin(messages, kwargs, stop)

    def _next(self) -> Behaviour:
        with self._lock:
            if not self.script and self.default is None:
                self._calls += 1
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
                fate, step = self._draw()
                if self._meter is not None:
                    fate, step = self._metered(self._meter, fate, step)
                self._faults[fate] = self._faults.get(fate, 0) + 1
                return step
        return super()._next()

    def _metered(self, meter: TokenMeter, fate: str, step: Behaviour) -> tuple[str, Behaviour]:
        """The provider's token checks, after the scheduled windows, before the rest."""
        prompt, asked = getattr(self._call, "request", None) or (0, None)
        self._call.request = None
        # Drawn whatever the fate, like the rest: a limit leaves other calls' draws alone.
        drawn = None if self.answer_tokens is None else self._rng.randint(*self.answer_tokens)
        if fate in ("outage", "rate_limited"):  # turned away before anything was counted
            return fate, step
        fast = getattr(step, "latency", 0.0) / 10
        if self.max_input_tokens is not None and prompt > self.max_input_tokens:
            return "too_long", Fail(http_error(400, code="context_length_exceeded"), fast)
        cap = self.output_reserve if asked is None else asked
        assert self._epoch is not None  # set by _draw
        charge, wait = meter.admit(self.clock.now() - self._epoch, prompt, cap)
        if charge is None:
            # Retry-After in whole milliseconds, rounded up: never sooner than it fits.
            after = None if math.isinf(wait) else math.ceil(wait * 1000) / 1000
            error = http_error(429, retry_after=after, code="rate_limit_exceeded")
            return "token_limited", Fail(error, fast)
        if isinstance(step, Reply):
            text = self.text if step.text is None else step.text
            out = math.ceil(len(text) / 4) if drawn is None else drawn
            return fate, _Answer(step.text, step.latency, prompt, min(out, cap), charge)
        if isinstance(step, Fail):
            return fate, _Failure(step.error, step.latency, prompt, charge)
        return fate, step  # a hang or a broken stream keeps its whole charge

    def _end(self, step: Behaviour) -> None:
        """A metered call ended (not cut off): settle its charge to what it used."""
        if isinstance(step, (_Answer, _Failure)) and step.charge is not None:
            used = step.prompt + (step.output if isinstance(step, _Answer) else 0)
            assert self._meter is not None
            assert self._epoch is not None
            self._meter.settle(step.charge, used, self.clock.now() - self._epoch)

    def _act(self, step: Behaviour) -> AIMessage:
        try:
            message = super()._act(step)
        except Exception:  # its failure: a cancellation (BaseException) is no end
            self._end(step)
            raise
        self._end(step)
        return message

    async def _aact(self, step: Behaviour) -> AIMessage:
        try:
            message = await super()._aact(step)
        except Exception:
            self._end(step)
            raise
        self._end(step)
        return message

    def _message(self, reply: Reply) -> AIMessage:
        message = super()._message(reply)
        if isinstance(reply, _Answer):
            message.usage_metadata = usage(reply.prompt, reply.output)
        return message

    def _plan(self, message: AIMessage) -> _StreamPlan:
        plan = super()._plan(message)
        if self._meter is not None and message.usage_metadata:
            # A stream ends with the usage of its own answer, not the fixed one.
            plan.last = AIMessageChunk(content="", usage_metadata=message.usage_metadata)
        return plan

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
