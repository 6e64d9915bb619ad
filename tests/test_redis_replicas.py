"""Four OS processes, one provider config, one Redis (``LLM_ROUTER_STATE__URL``): the
limits hold for the deployment, measured on the provider's side (``tests/replica_worker``).
The rate and the concurrency cap hold on a 3-node Redis Cluster too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from router_middleware.redis import RedisStore

ROOT = Path(__file__).resolve().parent.parent
REPLICAS = 4


def replica_env(url: str, **provider: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    env.update(
        LLM_ROUTER_STATE__URL=url,
        LLM_ROUTER_PROVIDERS__P__MODELS='[{"name": "m"}]',
        LLM_ROUTER_RETRY__ATTEMPTS="1",
        # This machine is shared and has two cores for four replicas and Redis: a thread
        # may wait its turn for longer than the 0.1 s default. The degraded tests lower it.
        LLM_ROUTER_STATE__TIMEOUT_SECONDS="1",
        PYTHONPATH=str(ROOT),
    )
    env.update({f"LLM_ROUTER_{k.upper()}": str(v) for k, v in provider.items()})
    return env


def start(env: dict[str, str], seconds: float, threads: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.replica_worker", str(seconds), str(threads)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def go(client: Any, procs: list[subprocess.Popen[str]], lead: float = 0.3) -> float:
    """Wait until every replica is ready, then start them all at one wall-clock time."""
    deadline = time.time() + 60
    while client.llen("probe:ready") < len(procs):
        assert time.time() < deadline, "the replicas did not start"
        assert all(p.poll() is None for p in procs), "a replica died while starting"
        time.sleep(0.05)
    at = time.time() + lead
    client.rpush("probe:go", repr(at))
    return at


def results(procs: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, stdout
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def calls(client: Any) -> list[float]:
    return sorted(float(t) for t in client.lrange("probe:calls", 0, -1))


def run(
    client: Any,
    envs: list[dict[str, str]],
    seconds: float,
    threads: int,
) -> tuple[float, list[dict[str, Any]]]:
    procs = [start(env, seconds, threads) for env in envs]
    try:
        at = go(client, procs)
        return at, results(procs, seconds + 60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.fixture(params=["redis", "cluster"])
def deployment(request: pytest.FixtureRequest) -> tuple[str, Any, dict[str, str]]:
    """One redis-server or a 3-node Redis Cluster: its URL, a client (every node emptied)
    and the replicas' extra environment."""
    if request.param == "redis":
        return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_client"), {}
    url, client = (
        request.getfixturevalue(f) for f in ("redis_cluster_url", "redis_cluster_client")
    )
    return url, client, {"LLM_ROUTER_STATE__CLUSTER": "true"}


def test_a_shared_request_rate_holds_across_four_processes(
    deployment: tuple[str, Any, dict[str, str]],
) -> None:
    redis_url, redis_client, extra = deployment
    rate, burst, seconds = 20, 5, 10.0
    env = replica_env(
        redis_url,
        providers__p__rate_limit__requests_per_second=rate,
        providers__p__rate_limit__burst=burst,
    )
    env.update(extra)
    # One replica's clock is 10 s ahead of the others': the server's clock decides.
    skewed = {**env, "CLOCK_SKEW": "10"}
    at, out = run(redis_client, [env, env, env, skewed], seconds, threads=3)
    times = calls(redis_client)
    inside = [t for t in times if at <= t < at + seconds]
    expected = burst + rate * seconds
    assert abs(len(inside) - expected) <= 0.02 * expected, (len(inside), expected)
    busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert busiest <= burst + rate, busiest
    assert all(r["state"] == [] for r in out)  # never degraded
    assert sum(r["outcomes"].get("ok", 0) for r in out) == len(times)


def test_a_shared_concurrency_cap_holds_across_four_processes(
    deployment: tuple[str, Any, dict[str, str]],
) -> None:
    redis_url, redis_client, extra = deployment
    env = replica_env(
        redis_url,
        providers__p__rate_limit__max_concurrent=3,
        max_wait_seconds=10,
    )
    env.update(extra, PROBE_CALL_SECONDS="0.05")
    seconds = 4.0
    _, out = run(redis_client, [env] * REPLICAS, seconds, threads=3)
    seen = [int(n) for n in redis_client.lrange("probe:concurrency", 0, -1)]
    assert max(seen) <= 3
    # Woken by other replicas' releases, not by polling: the cap is kept busy.
    assert len(seen) >= 0.6 * seconds * 3 / 0.05, len(seen)
    assert all(r["outcomes"].keys() == {"ok"} for r in out), out
    assert all(r["state"] == [] for r in out)  # never degraded: the cap was the shared one


