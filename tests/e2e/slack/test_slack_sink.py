"""Slack's reply sink (``EditingSink`` over a streaming ``SlackSurface``) driven directly
against the fake Slack (real slack-sdk client): append-only deltas, mention hold-back,
message cuts, and every fallback path."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from adapters.slack import surface as surface_module
from adapters.slack.config import SlackSettings
from adapters.slack.format import ZWSP, neutralise_markdown, to_mrkdwn
from adapters.slack.surface import ReplyTarget, SlackSurface
from bot.ports import AppendableSurface, SystemClock
from bot.streaming import EditingSink, EditPacer
from bot.types import TurnStatus
from tests.e2e.slack.conftest import web_client
from tests.fakes.slack_server import FakeMessage, FakeSlack

pytestmark = pytest.mark.e2e


@pytest.fixture
def make_sink(
    fake_slack: FakeSlack,
) -> Callable[..., tuple[EditingSink, str]]:
    """A sink replying in a fresh thread of #general (or an assistant DM thread)."""
    settings = SlackSettings(_env_file=None, edit_interval_s=0.2)  # type: ignore[call-arg]
    clock = SystemClock()
    pacer = EditPacer(clock=clock)

    def build(*, assistant: bool = False) -> tuple[EditingSink, str]:
        user = fake_slack.alice
        channel = fake_slack.dm_channel(user) if assistant else fake_slack.general
        root = fake_slack.store(FakeMessage(channel, fake_slack.ts(), user.id, "question"))
        target = ReplyTarget(fake_slack.team_id, channel, root.ts, user.id, assistant)
        surface = SlackSurface(web_client(fake_slack), target, settings=settings, pacer=pacer)
        return EditingSink(surface, pacer=pacer, clock=clock), root.ts

    return build


@pytest.fixture
def short_streams(monkeypatch: pytest.MonkeyPatch) -> int:
    """Streamed messages of 200 characters, so a short reply is cut into several."""
    monkeypatch.setattr(surface_module, "STREAM_MAX_CHARS", 200)
    return 200


def replies(fake: FakeSlack, channel: str, thread_ts: str) -> list[FakeMessage]:
    return fake.bot_replies(channel, thread_ts)


async def test_deltas_hold_back_unfinished_mentions(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]]
) -> None:
    sink, thread = make_sink()

    def shows(text: str) -> Callable[[], bool]:
        return lambda: [m.text for m in replies(fake_slack, fake_slack.general, thread)] == [text]

    await sink.start()
    await sink.update("Hi <")
    await fake_slack.wait_for(shows("Hi "), what="the lone '<' held back")
    await sink.update("Hi <@U0ALICE000> and @he")
    await fake_slack.wait_for(shows(neutralise_markdown("Hi <@U0ALICE000> and ")), what="@he")
    final = "Hi <@U0ALICE000> and @here ok x"
    await sink.finish(final, TurnStatus.COMPLETE)

    [message] = replies(fake_slack, fake_slack.general, thread)
    assert message.text == neutralise_markdown(final) and message.streaming == "completed"
    assert all(message.text.startswith(seen) for seen in message.history)
    assert message.history[:2] == ["Hi ", neutralise_markdown("Hi <@U0ALICE000> and ")]
    assert "<@" not in message.text and "@here" not in message.text


async def test_long_reply_is_cut_into_messages_with_fences_reopened(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]], short_streams: int
) -> None:
    sink, thread = make_sink()
    prose = " ".join(f"word{i}" for i in range(30))
    code = "\n".join(f"print({i})" for i in range(30))
    final = f"{prose}\n\n```python\n{code}\n```\nbye"
    await sink.start()
    for end in range(20, len(final), 40):
        await sink.update(final[:end])
    await sink.finish(final, TurnStatus.COMPLETE)

    messages = replies(fake_slack, fake_slack.general, thread)
    assert len(messages) >= 3 and all(m.streaming == "completed" for m in messages)
    assert all(len(m.text) <= short_streams for m in messages)
    inside = [m.text for m in messages if "print(" in m.text]
    assert all(t.count("```") % 2 == 0 for t in inside)  # every part closes its fence
    assert any(t.startswith("```python\n") for t in inside[1:])  # and the next reopens it
    shown = " ".join(m.text for m in messages)
    assert all(f"word{i}" in shown and f"print({i})" in shown for i in range(30))


