"""``bot.ops.Readiness``: what /readyz reports, without HTTP, on a fake clock; and the
conversations gauge ``/metrics`` counts at each scrape (served on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from bot.errors import StoreError
from bot.metrics import Metrics
from bot.ops import OpsServer, Readiness
from bot.store import InMemoryStore
from bot.types import ConversationKey, Platform
from tests.fakes.clock import FakeClock
from tests.scrape import sample


class Switch:
    def __init__(self, name: str, connected: bool) -> None:
        self.name, self.connected = name, connected


class FailingStore(InMemoryStore):
    def __init__(self, *, hang: bool = False) -> None:
        super().__init__()
        self.hang = hang

    async def ping(self) -> None:
        if self.hang:
            await asyncio.sleep(60)
        raise StoreError(detail="disk I/O error")


async def test_down_adapters_are_named_with_how_long_they_have_been_down() -> None:
    clock = FakeClock()
    a, b = Switch("a", True), Switch("b", False)
    readiness = Readiness([a, b], InMemoryStore(), clock, Metrics())  # type: ignore[list-item]
    readiness.sample()
    await clock.advance(40)
    assert await readiness.check() == {"b": "disconnected for 40 s"}
    b.connected, a.connected = True, False
    await clock.advance(5)
    assert await readiness.check() == {"a": "disconnected for 0 s"}
    a.connected = True
    assert await readiness.check() == {}


async def test_a_database_that_fails_or_hangs_is_down() -> None:
    clock = FakeClock()
    up = Switch("a", True)
    failing = Readiness([up], FailingStore(), clock, Metrics())  # type: ignore[list-item]
    assert await failing.check() == {"database": "disk I/O error"}
    hanging = Readiness([up], FailingStore(hang=True), clock, Metrics())  # type: ignore[list-item]
    assert await asyncio.wait_for(hanging.check(), 5) == {"database": "no answer within 2 s"}


class CountingStore(InMemoryStore):
    """Counts conversations until ``failing`` is set."""

    failing = False

    async def count_conversations(self) -> int:
        if self.failing:
            raise StoreError(detail="database is locked")
        return await super().count_conversations()


async def test_metrics_count_conversations_and_still_answer_while_the_count_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, metrics = CountingStore(), Metrics()
    await store.add_message(ConversationKey(Platform("t"), channel="c"), role="user", content="x")
    readiness = Readiness([], store, FakeClock(), metrics)
    ops = OpsServer(readiness, metrics, store, host="127.0.0.1", port=0)
    await ops.start()
    try:
        async with aiohttp.ClientSession() as http:

            async def scrape() -> str:
                async with http.get(f"http://127.0.0.1:{ops.port}/metrics") as r:
                    assert r.status == 200
                    return await r.text()

            assert sample(await scrape(), "groqbot_conversations") == 1
            store.failing = True
            with caplog.at_level(logging.WARNING, logger="bot.ops"):
                for _ in range(3):  # the last known count, and one line for the outage
                    assert sample(await scrape(), "groqbot_conversations") == 1
            loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
            [line] = [r.getMessage() for r in loud if r.name == "bot.ops"]
            assert "database is locked" in line
            store.failing = False
            another = ConversationKey(Platform("t"), channel="d")
            await store.add_message(another, role="user", content="y")
            assert sample(await scrape(), "groqbot_conversations") == 2
    finally:
        await ops.aclose()
