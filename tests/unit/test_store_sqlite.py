"""What only ``SqliteStore`` promises: durability, migrations, WAL, error mapping, query shape."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest

from bot.errors import StoreError
from bot.store import SqliteStore
from bot.store import queries as queries_module
from bot.store import sqlite as sqlite_module
from bot.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate
from bot.store.schema import Sql
from bot.store.sqlite import map_store_errors
from bot.types import (
    ChannelMode,
    ChannelRef,
    ChannelSettings,
    ConversationKey,
    Platform,
    Prefs,
    QuotaCounter,
    TurnStatus,
    UsageEntry,
    UsageSummary,
    UserRef,
)
from tests.fakes.clock import FakeClock

T0 = 1_750_000_000.0
KEY = ConversationKey(Platform("discord"), space="g", channel="c")
OTHER = ConversationKey(Platform("slack"), space="T", dm_user="U")
ALICE = UserRef(Platform("discord"), "1")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bot.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db_path, clock=FakeClock(T0, epoch=T0))
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection for looking behind the store's back (autocommit)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def scalar(path: Path, sql: str) -> object:
    with raw(path) as conn:
        return conn.execute(sql).fetchone()[0]


def assert_no_leaked_connection() -> None:
    # aiosqlite warns (an error here) from __del__ when a connection was never closed.
    gc.collect()


# ----- lifecycle, durability -----


async def test_data_survives_close_and_reopen(db_path: Path) -> None:
    first = SqliteStore(db_path, clock=FakeClock(T0, epoch=T0))
    await first.open()
    await first.add_message(KEY, role="user", content="remember me", tokens=3)
    await first.set_model(ALICE, "m-user")
    await first.set_system_prompt(KEY, "be brief")
    await first.record_usage(UsageEntry(ALICE, "m", 10, 5, T0))
    await first.save_quota_counters([QuotaCounter("s", "rpd", T0, 4.0)])
    channel = ChannelRef(Platform("discord"), "g", "c")
    await first.set_channel_settings(
        channel, {"system_prompt": "pirate", "model": "m-chan", "mode": "all"}, by="discord:1"
    )
    await first.aclose()

    second = SqliteStore(str(db_path))
    await second.open()
    try:
        assert [m.content for m in await second.window(KEY, token_budget=10)] == ["remember me"]
        assert await second.prefs(ALICE, KEY) == Prefs("m-user", "be brief")
        assert await second.usage_since(ALICE, 0) == UsageSummary(1, 10, 5)
        assert await second.load_quota_counters(0) == [QuotaCounter("s", "rpd", T0, 4.0)]
        assert await second.channel_settings(channel) == ChannelSettings(
            "pirate", "m-chan", ChannelMode.ALL, T0, "discord:1"
        )
    finally:
        await second.aclose()


async def test_open_creates_the_parent_directory_and_uses_the_clock(db_path: Path) -> None:
    s = SqliteStore(db_path, clock=FakeClock(T0 + 42, epoch=T0 + 42))
    await s.open()
    await s.add_message(KEY, role="user", content="x")
    await s.aclose()

    assert db_path.is_file()
    with raw(db_path) as conn:
        assert conn.execute("SELECT created_at FROM messages").fetchall() == [(T0 + 42,)]
        assert conn.execute("SELECT created_at, updated_at FROM conversations").fetchall() == [
            (T0 + 42, T0 + 42)
        ]


async def test_open_twice_and_aclose_twice_are_harmless(db_path: Path) -> None:
    s = SqliteStore(db_path)
    await s.open()
    await s.open()
    await s.aclose()
    await s.aclose()
    assert_no_leaked_connection()


async def test_use_before_open_or_after_close_is_a_store_error(db_path: Path) -> None:
    s = SqliteStore(db_path)
    with pytest.raises(StoreError):
        await s.window(KEY, token_budget=10)
    await s.open()
    await s.aclose()
    with pytest.raises(StoreError, match="after aclose"):
        await s.add_message(KEY, role="user", content="late")


async def test_connection_settings(store: SqliteStore, db_path: Path) -> None:
    assert scalar(db_path, "PRAGMA journal_mode") == "wal"  # persistent in the file
    # The rest are per connection: ask the store's own (white-box on purpose).
    conn = store._conn
    assert conn is not None
    for pragma, expected in [("synchronous", 1), ("foreign_keys", 1), ("busy_timeout", 5000)]:
        async with conn.execute(f"PRAGMA {pragma}") as cursor:
            assert await cursor.fetchone() == (expected,), pragma


# ----- migrations -----


def test_migrations_are_numbered_one_up_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].version == LATEST_VERSION


async def test_open_applies_every_migration(store: SqliteStore, db_path: Path) -> None:
    assert scalar(db_path, "PRAGMA user_version") == LATEST_VERSION
    with raw(db_path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"conversations", "messages", "user_prefs", "usage", "quota_counters"} <= names
    assert "channel_settings" in names
    assert {"messages_by_conversation", "usage_by_user"} <= names


async def test_a_database_newer_than_the_code_is_refused(db_path: Path) -> None:
    s = SqliteStore(db_path)
    await s.open()
    await s.aclose()
    with raw(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")

    with pytest.raises(StoreError) as info:
        await SqliteStore(db_path).open()

    assert "newer version of the bot" in info.value.user_text
    assert str(db_path) in info.value.detail
    assert scalar(db_path, "PRAGMA user_version") == LATEST_VERSION + 1
    assert_no_leaked_connection()


async def test_only_pending_migrations_run_and_a_failing_one_leaves_nothing(
    db_path: Path,
) -> None:
    nxt = LATEST_VERSION + 1
    extra = Migration(nxt, (Sql("CREATE TABLE extra (x)"),))
    broken = Migration(nxt + 1, (Sql("CREATE TABLE more (y)"), Sql("THIS IS NOT SQL")))
    db_path.parent.mkdir()
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await migrate(conn, where="t", migrations=[*MIGRATIONS, extra]) == nxt
        # Re-running v1 would fail (its tables exist), so this proves it is skipped.
        assert await migrate(conn, where="t", migrations=[*MIGRATIONS, extra]) == nxt
        with pytest.raises(sqlite3.OperationalError):
            await migrate(conn, where="t", migrations=[*MIGRATIONS, extra, broken])
        assert not conn.in_transaction

    assert scalar(db_path, "PRAGMA user_version") == nxt
    assert scalar(db_path, "SELECT count(*) FROM sqlite_master WHERE name = 'extra'") == 1
    assert scalar(db_path, "SELECT count(*) FROM sqlite_master WHERE name = 'more'") == 0


# ----- error mapping -----


async def test_a_garbage_file_gives_a_clear_store_error(db_path: Path) -> None:
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not a database, just some text\n" * 200)

    with pytest.raises(StoreError) as info:
        await SqliteStore(db_path).open()

    err = info.value
    assert "is damaged or is not a SQLite database" in err.user_text
    assert "Traceback" not in err.user_text
    assert str(db_path) in err.detail
    assert isinstance(err.__cause__, sqlite3.DatabaseError)
    assert_no_leaked_connection()


async def test_a_path_that_cannot_be_opened_gives_a_clear_store_error(tmp_path: Path) -> None:
    a_directory = tmp_path / "bot.db"
    a_directory.mkdir()
    with pytest.raises(StoreError) as info:
        await SqliteStore(a_directory).open()
    assert "can't be opened or written" in info.value.user_text
    assert str(a_directory) in info.value.detail

    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(StoreError) as info:
        await SqliteStore(a_file / "sub" / "bot.db").open()  # mkdir fails: OSError
    assert "can't be opened or written" in info.value.user_text
    assert_no_leaked_connection()


def test_runtime_errors_keep_the_path_out_of_the_user_text(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"x" * 4096)
    with pytest.raises(StoreError) as info, map_store_errors(garbage):
        with closing(sqlite3.connect(garbage)) as conn:
            conn.execute("SELECT 1 FROM sqlite_master")
    assert info.value.user_text == (
        "The bot's database is damaged; the bot's operator needs to restore it."
    )
    assert "SQLITE_NOTADB" in info.value.detail
    assert str(garbage) in info.value.detail


def test_unclassified_errors_get_the_default_text() -> None:
    with pytest.raises(StoreError) as info, map_store_errors("db"):
        raise sqlite3.ProgrammingError("bad binding")
    assert info.value.user_text == StoreError.default_text
    assert "bad binding" in info.value.detail


def test_other_exceptions_pass_through_unmapped() -> None:
    with pytest.raises(KeyError), map_store_errors("db"):
        raise KeyError("ours")


async def test_a_failed_write_rolls_back_its_whole_transaction(
    store: SqliteStore, db_path: Path
) -> None:
    # The CHECK constraint rejects the message after its conversation row was upserted.
    with pytest.raises(StoreError) as info:
        await store.add_message(KEY, role="user", content="x", status="bogus")  # type: ignore[arg-type]
    assert "CHECK" in info.value.detail
    assert scalar(db_path, "SELECT count(*) FROM conversations") == 0

    await store.add_message(KEY, role="user", content="fine")
    assert scalar(db_path, "SELECT count(*) FROM messages") == 1


async def test_a_locked_database_is_busy_and_the_store_recovers(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 50)
    s = SqliteStore(db_path)
    await s.open()
    try:
        with raw(db_path) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(StoreError) as info:
                await s.add_message(KEY, role="user", content="blocked")
            other.execute("ROLLBACK")
        assert "busy" in info.value.user_text
        await s.add_message(KEY, role="user", content="after")
        assert [m.content for m in await s.window(KEY, token_budget=10)] == ["after"]
    finally:
        await s.aclose()


# ----- concurrency -----


@dataclass
class Hops:
    """Calls handed to the store's worker thread: how many, and the most at once."""

    calls: int = 0
    waiting: int = 0
    most_waiting: int = 0


