"""``ModelAccount``: the shared account as seen for one model.

Its budget, the waiters queued for it, a 429 pause, its limits (where each came from,
and each user's share of them) and the API's last report. Pure like the meters: waiters
are woken by callback (``bot.ratelimit.WaitQueue``) and ``QuotaManager`` does the
awaiting.

What the API says is the truth about the account (``observe``):

* **Levels.** ``limit − remaining`` of each header pair (Groq: requests per day, tokens
  per minute) and a 429's "Used N" (plus its "Requested", still in our reservation)
  lift the mirror to the server's level; never lower it, as our reservations for
  requests still on their way may not be counted there yet. A header's request count
  is a rounded whole number: it lifts to one below it, and a refused attempt (413,
  429) is taken out, as the server does not count it.
* **Other clients on the key.** Where the server's level is above ours by more than
  estimation noise, the difference is someone else's use: tokens beyond 1 % of the
  limit (at least 32), whole requests beyond the server's rounding (learnt from its
  reports while all of ours are counted) and half a second's refill (how old a report
  can be). Beyond the lift itself it is counted in the twin dimension the API does not
  report (requests per day → per minute, tokens per minute → per day), and the largest
  such jump of the last minutes becomes ``Headroom`` (at most half the limit): room
  kept free, so that their next burst landing between our check and the server's count
  does not turn our request into a 429. A jump seen in a day window is scaled to a
  minute's share when the previous report is more than a minute old.
* **Output refunds.** A server may refund the unused part of the output cap when a
  request ends, or keep it charged (``charges_cap``). Until its headers have told, the
  mirror keeps the cap charged; the budget's shadow buckets count the other way, and
  each served response's token level is compared with both: below the midpoint even
  counting every reservation it may not have seen yet → it refunds (one such report
  suffices: it cannot happen if it doesn't); above the midpoint with no foreign request
  in the same report → it keeps the cap (learned after two in a row, a refund report
  resetting the count). Which one the mirror follows switches at once either way.
* **Limits.** Header limits are adopted (settings pin a ceiling), a 429 naming a
  dimension's limit is adopted for it: that is how a paid tier's requests per minute
  are learned. When every reported limit is at least ``_PAID_TIER`` times the free
  table's, the dimensions no header reports (RPM and TPD on Groq) are assumed scaled by
  90 % of the smallest of those ratios, as a bound, until a 429 names the real figure
  (Groq's developer tier is about ×30 on every dimension, but not exactly alike).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bot.limits.budget import AccountBudget
from bot.limits.meters import finite, unfinite
from bot.limits.table import DIMENSIONS, LimitSource, LimitTable, ModelLimits
from bot.ratelimit import WaitQueue
from bot.types import RateLimitSnapshot, Usage

if TYPE_CHECKING:
    from bot.limits.config import QuotaConfig

__all__ = ["ModelAccount"]

log = logging.getLogger(__name__)

# The dimension each reported one says something about beyond itself.
_TWINS = {"rpd": "rpm", "rpm": "rpd", "tpm": "tpd", "tpd": "tpm"}
# A server's token level this far above ours is estimation noise (prompt estimates, a
# report half a second old), not someone else's use.
_TOKEN_NOISE_SHARE = 0.01
_TOKEN_NOISE_MIN = 32.0
# A report can be this old when it arrives (the answer's latency).
_STALE_S = 0.5
# Reports of the server's request count that tell how it rounds (the lowest counts).
_ROUNDING_SAMPLES = 64
# Headroom for other clients is at most this share of a limit.
_HEADROOM_SHARE = 0.5
# Reports in a row above the midpoint before the account counts as keeping the cap.
_CAP_VOTES = 2
# Reported limits this many times the free table's mean a paid tier (Groq's are ×25 and
# more; a table a little out of date or a test server's round figures are not); the
# figures no header reports are assumed to have risen by this share of the least-risen
# reported one (tiers do not raise every dimension alike).
_PAID_TIER = 10.0
_TIER_SPARE = 0.9
_FROM_TABLE = (LimitSource.TABLE, LimitSource.DEFAULT, LimitSource.SCALED)
# Statuses of a request the server refused for its limits, without counting it.
_REFUSED = (413, 429)


class ModelAccount:
    """One model: account budget, FIFO of waiters, 429 pause, limits, last report.

    ``fixed`` names the dimensions settings pinned: the API may lower those, never raise
    them. ``user_limits`` is each user's share of ``limits``; ``QuotaManager`` keeps it
    in step. ``sources`` says where each limit came from; ``scale`` is the paid-tier
    factor applied to the table's unreported figures (1: none). ``output_cap`` is
    MAX_OUTPUT_TOKENS (0: unknown), for what a server keeping the cap charged counts.
    ``charges_cap``: None until the headers have told, then whether the server keeps the
    whole output cap charged after a request ends (True) or refunds (False).
    """

    __slots__ = (
        "_base",
        "_base_sources",
        "_cap_heard",
        "_cap_votes",
        "_heard_at",
        "_ratios",
        "_rounding",
        "budget",
        "charges_cap",
        "day_s",
        "fixed",
        "limits",
        "minute_s",
        "model",
        "output_cap",
        "paused_until",
        "reported",
        "scale",
        "sources",
        "usage_ratio",
        "user_limits",
        "waiters",
    )

    def __init__(
        self,
        model: str,
        limits: ModelLimits,
        fixed: frozenset[str] = frozenset(),
        *,
        user_limits: ModelLimits,
        minute_s: float,
        day_s: float,
        origin: LimitSource = LimitSource.TABLE,
        output_cap: int = 0,
    ) -> None:
        self.model = model
        self.limits = limits
        self.fixed = fixed
        self.user_limits = user_limits
        self.minute_s, self.day_s = minute_s, day_s
        self.output_cap = output_cap
        self.budget = AccountBudget(limits, minute_s=minute_s, day_s=day_s)
        self.waiters = WaitQueue(ranked=True)  # each waiter's amount is the tokens it reserves
        self.paused_until = -math.inf
        self.reported: RateLimitSnapshot | None = None
        # Real use ÷ reservation, smoothed: queued requests will hold less than they
        # reserve (max output is rarely all used), so wait estimates scale by it.
        self.usage_ratio = 1.0
        self.sources: dict[str, LimitSource] = {
            dim: LimitSource.SETTINGS if dim in fixed else origin for dim in DIMENSIONS
        }
        self._base, self._base_sources = limits, dict(self.sources)
        self._ratios: dict[str, float] = {}  # reported dimension -> header ÷ table
        self.scale = 1.0
        self.charges_cap: bool | None = None
        self._cap_votes = 0
        self._cap_heard = False
        self._heard_at = -math.inf
        # Recent (server's request count − ours) with all of ours counted: its rounding.
        self._rounding: deque[float] = deque(maxlen=_ROUNDING_SAMPLES)

    @classmethod
    def for_model(cls, model: str, table: LimitTable, config: QuotaConfig) -> ModelAccount:
        """A fresh account for ``model`` with ``table``'s limits and ``config``'s shares."""
        limits, fixed = table.lookup(model)
        return cls(
            model,
            limits,
            fixed,
            user_limits=config.user_limits(limits),
            minute_s=config.minute_s,
            day_s=config.day_s,
            origin=table.origin(model),
            output_cap=config.max_output_tokens,
        )

    # ----- admission -----

    def note_usage(self, reserved: int, final: int) -> None:
        if reserved > 0:
            ratio = min(1.0, max(0.05, final / reserved))
            self.usage_ratio += 0.2 * (ratio - self.usage_ratio)

    def can_pass(self, tokens: int, now: float) -> bool:
        """Nobody queued, not paused, and the budget fits: admit without queueing."""
        return (
            not self.waiters and now >= self.paused_until and not self.budget.wait_for(tokens, now)
        )

    def need(self, tokens: int, now: float, pending_share: float = 1.0) -> float:
        """Seconds until the head's request of ``tokens`` may go (with ``pending_share``
        < 1: at the soonest, should requests in flight turn out to use little)."""
        return max(self.paused_until - now, self.budget.wait_for(tokens, now, pending_share))

    def estimate(
        self, tokens: int, now: float, queued: tuple[int, float] | None = None
    ) -> tuple[float, str]:
        """Wait for a newcomer behind everyone queued (``queued``: waiters and the tokens
        they reserve, when the queue is not ``waiters``), and its cause (a dimension or
        "pause")."""
        count, amount = queued or (len(self.waiters), self.waiters.amount)
        ahead = round(amount * self.usage_ratio) + tokens
        wait, dim = self.budget.estimate(count + 1, ahead, now, self.usage_ratio)
        pause = self.paused_until - now
        return (pause, "pause") if pause >= wait and pause > 0 else (wait, dim)

    def commit(self, reserved: int, usage: Usage | None, now: float) -> None:
        """The request that reserved ``reserved`` tokens is over (``usage`` None: unknown,
        count the reservation). An answer that never started (0 tokens) was charged
        nothing; any other, a server keeping the cap charged counts as its real prompt
        plus MAX_OUTPUT_TOKENS (our estimate of the prompt erred)."""
        final = reserved if usage is None else usage.total_tokens
        kept = final
        if final > 0:
            room = reserved
            if usage is not None and self.output_cap:
                room = min(reserved, usage.prompt_tokens + self.output_cap)
            kept = max(final, room)
        self.budget.commit(reserved, final, kept, now)

    # ----- shared state (a fleet of processes on one key) -----

    def to_state(self) -> dict[str, object]:
        """What ``observe``, ``commit`` and the budget change, JSON-safe; the rest comes
        from settings, which every process of a fleet shares. ``reported`` and the
        waiters stay per process."""
        return {
            "budget": self.budget.to_state(),
            "limits": {dim: self.limits.get(dim) for dim in DIMENSIONS},
            "sources": {dim: source.value for dim, source in self.sources.items()},
            "ratios": dict(self._ratios),
            "scale": self.scale,
            "charges_cap": self.charges_cap,
            "cap_votes": self._cap_votes,
            "cap_heard": self._cap_heard,
            "heard_at": finite(self._heard_at),
            "rounding": list(self._rounding),
            "paused_until": finite(self.paused_until),
            "usage_ratio": self.usage_ratio,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace this account's state by ``to_state``'s output (from another process).
        The caller recomputes ``user_limits`` from ``limits``."""
        self.limits = ModelLimits(**state["limits"])
        self.budget.load_state(state["budget"])
        self.sources = {dim: LimitSource(v) for dim, v in state["sources"].items()}
        self._ratios = {dim: float(v) for dim, v in state["ratios"].items()}
        self.scale = float(state["scale"])
        self.charges_cap = state["charges_cap"]
        self._cap_votes, self._cap_heard = int(state["cap_votes"]), bool(state["cap_heard"])
        self._heard_at = unfinite(state["heard_at"])
        self._rounding = deque(state["rounding"], maxlen=_ROUNDING_SAMPLES)
        self.paused_until = unfinite(state["paused_until"])
        self.usage_ratio = float(state["usage_ratio"])

    # ----- what the API said -----

    def observe(self, snap: RateLimitSnapshot, requests_dim: str, now: float) -> bool:
        """Take in one response's headers and 429 message (see the module docstring);
        ``requests_dim`` is what the request headers count. Return whether a limit
        changed."""
        served = snap.status is None or 200 <= snap.status < 300
        if served:
            self.budget.hear(now)
        elif snap.status in _REFUSED:
            self.budget.refused(now)
        gap, self._heard_at = now - self._heard_at, now
        changed = False
        foreign_requests = 0.0
        if snap.limit_requests:
            changed |= self._adopt_reported(requests_dim, snap.limit_requests, now)
        if snap.remaining_requests is not None:
            limit = snap.limit_requests or self.limits.get(requests_dim)
            if limit is not None:
                level = limit - snap.remaining_requests
                foreign_requests = self._lift(requests_dim, level, gap, now)
        if snap.limit_tokens:
            changed |= self._adopt_reported("tpm", snap.limit_tokens, now)
        if snap.remaining_tokens is not None:
            limit = snap.limit_tokens or self.limits.tpm
            if limit is not None:
                level = limit - snap.remaining_tokens
                if served:
                    self._judge_refunds(level, foreign_requests >= 1, now)
                self._lift("tpm", level, gap, now)
        dim = snap.exceeded
        if dim in _TWINS:
            if snap.exceeded_limit:
                changed |= self._adopt(dim, snap.exceeded_limit, LimitSource.BODY, now)
            if snap.exceeded_used is not None:
                level = snap.exceeded_used
                if dim[0] == "t":
                    # Our reservation for the refused request is still counted here
                    # (the retry or the settle that follows takes it out): so is its
                    # "Requested".
                    level += snap.exceeded_requested or 0
                self._lift(dim, level, gap, now, exact=True)
        return self._infer_tier(now) or changed

    def _lift(self, dim: str, level: float, gap: float, now: float, exact: bool = False) -> float:
        """Lift ``dim`` to the server's ``level`` (a header's rounded count, or ``exact``
        from a 429's message); return by how much it was above ours.

        Another client's requests are counted whole: a header's request count is rounded
        (Groq's remaining is rounded down, so its count up), so less than one request
        above ours is rounding, and another client's request not counted here yet stays
        visible in the next report until it is. The level itself is lifted to what the
        count proves: above ``level`` − 1."""
        budget = self.budget
        meter = budget.buckets.get(dim)
        if meter is None:
            return 0.0
        excess = level - meter.used(now)
        if dim[0] == "t":
            noise = max(_TOKEN_NOISE_MIN, _TOKEN_NOISE_SHARE * meter.limit)
            if excess > noise:
                # Measured against reservations the server may not have counted yet, a
                # jump can look up to the noise smaller than it was.
                self._foreign(dim, excess, meter.window_s, gap, now, noise)
            budget.raise_to(dim, level, now)
            return max(0.0, excess)
        unheard = budget.in_flight - budget.heard
        if not exact and not unheard and -0.5 <= excess < 1.0:
            # Every request of ours is in the server's count: what is left is how it
            # rounds (0 to 1 above ours if it rounds up, -0.5 to 0.5 to nearest).
            self._rounding.append(excess)
        if not exact:
            excess -= max(-0.5, min(0.0, min(self._rounding, default=0.0)))
        # The count is as old as the answer's latency: in a fast-refilling window (a paid
        # tier's day) it was higher then by what has refilled since.
        whole = math.floor(excess - meter.rate * _STALE_S + 1e-9)
        if whole >= 1:
            self._foreign(dim, whole, meter.window_s, gap, now)
            budget.add(dim, whole, now)
        budget.raise_to(dim, level if exact else level - 1, now)
        # Perhaps more: requests of ours the server may not have counted yet hide others'.
        return excess + unheard

    def _foreign(
        self, dim: str, excess: float, window_s: float, gap: float, now: float, extra: float = 0
    ) -> None:
        """Someone else used ``excess`` more of ``dim`` since the last report ``gap`` s
        ago: keep headroom for their next jump (plus ``extra``) and count it in the twin
        dimension."""
        # A day window still holds what a minute window has refilled: spread it evenly.
        recent = excess
        if window_s > self.minute_s and gap > self.minute_s:
            recent = excess * self.minute_s / gap
        budget = self.budget
        twin = _TWINS[dim]
        twin_meter = budget.buckets.get(twin)
        if twin_meter is not None:
            budget.add(twin, excess if twin_meter.window_s >= window_s else recent, now)
        if recent > 0:
            for name in (dim, twin):
                meter = budget.buckets.get(name)
                if meter is not None:
                    # Never more than half the limit: the headers still lift the level
                    # to the truth, and the bot keeps room to work in.
                    room = min(recent + extra, _HEADROOM_SHARE * meter.limit)
                    budget.headroom[name].note(room, now)
        log.debug("%s: another client used %.0f %s (room %.0f)", self.model, excess, dim, recent)

    def _judge_refunds(self, level: float, foreign_requests: bool, now: float) -> None:
        """Compare a served response's token level with the mirror's two answers (output
        refunded or kept) and follow the one it shows; see the module docstring."""
        budget = self.budget
        budget.start_shadows(now)
        levels = budget.levels("tpm", now)
        if levels is None:
            return
        refunded, kept = levels
        gap = kept - refunded
        verdict: bool | None = None  # True: the cap stays charged
        noise = max(_TOKEN_NOISE_MIN, _TOKEN_NOISE_SHARE * budget.buckets["tpm"].limit)
        if gap > 2 * noise:
            middle = refunded + gap / 2
            if level + budget.unheard() < middle:
                verdict = False
            elif level > middle and not foreign_requests:
                verdict = True
        if verdict is False:
            if self.charges_cap is not False:
                log.info("%s: the API refunds unused output; so does the mirror", self.model)
            self.charges_cap, self._cap_votes = False, 0
            budget.set_refunds(True, now)
        elif verdict:
            self._cap_votes += 1
            if self.charges_cap is False:
                self.charges_cap, self._cap_votes = None, 1
            elif self._cap_votes >= _CAP_VOTES and self.charges_cap is None:
                self.charges_cap = True
                log.warning(
                    "%s: the API keeps each request's whole output cap charged after it "
                    "ends; the mirror no longer refunds unused output",
                    self.model,
                )
            budget.set_refunds(False, now)
        elif not self._cap_heard:
            budget.set_refunds(False, now)  # until the headers tell, keep it charged
        self._cap_heard = True

    # ----- limits -----

    def _adopt_reported(self, dim: str, limit: int, now: float) -> bool:
        """A header's limit for ``dim``; also notes how far above the table it is."""
        base = self._base.get(dim)
        if base and self._base_sources[dim] in _FROM_TABLE:
            self._ratios[dim] = limit / base
        return self._adopt(dim, limit, LimitSource.HEADERS, now)

    def _adopt(self, dim: str, limit: int, source: LimitSource, now: float) -> bool:
        current = self.limits.get(dim)
        if dim in self.fixed and current is not None and limit >= current:
            return False  # settings pin a ceiling
        self.sources[dim] = source
        if limit == current:
            return False
        self._set_limit(dim, limit, now)
        return True

    def _set_limit(self, dim: str, limit: int, now: float) -> None:
        self.limits = replace(self.limits, **{dim: limit})
        self.budget.set_limit(dim, limit, now)

    def _infer_tier(self, now: float) -> bool:
        """Scale the table's figures no header reports as far as the reported ones rose
        (``_TIER_SPARE`` of the smallest ratio, and only past ``_PAID_TIER``); return
        whether any changed."""
        if not self._ratios:
            return False
        scale = min(self._ratios.values())
        scale = scale * _TIER_SPARE if scale >= _PAID_TIER else 1.0
        if scale == self.scale:
            return False
        self.scale = scale
        changed = False
        for dim in DIMENSIONS:
            base = self._base.get(dim)
            if base is None or dim in self._ratios or self.sources[dim] not in _FROM_TABLE:
                continue
            self.sources[dim] = LimitSource.SCALED if scale > 1 else self._base_sources[dim]
            limit = max(1, int(base * scale))
            if limit != self.limits.get(dim):
                self._set_limit(dim, limit, now)
                changed = True
        if changed:
            unreported = ", ".join(
                f"{d} {self.limits.get(d)}" for d in DIMENSIONS if d not in self._ratios
            )
            log.info("%s: paid-tier factor ×%.1f assumed: %s", self.model, scale, unreported)
        return changed

    def limit_sources(self) -> Mapping[str, LimitSource]:
        """Where each current limit came from (dimensions with a limit only)."""
        return {d: self.sources[d] for d in DIMENSIONS if self.limits.get(d) is not None}
