"""Budgets as pure functions (``_budget``): spend within a period, roll over, corrections."""

from __future__ import annotations

import math

from router_middleware import _budget as b


def test_spends_until_the_budget_is_spent_then_waits_for_the_next_period() -> None:
    state, wait = b.spend(None, 100.0, 60, 1.0, 0.6)
    assert (state, wait) == ((100.0, 0.6), 0.0)
    state, wait = b.spend(state, 110.0, 60, 1.0, 0.5)
    assert (state, wait) == ((100.0, 0.6), 50.0)  # would overspend: until 160 s
    state, wait = b.spend(state, 110.0, 60, 1.0, 0.4)
    assert wait == 0.0
    assert b.spent(state, 120.0, 60) == 1.0
    # Spent: even a free request waits (a budget is a switch, not only a sum).
    assert b.spend(state, 120.0, 60, 1.0, 0.0)[1] == 40.0


def test_periods_follow_one_another_from_the_first_charge() -> None:
    state, _ = b.spend(None, 100.0, 60, 1.0, 1.0)
    state, wait = b.spend(state, 285.0, 60, 1.0, 0.25)  # three periods later: 280-340
    assert (state, wait) == ((280.0, 0.25), 0.0)
    assert b.spent(state, 339.0, 60) == 0.25
    assert b.spent(state, 340.0, 60) == 0.0


def test_a_cost_over_the_whole_budget_never_passes_and_zero_admits_nothing() -> None:
    assert b.spend(None, 0.0, 60, 1.0, 1.5)[1] == math.inf
    assert b.spend(None, 0.0, 60, 0.0, 0.0)[1] == math.inf


def test_a_correction_applies_to_its_own_period_only() -> None:
    state, _ = b.spend(None, 0.0, 60, 1.0, 0.5)
    state = b.adjust(state, 10.0, 60, 0.0, -0.3)  # cheaper than estimated
    assert b.spent(state, 10.0, 60) == 0.2
    state = b.adjust(state, 10.0, 60, 0.0, -1.0)
    assert b.spent(state, 10.0, 60) == 0.0  # never below nothing
    state = b.adjust(state, 70.0, 60, 0.0, 0.9)  # the period it belongs to is over
    assert b.spent(state, 70.0, 60) == 0.0
