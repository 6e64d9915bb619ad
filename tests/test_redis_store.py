"""The Redis store on a real redis-server: the same domain operations as in memory, keys
under one hash tag per provider with a TTL each, leases that expire and wake replicas,
and times in the caller's clock whatever the server's says."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest

from router_middleware import CircuitBreakerConfig, FakeClock, InMemoryStore, StateStore
from router_middleware._breaker_algorithm import FAILURE, BreakerState
from router_middleware.redis import RedisStore


def caller_store(client: Any, clock: FakeClock, **kw: Any) -> RedisStore:
    """A store on the caller's (fake) clock, to compare with memory step by step."""
    return RedisStore(client, clock=clock, time_source="caller", **kw)


def test_the_redis_store_is_a_state_store(redis_client: Any) -> None:
    assert isinstance(RedisStore(redis_client), StateStore)


def test_keys_of_one_provider_share_one_hash_tag(redis_client: Any) -> None:
    store = RedisStore(redis_client, prefix="tenant")
    assert store.key("openai:bucket") == "{tenant:openai}:bucket"
    assert store.key("openai:gpt-4:tokens_per_minute") == "{tenant:openai}:gpt-4:tokens_per_minute"
    assert store.key("openai:bucket") != RedisStore(redis_client).key("openai:bucket")


def test_token_operations_answer_as_in_memory(redis_client: Any) -> None:
    clock = FakeClock()
    for store in (InMemoryStore(), caller_store(redis_client, clock)):
        k = store.key("p:bucket")
        assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.0
        assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.0
        assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.5
        assert store.peek_tokens(k, 0.25, 2.0, 2, 1.0) == 0.25
        store.refund_tokens(k, 0.0, 2.0, 2, 1.0)
        assert store.tokens(k, 0.0, 2.0, 2) == 1.0
        assert store.take_tokens(k, 0.0, 2.0, 2, 3.0) == math.inf


def test_a_token_and_a_slot_are_taken_together_or_not_at_all(redis_client: Any) -> None:
    clock = FakeClock()
    store = caller_store(redis_client, clock)
    b, s = store.key("p:bucket"), store.key("p:slots")
    assert store.take_token_and_slot(b, s, 0.0, 1.0, 2, 1.0, 1) == (0.0, 1)
    # Slots full: nothing taken, the token stays.
    assert store.take_token_and_slot(b, s, 0.0, 1.0, 2, 1.0, 1) == (math.inf, 0)
    assert store.tokens(b, 0.0, 1.0, 2) == 1.0
    store.release_slot(s)
    assert store.take_token_and_slot(b, s, 0.0, 1.0, 2, 1.0, 1) == (0.0, 1)
    store.release_slot(s)
    # Tokens out: looked at first, and no slot taken.
    assert store.take_token_and_slot(b, s, 0.0, 1.0, 2, 1.0, 1) == (1.0, 0)
    assert store.slots_in_use(s) == 0
    store.close()


