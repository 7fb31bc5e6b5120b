"""ScriptedCompletions: a ``bot.ports.Completions`` streaming a scripted answer on a
``FakeClock``, for engine tests that need no HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bot.errors import StreamInterrupted
from bot.types import ChatEvent, ChatRequest, Finished, ModelInfo, TextDelta, Usage
from tests.fakes.clock import FakeClock

__all__ = ["ScriptedCompletions"]


class ScriptedCompletions:
    """Streams ``pieces`` deltas of ``piece``, the clock moving ``step_s`` before each;
    it yields to the loop after each, as a network read does. Offers one model, "m".

    ``hold_after``: pause after that many deltas (``held`` is set) until ``go_on`` is
    set. ``fail_after``: raise ``error`` (a broken stream, by default) instead of that
    delta.
    """

    def __init__(
        self, clock: FakeClock, pieces: int, *, step_s: float, piece: str = "word "
    ) -> None:
        self.clock, self.pieces, self.step_s, self.piece = clock, pieces, step_s, piece
        self.hold_after: int | None = None
        self.held = asyncio.Event()
        self.go_on = asyncio.Event()
        self.fail_after: int | None = None
        self.error: Exception = StreamInterrupted(detail="dropped")
        self.finish_reason: str | None = None  # what the final Finished says

    def stream(
        self, request: ChatRequest, *, on_retry: Any = None, empty_is_overflow: bool = False
    ) -> AsyncIterator[ChatEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ChatEvent]:
        for i in range(self.pieces):
            if i == self.fail_after:
                raise self.error
            if i == self.hold_after:
                self.held.set()
                await self.go_on.wait()
            self.clock.t += self.step_s
            yield TextDelta(self.piece)
            await asyncio.sleep(0)
        yield Finished(Usage(10, self.pieces), self.finish_reason)

    async def models(self, *, refresh: bool = False) -> Sequence[ModelInfo]:
        return [ModelInfo("m", context_window=1_000_000)]

    async def aclose(self) -> None:
        return None
