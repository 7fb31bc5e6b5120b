"""A user's quick messages wait their turn instead of being refused (issue 12).

Real discord.py against fake Discord, the real engine and ``QuotaManager`` against
fake Groq, with the default ``QUOTA_USER_MAX_IN_FLIGHT=2``: alice mentions the bot
twice, and while both answers are still streaming (slow fake answers) a third time.
Every mention opens its own thread, so each is its own conversation and only the
per-user quota stands between them. All three must get their full answer, the third
only after one of the first two ended, and its thread must show that it is queued
before the answer arrives; none may be refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.discord import DiscordAdapter, DiscordSettings
from bot.app import open_runtime
from bot.settings import Settings
from tests.configured import Configured, configure
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FILLER, FakeGroq

pytestmark = pytest.mark.e2e

MODEL = "openai/gpt-oss-120b"  # the DEFAULT_MODEL default
WORDS = 50  # ~57 pieces at 50 ms each: every answer streams for about 3 s
TOKEN_DELAY_S = 0.05
Build = Callable[..., Configured[DiscordSettings]]
Request = dict[str, Any]


@pytest.fixture
def build(settings_factory: Callable[..., Settings], fake_discord: FakeDiscord) -> Build:
    def make(**overrides: Any) -> Configured[DiscordSettings]:
        values = {**fake_discord.settings_overrides(), "discord_edit_interval_s": 0.2}
        return configure(settings_factory, DiscordSettings, "discord_", {**values, **overrides})

    return make


@asynccontextmanager
async def running_bot(settings: Configured[DiscordSettings]) -> AsyncIterator[None]:
    async with open_runtime(settings.core) as runtime:
        adapter = DiscordAdapter(
            runtime.context(settings.platform), guild_ready_timeout=0.05, shutdown_grace_s=2.0
        )
        await adapter.start()
        try:
            yield
        finally:
            await adapter.aclose()


def answer(question: str) -> str:
    filler = [FILLER[i % len(FILLER)] for i in range(WORDS)]
    return " ".join([f"turns=1 last={question} model={MODEL}", *filler])


def request_for(fake_groq: FakeGroq, question: str) -> Request | None:
    """The model's request whose last user turn is ``question``."""
    for request in fake_groq.chat_requests:
        users = [m for m in request["body"]["messages"] if m["role"] == "user"]
        if users and users[-1]["content"] == question:
            return request
    return None


def earliest_end(request: Request, question: str) -> float:
    """No earlier than this (the fake's clock) did the fake finish streaming the answer
    to ``question``: its first piece, then a ``TOKEN_DELAY_S`` pause after each piece
    (at least one piece a word)."""
    pieces = len(answer(question).split())
    return float(request["first_token_at"]) + (pieces - 1) * TOKEN_DELAY_S


def settled(fake: FakeDiscord, thread: str, question: str) -> Callable[[], bool]:
    """The thread shows the full answer to ``question``, or an error (a refusal)."""

    def check() -> bool:
        contents = [m.content for m in fake.bot_messages(thread)]
        return answer(question) in contents or any(c.startswith("⚠️") for c in contents)

    return check


def shown(fake: FakeDiscord, thread: str) -> list[str]:
    """Every content the bot's messages in ``thread`` had, oldest first."""
    return [text for m in fake.bot_messages(thread) for text in m.history]


@pytest.mark.parametrize(
    "tier",
    [
        # The account limits the fake's headers report (generous): only the in-flight cap
        # of 2 stands in the way of the 3rd message.
        pytest.param("generous", id="generous-account"),
        # Groq's free tier of the default model (30 RPM, 1,000 RPD, 8,000 TPM), enforced.
        pytest.param("free", id="free-tier"),
    ],
)
async def test_three_quick_messages_are_all_answered_in_order_the_third_queued(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build, tier: str
) -> None:
    fake_groq.reply_words, fake_groq.token_delay_s = WORDS, TOKEN_DELAY_S
    overrides: dict[str, Any] = {}
    if tier == "free":
        fake_groq.limit_rpm, fake_groq.limit_rpd, fake_groq.limit_tpm = 30, 1_000, 8_000
        fake_groq.enforce_rpm = fake_groq.enforce_rpd = fake_groq.enforce_tpm = True
    else:
        overrides["quota_model_limits"] = (
            f"{MODEL}=rpm:{fake_groq.limit_rpm},rpd:{fake_groq.limit_rpd},"
            f"tpm:{fake_groq.limit_tpm},tpd:none"
        )
    questions = ["first question", "second question", "third question"]
    threads: list[str] = []

    async def mention(question: str) -> None:
        message = await fake_discord.send_message(question, author=fake_discord.alice, mention=True)
        threads.append(message.id)

    async def reaches_the_model_or_replies(n: int) -> Request:
        """Wait for question ``n``'s request at the model (or a reply that says why not)."""
        question, thread = questions[n], threads[n]
        await fake_discord.wait_for(
            lambda: request_for(fake_groq, question) is not None or shown(fake_discord, thread),
            within=10,
        )
        request = request_for(fake_groq, question)
        assert request is not None, (
            f"{question!r} never reached the model: {shown(fake_discord, thread)}"
        )
        return request

    settings = build(**overrides)
    assert settings.quota_user_max_in_flight == 2  # the default
    async with running_bot(settings):
        # The first two, in order; both are streaming (for ~3 s) before the third is sent.
        await mention(questions[0])
        first = await reaches_the_model_or_replies(0)
        await mention(questions[1])
        second = await reaches_the_model_or_replies(1)
        await fake_discord.wait_for(lambda: "first_token_at" in second, within=5)
        sent_third = fake_groq.clock()
        ends = min(earliest_end(first, questions[0]), earliest_end(second, questions[1]))
        assert sent_third < ends  # both still streaming
        await mention(questions[2])

        # Nothing refused, nothing said twice: one full answer in each thread.
        for question, thread in zip(questions, threads, strict=True):
            await fake_discord.wait_for(settled(fake_discord, thread, question), within=20)
            finals = [m.content for m in fake_discord.bot_messages(thread)]
            assert finals == [answer(question)], f"{question!r} was answered {finals}"
        third = request_for(fake_groq, questions[2])

    assert third is not None
    # In order: the third reached the model only once one of the first two had ended.
    order = [fake_groq.chat_requests.index(r) for r in (first, second, third)]
    assert order == sorted(order)
    assert third["at"] >= ends
    # Visible all along: the third's thread said it was queued before its answer came.
    history = shown(fake_discord, threads[2])
    queued = [i for i, text in enumerate(history) if "queued" in text.lower()]
    answers = [i for i, text in enumerate(history) if text.startswith("turns=1")]
    assert queued and answers and queued[0] < answers[0], history
    assert fake_groq.count_429 == 0 and fake_discord.count_429 == 0
