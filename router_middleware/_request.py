"""What one request has done so far, and the errors that say how it ended.

The pipeline keeps one :class:`RequestState` per request and one :class:`Skipped` per
pass over the candidates; both are plain records, read and written by the pipeline only.
"""

from __future__ import annotations

import math
from typing import Any

from ._context import RequestContext
from ._errors import AllProvidersFailedError, DeadlineExceededError
from ._gates import Refusal
from ._provider import Provider
from ._waiting import Wake

__all__ = [
    "RequestState",
    "Skipped",
    "all_failed",
    "out_of_time",
    "pass_on_spare_slots",
    "pass_on_wake",
]


class RequestState:
    """What one request has done so far."""

    __slots__ = (
        "admitted",
        "attempts",
        "candidates",
        "ctx",
        "deadline",
        "done",
        "errors",
        "left",
        "limited",
        "resumption",
        "trail",
    )

    def __init__(self, ctx: RequestContext, candidates: list[Provider], deadline: float) -> None:
        self.ctx = ctx
        self.candidates = candidates
        self.deadline = deadline
        self.attempts = 0
        self.errors: dict[str, BaseException] = {}
        self.done: set[str] = set()
        self.trail: list[dict[str, Any]] = []
        self.limited: set[str] | None = None
        self.admitted: set[str] | None = None
        self.left: tuple[str, str] | None = None
        """The provider the request last left after a failure, and why (its error kind),
        until another admits it: the ``from`` of a fallback."""
        self.resumption: Any = None
        """A broken stream the next provider continues (a ``_resume.Resumption``)."""


class Skipped:
    """The providers one pass over the candidates could not admit, and when to look again."""

    __slots__ = ("blocked", "reasons", "soonest")

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}
        self.soonest = math.inf
        self.blocked: list[tuple[Provider, int]] = []
        """Providers a slot release can unblock, with their slot snapshot."""

    def add(self, provider: Provider, refusal: Refusal, since: int, req: RequestState) -> None:
        """Note why ``provider`` was not admitted, and what would end the wait for it
        (``since``: its slot queue's snapshot before the try)."""
        self.reasons[provider.name] = refusal.reason
        if refusal.wait < self.soonest:
            self.soonest = refusal.wait
        if refusal.queue is not None:
            self.blocked.append((provider, since))
        if refusal.limited:
            if req.limited is None:
                req.limited = set()
            req.limited.add(provider.name)


def pass_on_spare_slots(woke_from: list[tuple[Provider, int]], taken: Provider) -> None:
    """A request woken by a release was admitted at ``taken``: a slot freed elsewhere for it
    would otherwise wait unclaimed, so wake the next waiter of every such provider."""
    for provider, _ in woke_from:
        if provider is not taken and provider.limiter.wait_time() != math.inf:
            provider.slots.notify()


def pass_on_wake(wake: Wake, woke_from: list[tuple[Provider, int]]) -> None:
    """A request was handed ``wake`` but could not use it (refused for another reason than
    slots): if the slot is still free, hand it on to the waiters of that release. Not when
    the slot went to someone else: the wake-up would travel through every waiter in vain."""
    for provider, _ in woke_from:
        if provider.slots is wake.queue and not provider.limiter.concurrency.full:
            wake.queue.pass_on(wake)


def all_failed(req: RequestState, skipped: dict[str, str]) -> AllProvidersFailedError:
    """Every candidate failed or was skipped; the last provider error is the cause."""
    exc = AllProvidersFailedError(req.ctx.model, req.errors, req.attempts, skipped=skipped)
    if req.errors:
        exc.__cause__ = list(req.errors.values())[-1]
    return exc


def out_of_time(
    req: RequestState, max_attempts: int, deadline: float | None
) -> DeadlineExceededError:
    """The request's deadline or its cap on attempts ran out first."""
    if req.attempts >= max_attempts:
        limit = f"max_attempts {max_attempts}"
    else:
        limit = f"deadline {deadline:g}s"
    exc = DeadlineExceededError(req.ctx.model, req.errors, req.attempts, limit)
    if req.errors:
        exc.__cause__ = list(req.errors.values())[-1]
    return exc
