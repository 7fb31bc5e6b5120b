"""All configuration, read once from the environment and ``.env`` by pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["IdList", "Settings"]

GROQ_BASE_URL = "https://api.groq.com/openai/v1"

IdList = Annotated[list[str], NoDecode]
"""A comma-separated list in the environment (``ADMIN_IDS=123,U456``)."""


class Settings(BaseSettings):
    """Every setting of the bot. ``.env.example`` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # `KEY=` in .env (as .env.example ships) or `docker run --env-file` means "not set".
        env_ignore_empty=True,
    )

    # --- completions API ---
    groq_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GROQ_API_KEY", "API_KEY")
    )
    api_base_url: str = GROQ_BASE_URL
    api_provider: Literal["auto", "groq", "openai", "llamacpp", "vllm", "ollama", "other"] = "auto"
    default_model: str = "openai/gpt-oss-120b"
    system_prompt: str = "You are a helpful, concise assistant in a chat app."
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_output_tokens: int = Field(default=1024, ge=1)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    show_reasoning: bool = False
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    request_timeout_s: float = Field(default=60.0, gt=0)
    stream_idle_timeout_s: float = Field(default=30.0, gt=0)
    max_concurrent_requests: int = Field(default=10, ge=1)
    max_retries: int = Field(default=3, ge=0)
    retry_base_delay_s: float = Field(default=1.0, ge=0)
    retry_max_delay_s: float = Field(default=20.0, ge=0)
    models_cache_ttl_s: float = Field(default=300.0, ge=0)

    # --- conversations ---
    database_path: Path = Path("./data/bot.db")
    max_input_chars: int = Field(default=16_000, ge=1)
    context_token_budget: int | None = Field(default=None, ge=256)
    admin_ids: IdList = Field(default_factory=list)

    # --- quotas (per-user limits and the account mirror) ---
    quota_enabled: bool = True
    quota_user_share: float = Field(default=0.25, gt=0.0, le=1.0)
    quota_user_rpm: int | None = Field(default=None, ge=1)
    quota_user_rpd: int | None = Field(default=None, ge=1)
    quota_user_tpm: int | None = Field(default=None, ge=1)
    quota_user_tpd: int | None = Field(default=None, ge=1)
    quota_user_max_in_flight: int = Field(default=2, ge=1)
    quota_max_wait_s: float = Field(default=60.0, ge=0)
    quota_flush_interval_s: float = Field(default=30.0, gt=0)
    quota_model_limits: str = ""

    # --- logging ---
    log_level: str = "INFO"

    # --- Discord ---
    discord_bot_token: SecretStr | None = None
    discord_client_id: str | None = None
    discord_guild_ids: IdList = Field(default_factory=list)
    discord_reply_mode: Literal["thread", "reply"] = "thread"
    discord_allow_dms: bool = True
    discord_allowed_user_ids: IdList = Field(default_factory=list)
    discord_blocked_user_ids: IdList = Field(default_factory=list)
    discord_allowed_role_ids: IdList = Field(default_factory=list)
    discord_blocked_role_ids: IdList = Field(default_factory=list)
    discord_allowed_channel_ids: IdList = Field(default_factory=list)
    discord_blocked_channel_ids: IdList = Field(default_factory=list)
    discord_allowed_guild_ids: IdList = Field(default_factory=list)
    discord_blocked_guild_ids: IdList = Field(default_factory=list)
    discord_edit_interval_s: float = Field(default=1.0, ge=0.2)
    discord_max_attachment_bytes: int = Field(default=200_000, ge=0)
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None

    # --- Slack ---
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_http_host: str = "0.0.0.0"
    slack_http_port: int = Field(default=3000, ge=0, le=65535)
    slack_command_prefix: str = "groq"
    slack_native_streaming: bool = True
    slack_allow_dms: bool = True
    slack_allowed_user_ids: IdList = Field(default_factory=list)
    slack_blocked_user_ids: IdList = Field(default_factory=list)
    slack_allowed_channel_ids: IdList = Field(default_factory=list)
    slack_blocked_channel_ids: IdList = Field(default_factory=list)
    slack_updates_per_minute: int = Field(default=45, ge=1)
    slack_edit_interval_s: float = Field(default=1.5, ge=0.2)
    slack_api_base_url: str | None = None

    @field_validator(
        "admin_ids",
        "discord_guild_ids",
        "discord_allowed_user_ids",
        "discord_blocked_user_ids",
        "discord_allowed_role_ids",
        "discord_blocked_role_ids",
        "discord_allowed_channel_ids",
        "discord_blocked_channel_ids",
        "discord_allowed_guild_ids",
        "discord_blocked_guild_ids",
        "slack_allowed_user_ids",
        "slack_blocked_user_ids",
        "slack_allowed_channel_ids",
        "slack_blocked_channel_ids",
        mode="before",
    )
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: object) -> object:
        """A blank value (``KEY=`` or ``KEY=   ``) means "not set": the default applies.

        ``env_ignore_empty`` covers exactly-empty values from the environment and
        ``.env``; this also covers whitespace-only ones and keyword arguments.
        """
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if not (isinstance(v, str) and not v.strip())
                and not (isinstance(v, SecretStr) and not v.get_secret_value().strip())
            }
        return data

    @field_validator(
        "groq_api_key",
        "discord_bot_token",
        "slack_bot_token",
        "slack_app_token",
        "slack_signing_secret",
        mode="before",
    )
    @classmethod
    def _strip_secret(cls, value: object) -> object:
        # A pasted token often carries a trailing space or newline.
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return value.strip() if isinstance(value, str) else value

    @field_validator("api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def is_admin(self, platform: str, user_id: str) -> bool:
        """Admin ids may be bare (``123``) or platform-qualified (``discord:123``)."""
        return user_id in self.admin_ids or f"{platform}:{user_id}" in self.admin_ids

    def secrets(self) -> list[str]:
        """Every secret value, so the log filter can redact them."""
        values = [
            self.groq_api_key,
            self.discord_bot_token,
            self.slack_bot_token,
            self.slack_app_token,
            self.slack_signing_secret,
        ]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
