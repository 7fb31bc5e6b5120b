"""RecordingSink: an in-memory ReplySink that records every call, for engine tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.types import ReplyRef, TurnStatus


@dataclass
class RecordingSink:
    """Records (op, text) in order; ``done`` is set by finish or fail; ``reply_ref`` is
    what a test says the reply's messages are."""

    events: list[tuple[str, str]] = field(default_factory=list)
    final: str | None = None
    status_: TurnStatus | None = None
    failed: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    reply_ref: ReplyRef = field(default_factory=ReplyRef)

    async def start(self) -> None:
        self.events.append(("start", ""))

    async def status(self, text: str) -> None:
        self.events.append(("status", text))

    async def update(self, text_so_far: str) -> None:
        self.events.append(("update", text_so_far))

    async def finish(self, text: str, status: TurnStatus) -> None:
        self.events.append(("finish", text))
        self.final, self.status_ = text, status
        self.done.set()

    async def fail(self, user_text: str) -> None:
        self.events.append(("fail", user_text))
        self.failed = user_text
        self.done.set()

    def ops(self, op: str) -> list[str]:
        return [text for kind, text in self.events if kind == op]
