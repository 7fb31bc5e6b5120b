"""Pure limiter arithmetic: continuous refill, headroom, fixed windows, model accounts
(headers, 429 messages, other clients, output refunds, paid tiers), the limit table."""

from __future__ import annotations

import heapq
import math

import pytest

from bot.limits.account import ModelAccount
from bot.limits.budget import AccountBudget
from bot.limits.meters import FixedWindow, Headroom, RefillBucket
from bot.limits.table import (
    DEFAULT_LIMITS,
    GROQ_FREE_TIER,
    LimitSource,
    LimitTable,
    ModelLimits,
    parse_overrides,
)
from bot.limits.users import UserCounters
from bot.ratelimit import Waiter
from bot.types import RateLimitSnapshot, Usage

T0 = 1_700_000_040.0  # a whole multiple of 60 s: minute windows start here
DAY0 = math.floor(T0 / 86_400) * 86_400


# ----- RefillBucket -----


def test_refill_bucket_follows_groqs_reset_formula() -> None:
    b = RefillBucket(6_000, 60)
    b.take(6_000, T0)
    assert b.used(T0) == 6_000
    # reset = (limit - remaining) × window ÷ limit: 1,500 used → whole again in 15 s.
    assert b.used(T0 + 45) == pytest.approx(1_500)
    assert b.clears_in(T0 + 45) == pytest.approx(15)
    assert b.used(T0 + 60) == 0
    assert b.wait_for(1_500, T0) == pytest.approx(15)
    assert b.wait_for(1_500, T0 + 15) == 0


def test_refill_bucket_admits_exactly_after_the_computed_wait() -> None:
    b = RefillBucket(30, 60)
    for _ in range(30):
        assert b.wait_for(1, T0) == 0
        b.take(1, T0)
    wait = b.wait_for(1, T0)
    assert wait == pytest.approx(2.0)
    assert b.wait_for(1, T0 + wait) == 0  # float slack: no second, tiny wait


def test_refill_bucket_never_fits_more_than_its_limit() -> None:
    b = RefillBucket(6_000, 60)
    assert b.wait_for(6_001, T0) == math.inf
    assert b.time_to_fit(12_000, T0) == pytest.approx(60)  # queue estimate still finite


def test_refill_bucket_raise_to_only_raises() -> None:
    b = RefillBucket(1_000, 86_400)
    b.take(100, T0)
    assert not b.raise_to(50, T0)
    assert b.used(T0) == 100
    assert b.raise_to(400, T0)
    assert b.used(T0) == 400


def test_refill_bucket_set_limit_keeps_use_and_changes_rate() -> None:
    b = RefillBucket(8_000, 60)
    b.take(6_000, T0)
    b.set_limit(6_000, T0)
    assert b.wait_for(1, T0) > 0
    assert b.used(T0 + 30) == pytest.approx(3_000)


def test_refill_bucket_round_trips_through_a_row_never_draining_sooner() -> None:
    b = RefillBucket(200_000, 86_400)
    b.take(50_000, T0 + 3_630)
    row = b.to_row("account:m", "tpd", T0 + 3_630)
    assert row is not None and row.window_start == T0 + 3_600  # the minute slot
    assert row.used == 50_000
    fresh = RefillBucket(200_000, 86_400)
    fresh.restore(row.used, row.window_start, T0 + 7_200)
    # Drains from the slot's end (T0 + 3,660), 30 s later than the real bucket did.
    assert fresh.used(T0 + 7_200) == pytest.approx(b.used(T0 + 7_200) + 30 * b.rate)


def test_refill_bucket_restore_is_independent_of_a_changed_limit() -> None:
    b = RefillBucket(500_000, 86_400)  # a limit the API reported before the restart
    b.take(3_000, T0 + 10)
    row = b.to_row("account:m", "rpd", T0 + 10)
    fresh = RefillBucket(1_000, 86_400)  # back to the table's limit after it
    assert row is not None
    fresh.restore(row.used, row.window_start, T0 + 70)
    assert fresh.used(T0 + 70) == pytest.approx(3_000, abs=1)  # the level saved, whatever the rate


