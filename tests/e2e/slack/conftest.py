"""Fixtures for the Slack end-to-end suites: a started fake Slack, helpers that run a
plain Bolt ``AsyncApp`` against it over Socket Mode or HTTP mode, and helpers that run
our ``SlackAdapter`` on a real engine (fake Groq, SQLite in tmp_path)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import SlackAdapter, SlackSettings
from bot.app import Runtime, open_runtime
from bot.ports import Clock
from bot.settings import Settings
from tests.configured import Configured, configure
from tests.fakes.slack_server import FakeSlack

pytestmark = pytest.mark.e2e


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A ``FakeSlack`` on 127.0.0.1 (port 0), closed after the test."""
    async with FakeSlack() as fake:
        yield fake


def web_client(fake: FakeSlack, *, rate_limit_retries: int = 2) -> AsyncWebClient:
    """A bot-token client pointed at the fake, with the retry handlers a bot should use."""
    return AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.base_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
        ],
    )


def raw_app(
    fake: FakeSlack, *, signing_secret: str = "", raise_error_for_unhandled_request: bool = False
) -> AsyncApp:
    """A plain Bolt app (not our adapter) whose Web API client is pointed at the fake."""
    return AsyncApp(
        client=web_client(fake),
        signing_secret=signing_secret,
        raise_error_for_unhandled_request=raise_error_for_unhandled_request,
    )


@contextlib.asynccontextmanager
async def socket_mode(fake: FakeSlack, app: AsyncApp) -> AsyncIterator[AsyncSocketModeHandler]:
    """Connect ``app`` over Socket Mode; close the handler (and its sessions) on exit."""
    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    try:
        async with asyncio.timeout(5):  # the client retries a failed connect forever
            await handler.connect_async()  # type: ignore[no-untyped-call]
        await fake.wait_for(lambda: fake.connected, what="the app's socket")
        yield handler
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        # The client cancels its tasks without awaiting them: let them finish.
        for _ in range(5):
            await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def http_mode(app: AsyncApp) -> AsyncIterator[str]:
    """Serve ``app`` over HTTP on 127.0.0.1 (port 0); yields the events URL."""

    async def endpoint(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    server = web.Application()
    server.router.add_post("/slack/events", endpoint)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    finally:
        await runner.cleanup()


class ScaledClock:
    """A ``bot.ports.Clock`` running ``factor`` times faster than real time.

    Shared by the engine (pacer, quota) and the fake (rate windows), it turns Slack's
    per-minute budgets into seconds of test time while both sides agree on every
    timestamp. Only our own pacing runs on it; network I/O stays real.
    """

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._t0 = time.monotonic()
        self._epoch0 = time.time()

    def now(self) -> float:
        return 1_000.0 + (time.monotonic() - self._t0) * self.factor

    def time(self) -> float:
        return self._epoch0 + (time.monotonic() - self._t0) * self.factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)


SlackConfig = Configured[SlackSettings]


@pytest.fixture
def slack_settings(
    fake_slack: FakeSlack, settings_factory: Callable[..., Settings]
) -> Callable[..., SlackConfig]:
    """Settings for the adapter against ``fake_slack`` (Socket Mode unless overridden);
    ``slack_*`` keywords go to Slack's group, the rest to the core."""

    def build(**overrides: Any) -> SlackConfig:
        values: dict[str, Any] = {
            "slack_bot_token": fake_slack.bot_token,
            "slack_app_token": fake_slack.app_token,
            "slack_api_base_url": fake_slack.base_url,
            "slack_http_host": "127.0.0.1",
            "slack_edit_interval_s": 0.2,
        }
        values.update(overrides)
        return configure(settings_factory, SlackSettings, "slack_", values)

    return build


@contextlib.asynccontextmanager
async def running_adapter(
    settings: SlackConfig, *, clock: Clock | None = None
) -> AsyncIterator[tuple[SlackAdapter, Runtime]]:
    """A runtime (engine, store, Groq client) plus a started ``SlackAdapter``."""
    async with open_runtime(settings.core, clock=clock) as runtime:
        adapter = SlackAdapter(runtime.context(settings.platform))
        await adapter.start()
        try:
            yield adapter, runtime
        finally:
            await adapter.aclose()
