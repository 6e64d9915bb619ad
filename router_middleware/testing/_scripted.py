"""The scripted chat model and its behaviours (public in :mod:`router_middleware.testing`)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from .._clock import Clock, FakeClock, SystemClock
from .._types import usage

__all__ = [
    "Behaviour",
    "Fail",
    "FakeClock",
    "HTTPStatusError",
    "Hang",
    "Reply",
    "ScriptedChatModel",
    "StreamBreak",
    "http_error",
]


class _Response:
    """The part of an httpx response that error classifiers read."""

    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


class HTTPStatusError(Exception):
    """An SDK-style HTTP error: ``status_code``, ``response.headers``, an OpenAI-like ``body``."""

    def __init__(
        self, status_code: int, headers: dict[str, str] | None = None, code: str | None = None
    ) -> None:
        self.status_code = status_code
        self.response = _Response(status_code, headers or {})
        self.body = {"error": {"code": code, "message": f"HTTP {status_code}"}} if code else None
        super().__init__(f"HTTP {status_code}" + (f" ({code})" if code else ""))


def http_error(
    status: int, *, retry_after: float | None = None, code: str | None = None
) -> HTTPStatusError:
    """An HTTP error as provider SDKs raise it, optionally with ``Retry-After``."""
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    return HTTPStatusError(status, headers, code)


@dataclass(frozen=True)
class Reply:
    """Answer ``text`` (the model's default when ``None``) after ``latency`` seconds."""

    text: str | None = None
    latency: float = 0.0


@dataclass(frozen=True)
class Fail:
    """Raise ``error`` after ``latency`` seconds."""

    error: BaseException
    latency: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Never answer (until ``seconds`` of real time pass): for timeout tests."""

    seconds: float = 30.0


@dataclass(frozen=True)
class StreamBreak:
    """Stream ``after`` chunks, then raise ``error`` (a plain call raises at once)."""

    after: int
    error: BaseException = field(default_factory=lambda: ConnectionResetError("stream reset"))


Behaviour = Reply | Fail | Hang | StreamBreak | str | BaseException


class ScriptedChatModel(BaseChatModel):
    """A chat model that follows a script, then a default behaviour.

    Args:
        script: behaviours for successive calls (a str is a :class:`Reply`, an exception
            a :class:`Fail`); once used up, ``default`` applies.
        default: the behaviour after the script (answer ``text``).
        text: the default answer; streams split it into words.
        failure_rate / failure: with a seeded ``rng``, fail this share of default calls.
        latency: seconds spent (on ``clock``) by default calls.
        chunk_latency: seconds spent (on ``clock``) before each streamed chunk after the
            first: a slow stream.
        clock: where latency is spent; a ``FakeClock`` makes it free.
        prefill: continue a conversation that ends in an assistant message (as Anthropic's
            models do) rather than answer it: a reply that starts with that message's
            text gives only the rest. Each prefix received is kept in ``prefixes``.

    Attributes ``calls``, ``in_flight`` and ``max_in_flight`` let tests check what the
    provider saw. A :class:`StreamBreak` in the script is a stream cut after some chunks.

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> model = ScriptedChatModel(text="one two three", prefill=True)
        >>> model.invoke([("human", "count"), AIMessage("one two")]).content
        ' three'
        >>> model.prefixes
        ['one two']
    """

    script: list[Any] = Field(default_factory=list)
    default: Any = None
    text: str = "ok"
    failure_rate: float = 0.0
    failure: Callable[[], BaseException] = Field(default=lambda: ConnectionError("simulated"))
    latency: float | Callable[[], float] = 0.0
    chunk_latency: float = 0.0
    seed: int = 0
    clock: Clock = Field(default_factory=SystemClock, exclude=True)
    usage: tuple[int, int] | None = (3, 2)
    prefill: bool = False

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _rng: random.Random = PrivateAttr()
    _calls: int = PrivateAttr(default=0)
    _in_flight: int = PrivateAttr(default=0)
    _max_in_flight: int = PrivateAttr(default=0)
    _release: threading.Event = PrivateAttr(default_factory=threading.Event)
    _prefixes: list[str] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any) -> None:
        self._rng = random.Random(self.seed)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def prefixes(self) -> list[str]:
        """The assistant prefixes this model was asked to continue (``prefill``)."""
        return list(self._prefixes)

    def release_hangs(self) -> None:
        """Let every hanging call return (so test threads end)."""
        self._release.set()

    def _next(self) -> Behaviour:
        with self._lock:
            self._calls += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if self.script:
                item = self.script.pop(0)
            elif self.default is not None:
                item = self.default
            elif self.failure_rate and self._rng.random() < self.failure_rate:
                item = Fail(self.failure())
            else:
                lat = self.latency() if callable(self.latency) else self.latency
                item = Reply(None, lat)
        if isinstance(item, str):
            return Reply(item)
        if isinstance(item, BaseException):
            return Fail(item)
        return item  # type: ignore[no-any-return]

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _message(self, reply: Reply) -> AIMessage:
        message = AIMessage(reply.text if reply.text is not None else self.text)
        if self.usage:
            i, o = self.usage
            message.usage_metadata = usage(i, o)
        return message

    # -- sync ---------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        step = self._begin(messages, kwargs, stop)
        try:
            return ChatResult(generations=[ChatGeneration(message=self._act(step))])
        finally:
            self._done()

    def _act(self, step: Behaviour) -> AIMessage:
        if isinstance(step, Hang):
            self._release.wait(step.seconds)
            raise TimeoutError("hung call released")
        latency, outcome = self._outcome(step)
        if latency:
            self.clock.sleep(latency)
        return self._deliver(outcome)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        step = self._begin(messages, kwargs, stop)
        try:
            plan = (
                self._broken(step) if isinstance(step, StreamBreak) else self._plan(self._act(step))
            )
            for i, piece in enumerate(plan.pieces):
                if i and self.chunk_latency:
                    self.clock.sleep(self.chunk_latency)
                yield self._chunk(piece, run_manager)
            if (last := self._ending(plan)) is not None:
                yield last
        finally:
            self._done()

    # -- async --------------------------------------------------------------------------

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        step = self._begin(messages, kwargs, stop)
        try:
            return ChatResult(generations=[ChatGeneration(message=await self._aact(step))])
        finally:
            self._done()

    async def _aact(self, step: Behaviour) -> AIMessage:
        if isinstance(step, Hang):
            await asyncio.sleep(step.seconds)
            raise TimeoutError("hung call released")
        latency, outcome = self._outcome(step)
        if latency:
            await self.clock.asleep(latency)
        return self._deliver(outcome)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        step = self._begin(messages, kwargs, stop)
        try:
            plan = (
                self._broken(step)
                if isinstance(step, StreamBreak)
                else self._plan(await self._aact(step))
            )
            for i, piece in enumerate(plan.pieces):
                if i and self.chunk_latency:
                    await self.clock.asleep(self.chunk_latency)
                yield self._chunk(piece, None)
                await asyncio.sleep(0)  # let other tasks run between chunks
            if (last := self._ending(plan)) is not None:
                yield last
        finally:
            self._done()

    # -- helpers (what the sync and async paths share) -------------------------------------

    def _begin(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], stop: list[str] | None = None
    ) -> Behaviour:
        """The behaviour of a call that starts now (a subclass may look at its input)."""
        step = self._next()
        if self.prefill and messages and isinstance(messages[-1], AIMessage):
            prefix = messages[-1].text
            with self._lock:
                self._prefixes.append(prefix)
            if isinstance(step, Reply):
                text = step.text if step.text is not None else self.text
                return Reply(text.removeprefix(prefix), step.latency)
        return step

    def _outcome(self, step: Behaviour) -> tuple[float, AIMessage | BaseException]:
        """Seconds to spend, then the answer or the error of a non-hanging step."""
        if isinstance(step, StreamBreak):  # a plain call breaks at once
            return 0.0, step.error
        assert isinstance(step, (Reply, Fail))
        return step.latency, step.error if isinstance(step, Fail) else self._message(step)

    @staticmethod
    def _deliver(outcome: AIMessage | BaseException) -> AIMessage:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _plan(self, message: AIMessage) -> _StreamPlan:
        """How ``message`` streams: its words, then the usage chunk."""
        words = [AIMessageChunk(content=w) for w in self._words(message.text)]
        return _StreamPlan(words, last=self._usage_message())

    def _broken(self, step: StreamBreak) -> _StreamPlan:
        """The words a breaking stream yields before its error."""
        words = self._words(None)[: step.after]
        return _StreamPlan([AIMessageChunk(content=w) for w in words], error=step.error)

    @staticmethod
    def _ending(plan: _StreamPlan) -> ChatGenerationChunk | None:
        """After the pieces: raise the plan's error, or give its last chunk (if any)."""
        if plan.error is not None:
            raise plan.error
        return ChatGenerationChunk(message=plan.last) if plan.last is not None else None

    def _words(self, text: str | None) -> Sequence[str]:
        words = (text if text is not None else self.text).split(" ")
        return [w + " " for w in words[:-1]] + words[-1:]

    def _chunk(
        self, piece: AIMessageChunk, run_manager: CallbackManagerForLLMRun | None
    ) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=piece)
        if run_manager is not None:
            run_manager.on_llm_new_token(piece.text, chunk=chunk)
        return chunk

    def _usage_message(self) -> AIMessageChunk | None:
        """The chunk that ends a stream with the call's usage (none without usage)."""
        if not self.usage:
            return None
        i, o = self.usage
        return AIMessageChunk(content="", usage_metadata=usage(i, o))


@dataclass
class _StreamPlan:
    """What a stream yields: ``pieces`` (paced by ``chunk_latency``), then ``error``
    raised or ``last`` yielded (the usage chunk, unpaced)."""

    pieces: list[AIMessageChunk]
    error: BaseException | None = None
    last: AIMessageChunk | None = None
