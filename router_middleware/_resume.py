"""Resuming a broken stream on another provider: when, how, and the splice arithmetic.

With ``streaming.resume: continue``, a stream that fails after its first chunk (a cut
connection, an idle timeout, a malformed chunk, an incomplete end) is handed by the plan
to the next candidate, which is asked for the rest of the same answer in one of two ways:

- **prefill**, where the provider continues a partial assistant message (declared with
  ``capabilities.prefill``, detected for ``ChatAnthropic``): the text given so far is sent
  as the assistant's own prefix, and what the provider streams is the rest;
- **regenerate**, everywhere else: the provider answers the request afresh, and its text
  is skipped while it repeats what the consumer was given; the first character that
  differs ends the stream with :class:`~._errors.PartialStreamError`, before anything
  of it is yielded. Nothing is ever yielded twice, and no seam is passed off as an answer.

Never in the middle of a tool call, nor for an answer under a structured-output contract
(a ``response_format``; a router ``with_structured_output`` never streams pieces).

The plan keeps a :class:`Resumption` between the break and the next provider's call, and
hands that call's stream a :class:`Continuation`, which the relay (``_relay``) applies to
every chunk.

Example:
    >>> from langchain_core.messages import AIMessageChunk
    >>> again = Continuation("a", "b", "Hello wor", "regenerate", "Hello wor", strict=True,
    ...                      error=ConnectionResetError("reset"))
    >>> [again.cut(AIMessageChunk(content=t)) for t in ("Hel", "lo world")]
    [None, AIMessageChunk(content='ld', ...)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

from ._classification import Classification, ErrorKind
from ._config_streaming import StreamingConfig
from ._context import RequestContext
from ._errors import (
    DeadlineExceededError,
    IncompleteStreamError,
    InvalidInputError,
    PartialStreamError,
    ProviderTimeoutError,
)
from ._lease import Lease
from ._observe import AttemptEnd, Observers
from ._prefill import prefilled
from ._request import RequestState

__all__ = [
    "EVENT",
    "Continuation",
    "Resumption",
    "broke",
    "continuing",
    "refusal",
    "resume",
    "streaming_of",
]

EVENT = "router_stream_resumed"
"""The custom event emitted as a broken stream goes on with another provider."""

# Options that bind the answer to a schema: half of one provider's JSON continued by
# another's is no answer anyone can vouch for.
_CONTRACTS = ("response_format", "format", "json_schema")


def streaming_of(value: Any, default: StreamingConfig) -> StreamingConfig:
    """A call's ``streaming`` control (a mapping, or a :class:`StreamingConfig`) over the
    router's ``default``.

    Example:
        >>> streaming_of({"resume": "continue"}, StreamingConfig()).resume
        'continue'
    """
    if isinstance(value, StreamingConfig):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"streaming must be a mapping such as {{'resume': 'continue'}}, not "
            f"{type(value).__name__}"
        )
    try:
        return StreamingConfig.model_validate({**default.model_dump(), **value})
    except ValidationError as exc:
        raise InvalidInputError(f"invalid streaming control: {exc.errors()[0]['msg']}") from None


def broke(
    req: RequestState,
    lease: Lease,
    error: BaseException,
    verdict: Classification,
    shown: str,
    end: AttemptEnd,
    observer: Observers,
    now: float,
) -> bool:
    """A stream broke with ``error`` (judged ``verdict``) after its consumer was shown
    ``shown``: report the attempt's ``end``, then return ``True`` when the next candidate
    is to continue it, or raise what the caller is to get.

    Without resuming, no failover: the error reaches the caller (a transient one as an
    :class:`~._errors.IncompleteStreamError`); a resumed stream that cannot go on raises
    :class:`~._errors.PartialStreamError`.
    """
    name = lease.provider.name
    before = req.resumption
    why: str | None = "resuming is off"
    if req.ctx.streaming is not None:
        why = resume(req, lease, error, verdict, shown, now)
    observer.attempt_ended(dataclasses.replace(end, fallback=True) if why is None else end)
    if why is None:
        return True
    if before is not None and verdict.policy.failover:  # a resumed stream broke for good
        raise PartialStreamError(name, shown, before.error, why) from error
    if isinstance(error, ProviderTimeoutError) and error.phase == "deadline":
        limit = f"deadline {req.ctx.deadline_seconds:g}s"
        raise DeadlineExceededError(req.ctx.model, {name: error}, req.attempts, limit) from error
    if verdict.kind is ErrorKind.TRANSIENT and not isinstance(error, IncompleteStreamError):
        raise IncompleteStreamError(
            name, f"the stream broke after its first chunk ({type(error).__name__})"
        ) from error
    raise error


def resume(
    req: RequestState,
    lease: Lease,
    error: BaseException,
    verdict: Classification,
    shown: str,
    now: float,
) -> str | None:
    """Hand the stream of ``lease``, which broke with ``error`` once its consumer was
    shown ``shown``, to the next candidate (``req.resumption``); or say why not."""
    before = req.resumption
    resumes = 0 if before is None else before.resumes
    why = refusal(req.ctx, error, verdict, lease.message, resumes, req.deadline - now)
    if why is None and req.attempts >= req.ctx.max_attempts:
        why = f"max_attempts {req.ctx.max_attempts} reached"
    if why is not None:
        return why
    name = lease.provider.name
    first = error if before is None else before.error
    req.resumption = Resumption(name, shown, first, resumes + 1)
    req.left = (name, verdict.kind.value)  # reported as a fallback once another admits it
    req.errors[name] = error
    req.done.add(name)
    return None


def continuing(
    req: RequestState, provider: str, model: str, prefill: Collection[tuple[str, str]]
) -> tuple[Continuation, Any]:
    """How ``provider`` continues the request's broken stream, and the input to send it
    (``None``: the request's own)."""
    assert req.resumption is not None
    going_on = req.resumption.onto(provider, (provider, model) in prefill)
    if going_on.prefix is None:
        return going_on, None
    return going_on, prefilled(req.ctx.input, going_on.prefix)


def refusal(
    ctx: RequestContext,
    error: BaseException,
    verdict: Classification,
    message: Any,
    resumes: int,
    time_left: float,
) -> str | None:
    """Why a stream that broke with ``error`` after yielding ``message`` (its chunks
    summed) may not resume, having resumed ``resumes`` times; ``None`` when it may."""
    streaming = ctx.streaming
    if streaming is None or streaming.resume == "off":
        return "resuming is off"
    if resumes >= streaming.max_resumes:
        return f"max_resumes {streaming.max_resumes} reached"
    if not verdict.policy.failover or isinstance(error, PartialStreamError):
        return f"a {verdict.kind.value} error does not fail over"
    if (isinstance(error, ProviderTimeoutError) and error.phase == "deadline") or time_left <= 0:
        return "the request's deadline ran out"
    if message is not None and (
        getattr(message, "tool_call_chunks", None) or getattr(message, "tool_calls", None)
    ):
        return "it broke in a tool call"
    if any(key in ctx.options for key in _CONTRACTS):
        return "its answer follows a structured-output contract"
    return None


@dataclasses.dataclass(slots=True)
class Resumption:
    """A broken stream waiting for the next provider to continue it.

    Attributes:
        origin: the provider whose stream broke.
        shown: all the text the consumer was given.
        error: what broke the stream first (a later break keeps it).
        resumes: how many times this request's stream has resumed, this one included.
    """

    origin: str
    shown: str
    error: BaseException
    resumes: int

    def onto(self, provider: str, prefill: bool) -> Continuation:
        """How ``provider`` continues the stream: from the prefix when it can ``prefill``
        and there is text to send, else afresh."""
        sent = self.shown.rstrip()
        if prefill and sent:
            # Anthropic refuses a prefix ending in white space; what is held back of it
            # is skipped where the continuation repeats it, and forgiven where it does not.
            skip = self.shown[len(sent) :]
            return Continuation(
                self.origin, provider, self.shown, "prefill", skip, False, self.error, sent
            )
        return Continuation(
            self.origin, provider, self.shown, "regenerate", self.shown, True, self.error
        )

    def failed(self, cause: BaseException) -> PartialStreamError:
        """The error that ends the request when no provider could continue the stream."""
        why = f"no provider continued it ({type(cause).__name__})"
        exc = PartialStreamError(self.origin, self.shown, self.error, why)
        exc.__cause__ = cause
        return exc


class Continuation:
    """How one provider's stream continues a broken one: the relay passes each chunk
    through :meth:`cut`, then calls :meth:`end` once the stream has finished.

    ``skip`` is the text the new stream is expected to repeat first; ``strict`` says
    whether repeating anything else is a divergence (regenerate) or forgiven (the white
    space a prefill held back). ``prefix`` is the assistant prefix sent (prefill).
    """

    __slots__ = ("error", "how", "origin", "prefix", "provider", "shown", "skip", "strict")

    def __init__(
        self,
        origin: str,
        provider: str,
        shown: str,
        how: str,
        skip: str,
        strict: bool,
        error: BaseException,
        prefix: str | None = None,
    ) -> None:
        self.origin = origin
        self.provider = provider
        self.shown = shown
        self.how = how
        self.skip = skip
        self.strict = strict
        self.error = error
        self.prefix = prefix

    def mark(self) -> dict[str, Any]:
        """What the final chunk's ``response_metadata["router"]["resumed"]`` and the
        ``router_stream_resumed`` event say about this resume."""
        return {
            "from": self.origin,
            "to": self.provider,
            "offset": len(self.shown),
            "how": self.how,
            "error": type(self.error).__name__,
        }

    def cut(self, chunk: Any) -> Any:
        """``chunk`` less the text it repeats (``None`` when nothing of it is left).

        Raises:
            PartialStreamError: the regenerated answer differs from what was given.
        """
        skip = self.skip
        if not skip:
            return chunk
        if getattr(chunk, "tool_call_chunks", None):
            return self._diverged(chunk) if self.strict else self._forgive(chunk)
        text = chunk.text
        if not text:
            return chunk  # usage, a finish reason: nothing to compare
        n = min(len(text), len(skip))
        if text[:n] != skip[:n]:
            return self._diverged(chunk) if self.strict else self._forgive(chunk)
        self.skip = skip[n:]
        if n == len(text):
            # Entirely repeated: its usage, if it carries any, still counts.
            return without_text(chunk, 0) if getattr(chunk, "usage_metadata", None) else None
        return without_text(chunk, n)

    def end(self) -> None:
        """The new stream finished: an answer shorter than the text already given is not
        the same answer.

        Raises:
            PartialStreamError: the regenerated answer ended within the text given.
        """
        if self.skip and self.strict:
            self._diverged(None)

    def _forgive(self, chunk: Any) -> Any:
        self.skip = ""
        return chunk

    def _diverged(self, chunk: Any) -> Any:
        offset = len(self.shown) - len(self.skip)
        how = "ended" if chunk is None else "differs"
        raise PartialStreamError(
            self.origin,
            self.shown,
            self.error,
            f"{self.provider!r} regenerated an answer that {how} at character {offset}",
        )


def without_text(chunk: Any, n: int) -> Any:
    """A copy of ``chunk`` whose text starts ``n`` characters in (``n == 0``: no text)."""
    content = chunk.content
    if isinstance(content, str):
        return chunk.model_copy(update={"content": content[n:] if n else ""})
    kept: list[Any] = []
    left = n if n else None
    for block in content:
        text, is_dict = (block, False) if isinstance(block, str) else (None, True)
        if is_dict and isinstance(block, Mapping) and block.get("type") == "text":
            text = block.get("text", "")
        if text is None:
            kept.append(block)
            continue
        if left is None:
            continue  # no text at all
        cut, left = text[left:], max(left - len(text), 0)
        if cut:
            kept.append({**block, "text": cut} if is_dict else cut)
    return chunk.model_copy(update={"content": kept})
