"""The Dockerfile's HEALTHCHECK command, run as the image runs it (no Docker daemon
here): it passes with the endpoint off, and follows /readyz when METRICS_PORT is set."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]


def _healthcheck() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.MULTILINE)
    assert found, "the Dockerfile has no exec-form HEALTHCHECK"
    command: list[str] = json.loads(found.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]  # the image's python is this one's version


async def _run(**env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_")}
    proc = await asyncio.create_subprocess_exec(
        *_healthcheck(),
        env={**clean, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 15)


@pytest.fixture
async def readyz() -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback /readyz answering the status at the head of the list it yields."""
    status = [200]

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({}, status=status[0])

    app = web.Application()
    app.router.add_get("/readyz", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield port, status
    finally:
        await runner.cleanup()


async def test_passes_when_the_endpoint_is_off() -> None:
    assert await _run() == 0
    assert await _run(METRICS_PORT="", METRICS_HOST="0.0.0.0") == 0


async def test_follows_readyz_when_the_endpoint_is_on(readyz: tuple[int, list[int]]) -> None:
    port, status = readyz
    # The image listens on 0.0.0.0; the check asks loopback.
    assert await _run(METRICS_PORT=str(port), METRICS_HOST="0.0.0.0") == 0
    status[0] = 503
    assert await _run(METRICS_PORT=str(port), METRICS_HOST="0.0.0.0") != 0
    status[0] = 200
    assert await _run(METRICS_PORT=str(port), METRICS_HOST="127.0.0.1") == 0


async def test_fails_when_nothing_answers(readyz: tuple[int, list[int]]) -> None:
    port, _ = readyz
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert free != port
    assert await _run(METRICS_PORT=str(free)) != 0


def test_the_documented_port_is_exposed() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^EXPOSE .*\b9464\b", dockerfile, re.MULTILINE)
    assert "METRICS_PORT:-9464" in (ROOT / "compose.yaml").read_text()
