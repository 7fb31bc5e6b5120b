"""What ``/usage`` shows and ``python -m bot usage --csv`` writes.

The snapshot types are plain data produced by ``QuotaManager.snapshot_for`` and
``QuotaManager.account_status``; the functions here only format them.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from bot.limits.budget import AccountBudget
from bot.limits.table import DIMENSIONS, LimitSource, ModelLimits
from bot.limits.users import UserCounters
from bot.types import RateLimitSnapshot, UsageEntry, UserRef

if TYPE_CHECKING:
    from bot.limits.account import ModelAccount

__all__ = [
    "CSV_HEADER",
    "AccountStatus",
    "DimensionUsage",
    "LimitInfo",
    "ModelUsage",
    "UserUsage",
    "account_status",
    "busy_text",
    "format_duration",
    "format_usage",
    "local_usage",
    "queue_full_text",
    "timed_out_text",
    "too_large_text",
    "user_dimensions",
    "user_limit_text",
    "write_usage_csv",
]

CSV_HEADER = (
    "time_utc",
    "platform",
    "user_id",
    "display_name",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "estimated",
    "cached",
)
_UNITS = {"rpm": "requests", "rpd": "requests", "tpm": "tokens", "tpd": "tokens"}
_SOURCES = {
    LimitSource.TABLE: "free-tier table",
    LimitSource.DEFAULT: "default for models not in the table",
    LimitSource.SETTINGS: "QUOTA_MODEL_LIMITS",
    LimitSource.HEADERS: "API headers",
    LimitSource.BODY: "named by a 429",
}
_PERIODS = {"rpm": "this minute", "rpd": "today", "tpm": "this minute", "tpd": "today"}


@dataclass(frozen=True, slots=True)
class DimensionUsage:
    """Use of one limit: ``limit`` None means unlimited; ``resets_in_s`` until it is whole."""

    dimension: str
    used: float
    limit: int | None
    resets_in_s: float


@dataclass(frozen=True, slots=True)
class ModelUsage:
    model: str
    dimensions: tuple[DimensionUsage, ...]


@dataclass(frozen=True, slots=True)
class UserUsage:
    """A user's per-model consumption against their limits."""

    user: UserRef
    admin: bool
    in_flight: int
    max_in_flight: int
    models: tuple[ModelUsage, ...]


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """One account limit the mirror assumes and where it came from (``scale``: the
    paid-tier factor, for ``LimitSource.SCALED``)."""

    dimension: str
    limit: int
    source: LimitSource
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """One model's account budget: our local mirror and the API's last word on it, the
    limits assumed and why, room kept for other clients of the key (units per
    dimension), and whether the API keeps the output cap charged (None: not known yet)."""

    model: str
    local: tuple[DimensionUsage, ...]
    reported: RateLimitSnapshot | None
    paused_for_s: float = 0.0
    queued: int = 0
    requests_dimension: str = "rpd"  # what the API's request headers count
    limits: tuple[LimitInfo, ...] = ()
    headroom: tuple[tuple[str, float], ...] = ()
    charges_cap: bool | None = None


def user_dimensions(
    counters: UserCounters, limits: ModelLimits | None, now: float
) -> tuple[DimensionUsage, ...]:
    """A user's windows for one model; ``limits`` None shows no limits (admins)."""
    return tuple(
        DimensionUsage(
            dim,
            counters.window(dim).used(now),
            None if limits is None else limits.get(dim),
            counters.window(dim).resets_in(now),
        )
        for dim in DIMENSIONS
    )


def account_status(
    account: ModelAccount, queued: int, requests_dimension: str, now: float
) -> AccountStatus:
    """One model's mirror for ``/usage all``: its levels, the API's last report, and
    which limits it assumes and why (``queued``: requests waiting for it)."""
    return AccountStatus(
        account.model,
        local_usage(account.budget, now),
        account.reported,
        max(0.0, account.paused_until - now),
        queued,
        requests_dimension,
        limits=tuple(
            LimitInfo(dim, account.limits.get(dim) or 0, source, account.scale)
            for dim, source in account.limit_sources().items()
        ),
        headroom=tuple(
            (dim, room.value(now))
            for dim, room in account.budget.headroom.items()
            if room.value(now) >= 0.5
        ),
        charges_cap=account.charges_cap,
    )


