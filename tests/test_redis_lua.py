"""The Lua port of the algorithms (``redis._lua_algorithms``) on a real redis-server:
every answer of seeded random sequences equals :class:`InMemoryStore`'s, every key
written expires, and the server's clock is used when no time is given."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_middleware import InMemoryStore
from router_middleware._breaker_algorithm import (
    BreakerRecord,
    BreakerState,
    BreakerTransition,
)
from router_middleware._config import CircuitBreakerConfig
from router_middleware._storage import Transitions
from router_middleware.redis._lua_algorithms import ENTRIES, LIBRARY, script

NAME = "openai"


def _arg(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    return repr(float(x))


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _cfg_args(cfg: CircuitBreakerConfig) -> list[Any]:
    return [
        cfg.threshold,
        cfg.sampling_duration_seconds,
        cfg.reset_timeout_seconds,
        cfg.half_open_max_calls,
        cfg.failure_rate_threshold,
        cfg.minimum_calls,
    ]


def _transitions(reply: Sequence[Any]) -> Transitions:
    return tuple(
        BreakerTransition(
            NAME, BreakerState(_text(a)), BreakerState(_text(b)), float(at), _text(reason)
        )
        for a, b, at, reason in reply
    )


def _record(reply: Any) -> BreakerRecord | None:
    if reply is None:
        return None
    state, generation, opened_at, in_flight, failures, buckets, trips, transitions = reply
    return BreakerRecord(
        BreakerState(_text(state)),
        int(generation),
        float(opened_at),
        int(in_flight),
        tuple(float(f) for f in failures),
        tuple((int(e), int(c), int(f)) for e, c, f in buckets),
        int(trips),
        int(transitions),
    )


class LuaStore:
    """The entry scripts on one client, answering as :class:`InMemoryStore` does."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.scripts = {name: client.register_script(script(name)) for name in ENTRIES}

    def assert_all_expire(self) -> None:
        """Every key written so far has a TTL."""
        keys = self.client.keys("*")
        assert keys
        for key in keys:
            assert self.client.pttl(key) > 0, key

    def run(self, name: str, keys: Sequence[str], now: float | str, *args: Any) -> list[Any]:
        reply: list[Any] = self.scripts[name](keys=list(keys), args=[_arg(now), *map(_arg, args)])
        if not isinstance(now, str):
            assert float(reply[0]) == now
        return reply[1:]

    def take_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        return float(self.run("bucket_take", [key], now, rate, burst, cost)[0])

    def refund_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> None:
        assert self.run("bucket_refund", [key], now, rate, burst, cost) == []

    def peek_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        return float(self.run("bucket_peek", [key], now, rate, burst, cost)[0])

    def tokens(self, key: str, now: float, rate: float, burst: float) -> float:
        return float(self.run("bucket_level", [key], now, rate, burst)[0])

    def cap_tokens(self, key: str, now: float, rate: float, burst: float, remaining: float) -> None:
        assert self.run("bucket_cap", [key], now, rate, burst, remaining) == []

    def take_windows(
        self, now: float, window: float, charges: Sequence[tuple[str, float, float]]
    ) -> tuple[float, int]:
        args = [x for _, limit, cost in charges for x in (limit, cost)]
        wait, slot = self.run("windows_take", [k for k, _, _ in charges], now, window, *args)
        return float(wait), int(slot)

    def adjust_windows(
        self, now: float, window: float, slot: int, deltas: Sequence[tuple[str, float]]
    ) -> None:
        keys = [k for k, _ in deltas]
        assert self.run("windows_adjust", keys, now, window, slot, *[d for _, d in deltas]) == []

    def cap_window(
        self, key: str, now: float, window: float, limit: float, remaining: float, reset: float
    ) -> None:
        assert self.run("window_cap", [key], now, window, limit, remaining, reset) == []

    def window_used(self, key: str, now: float, window: float) -> float:
        return float(self.run("window_used", [key], now, window)[0])

    def spend(
        self, key: str, now: float, period: float, limit: float, cost: float
    ) -> tuple[float, float]:
        wait, start = self.run("budget_spend", [key], now, period, limit, cost)
        return float(wait), float(start)

    def adjust_spend(self, key: str, now: float, period: float, start: float, delta: float) -> None:
        assert self.run("budget_adjust", [key], now, period, start, delta) == []

    def spent(self, key: str, now: float, period: float) -> float:
        return float(self.run("budget_spent", [key], now, period)[0])

    def breaker_acquire(
        self, key: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[int | None, Transitions]:
        generation, moved = self.run("breaker_acquire", [key], now, *_cfg_args(cfg))
        return (None if generation is None else int(generation)), _transitions(moved)

    def breaker_report(
        self,
        key: str,
        now: float,
        cfg: CircuitBreakerConfig,
        name: str,
        generation: int,
        outcome: int,
    ) -> Transitions:
        args = [*_cfg_args(cfg), generation, outcome]
        (moved,) = self.run("breaker_report", [key], now, *args)
        return _transitions(moved)

    def breaker_command(
        self, key: str, command: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[BreakerRecord | None, Transitions]:
        rec, moved = self.run("breaker_command", [key], now, command, *_cfg_args(cfg))
        return _record(rec), _transitions(moved)

    def breaker_record(self, key: str, now: float | str = 0.0) -> BreakerRecord | None:
        (rec,) = self.run("breaker_read", [key], now)
        return _record(rec)


@pytest.fixture
def lua(redis_client: Any) -> LuaStore:
    return LuaStore(redis_client)


def close(a: Any, b: Any) -> bool:
    """Equal, numbers within 1e-9 relative (infinities equal), through tuples and lists."""
    if isinstance(a, float | int) and isinstance(b, float | int):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class Parity:
    """Runs each operation on Python and on Lua, and insists on the same answer."""

    def __init__(self, lua: LuaStore, seed: int) -> None:
        self.py = InMemoryStore()
        self.lua = lua
        self.seed = seed
        self.log: list[str] = []
        self.exact = 0

    def __call__(self, op: str, *args: Any) -> Any:
        self.log.append(f"{op}{args}")
        expected = getattr(self.py, op)(*args)
        got = getattr(self.lua, op)(*args)
        assert close(expected, got), (
            f"seed {self.seed}: {op}{args}: Python {expected!r}, Lua {got!r}\n"
            + "\n".join(self.log[-12:])
        )
        self.exact += expected == got
        return expected


BASES = [0.0, 1234.5678, 1.7e9 + 0.123]


def _step(rng: random.Random, scale: float, wait: float) -> float:
    """How far time moves: mostly forward, sometimes not at all, a hair back, or exactly
    the last wait (the boundary the waits are rounded for)."""
    r = rng.random()
    if r < 0.1:
        return 0.0
    if r < 0.15:
        return -rng.random() * scale * 0.1
    if r < 0.35 and 0 < wait < math.inf:
        return wait
    return rng.expovariate(1.0 / scale)


# -- token buckets ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_bucket_parity(lua: LuaStore, seed: int) -> None:
    rng = random.Random(seed)
    check = Parity(lua, seed)
    rate = rng.choice([0.1, 0.3, 1.0, 7 / 3, 5.0, 1000.0])
    burst = rng.choice([1.0, 2.5, 10.0, 100.0, 3.0])
    now = rng.choice(BASES)
    key = "{p}:bucket"
    wait = 0.0
    for _ in range(80):
        now += _step(rng, 1.0 / rate, wait)
        cost = rng.choice([1.0, burst, burst * rng.random(), burst * 1.3 * rng.random(), 0.0])
        op = rng.random()
        if op < 0.5:
            wait = check("take_tokens", key, now, rate, burst, cost)
        elif op < 0.6:
            check("refund_tokens", key, now, rate, burst, cost)
        elif op < 0.75:
            wait = check("peek_tokens", key, now, rate, burst, cost)
        elif op < 0.85:
            check(
                "cap_tokens", key, now, rate, burst, rng.choice([0.0, -1.0, burst * rng.random()])
            )
        check("tokens", key, now, rate, burst)
    assert check.exact == len(check.log)
    lua.assert_all_expire()


def test_bucket_edges(lua: LuaStore) -> None:
    check = Parity(lua, -1)
    assert check("take_tokens", "b", 0.0, 5.0, 1.0, 2.0) == math.inf  # cost > burst
    assert check("peek_tokens", "b", 0.0, 5.0, 1.0, 2.0) == math.inf
    assert check("take_tokens", "b", 0.0, 5.0, 1.0, 1.0) == 0.0
    assert check("take_tokens", "b", 0.0, 5.0, 1.0, 1.0) == 0.2
    # A caller that read its clock before the last update refills nothing twice.
    assert check("take_tokens", "b", -1.0, 5.0, 1.0, 1.0) > 0.2
    check("refund_tokens", "b", 0.1, 5.0, 1.0, 1.0)
    assert check("tokens", "b", 0.1, 5.0, 1.0) == 1.0
    check("refund_tokens", "fresh", 3.0, 5.0, 1.0, 1.0)
    check("cap_tokens", "b", 0.1, 5.0, 1.0, 0.25)
    assert check("tokens", "b", 0.1, 5.0, 1.0) == 0.25
    # Waits that land a hair short of the tokens are stepped up to the first float that
    # admits, at a large `now` too.
    now = 1.7e9 + 0.1
    assert check("take_tokens", "big", now, 3.0, 1.0, 1.0) == 0.0
    for i in range(50):
        wait = check("take_tokens", "big", now, 3.0, 1.0, 1.0)
        assert wait > 0
        now += wait
        assert check("take_tokens", "big", now, 3.0, 1.0, 1.0) == 0.0, i


# -- token windows ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_window_parity(lua: LuaStore, seed: int) -> None:
    rng = random.Random(seed)
    check = Parity(lua, seed)
    window = rng.choice([60.0, 1.0, 0.7, 10.0, 3600.0])
    keys = ["{p}:tpm", "{p}:itpm", "{p}:otpm"]
    limits = {k: rng.choice([100.0, 1000.0, 37.5, 0.0]) for k in keys}
    now = rng.choice(BASES)
    slots = [-1]
    wait = 0.0
    for _ in range(80):
        scale = window / 60 * rng.choice([0.3, 3.0, 30.0])
        now += _step(rng, scale, wait)
        op = rng.random()
        if op < 0.45:
            picked = rng.sample(keys, rng.randint(1, 3))
            if rng.random() < 0.1:
                picked.append(picked[0])  # a key named twice is one window
            charges = [
                (k, limits[k], rng.choice([1.0, 10.0, limits[k] * rng.random(), limits[k] + 1]))
                for k in picked
            ]
            wait, slot = check("take_windows", now, window, charges)
            slots.append(slot)
        elif op < 0.65:
            slot = rng.choice(slots) if rng.random() < 0.8 else rng.randint(-100, 10**9)
            deltas = [(k, rng.choice([-5.0, -1000.0, 3.5, -0.25])) for k in rng.sample(keys, 2)]
            check("adjust_windows", now, window, slot, deltas)
        elif op < 0.75:
            k = rng.choice(keys)
            remaining = rng.choice([0.0, -5.0, limits[k] * rng.random()])
            reset = rng.choice([0.0, -1.0, window * rng.random(), window * 3, 0.5])
            check("cap_window", k, now, window, limits[k], remaining, reset)
        for k in keys:
            check("window_used", k, now, window)
    assert check.exact == len(check.log)
    lua.assert_all_expire()


def test_window_edges(lua: LuaStore) -> None:
    check = Parity(lua, -1)
    charges = [("a", 100.0, 80.0), ("b", 50.0, 10.0)]
    assert check("take_windows", 0.5, 60.0, charges) == (0.0, 0)
    # All or none: b would fit, a would not; nothing is charged, the longest wait given.
    assert check("take_windows", 1.0, 60.0, [("a", 100.0, 30.0), ("b", 50.0, 10.0)]) == (
        60.0,
        -1,
    )
    assert check("window_used", "b", 1.0, 60.0) == 10.0
    assert check("take_windows", 1.0, 60.0, [("a", 100.0, 101.0)]) == (math.inf, -1)
    check("adjust_windows", 2.0, 60.0, 0, [("a", -50.0), ("b", -100.0)])
    assert check("window_used", "a", 2.0, 60.0) == 30.0
    assert check("window_used", "b", 2.0, 60.0) == 0.0
    check("cap_window", "a", 2.0, 60.0, 100.0, 10.0, 5.0)
    assert check("window_used", "a", 2.0, 60.0) == 90.0
    assert check("window_used", "a", 70.0, 60.0) == 0.0
    check("adjust_windows", 500.0, 60.0, 0, [("a", 5.0)])  # the slot has left: nothing
    assert check("window_used", "a", 500.0, 60.0) == 0.0


# -- budgets ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_budget_parity(lua: LuaStore, seed: int) -> None:
    rng = random.Random(seed)
    check = Parity(lua, seed)
    period = rng.choice([60.0, 0.5, 86400.0, 3.7])
    limit = rng.choice([0.0, 1.0, 2.5, 0.1])
    now = rng.choice(BASES)
    key = "{p}:budget"
    starts = [now]
    wait = 0.0
    for _ in range(60):
        now += _step(rng, period * rng.choice([0.05, 0.5, 3.0]), wait)
        op = rng.random()
        if op < 0.5:
            cost = rng.choice([0.0, 0.3, limit, limit * rng.random(), limit + 0.1])
            wait, start = check("spend", key, now, period, limit, cost)
            starts.append(start)
        elif op < 0.8:
            delta = rng.choice([-0.2, 0.05, -10.0, 1.0])
            check("adjust_spend", key, now, period, rng.choice(starts), delta)
        check("spent", key, now, period)
    assert check.exact == len(check.log)
    lua.assert_all_expire()


def test_budget_rolls_over_by_whole_periods(lua: LuaStore) -> None:
    check = Parity(lua, -1)
    assert check("spend", "u", 0.0, 60.0, 1.0, 0.75) == (0.0, 0.0)
    assert check("spend", "u", 10.0, 60.0, 1.0, 0.5) == (50.0, 0.0)
    assert check("spend", "u", 10.0, 60.0, 1.0, 2.0) == (math.inf, 0.0)
    assert check("spend", "u", 250.0, 60.0, 1.0, 0.5) == (0.0, 240.0)
    check("adjust_spend", "u", 251.0, 60.0, 0.0, -5.0)  # an old period's: nothing
    assert check("spent", "u", 251.0, 60.0) == 0.5
    check("adjust_spend", "u", 251.0, 60.0, 240.0, -5.0)
    assert check("spent", "u", 251.0, 60.0) == 0.0
    assert check("spend", "zero", 0.0, 60.0, 0.0, 0.0) == (math.inf, 0.0)


# -- circuit breakers ------------------------------------------------------------------


def _breaker_cfg(rng: random.Random) -> CircuitBreakerConfig:
    return CircuitBreakerConfig(
        threshold=rng.randint(1, 5),
        sampling_duration_seconds=rng.choice([60.0, 0.5, 2.5, 1.0, 7.3]),
        reset_timeout_seconds=rng.choice([30.0, 1.0, 0.25]),
        half_open_max_calls=rng.randint(1, 3),
        failure_rate_threshold=rng.choice([None, 0.5, 0.25, 1.0, 0.3]),
        minimum_calls=rng.choice([1, 2, 4, 10]),
    )


@pytest.mark.parametrize("seed", range(60))
def test_breaker_parity(lua: LuaStore, seed: int) -> None:
    rng = random.Random(seed)
    check = Parity(lua, seed)
    cfg = _breaker_cfg(rng)
    now = rng.choice(BASES)
    key = "{p}:breaker"
    permits: list[int] = [0]
    scale = min(cfg.sampling_duration_seconds, cfg.reset_timeout_seconds) / 4
    for _ in range(100):
        now += _step(rng, scale, 0.0)
        op = rng.random()
        if op < 0.35:
            generation, _ = check("breaker_acquire", key, now, cfg, NAME)
            if generation is not None:
                permits.append(generation)
        elif op < 0.85:
            generation = rng.choice(permits) if rng.random() < 0.9 else rng.randint(0, 50)
            outcome = rng.choice([0, 1, 1, 2])
            check("breaker_report", key, now, cfg, NAME, generation, outcome)
        else:
            command = rng.choice(["observe", "observe", "reset", "force_open"])
            check("breaker_command", key, command, now, cfg, NAME)
        check("breaker_record", key)
    assert check.exact == len(check.log)
    lua.assert_all_expire()


def test_breaker_reasons_and_trials(lua: LuaStore) -> None:
    check = Parity(lua, -1)
    cfg = CircuitBreakerConfig(
        threshold=3,
        sampling_duration_seconds=2.5,
        reset_timeout_seconds=1.0,
        half_open_max_calls=2,
    )
    assert check("breaker_record", "k") is None
    for t in (0.0, 0.1):
        assert check("breaker_report", "k", t, cfg, NAME, 0, 1) == ()
    (moved,) = check("breaker_report", "k", 0.2, cfg, NAME, 0, 1)
    assert (moved.to_state, moved.reason) == (BreakerState.OPEN, "3 failures in 2.5s")
    assert check("breaker_acquire", "k", 0.5, cfg, NAME) == (None, ())
    generation, (moved,) = check("breaker_acquire", "k", 1.2, cfg, NAME)
    assert (generation, moved.reason) == (2, "reset timeout elapsed")
    assert check("breaker_acquire", "k", 1.2, cfg, NAME)[0] == 2
    assert check("breaker_acquire", "k", 1.2, cfg, NAME)[0] is None  # two trials at most
    assert check("breaker_report", "k", 1.3, cfg, NAME, 1, 0) == ()  # stale: no say
    check("breaker_report", "k", 1.3, cfg, NAME, 2, 2)  # an ignored trial frees its slot
    assert check("breaker_acquire", "k", 1.3, cfg, NAME)[0] == 2
    (moved,) = check("breaker_report", "k", 1.4, cfg, NAME, 2, 0)
    assert moved.reason == "trial succeeded"
    rated = CircuitBreakerConfig(
        threshold=100, sampling_duration_seconds=60, failure_rate_threshold=0.5, minimum_calls=4
    )
    for t, outcome in [(0.0, 0), (1.0, 1), (2.0, 0)]:
        check("breaker_report", "r", t, rated, NAME, 0, outcome)
    (moved,) = check("breaker_report", "r", 3.0, rated, NAME, 0, 1)
    assert moved.reason == "2/4 calls failed in 60s"
    rec, _ = check("breaker_command", "r", "force_open", 4.0, rated, NAME)
    assert rec is not None
    assert (rec.opened_at, rec.trips) == (4.0, 1)
    check("breaker_command", "r", "reset", 5.0, rated, NAME)
    check("breaker_command", "r", "observe", 5.0, rated, NAME)


def test_unknown_breaker_command_is_an_error(lua: LuaStore) -> None:
    import redis

    with pytest.raises(redis.ResponseError, match="unknown breaker command"):
        lua.run("breaker_command", ["k"], 0.0, "explode", 1, 60, 30, 1, None, 10)


# -- the helpers that mirror Python's float functions ----------------------------------


_FLOORDIV = "return num(floordiv(tonumber(ARGV[1]), tonumber(ARGV[2])))"


def _helper(redis_client: Any, body: str) -> Callable[..., Any]:
    return redis_client.register_script(LIBRARY + body)  # type: ignore[no-any-return]


def test_g_formats_like_python(redis_client: Any) -> None:
    fmt = _helper(redis_client, "return fmt_g(tonumber(ARGV[1]))")
    values = [60, 60.0, 0.5, 2.5, 1e-3, 1 / 3, 123456789.0, 1e16, 2.5e-7, 3600, 86400.0, 7.3]
    values += [0.1 + 0.2, 1e-5, 123456.5, 999999.5, 1e6, 1e300, 5e-324]
    for x in values:
        assert _text(fmt(args=[_arg(x)])) == f"{x:g}", x


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_next_up_is_nextafter(redis_client_session: Any, x: float) -> None:
    up = _helper(redis_client_session, "return num(next_up(tonumber(ARGV[1])))")
    assert float(up(args=[_arg(x)])) == math.nextafter(x, math.inf)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-1e12, 1e12, allow_nan=False),
    st.floats(1e-6, 1e6, allow_nan=False),
)
def test_floordiv_is_pythons(redis_client_session: Any, a: float, b: float) -> None:
    div = _helper(redis_client_session, _FLOORDIV)
    assert float(div(args=[_arg(a), _arg(b)])) == a // b


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e9, allow_nan=False), max_size=61))
def test_fsum_is_pythons(redis_client_session: Any, xs: list[float]) -> None:
    total = _helper(redis_client_session, "return num(fsum(cjson.decode(ARGV[1])))")
    assert float(total(args=[repr(xs)])) == math.fsum(xs)


