"""Rate-limit header parsing: Go durations and snapshots, pure."""

from __future__ import annotations

import httpx
import pytest

from bot.llm.headers import parse_duration, snapshot_from_headers
from bot.types import RateLimitSnapshot


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m26.4s", 86.4),
        ("36.27s", 36.27),
        ("585ms", 0.585),
        ("2h3m", 7380.0),
        ("2h3m0s", 7380.0),
        ("1h0m0.5s", 3600.5),
        ("7.66s", 7.66),
        ("0s", 0.0),
        ("250us", 0.00025),
        ("10µs", 0.00001),
        ("60", 60.0),  # retry-after is plain seconds
        ("1.5", 1.5),
        (" 2s ", 2.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "1x", "1m2", "-1s", "s", "1s2"])
def test_unparsable_durations_are_none(text: str | None) -> None:
    assert parse_duration(text) is None


GROQ_HEADERS = {
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-remaining-requests": "14370",
    "x-ratelimit-reset-requests": "2m59.56s",
    "x-ratelimit-limit-tokens": "6000",
    "x-ratelimit-remaining-tokens": "5997",
    "x-ratelimit-reset-tokens": "30ms",
}


def test_full_groq_header_set() -> None:
    snapshot = snapshot_from_headers(GROQ_HEADERS, model="llama-3.1-8b-instant", at=12.5)
    assert snapshot == RateLimitSnapshot(
        model="llama-3.1-8b-instant",
        at=12.5,
        limit_requests=14400,
        remaining_requests=14370,
        reset_requests_s=pytest.approx(179.56),
        limit_tokens=6000,
        remaining_tokens=5997,
        reset_tokens_s=pytest.approx(0.03),
        retry_after_s=None,
    )


def test_no_rate_limit_headers_means_no_snapshot() -> None:
    headers = {"content-type": "application/json", "x-request-id": "abc"}
    assert snapshot_from_headers(headers, model="m", at=0.0) is None
    assert snapshot_from_headers({}, model="m", at=0.0) is None


def test_partial_headers_leave_the_rest_none() -> None:
    snapshot = snapshot_from_headers({"retry-after": "7"}, model="m", at=1.0)
    assert snapshot is not None
    assert snapshot.retry_after_s == 7.0
    assert snapshot.limit_requests is None and snapshot.remaining_tokens is None
    assert snapshot.reset_requests_s is None and snapshot.reset_tokens_s is None


def test_names_are_case_insensitive_and_garbage_is_none() -> None:
    headers = {
        "X-RateLimit-Remaining-Tokens": "12",
        "X-RateLimit-Limit-Tokens": "many",
        "X-RateLimit-Reset-Tokens": "later",
        "Retry-After": "0.05",
    }
    snapshot = snapshot_from_headers(headers, model="m", at=0.0)
    assert snapshot is not None
    assert snapshot.remaining_tokens == 12
    assert snapshot.limit_tokens is None and snapshot.reset_tokens_s is None
    assert snapshot.retry_after_s == pytest.approx(0.05)


def test_accepts_httpx_headers() -> None:
    headers = httpx.Headers({"X-RateLimit-Remaining-Requests": "3", "retry-after": "2"})
    snapshot = snapshot_from_headers(headers, model="m", at=0.0)
    assert snapshot is not None
    assert (snapshot.remaining_requests, snapshot.retry_after_s) == (3, 2.0)


def test_status_is_kept_for_the_quota() -> None:
    snapshot = snapshot_from_headers(GROQ_HEADERS, model="m", at=0.0, status=429)
    assert snapshot is not None and snapshot.status == 429
    assert snapshot.exceeded is None  # only a 429's message names the limit it hit
