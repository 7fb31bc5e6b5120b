"""SlackSurface: ``chat.postMessage`` / ``chat.update`` primitives for ``EditingSink``.

Budgets (all on the engine's shared ``EditPacer``, so every reply in the process
counts against the same ones):

- ``chat.update`` is Tier 3 (50+/min per workspace): every edit of every reply in a
  workspace takes a token from ``slack:<team>:chat.update``, sized by
  ``SLACK_UPDATES_PER_MINUTE`` (45 by default, under the 50). Posts do not: under
  load a reply's first text must not queue behind other replies' edits.
- Posting (``chat.postMessage``, and ``chat.startStream``, which posts too) is about
  one message per second per channel with short bursts: ``POST_BURST`` per
  ``POST_WINDOW_S`` per channel.

Text is Markdown from the model; it goes out as escaped mrkdwn (``format.to_mrkdwn``),
so nothing in it can ping anyone. A refused or failed call is logged and re-raised as
``ReplyNotDelivered`` for the sink, which retries once and otherwise keeps going. 429s
are retried by the client's ``AsyncRateLimitErrorRetryHandler`` (it sleeps
``Retry-After``) before anything reaches here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.config import SlackSettings
from adapters.slack.format import to_mrkdwn
from bot.errors import BotError
from bot.streaming import EditPacer
from bot.types import SurfaceLimits

__all__ = [
    "MAX_CHARS",
    "POST_BURST",
    "POST_WINDOW_S",
    "AdoptedSurface",
    "ReplyNotDelivered",
    "ReplyTarget",
    "SlackSurface",
    "describe",
    "set_status",
    "slack_call",
]

log = logging.getLogger(__name__)

# Slack truncates long text; 4,000 characters is the size it renders well. Markdown
# grows when converted (escapes, link syntax), so pieces leave room for that.
MAX_CHARS = 3500
POST_BURST = 4
POST_WINDOW_S = 5.0
UPDATE_BURST = 4
STATUS_PER_S = 40 / 60  # assistant.threads.setStatus, Tier 3 with a margin
THINKING = "is thinking…"


class ReplyNotDelivered(BotError):
    """Slack refused or failed a post, edit or stream call of a reply."""

    default_text = "The reply could not be posted on Slack."


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where one reply goes: ``thread_ts`` None is top level; ``user_id`` asked.

    ``assistant``: a DM thread, where ``assistant.threads.setStatus`` shows a status.
    """

    team_id: str
    channel: str
    thread_ts: str | None
    user_id: str
    assistant: bool = False

    @property
    def post_key(self) -> str:
        return f"slack:{self.team_id}:{self.channel}:post"


def describe(exc: BaseException) -> str:
    """One log line for a failed Slack call (the error code, never a token)."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", "?")
        return f"{status} {exc.response.get('error', 'error')}"
    return f"{type(exc).__name__}: {exc}"


async def slack_call(call: Awaitable[Any], what: str) -> Any:
    """Await one Web API call; failures become ``ReplyNotDelivered`` (logged once)."""
    try:
        return await call
    except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("Slack %s failed: %s", what, describe(exc))
        raise ReplyNotDelivered(detail=f"{what}: {describe(exc)}") from None


async def set_status(
    client: AsyncWebClient, target: ReplyTarget, pacer: EditPacer, status: str
) -> None:
    """Show an assistant-thread status ("is thinking…"); failures are only logged."""
    if not target.assistant or target.thread_ts is None:
        return
    await pacer.acquire(f"slack:{target.team_id}:assistant.setStatus", STATUS_PER_S, 3)
    with contextlib.suppress(ReplyNotDelivered):  # a nicety: the reply still goes out
        await slack_call(
            client.assistant_threads_setStatus(
                channel_id=target.channel, thread_ts=target.thread_ts, status=status
            ),
            "assistant.threads.setStatus",
        )


class SlackSurface:
    """One reply's messages in one channel or thread (implements ``bot.ports.Surface``)."""

    def __init__(
        self,
        client: AsyncWebClient,
        target: ReplyTarget,
        *,
        settings: SlackSettings,
        pacer: EditPacer,
    ) -> None:
        self._client = client
        self._target = target
        self._pacer = pacer
        self._limits = SurfaceLimits(
            max_chars=MAX_CHARS,
            min_edit_interval_s=settings.edit_interval_s,
            budget_key=f"slack:{target.team_id}:chat.update",
            budget_per_s=settings.updates_per_minute / 60.0,
            budget_burst=UPDATE_BURST,
            posts_use_budget=False,  # post() spends the channel's posting budget instead
        )

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    def typing(self) -> AbstractAsyncContextManager[None]:
        """Slack has no typing indicator for bots; assistant threads get a status."""
        return self._status_while_waiting()

    @asynccontextmanager
    async def _status_while_waiting(self) -> AsyncIterator[None]:
        await set_status(self._client, self._target, self._pacer, THINKING)
        yield  # the status clears by itself when the reply is posted

    async def post(self, text: str) -> str:
        target = self._target
        await self._pacer.acquire(target.post_key, POST_BURST / POST_WINDOW_S, POST_BURST)
        response = await slack_call(
            self._client.chat_postMessage(
                channel=target.channel,
                thread_ts=target.thread_ts,
                text=to_mrkdwn(text),
                unfurl_links=False,
                unfurl_media=False,
            ),
            "chat.postMessage",
        )
        return str(response["ts"])

    async def edit(self, message_id: str, text: str) -> None:
        await slack_call(
            self._client.chat_update(
                channel=self._target.channel, ts=message_id, text=to_mrkdwn(text)
            ),
            "chat.update",
        )


class AdoptedSurface:
    """A ``SlackSurface`` whose first "post" takes over an existing message by editing
    it: a streamed message that broke off continues as an edited one, not a copy."""

    def __init__(self, inner: SlackSurface, message_ts: str) -> None:
        self._inner = inner
        self._adopt: str | None = message_ts
        # Its first "post" is a chat.update, so posts spend the update budget here.
        self._limits = replace(inner.limits, posts_use_budget=True)

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    @asynccontextmanager
    async def typing(self) -> AsyncIterator[None]:
        yield

    async def post(self, text: str) -> str:
        if self._adopt is None:
            return await self._inner.post(text)
        await self._inner.edit(self._adopt, text)
        ts, self._adopt = self._adopt, None
        return ts

    async def edit(self, message_id: str, text: str) -> None:
        await self._inner.edit(message_id, text)
