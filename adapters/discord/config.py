"""Discord's settings group (``DISCORD_*``): importable without discord.py, so the
registry can ask whether Discord is enabled and collect its token for log redaction."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bot.access import AccessPolicy, AllowDeny
from bot.settings import ChatAccessSettings, IdList, Secret
from bot.types import Platform, PlatformHelp

__all__ = ["PLATFORM", "DiscordSettings"]

PLATFORM = Platform("discord")


class DiscordSettings(ChatAccessSettings):
    """``DISCORD_BOT_TOKEN``, ``DISCORD_REPLY_MODE``, …: ``.env.example`` documents each."""

    model_config = SettingsConfigDict(env_prefix="DISCORD_")
    requirement: ClassVar[str] = "DISCORD_BOT_TOKEN"
    quiet_loggers: ClassVar[tuple[str, ...]] = ("discord.gateway", "discord.client")

    bot_token: Secret = None
    client_id: str | None = None
    guild_ids: IdList = Field(default_factory=list)
    reply_mode: Literal["thread", "reply"] = "thread"
    allowed_role_ids: IdList = Field(default_factory=list)
    blocked_role_ids: IdList = Field(default_factory=list)
    allowed_guild_ids: IdList = Field(default_factory=list)
    blocked_guild_ids: IdList = Field(default_factory=list)
    edit_interval_s: float = Field(default=1.0, ge=0.2)
    max_attachment_bytes: int = Field(default=200_000, ge=0)
    retry_deadline_s: float = Field(default=30.0, ge=0.0)
    api_base: str | None = None
    gateway_url: str | None = None

    def enabled(self) -> bool:
        """A bot token is set (blank means unset)."""
        return self.bot_token is not None

    def access_policy(self) -> AccessPolicy:
        """People by user or role; places by server (guild), then channel."""
        return AccessPolicy(
            allow_dms=self.allow_dms,
            users=AllowDeny.of(self.allowed_user_ids, self.blocked_user_ids),
            roles=AllowDeny.of(self.allowed_role_ids, self.blocked_role_ids),
            places=(
                AllowDeny.of(self.allowed_guild_ids, self.blocked_guild_ids),
                AllowDeny.of(self.allowed_channel_ids, self.blocked_channel_ids),
            ),
        )

    def help(self) -> PlatformHelp:
        where = (
            "I reply to your message; reply to my answer to continue"
            if self.reply_mode == "reply"
            else "I answer in a thread; reply there to continue"
        )
        return PlatformHelp(
            f"Mention me in a channel and {where}. DM me for a private conversation."
        )
