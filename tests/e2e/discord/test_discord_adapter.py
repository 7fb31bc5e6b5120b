"""The Discord adapter end to end: real discord.py → fake Discord, real engine → fake Groq.

Nothing is mocked: the adapter is started from settings exactly as ``python -m bot``
starts it, with ``DISCORD_API_BASE`` / ``DISCORD_GATEWAY_URL`` pointing at the fake.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.discord import DiscordAdapter, DiscordSettings
from adapters.discord.client import THREADS_PAUSED
from adapters.discord.commands import UNREADABLE
from bot.adapter import FatalHandler
from bot.app import Runtime, open_runtime
from bot.errors import ConfigError
from bot.ports import Clock, SystemClock
from bot.response_cache import CACHED_NOTE
from tests.configured import Configured
from tests.e2e.discord.conftest import Build
from tests.fakes.discord_server import (
    DEAFENING,
    MALFORMED,
    FakeDiscord,
    FakeFile,
    FakeMessage,
    Files,
)
from tests.fakes.groq_server import FILLER, FakeGroq

pytestmark = pytest.mark.e2e

MODEL = "openai/gpt-oss-120b"
# One user asking 20 questions at once would (rightly) meet the per-user quota first.
GENEROUS_USER_QUOTA = {"quota_user_rpm": 1000, "quota_user_max_in_flight": 20}


def expected(turns: int, last: str, *, model: str = MODEL, words: int = 0) -> str:
    """The fake Groq's answer: it reveals the user turns it received and the last text."""
    filler = [FILLER[i % len(FILLER)] for i in range(words)]
    return " ".join([f"turns={turns} last={last} model={model}", *filler])


@asynccontextmanager
async def running_bot(
    settings: Configured[DiscordSettings],
    *,
    clock: Clock | None = None,
    on_fatal: FatalHandler | None = None,
    **options: Any,
) -> AsyncIterator[tuple[DiscordAdapter, Runtime]]:
    """The adapter on its own runtime; ``options`` go to ``DiscordAdapter``."""
    async with open_runtime(settings.core, clock=clock) as runtime:
        adapter = DiscordAdapter(
            runtime.context(settings.platform, on_fatal=on_fatal),
            guild_ready_timeout=0.05,
            shutdown_grace_s=2.0,
            **options,
        )
        await adapter.start()
        try:
            yield adapter, runtime
        finally:
            await adapter.aclose()


async def final_answer(
    fake: FakeDiscord, channel_id: str, text: str, *, within: float = 10.0
) -> FakeMessage:
    """Wait for a bot message in the channel whose content became exactly ``text``."""

    def found() -> FakeMessage | None:
        return next((m for m in fake.bot_messages(channel_id) if m.content == text), None)

    await fake.wait_for(lambda: found() is not None, within=within)
    message = found()
    assert message is not None
    return message


def no_pings(fake: FakeDiscord) -> bool:
    """Every POST/PATCH the bot sent for a message carried ``allowed_mentions.parse == []``."""
    bodies = [b for m in fake.bot_messages() for b in m.bodies]
    return bool(bodies) and all(b.get("allowed_mentions") == {"parse": []} for b in bodies)


