"""The limiter's meters: pure arithmetic with an injected ``now`` (no I/O, no clock
object, no awaits).

* ``RefillBucket`` — continuous refill, the way Groq documents its windows (reset =
  (limit − remaining) × window ÷ limit). The account mirror uses one per dimension,
  minute and day windows alike, with reservations: ``take`` counts prompt + max output
  when a request is admitted, ``commit`` replaces that by what it really used once it is
  over. Why that never runs ahead of the server is argued in ``bot.limits.quota``.
* ``Headroom`` — units an account keeps free for use it cannot see coming (another
  client on the same key): the largest such jump seen recently, let go a few minutes
  after the last one.
* ``FixedWindow`` — a counter that empties at multiples of ``length_s`` from the epoch (a
  86,400 s window resets at 00:00 UTC). Per-user limits use these: "your 10 requests this
  minute, try again in 23 s" then names one exact reset, and "tell once per window" has
  a window to key on. Their boundary bursts are harmless: the account mirror, not the
  per-user share, is what keeps the shared key under its limits.
"""

from __future__ import annotations

import math

from bot.types import QuotaCounter

__all__ = ["DRAIN_HOLD_S", "FixedWindow", "Headroom", "RefillBucket", "finite", "unfinite"]

# How long a reserved request may take to reach the server (a commit, another process's
# scheduling, the HTTP send: up to hundreds of ms on a loaded machine). The mirror drains
# a reservation from when it is made, the server from when the request arrives; into an
# empty bucket that put the server ahead of the mirror by the first request's travel
# time × refill rate for the rest of the busy period (measured: 0.2 s at 60 RPM in one
# process; "Used 29, Requested 1, try again in 40ms" 429s at 30 RPM with 3 processes).
# See ``RefillBucket.take``: a phase shift costing rate × this once per busy period.
DRAIN_HOLD_S = 1.0

# Float slack so that sleeping exactly the computed wait always admits.
_EPS = 1e-9
# Refill buckets are saved once per slot of this fraction of their window.
_SLOTS = 1_440


def finite(value: float) -> float | None:
    """``value`` for JSON, which has no infinities: ±inf (never / not yet) as None."""
    return value if math.isfinite(value) else None


def unfinite(value: float | None) -> float:
    """The inverse of ``finite`` for times: None is "never" (−inf)."""
    return -math.inf if value is None else float(value)


