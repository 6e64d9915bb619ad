"""The token limits' sliding window (``_window``): never over the limit in any window,
exact waits, adjustments in the slot charged, the provider's word as a cap."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from router_middleware import _window as w

WINDOW = 60.0


def test_admits_up_to_the_limit_at_once_then_refuses_with_the_exact_wait() -> None:
    state, wait, slot = w.take(None, 10.2, WINDOW, 100, 60)
    assert (wait, slot) == (0.0, 10)
    state, wait, _ = w.take(state, 20.7, WINDOW, 100, 40)
    assert wait == 0.0
    state, wait, slot = w.take(state, 30.0, WINDOW, 100, 1)
    # The 60 taken in slot 10 stop counting in slot 71: at 71 s.
    assert (wait, slot) == (41.0, -1)
    assert w.used(state, 30.0, WINDOW) == 100
    # Exactly then it fits, and not a hair before.
    assert w.take(state, 70.999, WINDOW, 100, 1)[1] > 0
    assert w.take(state, 71.0, WINDOW, 100, 1)[1] == 0


def test_a_cost_over_the_limit_can_never_pass() -> None:
    assert w.take(None, 0.0, WINDOW, 100, 101)[1] == math.inf


def test_the_wait_frees_only_as_much_as_needed() -> None:
    state = None
    for t, cost in [(0.0, 30), (5.0, 30), (9.0, 40)]:
        state, wait, _ = w.take(state, t, WINDOW, 100, cost)
        assert wait == 0
    # 50 needed: slot 0 frees 30, slot 5 frees 30 more: wait for slot 5 to leave (66 s).
    assert w.take(state, 20.0, WINDOW, 100, 50)[1] == 46.0


def test_an_adjustment_lands_in_the_slot_charged_and_expires_with_it() -> None:
    state, _, slot = w.take(None, 0.0, WINDOW, 100, 80)
    state = w.adjust(state, 3.0, WINDOW, slot, -50)  # unused output refunded
    assert w.used(state, 3.0, WINDOW) == 30
    state = w.adjust(state, 4.0, WINDOW, slot, 20)  # an input shortfall charged
    assert w.used(state, 4.0, WINDOW) == 50
    assert w.used(state, 61.0, WINDOW) == 0  # gone with its slot
    state = w.adjust(state, 61.0, WINDOW, slot, 500)  # too late: changes nothing
    assert w.used(state, 61.0, WINDOW) == 0
    state = w.adjust(state, 61.0, WINDOW, 61, -5)  # never below nothing
    assert min(state.cells) == 0.0


def test_the_providers_remaining_quota_caps_the_room_until_its_reset() -> None:
    state, _, _ = w.take(None, 0.0, WINDOW, 1000, 100)
    # The provider says 200 left, resetting in 5 s: room 900 becomes 200 ...
    state = w.cap(state, 0.0, WINDOW, 1000, remaining=200, reset_seconds=5.0)
    assert w.used(state, 0.0, WINDOW) == 800
    assert w.take(state, 1.0, WINDOW, 1000, 201)[1] > 0
    # ... and the difference leaves the window at the first slot boundary after 5 s.
    assert w.used(state, 5.0, WINDOW) == 100
    # A provider that says it has more room than we think changes nothing.
    assert w.used(w.cap(state, 5.0, WINDOW, 1000, 10_000, 1.0), 5.0, WINDOW) == 100


def test_memory_is_fixed_whatever_the_traffic() -> None:
    state = None
    for i in range(10_000):
        state, _, _ = w.take(state, i * 0.37, WINDOW, 10**9, 1)
    assert state is not None
    assert len(state.cells) == w.SLOTS + 1


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 5.0),  # time since the previous request
            st.integers(1, 400),  # cost
            st.integers(-300, 0),  # refund after the call (usage known)
        ),
        min_size=1,
        max_size=120,
    )
)
def test_no_window_ever_holds_more_than_the_limit(
    requests: list[tuple[float, int, int]],
) -> None:
    """Greedy demand with refunds: whatever was admitted (as corrected by the time the
    next request came), every 60 s interval holds at most the limit, and a refused
    request is told a wait after which it is admitted. (A shortfall found after the
    call can overfill a window that is already past: the estimate errs high for that.)"""
    limit = 1000
    state = None
    now = 0.0
    admitted: list[list[float]] = []  # [time, tokens]
    for gap, cost, correction in requests:
        now += gap
        state, wait, slot = w.take(state, now, WINDOW, limit, cost)
        if wait:
            assert wait != math.inf
            again, second, _ = w.take(state, now + wait, WINDOW, limit, cost)
            assert second == 0.0, (now, wait)
            state = again
            now += wait
            slot = w._slot(now, WINDOW)
        admitted.append([now, cost])
        delta = max(correction, -cost)  # a refund is never more than the charge
        state = w.adjust(state, now, WINDOW, slot, delta)
        admitted[-1][1] += delta
    for start, _ in admitted:
        inside = sum(c for t, c in admitted if start <= t < start + WINDOW)
        assert inside <= limit + 1e-6
