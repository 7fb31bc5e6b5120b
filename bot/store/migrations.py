"""Ordered, versioned schema steps for both back ends, applied at ``open()``.

Each step is a list of ``bot.store.schema`` operations, rendered as SQLite or PostgreSQL
DDL. SQLite keeps the applied version in ``PRAGMA user_version``; PostgreSQL in the
table ``schema_version`` (one row per step), under an advisory lock so that processes
starting together apply each step once. Steps are append-only: never edit a released
step, add a new one with the next version number (a new table is one ``CreateTable``
of a ``Table`` declared here, plus its ``CreateIndex``es).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiosqlite

from bot.errors import StoreError
from bot.store.schema import (
    AddColumn,
    Column,
    CreateIndex,
    CreateTable,
    Dialect,
    Index,
    Operation,
    PostgresOnly,
    Table,
    WidenCheck,
)

if TYPE_CHECKING:  # asyncpg loads only where PostgreSQL is used (it costs ~10 MB)
    import asyncpg

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "migrate",
    "migrate_postgres",
    "tables_at",
]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: the version it produces and the operations that get there."""

    version: int
    operations: tuple[Operation, ...]

    def statements(self, dialect: Dialect) -> list[str]:
        """The step's statements in ``dialect``."""
        return [sql for op in self.operations for sql in op.statements(dialect)]


# model / system_prompt are the per-conversation prefs (NULL = not set).
CONVERSATIONS = Table(
    "conversations",
    (
        Column("id", "key"),
        Column("storage_id", "text", unique=True),
        Column("platform", "text"),
        Column("space", "text", default=""),
        Column("channel", "text", default=""),
        Column("thread", "text", nullable=True),
        Column("dm_user", "text", nullable=True),
        Column("created_at", "real"),
        Column("updated_at", "real"),
        Column("model", "text", nullable=True),
        Column("system_prompt", "text", nullable=True),
    ),
)

# serial_key: ids are never reused after a reset, so an engine still holding the id of
# a forgotten message can't update some other conversation's message.
_MESSAGES_V1 = Table(
    "messages",
    (
        Column("id", "serial_key"),
        Column("conversation_id", "integer", references="conversations(id)"),
        Column("role", "text"),
        Column("author_id", "text", default=""),
        Column("content", "text"),
        Column("platform_message_id", "text", default=""),
        Column("tokens", "integer", default=0),
        Column(
            "status", "text", default="complete", check_in=("complete", "interrupted", "failed")
        ),
        Column("created_at", "real"),
    ),
)
_MESSAGES_BY_CONVERSATION = Index("messages_by_conversation", "messages", ("conversation_id", "id"))

# user_id is UserRef.storage_id() ("discord:123"). Nullable as SQLite's first schema
# declared it; as the primary key it is NOT NULL in PostgreSQL all the same.
USER_PREFS = Table(
    "user_prefs",
    (
        Column("user_id", "text", nullable=True),
        Column("model", "text", nullable=True),
        Column("system_prompt", "text", nullable=True),
        Column("updated_at", "real"),
    ),
    primary_key=("user_id",),
)

# user_id is UserRef.storage_id() too, so (user_id, at) alone answers usage_since.
_USAGE_V1 = Table(
    "usage",
    (
        Column("id", "key"),
        Column("user_id", "text"),
        Column("platform", "text"),
        Column("model", "text"),
        Column("prompt_tokens", "integer", default=0),
        Column("completion_tokens", "integer", default=0),
        Column("at", "real"),
    ),
)

QUOTA_COUNTERS = Table(
    "quota_counters",
    (
        Column("subject", "text"),
        Column("dimension", "text"),
        Column("window_start", "real"),
        Column("used", "real"),
    ),
    primary_key=("subject", "dimension", "window_start"),
)

# A reply is stored when it starts ('streaming') and checkpointed as it streams, with
# where its platform messages are: reply_place and reply_message_ids (a JSON array),
# opaque strings of the adapter's.
_REPLY_PLACE = Column("reply_place", "text", default="")
_REPLY_MESSAGE_IDS = Column("reply_message_ids", "text", default="[]")
_STATUS_V3 = Column(
    "status",
    "text",
    default="complete",
    check_in=("complete", "interrupted", "failed", "streaming"),
)
MESSAGES = Table(
    "messages",
    (
        *(_STATUS_V3 if c.name == "status" else c for c in _MESSAGES_V1.columns),
        _REPLY_PLACE,
        _REPLY_MESSAGE_IDS,
    ),
)

# The response cache (issue 17): complete answers by request hash
# (bot.response_cache.cache_key, a sha256 hex).
RESPONSE_CACHE = Table(
    "response_cache",
    (
        Column("cache_key", "text"),
        Column("model", "text"),
        Column("answer", "text"),
        Column("reasoning", "text", default=""),
        Column("prompt_tokens", "integer", default=0),
        Column("completion_tokens", "integer", default=0),
        Column("estimated", "integer", default=0),
        Column("created_at", "real"),
    ),
    primary_key=("cache_key",),
)

# Platform events already claimed by a process (FleetCoordination.claim_event), so a
# redelivered event is answered once, across restarts and across processes.
EVENT_CLAIMS = Table(
    "event_claims",
    (Column("event_id", "text"), Column("claimed_at", "real")),
    primary_key=("event_id",),
)

# Who runs a conversation's turn now (bot.store.pg_fleet): only processes sharing
# PostgreSQL need it; one SQLite process orders turns in memory.
_CONVERSATION_LEASES_DDL = """CREATE TABLE conversation_leases (
    storage_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)"""

