"""Value types that cross module and adapter boundaries.

All are frozen, slotted dataclasses holding no platform objects, so adapters, the
engine, the store and the completions client can exchange them freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from bot.text import clean_text

__all__ = [
    "Attachment",
    "CachedAnswer",
    "ChannelField",
    "ChannelMode",
    "ChannelRef",
    "ChannelSettings",
    "ChatEvent",
    "ChatMessage",
    "ChatRequest",
    "CommandReply",
    "ConversationKey",
    "Finished",
    "Incoming",
    "ModelInfo",
    "Platform",
    "Prefs",
    "QuotaCounter",
    "RateLimitSnapshot",
    "ReasoningDelta",
    "ReplyRef",
    "StoredMessage",
    "SurfaceLimits",
    "TextDelta",
    "TurnStatus",
    "UnfinishedReply",
    "Usage",
    "UsageEntry",
    "UsageSummary",
    "UserRef",
    "WaitReason",
]


class Platform(str):
    """The name of the platform a message came from (``"terminal"``, or an adapter's).

    Open on purpose: each adapter names its own platform (``adapters.discord.PLATFORM``),
    so the core lists none and a new platform needs no edit here.
    """

    __slots__ = ()

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Platform({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class PlatformHelp:
    """How users reach the bot on one platform, for /help: a sentence, and how its
    slash commands are spelled (``/`` or a prefix such as ``/groq-``)."""

    how_to: str
    command_prefix: str = "/"
    has_channels: bool = True  # False: no channel settings to tell of (the terminal)


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """One channel of a space (guild / workspace): where channel settings apply."""

    platform: Platform
    space: str
    channel: str

    def storage_id(self) -> str:
        return f"{self.platform}:{self.space}:{self.channel}"


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Platform-neutral identity of one conversation.

    Channel conversations are keyed by ``space`` (guild / workspace), ``channel`` and
    ``thread``; DMs by ``dm_user`` (plus ``thread`` for a Slack DM thread).
    """

    platform: Platform
    space: str = ""
    channel: str = ""
    thread: str | None = None
    dm_user: str | None = None

    def storage_id(self) -> str:
        """Stable string used as the primary key in the store."""
        if self.dm_user is not None:
            base = f"{self.platform}:dm:{self.space}:{self.dm_user}"
            return f"{base}:{self.thread}" if self.thread else base
        return f"{self.platform}:ch:{self.space}:{self.channel}:{self.thread or ''}"

    @property
    def is_dm(self) -> bool:
        return self.dm_user is not None

    @property
    def channel_ref(self) -> ChannelRef | None:
        """The channel this conversation is in (a thread's parent); None for a DM."""
        if self.is_dm or not self.channel:
            return None
        return ChannelRef(self.platform, self.space, self.channel)


@dataclass(frozen=True, slots=True)
class UserRef:
    """A user on one platform."""

    platform: Platform
    user_id: str
    display_name: str = ""

    def storage_id(self) -> str:
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to an incoming message; ``data`` is None when not downloaded."""

    filename: str
    mime_type: str
    size: int
    data: bytes | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "filename", clean_text(self.filename))  # see bot.text


@dataclass(frozen=True, slots=True)
class Incoming:
    """One user message, translated from a platform event. ``text`` is made valid
    Unicode here (``bot.text.clean_text``), whichever adapter built it."""

    key: ConversationKey
    author: UserRef
    text: str
    message_id: str = ""
    attachments: tuple[Attachment, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", clean_text(self.text))


@dataclass(frozen=True, slots=True)
class SurfaceLimits:
    """What a platform allows for one reply.

    ``max_chars``: longest single message. ``min_edit_interval_s``: least time between
    two edits of one reply. ``budget_key`` names the shared edit budget (a Discord
    channel, a Slack workspace) and ``budget_per_s`` / ``budget_burst`` size it.
    ``posts_use_budget``: whether posting a message spends that budget too (Discord
    counts posts and edits in one per-channel bucket; Slack limits ``chat.postMessage``
    separately from ``chat.update``, so a first post must not queue behind edits).
    """

    max_chars: int
    min_edit_interval_s: float
    budget_key: str = ""
    budget_per_s: float = 0.0
    budget_burst: int = 1
    posts_use_budget: bool = True


class WaitReason(StrEnum):
    """Why a request waits before it is sent (the quota tells the engine, which shows it)."""

    CAPACITY = "capacity"  # the shared account's budget for the model
    YOUR_TURN = "your_turn"  # behind the same user's earlier questions
    YOUR_LIMIT = "your_limit"  # the user's own window resets soon


class TurnStatus(StrEnum):
    """How an assistant turn ended; ``STREAMING`` while it has not (yet): a stored reply
    still streaming, or left so by a process that died."""

    COMPLETE = "complete"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    STREAMING = "streaming"


@dataclass(frozen=True, slots=True)
class ReplyRef:
    """Where a reply's platform messages are, as its adapter's surface named them.

    ``place`` (a channel, a thread…) and ``message_ids`` (in posting order) are opaque
    strings: the core stores them and hands them back to the same adapter, which alone
    knows how to read them. Empty until the reply's first message is posted.
    """

    place: str = ""
    message_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UnfinishedReply:
    """An assistant message stored as ``STREAMING``: its text as last checkpointed, and
    where its platform messages are."""

    message_id: int
    key: ConversationKey
    content: str
    tokens: int
    ref: ReplyRef = ReplyRef()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts: reported by the API, or ``estimated`` from the text when it reports none."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of the live ``/models`` list.

    ``context_source`` says where ``context_window`` came from: "server" (the API said),
    "settings" (CONTEXT_TOKEN_BUDGET), "default" (a conservative guess) or "learned"
    (lowered after the server refused a request as too long).
    """

    id: str
    owned_by: str = ""
    context_window: int = 8192
    max_completion_tokens: int | None = None
    active: bool = True
    context_source: str = "server"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A message sent to the API: only ``role`` and ``content`` (Groq rejects extras).

    ``content`` is a string, or a list of OpenAI content parts for image input.
    """

    role: str
    content: str | tuple[dict[str, object], ...]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat-completions request. ``extra`` carries model-family specific fields."""

    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of model reasoning (``reasoning`` field or ``<think>`` content)."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """End of stream: usage if the API reported it, and the finish reason."""

    usage: Usage | None = None
    finish_reason: str | None = None


ChatEvent = TextDelta | ReasoningDelta | Finished


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    """What one response's headers (and a 429's message) said about the account quota
    for ``model``.

    Groq semantics: ``*_requests`` describe the requests-per-day window, ``*_tokens``
    the tokens-per-minute window. Resets are in seconds. ``at`` is when the response
    arrived, in epoch seconds (``Clock.time()``, the quota's time base). ``status`` is
    the response's HTTP status (None: not known): an error's own request is not in the
    counts. Fields are None when the header was absent.

    ``exceeded`` is the dimension ("rpm", "rpd", "tpm", "tpd") a rate-limit error's
    message names ("… on tokens per minute (TPM): Limit 8000, Used 7421, Requested
    1102 …"), with its ``exceeded_limit``, ``exceeded_used`` (the server's count without
    this request) and ``exceeded_requested`` (this request); None when not named.
    ``retry_after_s`` comes from the header, else from that message.
    """

    model: str
    at: float
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    retry_after_s: float | None = None
    status: int | None = None
    exceeded: str | None = None
    exceeded_limit: int | None = None
    exceeded_used: int | None = None
    exceeded_requested: int | None = None


@dataclass(frozen=True, slots=True)
class Prefs:
    """Effective preferences for a user in a conversation (None = use the default)."""

    model: str | None = None
    system_prompt: str | None = None
    # Chosen with the model (``/model <id> strict``): no fallback to MODEL_FALLBACKS.
    strict: bool = False


class ChannelMode(StrEnum):
    """Which messages of a channel the bot answers."""

    MENTION = "mention"  # only messages that mention it (and its conversations' threads)
    ALL = "all"  # every top-level human message, each starting its own conversation


ChannelField = Literal["system_prompt", "model", "mode"]
"""A setting of ``ChannelSettings`` that admins change (``ChannelSettingsStore``)."""


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """What admins set for one channel (None: not set, the next layer applies).

    ``updated_at`` (epoch seconds) and ``updated_by`` (``UserRef.storage_id()``) say who
    last changed them; 0 and "" for a channel never set.
    """

    system_prompt: str | None = None
    model: str | None = None
    mode: ChannelMode = ChannelMode.MENTION
    updated_at: float = 0.0
    updated_by: str = ""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message read back from the store for building context."""

    role: str
    content: str
    tokens: int
    status: TurnStatus = TurnStatus.COMPLETE
    author_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One row of the usage ledger."""

    user: UserRef
    model: str
    prompt_tokens: int
    completion_tokens: int
    at: float
    estimated: bool = False
    # Served from the response cache: no request reached the model, so no tokens.
    cached: bool = False


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A user's totals since some time; ``estimated`` counts requests whose tokens were
    estimated from the text (the server reported no usage), ``cached`` those answered
    from the response cache (they carry no tokens)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: int = 0
    cached: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A complete answer kept in the response cache under its request's hash.

    ``text`` is the answer as stored in the conversation, ``reasoning`` what the model
    reasoned (shown only where SHOW_REASONING is on, as for a live answer); the token
    counts are the original request's, so the replayed turn weighs the same in the
    history; ``created_at`` is epoch seconds (the TTL and eviction order run on it).
    """

    model: str
    text: str
    reasoning: str
    prompt_tokens: int
    completion_tokens: int
    created_at: float
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class CommandReply:
    """Text answering a command; ``private`` means ephemeral where the platform can."""

    text: str
    private: bool = True


@dataclass(frozen=True, slots=True)
class QuotaCounter:
    """Persisted use of one limiter window: ``subject`` (e.g. ``user:discord:1`` or
    ``account:openai/gpt-oss-120b``), ``dimension`` (``rpm``, ``rpd``, ``tpm``, ``tpd``),
    the window's start (epoch seconds) and the amount used in it."""

    subject: str
    dimension: str
    window_start: float
    used: float
