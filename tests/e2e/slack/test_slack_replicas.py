"""Slack HTTP mode with several replicas on one database, behind a load balancer.

Slack resends an event that was not acked within 3 s (``X-Slack-Retry-Num``), and a
load balancer may hand the resend to another replica
(https://api.slack.com/apis/events-api#retries): the database decides which replica
answers it, so it is answered exactly once. Each replica here is its own runtime
(engine, store connection, Groq client) and its own ``SlackAdapter`` listening on its
own port; ``RoundRobin`` forwards each POST to the next replica in turn, as a simple
load balancer does.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from adapters.slack import SlackAdapter
from bot.app import open_runtime
from tests.e2e.slack.conftest import SlackConfig
from tests.e2e.slack.test_slack_adapter import answer, final_reply
from tests.fakes import slack_payloads as p
from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_server import FakeSlack

pytestmark = pytest.mark.e2e

# Headers Slack signs or sets that a proxy must pass on unchanged.
_FORWARDED = (
    "Content-Type",
    "X-Slack-Request-Timestamp",
    "X-Slack-Signature",
    "X-Slack-Retry-Num",
    "X-Slack-Retry-Reason",
)


class RoundRobin:
    """A minimal HTTP load balancer on 127.0.0.1: each request to the next upstream."""

    def __init__(self, upstreams: list[str]) -> None:
        self._next = itertools.cycle(upstreams)
        self.sent_to: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/slack/events"
        self._session = aiohttp.ClientSession()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        upstream = next(self._next)
        self.sent_to.append(upstream)
        headers = {h: request.headers[h] for h in _FORWARDED if h in request.headers}
        async with self._session.post(
            upstream + request.path, data=await request.read(), headers=headers
        ) as response:
            return web.Response(status=response.status, body=await response.read())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()


@asynccontextmanager
async def replicas(settings: SlackConfig, count: int) -> AsyncIterator[RoundRobin]:
    """``count`` replicas of the bot on one database, behind a ``RoundRobin``."""
    async with AsyncExitStack() as stack:
        urls = []
        for _ in range(count):
            runtime = await stack.enter_async_context(open_runtime(settings.core))
            adapter = SlackAdapter(runtime.context(settings.platform))
            await adapter.start()
            stack.push_async_callback(adapter.aclose)
            urls.append(f"http://127.0.0.1:{adapter.http_port}")
        balancer = RoundRobin(urls)
        await balancer.start()
        stack.push_async_callback(balancer.aclose)
        yield balancer


@pytest.fixture
def http_settings(fake_slack: FakeSlack, slack_settings: Callable[..., SlackConfig]) -> SlackConfig:
    return slack_settings(
        slack_app_token=None, slack_signing_secret=fake_slack.signing_secret, slack_http_port=0
    )


async def test_a_retry_sent_to_the_other_replica_is_answered_once(
    fake_slack: FakeSlack, fake_groq: FakeGroq, http_settings: SlackConfig
) -> None:
    http = fake_slack.http
    async with replicas(http_settings, 2) as balancer:
        sent = await fake_slack.mention(fake_slack.alice, "once please", socket=False)
        body, _ = http.encode(sent.body, "event")
        first = await http.post(balancer.url, body)
        retry = await http.post(balancer.url, body, retry_num=1, retry_reason="http_timeout")
        await final_reply(fake_slack, sent, answer(http_settings, "once please"))
        # Each POST above returned its ack, so each replica's answer task (if any) is
        # running; leaving the block drains both replicas before the asserts.

    assert first.status == 200 and retry.status == 200
    assert len(set(balancer.sent_to)) == 2  # the retry did reach the other replica
    assert len(fake_slack.bot_replies(sent.channel, sent.ts)) == 1
    assert len(fake_groq.chat_requests) == 1


async def test_a_retry_after_a_restart_is_not_answered_again(
    fake_slack: FakeSlack, fake_groq: FakeGroq, http_settings: SlackConfig
) -> None:
    http = fake_slack.http
    sent = await fake_slack.mention(fake_slack.alice, "before the restart", socket=False)
    body, _ = http.encode(sent.body, "event")
    async with replicas(http_settings, 1) as balancer:
        await http.post(balancer.url, body)
        await final_reply(fake_slack, sent, answer(http_settings, "before the restart"))
    async with replicas(http_settings, 1) as balancer:  # a new process, same database
        late = await http.post(balancer.url, body, retry_num=2, retry_reason="http_timeout")

    assert late.status == 200
    assert len(fake_slack.bot_replies(sent.channel, sent.ts)) == 1
    assert len(fake_groq.chat_requests) == 1


async def test_replicas_on_postgresql_answer_a_retry_once_and_a_thread_in_order(
    fake_slack: FakeSlack,
    fake_groq: FakeGroq,
    slack_settings: Callable[..., SlackConfig],
    pg_dsn: str,
) -> None:
    """Two follow-ups of one thread reach the two replicas at once: the second waits for
    the first one's turn (the conversation's lease) and sees it in its history."""
    settings = slack_settings(
        slack_app_token=None,
        slack_signing_secret=fake_slack.signing_secret,
        slack_http_port=0,
        database_url=pg_dsn,
    )
    http = fake_slack.http
    async with replicas(settings, 2) as balancer:
        sent = await fake_slack.mention(fake_slack.alice, "start", socket=False)
        body, _ = http.encode(sent.body, "event")
        await http.post(balancer.url, body)
        await http.post(balancer.url, body, retry_num=1, retry_reason="http_timeout")
        await final_reply(fake_slack, sent, answer(settings, "start"))

        fake_groq.token_delay_s = 0.1  # the first follow-up is still answering …
        follow_ups = []
        for text in ("second", "third"):  # … when the second reaches the other replica
            ts = fake_slack._human_message(fake_slack.alice, sent.channel, text, sent.ts)
            event = p.message(
                fake_slack.alice.id, sent.channel, text, ts, fake_slack.team_id, sent.ts
            )
            delivery = await fake_slack.event(event, socket=False)
            follow_ups.append(await http.post(balancer.url, http.encode(delivery.body, "event")[0]))
        await final_reply(fake_slack, sent, answer(settings, "third", turns=3), n=3)

    assert [r.status for r in follow_ups] == [200, 200]
    assert len(set(balancer.sent_to[-2:])) == 2  # one follow-up to each replica
    replies = [m.text for m in fake_slack.bot_replies(sent.channel, sent.ts)]
    assert replies == [
        answer(settings, "start"),
        answer(settings, "second", turns=2),
        answer(settings, "third", turns=3),
    ]
    assert len(fake_groq.chat_requests) == 3
    # The third turn ran after the second had ended: its request holds that answer.
    last_request = fake_groq.chat_requests[-1]["body"]["messages"]
    assert {"role": "assistant", "content": answer(settings, "second", turns=2)} in last_request
