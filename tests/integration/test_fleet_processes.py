"""Issue 16's fleet scenario: three ``python -m bot run`` processes on one real
PostgreSQL (``DATABASE_URL``: the shared quota) and one fake model enforcing Groq's free
tier of ``openai/gpt-oss-20b`` (30 RPM, 8,000 TPM), and one fake Discord with three
shards: each process runs one shard (``DISCORD_SHARD_COUNT=3``, ``DISCORD_SHARD_IDS=n``)
and its users mention the bot in a guild of that shard; 20 users × 5 mentions at once
spread over them (7 / 7 / 6 users).

Once the third process has answered a few and holds reservations it is killed with
SIGKILL. Then: its rows in the shared quota are released within the lease
(``QUOTA_LEASE_S`` plus one heartbeat of a survivor), the other two go on, the fake saw
zero 429s, every mention on the survivors shows its answer or a "timed out" text, each
survivor user's answers are within ±20 % of the mean, and nothing the killed process
committed is lost (the shared user windows still count every request its users were
admitted for, and at least every turn the shared ledger recorded for them).

Bounded: the refill allows 30 requests at once and one every 2 s after, so the ~80
requests take about 100 s of real time.
"""

from __future__ import annotations

import asyncio
import re
import signal
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from tests.fakes.discord_payloads import FakeUser
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq
from tests.process import BotRun, bot_env, running_bot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "openai/gpt-oss-20b"
FREE_TIER = {"rpm": 30, "rpd": 1_000, "tpm": 8_000, "tpd": 200_000}
USERS_PER_PROCESS = (7, 7, 6)
MENTIONS = 5
LEASE_S = 6.0
ANSWER = re.compile(r"^turns=\d+ last=question \d+ from user\d+ model=")
TIMED_OUT = re.compile(r"timed out", re.IGNORECASE)
PROCESS_ID = re.compile(r"this one ([0-9a-f]+);")


class Shard:
    """One bot process, the shard it runs, its guild's channel and its users."""

    def __init__(
        self, discord: FakeDiscord, bot: BotRun, users: list[FakeUser], channel: str
    ) -> None:
        self.discord, self.bot, self.users, self.channel = discord, bot, users, channel
        self.threads: dict[str, str] = {}  # mention id -> user name

    def process_id(self) -> str:
        found = PROCESS_ID.search(self.bot.text())
        assert found, self.bot.text()[-2000:]
        return found.group(1)

    def shown(self, thread: str) -> list[str]:
        return [m.content for m in self.discord.bot_messages(thread) if m.content.strip()]

    def answered(self) -> dict[str, int]:
        counts = {u.username: 0 for u in self.users}
        for thread, name in self.threads.items():
            if any(ANSWER.match(text) for text in self.shown(thread)):
                counts[name] += 1
        return counts

    def settled(self) -> bool:
        """Every mention shows its answer or a final refusal (no status line)."""
        for thread in self.threads:
            texts = self.shown(thread)
            if not any(ANSWER.match(t) or TIMED_OUT.search(t) for t in texts):
                return False
        return True


def free_tier() -> FakeGroq:
    fake = FakeGroq()
    fake.first_token_delay_s, fake.token_delay_s = 0.3, 0.01
    for dim, limit in FREE_TIER.items():
        setattr(fake, f"limit_{dim}", limit)
        setattr(fake, f"enforce_{dim}", True)
    return fake


