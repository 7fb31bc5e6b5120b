"""``ModelAccount``: the shared account as seen for one model.

Its budget, the waiters queued for it, a 429 pause, its limits (and each user's share of
them) and the API's last report. Pure like the meters: waiters are woken by callback
(``bot.ratelimit.WaitQueue``) and ``QuotaManager`` does the awaiting.
"""

from __future__ import annotations

import math
from dataclasses import replace

from bot.limits.budget import AccountBudget
from bot.limits.meters import meter_for
from bot.limits.table import ModelLimits
from bot.ratelimit import WaitQueue
from bot.types import RateLimitSnapshot

__all__ = ["ModelAccount"]


class ModelAccount:
    """One model: account budget, FIFO of waiters, 429 pause, limits, last report.

    ``fixed`` names the dimensions settings pinned: headers may lower those, never raise.
    ``user_limits`` is each user's share of ``limits``; ``QuotaManager`` keeps it in step.
    """

    __slots__ = (
        "budget",
        "day_s",
        "fixed",
        "limits",
        "minute_s",
        "model",
        "paused_until",
        "reported",
        "usage_ratio",
        "user_limits",
        "waiters",
    )

    def __init__(
        self,
        model: str,
        limits: ModelLimits,
        fixed: frozenset[str] = frozenset(),
        *,
        user_limits: ModelLimits,
        minute_s: float,
        day_s: float,
    ) -> None:
        self.model = model
        self.limits = limits
        self.fixed = fixed
        self.user_limits = user_limits
        self.minute_s, self.day_s = minute_s, day_s
        self.budget = AccountBudget(limits, minute_s=minute_s, day_s=day_s)
        self.waiters = WaitQueue(ranked=True)  # each waiter's amount is the tokens it reserves
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
            not self.waiters and now >= self.paused_until and not self.budget.wait_for(tokens, now)
        )

    def need(self, tokens: int, now: float, pending_share: float = 1.0) -> float:
        """Seconds until the head's request of ``tokens`` may go (with ``pending_share``
        < 1: at the soonest, should requests in flight turn out to use little)."""
        return max(self.paused_until - now, self.budget.wait_for(tokens, now, pending_share))

    def estimate(self, tokens: int, now: float) -> tuple[float, str]:
        """Wait for a newcomer behind everyone queued, and its cause (a dimension or
        "pause")."""
        ahead = round(self.waiters.amount * self.usage_ratio) + tokens
        wait, dim = self.budget.estimate(len(self.waiters) + 1, ahead, now, self.usage_ratio)
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
