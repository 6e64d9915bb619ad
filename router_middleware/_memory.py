"""Process-local state: :class:`InMemoryStore` runs the pure algorithms of ``_bucket``,
``_window``, ``_budget`` and ``_breaker_algorithm`` under one lock, held for microseconds,
never across a provider call or an ``await``. The domain operations it implements are
those of :class:`~._storage.StateStore`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import _breaker_algorithm as algo
from . import _budget as budget
from . import _window as windows
from ._breaker_algorithm import BreakerRecord
from ._bucket import BucketState, level, peek_tokens, refund_tokens, take_tokens
from ._config import CircuitBreakerConfig
from ._ops import (
    AcquirePermit,
    AdjustSpend,
    AdjustWindows,
    AdmitOp,
    CheckCooldown,
    ReleaseSlot,
    ReportPermit,
    SetCooldown,
    SettleOp,
    Spend,
    TakeSlot,
    TakeWindows,
)
from ._storage import Transitions

__all__ = ["InMemoryStore"]


_COMMANDS = {"observe": algo.advance, "reset": algo.reset, "force_open": algo.force_open}


class InMemoryStore:
    """Process-local state, safe across threads and asyncio tasks.

    Example:
        >>> store = InMemoryStore()
        >>> bucket, slots = store.key("openai:bucket"), store.key("openai:slots")
        >>> bucket
        'router:openai:bucket'
        >>> store.take_tokens(bucket, 0.0, rate=1, burst=1, cost=1)
        0.0
        >>> store.take_tokens(bucket, 0.0, rate=1, burst=1, cost=1)
        1.0
        >>> store.acquire_slot(slots, cap=1), store.acquire_slot(slots, cap=1)
        (1, 0)
        >>> store
        InMemoryStore(namespace='router', keys=2)
        >>> store.forget("openai")
        2
    """

    __slots__ = ("_data", "_lock", "namespace")

    def __init__(self, namespace: str = "router") -> None:
        self.namespace = namespace
        self._data: dict[str, Any] = {}
        # Reentrant: a whole admission holds it around the operations it is made of.
        self._lock = threading.RLock()

    def key(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    # -- token buckets ---------------------------------------------------------------------

    def take_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        with self._lock:
            state, wait = take_tokens(self._data.get(key), now, rate, burst, cost)
            self._data[key] = state
        return wait

    def refund_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> None:
        with self._lock:
            self._data[key] = refund_tokens(self._data.get(key), now, rate, burst, cost)

    def peek_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        state: BucketState | None = self._data.get(key)
        return peek_tokens(state, now, rate, burst, cost)

    def tokens(self, key: str, now: float, rate: float, burst: float) -> float:
        return level(self._data.get(key), now, rate, burst)

    # -- concurrency slots -----------------------------------------------------------------

    def acquire_slot(self, key: str, cap: int | None) -> int:
        with self._lock:
            used = self._data.get(key, 0)
            if cap is not None and used >= cap:
                return 0
            self._data[key] = used = used + 1
        return int(used)

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
        data = self._data
        with self._lock:
            state, wait = take_tokens(data.get(bucket), now, rate, burst, cost)
            if wait:
                return wait, 0
            used = data.get(slots, 0)
            if cap is not None and used >= cap:
                return math.inf, 0
            data[bucket] = state
            data[slots] = used = used + 1
        return 0.0, int(used)

    def release_slot(self, key: str) -> None:
        with self._lock:
            used = self._data.get(key)
            if used:
                self._data[key] = used - 1

    def slots_in_use(self, key: str) -> int:
        return int(self._data.get(key, 0))

    # -- circuit breakers ------------------------------------------------------------------

    def breaker_acquire(
        self, key: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[int | None, Transitions]:
        with self._lock:
            rec, result = algo.acquire(self._data.get(key), now, cfg, name)
            self._data[key] = rec
        return result

    def breaker_report(
        self,
        key: str,
        now: float,
        cfg: CircuitBreakerConfig,
        name: str,
        generation: int,
        outcome: int,
    ) -> Transitions:
        with self._lock:
            rec, moved = algo.report(self._data.get(key), now, cfg, name, generation, outcome)
            self._data[key] = rec
        return moved

    def breaker_command(
        self, key: str, command: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[BreakerRecord, Transitions]:
        fn = _COMMANDS[command]
        with self._lock:
            old = self._data.get(key)
            rec, moved = fn(old, now, cfg, name)
            if old is not None or command != "observe":  # a look creates nothing
                self._data[key] = rec
        return rec, moved

    def breaker_record(self, key: str) -> BreakerRecord | None:
        rec: BreakerRecord | None = self._data.get(key)
        return rec

    # -- cool-downs ------------------------------------------------------------------------

    def set_cooldown(self, key: str, until: float) -> float:
        with self._lock:
            until = max(until, self._data.get(key, 0.0))
            self._data[key] = until
        return until

    def clear_cooldown(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def cooldown_until(self, key: str) -> float:
        return float(self._data.get(key, 0.0))

    def cap_tokens(self, key: str, now: float, rate: float, burst: float, remaining: float) -> None:
        with self._lock:
            tokens = level(self._data.get(key), now, rate, burst)
            if tokens > remaining:
                self._data[key] = (max(0.0, remaining), now)

    # -- token windows and budgets -----------------------------------------------------

    def take_windows(
        self, now: float, window: float, charges: Sequence[tuple[str, float, float]]
    ) -> tuple[float, int]:
        data = self._data
        with self._lock:
            # Looked at first, all of them, so a refusal charges nothing.
            wait = 0.0
            for key, limit, cost in charges:
                state = windows.advance(data.get(key), now, window)
                data[key] = state
                wait = max(wait, windows.room(state, now, window, limit, cost))
            if wait:
                return wait, -1
            slot = -1
            for key, limit, cost in charges:
                _, _, slot = windows.take(data[key], now, window, limit, cost)
        return 0.0, slot

    def adjust_windows(
        self, now: float, window: float, slot: int, deltas: Sequence[tuple[str, float]]
    ) -> None:
        data = self._data
        with self._lock:
            for key, delta in deltas:
                data[key] = windows.adjust(data.get(key), now, window, slot, delta)

    def cap_window(
        self, key: str, now: float, window: float, limit: float, remaining: float, reset: float
    ) -> None:
        with self._lock:
            self._data[key] = windows.cap(self._data.get(key), now, window, limit, remaining, reset)

    def window_used(self, key: str, now: float, window: float) -> float:
        return windows.used(self._data.get(key), now, window)

    def spend(
        self, key: str, now: float, period: float, limit: float, cost: float
    ) -> tuple[float, float]:
        with self._lock:
            state, wait = budget.spend(self._data.get(key), now, period, limit, cost)
            self._data[key] = state
        return wait, state[0]

    def adjust_spend(self, key: str, now: float, period: float, start: float, delta: float) -> None:
        with self._lock:
            self._data[key] = budget.adjust(self._data.get(key), now, period, start, delta)

    def spent(self, key: str, now: float, period: float) -> float:
        return budget.spent(self._data.get(key), now, period)

    # -- whole admissions and settles (``_ops``) -----------------------------------------------

    def admit(self, now: float, ops: Sequence[AdmitOp]) -> tuple[int, list[Any]]:
        """Run ``ops`` in order under one lock, stopping at the first refusal and giving
        back what the earlier ones took: ``(-1, answers)`` when all were taken, else the
        index of the refusal and the answers up to it."""
        answers: list[Any] = []
        with self._lock:
            for i, op in enumerate(ops):
                answer, refused = _TAKE[type(op)](self, now, op)
                answers.append(answer)
                if refused:
                    for done, given in zip(reversed(ops[:i]), reversed(answers[:i]), strict=True):
                        self._give_back(now, done, given)
                    return i, answers
        return -1, answers

    # Each takes one admission operation: its answer, and whether it refused.

    def _take_slot(self, now: float, op: TakeSlot) -> tuple[Any, bool]:
        bucket, slots, rate, burst, cost, cap = op
        if bucket is None:
            used = self.acquire_slot(slots, cap)
            return (0.0 if used else math.inf, used, math.inf), not used
        wait, used = self.take_token_and_slot(bucket, slots, now, rate, burst, cost, cap)
        return (wait, used, math.inf), not used

    def _check_cooldown(self, now: float, op: CheckCooldown) -> tuple[Any, bool]:
        left = float(self._data.get(op.key, 0.0)) - now
        return left, left > 0

    def _acquire_permit(self, now: float, op: AcquirePermit) -> tuple[Any, bool]:
        key, cfg, name = op
        rec: BreakerRecord | None = self._data.get(key)
        if rec is None or rec.state == algo.BreakerState.CLOSED:
            # Closed admits without changing anything: no algorithm to run.
            return (0 if rec is None else rec.generation, (), 0.0), False
        generation, moved = self.breaker_acquire(key, now, cfg, name)
        after = 0.0
        rec = self._data[key]
        if generation is None and rec.state == algo.BreakerState.OPEN:
            after = max(0.0, rec.opened_at + cfg.reset_timeout_seconds - now)
        return (generation, moved, after), generation is None

    def _take_windows(self, now: float, op: TakeWindows) -> tuple[Any, bool]:
        wait, slot = self.take_windows(now, op.window, op.charges)
        return (wait, slot), bool(wait)

    def _spend(self, now: float, op: Spend) -> tuple[Any, bool]:
        key, period, limit, cost = op
        wait, start = self.spend(key, now, period, limit, cost)
        return (wait, start), bool(wait)

    def _give_back(self, now: float, op: AdmitOp, answer: Any) -> None:
        match op:
            case AcquirePermit(key, cfg, name) if answer[0] is not None:
                self.breaker_report(key, now, cfg, name, answer[0], algo.IGNORE)
            case TakeWindows(window, charges):
                self.adjust_windows(now, window, answer[1], [(k, -c) for k, _, c in charges])
            case Spend(key, period, _, cost):
                self.adjust_spend(key, now, period, answer[1], -cost)

    def settle(self, now: float, ops: Sequence[SettleOp]) -> list[Any]:
        """Run every one of ``ops`` (in order: the breaker hears before a slot is freed)."""
        with self._lock:
            return [_SETTLE[type(op)](self, now, op) for op in ops]

    # Each runs one settling operation: its answer.

    def _release_slot(self, now: float, op: ReleaseSlot) -> None:
        self.release_slot(op.key)

    def _set_cooldown(self, now: float, op: SetCooldown) -> float:
        return self.set_cooldown(op.key, now + op.seconds)

    def _adjust_windows(self, now: float, op: AdjustWindows) -> None:
        self.adjust_windows(now, op.window, op.slot, op.deltas)

    def _adjust_spend(self, now: float, op: AdjustSpend) -> None:
        self.adjust_spend(op.key, now, op.period, op.start, op.delta)

    def _report(self, now: float, op: ReportPermit) -> Transitions:
        key, cfg, name, generation, outcome = op
        if outcome == algo.IGNORE or (
            outcome == algo.SUCCESS and cfg.failure_rate_threshold is None
        ):
            rec: BreakerRecord | None = self._data.get(key)
            if rec is None or rec.state == algo.BreakerState.CLOSED:
                return ()  # changes nothing while closed
        return self.breaker_report(key, now, cfg, name, generation, outcome)

    # -- lifecycle -------------------------------------------------------------------------

    def forget(self, provider: str) -> int:
        prefix = self.key(f"{provider}:")
        with self._lock:
            gone = [k for k in self._data if k.startswith(prefix)]
            for k in gone:
                del self._data[k]
        return len(gone)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"InMemoryStore(namespace={self.namespace!r}, keys={len(self._data)})"


# How the store carries out each operation, by its type (one lookup on the hot path).
_TAKE: dict[type, Callable[[InMemoryStore, float, Any], tuple[Any, bool]]] = {
    TakeSlot: InMemoryStore._take_slot,
    CheckCooldown: InMemoryStore._check_cooldown,
    AcquirePermit: InMemoryStore._acquire_permit,
    TakeWindows: InMemoryStore._take_windows,
    Spend: InMemoryStore._spend,
}
_SETTLE: dict[type, Callable[[InMemoryStore, float, Any], Any]] = {
    ReleaseSlot: InMemoryStore._release_slot,
    ReportPermit: InMemoryStore._report,
    SetCooldown: InMemoryStore._set_cooldown,
    AdjustWindows: InMemoryStore._adjust_windows,
    AdjustSpend: InMemoryStore._adjust_spend,
}
