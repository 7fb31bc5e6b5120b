"""EditingSink: a ``ReplySink`` over any ``Surface``, by posting and editing messages.

The engine's calls only record state and wake one background flusher per reply, so
the model stream is never slowed by the platform. The flusher compares what should be
on the platform (the text split into messages, plus a status line) with what was last
sent, and makes one call at a time: the first post at once, then at most one call per
``min_edit_interval_s`` for this reply, each edit (and each post, unless the surface's
``posts_use_budget`` is off) after a token from the shared ``EditPacer`` budget.
Edits coalesce: a call always carries the newest text, and nothing is sent when
nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from bot.ports import Clock, Surface
from bot.streaming.pacer import EditPacer
from bot.streaming.split import StreamSplitter, fence_closer
from bot.types import TurnStatus

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
    failures: int = 0  # consecutive failed edits
    dead: bool = False


class EditingSink:
    """Streams one reply into platform messages (implements ``ReplySink``).

    ``start`` returns at once; a background task shows "typing…" until the first
    message is posted. ``update``/``status`` never wait. ``finish``/``fail`` return once
    every message holds its final content (or the platform refused twice) and the
    background task has ended. Platform errors are logged, never raised: a failed call
    is retried once; a reply whose post fails twice stops quietly. ``message_ids``,
    ``posts`` and ``edits`` (calls made, failed ones included) are for benchmarks.
    """

    def __init__(
        self,
        surface: Surface,
        *,
        pacer: EditPacer,
        clock: Clock,
        status_prefix: str = "⏳ ",
        error_prefix: str = "⚠️ ",
    ) -> None:
        self._surface = surface
        self._limits = surface.limits
        self._pacer = pacer
        self._clock = clock
        self._status_prefix = status_prefix
        self._error_prefix = error_prefix
        self._splitter = StreamSplitter(self._limits.max_chars)
        self._text = ""
        self._status: str | None = None
        self._closing = False
        self._dead = False
        self._messages: list[_Message] = []
        self._post_failures = 0
        self._last_call: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._want_typing = False
        self._typing: AbstractAsyncContextManager[None] | None = None
        self.posts = 0
        self.edits = 0

    @property
    def message_ids(self) -> tuple[str, ...]:
        """Platform ids of the reply's messages, in order."""
        return tuple(m.id for m in self._messages)

    # ----- ReplySink -----

    async def start(self) -> None:
        """Begin the reply: show "typing…" (in the background) until the first post."""
        self._want_typing = True
        self._ensure_task()

    async def status(self, text: str) -> None:
        """Show ``text`` as a transient line until the next ``update``."""
        if self._closing:
            return
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
        self._wake.set()
        # Cancelling the caller cancels the flusher too, and waits for its cleanup.
        await task

    async def _run(self) -> None:
        try:
            if self._want_typing:
                await self._enter_typing()
            while not self._dead:
                pending = self._next_call()
                if pending is None:
                    if self._closing:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._pace(posting=pending[0] == len(self._messages))
                call = self._next_call()  # the newest text, after the wait
                if call is not None:
                    await self._apply(*call)
        except Exception:  # top of the task: a bug here must not reach the engine
            log.exception("reply streaming stopped unexpectedly")
        finally:
            await self._exit_typing()

    def _desired(self) -> list[str]:
        """Every message's content as it should be now."""
        split = self._splitter.feed(self._text)
        contents = list(split.closed)
        if split.tail.strip():
            contents.append(split.tail)
        if self._status is not None:
            line = f"{self._status_prefix}{self._status}"
            if contents:
                contents[-1] = self._with_status(contents[-1], line)
            else:
                contents.append(line[: self._limits.max_chars])
        # Messages cannot be deleted: ones the text no longer reaches keep a placeholder.
        contents.extend([_PLACEHOLDER] * (len(self._messages) - len(contents)))
        return contents

    def _with_status(self, content: str, line: str) -> str:
        base = content.rstrip()
        shown = f"{base}{fence_closer(base)}\n\n{line}"
        return shown if len(shown) <= self._limits.max_chars else content

    def _next_call(self) -> tuple[int, str] | None:
        """(message index, content) of the first message that is out of date."""
        if self._dead:
            return None
        for index, content in enumerate(self._desired()):
            if index == len(self._messages):
                return index, content
            message = self._messages[index]
            if not message.dead and message.shown != content:
                return index, content
        return None

    async def _pace(self, *, posting: bool) -> None:
        limits = self._limits
        if self._last_call is not None:
            wait = self._last_call + limits.min_edit_interval_s - self._clock.now()
            if wait > 0:
                await self._clock.sleep(wait)
        if limits.posts_use_budget or not posting:
            await self._pacer.acquire(limits.budget_key, limits.budget_per_s, limits.budget_burst)

    async def _apply(self, index: int, content: str) -> None:
        self._last_call = self._clock.now()
        if index == len(self._messages):
            await self._post(content)
        else:
            await self._edit(self._messages[index], content)

    async def _post(self, content: str) -> None:
        self.posts += 1
        try:
            message_id = await self._surface.post(content)
        except Exception as exc:  # platform errors stay here, whatever the adapter raises
            self._post_failures += 1
            if self._post_failures >= 2:
                self._dead = True
                log.error(
                    "posting reply message %d failed twice, giving up: %s",
                    len(self._messages) + 1,
                    _describe(exc),
                )
            else:
                log.warning("posting reply message failed, retrying once: %s", _describe(exc))
            return
        self._post_failures = 0
        self._messages.append(_Message(message_id, content))
        if len(self._messages) == 1:
            await self._exit_typing()

    async def _edit(self, message: _Message, content: str) -> None:
        self.edits += 1
        try:
            await self._surface.edit(message.id, content)
        except Exception as exc:  # platform errors stay here, whatever the adapter raises
            message.failures += 1
            if message.failures >= _DEAD_AFTER:
                message.dead = True
                log.error(
                    "editing message %s keeps failing, leaving it: %s", message.id, _describe(exc)
                )
            elif message.failures % 2 == 0:
                message.shown = content  # retried once already: wait for newer text
                log.error("editing message %s failed twice: %s", message.id, _describe(exc))
            else:
                log.warning(
                    "editing message %s failed, retrying once: %s", message.id, _describe(exc)
                )
            return
        message.failures = 0
        message.shown = content

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


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
