from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_middleware import _strategies
from router_middleware._config import RouterConfig
from router_middleware._errors import ConfigurationError
from router_middleware._strategies import (
    Candidate,
    CostPriorityRoundRobin,
    RoundRobin,
    SelectionStrategy,
    get_strategy,
    register_strategy,
    strategy_names,
)

C = TypeVar("C", bound=Candidate)


@dataclass(eq=False)
class P:
    name: str
    priority: float = 1.0
    cost: float = 0.0
    last_selected: int = 0
    cost_calls: int = field(default=0, repr=False)
    models: list[str | None] = field(default_factory=list, repr=False)

    def cost_per_1k(self, model: str | None) -> float:
        self.cost_calls += 1
        self.models.append(model)
        return self.cost


class CountingInt(int):
    """An int that counts ordering comparisons, to tell a heap from a sort."""

    comparisons = 0

    def __lt__(self, other: int) -> bool:
        CountingInt.comparisons += 1
        return int(self) < int(other)

    def __gt__(self, other: int) -> bool:
        CountingInt.comparisons += 1
        return int(self) > int(other)

    def __le__(self, other: int) -> bool:
        CountingInt.comparisons += 1
        return int(self) <= int(other)

    def __ge__(self, other: int) -> bool:
        CountingInt.comparisons += 1
        return int(self) >= int(other)


class Router:
    """Stands in for the router: stamps the pick at selection time."""

    def __init__(self, strategy: SelectionStrategy) -> None:
        self.strategy = strategy
        self.seq = 0

    def select(self, candidates: Sequence[P], model: str | None = "m") -> P:
        first = next(self.strategy.order(candidates, model))
        self.seq += 1
        first.last_selected = self.seq
        return first


def names(it: Iterator[P]) -> list[str]:
    return [p.name for p in it]


BOTH = [RoundRobin(), CostPriorityRoundRobin()]


# -- round robin -------------------------------------------------------------------------


def test_round_robin_least_recently_selected_first() -> None:
    ps = [P("a", last_selected=5), P("b", last_selected=2), P("c", last_selected=9)]
    assert names(RoundRobin().order(ps, None)) == ["b", "a", "c"]


def test_round_robin_ignores_priority_and_cost() -> None:
    ps = [P("a", priority=9, cost=1.0), P("b", priority=0, cost=0.0)]
    assert names(RoundRobin().order(ps, "m")) == ["a", "b"]
    assert ps[0].cost_calls == ps[1].cost_calls == 0


def test_round_robin_ties_keep_input_order() -> None:
    ps = [P(n, last_selected=3) for n in "dcbae"]
    ps.insert(2, P("x", last_selected=1))
    assert names(RoundRobin().order(ps, None)) == ["x", "d", "c", "b", "a", "e"]


def test_round_robin_rotates_when_router_marks_selection() -> None:
    ps = [P("a"), P("b"), P("c")]
    router = Router(RoundRobin())
    assert [router.select(ps).name for _ in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_fallback_chain_is_fixed_when_iteration_starts() -> None:
    ps = [P("a", last_selected=1), P("b", last_selected=2), P("c", last_selected=3)]
    it = RoundRobin().order(ps, None)
    first = next(it)
    first.last_selected = 99  # the router marks its pick mid-iteration
    assert [first.name, *names(it)] == ["a", "b", "c"]


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.name)
def test_equal_candidates_spread_evenly(strategy: SelectionStrategy) -> None:
    ps = [P("a", cost=0.01), P("b", cost=0.01), P("c", cost=0.01)]
    router = Router(strategy)
    picks = Counter(router.select(ps).name for _ in range(300))
    assert picks == {"a": 100, "b": 100, "c": 100}


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.name)
def test_order_never_mutates_input(strategy: SelectionStrategy) -> None:
    ps = [P("a", 2, 0.03, 4), P("b", 1, 0.0, 1), P("c", 1, 0.01, 2)]
    before = list(ps)
    assert sorted(names(strategy.order(ps, "m"))) == ["a", "b", "c"]
    assert ps == before
    assert [(p.priority, p.cost, p.last_selected) for p in ps] == [
        (2, 0.03, 4),
        (1, 0.0, 1),
        (1, 0.01, 2),
    ]
    assert sorted(names(strategy.order(tuple(ps), "m"))) == ["a", "b", "c"]


@pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.name)
def test_no_candidates_yields_nothing(strategy: SelectionStrategy) -> None:
    assert list(strategy.order([], "m")) == []


# -- laziness: the first pick is O(n), never a sort --------------------------------------


def _shuffled_counting(n: int, priority: float = 1.0, cost: float = 0.0) -> list[P]:
    stamps = list(range(1, n + 1))
    random.Random(7).shuffle(stamps)
    return [P(f"p{i}", priority, cost, CountingInt(s)) for i, s in enumerate(stamps)]


