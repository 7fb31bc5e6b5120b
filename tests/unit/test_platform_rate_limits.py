"""The labels of platform 429s: Discord routes without ids or tokens, Slack methods."""

from __future__ import annotations

import pytest
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from yarl import URL

from adapters.discord.ratelimits import route_label
from adapters.slack.ratelimits import RateLimitCounter
from bot.types import Platform

TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OmFiY2RlZmdo"  # an interaction token's shape


API = "https://discord.com/api/v10"


@pytest.mark.parametrize(
    ("method", "url", "label"),
    [
        ("post", f"{API}/channels/123/messages", "POST /channels/{id}/messages"),
        ("PATCH", "http://127.0.0.1:5/api/v10/channels/1/messages/2",
         "PATCH /channels/{id}/messages/{id}"),
        ("POST", f"{API}/channels/9/messages/8/threads",
         "POST /channels/{id}/messages/{id}/threads"),
        ("PATCH", f"{API}/webhooks/77/{TOKEN}/messages/@original",
         "PATCH /webhooks/{id}/{id}/messages/@original"),
        ("POST", f"{API}/interactions/55/{TOKEN}/callback",
         "POST /interactions/{id}/{id}/callback"),
        ("GET", f"{API}/users/@me", "GET /users/@me"),
        ("PUT", f"{API}/applications/1/guilds/2/commands",
         "PUT /applications/{id}/guilds/{id}/commands"),
    ],
)  # fmt: skip
def test_discord_routes_keep_their_words_and_lose_every_id(
    method: str, url: str, label: str
) -> None:
    assert route_label(method, URL(url)) == label
    assert TOKEN not in route_label(method, URL(url))


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def platform_rate_limited(self, platform: str, route: str) -> None:
        self.calls.append((platform, route))

    def reply_edits(self, platform: str, edits: int) -> None:
        raise AssertionError("not reported here")


async def test_the_slack_counter_reports_each_429_by_method_and_never_retries() -> None:
    metrics = Recorded()
    counter = RateLimitCounter(metrics, Platform("slack"))
    request = HttpRequest(method="POST", url="http://127.0.0.1:9/api/chat.update", headers={})
    state = RetryState()
    for status in (429, 200, 429):
        response = HttpResponse(status_code=status, headers={"Retry-After": ["1"]})
        assert not await counter.can_retry_async(state=state, request=request, response=response)
    assert not await counter.can_retry_async(state=state, request=request, error=OSError())
    assert metrics.calls == [("slack", "chat.update")] * 2
