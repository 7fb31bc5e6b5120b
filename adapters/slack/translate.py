"""Pure translation of Slack event payloads into the bot's types, and who may talk.

Routing rules (``route_mention`` / ``route_message``):

- ``app_mention`` in a channel: a conversation in the thread of the mention (a new
  thread rooted at the mention, or the thread it was written in).
- A channel message in a thread without a mention: only continues a thread the bot is
  already part of (``Route.needs_history``; the caller asks the engine). A top-level
  channel message without a mention starts a conversation in its own thread only where
  the channel's mode is ``all`` (``Route.needs_mode_all``; the caller asks the engine).
  A channel message that mentions the bot is left to its ``app_mention`` twin.
- ``message.im``: a top-level DM is one conversation per user, answered top-level; a
  DM thread (e.g. an assistant thread) is its own conversation, answered in it.
- Bots (ours included), edits, deletions and other subtypes are never answered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.slack.config import PLATFORM
from adapters.slack.format import unescape_incoming
from bot.types import ConversationKey, Incoming, UserRef

__all__ = [
    "Route",
    "channel_key",
    "dm_key",
    "is_dm_channel",
    "mentions",
    "route_mention",
    "route_message",
    "strip_mention",
    "to_incoming",
    "user_ref",
]

Event = Mapping[str, Any]

# Subtypes that are still a person talking: a thread reply also sent to the channel, and
# a message with files (their text is answered; the files are not read).
_CONVERSATIONAL_SUBTYPES = frozenset({"thread_broadcast", "file_share"})


@dataclass(frozen=True, slots=True)
class Route:
    """Where an event's answer goes.

    ``thread_ts``: the thread to answer in (None: top level, a plain DM).
    ``needs_history``: answer only if the conversation already exists.
    ``needs_mode_all``: answer only if the channel's mode is ``all``.
    ``assistant``: a DM thread, where ``assistant.threads.setStatus`` works.
    """

    key: ConversationKey
    channel: str
    thread_ts: str | None
    needs_history: bool = False
    assistant: bool = False
    needs_mode_all: bool = False


def is_dm_channel(channel: str) -> bool:
    return channel.startswith("D")


def channel_key(team_id: str, channel: str, thread_ts: str) -> ConversationKey:
    return ConversationKey(PLATFORM, space=team_id, channel=channel, thread=thread_ts)


def dm_key(team_id: str, user: str, thread_ts: str | None = None) -> ConversationKey:
    return ConversationKey(PLATFORM, space=team_id, dm_user=user, thread=thread_ts)


def user_ref(user_id: str, name: str = "") -> UserRef:
    return UserRef(PLATFORM, user_id, name)


def mentions(text: str, bot_user_id: str) -> bool:
    return f"<@{bot_user_id}" in text


def strip_mention(text: str, bot_user_id: str) -> str:
    """The text without the bot's own mention(s), other markup made plain."""
    text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    return re.sub(r"[ \t]{2,}", " ", unescape_incoming(text)).strip()


def _human(event: Event, bot_user_id: str) -> bool:
    """A person's ordinary message: not a bot, not ours, not an edit or a notice."""
    subtype = event.get("subtype")
    if subtype is not None and subtype not in _CONVERSATIONAL_SUBTYPES:
        return False
    user = event.get("user")
    return bool(user) and user != bot_user_id and not event.get("bot_id")


def route_mention(event: Event, *, team_id: str, bot_user_id: str) -> Route | None:
    """An ``app_mention``: answer in the mention's thread (None for bots and DMs)."""
    channel = str(event.get("channel", ""))
    if not _human(event, bot_user_id) or not channel or is_dm_channel(channel):
        return None  # DMs arrive as message.im too; answer those once, there
    thread = str(event.get("thread_ts") or event["ts"])
    return Route(channel_key(team_id, channel, thread), channel, thread)


def route_message(event: Event, *, team_id: str, bot_user_id: str) -> Route | None:
    """A ``message`` event (channels, groups, DMs): where to answer, or None."""
    if event.get("type") != "message" or not _human(event, bot_user_id):
        return None
    channel, user = str(event.get("channel", "")), str(event["user"])
    thread = event.get("thread_ts")
    if event.get("channel_type") == "im" or is_dm_channel(channel):
        if thread:
            return Route(dm_key(team_id, user, str(thread)), channel, str(thread), assistant=True)
        return Route(dm_key(team_id, user), channel, None)
    if mentions(str(event.get("text", "")), bot_user_id):
        return None
    if not thread:
        ts = str(event["ts"])
        return Route(channel_key(team_id, channel, ts), channel, ts, needs_mode_all=True)
    key = channel_key(team_id, channel, str(thread))
    return Route(key, channel, str(thread), needs_history=True)


def to_incoming(event: Event, route: Route, *, bot_user_id: str) -> Incoming:
    return Incoming(
        key=route.key,
        author=user_ref(str(event["user"])),
        text=strip_mention(str(event.get("text") or ""), bot_user_id),
        message_id=str(event.get("ts", "")),
    )