def local_usage(budget: AccountBudget, now: float) -> tuple[DimensionUsage, ...]:
    """The account mirror's buckets; ``resets_in_s`` is until each is whole again."""
    return tuple(
        DimensionUsage(dim, m.used(now), int(m.limit), m.clears_in(now)) for dim, m in budget
    )


def format_duration(seconds: float) -> str:
    """``23 s``, ``4 min 10 s``, ``5 h 12 min`` (rounded up, at least 1 s)."""
    total = max(1, int(-(-seconds // 1)))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, rest = divmod(total, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _amount(value: float) -> str:
    return f"{round(value):,}"


def _line(dim: DimensionUsage) -> str:
    what = f"{_UNITS[dim.dimension]} {_PERIODS[dim.dimension]}"
    if dim.limit is None:
        return f"{_amount(dim.used)} {what} (no limit)"
    reset = f", resets in {format_duration(dim.resets_in_s)}" if dim.used > 0 else ""
    return f"{_amount(dim.used)}/{_amount(dim.limit)} {what}{reset}"


def format_usage(usage: UserUsage, account: list[AccountStatus] | None = None) -> str:
    """The ``/usage`` reply; ``account`` is given for admins only."""
    lines: list[str] = []
    if usage.admin:
        lines.append("You're an admin: per-user limits don't apply to you.")
    else:
        lines.append(
            f"Requests in progress: {usage.in_flight}/{usage.max_in_flight}. "
            "Minute limits reset on the minute, daily ones at 00:00 UTC."
        )
    if not usage.models:
        lines.append("No usage yet.")
    for model in usage.models:
        lines.append(f"`{model.model}`:")
        lines.extend(f"• {_line(dim)}" for dim in model.dimensions)
    if account is not None:
        lines.append("")
        lines.append("Account budget per model:")
        if not account:
            lines.append("No model has been used since the bot started.")
        lines.extend(_account_lines(status) for status in account)
    return "\n".join(lines)


def _account_lines(status: AccountStatus) -> str:
    parts = [f"`{status.model}`"]
    snap = status.reported
    if snap is not None and snap.remaining_requests is not None:
        parts.append(
            f"API: {snap.remaining_requests:,}/{snap.limit_requests or 0:,} requests left "
            f"{_PERIODS[status.requests_dimension]}"
        )
    if snap is not None and snap.remaining_tokens is not None:
        parts.append(
            f"{snap.remaining_tokens:,}/{snap.limit_tokens or 0:,} tokens left this minute"
        )
    if snap is None:
        parts.append("API: not reported yet")
    local = ", ".join(
        f"{_amount((d.limit or 0) - d.used)}/{_amount(d.limit or 0)} {d.dimension}"
        for d in status.local
        if d.limit is not None
    )
    parts.append(f"local mirror left: {local}")
    if status.paused_for_s > 0:
        parts.append(f"paused {format_duration(status.paused_for_s)} after a 429")
    if status.queued:
        parts.append(f"{status.queued} waiting")
    lines = ["• " + " · ".join(parts)]
    if status.limits:
        lines.append("  limits assumed: " + ", ".join(_limit_text(i) for i in status.limits))
    if status.headroom:
        room = ", ".join(f"{_amount(n)} {dim}" for dim, n in status.headroom)
        lines.append(f"  another client is using the key: keeping {room} free")
    if status.charges_cap:
        lines.append(
            "  the API keeps each request's whole output cap charged: unused output is "
            "not counted back"
        )
    return "\n".join(lines)


def _limit_text(info: LimitInfo) -> str:
    if info.source is LimitSource.SCALED:
        why = f"free-tier table ×{info.scale:.3g}: a paid tier, inferred from the headers"
    else:
        why = _SOURCES[info.source]
    return f"{_amount(info.limit)} {info.dimension} ({why})"


async def write_usage_csv(rows: AsyncIterable[UsageEntry], out: TextIO) -> int:
    """Write ``Store.iter_usage()`` rows as CSV with a header; return the row count."""
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    count = 0
    async for row in rows:
        writer.writerow(_csv_row(row))
        count += 1
    return count


def _csv_row(row: UsageEntry) -> list[object]:
    at = datetime.fromtimestamp(row.at, UTC).isoformat(timespec="seconds")
    user = row.user
    return [
        at,
        str(user.platform),
        user.user_id,
        user.display_name,
        row.model,
        row.prompt_tokens,
        row.completion_tokens,
        row.prompt_tokens + row.completion_tokens,
        int(row.estimated),
        int(row.cached),
    ]


# ----- refusal texts (QuotaExceeded.user_text) -----


def user_limit_text(dim: str, limit: int, used: float, tokens: int, wait: float, model: str) -> str:
    """ "You've used your 10 requests this minute — try again in 23 s." and kin."""
    unit, period, when = _UNITS[dim], _PERIODS[dim], format_duration(wait)
    if used >= limit or unit == "requests":
        text = f"You've used your {limit:,} {unit} {period} — try again in {when}."
    else:
        left = max(0, int(limit - used))
        text = (
            f"This message needs about {tokens:,} tokens and {left:,} of your {limit:,} "
            f"tokens {period} are left — try again in {when}."
        )
    return f"{text} (model `{model}`)"


def queue_full_text(waiting: int) -> str:
    return (
        f"You already have {waiting} questions waiting for an answer — I'll answer those "
        "first; send this one again once they are done."
    )


def too_large_text(model: str, tokens: int, tpm: int, output_tokens: int = 0) -> str:
    """Refusal of a request larger than the model's tokens per minute. ``output_tokens``
    is the part of ``tokens`` reserved for the answer (MAX_OUTPUT_TOKENS; 0: unknown):
    when the message alone would fit, it is that setting, not the message, to blame."""
    allows = f"`{model}` allows {tpm:,} tokens per minute"
    if output_tokens >= tpm:
        return (
            f"{allows}, less than the {output_tokens:,} the bot reserves for every answer "
            "(MAX_OUTPUT_TOKENS), so no message can fit: ask the bot's admin to lower "
            f"MAX_OUTPUT_TOKENS below {tpm:,}, or pick another model with /model."
        )
    if output_tokens > 0 and tokens - output_tokens <= tpm:
        return (
            f"This request needs about {tokens:,} tokens: {tokens - output_tokens:,} for the "
            f"conversation plus {output_tokens:,} reserved for the answer (MAX_OUTPUT_TOKENS), "
            f"and {allows}; /reset the conversation, pick another model with /model, or ask "
            "the bot's admin to lower MAX_OUTPUT_TOKENS."
        )
    return (
        f"This request needs about {tokens:,} tokens, more than `{model}` allows per minute "
        f"({tpm:,}); shorten the message, /reset the conversation, or pick another model "
        "with /model."
    )


def busy_text(model: str, wait: float, dim: str) -> str:
    """Refusal at the door: the shared budget will not free up within the allowed wait."""
    when = format_duration(wait)
    if dim in ("rpd", "tpd"):
        return (
            f"The bot has used up today's shared allowance for `{model}`; try again in about "
            f"{when}, or pick another model with /model."
        )
    if dim == "pause":
        return f"The model API asked us to slow down on `{model}`; try again in about {when}."
    return f"The bot is at its shared capacity for `{model}`; try again in about {when}."


def timed_out_text(model: str, waited: float, more: float) -> str:
    return (
        f"Timed out after {format_duration(waited)} waiting for capacity on `{model}`; "
        f"please try again in about {format_duration(more)}."
    )
