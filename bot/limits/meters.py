"""The limiter's meters: pure arithmetic with an injected ``now`` (no I/O, no clock
object, no awaits).

* ``TrailingLog`` — at most ``limit`` in any trailing window (``bot.ratelimit``'s
  ``TrailingWindow`` plus reservations), each use counted from when it is *committed*
  (its response is over, so the server has surely counted it) until one window later,
  reserved use counting in full until then. The account mirror's
  minute windows (RPM, TPM) use it: it never admits more than Groq's continuous refill
  would over any stretch of time, and — unlike a refill bucket — it also never trips a
  server that meters a trailing window (FakeGroq does), nor loses the race between our
  reservation and the server's own count.
* ``RefillBucket`` — continuous refill, the way Groq documents its windows (reset =
  (limit − remaining) × window ÷ limit). The mirror's day windows (RPD, TPD) use it, so a
  day's allowance comes back gradually rather than all at once.
* ``FixedWindow`` — a counter that empties at multiples of ``length_s`` from the epoch (a
  86,400 s window resets at 00:00 UTC). Per-user limits use these: "your 10 requests this
  minute, try again in 23 s" then names one exact reset, and "tell once per window" has
  a window to key on. Their boundary bursts are harmless: the account mirror, not the
  per-user share, is what keeps the shared key under its limits.

``meter_for`` picks the account mirror's meter for a dimension.
"""

from __future__ import annotations

import math

from bot.ratelimit import TrailingWindow
from bot.types import QuotaCounter

__all__ = ["FixedWindow", "Meter", "RefillBucket", "TrailingLog", "meter_for"]

# Float slack so that sleeping exactly the computed wait always admits.
_EPS = 1e-9
# Refill buckets are saved once per slot of this fraction of their window.
_SLOTS = 1_440
# A trailing log holds each use this much longer than its window: float rounding (and a
# server clock a hair behind ours) must never let us release a use before the server.
_HOLD = 1.001


