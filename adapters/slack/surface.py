"""SlackSurface: one reply's messages, for ``EditingSink`` (an ``AppendableSurface``).

In a thread, with SLACK_NATIVE_STREAMING on, messages are streamed
(``chat.startStream`` / ``appendStream`` / ``stopStream``) until a stream call fails:
from then on the surface no longer appends, and the sink goes on with
``chat.postMessage`` / ``chat.update`` (an update of a streamed message stops its stream
first, so what was shown stays where it is). Elsewhere, post and update throughout.

Budgets (all on the engine's shared ``EditPacer``, so every reply in the process
counts against the same ones) are Slack's own windows, one per method, from the table
``METHOD_BUDGETS`` (each row names its source): ``chat.update`` 50 per minute per
workspace, ``chat.appendStream`` 100, ``chat.stopStream`` 20 (Tier 2, its method page
says; not Tier 4), ``chat.delete`` 50; posting (``chat.postMessage``, and
``chat.startStream``, which posts) about one message per second per channel. Each
window is counted over 60.5 s rather than 60 (5.5 s for posts): the pacer counts a call
when it is issued, Slack when it arrives, and arrival jitter must not push the 51st
call into a window. The sink's updates and appends go further: their use is dated
again when Slack's answer comes back (``EditPacer.answered``), so however late one
arrives (a starved event loop, a slow link), it leaves our window after Slack's.
Slack limits each method on its own, so a reply's ``chat.stopStream`` never queues
behind appends, nor its first post behind updates.

Degrading when a budget is short: a reply streams only if ``chat.stopStream`` has room
for it (stops in the last window plus streams still open, ``EditPacer.hold``, under
20); otherwise it posts and updates from the start (``append_limits`` turns None
before its first message), since a stream once open can't end without a stop. While
streams are open, their appends share the Tier 4 window, so under load each reply
appends less often, in larger pieces (the sink coalesces).

Text is Markdown from the model. Posts and updates send it as escaped mrkdwn
(``format.to_mrkdwn``); streams send Markdown with every mention sequence defused
(``format.neutralise_markdown``), and ``settled`` holds back a trailing piece that
could still become one (a lone ``<`` or ``@he``), so what was streamed is always a
prefix of what comes next. Nothing in a reply can ping anyone.

Failures: a refused or failed call is logged and re-raised as ``ReplyNotDelivered``
for the sink, which retries once and otherwise keeps going (a failed stream call
switches the reply to posting and updating). 429s are first retried by the client's
``AsyncRateLimitErrorRetryHandler`` (it sleeps ``Retry-After``). Posts and updates
are also retried here through transient failures (``Failure.transient``: a 5xx
whatever its body, a 429 the client gave up on, Slack's own "try again" errors, a
dropped connection), with backoff (and never before ``Retry-After``), until the
reply's posts and updates have failed for ``RETRY_DEADLINE_S`` in a row; then they
are logged once with the channel and thread and given up. Stream calls are not
retried: they append, and their fallback is the surface switch.

slack-sdk raises ``SlackApiError`` for a non-JSON body in two shapes
(``web/async_internal_utils.py``): a ``text/plain`` body becomes a ``str``
response body, and ``application/json`` that does not parse carries the raw
``aiohttp.ClientResponse``; ``failure()`` reads both without calling ``.get`` on them.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.config import SlackSettings
from adapters.slack.format import neutralise_markdown, pending_tail, to_mrkdwn
from bot.errors import BotError
from bot.ports import Clock, SystemClock
from bot.streaming import EditPacer
from bot.types import SurfaceLimits

__all__ = [
    "MAX_CHARS",
    "METHOD_BUDGETS",
    "RETRY_DEADLINE_S",
    "STREAM_MAX_CHARS",
    "Failure",
    "MethodBudget",
    "ReplyNotDelivered",
    "ReplyTarget",
    "SlackSurface",
    "describe",
    "failure",
    "set_status",
    "slack_call",
]

log = logging.getLogger(__name__)

# Slack truncates long text; 4,000 characters is the size it renders well. Markdown
# grows when converted (escapes, link syntax), so pieces leave room for that.
MAX_CHARS = 3500
# Per streamed message, before mentions are defused (a zero-width space each):
# markdown_text takes 12,000 per call.
STREAM_MAX_CHARS = 11_000


@dataclass(frozen=True, slots=True)
class MethodBudget:
    """At most ``limit`` calls of a method in any ``window_s``, per ``scope``."""

    limit: int
    window_s: float
    scope: str  # "workspace" or "channel"
    source: str

    @property
    def per_s(self) -> float:
        return self.limit / self.window_s


# Slack's tiers (https://docs.slack.dev/apis/web-api/rate-limits): Tier 2 20+/min,
# Tier 3 50+/min, Tier 4 100+/min, per method per workspace per app; a method's tier
# is on its reference page, https://docs.slack.dev/reference/methods/<method>.
# Windows are 0.5 s longer than Slack's (see the module docstring).
METHOD_BUDGETS: dict[str, MethodBudget] = {
    "chat.postMessage": MethodBudget(
        5,
        5.5,
        "channel",
        "special tier: 'one message per second per channel', short bursts allowed "
        "(rate-limits page, 'Posting messages')",
    ),
    "chat.update": MethodBudget(50, 60.5, "workspace", "Tier 3 (chat.update method page)"),
    "chat.delete": MethodBudget(50, 60.5, "workspace", "Tier 3 (chat.delete method page)"),
    "chat.appendStream": MethodBudget(
        100, 60.5, "workspace", "Tier 4 (chat.appendStream method page)"
    ),
    "chat.stopStream": MethodBudget(20, 60.5, "workspace", "Tier 2 (chat.stopStream method page)"),
    # chat.startStream's page lists no tier: it posts a message, so it takes the
    # channel's chat.postMessage budget.
    "assistant.threads.setStatus": MethodBudget(
        40, 60.5, "workspace", "not on a method page we read: Tier 3 assumed, with a margin"
    ),
}
THINKING = "is thinking…"
# Posts and updates are retried through transient failures with exponential backoff
# (plus up to a quarter of jitter, so replies hit by one outage spread out), until
# they have failed this long in a row.
RETRY_DEADLINE_S = 30.0
RETRY_BASE_DELAY_S = 0.25
RETRY_MAX_DELAY_S = 8.0
# Slack's ok:false codes for a failure on its side that may pass ("It's possible some
# aspect of the operation succeeded", says its method docs).
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)
# What a Web API call raises: Slack's answers, the SDK's own errors, the connection.
CALL_ERRORS = (SlackClientError, aiohttp.ClientError, TimeoutError)


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

    @property
    def place(self) -> str:
        """``channel/thread_ts`` (``channel/`` at top level): a ``ReplyRef.place``."""
        return f"{self.channel}/{self.thread_ts or ''}"

    @classmethod
    def at(cls, team_id: str, place: str) -> ReplyTarget | None:
        """The target a ``place`` names, for finishing an earlier process's reply."""
        channel, slash, thread_ts = place.partition("/")
        if not (channel and slash):
            return None
        return cls(team_id, channel, thread_ts or None, user_id="")


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed Web API call tells: the HTTP status (None: no answer), Slack's
    error code (or what the body was instead), and ``Retry-After`` in seconds."""

    status: int | None
    error: str
    retry_after: float | None = None
    connection: bool = False  # no answer at all: refused, dropped, timed out

    @property
    def transient(self) -> bool:
        """Worth trying again: Slack or the way to it failed, not the request."""
        if self.connection or self.error in TRANSIENT_ERRORS:
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)

    def __str__(self) -> str:
        return self.error if self.status is None else f"{self.status} {self.error}"


def failure(exc: BaseException) -> Failure:
    """Read a failed call's exception; never raises, whatever body Slack sent."""
    if not isinstance(exc, SlackApiError):
        return Failure(
            None, f"{type(exc).__name__}: {exc}", connection=not isinstance(exc, SlackClientError)
        )
    response = exc.response
    status = getattr(response, "status_code", getattr(response, "status", None))
    status = status if isinstance(status, int) else None
    headers = getattr(response, "headers", None)
    data = getattr(response, "data", None)
    if isinstance(data, Mapping) and data.get("error"):
        error = str(data["error"])
    elif isinstance(data, str) and data.strip():
        error = f"non-JSON body: {_short(data)}"
    elif isinstance(response, aiohttp.ClientResponse):  # JSON that did not parse
        # The SDK's message ends "…in a non-JSON format: <the body's start>".
        error = f"malformed JSON body: {_short(str(exc).splitlines()[0].rpartition(': ')[2])}"
    elif not data:  # a body of another type (an HTML error page) is read as {}
        error = "no JSON body"
    else:
        error = "no error code"
    return Failure(status, error, _retry_after(headers))


