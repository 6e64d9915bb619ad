"""Selection strategies: in which order one request tries its candidate providers.

The router hands a strategy the candidates for one request (the enabled providers that
serve the requested model) and takes the fallback chain from
:meth:`SelectionStrategy.order`. The chain is lazy because the router usually needs only
its head: every built-in finds its first candidate in O(n) and each later one in
O(log n) (the cost strategy ranks a candidate list once, then reads only the near-best).

What a strategy may read about a candidate is the :class:`~._candidate.Candidate`
protocol, through a :class:`~._candidate.CandidateReader`. Rotation comes from
``last_selected``, which the router stamps when it *picks* a candidate (not when the
call completes), so requests that start together spread over equal candidates instead of
piling onto one. ``weighted`` keeps its per-model counters, ``lowest_latency`` its
latency estimates; no strategy keeps per-request state.

Built-ins: ``round_robin``, ``cost_priority_round_robin`` (here) and ``weighted``,
``least_busy``, ``lowest_latency``, ``usage_based`` (:mod:`._live_strategies`). Register
your own with :func:`register_strategy`; ``RouterConfig.strategy`` is validated against
:func:`strategy_names`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from cachetools import LRUCache

from ._candidate import C, Candidate, CandidateBase, CandidateReader, ranked
from ._errors import ConfigurationError
from ._live_strategies import LeastBusy, LowestLatency, UsageBased, Weighted

__all__ = [
    "Candidate",
    "CandidateBase",
    "CandidateReader",
    "CostPriorityRoundRobin",
    "LeastBusy",
    "LowestLatency",
    "RoundRobin",
    "SelectionStrategy",
    "UsageBased",
    "Weighted",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]


@runtime_checkable
class SelectionStrategy(Protocol):
    """Orders the candidates of one request, best first.

    ``candidates`` are the router's provider objects: read their
    :class:`~._candidate.CandidateBase` attributes directly and the rest of
    :class:`~._candidate.Candidate` through a :class:`~._candidate.CandidateReader` the
    strategy keeps, and yield the objects themselves. ``order`` is called once per
    request (again after each wait for capacity), from any thread.
    """

    name: str

    def order(self, candidates: Sequence[C], model: str | None) -> Iterator[C]:
        """Yield ``candidates`` best first, lazily, without mutating ``candidates``."""
        ...


class RoundRobin:
    """Least recently selected first; never-selected candidates in the order given.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class P:
        ...     name: str
        ...     last_selected: int = 0
        ...     priority: float = 1
        ...     def cost_per_1k(self, model: str | None) -> float:
        ...         return 0.0
        >>> providers = [P("a", last_selected=2), P("b", last_selected=1), P("c")]
        >>> [p.name for p in RoundRobin().order(providers, None)]
        ['c', 'b', 'a']
    """

    __slots__ = ()

    name: str = "round_robin"

    def order(self, candidates: Sequence[C], model: str | None) -> Iterator[C]:
        # The position breaks ties, which keeps equal candidates in their given order.
        yield from ranked(candidates, [(c.last_selected, i) for i, c in enumerate(candidates)])

    def __repr__(self) -> str:
        return "RoundRobin()"


_TIE = 1e-9
_Rank = tuple[float, int]
_Ranking = tuple[list[_Rank], list[bool]]
"""Ranks (score, position) best first, and whether each ties with none after it."""


class CostPriorityRoundRobin:
    """Lowest ``(priority + 1) * (cost + floor)`` first; ties rotate round-robin.

    ``cost`` is the candidate's mean price per 1k tokens for the requested model and
    ``floor`` the mean of those costs over this request's candidates (``1.0`` when all
    are free, which makes the order pure priority). So at equal priority the cheaper
    model wins, at equal cost the lower priority number wins, and being free does not by
    itself beat a much better priority: the floor keeps a free model's score above zero.
    Scores within a relative 1e-9 of each other tie and go least recently selected first.

    Worked example: A has priority 1 and costs 0.03, B priority 2 and 0.002, C priority 3
    and is free. The floor is (0.03 + 0.002 + 0) / 3 = 0.010667, so the scores are
    A = 2 * 0.040667 = 0.0813, B = 3 * 0.012667 = 0.0380 and C = 4 * 0.010667 = 0.0427,
    and the order is B, C, A.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class P:
        ...     name: str
        ...     priority: float
        ...     cost: float
        ...     last_selected: int = 0
        ...     def cost_per_1k(self, model: str | None) -> float:
        ...         return self.cost
        >>> providers = [P("A", 1, 0.03), P("B", 2, 0.002), P("C", 3, 0.0)]
        >>> [p.name for p in CostPriorityRoundRobin().order(providers, "m")]
        ['B', 'C', 'A']
    """

    __slots__ = ("_last", "_lock", "_ranked")

    name: str = "cost_priority_round_robin"

    def __init__(self) -> None:
        # Scores depend only on the candidates' static priority and price, so a candidate
        # list (the router caches one per model) is ranked once, not on every request.
        self._ranked: LRUCache[tuple[int, str | None], tuple[Sequence[Any], _Ranking]] = LRUCache(
            maxsize=256
        )
        self._lock = threading.Lock()
        # The last ranking served, as one tuple (replaced whole, so a racing reader sees an
        # old or a new one, never a mix): most requests ask for the same model as the last.
        self._last: tuple[Sequence[Any] | None, str | None, _Ranking] = (None, None, ([], []))

    def scores(self, candidates: Sequence[CandidateBase], model: str | None) -> list[float]:
        """Each candidate's score for ``model``, in input order: lower is better."""
        costs = [c.cost_per_1k(model) for c in candidates]
        if not costs:
            return []
        mean = sum(costs) / len(costs)
        floor = mean if mean > 0 else 1.0
        return [
            (c.priority + 1) * (cost + floor) for c, cost in zip(candidates, costs, strict=True)
        ]

    def order(self, candidates: Sequence[C], model: str | None) -> Iterator[C]:
        last_candidates, last_model, ranking = self._last
        if last_candidates is not candidates or last_model != model:
            ranking = self._ranking(candidates, model)
        ranked, alone = ranking
        # The ranking is static; only recency is read per request, and only for the
        # near-best entries in ``pool``. A score within a relative _TIE of the best
        # remaining one ties with it, and ties go least recently selected first. Relative
        # closeness is not transitive, so the pool is re-derived from the best remaining
        # score after each pick rather than fixed in tiers.
        pool: list[_Rank] = []
        j, n = 0, len(ranked)
        while pool or j < n:
            if not pool and alone[j]:  # nothing ties with it: no pool to build
                j += 1
                yield candidates[ranked[j - 1][1]]
                continue
            base = min(r[0] for r in pool) if pool else ranked[j][0]
            limit = base + abs(base) * _TIE
            while j < n and ranked[j][0] <= limit:
                pool.append(ranked[j])
                j += 1
            pick = pool[0]
            if len(pool) > 1:
                pick = min(pool, key=lambda r: (candidates[r[1]].last_selected, r[1]))
            pool.remove(pick)
            yield candidates[pick[1]]

    def _ranking(self, candidates: Sequence[CandidateBase], model: str | None) -> _Ranking:
        key = (id(candidates), model)
        with self._lock:
            hit = self._ranked.get(key)
        if hit is not None and hit[0] is candidates:
            self._last = (candidates, model, hit[1])
            return hit[1]
        ranked = sorted((s, i) for i, s in enumerate(self.scores(candidates, model)))
        # Whether each entry, once first among those left, ties with none after it.
        alone = [
            k + 1 == len(ranked) or ranked[k + 1][0] > score + abs(score) * _TIE
            for k, (score, _) in enumerate(ranked)
        ]
        ranking = (ranked, alone)
        with self._lock:
            # Holding ``candidates`` keeps its id from being reused while cached.
            self._ranked[key] = (candidates, ranking)
        self._last = (candidates, model, ranking)
        return ranking

    def __repr__(self) -> str:
        return "CostPriorityRoundRobin()"


