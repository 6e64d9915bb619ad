"""Admission gates that weigh a request in LLM tokens: its context window, the provider's
token limits and its budget.

Each reads the request's estimated input tokens (counted once per request, corrected by
the provider's :class:`~._tokens.Calibration`) and its output reserve (the request's
``max_tokens``, else the model's ``output_reserve``), only for a provider and model that
have such a limit. A request that could never fit (larger than a context window, a
limit's capacity or a whole budget) is refused for good, with the reason, so another
provider serves it or the request fails fast; one that fits later is refused with the
exact wait.

Charges are settled from what the provider reports (``usage_metadata``) when the attempt
ends: unused output is refunded, an input shortfall charged, and Anthropic-style cache
reads are not charged to ``input_tokens_per_minute``. Without usage the charge stands,
except: a provider's 429 refunds all (it admitted nothing), another failure refunds
the output reserve (nothing was generated); a call timed out (the provider goes on),
cancelled or abandoned keeps all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ._classification import ErrorKind
from ._clock import Clock
from ._config import ProviderConfig
from ._config_limits import TokenLimitConfig
from ._gates import Gate, Refusal
from ._limiter import ConcurrencyLimiter
from ._ops import AdjustSpend, AdjustWindows, AdmitOp, SettleOp, Spend, TakeWindows
from ._storage import StateStore
from ._tokens import Calibration, Usage, usage_of
from ._waiting import SlotQueue

if TYPE_CHECKING:
    from ._lease import Lease

__all__ = ["WINDOW_SECONDS", "BudgetGate", "ContextWindowGate", "TokenGate"]

WINDOW_SECONDS = 60.0
"""Token limits are per minute."""

_TOTAL, _INPUT, _OUTPUT = 0, 1, 2
_FIELDS = ("tokens_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")


def _estimate(lease: Lease, calibration: Calibration) -> int:
    """The input tokens to charge."""
    ctx = lease.context
    return 0 if ctx is None else calibration.apply(ctx.estimated_tokens())


def _expected(lease: Lease, calibration: Calibration) -> int:
    """The input tokens the provider will likely count (for context windows)."""
    ctx = lease.context
    return 0 if ctx is None else calibration.expect(ctx.estimated_tokens())


def _asked(lease: Lease) -> int | None:
    """The output tokens the request asks for at most (its ``max_tokens``), if it says."""
    ctx = lease.context
    return None if ctx is None else ctx.requested_output()


def _output(lease: Lease, reserve: int) -> int:
    """The output tokens to reserve: what the request asks for, else ``reserve``."""
    asked = _asked(lease)
    return reserve if asked is None else asked


class ContextWindowGate(Gate):
    """Skip a model whose context window cannot take the request: an estimated input over
    its ``max_input_tokens``, a ``max_tokens`` over its ``max_output_tokens``, or a request
    as long (input and asked output) as one the provider refused before
    (``context_length_exceeded``)."""

    __slots__ = ("_windows", "calibration", "learned")

    def __init__(
        self, config: ProviderConfig, calibration: Calibration, learned: dict[str, int]
    ) -> None:
        self._windows = {
            m.name: (m.max_input_tokens, m.max_output_tokens)
            for m in config.models
            if m.max_input_tokens is not None or m.max_output_tokens is not None
        }
        self.calibration = calibration
        self.learned = learned
        """model -> the shortest request (estimated input plus asked output) the provider
        refused as too long."""

    @property
    def active(self) -> bool:
        return bool(self._windows)

    def plan(self, lease: Lease) -> Refusal | None:
        model = lease.model
        window = self._windows.get(model)
        refused = self.learned.get(model) if self.learned else None
        if window is None and refused is None:
            return None
        max_in, max_out = window or (None, None)
        if max_out is not None:
            asked = _asked(lease)
            if asked is not None and asked > max_out:
                return _never(
                    f"context window: max_tokens {asked:,} > max_output_tokens {max_out:,}"
                )
        if max_in is None and refused is None:
            return None
        tokens = _expected(lease, self.calibration)
        if max_in is not None and tokens > max_in:
            return _never(f"context window: ~{tokens:,} input tokens > max_input_tokens {max_in:,}")
        if refused is not None and tokens + (_asked(lease) or 0) >= refused:
            return _never(
                f"context window: it refused ~{refused:,} tokens before (context_length_exceeded)"
            )
        return None

    def release(self, lease: Lease) -> None:
        verdict = lease.verdict
        if verdict is not None and verdict.kind is ErrorKind.CONTEXT_LENGTH:
            tokens = _expected(lease, self.calibration) + (_asked(lease) or 0)
            if tokens:
                known = self.learned.get(lease.model)
                self.learned[lease.model] = tokens if known is None else min(known, tokens)


def _never(reason: str) -> Refusal:
    return Refusal(reason, math.inf, limited=False)


class _Limit(NamedTuple):
    key: str
    limit: int
    kind: int
    label: str


class TokenCharge(NamedTuple):
    """What a :class:`TokenGate` charged one attempt."""

    slot: int
    limits: tuple[_Limit, ...]
    charges: list[tuple[str, int, int]]
    """``(key, limit, cost)`` per limit, as the store took them."""
    output: int
    """The output tokens reserved."""


class TokenGate(Gate):
    """The provider's token limits (and its models' own), charged per attempt at once:
    all or none, in one store operation. See the module docstring for the settling."""

    __slots__ = ("_clock", "_models", "_slots", "_store", "calibration", "provider_limits", "queue")

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        store: StateStore,
        clock: Clock,
        calibration: Calibration,
        queue: SlotQueue,
        slots: ConcurrencyLimiter,
    ) -> None:
        self._store, self._clock, self.calibration = store, clock, calibration
        self.queue, self._slots = queue, slots
        self.provider_limits = _limits(store, name, config.rate_limit, "")
        self._models: dict[str, tuple[tuple[_Limit, ...], int]] = {}
        for m in config.models:
            own = _limits(store, f"{name}:{m.name}", m.token_limits, f" of {m.name}")
            if self.provider_limits or own:
                self._models[m.name] = (self.provider_limits + own, m.output_reserve)

    @property
    def active(self) -> bool:
        return bool(self._models)

    def plan(self, lease: Lease) -> AdmitOp | Refusal | None:
        entry = self._models.get(lease.model)
        if entry is None or lease.context is None:
            return None
        limits, reserve = entry
        ctx = lease.context
        tokens_in = self.calibration.apply(ctx.estimated_tokens())
        asked = ctx.requested_output()
        tokens_out = reserve if asked is None else asked
        both = tokens_in + tokens_out
        charges = []
        for lim in limits:
            kind = lim.kind
            cost = both if kind == _TOTAL else tokens_in if kind == _INPUT else tokens_out
            if cost > lim.limit:
                return _never(f"request of ~{cost:,} tokens > {lim.label} {lim.limit:,}")
            charges.append((lim.key, lim.limit, cost))
        lease.charge = TokenCharge(-1, limits, charges, tokens_out)
        return TakeWindows(WINDOW_SECONDS, charges)

    def took(self, lease: Lease, answer: tuple[float, int]) -> Refusal | None:
        wait, slot = answer
        charge = lease.charge
        assert charge is not None  # set by plan()
        if wait:
            lease.charge = None
            # A call that settles may refund room sooner: then wait on the slot queue too,
            # which every settle notifies (after its refund: gates settle in order).
            queue = self.queue if self._slots.in_flight else None
            return Refusal(f"token limit for {wait:.3f}s", wait, queue=queue)
        lease.charge = charge._replace(slot=slot)
        return None

    def release(self, lease: Lease) -> SettleOp | None:
        charge: TokenCharge | None = lease.charge
        if charge is None:
            return None
        usage = usage_of(lease.message) if lease.outcome == "succeeded" else None
        pairs = zip(charge.limits, charge.charges, strict=True)
        deltas: list[tuple[str, float]]
        if usage is not None:
            deltas = [(key, _used(lim.kind, usage) - cost) for lim, (key, _, cost) in pairs]
        else:
            refund = _refund(lease)
            if refund is None:
                return None
            deltas = [
                (key, _given_back(lim, cost, charge.output, refund))
                for lim, (key, _, cost) in pairs
            ]
        deltas = [(k, d) for k, d in deltas if d]
        return AdjustWindows(WINDOW_SECONDS, charge.slot, deltas) if deltas else None

    def headroom(self) -> float | None:
        """Tokens the provider's own limits would admit now (``None``: it has none)."""
        if not self.provider_limits:
            return None
        now = self._clock.now()
        return min(
            lim.limit - self._store.window_used(lim.key, now, WINDOW_SECONDS)
            for lim in self.provider_limits
        )

    def cap(self, remaining: tuple[float | None, ...], resets: tuple[float | None, ...]) -> None:
        """The provider says how many tokens it has left, by kind (total, input, output),
        and in how many seconds each resets: the windows never assume more room."""
        now = self._clock.now()
        for lim in self.provider_limits:
            left = remaining[lim.kind]
            if left is not None:
                reset = resets[lim.kind]
                self._store.cap_window(
                    lim.key,
                    now,
                    WINDOW_SECONDS,
                    lim.limit,
                    left,
                    WINDOW_SECONDS if reset is None else reset,
                )