def watch_hops(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> Hops:
    """Count every call ``store`` hands to aiosqlite's worker thread from now on."""
    conn = store._conn
    assert conn is not None
    run = conn._execute
    hops = Hops()

    async def counted(fn: object, *args: object) -> object:
        hops.calls += 1
        hops.waiting += 1
        hops.most_waiting = max(hops.most_waiting, hops.waiting)
        try:
            return await run(fn, *args)  # type: ignore[arg-type]
        finally:
            hops.waiting -= 1

    monkeypatch.setattr(conn, "_execute", counted)
    return hops


async def test_interleaved_writers_and_readers_never_share_a_transaction(
    store: SqliteStore, db_path: Path
) -> None:
    async def writer(i: int) -> None:
        key = ConversationKey(Platform("discord"), dm_user=str(i % 5))
        await store.add_message(key, role="user", content=f"m{i}", tokens=1)
        await store.set_model(key, f"model{i}")
        await store.record_usage(UsageEntry(ALICE, "m", 1, 1, T0 + i))

    async def failing() -> None:
        with pytest.raises(StoreError):
            await store.add_message(KEY, role="user", content="x", status="bad")  # type: ignore[arg-type]

    async def reader() -> None:
        for i in range(5):
            await store.window(
                ConversationKey(Platform("discord"), dm_user=str(i)), token_budget=99
            )

    await asyncio.gather(*[writer(i) for i in range(40)], *[failing() for _ in range(5)], reader())

    # Every writer's rows landed; no failed transaction took anyone else's rows with it.
    assert scalar(db_path, "SELECT count(*) FROM messages") == 40
    assert await store.usage_since(ALICE, 0) == UsageSummary(40, 40, 40)


async def test_concurrent_calls_queue_on_the_worker_thread_together(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One call at a time (a lock around each) made every caller also wait for the event
    # loop to pass the lock on: 200 turns at once queued ~1 s behind each other.
    hops = watch_hops(store, monkeypatch)
    keys = [ConversationKey(Platform("discord"), dm_user=str(i)) for i in range(20)]
    await asyncio.gather(*(store.add_message(k, role="user", content="hi") for k in keys))
    windows = await asyncio.gather(*(store.window(k, token_budget=99) for k in keys))

    assert hops.most_waiting == 20
    assert [[m.content for m in w] for w in windows] == [["hi"]] * 20


async def test_cancelled_callers_leave_the_store_usable(store: SqliteStore) -> None:
    tasks = [
        asyncio.create_task(store.add_message(KEY, role="user", content=f"m{i}")) for i in range(20)
    ]
    for _ in range(3):
        await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    last = await store.add_message(KEY, role="user", content="last")
    window = await store.window(KEY, token_budget=10**6)
    assert window[-1].content == "last"
    assert all(t.result() < last for t in tasks if not t.cancelled())
    assert store._conn is not None and not store._conn.in_transaction


# ----- performance shape -----


def bulk_insert_messages(path: Path, key: ConversationKey, count: int, *, tokens: int) -> None:
    """Append ``count`` messages to an existing conversation in one transaction."""
    with raw(path) as conn:
        (conversation_id,) = conn.execute(
            "SELECT id FROM conversations WHERE storage_id = ?", (key.storage_id(),)
        ).fetchone()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO messages (conversation_id, role, content, tokens, status, created_at)"
            " VALUES (?, 'user', ?, ?, 'complete', 0)",
            ((conversation_id, f"m{i}", tokens) for i in range(count)),
        )
        conn.execute("COMMIT")


async def test_window_on_a_long_conversation_reads_only_what_fits_via_the_index(
    db_path: Path,
) -> None:
    s = SqliteStore(db_path)
    await s.open()
    await s.add_message(KEY, role="user", content="first", tokens=10)
    await s.add_message(OTHER, role="user", content="elsewhere", tokens=10)
    await s.aclose()
    bulk_insert_messages(db_path, KEY, 10_000, tokens=10)
    bulk_insert_messages(db_path, OTHER, 2_000, tokens=10)

    await s.open()
    try:
        statements: list[str] = []
        assert s._conn is not None
        await s._conn.set_trace_callback(statements.append)
        window = await s.window(KEY, token_budget=200)
        many = await s.window(KEY, token_budget=10**9, max_messages=300)
        await s._conn.set_trace_callback(None)
    finally:
        await s.aclose()

    assert [m.content for m in window] == [f"m{i}" for i in range(9_980, 10_000)]
    assert [m.content for m in many] == [f"m{i}" for i in range(9_700, 10_000)]
    reads = [sql for sql in statements if "FROM messages" in sql]

    # One LIMITed batch for 20 messages; a handful for 300: never the whole conversation.
    # Batches double from _WINDOW_FIRST_BATCH up to _WINDOW_BATCH: the two calls may
    # use only the batches needed to cover 21 rows (20 fit, 1 overflows) and 300 rows.
    def batches(rows: int) -> int:
        needed, covered, batch = 0, 0, queries_module.WINDOW_FIRST_BATCH
        while covered < rows:
            covered, needed = covered + batch, needed + 1
            batch = min(batch * 2, queries_module.WINDOW_BATCH)
        return needed

    assert 1 <= len(reads) <= batches(21) + batches(300)
    with raw(db_path) as conn:
        for sql in reads:
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "SCAN" not in plan, plan
            assert "TEMP B-TREE" not in plan, plan
            assert "messages_by_conversation" in plan, plan


async def test_iter_usage_crosses_batches_without_holding_up_other_callers(
    store: SqliteStore, db_path: Path
) -> None:
    await store.record_usage(UsageEntry(ALICE, "m", 0, 0, T0))
    with raw(db_path) as conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO usage (user_id, platform, model, prompt_tokens, completion_tokens, at)"
            " VALUES ('discord:1', 'discord', 'm', ?, 0, ?)",
            ((i, T0 + i) for i in range(1, 1234)),
        )
        conn.execute("COMMIT")

    rows = store.iter_usage()
    first = await anext(rows)
    # Paused mid-export: other callers must still get through.
    await asyncio.wait_for(store.add_message(KEY, role="user", content="x"), timeout=2)
    rest = [row async for row in rows]

    assert first == UsageEntry(ALICE, "m", 0, 0, T0)
    assert [r.prompt_tokens for r in rest] == list(range(1, 1234))
    assert all(r.user == ALICE for r in rest)


