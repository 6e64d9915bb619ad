"""The Redis store on a real redis-server and on a real 3-node Redis Cluster: the same
domain operations as in memory, keys under one hash tag per provider with a TTL each,
leases that expire and wake replicas, and times in the caller's clock whatever the
server's says. On the cluster, each script's keys are in one slot, and providers whose
keys live on different nodes each work."""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from router_middleware import CircuitBreakerConfig, FakeClock, InMemoryStore, StateStore
from router_middleware._breaker_algorithm import FAILURE, BreakerState
from router_middleware._ops import (
    AcquirePermit,
    AdjustSpend,
    AdjustWindows,
    CheckCooldown,
    ReleaseSlot,
    ReportPermit,
    SetCooldown,
    Spend,
    TakeSlot,
    TakeWindows,
)
from router_middleware.redis import RedisStore
from router_middleware.redis._scripts import script_sources


@pytest.fixture(params=["redis", "cluster"])
def store_client(request: pytest.FixtureRequest) -> Any:
    """Each test on one redis-server and on a 3-node Redis Cluster, every node emptied."""
    return request.getfixturevalue(
        "redis_client" if request.param == "redis" else "redis_cluster_client"
    )


def all_keys(client: Any) -> list[bytes]:
    """Every key, on every node of a cluster (``KEYS`` goes to one node by default)."""
    if isinstance(client, RedisCluster):
        return list(client.keys("*", target_nodes=RedisCluster.PRIMARIES))
    return list(client.keys("*"))


def caller_store(client: Any, clock: FakeClock, **kw: Any) -> RedisStore:
    """A store on the caller's (fake) clock, to compare with memory step by step."""
    return RedisStore(client, clock=clock, time_source="caller", **kw)


def test_the_redis_store_is_a_state_store(store_client: Any) -> None:
    assert isinstance(RedisStore(store_client), StateStore)


def test_keys_of_one_provider_share_one_hash_tag(store_client: Any) -> None:
    store = RedisStore(store_client, prefix="tenant")
    assert store.key("openai:bucket") == "{tenant:openai}:bucket"
    assert store.key("openai:gpt-4:tokens_per_minute") == "{tenant:openai}:gpt-4:tokens_per_minute"
    assert store.key("openai:bucket") != RedisStore(store_client).key("openai:bucket")


def test_token_operations_answer_as_in_memory(store_client: Any) -> None:
    clock = FakeClock()
    for store in (InMemoryStore(), caller_store(store_client, clock)):
        k = store.key("p:bucket")
        assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.0
        assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.0
        assert store.take_tokens(k, 0.0, 2.0, 2, 1.0) == 0.5
        assert store.peek_tokens(k, 0.25, 2.0, 2, 1.0) == 0.25
        store.refund_tokens(k, 0.0, 2.0, 2, 1.0)
        assert store.tokens(k, 0.0, 2.0, 2) == 1.0
        assert store.take_tokens(k, 0.0, 2.0, 2, 3.0) == math.inf


def test_a_token_and_a_slot_are_taken_together_or_not_at_all(store_client: Any) -> None:
    clock = FakeClock()
    store = caller_store(store_client, clock)
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


def test_slots_hold_a_cap_across_threads_and_two_replicas(store_client: Any) -> None:
    replicas = [RedisStore(store_client), RedisStore(store_client)]
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
    assert store_client.zcard(k) == 0
    for store in replicas:
        store.close()


def test_a_replica_that_stops_renewing_gives_its_slots_back_after_the_lease(
    store_client: Any,
) -> None:
    clock = FakeClock()
    gone = caller_store(store_client, clock, lease_seconds=5)
    other = caller_store(store_client, clock, lease_seconds=5)
    k = gone.key("p:slots")
    assert gone.acquire_slot(k, 1) == 1
    assert other.acquire_slot(k, 1) == 0
    assert other.slot_free_in(k) == pytest.approx(5.0)
    gone.leases._held.clear()  # as if its process died: nothing renews, nothing releases
    clock.advance(5.001)
    assert other.acquire_slot(k, 1) == 1
    other.close()


def test_held_leases_are_renewed_and_the_renewer_ends_when_none_is_held(
    store_client: Any,
) -> None:
    store = RedisStore(store_client, lease_seconds=0.6)
    k = store.key("p:slots")
    assert store.acquire_slot(k, 1) == 1
    time.sleep(1.0)  # well past the lease: renewed every 0.2 s meanwhile
    assert RedisStore(store_client).acquire_slot(k, 1) == 0
    store.release_slot(k)
    renewer = store.leases._renewer
    assert renewer is not None
    renewer.join(timeout=2)
    assert not renewer.is_alive()
    assert store_client.zcard(k) == 0
    store.close()


def test_a_release_wakes_the_other_replicas_not_this_one(store_client: Any) -> None:
    mine, theirs = RedisStore(store_client), RedisStore(store_client)
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
    assert not theirs.notices.listening