def test_slots_hold_a_cap_across_threads_and_two_replicas(redis_client: Any) -> None:
    replicas = [RedisStore(redis_client), RedisStore(redis_client)]
    k = replicas[0].key("p:slots")
    taken: list[int] = []

    def grab(store: RedisStore) -> None:
        for _ in range(100):
            used = store.acquire_slot(k, 3)
            if used:
                taken.append(used)
                store.release_slot(k)

    threads = [threading.Thread(target=grab, args=(replicas[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert taken
    assert max(taken) <= 3
    assert replicas[0].slots_in_use(k) == 0
    assert redis_client.zcard(k) == 0
    for store in replicas:
        store.close()


def test_a_replica_that_stops_renewing_gives_its_slots_back_after_the_lease(
    redis_client: Any,
) -> None:
    clock = FakeClock()
    gone = caller_store(redis_client, clock, lease_seconds=5)
    other = caller_store(redis_client, clock, lease_seconds=5)
    k = gone.key("p:slots")
    assert gone.acquire_slot(k, 1) == 1
    assert other.acquire_slot(k, 1) == 0
    assert other.slot_free_in(k) == pytest.approx(5.0)
    gone._held.clear()  # as if its process died: nothing renews, nothing releases
    clock.advance(5.001)
    assert other.acquire_slot(k, 1) == 1
    other.close()


def test_held_leases_are_renewed_and_the_renewer_ends_when_none_is_held(
    redis_client: Any,
) -> None:
    store = RedisStore(redis_client, lease_seconds=1.5)
    k = store.key("p:slots")
    assert store.acquire_slot(k, 1) == 1
    time.sleep(2.2)  # past the lease: renewed twice meanwhile
    assert RedisStore(redis_client).acquire_slot(k, 1) == 0
    store.release_slot(k)
    renewer = store._renewer
    assert renewer is not None
    renewer.join(timeout=2)
    assert not renewer.is_alive()
    assert redis_client.zcard(k) == 0
    store.close()


def test_a_release_wakes_the_other_replicas_not_this_one(redis_client: Any) -> None:
    mine, theirs = RedisStore(redis_client), RedisStore(redis_client)
    k = mine.key("p:slots")
    heard: list[str] = []
    woke = threading.Event()
    theirs.add_release_listener(lambda provider: (heard.append(provider), woke.set()))
    mine.add_release_listener(lambda provider: heard.append(f"self:{provider}"))
    assert mine.acquire_slot(k, 1) == 1
    assert theirs.acquire_slot(k, 1) == 0  # full: it starts listening
    time.sleep(0.2)  # the subscription is made on its thread
    mine.release_slot(k)
    assert woke.wait(2)
    assert heard == ["p"]
    mine.close()
    theirs.close()
    assert theirs._subscriber is None


def test_breaker_operations_run_the_algorithm_as_in_memory(redis_client: Any) -> None:
    clock = FakeClock()
    cfg = CircuitBreakerConfig(threshold=2, reset_timeout_seconds=10)
    answers = []
    for store in (InMemoryStore(), caller_store(redis_client, clock)):
        k = store.key("p:breaker")
        seen = []
        gen, moved = store.breaker_acquire(k, 0.0, cfg, "p")
        seen.append((gen, moved))
        assert gen is not None
        seen.append(store.breaker_report(k, 1.0, cfg, "p", gen, FAILURE))
        seen.append(store.breaker_report(k, 2.0, cfg, "p", gen, FAILURE))
        seen.append(store.breaker_acquire(k, 5.0, cfg, "p"))  # open: refused
        seen.append(store.breaker_acquire(k, 12.0, cfg, "p"))  # half-open trial
        seen.append(store.breaker_command(k, "observe", 12.0, cfg, "p"))
        seen.append(store.breaker_command(k, "reset", 13.0, cfg, "p"))
        answers.append(seen)
    assert answers[0] == answers[1]
    record = answers[1][-1][0]
    assert record.state == BreakerState.CLOSED
    assert record.trips == 1


def test_server_time_is_shifted_into_the_callers_clock(redis_client: Any) -> None:
    # The caller's clock is 10,000 s behind the server's: what comes back is in its own.
    clock = FakeClock(start=1_000.0)
    store = RedisStore(redis_client, clock=clock)
    cfg = CircuitBreakerConfig(threshold=1, reset_timeout_seconds=30)
    k = store.key("p:breaker")
    gen, _ = store.breaker_acquire(k, clock.now(), cfg, "p")
    assert gen is not None
    (moved,) = store.breaker_report(k, clock.now(), cfg, "p", gen, FAILURE)
    assert moved.to_state == BreakerState.OPEN
    assert moved.at == pytest.approx(clock.now(), abs=0.5)
    record = store.breaker_record(k)
    assert record is not None
    assert record.opened_at == pytest.approx(clock.now(), abs=0.5)
    until = store.set_cooldown(store.key("p:cooldown"), clock.now() + 7)
    assert until == pytest.approx(clock.now() + 7, abs=0.5)
    assert store.cooldown_until(store.key("p:cooldown")) == pytest.approx(until, abs=0.5)


def test_cooldowns_keep_the_later_end_and_clear(redis_client: Any) -> None:
    clock = FakeClock()
    store = caller_store(redis_client, clock)
    k = store.key("p:cooldown")
    assert store.cooldown_until(k) == 0.0
    assert store.set_cooldown(k, 30.0) == 30.0
    assert store.set_cooldown(k, 10.0) == 30.0
    store.clear_cooldown(k)
    assert store.cooldown_until(k) == 0.0


def test_token_windows_and_budgets_answer_as_in_memory(redis_client: Any) -> None:
    clock = FakeClock()
    answers = []
    for store in (InMemoryStore(), caller_store(redis_client, clock)):
        a, b, budget = store.key("p:tpm"), store.key("p:itpm"), store.key("p:budget")
        seen: list[Any] = [store.take_windows(0.5, 60.0, [(a, 100, 80), (b, 50, 40)])]
        seen.append(store.take_windows(1.0, 60.0, [(a, 100, 30), (b, 50, 5)]))
        slot = seen[0][1]
        store.adjust_windows(2.0, 60.0, slot, [(a, -50)])
        seen.append(store.window_used(a, 2.0, 60.0))
        seen.append(store.take_windows(2.0, 60.0, [(a, 100, 30), (b, 50, 5)]))
        wait, start = store.spend(budget, 0.0, 60.0, 1.0, 0.75)
        seen.append(wait)
        seen.append(store.spend(budget, 10.0, 60.0, 1.0, 0.5)[0])
        store.adjust_spend(budget, 11.0, 60.0, start, -0.5)
        seen.append(store.spent(budget, 11.0, 60.0))
        answers.append(seen)
    assert answers[0][0][0] == answers[1][0][0] == 0.0
    assert answers[0][1:] == answers[1][1:]


def test_every_key_has_a_ttl(redis_client: Any) -> None:
    clock = FakeClock()
    store = caller_store(redis_client, clock)
    cfg = CircuitBreakerConfig(threshold=1)
    store.take_token_and_slot(store.key("p:bucket"), store.key("p:slots"), 0, 1, 1, 1, 2)
    gen, _ = store.breaker_acquire(store.key("p:breaker"), 0.0, cfg, "p")
    store.breaker_report(store.key("p:breaker"), 0.0, cfg, "p", gen or 0, FAILURE)
    store.set_cooldown(store.key("p:cooldown"), 5.0)
    store.take_windows(0.0, 60.0, [(store.key("p:tpm"), 100, 10)])
    store.spend(store.key("p:budget"), 0.0, 60.0, 1.0, 0.1)
    keys = redis_client.keys("*")
    assert len(keys) == 6
    assert all(k.startswith(b"{llmr:p}:") for k in keys)
    assert all(redis_client.pttl(k) > 0 for k in keys)
    store.close()


def test_forget_leaves_shared_keys_to_their_ttl(redis_client: Any) -> None:
    store = RedisStore(redis_client)
    store.take_tokens(store.key("p:bucket"), 0.0, 1, 1, 1)
    assert store.forget("p") == 0  # other replicas may still route to it
    assert redis_client.exists(store.key("p:bucket"))


def test_a_routed_request_is_one_round_trip_to_admit_and_one_to_settle(
    redis_client: Any,
) -> None:
    from router_middleware import ResilientRouter

    store = RedisStore(redis_client)
    config = {
        "providers": [
            {
                "name": "p",
                "models": [{"name": "m", "cost_per_1k_input_tokens": 0.01}],
                "rate_limit": {
                    "requests_per_second": 100,
                    "max_concurrent": 4,
                    "tokens_per_minute": 100_000,
                },
                "budget": {"max_cost": 10},
            }
        ]
    }
    router = ResilientRouter({"p": lambda request: "ok"}, config, store=store)
    router.invoke("warm up", model="m")  # loads the scripts (NOSCRIPT, then SCRIPT LOAD)
    ran: list[str] = []
    run = store._run
    store._run = lambda name, *a: ran.append(name) or run(name, *a)  # type: ignore[method-assign]
    redis_client.config_resetstat()
    for _ in range(10):
        router.invoke("hi", model="m")
    stats = redis_client.info("commandstats")
    assert ran == ["admit", "settle"] * 10
    # Redis agrees: one script call each, nothing else from the client (the commands the
    # scripts run are counted too, under their own names).
    assert stats["cmdstat_evalsha"]["calls"] == 20
    assert "cmdstat_eval" not in stats
    assert "cmdstat_script|load" not in stats
    assert store.held() == 0
    store.close()
