"""MODEL_FALLBACKS: parsing, validation, the walk along a chain, and the reasons' text."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from bot.commands import _strict_arg
from bot.fallback import FallbackReason, Why, candidates, parse_chains, unknown_models
from bot.settings import Settings

A, B, C, D = "openai/gpt-oss-120b", "openai/gpt-oss-20b", "qwen/qwen3-32b", "llama-3.1-8b-instant"


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("text", "chains"),
    [
        ("", ()),
        ("  ", ()),
        (f"{A}>{B}>{C}", ((A, B, C),)),
        (f" {A} > {B} ", ((A, B),)),
        (f"{A}>{B}, {C}>{D}", ((A, B), (C, D))),
        (f"{A}>{B}; {C}>{D};", ((A, B), (C, D))),
        (f"{A}>{B};{B}>{A}", ((A, B), (B, A))),  # chains may point at each other
    ],
)
def test_chains_parse(text: str, chains: tuple[tuple[str, ...], ...]) -> None:
    assert parse_chains(text) == chains


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"{A}>>{B}", "an empty model name"),
        (f"{A}>", "an empty model name"),
        (A, "names one model"),
        (f"{A}>{B}>{A}", f"{A} appears twice"),
    ],
)
def test_bad_chains_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match="MODEL_FALLBACKS") as caught:
        parse_chains(text)
    assert says in str(caught.value)


def test_settings_refuse_a_bad_chain_at_start_up() -> None:
    with pytest.raises(ValidationError, match="appears twice"):
        settings(model_fallbacks=f"{A}>{B}>{A}")
    assert settings(model_fallbacks=f"{A}>{B}").fallback_chains() == ((A, B),)
    assert settings().fallback_chains() == ()


def test_the_walk_starts_after_the_chosen_model_and_skips_tried_ones() -> None:
    chains = parse_chains(f"{A}>{B}>{C}; {D}>{A}")
    assert list(candidates(chains, A, ())) == [B, C]
    assert list(candidates(chains, B, ())) == [C]
    assert list(candidates(chains, C, ())) == []  # the end: never back to the start
    assert list(candidates(chains, A, [B])) == [C]
    # The first chain holding the model decides; another chain's order does not loop.
    assert list(candidates(chains, D, ())) == [A]
    # A model in no chain: the first chain from its start.
    assert list(candidates(chains, "other", ())) == [A, B, C]
    assert list(candidates((), A, ())) == []


def test_unknown_models_are_named_once_in_chain_order() -> None:
    chains = parse_chains(f"{A}>x>{B}; y>x")
    assert unknown_models(chains, {A, B}) == ["x", "y"]
    assert unknown_models(chains, {A, B, "x", "y"}) == []


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (
            FallbackReason(A, Why.DAY_QUOTA, 3 * 3600, "tpd"),
            f"{A}'s daily token quota is used up, resets in 3 h",
        ),
        (FallbackReason(A, Why.DAY_QUOTA, 0, "rpd"), f"{A}'s daily request quota is used up"),
        (
            FallbackReason(A, Why.DAY_QUOTA, math.inf, "tpd"),
            f"{A}'s daily token quota is used up",
        ),
        (
            FallbackReason(A, Why.MINUTE_QUOTA, 42, "tpm"),
            f"{A} is at its per-minute quota (a wait of about 42 s)",
        ),
        (
            FallbackReason(A, Why.RATE_LIMITED, 90),
            f"{A} is rate-limited (429), try again in 1 min 30 s",
        ),
        (FallbackReason(A, Why.OVER_CAPACITY), f"{A} is over capacity (503)"),
        (FallbackReason(A, Why.RETIRED), f"{A} has been decommissioned"),
        (FallbackReason(A, Why.UNAVAILABLE), f"{A} is not available"),
        (
            FallbackReason(A, Why.TOO_LARGE),
            f"this request is larger than {A}'s tokens-per-minute limit",
        ),
    ],
)
def test_reason_texts(reason: FallbackReason, text: str) -> None:
    assert reason.text() == text


@pytest.mark.parametrize(
    ("arg", "parsed"),
    [
        (A, (A, False)),
        (f"{A} strict", (A, True)),
        (f"  {A}   STRICT ", (A, True)),
        ("strict", ("", True)),
    ],
)
def test_model_command_takes_strict_after_the_name(arg: str, parsed: tuple[str, bool]) -> None:
    assert _strict_arg(arg) == parsed
