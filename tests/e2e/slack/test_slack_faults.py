"""Slack failing under the bot, and bad input from it (issue 11), end to end through
the fake Slack: server errors whose body is not Slack's JSON, posts and updates
failing for a while, HTTP-mode requests whose body can't be read, and events whose
text holds lone UTF-16 surrogates."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from adapters.slack import surface as surface_module
from adapters.slack.config import SlackSettings
from adapters.slack.surface import ReplyTarget, SlackSurface
from bot.ports import SystemClock
from bot.streaming import EditingSink, EditPacer
from bot.types import TurnStatus
from tests.e2e.slack.conftest import SlackConfig, running_adapter, web_client
from tests.e2e.slack.test_slack_adapter import answer, every_event_taken, final_reply
from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_server import FakeMessage, FakeSlack
from tests.fakes.slack_webapi import HTML_5XX, TRUNCATED_JSON

pytestmark = pytest.mark.e2e

SettingsFactory = Callable[..., SlackConfig]
BODIES: dict[str, dict[str, Any]] = {
    "text-plain": {},  # the fake's default: a proxy's line as text/plain
    "malformed-json": {"body": TRUNCATED_JSON, "content_type": "application/json"},
}


def bugs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log lines that mean a bug (a traceback, an error inside error handling)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.exc_info or "AttributeError" in r.getMessage() or "unexpectedly" in r.getMessage()
    ]


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("method", ["chat.startStream", "chat.appendStream", "chat.postMessage"])
async def test_non_json_5xx_on_a_reply_call_is_handled_like_any_failure(
    fake_slack: FakeSlack,
    fake_groq: FakeGroq,
    slack_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    method: str,
    body: str,
) -> None:
    caplog.set_level(logging.INFO)  # a post retried until delivered is no failure: INFO
    settings = slack_settings(slack_native_streaming=method != "chat.postMessage")
    fake_groq.token_delay_s = 0.06  # ~0.5 s of streaming: appends after the start
    fake_slack.inject_5xx(method, **BODIES[body])
    async with running_adapter(settings):
        sent = await fake_slack.mention(fake_slack.alice, "a question")
        await final_reply(fake_slack, sent, answer(settings, "a question"))
        await every_event_taken(fake_slack)  # no ack left to send while closing

    assert fake_slack.calls_to(method)[0].status == 500  # the fault was served
    assert len(fake_slack.bot_replies(sent.channel, sent.ts)) == 1
    assert bugs(caplog) == []
    kind = "malformed JSON body: {" if body == "malformed-json" else "non-JSON body: upstream"
    assert [r for r in caplog.records if method in r.getMessage() and kind in r.getMessage()]


async def test_post_failing_twice_with_500_is_retried_until_it_is_delivered(
    fake_slack: FakeSlack,
    fake_groq: FakeGroq,
    slack_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = slack_settings(slack_native_streaming=False)
    fake_slack.inject_5xx("chat.postMessage")
    fake_slack.inject_5xx("chat.postMessage", status=503, body=HTML_5XX, content_type="text/html")
    async with running_adapter(settings):
        sent = await fake_slack.mention(fake_slack.alice, "still there?")
        await final_reply(fake_slack, sent, answer(settings, "still there?"))
        await every_event_taken(fake_slack)

    assert [c.status for c in fake_slack.calls_to("chat.postMessage")] == [500, 503, 200]
    assert len(fake_slack.bot_replies(sent.channel, sent.ts)) == 1
    assert bugs(caplog) == [] and not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_update_429_past_the_clients_retries_waits_for_retry_after(
    fake_slack: FakeSlack,
) -> None:
    clock = SystemClock()
    pacer = EditPacer(clock=clock)
    root = fake_slack.store(
        FakeMessage(fake_slack.general, fake_slack.ts(), fake_slack.alice.id, "question")
    )
    target = ReplyTarget(fake_slack.team_id, fake_slack.general, root.ts, fake_slack.alice.id)
    settings = SlackSettings(  # type: ignore[call-arg]
        _env_file=None, edit_interval_s=0.2, native_streaming=False
    )
    client = web_client(fake_slack, rate_limit_retries=0)  # every 429 reaches the surface
    surface = SlackSurface(client, target, settings=settings, pacer=pacer, clock=clock)
    sink = EditingSink(surface, pacer=pacer, clock=clock)
    await sink.update("first")
    await fake_slack.wait_for(lambda: fake_slack.calls_to("chat.postMessage"), what="the post")
    fake_slack.inject_429("chat.update", retry_after=1)
    await sink.finish("first and last", TurnStatus.COMPLETE)

    refused, done = fake_slack.calls_to("chat.update")
    assert (refused.status, done.status) == (429, 200) and done.at - refused.at >= 1.0
    [message] = fake_slack.bot_replies(fake_slack.general, root.ts)
    assert message.text == "first and last"


async def test_outage_past_the_deadline_is_given_up_and_logged_with_the_conversation(
    fake_slack: FakeSlack,
    fake_groq: FakeGroq,
    slack_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(surface_module, "RETRY_DEADLINE_S", 1.0)
    settings = slack_settings(slack_native_streaming=False)
    fake_slack.inject_5xx("chat.postMessage", times=None)
    started = time.monotonic()
    async with running_adapter(settings):
        sent = await fake_slack.mention(fake_slack.alice, "anyone?")
        await every_event_taken(fake_slack)
    # Leaving the block drained the answer: it gave up within the deadline (plus the
    # sink's one retry, which fails at once while the outage lasts).
    assert time.monotonic() - started < 5.0
    assert 3 <= len(fake_slack.calls_to("chat.postMessage")) <= 6
    assert fake_slack.bot_replies(sent.channel, sent.ts) == []
    surface_logs = [r for r in caplog.records if r.name == surface_module.__name__]
    [gave_up] = [r for r in surface_logs if "giving up" in r.getMessage()]  # once
    assert gave_up.levelno == logging.ERROR
    assert sent.channel in gave_up.getMessage() and sent.ts in gave_up.getMessage()
    assert bugs(caplog) == []
    # The one line above INFO for the reply the user never got (the sink's own retry and
    # its giving up are INFO: the surface said it, with where).
    ours = ("bot.", "adapters.")
    assert [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(ours)
    ] == [gave_up]


# ----- HTTP mode: bodies that can't be read -----


def loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.INFO]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"this is not json", "application/json", id="text-as-json"),
        pytest.param(b'{"type": "event_callback", "event": ', "application/json", id="cut-json"),
        pytest.param(b"payload=%7Bnot-json", "application/x-www-form-urlencoded", id="bad-form"),
        pytest.param(b"\xff\xfe{}", "application/json", id="not-utf8"),
        pytest.param(b"[1, 2]", "application/json", id="json-array"),
    ],
)
async def test_http_mode_unreadable_body_is_a_4xx_with_one_log_line(
    fake_slack: FakeSlack,
    fake_groq: FakeGroq,
    slack_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    content_type: str,
) -> None:
    caplog.set_level(logging.INFO)
    settings = slack_settings(
        slack_app_token=None, slack_signing_secret=fake_slack.signing_secret, slack_http_port=0
    )
    async with running_adapter(settings) as (adapter, _):
        url = f"http://127.0.0.1:{adapter.http_port}/slack/events"
        http = fake_slack.http
        caplog.clear()
        unsigned = await http.post(url, body, content_type=content_type, unsigned=True)
        unsigned_logs = loud(caplog)
        caplog.clear()
        signed = await http.post(url, body, content_type=content_type)
        signed_logs = loud(caplog)
        # Still serving: a good event after the bad ones is answered.
        sent = await fake_slack.mention(fake_slack.alice, "after the junk", socket=False)
        [good] = await http.deliver(url, sent.body)
        await final_reply(fake_slack, sent, answer(settings, "after the junk"))

    # Unsigned: refused before the body is read, as Bolt refuses any unsigned request.
    assert (unsigned.status, unsigned.json()) == (401, {"error": "invalid request"})
    assert [r.levelname for r in unsigned_logs] == ["INFO"] and not unsigned_logs[0].exc_info
    # Signed by Slack but unreadable: a bad request, one warning, no traceback.
    assert (signed.status, signed.json()) == (400, {"error": "invalid request body"})
    assert [r.levelname for r in signed_logs] == ["WARNING"] and not signed_logs[0].exc_info
    assert "body can't be read" in signed_logs[0].getMessage()
    assert good.status == 200


# ----- bad text -----


async def test_lone_surrogates_in_an_event_or_a_persona_are_replaced_and_stored(
    fake_slack: FakeSlack,
    fake_groq: FakeGroq,
    slack_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # JSON may carry "\\ud83d" on its own (half an emoji): the SDK's json.loads makes
    # it a lone surrogate, which SQLite can't store and httpx can't send.
    settings = slack_settings()
    async with running_adapter(settings):
        await fake_slack.command(fake_slack.alice, "/groq-system", "talk like a \udce9 pirate")
        await fake_slack.wait_for(lambda: fake_slack.responses, what="the command's answer")
        sent = await fake_slack.mention(fake_slack.alice, "half \ud83d and \ude00 end")
        await final_reply(fake_slack, sent, answer(settings, "half \ufffd and \ufffd end"))
        await fake_slack.say(fake_slack.alice, "and now?", thread_ts=sent.ts)
        await final_reply(fake_slack, sent, answer(settings, "and now?", turns=2), n=2)
        await every_event_taken(fake_slack)  # no ack left to send while closing

    assert "Persona set" in fake_slack.responses[0]["text"]
    system, *turns = fake_groq.chat_requests[-1]["body"]["messages"]
    assert system == {"role": "system", "content": "talk like a \ufffd pirate"}
    user_turns = [m["content"] for m in turns if m["role"] == "user"]
    assert user_turns == ["half \ufffd and \ufffd end", "and now?"]  # the first was stored
    assert bugs(caplog) == []
