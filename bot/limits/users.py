"""``UserCounters``: one user's per-model fixed windows (rpm, rpd, tpm, tpd).

Pure arithmetic with an injected ``now``; the limits are passed in by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.limits.meters import FixedWindow, finite, unfinite
from bot.limits.table import DIMENSIONS, ModelLimits
from bot.types import QuotaCounter

__all__ = ["UserCounters"]


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

    def to_state(self) -> dict[str, object]:
        """JSON-safe windows and notices, for a fleet's shared user row."""
        windows = {d: [finite(self.window(d).start), self.window(d).used_] for d in DIMENSIONS}
        return {"windows": windows, "noticed": dict(self.noticed)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        for dim, (start, used) in state["windows"].items():
            window = self.window(dim)
            window.start, window.used_ = unfinite(start), float(used)
        self.noticed = {d: float(v) for d, v in state["noticed"].items()}

    def settle(self, charged: int, used: int | None, minute_start: float, day_start: float) -> None:
        """A request charged ``charged`` tokens at admission ended having used ``used``
        (None: unknown, keep the charge): 0 hands the whole request back (it failed
        before the server charged anything), else the token windows take the real use."""
        if used == 0:
            self.release(charged, minute_start, day_start)
        elif used is not None and used != charged:
            self.tpm.adjust(used - charged, minute_start)
            self.tpd.adjust(used - charged, day_start)

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
