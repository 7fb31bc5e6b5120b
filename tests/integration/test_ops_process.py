"""``python -m bot run`` with the operator endpoint on, against fake Discord and the
fake model, as a supervisor and Prometheus see it: /readyz follows the gateway; one
answered mention moves the reply counter, the first-text and edits histograms by one
and shows its conversation; a 429 from Discord is counted with its route."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq
from tests.process import bot_env
from tests.scrape import sample

pytestmark = pytest.mark.e2e

DISCORD = {"platform": "discord"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return r.status, await r.text()
    except aiohttp.ClientConnectionError:
        return 0, ""


async def _until(check: Callable[[], object], within: float, proc: asyncio.subprocess.Process,
                 log: Path) -> None:  # fmt: skip
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[misc]
        assert proc.returncode is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.1)


async def test_readyz_follows_the_gateway_and_metrics_count_one_mention(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    async with FakeDiscord() as discord:
        discord.gateway.refuse_connections = True  # not ready until the gateway accepts
        env = bot_env(
            GROQ_API_KEY=str(fake_groq.api_key),
            API_BASE_URL=fake_groq.base_url,
            DATABASE_PATH=str(tmp_path / "bot.db"),
            METRICS_PORT=str(port),
            **{k.upper(): v for k, v in discord.settings_overrides().items()},
        )
        log = tmp_path / "bot.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", env=env, cwd=tmp_path, stdout=out, stderr=out
            )
        try:
            await _until(lambda: _ok(f"{base}/healthz"), 30, proc, log)
            status, body = await _get(f"{base}/readyz")
            assert status == 503 and '"discord"' in body, body

            discord.gateway.refuse_connections = False
            await _until(lambda: _ok(f"{base}/readyz"), 60, proc, log)

            before = (await _get(f"{base}/metrics"))[1]
            await discord.send_message("hello there", author=discord.alice, mention=True)

            async def answered() -> bool:
                text = (await _get(f"{base}/metrics"))[1]
                return sample(text, "groqbot_replies_total", **DISCORD) > sample(
                    before, "groqbot_replies_total", **DISCORD
                )

            await _until(answered, 30, proc, log)
            after = (await _get(f"{base}/metrics"))[1]
            for name in (
                "groqbot_replies_total",
                "groqbot_reply_first_text_seconds_count",
                "groqbot_reply_edits_count",  # one reply's edits, reported when it ended
            ):
                assert sample(after, name, **DISCORD) - sample(before, name, **DISCORD) == 1
            assert sample(after, "groqbot_replies_total", outcome="complete", **DISCORD) == 1
            assert sample(after, "groqbot_conversations") >= 1  # the mention's thread
            assert sample(after, "groqbot_build_info") == 1

            # Discord answers the reply's first post 429 (retry_after 0.3 s, with Via:
            # discord.py sleeps and retries); the counter names the route, ids removed.
            discord.inject("POST", r"^/channels/\d+/messages$", retry_after=0.3)
            await discord.send_message("and again", author=discord.alice, mention=True)

            async def answered_again() -> bool:
                text = (await _get(f"{base}/metrics"))[1]
                return sample(text, "groqbot_replies_total", **DISCORD) == 2

            await _until(answered_again, 30, proc, log)
            limited = (await _get(f"{base}/metrics"))[1]
            assert discord.injected_429 == 1
            route = "POST /channels/{id}/messages"
            assert sample(limited, "groqbot_platform_rate_limited_total", route=route,
                          **DISCORD) == 1  # fmt: skip
            assert sample(limited, "groqbot_platform_rate_limited_total", **DISCORD) == 1
            assert sample(after, "groqbot_adapter_connected", adapter="discord") == 1

            discord.gateway.refuse_connections = True
            await discord.drop_gateway()
            went = time.monotonic()

            async def not_ready() -> bool:
                return (await _get(f"{base}/readyz"))[0] == 503

            await _until(not_ready, 5, proc, log)
            print(f"/readyz 503 {time.monotonic() - went:.2f} s after the gateway went away")
            assert (await _get(f"{base}/healthz"))[0] == 200
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _ok(url: str) -> bool:
    return (await _get(url))[0] == 200