def test_refill_bucket_ignores_a_clock_stepping_back() -> None:
    b = RefillBucket(60, 60)
    b.take(30, T0)
    assert b.used(T0 - 10) == 30


def test_refill_bucket_minute_window_refills_continuously_after_a_burst() -> None:
    # Issue 12: a trailing log held each finished request a whole minute, so after a
    # burst nothing went for 60 s; Groq refills 30 RPM at one request every 2 s.
    b = RefillBucket(30, 60)
    for _ in range(30):
        b.take(1, T0)
    for i in range(30):
        b.commit(1, 1, T0 + 0.5 + i * 0.01)  # answers finished within the first second
    assert b.wait_for(1, T0 + 1) == pytest.approx(1)
    assert b.wait_for(1, T0 + 2) == 0
    assert b.used(T0 + 30) == pytest.approx(15)


def test_refill_bucket_commit_refunds_the_reservation_to_the_real_use() -> None:
    b = RefillBucket(6_000, 60)
    b.take(2_000, T0)  # prompt + max output, what the server checks against
    assert b.pending == 2_000
    assert b.wait_for(4_001, T0) > 0
    b.commit(2_000, 300, T0 + 1)  # 100 drained while in flight, 1,700 refunded
    assert b.pending == 0
    assert b.used(T0 + 1) == pytest.approx(200)
    assert b.wait_for(5_800, T0 + 1) == 0
    b.take(500, T0 + 1)
    b.commit(500, 500, T0 + 1)  # kept whole (a server that keeps the cap charged)
    assert b.used(T0 + 1) == pytest.approx(700)


def test_refill_bucket_counts_reservations_in_part_for_estimates() -> None:
    b = RefillBucket(6_000, 60)
    b.take(1_000, T0)  # in flight
    b.add(4_800, T0)  # not ours to settle
    assert b.wait_for(400, T0) == pytest.approx(2)
    assert b.time_to_fit(400, T0, pending_share=0.1) == 0  # 900 may come back
    assert b.wait_for(400, T0, pending_share=0.0) == 0


def test_refill_bucket_margin_slows_but_never_refuses() -> None:
    b = RefillBucket(6_000, 60)
    b.add(3_000, T0)
    assert b.wait_for(1_000, T0, margin=1_000) == 0
    assert b.wait_for(1_000, T0, margin=2_500) == pytest.approx(5)
    # More margin than the request leaves of the limit: it waits for an empty bucket.
    assert b.wait_for(5_000, T0, margin=2_500) == pytest.approx(30)
    assert b.wait_for(6_001, T0, margin=0) == math.inf


def test_refill_bucket_minute_row_round_trip() -> None:
    b = RefillBucket(6_000, 60)
    b.take(3_000, T0 + 10)
    row = b.to_row("account:m", "tpm", T0 + 10)
    assert row is not None and row.used == 3_000
    fresh = RefillBucket(6_000, 60)
    fresh.restore(row.used, row.window_start, T0 + 20)  # a restart ten seconds later
    assert fresh.used(T0 + 20) == pytest.approx(b.used(T0 + 20), abs=5)
    assert fresh.used(T0 + 20) >= b.used(T0 + 20)  # never sooner than it did


