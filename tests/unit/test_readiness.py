"""``bot.ops.Readiness``: what /readyz reports, without HTTP, on a fake clock."""

from __future__ import annotations

import asyncio

from bot.errors import StoreError
from bot.metrics import Metrics
from bot.ops import Readiness
from bot.store import InMemoryStore
from tests.fakes.clock import FakeClock


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
