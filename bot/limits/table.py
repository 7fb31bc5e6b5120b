"""Groq's free-tier limits per model, as a built-in table that settings can override.

Figures are Groq's published Free Plan limits (console.groq.com/docs/rate-limits) at the
time of writing. ``None`` means the dimension is not limited for that model. Models not
in the table get ``DEFAULT_LIMITS``, deliberately as tight as the tightest common row, so
an unknown model is throttled rather than answered with 429s until its headers arrive.

Overrides come from one settings string, entries separated by ``;``::

    openai/gpt-oss-120b=rpm:30,tpd:250000; my-local-model=rpm:none; *=tpm:5000

``*`` overrides the default row; ``none`` removes a limit.

``LimitSource`` names where a figure the account mirror uses came from: this table, its
default row, settings, or later what the API said (headers, a 429's message) or what a
paid tier implies (``bot.limits.account``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "DEFAULT_LIMITS",
    "DIMENSIONS",
    "GROQ_FREE_TIER",
    "UNLIMITED",
    "LimitSource",
    "LimitTable",
    "ModelLimits",
    "Overrides",
    "parse_overrides",
]

DIMENSIONS = ("rpm", "rpd", "tpm", "tpd")
"""Requests per minute / day, tokens per minute / day."""

Overrides = Mapping[str, Mapping[str, int | None]]
"""model (or ``*``) -> dimension -> limit (None = unlimited)."""


class LimitSource(StrEnum):
    """Where one limit figure came from."""

    TABLE = "table"  # the built-in free-tier table
    DEFAULT = "default"  # the table's row for models it does not list
    SETTINGS = "settings"  # QUOTA_MODEL_LIMITS
    HEADERS = "headers"  # the API's x-ratelimit-limit-* headers
    SCALED = "scaled"  # the free table's figure scaled as far as the headers rose
    BODY = "429"  # the figure a 429's message named


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """One model's account quota; None means unlimited."""

    rpm: int | None
    rpd: int | None
    tpm: int | None
    tpd: int | None

    def get(self, dimension: str) -> int | None:
        value: int | None = getattr(self, dimension)
        return value

    def with_overrides(self, values: Mapping[str, int | None]) -> ModelLimits:
        return replace(self, **dict(values))


def _row(rpm: int, rpd: int, tpm: int, tpd: int | None) -> ModelLimits:
    return ModelLimits(rpm=rpm, rpd=rpd, tpm=tpm, tpd=tpd)


GROQ_FREE_TIER: Mapping[str, ModelLimits] = MappingProxyType(
    {
        # Today's production models.
        "openai/gpt-oss-120b": _row(30, 1_000, 8_000, 200_000),
        "openai/gpt-oss-20b": _row(30, 1_000, 8_000, 200_000),
        "openai/gpt-oss-safeguard-20b": _row(30, 1_000, 8_000, 200_000),
        "qwen/qwen3-32b": _row(60, 1_000, 6_000, 500_000),
        "llama-3.1-8b-instant": _row(30, 14_400, 6_000, 500_000),
        "llama-3.3-70b-versatile": _row(30, 1_000, 12_000, 100_000),
        "meta-llama/llama-4-scout-17b-16e-instruct": _row(30, 1_000, 30_000, 500_000),
        "meta-llama/llama-4-maverick-17b-128e-instruct": _row(30, 1_000, 6_000, 500_000),
        "moonshotai/kimi-k2-instruct": _row(60, 1_000, 10_000, 300_000),
        "moonshotai/kimi-k2-instruct-0905": _row(60, 1_000, 10_000, 300_000),
        "groq/compound": _row(30, 250, 70_000, None),
        "groq/compound-mini": _row(30, 250, 70_000, None),
        "allam-2-7b": _row(30, 7_000, 6_000, 500_000),
        "meta-llama/llama-guard-4-12b": _row(30, 14_400, 15_000, 500_000),
        "meta-llama/llama-prompt-guard-2-22m": _row(30, 14_400, 15_000, 500_000),
        "meta-llama/llama-prompt-guard-2-86m": _row(30, 14_400, 15_000, 500_000),
        # Older llama-era models still seen in configs (the seed's 14,400 RPD rows).
        "gemma2-9b-it": _row(30, 14_400, 15_000, 500_000),
        "llama3-8b-8192": _row(30, 14_400, 6_000, 500_000),
        "llama3-70b-8192": _row(30, 14_400, 6_000, 500_000),
        "deepseek-r1-distill-llama-70b": _row(30, 1_000, 6_000, 100_000),
    }
)

DEFAULT_LIMITS = _row(30, 1_000, 6_000, 100_000)
UNLIMITED = ModelLimits(rpm=None, rpd=None, tpm=None, tpd=None)
"""The default row for servers other than Groq: no account limit unless headers or
QUOTA_MODEL_LIMITS say so."""


class LimitTable:
    """Built-in rows plus overrides; ``lookup`` says which dimensions were set explicitly."""

    def __init__(
        self,
        *,
        rows: Mapping[str, ModelLimits] = GROQ_FREE_TIER,
        default: ModelLimits = DEFAULT_LIMITS,
        overrides: Overrides | None = None,
    ) -> None:
        self._rows = dict(rows)
        self._default = default
        self._overrides = {k: dict(v) for k, v in (overrides or {}).items()}

    def lookup(self, model: str) -> tuple[ModelLimits, frozenset[str]]:
        """The model's limits and the dimensions an override fixed (headers may not raise
        those); ``*`` applies only to models missing from the table."""
        known = model in self._rows
        base = self._rows.get(model, self._default)
        fixed: dict[str, int | None] = {}
        if not known:
            fixed.update(self._overrides.get("*", {}))
        fixed.update(self._overrides.get(model, {}))
        return base.with_overrides(fixed), frozenset(fixed)

    def origin(self, model: str) -> LimitSource:
        """Where ``lookup``'s figures not fixed by an override come from."""
        return LimitSource.TABLE if model in self._rows else LimitSource.DEFAULT


def parse_overrides(text: str) -> dict[str, dict[str, int | None]]:
    """Parse ``model=dim:value,...; model2=...``; raises ValueError naming the bad part."""
    result: dict[str, dict[str, int | None]] = {}
    for entry in (part.strip() for part in text.split(";")):
        if not entry:
            continue
        model, sep, spec = entry.partition("=")
        model = model.strip()
        if not sep or not model:
            raise ValueError(f"expected model=dim:value in {entry!r}")
        values = result.setdefault(model, {})
        for item in (p.strip() for p in spec.split(",")):
            if not item:
                continue
            dim, colon, raw = (s.strip() for s in item.partition(":"))
            if dim not in DIMENSIONS or not colon:
                raise ValueError(f"expected one of {', '.join(DIMENSIONS)}:value in {item!r}")
            values[dim] = _parse_limit(raw, item)
    return result


def _parse_limit(raw: str, item: str) -> int | None:
    if raw.lower() in ("none", "unlimited", "-"):
        return None
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"{raw!r} is not a whole number in {item!r}") from None
    if value < 1:
        raise ValueError(f"limit must be at least 1 (or none) in {item!r}")
    return value
