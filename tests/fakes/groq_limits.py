"""FakeGroq's rate limits: per-model request and token windows, Groq's 429 and 413
answers, and the ``x-ratelimit-*`` headers of every chat response."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from tests.fakes.groq_models import error_response

__all__ = ["LimitSettings", "RateLimits", "go_duration"]


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
    enforce_rpm: bool
    enforce_rpd: bool
    enforce_tpm: bool
    minute_s: float
    day_s: float
    clock: Callable[[], float]
    count_429: int


@dataclass
class _Windows:
    """One model's recent use: request times (day window) and (time, tokens) (minute)."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)


class RateLimits:
    """Each model's windows, checked and reported against ``settings``."""

    def __init__(self, settings: LimitSettings) -> None:
        self._settings = settings
        self._windows: dict[str, _Windows] = {}

    def _window(self, model: str) -> _Windows:
        s = self._settings
        w = self._windows.setdefault(model, _Windows())
        now = s.clock()
        while w.requests and w.requests[0] <= now - s.day_s:
            w.requests.popleft()
        while w.tokens and w.tokens[0][0] <= now - s.minute_s:
            w.tokens.popleft()
        return w

    def admit(
        self, model: str, body: dict[str, Any], prompt_tokens: int, completion_tokens: int
    ) -> web.Response | None:
        """Enforce the enabled limits like Groq: requested = prompt + max_completion_tokens."""
        s = self._settings
        w, now = self._window(model), s.clock()
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        requested = prompt_tokens + (limit if isinstance(limit, int) else 0)
        if s.enforce_tpm and requested > s.limit_tpm:
            return self.too_large(model, requested, self.headers(model))
        exceeded = self._exceeded(w, now, requested)
        if exceeded is not None:
            what, limit_n, used, need, wait = exceeded
            return self.rate_limited(model, what, limit_n, used, need, wait)
        w.requests.append(now)
        w.tokens.append((now, prompt_tokens + completion_tokens))
        return None

    def _exceeded(
        self, w: _Windows, now: float, requested: int
    ) -> tuple[str, int, int, int, float] | None:
        """(window name, limit, used, requested, seconds to wait) of the first full window."""
        s = self._settings
        if s.enforce_rpd and len(w.requests) >= s.limit_rpd:
            wait = w.requests[0] + s.day_s - now
            return "requests per day (RPD)", s.limit_rpd, len(w.requests), 1, wait
        last_minute = [t for t in w.requests if t > now - s.minute_s]
        if s.enforce_rpm and len(last_minute) >= s.limit_rpm:
            wait = last_minute[0] + s.minute_s - now
            return "requests per minute (RPM)", s.limit_rpm, len(last_minute), 1, wait
        used = sum(n for _, n in w.tokens)
        if s.enforce_tpm and used + requested > s.limit_tpm:
            freed, wait = 0, 0.0
            for t, n in w.tokens:  # wait until enough of the oldest use has left the window
                freed, wait = freed + n, t + s.minute_s - now
                if used - freed + requested <= s.limit_tpm:
                    break
            return "tokens per minute (TPM)", s.limit_tpm, used, requested, wait
        return None

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
            f"Please try again in {go_duration(wait)}."
        )
        kind = "tokens" if "TPM" in what else "requests"
        return error_response(429, message, kind, "rate_limit_exceeded", headers)

    def too_large(self, model: str, requested: int, headers: dict[str, str]) -> web.Response:
        """Groq's 413 for one request larger than the whole TPM limit."""
        message = (
            f"Request too large for model `{model}` in organization `org_fake` service tier "
            f"`on_demand` on tokens per minute (TPM): Limit {self._settings.limit_tpm}, "
            f"Requested {requested}, please reduce your message size and try again."
        )
        return error_response(413, message, "tokens", "rate_limit_exceeded", headers)

    def headers(self, model: str) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers: requests against the day, tokens the minute."""
        s = self._settings
        w, now = self._window(model), s.clock()
        used_tokens = sum(n for _, n in w.tokens)
        reset_req = w.requests[0] + s.day_s - now if w.requests else 0.0
        reset_tok = w.tokens[0][0] + s.minute_s - now if w.tokens else 0.0
        return {
            "x-ratelimit-limit-requests": str(s.limit_rpd),
            "x-ratelimit-remaining-requests": str(max(0, s.limit_rpd - len(w.requests))),
            "x-ratelimit-reset-requests": go_duration(reset_req),
            "x-ratelimit-limit-tokens": str(s.limit_tpm),
            "x-ratelimit-remaining-tokens": str(max(0, s.limit_tpm - used_tokens)),
            "x-ratelimit-reset-tokens": go_duration(reset_tok),
        }
