"""Counting Discord's 429s for the operator's metrics, by route.

discord.py handles a 429 inside its HTTP client (it sleeps ``retry_after`` and tries
again, or raises ``RateLimited`` / ``HTTPException``), so the adapter never sees most
of them. Its documented ``http_trace`` option (``discord.Client(http_trace=...)``, an
``aiohttp.TraceConfig``) is told of every response its session receives: each one
answered 429 is reported once, with a route label that has no ids in it.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import aiohttp
from yarl import URL

from bot.ports import PlatformMetrics
from bot.types import Platform

__all__ = ["rate_limit_trace", "route_label"]

# A path segment kept as it is: a word of Discord's routes ("channels", "messages",
# "@me", "@original"). Anything else is an id, a token or an emoji: replaced, so that
# labels stay few and never carry an interaction token.
_WORD = re.compile(r"^@?[a-z][a-z_-]*$")
# The API prefix (``/api``, ``/api/v10``), the same for every route.
_PREFIX = re.compile(r"^/api(/v\d+)?(?=/|$)")


def route_label(method: str, url: URL) -> str:
    """``"POST /channels/{id}/messages"`` for ``POST …/api/v10/channels/123/messages``."""
    path = _PREFIX.sub("", url.path)
    segments = [s if _WORD.match(s) else "{id}" for s in path.split("/") if s]
    return f"{method.upper()} /{'/'.join(segments)}"


def rate_limit_trace(metrics: PlatformMetrics, platform: Platform) -> aiohttp.TraceConfig:
    """A trace for discord.py's session that reports each 429 to ``metrics``."""

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        if params.response.status == 429:
            metrics.platform_rate_limited(platform, route_label(params.method, params.url))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace
