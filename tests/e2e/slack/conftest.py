"""Fixtures for the Slack end-to-end suites: a started fake Slack, and helpers that run
a Bolt ``AsyncApp`` against it over Socket Mode or HTTP mode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

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


def raw_app(fake: FakeSlack, *, signing_secret: str = "") -> AsyncApp:
    """A plain Bolt app (not our adapter) whose Web API client is pointed at the fake."""
    return AsyncApp(client=web_client(fake), signing_secret=signing_secret)


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
