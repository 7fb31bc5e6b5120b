"""What only ``PostgresStore`` promises, against a real PostgreSQL server: clear start-up
errors without the password, recovery after the server drops its connections, a busy
pool, migrations under a lock, and the window read through its index."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from bot.app import open_runtime
from bot.errors import StoreError
from bot.settings import Settings
from bot.store import PostgresStore
from bot.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate_postgres, tables_at
from bot.store.postgres import masked_url
from bot.store.queries import WINDOW_BY_KEY_SQL
from bot.store.schema import Column, CreateTable, PostgresOnly, Sql, Table
from bot.types import ConversationKey, Incoming, Platform, TurnStatus, UserRef
from tests.fakes.groq_server import FakeGroq
from tests.fakes.sink import RecordingSink
from tests.pg_cluster import PgCluster

KEY = ConversationKey(Platform("terminal"), dm_user="alice")
ALICE = UserRef(Platform("terminal"), "alice", "Alice")
SECRET = "pw-Sekr3t"

ROOT = Path(__file__).resolve().parents[2]


def with_password(dsn: str) -> str:
    """``dsn`` with a password (the test cluster trusts every connection anyway)."""
    return dsn.replace("postgres@", f"postgres:{SECRET}@", 1)


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drop_connections(admin_dsn: str, dsn: str, *, allow_new: bool = True) -> int:
    """End every connection to ``dsn``'s database, as a server restart does; with
    ``allow_new`` False the database refuses new ones too (the server still down)."""
    database = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(admin_dsn)
    try:
        allow = "true" if allow_new else "false"
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {allow}')
        ended = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            database,
        )
    finally:
        await conn.close()
    return int(ended)


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url("postgresql://bot:s3cret@db:5432/bot") == "postgresql://bot:***@db:5432/bot"
    assert masked_url("postgresql://bot@db/bot") == "postgresql://bot@db/bot"
    assert masked_url("postgresql://u:p@[::1]:5/x?sslmode=require") == (
        "postgresql://u:***@[::1]:5/x?sslmode=require"
    )
    assert masked_url("postgresql://u:p@h:notaport/x") == "postgresql://***"


def test_an_unreachable_server_at_start_up_exits_2_naming_the_url_without_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://bot:{SECRET}@127.0.0.1:{closed_port()}/bot"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "GROQ_"))}
    env.update(DATABASE_URL=url, LOG_LEVEL="DEBUG", PYTHONPATH=str(ROOT))

    done = subprocess.run(
        [sys.executable, "-m", "bot", "usage", "--csv"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert f"DATABASE_URL=postgresql://bot:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in done.stderr
    assert "can't connect" in done.stderr
    assert SECRET not in done.stderr + done.stdout


async def test_a_missing_database_is_named(pg_cluster: PgCluster) -> None:
    store = PostgresStore(with_password(pg_cluster.dsn("no_such_db")))
    with pytest.raises(StoreError) as info:
        await store.open()
    assert "does not exist" in info.value.user_text
    assert "postgres:***@" in info.value.user_text
    assert SECRET not in str(info.value) + info.value.detail


async def test_a_turn_fails_while_the_server_is_down_and_the_next_works(
    pg_cluster: PgCluster,
    pg_dsn: str,
    fake_groq: FakeGroq,
    settings_factory: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One connection: which idle connection a call gets is then not up to chance.
    settings = settings_factory(database_url=with_password(pg_dsn), database_pool_size=1)
    async with open_runtime(settings) as rt:

        async def ask(text: str) -> RecordingSink:
            sink = RecordingSink()
            await asyncio.wait_for(rt.engine.handle(Incoming(KEY, ALICE, text, "m"), sink), 15)
            return sink

        assert (await ask("one")).status_ is TurnStatus.COMPLETE
        assert await drop_connections(pg_cluster.admin_dsn, pg_dsn, allow_new=False) >= 1
        with caplog.at_level(logging.INFO):
            cut = await ask("two")
        # The server is back: the pool replaces the connections it lost.
        await drop_connections(pg_cluster.admin_dsn, pg_dsn)
        after = await ask("three")
        # A restart while the bot is idle: at most the first call notices.
        await drop_connections(pg_cluster.admin_dsn, pg_dsn)
        with contextlib.suppress(StoreError):
            await rt.store.ping()
        assert (await ask("four")).status_ is TurnStatus.COMPLETE

    assert cut.failed == StoreError.default_text
    assert after.status_ is TurnStatus.COMPLETE
    assert "turns=2 last=three" in (after.final or "")  # "two" was never stored
    failures = [r for r in caplog.records if "turn failed: StoreError" in r.getMessage()]
    assert len(failures) == 1
    assert "postgres:***@" in failures[0].getMessage()
    assert SECRET not in caplog.text


async def test_a_pool_with_no_free_connection_is_busy_then_recovers(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn, pool_size=1, acquire_timeout_s=0.2)
    await store.open()
    try:
        pool = store._pool  # white-box: hold the only connection
        assert pool is not None
        held = await pool.acquire()
        with pytest.raises(StoreError) as info:
            await store.ping()
        await pool.release(held)
        await store.ping()
    finally:
        await store.aclose()

    assert "busy" in info.value.user_text
    assert "DATABASE_POOL_SIZE" in info.value.detail


async def test_use_before_open_or_after_close_is_a_store_error(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    with pytest.raises(StoreError):
        await store.ping()
    await store.open()
    await store.open()
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreError, match="after aclose"):
        await store.add_message(KEY, role="user", content="late")


async def test_a_database_newer_than_the_code_is_refused(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    await store.aclose()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", LATEST_VERSION + 1)
    finally:
        await conn.close()

    with pytest.raises(StoreError) as info:
        await PostgresStore(pg_dsn).open()
    assert "newer version of the bot" in info.value.user_text
    assert "DATABASE_URL" in info.value.user_text


async def test_the_schema_is_the_one_definition_rendered_for_postgres(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    await store.aclose()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name <> 'schema_version'"
            " ORDER BY table_name, ordinal_position"
        )
        found: dict[str, list[str]] = {}
        for table, column in rows:
            found.setdefault(table, []).append(column)
        # V3 widened the CHECK: 'streaming' is allowed, anything else still refused.
        await conn.execute(
            "INSERT INTO conversations (storage_id, platform, created_at, updated_at)"
            " VALUES ('k', 'terminal', 0, 0)"
        )
        await conn.execute(
            "INSERT INTO messages (conversation_id, role, content, status, created_at)"
            " VALUES (1, 'assistant', '', 'streaming', 0)"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO messages (conversation_id, role, content, status, created_at)"
                " VALUES (1, 'assistant', '', 'bogus', 0)"
            )
    finally:
        await conn.close()

    postgres_only = {"conversation_leases": ["storage_id", "holder", "expires_at"]}
    assert found == {name: list(t.column_names) for name, t in tables_at().items()} | postgres_only


async def test_processes_starting_together_apply_each_step_once(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await asyncio.gather(*(s.ping() for s in stores))
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version")]
    finally:
        await conn.close()
    assert sorted(versions) == list(range(1, LATEST_VERSION + 1))


async def test_the_window_reads_newest_first_through_its_index(pg_dsn: str) -> None:
    other = ConversationKey(Platform("terminal"), dm_user="bob")
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        await store.add_message(KEY, role="user", content="first", tokens=10)
        await store.add_message(other, role="user", content="elsewhere", tokens=10)
        conn = await asyncpg.connect(pg_dsn)
        try:
            # Alice's long history, then as much of Bob's after it: newest ids aren't hers.
            for conversation in (1, 2):
                await conn.execute(
                    "INSERT INTO messages (conversation_id, role, content, tokens, created_at)"
                    " SELECT $1, 'user', 'm' || n, 10, 0 FROM generate_series(0, 9999) AS n",
                    conversation,
                )
            await conn.execute("ANALYZE messages")
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    # The store's own statement, with its parameters filled in.
                    "EXPLAIN "
                    + WINDOW_BY_KEY_SQL.replace("?", "{}").format(
                        f"'{KEY.storage_id()}'", 2**63 - 1, 8
                    )
                )
            )
        finally:
            await conn.close()
        window = await store.window(KEY, token_budget=200)
    finally:
        await store.aclose()

    assert [m.content for m in window] == [f"m{n}" for n in range(9980, 10000)]
    assert "Index Scan Backward using messages_by_conversation" in plan, plan
    assert "Sort" not in plan, plan


async def test_a_later_step_applies_once_and_a_failing_one_leaves_nothing(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    await store.aclose()
    nxt = LATEST_VERSION + 1
    table = Table(
        "later_step",
        (Column("conversation_id", "integer", references="conversations(id)"),),
    )
    extra = Migration(nxt, (CreateTable(table), PostgresOnly(("CREATE TABLE fleet (x jsonb)",))))
    broken = Migration(nxt + 1, (Sql("CREATE TABLE more (y text)"), Sql("THIS IS NOT SQL")))
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate_postgres(conn, where="t", migrations=[*MIGRATIONS, extra]) == nxt
        # Re-running would fail (the tables exist), so this proves the step is skipped.
        assert await migrate_postgres(conn, where="t", migrations=[*MIGRATIONS, extra]) == nxt
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await migrate_postgres(conn, where="t", migrations=[*MIGRATIONS, extra, broken])
        assert await conn.fetchval("SELECT MAX(version) FROM schema_version") == nxt
        assert await conn.fetchval("SELECT to_regclass('later_step')") is not None
        assert await conn.fetchval("SELECT to_regclass('fleet')") is not None
        assert await conn.fetchval("SELECT to_regclass('more')") is None
    finally:
        await conn.close()
