"""Event claims and conversation leases on a real PostgreSQL shared by two processes
(two ``PgFleet``s with their own pools stand for two bot processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.errors import StoreError
from bot.store.pg_fleet import PG_FLEET_DDL, PgFleet
from bot.types import ConversationKey, Platform

THREAD = ConversationKey(Platform("slack"), space="T1", channel="C1", thread="1.2")


@pytest.fixture
async def pools(pg_dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    first = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    second = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    for statement in PG_FLEET_DDL:
        await first.execute(statement)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_an_event_is_claimed_by_one_process_only(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    a, b = PgFleet(pools[0]), PgFleet(pools[1])
    results = await asyncio.gather(
        *[fleet.claim_event("slack:Ev1", ttl_s=60) for fleet in (a, b) for _ in range(5)]
    )
    assert sorted(results) == [False] * 9 + [True]
    assert await b.claim_event("slack:Ev2", ttl_s=60)


async def test_a_claim_older_than_its_ttl_is_taken_again(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    a, b = PgFleet(pools[0]), PgFleet(pools[1])
    assert await a.claim_event("slack:Ev1", ttl_s=0.2)
    assert not await b.claim_event("slack:Ev1", ttl_s=0.2)
    await asyncio.sleep(0.3)
    assert await b.claim_event("slack:Ev1", ttl_s=0.2)


async def test_a_conversation_runs_one_turn_at_a_time_across_processes(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    a, b = PgFleet(pools[0]), PgFleet(pools[1])
    trace: list[str] = []
    inside = asyncio.Event()

    async def turn(fleet: PgFleet, name: str, hold: float) -> None:
        async with fleet.turn_lease(THREAD):
            trace.append(f"{name} in")
            inside.set()
            await asyncio.sleep(hold)
            trace.append(f"{name} out")

    first = asyncio.create_task(turn(a, "a", 0.3))
    await inside.wait()
    await turn(b, "b", 0.0)
    await first
    assert trace == ["a in", "a out", "b in", "b out"]


async def test_a_dead_holders_lease_expires(pools: tuple[asyncpg.Pool, asyncpg.Pool]) -> None:
    dead = PgFleet(pools[0], lease_ttl_s=0.5)
    alive = PgFleet(pools[1], lease_ttl_s=0.5)
    assert await dead._take(THREAD.storage_id())  # taken, never renewed nor dropped
    started = asyncio.get_running_loop().time()
    async with alive.turn_lease(THREAD):
        waited = asyncio.get_running_loop().time() - started
    assert 0.2 < waited < 10


async def test_a_live_holder_keeps_its_lease_past_the_ttl(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    a, b = PgFleet(pools[0], lease_ttl_s=0.3), PgFleet(pools[1], lease_ttl_s=0.3)
    async with a.turn_lease(THREAD):
        await asyncio.sleep(1.0)  # over three TTLs: renewed meanwhile
        assert not await b._take(THREAD.storage_id())
    assert await b._take(THREAD.storage_id())


async def test_a_lost_database_is_a_store_error(pg_dsn: str) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    fleet = PgFleet(pool)
    try:
        with pytest.raises(StoreError):  # no tables: the server refuses the statement
            await fleet.claim_event("slack:Ev1", ttl_s=60)
    finally:
        await pool.close()
