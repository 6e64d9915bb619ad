"""Attempts that end in unusual ways still release exactly what they hold, when the
provider call has really ended: timeouts, early-closed streams, reloads mid-flight.

Every invariant is measured where it lives: the provider fake counts its own concurrent
calls, threads are counted by name, and the router's own counters are checked against
them, never trusted alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from router_middleware import (
    DeadlineExceededError,
    FakeClock,
    NoProviderAvailableError,
    ResilientRouter,
    RouterError,
)
from router_middleware.testing import Hang, ScriptedChatModel


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def _join(prefix: str, timeout: float = 5.0) -> int:
    """Wait for the router's worker threads to end; how many are still alive after."""
    end = time.monotonic() + timeout
    for thread in _threads(prefix):
        thread.join(max(0.0, end - time.monotonic()))
    return len(_threads(prefix))


def _config(**timeouts: float) -> dict[str, Any]:
    return {
        "providers": [
            {"name": "p", "models": [{"name": "m"}], "rate_limit": {"max_concurrent": 2}}
        ],
        "timeouts": timeouts,
        "retry": {"attempts": 1},
        "max_wait_seconds": 0.05,
    }


# -- 1. a timed-out sync call keeps its slot until its thread returns ----------------------


def test_sync_attempt_timeout_holds_the_slot_until_the_call_returns() -> None:
    hung = ScriptedChatModel(default=Hang(seconds=30))
    router = ResilientRouter({"p": hung}, _config(attempt_seconds=0.05))
    try:
        with ThreadPoolExecutor(10) as pool:
            outcomes = list(
                pool.map(lambda _: _outcome(lambda: router.invoke("hi", model="m")), range(50))
            )
        # The hung provider filled its own two slots and was skipped as full after.
        assert hung.calls == 2
        assert hung.max_in_flight <= 2
        assert len(_threads("router-attempt-")) == 2  # one per hung call, no more
        assert router.providers["p"].limiter.in_flight == 2  # honest: they still run
        assert all(isinstance(o, RouterError) for o in outcomes)
        assert sum(isinstance(o, NoProviderAvailableError) for o in outcomes) == 48
    finally:
        hung.release_hangs()
    assert _join("router-attempt-") == 0
    assert router.providers["p"].limiter.in_flight == 0
    assert hung.in_flight == 0


async def test_async_attempt_timeout_cancels_the_call_and_frees_the_slot() -> None:
    hung = ScriptedChatModel(default=Hang(seconds=30))
    router = ResilientRouter({"p": hung}, _config(attempt_seconds=0.05))
    outcomes = await asyncio.gather(
        *(router.ainvoke("hi", model="m") for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(o, RouterError) for o in outcomes)
    assert hung.max_in_flight <= 2
    assert hung.in_flight == 0  # cancelled, not abandoned
    assert router.providers["p"].limiter.in_flight == 0


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except BaseException as exc:
        return exc


# -- 2 and 3. early-closed streams close the provider stream, then free the slot -----------


@pytest.mark.parametrize(
    "timeouts", [{}, {"first_token_seconds": 1.0, "idle_seconds": 1.0}], ids=["inline", "reader"]
)
def test_sync_streams_closed_early_leave_no_thread_and_no_open_stream(
    timeouts: dict[str, float],
) -> None:
    text = " ".join(f"w{i}" for i in range(1, 21))
    model = ScriptedChatModel(text=text, chunk_latency=0.05)
    router = ResilientRouter({"p": model}, _config(**timeouts))
    for _ in range(10):
        chunks = router.stream("hi", model="m")
        assert next(chunks).content == "w1 "
        # Without first-token or idle limits, no thread at all: the caller's thread reads.
        assert len(_threads("router-stream-")) == (1 if timeouts else 0)
        chunks.close()
        # A reader reads nothing ahead: it ends within one chunk, not after the stream.
        assert _join("router-stream-", timeout=0.5) == 0
        assert model.in_flight == 0  # the provider's own stream was closed
        assert router.providers["p"].limiter.in_flight == 0
    assert model.max_in_flight == 1
    assert router.providers["p"].metrics.cancelled == 10


async def test_async_stream_closed_after_the_first_chunk_closes_the_provider_stream() -> None:
    model = ScriptedChatModel(text="w1 w2 w3 w4 w5")
    router = ResilientRouter({"p": model}, _config())
    for _ in range(30):
        chunks = router.astream("hi", model="m")
        assert (await chunks.__anext__()).content == "w1 "
        await chunks.aclose()
        assert model.in_flight == 0  # closed now, not when garbage is collected
        assert router.providers["p"].limiter.in_flight == 0
    assert model.max_in_flight == 1
    assert router.providers["p"].metrics.cancelled == 30


async def test_concurrent_async_streams_closed_early_never_exceed_the_cap() -> None:
    model = ScriptedChatModel(text=" ".join(f"w{i}" for i in range(50)))
    router = ResilientRouter({"p": model}, {**_config(), "max_wait_seconds": 5})

    async def read_two() -> None:
        chunks = router.astream("hi", model="m")
        await chunks.__anext__()
        await chunks.__anext__()
        await chunks.aclose()

    await asyncio.gather(*(read_two() for _ in range(40)))
    assert model.max_in_flight <= 2
    assert model.in_flight == 0
    assert router.providers["p"].limiter.in_flight == 0


def test_threaded_streams_closed_early_never_exceed_the_cap() -> None:
    model = ScriptedChatModel(text=" ".join(f"w{i}" for i in range(50)), chunk_latency=0.001)
    router = ResilientRouter(
        {"p": model}, {**_config(first_token_seconds=2.0), "max_wait_seconds": 5}
    )

    def read_two(_: int) -> None:
        chunks = router.stream("hi", model="m")
        next(chunks)
        next(chunks)
        chunks.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read_two, range(40)))
    assert _join("router-stream-") == 0
    assert model.max_in_flight <= 2
    assert model.in_flight == 0
    assert router.providers["p"].limiter.in_flight == 0


