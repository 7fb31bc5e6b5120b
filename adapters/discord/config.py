"""Discord's settings group (``DISCORD_*``): importable without discord.py, so the
registry can ask whether Discord is enabled and collect its token for log redaction."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, NonNegativeInt, ValidationInfo, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from bot.access import AccessPolicy, AllowDeny
from bot.settings import ChatAccessSettings, IdList, Secret, split_ids
from bot.types import Platform, PlatformHelp

__all__ = ["PLATFORM", "DiscordSettings"]

PLATFORM = Platform("discord")

ShardIds = Annotated[list[NonNegativeInt], NoDecode, BeforeValidator(split_ids)]
"""``DISCORD_SHARD_IDS=0,1``: the shards this process runs."""


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
    # Unset: one unsharded connection. "auto": Discord's recommended count, every shard
    # in this process. A number: that many shards in all, DISCORD_SHARD_IDS of them here.
    shard_count: int | Literal["auto"] | None = None
    shard_ids: ShardIds = Field(default_factory=list)

    @field_validator("shard_count", mode="before")
    @classmethod
    def _count_or_auto(cls, value: object) -> object:
        """One clear message for a bad count (the union's would be two cryptic ones)."""
        text = value.strip().lower() if isinstance(value, str) else value
        if text == "auto" or text is None:
            return text
        if isinstance(text, str) and text.isdigit():
            text = int(text)
        if not isinstance(text, int) or isinstance(text, bool) or text < 1:
            raise ValueError('must be a number of shards (1 or more) or "auto"')
        return text

    @field_validator("shard_ids")
    @classmethod
    def _ids_fit_the_count(cls, ids: list[int], info: ValidationInfo) -> list[int]:
        """Each id names one of DISCORD_SHARD_COUNT's shards, once."""
        if "shard_count" not in info.data:
            return ids  # the count itself is invalid and reported on its own
        count = info.data["shard_count"]
        if ids and not isinstance(count, int):
            shown = "is not set" if count is None else "is auto"
            raise ValueError(
                f"DISCORD_SHARD_COUNT {shown}; DISCORD_SHARD_IDS needs the total number "
                "of shards across every process, e.g. DISCORD_SHARD_COUNT=4"
            )
        seen: set[int] = set()
        for shard in ids:
            if shard in seen:
                raise ValueError(f"shard {shard} is listed twice")
            seen.add(shard)
            if isinstance(count, int) and shard >= count:
                raise ValueError(
                    f"shard {shard} does not exist with DISCORD_SHARD_COUNT={count} "
                    f"(ids run from 0 to {count - 1})"
                )
        return ids

    @property
    def sharded(self) -> bool:
        """``DISCORD_SHARD_COUNT`` is set: run shards instead of one plain connection."""
        return self.shard_count is not None

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
