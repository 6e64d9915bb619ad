from __future__ import annotations

import contextlib
import functools
import operator
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_middleware import FakeClock, ProviderMetrics, ResilientRouter, _strategies
from router_middleware._config import RouterConfig
from router_middleware._errors import ConfigurationError
from router_middleware._metrics import LatencyWindow
from router_middleware._strategies import (
    Candidate,
    CandidateBase,
    CandidateReader,
    CostPriorityRoundRobin,
    LeastBusy,
    LowestLatency,
    RoundRobin,
    SelectionStrategy,
    UsageBased,
    Weighted,
    get_strategy,
    register_strategy,
    strategy_names,
)
from router_middleware.testing import Hang, Reply, ScriptedChatModel

C = TypeVar("C", bound=CandidateBase)


@dataclass(eq=False)
class P:
    """A full :class:`Candidate` whose readings a test sets."""

    name: str
    priority: float = 1.0
    cost: float = 0.0
    last_selected: int = 0
    weight: float = 1.0
    in_flight: int = 0
    max_concurrent: int | None = None
    latency: float | None = None
    time_to_first_token: float | None = None
    token_headroom: float | None = None
    request_headroom: float | None = None
    models: tuple[str, ...] = ("m",)
    cost_calls: int = field(default=0, repr=False)
    asked: list[str | None] = field(default_factory=list, repr=False)

    def cost_per_1k(self, model: str | None) -> float:
        self.cost_calls += 1
        self.asked.append(model)
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


# Names, not instances: ``weighted`` and ``lowest_latency`` keep state between requests.
NAMES = list(strategy_names())


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


@pytest.mark.parametrize("name", NAMES)
def test_equal_candidates_spread_evenly(name: str) -> None:
    strategy = get_strategy(name)
    ps = [P("a", cost=0.01), P("b", cost=0.01), P("c", cost=0.01)]
    router = Router(strategy)
    picks = Counter(router.select(ps).name for _ in range(300))
    assert picks == {"a": 100, "b": 100, "c": 100}


@pytest.mark.parametrize("name", NAMES)
def test_order_never_mutates_input(name: str) -> None:
    strategy = get_strategy(name)
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


@pytest.mark.parametrize("name", NAMES)
def test_no_candidates_yields_nothing(name: str) -> None:
    strategy = get_strategy(name)
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


@pytest.mark.parametrize(("name", "bound"), [("least_busy", 3), ("usage_based", 3),
                                             ("lowest_latency", 5), ("weighted", 1)])  # fmt: skip
def test_live_strategies_first_pick_is_linear_when_all_tie(name: str, bound: int) -> None:
    n = 1024
    ps = _shuffled_counting(n)
    CountingInt.comparisons = 0
    first = next(get_strategy(name).order(ps, "m"))
    # lowest_latency also finds the latest pick and the least recent of the due ones.
    assert CountingInt.comparisons < bound * n
    if name != "weighted":  # weighted ignores recency: the first of equal weights leads
        assert first.last_selected == 1


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
    assert {m for p in ps for m in p.asked} == {"gpt"}


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
@given(_candidates, st.sampled_from(NAMES))
def test_order_yields_a_permutation(specs: list[tuple[float, float, int]], name: str) -> None:
    strategy = get_strategy(name)
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


BUILTIN = {
    "round_robin": RoundRobin,
    "cost_priority_round_robin": CostPriorityRoundRobin,
    "weighted": Weighted,
    "least_busy": LeastBusy,
    "lowest_latency": LowestLatency,
    "usage_based": UsageBased,
}


def test_builtin_names() -> None:
    assert strategy_names()[:6] == tuple(BUILTIN)
    for name, cls in BUILTIN.items():
        strategy = get_strategy(name)
        assert isinstance(strategy, cls)
        assert isinstance(strategy, SelectionStrategy)
        assert strategy.name == name
        assert get_strategy(name) is not strategy  # each router gets its own state


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
@pytest.mark.parametrize("name", list(BUILTIN))
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
    assert all(name in message for name in BUILTIN)


