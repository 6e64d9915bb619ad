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
import threading
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


class _Request:
    """What one request has done so far."""

    __slots__ = (
        "attempts",
        "candidates",
        "deadline",
        "done",
        "errors",
        "limited",
        "model",
        "trail",
    )

    def __init__(
        self, model: str | None, candidates: list[Provider], start: float, deadline: float | None
    ) -> None:
        self.model = model
        self.candidates = candidates
        self.deadline = start + deadline if deadline is not None else math.inf
        self.attempts = 0
        self.errors: dict[str, BaseException] = {}
        self.done: set[str] = set()
        self.trail: list[dict[str, Any]] = []
        self.limited: set[str] | None = None

    def count_limited(self, provider: Provider) -> None:
        """Count this request rate-limited at a provider once, however long it waits there."""
        if self.limited is None:
            self.limited = set()
        if provider.name not in self.limited:
            self.limited.add(provider.name)
            provider.metrics.record_rate_limited()


class _Skipped:
    """The providers one pass over the candidates could not admit, and when to look again."""

    __slots__ = ("blocked", "reasons", "soonest")

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}
        self.soonest = math.inf
        self.blocked: list[tuple[Provider, int]] = []
        """Providers full (or half-open with their trials out), with their slot snapshot."""

    def note(self, name: str, reason: str, wait: float) -> None:
        self.reasons[name] = reason
        if wait < self.soonest:
            self.soonest = wait


def _pass_on_spare_slots(woke_from: list[tuple[Provider, int]], taken: Provider) -> None:
    """A request woken by a release was admitted at ``taken``: a slot freed elsewhere for it
    would otherwise wait unclaimed, so wake the next waiter of every such provider."""
    for provider, _ in woke_from:
        if provider is not taken and provider.limiter.wait_time() != math.inf:
            provider.slots.notify()


