"""DiscordSurface: the post / edit / typing primitives ``bot.streaming.EditingSink`` drives.

Every post and edit carries ``AllowedMentions.none()``: the text comes from a model and
from users, so nothing in it may ping anyone (``@everyone``, roles, users, the replied
user). Failures are logged here with the channel and re-raised as ``ReplyNotDelivered``
for the sink, which retries once and otherwise keeps going.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import discord

from adapters.discord.config import DiscordSettings
from bot.errors import BotError
from bot.types import SurfaceLimits

__all__ = [
    "MAX_CHARS",
    "NO_MENTIONS",
    "Answerable",
    "DiscordSurface",
    "ReplyNotDelivered",
    "describe_http_error",
]

log = logging.getLogger(__name__)

MAX_CHARS = 2000
# Discord allows 5 message creates/edits per 5 s per channel, in windows that start at
# the first request Discord *receives*; the pacer counts when a request is *issued*.
# Requests can reach Discord later than the ones after them (discord.py queues a
# route's first requests until it learns the bucket), so the budget keeps a 0.5 s margin:
# 5 per 5.5 s. Posts and edits of every reply in one channel (or thread) share it.
BUDGET_BURST = 5
BUDGET_WINDOW_S = 5.5
BUDGET_PER_S = BUDGET_BURST / BUDGET_WINDOW_S
NO_MENTIONS = discord.AllowedMentions.none()

# Channels the bot can answer in (voice channels have a text chat too).
Answerable = discord.TextChannel | discord.Thread | discord.DMChannel | discord.VoiceChannel


class ReplyNotDelivered(BotError):
    """Discord refused or failed a post or edit of a reply."""

    default_text = "The reply could not be posted on Discord."


def describe_http_error(exc: discord.HTTPException) -> str:
    """One log-friendly line, with a hint for the failures an operator can fix."""
    if isinstance(exc, discord.Forbidden):
        return (
            f"403 (code {exc.code}): the bot lacks a permission here (it needs View Channel, "
            "Send Messages, Send Messages in Threads, Create Public Threads and Read Message "
            "History)"
        )
    return f"{exc.status} (code {exc.code}): {exc.text or 'no details'}"


class DiscordSurface:
    """One reply in one channel or thread (implements ``bot.ports.Surface``).

    ``reply_to``: in reply mode, the user's message every part of the reply answers.
    ``on_post`` is told each posted message id (the client remembers reply chains).
    Its ``place`` is the channel id: a ``PartialMessageable`` of it finds the messages
    again in a later process.
    """

    def __init__(
        self,
        channel: Answerable | discord.PartialMessageable,
        *,
        settings: DiscordSettings,
        reply_to: discord.Message | None = None,
        on_post: Callable[[int], None] | None = None,
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to
        self._on_post = on_post
        self._limits = SurfaceLimits(
            max_chars=MAX_CHARS,
            min_edit_interval_s=settings.edit_interval_s,
            budget_key=f"discord:{channel.id}",
            budget_per_s=BUDGET_PER_S,
            budget_burst=BUDGET_BURST,
        )

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    @property
    def place(self) -> str:
        return str(self._channel.id)

    def typing(self) -> AbstractAsyncContextManager[None]:
        return self._typing()

    @asynccontextmanager
    async def _typing(self) -> AsyncIterator[None]:
        # "typing…" is cosmetic: a failure to show it must never stop the reply.
        indicator = self._channel.typing()
        entered = False
        try:
            await indicator.__aenter__()
            entered = True
        except discord.HTTPException as exc:
            log.info("typing indicator in %s failed: %s", self._channel.id, exc.status)
        try:
            yield
        finally:
            if entered:
                with contextlib.suppress(discord.HTTPException):
                    await indicator.__aexit__(None, None, None)

    async def post(self, text: str) -> str:
        kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
        if self._reply_to is not None:
            # A deleted question must not lose the answer: post it without the reference.
            kwargs["reference"] = self._reply_to.to_reference(fail_if_not_exists=False)
            kwargs["mention_author"] = False
        try:
            message = await self._channel.send(text, **kwargs)
        except discord.HTTPException as exc:
            detail = describe_http_error(exc)
            log.warning("posting a reply in channel %s failed: %s", self._channel.id, detail)
            raise ReplyNotDelivered(detail=detail) from None
        if self._on_post is not None:
            self._on_post(message.id)
        return str(message.id)

    async def edit(self, message_id: str, text: str) -> None:
        partial = self._channel.get_partial_message(int(message_id))
        try:
            await partial.edit(content=text, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            detail = describe_http_error(exc)
            log.warning("editing message %s failed: %s", message_id, detail)
            raise ReplyNotDelivered(detail=detail) from None
