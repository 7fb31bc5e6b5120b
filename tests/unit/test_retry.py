"""Retry policy: which errors, how many times, how long; pure."""

from __future__ import annotations

import random

import pytest

from bot.errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    ModelUnavailable,
    RequestTooLarge,
    StreamInterrupted,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamUnreachable,
)
from bot.llm.retry import RetryPolicy

POLICY = RetryPolicy(max_retries=3, base_delay_s=0.5, max_delay_s=3.0)


@pytest.mark.parametrize(
    "error", [UpstreamRateLimited(), UpstreamServerError(status=503), UpstreamUnreachable()]
)
def test_retryable_errors_retry_up_to_max(error: UpstreamError) -> None:
    assert [POLICY.should_retry(error, n) for n in range(1, 6)] == [True, True, True, False, False]


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationFailed(status=401),
        ModelUnavailable(status=404),
        BadRequest(status=400),
        ContextTooLong(status=400),
        RequestTooLarge(status=413),
        StreamInterrupted(partial_text="half"),
    ],
)
def test_never_retried(error: UpstreamError) -> None:
    assert not POLICY.should_retry(error, 1)


def test_zero_retries_means_none() -> None:
    assert not RetryPolicy(max_retries=0).should_retry(UpstreamServerError(), 1)


def test_backoff_doubles_and_is_capped() -> None:
    ceilings = [POLICY.delay(n, rand=lambda: 1.0) for n in range(1, 7)]
    assert ceilings == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_full_jitter_spans_zero_to_ceiling() -> None:
    assert POLICY.delay(3, rand=lambda: 0.0) == 0.0
    assert POLICY.delay(3, rand=lambda: 0.25) == pytest.approx(0.5)
    rng = random.Random(7)
    samples = [POLICY.delay(2, rand=rng.random) for _ in range(500)]
    assert all(0.0 <= s <= 1.0 for s in samples)
    assert min(samples) < 0.1 and max(samples) > 0.9  # really spread, not constant


def test_retry_after_is_honoured_exactly() -> None:
    error = UpstreamRateLimited(retry_after_s=2.5)
    assert POLICY.delay(1, error, rand=lambda: 0.0) == 2.5
    assert POLICY.delay(3, error, rand=lambda: 1.0) == 2.5
    assert POLICY.should_retry(error, 1)


def test_retry_after_longer_than_the_cap_is_not_waited_for() -> None:
    assert not POLICY.should_retry(UpstreamRateLimited(retry_after_s=3600.0), 1)
    assert POLICY.should_retry(UpstreamRateLimited(retry_after_s=3.0), 1)


def test_rate_limit_without_retry_after_uses_backoff() -> None:
    assert POLICY.delay(2, UpstreamRateLimited(), rand=lambda: 1.0) == 1.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert RetryPolicy(max_retries=10_000).delay(5_000, rand=lambda: 1.0) == 20.0
