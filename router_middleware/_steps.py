"""The steps the routing plan yields, one small typed record each.

``Pipeline.run`` performs no I/O: it yields these and is resumed with what each one
produced; ``_drive`` carries them out on a thread or on the event loop, dispatching on
the step's type. The answer to each step is documented on its class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._context import RequestContext
from ._gates import Refusal
from ._lease import Lease, admit
from ._waiting import SlotQueue

if TYPE_CHECKING:
    from ._provider import Provider

__all__ = ["Admit", "Call", "Deliver", "Emit", "Estimate", "Pause", "Sleep", "Step", "WaitForSlot"]


class Call:
    """Call the provider of ``lease``, within ``timeout`` seconds (``None``: no limit);
    the request ends at ``deadline`` (a clock time), which bounds a stream's chunks.

    ``value``, when not ``None``, is the input to send in place of the request's (a
    resumed stream's, ending in the answer given so far: see ``_resume``).

    Resume with the result (a message; for a stream, its first chunk and the rest), or
    with the exception the call raised, as a value.
    """

    __slots__ = ("deadline", "lease", "timeout", "value")

    def __init__(
        self, lease: Lease, timeout: float | None, deadline: float, value: Any = None
    ) -> None:
        self.lease = lease
        self.timeout = timeout
        self.deadline = deadline
        self.value = value


class Deliver:
    """The call of ``lease`` answered: hand ``result`` to the caller (for a stream, every
    chunk, by ``deadline``, a clock time), annotated with the request's ``trail`` of
    attempts. Set ``lease.message`` to the whole answer and resume with ``None``, or with
    the exception that ended a stream early, as a value.

    A stream that may resume (see ``_resume``) also has ``shown`` set to all the text its
    consumer was given before it broke; ``resume``, set by the plan, says how a stream
    that continues a broken one splices on (``None``: it is the first).
    """

    __slots__ = ("deadline", "lease", "result", "resume", "shown", "trail")

    def __init__(
        self,
        lease: Lease,
        result: Any,
        deadline: float,
        trail: list[dict[str, Any]],
        resume: Any = None,
    ) -> None:
        self.lease = lease
        self.result = result
        self.deadline = deadline
        self.trail = trail
        self.resume = resume
        self.shown = ""


class Sleep:
    """Back off ``seconds`` before a retry; no slot is held. Resume with ``None``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Pause:
    """No capacity anywhere: sleep ``seconds``, the computed time until a token refills,
    a cool-down ends or a breaker half-opens. Resume with ``None``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class WaitForSlot:
    """Every candidate is full: wait up to ``seconds`` for a release on one of
    ``blocked`` (pairs of a slot queue and its snapshot). Resume with the
    :class:`~._waiting.Wake` handed over, ``True`` (look again) or ``False`` (time out)."""

    __slots__ = ("blocked", "seconds")

    def __init__(self, seconds: float, blocked: Sequence[tuple[SlotQueue, int]]) -> None:
        self.seconds = seconds
        self.blocked = blocked


class Emit:
    """A custom event ``name`` with ``data`` for the request's run. Resume with ``None``."""

    __slots__ = ("data", "name")

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name = name
        self.data = data


class Estimate:
    """Count the tokens of a large input (``context.estimated_tokens()``), off the event
    loop on the async path. Resume with ``None``."""

    __slots__ = ("context",)

    def __init__(self, context: RequestContext) -> None:
        self.context = context


class Admit:
    """Run ``provider``'s gates for an attempt whose state is shared (a round trip to
    Redis), off the event loop on the async path. Resume with what
    :func:`~._lease.admit` returns: the lease and the refusal, if any."""

    __slots__ = ("attempt", "context", "model", "now", "provider")

    def __init__(
        self, provider: Provider, model: str, attempt: int, now: float, context: RequestContext
    ) -> None:
        self.provider = provider
        self.model = model
        self.attempt = attempt
        self.now = now
        self.context = context

    def run(self) -> tuple[Lease, Refusal | None]:
        return admit(self.provider, self.model, self.attempt, self.now, self.context)


Step = Call | Deliver | Sleep | Pause | WaitForSlot | Emit | Estimate | Admit