async def test_entries_from_status_strings_round_trip(store: SqliteStore) -> None:
    message_id = await store.add_message(KEY, role="assistant", content="a")
    await store.update_message(message_id, content="b", tokens=2, status=TurnStatus.INTERRUPTED)
    [message] = await store.window(KEY, token_budget=10)
    assert message.status is TurnStatus.INTERRUPTED


# ----- replies stored while they stream (schema v3) -----


async def test_v3_keeps_every_message_and_never_reuses_an_id(db_path: Path) -> None:
    db_path.parent.mkdir()
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await migrate(conn, where="t", migrations=MIGRATIONS[:2]) == 2
    with raw(db_path) as conn:  # what a bot of schema 2 wrote, then a /reset
        conn.execute(
            "INSERT INTO conversations (id, storage_id, platform, created_at, updated_at)"
            " VALUES (1, ?, 'discord', 0, 0), (2, ?, 'slack', 0, 0)",
            (KEY.storage_id(), OTHER.storage_id()),
        )
        conn.executemany(
            "INSERT INTO messages (conversation_id, role, author_id, content, tokens, status,"
            " created_at) VALUES (?, ?, ?, ?, 1, ?, 0)",
            [
                (1, "user", "discord:1", "q", "complete"),
                (1, "assistant", "", "a!", "interrupted"),
                (2, "user", "", "bad", "failed"),
                (2, "user", "", "gone", "complete"),
            ],
        )
        conn.execute("DELETE FROM messages WHERE conversation_id = 2")

    store = SqliteStore(db_path, clock=FakeClock(T0, epoch=T0))
    await store.open()
    try:
        assert scalar(db_path, "PRAGMA user_version") == LATEST_VERSION
        kept = await store.window(KEY, token_budget=9)
        assert [(m.content, m.status, m.author_id) for m in kept] == [
            ("q", TurnStatus.COMPLETE, "discord:1"),
            ("a!", TurnStatus.INTERRUPTED, ""),
        ]
        reply = await store.add_message(
            OTHER, role="assistant", content="", status=TurnStatus.STREAMING
        )
        assert reply == 5  # not 3: the ids of the reset messages are not handed out again
        assert [r.message_id for r in await store.streaming_replies([OTHER.platform])] == [reply]
    finally:
        await store.aclose()
    with raw(db_path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"messages_by_conversation", "messages_streaming"} <= names
        assert "messages_v3" not in names
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_the_cache_step_keeps_the_ledger_and_marks_old_rows_not_cached(
    db_path: Path,
) -> None:
    db_path.parent.mkdir()
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await migrate(conn, where="t", migrations=MIGRATIONS[:3]) == 3
    with raw(db_path) as conn:  # what a bot of schema 3 recorded
        conn.execute(
            "INSERT INTO usage (user_id, platform, model, prompt_tokens, completion_tokens, at,"
            " estimated) VALUES ('discord:1', 'discord', 'm', 10, 5, ?, 1)",
            (T0,),
        )

    store = SqliteStore(db_path, clock=FakeClock(T0, epoch=T0))
    await store.open()
    try:
        assert [row async for row in store.iter_usage()] == [
            UsageEntry(ALICE, "m", 10, 5, T0, estimated=True, cached=False)
        ]
        assert await store.cache_size() == 0
    finally:
        await store.aclose()
    with raw(db_path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT cache_key FROM response_cache ORDER BY created_at,"
            " cache_key LIMIT 1"
        ).fetchall()
    assert "response_cache_by_age" in str(plan)  # eviction reads the oldest by the index


