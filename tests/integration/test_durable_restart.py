"""Answers survive ``kill -9``: a real ``python -m bot run`` is killed with 20 replies
streaming on (fake) Discord, then started again on the same database file.

The killed process leaves every reply stored as ``streaming`` with its last checkpoint
and its Discord message ids; the new one edits each message to that text plus a note,
stores the reply as interrupted, and the cut answer stays in the thread's history. The
terminal's ``chat`` does the same with what a killed ``chat`` left (nothing to edit).
"""

from __future__ import annotations

import json
import signal
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bot.durable import RESTART_NOTE
from bot.store import SqliteStore
from bot.types import ConversationKey, Platform, TurnStatus
from tests.fakes.discord_server import FakeDiscord, FakeMessage
from tests.fakes.groq_server import FakeGroq
from tests.process import bot_env, run_bot, running_bot, until

pytestmark = pytest.mark.e2e

REPLIES = 20
TERMINAL = Platform("terminal")
Row = tuple[int, str, str, str, list[str]]  # id, status, content, place, message ids


def _replies(database: Path) -> list[Row]:
    """The stored assistant messages, read behind the bot's back (WAL allows it)."""
    if not database.exists():
        return []
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            rows = conn.execute(
                "SELECT id, status, content, reply_place, reply_message_ids FROM messages"
                " WHERE role = 'assistant' ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
    return [(i, status, content, place, json.loads(ids)) for i, status, content, place, ids in rows]


def _env(fake_groq: FakeGroq, discord: FakeDiscord, database: Path) -> dict[str, str]:
    return bot_env(
        GROQ_API_KEY=str(fake_groq.api_key),
        API_BASE_URL=fake_groq.base_url,
        DATABASE_PATH=str(database),
        MAX_CONCURRENT_REQUESTS="32",
        QUOTA_ENABLED="false",  # 20 questions from one user: no per-user queue
        LOG_LEVEL="INFO",
        **{k.upper(): v for k, v in discord.settings_overrides().items()},
    )


def _last_user_text(request: dict[str, Any]) -> str:
    users = [m for m in request["body"]["messages"] if m["role"] == "user"]
    return str(users[-1]["content"]) if users else ""


async def test_kill_9_with_20_replies_streaming_then_restart_finishes_every_reply(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    # ~160 characters a second for ~6,000 characters: still streaming when killed.
    fake_groq.token_delay_s, fake_groq.reply_words = 0.05, 1000
    database = tmp_path / "bot.db"
    async with FakeDiscord() as discord:
        env = _env(fake_groq, discord, database)
        async with running_bot(tmp_path, env, log_name="first.log") as first:
            await first.wait_for_log("discord adapter started")
            questions = [
                await discord.send_message(f"question {i}", mention=True) for i in range(REPLIES)
            ]

            def checkpointed() -> bool:
                rows = _replies(database)
                # Each past its first checkpoints: a text, and the id of its message.
                return len(rows) == REPLIES and all(
                    status == "streaming" and len(content) > 60 and ids
                    for _, status, content, _, ids in rows
                )

            await until(checkpointed, "20 checkpointed replies", first, within=15)
            first.proc.send_signal(signal.SIGKILL)
            assert await first.proc.wait() == -signal.SIGKILL

        cut = {row[0]: row for row in _replies(database)}
        assert len(cut) == REPLIES
        assert all(row[1] == "streaming" for row in cut.values())
        threads = {str(q.id) for q in questions}
        for _, _, content, place, ids in cut.values():
            assert content.startswith("turns=1 last=question ")
            assert place in threads and len(ids) == 1  # the reply's thread, one message
            shown = discord.final_content(ids[0])
            assert RESTART_NOTE not in shown  # what the killed process left

        fake_groq.token_delay_s, fake_groq.reply_words = 0.0, 3
        async with running_bot(tmp_path, env, log_name="second.log") as second:

            def message(row: Row) -> FakeMessage:
                return discord.messages[row[4][0]]

            def finished() -> bool:
                rows = _replies(database)
                return all(row[1] == "interrupted" for row in rows) and all(
                    message(row).content.endswith(RESTART_NOTE) for row in rows
                )

            await until(finished, "every reply finished", second, within=20)

            for row_id, status, content, place, ids in _replies(database):
                before = cut[row_id]
                assert (status, content) == ("interrupted", before[2].strip())
                assert (place, ids) == (before[3], before[4])
                assert message(cut[row_id]).content == f"{content}\n\n{RESTART_NOTE}"

            # A follow-up in one of those threads: the model sees the cut answer.
            row_id, _, content, thread, _ = next(iter(_replies(database)))
            await discord.send_message("go on", channel_id=thread)
            answers = lambda: [m.content for m in discord.bot_messages(thread)]  # noqa: E731
            await discord.wait_for(lambda: any("turns=2 last=go on" in a for a in answers()))
            request = next(r for r in fake_groq.chat_requests if _last_user_text(r) == "go on")
            history = [(m["role"], m["content"]) for m in request["body"]["messages"]]
            question = content.split("last=", 1)[1].split(" model=", 1)[0]  # "question 7"
            assert history[-3:] == [("user", question), ("assistant", content), ("user", "go on")]


async def test_a_terminal_chat_killed_mid_answer_keeps_it_at_the_next_chat(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    database = tmp_path / "bot.db"
    store = SqliteStore(database)  # what `chat` left when it was killed mid-answer
    await store.open()
    key = ConversationKey(TERMINAL, dm_user="tester")
    await store.add_message(key, role="user", content="tell me", tokens=2)
    await store.add_message(
        key, role="assistant", content="once upon a ", tokens=3, status=TurnStatus.STREAMING
    )
    await store.aclose()
    env = bot_env(
        GROQ_API_KEY=str(fake_groq.api_key),
        API_BASE_URL=fake_groq.base_url,
        DATABASE_PATH=str(database),
    )

    code, out, err = await run_bot(["chat"], env, cwd=tmp_path, stdin="go on\n")

    assert code == 0, err
    assert "turns=2 last=go on" in out
    history = [(m["role"], m["content"]) for m in fake_groq.chat_requests[-1]["body"]["messages"]]
    assert history[-3:] == [("user", "tell me"), ("assistant", "once upon a"), ("user", "go on")]
    with closing(sqlite3.connect(database)) as conn:
        statuses = conn.execute("SELECT role, status FROM messages ORDER BY id").fetchall()
    assert statuses == [
        ("user", "complete"),
        ("assistant", "interrupted"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
