"""Terminal adapter: ``python -m bot chat``. Lines in, streamed answers out.

Uses only the engine's public interface and the shared ``EditingSink``, exactly as
the chat platforms do; its surface prints the part of each edit not yet shown.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from os.path import commonpath
from typing import TextIO

from bot.engine import Engine
from bot.streaming import EditingSink
from bot.types import ConversationKey, Incoming, Platform, SurfaceLimits, UserRef

__all__ = ["TerminalAdapter", "TerminalSurface"]

_LIMITS = SurfaceLimits(max_chars=1_000_000, min_edit_interval_s=0.03)


class TerminalSurface:
    """A Surface whose one "message" is what has been printed for the current reply.

    A terminal cannot rewrite text, so an edit prints only the new tail; when an
    edit replaces something already printed (a status line), it starts a new line.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown = ""

    @property
    def limits(self) -> SurfaceLimits:
        return _LIMITS

    @asynccontextmanager
    async def typing(self) -> AsyncIterator[None]:
        yield

    async def post(self, text: str) -> str:
        self._shown = ""
        await self.edit("1", text)
        return "1"

    async def edit(self, message_id: str, text: str) -> None:
        common = len(commonpath([self._shown, text]))
        if common < len(self._shown):
            self._out.write("\n")
        self._out.write(text[common:])
        self._out.flush()
        self._shown = text


class TerminalAdapter:
    """Interactive chat for one local user, remembered in the store like any DM."""

    name = "terminal"

    def __init__(
        self,
        engine: Engine,
        *,
        user: str | None = None,
        read_line: Callable[[], str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self._engine = engine
        user_id = user or os.environ.get("USER") or "local"
        self._user = UserRef(Platform.TERMINAL, user_id, user_id)
        self._key = ConversationKey(Platform.TERMINAL, dm_user=user_id)
        self._read_line = read_line or sys.stdin.readline
        self._out = out or sys.stdout

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
        self._out.write("bot> ")
        sink = EditingSink(
            TerminalSurface(self._out), pacer=self._engine.pacer, clock=self._engine.clock
        )
        await self._engine.handle(incoming, sink)
        self._print("")

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()


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