def test_round_robin_first_pick_is_linear() -> None:
    n = 1024
    ps = _shuffled_counting(n)
    CountingInt.comparisons = 0
    first = next(RoundRobin().order(ps, None))
    assert first.last_selected == 1
    # heapify needs < 2n comparisons and one pop ~2 log n; a sort needs ~n log2 n (~9,000).
    assert CountingInt.comparisons < 3 * n


def test_cost_priority_first_pick_is_linear_even_when_all_tie() -> None:
    n = 1024
    ps = _shuffled_counting(n, priority=1, cost=0.01)
    CountingInt.comparisons = 0
    first = next(CostPriorityRoundRobin().order(ps, "m"))
    assert first.last_selected == 1
    assert CountingInt.comparisons < 3 * n
    assert sum(p.cost_calls for p in ps) == n
    assert all(p.cost_calls == 1 for p in ps)


def test_cost_priority_prices_each_candidate_once_for_the_whole_chain() -> None:
    ps = [P(f"p{i}", priority=i % 3, cost=(i % 5) / 100) for i in range(50)]
    it = CostPriorityRoundRobin().order(ps, "gpt")
    assert all(p.cost_calls == 0 for p in ps)  # nothing happens before the first next()
    next(it)
    assert all(p.cost_calls == 1 for p in ps)
    assert len(list(it)) == 49
    assert all(p.cost_calls == 1 for p in ps)
    assert {m for p in ps for m in p.models} == {"gpt"}


# -- cost priority -----------------------------------------------------------------------


def test_cost_priority_worked_example() -> None:
    a, b, c = P("A", 1, 0.03), P("B", 2, 0.002), P("C", 3, 0.0)
    strategy = CostPriorityRoundRobin()
    mean = (0.03 + 0.002 + 0.0) / 3
    assert mean == pytest.approx(0.010667, abs=1e-6)
    scores = strategy.scores([a, b, c], "m")
    assert scores == pytest.approx([2 * 0.040667, 3 * 0.012667, 4 * 0.010667], abs=1e-5)
    assert scores == pytest.approx([0.0813, 0.0380, 0.0427], abs=1e-4)
    assert names(strategy.order([a, b, c], "m")) == ["B", "C", "A"]


def test_cheaper_model_wins_at_equal_priority() -> None:
    ps = [P("dear", 1, 0.03), P("cheap", 1, 0.001), P("mid", 1, 0.01)]
    assert names(CostPriorityRoundRobin().order(ps, "m")) == ["cheap", "mid", "dear"]


def test_lower_priority_number_wins_at_equal_cost() -> None:
    ps = [P("p2", 2, 0.01), P("p0", 0, 0.01), P("p1", 1, 0.01)]
    assert names(CostPriorityRoundRobin().order(ps, "m")) == ["p0", "p1", "p2"]


def test_free_model_does_not_override_a_much_better_priority() -> None:
    # Seed formula (avgCost / priorityWeight) scores the free model 0: it always won.
    ps = [P("free", priority=5, cost=0.0), P("preferred", priority=0, cost=0.01)]
    assert names(CostPriorityRoundRobin().order(ps, "m")) == ["preferred", "free"]


def test_free_model_still_wins_at_equal_priority() -> None:
    ps = [P("paid", 1, 0.01), P("free", 1, 0.0)]
    assert names(CostPriorityRoundRobin().order(ps, "m")) == ["free", "paid"]


def test_all_free_is_pure_priority() -> None:
    ps = [P("c", 3), P("a", 0), P("b", 1.5)]
    strategy = CostPriorityRoundRobin()
    assert strategy.scores(ps, "m") == [4.0, 1.0, 2.5]
    assert names(strategy.order(ps, "m")) == ["a", "b", "c"]


def test_best_candidate_keeps_winning_without_ties() -> None:
    ps = [P("a", 1, 0.02), P("b", 1, 0.01)]
    router = Router(CostPriorityRoundRobin())
    assert [router.select(ps).name for _ in range(4)] == ["b"] * 4


def test_near_equal_scores_tie_and_rotate() -> None:
    # Equal within a relative 1e-9 but not bit-identical.
    ps = [P("a", 1, 0.01), P("b", 1, 0.01 * (1 + 1e-12)), P("c", 1, 0.02)]
    strategy = CostPriorityRoundRobin()
    s = strategy.scores(ps, "m")
    assert s[0] != s[1]
    router = Router(strategy)
    assert [router.select(ps).name for _ in range(4)] == ["a", "b", "a", "b"]
    ps[0].last_selected, ps[1].last_selected = 10, 3
    assert names(strategy.order(ps, "m")) == ["b", "a", "c"]


def test_scores_further_apart_than_tolerance_do_not_tie() -> None:
    ps = [P("a", 1, 0.01 * (1 + 1e-6)), P("b", 1, 0.01)]
    router = Router(CostPriorityRoundRobin())
    assert [router.select(ps).name for _ in range(3)] == ["b", "b", "b"]