def test_router_config_rejects_unregistered_strategy() -> None:
    with pytest.raises(ValueError, match="unknown strategy; expected one of"):
        RouterConfig(strategy="reverse")


def test_partial_consumption_yields_the_best_few() -> None:
    ps = [P(f"p{i}", last_selected=10 - i) for i in range(10)]
    assert names(islice(RoundRobin().order(ps, None), 3)) == ["p9", "p8", "p7"]


# -- the Candidate protocol and its reader -----------------------------------------------


def _router(clock: FakeClock, strategy: str | SelectionStrategy, **providers: Any) -> Any:
    """A router over ``name=(model, config extras)``; every provider priority 1."""
    configs = [
        {"name": n, "models": [{"name": "m"}], **extra} for n, (_, extra) in providers.items()
    ]
    config: dict[str, Any] = {"providers": configs, "retry": {"attempts": 1}}
    kwargs: dict[str, Any] = {"clock": clock}
    if isinstance(strategy, str):
        config["strategy"] = strategy
    else:
        kwargs["strategy"] = strategy
    return ResilientRouter({n: m for n, (m, _) in providers.items()}, config, **kwargs)


def served(message: Any) -> str:
    return str(message.response_metadata["router"]["provider"])


CANDIDATE = {"name", "priority", "models", "last_selected", "cost_per_1k", "weight",
             "in_flight", "max_concurrent", "latency", "time_to_first_token",
             "token_headroom", "request_headroom"}  # fmt: skip


def test_candidate_protocol_is_exactly_what_strategies_may_read(clock: FakeClock) -> None:
    members = {n for n in dir(Candidate) if not n.startswith("_")}
    assert members == CANDIDATE
    base = {n for n in dir(CandidateBase) if not n.startswith("_")}
    assert base == {"name", "priority", "models", "last_selected", "cost_per_1k"}
    router = _router(clock, "round_robin", a=(ScriptedChatModel(clock=clock), {}))
    provider = router.providers["a"]
    assert all(hasattr(provider, n) for n in base)  # what the router hands strategies
    view = CandidateReader()(provider)
    assert all(hasattr(view, n) for n in members)
    assert all(hasattr(P("x"), n) for n in members)


def test_reader_gives_a_full_candidate_back_as_it_is() -> None:
    p = P("a")
    assert CandidateReader()(p) is p


def test_reader_reads_a_router_provider_as_a_candidate(clock: FakeClock) -> None:
    router = _router(
        clock,
        "round_robin",
        a=(
            ScriptedChatModel(clock=clock, latency=0.25),
            {
                "weight": 3,
                "rate_limit": {"requests_per_second": 2, "burst": 4, "max_concurrent": 5},
            },
        ),
        b=(ScriptedChatModel(clock=clock), {}),
    )
    read = CandidateReader()
    a, b = read(router.providers["a"]), read(router.providers["b"])
    assert read(router.providers["a"]) is a  # one view per provider, keeping its estimates
    assert (a.name, a.priority, tuple(a.models), a.weight) == ("a", 1.0, ("m",), 3.0)
    assert (a.in_flight, a.max_concurrent, a.request_headroom, a.token_headroom) == (0, 5, 4, None)
    assert (b.weight, b.max_concurrent, b.request_headroom) == (1.0, None, None)
    assert (a.latency, a.time_to_first_token, a.last_selected) == (None, None, 0)
    assert a.cost_per_1k("m") == 0.0
    assert served(router.invoke("hi")) == "a"
    # One request taken, half a request refilled in the 0.25 s the call took.
    assert (a.latency, a.request_headroom, a.last_selected) == (0.25, 3.5, 1)
    assert list(router.stream("hi"))  # round robin: b streams
    assert a.time_to_first_token is None
    assert b.time_to_first_token == 0.0
    assert repr(a) == "Candidate('a')"


