"""EditPacer: shared budgets for message posts and edits, final writes first.

One budget per ``SurfaceLimits.budget_key`` (a Discord channel, a Slack method in a
workspace): at most ``budget_burst`` operations in any trailing ``budget_burst /
budget_per_s`` seconds (a ``TrailingWindow``). Adapters size it as the platform's own
window (Slack's "50 per minute" is 50 per 60 s, not 4 per 5 s), so a burst the
platform allows is not spread out here. A bucket refilling continuously would let
nearly twice the burst into one window; the platforms count windows, and that would
earn 429s.

Two classes of calls wait on a key (a ranked ``WaitQueue``):

- ``URGENT`` (rank 0): a reply's first post and its final write. What a user waits for.
- ``INTERIM`` (rank 1): updates of text already shown. They go after every urgent call
  waiting on the key, and never take the budget's last ``held`` slots: a reply that
  has shown text and will need one final write ``hold``s a slot until it is done, so
  the final write of every reply in flight fits in the window whatever the interim
  updates did (all but one slot of the window, which interim updates always keep).
  A waiter's rank is read whenever the next one is chosen, so an interim
  update that becomes the final write (the model ended while it waited) moves ahead
  (``reconsider``).

A call the sink makes with a token is dated again when it has its answer
(``answered``): platforms count a call when it arrives, which is after the grant, so a
use dated at the grant alone could leave this window while the platform still counts
it, and the next call granted then would be one too many there.

Within a class, waiters are served in arrival order: fifty replies in one channel take
turns and none starves; different keys never wait on each other. The per-reply
minimum interval, and coalescing a reply's updates to its newest text while it waits,
are the sink's job.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from enum import IntEnum

from bot.ports import Clock
from bot.ratelimit import TrailingWindow, Waiter, WaitQueue

__all__ = ["EditPacer", "Urgency"]

# Float slack so that sleeping exactly the computed wait always grants.
_EPS = 1e-9
_MIN_SWEEP = 64


class Urgency(IntEnum):
    """A call's class in the pacer (lower goes first)."""

    URGENT = 0  # a first post or a final write
    INTERIM = 1  # an update of text already shown


class _KeyBudget:
    """One budget key: its spent tokens, its slots held for final writes, its waiters."""

    __slots__ = ("held", "spent", "waiters")

    def __init__(self, per_s: float, burst: int) -> None:
        burst = max(1, burst)
        self.spent = TrailingWindow(burst, burst / per_s)
        self.waiters = WaitQueue(ranked=True)
        self.held = 0

    def configure(self, per_s: float, burst: int) -> None:
        burst = max(1, burst)
        self.spent.limit, self.spent.window_s = burst, burst / per_s

    def wait(self, urgency: int, now: float) -> float:
        """Seconds until a call of ``urgency`` fits."""
        if urgency <= Urgency.URGENT:
            return self.spent.wait(1, now)
        # Interim calls leave the held slots to final writes, but always keep one slot
        # of the window: with more replies than the window has room for, text already
        # shown still moves on (final writes, ahead in the queue, lose at most it).
        held = min(self.held, self.spent.limit - 1)
        return self.spent.wait(1, now, held=held)

    def idle(self, now: float) -> bool:
        """Nobody waiting or holding, every token back: forgetting the key changes nothing."""
        return not self.waiters and not self.held and self.spent.used(now) <= 0


class EditPacer:
    """Keyed edit budgets shared by every reply on one process.

    ``acquire`` waits for a token. ``per_s <= 0`` means unlimited. Idle keys are
    forgotten, so memory follows the number of busy keys, not of keys ever seen.
    """

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._budgets: dict[str, _KeyBudget] = {}
        self._sweep_at = _MIN_SWEEP

    @property
    def tracked_keys(self) -> int:
        """How many keys currently hold state (for tests and benchmarks)."""
        return len(self._budgets)

    def held(self, key: str) -> int:
        """Slots of ``key`` held for final writes (for tests)."""
        budget = self._budgets.get(key)
        return budget.held if budget is not None else 0

    async def acquire(
        self,
        key: str,
        per_s: float,
        burst: int,
        *,
        urgency: Callable[[], int] | None = None,
    ) -> float | None:
        """Take one token from ``key``'s budget, waiting behind earlier callers of the
        same class and every waiting caller of a more urgent one. ``urgency`` (read
        again whenever the next waiter is chosen) is ``Urgency.URGENT`` if not given.

        Returns the clock time the token is dated at (None when unlimited), for
        ``answered``."""
        if per_s <= 0:
            return None
        rank = urgency or _urgent
        now = self._clock.now()
        budget = self._budget(key, per_s, burst, now)
        if not budget.waiters and budget.wait(rank(), now) <= _EPS:
            budget.spent.add(1, now)
            return now
        turn = asyncio.Event()
        waiter = Waiter(turn.set, rank=rank)
        budget.waiters.join(waiter)
        try:
            while True:
                turn.clear()  # before looking: a wake after the look is kept
                if budget.waiters.head() is waiter:
                    now = self._clock.now()
                    wait = budget.wait(rank(), now)
                    if wait <= _EPS:
                        budget.spent.add(1, now)
                        return now
                    if math.isfinite(wait):
                        # Woken early too: an interim update that became the final
                        # write must not sleep out a minute-long window.
                        await self._sleep_or(wait, turn)
                        continue  # the head may have changed meanwhile: look again
                await turn.wait()  # set when the head leaves, a slot is let go, or ranks change
        finally:
            budget.waiters.leave(waiter)

    def answered(self, key: str, granted_at: float | None) -> None:
        """The call a token of ``key`` dated ``granted_at`` was spent on has its answer:
        count it from now on.

        The platform counts a call when it arrives, somewhere between the grant and the
        answer; dated at the answer, it leaves this window no sooner than the
        platform's, however long the request was on its way (a starved event loop, a
        slow link, a reconnect)."""
        budget = self._budgets.get(key)
        if budget is not None and granted_at is not None:
            budget.spent.redate(granted_at, self._clock.now())

    def room(self, key: str, per_s: float, burst: int) -> float:
        """Calls ``key``'s window could take now beyond the slots held (may be < 0)."""
        now = self._clock.now()
        budget = self._budget(key, per_s, burst, now)
        return budget.spent.limit - budget.spent.used(now) - budget.held

    async def _sleep_or(self, seconds: float, woken: asyncio.Event) -> None:
        """Sleep ``seconds``, or less if ``woken`` is set meanwhile."""
        sleep = asyncio.ensure_future(self._clock.sleep(seconds))
        wake = asyncio.ensure_future(woken.wait())
        try:
            await asyncio.wait((sleep, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            wake.cancel()

    def hold(self, key: str) -> None:
        """Keep one slot of ``key`` for a final write (interim calls leave it free)."""
        budget = self._budgets.get(key)
        if budget is None:  # sized at its first acquire
            budget = self._budgets[key] = _KeyBudget(1.0, 1)
        budget.held += 1

    def release(self, key: str) -> None:
        """Let go of a slot ``hold`` kept (the final write went out, or never will)."""
        budget = self._budgets.get(key)
        if budget is not None and budget.held > 0:
            budget.held -= 1
            budget.waiters.wake_head()

    def reconsider(self, key: str) -> None:
        """A waiter's urgency changed: choose the next waiter of ``key`` again."""
        budget = self._budgets.get(key)
        if budget is not None:
            budget.waiters.wake_head()

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


def _urgent() -> int:
    return Urgency.URGENT
