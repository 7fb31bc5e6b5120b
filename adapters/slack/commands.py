"""Slash commands and the model picker.

``/<prefix>-model`` (no argument: an ephemeral Block Kit select of the live models with
the current one pre-selected; with one: set it), ``-models``, ``-reset``, ``-system``
(text, or ``clear``), ``-usage``, ``-help``, ``-channel`` (the channel's settings:
``show``, ``persona <text>``, ``model <id>``, ``mode mention|all``, ``clear``) and the
admins' ``-cache`` (``clear``, or its hit rate), where the prefix is
SLACK_COMMAND_PREFIX. Every command is acked at once (Slack shows an error after 3 s)
and answered afterwards, privately, through its ``response_url``; choosing in the select
sets the model and replaces the picker with the confirmation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from adapters.slack.config import PLATFORM
from adapters.slack.format import to_mrkdwn
from adapters.slack.translate import dm_key, is_dm_channel, user_ref
from bot.engine import Engine
from bot.errors import BotError
from bot.log import conversation_context
from bot.types import ChannelRef, CommandReply, ModelInfo, UserRef

__all__ = ["COMMANDS", "MODEL_ACTION_ID", "Answer", "SlashCommands", "model_picker"]

log = logging.getLogger(__name__)

COMMANDS = ("model", "models", "reset", "system", "usage", "help", "cache", "channel")
MODEL_ACTION_ID = "groqbot_pick_model"
MAX_OPTIONS = 100  # Block Kit's limit for a static_select
FAILED_TEXT = "Something went wrong on our side; the error was logged. Please try again."

Body = dict[str, Any]
Spawn = Callable[[Coroutine[Any, Any, None]], None]
Allowed = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class Answer:
    """A command's ephemeral answer: Markdown text, and optional Block Kit blocks."""

    text: str
    blocks: list[dict[str, Any]] | None = None


def _option(model_id: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": model_id[:75]}, "value": model_id}


def model_picker(models: list[ModelInfo], current: str) -> list[dict[str, Any]]:
    """A section with a static_select of ``models`` (current one pre-selected)."""
    ids = [m.id for m in models if len(m.id) <= 150][:MAX_OPTIONS]
    select: dict[str, Any] = {
        "type": "static_select",
        "action_id": MODEL_ACTION_ID,
        "placeholder": {"type": "plain_text", "text": "Choose a model"},
        "options": [_option(i) for i in ids],
    }
    if current in ids:
        select["initial_option"] = _option(current)
    text = f"Current model: `{current}`. Pick the model for your next messages:"
    return [
        {
            "type": "section",
            "block_id": "model_picker",
            "text": {"type": "mrkdwn", "text": to_mrkdwn(text)},
            "accessory": select,
        }
    ]


class SlashCommands:
    """Registers the commands on a Bolt app and runs them against the engine."""

    def __init__(
        self, *, engine: Engine, prefix: str, team_id: str, spawn: Spawn, allowed: Allowed
    ) -> None:
        self._engine = engine
        self._prefix = prefix
        self._team_id = team_id
        self._spawn = spawn
        self._allowed = allowed

    def register(self, app: AsyncApp) -> None:
        for name in COMMANDS:
            app.command(self._prefix + name)(self._on_command)
        app.action(MODEL_ACTION_ID)(self._on_pick)

    async def _on_command(self, ack: AsyncAck, body: Body, respond: AsyncRespond) -> None:
        await ack()  # within Slack's 3 s; the (maybe slow) answer follows
        with self._logged_as(str(body.get("user_id", "")), str(body.get("channel_id", ""))):
            self._spawn(self._answer(self.run(body), respond, replace=False))

    async def _on_pick(self, ack: AsyncAck, body: Body, respond: AsyncRespond) -> None:
        await ack()
        channel = (body.get("channel") or body.get("container") or {}).get("id", "")
        with self._logged_as(str((body.get("user") or {}).get("id", "")), str(channel)):
            self._spawn(self._answer(self.pick(body), respond, replace=True))

    def _logged_as(self, user_id: str, channel: str) -> AbstractContextManager[None]:
        """Log lines of the task spawned inside name the user (hashed) and, in a DM, the
        conversation (a slash command doesn't say which thread it was typed in)."""
        key = dm_key(self._team_id, user_id) if is_dm_channel(channel) else None
        user = user_ref(user_id).storage_id() if user_id else ""
        return conversation_context(key.storage_id() if key else "-", user_id=user)

    async def _answer(
        self, work: Coroutine[Any, Any, Answer], respond: AsyncRespond, *, replace: bool
    ) -> None:
        try:
            reply = await work
        except BotError as exc:
            log.warning("Slack command failed: %s", exc.detail or exc.user_text)
            reply = Answer(exc.user_text)
        except Exception:  # top of a task: tell the user, keep the details in the log
            log.exception("Slack command failed")
            reply = Answer(FAILED_TEXT)
        try:
            await respond(
                text=to_mrkdwn(reply.text),
                blocks=reply.blocks,
                response_type="ephemeral",
                replace_original=replace,
            )
        except Exception as exc:  # the response_url expired or Slack is unreachable
            log.warning("answering a Slack command failed: %s: %s", type(exc).__name__, exc)

    async def run(self, body: Body) -> Answer:
        """The answer to one slash command payload."""
        user = user_ref(str(body["user_id"]), str(body.get("user_name", "")))
        channel = str(body.get("channel_id", ""))
        if not self._allowed(user.user_id, channel):
            return Answer("Sorry, you can't use this bot here.")
        name = str(body.get("command", "")).removeprefix(self._prefix)
        arg = str(body.get("text", "")).strip()
        if name == "model" and not arg:
            return await self._model_picker(user)
        # Slash commands don't say which thread they were typed in: only a DM is one.
        dm = is_dm_channel(channel)
        key = dm_key(self._team_id, user.user_id) if dm else None
        place = None if dm or not channel else ChannelRef(PLATFORM, self._team_id, channel)
        reply = await self._engine.run_command(name, arg, user=user, key=key, channel=place)
        return _reply(reply)

    async def _model_picker(self, user: UserRef) -> Answer:
        models = await self._engine.list_models()
        current = await self._engine.current_model(user, None)
        if not models:
            return Answer(f"The API lists no models. Current model: `{current}`.")
        text = f"Current model: `{current}`."
        return Answer(text, model_picker(models, current))

    async def pick(self, body: Body) -> Answer:
        """The answer to a choice in the model picker."""
        user = user_ref(str(body["user"]["id"]))
        channel = str((body.get("channel") or body.get("container") or {}).get("id", ""))
        if not self._allowed(user.user_id, channel):
            return Answer("Sorry, you can't use this bot here.")
        action = next(a for a in body["actions"] if a.get("action_id") == MODEL_ACTION_ID)
        return _reply(await self._engine.set_model(user, str(action["selected_option"]["value"])))


def _reply(reply: CommandReply) -> Answer:
    """The engine's reply as ours (same text, no blocks)."""
    return Answer(reply.text)
