"""REST plumbing of the fake Discord: exact JSON responses, call recording, honest
``X-RateLimit-*`` headers over fixed windows, 429 enforcement and fault injection.

A base class of ``FakeDiscord``; its ``middleware`` wraps every ``/api/v10`` route.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = [
    "API",
    "BODY",
    "MAX_CONTENT",
    "RestCall",
    "RestPlumbing",
    "content_error",
    "error_response",
    "json_response",
    "rate_limited",
]

API = "/api/v10"
MAX_CONTENT = 2000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The parsed JSON body, read once by the middleware (a typed key: str keys warn).
BODY: web.RequestKey[Any] = web.RequestKey("body")


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """discord.py parses JSON only when the content type is exactly ``application/json``;
    ``web.json_response`` appends a charset, so it must not be used here."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def error_response(status: int, code: int, message: str, **extra: object) -> web.Response:
    """A Discord error body, e.g. ``{"message": "Unknown Message", "code": 10008}``."""
    return json_response({"message": message, "code": code, **extra}, status)


def content_error(body: dict[str, Any]) -> web.Response | None:
    """Discord's checks on message content: at most 2000 characters, never empty."""
    content = body.get("content") or ""
    if len(content) > MAX_CONTENT:
        error = {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
        errors = {"content": {"_errors": [error]}}
        return error_response(400, 50035, "Invalid Form Body", errors=errors)
    if not content.strip() and not body.get("embeds"):
        return error_response(400, 50006, "Cannot send an empty message")
    return None


def rate_limited(
    retry_after: float, headers: dict[str, str], *, via: bool = True, scope: str | None = None
) -> web.Response:
    """Discord's 429: ``retry_after`` in the body, an integer ``Retry-After`` header, and
    ``Via`` (without it discord.py takes the 429 for a Cloudflare ban and never retries)."""
    body = {"message": "You are being rate limited.", "retry_after": retry_after}
    extra = {"Retry-After": str(max(1, round(retry_after)))}
    if via:
        extra["Via"] = "1.1 google"
    if scope is not None:
        extra["X-RateLimit-Scope"] = scope
    return json_response({**body, "global": False}, 429, {**headers, **extra})


@dataclass(slots=True)
class RestCall:
    """One recorded REST request; ``path`` is relative to ``/api/v10``."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    t: float
    status: int = 0


@dataclass(slots=True)
class _Injection:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float
    times: int
    via: bool


@dataclass(slots=True)
class _Window:
    start: float
    used: int = 0


class RestPlumbing:
    """Recording, rate limiting and injection shared by every REST route."""

    token: str

    def __init__(
        self,
        *,
        message_limit: int,
        message_window_s: float,
        default_limit: int,
        enforce_rate_limits: bool,
    ) -> None:
        self.message_limit, self.message_window_s = message_limit, message_window_s
        self.default_limit = default_limit
        self.enforce_rate_limits = enforce_rate_limits
        self.calls: list[RestCall] = []
        # Requests past a rate-limit window: answered 429 when enforcing, counted always.
        self.count_429 = 0
        self.injected_429 = 0
        self._windows: dict[str, _Window] = {}
        self._injections: list[_Injection] = []
        self._cond = asyncio.Condition()
        # Bugs in the fake itself: discord.py would quietly retry the 500s they cause.
        self.server_errors: list[str] = []

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def inject(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 429,
        retry_after: float = 0.3,
        times: int = 1,
        via: bool = True,
    ) -> None:
        """Answer the next ``times`` matching calls with ``status``.

        429s carry ``Via`` unless ``via=False``: a 429 without it is what Cloudflare
        sends in front of Discord (an IP-level limit or ban), which discord.py raises at
        once instead of waiting and retrying.
        """
        pattern = re.compile(path_regex)
        injection = _Injection(method.upper(), pattern, status, retry_after, times, via)
        self._injections.append(injection)

    def calls_to(self, method: str, path_regex: str) -> list[RestCall]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method == method and pattern.search(c.path)]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API):
            return await handler(request)
        body = await request.json() if request.can_read_body else None
        request[BODY] = body
        path = request.path[len(API) :]
        call = RestCall(request.method, path, dict(request.query), body, time.monotonic())
        try:
            response = await self._respond(request, handler, call)
        except Exception as exc:
            self.server_errors.append(f"{call.method} {call.path}: {exc!r}")
            response = error_response(500, 0, "fake Discord bug")
        call.status = response.status
        self.calls.append(call)
        await self._notify()
        return response

    async def _respond(
        self, request: web.Request, handler: Handler, call: RestCall
    ) -> web.StreamResponse:
        # Webhook and interaction calls authenticate with the token in the path.
        webhook = call.path.startswith(("/webhooks/", "/interactions/"))
        if not webhook and request.headers.get("Authorization") != f"Bot {self.token}":
            return error_response(401, 0, "401: Unauthorized")
        injected = self._take_injection(call)
        if injected is not None:
            return injected
        bucket, limit, window = self._bucket(request)
        allowed, headers = self._take_token(bucket, limit, window)
        if not allowed:
            self.count_429 += 1
            if self.enforce_rate_limits:
                return rate_limited(float(headers["X-RateLimit-Reset-After"]), headers)
        response = await handler(request)
        response.headers.update(headers)
        return response

    def _take_injection(self, call: RestCall) -> web.Response | None:
        for inj in self._injections:
            if inj.times > 0 and inj.method == call.method and inj.pattern.search(call.path):
                inj.times -= 1
                if inj.status == 429:
                    self.injected_429 += 1
                    return rate_limited(inj.retry_after, {}, via=inj.via)
                return error_response(inj.status, 0, f"injected {inj.status}")
        return None

    def _bucket(self, request: web.Request) -> tuple[str, int, float]:
        """(bucket key, limit, window): create and edit share one bucket per channel."""
        info = request.match_info
        resource = info.route.resource
        template = resource.canonical if resource is not None else request.path
        major = info.get("channel_id") or info.get("guild_id") or info.get("token") or ""
        messages = API + "/channels/{channel_id}/messages"
        create = request.method == "POST" and template == messages
        edit = request.method == "PATCH" and template == messages + "/{message_id}"
        if create or edit:
            return f"messages:{major}", self.message_limit, self.message_window_s
        return f"{request.method} {template}:{major}", self.default_limit, 1.0

    def _take_token(self, bucket: str, limit: int, window: float) -> tuple[bool, dict[str, str]]:
        """Fixed windows starting at the first request, like Discord's buckets."""
        now = time.monotonic()
        w = self._windows.get(bucket)
        if w is None or now >= w.start + window:
            w = self._windows[bucket] = _Window(now)
        allowed = w.used < limit
        w.used += allowed
        reset_after = max(0.001, w.start + window - now)
        name = bucket.rsplit(":", 1)[0]
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - w.used),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(name.encode()).hexdigest()[:16],
            "X-RateLimit-Scope": "user",
        }
        return allowed, headers
