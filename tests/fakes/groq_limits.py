"""FakeGroq's rate limits: per-model token buckets refilled continuously, Groq's 429 and
413 answers, the ``x-ratelimit-*`` headers of every chat response, server-side counters
for tests, and a second client spending the same key.

How Groq meters, and where each piece comes from (stored copies of public material; the
bot's own quota code was not consulted, so the fake does not share its assumptions):

- Four limits per model and organisation, RPM, RPD, TPM and TPD, any of which refuses
  a request with 429 (GroqDocs "Rate Limits", https://console.groq.com/docs/rate-limits
  and its .md copy: "Rate limits apply at the organization level ... You can hit any
  limit type depending on which threshold you reach first").
- Headers, same page, "Rate Limit Headers" (also quoted in Pythagora-io/gpt-pilot#862):
  ``x-ratelimit-{limit,remaining,reset}-requests`` "Always refers to Requests Per Day
  (RPD)", ``-tokens`` "Always refers to Tokens Per Minute (TPM)"; resets are Go
  durations; ``retry-after`` (seconds) "is only set if you hit the rate limit and status
  code 429 is returned. The other headers are always included." Its sample (limit 14400,
  remaining 14370, reset 2m59.56s) is a refilling bucket: 30 used x 86,400 s / 14,400 =
  180 s until full again. So reset = (limit - remaining) x window / limit here, i.e.
  the time until the bucket is empty of use.
- Continuous refill, checked against the numbers of real 429 bodies, where the wait is
  exactly (used + requested - limit) / (limit / window):
  Aider-AI/aider#3265 (TPM "Limit 15000, Used 11972, Requested 4351. Please try again
  in 5.289s": 1,323 / 250 per s = 5.29 s; 2.3 s later "Used 11390 ... 2.961s": 741 /
  250 = 2.96 s, Used having drained meanwhile); elizaOS/eliza#4040 (TPM "Limit 6000,
  Used 5034, Requested 1443. Please try again in 4.77s": 477 / 100 = 4.77 s);
  bklieger-groq/stockbot-on-groq#46 (a day window, "Limit 500000, Used 500370,
  Requested 252. Please try again in 1m47.5854s": 622 / 5.787 = 107.5 s). A trailing
  or fixed window would name the age of the oldest use instead.
- 429 body: ``{"error": {"message": ..., "type": "tokens" | "requests", "code":
  "rate_limit_exceeded"}}``, the message "Rate limit reached for model `M` in
  organization `org_...` service tier `on_demand` on tokens per minute (TPM): Limit L,
  Used U, Requested R. Please try again in 4.77s. Visit
  https://console.groq.com/docs/rate-limits for more information." (aider#3265,
  stockbot#46; free-tier orgs sometimes get "Need more tokens? Upgrade to Dev Tier
  today at ..." instead, eliza#4040). Window names as Groq spells them: "requests per
  minute (RPM)", "requests per day (RPD)", "tokens per day (TPD)" (blogminhquy/javis-os
  #66 quotes all four).
- The cap is charged up front: a request costs prompt + ``max_completion_tokens`` (or
  ``max_tokens``) before it runs. zeeyado/koassistant.koplugin#106 (a one-word lookup
  refused "Request too large ... Limit 8000, Requested 32979" once the plugin asked for
  a large ``max_tokens``), sohzm/cheating-daddy#468 and maplibre/maplibre-agent-skills#63
  ("the reservation is set by prompt + max_tokens"), ray-amjad/hyperwhisper-app#99
  ("Groq's admission check counts *requested* tokens, not actual usage"). One request
  above the whole TPM limit gets 413 "Request too large ... Limit 6000, Requested
  6294, please reduce your message size and try again. Visit ..." (eliza#4040,
  ITSpecialist111/ai_automation_suggester#61).
- What Groq does at the end is not published. The fake refunds the unused part of the
  cap when the answer ends (stream end, JSON sent, client gone), so the bucket holds
  the real use; ``keep_cap_charged = True`` keeps the whole reservation charged, a
  behaviour Groq may have. stockbot#46's "Used 500370" over a limit of 500,000 shows use
  can be charged past the limit after admission, so a completion longer than what was
  reserved is charged too (``Used`` may then exceed ``Limit``).
- Without a cap in the request nothing was found saying what Groq reserves. Reserving
  the model's whole ``max_completion_tokens`` (131,072 for llama-3.1-8b-instant) would
  refuse every uncapped request on a 6,000 TPM free tier, and reports show small
  "Requested" values (aider#3265: 4,351 on gemma2-9b-it, whose cap is 8,192;
  stockbot#46: 252), so ``default_completion_cap`` is 0 (reserve the prompt, charge the
  completion at the end). Set it to e.g. 1024 to model a default reservation instead.
- Which window a 429 names when several are full is not published either: the fake
  names the one with the longest wait, so ``retry-after`` is the time until the request
  fits them all.

Tier figures are in ``GROQ_TIERS`` below, with their sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiohttp import web

from tests.fakes.groq_models import error_response

__all__ = [
    "DIMENSIONS",
    "GROQ_TIERS",
    "WINDOW_NAMES",
    "ClientCounters",
    "Dimension",
    "LimitSettings",
    "ModelStats",
    "OtherClient",
    "RateLimits",
    "Reservation",
    "go_duration",
]

Dimension = Literal["rpm", "rpd", "tpm", "tpd"]
DIMENSIONS: tuple[Dimension, ...] = ("rpm", "rpd", "tpm", "tpd")
WINDOW_NAMES: dict[Dimension, str] = {
    "rpm": "requests per minute (RPM)",
    "rpd": "requests per day (RPD)",
    "tpm": "tokens per minute (TPM)",
    "tpd": "tokens per day (TPD)",
}
_TOKEN_DIMS: tuple[Dimension, ...] = ("tpm", "tpd")
_HEADER_DIMS: tuple[tuple[str, Dimension], ...] = (("requests", "rpd"), ("tokens", "tpm"))
DOCS_HINT = "Visit https://console.groq.com/docs/rate-limits for more information."

# Per model: rpm, rpd, tpm, tpd; None = not stated in the sources found.
# "free": GroqDocs "Rate Limits" (console.groq.com/docs/rate-limits, the Free Plan table;
#   also copied in hassankhan2510/redditautomation reference.md): gpt-oss-20b 30 RPM,
#   1K RPD, 8K TPM, 200K TPD; llama-3.1-8b-instant 30 RPM, 14.4K RPD, 6K TPM, 500K TPD.
# "developer": the page's Developer Plan tab did not survive in any stored copy. For
#   llama-3.1-8b-instant two secondary copies agree on 1,000 RPM, 500,000 RPD, 250,000
#   TPM (nnikolov3/agentic_tools docs/llm_limits.md, "from the Developer tier table";
#   Ebin746/MiniProject src/mastra/llms.ts); neither states TPD. No source gives
#   gpt-oss-20b's row: the figures below are gpt-oss-120b's Developer row from
#   agentic_tools (1,000 RPM, 500,000 RPD, 300,000 TPM), an assumption to check on the
#   console's limits page.
GROQ_TIERS: dict[str, dict[str, dict[Dimension, int | None]]] = {
    "free": {
        "openai/gpt-oss-20b": {"rpm": 30, "rpd": 1_000, "tpm": 8_000, "tpd": 200_000},
        "llama-3.1-8b-instant": {"rpm": 30, "rpd": 14_400, "tpm": 6_000, "tpd": 500_000},
    },
    "developer": {
        "openai/gpt-oss-20b": {"rpm": 1_000, "rpd": 500_000, "tpm": 300_000, "tpd": None},
        "llama-3.1-8b-instant": {"rpm": 1_000, "rpd": 500_000, "tpm": 250_000, "tpd": None},
    },
}


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration``, as Groq does: ``585ms``, ``36.27s``, ``1m26.4s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.2f}".rstrip("0").rstrip(".") + "s"
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    return f"{int(hours)}h{text}" if hours else text


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


class LimitSettings(Protocol):
    """The limits as FakeGroq's public attributes hold them.

    Read anew on every request, because tests and benchmarks set them between requests.
    """

    limit_rpm: int
    limit_rpd: int
    limit_tpm: int
    limit_tpd: int
    enforce_rpm: bool
    enforce_rpd: bool
    enforce_tpm: bool
    enforce_tpd: bool
    keep_cap_charged: bool
    default_completion_cap: int
    minute_s: float
    day_s: float
    clock: Callable[[], float]
    count_429: int
    other_count_429: int


@dataclass
class _Bucket:
    """Use charged to one window; it drains at limit / window per second."""

    level: float = 0.0
    at: float | None = None


@dataclass
class ClientCounters:
    """One client's totals on one model."""

    requests: int = 0  # admitted
    tokens: int = 0  # charged, after refunds (a running answer counts its reservation)
    refused: Counter[str] = field(default_factory=Counter)  # dimension -> 429s

    @property
    def count_429(self) -> int:
        return sum(self.refused.values())


