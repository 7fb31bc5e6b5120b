"""Slack's side of HTTP mode for tests: sign bodies (v0 HMAC), POST them to the app,
time the answers, and resend with ``X-Slack-Retry-Num`` like Slack does."""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from tests.fakes import slack_payloads as p
from tests.fakes.slack_payloads import Json

__all__ = ["HttpDriver", "HttpResult", "PayloadKind"]

PayloadKind = Literal["event", "command", "interactive"]


@dataclass(slots=True)
class HttpResult:
    """One signed POST to the app in HTTP mode."""

    status: int
    text: str
    elapsed_s: float
    retry_num: int | None
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


class HttpDriver:
    """Plays Slack's side of HTTP mode: signs bodies (v0 HMAC), posts, times, retries."""

    def __init__(self, secret: str, session: aiohttp.ClientSession) -> None:
        self.secret = secret
        self._session = session
        self.results: list[HttpResult] = []

    @staticmethod
    def encode(payload: Json, kind: PayloadKind) -> tuple[str, str]:
        """(body, content type) as Slack sends each kind."""
        if kind == "event":
            return json.dumps(payload), "application/json"
        if kind == "command":
            return urllib.parse.urlencode(payload), "application/x-www-form-urlencoded"
        form = {"payload": json.dumps(payload)}
        return urllib.parse.urlencode(form), "application/x-www-form-urlencoded"

    async def post(
        self,
        url: str,
        body: str | bytes,
        *,
        content_type: str = "application/json",
        timestamp: int | None = None,
        signature: str | None = None,
        unsigned: bool = False,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timeout_s: float = 10.0,
    ) -> HttpResult:
        """POST ``body`` signed with the secret (or the given forged ``signature``;
        ``unsigned``: without Slack's signature headers, as anyone else could)."""
        raw = body.encode() if isinstance(body, str) else body
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": content_type}
        if not unsigned:
            headers["X-Slack-Request-Timestamp"] = ts
            headers["X-Slack-Signature"] = signature or p.sign(self.secret, ts, raw)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        started = time.monotonic()
        async with self._session.post(
            url, data=raw, headers=headers, timeout=aiohttp.ClientTimeout(timeout_s)
        ) as response:
            text = await response.text()
            result = HttpResult(
                response.status,
                text,
                time.monotonic() - started,
                retry_num,
                dict(response.headers),
            )
        self.results.append(result)
        return result

    async def deliver(
        self,
        url: str,
        payload: Json,
        *,
        kind: PayloadKind = "event",
        slow_after_s: float = 3.0,
        max_retries: int = 3,
    ) -> list[HttpResult]:
        """Deliver like Slack: resend with ``X-Slack-Retry-Num`` 1..3 while the answer is
        slower than ``slow_after_s`` or not 2xx. (Slack waits ~1 and ~5 min before the
        second and third retry; the driver resends at once to keep tests fast.)"""
        body, content_type = self.encode(payload, kind)
        results = [await self.post(url, body, content_type=content_type)]
        while len(results) <= max_retries and (
            results[-1].elapsed_s > slow_after_s or not 200 <= results[-1].status < 300
        ):
            reason = "http_timeout" if results[-1].elapsed_s > slow_after_s else "http_error"
            retry = await self.post(
                url, body, content_type=content_type, retry_num=len(results), retry_reason=reason
            )
            results.append(retry)
        return results
