"""The fake Slack against a plain Bolt app (not our adapter): proves the fake speaks the
protocol the real slack-bolt / slack-sdk expect, and that its checks can fail."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from slack_bolt.async_app import AsyncAck, AsyncRespond, AsyncSay
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.e2e.slack.conftest import http_mode, raw_app, socket_mode, web_client
from tests.fakes.clock import FakeClock
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_webapi import RateRule

pytestmark = pytest.mark.e2e

Body = dict[str, Any]


async def test_mention_answered_in_thread_and_own_echo_ignored(fake_slack: FakeSlack) -> None:
    app = raw_app(fake_slack)
    retry_headers: list[str | None] = []
    other_messages: list[Body] = []

    @app.event("app_mention")
    async def on_mention(event: Body, say: AsyncSay, request: AsyncBoltRequest) -> None:
        retry_headers.append(request.headers.get("x-slack-retry-num", [None])[0])
        await say(text="pong", thread_ts=event["ts"])

    @app.event("message")
    async def on_message(event: Body) -> None:  # Bolt must drop the echo of our own post
        other_messages.append(event)

    async with socket_mode(fake_slack, app):
        sent = await fake_slack.mention(fake_slack.alice, "ping")
        ack = await fake_slack.wait_ack(sent.envelope)  # type: ignore[arg-type]
        replies = await fake_slack.wait_for(
            lambda: fake_slack.bot_replies(sent.channel, sent.ts), what="the threaded reply"
        )
        echo = await fake_slack.wait_for(lambda: len(fake_slack.acks) >= 2, what="echo ack")

    assert echo and other_messages == []
    assert ack.latency_s < 3.0 and ack.payload is None
    assert [m.text for m in replies] == ["pong"]
    assert replies[0].thread_ts == sent.ts
    post = fake_slack.calls_to("chat.postMessage")[0]
    assert post.token == fake_slack.bot_token and post.params["team_id"] == fake_slack.team_id
    assert fake_slack.connections_opened == 1 and fake_slack.calls_to("auth.test")
    assert retry_headers == ["0"]  # the header trap: present, "0", on first deliveries


async def test_update_429_is_honoured_by_the_retry_handler(fake_slack: FakeSlack) -> None:
    app = raw_app(fake_slack)

    @app.event("app_mention")
    async def on_mention(event: Body, client: AsyncWebClient) -> None:
        posted = await client.chat_postMessage(
            channel=event["channel"], text="thinking…", thread_ts=event["ts"]
        )
        await client.chat_update(channel=posted["channel"], ts=posted["ts"], text="done")

    fake_slack.inject_429("chat.update", retry_after=1)
    async with socket_mode(fake_slack, app):
        sent = await fake_slack.mention(fake_slack.alice, "go")
        await fake_slack.wait_for(
            lambda: any(c.ok for c in fake_slack.calls_to("chat.update")), 6.0, "the retried update"
        )

    statuses = [c.status for c in fake_slack.calls_to("chat.update")]
    assert statuses == [429, 200]
    assert fake_slack.calls_to("chat.update")[0].response == {"ok": False, "error": "ratelimited"}
    assert fake_slack.injected_429 == 1 and fake_slack.count_429 == 0
    reply = fake_slack.bot_replies(sent.channel, sent.ts)[0]
    assert reply.history == ["thinking…", "done"]


async def test_slash_command_ack_respond_and_ephemeral(fake_slack: FakeSlack) -> None:
    app = raw_app(fake_slack)

    @app.command("/groq-model")
    async def on_model(ack: AsyncAck, respond: AsyncRespond, body: Body, client: Any) -> None:
        await ack(text=f"model set to {body['text']}", response_type="ephemeral")
        await respond(text="(saved)", response_type="ephemeral", replace_original=False)
        await client.chat_postEphemeral(
            channel=body["channel_id"], user=body["user_id"], text="only you see this"
        )

    async with socket_mode(fake_slack, app):
        sent = await fake_slack.command(fake_slack.bob, "/groq-model", "qwen/qwen3-32b")
        ack = await fake_slack.wait_ack(sent.envelope)  # type: ignore[arg-type]
        await fake_slack.wait_for(lambda: fake_slack.ephemerals and fake_slack.responses)

    assert ack.payload == {"text": "model set to qwen/qwen3-32b", "response_type": "ephemeral"}
    assert fake_slack.responses[0]["text"] == "(saved)"
    assert sent.response_url.endswith(fake_slack.responses[0]["url_id"])
    assert fake_slack.ephemerals[0]["user"] == fake_slack.bob.id


async def test_block_action_is_acked_and_answered(fake_slack: FakeSlack) -> None:
    app = raw_app(fake_slack)

    @app.action("pick_model")
    async def on_pick(ack: AsyncAck, respond: AsyncRespond, action: Body) -> None:
        await ack()
        await respond(text=f"picked {action['selected_option']['value']}", replace_original=True)

    option = {"text": {"type": "plain_text", "text": "m1"}, "value": "m1"}
    action = {"type": "static_select", "action_id": "pick_model", "selected_option": option}
    async with socket_mode(fake_slack, app):
        sent = await fake_slack.block_action(fake_slack.alice, action)
        ack = await fake_slack.wait_ack(sent.envelope)  # type: ignore[arg-type]
        await fake_slack.wait_for(lambda: fake_slack.responses)

    assert ack.payload is None
    assert fake_slack.responses[0]["text"] == "picked m1"
    assert fake_slack.responses[0]["replace_original"] is True


async def test_chat_stream_assembles_text_and_enforces_state(fake_slack: FakeSlack) -> None:
    app = raw_app(fake_slack)

    @app.event("message")
    async def on_dm(event: Body, client: AsyncWebClient, context: AsyncBoltContext) -> None:
        stream = await client.chat_stream(
            channel=event["channel"],
            thread_ts=event["ts"],
            recipient_team_id=context.team_id,
            recipient_user_id=event["user"],
            buffer_size=4,
        )
        for piece in ("Hello", " from", " the", " stream"):
            await stream.append(markdown_text=piece)
        await stream.stop()

    async with socket_mode(fake_slack, app):
        sent = await fake_slack.dm(fake_slack.alice, "stream please")
        reply = await fake_slack.wait_for(
            lambda: [
                m
                for m in fake_slack.bot_replies(sent.channel, sent.ts)
                if m.streaming == "completed"
            ]
        )

    assert reply[0].text == "Hello from the stream" and reply[0].appends == 3
    methods = [c.method for c in fake_slack.calls if c.method.endswith("Stream")]
    assert methods == ["chat.startStream"] + ["chat.appendStream"] * 3 + ["chat.stopStream"]
    client = web_client(fake_slack)
    with pytest.raises(SlackApiError) as late:
        await client.chat_appendStream(channel=sent.channel, ts=reply[0].ts, markdown_text="!")
    assert late.value.response["error"] == "message_not_in_streaming_state"
    with pytest.raises(SlackApiError) as channel_stream:
        await client.chat_startStream(channel=fake_slack.general, thread_ts=sent.ts)
    assert channel_stream.value.response["error"] == "invalid_arguments"  # recipients needed


async def test_disconnect_frame_leads_to_a_new_socket(fake_slack: FakeSlack) -> None:
    app = raw_app(fake_slack)

    @app.event("app_mention")
    async def on_mention(event: Body, say: AsyncSay) -> None:
        await say(text="still here", thread_ts=event["ts"])

    async with socket_mode(fake_slack, app):
        await fake_slack.send_disconnect()
        await fake_slack.wait_for(lambda: fake_slack.socket_connects >= 2, what="a new socket")
        await fake_slack.wait_for(lambda: len(fake_slack.sockets) == 1, what="old socket closed")
        sent = await fake_slack.mention(fake_slack.alice, "after refresh")
        await fake_slack.wait_ack(sent.envelope)  # type: ignore[arg-type]
        await fake_slack.wait_for(lambda: fake_slack.bot_replies(sent.channel, sent.ts))

    assert fake_slack.connections_opened == 2


async def test_unacked_event_is_redelivered_with_retry_attempt(fake_slack: FakeSlack) -> None:
    # No listener for reaction_added: Bolt answers 404 and never acks; asked to, it also
    # reports each such delivery to its error handler, once it has made that answer.
    app = raw_app(fake_slack, raise_error_for_unhandled_request=True)
    unhandled: list[Exception] = []
    three_unhandled = asyncio.Event()

    @app.error
    async def on_error(error: Exception) -> None:
        unhandled.append(error)
        if len(unhandled) == 3:
            three_unhandled.set()

    fake_slack.redeliver_after_s = 0.1
    fake_slack.max_redeliveries = 2
    async with socket_mode(fake_slack, app):
        sent = await fake_slack.event({"type": "reaction_added", "user": fake_slack.alice.id})
        await fake_slack.wait_for(lambda: len(fake_slack.deliveries_of(sent.event_id)) == 3)
        # Absence proven by two events, not by a pause. No fourth delivery: the fake's
        # redelivery timer of every delivery has run, the third's declining (only these
        # timers redeliver, and a fourth delivery would be listed before its parent's
        # timer counts as run). No ack: Bolt has answered all three deliveries 404,
        # after which nothing is sent for them.
        await fake_slack.wait_for(
            lambda: all(d.redelivery_checked for d in fake_slack.deliveries_of(sent.event_id)),
            what="every redelivery timer run",
        )
        async with asyncio.timeout(5):
            await three_unhandled.wait()

    deliveries = fake_slack.deliveries_of(sent.event_id)
    assert [d.retry_attempt for d in deliveries] == [0, 1, 2]
    assert len({d.envelope_id for d in deliveries}) == 3
    assert all(d.ack is None for d in deliveries)
    assert all(isinstance(e, BoltUnhandledRequestError) for e in unhandled)


async def test_web_api_errors_tokens_and_param_encodings(fake_slack: FakeSlack) -> None:
    client = web_client(fake_slack)
    posted = await client.chat_postMessage(channel=fake_slack.general, text="root")
    await client.chat_postMessage(channel=fake_slack.general, text="reply", thread_ts=posted["ts"])
    replies = await client.conversations_replies(channel=fake_slack.general, ts=posted["ts"])
    assert [m["text"] for m in replies["messages"]] == ["root", "reply"]
    assert fake_slack.calls_to("conversations.replies")[0].http_method == "GET"

    await client.assistant_threads_setTitle(
        channel_id=fake_slack.dm_channel(fake_slack.alice), thread_ts=posted["ts"], title="T"
    )
    assert fake_slack.titles == {(fake_slack.dm_channel(fake_slack.alice), posted["ts"]): "T"}

    app_client = AsyncWebClient(token=fake_slack.app_token, base_url=fake_slack.base_url)
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=fake_slack.base_url)
    general = fake_slack.general
    expected: dict[str, Callable[[], Awaitable[object]]] = {
        "message_not_found": lambda: client.chat_update(channel=general, ts="1.000", text="x"),
        "no_text": lambda: client.api_call("chat.postMessage", json={"channel": general}),
        "channel_not_found": lambda: client.chat_postMessage(channel="C0NOPE", text="x"),
        "not_allowed_token_type": lambda: app_client.chat_postMessage(channel=general, text="x"),
        "invalid_auth": wrong.auth_test,
    }
    for error, call in expected.items():
        with pytest.raises(SlackApiError) as caught:
            await call()
        assert caught.value.response["error"] == error


async def test_enforced_budget_answers_429_and_counts(fake_slack: FakeSlack) -> None:
    clock = FakeClock()
    fake_slack.clock = clock
    fake_slack.rate_limits["chat.update"] = RateRule(3, 60.0)
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url)
    posted = await client.chat_postMessage(channel=fake_slack.general, text="v0")
    for n in range(3):
        await client.chat_update(channel=fake_slack.general, ts=posted["ts"], text=f"v{n + 1}")
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel=fake_slack.general, ts=posted["ts"], text="too many")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "60"  # integer seconds
    assert (
        fake_slack.count_429 == 1
        and fake_slack.messages[(fake_slack.general, posted["ts"])].text == "v3"
    )
    clock.t += 60.0
    await client.chat_update(channel=fake_slack.general, ts=posted["ts"], text="later")
    assert fake_slack.count_429 == 1


async def test_http_driver_signs_times_and_retries(fake_slack: FakeSlack) -> None:
    app = raw_app(fake_slack, signing_secret=fake_slack.signing_secret)
    seen: list[str | None] = []

    @app.event("app_mention")
    async def on_mention(request: AsyncBoltRequest) -> None:
        seen.append(request.headers.get("x-slack-retry-num", [None])[0])

    async with http_mode(app) as url:
        sent = await fake_slack.mention(fake_slack.alice, "hi", socket=False)
        [good] = await fake_slack.http.deliver(url, sent.body)
        body, _ctype = fake_slack.http.encode(sent.body, "event")
        forged = await fake_slack.http.post(url, body, signature="v0=" + "0" * 64)
        stale = await fake_slack.http.post(url, body, timestamp=1_000_000_000)
        retried = await fake_slack.http.post(url, body, retry_num=1)
        challenge = await fake_slack.http.post(
            url, '{"type":"url_verification","challenge":"c1","token":"t"}'
        )

    assert good.status == 200 and good.elapsed_s < 3.0 and good.retry_num is None
    assert forged.status == 401 and stale.status == 401
    assert retried.status == 200 and challenge.json() == {"challenge": "c1"}
    assert seen == [None, "1"]


async def test_assistant_thread_methods_are_recorded(fake_slack: FakeSlack) -> None:
    app = raw_app(fake_slack)

    @app.event("assistant_thread_started")
    async def started(event: Body, client: AsyncWebClient) -> None:
        thread = event["assistant_thread"]
        ref = {"channel_id": thread["channel_id"], "thread_ts": thread["thread_ts"]}
        await client.assistant_threads_setStatus(**ref, status="is thinking…")
        await client.assistant_threads_setSuggestedPrompts(
            **ref, prompts=[{"title": "Hi", "message": "Say hi"}]
        )

    async with socket_mode(fake_slack, app):
        sent = await fake_slack.start_assistant_thread(fake_slack.carol)
        await fake_slack.wait_for(lambda: fake_slack.suggested_prompts)

    ref = (sent.channel, sent.ts)
    assert fake_slack.statuses == [(*ref, "is thinking…")]
    assert fake_slack.suggested_prompts[ref] == [{"title": "Hi", "message": "Say hi"}]