def _limits(
    store: StateStore, prefix: str, config: TokenLimitConfig | None, of: str
) -> tuple[_Limit, ...]:
    if config is None:
        return ()
    values = (
        config.tokens_per_minute,
        config.input_tokens_per_minute,
        config.output_tokens_per_minute,
    )
    return tuple(
        _Limit(store.key(f"{prefix}:{field}"), value, kind, field + of)
        for kind, (field, value) in enumerate(zip(_FIELDS, values, strict=True))
        if value is not None
    )


def _used(kind: int, usage: Usage) -> int:
    if kind == _TOTAL:
        return usage.input + usage.output
    if kind == _INPUT:
        return max(0, usage.input - usage.cache_read)
    return usage.output


def _refund(lease: Lease) -> str | None:
    """What an attempt that ended without usage gives back: ``"all"`` after a 429 (the
    provider admitted nothing), ``"output"`` after another failure (nothing generated),
    ``None`` (nothing) when the call may still be running or may have run to its end:
    a timeout (the provider goes on), a cancellation, an attempt abandoned otherwise."""
    verdict = lease.verdict
    if lease.outcome != "failed" or verdict is None or verdict.kind is ErrorKind.TIMEOUT:
        return None
    return "all" if verdict.kind is ErrorKind.RATE_LIMITED else "output"