class RefillBucket:
    """``limit`` units refilling continuously over ``window_s`` seconds.

    State is the level (units in use) at time ``at``; the level drains linearly to 0.
    ``pending`` is the part of it reserved by requests still in flight (``take`` adds to
    both, ``commit`` settles one): wait estimates may count it in part. Written for the
    admission path: no builtins where a comparison does.
    """

    __slots__ = ("_at", "_level", "_rate", "limit", "pending", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit = float(limit)
        self.window_s = float(window_s)
        self._rate = self.limit / self.window_s
        self.pending = 0.0
        self._level = 0.0
        self._at = -math.inf

    @property
    def rate(self) -> float:
        """Units refilled per second."""
        return self._rate

    def used(self, now: float) -> float:
        level = self._level
        if level <= 0.0:
            return 0.0
        elapsed = now - self._at
        if elapsed <= 0.0:  # a clock that stepped backwards drains nothing
            return level
        level -= elapsed * self._rate
        return level if level > 0.0 else 0.0

    def time_to_fit(self, amount: float, now: float, pending_share: float = 1.0) -> float:
        """Seconds until ``amount`` more fits, even past the limit (estimates a queue).
        ``pending_share`` < 1 counts reservations in flight only in part (they may end
        having used little)."""
        used = self.used(now)
        if pending_share < 1.0 and self.pending:
            used -= min(self.pending, used) * (1.0 - pending_share)
        excess = used + amount - self.limit
        return 0.0 if excess <= _EPS * self.limit else excess / self._rate

    def wait_for(
        self, amount: float, now: float, pending_share: float = 1.0, margin: float = 0.0
    ) -> float:
        """Seconds until ``amount`` more fits with ``margin`` to spare: 0 now, ``inf`` if
        it never can. The margin never exceeds what ``amount`` leaves of the limit, so a
        request that fits an empty bucket is slowed by it, never refused."""
        limit = self.limit
        if amount > limit * (1.0 + _EPS):
            return math.inf
        if margin > 0.0:
            amount += margin if margin < limit - amount else limit - amount
        return self.time_to_fit(amount, now, pending_share)

    def take(self, amount: float, now: float, hold_s: float = 0.0) -> None:
        """Reserve ``amount`` unconditionally (callers check ``wait_for`` first).

        ``hold_s``: into a bucket that would empty within ``hold_s``, start draining
        only once it would have emptied, ``hold_s`` from now. A server drains a request
        from when it arrives, the mirror from when it is reserved; where the server's
        level cannot go below zero while the request travels, that puts the server
        ahead by up to the refill of the travel time, for as long as the bucket stays
        busy. (Held in time, not as level: a limit lowered meanwhile is not overfilled.)"""
        self.pending += amount
        used = self.used(now)
        self._set(used + amount, now)
        empties_in = used / self._rate
        if empties_in < hold_s and now + hold_s - empties_in > self._at:
            self._at = now + hold_s - empties_in

    def add(self, amount: float, now: float) -> None:
        """Count ``amount`` more use (less, if negative) that no reservation settles."""
        level = self.used(now) + amount
        self._set(level if level > 0.0 else 0.0, now)

    def raise_to(self, used: float, now: float) -> bool:
        """Lift the level to ``used`` if it is lower; return whether it changed."""
        if used <= self.used(now):
            return False
        self._set(used, now)
        return True

    def set_level(self, used: float, now: float) -> None:
        """Replace the level (another account of the same use has proved right)."""
        self._level, self._at = (used if used > 0.0 else 0.0), now

    def set_limit(self, limit: float, now: float) -> None:
        """Change the limit (and so the refill rate), keeping the units in use."""
        level = self.used(now)
        self.limit = float(limit)
        self._rate = self.limit / self.window_s
        self._set(level, now)

    def clears_in(self, now: float) -> float:
        """Seconds until the bucket is whole again."""
        return self.used(now) / self._rate

    def commit(self, reserved: float, final: float, now: float) -> None:
        """A reserved use is over: count ``final`` instead (a refund when smaller)."""
        pending = self.pending - reserved
        self.pending = pending if pending > 0.0 else 0.0
        level = self.used(now) + final - reserved
        self._set(level if level > 0.0 else 0.0, now)

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
        decayed = level - max(0.0, now - slot_end) * self._rate
        self._level, self._at = max(self.used(now), decayed, 0.0), now

    def _set(self, level: float, now: float) -> None:
        self._level = level
        if now > self._at:
            self._at = now

    def to_state(self) -> list[float | None]:
        """JSON-safe state (limit, window, level, at, pending) for a shared account."""
        return [self.limit, self.window_s, self._level, finite(self._at), self.pending]

    @classmethod
    def from_state(cls, state: list[float | None]) -> RefillBucket:
        limit, window_s, level, at, pending = state
        bucket = cls(float(limit or 1), float(window_s or 1))
        bucket._level, bucket._at = float(level or 0), unfinite(at)
        bucket.pending = float(pending or 0)
        return bucket


class Headroom:
    """Units to keep free for use that is not ours: the largest jump ``note``d, held
    ``hold_s`` after the last one, then let go linearly over another ``hold_s``."""

    __slots__ = ("_jump", "_seen_at", "hold_s")

    def __init__(self, hold_s: float) -> None:
        self.hold_s = float(hold_s)
        self._jump = 0.0
        self._seen_at = -math.inf

    def value(self, now: float) -> float:
        if self._jump <= 0.0:
            return 0.0
        late = now - self._seen_at - self.hold_s
        if late <= 0.0:
            return self._jump
        return max(0.0, self._jump * (1.0 - late / self.hold_s))

    def note(self, jump: float, now: float) -> None:
        """Another jump of ``jump`` units: hold the larger of it and what is held now."""
        self._jump = max(self.value(now), jump)
        self._seen_at = now

    def to_state(self) -> list[float | None]:
        return [self._jump, finite(self._seen_at)]

    def load_state(self, state: list[float | None]) -> None:
        self._jump, self._seen_at = float(state[0] or 0), unfinite(state[1])


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
