"""RecordingSurface: an in-memory ``bot.ports.Surface`` that logs every platform call,
and AppendingSurface: the same for ``bot.ports.AppendableSurface``.

Each call is recorded as ``SurfaceOp(t, op, message_id, text, ok)`` with ``t`` from the
injected clock (``text``: the whole content for posts and edits, what was added for
appends and closes). Several surfaces may share one ``journal`` list, so a test can
check a shared budget across many replies. Rules a real platform enforces (length,
blank text, unknown ids, appending to a closed message) are not raised, because the
sink would swallow the error; they are collected in ``violations`` for the test to
assert empty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from bot.ports import Clock
from bot.types import SurfaceLimits

__all__ = ["AppendingSurface", "RecordingSurface", "SurfaceOp"]

Op = Literal[
    "post", "edit", "open", "append", "close", "retract", "status", "typing_enter", "typing_exit"
]
Failing = Literal["post", "edit", "typing", "open", "append", "close", "retract"]


@dataclass(frozen=True, slots=True)
class SurfaceOp:
    """One recorded call; ``ok`` is False when it raised."""

    t: float
    op: Op
    message_id: str
    text: str
    ok: bool = True


class RecordingSurface:
    """Messages live in ``messages`` (id → current text, in posting order)."""

    def __init__(
        self,
        limits: SurfaceLimits,
        *,
        clock: Clock,
        journal: list[SurfaceOp] | None = None,
        latency_s: float = 0.0,
        name: str = "m",
        place: str = "",
    ) -> None:
        self.limits_ = limits
        self.place = place or f"place-{name}"
        self.clock = clock
        self.journal: list[SurfaceOp] = journal if journal is not None else []
        self.latency_s = latency_s  # fake time each post/edit takes
        self.name = name
        self.messages: dict[str, str] = {}
        self.violations: list[str] = []
        self.typing_active = False
        self._failures: dict[str, deque[BaseException]] = {
            op: deque() for op in ("post", "edit", "typing", "open", "append", "close", "retract")
        }
        self._ids = 0  # messages ever posted (ids stay unique after a retract)

    @property
    def limits(self) -> SurfaceLimits:
        return self.limits_

    @property
    def ops(self) -> list[SurfaceOp]:
        """This surface's calls (the journal may hold other surfaces' too)."""
        prefix = self.name + "-"
        return [op for op in self.journal if op.message_id.startswith(prefix)]

    def calls(self, op: Op) -> list[SurfaceOp]:
        return [o for o in self.ops if o.op == op]

    def texts(self) -> list[str]:
        """Current content of every message, in posting order."""
        return list(self.messages.values())

    def fail_next(self, op: Failing, exc: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` raise ``exc`` (typing: on entering)."""
        self._failures[op].extend([exc] * times)

    @asynccontextmanager
    async def typing(self) -> AsyncIterator[None]:
        if self._failures["typing"]:
            self._record("typing_enter", f"{self.name}-typing", "", ok=False)
            raise self._failures["typing"].popleft()
        self._record("typing_enter", f"{self.name}-typing", "")
        self.typing_active = True
        try:
            yield
        finally:
            self.typing_active = False
            self._record("typing_exit", f"{self.name}-typing", "")

    def _new_id(self) -> str:
        """The next unused id (taken once the call succeeds; unique after a retract)."""
        n = max(self._ids, len(self.messages)) + 1
        while f"{self.name}-{n}" in self.messages:
            n += 1
        return f"{self.name}-{n}"

    async def post(self, text: str) -> str:
        message_id = self._new_id()
        self._check("post", message_id, text, self.limits_.max_chars)
        await self._call("post", message_id, text)
        self._ids = int(message_id.rsplit("-", 1)[1])
        self.messages[message_id] = text
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        if message_id not in self.messages:
            self.violations.append(f"edit of unknown message {message_id}")
        self._check("edit", message_id, text, self.limits_.max_chars)
        await self._call("edit", message_id, text)
        self.messages[message_id] = text

    def _check(self, op: Op, message_id: str, content: str, max_chars: int) -> None:
        if len(content) > max_chars:
            self.violations.append(f"{op} {message_id}: {len(content)} > {max_chars}")
        if not content.strip():
            self.violations.append(f"{op} {message_id}: blank text")

    async def _call(
        self,
        op: Literal["post", "edit", "open", "append", "close", "retract"],
        message_id: str,
        text: str,
    ) -> None:
        started = self.clock.now()  # platforms count a call when it arrives
        if self.latency_s > 0:
            await self.clock.sleep(self.latency_s)
        if self._failures[op]:
            self._record(op, message_id, text, ok=False, t=started)
            raise self._failures[op].popleft()
        self._record(op, message_id, text, t=started)

    def _record(
        self, op: Op, message_id: str, text: str, *, ok: bool = True, t: float | None = None
    ) -> None:
        at = self.clock.now() if t is None else t
        self.journal.append(SurfaceOp(at, op, message_id, text, ok))


