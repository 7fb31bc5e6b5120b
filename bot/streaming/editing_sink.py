"""EditingSink: a ``ReplySink`` over any ``Surface``, by posting and editing messages
(or by appending to them, on an ``AppendableSurface``).

The engine's calls only record state and wake one background flusher per reply, so
the model stream is never slowed by the platform. The flusher compares what should be
on the platform (the text split into messages, plus a status line) with what was last
sent, and makes one call at a time: the first post at once, then at most one call per
``min_edit_interval_s`` for this reply, each edit (and each post, unless the surface's
``posts_use_budget`` is off) after a token from the shared ``EditPacer`` budget.
Edits coalesce: a call always carries the newest text, and nothing is sent when
nothing changed.

While an ``AppendableSurface`` appends, the same loop opens, appends to and closes
messages instead, within its ``append_limits`` (appends are budgeted like edits;
closes wait for neither). What is appended can't be taken back, so an open message
gets only what will stay: no trailing whitespace, nothing the surface hasn't
``settled``, room left to close a code fence; and its cut keeps what it was sent.
Anything else (a rewrite, a status line before any text, a failed stream call, or
the surface's own switch) ends appending for the reply: from the first open message
on, the text is split anew for ``limits`` and posted and edited, so what was shown
stays where it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal

from bot.errors import BotError
from bot.ports import AppendableSurface, Clock, Surface
from bot.streaming.pacer import EditPacer, Urgency
from bot.streaming.split import StreamSplitter, fence_closer
from bot.types import ReplyRef, TurnStatus

__all__ = ["EditingSink"]

log = logging.getLogger(__name__)

# Consecutive failed edits of one message before it is left alone (a deleted message
# would otherwise burn the shared budget until the reply ends).
_DEAD_AFTER = 6
# Shown in a message that no longer has content (the text shrank, or ended empty).
_PLACEHOLDER = "…"


@dataclass(slots=True)
class _Message:
    id: str
    shown: str  # last content sent, or given up on after a retry
    open: bool = False  # opened on an AppendableSurface, not closed or edited since
    failures: int = 0  # consecutive failed edits
    dead: bool = False


@dataclass(frozen=True, slots=True)
class _Call:
    op: Literal["post", "edit", "open", "append", "close", "placeholder"]
    index: int  # of the message
    content: str  # the message's whole content once the call is done


class EditingSink:
    """Streams one reply into platform messages (implements ``ReplySink``).

    ``start`` returns at once; a background task shows "typing…" until the first
    message is posted. ``update``/``status`` never wait. ``finish``/``fail`` return once
    every message holds its final content (or the platform refused twice) and the
    background task has ended. Platform errors are logged, never raised: a failed call
    is retried once; a reply whose post fails twice stops quietly. ``reply_ref`` is the
    surface's ``place`` and the ids of the messages posted so far.

    ``messages``: the ids of a reply an earlier process posted (from a stored
    ``ReplyRef``) for the sink to take over. What they show is unknown, so each is
    rewritten by editing (never appended to): ``finish`` makes them show its text.

    ``message_ids``, ``posts`` and ``edits`` (calls made, failed ones included; opens
    count as posts, appends and closes as edits) are for benchmarks; ``on_end`` is told
    ``edits`` once the reply has ended (the operator's edits-per-reply metric).
    """

    def __init__(
        self,
        surface: Surface,
        *,
        pacer: EditPacer,
        clock: Clock,
        status_prefix: str = "⏳ ",
        error_prefix: str = "⚠️ ",
        messages: Sequence[str] = (),
        on_end: Callable[[int], None] | None = None,
    ) -> None:
        self._surface = surface
        self._on_end = on_end
        # The surface while the reply appends to messages (None once it posts and edits).
        stream = surface if isinstance(surface, AppendableSurface) else None
        # Checked once: isinstance against a runtime Protocol walks its attributes, which
        # per streamed update was a few per cent of the bot's CPU.
        self._appendable = stream is not None
        self._stream = None if messages else stream  # messages taken over are edited
        limits = self._stream.append_limits if self._stream is not None else None
        if limits is None:
            self._stream, limits = None, surface.limits
        self._limits = limits
        self._pacer = pacer
        self._clock = clock
        self._status_prefix = status_prefix
        self._error_prefix = error_prefix
        self._splitter = StreamSplitter(self._limits.max_chars)
        self._text = ""
        self._status: str | None = None
        self._aside: str | None = None  # a status to show beside the reply
        self._closing = False
        self._dead = False
        self._messages = [_Message(message_id, shown="") for message_id in messages]
        self._ref = ReplyRef(surface.place, tuple(messages))
        self._closed = 0  # closed pieces in the last split: the open message's index
        self._post_failures = 0
        self._last_call: float | None = None
        self._shown_text = False  # some of the answer's text is on the platform
        self._held: str | None = None  # the budget key holding a slot for the final write
        self._placeholder: str | None = None  # a posted status the streamed answer replaces
        self._wake = asyncio.Event()
        self._final = asyncio.Event()  # set by finish/fail: the interval no longer applies
        self._task: asyncio.Task[None] | None = None
        self._want_typing = False
        self._typing: AbstractAsyncContextManager[None] | None = None
        self.posts = 0
        self.edits = 0

    @property
    def message_ids(self) -> tuple[str, ...]:
        """Platform ids of the reply's messages, in order."""
        return self._ref.message_ids

    @property
    def reply_ref(self) -> ReplyRef:
        """Where the reply's messages are (the surface's ``place``, the ids posted)."""
        return self._ref

    # ----- ReplySink -----

    async def start(self) -> None:
        """Begin the reply: show "typing…" (in the background) until the first post."""
        self._want_typing = True
        self._ensure_task()

    async def status(self, text: str) -> None:
        """Show ``text`` as a transient line until the next ``update``."""
        if self._closing:
            return
        if self._stream is not None and self._stream.shows_status:
            self._aside = text  # the platform clears it when text appears
        else:
            self._status = text
        self._poke()

    async def update(self, text_so_far: str) -> None:
        """Record the newest text; it is sent when pacing allows (never waits)."""
        if self._closing:
            return
        self._text = text_so_far
        self._status = None
        self._poke()

    async def finish(self, text: str, status: TurnStatus) -> None:
        """Send ``text`` as the final content and wait until it is on the platform."""
        if self._closing:
            log.debug("finish after the reply was already closed; ignored")
            return
        log.debug("finishing reply (%s, %d chars)", status, len(text))
        self._text = text
        await self._close()

    async def fail(self, user_text: str) -> None:
        """End with ``user_text`` shown below whatever was streamed so far."""
        if self._closing:
            log.debug("fail after the reply was already closed; ignored")
            return
        note = f"{self._error_prefix}{user_text}"
        base = self._text.rstrip()
        self._text = f"{base}{fence_closer(base)}\n\n{note}" if base.strip() else note
        await self._close()

    # ----- the flusher -----

    def _poke(self) -> None:
        self._ensure_task()
        self._wake.set()

    def _ensure_task(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="EditingSink")
        return self._task

    async def _close(self) -> None:
        self._status = None
        self._closing = True
        task = self._ensure_task()
        self._final.set()
        self._wake.set()
        # An interim update waiting in the pacer is the final write now: it goes ahead.
        self._pacer.reconsider(self._limits.budget_key)
        try:
            # Cancelling the caller cancels the flusher too, and waits for its cleanup.
            await task
        finally:
            if self._on_end is not None:
                self._on_end(self.edits)

    async def _run(self) -> None:
        try:
            # Beside the reply, "typing…" and a status share one place: the newest wins.
            if self._want_typing and self._aside is None:
                await self._enter_typing()
            while not self._dead:
                if self._aside is not None:
                    await self._show_aside()
                    continue
                pending = self._next_call()
                if pending is None:
                    if self._closing:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                key, granted_at = self._limits.budget_key, await self._pace(pending)
                call = self._next_call()  # the newest text, after the wait
                if call is not None and call.op == pending.op:  # else pace it anew
                    try:
                        await self._apply(call)
                    finally:
                        self._pacer.answered(key, granted_at)
        except Exception:  # top of the task: a bug here must not reach the engine
            log.exception("reply streaming stopped unexpectedly")
        finally:
            self._hold(None)
            await self._exit_typing()

    def _desired(self) -> tuple[list[str], int]:
        """Every message's content as it should be now, and how many are final."""
        keep = 0
        if self._stream is not None and self._closed < len(self._messages):
            keep = len(self._messages[self._closed].shown)  # sent: the cut keeps it
        split = self._splitter.feed(self._text, keep=keep)
        self._closed = len(split.closed)
        contents = list(split.closed)
        if split.tail.strip():
            contents.append(split.tail)
        final = len(contents) if self._closing else len(split.closed)
        if self._status is not None and self._stream is None and not self._placeholder:
            line = f"{self._status_prefix}{self._status}"
            if contents:
                contents[-1] = self._with_status(contents[-1], line)
            else:
                contents.append(line[: self._limits.max_chars])
        # Messages cannot be deleted: ones the text no longer reaches keep a placeholder.
        contents.extend([_PLACEHOLDER] * (len(self._messages) - len(contents)))
        return contents, final

    def _with_status(self, content: str, line: str) -> str:
        base = content.rstrip()
        shown = f"{base}{fence_closer(base)}\n\n{line}"
        return shown if len(shown) <= self._limits.max_chars else content

    def _next_call(self) -> _Call | None:
        """The first call that brings a message up to date."""
        if self._dead:
            return None
        stream = self._stream
        if stream is not None and stream.append_limits is None:
            self._stop_appending("the surface stopped appending")
        if (
            self._appendable
            and self._status is not None
            and not self._messages
            and self._placeholder is None
            and not self._text.strip()
        ):
            # A streamed message can't take a status line back, and editing one would
            # end streaming (and spend the update budget): the status goes in a message
            # of its own, which the answer's first message replaces (later statuses
            # wait for text).
            line = f"{self._status_prefix}{self._status}"[: self._limits.max_chars]
            return _Call("placeholder", -1, line)
        call = self._plan()
        if call is not None and call.op == "edit" and self._stream is not None:
            self._stop_appending("streamed text must change")
            call = self._plan()
        return call

    def _plan(self) -> _Call | None:
        contents, final = self._desired()
        stream = self._stream
        for index, content in enumerate(contents):
            if index == len(self._messages):
                if stream is None:
                    return _Call("post", index, content)
                text = content if index < final else self._settled(stream, content)
                return _Call("open", index, text) if text else None
            message = self._messages[index]
            if message.dead:
                continue
            if stream is None or not message.open or not content.startswith(message.shown):
                if message.open or message.shown != content:  # an edit ends a stream
                    return _Call("edit", index, content)
            elif index < final:
                return _Call("close", index, content)
            elif len(text := self._settled(stream, content)) > len(message.shown):
                return _Call("append", index, text)
        return None

    def _settled(self, stream: AppendableSurface, content: str) -> str:
        """What of an open message's content can be appended for good: not trailing
        whitespace (a cut or the final text may drop it), nor what the surface hasn't
        settled, and leaving room to close a code fence there ("" if nothing)."""
        text = content
        while True:
            text = text[: min(stream.settled(text), len(text.rstrip()))]
            excess = len(text) + len(fence_closer(text)) - self._limits.max_chars
            if excess <= 0:
                return text if text.strip() else ""
            text = text[:-excess]

    def _stop_appending(self, why: str) -> None:
        """Post and edit from now on: the text from the first open message on is split
        anew for the surface's ``limits``; closed messages stay as they are."""
        self._stream = None
        self._limits = self._surface.limits
        kept = next((i for i, m in enumerate(self._messages) if m.open), len(self._messages))
        self._splitter.restart(self._limits.max_chars, after=kept)
        log.info("reply goes on by posting and editing after %d message(s): %s", kept, why)

    async def _pace(self, call: _Call) -> float | None:
        """The one place a call waits: the reply's interval (never for the final write),
        then the shared budget (first posts and the final write before interim updates).
        Returns the time the budget's token is dated at (None: no token taken)."""
        if call.op == "close":
            return None  # once per message, on the surface's own budget: never held back
        limits = self._limits
        # Only updates of shown text wait out the interval: not the first text, not the end.
        if self._last_call is not None and self._shown_text and not self._closing:
            wait = self._last_call + limits.min_edit_interval_s - self._clock.now()
            if wait > 0:
                await self._interval(wait)
        if call.op == "placeholder":
            return None  # a post on the surface's own posting budget, like ``open``
        if limits.posts_use_budget or call.op in ("edit", "append"):
            return await self._pacer.acquire(
                limits.budget_key, limits.budget_per_s, limits.budget_burst, urgency=self._urgency
            )
        return None

    async def _interval(self, wait: float) -> None:
        """Sleep ``wait`` seconds, or until the reply closes: the final text goes at once."""
        if self._final.is_set():
            return
        sleep = asyncio.ensure_future(self._clock.sleep(wait))
        final = asyncio.ensure_future(self._final.wait())
        try:
            await asyncio.wait((sleep, final), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            final.cancel()

    def _urgency(self) -> int:
        """The pacer's class for this reply's next call (read while it waits): the final
        write and the first text are urgent, updates of shown text are not."""
        if self._closing or not self._shown_text:
            return Urgency.URGENT
        return Urgency.INTERIM

    def _hold(self, key: str | None) -> None:
        """Hold a slot of ``key`` for the final write (None: let go of the one held)."""
        if key == self._held:
            return
        if self._held is not None:
            self._pacer.release(self._held)
        self._held = key
        if key is not None:
            self._pacer.hold(key)

    async def _apply(self, call: _Call) -> None:
        self._last_call = self._clock.now()
        with_text = bool(self._text.strip())
        if call.op == "placeholder":
            await self._post_placeholder(call.content)
            return
        if call.index == len(self._messages):
            await self._post(call)
        else:
            await self._edit(self._messages[call.index], call)
        if with_text and self._messages:
            self._shown_text = True
        limits = self._limits
        editing = self._stream is None and limits.budget_per_s > 0 and bool(self._messages)
        # Replies that showed text will need a final edit: keep one slot for it.
        self._hold(limits.budget_key if editing and not self._closing else None)

    async def _post_placeholder(self, line: str) -> None:
        try:
            self._placeholder = await self._surface.post(line)
        except Exception as exc:  # a nicety: the answer still streams
            self._placeholder = ""
            log.warning("posting a status failed: %s", _describe(exc))
        else:
            await self._exit_typing()

    async def _retract_placeholder(self) -> None:
        placeholder, self._placeholder = self._placeholder, ""
        if not placeholder or not isinstance(self._surface, AppendableSurface):
            return
        try:
            await self._surface.retract(placeholder)
        except Exception as exc:  # the status stays above the answer: harmless
            log.warning("removing a status message failed: %s", _describe(exc))

    async def _show_aside(self) -> None:
        text, self._aside = self._aside, None
        assert isinstance(self._surface, AppendableSurface) and text is not None
        try:
            await self._surface.show_status(text)
        except Exception as exc:  # a nicety: the reply goes on without it
            log.warning("showing a status failed: %s", _describe(exc))

    async def _post(self, call: _Call) -> None:
        self.posts += 1
        try:
            if call.op == "open" and self._stream is not None:
                message_id = await self._stream.open(call.content)
            else:
                message_id = await self._surface.post(call.content)
        except Exception as exc:  # platform errors stay here, whatever the adapter raises
            if self._stream_failed(call, exc):
                return
            self._post_failures += 1
            if self._post_failures >= 2:
                self._dead = True
                log.log(
                    _failure_level(exc, logging.ERROR),
                    "posting reply message %d failed twice, giving up: %s",
                    len(self._messages) + 1,
                    _describe(exc),
                )
            else:  # not a failure the user sees (yet)
                log.info("posting reply message failed, retrying once: %s", _describe(exc))
            return
        self._post_failures = 0
        self._messages.append(_Message(message_id, call.content, open=call.op == "open"))
        self._ref = ReplyRef(self._ref.place, (*self._ref.message_ids, message_id))
        if len(self._messages) == 1:
            await self._exit_typing()
            if self._placeholder:
                await self._retract_placeholder()

    async def _edit(self, message: _Message, call: _Call) -> None:
        self.edits += 1
        stream, added = self._stream, call.content[len(message.shown) :]
        try:
            if stream is not None and call.op == "append":
                await stream.append(message.id, added)
            elif stream is not None and call.op == "close":
                await stream.close(message.id, added)
            else:
                await self._surface.edit(message.id, call.content)
        except Exception as exc:  # platform errors stay here, whatever the adapter raises
            if self._stream_failed(call, exc):
                return
            message.failures += 1
            level = _failure_level(exc, logging.ERROR)
            if message.failures >= _DEAD_AFTER:
                message.dead = True
                log.log(level, "editing message %s keeps failing, leaving it: %s", message.id,
                        _describe(exc))  # fmt: skip
            elif message.failures % 2 == 0:
                message.shown, message.open = call.content, False  # wait for newer text
                log.log(level, "editing message %s failed twice: %s", message.id, _describe(exc))
            else:  # not a failure the user sees (yet)
                log.info("editing message %s failed, retrying once: %s", message.id, _describe(exc))
            return
        message.failures = 0
        message.shown, message.open = call.content, call.op == "append"

    def _stream_failed(self, call: _Call, exc: Exception) -> bool:
        """A failed open, append or close ends appending (it may have left anything
        behind): the next call posts or edits instead, at once, and this one isn't
        counted against the message."""
        if call.op in ("post", "edit"):
            return False
        self._stop_appending(f"{call.op} failed: {_describe(exc)}")
        self._last_call = None
        return True

    async def _enter_typing(self) -> None:
        try:
            typing = self._surface.typing()
            await typing.__aenter__()
        except Exception as exc:
            log.warning("typing indicator failed: %s", _describe(exc))
            return
        self._typing = typing

    async def _exit_typing(self) -> None:
        typing, self._typing = self._typing, None
        if typing is None:
            return
        try:
            await typing.__aexit__(None, None, None)
        except Exception as exc:
            log.warning("stopping the typing indicator failed: %s", _describe(exc))


def _failure_level(exc: BaseException, level: int) -> int:
    """``level`` for a failure only the sink saw; INFO for a ``BotError``, which the
    surface raised after logging the failure itself (with where it happened): a failure
    the user sees gets one line at WARNING or above, not one per layer."""
    return logging.INFO if isinstance(exc, BotError) else level


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