def test_a_continuous_mirror_never_lets_the_server_refuse_our_own_requests() -> None:
    # Our reservation is made before the server counts the request and our refund
    # after the server's: with every request taking as long to reach the server, the
    # server admits everything the mirror admits, however close to the limit it runs.
    mirror, server = RefillBucket(6_000, 60), RefillBucket(6_000, 60)
    events: list[tuple[float, int, str, int, int]] = []  # (time, seq, kind, reserve, used)
    sent = 0
    for n in range(600):  # someone wants to send every 0.3 s
        heapq.heappush(events, (T0 + n * 0.3, n, "try", 1_024 + (n * 37) % 300, 0))
    while events:
        t, n, kind, reserve, used = heapq.heappop(events)
        if kind == "try" and mirror.wait_for(reserve, t) == 0:
            mirror.take(reserve, t)
            used = 60 + (n * 97) % 1_000
            heapq.heappush(events, (t + 0.15, n, "arrive", reserve, used))
        elif kind == "arrive":
            assert server.wait_for(reserve, t) == 0, f"refused at {t - T0:.2f} s"
            server.take(reserve, t)
            answer_s = 0.5 + (n % 7) * 0.4
            heapq.heappush(events, (t + answer_s, n, "end", reserve, used))
        elif kind == "end":
            server.commit(reserve, used, t)
            heapq.heappush(events, (t + 0.1, n, "settle", reserve, used))
        elif kind == "settle":
            mirror.commit(reserve, used, t)
            sent += 1
    assert sent > 30  # the account was really exercised, and refilled continuously


# ----- Headroom -----


def test_headroom_holds_the_largest_jump_then_lets_go() -> None:
    room = Headroom(180)
    assert room.value(T0) == 0
    room.note(1_000, T0)
    room.note(400, T0 + 10)  # smaller: the larger is held, from the latest jump
    assert room.value(T0 + 190) == 1_000
    assert room.value(T0 + 10 + 180 + 90) == pytest.approx(500)
    assert room.value(T0 + 10 + 360) == 0


# ----- FixedWindow -----


def test_fixed_window_resets_on_the_boundary() -> None:
    w = FixedWindow(60)
    start = w.add(10, T0 + 37)
    assert start == T0
    assert w.wait_for(1, 10, T0 + 37) == pytest.approx(23)
    assert w.wait_for(1, 10, T0 + 59.999) > 0
    assert w.wait_for(1, 10, T0 + 60) == 0
    assert w.used(T0 + 60) == 0


def test_day_window_starts_at_utc_midnight() -> None:
    w = FixedWindow(86_400)
    assert w.add(1, T0) == DAY0
    assert w.resets_in(T0) == pytest.approx(DAY0 + 86_400 - T0)


def test_empty_fixed_window_admits_an_oversized_single_amount() -> None:
    w = FixedWindow(60)
    assert w.wait_for(5_000, 1_500, T0) == 0
    w.add(5_000, T0)
    assert w.wait_for(1, 1_500, T0 + 1) == pytest.approx(59)


def test_fixed_window_adjust_applies_only_to_its_own_window() -> None:
    w = FixedWindow(60)
    start = w.add(1_000, T0)
    assert w.adjust(-800, start)
    assert w.used(T0) == 200
    w.add(5, T0 + 61)
    assert not w.adjust(-5, start)
    assert w.used(T0 + 61) == 5


def test_fixed_window_restore_ignores_stale_rows() -> None:
    w = FixedWindow(60)
    w.restore(T0 - 60, 7, T0 + 1)
    assert w.used(T0 + 1) == 0
    w.restore(T0, 7, T0 + 1)
    assert w.used(T0 + 1) == 7


# ----- groups -----


def test_account_budget_skips_unlimited_dimensions() -> None:
    budget = AccountBudget(ModelLimits(30, 250, 70_000, None), minute_s=60, day_s=86_400)
    assert set(budget.buckets) == {"rpm", "rpd", "tpm"}
    budget.take(10_000, T0)
    assert budget.buckets["tpm"].used(T0) == 10_000
    assert budget.buckets["rpm"].used(T0) == 1