_BUILTIN: dict[str, Callable[[], SelectionStrategy]] = {
    RoundRobin.name: RoundRobin,
    CostPriorityRoundRobin.name: CostPriorityRoundRobin,
    Weighted.name: Weighted,
    LeastBusy.name: LeastBusy,
    LowestLatency.name: LowestLatency,
    UsageBased.name: UsageBased,
}
_REGISTRY: dict[str, Callable[[], SelectionStrategy]] = dict(_BUILTIN)


def register_strategy(name: str, factory: Callable[[], SelectionStrategy]) -> None:
    """Make ``factory`` available as strategy ``name``; a later call for ``name`` replaces it.

    Raises:
        ValueError: ``name`` is empty or names a built-in strategy.
        TypeError: ``factory`` is not callable.
    """
    if not name:
        raise ValueError("a strategy name must not be empty")
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in strategy and cannot be replaced")
    if not callable(factory):
        raise TypeError(f"strategy factory for {name!r} must be callable")
    _REGISTRY[name] = factory


def strategy_names() -> tuple[str, ...]:
    """Every registered strategy name, built-ins first."""
    return tuple(_REGISTRY)


def get_strategy(name: str) -> SelectionStrategy:
    """A new instance of strategy ``name``.

    Raises:
        ConfigurationError: no strategy is registered under ``name``.
        TypeError: its factory returned something that is not a strategy.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        known = ", ".join(_REGISTRY)
        raise ConfigurationError(f"strategy: unknown strategy; expected one of {known}")
    strategy = factory()
    if not isinstance(strategy, SelectionStrategy):
        raise TypeError(f"strategy factory for {name!r} returned {type(strategy).__name__}")
    return strategy
