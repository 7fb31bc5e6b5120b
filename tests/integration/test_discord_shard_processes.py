"""Two ``python -m bot run`` processes, one shard of two each, on one database and one
fake Discord: each answers only its shards' guilds, and the one starting while the
other streams an answer leaves that answer alone (it is not a dead process's)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.durable import RESTART_NOTE
from tests.e2e.discord.test_discord_adapter import expected
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq
from tests.integration.test_durable_restart import _env, _replies
from tests.process import running_bot, until

pytestmark = pytest.mark.e2e


async def test_a_shard_process_starting_leaves_the_others_streaming_answer_alone(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    database = tmp_path / "bot.db"
    # The answer streams a few words, then holds until the second process is up.
    fake_groq.reply_words, fake_groq.token_delay_s = 20, 0.01
    release, naps = asyncio.Event(), 0

    async def held(seconds: float) -> None:
        nonlocal naps
        naps += 1
        await (release.wait() if naps > 3 else asyncio.sleep(seconds))

    fake_groq.sleep = held
    async with FakeDiscord() as discord:
        first = discord.add_guild("first", shard=(0, 2))
        second = discord.add_guild("second", shard=(1, 2))

        def env(shard_ids: str) -> dict[str, str]:
            shards = {"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": shard_ids}
            return {**_env(fake_groq, discord, database), **shards}

        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        async with running_bot(tmp_path / "a", env("0")) as a:
            await a.wait_for_log("discord adapter started")
            question = await discord.send_message("long one", channel_id=first[1], mention=True)
            await until(
                lambda: any(r[1] == "streaming" for r in _replies(database)), "a streaming row", a
            )
            async with running_bot(tmp_path / "b", env("1")) as b:
                await b.wait_for_log("leaving 1 streaming answer(s) to the processes that hear")
                release.set()
                other = await discord.send_message("short", channel_id=second[1], mention=True)
                answer = expected(1, "long one", words=20)
                await until(
                    lambda: any(m.content == answer for m in discord.bot_messages(question.id)),
                    "the long answer",
                    a,
                )
                await until(
                    lambda: any(
                        m.content == expected(1, "short", words=20)
                        for m in discord.bot_messages(other.id)
                    ),
                    "the second process's answer",
                    b,
                )
        shown = [c for m in discord.bot_messages() for c in m.history]
        assert not any(RESTART_NOTE in c for c in shown), "a live answer was cut"
        assert "left streaming by the previous run" not in b.text()
        assert sorted(discord.gateway.identified_shards) == [[0, 2], [1, 2]]
        assert discord.gateway.shards_delivered(first[0]) == {0}
        assert discord.gateway.shards_delivered(second[0]) == {1}
        assert {r[1] for r in _replies(database)} == {"complete"}