def test_account_budget_travel_is_the_longest_recent_reservation_to_headers_time() -> None:
    budget = AccountBudget(ModelLimits(30, 1_000, 6_000, None), minute_s=60, day_s=86_400)
    budget.take(10, T0)
    budget.take(10, T0 + 0.1)
    budget.hear(T0 + 0.3)  # paired with the oldest: 0.3 s, at least the real one's
    budget.hear(T0 + 0.2)
    assert budget.travel_s(T0 + 1) == pytest.approx(0.3)
    budget.take(10, T0 + 2)
    budget.take(10, T0 + 3)
    budget.commit(10, 10, 10, T0 + 4)  # ended before its headers: one time is dropped
    budget.hear(T0 + 4)  # paired with T0 + 2, the oldest still unheard
    assert budget.travel_s(T0 + 4) == 1.0  # 2 s, capped: beyond it a request is held up
    assert budget.travel_s(T0 + 200) == 0.0  # let go after a minute and another


def test_account_budget_estimate_names_the_slowest_dimension() -> None:
    budget = AccountBudget(ModelLimits(30, 1_000, 6_000, 200_000), minute_s=60, day_s=86_400)
    wait, dim = budget.estimate(1, 12_000, T0)
    assert dim == "tpm"
    assert wait == pytest.approx(60)


def test_user_counters_report_the_longest_block() -> None:
    c = UserCounters(minute_s=60, day_s=86_400)
    limits = ModelLimits(rpm=2, rpd=2, tpm=1_000, tpd=10_000)
    c.add(10, T0)
    c.add(10, T0 + 1)
    dim, wait = c.blocking(limits, 10, T0 + 2) or ("", 0.0)
    assert dim == "rpd"  # the minute frees first; the day is what really blocks
    assert wait == pytest.approx(DAY0 + 86_400 - T0 - 2)


def test_user_counters_first_notice_once_per_window() -> None:
    c = UserCounters(minute_s=60, day_s=86_400)
    assert c.first_notice("rpm", T0)
    assert not c.first_notice("rpm", T0 + 30)
    assert c.first_notice("rpm", T0 + 60)


# ----- ModelAccount -----


def _account(
    limits: ModelLimits, fixed: frozenset[str] = frozenset(), output_cap: int = 0
) -> ModelAccount:
    return ModelAccount(
        "m", limits, fixed, user_limits=limits, minute_s=60, day_s=86_400, output_cap=output_cap
    )


def _report(account: ModelAccount, at: float, **fields: int | str | None) -> bool:
    """Feed one snapshot (a served response's unless ``status`` says otherwise)."""
    values: dict[str, object] = {"status": 200, **fields}
    return account.observe(RateLimitSnapshot(model="m", at=at, **values), "rpd", at)  # type: ignore[arg-type]


def _level(account: ModelAccount, dim: str, at: float) -> float:
    return account.budget.buckets[dim].used(at)


def test_account_headers_lift_the_level_and_adopt_the_limit() -> None:
    account = _account(ModelLimits(30, 1_000, 8_000, 200_000))
    account.budget.take(1_000, T0)
    assert _report(account, T0, limit_tokens=6_000, remaining_tokens=4_900)
    assert account.limits.tpm == 6_000
    assert account.sources["tpm"] is LimitSource.HEADERS
    assert _level(account, "tpm", T0) == pytest.approx(1_100)  # the server counts 1,100
    assert not _report(account, T0, limit_tokens=6_000, remaining_tokens=5_900)
    assert _level(account, "tpm", T0) == pytest.approx(1_100)  # more left: keep ours


def test_account_headers_never_raise_a_limit_fixed_by_settings() -> None:
    account = _account(ModelLimits(30, 500, 4_000, 100_000), fixed=frozenset({"tpm"}))
    _report(account, T0, limit_tokens=6_000, remaining_tokens=6_000)
    assert (account.limits.tpm, account.sources["tpm"]) == (4_000, LimitSource.SETTINGS)
    _report(account, T0, limit_requests=1_000, remaining_requests=1_000)  # not fixed
    assert (account.limits.rpd, account.sources["rpd"]) == (1_000, LimitSource.HEADERS)
    _report(account, T0, limit_tokens=3_000, remaining_tokens=3_000)  # lower: adopted
    assert account.limits.tpm == 3_000


