"""Counting Slack's 429s for the operator's metrics, by Web API method.

slack-sdk retries a 429 inside the client (``AsyncRateLimitErrorRetryHandler`` sleeps
``Retry-After``), so most never reach the adapter. The client asks its retry handlers,
in order, about every response until one takes it (``web/async_internal_utils.py``):
a handler listed first that never takes one sees each 429, retried or not.
"""

from __future__ import annotations

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.ports import PlatformMetrics
from bot.types import Platform

__all__ = ["RateLimitCounter"]


class RateLimitCounter(AsyncRetryHandler):
    """Reports each 429 with its method (``chat.update``); never retries anything.
    It must come first in the client's ``retry_handlers``."""

    def __init__(self, metrics: PlatformMetrics, platform: Platform) -> None:
        super().__init__(max_retry_count=0)
        self._metrics = metrics
        self._platform = platform

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        # Overridden whole: the base class stops asking at max_retry_count.
        if response is not None and response.status_code == 429:
            method = request.url.rstrip("/").rpartition("/")[2].partition("?")[0]
            self._metrics.platform_rate_limited(self._platform, method)
        return False
