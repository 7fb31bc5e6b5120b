"""Configuration, read once from the environment and ``.env`` by pydantic-settings."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.access import AccessPolicy, AllowDeny
from bot.fallback import Chains, parse_chains
from bot.types import PlatformHelp

__all__ = [
    "AdapterSettings",
    "ChatAccessSettings",
    "EnvSettings",
    "IdList",
    "Secret",
    "Settings",
    "split_ids",
]

GROQ_BASE_URL = "https://api.groq.com/openai/v1"
_PG_SCHEMES = ("postgresql://", "postgres://")


def split_ids(value: object) -> object:
    """``"1, 2,3"`` → ``["1", "2", "3"]``: a comma list from the environment."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


IdList = Annotated[list[str], NoDecode, BeforeValidator(split_ids)]
"""A comma-separated list in the environment (``ADMIN_IDS=123,U456``)."""


def _strip_secret(value: object) -> object:
    # A pasted token often carries a trailing space or newline.
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value.strip() if isinstance(value, str) else value


Secret = Annotated[SecretStr | None, BeforeValidator(_strip_secret)]
"""A token or key: never logged (``secrets()`` collects every field of this type)."""


# MAX_CONCURRENT_REQUESTS when not set, by the server's kind (``Provider.concurrency``).
HOSTED_CONCURRENCY = 64
LOCAL_CONCURRENCY = 4


class EnvSettings(BaseSettings):
    """What every settings group shares: read from the environment and ``.env``, where a
    blank value means "not set", and the secrets it holds, for log redaction.

    Adapters subclass it with their own ``env_prefix`` (``<PLATFORM>_``), so
    each platform's settings live in its package under the variable names users know.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # `KEY=` in .env (as .env.example ships) or `docker run --env-file` means "not set".
        env_ignore_empty=True,
    )

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

    def secrets(self) -> list[str]:
        """Every secret value set in this group, so the log filter can redact them."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return [v.get_secret_value() for v in values if isinstance(v, SecretStr)]


class AdapterSettings(EnvSettings):
    """One platform's settings group, subclassed in its adapter package with its own
    ``env_prefix``. It alone says whether the platform is enabled (the registry and the
    adapter both ask it), how users reach the bot there, and who may use it."""

    requirement: ClassVar[str] = ""
    """What to set to enable the platform, for the "nothing configured" message."""

    quiet_loggers: ClassVar[tuple[str, ...]] = ()
    """Its library's loggers that chatter at INFO (logged from WARNING only)."""

    def enabled(self) -> bool:
        """Whether the credentials the platform needs are all set."""
        raise NotImplementedError

    def access_policy(self) -> AccessPolicy:
        """The allow/deny lists (everyone, by default)."""
        return AccessPolicy()

    def help(self) -> PlatformHelp:
        """How users reach the bot on this platform, for /help."""
        return PlatformHelp("Send me a message and I answer.")


class ChatAccessSettings(AdapterSettings):
    """The lists most chat platforms share: who (``<PREFIX>ALLOWED_USER_IDS``…), where
    (``…ALLOWED_CHANNEL_IDS``…) and whether direct messages are answered. A platform
    with more kinds of ids (roles, servers) adds its own lists."""

    allow_dms: bool = True
    allowed_user_ids: IdList = Field(default_factory=list)
    blocked_user_ids: IdList = Field(default_factory=list)
    allowed_channel_ids: IdList = Field(default_factory=list)
    blocked_channel_ids: IdList = Field(default_factory=list)

    def access_policy(self) -> AccessPolicy:
        """People by user id; places by channel; DMs by ``allow_dms``."""
        return AccessPolicy(
            allow_dms=self.allow_dms,
            users=AllowDeny.of(self.allowed_user_ids, self.blocked_user_ids),
            places=(AllowDeny.of(self.allowed_channel_ids, self.blocked_channel_ids),),
        )