def test_reader_keeps_each_provider_view_until_the_provider_is_replaced(clock: FakeClock) -> None:
    router = _router(clock, "round_robin", a=(ScriptedChatModel(clock=clock), {}))
    read = CandidateReader()
    first = read(router.providers["a"])
    router.reload({"providers": [{"name": "a", "models": [{"name": "m"}], "weight": 2}]})
    again = read(router.providers["a"])
    assert again is not first
    assert again.weight == 2.0


def test_reader_refuses_a_bad_staleness() -> None:
    with pytest.raises(ValueError, match="stale_after"):
        CandidateReader(stale_after=0)


def _metrics_reader() -> tuple[ProviderMetrics, Any]:
    """A provider's metrics and its candidate view, with ``stale_after`` 10 picks."""
    from router_middleware._candidate import _RecentLatency

    metrics = ProviderMetrics()
    latency = _RecentLatency()
    return metrics, lambda picked: latency.read(metrics, picked, 10)


def test_latency_is_an_ewma_of_the_successes_since_the_last_read() -> None:
    metrics, latency = _metrics_reader()
    assert latency(0) is None
    metrics.record_success(1.0)
    assert latency(1) == 1.0
    assert latency(1) == 1.0  # nothing new: nothing changes
    metrics.record_success(0.0)
    assert latency(2) == pytest.approx(0.7)
    metrics.record_success(0.0)
    metrics.record_success(0.0)  # two at once count as two samples
    assert latency(4) == pytest.approx(0.7 * 0.49)
    metrics.record_failure(5.0)  # failures are the breaker's business, not a latency
    assert latency(5) == pytest.approx(0.7 * 0.49)


def test_latency_not_refreshed_for_a_while_is_replaced_by_the_new_samples() -> None:
    metrics, latency = _metrics_reader()
    metrics.record_success(9.0)
    assert latency(3) == 9.0
    metrics.record_success(0.5)
    assert latency(13) == 0.5  # 10 picks since: judged on what it does now


def test_latency_survives_a_metrics_reset() -> None:
    metrics, latency = _metrics_reader()
    metrics.record_success(2.0)
    assert latency(1) == 2.0
    metrics.reset()
    assert latency(2) == 2.0
    metrics.record_success(1.0)
    assert latency(3) == pytest.approx(2.0 - 0.3)


def test_latency_starts_from_the_history_of_carried_metrics() -> None:
    metrics, latency = _metrics_reader()
    metrics.record_success(1.0)
    metrics.record_success(3.0)
    assert latency(7) == 2.0


class CountingMetrics(ProviderMetrics):
    """Counts how often the time-to-first-token window is copied (a sort follows)."""

    copies = 0

    @property
    def time_to_first_token(self) -> LatencyWindow:
        self.copies += 1
        return super().time_to_first_token


def test_time_to_first_token_is_the_median_refreshed_as_successes_arrive() -> None:
    from router_middleware._candidate import _SMALL_WINDOW, _TTFT_REFRESH, _RecentTTFT

    metrics, ttft = CountingMetrics(), _RecentTTFT()
    assert ttft.read(metrics) is None
    assert ttft.read(metrics) is None
    assert metrics.copies == 1  # nothing new: no second copy
    for seconds in (0.3, 0.1, 0.2):
        metrics.record_first_token(seconds)
        metrics.record_success(1.0)
        ttft.read(metrics)
    assert ttft.read(metrics) == 0.2
    assert metrics.copies == 4  # a small window is read again on every success
    for _ in range(_SMALL_WINDOW):
        metrics.record_first_token(0.05)
        metrics.record_success(1.0)
    assert ttft.read(metrics) == 0.05
    copies = metrics.copies
    for _ in range(_TTFT_REFRESH * 3):  # a large one every _TTFT_REFRESH successes
        metrics.record_first_token(0.05)
        metrics.record_success(1.0)
        assert ttft.read(metrics) == 0.05
    assert metrics.copies == copies + 3


