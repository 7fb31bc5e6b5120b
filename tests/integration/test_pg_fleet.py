"""Event claims and conversation leases on a real PostgreSQL shared by two processes
(two ``PostgresStore``s, each with its own pool, stand for two bot processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.store.pg_fleet import PgFleet
from bot.store.postgres import PostgresStore
from bot.types import ConversationKey, Platform

THREAD = ConversationKey(Platform("slack"), space="T1", channel="C1", thread="1.2")


@pytest.fixture
async def stores(pg_dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    first, second = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    await first.open()
    await second.open()
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


def fleet(store: PostgresStore, ttl_s: float) -> PgFleet:
    return PgFleet(store._connection, lease_ttl_s=ttl_s)


async def test_an_event_is_claimed_by_one_process_only(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    results = await asyncio.gather(
        *[store.claim_event("slack:Ev1", ttl_s=60) for store in stores for _ in range(5)]
    )
    assert sorted(results) == [False] * 9 + [True]
    assert await stores[1].claim_event("slack:Ev2", ttl_s=60)


async def test_a_conversation_runs_one_turn_at_a_time_across_processes(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    trace: list[str] = []
    inside = asyncio.Event()

    async def turn(store: PostgresStore, name: str, hold: float) -> None:
        async with store.turn_lease(THREAD):
            trace.append(f"{name} in")
            inside.set()
            await asyncio.sleep(hold)
            trace.append(f"{name} out")

    first = asyncio.create_task(turn(a, "a", 0.3))
    await inside.wait()
    await turn(b, "b", 0.0)
    await first
    assert trace == ["a in", "a out", "b in", "b out"]


async def test_a_dead_holders_lease_expires(stores: tuple[PostgresStore, PostgresStore]) -> None:
    dead, alive = fleet(stores[0], 0.5), fleet(stores[1], 0.5)
    assert await dead._take(THREAD.storage_id())  # taken, never renewed nor dropped
    started = asyncio.get_running_loop().time()
    async with alive.turn_lease(THREAD):
        waited = asyncio.get_running_loop().time() - started
    assert 0.2 < waited < 10


async def test_a_live_holder_keeps_its_lease_past_the_ttl(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = fleet(stores[0], 0.3), fleet(stores[1], 0.3)
    async with a.turn_lease(THREAD):
        await asyncio.sleep(1.0)  # over three TTLs: renewed meanwhile
        assert not await b._take(THREAD.storage_id())
    assert await b._take(THREAD.storage_id())
