"""``SqliteStore``: the durable ``Store`` over one aiosqlite connection to a WAL-mode file.

One connection serialises statements: every transaction and every read is one function
run whole on aiosqlite's worker thread, so concurrent callers never interleave and
nobody sees another caller's uncommitted rows. Writes run in ``BEGIN IMMEDIATE`` …
COMMIT and roll back on any exception; a cancelled caller's call still runs to its end.
Every sqlite3 / OS error is turned into ``StoreError`` once, by ``map_store_errors``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.errors import StoreError
from bot.ports import Clock
from bot.store.migrations import migrate
from bot.store.queries import (
    CACHE_CLEAR_SQL,
    CACHE_COUNT_SQL,
    CACHE_EVICT_SQL,
    CACHE_GET_SQL,
    CACHE_PRUNE_SQL,
    CACHE_PUT_SQL,
    CHANNEL_SETTINGS_SQL,
    CHECKPOINT_SQL,
    CLAIM_EVENT_SQL,
    CONVERSATION_ID_SQL,
    CONVERSATION_PREFS_SQL,
    COUNT_CONVERSATIONS_SQL,
    DELETE_CONVERSATION_SQL,
    DELETE_MESSAGES_SQL,
    INSERT_MESSAGE_SQL,
    INSERT_USAGE_SQL,
    ITER_USAGE_SQL,
    LOAD_COUNTERS_SQL,
    PRUNE_CLAIMS_EVERY,
    PRUNE_CLAIMS_SQL,
    PRUNE_COUNTERS_SQL,
    STREAMING_SQL,
    UPDATE_MESSAGE_SQL,
    UPSERT_CONVERSATION_SQL,
    UPSERT_COUNTER_SQL,
    USAGE_BATCH,
    USAGE_BY_MODEL_SQL,
    USAGE_SINCE_SQL,
    USER_PREFS_SQL,
    WINDOW_SQL,
    WindowWalk,
    cache_row,
    cached_answer,
    channel_key,
    channel_settings,
    conversation_row,
    counter_row,
    merge_prefs,
    ref_columns,
    set_channel_settings_sql,
    set_conversation_pref_sql,
    unfinished_replies,
    upsert_user_pref_sql,
    usage_by_model,
    usage_entry,
    usage_row,
    usage_summary,
)
from bot.types import (
    CachedAnswer,
    ChannelField,
    ChannelRef,
    ChannelSettings,
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

_CORRUPT_CODES = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
_UNWRITABLE_CODES = ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_FULL")
_BUSY_CODES = ("SQLITE_BUSY", "SQLITE_LOCKED")


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
        self._claims = 0

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
        conn, self._conn = self._conn, None
        if conn is not None:
            with map_store_errors(self._path):
                await conn.close()  # queued after the calls in flight, which finish first

    async def ping(self) -> None:
        await self._call(lambda db: db.execute("SELECT 1").fetchall(), write=False)

    # ----- transactions -----

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError(detail=f"{self._path}: store used before open() or after aclose()")
        return self._conn

    async def _call(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``work`` on the worker thread in one hop, a write as one ``BEGIN
        IMMEDIATE`` … COMMIT (rolled back if it raises).

        A statement through aiosqlite costs 2–3 hops to its thread; a turn made ~33.
        Every transaction and read here is one such call. ``work`` runs whole even if the
        caller is cancelled, so a write never stays open. No lock: the one worker thread
        runs the queued calls one after another, each whole, so they cannot interleave;
        a lock here would let only one call wait on the thread at a time, and under load
        each would also wait for the busy event loop to pass the lock on (200 turns at
        once queued ~1 s behind it before their model request).
        """
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
        place, ids = ref_columns(reply_ref or ReplyRef())

        def insert(db: sqlite3.Connection) -> int | None:
            conversation_id = _upsert_conversation_sync(db, key, now)
            row = (conversation_id, role, author_id, content, platform_message_id, tokens)
            return db.execute(INSERT_MESSAGE_SQL, (*row, str(status), now, place, ids)).lastrowid

        message_id = await self._call(insert, write=True)
        assert message_id is not None  # an INSERT always sets lastrowid
        return message_id

    async def update_message(
        self, message_id: int, *, content: str, tokens: int, status: TurnStatus
    ) -> None:
        """Rewrite a stored message; a message already forgotten by ``reset`` is ignored."""
        params = (content, tokens, str(status), message_id)
        await self._call(lambda db: db.execute(UPDATE_MESSAGE_SQL, params), write=True)

    async def checkpoint_reply(
        self, message_id: int, text: str, tokens: int, ref: ReplyRef
    ) -> None:
        params = (text, tokens, *ref_columns(ref), message_id)
        await self._call(lambda db: db.execute(CHECKPOINT_SQL, params), write=True)

    async def streaming_replies(self, platforms: Collection[Platform]) -> list[UnfinishedReply]:
        rows = await self._call(lambda db: db.execute(STREAMING_SQL).fetchall(), write=False)
        return unfinished_replies(rows, platforms)

    async def window(
        self, key: ConversationKey, *, token_budget: int, max_messages: int = 1000
    ) -> list[StoredMessage]:
        """Newest usable messages that fit, oldest first; reads only what it returns.

        Walks ``messages_by_conversation`` backwards in batches (``WindowWalk``) and
        stops at the first message that would overflow the budget. Failed and empty
        messages are skipped.
        """
        walk = WindowWalk(token_budget, max_messages)

        def run(db: sqlite3.Connection) -> None:
            conversation_id = _conversation_id_sync(db, key)
            if conversation_id is None:
                return
            while (limit := walk.next_limit()) is not None:
                walk.take(db.execute(WINDOW_SQL, (conversation_id, walk.before, limit)).fetchall())

        await self._call(run, write=False)
        return walk.messages()

    async def reset(self, key: ConversationKey) -> int:
        def forget(db: sqlite3.Connection) -> int:
            conversation_id = _conversation_id_sync(db, key)
            if conversation_id is None:
                return 0
            removed = db.execute(DELETE_MESSAGES_SQL, (conversation_id,)).rowcount
            # The row also carries the conversation's prefs: forget them with it.
            db.execute(DELETE_CONVERSATION_SQL, (conversation_id,))
            return int(removed)

        return await self._call(forget, write=True)

    async def count_conversations(self) -> int:
        rows = await self._call(functools.partial(_fetch, COUNT_CONVERSATIONS_SQL, ()), write=False)
        return int(rows[0][0])

    # ----- preferences -----

    async def prefs(self, user: UserRef, key: ConversationKey | None) -> Prefs:
        def read(db: sqlite3.Connection) -> Prefs:
            mine = db.execute(USER_PREFS_SQL, (user.storage_id(),)).fetchall()
            if key is None:
                return merge_prefs(mine, [])
            conversation = db.execute(CONVERSATION_PREFS_SQL, (key.storage_id(),)).fetchall()
            return merge_prefs(mine, conversation)

        return await self._call(read, write=False)

    async def set_model(
        self, target: UserRef | ConversationKey, model: str | None, *, strict: bool = False
    ) -> None:
        await self._set_pref(target, {"model": model, "model_strict": 1 if strict else None})

    async def set_system_prompt(
        self, target: UserRef | ConversationKey, prompt: str | None
    ) -> None:
        await self._set_pref(target, {"system_prompt": prompt})

    async def _set_pref(
        self, target: UserRef | ConversationKey, columns: dict[str, str | int | None]
    ) -> None:
        now = self._now()

        def store(db: sqlite3.Connection) -> None:
            if isinstance(target, UserRef):
                sql = upsert_user_pref_sql(columns)
                db.execute(sql, (target.storage_id(), *columns.values(), now))
            else:
                conversation_id = _upsert_conversation_sync(db, target, now)
                sql = set_conversation_pref_sql(columns)
                db.execute(sql, (*columns.values(), conversation_id))

        await self._call(store, write=True)

    # ----- channel settings -----

    async def channel_settings(self, channel: ChannelRef) -> ChannelSettings:
        rows = await self._call(
            functools.partial(_fetch, CHANNEL_SETTINGS_SQL, channel_key(channel)), write=False
        )
        return channel_settings(rows)

    async def set_channel_settings(
        self, channel: ChannelRef, changes: Mapping[ChannelField, str | None], *, by: str
    ) -> None:
        sql = set_channel_settings_sql(list(changes))
        params = (*channel_key(channel), *changes.values(), self._now(), by)
        await self._call(lambda db: db.execute(sql, params), write=True)

    # ----- usage ledger -----

    async def record_usage(self, entry: UsageEntry) -> None:
        params = usage_row(entry)
        await self._call(lambda db: db.execute(INSERT_USAGE_SQL, params), write=True)

    async def usage_since(self, user: UserRef, since: float) -> UsageSummary:
        params = (user.storage_id(), since)
        rows = await self._call(functools.partial(_fetch, USAGE_SINCE_SQL, params), write=False)
        return usage_summary(rows[0])

    async def usage_by_model(self, since: float) -> dict[str, UsageSummary]:
        rows = await self._call(
            functools.partial(_fetch, USAGE_BY_MODEL_SQL, (since,)), write=False
        )
        return usage_by_model(rows)

    async def iter_usage(self) -> AsyncIterator[UsageEntry]:
        """Every ledger row in the order recorded, fetched in batches.

        The lock is held per batch only, so a long export never stalls the bot.
        """
        after = 0
        while True:
            rows = await self._call(
                functools.partial(_fetch, ITER_USAGE_SQL, (after, USAGE_BATCH)), write=False
            )
            for row in rows:
                after = row[0]
                yield usage_entry(row)
            if len(rows) < USAGE_BATCH:
                return

    # ----- quota counters -----

    async def load_quota_counters(self, since: float) -> list[QuotaCounter]:
        rows = await self._call(functools.partial(_fetch, LOAD_COUNTERS_SQL, (since,)), write=False)
        return [QuotaCounter(s, d, float(w), float(u)) for s, d, w, u in rows]

    async def save_quota_counters(self, counters: Sequence[QuotaCounter]) -> None:
        if not counters:
            return
        rows = [counter_row(c) for c in counters]
        await self._call(lambda db: db.executemany(UPSERT_COUNTER_SQL, rows), write=True)

    async def prune_quota_counters(self, before: float) -> int:
        return await self._call(
            lambda db: int(db.execute(PRUNE_COUNTERS_SQL, (before,)).rowcount), write=True
        )

    # ----- response cache -----

    async def cache_get(self, key: str, *, fresh_since: float) -> CachedAnswer | None:
        rows = await self._call(
            functools.partial(_fetch, CACHE_GET_SQL, (key, fresh_since)), write=False
        )
        return cached_answer(rows)

    async def cache_put(
        self, key: str, answer: CachedAnswer, *, max_entries: int, stale_before: float
    ) -> None:
        row = cache_row(key, answer)

        def put(db: sqlite3.Connection) -> None:
            db.execute(CACHE_PUT_SQL, row)
            db.execute(CACHE_PRUNE_SQL, (stale_before,))
            (count,) = db.execute(CACHE_COUNT_SQL).fetchone()
            if count > max_entries:
                db.execute(CACHE_EVICT_SQL, (count - max(0, max_entries),))

        await self._call(put, write=True)

    async def cache_clear(self) -> int:
        return await self._call(lambda db: db.execute(CACHE_CLEAR_SQL).rowcount, write=True)

    async def cache_size(self) -> int:
        rows = await self._call(functools.partial(_fetch, CACHE_COUNT_SQL, ()), write=False)
        return int(rows[0][0])

    # ----- fleet coordination -----

    async def claim_event(self, event_id: str, *, ttl_s: float) -> bool:
        now = self._now()
        self._claims += 1
        prune = self._claims % PRUNE_CLAIMS_EVERY == 1

        def claim(db: sqlite3.Connection) -> bool:
            if prune:
                db.execute(PRUNE_CLAIMS_SQL, (now - ttl_s,))
            cursor = db.execute(CLAIM_EVENT_SQL, (event_id, now, now - ttl_s))
            return cursor.rowcount == 1

        return await self._call(claim, write=True)

    def turn_lease(self, conversation: ConversationKey) -> AbstractAsyncContextManager[None]:
        # One process per SQLite file: the engine's own per-conversation lock orders turns.
        return contextlib.nullcontext()


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
    rows = db.execute(CONVERSATION_ID_SQL, (key.storage_id(),)).fetchall()
    return int(rows[0][0]) if rows else None


def _upsert_conversation_sync(db: sqlite3.Connection, key: ConversationKey, now: float) -> int:
    # fetchall: a RETURNING statement is finished only once its rows are all read.
    rows = db.execute(UPSERT_CONVERSATION_SQL, conversation_row(key, now)).fetchall()
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
