"""What both durable stores share: their SQL, row conversions and the window walk.

The SQL is written once, with ``?`` placeholders as SQLite takes them; ``numbered``
turns it into PostgreSQL's ``$1, $2, …``. Every statement here means the same in both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from typing import Any, get_args

from bot.types import (
    CachedAnswer,
    ChannelField,
    ChannelMode,
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

__all__ = [
    "CACHE_CLEAR_SQL",
    "CACHE_COUNT_SQL",
    "CACHE_EVICT_SQL",
    "CACHE_GET_SQL",
    "CACHE_PRUNE_SQL",
    "CACHE_PUT_SQL",
    "CHANNEL_SETTINGS_SQL",
    "CHECKPOINT_SQL",
    "CLAIM_EVENT_SQL",
    "CONVERSATION_ID_SQL",
    "CONVERSATION_PREFS_SQL",
    "COUNT_CONVERSATIONS_SQL",
    "DELETE_CONVERSATION_SQL",
    "DELETE_MESSAGES_SQL",
    "INSERT_MESSAGE_SQL",
    "INSERT_USAGE_SQL",
    "ITER_USAGE_SQL",
    "LOAD_COUNTERS_SQL",
    "PRUNE_CLAIMS_EVERY",
    "PRUNE_CLAIMS_SQL",
    "PRUNE_COUNTERS_SQL",
    "STREAMING_SQL",
    "UPDATE_MESSAGE_SQL",
    "UPSERT_CONVERSATION_SQL",
    "UPSERT_COUNTER_SQL",
    "USAGE_BATCH",
    "USAGE_BY_MODEL_SQL",
    "USAGE_SINCE_SQL",
    "USER_PREFS_SQL",
    "WINDOW_BATCH",
    "WINDOW_BY_KEY_SQL",
    "WINDOW_FIRST_BATCH",
    "WINDOW_SQL",
    "WindowWalk",
    "cache_row",
    "cached_answer",
    "channel_key",
    "channel_settings",
    "conversation_row",
    "counter_row",
    "merge_prefs",
    "numbered",
    "ref_columns",
    "set_channel_settings_sql",
    "set_conversation_pref_sql",
    "unfinished_replies",
    "upsert_user_pref_sql",
    "usage_by_model",
    "usage_entry",
    "usage_row",
    "usage_summary",
]

log = logging.getLogger(__name__)

WINDOW_BATCH = 64
WINDOW_FIRST_BATCH = 8
USAGE_BATCH = 500
MAX_ID = 2**63 - 1

# Served by messages_by_conversation, newest first: reads only the rows it returns.
WINDOW_SQL = (
    "SELECT id, role, content, tokens, status, author_id FROM messages"
    " WHERE conversation_id = ? AND id < ? AND status != 'failed' AND content != ''"
    " ORDER BY id DESC LIMIT ?"
)
INSERT_MESSAGE_SQL = (
    "INSERT INTO messages (conversation_id, role, author_id, content, platform_message_id,"
    " tokens, status, created_at, reply_place, reply_message_ids)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_MESSAGE_SQL = "UPDATE messages SET content = ?, tokens = ?, status = ? WHERE id = ?"
CHECKPOINT_SQL = (
    "UPDATE messages SET content = ?, tokens = ?, reply_place = ?,"
    " reply_message_ids = ? WHERE id = ? AND status = 'streaming'"
)
# Served by the partial index messages_streaming: reads only the streaming rows.
STREAMING_SQL = (
    "SELECT m.id, c.platform, c.space, c.channel, c.thread, c.dm_user, m.content, m.tokens,"
    " m.reply_place, m.reply_message_ids FROM messages AS m"
    " JOIN conversations AS c ON c.id = m.conversation_id"
    " WHERE m.status = 'streaming' ORDER BY m.id"
)
UPSERT_CONVERSATION_SQL = (
    "INSERT INTO conversations"
    " (storage_id, platform, space, channel, thread, dm_user, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (storage_id) DO UPDATE SET updated_at = excluded.updated_at"
    " RETURNING id"
)
CONVERSATION_ID_SQL = "SELECT id FROM conversations WHERE storage_id = ?"
COUNT_CONVERSATIONS_SQL = "SELECT COUNT(*) FROM conversations"
# The same by the conversation's storage id: one round trip less to a server.
WINDOW_BY_KEY_SQL = WINDOW_SQL.replace(
    "conversation_id = ?", f"conversation_id = ({CONVERSATION_ID_SQL})"
)
DELETE_MESSAGES_SQL = "DELETE FROM messages WHERE conversation_id = ?"
DELETE_CONVERSATION_SQL = "DELETE FROM conversations WHERE id = ?"
USER_PREFS_SQL = "SELECT model, system_prompt, model_strict FROM user_prefs WHERE user_id = ?"
CONVERSATION_PREFS_SQL = (
    "SELECT model, system_prompt, model_strict FROM conversations WHERE storage_id = ?"
)
INSERT_USAGE_SQL = (
    "INSERT INTO usage (user_id, platform, model, prompt_tokens,"
    " completion_tokens, at, estimated, cached) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
USAGE_SINCE_SQL = (
    "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
    " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(estimated), 0),"
    " COALESCE(SUM(cached), 0) FROM usage WHERE user_id = ? AND at >= ?"
)
# Served by usage_by_time: reads only the rows since.
USAGE_BY_MODEL_SQL = (
    "SELECT model, COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
    " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(estimated), 0),"
    " COALESCE(SUM(cached), 0) FROM usage WHERE at >= ? GROUP BY model ORDER BY model"
)
ITER_USAGE_SQL = (
    "SELECT id, user_id, platform, model, prompt_tokens, completion_tokens, at,"
    " estimated, cached FROM usage WHERE id > ? ORDER BY id LIMIT ?"
)
LOAD_COUNTERS_SQL = (
    "SELECT subject, dimension, window_start, used FROM quota_counters"
    " WHERE window_start >= ? ORDER BY subject, dimension, window_start"
)
UPSERT_COUNTER_SQL = (
    "INSERT INTO quota_counters (subject, dimension, window_start, used)"
    " VALUES (?, ?, ?, ?)"
    " ON CONFLICT (subject, dimension, window_start)"
    " DO UPDATE SET used = excluded.used"
)
PRUNE_COUNTERS_SQL = "DELETE FROM quota_counters WHERE window_start < ?"
CACHE_GET_SQL = (
    "SELECT model, answer, reasoning, prompt_tokens, completion_tokens, estimated, created_at"
    " FROM response_cache WHERE cache_key = ? AND created_at >= ?"
)
CACHE_PUT_SQL = (
    "INSERT INTO response_cache (cache_key, model, answer, reasoning, prompt_tokens,"
    " completion_tokens, estimated, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (cache_key) DO UPDATE SET model = excluded.model, answer = excluded.answer,"
    " reasoning = excluded.reasoning, prompt_tokens = excluded.prompt_tokens,"
    " completion_tokens = excluded.completion_tokens, estimated = excluded.estimated,"
    " created_at = excluded.created_at"
)
CACHE_PRUNE_SQL = "DELETE FROM response_cache WHERE created_at < ?"
CACHE_COUNT_SQL = "SELECT COUNT(*) FROM response_cache"
CACHE_CLEAR_SQL = "DELETE FROM response_cache"
# Served by response_cache_by_age: the oldest first.
CACHE_EVICT_SQL = (
    "DELETE FROM response_cache WHERE cache_key IN (SELECT cache_key FROM response_cache"
    " ORDER BY created_at, cache_key LIMIT ?)"
)
# Inserts a new claim, or takes over one older than the TTL; no row changed = claimed
# already (parameters: event id, now, now - ttl).
CLAIM_EVENT_SQL = (
    "INSERT INTO event_claims (event_id, claimed_at) VALUES (?, ?)"
    " ON CONFLICT (event_id) DO UPDATE SET claimed_at = excluded.claimed_at"
    " WHERE event_claims.claimed_at < ?"
)
PRUNE_CLAIMS_SQL = "DELETE FROM event_claims WHERE claimed_at < ?"
PRUNE_CLAIMS_EVERY = 256  # claims between deletions of expired ones
CHANNEL_SETTINGS_SQL = (
    "SELECT system_prompt, model, mode, updated_at, updated_by FROM channel_settings"
    " WHERE platform = ? AND space = ? AND channel = ?"
)
_CHANNEL_COLUMNS = frozenset(get_args(ChannelField))

_PREF_COLUMNS = frozenset({"model", "model_strict", "system_prompt"})


def upsert_user_pref_sql(columns: Collection[str]) -> str:
    """Set some of the user's prefs (``columns`` of model, model_strict, system_prompt;
    parameters: user id, their values in order, now), keeping the others."""
    assert set(columns) <= _PREF_COLUMNS  # literals of ours, never user input
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    updates = "".join(f"{name} = excluded.{name}, " for name in columns)
    return (
        f"INSERT INTO user_prefs (user_id, {names}, updated_at) VALUES (?, {marks}, ?)"
        f" ON CONFLICT (user_id) DO UPDATE SET {updates}updated_at = excluded.updated_at"
    )


def set_conversation_pref_sql(columns: Collection[str]) -> str:
    """Set some of a conversation's prefs (parameters: their values in order, its id)."""
    assert set(columns) <= _PREF_COLUMNS
    return f"UPDATE conversations SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"


