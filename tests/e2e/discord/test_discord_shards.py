"""Discord sharding end to end: real discord.py's ``AutoShardedClient`` against the fake
Discord, whose gateway routes each guild's events to the shard Discord's formula picks.

Guilds are made for chosen shards (``FakeDiscord.add_guild(shard=(i, n))``); every
answer is checked to have come from events delivered on its guild's shard only.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.errors import ConfigError
from bot.metrics import Metrics
from bot.ops import OpsServer, Readiness
from bot.ports import SystemClock
from tests.e2e.discord.conftest import Build
from tests.e2e.discord.test_discord_adapter import (
    FatalReports,
    expected,
    final_answer,
    running_bot,
)
from tests.fakes.discord_gateway import shard_of
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq
from tests.process import bot_env, run_bot

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "sharding",
    [{"discord_shard_count": "3", "discord_shard_ids": "0,1,2"}, {"discord_shard_count": "auto"}],
    ids=["count-and-ids", "auto"],
)
async def test_one_process_runs_three_shards_and_answers_in_each(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build, sharding: dict[str, str]
) -> None:
    fake_discord.recommended_shards = 3  # what GET /gateway/bot tells "auto"
    guilds = [fake_discord.add_guild(f"guild {i}", shard=(i, 3)) for i in range(3)]
    async with running_bot(build(**sharding)) as (adapter, _):
        assert adapter.connected and adapter.down_parts() == []
        questions = [
            await fake_discord.send_message(f"question {i}", channel_id=channel, mention=True)
            for i, (_, channel) in enumerate(guilds)
        ]
        for i, question in enumerate(questions):
            await final_answer(fake_discord, question.id, expected(1, f"question {i}"))
        dm = await fake_discord.send_dm("a private question")
        await final_answer(fake_discord, dm.channel_id, expected(1, "a private question"))
        helped = await fake_discord.send_command("help")  # in the main guild
        dm_helped = await fake_discord.send_command("help", dm=True)
        await fake_discord.wait_for(lambda: helped.answered and dm_helped.answered)

    gateway = fake_discord.gateway
    assert sorted(gateway.identified_shards) == [[0, 3], [1, 3], [2, 3]]
    for i, (guild_id, _) in enumerate(guilds):
        # GUILD_CREATE, the mention, THREAD_CREATE, the echoes: all on the guild's shard.
        assert gateway.shards_delivered(guild_id) == {i}
    main_guild = fake_discord.guild_id
    assert gateway.shards_delivered(main_guild) == {shard_of(main_guild, 3)}
    assert gateway.shards_delivered(None) == {0}  # DMs (and only DMs) on shard 0
    interactions = [(d.shard, d.guild_id) for d in gateway.deliveries
                    if d.event == "INTERACTION_CREATE"]  # fmt: skip
    assert interactions == [(shard_of(main_guild, 3), main_guild), (0, None)]
    assert gateway.undelivered == []


async def test_a_guild_whose_shard_moves_to_another_process_keeps_its_conversation(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    stays, moves = (
        fake_discord.add_guild("stays", shard=(0, 2)),
        fake_discord.add_guild("moves", shard=(1, 2)),
    )
    # Process A runs both shards of two.
    async with running_bot(build(discord_shard_count="2", discord_shard_ids="0,1")):
        question = await fake_discord.send_message("first", channel_id=moves[1], mention=True)
        await final_answer(fake_discord, question.id, expected(1, "first"))
        other = await fake_discord.send_message("elsewhere", channel_id=stays[1], mention=True)
        await final_answer(fake_discord, other.id, expected(1, "elsewhere"))
    identified = len(fake_discord.gateway.identified_shards)

    # Restarted as two processes, one shard each: this one runs shard 1 (on the same
    # database); the thread's follow-up arrives here and continues with its history.
    async with running_bot(build(discord_shard_count="2", discord_shard_ids="1")) as (adapter, _):
        assert adapter.connected
        await fake_discord.send_message("second", channel_id=question.id)
        await final_answer(fake_discord, question.id, expected(2, "second"))
    assert fake_discord.gateway.identified_shards[identified:] == [[1, 2]]
    assert fake_discord.gateway.shards_delivered(moves[0]) == {1}
    assert fake_discord.gateway.shards_delivered(stays[0]) == {0}


async def test_readyz_names_the_shard_that_is_down(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    fake_discord.add_guild("other", shard=(1, 2))
    async with running_bot(build(discord_shard_count="2")) as (adapter, runtime):
        metrics = Metrics()
        readiness = Readiness([adapter], runtime.store, SystemClock(), metrics)
        ops = OpsServer(readiness, metrics, runtime.store, host="127.0.0.1", port=0)
        await ops.start()
        try:
            readyz = f"http://127.0.0.1:{ops.port}/readyz"
            assert (await _get(readyz))[0] == 200

            fake_discord.gateway.refuse_connections = True  # shard 1 cannot come back
            await fake_discord.gateway.drop(shard=1)
            for _ in range(200):  # polled for up to 10 s: discord.py notices the close itself
                if not adapter.connected:
                    break
                await asyncio.sleep(0.05)
            status, body = await _get(readyz)
            assert fake_discord.gateway.shard_connected(0)  # only shard 1 went down
        finally:
            await ops.aclose()
    assert status == 503, body
    assert body["down"].keys() == {"discord"}
    assert body["down"]["discord"].startswith("shard 1 disconnected for"), body


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_discord_requiring_sharding_is_a_config_error_naming_the_setting(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    fake_discord.add_guild("a", shard=(0, 2))
    fake_discord.add_guild("b", shard=(1, 2))
    fake_discord.gateway.max_guilds_per_session = 2  # three guilds: too many for one
    with pytest.raises(ConfigError, match="DISCORD_SHARD_COUNT=auto"):
        async with running_bot(build()):
            pass
    fake_discord.recommended_shards = 2
    async with running_bot(build(discord_shard_count="auto")) as (adapter, _):
        assert adapter.connected
    assert fake_discord.gateway.identified_shards == [None, [0, 2], [1, 2]]


async def test_an_inconsistent_shard_is_closed_with_4010(fake_discord: FakeDiscord) -> None:
    # Discord's close code 4010 Invalid shard, for a shard id not below the count.
    async with aiohttp.ClientSession() as http, http.ws_connect(fake_discord.ws_base) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        identify = {"token": fake_discord.token, "intents": 0, "shard": [2, 2]}
        await ws.send_json({"op": 2, "d": identify})
        closed = await ws.receive()
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4010
    assert fake_discord.gateway.identifies == 0


@pytest.mark.parametrize(
    ("count", "ids", "named"),
    [
        ("2", "0,2", "shard 2 does not exist with DISCORD_SHARD_COUNT=2"),
        ("auto", "1", "DISCORD_SHARD_COUNT is auto"),
        ("none", "0", "DISCORD_SHARD_IDS"),
    ],
)
async def test_bad_shard_settings_stop_the_start_with_the_variable_named(
    tmp_path: Path, count: str, ids: str, named: str
) -> None:
    env = bot_env(
        GROQ_API_KEY="gsk-test",
        DATABASE_PATH=str(tmp_path / "bot.db"),
        DISCORD_BOT_TOKEN="token",
        DISCORD_SHARD_IDS=ids,
        **({"DISCORD_SHARD_COUNT": count} if count != "none" else {}),
    )
    code, _, err = await run_bot(["run"], env, cwd=tmp_path)
    assert code == 2, err
    assert "Invalid settings: DISCORD_SHARD_IDS" in err and named in err, err


async def test_a_shard_deafened_by_a_malformed_event_ends_in_a_fatal_report(
    fake_discord: FakeDiscord, build: Build
) -> None:
    """discord.py's sharded client closes itself (every shard) on an event it cannot
    parse; the adapter reports that, naming the event, so the process is restarted."""
    lost = FatalReports()
    async with running_bot(build(discord_shard_count="2"), on_fatal=lost) as (adapter, _):
        await fake_discord.send_malformed("missing_author")
        reason = await lost.first()
        assert "a shard stopped" in reason and "author" in reason, reason
        assert not adapter.connected
    assert len(lost.reasons) == 1


async def test_auto_keeps_to_the_configured_gateway_url(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    """``DISCORD_GATEWAY_URL`` (a proxy) is where every shard connects, whatever URL
    ``GET /gateway/bot`` names; only the recommended count is taken from it."""
    with socket.socket() as unused:  # a loopback port nobody listens on
        unused.bind(("127.0.0.1", 0))
        fake_discord.gateway_bot_url = f"ws://127.0.0.1:{unused.getsockname()[1]}/gateway"
    fake_discord.recommended_shards = 2
    async with running_bot(build(discord_shard_count="auto")) as (adapter, _):
        assert adapter.connected
    assert sorted(fake_discord.gateway.identified_shards) == [[0, 2], [1, 2]]