def test_breaker_operations_run_the_algorithm_as_in_memory(store_client: Any) -> None:
    clock = FakeClock()
    cfg = CircuitBreakerConfig(threshold=2, reset_timeout_seconds=10)
    answers = []
    for store in (InMemoryStore(), caller_store(store_client, clock)):
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


def test_server_time_is_shifted_into_the_callers_clock(store_client: Any) -> None:
    # The caller's clock is 10,000 s behind the server's: what comes back is in its own.
    clock = FakeClock(start=1_000.0)
    store = RedisStore(store_client, clock=clock)
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


def test_cooldowns_keep_the_later_end_and_clear(store_client: Any) -> None:
    clock = FakeClock()
    store = caller_store(store_client, clock)
    k = store.key("p:cooldown")
    assert store.cooldown_until(k) == 0.0
    assert store.set_cooldown(k, 30.0) == 30.0
    assert store.set_cooldown(k, 10.0) == 30.0
    store.clear_cooldown(k)
    assert store.cooldown_until(k) == 0.0


def test_token_windows_and_budgets_answer_as_in_memory(store_client: Any) -> None:
    clock = FakeClock()
    answers = []
    for store in (InMemoryStore(), caller_store(store_client, clock)):
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


def test_every_key_has_a_ttl(store_client: Any) -> None:
    clock = FakeClock()
    store = caller_store(store_client, clock)
    cfg = CircuitBreakerConfig(threshold=1)
    store.take_token_and_slot(store.key("p:bucket"), store.key("p:slots"), 0, 1, 1, 1, 2)
    gen, _ = store.breaker_acquire(store.key("p:breaker"), 0.0, cfg, "p")
    store.breaker_report(store.key("p:breaker"), 0.0, cfg, "p", gen or 0, FAILURE)
    store.set_cooldown(store.key("p:cooldown"), 5.0)
    store.take_windows(0.0, 60.0, [(store.key("p:tpm"), 100, 10)])
    store.spend(store.key("p:budget"), 0.0, 60.0, 1.0, 0.1)
    keys = all_keys(store_client)
    assert len(keys) == 6
    assert all(k.startswith(b"{llmr:p}:") for k in keys)
    assert all(store_client.pttl(k) > 0 for k in keys)
    store.close()


def test_forget_leaves_shared_keys_to_their_ttl(store_client: Any) -> None:
    store = RedisStore(store_client)
    store.take_tokens(store.key("p:bucket"), 0.0, 1, 1, 1)
    assert store.forget("p") == 0  # other replicas may still route to it
    assert store_client.exists(store.key("p:bucket"))


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


def test_every_scripts_keys_are_in_one_slot_on_a_cluster(redis_cluster_client: Any) -> None:
    """Every entry script runs, each call's keys in one slot (a provider's limits of several
    models included), so the cluster never answers CROSSSLOT."""
    client = redis_cluster_client
    clock = FakeClock()
    store = caller_store(client, clock, lease_seconds=5)
    calls: list[tuple[str, list[str]]] = []
    run = store._run

    def spy(name: str, keys: Any, now: Any, *args: Any) -> list[Any]:
        calls.append((name, list(keys)))
        return run(name, keys, now, *args)

    store._run = spy  # type: ignore[method-assign]
    cfg = CircuitBreakerConfig(threshold=1)
    b, s = store.key("p:bucket"), store.key("p:slots")
    store.take_tokens(b, 0.0, 1, 2, 1)
    store.refund_tokens(b, 0.0, 1, 2, 1)
    store.peek_tokens(b, 0.0, 1, 2, 1)
    store.tokens(b, 0.0, 1, 2)
    store.cap_tokens(b, 0.0, 1, 2, 1)
    store.take_token_and_slot(b, s, 0.0, 1, 2, 1, 2)
    store.acquire_slot(s, 2)
    store._run("lease_renew", [s], None, 5, *store.leases._held[s])  # what the renewal thread runs
    store.slot_free_in(s)
    store.slots_in_use(s)
    store.release_slot(s)
    gen, _ = store.breaker_acquire(store.key("p:breaker"), 0.0, cfg, "p")
    store.breaker_report(store.key("p:breaker"), 0.0, cfg, "p", gen or 0, FAILURE)
    store.breaker_command(store.key("p:breaker"), "observe", 0.0, cfg, "p")
    store.breaker_record(store.key("p:breaker"))
    store.set_cooldown(store.key("p:cooldown"), 5.0)
    store.cooldown_until(store.key("p:cooldown"))
    model = [(store.key("p:tpm"), 100, 10), (store.key("p:gpt-4:tokens_per_minute"), 50, 10)]
    _, slot = store.take_windows(0.0, 60.0, model)
    store.adjust_windows(0.0, 60.0, slot, [(k, -1) for k, _, _ in model])
    store.cap_window(store.key("p:tpm"), 0.0, 60.0, 100, 50, 30.0)
    store.window_used(store.key("p:tpm"), 0.0, 60.0)
    _, start = store.spend(store.key("p:budget"), 0.0, 60.0, 1.0, 0.1)
    store.adjust_spend(store.key("p:budget"), 0.0, 60.0, start, -0.05)
    store.spent(store.key("p:budget"), 0.0, 60.0)
    # A whole admission and settle: every key of the provider in one script each.
    store.breaker_command(store.key("p:breaker"), "reset", 10.0, cfg, "p")
    _, (_, (generation, _, _), (_, window_slot), (_, start), _) = store.admit(
        10.0,  # the cool-down of 5 s is over
        [
            CheckCooldown(store.key("p:cooldown")),
            AcquirePermit(store.key("p:breaker"), cfg, "p"),
            TakeWindows(60.0, model),
            Spend(store.key("p:budget"), 60.0, 1.0, 0.1),
            TakeSlot(b, s, 1, 2, 1, 2),
        ],
    )
    store.settle(
        10.0,
        [
            SetCooldown(store.key("p:cooldown"), 1.0),
            ReportPermit(store.key("p:breaker"), cfg, "p", generation or 0, FAILURE),
            AdjustWindows(60.0, window_slot, [(k, -1) for k, _, _ in model]),
            AdjustSpend(store.key("p:budget"), 60.0, start, -0.05),
            ReleaseSlot(s),
        ],
    )
    store.close()
    assert {name for name, _ in calls} == set(script_sources())
    for name, keys in calls:
        assert len({client.keyslot(k) for k in keys}) == 1, (name, keys)
    # Keys of two providers are refused by the client before any script runs.
    with pytest.raises(RedisClusterException, match="same key slot"):
        store.take_windows(0.0, 60.0, [(store.key("p:tpm"), 9, 1), (store.key("q:tpm"), 9, 1)])


