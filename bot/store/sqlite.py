"""``SqliteStore``: the durable ``Store`` over one aiosqlite connection to a WAL-mode file.

One connection serialises statements; an ``asyncio.Lock`` around every transaction (and
every read, so nobody sees another caller's uncommitted rows on the shared connection)
keeps concurrent callers from interleaving. Writes run in ``BEGIN IMMEDIATE`` … COMMIT
and roll back on any exception, cancellation included. Every sqlite3 / OS error is turned
into ``StoreError`` once, by ``map_store_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.errors import StoreError
from bot.ports import Clock
from bot.store.migrations import migrate
from bot.types import (
    ConversationKey,
    Platform,
    Prefs,
    QuotaCounter,
    ReplyRef,
    StoredMessage,
    TurnStatus,
    UnfinishedReply,
    UsageEntry,
    UsageSummary,
    UserRef,
)

__all__ = ["SqliteStore", "map_store_errors"]

T = TypeVar("T")

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
_WINDOW_BATCH = 64
_WINDOW_FIRST_BATCH = 8
_USAGE_BATCH = 500
_MAX_ROWID = 2**63 - 1

_CORRUPT_CODES = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
_UNWRITABLE_CODES = ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_FULL")
_BUSY_CODES = ("SQLITE_BUSY", "SQLITE_LOCKED")

_WINDOW_SQL = (
    "SELECT id, role, content, tokens, status, author_id FROM messages"
    " WHERE conversation_id = ? AND id < ? AND status != 'failed' AND content != ''"
    " ORDER BY id DESC LIMIT ?"
)
_INSERT_MESSAGE_SQL = (
    "INSERT INTO messages (conversation_id, role, author_id, content, platform_message_id,"
    " tokens, status, created_at, reply_place, reply_message_ids)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Served by the partial index messages_streaming: reads only the streaming rows.
_STREAMING_SQL = (
    "SELECT m.id, c.platform, c.space, c.channel, c.thread, c.dm_user, m.content, m.tokens,"
    " m.reply_place, m.reply_message_ids FROM messages AS m"
    " JOIN conversations AS c ON c.id = m.conversation_id"
    " WHERE m.status = 'streaming' ORDER BY m.id"
)
_UPSERT_CONVERSATION_SQL = (
    "INSERT INTO conversations"
    " (storage_id, platform, space, channel, thread, dm_user, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (storage_id) DO UPDATE SET updated_at = excluded.updated_at"
    " RETURNING id"
)


@contextmanager
def map_store_errors(path: Path | str, *, opening: bool = False) -> Iterator[None]:
    """Translate sqlite3 and OS errors into ``StoreError``; ``detail`` names ``path``.

    With ``opening`` the text is for the operator starting the bot and names the file;
    otherwise it may reach chat users and does not.
    """
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        code = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
        detail = f"{path}: {code}: {exc}"
        raise StoreError(_user_text(code, exc, path, opening), detail=detail) from exc


def _user_text(code: str, exc: BaseException, path: Path | str, opening: bool) -> str | None:
    if code.startswith(_CORRUPT_CODES):
        if opening:
            return (
                f"The database file {path} is damaged or is not a SQLite database: restore "
                "it from a backup or move it aside, then restart the bot."
            )
        return "The bot's database is damaged; the bot's operator needs to restore it."
    if code.startswith(_UNWRITABLE_CODES) or isinstance(exc, OSError):
        if opening:
            return (
                f"The database file {path} can't be opened or written: check that its "
                "directory is writable and the disk is not full, or set DATABASE_PATH."
            )
        return "The bot's database can't be written right now; your message was not saved."
    if code.startswith(_BUSY_CODES):
        return "The bot's database is busy; please try again in a moment."
    return None  # StoreError.default_text


class SqliteStore:
    """``Store`` persisted in a SQLite file (WAL, ``synchronous=NORMAL``, foreign keys on).

    ``open()`` creates the parent directory, opens the one connection and applies
    pending migrations; ``aclose()`` waits for the transaction in flight and closes it.
    Timestamps come from ``clock.time()`` when a clock is given, else ``time.time()``.
    """

    def __init__(self, path: Path | str, *, clock: Clock | None = None) -> None:
        self._path = Path(path)
        self._clock = clock
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # ----- lifecycle -----

    async def open(self) -> None:
        if self._conn is not None:
            return
        with map_store_errors(self._path, opening=True):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(self._path, isolation_level=None)
            try:
                await self._configure(conn)
                await migrate(conn, where=str(self._path))
            except BaseException:
                # Without this the worker thread outlives us and aiosqlite warns.
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
        self._conn = conn

    async def _configure(self, conn: aiosqlite.Connection) -> None:
        await _execute(conn, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        rows = await _fetchall(conn, "PRAGMA journal_mode = WAL")
        mode = str(rows[0][0]) if rows else ""
        if mode.lower() != "wal":
            # Some filesystems (network mounts) refuse WAL; SQLite keeps the old mode.
            log.warning("%s: journal_mode is %r, not WAL", self._path, mode)
        await _execute(conn, "PRAGMA synchronous = NORMAL")
        await _execute(conn, "PRAGMA foreign_keys = ON")

    async def aclose(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with map_store_errors(self._path):
                    await conn.close()

    async def ping(self) -> None:
        await self._call(lambda db: db.execute("SELECT 1").fetchall(), write=False)

    # ----- transactions -----

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError(detail=f"{self._path}: store used before open() or after aclose()")
        return self._conn

    async def _call(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``work`` on the worker thread in one hop, a write as one ``BEGIN
        IMMEDIATE`` … COMMIT (rolled back if it raises), under the same lock.

        A statement through aiosqlite costs 2–3 hops to its thread; a turn made ~33.
        Every transaction and read here is one such call. ``work`` runs whole even if the
        caller is cancelled, so a write never stays open.
        """
        async with self._lock:
            conn = self._connection()
            with map_store_errors(self._path):
                # aiosqlite's private runner: the public API offers only per-statement hops.
                run: Any = conn._execute
                result: T = await run(_transaction if write else _plain, conn._conn, work)
                return result

    def _now(self) -> float:
        return self._clock.time() if self._clock is not None else time.time()

    # ----- conversations -----

    async def add_message(
        self,
        key: ConversationKey,
        *,
        role: str,
        content: str,
        author_id: str = "",
        platform_message_id: str = "",
        tokens: int = 0,
        status: TurnStatus = TurnStatus.COMPLETE,
        reply_ref: ReplyRef | None = None,
    ) -> int:
        now = self._now()
        place, ids = _ref_columns(reply_ref or ReplyRef())

        def insert(db: sqlite3.Connection) -> int | None:
            conversation_id = _upsert_conversation_sync(db, key, now)
            row = (conversation_id, role, author_id, content, platform_message_id, tokens)
            return db.execute(_INSERT_MESSAGE_SQL, (*row, str(status), now, place, ids)).lastrowid

        message_id = await self._call(insert, write=True)
        assert message_id is not None  # an INSERT always sets lastrowid
        return message_id

    async def update_message(
        self, message_id: int, *, content: str, tokens: int, status: TurnStatus
    ) -> None:
        """Rewrite a stored message; a message already forgotten by ``reset`` is ignored."""
        sql = "UPDATE messages SET content = ?, tokens = ?, status = ? WHERE id = ?"
        params = (content, tokens, str(status), message_id)
        await self._call(lambda db: db.execute(sql, params), write=True)

    async def checkpoint_reply(
        self, message_id: int, text: str, tokens: int, ref: ReplyRef
    ) -> None:
        sql = (
            "UPDATE messages SET content = ?, tokens = ?, reply_place = ?,"
            " reply_message_ids = ? WHERE id = ? AND status = 'streaming'"
        )
        params = (text, tokens, *_ref_columns(ref), message_id)
        await self._call(lambda db: db.execute(sql, params), write=True)

    async def streaming_replies(self, platforms: Collection[Platform]) -> list[UnfinishedReply]:
        wanted = {str(p) for p in platforms}
        rows = await self._call(lambda db: db.execute(_STREAMING_SQL).fetchall(), write=False)
        found: list[UnfinishedReply] = []
        for message_id, platform, space, channel, thread, dm_user, *rest in rows:
            if platform not in wanted:
                continue
            content, tokens, place, ids = rest
            key = ConversationKey(Platform(platform), space, channel, thread, dm_user)
            ref = ReplyRef(place, _message_ids(ids))
            found.append(UnfinishedReply(int(message_id), key, content, int(tokens), ref))
        return found

    async def window(
        self, key: ConversationKey, *, token_budget: int, max_messages: int = 1000
    ) -> list[StoredMessage]:
        """Newest usable messages that fit, oldest first; reads only what it returns.

        Walks ``messages_by_conversation`` backwards in batches and stops at the first
        message that would overflow the budget. Failed and empty messages are skipped.
        """
        picked: list[StoredMessage] = []
        if token_budget < 0 or max_messages <= 0:
            return picked

        def walk(db: sqlite3.Connection) -> None:
            used = 0
            conversation_id = _conversation_id_sync(db, key)
            before = _MAX_ROWID
            # Start small and double: a budget usually fills within a few messages, and
            # a big first batch would read rows only long conversations have.
            batch = _WINDOW_FIRST_BATCH
            while conversation_id is not None and len(picked) < max_messages:
                limit = min(batch, max_messages - len(picked))
                batch = min(batch * 2, _WINDOW_BATCH)
                rows = db.execute(_WINDOW_SQL, (conversation_id, before, limit)).fetchall()
                for message_id, role, content, tokens, status, author_id in rows:
                    if used + tokens > token_budget:
                        return
                    used += tokens
                    picked.append(
                        StoredMessage(role, content, tokens, TurnStatus(status), author_id)
                    )
                    before = message_id
                if len(rows) < limit:
                    return

        await self._call(walk, write=False)
        picked.reverse()
        return picked

    async def reset(self, key: ConversationKey) -> int:
        def forget(db: sqlite3.Connection) -> int:
            conversation_id = _conversation_id_sync(db, key)
            if conversation_id is None:
                return 0
            sql = "DELETE FROM messages WHERE conversation_id = ?"
            removed = db.execute(sql, (conversation_id,)).rowcount
            # The row also carries the conversation's prefs: forget them with it.
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return removed

        return await self._call(forget, write=True)

    # ----- preferences -----

    async def prefs(self, user: UserRef, key: ConversationKey | None) -> Prefs:
        def read(db: sqlite3.Connection) -> Prefs:
            rows = db.execute(
                "SELECT model, system_prompt FROM user_prefs WHERE user_id = ?",
                (user.storage_id(),),
            ).fetchall()
            model, prompt = rows[0] if rows else (None, None)
            if key is not None:
                rows = db.execute(
                    "SELECT model, system_prompt FROM conversations WHERE storage_id = ?",
                    (key.storage_id(),),
                ).fetchall()
                if rows:
                    model = rows[0][0] if rows[0][0] is not None else model
                    prompt = rows[0][1] if rows[0][1] is not None else prompt
            return Prefs(model=model, system_prompt=prompt)

        return await self._call(read, write=False)

    async def set_model(self, target: UserRef | ConversationKey, model: str | None) -> None:
        await self._set_pref(target, "model", model)

    async def set_system_prompt(
        self, target: UserRef | ConversationKey, prompt: str | None
    ) -> None:
        await self._set_pref(target, "system_prompt", prompt)

    async def _set_pref(
        self, target: UserRef | ConversationKey, column: str, value: str | None
    ) -> None:
        # ``column`` is one of our two literals, never user input.
        now = self._now()

        def store(db: sqlite3.Connection) -> None:
            if isinstance(target, UserRef):
                db.execute(
                    f"INSERT INTO user_prefs (user_id, {column}, updated_at) VALUES (?, ?, ?)"
                    f" ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column},"
                    " updated_at = excluded.updated_at",
                    (target.storage_id(), value, now),
                )
            else:
                conversation_id = _upsert_conversation_sync(db, target, now)
                sql = f"UPDATE conversations SET {column} = ? WHERE id = ?"
                db.execute(sql, (value, conversation_id))

        await self._call(store, write=True)

    # ----- usage ledger -----

    async def record_usage(self, entry: UsageEntry) -> None:
        user, tokens = entry.user, (entry.prompt_tokens, entry.completion_tokens)
        sql = (
            "INSERT INTO usage (user_id, platform, model, prompt_tokens,"
            " completion_tokens, at, estimated) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        params = (
            user.storage_id(),
            str(user.platform),
            entry.model,
            *tokens,
            entry.at,
            int(entry.estimated),
        )
        await self._call(lambda db: db.execute(sql, params), write=True)

    async def usage_since(self, user: UserRef, since: float) -> UsageSummary:
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
            " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(estimated), 0) FROM usage"
            " WHERE user_id = ? AND at >= ?"
        )
        params = (user.storage_id(), since)
        rows = await self._call(lambda db: db.execute(sql, params).fetchall(), write=False)
        requests, prompt, completion, estimated = rows[0]
        return UsageSummary(int(requests), int(prompt), int(completion), int(estimated))

    async def iter_usage(self) -> AsyncIterator[UsageEntry]:
        """Every ledger row in the order recorded, fetched in batches.

        The lock is held per batch only, so a long export never stalls the bot.
        """
        sql = (
            "SELECT id, user_id, platform, model, prompt_tokens, completion_tokens, at,"
            " estimated FROM usage WHERE id > ? ORDER BY id LIMIT ?"
        )
        after = 0
        while True:
            rows = await self._call(
                functools.partial(_fetch, sql, (after, _USAGE_BATCH)), write=False
            )
            for row_id, user_id, platform, model, prompt, completion, at, estimated in rows:
                after = row_id
                user = UserRef(Platform(platform), user_id.removeprefix(f"{platform}:"))
                yield UsageEntry(
                    user, model, int(prompt), int(completion), float(at), bool(estimated)
                )
            if len(rows) < _USAGE_BATCH:
                return

    # ----- quota counters -----

    async def load_quota_counters(self, since: float) -> list[QuotaCounter]:
        sql = (
            "SELECT subject, dimension, window_start, used FROM quota_counters"
            " WHERE window_start >= ? ORDER BY subject, dimension, window_start"
        )
        rows = await self._call(lambda db: db.execute(sql, (since,)).fetchall(), write=False)
        return [QuotaCounter(s, d, float(w), float(u)) for s, d, w, u in rows]

    async def save_quota_counters(self, counters: Sequence[QuotaCounter]) -> None:
        if not counters:
            return
        sql = (
            "INSERT INTO quota_counters (subject, dimension, window_start, used)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT (subject, dimension, window_start)"
            " DO UPDATE SET used = excluded.used"
        )
        rows = [(c.subject, c.dimension, c.window_start, c.used) for c in counters]
        await self._call(lambda db: db.executemany(sql, rows), write=True)

    async def prune_quota_counters(self, before: float) -> int:
        sql = "DELETE FROM quota_counters WHERE window_start < ?"
        return await self._call(lambda db: db.execute(sql, (before,)).rowcount, write=True)