# Admins' per-channel settings (issue 17). NULL persona / model: not set; ``updated_by``
# is a user's ``UserRef.storage_id()``.
CHANNEL_SETTINGS = Table(
    "channel_settings",
    (
        Column("platform", "text"),
        Column("space", "text"),
        Column("channel", "text"),
        Column("system_prompt", "text", nullable=True),
        Column("model", "text", nullable=True),
        Column("mode", "text", default="mention", check_in=("mention", "all")),
        Column("updated_at", "real"),
        Column("updated_by", "text", default=""),
    ),
    primary_key=("platform", "space", "channel"),
)

# ``/model <id> strict``: 1 when that model choice opts out of MODEL_FALLBACKS (NULL: it
# does not).
_MODEL_STRICT = Column("model_strict", "integer", nullable=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            CreateTable(CONVERSATIONS),
            CreateTable(_MESSAGES_V1),
            CreateIndex(_MESSAGES_BY_CONVERSATION),
            CreateTable(USER_PREFS),
            CreateTable(_USAGE_V1),
            CreateIndex(Index("usage_by_user", "usage", ("user_id", "at"))),
            CreateTable(QUOTA_COUNTERS),
        ),
    ),
    Migration(
        2,
        # 1 when the tokens were estimated from the text (the server reported no usage).
        (AddColumn("usage", Column("estimated", "integer", default=0)),),
    ),
    Migration(
        3,
        (
            AddColumn("messages", _REPLY_PLACE),
            AddColumn("messages", _REPLY_MESSAGE_IDS),
            WidenCheck(MESSAGES, "status", (_MESSAGES_BY_CONVERSATION,)),
            # Start-up looks for replies a dead process left streaming: a few rows at most.
            CreateIndex(Index("messages_streaming", "messages", ("id",), "status = 'streaming'")),
        ),
    ),
    Migration(
        4,
        (
            CreateTable(RESPONSE_CACHE),
            # Expiry and eviction of the oldest read the entries in this order.
            CreateIndex(
                Index("response_cache_by_age", "response_cache", ("created_at", "cache_key"))
            ),
            # 1 when the answer came from the response cache (then its tokens are 0).
            AddColumn("usage", Column("cached", "integer", default=0)),
        ),
    ),
    Migration(
        5,
        (
            CreateTable(EVENT_CLAIMS),
            CreateIndex(Index("event_claims_by_age", "event_claims", ("claimed_at",))),
            PostgresOnly((_CONVERSATION_LEASES_DDL,)),
        ),
    ),
    Migration(6, (CreateTable(CHANNEL_SETTINGS),)),
    Migration(
        7,
        (AddColumn("user_prefs", _MODEL_STRICT), AddColumn("conversations", _MODEL_STRICT)),
    ),
    # Admins' /usage totals the whole bot's day: every user's rows since a time.
    Migration(8, (CreateIndex(Index("usage_by_time", "usage", ("at",))),)),
)
LATEST_VERSION = MIGRATIONS[-1].version


def tables_at(migrations: Sequence[Migration] = MIGRATIONS) -> dict[str, Table]:
    """Every table as ``migrations`` leave it, by name, in the order they were created
    (referenced tables before the tables referencing them)."""
    tables: dict[str, Table] = {}
    for step in migrations:
        for op in step.operations:
            op.apply(tables)
    return tables


def _pending(
    migrations: Sequence[Migration], current: int, *, where: str, setting: str
) -> list[Migration]:
    """The steps after ``current``; ``StoreError`` when the database is newer than them."""
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise StoreError(
            f"The database {where} was written by a newer version of the bot "
            f"(schema {current}; this version knows up to {latest}): upgrade the bot "
            f"or point {setting} at another database.",
            detail=f"{where}: schema version {current} > {latest}",
        )
    return [step for step in migrations if step.version > current]


async def migrate(
    conn: aiosqlite.Connection, *, where: str, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Apply the pending steps to SQLite in one ``BEGIN IMMEDIATE`` transaction; return
    the new version.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Raises ``StoreError``
    when the database is newer than ``migrations`` knows (``where`` names it in the
    message); sqlite3 errors propagate for the caller to map. On any failure nothing of
    the transaction remains.
    """
    await _execute(conn, "BEGIN IMMEDIATE")
    try:
        current = await _user_version(conn)
        for step in _pending(migrations, current, where=where, setting="DATABASE_PATH"):
            for statement in step.statements("sqlite"):
                await _execute(conn, statement)
            # PRAGMA takes no parameters; the version is an int from our own table.
            await _execute(conn, f"PRAGMA user_version = {int(step.version)}")
            current = step.version
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
    return current


# pg_advisory_xact_lock's key: any constant no other application on the database uses.
_PG_LOCK_KEY = 0x67726F71626F74  # "groqbot"


async def migrate_postgres(
    conn: asyncpg.Connection, *, where: str, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Apply the pending steps to PostgreSQL in one transaction; return the new version.

    A transaction-scoped advisory lock serialises processes that start at once: the
    second waits, then finds the steps applied. Raises ``StoreError`` when the database
    is newer than ``migrations`` knows; asyncpg errors propagate for the caller to map.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        for step in _pending(migrations, current, where=where, setting="DATABASE_URL"):
            for statement in step.statements("postgres"):
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", step.version)
            current = step.version
    return current


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def _execute(conn: aiosqlite.Connection, sql: str) -> None:
    cursor = await conn.execute(sql)
    await cursor.close()
