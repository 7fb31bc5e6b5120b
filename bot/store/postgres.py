"""``PostgresStore``: the durable ``Store`` on a PostgreSQL server, over an asyncpg pool.

Several bot processes may share one database: every write is one transaction, ids
come from identity columns (never reused), and the schema is migrated under an
advisory lock. The SQL is ``bot.store.queries``', shared with ``SqliteStore``. Every
asyncpg / OS error is turned into ``StoreError`` once, by ``map_pg_errors``; no text it
produces holds the password of ``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bot.errors import StoreError
from bot.ports import Clock
from bot.store.migrations import migrate_postgres
from bot.store.pg_fleet import PgFleet
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
    WINDOW_BY_KEY_SQL,
    WindowWalk,
    cache_row,
    cached_answer,
    channel_key,
    channel_settings,
    conversation_row,
    counter_row,
    merge_prefs,
    numbered,
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

__all__ = ["PostgresStore", "map_pg_errors", "masked_url"]

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 10
CONNECT_TIMEOUT_S = 10.0
# A caller waits this long for a free connection before "busy": longer than any turn's
# store call should take, short enough that a user hears back.
ACQUIRE_TIMEOUT_S = 10.0
# A statement that runs longer is cancelled: a hung server must not hang turns.
COMMAND_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 2.0

_WINDOW = numbered(WINDOW_BY_KEY_SQL)
_INSERT_MESSAGE = numbered(INSERT_MESSAGE_SQL + " RETURNING id")
_UPDATE_MESSAGE = numbered(UPDATE_MESSAGE_SQL)
_CHECKPOINT = numbered(CHECKPOINT_SQL)
_UPSERT_CONVERSATION = numbered(UPSERT_CONVERSATION_SQL)
# FOR UPDATE: a reset waits for (and then removes) a message being added concurrently.
_LOCK_CONVERSATION = numbered(CONVERSATION_ID_SQL + " FOR UPDATE")
_DELETE_MESSAGES = numbered(DELETE_MESSAGES_SQL)
_DELETE_CONVERSATION = numbered(DELETE_CONVERSATION_SQL)
_USER_PREFS = numbered(USER_PREFS_SQL)
_CONVERSATION_PREFS = numbered(CONVERSATION_PREFS_SQL)
_INSERT_USAGE = numbered(INSERT_USAGE_SQL)
_USAGE_SINCE = numbered(USAGE_SINCE_SQL)
_ITER_USAGE = numbered(ITER_USAGE_SQL)
_USAGE_BY_MODEL = numbered(USAGE_BY_MODEL_SQL)
_LOAD_COUNTERS = numbered(LOAD_COUNTERS_SQL)
_UPSERT_COUNTER = numbered(UPSERT_COUNTER_SQL)
_PRUNE_COUNTERS = numbered(PRUNE_COUNTERS_SQL)
_CHANNEL_SETTINGS = numbered(CHANNEL_SETTINGS_SQL)
_CACHE_GET = numbered(CACHE_GET_SQL)
_CACHE_PUT = numbered(CACHE_PUT_SQL)
_CACHE_PRUNE = numbered(CACHE_PRUNE_SQL)
_CACHE_EVICT = numbered(CACHE_EVICT_SQL)
_CLAIM_EVENT = numbered(CLAIM_EVENT_SQL)
_PRUNE_CLAIMS = numbered(PRUNE_CLAIMS_SQL)


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:  # an unparseable port: show nothing of what follows the scheme
        return url.split("://", 1)[0] + "://***"
    return urlunsplit(parts._replace(netloc=netloc))


def _password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


# The connection is gone or in a state nobody can vouch for (the server restarting, a
# timeout mid-statement, asyncpg's own "another operation is in progress").
_BROKEN = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


@contextmanager
def map_pg_errors(
    url: str, *, opening: bool = False, setting: str = "DATABASE_URL"
) -> Iterator[None]:
    """Translate asyncpg and OS errors into ``StoreError``; ``detail`` names the server.

    With ``opening`` the text is for the operator starting the bot and names ``setting``
    and the URL (password masked); otherwise it may reach chat users and does not.
    """
    try:
        yield
    except (asyncpg.PostgresError, *_BROKEN, ValueError) as exc:
        if isinstance(exc, ValueError) and not opening:
            raise  # a bug of ours, not the database's
        where = masked_url(url)
        text = f"{type(exc).__name__}: {exc}"
        secret = _password(url)
        if secret:
            text = text.replace(secret, "***")
        user_text = _user_text(exc, f"{setting}={where}", opening)
        raise StoreError(user_text, detail=f"{where}: {text}") from exc


def _user_text(exc: BaseException, where: str, opening: bool) -> str | None:
    if opening:
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            why = "the server refused the user name or password"
        elif isinstance(exc, asyncpg.InvalidCatalogNameError):
            why = "that database does not exist (create it first)"
        elif isinstance(exc, TimeoutError):
            why = f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
        elif isinstance(exc, ValueError):
            why = "the URL can't be read"
        elif isinstance(exc, _BROKEN):
            why = "can't connect (is the server running and reachable from here?)"
        else:
            why = f"the server said: {type(exc).__name__}"
        return f"{where}: {why}. Fix the URL or the server, then try again."
    if isinstance(exc, asyncpg.exceptions.InsufficientResourcesError):
        return "The bot's database is busy; please try again in a moment."
    return None  # StoreError.default_text: unavailable, not saved, try again


class PostgresStore:
    """``Store`` on PostgreSQL at ``url`` (``postgresql://user:password@host:port/db``).

    ``open()`` creates a pool of up to ``pool_size`` connections and applies pending
    migrations; connections the server dropped (a restart) are replaced on the next
    call, so one call fails and the next works. ``aclose()`` waits briefly for calls in
    flight, then closes every connection.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        clock: Clock | None = None,
        acquire_timeout_s: float = ACQUIRE_TIMEOUT_S,
    ) -> None:
        self._url = url
        self._pool_size = pool_size
        self._clock = clock
        self._acquire_timeout_s = acquire_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._fleet: PgFleet | None = None
        self._claims = 0

    @property
    def where(self) -> str:
        """The server and database, password masked."""
        return masked_url(self._url)

    # ----- lifecycle -----

    async def open(self) -> None:
        if self._pool is not None:
            return
        with map_pg_errors(self._url, opening=True):
            pool = await asyncpg.create_pool(
                self._url,
                # 0: connections open on demand; asyncpg would otherwise keep reopening
                # a floor of them in the background, a traceback per try, while the
                # server is down.
                min_size=0,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
            )
            try:
                async with pool.acquire() as conn:
                    await migrate_postgres(conn, where=self.where)
            except BaseException:
                pool.terminate()
                raise
        self._pool = pool
        self._fleet = PgFleet(self._connection)

    async def aclose(self) -> None:
        pool, self._pool, self._fleet = self._pool, None, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("%s: closing the pool: %s; connections dropped", self.where, exc)
            pool.terminate()

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    # ----- connections and transactions -----

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for one call; "busy" when none frees up in time."""
        pool = self._pool
        if pool is None:
            raise StoreError(detail=f"{self.where}: store used before open() or after aclose()")
        with map_pg_errors(self._url):
            try:
                conn = await pool.acquire(timeout=self._acquire_timeout_s)
            except TimeoutError:
                raise StoreError(
                    "The bot's database is busy; please try again in a moment.",
                    detail=f"{self.where}: no free connection in the pool "
                    f"({self._pool_size}, DATABASE_POOL_SIZE) within {self._acquire_timeout_s} s",
                ) from None
            try:
                yield conn
            except _BROKEN:
                # Not back into the pool as it is. And the server may have restarted: the
                # idle connections may be dead too, while asyncpg has not noticed yet (it
                # raises "another operation is in progress" on their next use). Replace
                # them all, so that this call alone fails and the next one works.
                conn.terminate()
                await pool.expire_connections()
                raise
            finally:
                await pool.release(conn)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction on a pooled connection; rolled back on any exception."""
        async with self._connection() as conn, conn.transaction():
            yield conn

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
        async with self._transaction() as conn:
            conversation_id = await conn.fetchval(_UPSERT_CONVERSATION, *conversation_row(key, now))
            row = (conversation_id, role, author_id, content, platform_message_id, tokens)
            message_id = await conn.fetchval(_INSERT_MESSAGE, *row, str(status), now, place, ids)
        return int(message_id)

    async def update_message(
        self, message_id: int, *, content: str, tokens: int, status: TurnStatus
    ) -> None:
        """Rewrite a stored message; a message already forgotten by ``reset`` is ignored."""
        async with self._transaction() as conn:
            await conn.execute(_UPDATE_MESSAGE, content, tokens, str(status), message_id)

    async def checkpoint_reply(
        self, message_id: int, text: str, tokens: int, ref: ReplyRef
    ) -> None:
        async with self._transaction() as conn:
            await conn.execute(_CHECKPOINT, text, tokens, *ref_columns(ref), message_id)

    async def streaming_replies(self, platforms: Collection[Platform]) -> list[UnfinishedReply]:
        async with self._connection() as conn:
            rows = await conn.fetch(STREAMING_SQL)
        return unfinished_replies(rows, platforms)

    async def window(
        self, key: ConversationKey, *, token_budget: int, max_messages: int = 1000
    ) -> list[StoredMessage]:
        """Newest usable messages that fit, oldest first; reads only what it returns
        (batches of ``WindowWalk`` down ``messages_by_conversation``)."""
        walk = WindowWalk(token_budget, max_messages)
        async with self._connection() as conn:
            while (limit := walk.next_limit()) is not None:
                walk.take(await conn.fetch(_WINDOW, key.storage_id(), walk.before, limit))
        return walk.messages()

    async def reset(self, key: ConversationKey) -> int:
        async with self._transaction() as conn:
            conversation_id = await conn.fetchval(_LOCK_CONVERSATION, key.storage_id())
            if conversation_id is None:
                return 0
            removed = _count(await conn.execute(_DELETE_MESSAGES, conversation_id))
            # The row also carries the conversation's prefs: forget them with it.
            await conn.execute(_DELETE_CONVERSATION, conversation_id)
        return removed

    async def count_conversations(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(COUNT_CONVERSATIONS_SQL))

    # ----- preferences -----

    async def prefs(self, user: UserRef, key: ConversationKey | None) -> Prefs:
        async with self._connection() as conn:
            mine = await conn.fetch(_USER_PREFS, user.storage_id())
            if key is None:
                return merge_prefs(mine, [])
            conversation = await conn.fetch(_CONVERSATION_PREFS, key.storage_id())
        return merge_prefs(mine, conversation)

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
        async with self._transaction() as conn:
            if isinstance(target, UserRef):
                sql = numbered(upsert_user_pref_sql(columns))
                await conn.execute(sql, target.storage_id(), *columns.values(), now)
            else:
                conversation_id = await conn.fetchval(
                    _UPSERT_CONVERSATION, *conversation_row(target, now)
                )
                sql = numbered(set_conversation_pref_sql(columns))
                await conn.execute(sql, *columns.values(), conversation_id)

    # ----- channel settings -----

    async def channel_settings(self, channel: ChannelRef) -> ChannelSettings:
        async with self._connection() as conn:
            return channel_settings(await conn.fetch(_CHANNEL_SETTINGS, *channel_key(channel)))

    async def set_channel_settings(
        self, channel: ChannelRef, changes: Mapping[ChannelField, str | None], *, by: str
    ) -> None:
        sql = numbered(set_channel_settings_sql(list(changes)))
        async with self._transaction() as conn:
            await conn.execute(sql, *channel_key(channel), *changes.values(), self._now(), by)

    # ----- usage ledger -----

    async def record_usage(self, entry: UsageEntry) -> None:
        async with self._transaction() as conn:
            await conn.execute(_INSERT_USAGE, *usage_row(entry))

    async def usage_since(self, user: UserRef, since: float) -> UsageSummary:
        async with self._connection() as conn:
            row = await conn.fetchrow(_USAGE_SINCE, user.storage_id(), float(since))
        assert row is not None  # an aggregate always returns its row
        return usage_summary(row)

    async def usage_by_model(self, since: float) -> dict[str, UsageSummary]:
        async with self._connection() as conn:
            return usage_by_model(await conn.fetch(_USAGE_BY_MODEL, float(since)))

    async def iter_usage(self) -> AsyncIterator[UsageEntry]:
        """Every ledger row in the order recorded, fetched in batches (a connection is
        held per batch only, so a long export never starves the bot)."""
        after = 0
        while True:
            async with self._connection() as conn:
                rows = await conn.fetch(_ITER_USAGE, after, USAGE_BATCH)
            for row in rows:
                after = row[0]
                yield usage_entry(row)
            if len(rows) < USAGE_BATCH:
                return

    # ----- quota counters -----

    async def load_quota_counters(self, since: float) -> list[QuotaCounter]:
        async with self._connection() as conn:
            rows = await conn.fetch(_LOAD_COUNTERS, float(since))
        return [QuotaCounter(s, d, float(w), float(u)) for s, d, w, u in rows]

    async def save_quota_counters(self, counters: Sequence[QuotaCounter]) -> None:
        if not counters:
            return
        async with self._transaction() as conn:
            await conn.executemany(_UPSERT_COUNTER, [counter_row(c) for c in counters])

    async def prune_quota_counters(self, before: float) -> int:
        async with self._transaction() as conn:
            return _count(await conn.execute(_PRUNE_COUNTERS, float(before)))

    # ----- response cache -----

    async def cache_get(self, key: str, *, fresh_since: float) -> CachedAnswer | None:
        async with self._connection() as conn:
            return cached_answer(await conn.fetch(_CACHE_GET, key, float(fresh_since)))

    async def cache_put(
        self, key: str, answer: CachedAnswer, *, max_entries: int, stale_before: float
    ) -> None:
        async with self._transaction() as conn:
            await conn.execute(_CACHE_PUT, *cache_row(key, answer))
            await conn.execute(_CACHE_PRUNE, float(stale_before))
            count = await conn.fetchval(CACHE_COUNT_SQL)
            if count > max_entries:
                await conn.execute(_CACHE_EVICT, count - max(0, max_entries))

    async def cache_clear(self) -> int:
        async with self._transaction() as conn:
            return _count(await conn.execute(CACHE_CLEAR_SQL))

    async def cache_size(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(CACHE_COUNT_SQL))

    # ----- fleet coordination -----

    async def claim_event(self, event_id: str, *, ttl_s: float) -> bool:
        now = self._now()
        self._claims += 1
        async with self._transaction() as conn:
            if self._claims % PRUNE_CLAIMS_EVERY == 1:
                await conn.execute(_PRUNE_CLAIMS, now - ttl_s)
            return _count(await conn.execute(_CLAIM_EVENT, event_id, now, now - ttl_s)) == 1

    def turn_lease(self, conversation: ConversationKey) -> AbstractAsyncContextManager[None]:
        if self._fleet is None:
            raise StoreError(detail=f"{self.where}: store used before open() or after aclose()")
        return self._fleet.turn_lease(conversation)


def _count(status: str) -> int:
    """The row count of a command tag such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])