# -- weighted ----------------------------------------------------------------------------


def test_weighted_is_nginx_smooth_weighted_round_robin() -> None:
    ps = [P("a", weight=5), P("b", weight=1), P("c", weight=1)]
    strategy = Weighted()
    picks = "".join(next(strategy.order(ps, "m")).name for _ in range(21))
    assert picks == "aabacaa" * 3


def test_weighted_interleaves_equal_weights_instead_of_running_them() -> None:
    ps = [P("a", weight=5), P("b", weight=5)]
    strategy = Weighted()
    assert "".join(next(strategy.order(ps, "m")).name for _ in range(10)) == "ab" * 5


def test_weighted_fallbacks_follow_the_current_values() -> None:
    ps = [P("a", weight=5), P("b", weight=1), P("c", weight=1)]
    strategy = Weighted()
    # 5 1 1: a leads and gives back 7; the rest by value, b 1 then c 1 (position breaks ties).
    assert names(strategy.order(ps, "m")) == ["a", "b", "c"]
    # 3 2 2: a leads again (-4); b 2, c 2.
    assert names(strategy.order(ps, "m")) == ["a", "b", "c"]
    # 1 3 3: b leads (-4); c 3 is owed more than a 1.
    assert names(strategy.order(ps, "m")) == ["b", "c", "a"]


def test_weighted_counts_a_request_once_however_far_its_chain_is_read() -> None:
    ps = [P("a", weight=2), P("b", weight=1)]
    strategy = Weighted()
    it = strategy.order(ps, "m")
    assert strategy._current.get("m") is None  # lazy: nothing before the first next()
    assert names(it) == ["a", "b"]
    assert "".join(next(strategy.order(ps, "m")).name for _ in range(5)) == "baaba"


def test_weighted_keeps_one_sequence_per_model() -> None:
    ps = [P("a", weight=2), P("b", weight=1)]
    strategy = Weighted()
    firsts = [next(strategy.order(ps, model)).name for model in ("x", "y", "x", "y", "x", "y")]
    assert firsts == ["a", "a", "b", "b", "a", "a"]


def test_weighted_with_fractional_weights_keeps_their_ratio() -> None:
    ps = [P("a", weight=0.3), P("b", weight=0.1)]
    strategy = Weighted()
    picks = Counter(next(strategy.order(ps, "m")).name for _ in range(4000))
    assert picks == {"a": 3000, "b": 1000}


def test_weighted_skips_a_candidate_that_left_and_forgets_many_gone() -> None:
    a, b, c = P("a", weight=1), P("b", weight=1), P("c", weight=1)
    strategy = Weighted()
    assert "".join(next(strategy.order([a, b, c], "m")).name for _ in range(3)) == "abc"
    assert "".join(next(strategy.order([a, c], "m")).name for _ in range(4)) == "acac"
    gone = [P(f"old{i}") for i in range(20)]
    next(strategy.order(gone, "m"))
    assert len(strategy._current["m"]) == 23
    next(strategy.order([a, b], "m"))
    assert set(strategy._current["m"]) == {"a", "b"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=6))
def test_weighted_is_fair_in_every_short_run(weights: list[int]) -> None:
    ps = [P(f"p{i}", weight=w) for i, w in enumerate(weights)]
    strategy = Weighted()
    total = sum(weights)
    counts = Counter[str]()
    for k in range(1, 2 * total + 1):
        counts[next(strategy.order(ps, "m")).name] += 1
        # Within two picks of its exact share after any number of picks (plain weighted
        # round robin, runs of ``weight`` picks each, strays up to the largest weight).
        for p in ps:
            assert abs(counts[p.name] - k * p.weight / total) < 2
    assert [counts[p.name] for p in ps] == [2 * w for w in weights]


