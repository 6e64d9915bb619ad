"""Selection strategies: in which order one request tries its candidate providers.

The router hands a strategy the candidates for one request (the enabled providers that
serve the requested model) and takes the fallback chain from
:meth:`SelectionStrategy.order`. The chain is lazy because the router usually needs only
its head: producing the first candidate is O(n), each later one O(log n).

Strategies keep no state. Rotation comes from :attr:`Candidate.last_selected`, which the
router stamps when it *picks* a candidate (not when the call completes), so requests that
start together spread over equal candidates instead of piling onto one.

Register your own with :func:`register_strategy`; ``RouterConfig.strategy`` is validated
against :func:`strategy_names`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Protocol, TypeVar, runtime_checkable

from ._errors import ConfigurationError

__all__ = [
    "Candidate",
    "CostPriorityRoundRobin",
    "RoundRobin",
    "SelectionStrategy",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]


class Candidate(Protocol):
    """What a strategy may ask about a provider that serves the requested model."""

    @property
    def name(self) -> str: ...

    @property
    def priority(self) -> float:
        """Lower is preferred."""
        ...

    @property
    def last_selected(self) -> int:
        """The router's selection sequence number when it last picked this one; 0 = never."""
        ...

    def cost_per_1k(self, model: str | None) -> float:
        """Mean of the input and output price per 1k tokens of ``model`` at this provider."""
        ...


C = TypeVar("C", bound=Candidate)


@runtime_checkable
class SelectionStrategy(Protocol):
    """Orders the candidates of one request, best first."""

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
        keys = [(c.last_selected, i) for i, c in enumerate(candidates)]
        heapq.heapify(keys)
        while keys:
            yield candidates[heapq.heappop(keys)[1]]

    def __repr__(self) -> str:
        return "RoundRobin()"


_TIE = 1e-9
_recency = itemgetter(1, 2)


def _lowest_first(keys: list[tuple[float, int, int]]) -> Iterator[int]:
    """Yield the indices of ``(score, last_selected, index)`` keys, lowest score first.

    A score within a relative ``_TIE`` of the best remaining one ties with it, and ties
    go least recently selected first. Relative closeness is not transitive, so it cannot
    be a heap key: the near-best entries wait in ``pool``, where a linear ``min`` picks
    the next one. One scan finds the first pool, so the first index costs O(n) even when
    every score ties.
    """
    base = min(k[0] for k in keys)
    limit = base + abs(base) * _TIE
    pool = [k for k in keys if k[0] <= limit]
    heap = [k for k in keys if k[0] > limit]
    heapq.heapify(heap)
    while pool:
        pick = min(pool, key=_recency)
        pool.remove(pick)
        yield pick[2]
        if heap:
            # Pool entries all score below the heap, so the best remaining is in the pool.
            base = min(k[0] for k in pool) if pool else heap[0][0]
            limit = base + abs(base) * _TIE
            while heap and heap[0][0] <= limit:
                pool.append(heapq.heappop(heap))


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

    __slots__ = ()

    name: str = "cost_priority_round_robin"

    def scores(self, candidates: Sequence[Candidate], model: str | None) -> list[float]:
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
        scores = self.scores(candidates, model)
        if not scores:
            return
        keys = [
            (s, c.last_selected, i) for i, (s, c) in enumerate(zip(scores, candidates, strict=True))
        ]
        for i in _lowest_first(keys):
            yield candidates[i]

    def __repr__(self) -> str:
        return "CostPriorityRoundRobin()"


_BUILTIN: dict[str, Callable[[], SelectionStrategy]] = {
    RoundRobin.name: RoundRobin,
    CostPriorityRoundRobin.name: CostPriorityRoundRobin,
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
        raise ConfigurationError(f"strategy: unknown strategy {name!r}; expected one of {known}")
    strategy = factory()
    if not isinstance(strategy, SelectionStrategy):
        raise TypeError(f"strategy factory for {name!r} returned {type(strategy).__name__}")
    return strategy
