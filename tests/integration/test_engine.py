"""Engine + SqliteStore + real httpx client against the fake Groq server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.discord.config import DiscordSettings
from adapters.slack.config import SlackSettings
from bot.app import Runtime, open_runtime
from bot.settings import Settings
from bot.types import ConversationKey, Incoming, Platform, PlatformHelp, TurnStatus, UserRef
from tests.fakes.groq_server import FakeGroq
from tests.fakes.sink import RecordingSink

ALICE = UserRef(Platform("terminal"), "alice", "Alice")
BOB = UserRef(Platform("terminal"), "bob", "Bob")
DM_ALICE = ConversationKey(Platform("terminal"), dm_user="alice")
DM_BOB = ConversationKey(Platform("terminal"), dm_user="bob")


@asynccontextmanager
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(settings) as rt:
        yield rt


async def ask(
    rt: Runtime, text: str, *, key: ConversationKey = DM_ALICE, user: UserRef = ALICE
) -> RecordingSink:
    sink = RecordingSink()
    await asyncio.wait_for(rt.engine.handle(Incoming(key, user, text, "m"), sink), 15)
    return sink


def sent_messages(fake: FakeGroq, index: int = -1) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = fake.requests[index]["body"]["messages"]
    return messages


async def test_streams_in_order_remembers_history_across_restart_and_reset(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory()
    async with runtime(settings) as rt:
        first = await ask(rt, "hello one")
        assert first.status_ is TurnStatus.COMPLETE
        updates = first.ops("update")
        assert len(updates) >= 2, "the answer must stream in several updates"
        assert all(b.startswith(a) for a, b in itertools.pairwise(updates))
        assert first.final == updates[-1].strip()
        assert "turns=1" in first.final and "last=hello one" in first.final
        await ask(rt, "hello two")
        third = await ask(rt, "hello three")
        assert "turns=3" in (third.final or "")
        contents = [m["content"] for m in sent_messages(fake_groq)]
        assert contents[0] == settings.system_prompt
        assert contents[1] == "hello one" and contents[3] == "hello two"
        assert contents[-1] == "hello three"
        assert all(set(m) == {"role", "content"} for m in sent_messages(fake_groq))

    async with runtime(settings) as rt:  # a restart on the same database file
        fourth = await ask(rt, "hello four")
        assert "turns=4" in (fourth.final or "")
        reply = await rt.engine.reset(DM_ALICE, ALICE)
        assert "forgot 8" in reply.text
        fifth = await ask(rt, "after reset")
        assert "turns=1" in (fifth.final or "")


async def test_two_conversations_stream_concurrently(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.token_delay_s = 0.02
    fake_groq.reply_words = 15
    async with runtime(settings_factory()) as rt:
        loop = asyncio.get_running_loop()
        start = loop.time()
        a, b = await asyncio.gather(
            ask(rt, "from alice"), ask(rt, "from bob", key=DM_BOB, user=BOB)
        )
        both = loop.time() - start
        start = loop.time()
        await ask(rt, "alone")
        single = loop.time() - start
    assert a.status_ is b.status_ is TurnStatus.COMPLETE
    assert "last=from alice" in (a.final or "") and "last=from bob" in (b.final or "")
    assert both < single * 1.7, (both, single)


async def test_a_mention_queued_behind_max_concurrent_requests_shows_it_at_once(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """Issue 13: with every MAX_CONCURRENT_REQUESTS slot busy, a second conversation's
    turn shows a visible state (its sink's status, "queued…") before its turn starts
    (before its request reaches the model), then is answered normally."""
    fake_groq.token_delay_s = 0.05
    fake_groq.reply_words = 20  # about a second of streaming holds the only slot
    async with runtime(settings_factory(max_concurrent_requests=1)) as rt:
        first = asyncio.ensure_future(ask(rt, "from alice"))
        while not fake_groq.chat_requests:  # noqa: ASYNC110 - polling the fake's record
            await asyncio.sleep(0.01)
        queued = RecordingSink()
        second = asyncio.ensure_future(
            rt.engine.handle(Incoming(DM_BOB, BOB, "from bob", "m2"), queued)
        )
        while not queued.ops("status"):
            await asyncio.sleep(0.01)
            assert not second.done()
        assert "queued" in queued.ops("status")[0]
        assert len(fake_groq.chat_requests) == 1  # bob's turn has not started yet
        assert not queued.ops("update")
        await asyncio.wait_for(asyncio.gather(first, second), 15)
    assert "last=from bob" in (queued.final or "")
    assert [kind for kind, _ in queued.events][:2] == ["start", "status"]


async def test_messages_in_one_conversation_are_answered_in_order(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.token_delay_s = 0.01
    async with runtime(settings_factory()) as rt:
        sinks = await asyncio.gather(*(ask(rt, f"msg {i}") for i in range(4)))
    for i, sink in enumerate(sinks):
        assert f"turns={i + 1}" in (sink.final or ""), sink.final
        assert f"last=msg {i}" in (sink.final or "")


@pytest.mark.parametrize(
    ("fault", "expected", "requests"),
    [
        ("401", "API key", 1),
        ("404", "/model", 1),
        ("model_decommissioned", "/model", 1),
        ("context_length_exceeded", None, 2),  # trimmed and sent once more
        ("413", "tokens-per-minute", 1),
        ("500", None, 2),
        ("503", None, 2),
        ("429", None, 2),
    ],
)
async def test_api_faults_end_in_clear_text_with_retries_only_where_they_belong(
    fake_groq: FakeGroq,
    settings_factory: Callable[..., Settings],
    fault: str,
    expected: str | None,
    requests: int,
) -> None:
    fake_groq.script(fault, times=1, retry_after=0.05) if fault == "429" else fake_groq.script(
        fault, times=1
    )
    # A small pinned RPM refills slowly (0.13 a second): the count is still there after
    # the retries' waits.
    limits = "openai/gpt-oss-120b=rpm:8"
    async with runtime(settings_factory(quota_model_limits=limits)) as rt:
        await rt.completions.models()
        before = len(fake_groq.requests)
        sink = await ask(rt, "hi")
        assert rt.quota is not None
        mirror = {d.dimension: d.used for d in rt.quota.account_status()[0].local}
    chat_requests = len(fake_groq.requests) - before
    assert chat_requests == requests
    # Every attempt the server counted counts (minus a moment's refill); a refusal for
    # the limits (413, 429) is not in the server's count, so not in the mirror's.
    counted = requests - (fault in ("413", "429"))
    assert mirror["rpm"] == pytest.approx(counted, abs=0.1)
    if expected is None:  # retried, then answered; the retry was visible
        assert sink.status_ is TurnStatus.COMPLETE
        assert any("retrying" in s for s in sink.ops("status"))
    else:
        assert sink.failed is not None and expected in sink.failed
        assert "Traceback" not in sink.failed


async def test_an_overflow_that_persists_after_trimming_says_what_to_do(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.script("context_length_exceeded", times=2)
    async with runtime(settings_factory()) as rt:
        await rt.completions.models()
        before = len(fake_groq.requests)
        sink = await ask(rt, "hi")
        assert len(fake_groq.requests) - before == 2  # once trimmed, never in a loop
        assert sink.failed is not None and "/reset" in sink.failed
        again = await ask(rt, "hello again")  # the conversation is not stuck
    assert again.status_ is TurnStatus.COMPLETE
    assert "turns=1 last=hello again" in (again.final or "")  # the refused turn was dropped


async def test_mid_stream_drop_keeps_partial_reply_marked_interrupted(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.reply_words = 30
    async with runtime(settings_factory()) as rt:
        await rt.completions.models()
        before = len(fake_groq.requests)
        fake_groq.script("drop", times=1, after_tokens=5)
        sink = await ask(rt, "tell me a story")
        assert len(fake_groq.requests) - before == 1, "no retry after the first token"
        assert sink.status_ is TurnStatus.INTERRUPTED
        partial = sink.ops("update")[-1]
        assert partial and (sink.final or "").startswith(partial.strip())
        assert "cut off" in (sink.final or "")
        follow = await ask(rt, "go on")
        history = sent_messages(fake_groq)
        assert history[-2]["role"] == "assistant"
        assert history[-2]["content"] == partial.strip()
        assert "turns=2" in (follow.final or "")


async def test_trimming_sends_only_newest_history_that_fits(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(context_token_budget=300, quota_enabled=False)
    async with runtime(settings) as rt:
        for i in range(12):
            await ask(rt, f"message number {i} " + "padding " * 40)
        sent = sent_messages(fake_groq)
    assert sent[0]["role"] == "system"
    users = [m["content"] for m in sent if m["role"] == "user"]
    assert users[-1].startswith("message number 11")
    assert len(users) < 12
    numbers = [int(u.split()[2]) for u in users]
    assert numbers == sorted(numbers) and numbers[-1] == 11
    assert numbers == list(range(numbers[0], 12)), "only a contiguous newest tail is kept"


async def test_bad_input_is_rejected_clearly_without_calling_the_api(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(settings_factory(max_input_chars=100)) as rt:
        empty = await ask(rt, "   ")
        huge = await ask(rt, "x" * 101)
    assert empty.failed is not None and "empty" in empty.failed
    assert huge.failed is not None and "101" in huge.failed and "100" in huge.failed
    assert not [r for r in fake_groq.requests if r["path"].endswith("/chat/completions")]


async def test_unknown_model_and_model_commands(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(settings_factory()) as rt:
        bad = await rt.engine.set_model(ALICE, "gpt-oss-120")
        assert "not an available model" in bad.text and "openai/gpt-oss-120b" in bad.text
        ok = await rt.engine.set_model(ALICE, "openai/gpt-oss-20b")
        assert "openai/gpt-oss-20b" in ok.text
        listing = await rt.engine.models_text(ALICE, DM_ALICE)
        assert "▶ `openai/gpt-oss-20b`" in listing.text
        await ask(rt, "which model?")
        assert fake_groq.requests[-1]["body"]["model"] == "openai/gpt-oss-20b"
        await rt.engine.set_system(ALICE, "You are a pirate.")
        await ask(rt, "ahoy")
        assert sent_messages(fake_groq)[0]["content"] == "You are a pirate."


async def test_reasoning_is_hidden_by_default_and_never_sent_back(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(settings_factory(default_model="qwen/qwen3-32b")) as rt:
        fake_groq.force_raw_think = True
        first = await ask(rt, "think hard")
        await ask(rt, "again")
    assert first.final is not None and "<think>" not in first.final
    assert all("<think>" not in m["content"] for m in sent_messages(fake_groq))


async def test_help_comes_from_each_platforms_settings(
    settings_factory: Callable[..., Settings],
) -> None:
    discord, slack = Platform("discord"), Platform("slack")
    async with runtime(settings_factory()) as rt:
        engine = rt.engine
        unknown = engine.help(Platform("matrix")).text  # never a KeyError
        engine.describe_platform(discord, DiscordSettings(_env_file=None).help())  # type: ignore[call-arg]
        threads = engine.help(discord).text
        replying = DiscordSettings(_env_file=None, reply_mode="reply")  # type: ignore[call-arg]
        engine.describe_platform(discord, replying.help())
        replies = engine.help(discord).text
        engine.describe_platform(slack, SlackSettings(_env_file=None).help())  # type: ignore[call-arg]
        slack_help = engine.help(slack).text
        terminal = Platform("terminal")
        engine.describe_platform(terminal, PlatformHelp("Type.", has_channels=False))
        terminal_help = engine.help(terminal).text
    assert "`/channel show`" in threads and "`/groq-channel show`" in slack_help
    assert "channel" not in terminal_help  # nowhere to set one
    assert "`/model <id>`" in unknown
    assert "answer in a thread" in threads and "reply to my answer" not in threads
    assert "reply to my answer to continue" in replies and "thread" not in replies
    assert "answer in a thread" in slack_help and "`/groq-model <id>`" in slack_help


async def test_a_lone_surrogate_in_the_models_answer_is_stored_replaced(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    # JSON may carry "\ud83d" alone; SQLite cannot store it as text.
    fake_groq.reply_text = "half an emoji: \ud83d, then more"
    async with runtime(settings_factory()) as rt:
        first = await ask(rt, "send me something odd")
        again = await ask(rt, "and again")
    assert first.status_ is again.status_ is TurnStatus.COMPLETE
    assert sent_messages(fake_groq)[-2]["content"] == "half an emoji: \ufffd, then more"


async def test_a_user_already_told_about_a_limit_still_gets_an_answer(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(settings_factory(quota_user_rpm=1, quota_max_wait_s=0)) as rt:
        answered = await ask(rt, "one")
        told = await ask(rt, "two")
        again = await ask(rt, "three")
    assert answered.status_ is TurnStatus.COMPLETE
    assert told.failed is not None and "try again in" in told.failed  # the full text
    # Not silence: a short reminder, since the full explanation was given once.
    assert again.failed is not None and again.failed.startswith("Still at your limit")
    assert "try again in" in again.failed and again.failed != told.failed


async def test_a_request_that_failed_before_any_token_costs_the_user_no_tokens(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    # Each request reserves its prompt plus 1,024 output tokens: two would not fit in
    # 1,500 tokens a minute, unless the failed one is given back.
    fake_groq.script("500", times=4)  # the first request and its 3 retries
    async with runtime(settings_factory(quota_user_tpm=1_500)) as rt:
        failed = await ask(rt, "one")
        answered = await ask(rt, "two")
    assert failed.failed is not None and "trouble" in failed.failed
    assert answered.status_ is TurnStatus.COMPLETE, answered.failed