def test_weighted_counts_are_exact_under_concurrent_picks() -> None:
    ps = [P("a", weight=5), P("b", weight=1), P("c", weight=1)]
    strategy = Weighted()
    start = threading.Barrier(8)

    def picks(_: int) -> Counter[str]:
        start.wait()  # all at once, to contend for the lock
        return Counter(next(strategy.order(ps, "m")).name for _ in range(700))

    with ThreadPoolExecutor(8) as pool:
        counts = sum(pool.map(picks, range(8)), Counter[str]())
    assert counts == {"a": 4000, "b": 800, "c": 800}


def test_weighted_router_serves_by_provider_weight(clock: FakeClock) -> None:
    router = _router(
        clock,
        "weighted",
        a=(ScriptedChatModel(clock=clock), {"weight": 2}),
        b=(ScriptedChatModel(clock=clock), {}),
    )
    assert [served(router.invoke("hi")) for _ in range(6)] == ["a", "b", "a"] * 2


# -- least busy --------------------------------------------------------------------------


def test_least_busy_ranks_by_share_of_the_cap_in_flight() -> None:
    ps = [
        P("a", in_flight=3, max_concurrent=4),  # 0.75
        P("b", in_flight=1, max_concurrent=2),  # 0.5
        P("c", in_flight=0, max_concurrent=1),  # 0
        P("full", in_flight=2, max_concurrent=2),  # 1: last
    ]
    assert names(LeastBusy().order(ps, "m")) == ["c", "b", "a", "full"]


def test_least_busy_counts_uncapped_as_capped_at_the_roomiest() -> None:
    ps = [P("capped", in_flight=3, max_concurrent=4), P("free", in_flight=2)]
    assert names(LeastBusy().order(ps, "m")) == ["free", "capped"]  # 2/4 before 3/4
    ps = [P("capped", in_flight=1, max_concurrent=4), P("free", in_flight=2)]
    assert names(LeastBusy().order(ps, "m")) == ["capped", "free"]


def test_least_busy_without_caps_is_fewest_in_flight() -> None:
    ps = [P("a", in_flight=7), P("b", in_flight=2), P("c", in_flight=5)]
    assert names(LeastBusy().order(ps, "m")) == ["b", "c", "a"]


def test_least_busy_ties_go_by_priority_then_round_robin() -> None:
    ps = [P("low", priority=2), P("x", last_selected=5), P("y", last_selected=3)]
    assert names(LeastBusy().order(ps, "m")) == ["y", "x", "low"]
    router = Router(LeastBusy())
    router.seq = 5
    assert [router.select(ps[1:]).name for _ in range(4)] == ["y", "x", "y", "x"]


def _held(router: Any, count: int, threads: list[threading.Thread]) -> None:
    """Start one more request that hangs, and wait until it is in flight somewhere."""

    def total() -> int:
        return sum(p.limiter.in_flight for p in router.providers.values())

    def call() -> None:
        with contextlib.suppress(Exception):
            router.invoke("hold")

    thread = threading.Thread(target=call)
    thread.start()
    threads.append(thread)
    deadline = time.monotonic() + 10
    while total() < count:
        assert time.monotonic() < deadline, "the held call never started"
        time.sleep(0.001)


def test_least_busy_follows_the_calls_really_in_flight(clock: FakeClock) -> None:
    a = ScriptedChatModel(clock=clock, default=Hang(30))
    b = ScriptedChatModel(clock=clock, default=Hang(30))
    router = _router(
        clock,
        "least_busy",
        a=(a, {"rate_limit": {"max_concurrent": 2}}),
        b=(b, {"rate_limit": {"max_concurrent": 4}}),
    )
    strategy, providers = router.pipeline.strategy, list(router.providers.values())
    threads: list[threading.Thread] = []
    try:
        # a 0/2 b 0/4 tie: priority ties, a never selected goes first; then the shares.
        expected = [(1, 0), (1, 1), (1, 2), (2, 2)]
        for n, (in_a, in_b) in enumerate(expected, start=1):
            _held(router, n, threads)
            assert (a.in_flight, b.in_flight) == (in_a, in_b)
        assert names(strategy.order(providers, "m")) == ["b", "a"]  # a full, b 2/4
    finally:
        a.release_hangs()
        b.release_hangs()
        for t in threads:
            t.join(10)


