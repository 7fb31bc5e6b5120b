"""Ordered, versioned schema steps for ``SqliteStore``, applied at ``open()``.

The applied version lives in ``PRAGMA user_version``. Steps are append-only: never edit a
released step, add a new one with the next version number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from bot.errors import StoreError

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "migrate"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: the version it produces and the statements that get there."""

    version: int
    statements: tuple[str, ...]


_V1 = Migration(
    1,
    (
        # model / system_prompt are the per-conversation prefs (NULL = not set).
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            storage_id TEXT NOT NULL UNIQUE,
            platform TEXT NOT NULL,
            space TEXT NOT NULL DEFAULT '',
            channel TEXT NOT NULL DEFAULT '',
            thread TEXT,
            dm_user TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            model TEXT,
            system_prompt TEXT
        )""",
        # AUTOINCREMENT: ids are never reused after a reset, so an engine still holding
        # the id of a forgotten message can't update some other conversation's message.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            author_id TEXT NOT NULL DEFAULT '',
            content TEXT NOT NULL,
            platform_message_id TEXT NOT NULL DEFAULT '',
            tokens INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'interrupted', 'failed')),
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        # user_id is UserRef.storage_id() ("discord:123").
        """CREATE TABLE user_prefs (
            user_id TEXT PRIMARY KEY,
            model TEXT,
            system_prompt TEXT,
            updated_at REAL NOT NULL
        )""",
        # user_id is UserRef.storage_id() too, so (user_id, at) alone answers usage_since.
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            platform TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            at REAL NOT NULL
        )""",
        "CREATE INDEX usage_by_user ON usage (user_id, at)",
        """CREATE TABLE quota_counters (
            subject TEXT NOT NULL,
            dimension TEXT NOT NULL,
            window_start REAL NOT NULL,
            used REAL NOT NULL,
            PRIMARY KEY (subject, dimension, window_start)
        )""",
    ),
)

_V2 = Migration(
    2,
    # 1 when the tokens were estimated from the text (the server reported no usage).
    ("ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0",),
)

_V3 = Migration(
    3,
    (
        # A reply is stored when it starts ('streaming') and checkpointed as it streams,
        # with where its platform messages are: reply_place and reply_message_ids (a
        # JSON array), opaque strings of the adapter's. SQLite can't change a CHECK, so
        # the table is rebuilt (https://sqlite.org/lang_altertable.html#otheralter).
        """CREATE TABLE messages_v3 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            author_id TEXT NOT NULL DEFAULT '',
            content TEXT NOT NULL,
            platform_message_id TEXT NOT NULL DEFAULT '',
            tokens INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'interrupted', 'failed', 'streaming')),
            created_at REAL NOT NULL,
            reply_place TEXT NOT NULL DEFAULT '',
            reply_message_ids TEXT NOT NULL DEFAULT '[]'
        )""",
        """INSERT INTO messages_v3 (id, conversation_id, role, author_id, content,
            platform_message_id, tokens, status, created_at)
        SELECT id, conversation_id, role, author_id, content,
            platform_message_id, tokens, status, created_at FROM messages""",
        # Ids are never reused: the new table goes on from the old one's high-water mark,
        # which is above its highest remaining id when the newest messages were reset.
        "DELETE FROM sqlite_sequence WHERE name = 'messages_v3'",
        """INSERT INTO sqlite_sequence (name, seq)
        SELECT 'messages_v3', seq FROM sqlite_sequence WHERE name = 'messages'""",
        "DROP TABLE messages",
        "ALTER TABLE messages_v3 RENAME TO messages",
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        # Start-up looks for replies a dead process left streaming: a few rows at most.
        "CREATE INDEX messages_streaming ON messages (id) WHERE status = 'streaming'",
    ),
)

# The response cache (issue 17). Its own constant so that a merge with other version-4
# steps can renumber it; plain portable DDL (TEXT / INTEGER / REAL) for PostgreSQL too.
_V4_CACHE = Migration(
    4,
    (
        # cache_key: the sha256 hex of the request (bot.response_cache.cache_key).
        """CREATE TABLE response_cache (
            cache_key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            answer TEXT NOT NULL,
            reasoning TEXT NOT NULL DEFAULT '',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            estimated INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        )""",
        # Expiry and eviction of the oldest read the entries in this order.
        "CREATE INDEX response_cache_by_age ON response_cache (created_at, cache_key)",
        # 1 when the answer came from the response cache (then its tokens are 0).
        "ALTER TABLE usage ADD COLUMN cached INTEGER NOT NULL DEFAULT 0",
    ),
)

# Platform events already claimed by a process (FleetCoordination.claim_event), so a
# redelivered event is answered once, across restarts and across processes.
_V5_EVENTS = Migration(
    5,
    (
        """CREATE TABLE event_claims (
            event_id TEXT PRIMARY KEY,
            claimed_at REAL NOT NULL
        )""",
        "CREATE INDEX event_claims_by_age ON event_claims (claimed_at)",
    ),
)

# Admins' per-channel settings (issue 17). Its own constant so that a merge with another
# new step only renumbers it. NULL persona / model: not set; ``updated_by`` is a user's
# ``UserRef.storage_id()``.
_V6_CHANNELS = Migration(
    6,
    (
        """CREATE TABLE channel_settings (
            platform TEXT NOT NULL,
            space TEXT NOT NULL,
            channel TEXT NOT NULL,
            system_prompt TEXT,
            model TEXT,
            mode TEXT NOT NULL DEFAULT 'mention' CHECK (mode IN ('mention', 'all')),
            updated_at REAL NOT NULL,
            updated_by TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (platform, space, channel)
        )""",
    ),
)

# ``/model <id> strict``: 1 when that model choice opts out of MODEL_FALLBACKS (NULL: it
# does not). Its own step so it can be renumbered next to other V4 work.
_V7_FALLBACK = Migration(
    7,
    (
        "ALTER TABLE user_prefs ADD COLUMN model_strict INTEGER",
        "ALTER TABLE conversations ADD COLUMN model_strict INTEGER",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (
    _V1,
    _V2,
    _V3,
    _V4_CACHE,
    _V5_EVENTS,
    _V6_CHANNELS,
    _V7_FALLBACK,
)
LATEST_VERSION = MIGRATIONS[-1].version


async def migrate(
    conn: aiosqlite.Connection, *, where: str, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Apply the pending steps in one ``BEGIN IMMEDIATE`` transaction; return the new version.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Raises ``StoreError``
    when the database is newer than ``migrations`` knows (``where`` names it in the
    message); sqlite3 errors propagate for the caller to map. On any failure nothing of
    the transaction remains.
    """
    latest = migrations[-1].version if migrations else 0
    await _execute(conn, "BEGIN IMMEDIATE")
    try:
        current = await _user_version(conn)
        if current > latest:
            raise StoreError(
                f"The database {where} was written by a newer version of the bot "
                f"(schema {current}; this version knows up to {latest}): upgrade the bot "
                "or point DATABASE_PATH at another file.",
                detail=f"{where}: user_version {current} > {latest}",
            )
        for step in migrations:
            if step.version <= current:
                continue
            for statement in step.statements:
                await _execute(conn, statement)
            # PRAGMA takes no parameters; the version is an int from our own table.
            await _execute(conn, f"PRAGMA user_version = {int(step.version)}")
            current = step.version
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
    return current


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def _execute(conn: aiosqlite.Connection, sql: str) -> None:
    cursor = await conn.execute(sql)
    await cursor.close()
