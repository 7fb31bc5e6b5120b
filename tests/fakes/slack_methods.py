"""The fake Slack's Web API methods and the message store they keep consistent.

``chat.postMessage`` / ``chat.update`` / ``chat.*Stream`` / ``conversations.replies``
all read and write one store keyed by (channel, ts), so an update of an unknown ts is
``message_not_found``, an append to a finished stream is
``message_not_in_streaming_state``, and replies list exactly what was posted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fakes import slack_payloads as p
from tests.fakes.slack_payloads import Json

__all__ = ["FakeMessage", "Methods", "SlackApiError"]

MARKDOWN_LIMIT = 12_000
Handler = Callable[[Json], Json]


class SlackApiError(Exception):
    """Raised inside a method handler; becomes ``{"ok": false, "error": code}``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(slots=True)
class FakeMessage:
    """A stored message; ``history`` holds every text it had (oldest first)."""

    channel: str
    ts: str
    user: str
    text: str
    bot_id: str | None = None
    thread_ts: str | None = None
    blocks: list[Json] | None = None
    metadata: Json | None = None
    history: list[str] = field(default_factory=list)
    streaming: str | None = None  # "in_progress" or "completed" for chat.*Stream messages
    appends: int = 0
    deleted: bool = False

    def to_api(self, team: str) -> Json:
        return p.api_message(
            ts=self.ts,
            text=self.text,
            user=self.user,
            bot_id=self.bot_id,
            thread_ts=self.thread_ts,
            team=team,
            blocks=self.blocks,
            metadata=self.metadata,
            edited=len(self.history) > 1,
        )


