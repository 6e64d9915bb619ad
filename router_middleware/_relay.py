"""Relaying a routed stream to its consumer, across the providers that complete it.

The run scaffold (``_run``) hands the delivered stream to a :class:`Relay`, which yields
its chunks, holds a quiet last chunk back to carry the stream's cost, and tells the plan
how the stream ended. Where the request resumes broken streams (``_resume``), a stream
that breaks part-way is handed back to the plan, which delivers the next provider's
stream; its chunks pass through that stream's :class:`~._resume.Continuation` (skipping
what repeats the text already given) before they are yielded, so the consumer reads one
answer and the sum of its chunks is what it printed. The final chunk says where the
stream resumed, in ``response_metadata["router"]["resumed"]``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessageChunk

from ._binding import Binding
from ._clock import Clock
from ._context import RequestContext
from ._drive import adrive, afinish, annotate, cost_tail, drive, finish, quiet
from ._errors import IncompleteStreamError
from ._lease import Lease
from ._metrics import usage_from_message
from ._pipeline import EMPTY, Plan
from ._resume import Continuation
from ._steps import Deliver
from ._streams import END

__all__ = ["Relay"]

# Providers whose streams always end with a finish reason (``response_metadata``), and
# the keys they give it under.
_REPORTS_END = frozenset({"openai", "anthropic", "ollama", "google_genai", "groq", "mistralai"})
_END_REASONS = ("finish_reason", "stop_reason", "done_reason")


class Relay:
    """The consumer's side of one routed stream: what it was given, and how it ended.

    Attributes:
        final: the sum of every chunk yielded (``None`` before the first).
        outcome: what ended the last stream early (``None``: it finished).
        deliver: the delivery being relayed (the last one, once done).
    """

    __slots__ = (
        "_attempt",
        "_ended",
        "_held",
        "_reports_end",
        "_resumes",
        "_spent",
        "deliver",
        "final",
        "outcome",
    )

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver
        self.final: Any = None
        self.outcome: BaseException | None = None
        self._attempt: Any = None  # a resumed attempt's own chunks, summed
        self._resumes: list[dict[str, Any]] = []
        self._spent: list[tuple[Any, Lease]] = []  # earlier attempts' chunks, and leases
        self._reports_end = self._ended = False  # see _watch
        self._held: Any = None  # see _open

    def sync(
        self,
        plan: Plan,
        bindings: Mapping[str, Binding],
        ctx: RequestContext,
        clock: Clock,
        run: CallbackManagerForChainRun,
    ) -> Iterator[Any]:
        """Yield the stream's chunks, on to its end or its failure."""
        while True:
            deliver = self.deliver
            first, chunks = deliver.result
            going_on = self._begin(deliver)
            outcome: BaseException | None = None
            try:
                if first is not EMPTY:
                    if (opening := self._open(first, deliver, going_on)) is not None:
                        yield opening
                    while (chunk := chunks.next()) is not END:
                        for given in self._pass(chunk, going_on):
                            yield self._add(given)
                    for given in self._close(ctx, deliver, going_on):
                        yield self._add(given)
                elif going_on is not None:
                    going_on.end()
            except BaseException as exc:  # the consumer closed early, or the stream broke
                outcome = exc
            # The provider's stream is closed before the attempt settles: only then is the
            # slot free (a reader thread still blocked in the provider releases it later).
            chunks.close()
            if not self._may_resume(ctx, outcome):
                finish(plan, outcome, clock, run)
                return
            assert outcome is not None
            self.deliver = drive(plan, bindings, ctx, clock, run, outcome)

    async def asynchronous(
        self,
        plan: Plan,
        bindings: Mapping[str, Binding],
        ctx: RequestContext,
        clock: Clock,
        run: AsyncCallbackManagerForChainRun,
    ) -> AsyncGenerator[Any, None]:
        """Async :meth:`sync`."""
        while True:
            deliver = self.deliver
            first, chunks = deliver.result
            going_on = self._begin(deliver)
            outcome: BaseException | None = None
            try:
                if first is not EMPTY:
                    if (opening := self._open(first, deliver, going_on)) is not None:
                        yield opening
                    while (chunk := await chunks.next()) is not END:
                        for given in self._pass(chunk, going_on):
                            yield self._add(given)
                    for given in self._close(ctx, deliver, going_on):
                        yield self._add(given)
                elif going_on is not None:
                    going_on.end()
            except BaseException as exc:
                outcome = exc
            await chunks.close()
            if not self._may_resume(ctx, outcome):
                await afinish(plan, outcome, clock, run)
                return
            assert outcome is not None
            self.deliver = await adrive(plan, bindings, ctx, clock, run, outcome)

    # -- what the sync and async loops share -----------------------------------------------

    def _open(self, first: Any, deliver: Deliver, going_on: Continuation | None) -> Any:
        """A stream's first chunk: yielded (annotated) when it starts the answer; a resumed
        stream's passes its continuation first, and may repeat the text given."""
        self._watch(first)
        self._held = None  # a quiet chunk, held back to carry the cost
        if going_on is None:
            return self._first(first, deliver)
        self._held = going_on.cut(first)
        return None

    def _pass(self, chunk: Any, going_on: Continuation | None) -> tuple[Any, ...]:
        """What one more chunk of the provider's stream gives the consumer (each to go
        through :meth:`_add` as it is yielded): a held quiet chunk, then this one, unless
        it is quiet (held) or repeats the text given (dropped)."""
        self._watch(chunk)
        if going_on is not None and (chunk := going_on.cut(chunk)) is None:
            return ()
        held, self._held = self._held, None
        if quiet(chunk):
            self._held = chunk
            return () if held is None else (held,)
        return (chunk,) if held is None else (held, chunk)

    def _close(
        self, ctx: RequestContext, deliver: Deliver, going_on: Continuation | None
    ) -> tuple[Any, ...]:
        """The provider's stream ended: check it is whole, then what ends the answer."""
        self._complete(ctx, deliver)
        if going_on is not None:
            going_on.end()
        tail = self._tail(self._held, deliver.lease)
        self._held = None
        return () if tail is None else (tail,)

    def _begin(self, deliver: Deliver) -> Continuation | None:
        """Start relaying ``deliver``: a resumed stream's continuation, if it is one."""
        self._reports_end = self._ended = False
        going_on: Continuation | None = deliver.resume
        if going_on is not None:
            self._resumes.append(going_on.mark())
        return going_on

    def _watch(self, chunk: Any) -> None:
        """Note whether the provider's stream said how the answer ended, and whether it
        is one that always says so."""
        metadata = getattr(chunk, "response_metadata", None)
        if metadata:
            if metadata.get("model_provider") in _REPORTS_END:
                self._reports_end = True
            if any(metadata.get(k) for k in _END_REASONS):
                self._ended = True

    def _complete(self, ctx: RequestContext, deliver: Deliver) -> None:
        """A stream that resumes when broken must also be whole: one that ended without
        the finish reason its provider always sends was cut short (a body closed early
        is no error to the SDK), so it breaks here, and resumes."""
        if ctx.streaming is not None and self._reports_end and not self._ended:
            raise IncompleteStreamError(
                deliver.lease.provider.name, "the stream ended without a finish reason"
            )

    def _first(self, first: Any, deliver: Deliver) -> Any:
        """The first chunk of the first stream, which carries the router's annotation."""
        self.final = annotate(first, deliver)
        return first

    def _add(self, chunk: Any) -> Any:
        """Count ``chunk`` as yielded."""
        if self._resumes:
            _no_repeated_labels(chunk, self.final)
            self._attempt = chunk if self._attempt is None else self._attempt + chunk
        self.final = chunk if self.final is None else self.final + chunk
        return chunk

    def _tail(self, held: Any, lease: Lease) -> Any:
        """What ends the stream: its quiet last chunk (or one without content) carrying the
        cost and, after a resume, where it resumed."""
        if not self._resumes:
            return cost_tail(self.final, held, lease) if self.final is not None else held
        last = self._attempt
        if held is not None:
            last = held if last is None else last + held
        spent = [*self._spent, (last, lease)]
        router: dict[str, Any] = {"resumed": self._resumes}
        if any(getattr(message, "usage_metadata", None) for message, _ in spent):
            router["cost"] = _cost(spent)
        tail = held if held is not None else AIMessageChunk(content="", id=self._id())
        tail.response_metadata["router"] = router
        return tail

    def _id(self) -> str | None:
        return getattr(self.final, "id", None)

    def _may_resume(self, ctx: RequestContext, outcome: BaseException | None) -> bool:
        """Whether to tell the plan of ``outcome`` for it to resume the stream; the plan
        decides (or raises): a consumer that stopped reading is never resumed."""
        if outcome is None or ctx.streaming is None or not isinstance(outcome, Exception):
            self._settle(outcome)
            return False
        self._settle(outcome)
        deliver = self.deliver
        deliver.shown = self.final.text if self.final is not None else ""
        self._spent.append((deliver.lease.message, deliver.lease))
        self._attempt = None
        return True

    def _settle(self, outcome: BaseException | None) -> None:
        self.outcome = outcome
        # The attempt's own chunks (its usage); they are all of them on the first.
        self.deliver.lease.message = self._attempt if self._resumes else self.final


def _no_repeated_labels(chunk: Any, final: Any) -> None:
    """Drop from a resumed stream's chunk the labels the answer already has (its model
    name, its provider): chunks merge their text metadata by concatenation."""
    metadata = getattr(chunk, "response_metadata", None)
    if metadata and final is not None:
        had = final.response_metadata
        for key in [k for k, v in metadata.items() if isinstance(v, str) and k in had]:
            del metadata[key]


def _cost(spent: list[tuple[Any, Lease]]) -> dict[str, Any]:
    """The cost of every attempt's chunks, each at its own provider's prices."""
    cost_in = cost_out = 0.0
    currency = spent[-1][1].provider.currency
    for message, lease in spent:
        if message is None:
            continue
        i, o = lease.provider.price(lease.model, *usage_from_message(message))
        cost_in += i
        cost_out += o
    return {"input": cost_in, "output": cost_out, "total": cost_in + cost_out, "currency": currency}