async def test_mention_opens_thread_and_streams_the_answer(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    # About 0.4 s of streaming: a post and a few edits 0.2 s apart, inside the 5-call budget.
    fake_groq.reply_words, fake_groq.token_delay_s = 30, 0.015
    async with running_bot(build()):
        question = await fake_discord.send_message("hello there", mention=True)
        answer = await final_answer(fake_discord, question.id, expected(1, "hello there", words=30))
    thread = fake_discord.threads[question.id]
    assert thread["parent_id"] == fake_discord.channel_id and thread["name"] == "hello there"
    assert len(answer.history) >= 2, "the answer must stream as a post plus edits"
    assert all(len(c) <= 2000 for c in answer.history)
    assert fake_discord.calls_to("POST", rf"^/channels/{question.id}/typing$")
    assert fake_discord.bot_messages(fake_discord.channel_id) == []  # all in the thread
    assert no_pings(fake_discord) and fake_discord.count_429 == 0


async def test_follow_up_in_thread_without_mention_carries_history(
    fake_discord: FakeDiscord, build: Build
) -> None:
    async with running_bot(build()):
        question = await fake_discord.send_message("first question", mention=True)
        await final_answer(fake_discord, question.id, expected(1, "first question"))
        await fake_discord.send_message("second question", channel_id=question.id)
        await final_answer(fake_discord, question.id, expected(2, "second question"))
        # A plain message in the channel (no mention) is not for the bot.
        await fake_discord.send_message("just chatting")
        await fake_discord.send_message("third", mention=True, channel_id=question.id)
        await final_answer(fake_discord, question.id, expected(3, "third"))
    assert fake_discord.bot_messages(fake_discord.channel_id) == []


async def test_reply_mode_continues_reply_chains_even_after_restart(
    fake_discord: FakeDiscord, build: Build
) -> None:
    settings = build(discord_reply_mode="reply")
    channel = fake_discord.channel_id
    async with running_bot(settings):
        question = await fake_discord.send_message("one", mention=True)
        first = await final_answer(fake_discord, channel, expected(1, "one"))
        assert str(first.bodies[0]["message_reference"]["message_id"]) == question.id
        follow = await fake_discord.send_message("two", reply_to=first.id)  # no mention
        second = await final_answer(fake_discord, channel, expected(2, "two"))
    assert not fake_discord.threads
    # A new process knows nothing in memory: it walks the chain through the API.
    async with running_bot(settings):
        await fake_discord.send_message("three", reply_to=second.id)
        await final_answer(fake_discord, channel, expected(3, "three"))
        await fake_discord.send_message("fresh", mention=True)
        await final_answer(fake_discord, channel, expected(1, "fresh"))
    assert str(second.bodies[0]["message_reference"]["message_id"]) == follow.id


async def test_dm_is_remembered_after_restart_on_the_same_database(
    fake_discord: FakeDiscord, build: Build
) -> None:
    settings = build()
    dm = fake_discord.dm_channel_id(fake_discord.alice)
    async with running_bot(settings):
        await fake_discord.send_dm("my name is Ada")
        await final_answer(fake_discord, dm, expected(1, "my name is Ada"))
    async with running_bot(settings):
        await fake_discord.send_dm("what is my name?")
        await final_answer(fake_discord, dm, expected(2, "what is my name?"))
    assert fake_discord.gateway.identifies == 2


async def test_model_autocomplete_and_choice_change_the_next_request(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    async with running_bot(build()):
        assert {c["name"] for c in fake_discord.global_commands} == {
            "model", "models", "reset", "system", "usage", "help", "cache", "channel"
        }  # fmt: skip
        everything = await fake_discord.send_autocomplete("model", "name", "")
        llamas = await fake_discord.send_autocomplete("model", "name", "LLAMA")
        await fake_discord.wait_for(lambda: everything.answered and llamas.answered)
        chosen = await fake_discord.send_command("model", {"name": "qwen/qwen3-32b"})
        await fake_discord.wait_for(lambda: chosen.response_text is not None)
        question = await fake_discord.send_message("which model?", mention=True)
        await final_answer(
            fake_discord, question.id, expected(1, "which model?", model="qwen/qwen3-32b")
        )
    values = [c["value"] for c in everything.choices]
    assert sorted(values) == sorted(m.id for m in fake_groq.models)
    assert values[0] == MODEL and everything.choices[0]["name"].endswith("(current)")
    assert [c["value"] for c in llamas.choices] == ["llama-3.1-8b-instant"]
    assert chosen.ephemeral and "qwen/qwen3-32b" in (chosen.response_text or "")
    assert fake_groq.chat_requests[-1]["body"]["model"] == "qwen/qwen3-32b"


async def test_model_with_a_very_long_name_gets_a_cut_answer_not_an_empty_one(
    fake_discord: FakeDiscord, build: Build
) -> None:
    name = "x" * 3000
    async with running_bot(build()):
        chosen = await fake_discord.send_command("model", {"name": name})
        await fake_discord.wait_for(lambda: chosen.response_text is not None)
    text = chosen.response_text or ""
    assert len(text) <= 2000 and text.startswith("`xxxxxxxx")
    assert "is not an available model" in text and "more line" not in text
    assert chosen.ephemeral


async def test_reset_help_and_scoped_commands(fake_discord: FakeDiscord, build: Build) -> None:
    async with running_bot(build()):
        question = await fake_discord.send_message("remember me", mention=True)
        await final_answer(fake_discord, question.id, expected(1, "remember me"))
        outside = await fake_discord.send_command("reset")
        reset = await fake_discord.send_command("reset", channel_id=question.id)
        helped = await fake_discord.send_command("help", dm=True)
        await fake_discord.wait_for(lambda: all(i.answered for i in (outside, reset, helped)))
        await fake_discord.send_message("again", channel_id=question.id)
        await final_answer(fake_discord, question.id, expected(1, "again"))
    assert "no conversation here" in (outside.response_text or "")
    assert "forgot 2 message" in (reset.response_text or "")
    assert "/model" in (helped.response_text or "") and helped.ephemeral


async def test_a_cached_answer_streams_with_its_note_and_only_admins_clear_the_cache(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    fd = fake_discord
    async with running_bot(build(temperature=0.0, admin_ids=[fd.alice.id])):
        first = await fd.send_message("capital of France?", mention=True)
        await final_answer(fd, first.id, expected(1, "capital of France?"))
        again = await fd.send_message("capital of France?", mention=True, author=fd.bob)
        replayed = await final_answer(
            fd, again.id, f"{expected(1, 'capital of France?')}\n\n{CACHED_NOTE}"
        )
        assert len(fake_groq.chat_requests) == 1, "a hit never reaches the model"
        refused = await fd.send_command("cache", subcommand="clear", user=fd.bob)
        cleared = await fd.send_command("cache", subcommand="clear")
        await fd.wait_for(lambda: None not in (refused.response_text, cleared.response_text))
        third = await fd.send_message("capital of France?", mention=True, author=fd.carol)
        await final_answer(fd, third.id, expected(1, "capital of France?"))
    assert len(replayed.history) >= 2, "the cached answer arrives in several edits"
    assert "Only the bot's admins" in (refused.response_text or "") and refused.ephemeral
    assert cleared.response_text == "Response cache cleared: 1 entry removed."
    assert cleared.ephemeral
    assert len(fake_groq.chat_requests) == 2


async def test_guild_ids_publish_commands_to_those_servers_at_once(
    fake_discord: FakeDiscord, build: Build
) -> None:
    async with running_bot(build(discord_guild_ids=[fake_discord.guild_id])):
        helped = await fake_discord.send_command("help")
        await fake_discord.wait_for(lambda: helped.answered)
    assert fake_discord.global_commands == []
    assert len(fake_discord.guild_commands[fake_discord.guild_id]) == 8
    assert helped.payload["data"]["guild_id"] == fake_discord.guild_id
    assert "/reset" in (helped.response_text or "")


async def test_bots_blocked_people_and_disallowed_channels_get_no_answer(
    fake_discord: FakeDiscord, build: Build
) -> None:
    fd = fake_discord
    settings = build(
        discord_blocked_user_ids=[fd.bob.id],
        discord_blocked_role_ids=[fd.muted_role],  # carol has it
        discord_allowed_channel_ids=[fd.channel_id],
    )
    async with running_bot(settings):
        await fd.send_message("from a bot", mention=True, author=fd.other_bot)
        await fd.send_message("from bob", mention=True, author=fd.bob)
        await fd.send_message("from carol", mention=True, author=fd.carol)
        await fd.send_message("elsewhere", mention=True, channel_id=fd.other_channel_id)
        denied = await fd.send_command("usage", user=fd.bob)
        control = await fd.send_message("control", mention=True)
        await final_answer(fd, control.id, expected(1, "control"))
        await fd.wait_for(lambda: denied.answered)
    assert [m.content for m in fd.bot_messages()] == [expected(1, "control")]
    assert set(fd.threads) == {control.id}
    assert denied.response_text == "You can't use this bot here." and denied.ephemeral


async def test_model_output_never_pings(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    text = f"@everyone look <@{fake_discord.bob.id}> <@&{fake_discord.member_role}> @here"
    fake_groq.reply_text = text
    async with running_bot(build()):
        question = await fake_discord.send_message("ping them all", mention=True)
        await final_answer(fake_discord, question.id, text)
    assert no_pings(fake_discord)


async def test_answer_longer_than_2000_chars_continues_in_a_new_message(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    fake_groq.reply_words = 450
    full = expected(1, "tell me a lot", words=450)
    assert len(full) > 2600
    async with running_bot(build()):
        question = await fake_discord.send_message("tell me a lot", mention=True)

        def parts() -> list[str]:
            return [m.content for m in fake_discord.bot_messages(question.id)]

        await fake_discord.wait_for(lambda: " ".join(parts()).split() == full.split())
    assert len(parts()) == 2 and all(len(p) <= 2000 for p in parts())
    assert not [c for c in fake_discord.calls if c.status == 400]


async def test_gateway_drop_mid_answer_resumes_and_completes(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    # ~0.6 s of streaming at the default 1 s edit interval: both answers fit one thread's
    # 5-call budget, so nothing waits for the window.
    fake_groq.reply_words, fake_groq.token_delay_s = 20, 0.03
    async with running_bot(build(discord_edit_interval_s=1.0)):
        question = await fake_discord.send_message("long one", mention=True)
        await fake_discord.wait_for(lambda: bool(fake_discord.bot_messages(question.id)))
        await fake_discord.drop_gateway()
        dropped_at = time.monotonic()
        fake_groq.reply_words = 0  # the next answer is short: both fit one edit budget
        # Sent while the socket is down: delivered by the RESUME replay.
        await fake_discord.send_message("meanwhile", channel_id=question.id)
        first = await final_answer(fake_discord, question.id, expected(1, "long one", words=20))
        await final_answer(fake_discord, question.id, expected(2, "meanwhile"))
    edits = fake_discord.calls_to("PATCH", rf"/messages/{first.id}$")
    assert any(c.t > dropped_at for c in edits), "the answer kept streaming after the drop"
    assert fake_discord.gateway.resumes == 1 and fake_discord.gateway.identifies == 1


async def test_text_attachment_is_read_and_oversized_one_noted(
    fake_discord: FakeDiscord, build: Build
) -> None:
    files = [("notes.txt", "text/plain", b"the secret is 42"), ("big.log", "", b"x" * 600)]
    async with running_bot(build(discord_max_attachment_bytes=500)):
        question = await fake_discord.send_message("read this", mention=True, attachments=files)
        await fake_discord.wait_for(
            lambda: any("model=" in m.content for m in fake_discord.bot_messages(question.id))
        )
        (answer,) = fake_discord.bot_messages(question.id)
    assert answer.content.startswith("-# `big.log` was skipped: it is 600 bytes")
    assert "the secret is 42" in answer.content and "turns=1 last=read this" in answer.content


async def test_attachments_that_lie_break_or_live_elsewhere_are_noted_and_answered(
    fake_discord: FakeDiscord, build: Build
) -> None:
    """Only Discord's CDN (here: the configured stand-in) is fetched, the limit holds on
    the bytes received, and no failed download costs the user the answer."""
    huge = 20 * 1024 * 1024
    files: Files = [
        FakeFile("liar.txt", "text/plain", b"x" * huge, declared_size=100),
        FakeFile("gone.txt", "text/plain", b"never served", fault="drop"),
        FakeFile("far.txt", "text/plain", b"elsewhere", url="https://files.example.com/far.txt"),
        FakeFile("cat.png", "image/png", b"\x89PNG", url="http://127.0.0.1:9/cat.png"),
        ("notes.txt", "text/plain", b"the secret is 42"),
    ]
    async with running_bot(build(discord_max_attachment_bytes=200_000)):
        question = await fake_discord.send_message("read these", mention=True, attachments=files)
        await fake_discord.wait_for(
            lambda: any("model=" in m.content for m in fake_discord.bot_messages(question.id))
        )
        (answer,) = fake_discord.bot_messages(question.id)
    notes = [line for line in answer.content.splitlines() if line.startswith("-# ")]
    assert notes == [
        "-# `liar.txt` was skipped: it is larger than the limit of 195 KB.",
        "-# `gone.txt` was skipped: the download broke off.",
        "-# `far.txt` was skipped: it is not on Discord's CDN.",
        "-# `cat.png` was skipped: it is not on Discord's CDN.",
    ]
    assert "the secret is 42" in answer.content and "turns=1 last=read these" in answer.content
    liar = next(i for i, f in fake_discord.cdn.items() if f.filename == "liar.txt")
    assert fake_discord.cdn_served[liar] < huge // 2  # stopped reading, not read whole


async def test_a_download_that_hangs_is_given_up_and_the_message_answered(
    fake_discord: FakeDiscord, build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapters.discord.attachments.DOWNLOAD_TIMEOUT_S", 0.5)
    files: Files = [FakeFile("slow.txt", "text/plain", b"late", fault="stall")]
    async with running_bot(build()):
        question = await fake_discord.send_message("and this?", mention=True, attachments=files)
        text = (
            f"-# `slow.txt` was skipped: the download took over 0.5 s.\n{expected(1, 'and this?')}"
        )
        await final_answer(fake_discord, question.id, text)


async def test_image_for_a_text_only_model_gets_a_clear_note(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    image = [("cat.png", "image/png", b"\x89PNG fake")]
    async with running_bot(build()):
        question = await fake_discord.send_message("what is this?", mention=True, attachments=image)
        await fake_discord.wait_for(lambda: bool(fake_discord.bot_messages(question.id)))
        await fake_discord.wait_for(
            lambda: "can't read images" in fake_discord.bot_messages(question.id)[0].content
        )
    assert fake_groq.chat_requests == []  # refused before any API call


class SkewedClock(SystemClock):
    """The real clock, moved ahead on demand (to pass a cooldown of minutes at once)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def now(self) -> float:
        return super().now() + self.ahead


async def test_thread_cooldown_answers_in_the_channel_at_once_until_it_ends(
    fake_discord: FakeDiscord, build: Build
) -> None:
    """Six mentions in 1.5 s; Discord refuses the 4th thread for 272 s (scope shared).
    Users 4-6 are answered in the channel at once, with a note; no thread is tried
    again until the cooldown is over, then threads are back."""
    fd, clock = fake_discord, SkewedClock()
    fd.limit_threads(3, retry_after=272.0, lasts_s=1.0)
    channel = fd.channel_id
    async with running_bot(build(**GENEROUS_USER_QUOTA), clock=clock):
        questions = []
        for i in range(6):
            questions.append(await fd.send_message(f"q{i}", mention=True))
            await asyncio.sleep(0.25)
        sent_at = time.monotonic()
        answers = [
            await final_answer(fd, channel, f"-# {THREADS_PAUSED}\n{expected(1, f'q{i}')}")
            for i in (3, 4, 5)
        ]
        waited = time.monotonic() - sent_at
        for i in range(3):
            await final_answer(fd, questions[i].id, expected(1, f"q{i}"))
        await fd.send_message("go on", reply_to=answers[0].id)  # no mention: a reply chain
        await final_answer(fd, channel, expected(2, "go on"))
        clock.ahead = 300.0  # past the reported 272 s (the fake lifted it after 1 s)
        await asyncio.sleep(1.0)
        later = await fd.send_message("later", mention=True)
        await final_answer(fd, later.id, expected(1, "later"))
    assert waited < 3.0, "users 4-6 must not wait on the cooldown"
    for question, answer in zip(questions[3:], answers, strict=True):
        assert str(answer.bodies[0]["message_reference"]["message_id"]) == question.id
    threads = [c.status for c in fd.calls_to("POST", r"/threads$")]
    assert threads == [201, 201, 201, 429, 201], "no thread tried during the cooldown"
    assert set(fd.threads) == {q.id for q in questions[:3]} | {later.id}
    typing = fd.calls_to("POST", rf"^/channels/{channel}/typing$")
    assert len(typing) >= 3  # the channel answers showed "typing…" like any other


async def test_a_thread_discord_py_would_sleep_for_is_not_waited_on(
    fake_discord: FakeDiscord, build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20 s thread cooldown is under discord.py's 30 s minimum for raising, so it
    sleeps inside create_thread: the bot shows typing, gives up after THREAD_WAIT_S and
    answers in the channel."""
    monkeypatch.setattr("adapters.discord.client.THREAD_WAIT_S", 1.2)
    fake_discord.limit_threads(0, retry_after=20.0)
    channel = fake_discord.channel_id
    async with running_bot(build()):
        question = await fake_discord.send_message("slow threads", mention=True)
        asked = time.monotonic()
        text = f"-# {THREADS_PAUSED}\n{expected(1, 'slow threads')}"
        answer = await final_answer(fake_discord, channel, text)
        answered = time.monotonic() - asked
    typing = fake_discord.calls_to("POST", rf"^/channels/{channel}/typing$")
    assert typing and typing[0].t - asked < 1.0, "typing shown while the thread hung"
    assert answered < 3.0 and not fake_discord.threads
    assert str(answer.bodies[0]["message_reference"]["message_id"]) == question.id


async def test_thread_refused_falls_back_to_a_reply_chain_in_the_channel(
    fake_discord: FakeDiscord, build: Build
) -> None:
    fake_discord.inject("POST", r"/threads$", status=403)  # no Create Public Threads
    channel = fake_discord.channel_id
    async with running_bot(build()):
        question = await fake_discord.send_message("no threads here", mention=True)
        answer = await final_answer(fake_discord, channel, expected(1, "no threads here"))
        await fake_discord.send_message("go on", reply_to=answer.id)
        await final_answer(fake_discord, channel, expected(2, "go on"))
    assert str(answer.bodies[0]["message_reference"]["message_id"]) == question.id
    assert not fake_discord.threads


async def test_blank_messages_are_skipped_and_the_missing_intent_reported(
    fake_discord: FakeDiscord, build: Build, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(build()):
        question = await fake_discord.send_message("start", mention=True)
        await final_answer(fake_discord, question.id, expected(1, "start"))
        fake_discord.gateway.message_content_granted = False
        for text in ("one", "two", "three"):
            await fake_discord.send_message(text, channel_id=question.id)
        # Mentions keep their text even without the intent: the control is answered.
        await fake_discord.send_message("control", mention=True, channel_id=question.id)
        await final_answer(fake_discord, question.id, expected(2, "control"))
    assert len(fake_discord.bot_messages(question.id)) == 2  # no "your message is empty"
    assert "MESSAGE CONTENT intent seems disabled" in caplog.text


async def test_twenty_concurrent_mentions_in_threads(
    fake_discord: FakeDiscord, build: Build
) -> None:
    async with running_bot(build(**GENEROUS_USER_QUOTA)):
        questions = await asyncio.gather(
            *(fake_discord.send_message(f"q{i}", mention=True) for i in range(20))
        )
        for i, q in enumerate(questions):
            await final_answer(fake_discord, q.id, expected(1, f"q{i}"))
    assert fake_discord.count_429 == 0 and len(fake_discord.threads) == 20


async def test_twenty_concurrent_mentions_sharing_one_channel_budget(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    """Reply mode: all 20 answers are posted and edited in one channel (5 per 5 s)."""
    fake_groq.token_delay_s = 0.01
    channel = fake_discord.channel_id
    started = time.monotonic()
    # The account's tier set, as an operator would: until the first answer's headers
    # tell, the quota assumes the free tier, and 20 requests at once from one user would
    # fill their line (5) and be refused, which is another test's subject.
    tier = (
        f"{MODEL}=rpm:{fake_groq.limit_rpm},rpd:{fake_groq.limit_rpd},"
        f"tpm:{fake_groq.limit_tpm},tpd:{fake_groq.limit_tpd}"
    )
    settings = build(discord_reply_mode="reply", quota_model_limits=tier, **GENEROUS_USER_QUOTA)
    async with running_bot(settings):
        await asyncio.gather(*(fake_discord.send_message(f"q{i}", mention=True) for i in range(20)))
        for i in range(20):
            await final_answer(fake_discord, channel, expected(1, f"q{i}"), within=40)
    elapsed = time.monotonic() - started
    sent = fake_discord.calls_to("POST", rf"^/channels/{channel}/messages$")
    assert fake_discord.count_429 == 0 and fake_discord.injected_429 == 0
    assert len(sent) == 20 and all(c.status == 200 for c in sent)
    logging.getLogger(__name__).info("20 replies in one channel took %.1f s", elapsed)


async def test_privileged_intent_disabled_is_a_clear_config_error(
    fake_discord: FakeDiscord, build: Build
) -> None:
    fake_discord.gateway.privileged_intents_enabled = False
    with pytest.raises(ConfigError, match="MESSAGE CONTENT intent"):
        async with running_bot(build()):
            pass


async def test_rejected_token_is_a_clear_config_error(build: Build) -> None:
    with pytest.raises(ConfigError, match="rejected DISCORD_BOT_TOKEN"):
        async with running_bot(build(discord_bot_token="wrong")):
            pass


async def test_messages_are_answered_in_the_order_sent_even_when_one_is_slow_to_read(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    """A message whose attachment takes a while to download is still the earlier turn:
    the quick text message sent after it must not overtake it, in a DM or a thread."""
    fake_discord.cdn_delay_s = 0.3
    note = [("notes.txt", "text/plain", b"first notes")]
    dm = fake_discord.dm_channel_id(fake_discord.alice)
    async with running_bot(build()):
        await fake_discord.send_dm("one", attachments=note)
        await fake_discord.send_dm("two")
        await final_answer(fake_discord, dm, expected(2, "two"))
        question = await fake_discord.send_message("start", mention=True)
        await final_answer(fake_discord, question.id, expected(1, "start"))
        await fake_discord.send_message("three", channel_id=question.id, attachments=note)
        await fake_discord.send_message("four", channel_id=question.id)
        await final_answer(fake_discord, question.id, expected(3, "four"))
    lasts = [r["body"]["messages"][-1]["content"] for r in fake_groq.chat_requests]
    assert [t.split("\n")[0] for t in lasts] == ["one", "two", "start", "three", "four"]


async def test_first_post_survives_503s_and_429s_without_via(
    fake_discord: FakeDiscord, build: Build
) -> None:
    """discord.py raises at once for both; the surface retries (429: after Retry-After)."""
    creates = r"^/channels/\d+/messages$"
    async with running_bot(build()):
        fake_discord.inject("POST", creates, status=503, times=2)
        first = await fake_discord.send_message("one", mention=True)
        await final_answer(fake_discord, first.id, expected(1, "one"))
        fake_discord.inject("POST", creates, status=429, retry_after=0.2, via=False, times=2)
        fake_discord.inject("PATCH", r"^/channels/\d+/messages/\d+$", status=503)
        second = await fake_discord.send_message("two", mention=True)
        await final_answer(fake_discord, second.id, expected(1, "two"))
    statuses = [c.status for c in fake_discord.calls_to("POST", creates)]
    assert statuses == [503, 503, 200, 429, 429, 200]
    assert len(fake_discord.bot_messages()) == 2  # one message per answer, no duplicates


async def test_a_reply_gives_up_after_the_deadline_and_says_where(
    fake_discord: FakeDiscord, build: Build, caplog: pytest.LogCaptureFixture
) -> None:
    creates = r"^/channels/\d+/messages$"
    async with running_bot(build(discord_retry_deadline_s=1.0)):
        fake_discord.inject("POST", creates, status=503, times=3)
        lost = await fake_discord.send_message("lost", mention=True)
        await fake_discord.wait_for(lambda: len(fake_discord.calls_to("POST", creates)) == 3)
        kept = await fake_discord.send_message("kept", mention=True)
        await final_answer(fake_discord, kept.id, expected(1, "kept"))
    surface = [r for r in caplog.records if r.name == "adapters.discord.surface"]
    gave_up = [r.getMessage() for r in surface if r.levelno == logging.ERROR]
    assert len(gave_up) == 1 and "giving up" in gave_up[0] and "503" in gave_up[0]
    assert f":{lost.id}]" in gave_up[0]  # the conversation: the thread it was for
    assert fake_discord.bot_messages(lost.id) == []


QUICK_RECONNECT = {"reconnect_delays_s": (0.05, 0.05)}


class FatalReports:
    """An ``on_fatal`` that keeps the reasons; ``await first()`` waits for one."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._event = asyncio.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self._event.set()

    async def first(self, within: float = 5.0) -> str:
        await asyncio.wait_for(self._event.wait(), within)
        return self.reasons[0]


@pytest.mark.parametrize("kind", MALFORMED)
async def test_a_malformed_gateway_event_never_deafens_the_bot(
    fake_discord: FakeDiscord, build: Build, kind: str
) -> None:
    """discord.py gives up its session on most of these; the adapter starts a fresh one."""
    lost = FatalReports()
    async with running_bot(build(), on_fatal=lost, **QUICK_RECONNECT) as (adapter, _):
        await fake_discord.send_malformed(kind)
        if kind in DEAFENING:  # events sent before the new session would go to the old one
            await fake_discord.wait_for(lambda: fake_discord.gateway.identifies == 2)
        await fake_discord.wait_for(lambda: adapter.connected and fake_discord.gateway.connected)
        question = await fake_discord.send_message("still there?", mention=True)
        await final_answer(fake_discord, question.id, expected(1, "still there?"))
        assert adapter.fresh_sessions == (1 if kind in DEAFENING else 0)
        broken = list(fake_discord.interactions.values())  # the one without data, if sent
        await fake_discord.wait_for(lambda: all(i.answered for i in broken))
    assert lost.reasons == []
    assert all(i.response_text == UNREADABLE and i.ephemeral for i in broken)


async def test_fresh_sessions_that_keep_failing_end_in_a_fatal_report(
    fake_discord: FakeDiscord, build: Build
) -> None:
    lost = FatalReports()
    async with running_bot(build(), on_fatal=lost, **QUICK_RECONNECT):
        fake_discord.gateway.after_identify = ["not json"]  # every new session dies at once
        await fake_discord.send_malformed("non_json")
        assert "3 times in a row" in await lost.first()
    assert fake_discord.gateway.identifies == 3  # the first session, then two fresh ones
    assert len(lost.reasons) == 1


async def test_a_gateway_that_stays_unreachable_ends_in_a_fatal_report(
    fake_discord: FakeDiscord, build: Build
) -> None:
    """discord.py retries an unreachable gateway forever; the adapter gives up after
    ``lost_after_s`` so that the process exits and its supervisor restarts it."""
    lost = FatalReports()
    async with running_bot(build(), on_fatal=lost, lost_after_s=0.5) as (adapter, _):
        fake_discord.gateway.refuse_connections = True
        await fake_discord.drop_gateway()
        assert "down for" in await lost.first()
        assert not adapter.connected
    assert len(lost.reasons) == 1
    assert any(p.startswith("refused") for p in fake_discord.gateway.connect_paths)


def _ready_timers() -> list[asyncio.Task[Any]]:
    """discord.py's tasks that wait ``guild_ready_timeout`` after a READY before
    dispatching ``on_ready`` (``ConnectionState._delay_ready`` in 2.7.1)."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").endswith("_delay_ready")
    ]


async def test_closing_while_discord_py_delays_on_ready_dispatches_nothing_afterwards(
    fake_discord: FakeDiscord, build: Build
) -> None:
    """A shutdown just after a READY (a fresh session, discord.py's own re-identify) used
    to let discord.py's ready timer dispatch ``on_ready`` into the closed client: the
    ``_run_event`` coroutine leaked and the timer died on an ``AttributeError``."""
    settings = build()
    async with open_runtime(settings.core) as runtime:
        # A 1 s ready delay is a window no test-machine stall closes before aclose();
        # ready_timeout_s=0 lets start() return while discord.py still waits in it.
        adapter = DiscordAdapter(
            runtime.context(settings.platform), guild_ready_timeout=1.0, ready_timeout_s=0.0
        )
        await adapter.start()
        try:
            deadline = time.monotonic() + 10.0
            while not _ready_timers():
                assert time.monotonic() < deadline, "no READY was received"
                await asyncio.sleep(0.01)
            (timer,) = _ready_timers()
        finally:
            await adapter.aclose()
        assert not timer.done(), "closed after discord.py's ready delay: nothing was tested"
        await asyncio.wait({timer}, timeout=10.0)
    assert timer.done() and timer.exception() is None
