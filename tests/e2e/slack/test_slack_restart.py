"""Our SlackAdapter finishing an answer that a previous process left streaming: the
answer is cut mid-stream (its task cancelled with no grace, as a crash leaves it), then
a new runtime on the same database has the adapter end its message with the note,
with ``chat.update`` (after ``chat.stopStream`` where Slack still streams it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from adapters.slack import SlackAdapter
from adapters.slack.config import PLATFORM
from bot.app import Runtime, open_runtime
from bot.durable import RESTART_NOTE, finalize_unfinished
from bot.types import UnfinishedReply
from tests.e2e.slack.conftest import SlackConfig
from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_server import FakeSlack

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def bot_on(
    settings: SlackConfig, *, crash: bool = False
) -> AsyncIterator[tuple[SlackAdapter, Runtime]]:
    """A runtime and a started adapter. With ``crash``, answers still running when it
    closes are cut at once and no shutdown handling runs: what they leave behind is what
    a crash leaves."""
    async with open_runtime(settings.core) as runtime:
        if crash:
            runtime.engine._cut_short = _nothing  # type: ignore[method-assign]
        grace = 0.0 if crash else 10.0
        adapter = SlackAdapter(runtime.context(settings.platform), shutdown_grace_s=grace)
        await adapter.start()
        try:
            yield adapter, runtime
        finally:
            await adapter.aclose()
            if crash:  # nothing of a dead process goes on: its replies' flushers neither
                flushers = [t for t in asyncio.all_tasks() if t.get_name() == "EditingSink"]
                for task in flushers:
                    task.cancel()
                await asyncio.gather(*flushers, return_exceptions=True)


async def _nothing(*args: object) -> None:
    return None


async def streaming(runtime: Runtime, chars: int) -> UnfinishedReply:
    """Wait until one answer is stored as streaming with ``chars`` of text and its ts."""
    for _ in range(200):
        found = await runtime.store.streaming_replies([PLATFORM])
        if found and len(found[0].content) >= chars and found[0].ref.message_ids:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no answer stored as streaming")


@pytest.mark.parametrize("native", [True, False], ids=["native-stream", "chat-update"])
async def test_an_answer_cut_mid_stream_ends_with_a_note_after_the_restart(
    fake_slack: FakeSlack,
    fake_groq: FakeGroq,
    slack_settings: Callable[..., SlackConfig],
    native: bool,
) -> None:
    settings = slack_settings(slack_native_streaming=native, reply_checkpoint_s=0.3)
    fake_groq.token_delay_s, fake_groq.reply_words = 0.03, 1000
    async with bot_on(settings, crash=True) as (_, runtime):
        sent = await fake_slack.mention(fake_slack.alice, "tell me a long story")
        await streaming(runtime, 100)
    [left] = fake_slack.bot_replies(sent.channel, sent.ts)
    assert RESTART_NOTE not in left.text
    assert (left.streaming == "in_progress") is native  # Slack still shows it streaming

    fake_groq.token_delay_s, fake_groq.reply_words = 0.0, 3
    async with bot_on(settings) as (adapter, runtime):
        [cut] = await runtime.store.streaming_replies([PLATFORM])
        assert cut.ref.place == f"{sent.channel}/{sent.ts}" and cut.ref.message_ids == (left.ts,)
        await finalize_unfinished(runtime.store, [cut], {adapter.name: adapter})

        [shown] = fake_slack.bot_replies(sent.channel, sent.ts)
        assert shown.ts == left.ts and shown.streaming != "in_progress"
        assert shown.text == f"{cut.content.strip()}\n\n{RESTART_NOTE}"
        assert await runtime.store.streaming_replies([PLATFORM]) == []

        # The cut answer is the thread's history now.
        await fake_slack.say(fake_slack.alice, "go on", channel=sent.channel, thread_ts=sent.ts)
        await fake_slack.wait_for(
            lambda: any(
                "turns=2 last=go on" in m.text
                for m in fake_slack.bot_replies(sent.channel, sent.ts)
            ),
            10.0,
            "the follow-up's answer",
        )
    history = fake_groq.chat_requests[-1]["body"]["messages"]
    assert history[-2] == {"role": "assistant", "content": cut.content.strip()}
