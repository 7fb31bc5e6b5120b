"""``ModelLane``: one model's account budget, FIFO queue, 429 pause and reported limits.

Waking a queued request is a callback (``QueueEntry.wake``) so this module stays free of
asyncio: ``QuotaManager`` does the awaiting.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from bot.limits.budget import AccountBudget
from bot.limits.meters import meter_for
from bot.limits.table import ModelLimits
from bot.types import RateLimitSnapshot

__all__ = ["ModelLane", "QueueEntry"]


class QueueEntry:
    """One request waiting for account capacity; ``wake`` tells it to look again."""

    __slots__ = ("gone", "tokens", "wake")

    def __init__(self, tokens: int, wake: Callable[[], None]) -> None:
        self.tokens = tokens
        self.wake = wake
        self.gone = False


class ModelLane:
    """One model: account budget, FIFO queue, 429 pause, limits and last reported headers.

    ``fixed`` names the dimensions settings pinned: headers may lower those, never raise.
    """

    __slots__ = (
        "budget",
        "day_s",
        "fixed",
        "limits",
        "minute_s",
        "model",
        "paused_until",
        "queue",
        "queued",
        "queued_tokens",
        "reported",
        "usage_ratio",
    )

    def __init__(
        self,
        model: str,
        limits: ModelLimits,
        fixed: frozenset[str] = frozenset(),
        *,
        minute_s: float,
        day_s: float,
    ) -> None:
        self.model = model
        self.limits = limits
        self.fixed = fixed
        self.minute_s, self.day_s = minute_s, day_s
        self.budget = AccountBudget(limits, minute_s=minute_s, day_s=day_s)
        self.queue: deque[QueueEntry] = deque()
        self.queued = 0
        self.queued_tokens = 0
        self.paused_until = -math.inf
        self.reported: RateLimitSnapshot | None = None
        # Real use ÷ reservation, smoothed: queued requests will hold less than they
        # reserve (max output is rarely all used), so wait estimates scale by it.
        self.usage_ratio = 1.0

    def note_usage(self, reserved: int, final: int) -> None:
        if reserved > 0:
            ratio = min(1.0, max(0.05, final / reserved))
            self.usage_ratio += 0.2 * (ratio - self.usage_ratio)

    def can_pass(self, tokens: int, now: float) -> bool:
        """Nobody queued, not paused, and the budget fits: admit without queueing."""
        return (
            not self.queued and now >= self.paused_until and not self.budget.wait_for(tokens, now)
        )

    def head(self) -> QueueEntry | None:
        while self.queue and self.queue[0].gone:
            self.queue.popleft()  # lazily drop entries that left from the middle
        return self.queue[0] if self.queue else None

    def enqueue(self, entry: QueueEntry) -> None:
        self.queue.append(entry)
        self.queued += 1
        self.queued_tokens += entry.tokens

    def leave(self, entry: QueueEntry) -> None:
        """Remove ``entry`` (admitted or given up) and wake whoever is now first."""
        if not entry.gone:
            entry.gone = True
            self.queued -= 1
            self.queued_tokens -= entry.tokens
        self.wake_head()

    def wake_head(self) -> None:
        head = self.head()
        if head is not None:
            head.wake()

    def need(self, tokens: int, now: float, pending_share: float = 1.0) -> float:
        """Seconds until the head's request of ``tokens`` may go (with ``pending_share``
        < 1: at the soonest, should requests in flight turn out to use little)."""
        return max(self.paused_until - now, self.budget.wait_for(tokens, now, pending_share))

    def estimate(self, tokens: int, now: float) -> tuple[float, str]:
        """Wait for a newcomer behind everyone queued, and its cause (a dimension or
        "pause")."""
        ahead = round(self.queued_tokens * self.usage_ratio) + tokens
        wait, dim = self.budget.estimate(self.queued + 1, ahead, now, self.usage_ratio)
        pause = self.paused_until - now
        return (pause, "pause") if pause >= wait and pause > 0 else (wait, dim)

    def sync(self, dim: str, limit: int | None, remaining: int | None, now: float) -> bool:
        """Apply one header pair (``limit``/``remaining`` of ``dim``); return whether the
        limit changed. Only ever raises the level: our own reservations for requests still
        in flight are not yet in the API's count."""
        changed = limit is not None and limit > 0 and self._adopt(dim, limit, now)
        bucket = self.budget.buckets.get(dim)
        if bucket is not None and remaining is not None:
            bucket.raise_to((limit or bucket.limit) - remaining, now)
        return changed

    def _adopt(self, dim: str, limit: int, now: float) -> bool:
        current = self.limits.get(dim)
        if dim in self.fixed and current is not None:
            limit = min(limit, current)
        if limit == current:
            return False
        self.limits = replace(self.limits, **{dim: limit})
        meter = self.budget.buckets.get(dim)
        if meter is None:
            self.budget.buckets[dim] = meter_for(dim, limit, self.minute_s, self.day_s)
        else:
            meter.set_limit(limit, now)
        return True