def test_another_clients_requests_count_in_rpm_and_keep_one_free() -> None:
    account = _account(ModelLimits(30, 1_000, 100_000, None))
    account.budget.take(10, T0)
    _report(account, T0, limit_requests=1_000, remaining_requests=999)  # ours only
    assert _level(account, "rpm", T0) == pytest.approx(1)
    account.budget.take(10, T0 + 5)
    # 1,000 − 997: three requests, two of them ours, the day window barely refilled.
    _report(account, T0 + 5, limit_requests=1_000, remaining_requests=997)
    assert _level(account, "rpd", T0 + 5) == pytest.approx(3, abs=0.1)
    assert _level(account, "rpm", T0 + 5) == pytest.approx(2)  # ours refilled; its one
    assert account.budget.headroom["rpm"].value(T0 + 5) == 1
    # A rounded-up count a fraction above ours is not another client.
    _report(account, T0 + 6, limit_requests=1_000, remaining_requests=997)
    assert account.budget.headroom["rpm"].value(T0 + 6) == 1
    assert _level(account, "rpd", T0 + 6) == pytest.approx(3, abs=0.1)


def test_another_clients_tokens_become_headroom_and_count_in_tpd() -> None:
    account = _account(ModelLimits(None, None, 6_000, 500_000))
    account.budget.take(1_000, T0)
    _report(account, T0, limit_tokens=6_000, remaining_tokens=5_000)
    account.budget.take(1_000, T0 + 5)
    # Ours: 2,000 less 500 refilled; the server counts 1,000 more.
    _report(account, T0 + 5, limit_tokens=6_000, remaining_tokens=3_500)
    assert _level(account, "tpm", T0 + 5) == pytest.approx(2_500)
    assert _level(account, "tpd", T0 + 5) == pytest.approx(3_000 - 29, abs=1)  # day refill
    room = account.budget.headroom["tpm"]
    assert room.value(T0 + 5) == pytest.approx(1_060)  # the jump and the noise (1 %)
    # 2,500 + 3,000 fits 6,000, but not with that room to spare.
    assert account.budget.wait_for(3_000, T0 + 5) == pytest.approx(5.6)
    assert room.value(T0 + 5 + 180) == pytest.approx(1_060)  # held three minutes
    assert room.value(T0 + 5 + 360) == 0  # then let go


def test_a_429_message_adopts_its_limit_and_lifts_the_level_to_its_use() -> None:
    account = _account(ModelLimits(30, 1_000, 8_000, 200_000))
    account.budget.take(1_100, T0)
    changed = _report(
        account,
        T0,
        status=429,
        exceeded="tpm",
        exceeded_limit=8_000,
        exceeded_used=7_421,
        exceeded_requested=1_102,
    )
    assert not changed and account.sources["tpm"] is LimitSource.BODY
    # The refused request's reservation stays until its settle takes it out.
    assert _level(account, "tpm", T0) == pytest.approx(7_421 + 1_102)
    account.commit(1_100, Usage(0, 0), T0)  # failed before its first token
    assert _level(account, "tpm", T0) == pytest.approx(7_423)
    assert _level(account, "rpm", T0) == 0  # the refused attempt is not counted
    assert _report(account, T0, status=429, exceeded="rpm", exceeded_limit=1_000, exceeded_used=9)
    assert (account.limits.rpm, account.sources["rpm"]) == (1_000, LimitSource.BODY)
    assert _level(account, "rpm", T0) == pytest.approx(9)