class AppendingSurface(RecordingSurface):
    """A RecordingSurface whose messages can also be streamed (``AppendableSurface``).

    ``open_ids`` are the messages still taking appends; an edit closes one. ``settled``
    holds back a trailing "<" (as Slack holds back a half-typed mention), ``statuses``
    lists what ``show_status`` showed, and with ``switch_on_failure`` a failed stream
    call turns ``append_limits`` to None, as ``SlackSurface`` does.
    """

    def __init__(
        self,
        limits: SurfaceLimits,
        *,
        append_limits: SurfaceLimits,
        clock: Clock,
        shows_status: bool = False,
        switch_on_failure: bool = True,
        journal: list[SurfaceOp] | None = None,
        name: str = "m",
    ) -> None:
        super().__init__(limits, clock=clock, journal=journal, name=name)
        self.append_limits_: SurfaceLimits | None = append_limits
        self.max_append_chars = append_limits.max_chars
        self.shows_status_ = shows_status
        self.switch_on_failure = switch_on_failure
        self.open_ids: set[str] = set()
        self.statuses: list[str] = []

    @property
    def append_limits(self) -> SurfaceLimits | None:
        return self.append_limits_

    @property
    def shows_status(self) -> bool:
        return self.shows_status_

    def settled(self, text: str) -> int:
        return len(text) - 1 if text.endswith("<") else len(text)

    async def show_status(self, text: str) -> None:
        self.statuses.append(text)
        self._record("status", f"{self.name}-status", text)

    async def open(self, text: str) -> str:
        message_id = self._new_id()
        self._check("open", message_id, text, self.max_append_chars)
        await self._stream_call("open", message_id, text)
        self._ids = int(message_id.rsplit("-", 1)[1])
        self.messages[message_id] = text
        self.open_ids.add(message_id)
        return message_id

    async def append(self, message_id: str, text: str) -> None:
        await self._add("append", message_id, text)

    async def close(self, message_id: str, text: str) -> None:
        await self._add("close", message_id, text)
        self.open_ids.discard(message_id)

    async def edit(self, message_id: str, text: str) -> None:
        self.open_ids.discard(message_id)
        await super().edit(message_id, text)

    async def retract(self, message_id: str) -> None:
        if message_id not in self.messages:
            self.violations.append(f"retract of unknown message {message_id}")
        await self._call("retract", message_id, "")
        self.messages.pop(message_id, None)

    async def _add(self, op: Literal["append", "close"], message_id: str, text: str) -> None:
        if message_id not in self.open_ids:
            self.violations.append(f"{op} to {message_id}, which is not open")
        if op == "append" and not text:
            self.violations.append(f"append of nothing to {message_id}")
        content = self.messages.get(message_id, "") + text
        self._check(op, message_id, content, self.max_append_chars)
        await self._stream_call(op, message_id, text)
        self.messages[message_id] = content

    async def _stream_call(self, op: Failing, message_id: str, text: str) -> None:
        try:
            await self._call(op, message_id, text)
        except BaseException:
            if self.switch_on_failure:
                self.append_limits_ = None
            raise
