"""Pure limiter arithmetic with an injected ``now``: no I/O, no clock object, no awaits.

Three meters:

* ``TrailingLog`` — at most ``limit`` in any trailing window, each use counted from when
  it is *committed* (its response is over, so the server has surely counted it) until
  one window later, reserved use counting in full until then. The account mirror's
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

``AccountBudget`` and ``UserCounters`` group the four dimensions (rpm, rpd, tpm, tpd);
``ModelLane`` adds a model's FIFO queue bookkeeping (waking is a callback, so this module
stays free of asyncio).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace

from bot.limits.table import DIMENSIONS, ModelLimits
from bot.types import QuotaCounter, RateLimitSnapshot

__all__ = [
    "AccountBudget",
    "FixedWindow",
    "Meter",
    "ModelLane",
    "QueueEntry",
    "RefillBucket",
    "TrailingLog",
    "UserCounters",
]

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

    ``take`` reserves (counted in full, undated); ``commit`` dates the use at its end.
    """

    __slots__ = ("_entries", "_hold_s", "_sum", "limit", "pending", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit = float(limit)
        self.window_s = float(window_s)
        self._hold_s = window_s * _HOLD
        self.pending = 0.0
        self._entries: deque[tuple[float, float]] = deque()  # (committed at, amount)
        self._sum = 0.0

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries and entries[0][0] + self._hold_s <= now + _EPS * self._hold_s:
            self._sum -= entries.popleft()[1]
        if not entries:
            self._sum = 0.0  # no float drift survives an empty log

    def used(self, now: float) -> float:
        self._expire(now)
        return self._sum + self.pending

    def clears_in(self, now: float) -> float:
        """Seconds until nothing counts any more (a window, while use is still pending)."""
        self._expire(now)
        last = self._entries[-1][0] + self._hold_s - now if self._entries else 0.0
        return max(last, self._hold_s if self.pending else 0.0)

    def time_to_fit(self, amount: float, now: float, pending_share: float = 1.0) -> float:
        """Seconds until ``amount`` more fits. For estimates, ``pending_share`` is the part
        of pending reservations expected to stay in use, and past what is logged (a whole
        queue) pending use is taken to end now, then ``limit`` fits per window."""
        pending = self.pending * pending_share
        excess = self.used(now) - self.pending + pending + amount - self.limit
        slack = _EPS * self.limit
        if excess <= slack:
            return 0.0
        for at, used in self._entries:
            excess -= used
            if excess <= slack:
                return at + self._hold_s - now
        base = self._hold_s if pending else self.clears_in(now)
        return base + max(0.0, excess - pending) / self.limit * self.window_s

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
        self._entries.append((now, final))
        self._sum += final

    def raise_to(self, used: float, now: float) -> bool:
        """Lift use to ``used`` (dated now) if it is lower; return whether it changed."""
        current = self.used(now)
        if used <= current:
            return False
        self._entries.append((now, used - current))
        self._sum += used - current
        return True

    def set_limit(self, limit: float, now: float) -> None:
        self.limit = float(limit)

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


def _meter(dim: str, limit: float, minute_s: float, day_s: float) -> Meter:
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


class AccountBudget:
    """One model's account mirror: a meter per limited dimension (minute windows trailing
    logs, day windows refill buckets)."""

    __slots__ = ("buckets",)

    def __init__(self, limits: ModelLimits, *, minute_s: float, day_s: float) -> None:
        self.buckets: dict[str, Meter] = {}
        for dim in DIMENSIONS:
            limit = limits.get(dim)
            if limit is not None:
                self.buckets[dim] = _meter(dim, limit, minute_s, day_s)

    def __iter__(self) -> Iterator[tuple[str, Meter]]:
        return iter(self.buckets.items())

    def wait_for(self, tokens: int, now: float, pending_share: float = 1.0) -> float:
        """Seconds until one request of ``tokens`` fits every meter (``inf``: never);
        ``pending_share`` < 1 gives a lower bound, counting in-flight use only in part."""
        wait = 0.0
        for dim, meter in self.buckets.items():
            amount = 1 if dim[0] == "r" else tokens
            wait = max(wait, meter.wait_for(amount, now, pending_share))
        return wait

    def estimate(
        self, requests: int, tokens: int, now: float, share: float = 1.0
    ) -> tuple[float, str]:
        """Seconds until ``requests`` requests totalling ``tokens`` would all have fitted,
        and the dimension that takes longest; ``share`` of reserved tokens stays used."""
        wait, worst = 0.0, ""
        for dim, meter in self.buckets.items():
            if dim[0] == "r":
                need = meter.time_to_fit(requests, now)
            else:
                need = meter.time_to_fit(tokens, now, share)
            if need > wait:
                wait, worst = need, dim
        return wait, worst

    def take(self, tokens: int, now: float) -> None:
        for dim, meter in self.buckets.items():
            meter.take(1 if dim[0] == "r" else tokens, now)

    def commit(self, reserved: int, final: int, now: float) -> None:
        """The request that reserved ``reserved`` tokens is over and used ``final``."""
        for dim, meter in self.buckets.items():
            if dim[0] == "r":
                meter.commit(1, 1, now)
            else:
                meter.commit(reserved, final, now)

    def to_rows(self, subject: str, now: float) -> list[QuotaCounter]:
        rows = (meter.to_row(subject, dim, now) for dim, meter in self.buckets.items())
        return [row for row in rows if row is not None]


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
            self.budget.buckets[dim] = _meter(dim, limit, self.minute_s, self.day_s)
        else:
            meter.set_limit(limit, now)
        return True


class UserCounters:
    """One user's fixed windows for one model (limits are passed in, as they follow the
    account's)."""

    __slots__ = ("noticed", "rpd", "rpm", "tpd", "tpm")

    def __init__(self, *, minute_s: float, day_s: float) -> None:
        self.rpm = FixedWindow(minute_s)
        self.rpd = FixedWindow(day_s)
        self.tpm = FixedWindow(minute_s)
        self.tpd = FixedWindow(day_s)
        # dimension -> start of the window whose refusal the user was last told about
        self.noticed: dict[str, float] = {}

    def first_notice(self, dim: str, now: float) -> bool:
        """Record a refusal on ``dim``; True only for the first in its window."""
        start = self.window(dim).start_for(now)
        first = self.noticed.get(dim) != start
        self.noticed[dim] = start
        return first

    def to_rows(self, subject: str, now: float) -> list[QuotaCounter]:
        """The current windows as rows (a window's row is overwritten as it changes)."""
        rows = []
        for dim in DIMENSIONS:
            window = self.window(dim)
            if window.start == window.start_for(now):
                rows.append(QuotaCounter(subject, dim, window.start, window.used_))
        return rows

    def release(self, tokens: int, minute_start: float, day_start: float) -> None:
        """Undo ``add`` for a request that never ran (if its windows are still current)."""
        self.rpm.adjust(-1, minute_start)
        self.tpm.adjust(-tokens, minute_start)
        self.rpd.adjust(-1, day_start)
        self.tpd.adjust(-tokens, day_start)

    def window(self, dim: str) -> FixedWindow:
        window: FixedWindow = getattr(self, dim)
        return window

    def blocking(self, limits: ModelLimits, tokens: int, now: float) -> tuple[str, float] | None:
        """The dimension that blocks longest and its wait, or None when all admit."""
        worst: tuple[str, float] | None = None
        for dim, window, amount in (
            ("rpd", self.rpd, 1),
            ("tpd", self.tpd, tokens),
            ("rpm", self.rpm, 1),
            ("tpm", self.tpm, tokens),
        ):
            limit = limits.get(dim)
            if limit is None:
                continue
            wait = window.wait_for(amount, limit, now)
            if wait > 0.0 and (worst is None or wait > worst[1]):
                worst = (dim, wait)
        return worst

    def add(self, tokens: int, now: float) -> tuple[float, float]:
        """Count one request; return the (minute, day) window starts it landed in."""
        self.rpm.add(1, now)
        self.rpd.add(1, now)
        return self.tpm.add(tokens, now), self.tpd.add(tokens, now)
