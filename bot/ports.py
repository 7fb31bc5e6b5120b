"""The seams between the engine and everything around it, as Protocols.

Adapters implement ``ReplySink`` (or just ``Surface``, or ``AppendableSurface``, and
reuse ``EditingSink``), and ``ReplyFinalizer`` for the replies a dead process left;
``bot.app`` supplies concrete ``Store``, ``Completions``, ``QuotaGate`` and ``Clock``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from bot.errors import UpstreamError
from bot.types import (
    CachedAnswer,
    ChannelField,
    ChannelRef,
    ChannelSettings,
    ChatEvent,
    ChatRequest,
    ConversationKey,
    ModelInfo,
    Platform,
    Prefs,
    QuotaCounter,
    RateLimitSnapshot,
    ReplyRef,
    StoredMessage,
    SurfaceLimits,
    TurnStatus,
    UnfinishedReply,
    Usage,
    UsageEntry,
    UsageSummary,
    UserRef,
    WaitReason,
)

__all__ = [
    "Adapter",
    "AppendableSurface",
    "ChannelSettingsStore",
    "Clock",
    "Completions",
    "ConversationOwner",
    "ConversationStore",
    "PartedAdapter",
    "PlatformMetrics",
    "PreferenceStore",
    "QuotaCounterStore",
    "QuotaGate",
    "RateLimitListener",
    "ReplyFinalizer",
    "ReplySink",
    "Reservation",
    "ResponseCache",
    "RetryHook",
    "Store",
    "Surface",
    "SystemClock",
    "UsageLedger",
]

RetryHook = Callable[[UpstreamError, int, float], Awaitable[None]]
"""Called before each retry with (error, attempt number from 1, delay in seconds)."""

RateLimitListener = Callable[[RateLimitSnapshot], None]


@runtime_checkable
class ReplyFinalizer(Protocol):
    """Edits the messages of a reply that an earlier process left streaming."""

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        """Make the reply at ``reply`` (a ``ReplyRef`` this platform's sink reported)
        show ``text`` in full: its stored text and a closing note, split over its
        messages as the platform needs. Failures are logged, never raised. A platform
        whose old output can't be changed (a terminal) does nothing."""
        ...


@runtime_checkable
class Adapter(ReplyFinalizer, Protocol):
    """One chat platform, run on the bot's event loop (built from an ``AdapterContext``).

    ``name`` is its platform's name (the ``Platform`` of its conversations). ``start``
    returns once the platform is connected (or raises ``ConfigError``); ``aclose``
    disconnects and waits for replies in progress, bounded. ``connected`` says whether
    it can hear users right now (health checks read it). Once it has started,
    ``finalize_reply`` is called for each of its replies that a previous process left
    streaming (killed, or stopped mid-answer).
    """

    @property
    def name(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ConversationOwner(Protocol):
    """A ``ReplyFinalizer`` that hears only some of its platform's conversations, the
    others going to other processes (a chat platform's shards), optionally implemented:
    ``hears`` says whether this process does. A reply left streaming in a conversation
    it does not hear may be streaming in another process right now, so it is left
    for that one."""

    def hears(self, key: ConversationKey) -> bool: ...


@runtime_checkable
class PartedAdapter(Protocol):
    """An adapter holding several connections (e.g. gateway shards), optionally
    implemented beside ``Adapter``: ``down_parts`` names those down now ("shard 1"),
    so a health check can say which; ``connected`` is False while any is down."""

    def down_parts(self) -> list[str]: ...


@runtime_checkable
class ReplySink(Protocol):
    """Where one assistant reply goes.

    The engine calls ``start`` once, then any number of ``status`` / ``update`` calls,
    then exactly one of ``finish`` or ``fail``. ``update`` receives the whole visible
    text so far, not a delta. Implementations handle their own platform errors: a
    failed edit is logged, never raised into the engine.

    ``reply_ref`` says where the reply's messages are so far; the engine stores it with
    the reply while it streams, so that after a crash the platform's adapter can find
    those messages again (``ReplyFinalizer``). Reading it must be cheap: the engine
    reads it at every token.
    """

    @property
    def reply_ref(self) -> ReplyRef: ...

    async def start(self) -> None: ...

    async def status(self, text: str) -> None:
        """Show a transient state such as "retrying in 2 s…" until the next update."""
        ...

    async def update(self, text_so_far: str) -> None: ...

    async def finish(self, text: str, status: TurnStatus) -> None: ...

    async def fail(self, user_text: str) -> None: ...


@runtime_checkable
class Surface(Protocol):
    """Platform primitives that ``bot.streaming.EditingSink`` drives for one reply.

    A call that fails raises. A surface that logged the failure itself (with where it
    happened) raises a ``BotError``, and the sink logs it at INFO only: a failure the
    user sees has one line at WARNING or above, not one per layer.
    """

    @property
    def limits(self) -> SurfaceLimits: ...

    @property
    def place(self) -> str:
        """Where the reply's messages go, as an opaque string its adapter can find them
        from again in a later process (e.g. a channel id; "" where there is no need):
        ``ReplyRef.place``, next to the ids ``post`` returns."""
        ...

    def typing(self) -> AbstractAsyncContextManager[None]:
        """Show "typing…" while the context is entered (may be a no-op)."""
        ...

    async def post(self, text: str) -> str:
        """Post a new message of the reply; return its platform id."""
        ...

    async def edit(self, message_id: str, text: str) -> None: ...


@runtime_checkable
class AppendableSurface(Surface, Protocol):
    """A ``Surface`` whose messages can also grow by appending (Slack's streams).

    While ``append_limits`` is not None, ``EditingSink`` ``open``s each message,
    ``append``s what its text gains and ``close``s it with the rest once it is final.
    Appended text is never taken back: a message that must change otherwise is
    ``edit``ed, which ends its stream first, and the reply goes on by ``post`` and
    ``edit`` within ``limits``, as it does once ``append_limits`` turns None (the
    surface's switch, e.g. after a failed stream call; it never turns back). ``close``
    spends none of the sink's budget: the surface paces it, if it needs to. A status
    shown before any text, where ``shows_status`` is off, is a ``post``ed placeholder
    that is ``retract``ed once the answer's first message is open, so the answer still
    streams.
    """

    @property
    def append_limits(self) -> SurfaceLimits | None:
        """Limits while messages are appended to; None when they can't be (any more)."""
        ...

    @property
    def shows_status(self) -> bool:
        """Whether ``show_status`` shows statuses beside the messages, instead of in them."""
        ...

    def settled(self, text: str) -> int:
        """How much of a message's ``text`` may be appended now: a trailing piece may
        still change how it renders once more text follows (``len(text)`` if none)."""
        ...

    async def show_status(self, text: str) -> None:
        """Show ``text`` beside the reply until the next text appears."""
        ...

    async def open(self, text: str) -> str:
        """Post a message that can grow by appending; return its platform id."""
        ...

    async def append(self, message_id: str, text: str) -> None:
        """Add ``text`` at the end of an open message."""
        ...

    async def close(self, message_id: str, text: str) -> None:
        """Add ``text`` (may be "") at the end of an open message and end it."""
        ...

    async def retract(self, message_id: str) -> None:
        """Remove a message ``post`` made (a placeholder the streamed answer replaces)."""
        ...


class Completions(Protocol):
    """An OpenAI-compatible chat-completions API.

    ``stream`` raises ``UpstreamError`` subclasses; before the first token it retries
    retryable errors itself (calling ``on_retry`` first), after it raises
    ``StreamInterrupted`` carrying the partial text.
    """

    def stream(
        self,
        request: ChatRequest,
        *,
        on_retry: RetryHook | None = None,
        empty_is_overflow: bool = False,
    ) -> AsyncIterator[ChatEvent]: ...

    async def models(self, *, refresh: bool = False) -> Sequence[ModelInfo]: ...

    async def aclose(self) -> None: ...


class ConversationStore(Protocol):
    """Conversations and their messages. Raises ``StoreError``."""

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
        """Append a message to the conversation (creating it); return the message id.

        ``reply_ref``: where an assistant message's platform messages are."""
        ...

    async def update_message(
        self, message_id: int, *, content: str, tokens: int, status: TurnStatus
    ) -> None:
        """Rewrite a message (its ``reply_ref`` stays); one forgotten by ``reset`` is ignored."""
        ...

    async def checkpoint_reply(
        self, message_id: int, text: str, tokens: int, ref: ReplyRef
    ) -> None:
        """Rewrite a ``STREAMING`` reply's text, tokens and ``reply_ref``; a message no
        longer streaming (finished, or forgotten by ``reset``) is left as it is."""
        ...

    async def streaming_replies(self, platforms: Collection[Platform]) -> list[UnfinishedReply]:
        """Messages still ``STREAMING`` in conversations on ``platforms``, oldest first.

        Cost depends on how many there are, never on the number of messages stored.
        """
        ...

    async def window(
        self, key: ConversationKey, *, token_budget: int, max_messages: int = 1000
    ) -> list[StoredMessage]:
        """Newest messages whose tokens fit the budget, returned oldest first.

        Cost depends on what fits, never on the conversation's total length.
        """
        ...

    async def reset(self, key: ConversationKey) -> int:
        """Forget the conversation's messages and preferences; return messages removed."""
        ...

    async def count_conversations(self) -> int:
        """How many conversations are stored (the operator's gauge, read at each scrape)."""
        ...


class PreferenceStore(Protocol):
    """Per-user and per-conversation model and persona. Raises ``StoreError``."""

    async def prefs(self, user: UserRef, key: ConversationKey | None) -> Prefs:
        """Effective prefs: the conversation's override the user's (``strict`` comes
        with whichever ``model`` applies)."""
        ...

    async def set_model(
        self, target: UserRef | ConversationKey, model: str | None, *, strict: bool = False
    ) -> None:
        """Choose ``model`` (None: the default); ``strict`` goes with it (no fallback)."""
        ...

    async def set_system_prompt(
        self, target: UserRef | ConversationKey, prompt: str | None
    ) -> None: ...


class ChannelSettingsStore(Protocol):
    """Admins' per-channel persona, model and mode. Raises ``StoreError``."""

    async def channel_settings(self, channel: ChannelRef) -> ChannelSettings:
        """The channel's settings; ``ChannelSettings()`` for a channel never set."""
        ...

    async def set_channel_settings(
        self, channel: ChannelRef, changes: Mapping[ChannelField, str | None], *, by: str
    ) -> None:
        """Change the settings named in ``changes`` in one write; the others keep theirs
        (two admins changing different ones never undo each other). ``system_prompt`` /
        ``model`` None clears it; ``mode`` takes a ``ChannelMode`` value. ``by`` (a user's
        storage id) and the store's clock become ``updated_by`` / ``updated_at``."""
        ...


class UsageLedger(Protocol):
    """One row per answered request, for /usage and the CSV export. Raises ``StoreError``."""

    async def record_usage(self, entry: UsageEntry) -> None: ...

    async def usage_since(self, user: UserRef, since: float) -> UsageSummary:
        """Totals of the ledger for ``user`` from epoch time ``since``."""
        ...

    async def usage_by_model(self, since: float) -> dict[str, UsageSummary]:
        """Totals of the whole ledger (every user) from ``since``, per model."""
        ...

    def iter_usage(self) -> AsyncIterator[UsageEntry]:
        """Every ledger row, oldest first (for CSV export)."""
        ...


class QuotaCounterStore(Protocol):
    """Persisted limiter windows, so quotas survive a restart. Raises ``StoreError``."""

    async def load_quota_counters(self, since: float) -> list[QuotaCounter]:
        """Counters whose window started at or after epoch ``since``."""
        ...

    async def save_quota_counters(self, counters: Sequence[QuotaCounter]) -> None:
        """Upsert counters (keyed by subject, dimension, window_start)."""
        ...

    async def prune_quota_counters(self, before: float) -> int:
        """Delete counters whose window started before ``before``; return rows removed."""
        ...


class ResponseCache(Protocol):
    """Complete answers by request hash (``bot.response_cache``). Raises ``StoreError``.

    ``reset`` (a conversation's /reset) never touches it: an entry is nobody's history.
    Entries age by ``created_at`` (ties by key): the TTL and eviction run on it.
    """

    async def cache_get(self, key: str, *, fresh_since: float) -> CachedAnswer | None:
        """The answer stored under ``key`` if it was created at or after ``fresh_since``."""
        ...

    async def cache_put(
        self, key: str, answer: CachedAnswer, *, max_entries: int, stale_before: float
    ) -> None:
        """Store (or replace) ``answer`` under ``key``; then drop entries created before
        ``stale_before`` and the oldest beyond ``max_entries``, in the same transaction."""
        ...

    async def cache_clear(self) -> int:
        """Drop every entry; return how many there were."""
        ...

    async def cache_size(self) -> int:
        """How many entries are stored (expired ones not yet dropped included)."""
        ...


class FleetCoordination(Protocol):
    """What bot processes sharing one database agree on. Raises ``StoreError``.

    A platform may deliver one event to several processes (Slack retries an event that
    was not acked in 3 s, and a load balancer may send the retry to another replica):
    ``claim_event`` lets exactly one of them handle it. ``turn_lease`` keeps one
    conversation's turns in order across processes; a store that only one process can
    use (SQLite) returns a no-op, since the engine's own lock already orders them.
    """

    async def claim_event(self, event_id: str, *, ttl_s: float) -> bool:
        """True for the first claim of ``event_id`` within ``ttl_s`` seconds, else False."""
        ...

    def turn_lease(self, conversation: ConversationKey) -> AbstractAsyncContextManager[None]:
        """Held for the whole of a turn: while one process holds a conversation's lease,
        another waits for it (a dead holder's lease expires)."""
        ...


class Store(
    ConversationStore,
    PreferenceStore,
    ChannelSettingsStore,
    UsageLedger,
    QuotaCounterStore,
    ResponseCache,
    FleetCoordination,
    Protocol,
):
    """The whole database: each part above, opened and closed as one."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def ping(self) -> None:
        """Answer the cheapest possible query (readiness checks); raises ``StoreError``."""
        ...


class Reservation(Protocol):
    """Capacity ``QuotaGate.admit`` reserved for one request.

    The engine calls ``note_retry`` before each resend of the request and ``settle``
    once it is over, whatever the outcome (a second ``settle`` is a no-op).
    """

    def note_retry(self) -> None:
        """The request is being sent again (it counts as one more request)."""
        ...

    async def settle(self, usage: Usage | None) -> None:
        """Replace the reservation by what the request used (None: keep the reservation)."""
        ...


class QuotaGate(Protocol):
    """Admission control in front of the completions API (per-user and account budgets).

    Limiter time is ``Clock.time()``, epoch seconds, like ``RateLimitSnapshot.at``.
    """

    async def admit(
        self,
        user: UserRef,
        model: str,
        estimated_tokens: int,
        *,
        user_tokens: int | None = None,
        on_wait: Callable[[float, WaitReason], Awaitable[None]] | None = None,
    ) -> Reservation:
        """Reserve ``estimated_tokens`` (prompt + max output) of capacity, of which
        ``user_tokens`` count against the user's own windows until settled; may wait
        (calling ``on_wait(seconds, why)``); raises ``QuotaExceeded``."""
        ...

    def predict_wait(self, model: str, estimated_tokens: int) -> tuple[float, str]:
        """Seconds a request of ``estimated_tokens`` on ``model`` would wait now for the
        shared account (0 when it could go at once; ``inf`` when it never fits), and the
        limit that binds (``tpd``, ``tpm``, ``pause``…; empty when none). Reserves
        nothing: the engine asks before ``admit`` whether another model should answer."""
        ...

    def max_wait_s(self) -> float:
        """QUOTA_MAX_WAIT_S: the longest a request may wait for the account."""
        ...

    def observe(self, snapshot: RateLimitSnapshot) -> None:
        """Take in what the API's headers said about the account."""
        ...

    async def report(self, user: UserRef, *, admin: bool, current_model: str | None = None) -> str:
        """The ``/usage`` text: the user's use and limits (``admin``: also the account's);
        ``current_model`` is the model the user's next turn uses."""
        ...


class PlatformMetrics(Protocol):
    """What an adapter reports for the operator's metrics (``bot.metrics.Metrics``; a
    no-op while the endpoint is off). ``platform`` is the adapter's ``name``. Calls are
    cheap and never raise; report per reply or per platform answer, never per token."""

    def platform_rate_limited(self, platform: str, route: str) -> None:
        """The platform answered 429 on ``route``: a request route with its ids replaced
        by placeholders, or an API method name (few distinct values, never an id)."""
        ...

    def reply_edits(self, platform: str, edits: int) -> None:
        """A reply ended after ``edits`` calls that changed its messages once posted."""
        ...


class Clock(Protocol):
    """Time source, injected so tests never sleep through a window."""

    def now(self) -> float:
        """Monotonic seconds: for durations and pacing (retries, edits, timeouts)."""
        ...

    def time(self) -> float:
        """Wall-clock epoch seconds: for what is stored or aligned to the calendar (the
        quota and its counters, the ledger, ``RateLimitSnapshot.at``)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