@dataclass
class ModelStats:
    """A model's counters: the bot's (over HTTP) and the second client's (``burn``)."""

    bot: ClientCounters = field(default_factory=ClientCounters)
    other: ClientCounters = field(default_factory=ClientCounters)

    @property
    def requests(self) -> int:
        return self.bot.requests + self.other.requests

    @property
    def tokens(self) -> int:
        return self.bot.tokens + self.other.tokens


@dataclass
class Reservation:
    """What an admitted chat request was charged, until ``RateLimits.settle``."""

    model: str
    tokens: int
    settled: bool = False


@dataclass
class _Refusal:
    dimension: Dimension
    limit: int
    used: float
    requested: int
    wait: float


class RateLimits:
    """Each model's buckets, checked and reported against ``settings``."""

    def __init__(self, settings: LimitSettings) -> None:
        self._settings = settings
        self._buckets: dict[tuple[str, Dimension], _Bucket] = {}
        self._stats: dict[str, ModelStats] = {}

    # ----- the buckets -----

    def limit(self, dimension: Dimension) -> int:
        value: int = getattr(self._settings, f"limit_{dimension}")
        return value

    def window(self, dimension: Dimension) -> float:
        return self._settings.minute_s if dimension in ("rpm", "tpm") else self._settings.day_s

    def _enforced(self, dimension: Dimension) -> bool:
        return bool(getattr(self._settings, f"enforce_{dimension}"))

    def _rate(self, dimension: Dimension) -> float:
        """Refill per second; a limit of 0 never refills (and never divides by zero)."""
        return max(self.limit(dimension), 0) / self.window(dimension)

    def _bucket(self, model: str, dimension: Dimension) -> _Bucket:
        """The bucket drained up to now."""
        now = self._settings.clock()
        bucket = self._buckets.setdefault((model, dimension), _Bucket(at=now))
        if bucket.at is not None and now > bucket.at:
            bucket.level = max(0.0, bucket.level - (now - bucket.at) * self._rate(dimension))
        bucket.at = now
        return bucket

    def level(self, model: str, dimension: Dimension) -> float:
        """Use currently charged to ``dimension`` (0 = the whole limit is available)."""
        return self._bucket(model, dimension).level

    def _charge(self, model: str, requests: int, tokens: float) -> None:
        for dimension in DIMENSIONS:
            bucket = self._bucket(model, dimension)
            amount = tokens if dimension in _TOKEN_DIMS else requests
            bucket.level = max(0.0, bucket.level + amount)

    def _refusal(self, model: str, requests: int, tokens: int) -> _Refusal | None:
        """The enforced window with the longest wait that ``requests`` / ``tokens`` overflow."""
        worst: _Refusal | None = None
        for dimension in DIMENSIONS:
            if not self._enforced(dimension):
                continue
            amount = tokens if dimension in _TOKEN_DIMS else requests
            level, limit = self.level(model, dimension), self.limit(dimension)
            over = level + amount - limit
            if over <= 0:
                continue
            rate = self._rate(dimension)
            wait = over / rate if rate > 0 else self.window(dimension)  # a limit of 0: "later"
            if worst is None or wait > worst.wait:
                worst = _Refusal(dimension, limit, level, amount, wait)
        return worst

    def allowed(self, dimension: Dimension, seconds: float) -> float:
        """What an empty bucket lets through in ``seconds``: the burst plus the refill."""
        return self.limit(dimension) + self._rate(dimension) * seconds

    def stats(self, model: str) -> ModelStats:
        return self._stats.setdefault(model, ModelStats())

    # ----- the bot's requests -----

    def admit(
        self, model: str, body: dict[str, Any], prompt_tokens: int
    ) -> Reservation | web.Response:
        """Charge 1 request and prompt + cap like Groq, or answer its 413 / 429."""
        s = self._settings
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        if not isinstance(cap, int) or isinstance(cap, bool):
            cap = s.default_completion_cap
        requested = prompt_tokens + cap
        for dimension in _TOKEN_DIMS:  # no wait would ever let these through
            if self._enforced(dimension) and requested > self.limit(dimension):
                return self.too_large(model, requested, self.headers(model), dimension)
        refusal = self._refusal(model, 1, requested)
        if refusal is not None:
            self.stats(model).bot.refused[refusal.dimension] += 1
            return self.rate_limited(
                model,
                WINDOW_NAMES[refusal.dimension],
                refusal.limit,
                round(refusal.used),
                refusal.requested,
                refusal.wait,
            )
        self._charge(model, 1, requested)
        counters = self.stats(model).bot
        counters.requests += 1
        counters.tokens += requested
        return Reservation(model, requested)

    def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """The answer ended having used ``used_tokens`` (prompt + completion): refund the
        rest of the reservation (none with ``keep_cap_charged``), or charge the excess."""
        if reservation.settled:
            return
        reservation.settled = True
        delta = used_tokens - reservation.tokens
        if delta < 0 and self._settings.keep_cap_charged:
            return
        for dimension in _TOKEN_DIMS:
            bucket = self._bucket(reservation.model, dimension)
            bucket.level = max(0.0, bucket.level + delta)
        self.stats(reservation.model).bot.tokens += delta

    # ----- a second client on the same key -----

    def burn(self, model: str, tokens: int, requests: int = 1) -> bool:
        """Charge what another client of the organisation just used; False (a 429 for
        it, nothing charged) when it would not fit the enforced limits."""
        counters = self.stats(model).other
        too_large = [d for d in _TOKEN_DIMS if self._enforced(d) and tokens > self.limit(d)]
        refusal = self._refusal(model, requests, tokens)
        refused = too_large[0] if too_large else refusal.dimension if refusal else None
        if refused is not None:
            counters.refused[refused] += 1
            self._settings.other_count_429 += 1
            return False
        self._charge(model, requests, tokens)
        counters.requests += requests
        counters.tokens += tokens
        return True

    # ----- answers and headers -----

    def rate_limited(
        self,
        model: str,
        what: str,
        limit: int,
        used: int,
        requested: int,
        wait: float,
        *,
        message_only: bool = False,
    ) -> web.Response:
        """Groq's 429; ``message_only`` leaves out ``retry-after``, so only the text says when."""
        self._settings.count_429 += 1
        wait = max(wait, 0.001)
        headers = self.headers(model)
        if not message_only:
            headers["retry-after"] = _seconds(wait)
        message = (
            f"Rate limit reached for model `{model}` in organization `org_fake` service tier "
            f"`on_demand` on {what}: Limit {limit}, Used {used}, Requested {requested}. "
            f"Please try again in {go_duration(wait)}. {DOCS_HINT}"
        )
        kind = "tokens" if what.startswith("tokens") else "requests"
        return error_response(429, message, kind, "rate_limit_exceeded", headers)

    def too_large(
        self, model: str, requested: int, headers: dict[str, str], dimension: Dimension = "tpm"
    ) -> web.Response:
        """Groq's 413 for one request larger than a whole token limit."""
        message = (
            f"Request too large for model `{model}` in organization `org_fake` service tier "
            f"`on_demand` on {WINDOW_NAMES[dimension]}: Limit {self.limit(dimension)}, "
            f"Requested {requested}, please reduce your message size and try again. "
            f"{DOCS_HINT}"
        )
        return error_response(413, message, "tokens", "rate_limit_exceeded", headers)

    def headers(self, model: str) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers: requests describe the day, tokens the minute."""
        headers = {}
        for kind, dimension in _HEADER_DIMS:
            level, limit = self.level(model, dimension), self.limit(dimension)
            rate = self._rate(dimension)
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(limit - level)))
            headers[f"x-ratelimit-reset-{kind}"] = go_duration(level / rate if rate else 0.0)
        return headers


class OtherClient:
    """Another client of the same organisation: ``burn`` every ``every_s`` seconds,
    sleeping with ``sleep`` (the tests' clock). ``await stop()`` ends it."""

    def __init__(
        self,
        burn: Callable[[], Awaitable[bool]],
        every_s: float,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.attempts = 0
        self.admitted = 0
        self._burn, self._every_s, self._sleep = burn, every_s, sleep
        self.task: asyncio.Task[None] = asyncio.create_task(self._run())

    @property
    def refused(self) -> int:
        return self.attempts - self.admitted

    async def _run(self) -> None:
        while True:
            self.attempts += 1
            self.admitted += await self._burn()
            await self._sleep(self._every_s)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
