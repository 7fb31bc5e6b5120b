"""Slack adapter: ``SlackAdapter(context)`` with ``start()`` / ``aclose()``.

Socket Mode when SLACK_APP_TOKEN is set (no public URL needed), else HTTP mode: an
aiohttp server on SLACK_HTTP_PORT whose ``/slack/events`` takes events, slash commands
and interactivity. Each request's signature (SLACK_SIGNING_SECRET) is checked on the
raw bytes before the body is read, as Bolt's ``RequestVerification`` would (a 401
``{"error": "invalid request"}``, like Bolt's); a signed body Bolt can't parse (not
UTF-8, not JSON, not an object) is a 400; each is one log line, no traceback. The Web API
client goes to SLACK_API_BASE_URL (default Slack's) and retries connection errors
and 429s (sleeping ``Retry-After``). ``start`` checks the tokens with Slack first, so
a wrong one fails at start-up with a ``ConfigError`` that says what to fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import ClassVar

import aiohttp
from aiohttp import web
from pydantic import SecretStr
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.app import Identity, SlackBot
from adapters.slack.config import PLATFORM, SlackSettings
from adapters.slack.ratelimits import RateLimitCounter
from adapters.slack.surface import ReplyTarget, SlackSurface
from bot.adapter import NO_METRICS, AdapterContext
from bot.errors import ConfigError, PlatformLost
from bot.types import ReplyRef

__all__ = ["EVENTS_PATH", "SlackAdapter", "SlackSettings"]

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://slack.com/api/"
EVENTS_PATH = "/slack/events"
SIGNATURE_MAX_AGE_S = 300


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""


class SlackAdapter:
    """Runs the Slack bot on the current event loop (implements ``bot.ports.Adapter``)."""

    name: ClassVar[str] = "slack"

    def __init__(
        self,
        context: AdapterContext[SlackSettings],
        *,
        shutdown_grace_s: float | None = None,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self._context = context
        self._settings = context.settings
        self._grace_s = context.shutdown_grace_s if shutdown_grace_s is None else shutdown_grace_s
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self.bot: SlackBot | None = None
        self.http_port: int | None = None
        context.engine.describe_platform(PLATFORM, context.settings.help())

    @property
    def connected(self) -> bool:
        """Socket Mode: its WebSocket is open; HTTP mode: the listener is up."""
        if self.bot is None:
            return False
        if self._socket is not None:
            session = self._socket.client.current_session
            return session is not None and not session.closed
        return self._runner is not None

    async def start(self) -> None:
        """Check the tokens, then connect (Socket Mode) or listen (HTTP mode)."""
        if not self._settings.enabled():
            raise ConfigError(
                "Slack needs SLACK_BOT_TOKEN plus SLACK_APP_TOKEN (Socket Mode) "
                "or SLACK_SIGNING_SECRET (HTTP mode)."
            )
        self._session = aiohttp.ClientSession()
        try:
            client = self._client(self._session)
            identity = await _identify(client)
            app_token = _secret(self._settings.app_token)
            self.bot = SlackBot(
                self._context,
                client=client,
                identity=identity,
                signing_secret=_secret(self._settings.signing_secret),
            )
            if app_token:
                await self._connect(client, app_token)
            else:
                await self._listen()
        except BaseException:
            await self.aclose()
            raise

    def _client(self, session: aiohttp.ClientSession) -> AsyncWebClient:
        base = (self._settings.api_base_url or DEFAULT_API_BASE).rstrip("/") + "/"
        metrics = self._context.metrics
        # The counter comes first: the client asks each handler in turn, until one retries.
        counting = [] if metrics is NO_METRICS else [RateLimitCounter(metrics, PLATFORM)]
        return AsyncWebClient(
            token=_secret(self._settings.bot_token),
            base_url=base,
            session=session,
            retry_handlers=[
                *counting,
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            ],
        )

    async def _connect(self, client: AsyncWebClient, app_token: str) -> None:
        assert self.bot is not None
        if not app_token.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN must be an app-level token (it starts xapp-).")
        try:  # the SDK would retry a refused token forever: ask once first
            await client.apps_connections_open(app_token=app_token)
        except SlackApiError as exc:
            raise ConfigError(
                f"Slack refused SLACK_APP_TOKEN ({exc.response.get('error')}): create an "
                "app-level token with the connections:write scope and enable Socket Mode."
            ) from None
        self._socket = AsyncSocketModeHandler(self.bot.app, app_token=app_token)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._socket.connect_async()  # type: ignore[no-untyped-call]
        except TimeoutError:
            # A network fault, not a setting: exit 1, so a supervisor tries again.
            raise PlatformLost("Could not open the Slack Socket Mode connection.") from None
        log.info("Slack connected over Socket Mode as %s", self.bot.identity.bot_user_id)

    async def _listen(self) -> None:
        assert self.bot is not None
        app = self.bot.app
        secret = _secret(self._settings.signing_secret).encode()

        async def events(request: web.Request) -> web.Response:
            body = await request.read()
            if not _signed(secret, body, request):
                log.info("Slack HTTP mode: refused a request without a valid signature")
                return web.json_response({"error": "invalid request"}, status=401)
            try:
                bolt_request = _bolt_request(body, request)
            except _UNREADABLE as exc:
                log.warning(
                    "Slack HTTP mode: refused a signed request whose body can't be read "
                    "(%s, %d bytes of %s): %s",
                    type(exc).__name__,
                    len(body),
                    request.content_type,
                    exc,
                )
                return web.json_response({"error": "invalid request body"}, status=400)
            return await to_aiohttp_response(await app.async_dispatch(bolt_request))

        server = web.Application()
        server.router.add_post(EVENTS_PATH, events)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.http_host, self._settings.http_port)
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])
        log.info(
            "Slack HTTP mode listening on %s:%d at %s",
            self._settings.http_host,
            self.http_port,
            EVENTS_PATH,
        )

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        """Edit a reply an earlier process left streaming (``bot.ports.ReplyFinalizer``):
        ``chat.update`` on its channel and each message's ts."""
        bot = self.bot
        target = ReplyTarget.at(bot.identity.team_id, reply.place) if bot else None
        if bot is None or target is None:
            log.warning("cannot find the interrupted reply %s in Slack", reply)
            return
        pacer = self._context.pacer
        surface = SlackSurface(bot.client, target, settings=self._settings, pacer=pacer)
        surface.take_over(reply.message_ids)
        await self._context.rewrite_reply(surface, reply.message_ids, text)

    async def aclose(self) -> None:
        """Stop receiving, let answers in flight finish (briefly), then disconnect."""
        bot, self.bot = self.bot, None
        socket, self._socket = self._socket, None
        runner, self._runner = self._runner, None
        session, self._session = self._session, None
        if socket is not None:
            await _close_socket(socket)
        if runner is not None:
            await runner.cleanup()
        if bot is not None:
            await bot.drain(self._grace_s)
        if session is not None:
            await session.close()
        # The Socket Mode client cancels its tasks without awaiting them.
        for _ in range(3):
            await asyncio.sleep(0)


