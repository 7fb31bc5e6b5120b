"""Our SlackAdapter end to end: real slack-bolt / slack-sdk against the fake Slack, a
real engine against the fake Groq, SQLite in tmp_path. The fake Groq's answers reveal
what it received: ``turns=<user messages> last=<last user text> model=<model>``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest

from tests.e2e.slack.conftest import ScaledClock, SlackConfig, running_adapter
from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_server import Delivery, FakeMessage, FakeSlack
from tests.scrape import sample_of

pytestmark = pytest.mark.e2e

SettingsFactory = Callable[..., SlackConfig]
MODES = [pytest.param(True, id="native-stream"), pytest.param(False, id="chat-update")]


def answer(settings: SlackConfig, last: str, turns: int = 1, model: str | None = None) -> str:
    return f"turns={turns} last={last} model={model or settings.default_model}"


def densest(times: list[float], window_s: float) -> int:
    """The most calls in any window of ``window_s``."""
    return max((sum(1 for u in times if t <= u < t + window_s) for t in times), default=0)


async def final_reply(fake: FakeSlack, sent: Delivery, text: str, n: int = 1) -> FakeMessage:
    """Wait until the ``n``-th bot reply in the mention's thread holds ``text``, finished."""

    def done() -> FakeMessage | None:
        replies = fake.bot_replies(sent.channel, sent.ts)
        if len(replies) < n or replies[n - 1].text != text:
            return None
        return replies[n - 1] if replies[n - 1].streaming != "in_progress" else None

    return await fake.wait_for(done, 10.0, f"reply {n} = {text!r}")


async def every_event_taken(fake: FakeSlack) -> None:
    """Wait until the app has acked every envelope the fake sent it so far.

    The barrier before an absence check ("no wrong answer"), together with leaving
    ``running_adapter``. Bolt sends an envelope's ack only after it has scheduled the
    listener (events: ``ack()``, then the listener as a task, then the ack goes out;
    commands: the listener acks, and the ack goes out once Bolt sees that), so the
    listener runs before the fake can read the ack; our listeners route the event and
    spawn its answer task without suspending first. Once every envelope is acked,
    every answer the bot will ever give to them is a task of the bot, and leaving
    ``running_adapter`` waits for those tasks (``SlackAdapter.aclose`` drains them), so
    asserts after the block see every answer, a wrong one included.
    """
    await fake.wait_for(
        lambda: all(e.ack for e in fake.envelopes.values()), what="every envelope acked"
    )


@pytest.mark.parametrize("native", MODES)
async def test_mention_gets_a_streamed_threaded_reply(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory, native: bool
) -> None:
    settings = slack_settings(slack_native_streaming=native)
    fake_groq.token_delay_s = 0.06  # the answer arrives over ~0.5 s: several updates
    async with running_adapter(settings):
        sent = await fake_slack.mention(fake_slack.alice, "hello there")
        reply = await final_reply(fake_slack, sent, answer(settings, "hello there"))
        ack = await fake_slack.wait_ack(sent.envelope)  # type: ignore[arg-type]

    assert ack.latency_s < 1.0 and reply.thread_ts == sent.ts
    assert len(fake_slack.bot_replies(sent.channel, sent.ts)) == 1
    assert len(reply.history) >= 3  # streamed: started / posted, then grown
    streamed = [c.method for c in fake_slack.calls if c.method.startswith("chat.")]
    if native:
        assert streamed[0] == "chat.startStream" and streamed[-1] == "chat.stopStream"
        start = fake_slack.calls_to("chat.startStream")[0].params
        assert start["recipient_user_id"] == fake_slack.alice.id
        assert "chat.update" not in streamed and "chat.postMessage" not in streamed
    else:
        assert streamed[0] == "chat.postMessage" and "chat.startStream" not in streamed
        assert streamed.count("chat.update") >= 2
    assert fake_slack.count_429 == 0 and fake_slack.injected_429 == 0


async def test_thread_follow_up_without_mention_carries_history(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory
) -> None:
    settings = slack_settings()
    async with running_adapter(settings):
        first = await fake_slack.mention(fake_slack.alice, "first question")
        await final_reply(fake_slack, first, answer(settings, "first question"))
        # None of these is for the bot: a channel message, a stranger's thread, another
        # bot and an edit in the bot's thread.
        await fake_slack.say(fake_slack.bob, "just chatting")
        other = await fake_slack.say(fake_slack.bob, "root without the bot")
        await fake_slack.say(fake_slack.bob, "reply there", thread_ts=other.ts)
        await fake_slack.bot_says("beep", thread_ts=first.ts)
        await fake_slack.edit(first, f"<@{fake_slack.bot_user_id}> first question, edited")
        follow = await fake_slack.say(fake_slack.bob, "second question", thread_ts=first.ts)
        await final_reply(fake_slack, first, answer(settings, "second question", turns=2), n=2)
        # Every event above acked, then the bot drained on leaving the block: a wrong
        # extra answer to any of them would be in the fakes' logs by the asserts.
        await every_event_taken(fake_slack)

    assert [m.text for m in fake_slack.thread(other.channel, other.ts)][1:] == ["reply there"]
    assert len(fake_slack.bot_replies(first.channel, first.ts)) == 2
    assert len(fake_groq.chat_requests) == 2
    messages = fake_groq.chat_requests[-1]["body"]["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "first question",
        "second question",
    ]
    assert follow.envelope is not None and follow.envelope.retry_attempt == 0


