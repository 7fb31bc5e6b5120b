"""Pure translation of discord.py objects into the bot's types, and the access policy.

Conversation keys (one shape for every mode, so a fallback never forks a conversation):

* DM: ``ConversationKey(discord, dm_user=<user id>)``.
* Thread: ``(space=<guild>, channel=<parent channel>, thread=<thread id>)``.
* Reply chain in a channel: ``(space=<guild>, channel=<channel>, thread=<root message id>)``.
  A thread started from a message has that message's id, so "thread on message M"
  and "reply chain rooted at M" are the same conversation.

Nothing here does I/O: whatever needs the network (the root of a reply chain, whether
a thread has history) is resolved by the client and passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import discord

from adapters.discord.config import PLATFORM
from bot.types import Attachment, ChannelRef, ConversationKey, Incoming, UserRef

__all__ = [
    "Route",
    "channel_key",
    "channel_ref",
    "channel_ref_for",
    "dm_key",
    "is_conversational",
    "key_for_channel",
    "mentions_bot",
    "route",
    "strip_mentions",
    "thread_name",
    "to_incoming",
    "user_ref",
]

ReplyMode = Literal["thread", "reply"]
# Regular messages and replies; joins, pins, boosts and thread notices are system noise.
_CONVERSATIONAL = (discord.MessageType.default, discord.MessageType.reply)


@dataclass(frozen=True, slots=True)
class Route:
    """Where and how to answer one message.

    ``open_thread``: create a thread on the message first (thread mode, in a channel).
    ``reply_to``: answer as a reply to this message id (reply mode, in a channel).
    """

    key: ConversationKey
    open_thread: bool = False
    reply_to: int | None = None


def dm_key(user_id: int) -> ConversationKey:
    return ConversationKey(PLATFORM, dm_user=str(user_id))


def channel_key(guild_id: int, channel_id: int, thread_id: int) -> ConversationKey:
    return ConversationKey(
        PLATFORM, space=str(guild_id), channel=str(channel_id), thread=str(thread_id)
    )


def channel_ref(guild_id: int, channel_id: int) -> ChannelRef:
    return ChannelRef(PLATFORM, str(guild_id), str(channel_id))


def channel_ref_for(channel: object) -> ChannelRef | None:
    """The channel whose settings a command run in ``channel`` refers to: a thread's
    parent, a server channel itself; None in a DM."""
    if isinstance(channel, discord.Thread):
        return channel_ref(channel.guild.id, channel.parent_id) if channel.parent_id else None
    if isinstance(channel, discord.abc.GuildChannel):
        return channel_ref(channel.guild.id, channel.id)
    return None


def key_for_channel(channel: object, user_id: int) -> ConversationKey | None:
    """The conversation a slash command run in ``channel`` refers to, if any.

    A DM or a thread is one conversation; a plain channel holds many (one per thread
    or reply chain), so it names none.
    """
    if isinstance(channel, discord.DMChannel):
        return dm_key(user_id)
    if isinstance(channel, discord.Thread) and channel.parent_id is not None:
        return channel_key(channel.guild.id, channel.parent_id, channel.id)
    return None


def user_ref(user: discord.abc.User) -> UserRef:
    return UserRef(PLATFORM, str(user.id), user.display_name)


def mentions_bot(message: discord.Message, bot_id: int, bot_role_id: int | None = None) -> bool:
    """An explicit ``@bot`` in the text (or of the bot's managed role).

    Reply pings are not mentions here: replying to someone else's message while the
    bot happens to be pinged must not start a conversation.
    """
    if bot_id in message.raw_mentions:
        return True
    return bot_role_id is not None and bot_role_id in message.raw_role_mentions


def strip_mentions(text: str, bot_id: int, bot_role_id: int | None = None) -> str:
    """The text without the bot's own mention(s); other mentions stay as written."""
    pattern = rf"<@!?{bot_id}>"
    if bot_role_id is not None:
        pattern += rf"|<@&{bot_role_id}>"
    return re.sub(r"[ \t]{2,}", " ", re.sub(pattern, "", text)).strip()


def is_conversational(message: discord.Message) -> bool:
    """A human's ordinary message: not a bot, webhook or system message."""
    return not message.author.bot and message.webhook_id is None and message.type in _CONVERSATIONAL


def route(
    message: discord.Message,
    *,
    bot_id: int,
    mode: ReplyMode,
    mentioned: bool,
    reply_root: int | None = None,
    known_thread: bool = False,
    answer_all: bool = False,
) -> Route | None:
    """Decide whether and where to answer; None means "not for the bot".

    ``reply_root``: root id of a reply chain the bot takes part in (the message replies
    to one of the bot's messages). ``known_thread``: the message is in a thread the bot
    started or already answered in. ``answer_all``: the channel's mode is ``all``, so a
    top-level message starts a conversation without a mention.
    """
    author = message.author.id
    channel = message.channel
    if message.guild is None:
        return Route(dm_key(author)) if isinstance(channel, discord.DMChannel) else None
    guild_id = message.guild.id
    if isinstance(channel, discord.Thread):
        if not (mentioned or known_thread) or channel.parent_id is None:
            return None
        return Route(channel_key(guild_id, channel.parent_id, channel.id))
    if reply_root is not None:
        # Continuing a reply chain works in both modes: it is already a conversation.
        return Route(channel_key(guild_id, channel.id, reply_root), reply_to=message.id)
    if not (mentioned or answer_all):
        return None
    key = channel_key(guild_id, channel.id, message.id)
    if mode == "thread":
        return Route(key, open_thread=True)
    return Route(key, reply_to=message.id)


def to_incoming(
    message: discord.Message,
    key: ConversationKey,
    *,
    text: str,
    attachments: tuple[Attachment, ...] = (),
) -> Incoming:
    """The engine's view of ``message``; ``text`` is its content with the bot's mention
    stripped (``strip_mentions``), computed once by the caller."""
    return Incoming(
        key=key,
        author=user_ref(message.author),
        text=text,
        message_id=str(message.id),
        attachments=attachments,
    )


def thread_name(text: str, author: str, limit: int = 60) -> str:
    """A readable thread title from the first line of the question."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        return f"Chat with {author}"[:limit]
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"
