"""Discord sharding: the sharded client, its IDENTIFY pacing and per-shard state.

With ``DISCORD_SHARD_COUNT`` unset the adapter runs today's plain ``discord.Client``.
Set, it runs discord.py's ``AutoShardedClient`` for the shards this process owns:
every shard (``auto``, or a count alone) or ``DISCORD_SHARD_IDS`` of them. Discord
sends a guild's events only to shard ``(guild_id >> 22) % shard_count`` and DMs to
shard 0 (https://discord.com/developers/docs/events/gateway#sharding), so each guild
is heard by exactly one process; conversations are keyed by guild, channel and
thread, never by shard, so a guild whose shard moves to another process after a
restart carries on with its history.
"""

from __future__ import annotations

import asyncio
import logging
import math

import discord

from adapters.discord.client import DiscordBot
from adapters.discord.config import DiscordSettings
from bot.adapter import AdapterContext
from bot.ports import Clock
from bot.types import ConversationKey

__all__ = [
    "IdentifyPacer",
    "ShardedDiscordBot",
    "build_client",
    "down_shards",
    "hears",
    "shard_of",
]

log = logging.getLogger(__name__)

# Discord allows ``max_concurrency`` IDENTIFYs per 5 s, one per rate-limit key
# ``shard_id % max_concurrency`` (docs: topics/gateway#session-start-limit-object and
# "Sharding for Large Bots").
IDENTIFY_WINDOW_S = 5.0


class IdentifyPacer:
    """Spaces IDENTIFYs of shards that share a rate-limit key by ``IDENTIFY_WINDOW_S``.

    discord.py's default hook sleeps 5 s before every IDENTIFY but the first, whatever
    ``max_concurrency`` Discord grants; this one waits only when the key was used
    within the window, so a bot granted 16 starts 16 shards at once.
    """

    def __init__(self, clock: Clock, max_concurrency: int = 1) -> None:
        self._clock = clock
        self.max_concurrency = max(1, max_concurrency)
        self._last: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def allowance_s(self, shards: int) -> float:
        """How long identifying ``shards`` shards may take at this pace."""
        return IDENTIFY_WINDOW_S * math.ceil(shards / self.max_concurrency)

    async def wait(self, shard_id: int) -> None:
        """Return when ``shard_id`` may IDENTIFY; counts it as identified then."""
        key = shard_id % self.max_concurrency
        async with self._locks.setdefault(key, asyncio.Lock()):
            last = self._last.get(key)
            delay = 0.0 if last is None else last + IDENTIFY_WINDOW_S - self._clock.now()
            if delay > 0:
                await self._clock.sleep(delay)
            self._last[key] = self._clock.now()


class ShardedDiscordBot(DiscordBot, discord.AutoShardedClient):
    """``DiscordBot`` over several gateway connections (``discord.AutoShardedClient``)."""

    def __init__(
        self,
        context: AdapterContext[DiscordSettings],
        *,
        guild_ready_timeout: float,
        shard_count: int | None,
        shard_ids: list[int] | None,
    ) -> None:
        super().__init__(
            context,
            guild_ready_timeout=guild_ready_timeout,
            shard_count=shard_count,
            shard_ids=shard_ids,
        )
        self._pacer = IdentifyPacer(context.clock)
        self._limits_read = False

    async def launch_shards(self) -> None:
        """With ``auto`` discord.py connects to the URL ``GET /gateway/bot`` names; a set
        ``DISCORD_GATEWAY_URL`` (a proxy) must win, so only the count is taken from it."""
        if self.shard_count is None and self.settings.gateway_url and not self.is_closed():
            self.shard_count, _, _ = await self.http.get_bot_gateway()
        await super().launch_shards()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Pace IDENTIFYs by the ``max_concurrency`` Discord grants (read once)."""
        if not self._limits_read:
            self._limits_read = True
            try:
                limits = await self.fetch_session_start_limits()
            except (discord.HTTPException, discord.GatewayNotFound, OSError, KeyError) as exc:
                log.warning(
                    "Discord: could not read the session start limits (%r); "
                    "identifying one shard per 5 s",
                    exc,
                )
            else:
                self._pacer.max_concurrency = max(1, limits.max_concurrency)
                starting = len(self.shard_ids) if self.shard_ids else (self.shard_count or 1)
                if limits.remaining < starting:
                    log.warning(
                        "Discord: only %d of %d session starts left; they reset in %.0f min",
                        limits.remaining,
                        limits.total,
                        limits.reset_after / 60_000,
                    )
        await self._pacer.wait(shard_id or 0)

    def launch_allowance_s(self) -> float:
        """How long identifying every shard of this process may take (0 before the
        count is known: ``GET /gateway/bot`` is a single request)."""
        shards = len(self.shard_ids) if self.shard_ids else (self.shard_count or 0)
        return self._pacer.allowance_s(shards)

    async def on_ready(self) -> None:
        first = not self._announced
        await super().on_ready()
        if first:
            ids = self.shard_ids if self.shard_ids is not None else range(self.shard_count or 0)
            log.info(
                "Discord: this process runs shard(s) %s of %s",
                ", ".join(map(str, ids)),
                self.shard_count,
            )

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("Discord: shard %d of %s connected", shard_id, self.shard_count)

    async def on_shard_resumed(self, shard_id: int) -> None:
        log.info("Discord: shard %d of %s resumed", shard_id, self.shard_count)

    async def on_shard_disconnect(self, shard_id: int) -> None:
        if not self.is_closed():
            log.warning("Discord: shard %d of %s disconnected", shard_id, self.shard_count)


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord sends a guild's events to."""
    return (guild_id >> 22) % shard_count


def hears(settings: DiscordSettings, key: ConversationKey) -> bool:
    """Whether a process with these settings receives the conversation's messages: all
    of them without ``DISCORD_SHARD_IDS``; else its guild's shard's, and DMs on shard 0."""
    count, ids = settings.shard_count, settings.shard_ids
    if not isinstance(count, int) or not ids:
        return True
    if key.is_dm or not key.space.isdigit():
        return 0 in ids
    return shard_of(int(key.space), count) in ids


def build_client(
    context: AdapterContext[DiscordSettings], *, guild_ready_timeout: float
) -> DiscordBot:
    """The plain client when ``DISCORD_SHARD_COUNT`` is unset, else the sharded one.

    discord.py documents ``Client(shard_id=…, shard_count=…)`` for one shard, but the
    sharded client serves one shard as well and reports each shard's connection the
    same way for any number of them, so it is used for every sharded setting.
    """
    settings = context.settings
    if not settings.sharded:
        return DiscordBot(context, guild_ready_timeout=guild_ready_timeout)
    count = settings.shard_count if isinstance(settings.shard_count, int) else None
    return ShardedDiscordBot(
        context,
        guild_ready_timeout=guild_ready_timeout,
        shard_count=count,  # None: Discord's recommended count from GET /gateway/bot
        shard_ids=list(settings.shard_ids) or None,  # None: every shard of the count
    )


def down_shards(client: discord.AutoShardedClient) -> list[int]:
    """The shards this process runs whose gateway connection is not open now.

    Empty before the count is known (``auto`` waits for ``GET /gateway/bot``): the
    client is not ready then, which the adapter reports on its own.
    """
    count = client.shard_count
    if count is None:
        return []
    wanted = client.shard_ids if client.shard_ids is not None else range(count)
    running = client.shards
    return [i for i in wanted if i not in running or running[i].is_closed()]
