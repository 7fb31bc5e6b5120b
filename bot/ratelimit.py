"""The two rate-limit primitives the edit pacer and the quota share.

* ``TrailingWindow``: at most ``limit`` units in any trailing window of ``window_s``.
* ``WaitQueue``: waiters served in arrival order, the first one woken when it may look
  again.

Both are pure: time is passed in as ``now`` and waking is a callback, so neither needs
asyncio; ``bot.streaming.pacer`` and ``bot.limits.quota`` do the awaiting.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

__all__ = ["TrailingWindow", "WaitQueue", "Waiter"]

# Float slack so that sleeping exactly the computed wait always admits.
_EPS = 1e-9


class TrailingWindow:
    """At most ``limit`` units in any trailing ``window_s``: a log of dated uses.

    A use counts from the time it is ``add``-ed until ``window_s`` later. Unlike a bucket
    refilling continuously, which lets nearly twice its limit through in the window
    right after a burst, this never admits more than ``limit`` in any window of that
    length. ``limit`` and ``window_s`` may be changed at any time; the log is kept.
    """

    __slots__ = ("_entries", "_sum", "limit", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit, self.window_s = float(limit), float(window_s)
        self._entries: deque[tuple[float, float]] = deque()  # (added at, amount)
        self._sum = 0.0

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries and entries[0][0] + self.window_s <= now + _EPS * self.window_s:
            self._sum -= entries.popleft()[1]
        if not entries:
            self._sum = 0.0  # no float drift survives an empty log

    def used(self, now: float) -> float:
        """Units still counting at ``now``."""
        self._expire(now)
        return self._sum

    def add(self, amount: float, now: float) -> None:
        """Log a use of ``amount`` dated ``now`` (callers check ``wait`` first)."""
        self._entries.append((now, amount))
        self._sum += amount

    def redate(self, at: float, now: float) -> None:
        """Count a use logged at ``at`` from ``now`` on instead (no-op if none is logged
        there, or ``now`` is not later): the log stays in time order."""
        entries = self._entries
        for i in range(len(entries) - 1, -1, -1):
            if entries[i][0] == at:
                break
        else:
            return
        if now <= at:
            return
        amount = entries[i][1]
        del entries[i]
        j = len(entries)
        while j > 0 and entries[j - 1][0] > now:
            j -= 1
        entries.insert(j, (now, amount))

    def wait(self, amount: float, now: float, held: float = 0.0) -> float:
        """Seconds until ``amount`` more fits beside ``held`` units counted outside the
        log: 0 now, ``inf`` when it still would not once every logged use has expired."""
        excess = self.used(now) + held + amount - self.limit
        tolerance = _EPS * self.limit
        if excess <= tolerance:
            return 0.0
        for at, used in self._entries:
            excess -= used
            if excess <= tolerance:
                return at + self.window_s - now
        return math.inf

    def clears_in(self, now: float) -> float:
        """Seconds until no logged use counts any more."""
        self._expire(now)
        return self._entries[-1][0] + self.window_s - now if self._entries else 0.0


class Waiter:
    """One place in a ``WaitQueue``: the ``amount`` it waits for and ``wake``, called
    when it should look again (it may be first now, or capacity may have freed).

    ``rank`` (ranked queues only) is read whenever the head is chosen: lower goes first,
    so a waiter whose owner holds less is served before one whose owner holds more."""

    __slots__ = ("amount", "gone", "rank", "wake")

    def __init__(
        self,
        wake: Callable[[], None],
        amount: float = 1.0,
        rank: Callable[[], int] | None = None,
    ) -> None:
        self.wake = wake
        self.amount = amount
        self.rank = rank
        self.gone = False


class WaitQueue:
    """Waiters served in arrival order; ``len`` and ``amount`` count those left.

    A waiter that gives up leaves from anywhere in O(1): it is marked and dropped once it
    reaches the front. With ``ranked=True`` the head is the waiter of lowest ``rank()``,
    arrival order breaking ties: the quota ranks by what the waiter's user already has
    running, so one user's second request never goes before another user's first. That
    choice scans the waiters (one per waiting user), so unranked queues stay O(1).
    """

    __slots__ = ("_queue", "_ranked", "_size", "amount")

    def __init__(self, *, ranked: bool = False) -> None:
        self._queue: deque[Waiter] = deque()
        self._ranked = ranked
        self._size = 0
        self.amount = 0.0

    def __len__(self) -> int:
        return self._size

    def join(self, waiter: Waiter) -> None:
        """Queue ``waiter`` last (it is not woken: it checks ``head`` itself)."""
        self._queue.append(waiter)
        self._size += 1
        self.amount += waiter.amount

    def head(self) -> Waiter | None:
        """The waiter served next, if any."""
        queue = self._queue
        while queue and queue[0].gone:
            queue.popleft()
        if not queue:
            return None
        if not self._ranked:
            return queue[0]
        best, best_rank = None, 0
        for waiter in queue:
            if waiter.gone:
                continue
            rank = waiter.rank() if waiter.rank is not None else 0
            if best is None or rank < best_rank:
                best, best_rank = waiter, rank
                if rank <= 0:
                    break  # nobody ranks lower than holding nothing
        return best

    def leave(self, waiter: Waiter) -> None:
        """Remove ``waiter`` (served or given up; twice is harmless) and wake the head."""
        if not waiter.gone:
            waiter.gone = True
            self._size -= 1
            self.amount = self.amount - waiter.amount if self._size else 0.0
        self.wake_head()

    def wake_head(self) -> None:
        """Tell the first waiter to look again (capacity may have freed)."""
        head = self.head()
        if head is not None:
            head.wake()