class RefillBucket:
    """``limit`` units refilling continuously over ``window_s`` seconds.

    State is the level (units in use) at time ``at``; the level drains linearly to 0.
    """

    __slots__ = ("_at", "_level", "limit", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit = float(limit)
        self.window_s = float(window_s)
        self._level = 0.0
        self._at = -math.inf

    @property
    def rate(self) -> float:
        """Units refilled per second."""
        return self.limit / self.window_s

    def used(self, now: float) -> float:
        if self._level <= 0.0:
            return 0.0
        # A clock that stepped backwards drains nothing rather than un-draining.
        drained = max(0.0, now - self._at) * self.rate
        return max(0.0, self._level - drained)

    def time_to_fit(self, amount: float, now: float, pending_share: float = 1.0) -> float:
        """Seconds until ``amount`` more fits, even past the limit (estimates a queue)."""
        excess = self.used(now) + amount - self.limit
        return 0.0 if excess <= _EPS * self.limit else excess / self.rate

    def wait_for(self, amount: float, now: float, pending_share: float = 1.0) -> float:
        """Seconds until ``amount`` more fits: 0 now, ``inf`` if it never can."""
        if amount > self.limit * (1.0 + _EPS):
            return math.inf
        return self.time_to_fit(amount, now, pending_share)

    def take(self, amount: float, now: float) -> None:
        """Add ``amount`` unconditionally (callers check ``wait_for`` first)."""
        self._set(self.used(now) + amount, now)

    def raise_to(self, used: float, now: float) -> bool:
        """Lift the level to ``used`` if it is lower; return whether it changed."""
        if used <= self.used(now):
            return False
        self._set(used, now)
        return True

    def set_limit(self, limit: float, now: float) -> None:
        """Change the limit (and so the refill rate), keeping the units in use."""
        level = self.used(now)
        self.limit = float(limit)
        self._set(level, now)

    def clears_in(self, now: float) -> float:
        """Seconds until the bucket is whole again."""
        return self.used(now) / self.rate

    def commit(self, reserved: float, final: float, now: float) -> None:
        """A reserved use is over: count what it really used instead."""
        self._set(max(0.0, self.used(now) + final - reserved), now)

    def to_row(self, subject: str, dim: str, now: float) -> QuotaCounter | None:
        """The level now, keyed on the current slot (1/1440 of the window: a minute of a
        day), so saves within a slot overwrite one row."""
        if self.used(now) <= 0:
            return None
        slot = self.window_s / _SLOTS
        return QuotaCounter(subject, dim, math.floor(now / slot) * slot, self.used(now))

    def restore(self, level: float, at: float, now: float) -> None:
        """Merge a row saved in the slot starting at ``at``, keeping the fuller level. It
        drains only from the slot's end (never sooner than it did), at today's rate."""
        slot_end = at + self.window_s / _SLOTS
        decayed = level - max(0.0, now - slot_end) * self.rate
        self._level, self._at = max(self.used(now), decayed, 0.0), now

    def _set(self, level: float, now: float) -> None:
        self._level, self._at = level, max(now, self._at)


class TrailingLog:
    """At most ``limit`` in any trailing ``window_s``; see the module docstring.

    ``take`` reserves (counted in full, undated); ``commit`` dates the use at its end in
    a ``TrailingWindow`` held ``_HOLD`` times the window.
    """

    __slots__ = ("_log", "pending", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        self._log = TrailingWindow(limit, window_s * _HOLD)  # checks both are positive
        self.window_s = float(window_s)
        self.pending = 0.0

    @property
    def limit(self) -> float:
        return self._log.limit

    def used(self, now: float) -> float:
        return self._log.used(now) + self.pending

    def clears_in(self, now: float) -> float:
        """Seconds until nothing counts any more (a window, while use is still pending)."""
        return max(self._log.clears_in(now), self._log.window_s if self.pending else 0.0)

    def time_to_fit(self, amount: float, now: float, pending_share: float = 1.0) -> float:
        """Seconds until ``amount`` more fits. For estimates, ``pending_share`` is the part
        of pending reservations expected to stay in use, and past what is logged (a whole
        queue) pending use is taken to end now, then ``limit`` fits per window."""
        pending = self.pending * pending_share
        wait = self._log.wait(amount, now, held=pending)
        if wait < math.inf:
            return wait
        base = self._log.window_s if pending else self.clears_in(now)
        return base + max(0.0, amount - self.limit) / self.limit * self.window_s

    def wait_for(self, amount: float, now: float, pending_share: float = 1.0) -> float:
        """Seconds until ``amount`` more fits: 0 now, ``inf`` if it never can."""
        if amount > self.limit * (1.0 + _EPS):
            return math.inf
        return self.time_to_fit(amount, now, pending_share)

    def take(self, amount: float, now: float) -> None:
        self.pending += amount

    def commit(self, reserved: float, final: float, now: float) -> None:
        """Date a reserved use at ``now`` as what it really used (``final``)."""
        self.pending = max(0.0, self.pending - reserved)
        self._log.add(final, now)

    def raise_to(self, used: float, now: float) -> bool:
        """Lift use to ``used`` (dated now) if it is lower; return whether it changed."""
        current = self.used(now)
        if used <= current:
            return False
        self._log.add(used - current, now)
        return True

    def set_limit(self, limit: float, now: float) -> None:
        self._log.limit = float(limit)

    def to_row(self, subject: str, dim: str, now: float) -> QuotaCounter | None:
        """Current use, keyed on the current window's start."""
        used = self.used(now)
        if used <= 0:
            return None
        return QuotaCounter(subject, dim, math.floor(now / self.window_s) * self.window_s, used)

    def restore(self, used: float, at: float, now: float) -> None:
        """Merge a persisted row. Its uses end within two windows of ``at``; dating them
        now keeps them a little longer than needed, never shorter."""
        if now < at + 2 * self.window_s:
            self.raise_to(used, now)


Meter = RefillBucket | TrailingLog


def meter_for(dim: str, limit: float, minute_s: float, day_s: float) -> Meter:
    """Minute windows get a trailing log, day windows a refill bucket."""
    if dim.endswith("m"):
        return TrailingLog(limit, minute_s)
    return RefillBucket(limit, day_s)


class FixedWindow:
    """Use counted in windows ``[k·length_s, (k+1)·length_s)``; the limit is passed in.

    An empty window admits any single amount, so a request bigger than a per-user token
    limit is slowed to one per window instead of refused forever.
    """

    __slots__ = ("length_s", "start", "used_")

    def __init__(self, length_s: float) -> None:
        if length_s <= 0:
            raise ValueError("length_s must be positive")
        self.length_s = float(length_s)
        self.start = -math.inf
        self.used_ = 0.0

    def start_for(self, now: float) -> float:
        return math.floor(now / self.length_s) * self.length_s

    def used(self, now: float) -> float:
        return self.used_ if self.start_for(now) == self.start else 0.0

    def resets_in(self, now: float) -> float:
        return self.start_for(now) + self.length_s - now

    def wait_for(self, amount: float, limit: float, now: float) -> float:
        """0 if ``amount`` fits in this window, else seconds until the next one."""
        used = self.used(now)
        if used <= 0.0 or used + amount <= limit * (1.0 + _EPS):
            return 0.0
        return self.resets_in(now)

    def add(self, amount: float, now: float) -> float:
        """Count ``amount`` in the current window; return the window's start."""
        start = self.start_for(now)
        if start != self.start:
            self.start, self.used_ = start, 0.0
        self.used_ += amount
        return start

    def adjust(self, delta: float, window_start: float) -> bool:
        """Correct a window's count, if it is still the current one."""
        if window_start != self.start:
            return False
        self.used_ = max(0.0, self.used_ + delta)
        return True

    def restore(self, start: float, used: float, now: float) -> None:
        """Merge a persisted count; ignored unless ``start`` is the current window."""
        if start == self.start_for(now):
            if start != self.start:
                self.start, self.used_ = start, 0.0
            self.used_ = max(self.used_, used)