async def test_dm_is_remembered_after_a_restart(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory
) -> None:
    settings = slack_settings()
    dm = fake_slack.dm_channel(fake_slack.alice)
    async with running_adapter(settings):
        await fake_slack.dm(fake_slack.alice, "remember kiwi")
        first = answer(settings, "remember kiwi")
        await fake_slack.wait_for(lambda: [m for m in fake_slack.top_level(dm) if m.text == first])
    async with running_adapter(settings):
        await fake_slack.dm(fake_slack.alice, "which fruit?")
        second = answer(settings, "which fruit?", turns=2)
        reply = await fake_slack.wait_for(
            lambda: [m for m in fake_slack.top_level(dm) if m.text == second]
        )

    assert reply[0].thread_ts is None  # a plain DM is answered at top level
    user_turns = [m for m in fake_groq.chat_requests[-1]["body"]["messages"] if m["role"] == "user"]
    assert [m["content"] for m in user_turns] == ["remember kiwi", "which fruit?"]


async def test_assistant_thread_prompts_status_and_own_conversation(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory
) -> None:
    settings = slack_settings()
    async with running_adapter(settings):
        await fake_slack.dm(fake_slack.carol, "top level first")
        thread = await fake_slack.start_assistant_thread(fake_slack.carol)
        await fake_slack.wait_for(lambda: fake_slack.suggested_prompts, what="prompts")
        sent = await fake_slack.dm(fake_slack.carol, "in the thread", thread_ts=thread.ts)
        await final_reply(fake_slack, thread, answer(settings, "in the thread"))

    ref = (thread.channel, thread.ts)
    assert fake_slack.statuses[0] == (*ref, "is thinking…")
    assert 1 <= len(fake_slack.suggested_prompts[ref]) <= 4
    assert fake_slack.calls_to("chat.startStream")[0].params["thread_ts"] == thread.ts
    assert sent.ts != thread.ts
    assert fake_slack.bot_replies(*ref)[-1].streaming == "completed"


async def test_model_picker_lists_models_and_changes_the_next_request(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory
) -> None:
    settings = slack_settings()
    async with running_adapter(settings):
        cmd = await fake_slack.command(fake_slack.alice, "/groq-model")
        ack = await fake_slack.wait_ack(cmd.envelope)  # type: ignore[arg-type]
        picker = await fake_slack.wait_for(lambda: fake_slack.responses, what="the picker")
        select = picker[0]["blocks"][0]["accessory"]
        option = next(o for o in select["options"] if o["value"] == "qwen/qwen3-32b")
        action = {"type": "static_select", "action_id": select["action_id"]}
        await fake_slack.block_action(fake_slack.alice, {**action, "selected_option": option})
        await fake_slack.wait_for(lambda: len(fake_slack.responses) == 2, what="confirmation")
        sent = await fake_slack.mention(fake_slack.alice, "which model?")
        await final_reply(fake_slack, sent, answer(settings, "which model?", model=option["value"]))
        await fake_slack.command(fake_slack.alice, "/groq-help")
        await fake_slack.wait_for(lambda: len(fake_slack.responses) == 3, what="help")

    assert ack.latency_s < 1.0 and ack.payload is None
    assert [o["value"] for o in select["options"]] == [m.id for m in fake_groq.models]
    assert select["initial_option"]["value"] == settings.default_model
    assert picker[0]["response_type"] == "ephemeral"
    confirm = fake_slack.responses[1]
    assert confirm["replace_original"] is True and "qwen/qwen3-32b" in confirm["text"]
    assert fake_groq.chat_requests[-1]["body"]["model"] == "qwen/qwen3-32b"
    assert "/groq-model" in fake_slack.responses[2]["text"]