async def test_cuts_while_streaming_keep_what_each_message_streamed(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]], short_streams: int
) -> None:
    sink, thread = make_sink()
    final = " ".join(f"word{i} <@U0ALICE000>" if i % 9 == 0 else f"word{i}" for i in range(60))
    await sink.start()
    for end in range(10, len(final), 10):
        await sink.update(final[:end])
        await asyncio.sleep(0.04)  # ~2 s of streaming: a few appends per message
    await sink.finish(final, TurnStatus.COMPLETE)

    messages = replies(fake_slack, fake_slack.general, thread)
    assert len(messages) >= 3 and all(m.streaming == "completed" for m in messages)
    assert fake_slack.calls_to("chat.appendStream")
    assert not fake_slack.calls_to("chat.update") and not fake_slack.calls_to("chat.postMessage")
    for message in messages:  # the limit is the model's text; defusing adds a ZWSP each
        assert len(message.text.replace(ZWSP, "")) <= short_streams and "<@" not in message.text
        assert all(b.startswith(a) for a, b in itertools.pairwise(message.history))
    # A cut keeps what was streamed, which may end inside a word (the final text can
    # come at once now, right after such an append): every character, in order.
    shown = "".join(m.text for m in messages).replace(ZWSP, "")
    assert "".join(shown.split()) == "".join(final.split())


def test_slack_surface_appends_only_in_threads_with_native_streaming(
    fake_slack: FakeSlack,
) -> None:
    pacer = EditPacer(clock=SystemClock())
    client = web_client(fake_slack)
    in_thread = ReplyTarget(fake_slack.team_id, fake_slack.general, "1.000100", "U1")
    top_level = ReplyTarget(fake_slack.team_id, fake_slack.general, None, "U1")
    on = SlackSettings(_env_file=None)  # type: ignore[call-arg]
    off = SlackSettings(_env_file=None, native_streaming=False)  # type: ignore[call-arg]
    surface = SlackSurface(client, in_thread, settings=on, pacer=pacer)
    assert isinstance(surface, AppendableSurface) and surface.append_limits is not None
    for target, settings in [(top_level, on), (in_thread, off)]:
        assert SlackSurface(client, target, settings=settings, pacer=pacer).append_limits is None


async def test_failed_start_falls_back_to_post_and_update(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]]
) -> None:
    fake_slack.fail("chat.startStream", "not_allowed")
    sink, thread = make_sink()
    await sink.start()
    await sink.update("**Partial**")
    await fake_slack.wait_for(lambda: fake_slack.calls_to("chat.postMessage"), what="the post")
    await sink.finish("**Partial** and done", TurnStatus.COMPLETE)

    [message] = replies(fake_slack, fake_slack.general, thread)
    assert message.text == to_mrkdwn("**Partial** and done") == "*Partial* and done"
    assert message.streaming is None and fake_slack.calls_to("chat.update")


async def test_broken_stream_is_taken_over_by_editing(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]]
) -> None:
    sink, thread = make_sink()
    await sink.start()
    await sink.update("first part ")
    await sink.update("first part more")
    await fake_slack.wait_for(lambda: fake_slack.calls_to("chat.startStream"), what="start")
    fake_slack.fail("chat.appendStream", "internal_error")
    await sink.update("first part more and more")
    await fake_slack.wait_for(lambda: fake_slack.calls_to("chat.appendStream"), what="append")
    await sink.finish("first part more and more, the end", TurnStatus.COMPLETE)

    [message] = replies(fake_slack, fake_slack.general, thread)
    assert message.text == "first part more and more, the end"
    assert message.streaming == "completed"  # stopped, then edited with chat.update
    assert fake_slack.calls_to("chat.update") and not fake_slack.calls_to("chat.postMessage")


