"""Pure parsing of rate-limit response headers into ``RateLimitSnapshot``.

Groq sends ``x-ratelimit-{limit,remaining,reset}-requests`` for the requests-per-DAY
window and ``x-ratelimit-{limit,remaining,reset}-tokens`` for the tokens-per-MINUTE
window; resets are Go durations (``"1m26.4s"``, ``"585ms"``). ``retry-after`` (seconds)
comes with 429s. OpenAI uses the same names with per-minute request windows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.types import RateLimitSnapshot

__all__ = ["RATE_LIMIT_HEADERS", "parse_duration", "snapshot_from_headers"]

RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after",
)

_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Longer unit names first so "ms" is never read as "m" followed by garbage.
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(text: str | None) -> float | None:
    """Seconds in a Go duration (``"2h3m"``, ``"1m26.4s"``, ``"585ms"``) or a bare number.

    Returns None for absent or unparsable values rather than guessing.
    """
    if text is None:
        return None
    value = text.strip()
    if not value:
        return None
    if _NUMBER.fullmatch(value):
        return float(value)
    pos, total = 0, 0.0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return total


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(float(text.strip()))
    except ValueError:
        return None


def snapshot_from_headers(
    headers: Mapping[str, str], *, model: str, at: float, status: int | None = None
) -> RateLimitSnapshot | None:
    """The snapshot the headers describe, or None when they carry no rate-limit header.

    ``headers`` may be any mapping (names are matched case-insensitively); ``at`` is when
    the response arrived, in epoch seconds (``Clock.time()``); ``status`` its HTTP status.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if not any(name in lowered for name in RATE_LIMIT_HEADERS):
        return None
    get = lowered.get
    return RateLimitSnapshot(
        model=model,
        at=at,
        limit_requests=_int(get("x-ratelimit-limit-requests")),
        remaining_requests=_int(get("x-ratelimit-remaining-requests")),
        reset_requests_s=parse_duration(get("x-ratelimit-reset-requests")),
        limit_tokens=_int(get("x-ratelimit-limit-tokens")),
        remaining_tokens=_int(get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=parse_duration(get("x-ratelimit-reset-tokens")),
        retry_after_s=parse_duration(get("retry-after")),
        status=status,
    )