def set_channel_settings_sql(columns: Collection[str]) -> str:
    """Upsert some of a channel's settings, keeping the others (parameters: platform,
    space, channel, the values of ``columns`` in order, now, by whom)."""
    if not columns or not set(columns) <= _CHANNEL_COLUMNS:  # names go into the SQL
        raise ValueError(f"not channel settings: {list(columns)}")
    updates = "".join(f" {c} = excluded.{c}," for c in columns)
    return (
        f"INSERT INTO channel_settings (platform, space, channel, {', '.join(columns)},"
        f" updated_at, updated_by) VALUES ({', '.join('?' * (len(columns) + 5))})"
        f" ON CONFLICT (platform, space, channel) DO UPDATE SET{updates}"
        " updated_at = excluded.updated_at, updated_by = excluded.updated_by"
    )


def channel_settings(rows: Sequence[Sequence[Any]]) -> ChannelSettings:
    """The rows of ``CHANNEL_SETTINGS_SQL`` (none or one) as ``ChannelSettings``."""
    if not rows:
        return ChannelSettings()
    prompt, model, mode, updated_at, updated_by = rows[0]
    return ChannelSettings(prompt, model, ChannelMode(mode), float(updated_at), updated_by)


def channel_key(channel: ChannelRef) -> tuple[str, str, str]:
    """The primary key of ``channel``'s row of channel_settings."""
    return (str(channel.platform), channel.space, channel.channel)