@pytest.fixture(scope="module")
def redis_client_session(redis_url: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_floordiv_edges(redis_client: Any) -> None:
    div = _helper(redis_client, _FLOORDIV)
    for a, b in [(1.0, 0.1), (0.0, 0.25), (-1.0, 0.1), (1.7e9 + 0.123, 0.25), (5.0, 0.5)]:
        assert float(div(args=[_arg(a), _arg(b)])) == a // b


# -- expiry and the server's clock -----------------------------------------------------


def test_every_key_written_expires(redis_client: Any, lua: LuaStore) -> None:
    cfg = CircuitBreakerConfig(sampling_duration_seconds=60, reset_timeout_seconds=30)
    now = 1000.0
    lua.take_tokens("bucket", now, 2.0, 10.0, 1.0)
    lua.refund_tokens("refunded", now, 2.0, 10.0, 1.0)
    lua.cap_tokens("capped", now, 2.0, 10.0, 1.0)
    lua.take_tokens("refused", now, 2.0, 10.0, 11.0)
    lua.take_windows(now, 60.0, [("w1", 100.0, 5.0), ("w2", 100.0, 500.0)])
    lua.take_windows(now, 60.0, [("w3", 100.0, 5.0)])
    lua.adjust_windows(now, 60.0, 0, [("w4", 1.0)])
    lua.cap_window("w5", now, 60.0, 100.0, 10.0, 30.0)
    lua.spend("budget", now, 3600.0, 1.0, 0.5)
    lua.adjust_spend("budget2", now, 3600.0, now, 0.5)
    lua.breaker_acquire("breaker", now, cfg, NAME)
    lua.breaker_report("breaker2", now, cfg, NAME, 0, 1)
    lua.breaker_command("breaker3", "force_open", now, cfg, NAME)
    # Reads write nothing.
    lua.peek_tokens("peeked", now, 2.0, 10.0, 1.0)
    lua.tokens("leveled", now, 2.0, 10.0)
    lua.window_used("used", now, 60.0)
    lua.spent("spent", now, 60.0)
    lua.breaker_record("read")
    expected = {
        "bucket": 5 + 60,
        "refunded": 5 + 60,
        "capped": 5 + 60,
        "refused": 5 + 60,
        "w1": 2 * 60 + 60,
        "w2": 2 * 60 + 60,
        "w3": 2 * 60 + 60,
        "w4": 2 * 60 + 60,
        "w5": 2 * 60 + 60,
        "budget": 3600 + 60,
        "budget2": 3600 + 60,
        "breaker": 2 * 60 + 3600,
        "breaker2": 2 * 60 + 3600,
        "breaker3": 2 * 60 + 3600,
    }
    assert sorted(_text(k) for k in redis_client.keys("*")) == sorted(expected)
    for key, seconds in expected.items():
        ttl = redis_client.pttl(key)
        assert seconds * 1000 - 2000 < ttl <= seconds * 1000, key
    # The budget's key lives until its period's end (+ 60 s), not a full period more.
    lua.spend("late", now + 3000.0, 3600.0, 1.0, 0.1)  # a new period, from now + 3000
    lua.spend("late", now + 3500.0, 3600.0, 1.0, 0.1)
    assert 3100 * 1000 - 2000 < redis_client.pttl("late") <= 3160 * 1000


def test_the_server_clock_when_no_time_is_given(lua: LuaStore) -> None:
    calls: list[tuple[str, list[Any]]] = [
        ("bucket_take", [1.0, 1.0, 1.0]),
        ("windows_take", [60.0, 100.0, 1.0]),
        ("budget_spend", [60.0, 1.0, 0.5]),
        ("breaker_acquire", [5, 60.0, 30.0, 1, None, 10]),
        ("breaker_read", []),
    ]
    for name, args in calls:
        reply = lua.scripts[name](keys=["{p}:" + name], args=["", *map(_arg, args)])
        assert abs(float(reply[0]) - time.time()) < 1.0, name
    # The time used is the one charged: a bucket taken at the server's now is empty now.
    reply = lua.scripts["bucket_take"](keys=["{p}:bucket_take"], args=["", "1", "1", "1"])
    assert float(reply[1]) > 0.9
