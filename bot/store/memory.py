"""``InMemoryStore``: the ``Store`` contract kept in dicts (tests, ``chat --ephemeral``).

No method awaits, so each call is atomic on the event loop without a lock. Semantics
match ``SqliteStore`` exactly; ``tests/contract/test_store_contract.py`` holds both to it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from bot.ports import Clock
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

__all__ = ["InMemoryStore"]

_MAX_CLAIMS = 100_000  # event ids remembered; a process never sees that many retries


@dataclass(slots=True)
class _Message:
    id: int
    role: str
    content: str
    tokens: int
    status: TurnStatus
    author_id: str
    platform_message_id: str
    created_at: float
    key: ConversationKey
    reply_ref: ReplyRef


@dataclass(slots=True)
class _Conversation:
    created_at: float
    messages: list[_Message] = field(default_factory=list)
    model: str | None = None
    system_prompt: str | None = None
    model_strict: bool = False


class InMemoryStore:
    """``Store`` held in process memory, for as long as this object lives.

    ``clock`` stamps creation times like ``SqliteStore``'s (none are read back).
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock
        self._conversations: dict[str, _Conversation] = {}
        self._messages: dict[int, _Message] = {}  # by id, for update_message
        self._streaming: set[int] = set()  # ids of the STREAMING messages
        self._next_id = 1
        self._user_prefs: dict[str, Prefs] = {}
        self._usage: list[UsageEntry] = []
        self._counters: dict[tuple[str, str, float], float] = {}
        self._cache: dict[str, CachedAnswer] = {}
        self._claims: dict[str, float] = {}  # event id -> claimed at
        self._channels: dict[str, ChannelSettings] = {}

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def _now(self) -> float:
        return self._clock.time() if self._clock is not None else time.time()

    def _conversation(self, key: ConversationKey) -> _Conversation:
        sid = key.storage_id()
        conversation = self._conversations.get(sid)
        if conversation is None:
            conversation = self._conversations[sid] = _Conversation(created_at=self._now())
        return conversation

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
        message_id, self._next_id = self._next_id, self._next_id + 1
        message = _Message(
            message_id,
            role,
            content,
            tokens,
            TurnStatus(status),
            author_id,
            platform_message_id,
            self._now(),
            key,
            reply_ref or ReplyRef(),
        )
        self._conversation(key).messages.append(message)
        self._messages[message_id] = message
        self._track(message)
        return message_id

    def _track(self, message: _Message) -> None:
        if message.status is TurnStatus.STREAMING:
            self._streaming.add(message.id)
        else:
            self._streaming.discard(message.id)

    async def update_message(
        self, message_id: int, *, content: str, tokens: int, status: TurnStatus
    ) -> None:
        """Rewrite a stored message; a message already forgotten by ``reset`` is ignored."""
        message = self._messages.get(message_id)
        if message is not None:
            message.content, message.tokens = content, tokens
            message.status = TurnStatus(status)
            self._track(message)

    async def checkpoint_reply(
        self, message_id: int, text: str, tokens: int, ref: ReplyRef
    ) -> None:
        if message_id in self._streaming:
            message = self._messages[message_id]
            message.content, message.tokens, message.reply_ref = text, tokens, ref

    async def streaming_replies(self, platforms: Collection[Platform]) -> list[UnfinishedReply]:
        wanted = {str(p) for p in platforms}
        return [
            UnfinishedReply(m.id, m.key, m.content, m.tokens, m.reply_ref)
            for m in (self._messages[i] for i in sorted(self._streaming))
            if str(m.key.platform) in wanted
        ]

    async def window(
        self, key: ConversationKey, *, token_budget: int, max_messages: int = 1000
    ) -> list[StoredMessage]:
        """Newest usable messages that fit, oldest first (failed and empty ones skipped)."""
        picked: list[StoredMessage] = []
        conversation = self._conversations.get(key.storage_id())
        if conversation is None or token_budget < 0:
            return picked
        used = 0
        for message in reversed(conversation.messages):
            if len(picked) >= max_messages:
                break
            if message.status is TurnStatus.FAILED or not message.content:
                continue
            if used + message.tokens > token_budget:
                break
            used += message.tokens
            picked.append(
                StoredMessage(
                    message.role,
                    message.content,
                    message.tokens,
                    message.status,
                    message.author_id,
                )
            )
        picked.reverse()
        return picked

    async def reset(self, key: ConversationKey) -> int:
        conversation = self._conversations.pop(key.storage_id(), None)
        if conversation is None:
            return 0
        for message in conversation.messages:
            del self._messages[message.id]
            self._streaming.discard(message.id)
        return len(conversation.messages)

    async def count_conversations(self) -> int:
        return len(self._conversations)

    async def prefs(self, user: UserRef, key: ConversationKey | None) -> Prefs:
        mine = self._user_prefs.get(user.storage_id(), Prefs())
        conversation = self._conversations.get(key.storage_id()) if key is not None else None
        if conversation is None:
            return mine
        own_model = conversation.model is not None
        return Prefs(
            model=conversation.model if own_model else mine.model,
            strict=conversation.model_strict if own_model else mine.strict,
            system_prompt=(
                conversation.system_prompt
                if conversation.system_prompt is not None
                else mine.system_prompt
            ),
        )

    async def set_model(
        self, target: UserRef | ConversationKey, model: str | None, *, strict: bool = False
    ) -> None:
        if isinstance(target, UserRef):
            old = self._user_prefs.get(target.storage_id(), Prefs())
            self._user_prefs[target.storage_id()] = Prefs(model, old.system_prompt, strict)
        else:
            conversation = self._conversation(target)
            conversation.model, conversation.model_strict = model, strict

    async def set_system_prompt(
        self, target: UserRef | ConversationKey, prompt: str | None
    ) -> None:
        if isinstance(target, UserRef):
            old = self._user_prefs.get(target.storage_id(), Prefs())
            self._user_prefs[target.storage_id()] = Prefs(old.model, prompt, old.strict)
        else:
            self._conversation(target).system_prompt = prompt

    async def channel_settings(self, channel: ChannelRef) -> ChannelSettings:
        return self._channels.get(channel.storage_id(), ChannelSettings())

    async def set_channel_settings(
        self, channel: ChannelRef, changes: Mapping[ChannelField, str | None], *, by: str
    ) -> None:
        sid = channel.storage_id()
        old = self._channels.get(sid, ChannelSettings())
        self._channels[sid] = ChannelSettings(
            changes.get("system_prompt", old.system_prompt),
            changes.get("model", old.model),
            # A value not a mode raises, as SQLite's CHECK refuses it.
            ChannelMode(str(changes["mode"])) if "mode" in changes else old.mode,
            self._now(),
            by,
        )

    async def record_usage(self, entry: UsageEntry) -> None:
        # The ledger keeps no display names (as in SQLite), so rows read back compare equal.
        user = UserRef(entry.user.platform, entry.user.user_id)
        self._usage.append(
            UsageEntry(
                user,
                entry.model,
                entry.prompt_tokens,
                entry.completion_tokens,
                entry.at,
                entry.estimated,
                entry.cached,
            )
        )

    async def usage_since(self, user: UserRef, since: float) -> UsageSummary:
        sid = user.storage_id()
        rows = [row for row in self._usage if row.user.storage_id() == sid and row.at >= since]
        return UsageSummary(
            requests=len(rows),
            prompt_tokens=sum(row.prompt_tokens for row in rows),
            completion_tokens=sum(row.completion_tokens for row in rows),
            estimated=sum(1 for row in rows if row.estimated),
            cached=sum(1 for row in rows if row.cached),
        )

    async def usage_by_model(self, since: float) -> dict[str, UsageSummary]:
        rows: dict[str, list[UsageEntry]] = {}
        for entry in self._usage:
            if entry.at >= since:
                rows.setdefault(entry.model, []).append(entry)
        return {
            model: UsageSummary(
                len(entries),
                sum(e.prompt_tokens for e in entries),
                sum(e.completion_tokens for e in entries),
                sum(1 for e in entries if e.estimated),
                sum(1 for e in entries if e.cached),
            )
            for model, entries in sorted(rows.items())
        }

    async def iter_usage(self) -> AsyncIterator[UsageEntry]:
        """Every ledger row in the order recorded (rows added meanwhile included, as in SQLite)."""
        index = 0
        while index < len(self._usage):
            yield self._usage[index]
            index += 1

    async def load_quota_counters(self, since: float) -> list[QuotaCounter]:
        return [
            QuotaCounter(subject, dimension, start, used)
            for (subject, dimension, start), used in sorted(self._counters.items())
            if start >= since
        ]

    async def save_quota_counters(self, counters: Sequence[QuotaCounter]) -> None:
        for c in counters:
            self._counters[(c.subject, c.dimension, c.window_start)] = c.used

    async def prune_quota_counters(self, before: float) -> int:
        stale = [k for k in self._counters if k[2] < before]
        for k in stale:
            del self._counters[k]
        return len(stale)

    async def cache_get(self, key: str, *, fresh_since: float) -> CachedAnswer | None:
        answer = self._cache.get(key)
        return answer if answer is not None and answer.created_at >= fresh_since else None

    async def cache_put(
        self, key: str, answer: CachedAnswer, *, max_entries: int, stale_before: float
    ) -> None:
        self._cache[key] = answer
        by_age = sorted(self._cache.items(), key=lambda item: (item[1].created_at, item[0]))
        stale = [k for k, a in by_age if a.created_at < stale_before]
        fresh = [k for k, a in by_age if a.created_at >= stale_before]
        for k in stale + fresh[: max(0, len(fresh) - max(0, max_entries))]:
            del self._cache[k]

    async def cache_clear(self) -> int:
        count = len(self._cache)
        self._cache.clear()
        return count

    async def cache_size(self) -> int:
        return len(self._cache)

    # ----- fleet coordination -----

    async def claim_event(self, event_id: str, *, ttl_s: float) -> bool:
        now = self._now()
        claimed = self._claims.get(event_id)
        if claimed is not None and claimed >= now - ttl_s:
            return False
        self._claims.pop(event_id, None)
        self._claims[event_id] = now
        if len(self._claims) > _MAX_CLAIMS:  # oldest first: dicts keep insertion order
            del self._claims[next(iter(self._claims))]
        return True

    def turn_lease(self, conversation: ConversationKey) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()
