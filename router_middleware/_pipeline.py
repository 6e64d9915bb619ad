"""The routing algorithm, written once for sync and async callers.

For one request it reads top to bottom: **select** the candidates in strategy order,
**admit** one (cool-down, breaker, limiter), **execute** with retries, **record** the
outcome, and **fall back** to the next candidate. It performs no I/O: it is a generator
that yields *steps* (call this provider, sleep, wait for capacity, emit an event) and is
resumed with each call's outcome. ``_router.py`` drives it with threads or with asyncio,
so both paths share every decision.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable, Generator, Sequence
from typing import Any, Final

from cachetools import LRUCache

from ._classify import Classification, ErrorClassifier, ErrorKind, chain_classifiers
from ._clock import Clock
from ._config import RouterConfig
from ._errors import (
    AllProvidersFailedError,
    DeadlineExceededError,
    NoProviderAvailableError,
    NoProviderForModelError,
)
from ._metrics import cost_of, usage_from_message
from ._provider import Provider
from ._retry import plan_retry
from ._strategies import SelectionStrategy
from ._waiting import SlotQueue

__all__ = ["CALL", "EVENT", "SLEEP", "WAIT", "Pipeline", "Served", "Step"]

CALL: Final = 0
"""``(CALL, provider, model, attempt_number, timeout)``: resume with ``None`` or the error."""
SLEEP: Final = 1
"""``(SLEEP, seconds)``: back off; no slot is held."""
WAIT: Final = 2
"""``(WAIT, seconds, blocked)``: no capacity anywhere. With ``blocked`` (pairs of a
provider's slot queue and its snapshot) wait for a slot release, up to ``seconds``, and
resume with whether one came; with ``None`` sleep ``seconds``, the computed time until a
token refills or a breaker half-opens."""
EVENT: Final = 3
"""``(EVENT, name, data)``: a custom event for the request's run."""

Step = tuple[Any, ...]

_MIN_PAUSE = 1e-6

_CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


def _count_limited(provider: Provider, counted: set[str] | None) -> set[str]:
    """Count a request as rate-limited at a provider once, however long it waits there."""
    if counted is None:
        counted = set()
    if provider.name not in counted:
        counted.add(provider.name)
        provider.metrics.record_rate_limited()
    return counted


class Served:
    """The attempt that answered: what the driver needs to record it and close it."""

    __slots__ = ("attempts", "model", "permit", "provider", "started", "trail")

    def __init__(
        self,
        provider: Provider,
        model: str,
        permit: Any,
        started: float,
        attempts: int,
        trail: list[dict[str, Any]],
    ) -> None:
        self.provider = provider
        self.model = model
        self.permit = permit
        self.started = started
        self.attempts = attempts
        self.trail = trail

    def metadata(self) -> dict[str, Any]:
        """What goes into the response's ``response_metadata["router"]``."""
        return {
            "provider": self.provider.name,
            "model": self.model,
            "attempts": self.trail,
        }


class Pipeline:
    """Selection, admission, retry and fallback over one set of providers."""

    def __init__(
        self,
        providers: Sequence[Provider],
        config: RouterConfig,
        strategy: SelectionStrategy,
        clock: Clock,
        classifier: ErrorClassifier | None = None,
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self.config = config
        self.strategy = strategy
        self.clock = clock
        self.classify: Callable[[BaseException], Classification] = chain_classifiers(
            *([classifier] if classifier else [])
        )
        self._sequence = itertools.count(1)
        # Bounded: callers may ask for any model name, known or not.
        self._candidates: LRUCache[str | None, list[Provider]] = LRUCache(maxsize=256)
        self._deadline = config.deadline_seconds
        self._max_wait = config.max_wait_seconds
        self._max_attempts = config.max_attempts

    def invalidate(self) -> None:
        """Forget cached candidate lists (a provider was enabled or disabled)."""
        self._candidates.clear()

    def candidates(self, model: str | None) -> list[Provider]:
        """Enabled providers serving ``model`` (any enabled provider when ``None``)."""
        try:
            return self._candidates[model]
        except KeyError:
            pass
        found = [
            p for p in self.providers.values() if p.enabled and (model is None or p.serves(model))
        ]
        if not found:
            served = sorted({m for p in self.providers.values() if p.enabled for m in p.models})
            raise NoProviderForModelError(model, served)
        self._candidates[model] = found
        return found

    def run(self, model: str | None) -> Generator[Step, BaseException | None, Served]:
        """Route one request; returns the attempt that answered (see module docstring)."""
        clock = self.clock
        candidates = self.candidates(model)
        start = clock.now()
        deadline = start + self._deadline if self._deadline is not None else math.inf
        wait_left = self._max_wait
        attempts = 0
        errors: dict[str, BaseException] = {}
        done: set[str] = set()
        trail: list[dict[str, Any]] = []

        counted: set[str] | None = None  # providers already counted rate-limited for this request
        while True:
            skipped: dict[str, str] = {}
            soonest = math.inf
            blocked: list[tuple[SlotQueue, int]] = []
            for provider in self.strategy.order(candidates, model):
                name = provider.name
                if name in done:
                    continue
                now = clock.now()
                # Read before trying, so a release between a refusal and the wait is not lost.
                since = provider.slots.snapshot()
                if provider.cooldown_until > now:
                    skipped[name] = "cooling down (Retry-After)"
                    soonest = min(soonest, provider.cooldown_until - now)
                    counted = _count_limited(provider, counted)
                    continue
                permit = provider.breaker.try_acquire()
                if permit is None:
                    after = provider.breaker.retry_after()
                    skipped[name] = f"circuit {provider.circuit_breaker_state}"
                    if after > 0:
                        soonest = min(soonest, after)
                    else:  # half-open, its trials under way: wake when one ends
                        blocked.append((provider.slots, since))
                    continue
                wait = provider.limiter.try_acquire()
                if wait:
                    provider.breaker.on_ignore(permit)
                    counted = _count_limited(provider, counted)
                    if wait == math.inf:
                        skipped[name] = "at max concurrency"
                        blocked.append((provider.slots, since))
                    else:
                        skipped[name] = f"rate limited for {wait:.3f}s"
                        soonest = min(soonest, wait)
                    continue

                served_model = model if model is not None else provider.models[0]
                provider.last_selected = next(self._sequence)
                tries = 0
                while True:
                    if attempts >= self._max_attempts or clock.now() >= deadline:
                        provider.limiter.release()
                        provider.breaker.on_ignore(permit)
                        provider.metrics.record_failure(None)
                        raise self._out_of_time(model, errors, attempts, start)
                    attempts += 1
                    tries += 1
                    begun = clock.now()
                    timeout = provider.timeouts.attempt_seconds
                    if deadline != math.inf:
                        left = deadline - begun
                        timeout = left if timeout is None else min(timeout, left)
                    error = yield (CALL, provider, served_model, attempts, timeout)
                    if error is None:
                        trail.append({"provider": name, "model": served_model, "error": None})
                        return Served(provider, served_model, permit, begun, attempts, trail)

                    latency = clock.now() - begun
                    provider.limiter.release()
                    trail.append(
                        {"provider": name, "model": served_model, "error": type(error).__name__}
                    )
                    verdict = self.classify(error)
                    policy = verdict.policy
                    if isinstance(error, _CANCELLED):
                        provider.breaker.on_ignore(permit)
                        provider.metrics.record_cancelled()
                        raise error
                    if not policy.failover:
                        provider.breaker.on_ignore(permit)
                        provider.metrics.record_failure(latency)
                        raise error
                    before = provider.breaker.state
                    if policy.counts_for_breaker:
                        provider.breaker.on_failure(permit)
                    else:
                        provider.breaker.on_ignore(permit)
                    after_state = provider.breaker.state
                    if after_state is not before:
                        yield (
                            EVENT,
                            "router_breaker_change",
                            {"provider": name, "from": before.value, "to": after_state.value},
                        )
                    if verdict.retry_after:
                        # The provider asked for time: skip it until then, whoever asks.
                        provider.cooldown_until = clock.now() + verdict.retry_after

                    left = deadline - clock.now()
                    delay = plan_retry(
                        verdict,
                        tries,
                        provider.backoff,
                        remaining=None if left == math.inf else left,
                    )
                    readmitted = False
                    if delay is not None and attempts < self._max_attempts:
                        provider.metrics.record_retry()
                        yield (
                            EVENT,
                            "router_retry",
                            {
                                "provider": name,
                                "attempt": attempts,
                                "delay": delay,
                                "error": type(error).__name__,
                            },
                        )
                        yield (SLEEP, delay)
                        again = provider.breaker.try_acquire()
                        if again is not None:
                            if provider.limiter.try_acquire() == 0.0:
                                permit, readmitted = again, True
                            else:
                                provider.breaker.on_ignore(again)
                    if readmitted:
                        continue
                    provider.metrics.record_failure(
                        latency, timeout=verdict.kind is ErrorKind.TIMEOUT, fallback=True
                    )
                    errors[name] = error
                    done.add(name)
                    yield (
                        EVENT,
                        "router_failover",
                        {"provider": name, "model": served_model, "error": type(error).__name__},
                    )
                    break

            if len(done) == len(candidates) or not skipped:
                raise self._all_failed(model, errors, attempts, skipped)
            budget = min(wait_left, deadline - clock.now())
            # Never a pause too short to move a clock: asyncio runs timers due within its
            # clock resolution at once, and a virtual-time loop would then spin.
            pause = max(min(soonest, budget), _MIN_PAUSE)
            if budget <= 0 or (not blocked and soonest > budget):
                if errors:
                    raise self._all_failed(model, errors, attempts, skipped)
                finite = soonest if soonest != math.inf else None
                raise NoProviderAvailableError(model, skipped, finite)
            before_wait = clock.now()
            woken = yield (WAIT, pause, blocked or None)
            waited = clock.now() - before_wait
            wait_left -= waited if woken else max(waited, pause)

    def _all_failed(
        self,
        model: str | None,
        errors: dict[str, BaseException],
        attempts: int,
        skipped: dict[str, str],
    ) -> AllProvidersFailedError:
        exc = AllProvidersFailedError(model, errors, attempts, skipped=skipped)
        if errors:
            exc.__cause__ = list(errors.values())[-1]
        return exc

    def _out_of_time(
        self, model: str | None, errors: dict[str, BaseException], attempts: int, start: float
    ) -> DeadlineExceededError:
        if attempts >= self._max_attempts:
            limit = f"max_attempts {self._max_attempts}"
        else:
            limit = f"deadline {self._deadline:g}s"
        exc = DeadlineExceededError(model, errors, attempts, limit)
        if errors:
            exc.__cause__ = list(errors.values())[-1]
        return exc

    # -- recording what the driver reports after a served attempt ---------------------------

    def succeed(self, served: Served, message: Any) -> None:
        """Record a served attempt's success and free its slot."""
        provider = served.provider
        provider.limiter.release()
        provider.breaker.on_success(served.permit)
        tokens_in, tokens_out = usage_from_message(message)
        cost = 0.0
        if tokens_in or tokens_out:
            model_cfg = provider.config.model(served.model)
            if model_cfg is not None:
                cost = cost_of(model_cfg, tokens_in, tokens_out)
        provider.metrics.record_success(
            self.clock.now() - served.started,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost=cost,
        )

    def first_token(self, served: Served) -> None:
        """Record a stream's time to first chunk."""
        served.provider.metrics.record_first_token(self.clock.now() - served.started)

    def fail_after_start(self, served: Served, error: BaseException) -> None:
        """Record a stream that broke after its first chunk (no failover is possible)."""
        provider = served.provider
        provider.limiter.release()
        if isinstance(error, _CANCELLED):
            provider.breaker.on_ignore(served.permit)
            provider.metrics.record_cancelled()
            return
        verdict = self.classify(error)
        if verdict.policy.counts_for_breaker and verdict.policy.failover:
            provider.breaker.on_failure(served.permit)
        else:
            provider.breaker.on_ignore(served.permit)
        provider.metrics.record_failure(
            self.clock.now() - served.started, timeout=verdict.kind is ErrorKind.TIMEOUT
        )