def cache_row(key: str, answer: CachedAnswer) -> tuple[Any, ...]:
    """The parameters of ``CACHE_PUT_SQL``."""
    a = answer
    row = (key, a.model, a.text, a.reasoning, a.prompt_tokens, a.completion_tokens)
    return (*row, int(a.estimated), float(a.created_at))


def cached_answer(rows: Sequence[Sequence[Any]]) -> CachedAnswer | None:
    """The rows of ``CACHE_GET_SQL`` (none or one) as a ``CachedAnswer``."""
    if not rows:
        return None
    model, answer, reasoning, prompt, completion, estimated, created_at = rows[0]
    return CachedAnswer(
        model, answer, reasoning, int(prompt), int(completion), float(created_at), bool(estimated)
    )


def numbered(sql: str) -> str:
    """``sql`` with each ``?`` replaced by ``$1``, ``$2``, … (PostgreSQL's placeholders).

    Our statements hold no ``?`` inside string literals, so a plain scan is exact.
    """
    parts = sql.split("?")
    out = [parts[0]]
    for n, part in enumerate(parts[1:], start=1):
        out.append(f"${n}{part}")
    return "".join(out)


def conversation_row(key: ConversationKey, now: float) -> tuple[Any, ...]:
    """The parameters of ``UPSERT_CONVERSATION_SQL`` for ``key``."""
    row = (key.storage_id(), str(key.platform), key.space, key.channel, key.thread)
    return (*row, key.dm_user, now, now)


def ref_columns(ref: ReplyRef) -> tuple[str, str]:
    """``reply_place`` and ``reply_message_ids`` (a JSON array) of ``ref``."""
    return ref.place, json.dumps(list(ref.message_ids))


def _message_ids(column: str) -> tuple[str, ...]:
    try:
        ids = json.loads(column)
    except ValueError:
        log.warning("unreadable reply_message_ids %r; ignored", column)
        return ()
    return tuple(str(i) for i in ids) if isinstance(ids, list) else ()


