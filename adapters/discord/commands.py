"""Slash commands: /model (with autocomplete), /models, /reset, /system, /usage, /help,
and the admins' /cache clear and /cache stats, and /channel show|persona|model|mode|clear
(a channel's settings).

Each command is a thin call into the engine's command operations; answers that
concern only the caller are ephemeral. ``CommandTree`` applies the same allow/deny
lists as messages and turns every failure into a short ephemeral answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from adapters.discord.config import PLATFORM
from adapters.discord.surface import MAX_CHARS, NO_MENTIONS
from adapters.discord.translate import channel_ref_for, key_for_channel, user_ref
from bot.channel_commands import CLEARABLE
from bot.engine import Engine
from bot.errors import BotError
from bot.log import conversation_context
from bot.types import ChannelRef, CommandReply, ConversationKey, UserRef

__all__ = ["CommandTree", "build_commands", "fit", "model_choices"]

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord's limit for autocomplete answers
SCOPES = [
    app_commands.Choice(name="all my conversations", value="me"),
    app_commands.Choice(name="this conversation only", value="conversation"),
]
NOT_HERE = (
    "There is no conversation here: run this inside the bot's thread or a DM "
    "(in a channel, mention me to start one)."
)
DENIED = "You can't use this bot here."
UNREADABLE = "Discord sent this command without its details; please try it again."
FAILED = "Something went wrong on our side; the error was logged. Please try again."

Interaction = discord.Interaction[Any]
Command = app_commands.Command[Any, Any, Any]
AnyCommand = Command | app_commands.Group


def fit(text: str, limit: int = MAX_CHARS) -> str:
    """Cut a long answer to ``limit``: whole lines while they fit, saying how many lines
    were left out. A first line longer than ``limit`` is itself cut in the middle
    (its start and end kept), never dropped."""
    if len(text) <= limit:
        return text
    lines = text.splitlines()
    kept: list[str] = []
    for i, line in enumerate(lines):
        if len("\n".join([*kept, line])) + len(_more(len(lines) - i - 1)) <= limit:
            kept.append(line)
            continue
        if kept:
            return "\n".join(kept) + _more(len(lines) - i)
        more = _more(len(lines) - i - 1)
        return _cut_middle(line, limit - len(more)) + more
    return text[:limit]  # unreachable: the text fits or some line does not


def _more(count: int) -> str:
    return f"\n… and {count} more line(s)" if count else ""


def _cut_middle(line: str, limit: int) -> str:
    """``line`` shortened to ``limit`` by an ellipsis in the middle; the end of a line
    often says what it is about (``… is not an available model``)."""
    tail = min(len(line) // 3, limit // 4, 200)
    head = limit - tail - 1
    return f"{line[:head]}…{line[len(line) - tail :] if tail else ''}"


def model_choices(ids: list[str], current: str) -> list[app_commands.Choice[str]]:
    """At most 25 choices, the current model first and marked."""
    ordered = sorted(ids, key=lambda m: (m != current, m))[:MAX_CHOICES]
    return [
        app_commands.Choice(name=(f"✓ {m} (current)" if m == current else m)[:100], value=m)
        for m in ordered
        if len(m) <= 100  # longer values are rejected by Discord
    ]


async def _answer(interaction: Interaction, reply: CommandReply) -> None:
    text = fit(reply.text)
    if interaction.response.is_done():
        await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
    else:
        await interaction.response.send_message(
            text, ephemeral=reply.private, allowed_mentions=NO_MENTIONS
        )


def _who(interaction: Interaction) -> tuple[UserRef, ConversationKey | None]:
    return user_ref(interaction.user), key_for_channel(interaction.channel, interaction.user.id)


class CommandTree(app_commands.CommandTree[Any]):
    """The command tree with access control and user-facing error answers."""

    def __init__(self, client: discord.Client, *, allowed: Callable[[Interaction], bool]) -> None:
        super().__init__(client)
        self._allowed = allowed

    async def interaction_check(self, interaction: Interaction, /) -> bool:
        command = interaction.type is discord.InteractionType.application_command
        if interaction.data is None:
            # A malformed event: discord.py would fail on it in a task nobody awaits.
            log.warning(
                "interaction %s arrived without data; answered with an apology", interaction.id
            )
            if command:
                await interaction.response.send_message(UNREADABLE, ephemeral=True)
            return False
        if self._allowed(interaction):
            return True
        if command:
            await interaction.response.send_message(DENIED, ephemeral=True)
        return False

    async def on_error(
        self, interaction: Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        cause = error.__cause__ if isinstance(error, app_commands.CommandInvokeError) else error
        name = getattr(interaction.command, "name", "?")
        user, key = _who(interaction)
        with conversation_context(key.storage_id() if key else "-", user_id=user.storage_id()):
            if isinstance(cause, BotError):
                log.warning("command /%s failed: %s", name, cause.detail or cause.user_text)
                text = cause.user_text
            else:
                log.error("command /%s failed", name, exc_info=cause)
                text = FAILED
            try:
                await _answer(interaction, CommandReply(text))
            except discord.HTTPException as exc:
                log.warning("could not report a command error: %s", exc)


def build_commands(engine: Engine) -> list[AnyCommand]:
    """The slash commands, bound to ``engine``."""
    return [
        _model_command(engine),
        *_conversation_commands(engine),
        *_info_commands(engine),
        _cache_commands(engine),
        _channel_command(engine),
    ]


def _model_command(engine: Engine) -> Command:
    @app_commands.command(name="model", description="Choose the model that answers you")
    @app_commands.describe(
        name="Model id; start typing to search the live list",
        scope="Where the choice applies",
        strict="Only this model answers: no fallback to another model when it is busy",
    )
    @app_commands.choices(scope=SCOPES)
    async def model(
        interaction: Interaction, name: str | None = None, scope: str = "me", strict: bool = False
    ) -> None:
        user, key = _who(interaction)
        if scope == "conversation" and key is None:
            await _answer(interaction, CommandReply(NOT_HERE))
            return
        # Listing or validating a model may query the API: answer within Discord's 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        if not name:
            await _answer(interaction, await engine.models_text(user, key))
            return
        target = key if scope == "conversation" else None
        await _answer(interaction, await engine.set_model(user, name, key=target, strict=strict))

    @model.autocomplete("name")
    async def model_autocomplete(
        interaction: Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        user, key = _who(interaction)
        return await _model_autocomplete(engine, current, lambda: engine.current_model(user, key))

    return model


async def _model_autocomplete(
    engine: Engine, typed: str, chosen: Callable[[], Awaitable[str]]
) -> list[app_commands.Choice[str]]:
    """Live models matching ``typed``, the one ``chosen`` says is in use first and marked."""
    try:
        models = await engine.list_models(typed)
        current = await chosen()
    except BotError as exc:
        log.warning("model autocomplete failed: %s", exc)
        return []
    return model_choices([m.id for m in models], current)


def _conversation_commands(engine: Engine) -> list[Command]:
    @app_commands.command(name="reset", description="Forget this conversation")
    async def reset(interaction: Interaction) -> None:
        user, key = _who(interaction)
        if key is None:
            await _answer(interaction, CommandReply(NOT_HERE))
            return
        await _answer(interaction, await engine.reset(key, user))

    @app_commands.command(name="system", description="Set or clear your persona (system prompt)")
    @app_commands.describe(
        prompt="How the bot should behave", clear="Remove the persona", scope="Where it applies"
    )
    @app_commands.choices(scope=SCOPES)
    async def system(
        interaction: Interaction, prompt: str | None = None, clear: bool = False, scope: str = "me"
    ) -> None:
        user, key = _who(interaction)
        if scope == "conversation" and key is None:
            await _answer(interaction, CommandReply(NOT_HERE))
            return
        if not clear and not (prompt or "").strip():
            await _answer(interaction, CommandReply("Give a prompt, or set clear to True."))
            return
        target = key if scope == "conversation" else None
        text = None if clear else prompt
        await _answer(interaction, await engine.set_system(user, text, key=target))

    return [reset, system]


def _info_commands(engine: Engine) -> list[Command]:
    @app_commands.command(name="models", description="List the available models")
    async def models(interaction: Interaction) -> None:
        user, key = _who(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await _answer(interaction, await engine.models_text(user, key))

    @app_commands.command(name="usage", description="Your usage and remaining quota")
    async def usage(interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await _answer(interaction, await engine.usage(user_ref(interaction.user)))

    @app_commands.command(name="help", description="How to talk to the bot")
    async def help_(interaction: Interaction) -> None:
        await _answer(interaction, engine.help(PLATFORM))

    return [models, usage, help_]


def _cache_commands(engine: Engine) -> app_commands.Group:
    """``/cache clear`` and ``/cache stats``: the engine refuses anyone not in ADMIN_IDS."""
    group = app_commands.Group(name="cache", description="The response cache (admins only)")

    @group.command(name="clear", description="Empty the response cache (admins only)")
    async def clear(interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await _answer(interaction, await engine.cache(user_ref(interaction.user), "clear"))

    @group.command(name="stats", description="The response cache's hit rate (admins only)")
    async def stats(interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await _answer(interaction, await engine.cache(user_ref(interaction.user), ""))

    return group


MODES = [
    app_commands.Choice(name="mention: answer when mentioned", value="mention"),
    app_commands.Choice(name="all: answer every message, each in a thread", value="all"),
]
CLEARABLE_CHOICES = [
    app_commands.Choice(name="everything" if what == "all" else what, value=what)
    for what in CLEARABLE
]


def _channel_command(engine: Engine) -> app_commands.Group:
    """``/channel show|persona|model|mode|clear``: the channel's settings; the engine
    lets anyone see them and only admins change them."""
    group = app_commands.Group(
        name="channel", description="This channel's persona, model and mode (admins set them)"
    )

    def where(interaction: Interaction) -> tuple[UserRef, ChannelRef | None]:
        return user_ref(interaction.user), channel_ref_for(interaction.channel)

    @group.command(name="show", description="Show this channel's settings")
    async def show(interaction: Interaction) -> None:
        await _answer(interaction, await engine.channel_settings_text(*where(interaction)))

    @group.command(name="persona", description="Set this channel's persona (admins)")
    @app_commands.describe(text="How the bot should behave in this channel")
    async def persona(interaction: Interaction, text: str) -> None:
        await _answer(interaction, await engine.set_channel_persona(*where(interaction), text))

    @group.command(name="model", description="Set this channel's default model (admins)")
    @app_commands.describe(name="Model id; start typing to search the live list")
    async def model(interaction: Interaction, name: str) -> None:
        # Validating the model may query the API: answer within Discord's 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        await _answer(interaction, await engine.set_channel_model(*where(interaction), name))

    @model.autocomplete("name")
    async def model_autocomplete(
        interaction: Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        channel = channel_ref_for(interaction.channel)
        if channel is None:
            return []
        return await _model_autocomplete(engine, current, lambda: engine.channel_model(channel))

    @group.command(name="mode", description="Which messages the bot answers here (admins)")
    @app_commands.choices(mode=MODES)
    async def mode(interaction: Interaction, mode: str) -> None:
        await _answer(interaction, await engine.set_channel_mode(*where(interaction), mode))

    @group.command(name="clear", description="Clear this channel's settings (admins)")
    @app_commands.describe(what="The setting to clear (all of them when left out)")
    @app_commands.choices(what=CLEARABLE_CHOICES)
    async def clear(interaction: Interaction, what: str = "all") -> None:
        await _answer(interaction, await engine.clear_channel(*where(interaction), what))

    return group