def test_a_stream_stalled_past_its_idle_limit_times_out_and_holds_its_slot_until_it_ends() -> None:
    model = ScriptedChatModel(text="w1 w2 w3", chunk_latency=0.3)
    router = ResilientRouter({"p": model}, _config(idle_seconds=0.05))
    chunks = router.stream("hi", model="m")
    assert next(chunks).content == "w1 "
    with pytest.raises(RouterError):
        next(chunks)
    # The reader is still inside the provider (its chunk takes 0.3 s): the slot stays
    # taken until the reader has closed the provider's stream.
    assert router.providers["p"].limiter.in_flight == 1
    assert _join("router-stream-") == 0
    assert model.in_flight == 0
    assert router.providers["p"].limiter.in_flight == 0


# -- 4. a reload mid-flight keeps counting the calls admitted before it -------------------


def test_reloads_every_few_milliseconds_never_exceed_the_cap_threads() -> None:
    model = ScriptedChatModel(latency=0.01)
    config = {**_config(), "max_wait_seconds": 5}
    router = ResilientRouter({"p": model}, config)
    stop = threading.Event()

    def reload() -> None:
        while not stop.is_set():
            router.apply_config(config)
            time.sleep(0.002)

    reloader = threading.Thread(target=reload)
    reloader.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(
                pool.map(lambda _: _outcome(lambda: router.invoke("hi", model="m")), range(200))
            )
    finally:
        stop.set()
        reloader.join()
    assert all(not isinstance(o, BaseException) for o in outcomes)
    assert model.max_in_flight <= 2
    assert router.providers["p"].limiter.in_flight == 0


async def test_reloads_every_few_milliseconds_never_exceed_the_cap_asyncio() -> None:
    model = ScriptedChatModel(latency=0.01)
    config = {**_config(), "max_wait_seconds": 5}
    router = ResilientRouter({"p": model}, config)

    async def reload() -> None:
        while True:
            router.apply_config(config)
            await asyncio.sleep(0)

    reloader = asyncio.create_task(reload())
    try:
        outcomes = await asyncio.gather(*(router.ainvoke("hi", model="m") for _ in range(200)))
    finally:
        reloader.cancel()
    assert len(outcomes) == 200
    assert model.max_in_flight <= 2
    assert router.providers["p"].limiter.in_flight == 0


# -- 6. the deadline holds after a stream's first chunk ----------------------------------


def test_sync_stream_deadline_is_enforced_after_the_first_chunk() -> None:
    clock = FakeClock()
    model = ScriptedChatModel(
        text=" ".join(f"w{i}" for i in range(9)), chunk_latency=0.3, clock=clock
    )
    router = ResilientRouter({"p": model}, {**_config(), "deadline_seconds": 1.0}, clock=clock)
    got: list[Any] = []
    with pytest.raises(DeadlineExceededError):
        got.extend(chunk.content for chunk in router.stream("hi", model="m"))
    assert 1 <= len(got) <= 4  # 0.3 s a chunk: the fourth chunk arrives past 1 s
    assert clock.now() <= 1.0 + 0.3
    assert model.in_flight == 0
    assert router.providers["p"].limiter.in_flight == 0


async def test_async_stream_deadline_is_enforced_after_the_first_chunk() -> None:
    model = ScriptedChatModel(text=" ".join(f"w{i}" for i in range(40)), chunk_latency=0.02)
    router = ResilientRouter({"p": model}, {**_config(), "deadline_seconds": 0.2})
    start = time.monotonic()
    got: list[Any] = []

    async def read() -> None:
        async for chunk in router.astream("hi", model="m"):
            got.append(chunk.content)

    with pytest.raises(DeadlineExceededError):
        await read()
    assert time.monotonic() - start < 0.6  # the whole stream would take 0.8 s
    assert 1 <= len(got) < 40
    assert model.in_flight == 0
    assert router.providers["p"].limiter.in_flight == 0


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_a_worker_thread_that_cannot_start_leaves_no_slot_taken(
    stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = ResilientRouter(
        {"p": ScriptedChatModel()}, _config(attempt_seconds=1.0, first_token_seconds=1.0)
    )

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)

    def call() -> Any:
        if stream:
            return list(router.stream("hi", model="m"))
        return router.invoke("hi", model="m")

    with pytest.raises(RouterError, match="can't start new thread"):
        call()
    assert router.providers["p"].limiter.in_flight == 0
