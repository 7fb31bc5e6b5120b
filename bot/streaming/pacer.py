"""EditPacer: shared, FIFO-fair budgets for message posts and edits.

One budget per ``SurfaceLimits.budget_key`` (a Discord channel, a Slack workspace).
``budget_burst`` operations may go at once and each spent token comes back
``budget_burst / budget_per_s`` seconds after it was spent. That is a token bucket
whose tokens refill one by one, and unlike a bucket with continuous refill it never
lets more than ``budget_burst`` operations into any window of that length: Discord's
"5 per 5 s" and Slack's per-minute tiers are windows, and a continuous bucket would
allow nearly twice the burst in one of them and earn 429s.

Waiters on one key are served strictly in arrival order, so fifty replies in one
channel take turns and none starves; different keys never wait on each other. The
per-reply minimum interval is the sink's job, not the pacer's.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bot.ports import Clock

__all__ = ["EditPacer"]

# Float slack so that sleeping exactly the computed wait always grants.
_EPS = 1e-9
_MIN_SWEEP = 64


class _Lane:
    """One key's spent-token times (the last ``burst``) and its queue of waiters."""

    __slots__ = ("burst", "stamps", "waiters", "window_s")

    def __init__(self, per_s: float, burst: int) -> None:
        self.burst = max(1, burst)
        self.window_s = self.burst / per_s
        self.stamps: deque[float] = deque(maxlen=self.burst)
        # Futures of queued acquirers; the head's is resolved when it is its turn.
        self.waiters: deque[asyncio.Future[None]] = deque()

    def configure(self, per_s: float, burst: int) -> None:
        burst = max(1, burst)
        if burst != self.burst:
            self.burst = burst
            self.stamps = deque(self.stamps, maxlen=burst)
        self.window_s = burst / per_s

    def ready_in(self, now: float) -> float:
        if len(self.stamps) < self.burst:
            return 0.0
        return max(0.0, self.stamps[0] + self.window_s - now)

    def idle(self, now: float) -> bool:
        """Nobody waiting and every token back: forgetting the lane changes nothing."""
        return not self.waiters and (not self.stamps or self.stamps[-1] + self.window_s <= now)

    def wake_head(self) -> None:
        if self.waiters and not self.waiters[0].done():
            self.waiters[0].set_result(None)


class EditPacer:
    """Keyed edit budgets shared by every reply on one process.

    ``acquire`` waits for a token (FIFO per key); ``try_acquire`` and ``delay`` never
    wait. ``per_s <= 0`` means unlimited. Idle keys are forgotten, so memory follows the
    number of busy keys, not of keys ever seen.
    """

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._sweep_at = _MIN_SWEEP

    @property
    def tracked_keys(self) -> int:
        """How many keys currently hold state (for tests and benchmarks)."""
        return len(self._lanes)

    async def acquire(self, key: str, per_s: float, burst: int) -> None:
        """Take one token from ``key``'s budget, waiting behind earlier callers."""
        if per_s <= 0:
            return
        now = self._clock.now()
        lane = self._lane(key, per_s, burst, now)
        if not lane.waiters and lane.ready_in(now) <= _EPS:
            lane.stamps.append(now)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.waiters.append(turn)
        lane.wake_head()
        try:
            await turn
            while (wait := lane.ready_in(self._clock.now())) > _EPS:
                await self._clock.sleep(wait)
            lane.stamps.append(self._clock.now())
        finally:
            lane.waiters.remove(turn)
            lane.wake_head()

    def try_acquire(self, key: str, per_s: float, burst: int) -> bool:
        """Take a token if one is free and nobody is queued; never waits."""
        if per_s <= 0:
            return True
        now = self._clock.now()
        lane = self._lane(key, per_s, burst, now)
        if lane.waiters or lane.ready_in(now) > _EPS:
            return False
        lane.stamps.append(now)
        return True

    def delay(self, key: str, per_s: float, burst: int) -> float:
        """Seconds a caller arriving now would wait for its token (0: it goes at once)."""
        lane = self._lanes.get(key)
        if per_s <= 0 or lane is None:
            return 0.0
        now = self._clock.now()
        lane.configure(per_s, burst)
        stamps = deque(lane.stamps, maxlen=lane.burst)
        at = now
        for _ in range(len(lane.waiters) + 1):
            at = now
            if len(stamps) == lane.burst:
                at = max(now, stamps[0] + lane.window_s)
            stamps.append(at)
        return at - now

    def _lane(self, key: str, per_s: float, burst: int, now: float) -> _Lane:
        lane = self._lanes.get(key)
        if lane is not None:
            lane.configure(per_s, burst)
            return lane
        if len(self._lanes) >= self._sweep_at:
            self._sweep(now)
        lane = self._lanes[key] = _Lane(per_s, burst)
        return lane

    def _sweep(self, now: float) -> None:
        for key in [k for k, lane in self._lanes.items() if lane.idle(now)]:
            del self._lanes[key]
        # Sweeping again only after the map doubles keeps the cost amortised O(1).
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._lanes))