def unfinished_replies(
    rows: Sequence[Sequence[Any]], platforms: Collection[Platform]
) -> list[UnfinishedReply]:
    """The rows of ``STREAMING_SQL`` that are on ``platforms``, as ``UnfinishedReply``."""
    wanted = {str(p) for p in platforms}
    found: list[UnfinishedReply] = []
    for message_id, platform, space, channel, thread, dm_user, *rest in rows:
        if platform not in wanted:
            continue
        content, tokens, place, ids = rest
        key = ConversationKey(Platform(platform), space, channel, thread, dm_user)
        ref = ReplyRef(place, _message_ids(ids))
        found.append(UnfinishedReply(int(message_id), key, content, int(tokens), ref))
    return found


def usage_row(entry: UsageEntry) -> tuple[Any, ...]:
    """The parameters of ``INSERT_USAGE_SQL`` for ``entry``."""
    user = entry.user
    return (
        user.storage_id(),
        str(user.platform),
        entry.model,
        entry.prompt_tokens,
        entry.completion_tokens,
        float(entry.at),
        int(entry.estimated),
        int(entry.cached),
    )


def merge_prefs(mine: Sequence[Sequence[Any]], conversation: Sequence[Sequence[Any]]) -> Prefs:
    """Effective prefs from the rows of ``USER_PREFS_SQL`` and ``CONVERSATION_PREFS_SQL``
    (either may be empty): the conversation's, field by field, over the user's; strict
    goes with the model it was set with."""
    model, prompt, strict = mine[0] if mine else (None, None, None)
    if conversation:
        c_model, c_prompt, c_strict = conversation[0]
        if c_model is not None:
            model, strict = c_model, c_strict
        prompt = c_prompt if c_prompt is not None else prompt
    return Prefs(model=model, system_prompt=prompt, strict=bool(strict))


def usage_summary(row: Sequence[Any]) -> UsageSummary:
    """The row of ``USAGE_SINCE_SQL`` as a ``UsageSummary``."""
    requests, prompt, completion, estimated, cached = row
    return UsageSummary(int(requests), int(prompt), int(completion), int(estimated), int(cached))


def usage_by_model(rows: Sequence[Sequence[Any]]) -> dict[str, UsageSummary]:
    """The rows of ``USAGE_BY_MODEL_SQL`` as totals per model."""
    return {str(row[0]): usage_summary(row[1:]) for row in rows}


def usage_entry(row: Sequence[Any]) -> UsageEntry:
    """A row of ``ITER_USAGE_SQL`` (its id first) as a ``UsageEntry``."""
    _, user_id, platform, model, prompt, completion, at, estimated, cached = row
    user = UserRef(Platform(platform), user_id.removeprefix(f"{platform}:"))
    return UsageEntry(
        user, model, int(prompt), int(completion), float(at), bool(estimated), bool(cached)
    )


def counter_row(counter: QuotaCounter) -> tuple[str, str, float, float]:
    """The parameters of ``UPSERT_COUNTER_SQL`` for ``counter``."""
    return (counter.subject, counter.dimension, float(counter.window_start), float(counter.used))


class WindowWalk:
    """The newest messages of a conversation that fit a token budget, gathered from
    batches of ``WINDOW_SQL`` rows (newest first) until one would overflow.

    Batches start small and double: a budget usually fills within a few messages, and a
    big first batch would read rows only long conversations have. Use::

        while (limit := walk.next_limit()) is not None:
            walk.take(fetch(conversation_id, walk.before, limit))
        return walk.messages()
    """

    def __init__(self, token_budget: int, max_messages: int) -> None:
        self.before = MAX_ID
        self._budget, self._max = token_budget, max_messages
        self._used = 0
        self._batch = WINDOW_FIRST_BATCH
        self._limit = 0
        self._picked: list[StoredMessage] = []
        self._done = token_budget < 0 or max_messages <= 0

    def next_limit(self) -> int | None:
        """How many rows to fetch next; None once the window is complete."""
        if self._done or len(self._picked) >= self._max:
            return None
        self._limit = min(self._batch, self._max - len(self._picked))
        self._batch = min(self._batch * 2, WINDOW_BATCH)
        return self._limit

    def take(self, rows: Sequence[Sequence[Any]]) -> None:
        """Add the batch just fetched (fewer rows than asked: the conversation's start)."""
        for message_id, role, content, tokens, status, author_id in rows:
            if self._used + tokens > self._budget:
                self._done = True
                return
            self._used += tokens
            self._picked.append(StoredMessage(role, content, tokens, TurnStatus(status), author_id))
            self.before = message_id
        if len(rows) < self._limit:
            self._done = True

    def messages(self) -> list[StoredMessage]:
        """The window, oldest first."""
        return self._picked[::-1]