# -- lowest latency ----------------------------------------------------------------------


def test_lowest_latency_prefers_the_fastest() -> None:
    ps = [
        P("slow", latency=0.5, last_selected=3),
        P("fast", latency=0.1, last_selected=2),
        P("mid", latency=0.3, last_selected=1),
    ]
    assert names(LowestLatency().order(ps, "m")) == ["fast", "mid", "slow"]


def test_lowest_latency_tries_a_never_selected_provider_first() -> None:
    ps = [P("fast", latency=0.1, last_selected=4), P("new"), P("newer")]
    assert names(LowestLatency().order(ps, "m")) == ["new", "fast", "newer"]


def test_lowest_latency_ranks_one_that_measured_nothing_last() -> None:
    # Selected recently, no success recorded (it failed): after every measured one.
    ps = [P("failing", last_selected=9), P("slow", latency=2.0, last_selected=8)]
    assert names(LowestLatency().order(ps, "m")) == ["slow", "failing"]


def test_lowest_latency_explores_a_provider_not_selected_for_a_while() -> None:
    ps = [P("fast", latency=0.1, last_selected=2), P("slow", latency=1.0, last_selected=1)]
    router = Router(LowestLatency(explore_after=10))
    router.seq = 2
    picks = [router.select(ps).name for _ in range(40)]
    assert [i for i, name in enumerate(picks, start=3) if name == "slow"] == [12, 23, 34]


def test_lowest_latency_refuses_a_bad_exploration_period() -> None:
    with pytest.raises(ValueError, match="explore_after"):
        LowestLatency(explore_after=0)


def test_lowest_latency_uses_time_to_first_token_for_streams() -> None:
    quick_start = P("quick_start", latency=1.0, time_to_first_token=0.05, last_selected=2)
    quick_end = P("quick_end", latency=0.3, time_to_first_token=0.2, last_selected=1)
    ps = [quick_start, quick_end]
    strategy = LowestLatency()
    assert names(strategy.order(ps, "m", stream=True)) == ["quick_start", "quick_end"]
    assert names(strategy.order(ps, "m", stream=False)) == ["quick_end", "quick_start"]
    # Unsaid: every measured candidate has streamed, so the router streams.
    assert names(strategy.order(ps, "m")) == ["quick_start", "quick_end"]
    # One has only answered plain calls: compare what all of them have, the latency.
    quick_end.time_to_first_token = None
    assert names(strategy.order(ps, "m")) == ["quick_end", "quick_start"]


def test_lowest_latency_router_moves_to_a_provider_that_recovered(clock: FakeClock) -> None:
    steady = ScriptedChatModel(clock=clock, latency=0.1)
    recovering = ScriptedChatModel(clock=clock, latency=0.01, script=[Reply(latency=2.0)])
    router = _router(
        clock, LowestLatency(explore_after=5), steady=(steady, {}), recovering=(recovering, {})
    )
    picks = [served(router.invoke("hi")) for _ in range(12)]
    # Each new one is tried once; recovering was slow, so steady serves until recovering
    # is 5 picks behind, is tried again, is fast now, and keeps the traffic.
    assert picks == ["steady", "recovering", *["steady"] * 5, *["recovering"] * 5]


def test_lowest_latency_router_ranks_streams_by_time_to_first_token(clock: FakeClock) -> None:
    # quick_start answers its first chunk soonest but streams slowly; quick_end the reverse.
    quick_start = ScriptedChatModel(clock=clock, latency=0.05, chunk_latency=0.5, text="a b c")
    quick_end = ScriptedChatModel(clock=clock, latency=0.2, text="a b c")
    router = _router(
        clock, "lowest_latency", quick_start=(quick_start, {}), quick_end=(quick_end, {})
    )

    def streamed() -> str:
        chunks = list(router.stream("hi"))
        return served(functools.reduce(operator.add, chunks))

    assert [streamed() for _ in range(4)] == [
        "quick_start",
        "quick_end",
        "quick_start",
        "quick_start",
    ]
    snap = router.metrics()["providers"]
    assert snap["quick_start"]["latency_p50"] > snap["quick_end"]["latency_p50"]


