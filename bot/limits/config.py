"""Quota settings as a plain dataclass, so the limiter and its tests need no pydantic.

``QuotaConfig.from_settings`` reads the ``quota_*`` fields of ``Settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.errors import ConfigError
from bot.limits.meters import DRAIN_HOLD_S
from bot.limits.table import (
    DIMENSIONS,
    UNLIMITED,
    LimitTable,
    ModelLimits,
    Overrides,
    parse_overrides,
)

if TYPE_CHECKING:
    from bot.settings import Settings

__all__ = ["QuotaConfig"]


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """Everything the quota manager needs to know.

    Per-user limits default to ``user_share`` of the model's account limit (at least 1);
    ``user_rpm`` … ``user_tpd`` replace that with a fixed number for every model.
    ``minute_s`` / ``day_s`` are the window lengths: 60 and 86,400 in production, shorter
    only in tests so a "minute" passes quickly.
    """

    user_share: float = 0.25
    user_rpm: int | None = None
    user_rpd: int | None = None
    user_tpm: int | None = None
    user_tpd: int | None = None
    user_max_in_flight: int = 2
    user_max_queued: int = 5
    max_queue_wait_s: float = 60.0
    flush_interval_s: float = 30.0
    model_limits: Overrides = field(default_factory=dict)
    admin_ids: frozenset[str] = frozenset()
    default_model: str = ""
    minute_s: float = 60.0
    day_s: float = 86_400.0
    # A waiting request goes this long after the mirror says it fits: the server counts
    # that instant in its own arithmetic, and a request landing exactly at its limit may
    # round over it. (0 in unit tests that check the arithmetic to the millisecond.)
    spare_s: float = 0.002
    # How long a reserved request may take to reach the server: a bucket it empties
    # starts draining only that long after (``RefillBucket.take``), as the server's does
    # on arrival. Without it a burst into an empty bucket put the server ahead of the
    # mirror (144 of 1,333 requests got 429 at 1,000 RPM in 20 s; 0 with it).
    # (0 in unit tests that check the arithmetic to the millisecond.)
    drain_hold_s: float = DRAIN_HOLD_S
    # Off for servers other than Groq: their limits come only from headers and settings.
    builtin_table: bool = True
    # What x-ratelimit-*-requests count: "rpd" on Groq, "rpm" on OpenAI and the rest.
    requests_header_dimension: str = "rpd"
    # MAX_OUTPUT_TOKENS (0: unknown): the part of a reservation that is the output cap,
    # for refusals that name it and for servers that keep it charged.
    max_output_tokens: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.user_share <= 1.0:
            raise ConfigError(f"QUOTA_USER_SHARE must be in (0, 1], not {self.user_share}.")
        if self.user_max_in_flight < 1:
            raise ConfigError("QUOTA_USER_MAX_IN_FLIGHT must be at least 1.")
        if self.user_max_queued < 0:
            raise ConfigError("QUOTA_USER_MAX_QUEUED must be at least 0.")
        if self.max_queue_wait_s < 0 or self.minute_s <= 0 or self.day_s <= 0:
            raise ConfigError("QUOTA_MAX_WAIT_S must be ≥ 0 and windows positive.")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        builtin_table: bool = True,
        requests_header_dimension: str = "rpd",
    ) -> QuotaConfig:
        """Build from ``Settings``; the keywords come from the server's ``Provider``."""
        try:
            overrides = parse_overrides(settings.quota_model_limits)
        except ValueError as exc:
            raise ConfigError(f"QUOTA_MODEL_LIMITS is invalid: {exc}.") from None
        return cls(
            user_share=settings.quota_user_share,
            user_rpm=settings.quota_user_rpm,
            user_rpd=settings.quota_user_rpd,
            user_tpm=settings.quota_user_tpm,
            user_tpd=settings.quota_user_tpd,
            user_max_in_flight=settings.quota_user_max_in_flight,
            user_max_queued=settings.quota_user_max_queued,
            max_queue_wait_s=settings.quota_max_wait_s,
            flush_interval_s=settings.quota_flush_interval_s,
            model_limits=overrides,
            admin_ids=frozenset(settings.admin_ids),
            default_model=settings.default_model,
            builtin_table=builtin_table,
            requests_header_dimension=requests_header_dimension,
            max_output_tokens=settings.max_output_tokens,
        )

    def table(self) -> LimitTable:
        if not self.builtin_table:
            return LimitTable(rows={}, default=UNLIMITED, overrides=self.model_limits)
        return LimitTable(overrides=self.model_limits)

    def is_admin(self, platform: str, user_id: str) -> bool:
        """Same rule as ``Settings.is_admin``: bare or platform-qualified ids."""
        return user_id in self.admin_ids or f"{platform}:{user_id}" in self.admin_ids

    def user_limits(self, account: ModelLimits) -> ModelLimits:
        """A user's share of ``account``; fixed per-user numbers win over the share."""
        values: dict[str, int | None] = {}
        for dim in DIMENSIONS:
            fixed: int | None = getattr(self, f"user_{dim}")
            total = account.get(dim)
            if fixed is not None:
                values[dim] = fixed
            elif total is None:
                values[dim] = None
            else:
                values[dim] = max(1, int(total * self.user_share))
        return ModelLimits(**values)
