"""Slack's settings group (``SLACK_*``): importable without slack-bolt, so the registry
can ask whether Slack is enabled and collect its tokens for log redaction."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bot.settings import ChatAccessSettings, Secret
from bot.types import Platform, PlatformHelp

__all__ = ["PLATFORM", "SlackSettings"]

PLATFORM = Platform("slack")


class SlackSettings(ChatAccessSettings):
    """``SLACK_BOT_TOKEN``, ``SLACK_APP_TOKEN``, …: ``.env.example`` documents each. Access:
    users by id, places by channel (the shared lists)."""

    model_config = SettingsConfigDict(env_prefix="SLACK_")
    requirement: ClassVar[str] = (
        "SLACK_BOT_TOKEN plus SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)"
    )

    quiet_loggers: ClassVar[tuple[str, ...]] = ("slack_bolt",)

    bot_token: Secret = None
    app_token: Secret = None
    signing_secret: Secret = None
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=3000, ge=0, le=65535)
    command_prefix: str = "groq"
    native_streaming: bool = True
    updates_per_minute: int = Field(default=50, ge=1)
    edit_interval_s: float = Field(default=1.5, ge=0.2)
    api_base_url: str | None = None

    def enabled(self) -> bool:
        """A bot token plus an app token (Socket Mode) or a signing secret (HTTP mode)."""
        return self.bot_token is not None and (
            self.app_token is not None or self.signing_secret is not None
        )

    def help(self) -> PlatformHelp:
        return PlatformHelp(
            "Mention me in a channel and I answer in a thread; reply there to continue. "
            "DM me for a private conversation.",
            command_prefix=f"/{self.command_prefix}-",
        )
