"""Quota counters survive ``kill -9`` (issue 12): a real ``python -m bot run`` on fake
Discord with ``QUOTA_USER_RPD=3`` answers one user twice, is killed with SIGKILL, and is
started again on the same database file.

``QUOTA_FLUSH_INTERVAL_S=3600`` keeps the periodic save out of the run, so only
counters persisted with each request can carry the two answers across the kill: after
the restart the 3rd message is answered and the 4th refused with a visible text (never
an empty thread), without reaching the model.
"""

from __future__ import annotations

import asyncio
import functools
import re
import signal
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq
from tests.process import BotRun, bot_env, running_bot, until

pytestmark = pytest.mark.e2e

MODEL = "openai/gpt-oss-120b"  # the DEFAULT_MODEL default
# A refusal names the limit (today's wording: "You've used your 3 requests today — try
# again in …"; the issue's: "⏳ limit reached — resets in 23 s").
REFUSAL = re.compile(r"limit|used your|requests today", re.IGNORECASE)


def _ledger_rows(database: Path) -> int:
    """Usage ledger entries, read behind the bot's back (WAL allows it)."""
    if not database.exists():
        return 0
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def _ledgered(database: Path, rows: int) -> bool:
    return _ledger_rows(database) == rows


def _env(fake_groq: FakeGroq, discord: FakeDiscord, database: Path) -> dict[str, str]:
    return bot_env(
        GROQ_API_KEY=str(fake_groq.api_key),
        API_BASE_URL=fake_groq.base_url,
        DATABASE_PATH=str(database),
        LOG_LEVEL="INFO",
        QUOTA_USER_RPD="3",
        # Only the day's request count may bind: the other per-user limits out of reach.
        QUOTA_USER_RPM="1000",
        QUOTA_USER_TPM="10000000",
        QUOTA_USER_TPD="100000000",
        QUOTA_FLUSH_INTERVAL_S="3600",  # no periodic save within the test
        **{k.upper(): v for k, v in discord.settings_overrides().items()},
    )


def _answer(question: str) -> str:
    return f"turns=1 last={question} model={MODEL}"


def _asked(fake_groq: FakeGroq, question: str) -> bool:
    """Whether the model received ``question`` as the last user turn of a request."""
    for request in fake_groq.chat_requests:
        users = [m for m in request["body"]["messages"] if m["role"] == "user"]
        if users and users[-1]["content"] == question:
            return True
    return False


@pytest.mark.parametrize(
    "stop",
    [
        # A clean stop: counters saved at exit too (checks the test's own mechanics).
        pytest.param(signal.SIGTERM, id="sigterm"),
        pytest.param(signal.SIGKILL, id="kill-9"),
    ],
)
async def test_a_restart_keeps_the_requests_counted_against_the_daily_limit(
    fake_groq: FakeGroq, tmp_path: Path, stop: signal.Signals
) -> None:
    database = tmp_path / "bot.db"
    async with FakeDiscord() as discord:
        env = _env(fake_groq, discord, database)

        def shown(thread: str) -> Callable[[], list[str]]:
            """The non-blank contents of the bot's messages in ``thread``."""
            return lambda: [m.content for m in discord.bot_messages(thread) if m.content.strip()]

        async def ask(bot: BotRun, n: int) -> Callable[[], list[str]]:
            """Mention the bot with question ``n`` (alice) and wait for a visible reply."""
            message = await discord.send_message(
                f"question {n}", author=discord.alice, mention=True
            )
            replies = shown(message.id)
            await until(lambda: bool(replies()), f"a reply to question {n}", bot)
            return replies

        async def answered(bot: BotRun, n: int) -> None:
            replies = await ask(bot, n)
            await until(lambda: _answer(f"question {n}") in replies(), f"answer {n}", bot)

        async with running_bot(tmp_path, env, log_name="first.log") as first:
            await first.wait_for_log("discord adapter started")
            for n in (1, 2):
                await answered(first, n)
                # Answered, and on the usage ledger: as counted as a request can be.
                await until(functools.partial(_ledgered, database, n), f"ledger row {n}", first)
            first.proc.send_signal(stop)
            assert await asyncio.wait_for(first.proc.wait(), 15) == (
                -signal.SIGKILL if stop == signal.SIGKILL else 0
            )

        async with running_bot(tmp_path, env, log_name="second.log") as second:
            await second.wait_for_log("discord adapter started")
            await answered(second, 3)
            fourth = await ask(second, 4)
            await asyncio.sleep(1.0)  # a streamed answer (today's bug) shows what it is
            replies = fourth()
            assert not _asked(fake_groq, "question 4"), (
                f"the 4th request of a user with QUOTA_USER_RPD=3 reached the model: {replies}"
            )
            assert replies and all(REFUSAL.search(text) for text in replies), replies