async def test_rewritten_text_switches_to_editing_the_same_message(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]]
) -> None:
    sink, thread = make_sink()
    await sink.update("draft answer")
    await fake_slack.wait_for(lambda: fake_slack.calls_to("chat.startStream"), what="start")
    await sink.finish("a different answer", TurnStatus.COMPLETE)

    [message] = replies(fake_slack, fake_slack.general, thread)
    assert message.text == "a different answer"


async def test_status_before_text_is_a_placeholder_and_the_answer_still_streams(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]]
) -> None:
    """Outside assistant threads a status before any text (a queued mention) is posted
    as a message of its own; the answer streams in a new message and the placeholder is
    deleted: no chat.update, so the scarce update budget is not spent."""
    sink, thread = make_sink()
    await sink.start()
    await sink.status("queued…")
    await fake_slack.wait_for(lambda: fake_slack.calls_to("chat.postMessage"), what="status")
    [placeholder] = replies(fake_slack, fake_slack.general, thread)
    assert "queued" in placeholder.text
    await sink.update("answer")
    await sink.finish("answer", TurnStatus.COMPLETE)

    [message] = replies(fake_slack, fake_slack.general, thread)
    assert message.text == "answer" and message.streaming == "completed"
    assert fake_slack.calls_to("chat.startStream") and fake_slack.calls_to("chat.delete")
    assert not fake_slack.calls_to("chat.update")


async def test_assistant_thread_status_then_stream_then_failure_note(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]]
) -> None:
    sink, thread = make_sink(assistant=True)
    channel = fake_slack.dm_channel(fake_slack.alice)
    await sink.start()
    await sink.status("waiting for capacity, about 3 s")
    await sink.update("half an answer")
    await sink.fail("The model API failed; please try again.")

    statuses = [s for c, t, s in fake_slack.statuses if (c, t) == (channel, thread)]
    # Statuses coalesce like edits: the newest one is shown (here before any await).
    assert statuses == ["waiting for capacity, about 3 s"]
    [message] = replies(fake_slack, channel, thread)
    assert message.text == "half an answer\n\n⚠️ The model API failed; please try again."
    assert message.streaming == "completed"


async def test_nothing_to_say_sends_nothing(
    fake_slack: FakeSlack, make_sink: Callable[..., tuple[EditingSink, str]]
) -> None:
    sink, _ = make_sink()
    await sink.start()
    await sink.finish("", TurnStatus.FAILED)
    assert fake_slack.calls == []


async def test_stop_has_its_own_budget_so_it_never_queues_behind_appends(
    fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Slack limits each method separately: with every appendStream token taken by
    # other replies (the next in 10 s), a finished reply still stops at once.
    budgets = dict(surface_module.METHOD_BUDGETS)
    budgets["chat.appendStream"] = surface_module.MethodBudget(1, 10.0, "workspace", "test")
    monkeypatch.setattr(surface_module, "METHOD_BUDGETS", budgets)
    clock = SystemClock()
    pacer = EditPacer(clock=clock)
    await pacer.acquire(f"slack:{fake_slack.team_id}:chat.appendStream", 0.1, 1)
    root = fake_slack.store(
        FakeMessage(fake_slack.general, fake_slack.ts(), fake_slack.alice.id, "question")
    )
    target = ReplyTarget(fake_slack.team_id, fake_slack.general, root.ts, fake_slack.alice.id)
    settings = SlackSettings(_env_file=None, edit_interval_s=0.2)  # type: ignore[call-arg]
    surface = SlackSurface(web_client(fake_slack), target, settings=settings, pacer=pacer)
    sink = EditingSink(surface, pacer=pacer, clock=clock)
    await sink.start()
    await sink.update("Hello")
    await fake_slack.wait_for(lambda: replies(fake_slack, fake_slack.general, root.ts))
    started = clock.now()
    await sink.finish("Hello there", TurnStatus.COMPLETE)
    [message] = replies(fake_slack, fake_slack.general, root.ts)
    assert message.text == "Hello there" and message.streaming == "completed"
    assert clock.now() - started < 2.0
    assert [c.method for c in fake_slack.calls if c.method.startswith("chat.")] == [
        "chat.startStream",
        "chat.stopStream",
    ]