def test_a_shared_breaker_stops_every_process_and_admits_exact_trials(
    deployment: tuple[str, Any, dict[str, str]],
) -> None:
    redis_url, redis_client, extra = deployment
    threshold, trials, reset = 3, 2, 1.0
    env = replica_env(
        redis_url,
        circuit_breaker__threshold=threshold,
        circuit_breaker__reset_timeout_seconds=reset,
        circuit_breaker__half_open_max_calls=trials,
        max_wait_seconds=0,
    )
    env.update(extra, PROBE_FAIL="1", PROBE_CALL_SECONDS="0.02")
    at, _ = run(redis_client, [env] * REPLICAS, 3.5, threads=1)
    times = [t - at for t in calls(redis_client)]
    # Calls come in bursts: the first until the breaker opens, then one per half-open.
    bursts: list[list[float]] = [[times[0]]]
    for t in times[1:]:
        if t - bursts[-1][-1] > 0.5:
            bursts.append([])
        bursts[-1].append(t)
    assert len(bursts[0]) <= threshold + REPLICAS, bursts[0]
    assert len(bursts) >= 3, bursts
    assert all(len(b) == trials for b in bursts[1:]), [len(b) for b in bursts]


def test_a_killed_processs_slots_come_back_within_the_lease_time(
    deployment: tuple[str, Any, dict[str, str]],
) -> None:
    redis_url, redis_client, extra = deployment
    lease = 2.0
    env = replica_env(
        redis_url,
        providers__p__rate_limit__max_concurrent=1,
        state__lease_seconds=lease,
        max_wait_seconds=10,
    )
    env.update(extra)
    doomed = start({**env, "PROBE_HOLD": "60"}, 30.0, threads=1)
    try:
        go(redis_client, [doomed])
        deadline = time.time() + 10
        while not redis_client.get("probe:holding"):
            assert time.time() < deadline
            time.sleep(0.02)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        killed = time.time()
        for key in ("probe:calls", "probe:ready", "probe:go"):  # one slot each, on a cluster
            redis_client.delete(key)
        (out,) = run(redis_client, [env], 1.0, threads=1)[1:]
    finally:
        doomed.kill()
    first = calls(redis_client)[0]
    assert first - killed <= lease + 0.5, first - killed
    assert out[0]["outcomes"].get("ok", 0) >= 1


def test_every_key_has_a_ttl_and_lives_under_the_prefix(
    deployment: tuple[str, Any, dict[str, str]],
) -> None:
    redis_url, redis_client, extra = deployment
    env = replica_env(
        redis_url,
        providers__p__rate_limit__requests_per_second=50,
        providers__p__rate_limit__max_concurrent=2,
        providers__p__rate_limit__tokens_per_minute=100_000,
        providers__p__budget__max_cost=100,
        providers__p__models='[{"name": "m", "cost_per_1k_input_tokens": 0.01}]',
    )
    env.update(extra)
    run(redis_client, [env, env], 1.0, threads=2)
    keys = [k for k in redis_client.keys("*") if not k.startswith(b"probe:")]
    assert {k.decode().split("}")[0] for k in keys} == {"{llmr:p"}
    assert len(keys) >= 4, keys
    assert all(redis_client.pttl(k) > 0 for k in keys), keys


@pytest.fixture
def acl_url(redis_url: str, redis_client: redis.Redis) -> str:
    """A user that may touch only the router's prefix and the probe's, with the commands
    the router needs."""
    rules = RedisStore(redis_client).acl_rules()
    # The probe (the provider's side, in the test) needs its own keys and commands too.
    probe = ["~probe:*", "+incrby", "+decrby", "+rpush", "+blpop", "+lrange", "+llen"]
    redis_client.execute_command("ACL", "SETUSER", "router", "on", ">s3cret-pass", *rules, *probe)
    host_port = redis_url.removeprefix("redis://")
    return f"redis://router:s3cret-pass@{host_port}"


def test_an_acl_user_limited_to_the_prefix_and_the_needed_commands_works(
    acl_url: str, redis_client: redis.Redis
) -> None:
    env = replica_env(acl_url, providers__p__rate_limit__max_concurrent=1)
    _, out = run(redis_client, [env], 1.0, threads=2)
    assert out[0]["state"] == [], out  # never degraded: every command it sends is allowed
    assert out[0]["outcomes"].get("ok", 0) > 0


def test_a_frozen_redis_mid_run_degrades_each_process_once_and_recovers() -> None:
    from tests.redis_server import redis_server

    timeout = 0.25
    with redis_server() as (server, url):
        client = redis.Redis.from_url(url)
        env = replica_env(
            url,
            providers__p__rate_limit__requests_per_second=40,
            providers__p__rate_limit__max_concurrent=4,
            max_wait_seconds=0,
            state__timeout_seconds=timeout,
            state__recheck_seconds=0.2,
            state__expected_replicas=REPLICAS,
        )
        # The provider's probe talks to Redis too: it must not freeze with it.
        env["PROBE_OFF"] = "1"
        procs = [start(env, 6.0, threads=2) for _ in range(REPLICAS)]
        try:
            at = go(client, procs)
            time.sleep(max(0.0, at + 1.5 - time.time()))
            os.kill(server.pid, signal.SIGSTOP)
            time.sleep(3.0)
            os.kill(server.pid, signal.SIGCONT)
            out = results(procs, 60)
        finally:
            os.kill(server.pid, signal.SIGCONT)
            for p in procs:
                p.kill()
    for r in out:
        assert [degraded for _, degraded, _ in r["state"]] == [True, False], r["state"]
        assert sum(r["outcomes"].values()) > 0
        # Every request ended; none waited on Redis for more than one timeout (plus this
        # machine's scheduling noise).
        assert r["slowest"] < timeout + 0.25, r["slowest"]
