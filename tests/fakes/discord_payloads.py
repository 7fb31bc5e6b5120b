"""Payload builders for the fake Discord: the JSON shapes discord.py 2.7.1 parses.

Each builder returns exactly the keys discord.py needs (see
``shared/platform-protocol-notes.md`` Part A) plus the cheap realistic extras, so a
missing field shows up here and in the schema test rather than as a KeyError that
silently kills the client's gateway task.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ALL_PERMISSIONS",
    "DISCORD_EPOCH_MS",
    "FakeUser",
    "Json",
    "SnowflakeFactory",
    "app_info",
    "attachment",
    "dm_channel",
    "guild_create",
    "interaction",
    "members_chunk",
    "message",
    "ready",
    "text_channel",
    "thread",
    "thread_member",
    "timestamp",
]

Json = dict[str, Any]
DISCORD_EPOCH_MS = 1_420_070_400_000
# View channel, send messages, send in threads, create public threads, read history,
# use application commands, embed links, attach files, add reactions, mention everyone.
ALL_PERMISSIONS = str(
    (1 << 10)
    | (1 << 11)
    | (1 << 38)
    | (1 << 35)
    | (1 << 16)
    | (1 << 31)
    | (1 << 14)
    | (1 << 15)
    | (1 << 6)
    | (1 << 17)
)


class SnowflakeFactory:
    """Unique, rising 18-19 digit snowflakes derived from the wall clock (like Discord's)."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def __call__(self) -> str:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(self._counter) & 0x3FFFFF))


def timestamp(at: float | None = None) -> str:
    """ISO-8601 timestamp as Discord writes it."""
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).isoformat()


@dataclass(slots=True)
class FakeUser:
    """A user of the fake guild; ``roles`` are role ids."""

    id: str
    username: str
    bot: bool = False
    roles: list[str] = field(default_factory=list)

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> Json:
        data: Json = {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username.capitalize(),
            "avatar": None,
        }
        if self.bot:
            data["bot"] = True
        return data

    def member(self, *, with_user: bool = True) -> Json:
        data: Json = {
            "roles": list(self.roles),
            "flags": 0,
            "joined_at": timestamp(0),
            "deaf": False,
            "mute": False,
        }
        if with_user:
            data["user"] = self.payload()
        return data


def app_info(app_id: str, bot: FakeUser, owner: FakeUser) -> Json:
    """``GET /oauth2/applications/@me``."""
    return {
        "id": app_id,
        "name": bot.username,
        "description": "fake application",
        "icon": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": owner.payload(),
        "verify_key": "0" * 64,
        "flags": 0,
        "interactions_endpoint_url": None,
    }


def guild_create(
    guild_id: str,
    *,
    name: str,
    channels: dict[str, str],
    members: list[FakeUser],
    roles: dict[str, str],
    threads: list[Json],
) -> Json:
    """GUILD_CREATE: ``channels`` and ``roles`` map id → name; @everyone is ``guild_id``."""
    role_list = [
        {
            "id": rid,
            "name": rname,
            "permissions": ALL_PERMISSIONS if rid == guild_id else "0",
            "position": 0 if rid == guild_id else 1,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": True,
        }
        for rid, rname in roles.items()
    ]
    return {
        "id": guild_id,
        "name": name,
        "owner_id": members[-1].id,
        "member_count": len(members),
        "large": False,
        "unavailable": False,
        "features": [],
        "roles": role_list,
        "channels": [
            text_channel(cid, cname, guild_id, pos)
            for pos, (cid, cname) in enumerate(channels.items())
        ],
        "threads": threads,
        "members": [user.member() for user in members],
        "presences": [],
        "voice_states": [],
        "emojis": [],
        "stickers": [],
    }