def _ref_columns(ref: ReplyRef) -> tuple[str, str]:
    return ref.place, json.dumps(list(ref.message_ids))


def _message_ids(column: str) -> tuple[str, ...]:
    try:
        ids = json.loads(column)
    except ValueError:
        log.warning("unreadable reply_message_ids %r; ignored", column)
        return ()
    return tuple(str(i) for i in ids) if isinstance(ids, list) else ()


def _transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work`` inside ``BEGIN IMMEDIATE`` … COMMIT, on the worker thread."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # not after a COMMIT that went through
            db.execute("ROLLBACK")
        raise
    return result


def _fetch(sql: str, params: Sequence[Any], db: sqlite3.Connection) -> list[Any]:
    return db.execute(sql, params).fetchall()


def _plain(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    return work(db)


def _conversation_id_sync(db: sqlite3.Connection, key: ConversationKey) -> int | None:
    rows = db.execute(
        "SELECT id FROM conversations WHERE storage_id = ?", (key.storage_id(),)
    ).fetchall()
    return int(rows[0][0]) if rows else None


def _upsert_conversation_sync(db: sqlite3.Connection, key: ConversationKey, now: float) -> int:
    row = (key.storage_id(), str(key.platform), key.space, key.channel, key.thread)
    # fetchall: a RETURNING statement is finished only once its rows are all read.
    rows = db.execute(_UPSERT_CONVERSATION_SQL, (*row, key.dm_user, now, now)).fetchall()
    return int(rows[0][0])


async def _execute(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> tuple[int, int | None]:
    """Run one statement; return (rowcount, lastrowid)."""
    cursor = await conn.execute(sql, params)
    try:
        return cursor.rowcount, cursor.lastrowid
    finally:
        await cursor.close()


async def _fetchall(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    async with conn.execute(sql, params) as cursor:
        return list(await cursor.fetchall())
