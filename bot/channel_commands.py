"""``/channel``: admins' per-channel persona, default model and mode.

Everyone may see a channel's settings; only admins (ADMIN_IDS) may change them. Adapters
call the structured operations (``set_channel_persona`` …) or, where commands arrive as
text, ``run_command("channel", …)`` (``show``, ``persona <text>``, ``model <id>``,
``mode mention|all``, ``clear [persona|model|mode|all]``). Where the settings take
effect: ``CommandsMixin.effective_prefs`` (persona and model, below a user's and a
conversation's own choice) and ``answers_all`` (mode), which adapters ask before
answering a message that doesn't mention the bot.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bot.commands import CommandsMixin, clean_persona, persona_problem
from bot.errors import BotError, StoreError
from bot.types import (
    ChannelField,
    ChannelMode,
    ChannelRef,
    ChannelSettings,
    CommandReply,
    ConversationKey,
    Platform,
    UserRef,
)

__all__ = ["CLEARABLE", "NO_CHANNEL", "ChannelCommandsMixin"]

log = logging.getLogger(__name__)

_Changes = dict[ChannelField, str | None]
# What ``clear <what>`` writes.
_CLEAR: dict[str, _Changes] = {
    "persona": {"system_prompt": None},
    "model": {"model": None},
    "mode": {"mode": ChannelMode.MENTION},
    "all": {"system_prompt": None, "model": None, "mode": ChannelMode.MENTION},
}
CLEARABLE = tuple(_CLEAR)  # what ``clear_channel`` takes
_SHOWN_PERSONA_CHARS = 300
NO_CHANNEL = (
    "Channel settings belong to a channel: run this in one (or in a thread of it), not in "
    "a direct message."
)


class ChannelCommandsMixin(CommandsMixin):
    """The ``/channel`` operations, over ``CommandsMixin``; mixed into ``Engine``."""

    async def answers_all(self, channel: ChannelRef) -> bool:
        """Whether the bot answers every top-level message in ``channel`` (mode ``all``).

        A database that can't say is taken as "no" (the default mode): most channel
        messages are not for the bot, so guessing "yes" would answer them all."""
        try:
            settings = await self.store.channel_settings(channel)
        except StoreError as exc:
            log.warning(
                "could not read the mode of channel %s (%s); answering mentions only",
                channel.storage_id(),
                exc.detail or exc,
            )
            return False
        return settings.mode is ChannelMode.ALL

    async def channel_model(self, channel: ChannelRef) -> str:
        """The model answering in ``channel`` for users who chose none: the channel's,
        else the default."""
        return (await self.store.channel_settings(channel)).model or await self.default_model()

    async def channel_settings_text(
        self, user: UserRef, channel: ChannelRef | None
    ) -> CommandReply:
        """The channel's settings and what applies where none is set (anyone may look)."""
        if channel is None:
            return CommandReply(NO_CHANNEL)
        settings = await self.store.channel_settings(channel)
        p = self._platform_help(user.platform).command_prefix
        if settings.system_prompt is None:
            persona = "not set (the default persona applies)"
        else:
            persona = f"“{_shorten(settings.system_prompt, _SHOWN_PERSONA_CHARS)}”"
        if settings.model is None:
            model = f"not set (the default, `{await self.default_model()}`, applies)"
        else:
            model = f"`{settings.model}`"
        lines = [
            "Settings of this channel" + _changed(settings) + ":",
            f"• persona: {persona}",
            f"• model: {model}",
            f"• mode: {_mode_text(settings.mode)}",
            f"A conversation's own `{p}system` / `{p}model` choice, then a user's, comes first.",
        ]
        return CommandReply("\n".join(lines))

    async def set_channel_persona(
        self, user: UserRef, channel: ChannelRef | None, prompt: str
    ) -> CommandReply:
        """Set the channel's persona (admins); an empty one is refused."""
        if isinstance(place := self._changeable(user, channel), CommandReply):
            return place
        cleaned = clean_persona(prompt)
        if cleaned is None:
            return CommandReply("Give the persona's text, or clear it.")
        if (problem := persona_problem(cleaned)) is not None:
            return problem
        await self._update(user, place, "persona set", {"system_prompt": cleaned})
        return CommandReply(
            "Persona set for this channel; users' and conversations' own personas still come first."
        )

    async def set_channel_model(
        self, user: UserRef, channel: ChannelRef | None, model: str
    ) -> CommandReply:
        """Set the channel's default model (admins), checked against the live list."""
        if isinstance(place := self._changeable(user, channel), CommandReply):
            return place
        model = model.strip()
        if not model:
            return CommandReply("Give a model id (see /models), or clear it.")
        if (problem := await self.model_problem(model)) is not None:
            return problem
        await self._update(user, place, f"model {model} set", {"model": model})
        return CommandReply(
            f"Model `{model}` set for this channel; users' and conversations' own model "
            "choices still come first."
        )

    async def set_channel_mode(
        self, user: UserRef, channel: ChannelRef | None, mode: str
    ) -> CommandReply:
        """Set which messages the bot answers in the channel (admins)."""
        if isinstance(place := self._changeable(user, channel), CommandReply):
            return place
        try:
            chosen = ChannelMode(mode.strip().lower())
        except ValueError:
            names = " or ".join(f"`{m.value}`" for m in ChannelMode)
            return CommandReply(f"`{mode.strip()}` is not a mode: choose {names}.")
        await self._update(user, place, f"mode {chosen} set", {"mode": chosen})
        return CommandReply(f"Mode set for this channel: {_mode_text(chosen)}")

    async def clear_channel(
        self, user: UserRef, channel: ChannelRef | None, what: str = "all"
    ) -> CommandReply:
        """Clear one setting (``persona``, ``model``, ``mode``) or ``all`` of them (admins)."""
        if isinstance(place := self._changeable(user, channel), CommandReply):
            return place
        what = what.strip().lower() or "all"
        cleared = _CLEAR.get(what)
        if cleared is None:
            choices = ", ".join(f"`{f}`" for f in _CLEAR)
            return CommandReply(f"`{what}` is not a channel setting: clear one of {choices}.")
        await self._update(user, place, f"{what} cleared", cleared)
        if what == "all":
            return CommandReply("This channel's settings are cleared; the defaults apply.")
        return CommandReply(f"This channel's {what} is cleared; the default applies.")

    async def run_command(
        self,
        name: str,
        arg: str,
        *,
        user: UserRef,
        key: ConversationKey | None,
        channel: ChannelRef | None = None,
    ) -> CommandReply:
        """``CommandsMixin.run_command``, plus ``channel`` (its text syntax in the module
        docstring) for the channel the command was typed in: ``channel``, else the
        conversation's."""
        if name.strip().lower() != "channel":
            return await super().run_command(name, arg, user=user, key=key)
        if channel is None and key is not None:
            channel = key.channel_ref
        try:
            return await self._channel_text_command(user, channel, arg.strip())
        except BotError as exc:
            return CommandReply(exc.user_text)

    async def _channel_text_command(
        self, user: UserRef, channel: ChannelRef | None, arg: str
    ) -> CommandReply:
        action, _, rest = arg.partition(" ")
        action, rest = action.lower(), rest.strip()
        if action in ("", "show"):
            return await self.channel_settings_text(user, channel)
        if action in ("persona", "system") and rest:
            return await self.set_channel_persona(user, channel, rest)
        if action == "model" and rest:
            return await self.set_channel_model(user, channel, rest)
        if action == "mode" and rest:
            return await self.set_channel_mode(user, channel, rest)
        if action == "clear":
            return await self.clear_channel(user, channel, rest or "all")
        return CommandReply("Usage: " + self._channel_usage(user))

    def _channel_usage(self, user: UserRef) -> str:
        p = self._platform_help(user.platform).command_prefix
        return (
            f"`{p}channel` shows this channel's settings · `{p}channel persona <text>` · "
            f"`{p}channel model <id>` · `{p}channel mode mention|all` · "
            f"`{p}channel clear [persona|model|mode]` (admins only)."
        )

    def help(self, platform: Platform) -> CommandReply:
        """``CommandsMixin.help`` plus the channel settings, where there are channels."""
        about = self._platform_help(platform)
        if not about.has_channels:
            return super().help(platform)
        p = about.command_prefix
        return CommandReply(
            super().help(platform).text + f"\n`{p}channel show`: this channel's persona, "
            "model and mode, which admins set (in mode `all` I answer every message here, "
            "no mention needed)."
        )

    def _changeable(self, user: UserRef, channel: ChannelRef | None) -> ChannelRef | CommandReply:
        """``channel``, when ``user`` may change its settings; else why not (no channel
        here, or not an admin)."""
        if channel is None:
            return CommandReply(NO_CHANNEL)
        if self.is_admin(user):
            return channel
        log.info(
            "%s may not change the settings of channel %s (not in ADMIN_IDS); refused",
            user.storage_id(),
            channel.storage_id(),
        )
        p = self._platform_help(user.platform).command_prefix
        return CommandReply(
            "Only the bot's admins can change this channel's settings; "
            f"`{p}channel show` shows them."
        )

    async def _update(
        self, user: UserRef, channel: ChannelRef, what: str, changes: _Changes
    ) -> None:
        """Write ``changes`` to the channel's settings, and log who did it."""
        await self.store.set_channel_settings(channel, changes, by=user.storage_id())
        log.info("channel %s: %s by %s", channel.storage_id(), what, user.storage_id())


def _mode_text(mode: ChannelMode) -> str:
    if mode is ChannelMode.ALL:
        return (
            "`all`: I answer every new message here, each in its own thread "
            "(bots' messages are ignored)."
        )
    return "`mention`: I answer when mentioned (the default)."


def _changed(settings: ChannelSettings) -> str:
    """`` (last changed by user 123, 2026-01-02 15:04 UTC)``, or `` (none set)``."""
    if not settings.updated_at:
        return " (none set)"
    who = settings.updated_by.partition(":")[2] or settings.updated_by
    when = datetime.fromtimestamp(settings.updated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f" (last changed by user {who}, {when})"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