class Settings(EnvSettings):
    """The platform-free settings of the bot. ``.env.example`` documents each one;
    each adapter package holds its own group (``adapters.<name>.config``)."""

    # --- completions API ---
    groq_api_key: Secret = Field(
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
    # None: by the server's kind (``Provider.concurrency``): 64 for hosted APIs, 4 for
    # local servers that run few requests at once.
    max_concurrent_requests: int | None = Field(default=None, ge=1)
    max_retries: int = Field(default=3, ge=0)
    retry_base_delay_s: float = Field(default=1.0, ge=0)
    retry_max_delay_s: float = Field(default=20.0, ge=0)
    models_cache_ttl_s: float = Field(default=300.0, ge=0)
    # "a>b>c" (several chains: separated by "," or ";"); see ``bot.fallback``.
    model_fallbacks: str = ""

    # --- conversations ---
    database_path: Path = Path("./data/bot.db")
    # postgresql://user:password@host:5432/db: PostgreSQL instead of the SQLite file
    # (DATABASE_URL wins when both are set, so an image's default DATABASE_PATH is harmless);
    # every process on it also shares one account quota.
    database_url: Secret = None
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    max_input_chars: int = Field(default=16_000, ge=1)
    context_token_budget: int | None = Field(default=None, ge=256)
    reply_checkpoint_s: float = Field(default=2.0, gt=0)
    admin_ids: IdList = Field(default_factory=list)

    # --- response cache (bot.response_cache) ---
    # deterministic: only requests sent with temperature 0 (the operator's TEMPERATURE=0)
    # are cached, since only those ask for the same answer each time; always: every one.
    cache_mode: Literal["off", "deterministic", "always"] = "deterministic"
    cache_ttl_s: float = Field(default=86_400.0, gt=0)
    cache_max_entries: int = Field(default=10_000, ge=1)

    # --- quotas (per-user limits and the account mirror) ---
    quota_enabled: bool = True
    quota_user_share: float = Field(default=0.25, gt=0.0, le=1.0)
    quota_user_rpm: int | None = Field(default=None, ge=1)
    quota_user_rpd: int | None = Field(default=None, ge=1)
    quota_user_tpm: int | None = Field(default=None, ge=1)
    quota_user_tpd: int | None = Field(default=None, ge=1)
    quota_user_max_in_flight: int = Field(default=2, ge=1)
    quota_user_max_queued: int = Field(default=5, ge=0)
    quota_max_wait_s: float = Field(default=60.0, ge=0)
    quota_flush_interval_s: float = Field(default=30.0, gt=0)
    quota_model_limits: str = ""
    # Only with a postgresql:// DATABASE_URL (the quota shared by a fleet of processes):
    # a process that stops renewing its lease for this long has its reservations and
    # queued requests released by the others; how waiters in other processes learn that
    # capacity freed up; connections of the quota's own pool.
    quota_lease_s: float = Field(default=30.0, ge=1.0)
    quota_wake: Literal["notify", "poll"] = "notify"
    quota_db_pool_size: int = Field(default=4, ge=1)

    # --- logging and operations ---
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    # None: no operator endpoint (/healthz, /readyz, /metrics); 0 picks a free port.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @field_validator("system_prompt")
    @classmethod
    def _no_system_prompt(cls, value: str) -> str:
        # Blank means the default persona, so "none" is how to send no system message
        # (some models' chat templates reject the system role).
        return "" if value.strip().lower() == "none" else value

    @field_validator("model_fallbacks")
    @classmethod
    def _valid_fallbacks(cls, value: str) -> str:
        parse_chains(value)  # raises ValueError naming the faulty chain
        return value

    def fallback_chains(self) -> Chains:
        """``MODEL_FALLBACKS`` parsed (validated when the settings were read)."""
        return parse_chains(self.model_fallbacks)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never quotes the value: it may hold a password.
        if value is not None and not value.get_secret_value().startswith(_PG_SCHEMES):
            raise ValueError("must start with postgresql:// (for SQLite, set DATABASE_PATH)")
        return value

    def secrets(self) -> list[str]:
        """Every secret, and DATABASE_URL's password on its own: it may be logged apart
        from the URL (a driver's message, a masked URL gone wrong)."""
        found = super().secrets()
        if self.database_url is not None:
            with contextlib.suppress(ValueError):
                password = urlsplit(self.database_url.get_secret_value()).password
                if password:
                    found.append(password)
        return found

    @field_validator("api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def fleet_dsn(self) -> str | None:
        """DATABASE_URL when it names PostgreSQL (the shared quota), else None."""
        url = self.database_url.get_secret_value() if self.database_url else ""
        return url if url.startswith(("postgresql://", "postgres://")) else None

    def is_admin(self, platform: str, user_id: str) -> bool:
        """Admin ids may be bare (``123``) or platform-qualified (``chat:123``)."""
        return user_id in self.admin_ids or f"{platform}:{user_id}" in self.admin_ids
