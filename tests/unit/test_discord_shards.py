"""Sharding settings (``DISCORD_SHARD_COUNT`` / ``DISCORD_SHARD_IDS``) and the IDENTIFY
pacing by Discord's ``max_concurrency``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapters.discord.config import PLATFORM, DiscordSettings
from adapters.discord.shards import IDENTIFY_WINDOW_S, IdentifyPacer, hears
from bot.types import ConversationKey
from tests.fakes.clock import FakeClock


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> DiscordSettings:
    for name in ("DISCORD_SHARD_COUNT", "DISCORD_SHARD_IDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return DiscordSettings(_env_file=None)  # type: ignore[call-arg]


def test_unset_means_one_unsharded_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, DISCORD_SHARD_COUNT="", DISCORD_SHARD_IDS="")
    assert not settings.sharded and settings.shard_count is None and settings.shard_ids == []


@pytest.mark.parametrize(
    ("count", "ids", "want"),
    [("auto", "", ("auto", [])), (" AUTO ", "", ("auto", [])), ("4", "", (4, [])),
     ("4", "3, 0", (4, [3, 0])), ("1", "0", (1, [0]))],
)  # fmt: skip
def test_valid_shard_settings(
    monkeypatch: pytest.MonkeyPatch, count: str, ids: str, want: tuple[object, list[int]]
) -> None:
    settings = load(monkeypatch, DISCORD_SHARD_COUNT=count, DISCORD_SHARD_IDS=ids)
    assert settings.sharded and (settings.shard_count, settings.shard_ids) == want


@pytest.mark.parametrize(
    ("env", "field", "says"),
    [
        ({"DISCORD_SHARD_COUNT": "0"}, "shard_count", 'number of shards (1 or more) or "auto"'),
        ({"DISCORD_SHARD_COUNT": "many"}, "shard_count", "or \"auto\""),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "0,2"}, "shard_ids",
         "shard 2 does not exist with DISCORD_SHARD_COUNT=2 (ids run from 0 to 1)"),
        ({"DISCORD_SHARD_COUNT": "3", "DISCORD_SHARD_IDS": "1,1"}, "shard_ids",
         "shard 1 is listed twice"),
        ({"DISCORD_SHARD_IDS": "1"}, "shard_ids", "DISCORD_SHARD_COUNT is not set"),
        ({"DISCORD_SHARD_COUNT": "auto", "DISCORD_SHARD_IDS": "1"}, "shard_ids",
         "DISCORD_SHARD_COUNT is auto"),
        ({"DISCORD_SHARD_COUNT": "3", "DISCORD_SHARD_IDS": "-1"}, "shard_ids", "greater than"),
    ],
)  # fmt: skip
def test_invalid_shard_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        load(monkeypatch, **env)
    [error] = caught.value.errors()
    assert error["loc"][0] == field and says in error["msg"]


async def test_identifies_sharing_a_rate_limit_key_are_five_seconds_apart() -> None:
    clock = FakeClock(instant_sleep=True)
    pacer = IdentifyPacer(clock)  # max_concurrency 1: every shard shares key 0
    for shard in range(3):
        await pacer.wait(shard)
    assert clock.slept == [IDENTIFY_WINDOW_S, IDENTIFY_WINDOW_S]


async def test_max_concurrency_lets_shards_of_different_keys_identify_at_once() -> None:
    clock = FakeClock(instant_sleep=True)
    pacer = IdentifyPacer(clock, max_concurrency=2)
    for shard in range(4):  # keys 0, 1, 0, 1
        await pacer.wait(shard)
    assert clock.slept == [IDENTIFY_WINDOW_S]  # shard 2 waits for 0; by then 3's key is free


@pytest.mark.parametrize(
    ("count", "ids", "heard"),
    [("", "", {0, 1, 2}), ("auto", "", {0, 1, 2}), ("3", "", {0, 1, 2}), ("3", "1,2", {1, 2}),
     ("3", "0", {0})],
)  # fmt: skip
def test_a_process_hears_the_guilds_of_its_shards_and_dms_on_shard_zero(
    monkeypatch: pytest.MonkeyPatch, count: str, ids: str, heard: set[int]
) -> None:
    settings = load(monkeypatch, DISCORD_SHARD_COUNT=count, DISCORD_SHARD_IDS=ids)
    # A guild id whose timestamp bits (id >> 22) are 3k + shard: on that shard of 3.
    guilds = {shard: ConversationKey(PLATFORM, space=str((300 + shard) << 22 | 7), channel="1")
              for shard in range(3)}  # fmt: skip
    assert {shard for shard, key in guilds.items() if hears(settings, key)} == heard
    assert hears(settings, ConversationKey(PLATFORM, dm_user="5")) == (0 in heard)


def test_the_launch_allowance_grows_with_shards_per_rate_limit_key() -> None:
    assert IdentifyPacer(FakeClock()).allowance_s(0) == 0
    assert IdentifyPacer(FakeClock()).allowance_s(3) == 3 * IDENTIFY_WINDOW_S
    assert IdentifyPacer(FakeClock(), max_concurrency=16).allowance_s(40) == 3 * IDENTIFY_WINDOW_S
