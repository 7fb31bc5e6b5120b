"""FakeGroq's rate limits, pinned with plain httpx (no bot code).

Each test states one behaviour copied from Groq; where it comes from is written in
``tests/fakes/groq_limits.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.clock import FakeClock
from tests.fakes.groq_limits import GROQ_TIERS
from tests.fakes.groq_server import FakeGroq

MODEL = "llama-3.1-8b-instant"
HI = [{"role": "user", "content": "hi"}]  # 1 prompt token (4 characters a token)


class Frozen:
    """A clock that moves only when told, so buckets and headers are exact."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def frozen(fake_groq: FakeGroq) -> Frozen:
    clock = Frozen()
    fake_groq.clock = clock
    return clock


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def chat(
    http: httpx.AsyncClient, fake: FakeGroq, cap: int | None = 100, **more: Any
) -> httpx.Response:
    body: dict[str, Any] = {"model": MODEL, "messages": HI, **more}
    if cap is not None:
        body["max_completion_tokens"] = cap
    return await http.post(
        f"{fake.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {fake.api_key}"},
    )


async def settled(fake: FakeGroq) -> dict[str, Any]:
    """The last chat request's record once its answer has ended and been charged (a
    stream's handler finishes just after the client has read the last byte)."""
    record = fake.chat_requests[-1]
    for _ in range(100):
        if "used_tokens" in record:
            return record
        await asyncio.sleep(0.01)
    raise AssertionError("the answer was never settled")


def used(response: httpx.Response) -> int:
    """prompt + completion tokens, from the usage of a JSON answer."""
    total: int = response.json()["usage"]["total_tokens"]
    return total