class Served:
    """The attempt that answered: what the driver needs to record it and close it."""

    __slots__ = ("model", "permit", "provider", "started", "trail")

    def __init__(
        self,
        provider: Provider,
        model: str,
        permit: Any,
        started: float,
        trail: list[dict[str, Any]],
    ) -> None:
        self.provider = provider
        self.model = model
        self.permit = permit
        self.started = started
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
        # Bounded: callers may ask for any model name, known or not. Locked: cachetools
        # caches are not thread-safe, and threads and the event loop share this one.
        self._candidates: LRUCache[str | None, list[Provider]] = LRUCache(maxsize=256)
        self._candidates_lock = threading.Lock()
        self._deadline = config.deadline_seconds
        self._max_wait = config.max_wait_seconds
        self._max_attempts = config.max_attempts

    def invalidate(self) -> None:
        """Forget cached candidate lists (a provider was enabled or disabled)."""
        with self._candidates_lock:
            self._candidates.clear()

    def candidates(self, model: str | None) -> list[Provider]:
        """Enabled providers serving ``model`` (any enabled provider when ``None``)."""
        with self._candidates_lock:
            found = self._candidates.get(model)
        if found is not None:
            return found
        found = [
            p for p in self.providers.values() if p.enabled and (model is None or p.serves(model))
        ]
        if not found:
            served = sorted({m for p in self.providers.values() if p.enabled for m in p.models})
            raise NoProviderForModelError(model, served)
        with self._candidates_lock:
            self._candidates[model] = found
        return found

    def run(self, model: str | None) -> Generator[Step, Any, Served]:
        """Route one request; returns the attempt that answered (see module docstring)."""
        req = _Request(model, self.candidates(model), self.clock.now(), self._deadline)
        wait_left = self._max_wait
        woke_from: list[tuple[Provider, int]] = []
        while True:
            skipped = _Skipped()
            for provider in self.strategy.order(req.candidates, model):
                if provider.name in req.done:
                    continue
                permit = self._admit(provider, req, skipped)
                if permit is None:
                    continue
                _pass_on_spare_slots(woke_from, provider)
                served = yield from self._serve(provider, permit, req)
                if served is not None:
                    return served
            if len(req.done) == len(req.candidates) or not skipped.reasons:
                raise self._all_failed(req, skipped.reasons)
            budget = min(wait_left, req.deadline - self.clock.now())
            if budget <= 0 or (not skipped.blocked and skipped.soonest > budget):
                if req.errors:
                    raise self._all_failed(req, skipped.reasons)
                soonest = skipped.soonest if skipped.soonest != math.inf else None
                raise NoProviderAvailableError(model, skipped.reasons, soonest)
            # Never a pause too short to move a clock: asyncio runs timers due within its
            # clock resolution at once, and a virtual-time loop would then spin.
            pause = max(min(skipped.soonest, budget), _MIN_PAUSE)
            blocked = [(p.slots, since) for p, since in skipped.blocked]
            before = self.clock.now()
            woken = yield (WAIT, pause, blocked or None)
            waited = self.clock.now() - before
            wait_left -= waited if woken else max(waited, pause)
            woke_from = skipped.blocked if woken else []

    def _admit(self, provider: Provider, req: _Request, skipped: _Skipped) -> Any:
        """Cool-down, breaker, limiter: the provider's permit, or ``None`` with the reason noted."""
        name = provider.name
        now = self.clock.now()
        # Read before trying, so a release between a refusal and the wait is not lost.
        since = provider.slots.snapshot()
        if provider.cooldown_until > now:
            skipped.note(name, "cooling down (Retry-After)", provider.cooldown_until - now)
            req.count_limited(provider)
            return None
        permit = provider.breaker.try_acquire()
        if permit is None:
            after = provider.breaker.retry_after()
            if after > 0:
                skipped.note(name, f"circuit {provider.circuit_breaker_state}", after)
            else:  # half-open, its trials under way: wake when one ends
                skipped.note(name, f"circuit {provider.circuit_breaker_state}", math.inf)
                skipped.blocked.append((provider, since))
            return None
        wait = provider.limiter.try_acquire()
        if not wait:
            return permit
        provider.breaker.on_ignore(permit)
        req.count_limited(provider)
        if wait == math.inf:
            skipped.note(name, "at max concurrency", math.inf)
            skipped.blocked.append((provider, since))
        else:
            skipped.note(name, f"rate limited for {wait:.3f}s", wait)
        return None

    def _serve(
        self, provider: Provider, permit: Any, req: _Request
    ) -> Generator[Step, Any, Served | None]:
        """Try one admitted provider, retrying it as the policy allows.

        Returns the served attempt, or ``None`` once it has failed over.
        """
        name = provider.name
        model = req.model if req.model is not None else provider.models[0]
        provider.last_selected = next(self._sequence)
        tries = 0
        while True:
            now = self.clock.now()
            if req.attempts >= self._max_attempts or now >= req.deadline:
                provider.breaker.on_ignore(permit)
                provider.limiter.release()
                provider.metrics.record_failure(None)
                raise self._out_of_time(req)
            req.attempts += 1
            tries += 1
            timeout = provider.timeouts.attempt_seconds
            if req.deadline != math.inf:
                left = req.deadline - now
                timeout = left if timeout is None else min(timeout, left)
            error = yield (CALL, provider, model, req.attempts, timeout)
            req.trail.append(
                {"provider": name, "model": model, "error": error and type(error).__name__}
            )
            if error is None:
                return Served(provider, model, permit, now, req.trail)

            latency = self.clock.now() - now
            verdict = yield from self._judge(provider, permit, error, latency)
            if verdict.retry_after:
                # The provider asked for time: skip it until then, whoever asks.
                provider.cooldown_until = self.clock.now() + verdict.retry_after
            left = req.deadline - self.clock.now()
            delay = plan_retry(
                verdict, tries, provider.backoff, remaining=None if left == math.inf else left
            )
            if delay is not None and req.attempts < self._max_attempts:
                provider.metrics.record_retry()
                yield (
                    EVENT,
                    "router_retry",
                    {
                        "provider": name,
                        "attempt": req.attempts,
                        "delay": delay,
                        "error": type(error).__name__,
                    },
                )
                if delay > 0:
                    yield (SLEEP, delay)
                permit = self._readmit(provider)
                if permit is not None:
                    continue
            provider.metrics.record_failure(
                latency, timeout=verdict.kind is ErrorKind.TIMEOUT, fallback=True
            )
            req.errors[name] = error
            req.done.add(name)
            yield (
                EVENT,
                "router_failover",
                {"provider": name, "model": model, "error": type(error).__name__},
            )
            return None

    def _judge(
        self, provider: Provider, permit: Any, error: BaseException, latency: float
    ) -> Generator[Step, Any, Classification]:
        """Classify a failed attempt, tell the breaker, then free the slot.

        The breaker hears first: a request waiting on a half-open provider is woken by the
        release and must then see the breaker's new state. Errors that must not fail over
        are raised from here, untouched.
        """
        if isinstance(error, _CANCELLED):
            provider.breaker.on_ignore(permit)
            provider.limiter.release()
            provider.metrics.record_cancelled()
            raise error
        verdict = self.classify(error)
        if not verdict.policy.failover:
            provider.breaker.on_ignore(permit)
            provider.limiter.release()
            provider.metrics.record_failure(latency)
            raise error
        if verdict.policy.counts_for_breaker:
            moved = provider.breaker.on_failure(permit)
        else:
            moved = provider.breaker.on_ignore(permit)
        provider.limiter.release()
        for t in moved:
            yield (
                EVENT,
                "router_breaker_change",
                {"provider": provider.name, "from": t.from_state.value, "to": t.to_state.value},
            )
        return verdict

    def _readmit(self, provider: Provider) -> Any:
        """A permit for a retry on the same provider, or ``None`` (then fail over)."""
        permit = provider.breaker.try_acquire()
        if permit is None:
            return None
        if provider.limiter.try_acquire() == 0.0:
            return permit
        provider.breaker.on_ignore(permit)
        return None

    def _all_failed(self, req: _Request, skipped: dict[str, str]) -> AllProvidersFailedError:
        exc = AllProvidersFailedError(req.model, req.errors, req.attempts, skipped=skipped)
        if req.errors:
            exc.__cause__ = list(req.errors.values())[-1]
        return exc

    def _out_of_time(self, req: _Request) -> DeadlineExceededError:
        if req.attempts >= self._max_attempts:
            limit = f"max_attempts {self._max_attempts}"
        else:
            limit = f"deadline {self._deadline:g}s"
        exc = DeadlineExceededError(req.model, req.errors, req.attempts, limit)
        if req.errors:
            exc.__cause__ = list(req.errors.values())[-1]
        return exc

    # -- recording what the driver reports after a served attempt ---------------------------

    def succeed(self, served: Served, message: Any) -> None:
        """Record a served attempt's success and free its slot."""
        provider = served.provider
        provider.breaker.on_success(served.permit)  # before the release: see _judge
        provider.limiter.release()
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
        if isinstance(error, _CANCELLED):
            provider.breaker.on_ignore(served.permit)
            provider.limiter.release()
            provider.metrics.record_cancelled()
            return
        verdict = self.classify(error)
        if verdict.policy.counts_for_breaker and verdict.policy.failover:
            provider.breaker.on_failure(served.permit)
        else:
            provider.breaker.on_ignore(served.permit)
        provider.limiter.release()
        provider.metrics.record_failure(
            self.clock.now() - served.started, timeout=verdict.kind is ErrorKind.TIMEOUT
        )
