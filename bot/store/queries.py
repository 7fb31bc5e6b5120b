"""What both durable stores share: their SQL, row conversions and the window walk.

The SQL is written once, with ``?`` placeholders as SQLite takes them; ``numbered``
turns it into PostgreSQL's ``$1, $2, …``. Every statement here means the same in both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from typing import Any

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

__all__ = [
    "CHECKPOINT_SQL",
    "CONVERSATION_ID_SQL",
    "CONVERSATION_PREFS_SQL",
    "DELETE_CONVERSATION_SQL",
    "DELETE_MESSAGES_SQL",
    "INSERT_MESSAGE_SQL",
    "INSERT_USAGE_SQL",
    "ITER_USAGE_SQL",
    "LOAD_COUNTERS_SQL",
    "PRUNE_COUNTERS_SQL",
    "STREAMING_SQL",
    "UPDATE_MESSAGE_SQL",
    "UPSERT_CONVERSATION_SQL",
    "UPSERT_COUNTER_SQL",
    "USAGE_BATCH",
    "USAGE_SINCE_SQL",
    "USER_PREFS_SQL",
    "WINDOW_BATCH",
    "WINDOW_BY_KEY_SQL",
    "WINDOW_FIRST_BATCH",
    "WINDOW_SQL",
    "WindowWalk",
    "conversation_row",
    "counter_row",
    "merge_prefs",
    "numbered",
    "ref_columns",
    "set_conversation_pref_sql",
    "unfinished_replies",
    "upsert_user_pref_sql",
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
# The same by the conversation's storage id: one round trip less to a server.
WINDOW_BY_KEY_SQL = WINDOW_SQL.replace(
    "conversation_id = ?", f"conversation_id = ({CONVERSATION_ID_SQL})"
)
DELETE_MESSAGES_SQL = "DELETE FROM messages WHERE conversation_id = ?"
DELETE_CONVERSATION_SQL = "DELETE FROM conversations WHERE id = ?"
USER_PREFS_SQL = "SELECT model, system_prompt FROM user_prefs WHERE user_id = ?"
CONVERSATION_PREFS_SQL = "SELECT model, system_prompt FROM conversations WHERE storage_id = ?"
INSERT_USAGE_SQL = (
    "INSERT INTO usage (user_id, platform, model, prompt_tokens,"
    " completion_tokens, at, estimated) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
USAGE_SINCE_SQL = (
    "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
    " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(estimated), 0) FROM usage"
    " WHERE user_id = ? AND at >= ?"
)
ITER_USAGE_SQL = (
    "SELECT id, user_id, platform, model, prompt_tokens, completion_tokens, at,"
    " estimated FROM usage WHERE id > ? ORDER BY id LIMIT ?"
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

_PREF_COLUMNS = ("model", "system_prompt")


def upsert_user_pref_sql(column: str) -> str:
    """Set one of the user's prefs (``column``: model or system_prompt), keeping the other."""
    assert column in _PREF_COLUMNS  # a literal of ours, never user input
    return (
        f"INSERT INTO user_prefs (user_id, {column}, updated_at) VALUES (?, ?, ?)"
        f" ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column},"
        " updated_at = excluded.updated_at"
    )


def set_conversation_pref_sql(column: str) -> str:
    """Set one of a conversation's prefs (``column``: model or system_prompt)."""
    assert column in _PREF_COLUMNS
    return f"UPDATE conversations SET {column} = ? WHERE id = ?"


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
    )


def merge_prefs(mine: Sequence[Sequence[Any]], conversation: Sequence[Sequence[Any]]) -> Prefs:
    """Effective prefs from the rows of ``USER_PREFS_SQL`` and ``CONVERSATION_PREFS_SQL``
    (either may be empty): the conversation's, field by field, over the user's."""
    model, prompt = mine[0] if mine else (None, None)
    if conversation:
        model = conversation[0][0] if conversation[0][0] is not None else model
        prompt = conversation[0][1] if conversation[0][1] is not None else prompt
    return Prefs(model=model, system_prompt=prompt)


def usage_summary(row: Sequence[Any]) -> UsageSummary:
    """The row of ``USAGE_SINCE_SQL`` as a ``UsageSummary``."""
    requests, prompt, completion, estimated = row
    return UsageSummary(int(requests), int(prompt), int(completion), int(estimated))


def usage_entry(row: Sequence[Any]) -> UsageEntry:
    """A row of ``ITER_USAGE_SQL`` (its id first) as a ``UsageEntry``."""
    _, user_id, platform, model, prompt, completion, at, estimated = row
    user = UserRef(Platform(platform), user_id.removeprefix(f"{platform}:"))
    return UsageEntry(user, model, int(prompt), int(completion), float(at), bool(estimated))


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