async def test_streaming_replies_read_only_the_streaming_rows_via_their_index(
    store: SqliteStore, db_path: Path
) -> None:
    await store.add_message(KEY, role="user", content="first", tokens=10)
    bulk_insert_messages(db_path, KEY, 10_000, tokens=10)
    cut = await store.add_message(KEY, role="assistant", content="", status=TurnStatus.STREAMING)

    statements: list[str] = []
    assert store._conn is not None
    await store._conn.set_trace_callback(statements.append)
    found = await store.streaming_replies([KEY.platform])
    await store._conn.set_trace_callback(None)

    assert [r.message_id for r in found] == [cut]
    [read] = [sql for sql in statements if "FROM messages" in sql]
    with raw(db_path) as conn:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {read}"))
    assert "USING INDEX messages_streaming" in plan, plan  # the partial index: streaming rows
    assert "TEMP B-TREE" not in plan, plan


# ----- strict model choices (schema v4) -----


async def test_v4_keeps_every_preference_and_none_is_strict(db_path: Path) -> None:
    db_path.parent.mkdir()
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await migrate(conn, where="t", migrations=MIGRATIONS[:3]) == 3
    user = UserRef(Platform("discord"), "1")
    with raw(db_path) as conn:  # what a bot of schema 3 wrote
        conn.execute(
            "INSERT INTO user_prefs (user_id, model, system_prompt, updated_at)"
            " VALUES (?, 'm', 'p', 0)",
            (user.storage_id(),),
        )
    store = SqliteStore(db_path, clock=FakeClock(T0, epoch=T0))
    await store.open()
    try:
        assert scalar(db_path, "PRAGMA user_version") == LATEST_VERSION
        assert await store.prefs(user, None) == Prefs("m", "p", strict=False)
        await store.set_model(user, "m", strict=True)
        assert await store.prefs(user, None) == Prefs("m", "p", strict=True)
    finally:
        await store.aclose()


