"""Terminal adapter: ``python -m bot chat``. Lines in, streamed answers out.

Uses only the engine's public interface and the shared ``EditingSink``, exactly as
the chat platforms do; its surface prints the part of each edit not yet shown, and
prints a reply anew on a fresh line when an edit takes back visible text. Stdin is read
as bytes and decoded with U+FFFD for what is not valid text, so a stray byte neither
ends the chat nor reaches the store.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TextIO

from bot.adapter import AdapterContext
from bot.settings import AdapterSettings
from bot.types import ConversationKey, Incoming, Platform, PlatformHelp, SurfaceLimits, UserRef

__all__ = ["PLATFORM", "TerminalAdapter", "TerminalSettings", "TerminalSurface"]

PLATFORM = Platform("terminal")

_LIMITS = SurfaceLimits(max_chars=1_000_000, min_edit_interval_s=0.03)
# Printed before each answer, and again before an answer printed anew after a rewrite.
_LABEL = "bot> "


class TerminalSurface:
    """A Surface printing one reply to a terminal, which cannot take anything back.

    The bottom of the output holds the latest message. An edit that appends to it
    prints only the new characters (a plain character-prefix test), so streaming an
    answer of N characters prints O(N). An edit that withdraws only whitespace (the
    final text is stripped) prints what follows the common part, unless that would
    split a word. Any other edit withdraws visible text: a status line such as
    ``⏳ retrying in 2 s…`` giving way to the answer, or a rewritten passage. Then the
    surface starts a new line and prints ``label`` and the whole new text, so the last
    labelled block is always the complete current reply, with no status line inside
    it; the stale lines above it stay. A status therefore sits on its own line and the
    answer replacing it starts on the next. The engine only withdraws a status shown
    before the first token, so these reprints are few and short.

    A further message (a reply over ``max_chars``) starts on a new line; an edit of a
    message other than the bottom one is printed anew, like a rewrite.
    """

    def __init__(self, out: TextIO, *, label: str = "") -> None:
        """``label``: what the caller already printed on the current line (``"bot> "``),
        repeated before a reprint."""
        self._out = out
        self._label = label
        self._bottom: str | None = None  # id of the message at the bottom of the output
        self._shown = ""  # its content as last printed
        self._posted = 0
        self._at_line_start = not label

    @property
    def limits(self) -> SurfaceLimits:
        return _LIMITS

    @property
    def place(self) -> str:
        """Nothing to find again: printed output can't be changed afterwards."""
        return ""

    @asynccontextmanager
    async def typing(self) -> AsyncIterator[None]:
        yield

    async def post(self, text: str) -> str:
        self._posted += 1
        if self._posted > 1:
            self._end_line()
        self._bottom, self._shown = str(self._posted), ""
        self._show(text)
        return self._bottom

    async def edit(self, message_id: str, text: str) -> None:
        if message_id == self._bottom:
            self._show(text)
        else:
            self._bottom = message_id
            self._reprint(text)

    def end_line(self) -> None:
        """Finish the current output line, if anything is on it."""
        self._end_line()
        self._out.flush()

    def _show(self, text: str) -> None:
        """Bring the bottom message from ``self._shown`` to ``text``."""
        shown = self._shown
        if text.startswith(shown):
            self._write(text[len(shown) :])
        else:
            old, new = shown.lstrip(), text.lstrip()
            kept = _common_prefix_len(old, new)
            withdrawn = old[kept:]
            # Whitespace left on screen is harmless unless the new text continues a
            # word right after it, which would show that word split in two.
            splits_word = (
                withdrawn != ""
                and 0 < kept < len(new)
                and not new[kept - 1].isspace()
                and not new[kept].isspace()
            )
            if withdrawn.strip() or splits_word:
                self._reprint(text)
                return
            self._write(new[kept:])
        self._shown = text
        self._out.flush()

    def _reprint(self, text: str) -> None:
        self._end_line()
        self._write(self._label + text)
        self._shown = text
        self._out.flush()

    def _end_line(self) -> None:
        if not self._at_line_start:
            self._write("\n")

    def _write(self, text: str) -> None:
        if text:
            self._out.write(text)
            self._at_line_start = text.endswith("\n")


class TerminalSettings(AdapterSettings):
    """The terminal needs no credentials: ``python -m bot chat`` always works."""

    def enabled(self) -> bool:
        return True

    def help(self) -> PlatformHelp:
        return PlatformHelp("Type a message and press Enter. /quit exits.", has_channels=False)


class TerminalAdapter:
    """Interactive chat for one local user, remembered in the store like any DM.

    An answer a previous run left streaming is stored as interrupted at start-up like
    any platform's (``bot.durable``); ``finalize_reply`` has nothing to edit."""

    name = "terminal"

    def __init__(
        self,
        context: AdapterContext[TerminalSettings],
        *,
        user: str | None = None,
        read_line: Callable[[], str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self._context = context
        self._engine = context.engine
        user_id = user or os.environ.get("USER") or "local"
        self._user = UserRef(PLATFORM, user_id, user_id)
        self._key = ConversationKey(PLATFORM, dm_user=user_id)
        context.engine.describe_platform(PLATFORM, context.settings.help())
        self._read_line = read_line or _read_stdin_line
        self._out = out or sys.stdout

    async def finalize_reply(self, reply: object, text: str) -> None:
        """Printed output stays as it was, whatever the reply (``bot.ports.ReplyFinalizer``)."""

    async def run(self) -> None:
        """Read lines until EOF or /quit, answering each."""
        self._print(f"Chatting as {self._user.user_id}. /help for commands, /quit to exit.")
        turn = 0
        while True:
            self._out.write("\nyou> ")
            self._out.flush()
            line = await _read_in_daemon_thread(self._read_line)
            if not line:
                self._print("")
                return
            text = line.rstrip("\n")
            if text.strip() in ("/quit", "/exit"):
                return
            if not text.strip():
                continue
            turn += 1
            await self._answer(text, turn)

    async def _answer(self, text: str, turn: int) -> None:
        incoming = Incoming(self._key, self._user, text, message_id=str(turn))
        reply = await self._engine.run_text_command(incoming)
        if reply is not None:
            self._print(reply.text)
            return
        self._out.write(_LABEL)
        self._out.flush()
        surface = TerminalSurface(self._out, label=_LABEL)
        await self._engine.handle(incoming, self._context.editing_sink(surface, PLATFORM))
        surface.end_line()

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()


def _read_stdin_line() -> str:
    """One line of stdin ("" at EOF). Bytes that are not valid in its encoding are
    read as U+FFFD: ``sys.stdin.readline`` would raise ``UnicodeDecodeError`` (and
    end the chat) under a UTF-8 locale, or make lone surrogates under a C locale."""
    stdin = sys.stdin
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:  # replaced by a text-only stream
        return stdin.readline()
    line: bytes = buffer.readline()
    return line.decode(stdin.encoding or "utf-8", errors="replace")


def _read_in_daemon_thread(read: Callable[[], str]) -> asyncio.Future[str]:
    """Run a blocking read without blocking interpreter exit.

    ``asyncio.to_thread`` would make Ctrl-C wait for the next Enter, because the
    default executor's threads are joined at shutdown.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def deliver(line: str | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(line or "")

    def work() -> None:
        try:
            line = read()
        except BaseException as exc:  # handed to the awaiting task, not swallowed
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, line, None)

    threading.Thread(target=work, name="stdin-reader", daemon=True).start()
    return future


def _common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common character prefix of ``a`` and ``b``."""
    size = min(len(a), len(b))
    i = 0
    while i < size and a[i] == b[i]:
        i += 1
    return i
