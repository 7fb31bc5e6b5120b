"""Model fallback chains (``MODEL_FALLBACKS``) and why a turn left a model.

``MODEL_FALLBACKS=openai/gpt-oss-120b>openai/gpt-oss-20b>qwen/qwen3-32b`` is one chain,
best model first; several chains are separated by ``,`` or ``;``. A turn whose model
can't answer now walks the first chain holding that model, from just after it (or
the first chain from its start when the model is in none), skipping models it already
tried: the walk is finite and never returns to a model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.limits.report import format_duration

__all__ = ["Chains", "FallbackReason", "Why", "parse_chains", "unknown_models"]

Chains = tuple[tuple[str, ...], ...]

_CHAIN_SEPARATOR = re.compile(r"[,;]")


def parse_chains(text: str) -> Chains:
    """The chains of a ``MODEL_FALLBACKS`` value (empty: no fallback).

    Raises ``ValueError`` naming the fault: an empty model (``a>>b``), a chain of one
    model, or a model twice in one chain (a loop)."""
    chains: list[tuple[str, ...]] = []
    for raw in _CHAIN_SEPARATOR.split(text):
        if not raw.strip():
            continue
        models = tuple(part.strip() for part in raw.split(">"))
        if any(not m for m in models):
            raise ValueError(f"MODEL_FALLBACKS: an empty model name in {raw.strip()!r}")
        if len(models) < 2:
            raise ValueError(
                f"MODEL_FALLBACKS: {raw.strip()!r} names one model; write a chain like "
                "`big-model>small-model`"
            )
        twice = sorted({m for m in models if models.count(m) > 1})
        if twice:
            raise ValueError(
                f"MODEL_FALLBACKS: {', '.join(twice)} appears twice in {raw.strip()!r}; "
                "a chain must not loop"
            )
        chains.append(models)
    return tuple(chains)


def candidates(chains: Chains, chosen: str, tried: Collection[str]) -> Iterator[str]:
    """The models to try after ``chosen``, in order, leaving out ``tried`` ones."""
    chain = next((c for c in chains if chosen in c), None)
    if chain is not None:
        rest: Sequence[str] = chain[chain.index(chosen) + 1 :]
    else:
        rest = chains[0] if chains else ()
    return (m for m in rest if m != chosen and m not in tried)


def unknown_models(chains: Chains, offered: Collection[str]) -> list[str]:
    """Models of the chains that the live model list does not offer, in chain order."""
    seen: dict[str, None] = {}
    for chain in chains:
        for model in chain:
            if model not in offered:
                seen.setdefault(model)
    return list(seen)


class Why(StrEnum):
    """Why a model was left: also the ``reason`` label of the fallback metric."""

    DAY_QUOTA = "day_quota"
    MINUTE_QUOTA = "minute_quota"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    OVER_CAPACITY = "over_capacity"
    UNAVAILABLE = "unavailable"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class FallbackReason:
    """One model that could not answer: ``seconds`` until it could (0: unknown);
    ``dimension`` is the quota window that binds (``tpd``, ``rpd``…), when one does."""

    model: str
    why: Why
    seconds: float = 0.0
    dimension: str = ""

    @property
    def limit_like(self) -> bool:
        """A quota or rate limit (it passes with time), not a fault of the model."""
        return self.why in (Why.DAY_QUOTA, Why.MINUTE_QUOTA, Why.RATE_LIMITED, Why.TOO_LARGE)

    def text(self) -> str:
        """``openai/gpt-oss-120b's daily token quota is used up, resets in 3 h``."""
        known = 0 < self.seconds < math.inf
        m, when = self.model, format_duration(self.seconds) if known else ""
        if self.why is Why.DAY_QUOTA:
            kind = "request" if self.dimension == "rpd" else "token"
            resets = f", resets in {when}" if when else ""
            return f"{m}'s daily {kind} quota is used up{resets}"
        if self.why is Why.MINUTE_QUOTA:
            return f"{m} is at its per-minute quota (a wait of about {when or 'a minute'})"
        if self.why is Why.TOO_LARGE:
            return f"this request is larger than {m}'s tokens-per-minute limit"
        if self.why is Why.RATE_LIMITED:
            again = f", try again in {when}" if when else ""
            return f"{m} is rate-limited (429){again}"
        if self.why is Why.OVER_CAPACITY:
            return f"{m} is over capacity (503)"
        if self.why is Why.RETIRED:
            return f"{m} has been decommissioned"
        return f"{m} is not available"
