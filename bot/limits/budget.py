"""``AccountBudget``: one model's account mirror, a refill bucket per limited dimension.

Pure arithmetic with an injected ``now``, like the meters it groups.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from bot.limits.meters import Headroom, RefillBucket
from bot.limits.table import DIMENSIONS, ModelLimits
from bot.types import QuotaCounter

__all__ = ["AccountBudget"]

# Headroom for another client's use is held this many minutes after its last jump (and
# let go over as many more): long enough to span that client's pauses between bursts.
_HOLD_MINUTES = 3.0
# The travel spare never exceeds this: beyond it a request is held up somewhere (a full
# connection pool), not travelling, and waiting longer would only delay it.
_MAX_TRAVEL_S = 1.0


class AccountBudget:
    """One model's account mirror: a ``RefillBucket`` per limited dimension, a
    ``Headroom`` beside each, and for token dimensions a shadow bucket.

    Output refunds: ``refunds`` says whether ``commit`` gives back the unused part of a
    reservation (prompt + max output) or keeps it charged, as a server that charges the
    whole output cap would. The token shadows count the same use under the other answer,
    so ``ModelAccount`` can tell from the API's headers which one the server follows and
    ``set_refunds`` switches with nothing lost.

    The shadows start with the server's first token report (``start_shadows``).

    In flight: ``in_flight`` reservations not yet committed, of which ``heard`` have had
    an answer's headers (so the server surely counted them), ``largest`` the biggest
    reservation among them; ``unheard`` bounds what the server may not have counted yet.

    Travel: the server counts a request when it arrives, the mirror when it reserves,
    so the server's buckets drain from a later instant; when requests travel for
    different times, the server can be ahead of the mirror by the refill of that spread.
    ``travel_s`` is the longest reservation-to-headers time of the last minutes (FIFO
    pairing, so each sample is at least the real one's): the least a queued request
    waits past the moment the mirror says it fits.
    """

    __slots__ = (
        "_day_s",
        "_minute_s",
        "_sent",
        "buckets",
        "headroom",
        "heard",
        "in_flight",
        "largest",
        "refunds",
        "shadows",
        "travel",
    )

    def __init__(self, limits: ModelLimits, *, minute_s: float, day_s: float) -> None:
        self._minute_s, self._day_s = minute_s, day_s
        self.buckets: dict[str, RefillBucket] = {}
        self.shadows: dict[str, RefillBucket] = {}
        self.headroom: dict[str, Headroom] = {}
        self.refunds = True
        self.in_flight = 0
        self.heard = 0
        self.largest = 0.0
        self.travel = Headroom(minute_s)
        self._sent: deque[float] = deque()  # reservation times of the unheard, oldest first
        for dim in DIMENSIONS:
            limit = limits.get(dim)
            if limit is not None:
                self.set_limit(dim, limit, 0.0)

    def __iter__(self) -> Iterator[tuple[str, RefillBucket]]:
        return iter(self.buckets.items())

    # ----- admission -----

    def wait_for(self, tokens: int, now: float, pending_share: float = 1.0) -> float:
        """Seconds until one request of ``tokens`` fits every bucket with its headroom
        (``inf``: never); ``pending_share`` < 1 gives a lower bound, counting tokens
        reserved in flight only in part."""
        wait = 0.0
        for dim, meter in self.buckets.items():
            margin = self.headroom[dim].value(now)
            if dim[0] == "r":
                need = meter.wait_for(1, now, 1.0, margin)
            else:
                need = meter.wait_for(tokens, now, pending_share, margin)
            if need > wait:
                wait = need
        return wait

    def estimate(
        self, requests: int, tokens: int, now: float, share: float = 1.0
    ) -> tuple[float, str]:
        """Seconds until ``requests`` requests totalling ``tokens`` would all have fitted,
        and the dimension that takes longest; ``share`` of reserved tokens stays used."""
        wait, worst = 0.0, ""
        for dim, meter in self.buckets.items():
            margin = self.headroom[dim].value(now)
            if dim[0] == "r":
                need = meter.time_to_fit(requests + margin, now)
            else:
                need = meter.time_to_fit(tokens + margin, now, share)
            if need > wait:
                wait, worst = need, dim
        return wait, worst

    def take(self, tokens: int, now: float, hold_s: float = 0.0) -> None:
        """Reserve one request of ``tokens`` (prompt + max output); ``hold_s``: see
        ``RefillBucket.take``."""
        for dim, meter in self.buckets.items():
            meter.take(1 if dim[0] == "r" else tokens, now, hold_s)
        for shadow in self.shadows.values():
            shadow.take(tokens, now, hold_s)
        self.in_flight += 1
        self._sent.append(now)
        if tokens > self.largest:
            self.largest = float(tokens)

    def take_request(self, now: float) -> None:
        """One more request with no tokens of its own (a retry of a reserved one)."""
        for dim, meter in self.buckets.items():
            if dim[0] == "r":
                meter.add(1, now)

    def commit(self, reserved: int, final: int, kept: int, now: float) -> None:
        """The request that reserved ``reserved`` tokens is over: it used ``final``, and
        a server that keeps the output cap charged still counts ``kept``."""
        main, other = (final, kept) if self.refunds else (kept, final)
        for dim, meter in self.buckets.items():
            if dim[0] == "r":
                meter.commit(1, 1, now)
            else:
                meter.commit(reserved, main, now)
        for shadow in self.shadows.values():
            shadow.commit(reserved, other, now)
        self.in_flight = max(0, self.in_flight - 1)
        # Which request ended is unknown: counting it as heard keeps ``unheard`` an
        # upper bound.
        self.heard = max(0, min(self.heard - 1, self.in_flight))
        # One that ended unheard (failed before its headers) leaves a time behind: drop
        # the newest, so the oldest stays paired and travel is not underestimated.
        while len(self._sent) > self.in_flight - self.heard:
            self._sent.pop()
        if not self.in_flight:
            self.largest = 0.0

    # ----- what the server said -----

    def refused(self, now: float) -> None:
        """The server refused one attempt (429): it counts no request for it, so neither
        does the mirror (a retry is counted anew)."""
        for dim, meter in self.buckets.items():
            if dim[0] == "r":
                meter.add(-1, now)

    def hear(self, now: float) -> None:
        """An answer's headers arrived: one more request in flight was surely counted."""
        self.heard = min(self.heard + 1, self.in_flight)
        if self._sent:
            self.travel.note(now - self._sent.popleft(), now)

    def travel_s(self, now: float) -> float:
        """How long requests have been travelling lately (see the class docstring)."""
        return min(self.travel.value(now), _MAX_TRAVEL_S)

    def unheard(self) -> float:
        """At most this many tokens are reserved here that the server may not count yet."""
        return (self.in_flight - self.heard) * self.largest

    def _both(self, dim: str) -> list[RefillBucket]:
        """``dim``'s bucket and, while tracked, its shadow (the other refund answer);
        empty when ``dim`` is not limited."""
        meter = self.buckets.get(dim)
        if meter is None:
            return []
        shadow = self.shadows.get(dim)
        return [meter] if shadow is None else [meter, shadow]

    def raise_to(self, dim: str, used: float, now: float) -> bool:
        """Lift ``dim`` (under both refund answers) to at least ``used``; whether its
        bucket rose."""
        lifted = [bucket.raise_to(used, now) for bucket in self._both(dim)]
        return bool(lifted) and lifted[0]

    def add(self, dim: str, amount: float, now: float) -> None:
        """Count ``amount`` of someone else's use in ``dim``."""
        for bucket in self._both(dim):
            bucket.add(amount, now)

    def set_limit(self, dim: str, limit: int, now: float) -> None:
        """Change ``dim``'s limit, adding its bucket if it had none."""
        both = self._both(dim)
        for bucket in both:
            bucket.set_limit(limit, now)
        if both:
            return
        window = self._minute_s if dim.endswith("m") else self._day_s
        self.buckets[dim] = RefillBucket(limit, window)
        self.headroom[dim] = Headroom(_HOLD_MINUTES * self._minute_s)
        if dim[0] == "t" and self.shadows:
            self.shadows[dim] = RefillBucket(limit, window)

    def start_shadows(self, now: float) -> None:
        """Count token use both ways from now on (until the server has reported, there
        is nothing to compare them with, and no cost on the admission path)."""
        for dim, meter in self.buckets.items():
            if dim[0] == "t" and dim not in self.shadows:
                shadow = self.shadows[dim] = RefillBucket(meter.limit, meter.window_s)
                shadow.set_level(meter.used(now), now)

    def set_refunds(self, refunds: bool, now: float) -> None:
        """Refund unused output from now on, or stop, as the server was just shown to;
        the shadows, which counted the use that way, become the real levels. Both
        answers then agree on the past: only later commits tell them apart again."""
        for dim, shadow in self.shadows.items():
            meter = self.buckets[dim]
            if refunds != self.refunds:
                meter.set_level(self._kept(dim, now) if self.refunds else shadow.used(now), now)
            shadow.set_level(meter.used(now), now)
        self.refunds = refunds

    def levels(self, dim: str, now: float) -> tuple[float, float] | None:
        """``dim``'s level (refunded, kept): with refunds and without."""
        meter = self.buckets.get(dim)
        if meter is None or dim not in self.shadows:
            return None
        kept = self._kept(dim, now)
        return (meter.used(now), kept) if self.refunds else (self.shadows[dim].used(now), kept)

    def _kept(self, dim: str, now: float) -> float:
        """The level had the server kept every output cap charged: never above the limit
        (that server would have refused what did not fit, and still answered us)."""
        meter = self.buckets[dim]
        kept = self.shadows[dim] if self.refunds else meter
        return min(kept.used(now), max(meter.limit, meter.used(now)))

    # ----- persistence -----

    def to_state(self) -> dict[str, object]:
        """Everything that changes, JSON-safe: a fleet's processes share it in a row."""
        return {
            "buckets": {dim: b.to_state() for dim, b in self.buckets.items()},
            "shadows": {dim: b.to_state() for dim, b in self.shadows.items()},
            "headroom": {dim: h.to_state() for dim, h in self.headroom.items()},
            "refunds": self.refunds,
            "in_flight": self.in_flight,
            "heard": self.heard,
            "largest": self.largest,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace this budget's state by ``to_state``'s output (from another process)."""
        self.buckets = {d: RefillBucket.from_state(v) for d, v in state["buckets"].items()}
        self.shadows = {d: RefillBucket.from_state(v) for d, v in state["shadows"].items()}
        for dim in self.buckets:
            self.headroom.setdefault(dim, Headroom(_HOLD_MINUTES * self._minute_s))
        for dim, room in state["headroom"].items():
            if dim in self.headroom:
                self.headroom[dim].load_state(room)
        self.refunds = bool(state["refunds"])
        self.in_flight, self.heard = int(state["in_flight"]), int(state["heard"])
        self.largest = float(state["largest"])

    def to_rows(self, subject: str, now: float) -> list[QuotaCounter]:
        rows = (meter.to_row(subject, dim, now) for dim, meter in self.buckets.items())
        return [row for row in rows if row is not None]

    def restore(self, dim: str, level: float, at: float, now: float) -> None:
        """Merge a saved row into ``dim`` (both refund answers: it is what was in use)."""
        meter = self.buckets.get(dim)
        if meter is not None:
            meter.restore(level, at, now)
            shadow = self.shadows.get(dim)
            if shadow is not None:
                shadow.restore(level, at, now)
