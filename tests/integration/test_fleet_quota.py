"""The fleet quota (issue 16): two ``FleetQuota`` instances on one real PostgreSQL
database, as two processes would hold them. Real time (the database's clock), so the
limits are chosen for waits that differ by tens of seconds from what is asserted."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from bot.errors import QuotaExceeded
from bot.limits.config import QuotaConfig
from bot.limits.fleet import UNREACHABLE_TEXT, FleetQuota, Wake
from bot.limits.table import parse_overrides
from bot.ports import SystemClock
from bot.types import Platform, RateLimitSnapshot, Usage, UserRef
from tests.pg_cluster import PgCluster

MODEL = "test/model"


def config(limits: str, **extra: Any) -> QuotaConfig:
    values: dict[str, Any] = {
        "model_limits": parse_overrides(f"{MODEL}={limits}"),
        "user_share": 1.0,
        "user_max_in_flight": 50,
        "max_queue_wait_s": 30.0,
    }
    values.update(extra)
    return QuotaConfig(**values)


def user(n: int) -> UserRef:
    return UserRef(Platform("chat"), f"u{n}", f"user {n}")


@asynccontextmanager
async def fleet(
    dsn: str, cfg: QuotaConfig, *, lease_s: float = 30.0, wake: Wake = "notify"
) -> AsyncIterator[FleetQuota]:
    quota = FleetQuota.create(dsn, config=cfg, clock=SystemClock(), lease_s=lease_s, wake=wake)
    await quota.open()
    try:
        yield quota
    finally:
        await quota.aclose()


async def bucket_level(dsn: str, dim: str) -> float:
    """The shared bucket's level now, computed as the mirror does (database clock)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT state::text, extract(epoch from clock_timestamp())::float8"
            " FROM quota_fleet_account WHERE model = $1",
            MODEL,
        )
    finally:
        await conn.close()
    limit, window, level, at, _ = json.loads(row[0])["budget"]["buckets"][dim]
    return float(max(0.0, level - max(0.0, row[1] - (at or row[1])) * limit / window))


