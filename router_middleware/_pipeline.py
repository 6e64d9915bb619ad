"""The routing algorithm, written once for sync and async callers.

For one request it reads top to bottom: **select** the candidates in strategy order,
**admit** one (its gates: cool-down, breaker, bucket, slots), **execute** with retries,
**record** the outcome, and **fall back** to the next candidate. It performs no I/O: it
is a generator that yields typed steps (``_steps``) and is resumed with what each step
produced; ``_drive`` carries them out on a thread or on the event loop, so both paths
share every decision. Each attempt is owned by its :class:`~._lease.Lease`; the plan
settles it on every ending, delivery included (a stream's end, or its failure after the
first chunk), and reports to the router's observer. A stream that breaks part-way may
go on with the next candidate where the request asks for it (``_resume``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._candidates import capable, preferring, routed, serving
from ._classification import ErrorPolicy
from ._classify import Classification, ErrorClassifier, ErrorKind, chain_classifiers
from ._clock import Clock
from ._config import RouterConfig
from ._context import LARGE_INPUT, RequestContext
from ._errors import (
    AllProvidersFailedError,
    InvalidStructuredOutputError,
    NoProviderAvailableError,
)
from ._lease import Lease, admit
from ._metrics import usage_from_message
from ._observe import AttemptEnd, Observers, attempt_end, paid
from ._provider import Provider
from ._request import (
    RequestState,
    Skipped,
    all_failed,
    out_of_time,
    pass_on_spare_slots,
    pass_on_wake,
)
from ._resume import EVENT, broke, continuing
from ._retry import plan_retry
from ._steps import Admit, Call, Deliver, Emit, Estimate, Pause, Sleep, Step, WaitForSlot
from ._strategies import SelectionStrategy
from ._tokens import TokenCounter, approximate_tokens
from ._waiting import Wake

if TYPE_CHECKING:
    from ._cache import ResponseCache

__all__ = ["EMPTY", "Pipeline"]

EMPTY: Any = object()
"""First 'chunk' of a stream that produced nothing: a valid, empty answer."""

_MIN_PAUSE = 1e-6

_CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)

Plan = Generator[Step, Any, Lease]


class Pipeline:
    """Selection, admission, retry and fallback over one set of providers."""

    cache: ResponseCache | None = None  # set by _assembly; read by _run before routing
    prefill: Collection[tuple[str, str]] = frozenset()
    """The (provider, model) pairs that continue an assistant prefix; set by _assembly."""

    def __init__(
        self,
        providers: Sequence[Provider],
        config: RouterConfig,
        strategy: SelectionStrategy,
        clock: Clock,
        observer: Observers,
        classifier: ErrorClassifier | None = None,
        counter: TokenCounter = approximate_tokens,
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self.config = config
        self.strategy = strategy
        self.clock = clock
        self.observer = observer
        self.counter = counter
        self.classify: Callable[[BaseException], Classification] = chain_classifiers(
            *([classifier] if classifier else [])
        )
        self._sequence = itertools.count(1)
        # Only models some provider serves (and None) are ever stored: the cache is bounded
        # by the config. A race computes a list twice, harmlessly.
        self._candidates: dict[str | None, list[Provider]] = {}
        self._max_wait = config.max_wait_seconds
        # Read on every request: plain attributes, as a read of the (pydantic) config costs
        # several times more.
        self.default_model = config.default_model
        self.deadline_seconds = config.deadline_seconds
        self.max_attempts = config.max_attempts
        self.streaming = config.streaming if config.streaming.resume != "off" else None
        so = config.structured_output
        self._blind = frozenset(p.name for p in providers if p.config.capabilities.vision is False)
        self._weighs = any(p.weighs_tokens for p in providers)
        self._invalid_output = ErrorPolicy(
            retry=so.retry, failover=True, counts_for_breaker=so.counts_for_breaker
        )

    def invalidate(self) -> None:
        """Forget cached candidate lists (a provider was enabled or disabled)."""
        self._candidates = {}

    def candidates(self, model: str | None) -> list[Provider]:
        """Enabled providers serving ``model`` (any enabled provider when ``None``)."""
        found = self._candidates.get(model)
        if found is None:
            self._candidates[model] = found = serving(self.providers, model)
        return found

    # -- select, admit ---------------------------------------------------------------------

    def run(self, ctx: RequestContext) -> Plan:
        """Route one request; returns the lease of the attempt that answered."""
        model = ctx.model
        candidates = self._candidates.get(model)  # the cached list, without a call
        if candidates is None:
            candidates = self.candidates(model)
        if ctx.routing is not None:
            candidates = routed(candidates, ctx, self.providers)
        if ctx.unsupported or (self._blind and ctx.has_images()):
            candidates = capable(candidates, ctx, self._blind)
        limit = ctx.deadline_seconds
        deadline = math.inf if limit is None else self.clock.now() + limit
        req = RequestState(ctx, candidates, deadline)
        if self._weighs and not ctx.estimated and ctx.input_size() > LARGE_INPUT:
            yield Estimate(ctx)  # counted off the event loop on the async path
        wait_left = self._max_wait
        woke_from: list[tuple[Provider, int]] = []
        held: Wake | None = None  # a wake-up handed to this request, not yet used
        try:
            while True:
                skipped = None  # made on the first refusal: most requests never see one
                order: Iterable[Provider] = self.strategy.order(candidates, model)
                if ctx.prefer is not None:
                    order = preferring(order, ctx.prefer)
                for provider in order:
                    if provider.name in req.done:
                        continue
                    # Read before trying, so a release between a refusal and the wait is
                    # not lost.
                    since = provider.slots.snapshot()
                    asked = model if model is not None else provider.models[0]
                    if provider.remote:  # a round trip: off the event loop on the async path
                        step = Admit(provider, asked, req.attempts + 1, self.clock.now(), ctx)
                        lease, refusal = yield step
                    else:
                        lease, refusal = admit(
                            provider, asked, req.attempts + 1, self.clock.now(), ctx
                        )
                    if lease.transitions:
                        yield from self._announce(lease)
                    if refusal is not None:
                        if skipped is None:
                            skipped = Skipped()
                        skipped.add(provider, refusal, since, req)
                        continue
                    if woke_from:
                        pass_on_spare_slots(woke_from, provider)
                        held = None
                    if req.left is not None:  # only after a failover: nothing on the hot path
                        self.observer.fell_back(req.left[0], provider.name, req.left[1])
                        req.left = None
                    served = yield from self._serve(lease, req)
                    if served is not None:
                        return served
                if held is not None:
                    # Woken by a release, refused there for another reason (its tokens):
                    # the free slot's wake-up goes to the next waiter of that release.
                    pass_on_wake(held, woke_from)
                    held = None
                # Every candidate tried and failed, or none refused that a wait could help.
                if skipped is None or len(req.done) == len(candidates):
                    raise all_failed(req, skipped.reasons if skipped else {})
                now = self.clock.now()
                budget = min(wait_left, req.deadline - now)
                if budget <= 0 or (not skipped.blocked and skipped.soonest > budget):
                    if req.errors:
                        raise all_failed(req, skipped.reasons)
                    soonest = skipped.soonest if skipped.soonest != math.inf else None
                    raise NoProviderAvailableError(model, skipped.reasons, soonest)
                # Never a pause too short to move a clock: asyncio runs timers due within
                # its clock resolution at once, and a virtual-time loop would then spin.
                pause = max(min(skipped.soonest, budget), _MIN_PAUSE)
                woken: Wake | bool = False
                if skipped.blocked:
                    woken = yield WaitForSlot(pause, [(p.slots, s) for p, s in skipped.blocked])
                else:
                    yield Pause(pause)
                waited = self.clock.now() - now
                self.observer.waited(list(skipped.reasons), waited, bool(woken))
                wait_left -= waited if woken else max(waited, pause)
                woke_from = skipped.blocked if woken else []
                held = woken if type(woken) is Wake else None
        except (AllProvidersFailedError, NoProviderAvailableError) as exc:
            if req.resumption is None:
                raise
            raise req.resumption.failed(exc) from exc  # the consumer holds part of an answer
        finally:
            if req.limited:
                # One provider request each, and only where the request was never admitted.
                for name in req.limited - (req.admitted or set()):
                    self.observer.request_ended(name, "rate_limited")

    # -- execute with retry, record, fall back --------------------------------------------

    def _serve(self, lease: Lease, req: RequestState) -> Generator[Step, Any, Lease | None]:
        """Try one admitted provider, retrying it as the policy allows.

        Returns the served lease, or ``None`` once the request has left this provider.
        """
        provider, model = lease.provider, lease.model
        name = provider.name
        provider.last_selected = next(self._sequence)
        if req.admitted is None:
            req.admitted = set()
        req.admitted.add(name)
        tries = 0
        while True:
            now = self.clock.now()
            if req.attempts >= req.ctx.max_attempts or now >= req.deadline:
                lease.ignore()
                self.observer.attempt_ended(AttemptEnd(name, model, lease.attempt, "ignored"))
                raise out_of_time(req, req.ctx.max_attempts, req.ctx.deadline_seconds)
            req.attempts += 1
            lease.attempt = req.attempts
            tries += 1
            timeout = provider.attempt_seconds
            if req.deadline != math.inf:
                left = req.deadline - now
                timeout = left if timeout is None else min(timeout, left)
            if "attempt_started" in self.observer.heard:  # the metrics do not listen
                self.observer.attempt_started(name, model, lease.attempt)
            going_on = value = None
            if req.resumption is not None:  # this call continues a stream that broke
                going_on, value = continuing(req, name, model, self.prefill)
                yield Emit(EVENT, going_on.mark())
            result = yield Call(lease, timeout, req.deadline, value)
            # Not isinstance(): failing on a message, it reads __class__ through pydantic.
            failed = issubclass(type(result), BaseException)
            req.trail.append(
                {
                    "provider": name,
                    "model": model,
                    "error": type(result).__name__ if failed else None,
                }
            )
            if not failed:
                # Delivered: hand the answer over, then settle on how delivery ended.
                if req.ctx.stream and result[0] is not EMPTY:
                    lease.first_chunk = self.clock.now() - lease.started
                deliver = Deliver(lease, result, req.deadline, req.trail, going_on)
                outcome = yield deliver
                if outcome is not None and (
                    yield from self._broke_after_start(lease, outcome, req, deliver.shown)
                ):
                    return None  # resumed: the next candidate continues the stream
                self._succeeded(lease)
                if lease.transitions:
                    yield from self._announce(lease)
                return lease

            latency = self.clock.now() - now
            verdict = yield from self._judge(lease, result, latency, stream_started=False)
            left = req.deadline - self.clock.now()
            delay = None
            if req.attempts < req.ctx.max_attempts:
                delay = plan_retry(
                    verdict, tries, provider.backoff, remaining=None if left == math.inf else left
                )
            # Never back off for a provider whose breaker has just opened: fail over now.
            if delay is not None and provider.breaker.is_open():
                delay = None
            end = AttemptEnd(name, model, lease.attempt, "failed", verdict.kind.value, latency)
            if isinstance(result, InvalidStructuredOutputError):  # an answer, paid, not taken
                paid(end, provider, result.raw)
            if delay is not None:
                self.observer.retried(name, lease.attempt, delay)
                yield Emit(
                    "router_retry",
                    {
                        "provider": name,
                        "attempt": lease.attempt,
                        "delay": delay,
                        "error": type(result).__name__,
                    },
                )
                if delay > 0:
                    try:
                        yield Sleep(delay)
                    except BaseException:
                        self.observer.attempt_ended(end)  # the request ends here, cancelled
                        raise
                now = self.clock.now()
                if provider.remote:
                    again, refusal = yield Admit(provider, model, req.attempts + 1, now, req.ctx)
                else:
                    again, refusal = admit(provider, model, req.attempts + 1, now, req.ctx)
                if again.transitions:
                    yield from self._announce(again)
                if refusal is None:
                    self.observer.attempt_ended(dataclasses.replace(end, ends_request=False))
                    lease = again
                    continue
            self.observer.attempt_ended(dataclasses.replace(end, fallback=True))
            req.left = (name, end.kind or "")
            req.errors[name] = result
            req.done.add(name)
            yield Emit(
                "router_failover",
                {"provider": name, "model": model, "error": type(result).__name__},
            )
            return None

    def _succeeded(self, lease: Lease) -> None:
        provider, message = lease.provider, lease.message
        tokens_in, tokens_out = usage_from_message(message) if message is not None else (0, 0)
        cost = (
            sum(provider.price(lease.model, tokens_in, tokens_out))
            if tokens_in or tokens_out
            else 0.0
        )
        lease.succeed(message)
        if message is not None:
            provider.learn(message, lease.context, tokens_in)
        latency = self.clock.now() - lease.started
        # Positional: keywords would make the class call build a dict of them.
        end = AttemptEnd(provider.name, lease.model, lease.attempt, "succeeded", None, latency)
        end.first_chunk, end.message = lease.first_chunk, message
        end.input_tokens, end.output_tokens, end.cost = tokens_in, tokens_out, cost
        self.observer.attempt_ended(end)

    def _broke_after_start(
        self, lease: Lease, error: BaseException, req: RequestState, shown: str
    ) -> Generator[Step, Any, bool]:
        """A stream failed after its first chunk, having shown its consumer ``shown``.

        Returns ``True`` when the next candidate is to continue it (``streaming.resume``,
        see ``_resume``); otherwise no failover: the error reaches the caller.
        """
        latency = self.clock.now() - lease.started
        verdict = yield from self._judge(lease, error, latency, stream_started=True)
        end = attempt_end(
            lease, "failed", verdict.kind.value, latency, first_chunk=lease.first_chunk
        )
        paid(end, lease.provider, lease.message)  # what the broken stream said was paid for
        return broke(req, lease, error, verdict, shown, end, self.observer, self.clock.now())

    def _judge(
        self, lease: Lease, error: BaseException, latency: float, *, stream_started: bool
    ) -> Generator[Step, Any, Classification]:
        """Classify a failed attempt and settle its lease on the verdict.

        Errors that must not fail over (cancellations, bugs, refusals, and the
        classifier's own error) propagate from here, untouched, once the lease is settled.
        """
        provider = lease.provider
        if isinstance(error, _CANCELLED):
            lease.cancel()
            self.observer.attempt_ended(attempt_end(lease, "cancelled", latency=latency))
            raise error
        try:
            verdict = self.classify(error)
            if verdict.kind is ErrorKind.INVALID_OUTPUT:
                verdict = dataclasses.replace(verdict, override=self._invalid_output)
        except BaseException:
            lease.ignore()
            self.observer.attempt_ended(attempt_end(lease, "ignored", latency=latency))
            raise
        if verdict.policy.failover:
            lease.fail(verdict)
        else:
            lease.ignore(verdict)
        if lease.cooldown is not None:
            self.observer.cooled_down(provider.name, lease.cooldown)
        if lease.transitions:
            yield from self._announce(lease)
        if not verdict.policy.failover and not stream_started:
            self.observer.attempt_ended(attempt_end(lease, "failed", verdict.kind.value, latency))
            raise error
        return verdict

    def _announce(self, lease: Lease) -> Generator[Step, Any, None]:
        """A custom event for each breaker transition the attempt caused."""
        moved, lease.transitions = lease.transitions, []
        try:
            for t in moved:
                yield Emit(
                    "router_breaker_change",
                    {"provider": t.name, "from": t.from_state.value, "to": t.to_state.value},
                )
        except BaseException:
            lease.cancel()  # a callback raised while the lease was held: give it back
            raise