@pytest.mark.parametrize("native", MODES)
async def test_twenty_concurrent_mentions_cause_no_429(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory, native: bool
) -> None:
    # Slack's per-minute budgets on a clock 20x real time, shared by the engine's pacer
    # and the fake's enforcement: 50 chat.update / "minute" = 50 per 3 real seconds.
    clock = ScaledClock(20.0)
    fake_slack.clock = clock
    fake_groq.token_delay_s = 0.15  # ~1.2 s (24 "seconds") per answer: edits pile up
    settings = slack_settings(slack_native_streaming=native, slack_edit_interval_s=1.5)
    users = [fake_slack.add_user(f"user{i}") for i in range(20)]
    async with running_adapter(settings, clock=clock):
        sent = [await fake_slack.mention(u, f"question {i}") for i, u in enumerate(users)]
        for i, delivery in enumerate(sent):
            await final_reply(fake_slack, delivery, answer(settings, f"question {i}"))

    assert fake_slack.count_429 == 0 and fake_slack.over_budget == []
    for delivery in sent:
        assert len(fake_slack.bot_replies(delivery.channel, delivery.ts)) == 1
    if not native:  # the budget was really the limit: near 45 calls in some "minute"
        times = [c.at for c in fake_slack.calls if c.method in ("chat.update", "chat.postMessage")]
        assert densest(times, 60.0) >= 40


@pytest.mark.parametrize("native", MODES)
async def test_mass_mentions_in_model_output_are_neutralised(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory, native: bool
) -> None:
    fake_groq.reply_text = (
        "Hey <!channel> <!here|here> <!everyone> <@U0ALICE000> <!subteam^S1|devs>, "
        "@here @channel and @everyone: **done**"
    )
    settings = slack_settings(slack_native_streaming=native)
    async with running_adapter(settings):
        sent = await fake_slack.mention(fake_slack.alice, "ping everyone")
        reply = await fake_slack.wait_for(
            lambda: [m for m in fake_slack.bot_replies(sent.channel, sent.ts) if "done" in m.text]
        )

    text = reply[0].text
    assert not re.search(r"<[@!]", text), text
    assert not re.search(r"@(here|channel|everyone)", text, re.IGNORECASE), text
    assert ("&lt;!channel&gt;" in text) != native  # mrkdwn escapes; Markdown gets a ZWSP


async def test_http_mode_signatures_and_retries(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory
) -> None:
    settings = slack_settings(
        slack_app_token=None, slack_signing_secret=fake_slack.signing_secret, slack_http_port=0
    )
    async with running_adapter(settings) as (adapter, _):
        url = f"http://127.0.0.1:{adapter.http_port}/slack/events"
        http = fake_slack.http
        sent = await fake_slack.mention(fake_slack.alice, "over http", socket=False)
        body, _ = http.encode(sent.body, "event")
        forged = await http.post(url, body, signature="v0=" + "0" * 64)
        stale = await http.post(url, body, timestamp=1_000_000_000)
        [good] = await http.deliver(url, sent.body)
        retry = await http.post(url, body, retry_num=1, retry_reason="http_timeout")
        await final_reply(fake_slack, sent, answer(settings, "over http"))
        lost = await fake_slack.mention(fake_slack.bob, "first delivery lost", socket=False)
        late = await http.post(url, http.encode(lost.body, "event")[0], retry_num=2)
        await final_reply(fake_slack, lost, answer(settings, "first delivery lost"))
        form, ctype = http.encode(
            fake_slack.command_payload(fake_slack.bob, "/groq-help"), "command"
        )
        command = await http.post(url, form, content_type=ctype)
        await fake_slack.wait_for(lambda: fake_slack.responses, what="the command's answer")
        # No Socket Mode acks here: each HTTP response above is the ack, and each was
        # awaited, so (as in every_event_taken) every answer the bot gives to these
        # deliveries, a duplicate included, is one of its tasks by now; leaving the
        # block drains them before the asserts.

    assert (forged.status, stale.status) == (401, 401)
    assert good.status == 200 and good.elapsed_s < 1.0
    assert retry.status == 200 and late.status == 200 and command.status == 200
    assert len(fake_slack.bot_replies(sent.channel, sent.ts)) == 1  # the retry: acked only
    assert len(fake_slack.bot_replies(lost.channel, lost.ts)) == 1
    assert len(fake_groq.chat_requests) == 2
    assert fake_slack.connections_opened == 0  # no Socket Mode in HTTP mode