def test_output_refunds_wait_until_the_headers_show_them() -> None:
    account = _account(ModelLimits(None, None, 6_000, None), output_cap=1_000)
    account.budget.take(1_100, T0)
    _report(account, T0, limit_tokens=6_000, remaining_tokens=4_900)
    assert account.charges_cap is None and not account.budget.refunds
    account.commit(1_100, Usage(100, 200), T0 + 1)  # 800 unused: held for now
    assert _level(account, "tpm", T0 + 1) == pytest.approx(1_000)
    account.budget.take(1_100, T0 + 2)
    # The server refunded (it holds 200 − 100 + 1,100), not 1,000 more: so do we.
    _report(account, T0 + 2, limit_tokens=6_000, remaining_tokens=4_800)
    assert account.charges_cap is False and account.budget.refunds
    assert _level(account, "tpm", T0 + 2) == pytest.approx(1_200)
    account.commit(1_100, Usage(100, 100), T0 + 3)
    assert _level(account, "tpm", T0 + 3) == pytest.approx(1_100 - 900)


def test_a_server_keeping_the_output_cap_is_learned_in_two_reports() -> None:
    account = _account(ModelLimits(None, None, 6_000, None), output_cap=1_000)
    at, held = T0, 0.0
    for n in range(3):
        account.budget.take(1_100, at)
        held = max(0.0, held - 100) + 1_100  # the server: a second's refill, no refund
        _report(account, at, limit_tokens=6_000, remaining_tokens=6_000 - round(held))
        assert account.charges_cap is (None if n < 2 else True)
        account.commit(1_100, Usage(100, 200), at + 1)
        at += 2
        held -= 100
    assert not account.budget.refunds
    # A report showing refunds after all switches back at once.
    account.budget.take(1_100, at)
    _report(account, at, limit_tokens=6_000, remaining_tokens=6_000 - round(held - 900))
    assert account.charges_cap is False and account.budget.refunds


def test_a_refund_is_not_judged_against_requests_the_server_may_not_have_seen() -> None:
    account = _account(ModelLimits(None, None, 6_000, None), output_cap=1_000)
    account.budget.take(1_100, T0)
    _report(account, T0, limit_tokens=6_000, remaining_tokens=4_900)
    account.commit(1_100, Usage(100, 200), T0 + 1)
    account.budget.take(1_100, T0 + 2)
    account.budget.take(1_100, T0 + 2)  # sent too: its answer has not begun
    # The server kept the cap, but counts only one of the two new requests.
    _report(account, T0 + 2, limit_tokens=6_000, remaining_tokens=6_000 - 2_000)
    assert account.charges_cap is None and not account.budget.refunds


def _refunding_then(requests_left: int) -> ModelAccount:
    """An account that has seen the server refund, then a report 800 tokens above its
    level (what keeping the cap would show) with ``requests_left`` of 1,000 requests."""
    account = _account(ModelLimits(30, 1_000, 6_000, None), output_cap=1_000)
    account.budget.take(1_100, T0)
    _report(account, T0, remaining_requests=999, limit_tokens=6_000, remaining_tokens=4_900)
    account.commit(1_100, Usage(100, 200), T0 + 1)
    account.budget.take(1_100, T0 + 2)
    _report(account, T0 + 2, remaining_requests=998, limit_tokens=6_000, remaining_tokens=4_800)
    assert account.charges_cap is False
    account.commit(1_100, Usage(100, 200), T0 + 3)
    account.budget.take(1_100, T0 + 4)
    _report(account, T0 + 4, remaining_requests=requests_left, remaining_tokens=6_000 - 2_100)
    return account


def test_another_clients_request_in_the_same_report_is_not_a_kept_cap() -> None:
    other = _refunding_then(996)  # three of ours and one more
    assert other.charges_cap is False and other.budget.refunds
    assert other.budget.headroom["tpm"].value(T0 + 4) == pytest.approx(800 + 60)
    kept = _refunding_then(997)  # ours only: the refund did not happen
    assert kept.charges_cap is None and not kept.budget.refunds


