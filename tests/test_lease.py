"""The lease: exactly-once settling, gates in order, slots kept while a call runs on."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from router_middleware import FakeClock, ResilientRouter
from router_middleware._classification import Classification, ErrorKind
from router_middleware._gates import Gate, Refusal
from router_middleware._lease import Lease, admit
from router_middleware._provider import Provider
from router_middleware.testing import ScriptedChatModel

from .conftest import provider_config


def _provider(**rate_limit: Any) -> Provider:
    config = {"providers": [provider_config("p", rate_limit=rate_limit or {"max_concurrent": 1})]}
    router = ResilientRouter({"p": ScriptedChatModel()}, config, clock=FakeClock())
    return router.providers["p"]


class Spy(Gate):
    """Records the order gates are entered, undone and exited in."""

    __slots__ = ("log", "name", "refuse")

    def __init__(self, name: str, log: list[str], refuse: bool = False) -> None:
        self.name, self.log, self.refuse = name, log, refuse

    def enter(self, lease: Lease) -> Refusal | None:
        self.log.append(f"enter {self.name}")
        return Refusal("no", 1.0) if self.refuse else None

    def undo(self, lease: Lease) -> None:
        self.log.append(f"undo {self.name}")

    def exit(self, lease: Lease) -> None:
        self.log.append(f"exit {self.name}:{lease.outcome}")


def test_a_lease_settles_once_whatever_the_paths_that_end_it() -> None:
    provider = _provider()
    lease, refusal = admit(provider, "m", 1, 0.0)
    assert refusal is None
    assert provider.limiter.in_flight == 1
    lease.fail(Classification(ErrorKind.TRANSIENT))
    lease.cancel()
    lease.succeed("late")
    lease.ignore()
    assert lease.outcome == "failed"
    assert provider.limiter.in_flight == 0
    assert provider.breaker.failures_in_window() == 1  # heard once


def test_gates_exit_in_admission_order_and_a_refusal_undoes_the_earlier_ones() -> None:
    provider = _provider()
    log: list[str] = []
    provider.gates = (Spy("a", log), Spy("b", log), Spy("c", log, refuse=True))
    lease, refusal = admit(provider, "m", 1, 0.0)
    assert refusal is not None
    assert refusal.reason == "no"
    assert log == ["enter a", "enter b", "enter c", "undo b", "undo a"]
    log.clear()
    provider.gates = (Spy("a", log), Spy("b", log))
    lease, refusal = admit(provider, "m", 1, 0.0)
    assert refusal is None
    lease.succeed()
    assert log == ["enter a", "enter b", "exit a:succeeded", "exit b:succeeded"]


def test_a_detached_call_keeps_its_slot_until_it_has_ended() -> None:
    provider = _provider()
    lease, _ = admit(provider, "m", 1, 0.0)
    lease.detach()
    lease.fail(Classification(ErrorKind.TIMEOUT))  # the router gave up on the call...
    assert provider.breaker.failures_in_window() == 1  # ...the breaker heard at once...
    assert provider.limiter.in_flight == 1  # ...but the call still runs: its slot is taken
    lease.call_ended()
    assert provider.limiter.in_flight == 0
    lease.call_ended()  # a second report changes nothing
    assert provider.limiter.in_flight == 0


def test_a_detached_call_that_ends_first_frees_its_slot_at_the_settle() -> None:
    provider = _provider()
    lease, _ = admit(provider, "m", 1, 0.0)
    lease.detach()
    lease.call_ended()
    assert provider.limiter.in_flight == 1  # still the attempt's until it settles
    lease.succeed()
    assert provider.limiter.in_flight == 0


@pytest.mark.parametrize("settle_first", [True, False])
def test_the_settle_and_the_call_end_racing_on_two_threads_release_once(
    settle_first: bool,
) -> None:
    provider = _provider(max_concurrent=1000)
    leases = []
    for _ in range(500):
        lease, _ = admit(provider, "m", 1, 0.0)
        lease.detach()
        leases.append(lease)
    barrier = threading.Barrier(2)

    def settle() -> None:
        barrier.wait()
        for lease in leases:
            lease.succeed()

    def end_calls() -> None:
        barrier.wait()
        for lease in leases:
            lease.call_ended()

    threads = [
        threading.Thread(target=f)
        for f in ((settle, end_calls) if settle_first else (end_calls, settle))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert provider.limiter.in_flight == 0


def test_repr_shows_the_live_state() -> None:
    provider = _provider()
    lease, _ = admit(provider, "m", 2, 0.0)
    assert repr(lease) == "Lease(provider='p', model='m', attempt=2, open)"
    lease.detach()
    lease.succeed()
    assert repr(lease) == "Lease(provider='p', model='m', attempt=2, succeeded)"


def test_a_new_limit_is_one_gate_class_that_reads_the_request() -> None:
    """A context-window check as a gate: nothing in the pipeline changes."""

    class ContextWindow(Gate):
        __slots__ = ("limit",)

        def __init__(self, limit: int) -> None:
            self.limit = limit

        def enter(self, lease: Lease) -> Refusal | None:
            assert lease.context is not None
            if lease.context.estimated_tokens() > self.limit:
                return Refusal("prompt over the context window", math.inf, limited=False)
            return None

    small, large = ScriptedChatModel(text="small"), ScriptedChatModel(text="large")
    router = ResilientRouter(
        {"small": small, "large": large},
        {
            "providers": [
                provider_config("small", priority=1),
                provider_config("large", priority=2),
            ],
            "strategy": "cost_priority_round_robin",
        },
        clock=FakeClock(),
    )
    small_state = router.providers["small"]
    small_state.gates = (*small_state.gates, ContextWindow(20))
    assert router.invoke("short").content == "small"
    assert router.invoke("long " * 50).content == "large"
    assert small.calls == 1
    assert small_state.limiter.in_flight == 0  # the gates before it gave back what they took