def message(
    *,
    message_id: str,
    channel_id: str,
    author: FakeUser,
    content: str,
    guild_id: str | None = None,
    mentions: list[FakeUser] | None = None,
    reference: Json | None = None,
    attachments: list[Json] | None = None,
    with_member: bool = False,
    edited: bool = False,
    webhook_id: str | None = None,
    flags: int = 0,
) -> Json:
    """A message object. ``reference`` is the referenced message's payload (a reply)."""
    data: Json = {
        "id": message_id,
        "channel_id": channel_id,
        "type": 19 if reference else 0,
        "content": content,
        "author": author.payload(),
        "mentions": [user.payload() for user in mentions or []],
        "mention_roles": [],
        "mention_everyone": False,
        "attachments": attachments or [],
        "embeds": [],
        "components": [],
        "timestamp": timestamp(),
        "edited_timestamp": timestamp() if edited else None,
        "tts": False,
        "pinned": False,
        "flags": flags,
    }
    if guild_id is not None:
        data["guild_id"] = guild_id
        if with_member:
            data["member"] = author.member(with_user=False)
    if reference is not None:
        data["message_reference"] = {
            "type": 0,
            "message_id": reference["id"],
            "channel_id": reference["channel_id"],
            **({"guild_id": guild_id} if guild_id else {}),
        }
        # Gateway payloads nest one level of the referenced message, never deeper.
        data["referenced_message"] = {
            k: v for k, v in reference.items() if k != "referenced_message"
        }
    if webhook_id is not None:
        data["webhook_id"] = webhook_id
    return data


def thread(
    *,
    thread_id: str,
    guild_id: str,
    parent_id: str,
    owner_id: str,
    name: str,
    auto_archive_duration: int = 1440,
) -> Json:
    """A public thread (type 11) as returned by ``POST …/threads``."""
    return {
        "id": thread_id,
        "guild_id": guild_id,
        "parent_id": parent_id,
        "owner_id": owner_id,
        "name": name,
        "type": 11,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "total_message_sent": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": auto_archive_duration,
            "archive_timestamp": timestamp(),
            "locked": False,
            "create_timestamp": timestamp(),
        },
    }


def interaction(
    *,
    interaction_id: str,
    application_id: str,
    kind: int,
    token: str,
    user: FakeUser,
    data: Json,
    channel: Json,
    guild_id: str | None,
) -> Json:
    """INTERACTION_CREATE: ``kind`` 2 = chat-input command, 4 = autocomplete."""
    payload: Json = {
        "id": interaction_id,
        "application_id": application_id,
        "type": kind,
        "token": token,
        "version": 1,
        # Missing this key crashes discord.py's gateway task (KeyError in parsing).
        "attachment_size_limit": 26_214_400,
        "data": data,
        "channel": channel,
        "channel_id": channel["id"],
        "app_permissions": ALL_PERMISSIONS,
        "locale": "en-US",
        "entitlements": [],
    }
    if guild_id is not None:
        member = user.member()
        member["permissions"] = ALL_PERMISSIONS
        payload.update(
            guild_id=guild_id,
            guild={"id": guild_id, "locale": "en-US", "features": []},
            guild_locale="en-US",
            member=member,
            context=0,
            authorizing_integration_owners={"0": guild_id},
        )
    else:
        payload.update(
            user=user.payload(), context=1, authorizing_integration_owners={"1": user.id}
        )
    return payload


def text_channel(channel_id: str, name: str, guild_id: str, position: int = 0) -> Json:
    """A guild text channel (type 0)."""
    return {
        "id": channel_id,
        "type": 0,
        "name": name,
        "position": position,
        "guild_id": guild_id,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
    }


def dm_channel(channel_id: str, user: FakeUser) -> Json:
    """A DM channel (type 1) with one recipient."""
    return {"id": channel_id, "type": 1, "recipients": [user.payload()], "last_message_id": None}


def thread_member(thread_id: str, user_id: str) -> Json:
    """THREAD_CREATE's ``member``: the bot's own thread membership."""
    return {"id": thread_id, "user_id": user_id, "join_timestamp": timestamp(), "flags": 0}


def ready(
    *, user: Json, session_id: str, resume_url: str, guild_ids: list[str], app_id: str
) -> Json:
    """READY's ``d``; guilds arrive unavailable and are filled by GUILD_CREATE."""
    return {
        "v": 10,
        "user": user,
        "session_id": session_id,
        "resume_gateway_url": resume_url,
        "guilds": [{"id": gid, "unavailable": True} for gid in guild_ids],
        "application": {"id": app_id, "flags": 0},
        "private_channels": [],
        "relationships": [],
    }


def members_chunk(guild_id: str, users: list[FakeUser]) -> Json:
    """GUILD_MEMBERS_CHUNK answering op 8 in one chunk."""
    return {
        "guild_id": guild_id,
        "members": [u.member() for u in users],
        "chunk_index": 0,
        "chunk_count": 1,
        "not_found": [],
        "presences": [],
    }


def attachment(att_id: str, filename: str, content_type: str, size: int, url: str) -> Json:
    """A message attachment served by the fake's ``/cdn`` route."""
    return {
        "id": att_id,
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
        "content_type": content_type,
    }
