"""When Redis is slow or gone: every request still ends, none waits on Redis longer than
the timeout, one event and one log line per change, and shared state again by itself."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from router_middleware import NoProviderAvailableError, Observer, ResilientRouter
from tests.redis_server import free_port, redis_server


class StateEvents(Observer):
    def __init__(self) -> None:
        self.changes: list[tuple[bool, str]] = []

    def state_changed(self, degraded: bool, reason: str) -> None:
        self.changes.append((degraded, reason))


def ok(request: Any) -> str:
    return "ok"


def router_on(url: str, events: StateEvents | None = None, **state: Any) -> ResilientRouter:
    state.setdefault("recheck_seconds", 0.05)
    config = {
        "state": {"url": url, **state},
        "max_wait_seconds": 0,
        "providers": [
            {
                "name": "p",
                "models": [{"name": "m"}],
                "rate_limit": {"requests_per_second": 2, "burst": 4, "max_concurrent": 8},
            }
        ],
    }
    return ResilientRouter({"p": ok}, config, observers=[events] if events else [])


@pytest.fixture
def server() -> Iterator[tuple[Any, str]]:
    """A redis-server of the test's own, to stop and start."""
    with redis_server() as found:
        yield found


def close(router: ResilientRouter) -> None:
    router.store.close()  # type: ignore[attr-defined]


def test_a_router_starts_with_redis_down_and_limits_locally(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = StateEvents()
    router = router_on(f"redis://127.0.0.1:{free_port()}/0", events)
    with caplog.at_level(logging.WARNING, logger="router_middleware"):
        answers = [router.invoke("hi", model="m").content for _ in range(4)]
        with pytest.raises(NoProviderAvailableError):
            router.invoke("hi", model="m")  # the local bucket (burst 4) holds
    assert answers == ["ok"] * 4
    assert [d for d, _ in events.changes] == [True]
    assert "ConnectionError" in events.changes[0][1]
    assert sum("shared state unavailable" in r.message for r in caplog.records) == 1
    status = router.metrics()["state"]
    assert status["degraded"] is True
    assert status["degradations"] == 1
    close(router)


def test_it_returns_to_shared_state_when_redis_answers() -> None:
    port = free_port()
    events = StateEvents()
    router = router_on(f"redis://127.0.0.1:{port}/0", events)
    router.invoke("hi", model="m")
    assert [d for d, _ in events.changes] == [True]
    with redis_server(port=port) as (_, url):
        deadline = time.monotonic() + 5
        while len(events.changes) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [d for d, _ in events.changes] == [True, False]
        router.invoke("hi", model="m")
        keys = redis.Redis.from_url(url).keys("*")
        assert b"{llmr:p}:bucket" in keys
        assert router.metrics()["state"]["degraded"] is False
    close(router)


def test_a_frozen_redis_costs_one_timeout_once_then_nothing(server: tuple[Any, str]) -> None:
    proc, url = server
    events = StateEvents()
    timeout = 0.2
    router = router_on(url, events, timeout_seconds=timeout)
    router.invoke("hi", model="m")
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        took = []
        for _ in range(3):
            t0 = time.monotonic()
            router.invoke("hi", model="m")
            took.append(time.monotonic() - t0)
        assert max(took) < timeout + 0.15, took  # one op bounded by the timeout
        assert sum(took[1:]) < 0.05, took  # then local at once: no Redis on the path
        assert [d for d, _ in events.changes] == [True]
        assert "Timeout" in events.changes[0][1]
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 5
    while len(events.changes) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [d for d, _ in events.changes] == [True, False]
    close(router)


async def test_the_event_loop_never_waits_on_a_frozen_redis(server: tuple[Any, str]) -> None:
    proc, url = server
    router = router_on(url, timeout_seconds=0.5)
    await router.ainvoke("hi", model="m")
    lags: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t0 - 0.01)

    ticker = asyncio.create_task(tick())
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        answer = await router.ainvoke("hi", model="m")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        done.set()
        await ticker
    assert answer.content == "ok"
    assert max(lags) < 0.25, max(lags)  # admission's round trip ran off the loop
    close(router)


def test_closed_refuses_while_redis_is_down() -> None:
    router = router_on(f"redis://127.0.0.1:{free_port()}/0", on_error="closed")
    with pytest.raises(NoProviderAvailableError) as caught:
        router.invoke("hi", model="m")
    assert "shared state unavailable" in caught.value.reasons["p"]
    close(router)


def test_open_admits_past_the_limits_while_redis_is_down() -> None:
    router = router_on(f"redis://127.0.0.1:{free_port()}/0", on_error="open")
    assert [router.invoke("hi", model="m").content for _ in range(10)] == ["ok"] * 10
    close(router)


def test_local_divides_the_shared_limits_by_the_expected_replicas() -> None:
    router = router_on(f"redis://127.0.0.1:{free_port()}/0", expected_replicas=2)
    router.invoke("hi", model="m")
    router.invoke("hi", model="m")
    with pytest.raises(NoProviderAvailableError):
        router.invoke("hi", model="m")  # burst 4 / 2 replicas
    close(router)


def test_the_password_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    events = StateEvents()
    url = f"redis://user:hunter2-secret@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.DEBUG):
        router = router_on(url, events)
        router.invoke("hi", model="m")
    shown = [repr(router), repr(router.store), str(router.metrics()), caplog.text]
    shown += [reason for _, reason in events.changes]
    shown.append(repr(router.router_config))
    assert not [s for s in shown if "hunter2" in s]
    assert router.metrics()["state"]["url"] == f"redis://user:***@127.0.0.1:{url.split(':')[-1]}"
    close(router)


def test_a_timeout_in_the_urls_query_does_not_unbound_an_operation(
    server: tuple[Any, str],
) -> None:
    proc, url = server
    router = router_on(f"{url}?socket_timeout=30&socket_connect_timeout=30", timeout_seconds=0.2)
    router.invoke("hi", model="m")
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        router.invoke("hi", model="m")
        took = time.monotonic() - t0
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert took < 0.5, took
    close(router)


async def test_a_settle_on_a_frozen_redis_never_blocks_the_event_loop(
    server: tuple[Any, str],
) -> None:
    proc, url = server
    frozen = asyncio.Event()

    async def freezes_redis(request: Any) -> str:
        os.kill(proc.pid, signal.SIGSTOP)  # admitted on Redis; its settle will meet a freeze
        frozen.set()
        return "ok"

    config = {
        "state": {"url": url, "timeout_seconds": 0.5, "recheck_seconds": 0.05},
        "providers": [{"name": "p", "models": [{"name": "m"}]}],
    }
    events = StateEvents()
    router = ResilientRouter({"p": freezes_redis}, config, observers=[events])
    lags: list[float] = []

    async def tick() -> None:
        while len(events.changes) < 1:
            t0 = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t0 - 0.01)

    ticker = asyncio.create_task(tick())
    try:
        answer = await router.ainvoke("hi", model="m")
        await asyncio.wait_for(ticker, 5)  # ends once the settle has met the freeze
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert frozen.is_set()
    assert answer.content == "ok"
    assert [d for d, _ in events.changes] == [True]
    assert max(lags) < 0.25, max(lags)  # the settle's 0.5 s timeout ran off the loop
    close(router)
