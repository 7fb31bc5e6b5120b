"""``AccountBudget``: one model's account mirror, a meter per limited dimension.

Pure arithmetic with an injected ``now``, like the meters it groups.
"""

from __future__ import annotations

from collections.abc import Iterator

from bot.limits.meters import Meter, meter_for
from bot.limits.table import DIMENSIONS, ModelLimits
from bot.types import QuotaCounter

__all__ = ["AccountBudget"]


class AccountBudget:
    """One model's account mirror: a meter per limited dimension (minute windows trailing
    logs, day windows refill buckets)."""

    __slots__ = ("buckets",)

    def __init__(self, limits: ModelLimits, *, minute_s: float, day_s: float) -> None:
        self.buckets: dict[str, Meter] = {}
        for dim in DIMENSIONS:
            limit = limits.get(dim)
            if limit is not None:
                self.buckets[dim] = meter_for(dim, limit, minute_s, day_s)

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

    def take_request(self, now: float) -> None:
        """One more request with no tokens of its own (a retry of a reserved one)."""
        for dim, meter in self.buckets.items():
            if dim[0] == "r":
                meter.take(1, now)

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
