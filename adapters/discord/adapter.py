"""Discord adapter: ``DiscordAdapter(settings, engine)`` with ``start()`` / ``aclose()``.

``start`` logs in, publishes the slash commands, connects the gateway and returns once
the bot is ready; configuration problems (a rejected token, the MESSAGE CONTENT
intent disabled in the developer portal) raise ``ConfigError`` with the fix.

The gateway is kept up here as well as by discord.py. discord.py reconnects after
network failures, but a payload it cannot parse (a missing field, a wrong type, a frame
that is not JSON) raises out of ``Client.connect()`` and leaves the bot deaf: such a
session is closed and a fresh one identified after a bounded backoff. When that keeps
failing, when Discord closes the session for good (bad token, intents), or when the
gateway stays down longer than ``lost_after_s`` whatever discord.py tries, the adapter
reports it through ``AdapterContext.on_fatal`` and the process exits for a restart.

With ``DISCORD_SHARD_COUNT`` set the client is discord.py's ``AutoShardedClient``
(``shards``): ``connected`` then needs every shard this process runs, ``down_parts``
names those that are down, and ``hears`` tells the conversations of its shards' guilds
from those another process answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar

import discord
import yarl

from adapters.discord.client import DiscordBot
from adapters.discord.config import PLATFORM, DiscordSettings
from adapters.discord.shards import ShardedDiscordBot, build_client, down_shards, hears
from adapters.discord.surface import DiscordSurface
from bot.adapter import AdapterContext
from bot.errors import ConfigError, PlatformLost
from bot.types import ConversationKey, ReplyRef

__all__ = ["DiscordAdapter", "DiscordSettings"]

log = logging.getLogger(__name__)

# Waits before each fresh session after discord.py gave up on one; one more failure in
# a row (sessions that did not last STABLE_AFTER_S) and the platform is lost.
RECONNECT_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 60.0
# Longest the gateway may stay disconnected, through discord.py's own reconnects.
LOST_AFTER_S = 300.0
# Close codes after which discord.py closes the client: nothing but a restart (after a
# fix) helps; PrivilegedIntentsRequired is 4014.
_FATAL = (discord.ConnectionClosed, discord.PrivilegedIntentsRequired)

# Close codes that a setting fixes (topics/opcodes-and-status-codes#gateway-close-event-codes).
SHARD_HELP = {
    4010: "Discord refused the shard this process asked for (close code 4010 Invalid shard): "
    "check DISCORD_SHARD_COUNT and DISCORD_SHARD_IDS (each id below the count).",
    4011: "Discord requires this bot to shard (close code 4011 Sharding required: it is in "
    "too many servers for one connection). Set DISCORD_SHARD_COUNT=auto, or a count and "
    "DISCORD_SHARD_IDS for each process.",
}

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
        shutdown_grace_s: float | None = None,
        reconnect_delays_s: Sequence[float] = RECONNECT_DELAYS_S,
        stable_after_s: float = STABLE_AFTER_S,
        lost_after_s: float = LOST_AFTER_S,
    ) -> None:
        self._context = context
        self._settings = context.settings
        self._clock = context.clock
        self._guild_ready_timeout = guild_ready_timeout
        self._ready_timeout_s = ready_timeout_s
        self._shutdown_grace_s = (
            context.shutdown_grace_s if shutdown_grace_s is None else shutdown_grace_s
        )
        self._reconnect_delays_s = tuple(reconnect_delays_s)
        self._stable_after_s = stable_after_s
        self._lost_after_s = lost_after_s
        self._client: DiscordBot | None = None
        self._gateway: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        self._lost = False
        self.fresh_sessions = 0  # sessions started after discord.py gave one up
        context.engine.describe_platform(PLATFORM, context.settings.help())

    @property
    def connected(self) -> bool:
        """Logged in and a gateway session is up (with shards: every one this process runs)."""
        client = self._client
        if client is None or not client.is_ready() or client.is_closed():
            return False
        if isinstance(client, discord.AutoShardedClient):
            return not down_shards(client)
        return client.ws is not None and client.ws.open

    def down_parts(self) -> list[str]:
        """The shards whose connection is down ("shard 1"); empty when unsharded
        (``bot.ports.PartedAdapter``, for /readyz)."""
        client = self._client
        if not isinstance(client, discord.AutoShardedClient):
            return []
        return [f"shard {shard}" for shard in down_shards(client)]

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
        client = build_client(self._context, guild_ready_timeout=self._guild_ready_timeout)
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
            # A network fault, not a setting: exit 1, so a supervisor tries again.
            raise PlatformLost(f"Could not reach Discord to log in: {exc}") from None
        self._gateway = asyncio.create_task(self._keep_connected(client), name="discord-gateway")
        await self._wait_ready(client, self._gateway)
        self._gateway.add_done_callback(self._gateway_ended)
        self._watchdog = asyncio.create_task(self._watch(), name="discord-watchdog")

    async def _keep_connected(self, client: DiscordBot) -> None:
        """``client.connect()``, started again with a fresh session when discord.py gives
        up on one; raises when that keeps failing or Discord closed the session for good."""
        failures = 0
        while True:
            began = self._clock.now()
            try:
                await client.connect(reconnect=True)
                return  # the client was closed
            except _FATAL:
                raise
            except Exception as exc:
                sharded = isinstance(client, discord.AutoShardedClient)
                if sharded and client.is_closed() and not self._closing:
                    # The sharded client closes every shard when one stops on an event it
                    # cannot handle, and a closed client cannot connect again: give up.
                    raise GatewayLost(
                        f"a shard stopped on an event discord.py could not handle ({exc!r})"
                    ) from exc
                if client.is_closed():
                    return
                lasted = self._clock.now() - began
                failures = 1 if lasted >= self._stable_after_s else failures + 1
                if failures > len(self._reconnect_delays_s):
                    raise GatewayLost(
                        f"the gateway failed {failures} times in a row, last on {exc!r}"
                    ) from exc
                delay = self._reconnect_delays_s[failures - 1]
                log.error(
                    "Discord gateway stopped on an event discord.py could not handle (%r); "
                    "reconnecting with a fresh session in %.0f s",
                    exc,
                    delay,
                    exc_info=exc,
                )
                await _drop_session(client)
                await self._clock.sleep(delay)
                self.fresh_sessions += 1

    async def _watch(self) -> None:
        """Report the platform lost when the gateway stays down for ``lost_after_s``
        (discord.py retries a gateway it cannot reach forever, deaf all along)."""
        step = max(0.05, min(5.0, self._lost_after_s / 10))
        down_since: float | None = None
        while not self._lost:
            await self._clock.sleep(step)
            now = self._clock.now()
            if self.connected or self._closing:
                down_since = None
            elif down_since is None:
                down_since = now
            elif now - down_since >= self._lost_after_s + self._still_launching_s():
                self._report_lost(f"the gateway has been down for {now - down_since:.0f} s")

    def _still_launching_s(self) -> float:
        """Extra patience before the first ready: shards identify a few per 5 s, so
        many of them take minutes to start (no time while unsharded)."""
        client = self._client
        if not isinstance(client, ShardedDiscordBot) or client.is_ready():
            return 0.0
        return client.launch_allowance_s()

    def _gateway_ended(self, task: asyncio.Task[None]) -> None:
        """The gateway task ended while running: the bot no longer receives events."""
        if task.cancelled() or self._closing:
            return
        error = task.exception()
        if isinstance(error, discord.PrivilegedIntentsRequired):
            self._report_lost(PRIVILEGED_HELP)
        elif isinstance(error, discord.ConnectionClosed) and error.code in SHARD_HELP:
            self._report_lost(SHARD_HELP[error.code])
        elif isinstance(error, discord.ConnectionClosed):
            self._report_lost(f"Discord closed the gateway for good (code {error.code})")
        else:
            self._report_lost(str(error) if error else "the gateway stopped")

    def _report_lost(self, reason: str) -> None:
        if self._lost or self._closing:
            return
        self._lost = True
        log.critical("Discord disconnected for good: %s", reason)
        self._context.on_fatal(reason)

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
            if isinstance(error, discord.ConnectionClosed) and error.code in SHARD_HELP:
                raise ConfigError(SHARD_HELP[error.code])
            raise PlatformLost(f"The Discord gateway connection failed: {error}")
        if not done:
            ready.cancel()
            log.warning(
                "Discord is not ready after %.0f s; still connecting in the background.",
                self._ready_timeout_s,
            )

    def hears(self, key: ConversationKey) -> bool:
        """Whether this process receives the conversation's messages: with
        ``DISCORD_SHARD_IDS``, only its shards' guilds (``bot.ports.ConversationOwner``)."""
        return hears(self._settings, key)

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        """Edit a reply an earlier process left streaming (``bot.ports.ReplyFinalizer``):
        its place is a channel id, its messages are edited there by id."""
        client = self._client
        if client is None or not reply.place.isdigit():
            log.warning("cannot find the interrupted reply %s in Discord", reply)
            return
        channel = client.get_partial_messageable(int(reply.place))
        surface = DiscordSurface(channel, settings=self._settings, clock=self._context.clock)
        await self._context.rewrite_reply(surface, reply.message_ids, text)

    async def aclose(self) -> None:
        """Let in-flight answers finish (briefly), then disconnect."""
        client, self._client = self._client, None
        gateway, self._gateway = self._gateway, None
        watchdog, self._watchdog = self._watchdog, None
        if client is None:
            return
        self._closing = True
        if watchdog is not None:
            watchdog.cancel()
        # discord.py closes the client itself on a fatal gateway close: then no reply can
        # be shown any more, so waiting would only burn tokens; the next start notes them.
        await client.drain(0.0 if client.is_closed() else self._shutdown_grace_s)
        await client.close()
        if gateway is not None:
            gateway.remove_done_callback(self._gateway_ended)
            gateway.cancel()  # when it sleeps before a fresh session
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gateway


class GatewayLost(Exception):
    """Fresh gateway sessions kept failing: the adapter gives up on Discord."""


async def _drop_session(client: DiscordBot) -> None:
    """Close the socket of a session discord.py gave up on (its heartbeat thread too);
    ``connect()`` then identifies afresh instead of resuming into the same payload."""
    ws = client.ws
    if ws is not None:
        with contextlib.suppress(Exception):
            await ws.close(code=1000)
