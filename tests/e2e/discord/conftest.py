"""Fixtures for the Discord end-to-end suites: a started fake Discord that discord.py
is pointed at, and a helper that runs any ``discord.Client`` against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import discord
import pytest

from tests.fakes.discord_server import FakeDiscord

pytestmark = pytest.mark.e2e


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A ``FakeDiscord`` on 127.0.0.1 (port 0); discord.py's URLs point at it during the test."""
    async with FakeDiscord() as fake:
        with fake.patch():
            yield fake
    assert fake.server_errors == [] and fake.gateway.errors == [], "the fake itself failed"


@contextlib.asynccontextmanager
async def running(
    client: discord.Client, token: str, *, within: float = 5.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``client.start(token)`` in a task until ``on_ready``; close it on exit.

    Yields the task so a test can assert how it ended (e.g. with an exception).
    """
    task = asyncio.create_task(client.start(token))
    try:
        async with asyncio.timeout(within):
            ready = asyncio.create_task(client.wait_until_ready())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                ready.cancel()
                task.result()  # surface a start-up failure right here
                raise AssertionError("the client stopped before it was ready")
            await ready
        yield task
    finally:
        await client.close()
        await asyncio.wait({task}, timeout=5)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a test that cares inspects the task itself
