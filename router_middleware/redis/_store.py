""":class:`RedisStore`: the router's state on Redis, shared by every replica.

Each domain operation of :class:`~router_middleware._storage.StateStore` is one Lua
script, one round trip (``EVALSHA``, loaded again on ``NOSCRIPT``), atomic on the server.
Time is the server's (``TIME``), so replicas whose clocks disagree share one timeline;
the store's interface keeps the caller's clock: absolute times go in and come out in it,
shifted by the difference the same round trip measured. Every key of a provider shares
one hash tag (``{prefix:provider}``), so each script is valid on Redis Cluster, and every
key has a TTL.

Concurrency slots are leases (``_scripts``), named, renewed and heard of by ``_leases``:
removed on release, which wakes waiting replicas through a pub/sub notice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._breaker_algorithm import BreakerRecord
from .._clock import Clock, SystemClock
from .._config import CircuitBreakerConfig
from .._ops import (
    AcquirePermit,
    AdjustSpend,
    AdjustWindows,
    AdmitOp,
    CheckCooldown,
    Count,
    ReleaseSlot,
    ReportPermit,
    SetCooldown,
    SettleOp,
    Spend,
    TakeSlot,
    TakeWindows,
)
from .._storage import Transitions
from ._leases import Leases, ReleaseNotices
from ._scripts import script_sources
from ._wire import Keys, admission_answer, breaker_config, provider_of, record, transitions

if TYPE_CHECKING:
    import redis

__all__ = ["RedisStore"]


class RedisStore:
    """Router state on Redis (or Valkey), for several replicas.

    ``time_source="caller"`` runs the scripts on the ``now`` the router passes (for
    simulations on a virtual clock); the default reads the server's clock.

    Example (with a Redis running)::

        store = RedisStore(redis.Redis.from_url(url, socket_timeout=0.1), prefix="llmr")
        router = ResilientRouter(models, config, store=store)
    """

    COMMANDS = (
        "evalsha", "eval", "script|load", "ping", "subscribe", "unsubscribe", "publish",
        "time", "get", "set", "del", "pexpire", "hincrbyfloat", "hgetall",
        "zadd", "zrem", "zcard", "zcount", "zrange", "zremrangebyscore",
    )  # fmt: skip
    """Every command the store sends or its scripts run: what an ACL user needs."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "llmr",
        lease_seconds: float = 30.0,
        clock: Clock | None = None,
        time_source: str = "server",
    ) -> None:
        if time_source not in ("server", "caller"):
            raise ValueError("time_source must be 'server' or 'caller'")
        self.namespace = prefix
        self.client = client
        self.lease_seconds = lease_seconds
        self._clock = clock or SystemClock()
        self._caller_time = time_source == "caller"
        # An admission's round trip runs off the event loop (the async driver's ``Admit``
        # step), except on the caller's time: a virtual-time loop would jump its clock
        # over the round trip while a worker thread made it.
        self.remote = not self._caller_time
        self._scripts = {n: client.register_script(s) for n, s in script_sources().items()}
        self.leases = Leases(lease_seconds, self._renew)
        self.notices = ReleaseNotices(client, f"{prefix}:released", self.leases.replica)

    def acl_rules(self) -> list[str]:
        """``ACL SETUSER`` rules for a user that may do exactly what this store does:
        its commands, on its keys (``{prefix:*``) and its release channel."""
        rules = ["resetkeys", f"~{{{self.namespace}:*", "resetchannels", f"&{self.notices.channel}"]
        return [*rules, "-@all", *(f"+{c}" for c in self.COMMANDS)]

    # -- plumbing ------------------------------------------------------------------------

    def key(self, name: str) -> str:
        provider, _, what = name.partition(":")
        return f"{{{self.namespace}:{provider}}}:{what}"

    def _run(self, name: str, keys: Sequence[str], now: float | None, *args: Any) -> list[Any]:
        """Run one entry script: its reply, whose first element is the time it used."""
        arg = repr(now if now is not None else self._clock.now()) if self._caller_time else ""
        reply: list[Any] = self._scripts[name](keys=list(keys), args=[arg, *args])
        return reply

    def _shift(self, reply: list[Any], now: float | None) -> float:
        """Caller time minus server time, as this reply measured it."""
        local = now if now is not None else self._clock.now()
        return local - float(reply[0])

    # -- token buckets -------------------------------------------------------------------

    def take_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        return float(self._run("bucket_take", [key], now, rate, burst, cost)[1])

    def refund_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> None:
        self._run("bucket_refund", [key], now, rate, burst, cost)

    def peek_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        return float(self._run("bucket_peek", [key], now, rate, burst, cost)[1])

    def tokens(self, key: str, now: float, rate: float, burst: float) -> float:
        return float(self._run("bucket_level", [key], now, rate, burst)[1])

    def cap_tokens(self, key: str, now: float, rate: float, burst: float, remaining: float) -> None:
        self._run("bucket_cap", [key], now, rate, burst, remaining)

    # -- concurrency slots (leases) ----------------------------------------------------------

    def acquire_slot(self, key: str, cap: int | None) -> int:
        member = self.leases.new()
        reply = self._run(
            "lease_take", [key], None, -1 if cap is None else cap, member, self.lease_seconds
        )
        used = int(reply[1])
        if used:
            self.leases.hold(key, member)
        else:
            self.notices.listen()
        return used

    def take_token_and_slot(
        self,
        bucket: str,
        slots: str,
        now: float,
        rate: float,
        burst: float,
        cost: float,
        cap: int | None,
    ) -> tuple[float, int]:
        member = self.leases.new()
        reply = self._run(
            "bucket_lease_take",
            [bucket, slots],
            now,
            rate,
            burst,
            cost,
            -1 if cap is None else cap,
            member,
            self.lease_seconds,
        )
        wait, used = float(reply[1]), int(reply[2])
        if used:
            self.leases.hold(slots, member)
            return 0.0, used
        if wait == math.inf:
            self.notices.listen()  # a release elsewhere ends this wait: hear it
        return wait, 0

    def release_slot(self, key: str) -> None:
        member = self.leases.take(key)
        if member is None:
            return  # not this replica's (acquired before a failover, or forgotten)
        notice = self.notices.notice(provider_of(key))
        self._run("lease_release", [key], None, member, self.notices.channel, notice)

    def slot_free_in(self, key: str) -> float:
        """Seconds until a slot of ``key`` frees by itself (its earliest lease expires)."""
        return float(self._run("lease_next", [key], None)[1])

    def slots_in_use(self, key: str) -> int:
        return int(self._run("lease_count", [key], None)[1])

    def _renew(self, key: str, members: Sequence[str]) -> None:
        self._run("lease_renew", [key], None, self.lease_seconds, *members)

    def holds(self, key: str) -> bool:
        """Whether this replica holds a lease on ``key``."""
        return self.leases.holds(key)

    def drop(self, key: str) -> None:
        """Stop renewing one of this replica's leases on ``key``: it expires by itself."""
        self.leases.take(key)

    def held(self) -> int:
        """Concurrency leases this replica holds now."""
        return self.leases.count()

    def add_release_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(provider)`` when another replica releases a slot of ``provider``."""
        self.notices.add_listener(listener)

    # -- circuit breakers --------------------------------------------------------------------

    def breaker_acquire(
        self, key: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[int | None, Transitions]:
        reply = self._run("breaker_acquire", [key], now, *breaker_config(cfg))
        generation = None if reply[1] is None else int(reply[1])
        return generation, transitions(reply[2], name, self._shift(reply, now))

    def breaker_report(
        self,
        key: str,
        now: float,
        cfg: CircuitBreakerConfig,
        name: str,
        generation: int,
        outcome: int,
    ) -> Transitions:
        reply = self._run("breaker_report", [key], now, *breaker_config(cfg), generation, outcome)
        return transitions(reply[1], name, self._shift(reply, now))

    def breaker_command(
        self, key: str, command: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[BreakerRecord, Transitions]:
        reply = self._run("breaker_command", [key], now, command, *breaker_config(cfg))
        shift = self._shift(reply, now)
        found = record(reply[1], shift)
        assert found is not None  # a command always leaves a record
        return found, transitions(reply[2], name, shift)

    def breaker_record(self, key: str) -> BreakerRecord | None:
        reply = self._run("breaker_read", [key], None)
        return record(reply[1], self._shift(reply, None))

    # -- cool-downs --------------------------------------------------------------------------

    def set_cooldown(self, key: str, until: float) -> float:
        local = self._clock.now()
        reply = self._run("cooldown_set", [key], local, until - local)
        return float(reply[1]) + self._shift(reply, local)

    def clear_cooldown(self, key: str) -> None:
        self.client.delete(key)

    def cooldown_until(self, key: str) -> float:
        reply = self._run("cooldown_get", [key], None)
        until = float(reply[1])
        return until + self._shift(reply, None) if until else 0.0

    # -- token windows and budgets ---------------------------------------------------------

    def take_windows(
        self, now: float, window: float, charges: Sequence[tuple[str, float, float]]
    ) -> tuple[float, int]:
        keys = [k for k, _, _ in charges]
        numbers = [x for _, limit, cost in charges for x in (limit, cost)]
        reply = self._run("windows_take", keys, now, window, *numbers)
        return float(reply[1]), int(reply[2])

    def adjust_windows(
        self, now: float, window: float, slot: int, deltas: Sequence[tuple[str, float]]
    ) -> None:
        keys = [k for k, _ in deltas]
        self._run("windows_adjust", keys, now, window, slot, *[d for _, d in deltas])

    def cap_window(
        self, key: str, now: float, window: float, limit: float, remaining: float, reset: float
    ) -> None:
        self._run("window_cap", [key], now, window, limit, remaining, reset)

    def window_used(self, key: str, now: float, window: float) -> float:
        return float(self._run("window_used", [key], now, window)[1])

    def spend(
        self, key: str, now: float, period: float, limit: float, cost: float
    ) -> tuple[float, float]:
        # The period's start is handed back to adjust_spend as it came: never shifted.
        reply = self._run("budget_spend", [key], now, period, limit, cost)
        return float(reply[1]), float(reply[2])

    def adjust_spend(self, key: str, now: float, period: float, start: float, delta: float) -> None:
        self._run("budget_adjust", [key], now, period, repr(start), delta)

    def spent(self, key: str, now: float, period: float) -> float:
        return float(self._run("budget_spent", [key], now, period)[1])

    # -- whole admissions and settles: one round trip each ---------------------------------

    def admit(self, now: float, ops: Sequence[AdmitOp]) -> tuple[int, list[Any]]:
        keys = Keys()
        wire: list[list[Any]] = []
        lease: tuple[str, str] | None = None
        for op in ops:
            match op:
                case CheckCooldown(key):
                    wire.append(["cooldown", keys(key)])
                case Spend(key, period, limit, cost):
                    wire.append(["spend", keys(key), period, limit, cost])
                case AcquirePermit(key, cfg, _):
                    wire.append(["breaker", keys(key), *breaker_config(cfg)])
                case TakeWindows(window, charges):
                    index = [keys(k) for k, _, _ in charges]
                    limits, costs = [c[1] for c in charges], [c[2] for c in charges]
                    wire.append(["windows", window, index, limits, costs])
                case TakeSlot(bucket, slots, rate, burst, cost, cap):
                    lease = (slots, self.leases.new())
                    bucket_index = 0 if bucket is None else keys(bucket)
                    limit = -1 if cap is None else cap
                    wire.append(
                        ["take", bucket_index, keys(slots), rate, burst, cost, limit, lease[1],
                         self.lease_seconds]
                    )  # fmt: skip
        reply = self._run("admit", keys.names, now, json.dumps(wire))
        shift = self._shift(reply, now)
        refused = int(reply[1]) - 1
        answers = [
            admission_answer(op, raw, shift) for op, raw in zip(ops, reply[2:], strict=False)
        ]
        if lease is not None:
            if refused < 0:
                self.leases.hold(*lease)
            elif type(ops[refused]) is TakeSlot and answers[refused][0] == math.inf:
                self.notices.listen()  # a release elsewhere ends this wait: hear it
        return refused, answers

    def settle(self, now: float, ops: Sequence[SettleOp]) -> list[Any]:
        keys = Keys()
        wire: list[list[Any]] = []
        for op in ops:
            match op:
                case ReleaseSlot(key):
                    member = self.leases.take(key)
                    if member is None:
                        wire.append(["none"])  # not held here: it expires, or was local
                    else:
                        notice = self.notices.notice(provider_of(key))
                        wire.append(["release", keys(key), member, self.notices.channel, notice])
                case ReportPermit(key, cfg, _, generation, outcome):
                    wire.append(["report", keys(key), *breaker_config(cfg), generation, outcome])
                case SetCooldown(key, seconds):
                    wire.append(["cooldown", keys(key), seconds])
                case AdjustWindows(window, slot, deltas):
                    index = [keys(k) for k, _ in deltas]
                    wire.append(["windows", window, slot, index, [d for _, d in deltas]])
                case AdjustSpend(key, period, start, delta):
                    wire.append(["spend", keys(key), period, start, delta])
                case Count(key, amounts):
                    wire.append(["count", keys(key), *(x for pair in amounts for x in pair)])
        reply = self._run("settle", keys.names, now, json.dumps(wire))
        shift = self._shift(reply, now)
        answers: list[Any] = []
        for op, raw in zip(ops, reply[1:], strict=True):
            if type(op) is ReportPermit:
                answers.append(transitions(raw, op.name, shift))
            elif type(op) is SetCooldown:
                answers.append(float(raw) + shift)
            else:
                answers.append(None)
        return answers

    def counts(self, key: str) -> dict[str, float]:
        """The counters :class:`~router_middleware._ops.Count` added to under ``key``,
        by every replica."""
        raw: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
        return {field.decode(): float(value) for field, value in raw.items()}

    # -- lifecycle ---------------------------------------------------------------------------

    def forget(self, provider: str) -> int:
        """Nothing: other replicas may still route to ``provider``; its keys expire."""
        return 0

    def close(self) -> None:
        """Stop this store's threads (its leases expire unless released first)."""
        self.leases.close()
        self.notices.close()

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.namespace!r}, leases_held={self.held()})"