async def test_headers_describe_the_day_and_minute_buckets_after_the_charge(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    fake_groq.limit_rpd, fake_groq.limit_tpm = 14_400, 6_000
    r = await chat(http, fake_groq, cap=99)
    assert {k: v for k, v in r.headers.items() if k.startswith("x-ratelimit")} == {
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-remaining-requests": "14399",
        "x-ratelimit-reset-requests": "6s",  # one request of 14,400 a day refills in 6 s
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5900",  # 1 prompt + the 99 cap, charged up front
        "x-ratelimit-reset-tokens": "1s",  # 100 tokens at 6,000 a minute
    }
    assert "retry-after" not in r.headers


async def test_the_unused_cap_is_refunded_when_the_answer_ends(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    r = await chat(http, fake_groq, cap=1_000)
    assert fake_groq.level(MODEL, "tpm") == used(r) < 1_001
    assert fake_groq.level(MODEL, "tpd") == used(r)
    assert fake_groq.level(MODEL, "rpm") == fake_groq.level(MODEL, "rpd") == 1
    stats = fake_groq.stats(MODEL)
    assert (stats.bot.requests, stats.bot.tokens, stats.requests) == (1, used(r), 1)
    assert fake_groq.chat_requests[0]["reserved_tokens"] == 1_001

    _, events = await sse(http, fake_groq, cap=1_000)
    streamed = events[-1]["x_groq"]["usage"]["total_tokens"]
    await settled(fake_groq)
    assert fake_groq.level(MODEL, "tpm") == used(r) + streamed
    assert fake_groq.stats(MODEL).bot.tokens == used(r) + streamed


async def test_keep_cap_charged_keeps_the_whole_reservation(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    fake_groq.keep_cap_charged = True
    await chat(http, fake_groq, cap=1_000)
    assert fake_groq.level(MODEL, "tpm") == 1_001
    assert fake_groq.stats(MODEL).bot.tokens == 1_001


async def test_without_a_cap_the_default_cap_is_reserved(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    await chat(http, fake_groq, cap=None)
    assert fake_groq.chat_requests[-1]["reserved_tokens"] == 1  # the prompt alone
    fake_groq.default_completion_cap = 1_024
    await chat(http, fake_groq, cap=None)
    assert fake_groq.chat_requests[-1]["reserved_tokens"] == 1_025


async def test_buckets_drain_linearly(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    fake_groq.limit_tpm, fake_groq.limit_rpm = 6_000, 30
    assert await fake_groq.burn(MODEL, 3_000, requests=10)
    frozen.t += 15  # a quarter of a minute: 1,500 tokens and 7.5 requests back
    assert fake_groq.level(MODEL, "tpm") == 1_500
    assert fake_groq.level(MODEL, "rpm") == 2.5
    frozen.t += 60
    assert fake_groq.level(MODEL, "tpm") == fake_groq.level(MODEL, "rpm") == 0


async def test_429_names_used_requested_and_the_refill_wait(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    fake_groq.enforce_tpm, fake_groq.limit_tpm = True, 6_000
    assert await fake_groq.burn(MODEL, 5_034)
    r = await chat(http, fake_groq, cap=1_442)  # eliza#4040's numbers: Requested 1443
    assert r.status_code == 429
    assert r.json() == {
        "error": {
            "message": f"Rate limit reached for model `{MODEL}` in organization `org_fake` "
            "service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 5034, "
            "Requested 1443. Please try again in 4.77s. Visit "
            "https://console.groq.com/docs/rate-limits for more information.",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
    }
    assert r.headers["retry-after"] == "4.77"
    assert r.headers["x-ratelimit-remaining-tokens"] == "966"  # nothing charged for it
    stats = fake_groq.stats(MODEL)
    assert (fake_groq.count_429, dict(stats.bot.refused), stats.bot.requests) == (1, {"tpm": 1}, 0)
    frozen.t += 4.78  # a hair past the wait, clear of float rounding
    assert (await chat(http, fake_groq, cap=1_442)).status_code == 200


@pytest.mark.parametrize(
    ("dimension", "window", "kind"),
    [
        ("rpm", "requests per minute (RPM): Limit 2, Used 2, Requested 1. "
         "Please try again in 30s.", "requests"),
        ("rpd", "requests per day (RPD): Limit 2, Used 2, Requested 1. "
         "Please try again in 12h0m0s.", "requests"),
        ("tpd", "tokens per day (TPD): Limit 300, Used 202, Requested 101. "
         "Please try again in 14m24s.", "tokens"),
    ],
)  # fmt: skip
async def test_each_window_refuses_in_its_own_words(
    fake_groq: FakeGroq,
    frozen: Frozen,
    http: httpx.AsyncClient,
    dimension: str,
    window: str,
    kind: str,
) -> None:
    setattr(fake_groq, f"enforce_{dimension}", True)
    setattr(fake_groq, f"limit_{dimension}", 300 if dimension == "tpd" else 2)
    fake_groq.keep_cap_charged = True  # so the token count is exact: 1 + 100 a request
    assert [(await chat(http, fake_groq)).status_code for _ in range(2)] == [200, 200]
    refused = await chat(http, fake_groq)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert window in error["message"] and error["type"] == kind
    assert dict(fake_groq.stats(MODEL).bot.refused) == {dimension: 1}


async def test_one_request_over_the_whole_tpm_limit_is_413(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    fake_groq.enforce_tpm, fake_groq.limit_tpm = True, 6_000
    r = await chat(http, fake_groq, cap=6_000)
    assert r.status_code == 413
    assert r.json()["error"]["message"] == (
        f"Request too large for model `{MODEL}` in organization `org_fake` service tier "
        "`on_demand` on tokens per minute (TPM): Limit 6000, Requested 6001, please reduce "
        "your message size and try again. Visit https://console.groq.com/docs/rate-limits "
        "for more information."
    )
    assert fake_groq.count_429 == 0 and fake_groq.level(MODEL, "tpm") == 0


async def test_a_dropped_stream_is_charged_what_was_generated(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    fake_groq.reply_words = 200
    fake_groq.script("drop", after_tokens=4)
    with pytest.raises(httpx.HTTPError):
        await sse(http, fake_groq, cap=1_000)
    record = await settled(fake_groq)
    assert 1 < record["used_tokens"] < 30  # the prompt and four short pieces, not 290
    assert fake_groq.level(MODEL, "tpm") == record["used_tokens"]


async def test_a_second_client_spends_the_same_buckets(
    fake_groq: FakeGroq, frozen: Frozen, http: httpx.AsyncClient
) -> None:
    fake_groq.enforce_tpm, fake_groq.limit_tpm = True, 6_000
    assert await fake_groq.burn(MODEL, 5_000)
    assert not await fake_groq.burn(MODEL, 1_001)  # refused: nothing charged
    assert not await fake_groq.burn(MODEL, 7_000)  # larger than the limit
    assert fake_groq.level(MODEL, "tpm") == 5_000
    r = await chat(http, fake_groq, cap=999)
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"
    stats = fake_groq.stats(MODEL)
    assert (stats.other.requests, stats.other.tokens, dict(stats.other.refused)) == (
        1,
        5_000,
        {"tpm": 2},
    )
    assert (fake_groq.other_count_429, fake_groq.count_429) == (2, 0)  # the bot had none
    assert stats.requests == 2 and stats.tokens == 5_000 + used(r)


async def test_the_other_client_runs_on_the_tests_clock() -> None:
    clock = FakeClock(autoadvance=True)
    fake = FakeGroq()
    fake.clock = clock.now
    with pytest.raises(ValueError, match="sleep"):
        fake.start_other_client(MODEL)
    fake.sleep = clock.sleep
    fake.enforce_tpm, fake.limit_tpm = True, 6_000
    other = fake.start_other_client(MODEL, tokens=3_500, every_s=10.0)
    await clock.sleep(35)  # burns at 0, 10, 20 and 30 s; 1,000 tokens come back every 10 s
    await other.stop()
    assert (other.attempts, other.admitted, other.refused) == (4, 2, 2)  # 6,000 at 10 s
    assert fake.stats(MODEL).other.tokens == 7_000 and fake.other_count_429 == 2
    assert clock.next_deadline() is None  # stopped: nothing sleeps on the clock any more


async def test_allowed_is_the_burst_plus_the_refill(fake_groq: FakeGroq) -> None:
    fake_groq.limit_rpm, fake_groq.limit_tpm, fake_groq.limit_rpd = 30, 6_000, 14_400
    assert fake_groq.allowed(MODEL, "rpm", 120) == 30 + 60
    assert fake_groq.allowed(MODEL, "tpm", 30) == 6_000 + 3_000
    assert fake_groq.allowed(MODEL, "rpd", 3_600) == 14_400 + 600


def test_tier_table_has_the_published_free_figures() -> None:
    free, developer = GROQ_TIERS["free"], GROQ_TIERS["developer"]
    assert free["llama-3.1-8b-instant"] == {"rpm": 30, "rpd": 14_400, "tpm": 6_000, "tpd": 500_000}
    assert free["openai/gpt-oss-20b"] == {"rpm": 30, "rpd": 1_000, "tpm": 8_000, "tpd": 200_000}
    assert developer["llama-3.1-8b-instant"]["tpm"] == 250_000


def test_use_tier_sets_the_published_limits() -> None:
    fake = FakeGroq()
    fake.use_tier("free", "openai/gpt-oss-20b")
    limits = (fake.limit_rpm, fake.limit_rpd, fake.limit_tpm, fake.limit_tpd)
    assert limits == (30, 1_000, 8_000, 200_000)
    fake.use_tier("developer", MODEL)
    limits = (fake.limit_rpm, fake.limit_rpd, fake.limit_tpm, fake.limit_tpd)
    assert limits == (1_000, 500_000, 250_000, 200_000)  # TPD unpublished: left as it was


async def sse(
    http: httpx.AsyncClient, fake: FakeGroq, cap: int | None = 100
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """A streamed answer: the response and its decoded events (``[DONE]`` left out)."""
    body: dict[str, Any] = {"model": MODEL, "messages": HI, "stream": True}
    if cap is not None:
        body["max_completion_tokens"] = cap
    r = await http.post(
        f"{fake.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {fake.api_key}"},
    )
    lines = [line.removeprefix("data: ") for line in r.text.split("\n\n") if line]
    return r, [json.loads(line) for line in lines if line != "[DONE]"]


async def test_answers_take_their_time_on_the_shared_clock(http: httpx.AsyncClient) -> None:
    clock = FakeClock(autoadvance=True)
    fake = FakeGroq()
    fake.clock, fake.sleep = clock.now, clock.sleep
    fake.reply_text, fake.first_token_delay_s, fake.token_delay_s = "one two", 1.0, 2.0
    await fake.start()
    try:
        await sse(http, fake, cap=1_000)
        record = await settled(fake)
        # Refunded when the answer ended, 1 + 2 x 2 s of virtual time after it began.
        assert record["settled_at"] - record["at"] == pytest.approx(5.0)
    finally:
        await fake.aclose()
