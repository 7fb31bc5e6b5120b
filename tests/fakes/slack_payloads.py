"""Pure builders for what Slack sends: Events API bodies, Socket Mode frames, slash
command and interactivity payloads, Web API message objects, and request signatures.

Shapes follow ``../shared/platform-protocol-notes.md`` Part B (observed against
slack-bolt 1.30 / slack-sdk 3.48); every builder returns plain JSON-able dicts.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FakeUser",
    "Json",
    "TsFactory",
    "api_message",
    "app_mention",
    "assistant_thread_event",
    "block_actions",
    "bot_message",
    "channel_type",
    "disconnect",
    "envelope",
    "event_callback",
    "hello",
    "message",
    "message_changed",
    "message_deleted",
    "rich_text",
    "sign",
    "slash_command",
]

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FakeUser:
    """A workspace member; ``bot_id`` is set for bot users."""

    id: str
    name: str
    bot_id: str | None = None

    def to_json(self, team_id: str) -> Json:
        return {"id": self.id, "username": self.name, "name": self.name, "team_id": team_id}


class TsFactory:
    """Slack message timestamps ("<epoch s>.<6 digits>"), unique and strictly increasing."""

    def __init__(self) -> None:
        self._last_us = 0

    def __call__(self) -> str:
        self._last_us = max(int(time.time() * 1_000_000), self._last_us + 1)
        seconds, micros = divmod(self._last_us, 1_000_000)
        return f"{seconds}.{micros:06d}"


_event_ids = itertools.count(1)


def new_event_id() -> str:
    return f"Ev{next(_event_ids):08d}FAKE"


def channel_type(channel: str) -> str:
    """Slack's ``channel_type`` for an id: D → im, G → group, else channel."""
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def rich_text(text: str) -> list[Json]:
    """The ``blocks`` Slack attaches to a user message (one rich_text section)."""
    return [
        {
            "type": "rich_text",
            "block_id": uuid.uuid4().hex[:5],
            "elements": [
                {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
            ],
        }
    ]


# ----- events -----


def app_mention(
    user: str, channel: str, text: str, ts: str, team: str, thread_ts: str | None = None
) -> Json:
    event: Json = {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "client_msg_id": str(uuid.uuid4()),
        "team": team,
        "blocks": rich_text(text),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message(
    user: str, channel: str, text: str, ts: str, team: str, thread_ts: str | None = None
) -> Json:
    """A human's message event (``message.channels`` / ``.groups`` / ``.im``)."""
    event: Json = {
        "type": "message",
        "channel": channel,
        "channel_type": channel_type(channel),
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "client_msg_id": str(uuid.uuid4()),
        "team": team,
        "blocks": rich_text(text),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = user
    return event


def bot_message(
    user: str, bot_id: str, channel: str, text: str, ts: str, team: str, thread_ts: str | None
) -> Json:
    """A message posted by a bot (ours or another app): carries ``bot_id``."""
    event: Json = {
        "type": "message",
        "channel": channel,
        "channel_type": channel_type(channel),
        "user": user,
        "bot_id": bot_id,
        "app_id": "A0OTHER001",
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "team": team,
        "bot_profile": {"id": bot_id, "name": "bot", "team_id": team},
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message_changed(channel: str, new: Json, previous: Json, event_ts: str) -> Json:
    return {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": channel,
        "channel_type": channel_type(channel),
        "message": new,
        "previous_message": previous,
        "ts": event_ts,
        "event_ts": event_ts,
    }


def message_deleted(channel: str, previous: Json, event_ts: str) -> Json:
    return {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": channel,
        "channel_type": channel_type(channel),
        "deleted_ts": previous["ts"],
        "previous_message": previous,
        "ts": event_ts,
        "event_ts": event_ts,
    }


def assistant_thread_event(
    kind: str, user: str, channel: str, thread_ts: str, team: str, context_channel: str | None
) -> Json:
    """``assistant_thread_started`` or ``assistant_thread_context_changed``."""
    context: Json = {"team_id": team, "enterprise_id": None}
    if context_channel is not None:
        context["channel_id"] = context_channel
    return {
        "type": kind,
        "event_ts": thread_ts,
        "assistant_thread": {
            "user_id": user,
            "channel_id": channel,
            "thread_ts": thread_ts,
            "context": context,
        },
    }


def event_callback(
    event: Json, *, team_id: str, app_id: str, bot_user_id: str, event_id: str | None = None
) -> Json:
    """The Events API body around one event, as Slack posts it / puts it in an envelope."""
    return {
        "token": "fake-verification-token",
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_event_id(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


# ----- commands and interactivity -----


def slash_command(
    *,
    command: str,
    text: str,
    user: FakeUser,
    channel: str,
    team_id: str,
    app_id: str,
    response_url: str,
) -> Json:
    """A slash command's fields; every value a string, as Slack sends the form."""
    return {
        "token": "fake-verification-token",
        "team_id": team_id,
        "team_domain": "fake",
        "channel_id": channel,
        "channel_name": "directmessage" if channel.startswith("D") else "general",
        "user_id": user.id,
        "user_name": user.name,
        "command": command,
        "text": text,
        "api_app_id": app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().hex[:12]}",
    }


def block_actions(
    *,
    action: Json,
    user: FakeUser,
    channel: str,
    team_id: str,
    app_id: str,
    response_url: str,
    container_ts: str,
    ephemeral: bool = True,
) -> Json:
    """A ``block_actions`` payload for one action (button click or select choice)."""
    action = {"action_ts": f"{time.time():.6f}", "block_id": "blk", **action}
    container: Json = {
        "type": "message",
        "message_ts": container_ts,
        "channel_id": channel,
        "is_ephemeral": ephemeral,
    }
    payload: Json = {
        "type": "block_actions",
        "user": user.to_json(team_id),
        "api_app_id": app_id,
        "token": "fake-verification-token",
        "container": container,
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().hex[:12]}",
        "team": {"id": team_id, "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "general"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }
    if not ephemeral:
        payload["message"] = {"type": "message", "ts": container_ts, "text": ""}
    return payload


# ----- Socket Mode frames -----


def envelope(
    kind: str,
    payload: Json,
    *,
    envelope_id: str | None = None,
    retry_attempt: int = 0,
    retry_reason: str = "",
) -> Json:
    """A Socket Mode envelope: ``events_api``, ``slash_commands`` or ``interactive``."""
    frame: Json = {
        "envelope_id": envelope_id or str(uuid.uuid4()),
        "type": kind,
        "accepts_response_payload": kind == "slash_commands",
        "payload": payload,
    }
    if kind == "events_api":
        frame["retry_attempt"] = retry_attempt
        frame["retry_reason"] = retry_reason
    return frame


def hello(app_id: str, num_connections: int) -> Json:
    return {
        "type": "hello",
        "num_connections": num_connections,
        "debug_info": {
            "host": "applink-fake",
            "build_number": 1,
            "approximate_connection_time": 18060,
        },
        "connection_info": {"app_id": app_id},
    }


def disconnect(reason: str = "refresh_requested") -> Json:
    return {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}


# ----- Web API objects -----


def api_message(
    *,
    ts: str,
    text: str,
    user: str,
    bot_id: str | None,
    thread_ts: str | None,
    team: str,
    blocks: list[Json] | None = None,
    metadata: Json | None = None,
    edited: bool = False,
) -> Json:
    """A message object as the Web API returns it (postMessage, replies, update)."""
    out: Json = {"type": "message", "user": user, "text": text, "ts": ts, "team": team}
    if bot_id is not None:
        out["bot_id"] = bot_id
        out["app_id"] = "A0FAKE0001"
    if thread_ts is not None:
        out["thread_ts"] = thread_ts
    if blocks:
        out["blocks"] = blocks
    if metadata:
        out["metadata"] = metadata
    if edited:
        out["edited"] = {"user": user, "ts": ts}
    return out


def sign(secret: str, timestamp: str, body: str | bytes) -> str:
    """``X-Slack-Signature`` for a body: ``v0=`` + HMAC-SHA256 of ``v0:{ts}:{body}``."""
    raw = body.encode() if isinstance(body, str) else body
    base = b"v0:" + timestamp.encode() + b":" + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
