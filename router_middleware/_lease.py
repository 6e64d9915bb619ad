"""The lease: the one owner of a provider attempt, from admission to settle.

:func:`admit` runs a provider's gates and returns a :class:`Lease` holding what they
granted (a breaker permit, a token, a concurrency slot). The lease is settled exactly
once, by :meth:`Lease.succeed`, :meth:`Lease.fail`, :meth:`Lease.ignore` or
:meth:`Lease.cancel`; a second settle is a no-op, so every ending path may settle
without knowing whether another already did. Only the lease releases what was granted.

Invariants:

* each gate that admitted the attempt is settled exactly once;
* the breaker hears the verdict before the slot is released (gates exit in order);
* a slot is released only once the provider call has really ended: a call that outlives
  the attempt (a sync call abandoned at its timeout, a stream whose reader is still
  blocked in the provider) is :meth:`Lease.detach`-ed, and the slot goes back when it
  reports :meth:`Lease.call_ended`, whichever of that and the settle comes last.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._breaker import BreakerTransition, Permit
from ._classification import Classification
from ._gates import Gate, Refusal
from ._ops import AdmitOp, SettleOp
from ._storage import StateUnavailable

if TYPE_CHECKING:
    from ._context import RequestContext
    from ._provider import Provider
    from ._token_gates import TokenCharge

__all__ = ["Lease", "admit"]

logger = logging.getLogger("router_middleware")


class Lease:
    """One admitted attempt on one provider.

    Attributes:
        provider, model, attempt: who is called, for which model, the request's attempt
            number (1-based).
        context: the request (its input, options, run config), for gates that weigh it.
        started: clock time of admission.
        outcome: ``None`` until settled, then ``"succeeded"``, ``"failed"``,
            ``"ignored"`` or ``"cancelled"``; ``"refused"`` when a gate turned it away
            (it then holds nothing).
        verdict: the classification of a failure.
        transitions: breaker transitions caused by this attempt, for the request's events.
        cooldown: seconds of ``Retry-After`` cool-down this attempt set, if any.
        first_chunk: seconds from admission to a stream's first chunk.
        message: what the provider answered (the final message of a stream).
        charge, spend: what the token limits and the budget charged it (``_token_gates``).
    """

    __slots__ = (
        "_held",
        "_lock",
        "_running",
        "attempt",
        "charge",
        "context",
        "cooldown",
        "first_chunk",
        "message",
        "model",
        "outcome",
        "permit",
        "provider",
        "spend",
        "started",
        "transitions",
        "verdict",
    )

    def __init__(
        self,
        provider: Provider,
        model: str,
        attempt: int,
        started: float,
        context: RequestContext | None = None,
    ) -> None:
        self.provider = provider
        self.context = context
        self.model = model
        self.attempt = attempt
        self.started = started
        self.permit: Permit | None = None
        self.transitions: list[BreakerTransition] = []
        self.outcome: str | None = None
        self.verdict: Classification | None = None
        self.cooldown: float | None = None
        self.first_chunk: float | None = None
        self.message: Any = None
        self.charge: TokenCharge | None = None
        self.spend: tuple[float, float, float] | None = None
        self._held = 0
        self._lock: threading.Lock | None = None
        self._running = False

    # -- settling --------------------------------------------------------------------------

    def succeed(self, message: Any = None) -> None:
        """The provider answered ``message``."""
        self.message = message
        self._end("succeeded", None)

    def fail(self, verdict: Classification) -> None:
        """The provider failed; the breaker counts it if ``verdict``'s policy says so."""
        self._end("failed", verdict)

    def ignore(self, verdict: Classification | None = None) -> None:
        """The attempt ended without a verdict on the provider (not its fault, or unknown)."""
        self._end("ignored", verdict)

    def cancel(self) -> None:
        """The caller went away (cancelled, closed the stream, interrupted)."""
        self._end("cancelled", None)

    @property
    def settled(self) -> bool:
        return self.outcome is not None

    def _end(self, outcome: str, verdict: Classification | None) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.verdict = verdict
        gates = self.provider.gates[: self._held]
        lock = self._lock
        if lock is None:
            self._release(gates)
            return
        self._release([g for g in gates if not g.holds_call])
        with lock:
            call_over = not self._running
        if call_over:
            self._exit_call_holders()

    def _exit_call_holders(self) -> None:
        self._release([g for g in self.provider.gates[: self._held] if g.holds_call])

    def _release(self, gates: Sequence[Gate]) -> None:
        """Settle ``gates`` in one store operation, in order (the breaker hears the
        verdict before the slot is released)."""
        asked = [(gate, op) for gate in gates if (op := gate.release(self)) is not None]
        if not asked:
            return
        provider = self.provider
        now = provider.now()
        if provider.remote:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None and not loop.is_closed():
                # A round trip to Redis, which may be slow: never on the event loop. The
                # slot comes back when it is done (its release wakes the waiters), and the
                # breaker's listeners hear its transitions then, from that thread.
                loop.run_in_executor(None, self._settle_logged, now, asked)
                return
        self._settle(now, asked)

    def _settle(self, now: float, asked: list[tuple[Gate, SettleOp]]) -> None:
        answers = self.provider.store.settle(now, [op for _, op in asked])
        for (gate, _), answer in zip(asked, answers, strict=True):
            gate.released(self, answer)

    def _settle_logged(self, now: float, asked: list[tuple[Gate, SettleOp]]) -> None:
        try:
            self._settle(now, asked)
        except Exception:
            logger.exception("settling %r failed", self)

    # -- calls that outlive the attempt ----------------------------------------------------

    def detach(self) -> None:
        """The provider call goes on beyond the attempt's own control (a worker thread):
        keep the call's resources until :meth:`call_ended`."""
        self._lock = threading.Lock()
        self._running = True

    def call_ended(self) -> None:
        """The detached call has really returned (from any thread)."""
        lock = self._lock
        if lock is None:
            return
        with lock:
            self._running = False
            settled = self.outcome is not None
        if settled:
            self._exit_call_holders()

    def __repr__(self) -> str:
        state = self.outcome or ("running (detached)" if self._running else "open")
        return (
            f"Lease(provider={self.provider.name!r}, model={self.model!r}, "
            f"attempt={self.attempt}, {state})"
        )