class Methods:
    """Mixin: the store and one handler per Web API method (``FakeSlack`` supplies ids)."""

    team_id: str
    bot_user_id: str
    bot_id: str
    _connections_open: Handler  # Socket Mode's handshake (slack_socket)

    def _init_methods(self) -> None:
        self.messages: dict[tuple[str, str], FakeMessage] = {}
        self.ephemerals: list[Json] = []
        self.statuses: list[tuple[str, str, str]] = []  # (channel, thread_ts, status)
        self.suggested_prompts: dict[tuple[str, str], list[Json]] = {}
        self.titles: dict[tuple[str, str], str] = {}
        self.views: list[Json] = []
        self.max_text_chars = 40_000
        self.known_channels: set[str] = set()
        self.ts = p.TsFactory()

    def _bot_posted(self, message: FakeMessage) -> None:
        """A bot message appeared (``FakeSlack`` echoes it as an event)."""

    def thread(self, channel: str, thread_ts: str) -> list[FakeMessage]:
        """The thread's parent and replies in ``ts`` order."""
        found = [
            m
            for (ch, ts), m in self.messages.items()
            if ch == channel and (ts == thread_ts or m.thread_ts == thread_ts) and not m.deleted
        ]
        return sorted(found, key=lambda m: float(m.ts))

    def top_level(self, channel: str) -> list[FakeMessage]:
        """The channel's messages outside threads (thread parents included), by ``ts``."""
        found = [
            m
            for (ch, ts), m in self.messages.items()
            if ch == channel and m.thread_ts in (None, ts) and not m.deleted
        ]
        return sorted(found, key=lambda m: float(m.ts))

    def bot_replies(self, channel: str, thread_ts: str) -> list[FakeMessage]:
        return [m for m in self.thread(channel, thread_ts) if m.user == self.bot_user_id]

    def _handlers(self) -> dict[str, Handler]:
        return {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "conversations.replies": self._replies,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_prompts,
            "assistant.threads.setTitle": self._set_title,
            "users.info": self._users_info,
            "views.open": self._view,
            "views.publish": self._view,
        }

    # ----- methods -----

    def _auth_test(self, _: Json) -> Json:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake Workspace",
            "user": "groqbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _channel(self, params: Json, key: str = "channel") -> str:
        channel = str(params.get(key) or "")
        if channel not in self.known_channels:
            raise SlackApiError("channel_not_found")
        return channel

    def _text(self, params: Json, *, required: bool = True) -> str:
        text = str(params.get("text") or "")
        if required and not text.strip() and not params.get("blocks"):
            raise SlackApiError("no_text")
        if len(text) > self.max_text_chars:
            raise SlackApiError("msg_too_long")
        return text

    def _find(self, channel: str, ts: object) -> FakeMessage:
        message = self.messages.get((channel, str(ts or "")))
        if message is None or message.deleted:
            raise SlackApiError("message_not_found")
        return message

    def store(self, message: FakeMessage) -> FakeMessage:
        """Keep a message (a human's, or the bot's) so threads and replies see it."""
        message.history.append(message.text)
        self.messages[(message.channel, message.ts)] = message
        return message

    def _new_bot_message(self, channel: str, text: str, params: Json) -> FakeMessage:
        message = self.store(
            FakeMessage(
                channel=channel,
                ts=self.ts(),
                user=self.bot_user_id,
                text=text,
                bot_id=self.bot_id,
                thread_ts=str(params["thread_ts"]) if params.get("thread_ts") else None,
                blocks=params.get("blocks") or None,
                metadata=params.get("metadata") or None,
            )
        )
        self._bot_posted(message)
        return message

    def _post_message(self, params: Json) -> Json:
        channel = self._channel(params)
        message = self._new_bot_message(channel, self._text(params), params)
        reply = message.to_api(self.team_id)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": reply}

    def _update(self, params: Json) -> Json:
        channel = self._channel(params)
        message = self._find(channel, params.get("ts"))
        if message.user != self.bot_user_id or message.streaming == "in_progress":
            raise SlackApiError("cant_update_message")
        message.text = self._text(params)
        message.history.append(message.text)
        if "blocks" in params:
            message.blocks = params["blocks"] or None
        if params.get("metadata"):
            message.metadata = params["metadata"]
        reply = message.to_api(self.team_id)
        return {
            "ok": True,
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": reply,
        }

    def _delete(self, params: Json) -> Json:
        channel = self._channel(params)
        message = self._find(channel, params.get("ts"))
        message.deleted = True
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _post_ephemeral(self, params: Json) -> Json:
        channel = self._channel(params)
        if not params.get("user"):
            raise SlackApiError("user_not_in_channel")
        ts = self.ts()
        self.ephemerals.append({**params, "channel": channel, "message_ts": ts})
        return {"ok": True, "message_ts": ts}

    def _chunks_text(self, params: Json) -> str:
        text = str(params.get("markdown_text") or "")
        for chunk in params.get("chunks") or []:
            if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
                text += str(chunk.get("text", ""))
        if len(text) > MARKDOWN_LIMIT:
            raise SlackApiError("msg_too_long")
        return text

    def _start_stream(self, params: Json) -> Json:
        channel = self._channel(params)
        if not params.get("thread_ts"):
            raise SlackApiError("invalid_arguments")
        if p.channel_type(channel) != "im" and not (
            params.get("recipient_team_id") and params.get("recipient_user_id")
        ):
            raise SlackApiError("invalid_arguments")
        message = self._new_bot_message(channel, self._chunks_text(params), params)
        message.streaming = "in_progress"
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _streaming(self, params: Json) -> FakeMessage:
        message = self._find(self._channel(params), params.get("ts"))
        if message.streaming != "in_progress":
            raise SlackApiError("message_not_in_streaming_state")
        return message

    def _append_stream(self, params: Json) -> Json:
        message = self._streaming(params)
        text = self._chunks_text(params)
        if not text:
            raise SlackApiError("no_text")
        message.text += text
        message.appends += 1
        message.history.append(message.text)
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _stop_stream(self, params: Json) -> Json:
        message = self._streaming(params)
        text = self._chunks_text(params)
        if text:
            message.text += text
            message.history.append(message.text)
        message.streaming = "completed"
        if params.get("blocks"):
            message.blocks = params["blocks"]
        if params.get("metadata"):
            message.metadata = params["metadata"]
        reply = message.to_api(self.team_id)
        return {"ok": True, "channel": message.channel, "ts": message.ts, "message": reply}

    def _replies(self, params: Json) -> Json:
        channel = self._channel(params)
        if (channel, str(params.get("ts") or "")) not in self.messages:
            raise SlackApiError("thread_not_found")
        thread = self.thread(channel, str(params["ts"]))
        limit = int(params.get("limit") or 1000)
        return {
            "ok": True,
            "messages": [m.to_api(self.team_id) for m in thread[:limit]],
            "has_more": len(thread) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _thread_ref(self, params: Json) -> tuple[str, str]:
        channel = self._channel(params, "channel_id")
        if not params.get("thread_ts"):
            raise SlackApiError("invalid_arguments")
        return channel, str(params["thread_ts"])

    def _set_status(self, params: Json) -> Json:
        channel, thread_ts = self._thread_ref(params)
        self.statuses.append((channel, thread_ts, str(params.get("status") or "")))
        return {"ok": True}

    def _set_prompts(self, params: Json) -> Json:
        ref = self._thread_ref(params)
        prompts = params.get("prompts")
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= 4:
            raise SlackApiError("invalid_arguments")
        self.suggested_prompts[ref] = prompts
        return {"ok": True}

    def _set_title(self, params: Json) -> Json:
        self.titles[self._thread_ref(params)] = str(params.get("title") or "")
        return {"ok": True}

    def _users_info(self, params: Json) -> Json:
        user = str(params.get("user") or "")
        return {
            "ok": True,
            "user": {"id": user, "name": user.lower(), "profile": {"display_name": user}},
        }

    def _view(self, params: Json) -> Json:
        self.views.append(params)
        return {"ok": True, "view": {"id": f"V{len(self.views):08d}", **(params.get("view") or {})}}
