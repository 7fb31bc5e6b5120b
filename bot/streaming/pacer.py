"""EditPacer: shared, FIFO-fair budgets for message posts and edits.

One budget per ``SurfaceLimits.budget_key`` (a Discord channel, a Slack workspace):
at most ``budget_burst`` operations in any trailing ``budget_burst / budget_per_s``
seconds (a ``TrailingWindow``). A bucket refilling continuously would let nearly twice
the burst into one such window; Discord's "5 per 5 s" and Slack's per-minute tiers are
windows, and that would earn 429s.

Waiters on one key are served strictly in arrival order (a ``WaitQueue``), so fifty
replies in one channel take turns and none starves; different keys never wait on each
other. The per-reply minimum interval is the sink's job, not the pacer's.
"""

from __future__ import annotations

import asyncio

from bot.ports import Clock
from bot.ratelimit import TrailingWindow, Waiter, WaitQueue

__all__ = ["EditPacer"]

# Float slack so that sleeping exactly the computed wait always grants.
_EPS = 1e-9
_MIN_SWEEP = 64


class _KeyBudget:
    """One budget key: its spent tokens and its queue of waiters."""

    __slots__ = ("spent", "waiters")

    def __init__(self, per_s: float, burst: int) -> None:
        burst = max(1, burst)
        self.spent = TrailingWindow(burst, burst / per_s)
        self.waiters = WaitQueue()

    def configure(self, per_s: float, burst: int) -> None:
        burst = max(1, burst)
        self.spent.limit, self.spent.window_s = burst, burst / per_s

    def idle(self, now: float) -> bool:
        """Nobody waiting and every token back: forgetting the key changes nothing."""
        return not self.waiters and self.spent.used(now) <= 0


class EditPacer:
    """Keyed edit budgets shared by every reply on one process.

    ``acquire`` waits for a token, FIFO per key. ``per_s <= 0`` means unlimited. Idle
    keys are forgotten, so memory follows the number of busy keys, not of keys ever seen.
    """

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._budgets: dict[str, _KeyBudget] = {}
        self._sweep_at = _MIN_SWEEP

    @property
    def tracked_keys(self) -> int:
        """How many keys currently hold state (for tests and benchmarks)."""
        return len(self._budgets)

    async def acquire(self, key: str, per_s: float, burst: int) -> None:
        """Take one token from ``key``'s budget, waiting behind earlier callers."""
        if per_s <= 0:
            return
        now = self._clock.now()
        budget = self._budget(key, per_s, burst, now)
        if not budget.waiters and budget.spent.wait(1, now) <= _EPS:
            budget.spent.add(1, now)
            return
        turn = asyncio.Event()
        waiter = Waiter(turn.set)
        budget.waiters.join(waiter)
        try:
            while budget.waiters.head() is not waiter:
                await turn.wait()  # set when an earlier waiter leaves
                turn.clear()
            while (wait := budget.spent.wait(1, self._clock.now())) > _EPS:
                await self._clock.sleep(wait)
            budget.spent.add(1, self._clock.now())
        finally:
            budget.waiters.leave(waiter)

    def _budget(self, key: str, per_s: float, burst: int, now: float) -> _KeyBudget:
        budget = self._budgets.get(key)
        if budget is not None:
            budget.configure(per_s, burst)
            return budget
        if len(self._budgets) >= self._sweep_at:
            self._sweep(now)
        budget = self._budgets[key] = _KeyBudget(per_s, burst)
        return budget

    def _sweep(self, now: float) -> None:
        for key in [k for k, budget in self._budgets.items() if budget.idle(now)]:
            del self._budgets[key]
        # Sweeping again only after the map doubles keeps the cost amortised O(1).
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._budgets))
