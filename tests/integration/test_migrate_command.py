"""``python -m bot migrate --from sqlite:PATH --to postgresql://…`` on a real server: a
SQLite database of 10,000 messages is copied with its ids, reads the same from both
stores, and a second run copies nothing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from bot.ports import Store
from bot.store import PostgresStore, SqliteStore
from bot.types import (
    ConversationKey,
    Platform,
    QuotaCounter,
    ReplyRef,
    TurnStatus,
    UsageEntry,
    UserRef,
)
from tests.fakes.clock import FakeClock

T0 = 1_750_000_000.0
LONG = ConversationKey(Platform("discord"), space="g", channel="c")
THREAD = ConversationKey(Platform("slack"), space="T", channel="C", thread="1.2")
GONE = ConversationKey(Platform("discord"), dm_user="9")
ALICE = UserRef(Platform("discord"), "1", "alice")
BOB = UserRef(Platform("slack"), "U2", "bob")
ROOT = Path(__file__).resolve().parents[2]


async def fill(path: Path) -> int:
    """A database as a bot leaves it; returns the id of its streaming reply."""
    store = SqliteStore(path, clock=FakeClock(T0, epoch=T0))
    await store.open()
    try:
        await store.add_message(LONG, role="user", content="first", tokens=5)
        await store.set_model(LONG, "conv-model")
        await store.set_model(ALICE, "alice-model")
        await store.set_system_prompt(BOB, "be brief")
        await store.add_message(THREAD, role="user", content="q", author_id="slack:U2", tokens=2)
        await store.add_message(
            THREAD, role="assistant", content="cut", tokens=1, status=TurnStatus.INTERRUPTED
        )
        await store.add_message(THREAD, role="user", content="bad", status=TurnStatus.FAILED)
        reply = await store.add_message(
            THREAD,
            role="assistant",
            content="half an answer",
            tokens=3,
            status=TurnStatus.STREAMING,
            reply_ref=ReplyRef("C/1.2", ("1.3", "1.4")),
        )
        for i in range(3):
            await store.record_usage(UsageEntry(ALICE, "m", 10 + i, 5, T0 + i, estimated=i == 2))
        await store.record_usage(UsageEntry(BOB, "m", 1, 1, T0))
        await store.save_quota_counters(
            [
                QuotaCounter("user:discord:1@m", "rpd", T0, 3.0),
                QuotaCounter("account:m", "tpm", T0, 9.5),
            ]
        )
    finally:
        await store.aclose()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO messages (conversation_id, role, content, tokens, created_at)"
            " VALUES (1, ?, ?, 7, ?)",
            [("user" if i % 2 else "assistant", f"m{i}", T0 + i) for i in range(9_999)],
        )
        conn.execute("COMMIT")
    # The newest ids belong to a conversation reset afterwards: they must stay used.
    store = SqliteStore(path)
    await store.open()
    try:
        for i in range(5):
            await store.add_message(GONE, role="user", content=f"gone {i}")
        await store.reset(GONE)
    finally:
        await store.aclose()
    return reply


async def run_migrate(source: Path, target: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "GROQ_"))}
    env["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "migrate",
        "--from",
        f"sqlite:{source}",
        "--to",
        target,
        cwd=source.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def snapshot(store: Store) -> dict[str, object]:
    """What the bot reads back, through the ``Store`` contract only."""
    return {
        "windows": [
            await store.window(key, token_budget=budget, max_messages=cap)
            for key in (LONG, THREAD, GONE)
            for budget, cap in ((140, 1000), (10**9, 300), (10**9, 20_000))
        ],
        "streaming": await store.streaming_replies([Platform("discord"), Platform("slack")]),
        "prefs": [await store.prefs(u, k) for u in (ALICE, BOB) for k in (None, LONG, THREAD)],
        "usage": [await store.usage_since(u, 0) for u in (ALICE, BOB)],
        "ledger": [row async for row in store.iter_usage()],
        "counters": await store.load_quota_counters(0),
    }


async def test_migrate_copies_everything_once_and_both_stores_read_the_same(
    tmp_path: Path, pg_dsn: str
) -> None:
    source = tmp_path / "bot.db"
    reply = await fill(source)

    code, out, err = await run_migrate(source, pg_dsn)
    assert code == 0, err
    assert "messages: 10,004 read, 10,004 copied" in err  # the progress, per batch
    assert "copied 10," in out and "(0 were there already)" in out

    again, out2, err2 = await run_migrate(source, pg_dsn)
    assert again == 0, err2
    assert "copied 0 of " in out2

    lite, pg = SqliteStore(source), PostgresStore(pg_dsn)
    await lite.open()
    await pg.open()
    try:
        before = await snapshot(lite)
        assert before == await snapshot(pg)
        assert len(before["windows"][2]) == 10_000  # type: ignore[index]
        [streaming] = await pg.streaming_replies([Platform("slack")])
        assert streaming.message_id == reply

        # Ids go on past SQLite's high-water mark (the reset conversation's ids) on both.
        new_pg = await pg.add_message(LONG, role="user", content="after")
        new_lite = await lite.add_message(LONG, role="user", content="after")
        assert new_pg == new_lite == 10_010
        await pg.record_usage(UsageEntry(ALICE, "m", 1, 1, T0 + 9))
        assert len([row async for row in pg.iter_usage()]) == 5
    finally:
        await lite.aclose()
        await pg.aclose()


async def test_migrate_names_what_is_wrong(tmp_path: Path, pg_dsn: str) -> None:
    code, _, err = await run_migrate(tmp_path / "missing.db", pg_dsn)
    assert code == 2
    assert "there is no file" in err

    source = tmp_path / "bot.db"
    source.write_bytes(b"")
    closed = "postgresql://bot:pw-Sekr3t@127.0.0.1:1/bot"
    code, _, err = await run_migrate(source, closed)
    assert code == 1
    assert "--to=postgresql://bot:***@127.0.0.1:1/bot" in err
    assert "pw-Sekr3t" not in err