def test_paid_tier_headers_scale_the_unreported_limits() -> None:
    account = _account(ModelLimits(30, 1_000, 8_000, 200_000))
    assert _report(account, T0, limit_requests=500_000, limit_tokens=250_000)
    # The least-risen reported figure rose ×31.25; unreported ones assume 90 % of that.
    assert account.scale == pytest.approx(28.125)
    assert (account.limits.rpm, account.limits.tpd) == (843, 5_625_000)
    assert account.limit_sources() == {
        "rpm": LimitSource.SCALED,
        "rpd": LimitSource.HEADERS,
        "tpm": LimitSource.HEADERS,
        "tpd": LimitSource.SCALED,
    }
    # A 429 names the real figure: it stays, whatever the headers say later.
    _report(account, T0, status=429, exceeded="rpm", exceeded_limit=1_000, exceeded_used=1_000)
    _report(account, T0 + 1, limit_requests=400_000, limit_tokens=240_000)
    assert (account.limits.rpm, account.sources["rpm"]) == (1_000, LimitSource.BODY)
    assert account.limits.tpd == int(200_000 * 30 * 0.9)


def test_no_paid_tier_unless_every_reported_limit_rose() -> None:
    account = _account(ModelLimits(30, 1_000, 8_000, 200_000))
    _report(account, T0, limit_requests=500_000, limit_tokens=8_000)  # the old FakeGroq's
    assert account.scale == 1 and account.limits.rpm == 30
    _report(account, T0, limit_requests=500_000, limit_tokens=40_000)  # ×5: not a tier
    assert account.scale == 1 and account.limits.rpm == 30
    assert account.sources["rpm"] is LimitSource.TABLE
    pinned = _account(ModelLimits(30, 1_000, 8_000, 200_000), fixed=frozenset({"rpm"}))
    _report(pinned, T0, limit_requests=500_000, limit_tokens=250_000)
    assert pinned.limits.rpm == 30 and pinned.sources["rpm"] is LimitSource.SETTINGS


def test_account_estimate_counts_everyone_queued_and_the_pause() -> None:
    account = _account(ModelLimits(30, 1_000, 6_000, None))
    account.budget.take(6_000, T0)
    account.waiters.join(Waiter(lambda: None, 3_000))
    wait, dim = account.estimate(3_000, T0)
    assert (round(wait), dim) == (60, "tpm")
    account.paused_until = T0 + 90
    assert account.estimate(3_000, T0) == (90, "pause")
    assert not account.can_pass(1, T0 + 80)


# ----- table -----


def test_table_has_todays_free_tier_figures() -> None:
    gpt = GROQ_FREE_TIER["openai/gpt-oss-120b"]
    assert (gpt.rpm, gpt.rpd, gpt.tpm, gpt.tpd) == (30, 1_000, 8_000, 200_000)
    assert GROQ_FREE_TIER["llama-3.1-8b-instant"].rpd == 14_400
    assert GROQ_FREE_TIER["qwen/qwen3-32b"].rpd == 1_000


def test_table_overrides_and_default_row() -> None:
    table = LimitTable(overrides=parse_overrides("openai/gpt-oss-120b=tpd:250000; *=tpm:5000"))
    limits, fixed = table.lookup("openai/gpt-oss-120b")
    assert (limits.tpd, limits.tpm, fixed) == (250_000, 8_000, frozenset({"tpd"}))
    unknown, fixed = table.lookup("some/new-model")
    assert unknown == DEFAULT_LIMITS.with_overrides({"tpm": 5_000})
    assert fixed == frozenset({"tpm"})


@pytest.mark.parametrize(
    "text", ["no-equals", "m=rpx:5", "m=rpm:abc", "m=rpm:0", "=rpm:3", "m=rpm"]
)
def test_parse_overrides_rejects_bad_entries(text: str) -> None:
    with pytest.raises(ValueError):
        parse_overrides(text)


def test_parse_overrides_accepts_none_and_model_ids_with_colons() -> None:
    parsed = parse_overrides(" llama3:8b=rpm:none,tpm:1_000 ; ")
    assert parsed == {"llama3:8b": {"rpm": None, "tpm": 1_000}}
