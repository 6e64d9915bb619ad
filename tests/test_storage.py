"""Storage as domain operations: each atomic, namespaced, forgettable."""

from __future__ import annotations

import math
import threading

from router_middleware import CircuitBreakerConfig, InMemoryStore, StateStore
from router_middleware._breaker_algorithm import FAILURE, SUCCESS, BreakerState


def test_the_in_memory_store_is_a_state_store() -> None:
    assert isinstance(InMemoryStore(), StateStore)


def test_keys_are_namespaced_so_two_routers_can_share_a_backend() -> None:
    a, b = InMemoryStore("tenant-a"), InMemoryStore("tenant-b")
    assert a.key("p:bucket") == "tenant-a:p:bucket"
    assert a.key("p:bucket") != b.key("p:bucket")


def test_token_operations() -> None:
    store = InMemoryStore()
    k = store.key("p:bucket")
    assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.0
    assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.0
    assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.5  # the exact refill time
    assert store.peek_tokens(k, 0.25, 2.0, 2, 1.0) == 0.25
    store.refund_tokens(k, 0.0, 2.0, 2, 1.0)
    assert store.tokens(k, 0.0, 2.0, 2) == 1.0
    assert store.take_tokens(k, 0.0, 2.0, 2, 3.0) == math.inf  # could never pass


def test_slot_operations_hold_a_cap_across_threads() -> None:
    store = InMemoryStore()
    k = store.key("p:slots")
    taken: list[int] = []

    def grab() -> None:
        for _ in range(1000):
            used = store.acquire_slot(k, 7)
            if used:
                taken.append(used)
                store.release_slot(k)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert taken
    assert max(taken) <= 7
    assert store.slots_in_use(k) == 0
    store.release_slot(k)  # a stray release never goes below zero
    assert store.slots_in_use(k) == 0


def test_a_token_and_a_slot_are_taken_together_or_not_at_all() -> None:
    store = InMemoryStore()
    b, s = store.key("p:bucket"), store.key("p:slots")
    assert store.take_token_and_slot(b, s, 0.0, 2.0, 2, 1.0, 1) == (0.0, 1)
    # The slots are full: no token is taken either.
    assert store.take_token_and_slot(b, s, 0.0, 2.0, 2, 1.0, 1) == (math.inf, 0)
    assert store.tokens(b, 0.0, 2.0, 2) == 1.0
    store.release_slot(s)
    assert store.take_token_and_slot(b, s, 0.0, 2.0, 2, 1.0, 1) == (0.0, 1)
    store.release_slot(s)
    # Out of tokens: the exact refill time, and no slot is taken.
    assert store.take_token_and_slot(b, s, 0.0, 2.0, 2, 1.0, 1) == (0.5, 0)
    assert store.slots_in_use(s) == 0
    # The tokens are looked at first: with neither free, the wait is the refill's.
    assert store.acquire_slot(s, 1) == 1
    assert store.take_token_and_slot(b, s, 0.25, 2.0, 2, 1.0, 1) == (0.25, 0)
    # Without a cap the slots are counted; refilled tokens are taken.
    assert store.take_token_and_slot(b, s, 0.5, 2.0, 2, 1.0, None) == (0.0, 2)
    assert store.tokens(b, 0.5, 2.0, 2) == 0.0
    assert store.take_token_and_slot(b, s, 0.5, 2.0, 2, 3.0, None) == (math.inf, 0)


def test_tokens_and_slots_taken_together_hold_both_limits_across_threads() -> None:
    store = InMemoryStore()
    b, s = store.key("p:bucket"), store.key("p:slots")
    taken: list[int] = []
    refused: list[float] = []

    def grab() -> None:
        for _ in range(200):
            # No refill at a fixed time: exactly the burst's 100 tokens can be taken.
            wait, used = store.take_token_and_slot(b, s, 0.0, 1.0, 100, 1.0, 3)
            if used:
                taken.append(used)
                store.release_slot(s)
            else:
                refused.append(wait)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 100  # a refusal for want of a slot took no token
    assert max(taken) <= 3
    assert set(refused) <= {1.0, math.inf}
    assert store.slots_in_use(s) == 0
    assert store.tokens(b, 0.0, 1.0, 100) == 0.0


def test_breaker_operations_run_the_algorithm() -> None:
    store = InMemoryStore()
    k = store.key("p:breaker")
    cfg = CircuitBreakerConfig(threshold=1, reset_timeout_seconds=10)
    generation, moved = store.breaker_acquire(k, 0.0, cfg, "p")
    assert generation == 0
    assert moved == ()
    moved = store.breaker_report(k, 0.0, cfg, "p", generation, FAILURE)
    assert [t.to_state for t in moved] == [BreakerState.OPEN]
    assert store.breaker_acquire(k, 1.0, cfg, "p")[0] is None
    generation, moved = store.breaker_acquire(k, 10.0, cfg, "p")
    assert [t.to_state for t in moved] == [BreakerState.HALF_OPEN]
    assert generation is not None
    store.breaker_report(k, 10.0, cfg, "p", generation, SUCCESS)
    record, _ = store.breaker_command(k, "observe", 10.0, cfg, "p")
    assert record.state == BreakerState.CLOSED


def test_cooldowns_keep_the_later_end_and_clear() -> None:
    store = InMemoryStore()
    k = store.key("p:cooldown")
    assert store.cooldown_until(k) == 0.0
    assert store.set_cooldown(k, 10.0) == 10.0
    assert store.set_cooldown(k, 5.0) == 10.0  # a shorter Retry-After does not shorten it
    store.clear_cooldown(k)
    assert store.cooldown_until(k) == 0.0


def test_forget_drops_every_key_of_one_provider_only() -> None:
    store = InMemoryStore()
    for provider in ("a", "ab"):
        store.acquire_slot(store.key(f"{provider}:slots"), None)
        store.set_cooldown(store.key(f"{provider}:cooldown"), 1.0)
    assert len(store) == 4
    assert store.forget("a") == 2
    assert len(store) == 2
    assert store.slots_in_use(store.key("ab:slots")) == 1
