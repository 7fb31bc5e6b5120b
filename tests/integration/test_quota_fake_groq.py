"""QuotaManager in front of the real CompletionsClient, against FakeGroq enforcing limits.

FakeGroq and the quota share one auto-advancing ``FakeClock``, so minutes of queueing
pass in a fraction of a second while requests still travel over loopback HTTP.
``run_scenario`` is also what ``benchmarks/bench_quota.py`` runs.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.context import estimate_tokens
from bot.errors import QuotaExceeded, UpstreamRateLimited
from bot.limits.config import QuotaConfig
from bot.limits.quota import QuotaManager
from bot.limits.table import parse_overrides
from bot.llm.client import CompletionsClient
from bot.store.sqlite import SqliteStore
from bot.types import ChatMessage, ChatRequest, Finished, Platform, TextDelta, Usage, UserRef
from tests.fakes.clock import FakeClock
from tests.fakes.groq_limits import ModelStats
from tests.fakes.groq_server import FakeGroq

MODEL = "llama-3.1-8b-instant"  # built-in table: 30 RPM, 6,000 TPM, like the fake below

MAX_OUTPUT = 1_024  # the MAX_OUTPUT_TOKENS default: reserved up front, as Groq checks
REPLY_WORDS = 200  # answers of ~290 tokens: 6,000 TPM then allows ~20 a minute
HEARTBEAT_S = 0.01
ANSWER_S = (0.6, 1.9, 1.1, 2.4, 0.9, 1.5, 2.1, 1.3)


@dataclass
class ScenarioResult:
    count_429: int
    answered: int
    timed_out: int  # told "timed out waiting" (or "at capacity, try again in …")
    user_refusals: int  # per-user limit hits, retried after the time they were told
    answered_per_user: dict[str, int]
    waits_s: list[float]
    refusal_texts: list[str]
    # user -> minute window start -> [requests, tokens used] charged to it
    per_minute: dict[str, dict[float, list[int]]] = field(default_factory=dict)
    user_limits: tuple[int, int] = (0, 0)  # (rpm, tpm) each user may have per minute
    virtual_s: float = 0.0
    fake_times: list[float] = field(default_factory=list)
    fake_stats: ModelStats = field(default_factory=ModelStats)  # the server's own counts
    rate_limited: int = 0  # requests that ended in a 429 (max_retries=0 shows each)

    @property
    def median_wait_s(self) -> float:
        return statistics.median(self.waits_s) if self.waits_s else 0.0


async def run_scenario(
    *,
    users: int = 20,
    requests: int = 100,
    greedy: int = 0,
    max_wait_s: float = 60.0,
    setup_fake: Callable[[FakeGroq], None] | None = None,
) -> ScenarioResult:
    """``users`` users send ``requests`` requests between them, each user one at a time
    and as fast as allowed; the first ``greedy`` users send most of them. ``setup_fake``
    may change the server's knobs (limits, ``keep_cap_charged``, a second client) once
    it shares the clock and before the first request."""
    clock = FakeClock(autoadvance=True)
    fake = FakeGroq()
    fake.clock, fake.sleep = clock.now, clock.sleep
    fake.limit_rpm, fake.limit_tpm = 30, 6_000
    fake.enforce_rpm = fake.enforce_tpm = True
    fake.reply_words = REPLY_WORDS
    await fake.start()
    if setup_fake is not None:
        setup_fake(fake)
    config = QuotaConfig(max_queue_wait_s=max_wait_s, model_limits=parse_overrides(""))
    quota = QuotaManager(config=config, clock=clock)
    client = CompletionsClient(
        base_url=fake.base_url,
        api_key=SecretStr(fake.api_key or ""),
        clock=clock,
        max_retries=0,  # a 429 must show, not be retried away
        max_connections=32,
    )
    client.add_rate_limit_listener(quota.observe)
    limits = config.user_limits(config.table().lookup(MODEL)[0])
    result = ScenarioResult(0, 0, 0, 0, {}, [], [], user_limits=(limits.rpm or 0, limits.tpm or 0))
    per_minute: dict[str, dict[float, list[int]]] = defaultdict(dict)
    answered: Counter[str] = Counter()

    async def one(user: UserRef, n: int) -> None:
        text = f"question {n} from {user.user_id}: how far is the moon?"
        request = ChatRequest(MODEL, (ChatMessage("user", text),), max_tokens=MAX_OUTPUT)
        estimate = estimate_tokens(text) + MAX_OUTPUT
        while True:
            try:
                admission = await quota.admit(user, MODEL, estimate)
                break
            except QuotaExceeded as exc:
                if exc.scope == "account":
                    result.timed_out += 1
                    result.refusal_texts.append(exc.user_text)
                    return
                result.user_refusals += 1  # "try again in N s": the user does
                await clock.sleep(max(exc.retry_in_s, 0.001))
        # The window the user was charged in (requests queue, so not always "now").
        slot = per_minute[user.user_id].setdefault(admission.minute_start, [0, 0])
        slot[0] += 1
        usage, got = None, ""
        try:
            async for event in client.stream(request):
                if isinstance(event, TextDelta):
                    got += event.text
                elif isinstance(event, Finished):
                    usage = event.usage
            # A streamed answer of ~290 tokens takes Groq a second or two: spend it in
            # virtual time (deterministic jitter), so answers end spread out as for real.
            await clock.sleep(ANSWER_S[(int(user.user_id[1:]) + n) % len(ANSWER_S)])
        except UpstreamRateLimited:
            result.rate_limited += 1  # counted, so the run goes on and reports them all
            return
        finally:
            await quota.settle(admission, usage)
        assert got.startswith("turns=1"), got
        slot[1] += usage.total_tokens if usage else estimate  # settle charges the real use
        answered[user.user_id] += 1
        result.waits_s.append(admission.account_wait_s)

    async def sender(user: UserRef, count: int) -> None:
        for n in range(count):
            await one(user, n)

    refs = [UserRef(Platform("discord"), f"u{i:02d}") for i in range(users)]
    counts = _split(requests, users, greedy)
    start = clock.now()
    try:
        await with_heartbeat(
            clock, asyncio.gather(*(sender(u, c) for u, c in zip(refs, counts, strict=True)))
        )
    finally:
        await client.aclose()
        await fake.aclose()
    result.count_429 = fake.count_429
    result.answered = sum(answered.values())
    result.answered_per_user = {u.user_id: answered[u.user_id] for u in refs}
    result.per_minute = dict(per_minute)
    result.virtual_s = clock.now() - start
    result.fake_times = [r["at"] for r in fake.requests]
    result.fake_stats = fake.stats(MODEL)
    return result


async def with_heartbeat(clock: FakeClock, work: Awaitable[object], within: float = 120) -> None:
    """Await ``work`` (bounded by ``within`` real seconds) beside a heartbeat on ``clock``.

    Autoadvance jumps to the next deadline whenever the loop waits on sockets; a short
    sleeper bounds each jump, so an HTTP round trip costs a realistic sliver of virtual
    time instead of "until some queued request's deadline"."""

    async def heartbeat() -> None:
        while True:
            await clock.sleep(HEARTBEAT_S)

    beat = asyncio.create_task(heartbeat())
    try:
        await asyncio.wait_for(work, within)
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)


def _split(requests: int, users: int, greedy: int) -> list[int]:
    """Per-user request counts: even, or most of them to the first ``greedy`` users."""
    if not greedy:
        return [requests // users + (i < requests % users) for i in range(users)]
    rest = users - greedy
    light = [2] * rest
    heavy_total = requests - sum(light)
    heavy = [heavy_total // greedy + (i < heavy_total % greedy) for i in range(greedy)]
    return heavy + light


def _assert_no_user_beyond_share(result: ScenarioResult) -> None:
    rpm, tpm = result.user_limits
    for user, minutes in result.per_minute.items():
        for minute, (n, tokens) in minutes.items():
            assert n <= rpm, f"{user} got {n} requests in minute {minute}"
            assert tokens <= tpm, f"{user} got {tokens} tokens in minute {minute}"


def _within_refill(times: list[float], limit: int, window_s: float) -> bool:
    """Whether ``times`` fit a bucket of ``limit`` refilled continuously over
    ``window_s``, as Groq's are: any run of requests, first to last, at most the burst
    plus what refilled in between. (Not "at most ``limit`` in any trailing window":
    a full burst followed by the refill is within Groq's limits.)"""
    times = sorted(times)
    rate = limit / window_s
    return all(
        hi - lo + 1 <= limit + rate * (times[hi] - times[lo]) + 1e-9
        for hi in range(len(times))
        for lo in range(hi + 1)
    )


def _assert_clear_refusals(result: ScenarioResult) -> None:
    assert result.answered + result.timed_out == 100
    for text in result.refusal_texts:
        assert text.startswith("Timed out after") or "shared capacity" in text, text


async def test_twenty_users_a_hundred_requests_no_429() -> None:
    result = await run_scenario()  # production's 60 s maximum wait
    assert result.count_429 == 0
    _assert_clear_refusals(result)
    # ~17 answers a minute fit 6,000 TPM, so a queue of 20 means waits near the 60 s
    # maximum: some are told they timed out, but FIFO leaves nobody unanswered.
    assert result.answered >= 50
    assert min(result.answered_per_user.values()) >= 1
    assert max(result.waits_s) <= 60
    assert _within_refill(result.fake_times, 30, 60)  # the fake's RPM, 30
    _assert_no_user_beyond_share(result)


async def test_with_a_long_enough_wait_everyone_is_answered() -> None:
    result = await run_scenario(max_wait_s=300)
    assert result.count_429 == 0
    assert result.answered == 100
    assert set(result.answered_per_user.values()) == {5}
    assert max(result.waits_s) > 30  # the queue really was exercised
    # 100 answers of ~290 tokens at 6,000 TPM: the 6,000 burst, then 100 a second.
    assert result.virtual_s > 3 * 60
    _assert_no_user_beyond_share(result)


async def test_greedy_users_are_held_to_their_share_without_429s() -> None:
    result = await run_scenario(greedy=2, max_wait_s=300)
    assert result.count_429 == 0
    _assert_clear_refusals(result)
    # The two greedy users met their per-user limits: their messages waited for the next
    # minute in their own line (300 s of patience) instead of being refused.
    assert result.user_refusals == 0 and max(result.waits_s) > 30
    _assert_no_user_beyond_share(result)
    light = [n for u, n in result.answered_per_user.items() if u not in ("u00", "u01")]
    assert light == [2] * 18  # nobody else was starved


async def test_short_max_wait_tells_users_they_timed_out() -> None:
    result = await run_scenario(max_wait_s=5)
    assert result.count_429 == 0
    assert result.timed_out > 0
    _assert_clear_refusals(result)


async def test_restart_mid_day_keeps_the_days_counts_in_sqlite(tmp_path: Path) -> None:
    midnight = 1_700_006_400.0  # 2023-11-15 00:00 UTC
    clock = FakeClock(start=1_000.0, epoch=midnight + 14 * 3_600)  # 14:00 UTC
    config = QuotaConfig(
        user_rpd=3,
        user_tpm=10_000,
        flush_interval_s=30,
        model_limits=parse_overrides(f"{MODEL}=rpd:10"),  # refills slowly enough to see
    )
    alice = UserRef(Platform("slack"), "U1")
    store = SqliteStore(tmp_path / "bot.db", clock=clock)
    await store.open()
    quota = QuotaManager(config=config, clock=clock, store=store)
    await quota.load()
    for _ in range(2):
        await quota.settle(await quota.admit(alice, MODEL, 1_000), Usage(400, 100))
    await clock.advance(30)
    await quota.settle(await quota.admit(alice, MODEL, 1_000), Usage(400, 100))  # flushes
    await store.aclose()

    await clock.advance(600)  # ten minutes later, a new process
    store = SqliteStore(tmp_path / "bot.db", clock=clock)
    await store.open()
    try:
        restarted = QuotaManager(config=config, clock=clock, store=store)
        await restarted.load()
        with pytest.raises(QuotaExceeded) as info:
            await restarted.admit(alice, MODEL, 10)
        assert "your 3 requests today" in info.value.user_text
        day = {d.dimension: d.used for d in restarted.snapshot_for(alice).models[0].dimensions}
        assert day["tpd"] == 1_500
        account = {d.dimension: d.used for d in restarted.account_status()[0].local}
        assert account["rpd"] == pytest.approx(3 - 600 * 10 / 86_400, abs=0.01)
        await clock.advance(10 * 3_600)  # 00:10 UTC: a fresh day
        await restarted.settle(await restarted.admit(alice, MODEL, 10), None)
        await restarted.flush()
        rows = await store.load_quota_counters(0)
        assert rows and min(r.window_start for r in rows) >= midnight + 86_400  # pruned
    finally:
        await store.aclose()
