"""SIGTERM ends ``python -m bot run`` within 10 s, and every reply cut by it says so.

A real subprocess against fake Discord and a slow fake model, as a supervisor (Docker,
systemd, Kubernetes) stops it: it sends SIGTERM and kills the process 10 s later.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq
from tests.process import bot_env

pytestmark = pytest.mark.e2e

DEADLINE_S = 10.0
NOTE = "Ask again in a moment."


async def _start(
    fake_groq: FakeGroq, discord: FakeDiscord, tmp_path: Path
) -> tuple[asyncio.subprocess.Process, Path]:
    env = bot_env(
        GROQ_API_KEY=str(fake_groq.api_key),
        API_BASE_URL=fake_groq.base_url,
        DATABASE_PATH=str(tmp_path / "bot.db"),
        LOG_LEVEL="INFO",
        QUOTA_USER_RPM="1000",
        QUOTA_USER_MAX_IN_FLIGHT="20",
        QUOTA_MODEL_LIMITS="openai/gpt-oss-120b=rpm:1000,rpd:none,tpm:1000000,tpd:none",
        **{k.upper(): v for k, v in discord.settings_overrides().items()},
    )
    log = tmp_path / "bot.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=env, cwd=tmp_path, stdout=out, stderr=out
        )
    return proc, log


async def _wait_for(check: object, within: float, proc: asyncio.subprocess.Process) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not check():
        assert proc.returncode is None, "the bot exited early"
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _stop(proc: asyncio.subprocess.Process) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), DEADLINE_S + 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    return time.monotonic() - started


async def test_sigterm_under_load_exits_in_time_and_every_reply_ends_visibly(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    fake_groq.reply_words = 400
    fake_groq.token_delay_s = 0.05  # each answer would take ~20 s
    async with FakeDiscord() as discord:
        proc, log = await _start(fake_groq, discord, tmp_path)
        try:
            await _wait_for(lambda: discord.gateway.identifies > 0, 30, proc)
            await _wait_for(lambda: "discord adapter started" in log.read_text(), 30, proc)
            for i in range(10):
                await discord.send_message(f"question {i}", author=discord.alice, mention=True)
            await _wait_for(
                lambda: sum(1 for m in discord.bot_messages() if "alpha" in m.content) >= 10,
                30,
                proc,
            )
            took = await _stop(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
        last: dict[str, str] = {}  # thread -> its last bot message (long replies continue)
        for m in discord.bot_messages():
            last[m.channel_id] = m.content
    text = log.read_text()
    print(f"SIGTERM under load -> exit: {took:.2f} s")
    assert took <= DEADLINE_S, (took, text[-3000:])
    assert proc.returncode == 0, text[-3000:]
    assert len(last) == 10, last
    assert all(r.rstrip().endswith(NOTE) for r in last.values()), last
    assert "reply cut short by shutdown" in text


async def test_sigterm_with_discord_unreachable_exits_in_time(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    async with FakeDiscord() as discord:
        proc, log = await _start(fake_groq, discord, tmp_path)
        try:
            await _wait_for(lambda: "discord adapter started" in log.read_text(), 30, proc)
            discord.gateway.refuse_connections = True
            await discord.drop_gateway()
            await asyncio.sleep(1.0)  # discord.py is now in its reconnect backoff
            took = await _stop(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
    print(f"SIGTERM with Discord unreachable -> exit: {took:.2f} s")
    assert took <= DEADLINE_S, (took, log.read_text()[-3000:])


async def test_sigterm_while_still_connecting_exits_in_time(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    async with FakeDiscord() as discord:
        discord.gateway.refuse_connections = True  # start-up would retry for a minute
        proc, log = await _start(fake_groq, discord, tmp_path)
        try:
            await _wait_for(lambda: "Discord" in log.read_text(), 30, proc)
            await asyncio.sleep(1.0)
            took = await _stop(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
    print(f"SIGTERM while connecting -> exit: {took:.2f} s")
    assert took <= DEADLINE_S, (took, log.read_text()[-3000:])
    assert "stopped while starting" in log.read_text()
