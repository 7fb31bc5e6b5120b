"""RecordingSurface: an in-memory ``bot.ports.Surface`` that logs every platform call.

Each call is recorded as ``SurfaceOp(t, op, message_id, text, ok)`` with ``t`` from the
injected clock. Several surfaces may share one ``journal`` list, so a test can check a
shared budget across many replies. Rules a real platform enforces (length, blank text,
unknown ids) are not raised, because the sink would swallow the error; they are
collected in ``violations`` for the test to assert empty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from bot.ports import Clock
from bot.types import SurfaceLimits

__all__ = ["RecordingSurface", "SurfaceOp"]

Op = Literal["post", "edit", "typing_enter", "typing_exit"]


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
    ) -> None:
        self.limits_ = limits
        self.clock = clock
        self.journal: list[SurfaceOp] = journal if journal is not None else []
        self.latency_s = latency_s  # fake time each post/edit takes
        self.name = name
        self.messages: dict[str, str] = {}
        self.violations: list[str] = []
        self.typing_active = False
        self._failures: dict[str, deque[BaseException]] = {
            "post": deque(),
            "edit": deque(),
            "typing": deque(),
        }

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

    def fail_next(
        self, op: Literal["post", "edit", "typing"], exc: BaseException, times: int = 1
    ) -> None:
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

    async def post(self, text: str) -> str:
        message_id = f"{self.name}-{len(self.messages) + 1}"
        await self._call("post", message_id, text)
        self.messages[message_id] = text
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        if message_id not in self.messages:
            self.violations.append(f"edit of unknown message {message_id}")
        await self._call("edit", message_id, text)
        self.messages[message_id] = text

    async def _call(self, op: Literal["post", "edit"], message_id: str, text: str) -> None:
        if len(text) > self.limits_.max_chars:
            self.violations.append(f"{op} {message_id}: {len(text)} > {self.limits_.max_chars}")
        if not text.strip():
            self.violations.append(f"{op} {message_id}: blank text")
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
