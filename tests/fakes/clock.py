"""FakeClock: the one fake ``bot.ports.Clock`` of the tests and benchmarks; its time
moves only when a test says so.

Sleepers wake in deadline order (ties in the order they started sleeping), and after
each wake the loop is allowed to settle before the next deadline fires, so a task
woken at t=3 that sleeps again for 1 s is woken at t=4 within the same ``advance(5)``.
With ``autoadvance=True`` the clock jumps to the next deadline by itself whenever the
loop has nothing else to run: whole scenarios of minutes finish in milliseconds.
With ``instant_sleep=True`` a sleep moves time ahead by its own length and returns at
once (after one loop turn): for code under test that sleeps alone, like a retry loop.
Every requested sleep is recorded in ``slept`` whatever the mode.

``time()`` is ``epoch`` at the start and moves with ``now()``; ``epoch=start`` makes the
two equal (for code mixing them, like the quota and the stores).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["FakeClock", "settle"]

T = TypeVar("T")

_SETTLE_ROUNDS = 64
# Consecutive idle loop iterations before autoadvance moves time on.
_IDLE_TICKS = 3


class FakeClock:
    """Manual monotonic time (``now``) with a matching wall clock (``time``)."""

    def __init__(
        self,
        start: float = 1_000.0,
        *,
        epoch: float = 1_700_000_000.0,
        autoadvance: bool = False,
        instant_sleep: bool = False,
    ) -> None:
        if autoadvance and instant_sleep:
            raise ValueError("autoadvance and instant_sleep are two ways to pass a sleep; pick one")
        self.t = start
        self._epoch_offset = epoch - start
        self.autoadvance = autoadvance
        self.instant_sleep = instant_sleep
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driving = False
        self.slept: list[float] = []  # every requested sleep, for assertions

    def now(self) -> float:
        return self.t

    def time(self) -> float:
        return self.t + self._epoch_offset

    @property
    def sleepers(self) -> int:
        """Tasks currently sleeping on this clock."""
        return sum(1 for *_, fut in self._sleepers if not fut.done())

    def next_deadline(self) -> float | None:
        self._drop_done()
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.instant_sleep:
            self.t += max(0.0, seconds)
        if seconds <= 0 or self.instant_sleep:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._seq), fut))
        self._drive()
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()  # lazily dropped from the heap

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper due on the way."""
        target = self.t + seconds
        await settle()
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            self._wake_due(deadline)
            await settle()
        self.t = max(self.t, target)
        await settle()

    async def run(self, awaitable: Awaitable[T], *, limit: float = 3_600.0) -> T:
        """Await ``awaitable`` while jumping time to each next deadline (manual mode)."""
        task = asyncio.ensure_future(awaitable)
        start = self.t
        while not task.done():
            await settle()
            deadline = self.next_deadline()
            if task.done():
                break
            if deadline is None or deadline - start > limit:
                task.cancel()
                raise AssertionError(f"stuck at t={self.t - start:.3f}s (deadline {deadline})")
            self._wake_due(deadline)
        return task.result()

    def _wake_due(self, deadline: float) -> None:
        self.t = max(self.t, deadline)
        while self._sleepers and self._sleepers[0][0] <= self.t:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def _drop_done(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    # ----- autoadvance: plain loop callbacks, so no task shows in asyncio.all_tasks() -----

    def _drive(self) -> None:
        if self.autoadvance and not self._driving:
            self._driving = True
            asyncio.get_running_loop().call_soon(self._tick, 0)

    def _tick(self, idle: int) -> None:
        loop = asyncio.get_running_loop()
        if self.next_deadline() is None:
            self._driving = False
            return
        # The ready queue is private; without it, a fixed number of iterations stands in.
        ready = getattr(loop, "_ready", None)
        busy = bool(ready) if ready is not None else False
        idle = 0 if busy else idle + 1
        if idle < _IDLE_TICKS:
            loop.call_soon(self._tick, idle)
            return
        deadline = self.next_deadline()
        if deadline is not None:
            self._wake_due(deadline)
        loop.call_soon(self._tick, 0)


async def settle(rounds: int = _SETTLE_ROUNDS) -> None:
    """Let every ready task run until the loop goes quiet (bounded)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