def test_ties_in_the_tail_rotate_too() -> None:
    ps = [P("best", 0, 0.001), P("x", 2, 0.01, 7), P("y", 2, 0.01, 2), P("z", 2, 0.01, 5)]
    assert names(CostPriorityRoundRobin().order(ps, "m")) == ["best", "y", "z", "x"]


# -- properties --------------------------------------------------------------------------

_candidates = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 3, 0.5]),
        st.sampled_from([0.0, 0.001, 0.002, 0.01, 0.03, 0.01 * (1 + 1e-12)]),
        st.integers(0, 6),
    ),
    max_size=12,
)


def _build(specs: list[tuple[float, float, int]]) -> list[P]:
    return [P(f"p{i}", pr, cost, last) for i, (pr, cost, last) in enumerate(specs)]


@settings(max_examples=150, deadline=None)
@given(_candidates, st.sampled_from(BOTH))
def test_order_yields_a_permutation(
    specs: list[tuple[float, float, int]], strategy: SelectionStrategy
) -> None:
    ps = _build(specs)
    out = list(strategy.order(ps, "m"))
    assert len(out) == len(ps)
    assert {id(p) for p in out} == {id(p) for p in ps}


def _reference_cost_priority(ps: list[P], scores: list[float]) -> list[str]:
    """The documented rule, quadratically: best remaining score, ties LRU then position."""
    left = list(range(len(ps)))
    out = []
    while left:
        best = min(scores[i] for i in left)
        tied = [i for i in left if scores[i] <= best + abs(best) * 1e-9]
        pick = min(tied, key=lambda i: (ps[i].last_selected, i))
        left.remove(pick)
        out.append(ps[pick].name)
    return out


@settings(max_examples=150, deadline=None)
@given(_candidates)
def test_cost_priority_matches_reference_rule(specs: list[tuple[float, float, int]]) -> None:
    ps = _build(specs)
    strategy = CostPriorityRoundRobin()
    expected = _reference_cost_priority(ps, strategy.scores(ps, "m"))
    assert names(strategy.order(ps, "m")) == expected


@settings(max_examples=100, deadline=None)
@given(_candidates)
def test_round_robin_is_sorted_by_recency_then_position(
    specs: list[tuple[float, float, int]],
) -> None:
    ps = _build(specs)
    expected = [p.name for _, p in sorted(enumerate(ps), key=lambda t: (t[1].last_selected, t[0]))]
    assert names(RoundRobin().order(ps, None)) == expected


# -- registry ----------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_strategies, "_REGISTRY", dict(_strategies._REGISTRY))


class Reverse:
    name = "reverse"

    def order(self, candidates: Sequence[C], model: str | None) -> Iterator[C]:
        return reversed(candidates)


def test_builtin_names() -> None:
    assert strategy_names()[:2] == ("round_robin", "cost_priority_round_robin")
    assert isinstance(get_strategy("round_robin"), RoundRobin)
    assert isinstance(get_strategy("cost_priority_round_robin"), CostPriorityRoundRobin)


@pytest.mark.usefixtures("registry")
def test_custom_strategy_is_registered_and_usable() -> None:
    register_strategy("reverse", Reverse)
    assert "reverse" in strategy_names()
    strategy = get_strategy("reverse")
    assert isinstance(strategy, Reverse)
    assert names(strategy.order([P("a"), P("b"), P("c")], None)) == ["c", "b", "a"]
    assert RouterConfig(strategy="reverse").strategy == "reverse"


@pytest.mark.usefixtures("registry")
def test_custom_strategy_can_be_replaced() -> None:
    register_strategy("mine", Reverse)
    register_strategy("mine", RoundRobin)
    assert isinstance(get_strategy("mine"), RoundRobin)
    assert strategy_names().count("mine") == 1


@pytest.mark.usefixtures("registry")
@pytest.mark.parametrize("name", ["round_robin", "cost_priority_round_robin"])
def test_builtin_cannot_be_replaced(name: str) -> None:
    with pytest.raises(ValueError, match="built-in"):
        register_strategy(name, Reverse)
    assert not isinstance(get_strategy(name), Reverse)


@pytest.mark.usefixtures("registry")
def test_bad_registrations_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        register_strategy("", Reverse)
    with pytest.raises(TypeError, match="callable"):
        register_strategy("x", "not a factory")  # type: ignore[arg-type]
    register_strategy("broken", lambda: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="broken"):
        get_strategy("broken")


def test_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        get_strategy("fastest")
    message = str(info.value)
    assert "fastest" not in message  # a value, perhaps a secret pasted in the wrong place
    assert "round_robin" in message
    assert "cost_priority_round_robin" in message


def test_router_config_rejects_unregistered_strategy() -> None:
    with pytest.raises(ValueError, match="unknown strategy; expected one of"):
        RouterConfig(strategy="reverse")


def test_partial_consumption_yields_the_best_few() -> None:
    ps = [P(f"p{i}", last_selected=10 - i) for i in range(10)]
    assert names(islice(RoundRobin().order(ps, None), 3)) == ["p9", "p8", "p7"]