async def _rows(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _poll(check: object, what: str, within: float) -> float:
    """Await ``check()`` (sync or async) until true; the seconds it took."""
    start = time.monotonic()
    while True:
        result = check()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"no {what} within {within} s"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def fleet(tmp_path: Path, dsn: str, groq: FakeGroq) -> AsyncIterator[list[Shard]]:
    async with AsyncExitStack() as stack:
        discord = await stack.enter_async_context(FakeDiscord())
        # Guilds first: each process gets its shard's guilds in its READY.
        channels = [
            discord.add_guild(f"guild{n}", shard=(n, len(USERS_PER_PROCESS)))[1]
            for n in range(len(USERS_PER_PROCESS))
        ]
        shards = []
        for n, count in enumerate(USERS_PER_PROCESS):
            users = [
                FakeUser(discord.snowflake(), f"user{n}{i}", roles=[discord.member_role])
                for i in range(count)
            ]
            discord.users.extend(users)
            workdir = tmp_path / f"bot{n}"
            workdir.mkdir()
            env = bot_env(
                GROQ_API_KEY=str(groq.api_key),
                API_BASE_URL=groq.base_url,
                DATABASE_PATH=str(workdir / "bot.db"),
                DATABASE_URL=dsn,
                DEFAULT_MODEL=MODEL,
                LOG_LEVEL="INFO",
                QUOTA_LEASE_S=str(LEASE_S),
                DISCORD_SHARD_COUNT=str(len(USERS_PER_PROCESS)),
                DISCORD_SHARD_IDS=str(n),
                **{k.upper(): v for k, v in discord.settings_overrides().items()},
            )
            bot = await stack.enter_async_context(running_bot(workdir, env))
            shards.append(Shard(discord, bot, users, channels[n]))
        for shard in shards:
            await shard.bot.wait_for_log("discord adapter started", within=60)
        yield shards


async def test_three_processes_share_one_quota_and_survive_a_kill(
    tmp_path: Path, pg_dsn: str
) -> None:
    groq = free_tier()
    await groq.start()
    try:
        async with fleet(tmp_path, pg_dsn, groq) as shards:
            survivors, victim = shards[:2], shards[2]

            async def burst(shard: Shard, user: FakeUser) -> None:
                for n in range(MENTIONS):
                    text = f"question {n + 1} from {user.username}"
                    sent = await shard.discord.send_message(
                        text, author=user, mention=True, channel_id=shard.channel
                    )
                    shard.threads[sent.id] = user.username

            await asyncio.gather(*(burst(s, u) for s in shards for u in s.users))
            victim_id = victim.process_id()

            async def victim_holds() -> bool:
                held = await _rows(
                    pg_dsn,
                    "SELECT count(*) FROM quota_fleet_request WHERE process_id = $1 AND sent",
                    victim_id,
                )
                return sum(victim.answered().values()) >= 2 and held[0][0] > 0

            await _poll(victim_holds, "the third process answering and holding more", 60)
            victim.bot.proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(victim.bot.proc.wait(), 15) == -signal.SIGKILL
            shown_before = victim.answered()
            held = await _rows(
                pg_dsn, "SELECT sent FROM quota_fleet_request WHERE process_id = $1", victim_id
            )
            assert held, "the killed process held nothing in the shared quota"

            async def victim_released() -> bool:
                left = await _rows(
                    pg_dsn,
                    "SELECT count(*) FROM quota_fleet_request WHERE process_id = $1",
                    victim_id,
                )
                return left[0][0] == 0

            took = await _poll(victim_released, "the killed process's rows released", 60)
            # The lease, then at most one heartbeat (lease / 3) of a survivor; the lease
            # was last renewed up to lease / 3 before the kill, so this bound holds.
            assert took <= LEASE_S + LEASE_S / 3 + 2.0, took

            await _poll(lambda: all(s.settled() for s in survivors), "every mention settled", 240)
            counts = [n for s in survivors for n in s.answered().values()]
            mean = statistics.mean(counts)
            assert groq.count_429 == 0
            assert all(abs(n - mean) <= 0.2 * mean for n in counts), counts
            # Nothing the killed process committed is lost: the shared ledger keeps every
            # turn it finished, and the shared windows still count every request its users
            # were admitted for (each answer it showed, at least).
            victim_keys = [f"discord:{u.id}" for u in victim.users]
            ledger = await _rows(
                pg_dsn, "SELECT count(*) FROM usage WHERE user_id = ANY($1::text[])", victim_keys
            )
            finished = int(ledger[0][0])
            assert finished >= sum(shown_before.values())
            counted_total = 0.0
            for user in victim.users:
                state = await _rows(
                    pg_dsn,
                    "SELECT state->'windows'->'rpd'->>1 FROM quota_fleet_user"
                    " WHERE user_key = $1 AND model = $2",
                    f"discord:{user.id}",
                    MODEL,
                )
                counted = float(state[0][0]) if state else 0.0
                assert counted >= shown_before[user.username], (user.username, counted)
                counted_total += counted
            assert counted_total >= finished
    finally:
        await groq.aclose()