# The longest wait for Slack to answer the Socket Mode close frame at shutdown.
SOCKET_CLOSE_S = 1.0


async def _close_socket(handler: AsyncSocketModeHandler) -> None:
    """Close the Socket Mode connection, waiting at most ``SOCKET_CLOSE_S``.

    slack-sdk's ``SocketModeClient.close`` disconnects first, and aiohttp's
    ``ClientWebSocketResponse.close`` sends a close frame and then waits for the
    peer's own close frame for up to ``ws_close`` (10 s in aiohttp's
    ``DEFAULT_WS_CLIENT_TIMEOUT``; slack-sdk's ``ws_connect`` sets none). A peer that
    never answers held every shutdown, even an idle one, for those 10 s. Past the
    bound the connection is dropped, and the client's tasks (cancelled after the
    disconnect, which never returned) and HTTP session are closed here.
    """
    client = handler.client
    try:
        async with asyncio.timeout(SOCKET_CLOSE_S):
            await handler.close_async()  # type: ignore[no-untyped-call]
    except TimeoutError:
        log.info("Slack did not answer the Socket Mode close frame; connection dropped")
        for task in (client.message_processor, client.current_session_monitor):
            if task is not None:
                task.cancel()
        if client.message_receiver is not None:
            client.message_receiver.cancel()
        await client.aiohttp_client_session.close()


# What a body Bolt can't parse raises while the request is built (UnicodeDecodeError and
# json.JSONDecodeError are ValueErrors; JSON that is not an object fails in the
# payload readers).
_UNREADABLE = (ValueError, TypeError, AttributeError, KeyError)


def _signed(secret: bytes, body: bytes, request: web.Request) -> bool:
    """Slack's v0 signature (``v0=`` HMAC-SHA256 of ``v0:<timestamp>:<raw body>``), with
    a timestamp within 5 minutes: what Bolt's ``RequestVerification`` checks, on the
    bytes (slack-sdk's ``SignatureVerifier`` decodes them as UTF-8 first)."""
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE_S:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


def _bolt_request(body: bytes, request: web.Request) -> AsyncBoltRequest:
    """What ``to_bolt_request`` builds, from bytes already read; raises ``_UNREADABLE``."""
    bolt_request = AsyncBoltRequest(
        body=body.decode("utf-8"),
        query=request.query_string,
        headers=request.headers,  # type: ignore[arg-type]
    )
    if not isinstance(bolt_request.body, dict):
        raise ValueError(f"the body is a JSON {type(bolt_request.body).__name__}, not an object")
    return bolt_request


async def _identify(client: AsyncWebClient) -> Identity:
    """``auth.test``: checks SLACK_BOT_TOKEN and learns the bot's ids."""
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        raise ConfigError(
            f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error')}): copy the Bot User "
            "OAuth Token (xoxb-…) from the app's OAuth & Permissions page."
        ) from None
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        raise PlatformLost(f"Could not reach Slack to check SLACK_BOT_TOKEN: {exc}") from None
    return Identity(
        team_id=str(response["team_id"]),
        bot_user_id=str(response["user_id"]),
        bot_id=str(response.get("bot_id") or ""),
    )
