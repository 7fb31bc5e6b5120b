"""Discord adapter: ``DiscordAdapter(settings, engine)`` with ``start()`` / ``aclose()``.

``start`` logs in, publishes the slash commands, connects the gateway and returns once
the bot is ready; configuration problems (a rejected token, the MESSAGE CONTENT
intent disabled in the developer portal) raise ``ConfigError`` with the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import ClassVar

import discord
import yarl

from adapters.discord.client import DiscordBot
from adapters.discord.config import PLATFORM, DiscordSettings
from adapters.discord.surface import DiscordSurface
from bot.adapter import AdapterContext
from bot.errors import ConfigError
from bot.types import ReplyRef

__all__ = ["DiscordAdapter", "DiscordSettings"]

log = logging.getLogger(__name__)

PRIVILEGED_HELP = (
    "Discord refused the MESSAGE CONTENT intent. Enable it in the Discord developer portal "
    "(Applications → your bot → Bot → Privileged Gateway Intents → Message Content Intent), "
    "save, and start the bot again."
)


def apply_endpoints(settings: DiscordSettings) -> None:
    """Point discord.py at ``DISCORD_API_BASE`` / ``DISCORD_GATEWAY_URL`` when set.

    discord.py reads both from class attributes (``Route.BASE`` for every REST call,
    ``DiscordWebSocket.DEFAULT_GATEWAY`` for the first connection), so that is where a
    proxy or a local stand-in is configured.
    """
    if settings.api_base:
        discord.http.Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


class DiscordAdapter:
    """Runs the Discord bot on the current event loop (implements ``bot.ports.Adapter``)."""

    name: ClassVar[str] = "discord"

    def __init__(
        self,
        context: AdapterContext[DiscordSettings],
        *,
        guild_ready_timeout: float = 2.0,
        ready_timeout_s: float = 60.0,
        shutdown_grace_s: float = 10.0,
    ) -> None:
        self._context = context
        self._settings = context.settings
        self._guild_ready_timeout = guild_ready_timeout
        self._ready_timeout_s = ready_timeout_s
        self._shutdown_grace_s = shutdown_grace_s
        self._client: DiscordBot | None = None
        self._gateway: asyncio.Task[None] | None = None
        context.engine.describe_platform(PLATFORM, context.settings.help())

    @property
    def connected(self) -> bool:
        """Logged in and the gateway is up (discord.py reconnects on its own)."""
        client = self._client
        return client is not None and client.is_ready() and not client.is_closed()

    @property
    def client(self) -> DiscordBot | None:
        """The running discord.py client (None before ``start``)."""
        return self._client

    async def start(self) -> None:
        """Log in, sync commands, connect; return when ready. Raises ``ConfigError``."""
        token = self._settings.bot_token
        if not self._settings.enabled() or token is None:
            raise ConfigError("DISCORD_BOT_TOKEN is not set.")
        apply_endpoints(self._settings)
        client = DiscordBot(self._context, guild_ready_timeout=self._guild_ready_timeout)
        self._client = client
        try:
            await client.login(token.get_secret_value())
        except discord.LoginFailure:
            await self.aclose()
            raise ConfigError(
                "Discord rejected DISCORD_BOT_TOKEN: copy the token again from the developer "
                "portal (Applications → your bot → Bot → Reset Token)."
            ) from None
        except (discord.HTTPException, OSError) as exc:
            await self.aclose()
            raise ConfigError(f"Could not reach Discord to log in: {exc}") from None
        self._gateway = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        await self._wait_ready(client, self._gateway)
        self._gateway.add_done_callback(_report_end)

    async def _wait_ready(self, client: DiscordBot, gateway: asyncio.Task[None]) -> None:
        ready = asyncio.create_task(client.wait_until_ready())
        done, _ = await asyncio.wait(
            {gateway, ready}, timeout=self._ready_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if gateway in done:
            ready.cancel()
            error = gateway.exception()
            await self.aclose()
            if isinstance(error, discord.PrivilegedIntentsRequired):
                raise ConfigError(PRIVILEGED_HELP)
            raise ConfigError(f"The Discord gateway connection failed: {error}")
        if not done:
            ready.cancel()
            log.warning(
                "Discord is not ready after %.0f s; still connecting in the background.",
                self._ready_timeout_s,
            )

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        """Edit a reply an earlier process left streaming (``bot.ports.ReplyFinalizer``):
        its place is a channel id, its messages are edited there by id."""
        client = self._client
        if client is None or not reply.place.isdigit():
            log.warning("cannot find the interrupted reply %s in Discord", reply)
            return
        channel = client.get_partial_messageable(int(reply.place))
        surface = DiscordSurface(channel, settings=self._settings)
        await self._context.rewrite_reply(surface, reply.message_ids, text)

    async def aclose(self) -> None:
        """Let in-flight answers finish (briefly), then disconnect."""
        client, self._client = self._client, None
        gateway, self._gateway = self._gateway, None
        if client is None:
            return
        await client.drain(self._shutdown_grace_s)
        await client.close()
        if gateway is not None:
            gateway.remove_done_callback(_report_end)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gateway


def _report_end(task: asyncio.Task[None]) -> None:
    """The gateway task ended while running: say why (the bot no longer receives events)."""
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, discord.PrivilegedIntentsRequired):
        log.error("Discord disconnected: %s", PRIVILEGED_HELP)
    elif error is not None:
        log.error("Discord disconnected for good: %s", error)
