"""DiscordSurface: the post / edit / typing primitives ``bot.streaming.EditingSink`` drives.

Every post and edit carries ``AllowedMentions.none()``: the text comes from a model and
from users, so nothing in it may ping anyone (``@everyone``, roles, users, the replied
user).

Transient failures are retried here, because discord.py raises at once for several of
them: a 503, a 429 without Discord's ``Via`` header (taken for a Cloudflare ban), a
rate limit longer than ``max_ratelimit_timeout``, a dropped connection. Each retry
waits the ``retry_after`` Discord asked for, else a bounded backoff, until the reply
has been failing for ``DISCORD_RETRY_DEADLINE_S``; a post is retried with the same
``nonce`` (``enforce_nonce``), so a post that reached Discord is not made twice. Then,
or at once for a refusal (403, 404, 400), the failure is logged with the conversation
and channel and raised as ``ReplyNotDelivered`` for the sink.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import discord

from adapters.discord.config import DiscordSettings
from bot.errors import BotError
from bot.ports import Clock
from bot.types import SurfaceLimits

__all__ = [
    "MAX_CHARS",
    "NO_MENTIONS",
    "Answerable",
    "DiscordSurface",
    "ReplyNotDelivered",
    "describe_error",
    "describe_http_error",
    "retry_delay",
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
# Backoff between retries when Discord gives no retry_after: 0.5, 1, 2, 4, 5, 5… s.
_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 5.0
# What a failing request to Discord raises besides a bug: discord.py's errors (HTTP
# statuses, RateLimited), and the connection's (aiohttp, the socket, a timeout).
PLATFORM_ERRORS = (discord.DiscordException, aiohttp.ClientError, OSError, TimeoutError)

T = TypeVar("T")

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


def describe_error(exc: BaseException) -> str:
    """``describe_http_error`` for any failure of a request to Discord."""
    if isinstance(exc, discord.HTTPException):
        return describe_http_error(exc)
    if isinstance(exc, discord.RateLimited):
        return f"rate limited for {exc.retry_after:.0f} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def retry_delay(exc: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retry number ``attempt`` (from 1) after ``exc``, or None
    when retrying cannot help (a refusal: 400, 403, 404…)."""
    backoff = min(_MAX_DELAY_S, _FIRST_DELAY_S * 2 ** (attempt - 1))
    if isinstance(exc, discord.RateLimited):
        return exc.retry_after
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:
            return _header_seconds(exc, "Retry-After") or backoff
        return backoff if exc.status >= 500 else None
    return backoff if isinstance(exc, PLATFORM_ERRORS) else None


def _header_seconds(exc: discord.HTTPException, name: str) -> float | None:
    try:
        value = float(exc.response.headers.get(name, ""))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if value > 0 else None


class DiscordSurface:
    """One reply in one channel or thread (implements ``bot.ports.Surface``).

    ``reply_to``: in reply mode, the user's message every part of the reply answers.
    ``on_post`` is told each posted message id (the client remembers reply chains).
    ``conversation`` names the reply's conversation in log lines.
    Its ``place`` is the channel id: a ``PartialMessageable`` of it finds the messages
    again in a later process.
    """

    def __init__(
        self,
        channel: Answerable | discord.PartialMessageable,
        *,
        settings: DiscordSettings,
        clock: Clock,
        conversation: str = "-",
        reply_to: discord.Message | None = None,
        on_post: Callable[[int], None] | None = None,
    ) -> None:
        self._channel = channel
        self._clock = clock
        self._conversation = conversation
        self._deadline_s = settings.retry_deadline_s
        self._failing_since: float | None = None  # start of the current run of failures
        self._gave_up = False  # in the current run
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
        except PLATFORM_ERRORS as exc:
            log.info("typing indicator in %s failed: %s", self._channel.id, describe_error(exc))
        try:
            yield
        finally:
            if entered:
                with contextlib.suppress(*PLATFORM_ERRORS):
                    await indicator.__aexit__(None, None, None)

    async def post(self, text: str) -> str:
        # One nonce for every try: Discord returns the message a lost answer created.
        kwargs: dict[str, Any] = {
            "allowed_mentions": NO_MENTIONS,
            "nonce": str(secrets.randbits(63)),
        }
        if self._reply_to is not None:
            # A deleted question must not lose the answer: post it without the reference.
            kwargs["reference"] = self._reply_to.to_reference(fail_if_not_exists=False)
            kwargs["mention_author"] = False
        what = f"posting a reply in channel {self._channel.id}"
        message = await self._deliver(what, lambda: self._channel.send(text, **kwargs))
        if self._on_post is not None:
            self._on_post(message.id)
        return str(message.id)

    async def edit(self, message_id: str, text: str) -> None:
        partial = self._channel.get_partial_message(int(message_id))
        what = f"editing message {message_id} in channel {self._channel.id}"
        await self._deliver(what, lambda: partial.edit(content=text, allowed_mentions=NO_MENTIONS))

    async def _deliver(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried while Discord fails transiently and the deadline allows."""
        attempt = 0
        while True:
            try:
                result = await call()
            except PLATFORM_ERRORS as exc:
                attempt += 1
                await self._wait_to_retry(what, exc, attempt)
                continue
            self._failing_since, self._gave_up = None, False
            return result

    async def _wait_to_retry(self, what: str, exc: BaseException, attempt: int) -> None:
        """Sleep before the next try, or raise ``ReplyNotDelivered`` (logged)."""
        detail = describe_error(exc)
        delay = retry_delay(exc, attempt)
        now = self._clock.now()
        if self._failing_since is None:
            self._failing_since = now
        left = self._failing_since + self._deadline_s - now
        # Once per run of failures at WARNING or above: the sink's own retry would
        # repeat the line (it logs the ReplyNotDelivered it gets at INFO only).
        repeat = self._gave_up
        if delay is None or delay > left:
            self._gave_up = True
        if delay is None:
            level = logging.INFO if repeat else logging.WARNING
            log.log(level, "%s failed [%s]: %s", what, self._conversation, detail)
            raise ReplyNotDelivered(detail=detail) from None
        if delay > left:
            failing = now - self._failing_since
            level = logging.INFO if repeat else logging.ERROR
            log.log(
                level,
                "%s failed for %.0f s, giving up [%s]: %s (next try in %.1f s is past "
                "DISCORD_RETRY_DEADLINE_S=%.0f)",
                what,
                failing,
                self._conversation,
                detail,
                delay,
                self._deadline_s,
            )
            raise ReplyNotDelivered(detail=detail) from None
        log.info("%s failed (%s); try %d in %.1f s", what, detail, attempt + 1, delay)
        await self._clock.sleep(delay)