def test_providers_whose_keys_live_on_different_nodes_each_work(
    redis_cluster_client: Any,
) -> None:
    client = redis_cluster_client
    clock = FakeClock()
    store = caller_store(client, clock)
    nodes: dict[str, str] = {}  # node -> a provider whose keys live there
    for i in range(100):
        nodes.setdefault(client.get_node_from_key(store.key(f"p{i}:bucket")).name, f"p{i}")
    assert len(nodes) == 3  # the three masters each hold some provider's keys
    memory = InMemoryStore()
    for node, provider in nodes.items():
        for each in (store, memory):
            b, s = each.key(f"{provider}:bucket"), each.key(f"{provider}:slots")
            assert each.take_token_and_slot(b, s, 0.0, 1.0, 1, 1.0, 1) == (0.0, 1)
            assert each.take_token_and_slot(b, s, 0.0, 1.0, 1, 1.0, 1) == (1.0, 0)
            each.release_slot(s)
            assert each.set_cooldown(each.key(f"{provider}:cooldown"), 9.0) == 9.0
        # On that node, and on no other.
        on = client.get_node(node_name=node).redis_connection
        assert on.exists(store.key(f"{provider}:bucket"), store.key(f"{provider}:cooldown")) == 2
        slot = client.keyslot(store.key(f"{provider}:bucket"))
        for other in client.get_primaries():
            count = other.redis_connection.cluster("COUNTKEYSINSLOT", slot)
            assert count == (2 if other.name == node else 0), other.name
    assert store.cooldown_until(store.key(f"{nodes.popitem()[1]}:cooldown")) == 9.0
    store.close()


def test_a_stopped_cluster_node_costs_one_timeout_and_the_store_waits_for_every_node() -> None:
    """Through ``shared_store``: an operation on a frozen node fails after one timeout (no
    retries), and the degraded store switches back only once every master answers, not
    when the one node ``PING`` goes to does."""
    from router_middleware._config_state import StateConfig
    from router_middleware.redis import shared_store
    from tests.redis_server import redis_cluster

    with redis_cluster() as (procs, url):
        store = shared_store(StateConfig(url=url, cluster=True, recheck_seconds=0.05))
        client = store.shared.client
        port = client.get_node_from_key(store.key("p:bucket")).port
        (frozen,) = [p for p in procs if p.args[p.args.index("--port") + 1] == str(port)]
        frozen.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            store.take_tokens(store.key("p:bucket"), 0.0, 1, 1, 1)
            assert time.monotonic() - t0 < 0.1 + 0.1
            assert store.degraded
            time.sleep(0.5)  # ten re-checks: the other masters answer, this one does not
            assert store.degraded
        finally:
            frozen.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 5
        while store.degraded:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert store.take_tokens(store.key("p:bucket"), 0.0, 1, 1, 1) == 0.0
        store.close()