def _short(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _retry_after(headers: object) -> float | None:
    if not isinstance(headers, Mapping):
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if isinstance(value, list):  # some SDK paths keep header values as lists
        value = value[0] if value else None
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def describe(exc: BaseException) -> str:
    """One log line for a failed Slack call (the error code, never a token)."""
    return str(failure(exc))


async def slack_call(call: Awaitable[Any], what: str) -> Any:
    """Await one Web API call; failures become ``ReplyNotDelivered`` (logged once)."""
    try:
        return await call
    except CALL_ERRORS as exc:
        log.warning("Slack %s failed: %s", what, describe(exc))
        raise ReplyNotDelivered(detail=f"{what}: {describe(exc)}") from None


async def set_status(
    client: AsyncWebClient, target: ReplyTarget, pacer: EditPacer, status: str
) -> None:
    """Show an assistant-thread status ("is thinking…"); failures are only logged."""
    if not target.assistant or target.thread_ts is None:
        return
    budget = METHOD_BUDGETS["assistant.threads.setStatus"]
    await pacer.acquire(f"slack:{target.team_id}:assistant.setStatus", budget.per_s, budget.limit)
    with contextlib.suppress(ReplyNotDelivered):  # a nicety: the reply still goes out
        await slack_call(
            client.assistant_threads_setStatus(
                channel_id=target.channel, thread_ts=target.thread_ts, status=status
            ),
            "assistant.threads.setStatus",
        )


@dataclass(slots=True)
class _Stream:
    raw: str  # the Markdown streamed so far
    sent: str  # as Slack got it: mentions defused


class SlackSurface:
    """One reply's messages in one channel or thread (implements
    ``bot.ports.AppendableSurface``)."""

    def __init__(
        self,
        client: AsyncWebClient,
        target: ReplyTarget,
        *,
        settings: SlackSettings,
        pacer: EditPacer,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._target = target
        self._pacer = pacer
        self._clock = clock or SystemClock()
        self._failing_since: float | None = None  # posts and updates failing since then
        self._failures = 0
        self._gave_up = False
        update_window = METHOD_BUDGETS["chat.update"].window_s
        self._limits = SurfaceLimits(
            max_chars=MAX_CHARS,
            min_edit_interval_s=settings.edit_interval_s,
            budget_key=f"slack:{target.team_id}:chat.update",
            budget_per_s=settings.updates_per_minute / update_window,
            budget_burst=settings.updates_per_minute,
            posts_use_budget=False,  # post() spends the channel's posting budget instead
        )
        append = METHOD_BUDGETS["chat.appendStream"]
        self._append_limits = SurfaceLimits(
            max_chars=STREAM_MAX_CHARS,
            min_edit_interval_s=settings.edit_interval_s,
            budget_key=f"slack:{target.team_id}:chat.appendStream",
            budget_per_s=append.per_s,
            budget_burst=append.limit,
            posts_use_budget=False,  # open() spends the channel's posting budget instead
        )
        # Slack streams only into threads.
        self._streaming = settings.native_streaming and target.thread_ts is not None
        self._opened = False  # a stream was opened (from then on, no second thoughts)
        # This reply holds a chat.stopStream slot: taken when it decides to stream, not
        # when its stream opens, so replies queued for a channel's post slot cannot all
        # see the same free slot and one of them wait a minute for its stop.
        self._stop_held = False
        self._streams: dict[str, _Stream] = {}  # open streamed messages by ts

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    @property
    def place(self) -> str:
        return self._target.place

    def take_over(self, message_ids: Sequence[str]) -> None:
        """Messages an earlier process posted here: where they may have been streamed,
        any may still be, so editing one stops its stream first."""
        if self._streaming:
            self._streams.update((ts, _Stream("", "")) for ts in message_ids)

    @property
    def append_limits(self) -> SurfaceLimits | None:
        """Append limits while the reply streams. Until its first message is open, a
        reply streams only if ``chat.stopStream`` has room to end it (see the module
        docstring); the sink asks before each call, so the answer goes by posts and
        updates from the start when it has not."""
        if self._streaming and not self._opened and not self._stop_held:
            if self._stop_room():
                self._pacer.hold(self._stop_key())
                self._stop_held = True
            else:
                self._streaming = False
                log.info("chat.stopStream budget is short: this reply posts and updates instead")
        return self._append_limits if self._streaming else None

    def _stop_key(self) -> str:
        return f"slack:{self._target.team_id}:chat.stopStream"

    def _stop_room(self) -> bool:
        stop = METHOD_BUDGETS["chat.stopStream"]
        return self._pacer.room(self._stop_key(), stop.per_s, stop.limit) >= 1

    @property
    def shows_status(self) -> bool:
        """Assistant threads show a status under the thread (``setStatus``)."""
        return self._target.assistant

    def typing(self) -> AbstractAsyncContextManager[None]:
        """Slack has no typing indicator for bots; assistant threads get a status."""
        return self._status_while_waiting()

    @asynccontextmanager
    async def _status_while_waiting(self) -> AsyncIterator[None]:
        await set_status(self._client, self._target, self._pacer, THINKING)
        yield  # the status clears by itself when the reply is posted

    async def show_status(self, text: str) -> None:
        await set_status(self._client, self._target, self._pacer, text)

    def settled(self, text: str) -> int:
        return pending_tail(text)

    async def post(self, text: str) -> str:
        target = self._target
        await self._pace_post()
        response = await self._delivered(
            lambda: self._client.chat_postMessage(
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
        if self._streams.pop(message_id, None) is not None:
            # chat.update can't change a message that is still streaming.
            await self._pace_stop()
            with contextlib.suppress(ReplyNotDelivered):
                await slack_call(
                    self._client.chat_stopStream(channel=self._target.channel, ts=message_id),
                    "chat.stopStream",
                )
        await self._delivered(
            lambda: self._client.chat_update(
                channel=self._target.channel, ts=message_id, text=to_mrkdwn(text)
            ),
            "chat.update",
        )

    async def open(self, text: str) -> str:
        target = self._target
        await self._pace_post()
        sent = neutralise_markdown(text)
        response = await self._stream_call(
            self._client.chat_startStream(
                channel=target.channel,
                thread_ts=str(target.thread_ts),
                recipient_team_id=target.team_id,
                recipient_user_id=target.user_id,
                markdown_text=sent,
            ),
            "chat.startStream",
        )
        ts = str(response["ts"])
        self._streams[ts] = _Stream(text, sent)
        self._opened = True
        if not self._stop_held:  # its chat.stopStream, kept until it is made
            self._pacer.hold(self._stop_key())
            self._stop_held = True
        return ts

    async def append(self, message_id: str, text: str) -> None:
        stream = self._streams[message_id]
        # Defusing the whole text keeps a mention split across appends defused.
        raw = stream.raw + text
        sent = neutralise_markdown(raw)
        await self._stream_call(
            self._client.chat_appendStream(
                channel=self._target.channel, ts=message_id, markdown_text=sent[len(stream.sent) :]
            ),
            "chat.appendStream",
        )
        stream.raw, stream.sent = raw, sent

    async def close(self, message_id: str, text: str) -> None:
        await self._pace_stop()
        stream = self._streams.pop(message_id)  # tried once, even if it fails
        rest = neutralise_markdown(stream.raw + text)[len(stream.sent) :]
        await self._stream_call(
            self._client.chat_stopStream(
                channel=self._target.channel, ts=message_id, markdown_text=rest or None
            ),
            "chat.stopStream",
        )

    async def _delivered(self, call: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Make a post or update, retried through transient failures (see the module
        docstring) until this reply's calls have failed ``RETRY_DEADLINE_S`` in a row."""
        while True:
            try:
                response = await call()
            except CALL_ERRORS as exc:
                await self._retry_or_raise(what, failure(exc))
                continue
            self._failing_since, self._failures, self._gave_up = None, 0, False
            return response

    async def _retry_or_raise(self, what: str, failed: Failure) -> None:
        """Sleep before the next try, or log and raise ``ReplyNotDelivered``."""
        target = self._target
        where = f"channel {target.channel} (thread {target.thread_ts or 'none'}, "
        where += f"team {target.team_id})"
        if not failed.transient:
            # At WARNING once per run of failures: the sink's own retry would repeat it
            # (it logs the ReplyNotDelivered it gets at INFO only).
            level = logging.INFO if self._gave_up else logging.WARNING
            self._gave_up = True
            log.log(level, "Slack %s to %s failed: %s", what, where, failed)
            raise ReplyNotDelivered(detail=f"{what}: {failed}")
        now = self._clock.now()
        if self._failing_since is None:
            self._failing_since = now
        backoff = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2**self._failures)
        delay = max(backoff * (1 + random.random() / 4), failed.retry_after or 0.0)
        self._failures += 1
        failing_for = now - self._failing_since
        if failing_for + delay <= RETRY_DEADLINE_S:
            log.info("Slack %s failed (%s), retrying in %.1f s", what, failed, delay)
            await self._clock.sleep(delay)
            return
        if self._gave_up:  # said once per outage; later calls fail at once
            log.info("Slack %s to %s failed again: %s", what, where, failed)
        else:
            self._gave_up = True
            log.error(
                "Slack %s to %s still failing after %.0f s and %d tries, giving up: %s",
                what,
                where,
                failing_for,
                self._failures,
                failed,
            )
        raise ReplyNotDelivered(detail=f"{what}: {failed}")

    async def retract(self, message_id: str) -> None:
        """``chat.delete`` a placeholder (Tier 3, a budget of its own: not the updates')."""
        delete = METHOD_BUDGETS["chat.delete"]
        key = f"slack:{self._target.team_id}:chat.delete"
        await self._pacer.acquire(key, delete.per_s, delete.limit)
        await slack_call(
            self._client.chat_delete(channel=self._target.channel, ts=message_id), "chat.delete"
        )

    async def _pace_post(self) -> None:
        post = METHOD_BUDGETS["chat.postMessage"]
        await self._pacer.acquire(self._target.post_key, post.per_s, post.limit)

    async def _pace_stop(self) -> None:
        """Take a ``chat.stopStream`` token (a final write: urgent), giving back the slot
        the stream held since it opened."""
        stop = METHOD_BUDGETS["chat.stopStream"]
        key = self._stop_key()
        if self._stop_held:
            self._pacer.release(key)
            self._stop_held = False
        await self._pacer.acquire(key, stop.per_s, stop.limit)

    async def _stream_call(self, call: Awaitable[Any], what: str) -> Any:
        try:
            return await slack_call(call, what)
        except ReplyNotDelivered:
            self._streaming = False  # the surface's switch: post and update from now on
            if self._stop_held and not self._opened:  # no stream to stop after all
                self._pacer.release(self._stop_key())
                self._stop_held = False
            raise
