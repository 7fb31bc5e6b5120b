"""Pure limiter arithmetic: continuous refill, fixed windows, model accounts, limit table."""

from __future__ import annotations

import math

import pytest

from bot.limits.account import ModelAccount
from bot.limits.budget import AccountBudget
from bot.limits.meters import FixedWindow, RefillBucket, TrailingLog
from bot.limits.table import (
    DEFAULT_LIMITS,
    GROQ_FREE_TIER,
    LimitTable,
    ModelLimits,
    parse_overrides,
)
from bot.limits.users import UserCounters
from bot.ratelimit import Waiter

T0 = 1_700_000_040.0  # a whole multiple of 60 s: minute windows start here
DAY0 = math.floor(T0 / 86_400) * 86_400
HOLD = 60 * 1.001  # a trailing log keeps each use 0.1 % past its one-minute window


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


# ----- TrailingLog -----


def test_trailing_log_counts_a_use_until_a_window_after_it_ends() -> None:
    log = TrailingLog(30, 60)
    for _ in range(30):
        assert log.wait_for(1, T0) == 0
        log.take(1, T0)
    assert log.wait_for(1, T0 + 100) == HOLD  # still in flight: counts in full, undated
    for i in range(30):
        log.commit(1, 1, T0 + 1 + i * 0.1)  # answers finished over three seconds
    # A refill bucket would admit one every 2 s from now; a trailing window must not.
    assert log.wait_for(1, T0 + 5) == pytest.approx(1 + HOLD - 5)
    assert log.wait_for(1, T0 + 1 + HOLD) == 0
    assert log.used(T0 + 1.05 + HOLD) == 29
    assert log.used(T0 + 64) == 0


def test_trailing_log_is_never_looser_than_a_refill_bucket() -> None:
    log, bucket = TrailingLog(10, 60), RefillBucket(10, 60)
    t = T0
    for step in range(400):  # greedy sender: as much as the log allows, every 0.7 s
        if log.wait_for(3, t) == 0:
            assert bucket.wait_for(3, t) == 0, f"log admitted what refill refuses at {step}"
            log.take(3, t)
            log.commit(3, 3, t)
            bucket.take(3, t)
        t += 0.7


def test_trailing_log_commit_replaces_the_reservation_by_the_real_use() -> None:
    log = TrailingLog(6_000, 60)
    log.take(2_000, T0)  # prompt + max output, what the server checks against
    assert log.wait_for(4_001, T0) > 0
    log.commit(2_000, 300, T0 + 1)
    assert log.used(T0 + 2) == 300
    assert log.wait_for(5_700, T0 + 2) == 0
    assert log.wait_for(5_701, T0 + 2) == pytest.approx(HOLD - 1)


def test_trailing_log_raise_to_and_queue_estimate() -> None:
    log = TrailingLog(6_000, 60)
    assert log.raise_to(5_500, T0)
    assert not log.raise_to(5_000, T0)
    assert log.wait_for(1_000, T0 + 10) == pytest.approx(HOLD - 10)
    assert log.wait_for(7_000, T0) == math.inf
    # A queue of 13,000 tokens: room at +60, then 6,000 a minute for the 7,000 left over.
    assert log.time_to_fit(13_000, T0) == pytest.approx(HOLD + 70)
    log.take(1_000, T0)  # pending: counts in full for waits, in part for estimates
    assert log.time_to_fit(400, T0, pending_share=0.1) == 0
    assert log.wait_for(400, T0) == pytest.approx(HOLD)


def test_trailing_log_row_round_trip_is_never_shorter() -> None:
    log = TrailingLog(30, 60)
    log.take(4, T0 + 10)
    row = log.to_row("account:m", "rpm", T0 + 10)
    assert row is not None and (row.window_start, row.used) == (T0, 4)
    fresh = TrailingLog(30, 60)
    fresh.restore(row.used, row.window_start, T0 + 20)
    assert fresh.used(T0 + 79) == 4
    stale = TrailingLog(30, 60)
    stale.restore(row.used, row.window_start, T0 + 120)
    assert stale.used(T0 + 120) == 0


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


def _account(limits: ModelLimits, fixed: frozenset[str] = frozenset()) -> ModelAccount:
    return ModelAccount("m", limits, fixed, user_limits=limits, minute_s=60, day_s=86_400)


def test_account_sync_lowers_budget_and_adopts_header_limits() -> None:
    account = _account(ModelLimits(30, 1_000, 8_000, 200_000))
    account.budget.take(100, T0)
    assert account.sync("tpm", 6_000, 1_000, T0)  # limit 8,000 → 6,000; 5,000 used per API
    assert account.limits.tpm == 6_000
    assert account.budget.buckets["tpm"].used(T0) == pytest.approx(5_000)
    assert not account.sync("tpm", 6_000, 5_900, T0)  # says more is left: keep ours
    assert account.budget.buckets["tpm"].used(T0) == pytest.approx(5_000)


def test_account_sync_never_raises_a_limit_fixed_by_settings() -> None:
    account = _account(ModelLimits(30, 500, 4_000, 100_000), fixed=frozenset({"tpm"}))
    account.sync("tpm", 6_000, 6_000, T0)
    assert account.limits.tpm == 4_000
    account.sync("rpd", 1_000, 1_000, T0)  # not fixed: the API's number wins
    assert account.limits.rpd == 1_000


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