def admit(
    provider: Provider,
    model: str,
    attempt: int,
    now: float,
    context: RequestContext | None = None,
) -> tuple[Lease, Refusal | None]:
    """Run ``provider``'s gates for one attempt.

    Each gate names what it takes; the provider's store takes it all in one operation
    (all or none). Returns the lease holding all they granted and ``None``; or, refused,
    a lease that holds nothing (everything taken before the refusal given back; its
    ``transitions`` still report what the breaker did) and the first :class:`Refusal`.
    """
    lease = Lease(provider, model, attempt, now, context)
    gates = provider.gates
    asking: list[Gate] = []
    ops: list[AdmitOp] = []
    for gate in gates:
        op = gate.plan(lease)
        if op is None:
            continue
        if type(op) is Refusal:  # decided without the store: nothing was taken
            return _refused(lease), op
        asking.append(gate)
        ops.append(op)  # type: ignore[arg-type]
    try:
        refused_at, answers = provider.store.admit(now, ops)
    except StateUnavailable as exc:
        return _refused(lease), Refusal(str(exc), math.inf, limited=False)
    if refused_at < 0:
        for gate, answer in zip(asking, answers, strict=True):
            gate.took(lease, answer)
        lease._held = len(gates)
        return lease, None
    for gate, answer in zip(asking[:refused_at], answers, strict=False):
        gate.took(lease, answer)  # for what it reports (breaker transitions)
    refusal = asking[refused_at].took(lease, answers[refused_at])
    assert refusal is not None, f"{asking[refused_at]!r} took what the store refused"
    return _refused(lease), refusal


def _refused(lease: Lease) -> Lease:
    """A lease that holds nothing (the store gave back what it took)."""
    lease.permit = lease.charge = lease.spend = None
    lease.outcome = "refused"
    return lease
