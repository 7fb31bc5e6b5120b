"""Fixtures for the Discord end-to-end suites: a started fake Discord that discord.py
is pointed at, a helper that runs any ``discord.Client`` against it, and ``build``:
settings for our adapter pointed at both fakes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import discord
import pytest

from adapters.discord import DiscordSettings
from bot.settings import Settings
from tests.configured import Configured, configure
from tests.fakes.discord_server import FakeDiscord

Build = Callable[..., Configured[DiscordSettings]]

pytestmark = pytest.mark.e2e


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A ``FakeDiscord`` on 127.0.0.1 (port 0); discord.py's URLs point at it during the test."""
    async with FakeDiscord() as fake:
        with fake.patch():
            yield fake
    assert fake.server_errors == [] and fake.gateway.errors == [], "the fake itself failed"


@pytest.fixture
def build(settings_factory: Callable[..., Settings], fake_discord: FakeDiscord) -> Build:
    """Settings pointing the adapter at both fakes; edits paced at the 0.2 s minimum.
    ``discord_*`` keywords go to Discord's group, the rest to the core."""

    def make(**overrides: Any) -> Configured[DiscordSettings]:
        values = {**fake_discord.settings_overrides(), "discord_edit_interval_s": 0.2}
        return configure(settings_factory, DiscordSettings, "discord_", {**values, **overrides})

    return make


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