async def test_access_lists_dms_and_admins(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory
) -> None:
    settings = slack_settings(
        slack_blocked_user_ids=fake_slack.bob.id,
        slack_allow_dms=False,
        slack_blocked_channel_ids=fake_slack.random,
        admin_ids=fake_slack.carol.id,
    )
    async with running_adapter(settings):
        await fake_slack.mention(fake_slack.bob, "blocked user")
        await fake_slack.mention(fake_slack.alice, "blocked channel", channel=fake_slack.random)
        await fake_slack.dm(fake_slack.alice, "dms are off")
        cmd = await fake_slack.command(fake_slack.bob, "/groq-usage")
        await fake_slack.dm(fake_slack.carol, "admin dm")
        dm = fake_slack.dm_channel(fake_slack.carol)
        expected = answer(settings, "admin dm")
        await fake_slack.wait_for(
            lambda: [m for m in fake_slack.top_level(dm) if m.text == expected]
        )
        await fake_slack.wait_for(lambda: fake_slack.responses, what="the refusal")
        # Every event above acked, then the bot drained on leaving the block: an answer
        # to a refused message would be in the fake Groq's log by the asserts.
        await every_event_taken(fake_slack)

    assert len(fake_groq.chat_requests) == 1
    assert "can't use this bot" in fake_slack.responses[0]["text"]
    assert fake_slack.responses[0]["url_id"] in cmd.response_url


async def test_cache_command_clears_for_admins_only(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory
) -> None:
    settings = slack_settings(temperature=0.0, admin_ids=fake_slack.carol.id)
    async with running_adapter(settings):
        first = await fake_slack.mention(fake_slack.alice, "capital of France?")
        await final_reply(fake_slack, first, answer(settings, "capital of France?"))
        await fake_slack.command(fake_slack.bob, "/groq-cache", "clear")
        await fake_slack.wait_for(lambda: len(fake_slack.responses) == 1, what="the refusal")
        await fake_slack.command(fake_slack.carol, "/groq-cache", "clear")
        await fake_slack.wait_for(lambda: len(fake_slack.responses) == 2, what="the count")

    refused, cleared = fake_slack.responses
    assert "Only the bot's admins" in refused["text"]
    assert cleared["text"] == "Response cache cleared: 1 entry removed."
    assert refused["response_type"] == cleared["response_type"] == "ephemeral"


async def test_stream_falls_back_to_post_and_update(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: SettingsFactory
) -> None:
    settings = slack_settings(metrics_port=0)
    fake_slack.fail("chat.startStream", "unknown_method", times=None)
    fake_slack.inject_429("chat.update", retry_after=1)
    fake_groq.token_delay_s = 0.03
    async with running_adapter(settings) as (_, runtime):
        sent = await fake_slack.mention(fake_slack.alice, "no streams here")
        reply = await final_reply(fake_slack, sent, answer(settings, "no streams here"))

    assert reply.streaming is None and len(fake_slack.bot_replies(sent.channel, sent.ts)) == 1
    assert fake_slack.injected_429 == 1  # honoured: the reply still completed
    assert fake_slack.calls_to("chat.postMessage")
    # The 429 slack-sdk slept through is counted, by method.
    slack = {"platform": "slack"}
    limited = sample_of(runtime.metrics, "groqbot_platform_rate_limited_total", **slack)
    assert limited == 1
    assert sample_of(runtime.metrics, "groqbot_platform_rate_limited_total", route="chat.update")
    assert sample_of(runtime.metrics, "groqbot_reply_edits_count", **slack) == 1
    # One edit per update that went through (the 429 was the SDK's, not the sink's).
    edits = [c for c in fake_slack.calls_to("chat.update") if c.status == 200]
    assert sample_of(runtime.metrics, "groqbot_reply_edits_sum", **slack) == len(edits) >= 1


async def test_auth_test_is_called_once_however_many_mentions_arrive_at_once(
    fake_slack: FakeSlack, slack_settings: SettingsFactory
) -> None:
    """Issue 13: Bolt is handed the start-up auth.test answer; before, each event called
    auth.test until one call had returned (17-41 calls per 20 mentions)."""
    settings = slack_settings()
    channels = [f"C0AUTH{i:04d}" for i in range(10)]  # posting is limited per channel
    fake_slack.known_channels.update(channels)
    users = [fake_slack.add_user(f"auth{i}") for i in range(10)]  # one user each: no quota
    async with running_adapter(settings):
        sent = await asyncio.gather(
            *(
                fake_slack.mention(u, f"hi {i}", channel=c)
                for i, (u, c) in enumerate(zip(users, channels, strict=True))
            )
        )
        for i, delivery in enumerate(sent):
            await final_reply(fake_slack, delivery, answer(settings, f"hi {i}"))
    assert len(fake_slack.calls_to("auth.test")) == 1


async def test_shutdown_is_bounded_when_slack_never_answers_the_close_frame(
    fake_slack: FakeSlack, slack_settings: SettingsFactory
) -> None:
    """Issue 13: aiohttp waits 10 s for the peer's close frame; the adapter waits 1 s."""
    fake_slack.answer_close = False
    loop = asyncio.get_running_loop()
    async with running_adapter(slack_settings()) as (adapter, _):
        assert adapter.connected
        started = loop.time()
    assert loop.time() - started < 3.0
