from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_middleware._classify import Classification, ErrorKind, default_classifier
from router_middleware._config import RetryConfig
from router_middleware._retry import BackoffPolicy, plan_retry, rate_limit_delay

K = ErrorKind


def policy(
    attempts: int = 6,
    *,
    jitter: bool = False,
    initial: float = 0.1,
    multiplier: float = 2.0,
    maximum: float = 1.0,
    seed: int = 0,
) -> BackoffPolicy:
    config = RetryConfig(
        attempts=attempts,
        initial_backoff_seconds=initial,
        multiplier=multiplier,
        max_backoff_seconds=maximum,
        jitter=jitter,
    )
    return BackoffPolicy(config, rng=random.Random(seed))


# --- BackoffPolicy


def test_schedule_doubles_then_caps() -> None:
    p = policy()
    assert [p.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    assert p.delay(6) == 1.0
    assert p.delay(500) == 1.0
    assert p.tries == 6
    assert p.max_delay == 1.0


def test_repr_shows_schedule() -> None:
    assert repr(policy(attempts=4)) == (
        "BackoffPolicy(tries=4, schedule=(0.1, 0.2, 0.4), max_delay=1.0, jitter=False)"
    )


def test_delay_is_one_based() -> None:
    with pytest.raises(ValueError, match="retry_number"):
        policy().delay(0)


def test_constant_and_zero_schedules_stay_short_with_many_attempts() -> None:
    constant = policy(attempts=10_000, multiplier=1.0, initial=0.3)
    assert constant.delay(1) == constant.delay(9_999) == 0.3
    assert "schedule=(0.3,)" in repr(constant)
    zero = policy(attempts=10_000, initial=0.0, maximum=0.0)
    assert zero.delay(1) == zero.delay(9_999) == 0.0
    no_cap_reached = policy(attempts=10_000, initial=0.0, maximum=5.0)
    assert no_cap_reached.delay(9_999) == 0.0


def test_disabled_retries_mean_one_try() -> None:
    p = BackoffPolicy(RetryConfig(enabled=False, attempts=5))
    assert p.tries == 1


@given(
    initial=st.floats(0.0, 5.0),
    extra=st.floats(0.0, 30.0),
    multiplier=st.floats(1.0, 4.0),
    attempts=st.integers(1, 40),
)
def test_schedule_matches_capped_exponential(
    initial: float, extra: float, multiplier: float, attempts: int
) -> None:
    maximum = initial + extra
    p = policy(attempts, initial=initial, multiplier=multiplier, maximum=maximum)
    for n in range(1, attempts):
        expected = min(initial * multiplier ** (n - 1), maximum)
        assert p.delay(n) == pytest.approx(expected)


def test_full_jitter_stays_within_bounds_with_mean_near_half() -> None:
    p = policy(jitter=True, seed=1234)
    draws = [p.delay(3) for _ in range(20_000)]
    assert all(0.0 <= d <= 0.4 for d in draws)
    assert statistics.fmean(draws) == pytest.approx(0.2, abs=0.005)
    assert min(draws) < 0.01
    assert max(draws) > 0.39
    capped = [p.delay(9) for _ in range(5_000)]
    assert all(0.0 <= d <= 1.0 for d in capped)
    assert statistics.fmean(capped) == pytest.approx(0.5, abs=0.02)


def test_jitter_is_deterministic_for_a_seeded_rng() -> None:
    a, b = policy(jitter=True, seed=7), policy(jitter=True, seed=7)
    assert [a.delay(2) for _ in range(10)] == [b.delay(2) for _ in range(10)]


def test_no_jitter_when_disabled() -> None:
    p = policy(jitter=False)
    assert {p.delay(2) for _ in range(100)} == {0.2}


# --- rate_limit_delay


@pytest.mark.parametrize("retry_after", [0.0, 0.05, 1.0, 2.0, 9.5, 30.0, 600.0])
def test_rate_limit_delay_never_early_and_bounded_above(retry_after: float) -> None:
    rng = random.Random(99)
    extra = min(retry_after * 0.1, 1.0)
    draws = [rate_limit_delay(retry_after, rng) for _ in range(2_000)]
    assert all(retry_after <= d <= retry_after + extra for d in draws)
    if retry_after:
        assert max(draws) > retry_after + extra * 0.9
        assert len(set(draws)) > 1


def test_rate_limit_delay_treats_negative_as_zero() -> None:
    assert rate_limit_delay(-3.0, random.Random(0)) == 0.0


# --- plan_retry


def verdict(kind: ErrorKind, retry_after: float | None = None) -> Classification:
    return Classification(kind, retry_after=retry_after)


def test_transient_follows_the_schedule_until_tries_run_out() -> None:
    p = policy(attempts=3)
    assert plan_retry(verdict(K.TRANSIENT), 1, p, remaining=None) == pytest.approx(0.1)
    assert plan_retry(verdict(K.TRANSIENT), 2, p, remaining=None) == pytest.approx(0.2)
    assert plan_retry(verdict(K.TRANSIENT), 3, p, remaining=None) is None


@pytest.mark.parametrize(
    "kind",
    [
        K.TIMEOUT,
        K.MISCONFIGURED,
        K.CONTEXT_LENGTH,
        K.INVALID_REQUEST,
        K.CONTENT_POLICY,
        K.NOT_PROVIDER,
    ],
)
def test_kinds_that_never_retry(kind: ErrorKind) -> None:
    assert plan_retry(verdict(kind, retry_after=0.1), 1, policy(), remaining=None) is None


def test_no_retry_when_retries_are_disabled() -> None:
    p = BackoffPolicy(RetryConfig(enabled=False, attempts=5))
    assert plan_retry(verdict(K.TRANSIENT), 1, p, remaining=None) is None


def test_rate_limited_without_retry_after_backs_off() -> None:
    p = policy(attempts=4)
    assert plan_retry(verdict(K.RATE_LIMITED), 2, p, remaining=None) == pytest.approx(0.2)


def test_rate_limited_waits_at_least_retry_after_even_with_jitter() -> None:
    p = policy(jitter=True, seed=3)
    for _ in range(200):
        delay = plan_retry(verdict(K.RATE_LIMITED, 0.5), 1, p, remaining=None)
        assert delay is not None
        assert 0.5 <= delay <= 0.55


def test_rate_limited_at_exactly_max_delay_still_retries() -> None:
    delay = plan_retry(verdict(K.RATE_LIMITED, 1.0), 1, policy(), remaining=None)
    assert delay is not None
    assert 1.0 <= delay <= 1.1


def test_rate_limited_beyond_max_delay_fails_over_at_once() -> None:
    assert plan_retry(verdict(K.RATE_LIMITED, 1.01), 1, policy(), remaining=None) is None
    assert plan_retry(verdict(K.RATE_LIMITED, 60.0), 1, policy(), remaining=None) is None


def test_deadline_wins_over_a_retry() -> None:
    p = policy()
    transient = verdict(K.TRANSIENT)
    assert plan_retry(transient, 2, p, remaining=0.25) == pytest.approx(0.2)
    assert plan_retry(transient, 2, p, remaining=0.2) is None
    assert plan_retry(transient, 2, p, remaining=0.0) is None
    assert plan_retry(transient, 2, p, remaining=-1.0) is None
    assert plan_retry(verdict(K.RATE_LIMITED, 0.5), 1, p, remaining=0.5) is None
    assert plan_retry(verdict(K.RATE_LIMITED, 0.5), 1, p, remaining=0.6) is not None


def test_plan_retry_from_a_classified_429() -> None:
    class RateLimitError(Exception):
        status_code = 429
        headers = {"retry-after-ms": "300"}  # noqa: RUF012

    delay = plan_retry(default_classifier(RateLimitError()), 1, policy(), remaining=None)
    assert delay is not None
    assert 0.3 <= delay <= 0.33