def _given_back(limit: _Limit, cost: int, output: int, refund: str) -> float:
    if refund == "all" or limit.kind == _OUTPUT:
        return -cost
    return 0 if limit.kind == _INPUT else -output


class BudgetGate(Gate):
    """The provider's budget: each attempt charged its estimated cost on admission and
    its real cost when it ends; skipped, with the time until the period rolls over,
    once the budget cannot hold the request."""

    __slots__ = (
        "_clock",
        "_free",
        "_key",
        "_price",
        "_reserves",
        "_store",
        "calibration",
        "currency",
        "limit",
        "period",
    )

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        store: StateStore,
        clock: Clock,
        calibration: Calibration,
        currency: str,
        price: Callable[[str, int, int], tuple[float, float]],
    ) -> None:
        budget = config.budget
        if budget is None:
            raise ValueError(f"provider {name!r} has no budget")
        self._key = store.key(f"{name}:budget")
        self._store, self._clock, self.calibration = store, clock, calibration
        self.limit = budget.max_cost
        self.period = budget.period_seconds
        self.currency = currency
        self._price = price  # the provider's: one price table for metrics, answers, budgets
        self._reserves = {m.name: m.output_reserve for m in config.models}
        # Free models are charged nothing, and need no token estimate.
        self._free = frozenset(m.name for m in config.models if not m.average_cost_per_1k)

    def plan(self, lease: Lease) -> AdmitOp:
        model = lease.model
        cost_in = cost_out = 0.0
        if model not in self._free:
            tokens_out = _output(lease, self._reserves[model])
            cost_in, cost_out = self._price(model, _estimate(lease, self.calibration), tokens_out)
        lease.spend = (0.0, cost_in, cost_out)
        return Spend(self._key, self.period, self.limit, cost_in + cost_out)

    def took(self, lease: Lease, answer: tuple[float, float]) -> Refusal | None:
        wait, start = answer
        spend = lease.spend
        assert spend is not None  # set by plan()
        if not wait:
            lease.spend = (start, spend[1], spend[2])
            return None
        lease.spend = None
        if wait == math.inf:
            cost = spend[1] + spend[2]
            return _never(f"budget: ~{cost:.4g} {self.currency} > max_cost {self.limit:g}")
        return Refusal(f"budget spent until its period ends in {wait:.0f}s", wait, limited=False)

    def release(self, lease: Lease) -> SettleOp | None:
        spend = lease.spend
        if spend is None:
            return None
        start, cost_in, cost_out = spend
        usage = usage_of(lease.message) if lease.outcome == "succeeded" else None
        delta = 0.0
        if usage is not None:
            delta = sum(self._price(lease.model, usage.input, usage.output)) - cost_in - cost_out
        else:
            refund = _refund(lease)
            if refund is not None:
                delta = -(cost_in + cost_out) if refund == "all" else -cost_out
        return AdjustSpend(self._key, self.period, start, delta) if delta else None

    def spent(self) -> float:
        """Spent in the current period."""
        return self._store.spent(self._key, self._clock.now(), self.period)
