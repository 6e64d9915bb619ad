"""The lease: exactly-once settling, gates in order, slots kept while a call runs on."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from router_middleware import FakeClock, InMemoryStore, ResilientRouter
from router_middleware._classification import Classification, ErrorKind
from router_middleware._gates import Gate, Refusal
from router_middleware._lease import Lease, admit
from router_middleware._ops import (
    AdjustSpend,
    AdmitOp,
    CheckCooldown,
    SetCooldown,
    SettleOp,
    Spend,
    TakeWindows,
)
from router_middleware._provider import Provider
from router_middleware.testing import ScriptedChatModel

from .conftest import provider_config


def _provider(**rate_limit: Any) -> Provider:
    config = {"providers": [provider_config("p", rate_limit=rate_limit or {"max_concurrent": 1})]}
    router = ResilientRouter({"p": ScriptedChatModel()}, config, clock=FakeClock())
    return router.providers["p"]


class Spy(Gate):
    """Records the order gates are asked in; takes and gives back through ``op``."""

    __slots__ = ("give", "log", "name", "op")

    def __init__(
        self, name: str, log: list[str], op: AdmitOp | None = None, give: SettleOp | None = None
    ) -> None:
        self.name, self.log, self.op, self.give = name, log, op, give

    def plan(self, lease: Lease) -> AdmitOp | None:
        self.log.append(f"plan {self.name}")
        return self.op

    def took(self, lease: Lease, answer: Any) -> Refusal | None:
        self.log.append(f"took {self.name}")
        return Refusal("no", answer) if type(self.op) is CheckCooldown and answer > 0 else None

    def release(self, lease: Lease) -> SettleOp | None:
        self.log.append(f"release {self.name}:{lease.outcome}")
        return self.give

    def released(self, lease: Lease, answer: Any) -> None:
        self.log.append(f"released {self.name}")


class Counting(InMemoryStore):
    """Counts the whole admissions and settles the store is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def admit(self, now: float, ops: Any) -> tuple[int, list[Any]]:
        self.calls.append("admit")
        return super().admit(now, ops)

    def settle(self, now: float, ops: Any) -> list[Any]:
        self.calls.append("settle")
        return super().settle(now, ops)


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


def test_one_store_operation_admits_and_one_settles_and_a_refusal_gives_all_back() -> None:
    provider = _provider()
    store = provider.store = Counting()
    log: list[str] = []
    budget, window, cooldown = store.key("x:budget"), store.key("x:tpm"), store.key("x:cool")
    store.set_cooldown(cooldown, 5.0)
    provider.gates = (
        Spy("a", log, Spend(budget, 60.0, 1.0, 0.5)),
        Spy("b", log, TakeWindows(60.0, [(window, 100, 40)])),
        Spy("c", log, CheckCooldown(cooldown)),
    )
    lease, refusal = admit(provider, "m", 1, 0.0)
    assert refusal is not None
    assert (refusal.reason, refusal.wait) == ("no", 5.0)
    assert log == ["plan a", "plan b", "plan c", "took a", "took b", "took c"]
    assert store.calls == ["admit"]
    assert store.spent(budget, 0.0, 60.0) == 0.0  # given back, in the same operation
    assert store.window_used(window, 0.0, 60.0) == 0.0
    assert lease.outcome == "refused"

    log.clear()
    store.calls.clear()
    provider.gates = (
        Spy("a", log, Spend(budget, 60.0, 1.0, 0.5)),
        Spy("b", log, give=SetCooldown(cooldown, 30.0)),
        Spy("c", log, give=AdjustSpend(budget, 60.0, 0.0, -0.5)),
    )
    lease, refusal = admit(provider, "m", 1, 0.0)
    assert refusal is None
    assert store.spent(budget, 0.0, 60.0) == 0.5
    lease.succeed()
    assert log == [
        "plan a", "plan b", "plan c", "took a",
        "release a:succeeded", "release b:succeeded", "release c:succeeded",
        "released b", "released c",
    ]  # fmt: skip
    assert store.calls == ["admit", "settle"]
    assert store.spent(budget, 0.0, 60.0) == 0.0
    assert store.cooldown_until(cooldown) == 30.0


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

        def plan(self, lease: Lease) -> Refusal | None:
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
