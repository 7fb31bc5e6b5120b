"""The HTTP side of the fake Slack's Web API (``/api/<method>``): dispatch, auth, faults, limits.

Parameters are merged from the query string, a form body and a JSON body (slack-sdk
uses all three); the token comes from ``Authorization: Bearer`` (or a ``token``
param), and bot (``xoxb-``) versus app (``xapp-``) tokens are enforced per method.
Errors are HTTP 200 with ``{"ok": false, "error": ...}`` like Slack; rate limits are
HTTP 429 with an integer ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``.

Rate limits: ``rate_limits`` maps a method to a ``RateRule`` (a sliding window, or a
token bucket for per-channel posting) measured with the injected clock. A call past
its budget is always counted in ``count_429`` (and listed in ``over_budget``); with
``enforce_rate_limits`` it is also refused.
Scripted faults (``inject_429``, ``fail``) are counted in ``injected_429`` instead,
so ``count_429`` means "limits the bot itself overran".

``inject_5xx`` answers a server error whose body is not Slack's JSON, as Slack's edge
does when a backend is down: a ``text/plain`` proxy line, an HTML page, or JSON cut
short. slack-sdk reads such bodies three ways (``web/async_internal_utils.py``
``_request_with_session``): ``text/plain`` becomes a ``str`` response body (so
``SlackApiError.response.get`` raises ``AttributeError``), ``application/json`` that
does not parse raises ``SlackApiError`` whose ``response`` is the raw
``aiohttp.ClientResponse``, and any other type (HTML) becomes an empty body. Reports
of each: python-slack-sdk#1454 ("non-JSON format" on ``chat.update``), #1100
(``'NoneType' object has no attribute 'get'``), slack-ruby-client#307 (nginx 500/502
HTML pages).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from tests.fakes.slack_methods import Handler, SlackApiError
from tests.fakes.slack_payloads import Json

__all__ = [
    "HTML_5XX",
    "PLAIN_5XX",
    "TRUNCATED_JSON",
    "ApiCall",
    "RateRule",
    "WebApi",
    "default_rate_limits",
]

APP_TOKEN_METHODS = {"apps.connections.open"}
JSON_FIELDS = {"blocks", "chunks", "metadata", "prompts", "attachments", "view"}


class _Clock(Protocol):
    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RateRule:
    """At most ``limit`` calls in any ``window_s`` (per channel or per workspace).

    ``bucket``: a token bucket instead (bursts of ``limit``, refilled at
    ``limit / window_s`` per second), for "1 per second with short bursts".
    ``pool``: methods with the same pool share one budget.
    """

    limit: int
    window_s: float
    per_channel: bool = False
    bucket: bool = False
    pool: str = ""


def default_rate_limits() -> dict[str, RateRule]:
    """Slack's published tiers; posting is 1 per second per channel with bursts of 5.

    Each method's tier is the one its reference page lists ("Rate limits" under
    Facts), read at https://docs.slack.dev/reference/methods/<method> (and the older
    https://api.slack.com/methods/<method>); the tiers themselves are at
    https://docs.slack.dev/apis/web-api/rate-limits (Tier 2 20+/min, Tier 3 50+/min,
    Tier 4 100+/min, per method, per workspace, per app; chat.postMessage "special":
    about one message per second per channel with short bursts):

    - chat.update: Tier 3. chat.appendStream: Tier 4.
    - chat.stopStream: Tier 2 (its page says "Rate limits: Tier 2"; it was modelled
      as Tier 4 before, which hid the 429s real Slack gives 25 streams ending at once).
    - chat.startStream: its page lists no tier; it posts a message, so it is counted
      with chat.postMessage in the channel's posting budget.
    """
    tier2, tier3, tier4 = RateRule(20, 60.0), RateRule(50, 60.0), RateRule(100, 60.0)
    per_channel_posts = RateRule(5, 5.0, per_channel=True, bucket=True, pool="post")
    return {
        "chat.postMessage": per_channel_posts,
        "chat.startStream": per_channel_posts,  # it posts a message
        "chat.update": tier3,
        "chat.delete": tier3,
        "chat.appendStream": tier4,
        "chat.stopStream": tier2,
        "chat.postEphemeral": tier4,
        "conversations.replies": tier3,
        "assistant.threads.setStatus": tier3,
        "assistant.threads.setSuggestedPrompts": tier3,
        "assistant.threads.setTitle": tier3,
    }


@dataclass(slots=True)
class ApiCall:
    """One Web API request: merged params (token removed) and what the fake answered."""

    method: str
    params: Json
    token: str | None
    at: float
    http_method: str
    status: int = 200
    response: Json = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.response.get("error"))


@dataclass(slots=True)
class _Fault:
    times: int | None  # None: forever
    error: str = ""
    retry_after: int = 0
    status: int = 0  # a 5xx with ``body`` of ``content_type``, not Slack's JSON
    body: str = ""
    content_type: str = ""


# Bodies Slack's edge sends with a 5xx (see the module docstring).
PLAIN_5XX = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
HTML_5XX = "<html><head><title>503 Service Unavailable</title></head><body>Slack</body></html>"
TRUNCATED_JSON = '{"ok":false,"error":"internal_er'


class WebApi:
    """Mixin: the HTTP side of the Web API (dispatch, auth, faults, rate limits)."""

    team_id: str
    bot_token: str
    app_token: str
    clock: _Clock
    _handlers: Callable[[], dict[str, Handler]]  # the methods (slack_methods)

    def _init_webapi(self) -> None:
        self.calls: list[ApiCall] = []
        self.responses: list[Json] = []  # bodies POSTed to response_url
        self.rate_limits: dict[str, RateRule] = default_rate_limits()
        self.enforce_rate_limits = True
        self.count_429 = 0
        self.injected_429 = 0
        self.over_budget: list[ApiCall] = []
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._buckets: dict[tuple[str, str], list[float]] = {}  # [tokens, at]
        self._faults: dict[str, deque[_Fault]] = {}

    # ----- hooks FakeSlack implements -----

    async def _notify(self) -> None:
        raise NotImplementedError

    # ----- scripting -----

    def inject_429(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 + ``Retry-After``."""
        self._faults.setdefault(method, deque()).append(_Fault(times, retry_after=retry_after))

    def fail(self, method: str, error: str, *, times: int | None = 1) -> None:
        """Answer ``{"ok": false, "error": error}`` to the next ``times`` calls (None: all)."""
        self._faults.setdefault(method, deque()).append(_Fault(times, error=error))

    def inject_5xx(
        self,
        method: str,
        *,
        status: int = 500,
        body: str = PLAIN_5XX,
        content_type: str = "text/plain",
        times: int | None = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``status`` and a raw
        ``body`` (by default Envoy's ``text/plain`` line; ``TRUNCATED_JSON`` with
        ``application/json`` for JSON cut short). Nothing is done."""
        fault = _Fault(times, status=status, body=body, content_type=content_type)
        self._faults.setdefault(method, deque()).append(fault)

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    # ----- HTTP plumbing -----

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _merged_params(request)
        token = _bearer(request) or params.pop("token", None)
        params.pop("token", None)
        call = ApiCall(method, params, token, self.clock.now(), request.method)
        self.calls.append(call)
        answer = self._answer(call)
        if isinstance(answer, _Fault):  # a raw server error
            call.status = answer.status
            call.response = {"ok": False, "error": f"http_{answer.status}", "body": answer.body}
            await self._notify()
            return web.Response(
                status=answer.status, text=answer.body, content_type=answer.content_type
            )
        status, body, headers = answer
        call.status, call.response = status, body
        await self._notify()
        return web.json_response(body, status=status, headers=headers)

    def _answer(self, call: ApiCall) -> tuple[int, Json, dict[str, str]] | _Fault:
        handler = self._handlers().get(call.method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        auth_error = self._auth_error(call)
        if auth_error is not None:
            return 200, {"ok": False, "error": auth_error}, {}
        fault = self._take_fault(call.method)
        if fault is not None and fault.status:
            return fault
        if fault is not None and fault.retry_after:
            self.injected_429 += 1
            return _ratelimited(fault.retry_after)
        if fault is not None:
            return 200, {"ok": False, "error": fault.error}, {}
        wait = self._spend_budget(call)
        if wait is not None:
            return _ratelimited(wait)
        try:
            return 200, handler(call.params), {}
        except SlackApiError as exc:
            return 200, {"ok": False, "error": exc.code}, {}

    def _auth_error(self, call: ApiCall) -> str | None:
        if not call.token:
            return "not_authed"
        wants_app = call.method in APP_TOKEN_METHODS
        if call.token.startswith("xapp-") != wants_app:
            return "not_allowed_token_type"
        expected = self.app_token if wants_app else self.bot_token
        return None if call.token == expected else "invalid_auth"

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                queue.popleft()
        return fault

    def _spend_budget(self, call: ApiCall) -> int | None:
        """Seconds to wait (as Retry-After) when the call is refused, else None."""
        rule = self.rate_limits.get(call.method)
        if rule is None:
            return None
        scope = self.team_id
        if rule.per_channel:
            scope = str(call.params.get("channel") or call.params.get("channel_id") or "")
        key, now = (rule.pool or call.method, scope), self.clock.now()
        wait = self._bucket(rule, key, now) if rule.bucket else self._window(rule, key, now)
        if wait is None:
            return None
        self.count_429 += 1
        self.over_budget.append(call)
        if not self.enforce_rate_limits:  # counted, then let through
            if rule.bucket:
                self._buckets[key][0] -= 1
            else:
                self._windows[key].append(now)
            return None
        return max(1, math.ceil(wait))

    def _window(self, rule: RateRule, key: tuple[str, str], now: float) -> float | None:
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - rule.window_s:
            window.popleft()
        if len(window) < rule.limit:
            window.append(now)
            return None
        return window[0] + rule.window_s - now

    def _bucket(self, rule: RateRule, key: tuple[str, str], now: float) -> float | None:
        state = self._buckets.setdefault(key, [float(rule.limit), now])
        rate = rule.limit / rule.window_s
        state[0], state[1] = min(float(rule.limit), state[0] + (now - state[1]) * rate), now
        if state[0] >= 1.0:
            state[0] -= 1.0
            return None
        return (1.0 - state[0]) / rate

    # ----- response_url -----

    async def _response_url(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read() or b"{}")
        self.responses.append({"url_id": request.match_info["rid"], **body})
        await self._notify()
        return web.Response(text="ok")


def _ratelimited(retry_after: int) -> tuple[int, Json, dict[str, str]]:
    return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(int(retry_after))}


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


async def _merged_params(request: web.Request) -> Json:
    """Query string, then form fields, then JSON body (later wins), JSON strings decoded."""
    params: Json = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            body = json.loads(await request.read() or b"{}")
            if isinstance(body, dict):
                params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    for key in JSON_FIELDS & params.keys():
        if isinstance(params[key], str):
            with contextlib.suppress(ValueError):
                params[key] = json.loads(params[key])
    return params
