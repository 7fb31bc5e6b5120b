"""One schema definition, two dialects: SQLite files of the released steps open unchanged,
a fresh SQLite file gets the same schema they had, and the rendered DDL has what each
dialect needs."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from bot.store import SqliteStore
from bot.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, tables_at
from bot.store.schema import Column, CreateIndex, CreateTable, Index, PostgresOnly, Table
from bot.types import ConversationKey, Platform, TurnStatus
from tests.unit.legacy_sqlite_schema import LEGACY_STEPS

KEY = ConversationKey(Platform("discord"), space="g", channel="c")


def build_legacy(path: Path, steps: int = len(LEGACY_STEPS)) -> None:
    """What a bot of schema ``steps`` left, with a reset conversation's ids used up."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        for version, statements in enumerate(LEGACY_STEPS[:steps], start=1):
            for sql in statements:
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(
            "INSERT INTO conversations (id, storage_id, platform, created_at, updated_at)"
            " VALUES (1, ?, 'discord', 0, 0), (2, 'gone', 'slack', 0, 0)",
            (KEY.storage_id(),),
        )
        conn.executemany(
            "INSERT INTO messages (conversation_id, role, content, tokens, created_at)"
            " VALUES (?, 'user', ?, 1, 0)",
            [(1, "kept"), (2, "forgotten"), (2, "forgotten too")],
        )
        conn.execute("DELETE FROM messages WHERE conversation_id = 2")


def schema(path: Path) -> dict[str, object]:
    """Every table's columns and every index's definition, as SQLite reports them."""
    with closing(sqlite3.connect(path)) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        found: dict[str, object] = {}
        for table in sorted(tables):
            found[table] = conn.execute(f"PRAGMA table_info({table})").fetchall()
            for _, index, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
                columns = conn.execute(f"PRAGMA index_info({index})").fetchall()
                found[index] = (table, unique, origin, partial, [c[2] for c in columns])
        found["user_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
    return found


def master(path: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


async def test_a_file_of_the_released_steps_opens_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "latest.db"
    build_legacy(path)
    before = master(path)

    store = SqliteStore(path)
    await store.open()
    try:
        assert [m.content for m in await store.window(KEY, token_budget=10)] == ["kept"]
        reply = await store.add_message(
            KEY, role="assistant", content="", status=TurnStatus.STREAMING
        )
        assert reply == 4  # after the high-water mark of the forgotten messages
    finally:
        await store.aclose()

    assert master(path) == before  # no step ran, nothing was rebuilt
    assert schema(path)["user_version"] == LATEST_VERSION


async def test_a_v2_file_of_the_released_steps_is_brought_to_the_latest(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    build_legacy(path, steps=2)

    store = SqliteStore(path)
    await store.open()
    try:
        assert [m.content for m in await store.window(KEY, token_budget=10)] == ["kept"]
        assert await store.add_message(KEY, role="user", content="x") == 4
    finally:
        await store.aclose()

    legacy = tmp_path / "legacy.db"
    build_legacy(legacy)
    assert schema(path) == schema(legacy)


async def test_a_fresh_file_gets_the_schema_the_released_steps_built(tmp_path: Path) -> None:
    fresh, legacy = tmp_path / "fresh.db", tmp_path / "legacy.db"
    store = SqliteStore(fresh)
    await store.open()
    await store.aclose()
    build_legacy(legacy)

    assert len(LEGACY_STEPS) == LATEST_VERSION
    assert schema(fresh) == schema(legacy)


def test_tables_at_folds_the_steps_into_the_current_tables() -> None:
    tables = tables_at(MIGRATIONS)

    assert list(tables) == [
        "conversations",
        "messages",
        "user_prefs",
        "usage",
        "quota_counters",
        "response_cache",
        "event_claims",
        "channel_settings",
    ]
    assert tables["messages"].column_names[-2:] == ("reply_place", "reply_message_ids")
    assert tables["usage"].column_names[-2:] == ("estimated", "cached")
    assert tables["user_prefs"].column_names[-1] == "model_strict"
    assert tables["messages"].key == Column("id", "serial_key")


def test_a_new_table_renders_for_both_dialects() -> None:
    table = Table(
        "channel_settings",
        (
            Column("conversation_id", "integer", references="conversations(id)"),
            Column("name", "text"),
            Column("value", "text", nullable=True),
            Column("updated_at", "real"),
        ),
        primary_key=("conversation_id", "name"),
    )
    index = Index("channel_settings_by_name", "channel_settings", ("name",))

    sqlite = [*CreateTable(table).statements("sqlite"), *CreateIndex(index).statements("sqlite")]
    postgres = CreateTable(table).statements("postgres")

    assert "conversation_id INTEGER NOT NULL REFERENCES conversations(id)" in sqlite[0]
    assert "conversation_id BIGINT NOT NULL REFERENCES conversations(id)" in postgres[0]
    assert "updated_at DOUBLE PRECISION NOT NULL" in postgres[0]
    assert "PRIMARY KEY (conversation_id, name)" in postgres[0]
    assert sqlite[1] == "CREATE INDEX channel_settings_by_name ON channel_settings (name)"
    with closing(sqlite3.connect(":memory:")) as conn:
        for statement in [*MIGRATIONS[0].statements("sqlite"), *sqlite]:
            conn.execute(statement)


def test_postgres_only_statements_render_nothing_for_sqlite() -> None:
    ddl = "CREATE TABLE IF NOT EXISTS fleet (id text PRIMARY KEY, state jsonb NOT NULL)"
    step = Migration(LATEST_VERSION + 1, (PostgresOnly((ddl,)),))

    assert step.statements("sqlite") == []
    assert step.statements("postgres") == [ddl]
    assert tables_at([*MIGRATIONS, step]) == tables_at(MIGRATIONS)
