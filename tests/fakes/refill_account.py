"""RefillAccount: an in-process model of Groq's account limits, for the quota's tests.

No HTTP and no clock of its own (``now`` is passed in): each dimension refills
continuously, as Groq documents (reset = (limit − remaining) × window ÷ limit). A chat
request is checked and charged prompt + max output when it arrives and, when it ends,
refunded to what it really used — unless ``keep_cap_charged``. ``burn`` is another
client on the same key. Answers come as the ``RateLimitSnapshot`` the real client
would report: a served response's headers (remaining requests per day, remaining
tokens per minute, whole numbers rounded down like Groq's), or a 429 with its
message's figures and a retry-after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from bot.types import RateLimitSnapshot

__all__ = ["Charge", "RefillAccount"]

_DIMENSIONS = ("rpd", "rpm", "tpm", "tpd")


@dataclass
class _Bucket:
    limit: float
    window_s: float
    level: float = 0.0
    at: float = 0.0

    def used(self, now: float) -> float:
        return max(0.0, self.level - (now - self.at) * self.limit / self.window_s)

    def add(self, amount: float, now: float) -> None:
        self.level, self.at = max(0.0, self.used(now) + amount), now


@dataclass(frozen=True)
class Charge:
    """One served request: what it was charged up front."""

    prompt: int
    cap: int


@dataclass
class RefillAccount:
    """One model's limits as the server keeps them; ``count_429`` counts our refusals."""

    model: str
    rpm: int = 30
    rpd: int = 1_000
    tpm: int = 6_000
    tpd: int = 500_000
    minute_s: float = 60.0
    day_s: float = 86_400.0
    keep_cap_charged: bool = False
    round_remaining: bool = False  # remaining rounded to nearest, not down
    count_429: int = 0
    served: int = 0
    other_429: int = 0
    refused: list[str] = field(default_factory=list)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for dim in _DIMENSIONS:
            window = self.minute_s if dim.endswith("m") else self.day_s
            self._buckets[dim] = _Bucket(getattr(self, dim), window)

    def level(self, dim: str, now: float) -> float:
        return self._buckets[dim].used(now)

    def start(self, prompt: int, cap: int, now: float) -> tuple[RateLimitSnapshot, Charge | None]:
        """A chat request arrives: its response's snapshot, and its charge if served."""
        blocked = self._blocked(prompt + cap, now)
        if blocked is not None:
            self.count_429 += 1
            dim, used, need = blocked
            self.refused.append(dim)
            bucket = self._buckets[dim]
            wait = (used + need - bucket.limit) * bucket.window_s / bucket.limit
            return (
                replace(
                    self.headers(now, status=429),
                    retry_after_s=max(wait, 0.001),
                    exceeded=dim,
                    exceeded_limit=int(bucket.limit),
                    exceeded_used=int(used),
                    exceeded_requested=need,
                ),
                None,
            )
        self._charge(prompt + cap, now)
        self.served += 1
        return self.headers(now), Charge(prompt, cap)

    def finish(self, charge: Charge, completion: int, now: float) -> None:
        """The answer ended having used ``completion`` tokens."""
        if not self.keep_cap_charged:
            for dim in ("tpm", "tpd"):
                self._buckets[dim].add(-(charge.cap - completion), now)

    def burn(self, tokens: int, now: float) -> bool:
        """Another client on the key sends one request of ``tokens``; False if refused."""
        if self._blocked(tokens, now) is not None:
            self.other_429 += 1
            return False
        self._charge(tokens, now)
        return True

    def headers(self, now: float, status: int = 200) -> RateLimitSnapshot:
        rpd, tpm = self._buckets["rpd"], self._buckets["tpm"]
        whole = round if self.round_remaining else math.floor
        return RateLimitSnapshot(
            model=self.model,
            at=now,
            limit_requests=self.rpd,
            remaining_requests=max(0, whole(self.rpd - rpd.used(now))),
            limit_tokens=self.tpm,
            remaining_tokens=max(0, whole(self.tpm - tpm.used(now))),
            status=status,
        )

    def _blocked(self, tokens: int, now: float) -> tuple[str, float, int] | None:
        for dim in _DIMENSIONS:
            bucket = self._buckets[dim]
            need = 1 if dim[0] == "r" else tokens
            used = bucket.used(now)
            if used + need > bucket.limit + 1e-6:
                return dim, used, need
        return None

    def _charge(self, tokens: int, now: float) -> None:
        for dim in _DIMENSIONS:
            self._buckets[dim].add(1 if dim[0] == "r" else tokens, now)
