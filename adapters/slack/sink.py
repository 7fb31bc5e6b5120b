"""SlackStreamSink: a ``ReplySink`` over Slack's native streaming, with a fallback.

The engine's calls only record the newest text and wake one background flusher, so
the model stream is never slowed by Slack. The flusher sends the reply as a streamed
message: ``chat.startStream`` with the first text, ``chat.appendStream`` with only the
new part (coalesced: one call per ``SLACK_EDIT_INTERVAL_S`` per reply, each after a
token from the workspace's ``chat.appendStream`` budget, Tier 4 with a margin), and
``chat.stopStream`` with the rest (after a token from its own budget of the same
size). Text is streamed as Markdown with every mention sequence defused; a trailing
piece that could still become one (a lone ``<`` or ``@he``) and trailing whitespace
wait for the next update, so what was sent is always a prefix of what comes next. A
message that would grow past ``STREAM_MAX_CHARS`` is stopped at a space or newline
(closing a code fence, reopened in the next message).

Fallback to ``EditingSink(SlackSurface)`` (post, then paced ``chat.update``):

- ``chat.startStream`` fails (method unknown, ``not_allowed``, missing scope…): the
  reply is posted the ordinary way; nothing was shown yet, so nothing repeats;
- a stream call fails later, or the text rewrites what was already streamed: the
  stream is stopped and its message is taken over by editing (``AdoptedSurface``);
- a status line ("retrying in 2 s…") before anything was streamed, outside assistant
  threads: a streamed message cannot take a line back, an edited one can. (In an
  assistant thread the status goes to ``assistant.threads.setStatus`` instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.config import SlackSettings
from adapters.slack.format import neutralise_markdown, pending_tail
from adapters.slack.surface import (
    POST_BURST,
    POST_WINDOW_S,
    THINKING,
    AdoptedSurface,
    ReplyNotDelivered,
    ReplyTarget,
    SlackSurface,
    set_status,
    slack_call,
)
from bot.ports import Clock, ReplySink
from bot.streaming import EditingSink, EditPacer
from bot.streaming.split import fence_closer
from bot.types import TurnStatus

__all__ = ["APPEND_BURST", "APPEND_PER_MINUTE", "STREAM_MAX_CHARS", "SlackStreamSink", "make_sink"]

log = logging.getLogger(__name__)

STREAM_MAX_CHARS = 11_000  # per streamed message; markdown_text takes 12,000 per call
APPEND_PER_MINUTE = 80  # chat.appendStream / stopStream are Tier 4 (100+/min)
APPEND_BURST = 4
_CLOSER_ROOM = 16  # a fence closer added when a message is cut inside code
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,})([^`\s]*)", re.MULTILINE)
_ERROR_PREFIX = "⚠️ "


def make_sink(
    client: AsyncWebClient,
    target: ReplyTarget,
    *,
    settings: SlackSettings,
    pacer: EditPacer,
    clock: Clock,
) -> ReplySink:
    """The sink for one reply: native streaming where Slack allows it (in a thread, when
    SLACK_NATIVE_STREAMING is on), else post-and-edit."""
    if settings.native_streaming and target.thread_ts is not None:
        return SlackStreamSink(client, target, settings=settings, pacer=pacer, clock=clock)
    surface = SlackSurface(client, target, settings=settings, pacer=pacer)
    return EditingSink(surface, pacer=pacer, clock=clock)


class SlackStreamSink:
    """Streams one reply into a thread (implements ``bot.ports.ReplySink``).

    ``update`` / ``status`` never wait; ``finish`` / ``fail`` return once the reply is
    final on Slack (or Slack refused). Slack errors are logged, never raised.
    ``message_ts`` lists the streamed messages, ``fallback`` is the editing sink once
    the reply switched to it (both for tests and benchmarks).
    """

    def __init__(
        self,
        client: AsyncWebClient,
        target: ReplyTarget,
        *,
        settings: SlackSettings,
        pacer: EditPacer,
        clock: Clock,
    ) -> None:
        assert target.thread_ts is not None, "Slack streams only into threads"
        self._client, self._target, self._settings = client, target, settings
        self._pacer, self._clock = pacer, clock
        self._text = ""  # the newest full text (Markdown) from the engine
        self._raw_start = 0  # where the current message begins in _text
        self._raw_pos = 0  # how far into _text the current message goes
        self._sent_raw = ""  # the text the messages so far show (as it was when sent)
        self._reopen = ""  # a code fence reopened at the top of the current message
        self._shown = ""  # what the current message holds
        self._ts: str | None = None  # the current message, once started
        self._status: str | None = None  # a status waiting to be shown
        self._fallback_status: str | None = None
        self._closing = self._done = self._broken = False
        self._stop_sent = False  # chat.stopStream was tried for the current message
        self._last_call: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fallback: ReplySink | None = None
        self.message_ts: list[str] = []

    # ----- ReplySink -----

    async def start(self) -> None:
        """In an assistant thread, show "is thinking…" until the first text."""
        if self._target.assistant:
            await self.status(THINKING)

    async def status(self, text: str) -> None:
        if self.fallback is not None:
            await self.fallback.status(text)
        elif not self._closing:
            self._status = text
            self._poke()

    async def update(self, text_so_far: str) -> None:
        if self.fallback is not None:
            await self.fallback.update(self._rest(text_so_far))
        elif not self._closing:
            self._set_text(text_so_far)
            self._poke()

    async def finish(self, text: str, status: TurnStatus) -> None:
        if self._done:
            return
        self._done = True
        if self.fallback is None:
            self._set_text(text)
            self._closing = True
            await self._close()
        if self.fallback is not None:
            await self.fallback.finish(self._rest(text), status)

    async def fail(self, user_text: str) -> None:
        """End with ``user_text`` below whatever was streamed so far."""
        if self.fallback is not None and not self._done:
            self._done = True
            await self.fallback.fail(user_text)
            return
        note = f"{_ERROR_PREFIX}{user_text}"
        base = self._text.rstrip()
        text = f"{base}{fence_closer(base)}\n\n{note}" if base.strip() else note
        await self.finish(text, TurnStatus.FAILED)

    # ----- state -----

    def _set_text(self, text: str) -> None:
        self._text = text
        self._check_extends()

    def _check_extends(self) -> None:
        if not self._text.startswith(self._sent_raw):
            self._broken = True  # streamed text can't be taken back: edit instead

    def _rest(self, text: str) -> str:
        """What the fallback shows: the text from the current message on."""
        return self._reopen + text[self._raw_start :]

    def _body(self) -> tuple[str, str]:
        """(text up to the end, content) of the current message as it can be shown now."""
        text = self._text
        end = len(text) if self._closing else min(pending_tail(text), len(text.rstrip()))
        end = max(end, self._raw_pos)
        return text[:end], self._reopen + neutralise_markdown(text[self._raw_start : end])

    def _sent(self, raw: str, body: str) -> None:
        """Record what the current message now shows; the text may have moved on."""
        self._shown, self._raw_pos, self._sent_raw = body, len(raw), raw
        self._check_extends()

    def _poke(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="SlackStream")
        self._wake.set()

    async def _close(self) -> None:
        self._poke()
        assert self._task is not None
        await self._task  # cancelling finish() cancels the flusher too

    # ----- the flusher -----

    async def _run(self) -> None:
        try:
            await self._stream()
            if self._broken:
                await self._to_fallback()
        except Exception:  # top of the task: a bug here must not reach the engine
            log.exception("Slack reply streaming stopped unexpectedly")

    async def _stream(self) -> None:
        while not self._broken:
            if self._status is not None:
                await self._show_status()
                continue
            raw, body = self._body()
            if len(body) + _CLOSER_ROOM > STREAM_MAX_CHARS:
                await self._cut(len(raw))
            elif self._closing:
                await self._stop(raw, body)
                return
            elif body == self._shown:
                self._wake.clear()
                await self._wake.wait()
            else:
                await self._pace()
                raw, body = self._body()  # the newest text, after the wait
                if len(body) + _CLOSER_ROOM <= STREAM_MAX_CHARS:
                    await self._send(raw, body)

    async def _show_status(self) -> None:
        status, self._status = self._status, None
        if self._target.assistant:
            await set_status(self._client, self._target, self._pacer, status or "")
        elif self._ts is None and not self.message_ts:
            self._fallback_status, self._broken = status, True
        else:
            log.debug("status %r not shown: a streamed message can't take it back", status)

    async def _pace(self) -> None:
        if self._ts is None:
            per_s = POST_BURST / POST_WINDOW_S
            await self._pacer.acquire(self._target.post_key, per_s, POST_BURST)
            return
        if self._last_call is not None:
            wait = self._last_call + self._settings.edit_interval_s - self._clock.now()
            if wait > 0:
                await self._clock.sleep(wait)
        await self._acquire("chat.appendStream")

    async def _acquire(self, method: str) -> None:
        # Slack limits each method on its own, so a reply's final stopStream never
        # queues behind other replies' appends.
        key = f"slack:{self._target.team_id}:{method}"
        await self._pacer.acquire(key, APPEND_PER_MINUTE / 60.0, APPEND_BURST)

    async def _send(self, raw: str, body: str) -> None:
        """Start the message with ``body``, or append what it adds; failures break."""
        self._last_call = self._clock.now()
        target = self._target
        try:
            if self._ts is None:
                response = await slack_call(
                    self._client.chat_startStream(
                        channel=target.channel,
                        thread_ts=str(target.thread_ts),
                        recipient_team_id=target.team_id,
                        recipient_user_id=target.user_id,
                        markdown_text=body,
                    ),
                    "chat.startStream",
                )
                self._ts = str(response["ts"])
                self.message_ts.append(self._ts)
            else:
                await slack_call(
                    self._client.chat_appendStream(
                        channel=target.channel, ts=self._ts, markdown_text=body[len(self._shown) :]
                    ),
                    "chat.appendStream",
                )
        except ReplyNotDelivered:
            self._broken = True
            return
        self._sent(raw, body)

    async def _stop(self, raw: str, body: str, closer: str = "") -> None:
        """Finish the current message with whatever it still lacks."""
        if self._ts is None:
            if not (body + closer).strip():
                return  # nothing was ever shown: nothing to finish
            await self._pace()
            await self._send(raw, body + closer)
            if self._broken:
                return
            body, closer = body + closer, ""
        await self._acquire("chat.stopStream")
        rest = body[len(self._shown) :] + closer
        self._stop_sent = True
        try:
            await slack_call(
                self._client.chat_stopStream(
                    channel=self._target.channel, ts=str(self._ts), markdown_text=rest or None
                ),
                "chat.stopStream",
            )
        except ReplyNotDelivered:
            self._broken = True
            return
        self._sent(raw, body + closer)

    async def _cut(self, end: int) -> None:
        """Stop the current message near the size limit and begin the next one."""
        cut = self._cut_point(end)
        raw = self._text[:cut]
        body = self._reopen + neutralise_markdown(raw[self._raw_start :])
        closer = fence_closer(body)
        await self._stop(raw, body, closer)
        if self._broken:
            return
        openers = list(_FENCE_LINE.finditer(body)) if closer else []
        self._reopen = f"{openers[-1][1]}{openers[-1][2]}\n" if openers else ""
        while cut < len(self._text) and self._text[cut] in " \t\r\n":
            cut += 1
        self._raw_start = self._raw_pos = cut
        self._ts, self._shown, self._last_call, self._stop_sent = None, "", None, False

    def _cut_point(self, end: int) -> int:
        """Where to end the current message: the last newline (else space) that fits
        after what is shown; else right after what is shown; else a hard cut."""
        text, start, low = self._text, self._raw_start, max(self._raw_pos, self._raw_start)
        room = STREAM_MAX_CHARS - _CLOSER_ROOM - len(self._reopen)
        fits, too_long = low, end  # the longest text[start:fits] within room (bisection)
        while fits + 1 < too_long:
            middle = (fits + too_long) // 2
            if len(neutralise_markdown(text[start:middle])) <= room:
                fits = middle
            else:
                too_long = middle
        for kind in ("\n", " "):
            spot = text.rfind(kind, low + 1, fits + 1)
            if spot > 0:
                return spot
        return low if low > start else max(fits, low + 1)

    async def _to_fallback(self) -> None:
        """Continue the reply by post-and-edit, taking over the current message."""
        adopt = self._ts
        if adopt is not None and not self._stop_sent:
            # A stream left open would stay "typing" until Slack times it out.
            with contextlib.suppress(ReplyNotDelivered):
                await slack_call(
                    self._client.chat_stopStream(channel=self._target.channel, ts=adopt),
                    "chat.stopStream",
                )
        surface = SlackSurface(
            self._client, self._target, settings=self._settings, pacer=self._pacer
        )
        fallback = EditingSink(
            AdoptedSurface(surface, adopt) if adopt is not None else surface,
            pacer=self._pacer,
            clock=self._clock,
        )
        log.info("Slack reply continues by editing (stream %s)", adopt or "never started")
        await fallback.start()
        self.fallback = fallback
        if self._fallback_status is not None:
            await fallback.status(self._fallback_status)
        if self._text:
            await fallback.update(self._rest(self._text))