# ----- one worker-thread call per transaction -----


async def test_every_operation_is_one_call_on_the_worker_thread(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each aiosqlite statement is 2-3 hops to its thread and back; a whole transaction
    # (BEGIN IMMEDIATE, statements, COMMIT) costs one when run as a function there.
    hops = watch_hops(store, monkeypatch)
    counter = QuotaCounter("user:discord:1@m", "rpm", T0, 3.0)
    entry = UsageEntry(ALICE, "m", 10, 20, T0, False)
    operations = {
        "add_message": store.add_message(KEY, role="user", content="hi", tokens=1),
        "set_model (conversation)": store.set_model(KEY, "m"),
        "set_system_prompt (user)": store.set_system_prompt(ALICE, "be brief"),
        "prefs": store.prefs(ALICE, KEY),
        "record_usage": store.record_usage(entry),
        "usage_since": store.usage_since(ALICE, 0.0),
        "save_quota_counters": store.save_quota_counters([counter]),
        "load_quota_counters": store.load_quota_counters(0.0),
        "prune_quota_counters": store.prune_quota_counters(T0 - 1),
        "streaming_replies": store.streaming_replies([Platform("discord")]),
        "reset": store.reset(KEY),
        "ping": store.ping(),
    }
    for name, operation in operations.items():
        hops.calls = 0
        await operation
        assert hops.calls == 1, name
    hops.calls = 0
    assert [e async for e in store.iter_usage()] == [entry]
    assert hops.calls == 1  # one batch
    assert await store.prefs(ALICE, KEY) == Prefs(model=None, system_prompt="be brief")
    assert await store.window(KEY, token_budget=100) == []  # reset forgot the message