async def rows(dsn: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def until(check: Callable[[], Any], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        await asyncio.sleep(0.05)


async def test_concurrent_admits_from_two_instances_never_oversubscribe(pg_dsn: str) -> None:
    # 10 requests per minute: the 11th would wait ~6 s, more than the 1 s allowed.
    cfg = config("rpm:10,tpm:1000000", max_queue_wait_s=1.0)
    async with fleet(pg_dsn, cfg) as a, fleet(pg_dsn, cfg) as b:

        async def one(quota: FleetQuota, n: int) -> bool:
            try:
                await quota.admit(user(n), MODEL, 100)
            except QuotaExceeded:
                return False
            return True

        results = await asyncio.gather(*(one((a, b)[n % 2], n) for n in range(30)))
        assert sum(results) == 10
        assert sum(results[0::2]) > 0 and sum(results[1::2]) > 0  # both took part
        assert await bucket_level(pg_dsn, "rpm") <= 10.0 + 1e-6


async def test_a_refund_at_settle_is_seen_by_the_other_instance(pg_dsn: str) -> None:
    cfg = config("tpm:6000")
    async with fleet(pg_dsn, cfg) as a, fleet(pg_dsn, cfg) as b:
        admission = await a.admit(user(1), MODEL, 5_000, user_tokens=100)
        assert await bucket_level(pg_dsn, "tpm") > 4_900
        # 5,000 of 6,000 held: B's 2,000 must wait for the refund (or ~10 s of refill).
        task = asyncio.create_task(b.admit(user(2), MODEL, 2_000, user_tokens=100))
        await asyncio.sleep(0.5)
        assert not task.done()
        started = time.monotonic()
        await admission.settle(Usage(100, 50))
        second = await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 5  # not the ~10 s the refill alone needs
        level = await bucket_level(pg_dsn, "tpm")
        assert 2_000 < level < 2_300  # B's 2,000 plus A's real 150, minus refill
        await second.settle(Usage(100, 10))


async def test_header_levels_raise_the_shared_mirror(pg_dsn: str) -> None:
    cfg = config("tpm:6000")
    async with fleet(pg_dsn, cfg) as a, fleet(pg_dsn, cfg) as b:
        await b.admit(user(1), MODEL, 100)  # makes the row
        # The server says 4,000 of 6,000 tokens are used (another client's).
        a.observe(RateLimitSnapshot(MODEL, time.time(), limit_tokens=6_000, remaining_tokens=2_000))

        async def raised() -> bool:
            return await bucket_level(pg_dsn, "tpm") > 3_500

        await until(raised, "the header's level in the shared mirror", 10)
        # And B queues behind it: 2,500 more does not fit.
        # Waits, or is refused at the door: 4,000 + 2,500 is more than 6,000 either way.
        with pytest.raises((TimeoutError, QuotaExceeded)):
            await asyncio.wait_for(b.admit(user(2), MODEL, 2_500), 0.5)


async def test_a_retry_after_pauses_every_instance(pg_dsn: str) -> None:
    cfg = config("rpm:1000", max_queue_wait_s=2.0)
    async with fleet(pg_dsn, cfg) as a, fleet(pg_dsn, cfg) as b:
        (await b.admit(user(1), MODEL, 10)).settled = True
        a.observe(RateLimitSnapshot(MODEL, time.time(), status=429, retry_after_s=30.0))
        await asyncio.sleep(0.5)
        with pytest.raises(QuotaExceeded) as refused:
            await b.admit(user(2), MODEL, 10)
        assert "slow down" in refused.value.user_text


@pytest.mark.parametrize("wake", ["notify", "poll"])
async def test_a_waiter_in_one_instance_is_served_when_the_other_frees_room(
    pg_dsn: str, wake: Wake
) -> None:
    cfg = config("tpm:1000", max_queue_wait_s=120.0)
    async with fleet(pg_dsn, cfg, wake=wake) as a, fleet(pg_dsn, cfg, wake=wake) as b:
        held = await a.admit(user(1), MODEL, 900, user_tokens=10)
        waiting = asyncio.create_task(b.admit(user(2), MODEL, 900, user_tokens=10))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        started = time.monotonic()
        await held.settle(Usage(10, 0))  # refunds 890: B fits at once
        await asyncio.wait_for(waiting, 10)  # refill alone would take ~48 s
        assert time.monotonic() - started < 10


async def test_a_cancelled_waiter_leaves_the_fleet_queue(pg_dsn: str) -> None:
    cfg = config("rpm:1", max_queue_wait_s=120.0)
    async with fleet(pg_dsn, cfg) as a, fleet(pg_dsn, cfg) as b:
        await a.admit(user(1), MODEL, 10)
        task = asyncio.create_task(b.admit(user(2), MODEL, 10))
        await asyncio.sleep(0.3)
        assert not task.done()  # one request per minute: it waits
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        left = await rows(pg_dsn, "SELECT user_key FROM quota_fleet_request")
        assert [r["user_key"] for r in left] == [user(1).storage_id()]


async def test_per_user_requests_in_flight_count_across_instances(pg_dsn: str) -> None:
    cfg = config("rpm:1000", user_max_in_flight=1)
    async with fleet(pg_dsn, cfg) as a, fleet(pg_dsn, cfg) as b:
        first = await a.admit(user(1), MODEL, 10)
        second = asyncio.create_task(b.admit(user(1), MODEL, 10))
        await asyncio.sleep(0.5)
        assert not second.done()  # the same user, another process: waits its turn
        other = await b.admit(user(2), MODEL, 10)  # someone else is not held up
        await first.settle(Usage(5, 5))
        await asyncio.wait_for(second, 5)
        await other.settle(Usage(5, 5))


async def test_per_user_windows_count_across_instances(pg_dsn: str) -> None:
    cfg = config("rpm:1000", user_rpd=2, max_queue_wait_s=1.0)
    async with fleet(pg_dsn, cfg) as a, fleet(pg_dsn, cfg) as b:
        await (await a.admit(user(1), MODEL, 10)).settle(Usage(5, 5))
        await (await b.admit(user(1), MODEL, 10)).settle(Usage(5, 5))
        with pytest.raises(QuotaExceeded) as refused:
            await a.admit(user(1), MODEL, 10)
        assert refused.value.scope == "user"
        assert "2 requests today" in refused.value.user_text or "rpd" in refused.value.detail


async def test_a_dead_process_is_released_within_its_lease(pg_dsn: str) -> None:
    cfg = config("rpm:2,tpm:100000,tpd:1000000", user_max_in_flight=1, max_queue_wait_s=120.0)
    lease = 1.5
    async with fleet(pg_dsn, cfg, lease_s=lease) as survivor:
        dead = FleetQuota.create(pg_dsn, config=cfg, clock=SystemClock(), lease_s=lease)
        await dead.open()
        await dead.admit(user(1), MODEL, 500)  # in flight when it "crashes"
        await dead.admit(user(3), MODEL, 500)
        queued = asyncio.create_task(dead.admit(user(2), MODEL, 500))  # 2 per minute: waits
        await asyncio.sleep(0.3)
        assert not queued.done()
        # A crash: no settle, no release, no more heartbeats; only its sockets close.
        assert dead._heartbeat is not None
        dead._heartbeat.cancel()
        await asyncio.gather(dead._heartbeat, return_exceptions=True)
        await dead._ledger.aclose()
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        assert len(await rows(pg_dsn, "SELECT * FROM quota_fleet_request")) == 3
        crashed_at = time.monotonic()

        async def released() -> bool:
            return not await rows(pg_dsn, "SELECT * FROM quota_fleet_request")

        await until(released, "the dead process's rows reaped", 4 * lease + 5)
        # Reaped within the lease plus one heartbeat of the survivor (and some slack
        # for a loaded machine).
        assert time.monotonic() - crashed_at <= lease * 4 / 3 + 2.0
        # Its reservations still count as used in full (they may have reached the server).
        assert await bucket_level(pg_dsn, "tpd") > 900
        # The queued request never ran: handed back from user 2's windows.
        state = await rows(
            pg_dsn, "SELECT state::text FROM quota_fleet_user WHERE user_key = 'chat:u2'"
        )
        assert json.loads(state[0][0])["windows"]["rpm"][1] == 0
        procs = await rows(pg_dsn, "SELECT id FROM quota_fleet_process")
        assert [r["id"] for r in procs] == [survivor.process_id]


async def test_an_unreachable_database_refuses_with_a_clear_message(
    pg_cluster: PgCluster, pg_dsn: str
) -> None:
    cfg = config("rpm:1000")
    name = pg_dsn.rsplit("/", 1)[1]
    async with fleet(pg_dsn, cfg) as quota:
        await (await quota.admit(user(1), MODEL, 10)).settle(Usage(5, 5))
        admin = await asyncpg.connect(pg_cluster.admin_dsn)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                name,
            )
            with pytest.raises(QuotaExceeded) as refused:
                await quota.admit(user(2), MODEL, 10)
            assert refused.value.user_text == UNREACHABLE_TEXT
            assert "quota database 127.0.0.1:" in refused.value.detail
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()


async def test_usage_reports_the_shared_windows_and_account(pg_dsn: str) -> None:
    cfg = config("rpm:100,tpm:6000", default_model=MODEL)
    async with fleet(pg_dsn, cfg) as a, fleet(pg_dsn, cfg) as b:
        await (await a.admit(user(1), MODEL, 500, user_tokens=100)).settle(Usage(100, 50))
        text = await b.report(user(1), admin=True)  # the other process tells the same
        assert MODEL in text
        assert "150" in text  # the user's tokens this minute: the real use
        assert "6,000" in text or "6000" in text  # the account's limit, for admins


async def test_a_request_cancelled_while_its_wait_is_announced_is_released(
    pg_dsn: str,
) -> None:
    cfg = config("rpm:1", max_queue_wait_s=120.0)
    async with fleet(pg_dsn, cfg) as a:
        await a.admit(user(1), MODEL, 10)
        announced = asyncio.Event()

        async def on_wait(seconds: float, reason: object) -> None:
            announced.set()
            await asyncio.Event().wait()  # a sink that hangs while showing "queued"

        task = asyncio.create_task(a.admit(user(2), MODEL, 10, on_wait=on_wait))
        await asyncio.wait_for(announced.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        left = await rows(pg_dsn, "SELECT user_key FROM quota_fleet_request")
        assert [r["user_key"] for r in left] == [user(1).storage_id()]
