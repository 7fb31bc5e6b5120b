"""Pure retry policy: which errors to retry, and how long to wait before each retry.

The client applies it only before the first token of a stream; after that a break is
``StreamInterrupted`` and is never retried (the user already saw part of the answer).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import StreamInterrupted, UpstreamError, UpstreamRateLimited

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped at ``max_delay_s``.

    A server's ``retry_after`` is honoured exactly. When it is longer than
    ``max_delay_s`` the error is not retried: waiting that long would hold the
    conversation hostage, so the user is told to come back instead.
    """

    max_retries: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 20.0

    def should_retry(self, error: UpstreamError, attempt: int) -> bool:
        """Whether retry number ``attempt`` (from 1) may follow ``error``."""
        if attempt > self.max_retries or not error.retryable:
            return False
        if isinstance(error, StreamInterrupted):
            return False
        retry_after = _retry_after(error)
        return retry_after is None or retry_after <= self.max_delay_s

    def delay(
        self,
        attempt: int,
        error: UpstreamError | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (from 1)."""
        retry_after = _retry_after(error) if error is not None else None
        if retry_after is not None:
            return max(0.0, retry_after)
        # Full jitter spreads concurrent conversations that failed together.
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(max(0, attempt - 1), 60))
        return rand() * ceiling


def _retry_after(error: UpstreamError) -> float | None:
    return error.retry_after_s if isinstance(error, UpstreamRateLimited) else None
