"""QuotaManager: per-user windows, the account mirror's queue, headers, persistence, /usage."""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from bot.errors import ConfigError, QuotaExceeded
from bot.limits.config import QuotaConfig
from bot.limits.quota import Admission, QuotaManager
from bot.limits.report import write_usage_csv
from bot.limits.table import LimitSource, parse_overrides
from bot.settings import Settings
from bot.types import (
    Platform,
    QuotaCounter,
    RateLimitSnapshot,
    Usage,
    UsageEntry,
    UserRef,
    WaitReason,
)
from tests.fakes.clock import FakeClock, settle

T = TypeVar("T")
T0 = 1_700_000_040.0  # a multiple of 60: minute windows start here
DAY0 = math.floor(T0 / 86_400) * 86_400
MODEL = "openai/gpt-oss-120b"
ALICE = UserRef(Platform("discord"), "1", "alice")
BOB = UserRef(Platform("discord"), "2", "bob")
CAROL = UserRef(Platform("slack"), "U3", "carol")
ADMIN = UserRef(Platform("slack"), "UADMIN", "root")


async def done(task: asyncio.Task[T]) -> T:
    """The task's result; a limiter bug that never wakes it fails here, not by hanging."""
    return await asyncio.wait_for(task, 5)


class CounterStore:
    """Just the quota-counter part of the Store protocol, keyed like the real one."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, float], QuotaCounter] = {}
        self.saves = 0

    async def load_quota_counters(self, since: float) -> list[QuotaCounter]:
        return [r for r in self.rows.values() if r.window_start >= since]

    async def save_quota_counters(self, counters: Sequence[QuotaCounter]) -> None:
        self.saves += 1
        for c in counters:
            self.rows[(c.subject, c.dimension, c.window_start)] = c

    async def prune_quota_counters(self, before: float) -> int:
        old = [k for k, r in self.rows.items() if r.window_start < before]
        for k in old:
            del self.rows[k]
        return len(old)


def make(
    clock: FakeClock | None = None,
    store: Any = None,
    limits: str = "",
    **config: Any,
) -> tuple[QuotaManager, FakeClock]:
    clock = clock or FakeClock(T0, epoch=T0)  # time() == now(): the quota reads time()
    config.setdefault("max_queue_wait_s", 90)
    # Exact arithmetic: advance() lands on the wait.
    config.setdefault("spare_s", 0.0)
    config.setdefault("drain_hold_s", 0.0)
    cfg = QuotaConfig(
        model_limits=parse_overrides(limits), admin_ids=frozenset({"slack:UADMIN"}), **config
    )
    return QuotaManager(config=cfg, clock=clock, store=store), clock


async def use(q: QuotaManager, user: UserRef, tokens: int = 100, actual: int | None = None) -> None:
    admission = await q.admit(user, MODEL, tokens)
    await q.settle(admission, Usage(actual if actual is not None else tokens, 0))


def recorder(into: list[tuple[float, WaitReason]]) -> Any:
    """An ``on_wait`` that records what it is told."""

    async def on_wait(seconds: float, reason: WaitReason) -> None:
        into.append((seconds, reason))

    return on_wait


async def refused(q: QuotaManager, user: UserRef, tokens: int = 100) -> QuotaExceeded:
    with pytest.raises(QuotaExceeded) as info:
        await q.admit(user, MODEL, tokens)
    return info.value


# ----- per-user windows: block at the limit, release at the right time -----


async def test_user_rpm_blocks_at_limit_and_releases_on_the_minute() -> None:
    q, clock = make(user_rpm=3, max_queue_wait_s=10)  # resets further off are refused
    await clock.advance(37)
    for _ in range(3):
        await use(q, ALICE)
    exc = await refused(q, ALICE)
    assert exc.scope == "user" and exc.notify
    assert exc.retry_in_s == pytest.approx(23)
    assert exc.user_text.startswith("You've used your 3 requests this minute — try again in 23 s.")
    await clock.advance(22.9)
    waits: list[tuple[float, WaitReason]] = []
    task = asyncio.create_task(q.admit(ALICE, MODEL, 100, on_wait=recorder(waits)))
    await settle()
    assert not task.done()  # the reset is 0.1 s away: queued, not refused
    assert waits == [(pytest.approx(0.1), WaitReason.YOUR_LIMIT)]
    await clock.advance(0.1)
    await q.settle(await done(task), Usage(100, 0))
    await use(q, BOB)  # other users were never affected


async def test_a_user_limit_that_resets_within_the_max_wait_queues() -> None:
    q, clock = make(user_rpm=2, max_queue_wait_s=60)
    await clock.advance(30)
    await use(q, ALICE)
    await use(q, ALICE)
    waits: list[tuple[float, WaitReason]] = []
    task = asyncio.create_task(q.admit(ALICE, MODEL, 100, on_wait=recorder(waits)))
    await settle()
    assert waits == [(pytest.approx(30), WaitReason.YOUR_LIMIT)]
    await clock.advance(29.9)
    assert not task.done()
    await clock.advance(0.1)
    admission = await done(task)
    assert admission.waited_s == pytest.approx(30)


async def test_user_rpd_blocks_until_utc_midnight() -> None:
    q, clock = make(user_rpd=2)
    await use(q, ALICE)
    await use(q, ALICE)
    exc = await refused(q, ALICE)
    assert exc.retry_in_s == pytest.approx(DAY0 + 86_400 - T0)
    assert "requests today" in exc.user_text
    await clock.advance(DAY0 + 86_400 - T0)
    await use(q, ALICE)


async def test_user_tpm_counts_real_usage_and_releases_on_the_minute() -> None:
    q, clock = make(user_tpm=1_000, max_queue_wait_s=10)
    await use(q, ALICE, tokens=900, actual=100)  # settle gives back the unused estimate
    await use(q, ALICE, tokens=800, actual=800)
    exc = await refused(q, ALICE, tokens=500)
    assert exc.retry_in_s == pytest.approx(60)
    assert "needs about 500 tokens and 100 of your 1,000 tokens this minute are left" in (
        exc.user_text
    )
    await use(q, ALICE, tokens=100)
    await clock.advance(60)
    await use(q, ALICE, tokens=500)


async def test_only_the_prompt_counts_against_the_user_until_settled() -> None:
    q, _ = make(user_tpm=2_000)  # the free tier's share: 8,000 TPM x 0.25
    first = await q.admit(ALICE, MODEL, 1_100, user_tokens=76)  # prompt + 1,024 reserved
    second = await q.admit(ALICE, MODEL, 1_100, user_tokens=76)  # both fit: 2 in flight
    await q.settle(first, Usage(76, 300))
    await q.settle(second, Usage(76, 300))
    minute = {d.dimension: d for d in q.snapshot_for(ALICE).models[0].dimensions}
    assert minute["tpm"].used == pytest.approx(752)


async def test_user_tpd_blocks_until_utc_midnight() -> None:
    q, clock = make(user_tpd=2_000)
    await use(q, ALICE, tokens=1_000)
    await clock.advance(3_600)
    await use(q, ALICE, tokens=1_000)
    exc = await refused(q, ALICE, tokens=10)
    assert exc.user_text.startswith("You've used your 2,000 tokens today")
    await clock.advance(DAY0 + 86_400 - clock.t)
    await use(q, ALICE, tokens=1_000)


async def test_one_request_larger_than_the_user_tpm_still_passes_once_per_window() -> None:
    q, clock = make(user_tpm=1_000, max_queue_wait_s=10)
    await use(q, ALICE, tokens=3_000)
    await refused(q, ALICE, tokens=3_000)
    await clock.advance(60)
    await use(q, ALICE, tokens=3_000)


async def test_default_user_limits_are_a_share_of_the_account() -> None:
    q, _ = make(max_queue_wait_s=10)  # share 0.25 of 30 RPM → 7
    for _ in range(7):
        await use(q, ALICE, tokens=10)
    exc = await refused(q, ALICE, tokens=10)
    assert "your 7 requests this minute" in exc.user_text


async def test_a_request_that_failed_before_its_first_token_costs_the_user_nothing() -> None:
    q, _ = make(user_rpd=2)
    await use(q, ALICE)
    admission = await q.admit(ALICE, MODEL, 100)
    await q.settle(admission, Usage(0, 0, estimated=True))  # a 503 before any token
    await use(q, ALICE)  # the failed one was handed back: this is the second of the day
    await refused(q, ALICE)


# ----- telling users once per window -----


async def test_one_notice_per_user_dimension_and_window() -> None:
    q, clock = make(user_rpm=1, user_tpm=1_000, max_queue_wait_s=10)
    await use(q, ALICE)
    first, again = await refused(q, ALICE), await refused(q, ALICE)
    assert (first.notify, again.notify) == (True, False)
    assert (await refused(q, ALICE, tokens=2_000)).notify is False  # still rpm, same window
    await use(q, BOB)
    assert (await refused(q, BOB)).notify is True  # per user
    await clock.advance(60)
    await use(q, ALICE, tokens=900)
    tpm = await refused(q, ALICE, tokens=500)  # rpm blocks longest → still the rpm notice
    assert tpm.notify is True  # a new window: told again
    assert (await refused(q, ALICE)).notify is False


# ----- the user's own line -----


async def test_messages_over_the_in_flight_cap_wait_in_the_users_line_in_order() -> None:
    q, _ = make(user_max_in_flight=2)
    a = await q.admit(ALICE, MODEL, 10)
    b = await q.admit(ALICE, MODEL, 10)
    order: list[int] = []
    waits: list[tuple[float, WaitReason]] = []

    async def ask(n: int) -> Admission:
        admission = await q.admit(ALICE, MODEL, 10, on_wait=recorder(waits))
        order.append(n)
        return admission

    third = asyncio.create_task(ask(3))
    await settle()
    fourth = asyncio.create_task(ask(4))
    await settle()
    assert not third.done() and not fourth.done()
    assert waits == [(0.0, WaitReason.YOUR_TURN)] * 2
    await use(q, BOB)  # other users are not held up by Alice's line
    await q.settle(b, Usage(10, 0))
    c = await done(third)
    assert not fourth.done()
    await q.settle(a, Usage(10, 0))
    await done(fourth)
    assert order == [3, 4]
    await q.settle(c, Usage(10, 0))


async def test_a_full_line_is_refused_and_told_once_until_one_finishes() -> None:
    q, _ = make(user_max_in_flight=1, user_max_queued=1)
    a = await q.admit(ALICE, MODEL, 10)
    waiting = asyncio.create_task(q.admit(ALICE, MODEL, 10))
    await settle()
    first, again = await refused(q, ALICE, 10), await refused(q, ALICE, 10)
    assert "1 questions waiting" in first.user_text
    assert (first.notify, again.notify) == (True, False)
    await q.settle(a, Usage(10, 0))
    await done(waiting)
    waiting2 = asyncio.create_task(q.admit(ALICE, MODEL, 10))
    await settle()
    assert (await refused(q, ALICE, 10)).notify is True
    waiting2.cancel()


async def test_a_cancelled_message_leaves_the_users_line() -> None:
    q, _ = make(user_max_in_flight=1)
    a = await q.admit(ALICE, MODEL, 10)
    gone = asyncio.create_task(q.admit(ALICE, MODEL, 10))
    await settle()
    nxt = asyncio.create_task(q.admit(ALICE, MODEL, 10))
    await settle()
    gone.cancel()
    await settle()
    await q.settle(a, Usage(10, 0))
    await done(nxt)


async def test_admins_skip_user_limits_but_not_the_account() -> None:
    q, clock = make(user_rpm=1, limits=f"{MODEL}=rpm:3")
    for _ in range(3):
        await use(q, ADMIN)  # 3 > the per-user 1: exempt
    task = asyncio.create_task(q.admit(ADMIN, MODEL, 10))
    await settle()
    assert not task.done() and q.account_status()[0].queued == 1  # the account still binds
    await clock.advance(20)  # 3 a minute refill one every 20 s
    await done(task)
    assert q.snapshot_for(ADMIN).admin


# ----- the account mirror and its queue -----


async def test_account_queue_is_fifo_across_users_and_reports_the_wait() -> None:
    q, clock = make(limits=f"{MODEL}=rpm:2,tpm:100000", user_share=1.0, max_queue_wait_s=150)
    await use(q, ALICE)
    await use(q, BOB)
    order: list[str] = []
    waits: dict[str, float] = {}

    async def ask(user: UserRef) -> Admission:
        async def on_wait(s: float, _: WaitReason) -> None:
            waits[user.user_id] = s

        admission = await q.admit(user, MODEL, 10, on_wait=on_wait)
        order.append(user.user_id)
        await q.settle(admission, Usage(10, 0))  # an instant answer
        return admission

    carol = asyncio.create_task(ask(CAROL))
    await settle()
    alice = asyncio.create_task(ask(ALICE))
    await settle()
    bob = asyncio.create_task(ask(BOB))
    await settle()
    # Two a minute refill one every 30 s, as Groq's window does (issue 12: a trailing
    # log held both for a whole minute after they ended).
    assert waits == {"U3": pytest.approx(30), "1": pytest.approx(60), "2": pytest.approx(90)}
    assert q.account_status()[0].queued == 3
    await clock.advance(29.9)
    assert order == []
    await clock.advance(0.1)
    assert order == ["U3"]
    await clock.advance(30)
    assert order == ["U3", "1"]
    await clock.advance(30)
    assert order == ["U3", "1", "2"]
    assert (await done(carol)).waited_s == pytest.approx(30)
    await done(alice), await done(bob)


async def test_a_queued_request_waits_past_its_moment_by_the_recent_travel_time() -> None:
    # The server counted Alice's request when it arrived, 0.4 s after the mirror did: its
    # bucket frees 0.4 s later than the mirror's, so Bob goes then, not at the minute.
    q, clock = make(limits=f"{MODEL}=rpm:1,tpm:100000", user_share=1.0)
    first = await q.admit(ALICE, MODEL, 10)
    await clock.advance(0.4)
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t))  # its headers arrive
    await q.settle(first, Usage(10, 0))
    task = asyncio.create_task(q.admit(BOB, MODEL, 10))
    await clock.advance(59.6)  # the mirror's minute since Alice's reservation
    assert not task.done()
    await clock.advance(0.4)
    assert (await done(task)).waited_s == pytest.approx(60.0)


async def test_account_refuses_at_once_when_the_wait_exceeds_the_maximum() -> None:
    q, _ = make(limits=f"{MODEL}=rpm:2", user_share=1.0, max_queue_wait_s=20)
    await use(q, ALICE)
    await use(q, ALICE)
    exc = await refused(q, BOB)
    assert exc.scope == "account"
    assert exc.retry_in_s == pytest.approx(30)  # the next of two a minute
    assert "shared capacity" in exc.user_text and "about 30 s" in exc.user_text
    assert q.snapshot_for(BOB).models[0].dimensions[0].used == 0  # reservation undone


async def test_daily_exhaustion_says_so() -> None:
    q, _ = make(limits=f"{MODEL}=rpd:2", user_share=1.0)
    await use(q, ALICE)
    await use(q, BOB)
    exc = await refused(q, CAROL)
    assert "today's shared allowance" in exc.user_text


async def test_request_bigger_than_account_tpm_is_refused_as_too_large() -> None:
    q, _ = make()
    exc = await refused(q, ALICE, tokens=9_000)
    assert exc.scope == "account" and "more than" in exc.user_text and "8,000" in exc.user_text
    assert "shorten the message" in exc.user_text  # the conversation alone is too big


async def test_too_large_because_of_max_output_tokens_blames_the_setting() -> None:
    # Issue 12: MAX_OUTPUT_TOKENS alone above the model's TPM refused every message with
    # "shorten your message".
    q, _ = make(max_output_tokens=9_000)
    exc = await refused(q, ALICE, tokens=9_050)
    assert "MAX_OUTPUT_TOKENS" in exc.user_text and "below 8,000" in exc.user_text
    assert "shorten" not in exc.user_text
    # The message fits, but not with the answer's reservation: both are named.
    q, _ = make(max_output_tokens=4_000)
    exc = await refused(q, ALICE, tokens=9_000)
    assert "5,000 for the conversation plus 4,000 reserved for the answer" in exc.user_text
    assert "lower MAX_OUTPUT_TOKENS" in exc.user_text and "/reset" in exc.user_text


async def test_queue_timeout_tells_the_user_and_frees_the_slot() -> None:
    q, clock = make(limits=f"{MODEL}=rpm:2", user_share=1.0, max_queue_wait_s=70)
    await use(q, ALICE)
    await use(q, ALICE)
    task = asyncio.create_task(q.admit(BOB, MODEL, 10))
    await settle()
    await clock.advance(10)
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t, retry_after_s=80))  # beyond 70 s
    await settle()
    with pytest.raises(QuotaExceeded) as info:
        await done(task)
    assert info.value.scope == "account"
    assert info.value.user_text.startswith("Timed out after")
    assert q.account_status()[0].queued == 0
    assert q.snapshot_for(BOB).in_flight == 0


async def test_waiting_on_requests_in_flight_ends_at_the_deadline() -> None:
    q, clock = make(limits=f"{MODEL}=tpm:2000", user_share=1.0, max_queue_wait_s=20)
    first = await q.admit(ALICE, MODEL, 2_000)  # in flight: its reservation counts
    task = asyncio.create_task(q.admit(BOB, MODEL, 1_000))  # fits after 30 s of refill
    await settle()
    await clock.advance(19.9)  # it might finish small any moment: keep waiting
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(QuotaExceeded) as info:
        await done(task)
    assert info.value.user_text.startswith("Timed out after 20 s")
    await q.settle(first, Usage(100, 100))


async def test_a_reservation_refills_while_its_request_is_in_flight() -> None:
    # Groq charges prompt + max output on arrival and refills it from then on; so does
    # the mirror (the trailing log held it whole until the answer ended).
    q, clock = make(limits=f"{MODEL}=tpm:2000", user_share=1.0)
    first = await q.admit(ALICE, MODEL, 1_500)
    task = asyncio.create_task(q.admit(BOB, MODEL, 1_000))
    await settle()
    await clock.advance(15)
    assert (await done(task)).waited_s == pytest.approx(15)
    await q.settle(first, Usage(100, 100))


async def test_a_request_in_flight_finishing_small_lets_the_next_one_go() -> None:
    q, clock = make(limits=f"{MODEL}=tpm:2000", user_share=1.0)
    first = await q.admit(ALICE, MODEL, 1_500)
    task = asyncio.create_task(q.admit(BOB, MODEL, 1_000))
    await settle()
    await clock.advance(3)
    assert not task.done()
    await q.settle(first, Usage(100, 100))  # used 200 of the 1,500 reserved
    await settle()
    assert (await done(task)).waited_s == pytest.approx(3)


async def test_cancelled_waiter_leaves_the_queue_and_releases_its_reservation() -> None:
    q, clock = make(limits=f"{MODEL}=rpm:1", user_share=1.0, max_queue_wait_s=150)
    await use(q, ALICE)
    task = asyncio.create_task(q.admit(BOB, MODEL, 10))
    nxt = asyncio.create_task(q.admit(CAROL, MODEL, 10))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await done(task)
    assert q.snapshot_for(BOB).in_flight == 0
    await clock.advance(60)
    assert (await done(nxt)).user_key == "slack:U3"  # moved up when Bob left


# ----- headers and 429s -----


async def test_headers_lower_the_local_budget() -> None:
    q, clock = make(user_share=1.0)
    await use(q, ALICE, tokens=100)
    # Someone else is using the key: the API says only 500 of 8,000 tokens are left.
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t, limit_tokens=8_000, remaining_tokens=500))
    status = q.account_status()[0]
    assert {d.dimension: d.used for d in status.local}["tpm"] == pytest.approx(7_500)
    # Their 7,400 tokens are kept free too (at most half the limit) while they may
    # come again: 7,500 − (8,000 − 1,000 − 4,000) to refill at 133 a second.
    assert dict(status.headroom)["tpm"] == 4_000
    waits: list[float] = []

    async def on_wait(s: float, _: WaitReason) -> None:
        waits.append(s)

    task = asyncio.create_task(q.admit(BOB, MODEL, 1_000, on_wait=on_wait))
    await settle()
    assert not task.done()
    assert waits == [pytest.approx(4_500 * 60 / 8_000)]
    await clock.advance(33.7)
    assert not task.done()
    await clock.advance(0.1)
    await done(task)


async def test_headers_saying_more_is_left_do_not_raise_the_budget() -> None:
    q, clock = make(limits=f"{MODEL}=rpd:3", user_share=1.0)
    for _ in range(3):
        await use(q, ALICE, tokens=10)
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t, remaining_requests=3))
    status = {d.dimension: d for d in q.account_status()[0].local}
    assert status["rpd"].used == pytest.approx(3, abs=0.01)


async def test_request_headers_adopt_the_apis_daily_limit() -> None:
    q, clock = make(user_share=0.5)
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t, limit_requests=10, remaining_requests=10))
    for _ in range(5):
        await use(q, ALICE, tokens=10)  # the user's share follows the new limit
    exc = await refused(q, ALICE, tokens=10)
    assert "5 requests today" in exc.user_text


async def test_retry_after_pauses_only_that_models_queue() -> None:
    q, clock = make()
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t, retry_after_s=7))
    waits: list[float] = []

    async def on_wait(s: float, _: WaitReason) -> None:
        waits.append(s)

    task = asyncio.create_task(q.admit(ALICE, MODEL, 10, on_wait=on_wait))
    other = await q.admit(BOB, "llama-3.1-8b-instant", 10)  # not paused
    await settle()
    assert waits == [pytest.approx(7)] and not task.done()
    assert q.account_status()[1].paused_for_s == pytest.approx(7)
    await clock.advance(6.9)
    assert not task.done()
    await clock.advance(0.1)
    assert (await done(task)).waited_s == pytest.approx(7)
    await q.settle(other, None)


async def test_growing_wait_is_announced_again() -> None:
    q, clock = make(limits=f"{MODEL}=rpm:1", user_share=1.0, max_queue_wait_s=120)
    await use(q, ALICE)
    waits: list[float] = []

    async def on_wait(s: float, _: WaitReason) -> None:
        waits.append(s)

    task = asyncio.create_task(q.admit(BOB, MODEL, 10, on_wait=on_wait))
    await settle()
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t, retry_after_s=59))  # no change
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t, retry_after_s=58))
    await settle()
    assert waits == [pytest.approx(60)]
    await clock.advance(10)
    q.observe(RateLimitSnapshot(model=MODEL, at=clock.t, retry_after_s=58))  # until 68
    await settle()
    assert waits == [pytest.approx(60), pytest.approx(58)]
    await clock.advance(58)
    await done(task)


# ----- settle -----


async def test_settle_replaces_reservations_by_real_usage() -> None:
    q, _ = make()
    admission = await q.admit(ALICE, MODEL, 2_000)
    assert {d.dimension: d.used for d in q.account_status()[0].local}["tpm"] == 2_000
    await q.settle(admission, Usage(150, 50))
    local = {d.dimension: d.used for d in q.account_status()[0].local}
    assert local["tpm"] == pytest.approx(200)
    assert local["tpd"] == pytest.approx(200, abs=1)
    mine = {d.dimension: d.used for d in q.snapshot_for(ALICE).models[0].dimensions}
    assert (mine["tpm"], mine["tpd"]) == (200, 200)
    await q.settle(admission, Usage(10_000, 0))  # twice: no-op
    assert q.account_status()[0].local[3].used == pytest.approx(200, abs=1)


async def test_settle_without_usage_keeps_the_reservation() -> None:
    q, _ = make()
    admission = await q.admit(ALICE, MODEL, 500)
    await admission.settle(None)  # the engine's way: the reservation settles itself
    dims = {d.dimension: d.used for d in q.snapshot_for(ALICE).models[0].dimensions}
    assert dims["tpm"] == 500 and q.snapshot_for(ALICE).in_flight == 0


# ----- persistence -----


async def test_restart_in_the_middle_of_the_day_keeps_the_days_counts() -> None:
    store = CounterStore()
    q, clock = make(store=store, user_rpd=5, user_tpm=100_000)
    await clock.advance(12 * 3_600)
    for _ in range(4):
        await use(q, ALICE, tokens=1_000)
    await q.flush()
    await clock.advance(120)  # the restart

    q2, _ = make(clock=clock, store=store, user_rpd=5, user_tpm=100_000)
    await q2.load()
    await use(q2, ALICE, tokens=1_000)
    exc = await refused(q2, ALICE)
    assert "5 requests today" in exc.user_text
    # The day windows refill continuously; a saved level drains from the end of the
    # minute it was saved in: 60 of the 120 s count.
    local = {d.dimension: d.used for d in q2.account_status()[0].local}
    assert local["rpd"] == pytest.approx(5 - 60 * 1_000 / 86_400)
    assert local["tpd"] == pytest.approx(5_000 - 60 * 200_000 / 86_400)


async def test_restart_within_a_minute_keeps_the_minute_counts() -> None:
    store = CounterStore()
    q, clock = make(store=store, user_rpm=2)
    await use(q, ALICE)
    await use(q, ALICE)
    await q.aclose()
    await clock.advance(5)
    q2, _ = make(clock=clock, store=store, user_rpm=2, max_queue_wait_s=10)
    await q2.load()
    assert (await refused(q2, ALICE)).retry_in_s == pytest.approx(55)


async def test_flush_prunes_earlier_days_and_saves_only_changes() -> None:
    store = CounterStore()
    store.rows[("user:discord:9@x", "rpd", DAY0 - 86_400)] = QuotaCounter(
        "user:discord:9@x", "rpd", DAY0 - 86_400, 3
    )
    q, _ = make(store=store)
    await use(q, ALICE)
    await q.flush()
    assert all(r.window_start >= DAY0 for r in store.rows.values())
    assert {r.subject for r in store.rows.values()} == {
        "account:" + MODEL,
        "user:discord:1@" + MODEL,
    }
    saves = store.saves
    await q.flush()  # only the account rows, which always go
    assert store.saves == saves + 1


async def test_settle_saves_the_users_windows_and_flushes_the_rest_after_the_interval() -> None:
    store = CounterStore()
    q, clock = make(store=store, flush_interval_s=30)
    await use(q, ALICE)
    assert store.saves == 1  # the user's windows, at once: a crash must not hand it back
    assert {r.subject for r in store.rows.values()} == {"user:discord:1@" + MODEL}
    assert store.rows[("user:discord:1@" + MODEL, "rpd", DAY0)].used == 1
    await clock.advance(30)
    await use(q, ALICE)
    assert store.saves == 3  # and the account's rows once the interval is up
    assert "account:" + MODEL in {r.subject for r in store.rows.values()}


# ----- reporting -----


async def test_usage_report_for_a_user_and_for_an_admin() -> None:
    q, clock = make(user_rpm=10, default_model=MODEL)
    await use(q, ALICE, tokens=1_234)
    text = await q.report(ALICE, admin=False)
    assert f"`{MODEL}`" in text
    assert "1/10 requests this minute" in text
    assert "1,234/50,000 tokens today" in text
    assert "Account budget" not in text
    q.observe(
        RateLimitSnapshot(
            model=MODEL,
            at=clock.t,
            limit_requests=1_000,
            remaining_requests=998,
            limit_tokens=8_000,
            remaining_tokens=6_000,
        )
    )
    admin_text = await q.report(ADMIN, admin=True)
    assert "admin" in admin_text
    assert "998/1,000 requests left today" in admin_text
    assert "6,000/8,000 tokens left this minute" in admin_text
    fresh = await q.report(BOB, admin=False)
    assert "0/10 requests this minute" in fresh  # the default model shows before any use


async def test_admin_usage_says_which_limits_are_assumed_and_why() -> None:
    q, clock = make(limits=f"{MODEL}=tpd:250000", default_model=MODEL)
    await use(q, ALICE, tokens=1_000)
    q.observe(
        RateLimitSnapshot(
            model=MODEL,
            at=clock.t,
            status=200,
            limit_requests=500_000,
            remaining_requests=499_999,
            limit_tokens=250_000,
            remaining_tokens=240_000,  # 9,000 more than ours: another client
        )
    )
    status = q.account_status()[0]
    assert {i.dimension: i.source for i in status.limits} == {
        "rpm": LimitSource.SCALED,
        "rpd": LimitSource.HEADERS,
        "tpm": LimitSource.HEADERS,
        "tpd": LimitSource.SETTINGS,
    }
    text = await q.report(ADMIN, admin=True)
    assert "limits assumed: 843 rpm (free-tier table ×28.1: a paid tier, inferred" in text
    assert "500,000 rpd (API headers)" in text and "250,000 tpd (QUOTA_MODEL_LIMITS)" in text
    # Their jump and the estimation noise (1 % of the limit) are kept free.
    assert "another client is using the key: keeping 11,500 tpm" in text
    assert "limits assumed" not in await q.report(ALICE, admin=False)
    # The user's share follows the paid tier's figures.
    assert q.limits_for(MODEL)[1].rpm == 843 // 4
    # A 429 names the real requests per minute.
    q.observe(
        RateLimitSnapshot(
            model=MODEL,
            at=clock.t,
            status=429,
            exceeded="rpm",
            exceeded_limit=1_000,
            exceeded_used=1_000,
            exceeded_requested=1,
        )
    )
    assert q.limits_for(MODEL)[0].rpm == 1_000
    assert "1,000 rpm (named by a 429)" in await q.report(ADMIN, admin=True)


async def test_admin_usage_tells_when_the_api_keeps_the_output_cap_charged() -> None:
    q, clock = make(user_share=1.0, max_output_tokens=1_000)
    held = 0
    for _ in range(3):
        admission = await q.admit(ALICE, MODEL, 1_100)
        held += 1_100
        q.observe(
            RateLimitSnapshot(
                model=MODEL,
                at=clock.t,
                status=200,
                limit_tokens=8_000,
                remaining_tokens=8_000 - held,
            )
        )
        await q.settle(admission, Usage(100, 200))
    assert q.account_status()[0].charges_cap is True
    assert "keeps each request's whole output cap charged" in await q.report(ADMIN, admin=True)
    tpm = {d.dimension: d.used for d in q.account_status()[0].local}["tpm"]
    assert tpm == pytest.approx(3_300)  # nothing given back


async def test_restart_keeps_the_accounts_minute_levels() -> None:
    store = CounterStore()
    q, clock = make(store=store, limits=f"{MODEL}=rpm:4", user_share=1.0)
    for _ in range(4):
        await use(q, ALICE, tokens=1_000)
    await q.flush()
    await clock.advance(15)  # the restart: one request per 15 s has refilled
    q2, _ = make(clock=clock, store=store, limits=f"{MODEL}=rpm:4", user_share=1.0)
    await q2.load()
    local = {d.dimension: d.used for d in q2.account_status()[0].local}
    # Saved levels drain from the end of the slot they were saved in (a 24th of a second
    # for a minute window), never sooner than they did.
    assert local["rpm"] == pytest.approx(3, abs=0.01)
    assert local["tpm"] == pytest.approx(4_000 - 15 * 8_000 / 60, abs=10)
    await clock.advance(0.05)
    await use(q2, BOB)
    task = asyncio.create_task(q2.admit(CAROL, MODEL, 10))
    await settle()
    assert not task.done()
    await clock.advance(15)
    await done(task)


async def test_usage_csv_export() -> None:
    async def rows() -> AsyncIterator[UsageEntry]:
        yield UsageEntry(ALICE, MODEL, 10, 5, DAY0 + 3_600)
        yield UsageEntry(CAROL, MODEL, 1, 2, DAY0 + 7_200, estimated=True)
        yield UsageEntry(ALICE, MODEL, 0, 0, DAY0 + 9_000, cached=True)

    out = io.StringIO()
    assert await write_usage_csv(rows(), out) == 3
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("time_utc,platform,user_id")
    assert lines[0].endswith(",total_tokens,estimated,cached")
    assert lines[1].endswith(",discord,1,alice,openai/gpt-oss-120b,10,5,15,0,0")
    assert lines[2].split(",")[1:3] == ["slack", "U3"] and lines[2].endswith(",1,0")
    assert lines[3].endswith(",0,0,0,0,1")  # a cached answer: no tokens, marked


# ----- config -----


def test_config_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    bare = QuotaConfig.from_settings(Settings(_env_file=None, admin_ids=["1"], default_model=MODEL))
    assert (bare.user_share, bare.max_queue_wait_s, bare.default_model) == (0.25, 60.0, MODEL)
    assert bare.is_admin("discord", "1")
    settings = Settings(
        _env_file=None,
        quota_user_share=0.5,
        quota_user_rpm=4,
        quota_max_wait_s=10,
        quota_model_limits=f"{MODEL}=rpm:20",
        admin_ids=["slack:U1"],
    )
    full = QuotaConfig.from_settings(settings)
    assert full.user_limits(full.table().lookup(MODEL)[0]).rpm == 4
    assert full.user_limits(full.table().lookup(MODEL)[0]).rpd == 500
    assert full.is_admin("slack", "U1") and not full.is_admin("discord", "U1")
    other = QuotaConfig.from_settings(
        settings, builtin_table=False, requests_header_dimension="rpm"
    )
    assert other.requests_header_dimension == "rpm"
    assert other.table().lookup(MODEL)[0].rpd is None  # no Groq table on another server
    with pytest.raises(ConfigError, match="QUOTA_MODEL_LIMITS"):
        QuotaConfig.from_settings(Settings(_env_file=None, quota_model_limits="oops"))
    with pytest.raises(ConfigError):
        replace(bare, user_share=0)


async def test_client_retries_count_against_the_accounts_request_limits() -> None:
    q, _ = make(limits=f"{MODEL}=rpm:3,rpd:100", user_share=1.0)
    admission = await q.admit(ALICE, MODEL, 10)
    admission.note_retry()  # the first attempt got a 503; the client sends it again
    await admission.settle(Usage(10, 0))
    admission.note_retry()  # after settling: nothing more was sent
    status = {d.dimension: d for d in q.account_status()[0].local}
    assert status["rpm"].used == pytest.approx(2) and status["rpd"].used == pytest.approx(2)
    await use(q, BOB, tokens=10)  # the third request of the minute fits, a fourth waits
    task = asyncio.create_task(q.admit(CAROL, MODEL, 10))
    await settle()
    assert not task.done() and q.account_status()[0].queued == 1
    task.cancel()


# ----- predict_wait: what the engine asks before choosing another model -----


async def test_predict_wait_names_the_window_that_holds_a_request_back() -> None:
    quota, clock = make(limits=f"{MODEL}=tpd:10000,tpm:5000")
    assert quota.predict_wait(MODEL, 1_000) == (0.0, "")
    assert quota.predict_wait(MODEL, 6_000) == (math.inf, "size")  # over the whole TPM
    admission = await quota.admit(ADMIN, MODEL, 4_000)  # admins: the account alone
    await quota.settle(admission, Usage(3_000, 1_000))
    wait, dim = quota.predict_wait(MODEL, 2_000)
    assert dim == "tpm" and 0 < wait <= 60  # the minute refills it
    for _ in range(2):
        clock.t += 60
        await quota.settle(await quota.admit(ADMIN, MODEL, 3_000), Usage(2_000, 1_000))
    wait, dim = quota.predict_wait(MODEL, 2_000)
    assert dim == "tpd" and wait > 3_600  # 10,000 used today: hours away
    assert quota.max_wait_s() == 90


async def test_predict_wait_names_the_day_window_behind_a_429_pause() -> None:
    quota, _ = make()
    quota.observe(
        RateLimitSnapshot(
            model=MODEL,
            at=T0,
            status=429,
            retry_after_s=7_200,
            exceeded="tpd",
            exceeded_limit=200_000,
            exceeded_used=199_990,
            exceeded_requested=500,
        )
    )
    wait, dim = quota.predict_wait(MODEL, 500)
    assert dim == "tpd" and wait >= 7_200
    # A pause for a minute's window stays a pause.
    other = "openai/gpt-oss-20b"
    quota.observe(RateLimitSnapshot(model=other, at=T0, status=429, retry_after_s=120))
    assert quota.predict_wait(other, 500) == (120.0, "pause")


async def test_a_burst_into_an_idle_bucket_drains_from_the_servers_side_of_the_trip() -> None:
    # The server counts a request when it arrives, up to DRAIN_HOLD_S after the mirror
    # reserved it: the mirror starts draining an idle bucket that much later, so the
    # request that follows a burst never reaches the server before its slot is free.
    q, clock = make(limits=f"{MODEL}=rpm:2", user_share=1.0, drain_hold_s=1.0)
    await use(q, ALICE)
    await use(q, BOB)
    third = asyncio.create_task(q.admit(CAROL, MODEL, 10))
    await settle()
    await clock.advance(30)  # one slot refills in 30 s from the reservation…
    assert not third.done()
    await clock.advance(1)  # … and 30 s from the hold's end
    assert (await done(third)).waited_s == pytest.approx(31)