# -- usage based -------------------------------------------------------------------------


def test_usage_based_most_request_headroom_first_without_token_limits() -> None:
    ps = [P("a", request_headroom=3), P("b", request_headroom=5), P("unlimited")]
    assert names(UsageBased().order(ps, "m")) == ["unlimited", "b", "a"]


def test_usage_based_reads_token_headroom_when_there_is_some() -> None:
    ps = [
        P("a", request_headroom=100, token_headroom=1_000),
        P("b", request_headroom=1, token_headroom=50_000),
        P("no_token_limit", request_headroom=0),
    ]
    assert names(UsageBased().order(ps, "m")) == ["no_token_limit", "b", "a"]


def test_usage_based_ties_go_by_priority_then_round_robin() -> None:
    ps = [P("x", priority=2, request_headroom=2), P("y", request_headroom=2, last_selected=4),
          P("z", request_headroom=2, last_selected=1)]  # fmt: skip
    assert names(UsageBased().order(ps, "m")) == ["z", "y", "x"]


def test_usage_based_router_drains_the_roomiest_bucket_first(clock: FakeClock) -> None:
    router = _router(
        clock,
        "usage_based",
        big=(
            ScriptedChatModel(clock=clock),
            {"rate_limit": {"requests_per_second": 1, "burst": 4}},
        ),
        small=(
            ScriptedChatModel(clock=clock),
            {"rate_limit": {"requests_per_second": 1, "burst": 2}},
        ),
    )
    # 4 vs 2, 3 vs 2, then 2 vs 2 ties rotate (small never selected), and so on.
    picks = [served(router.invoke("hi")) for _ in range(6)]
    assert picks == ["big", "big", "small", "big", "small", "big"]


# -- config and environment --------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_builtin_is_a_config_value(name: str, clock: FakeClock) -> None:
    assert RouterConfig(strategy=name).strategy == name
    router = _router(clock, name, a=(ScriptedChatModel(clock=clock), {}))
    assert isinstance(router.pipeline.strategy, BUILTIN[name])
    assert served(router.invoke("hi")) == "a"


def test_weight_defaults_to_one_and_is_bounded() -> None:
    from router_middleware import ProviderConfig

    assert ProviderConfig(name="a", models=[{"name": "m"}]).weight == 1.0
    assert ProviderConfig(name="a", models=[{"name": "m"}], weight=0.5).weight == 0.5
    for bad, why in ((0, "greater than 0"), (-1, "greater than 0"), (10**7, "less than or equal"),
                     (True, "not a boolean"), (float("nan"), "less than or equal")):  # fmt: skip
        with pytest.raises(ConfigurationError, match=why):
            RouterConfig.coerce({"providers": [{"name": "a", "models": [{"name": "m"}],
                                                "weight": bad}]})  # fmt: skip


def test_strategy_and_weights_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    from router_middleware.settings import RouterSettings

    monkeypatch.setenv("LLM_ROUTER_STRATEGY", "weighted")
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__A__MODELS", '[{"name": "m"}]')
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__A__WEIGHT", "3")
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__B__MODELS", '[{"name": "m"}]')
    cfg = RouterSettings().to_router_config()
    assert cfg.strategy == "weighted"
    assert {p.name: p.weight for p in cfg.providers} == {"a": 3.0, "b": 1.0}
    monkeypatch.setenv("LLM_ROUTER_STRATEGY", "fastest")
    with pytest.raises(ConfigurationError, match="usage_based") as info:
        RouterSettings()
    assert "fastest" not in str(info.value)
