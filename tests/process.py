"""``python -m bot`` as a child process, as a user runs it, for the CLI-level tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from bot.settings import Settings

__all__ = ["ROOT", "BotRun", "bot_env", "run_bot", "running_bot"]

ROOT = Path(__file__).resolve().parents[1]


def bot_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any bot setting (so only ``extra`` and the
    working directory's ``.env`` speak), with this checkout importable from anywhere."""
    names = {name.upper() for name in Settings.model_fields} | {"API_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(PYTHONPATH=str(ROOT), USER="tester")
    env.update(extra)
    return env


async def run_bot(
    args: list[str],
    env: dict[str, str],
    *,
    cwd: Path = ROOT,
    stdin: str | bytes = "",
    within: float = 30,
) -> tuple[int, str, str]:
    """Run ``python -m bot ARGS`` to completion; its exit code, stdout and stderr
    (``stdin``: text, sent as UTF-8, or raw bytes)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    raw = stdin.encode() if isinstance(stdin, str) else stdin
    out, err = await asyncio.wait_for(proc.communicate(raw), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class BotRun:
    """A ``python -m bot run`` started by ``running_bot``; its output goes to ``log``."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for_log(self, needle: str, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while needle not in self.text():
            if self.proc.returncode is not None:
                raise AssertionError(f"the bot exited ({self.proc.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} within {within} s:\n{self.text()}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running_bot(
    workdir: Path, env: dict[str, str], *, log_name: str = "bot.log"
) -> AsyncIterator[BotRun]:
    """``python -m bot run`` in ``workdir``; SIGTERM on exit (SIGKILL after 15 s), unless
    it already ended (a test may kill it)."""
    log = workdir / log_name
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield BotRun(proc, log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def until(
    check: Callable[[], bool], what: str, bot: BotRun, within: float = 20, step: float = 0.05
) -> None:
    """Poll ``check`` until true; fail with the bot's output if it exits or ``within``
    seconds pass first."""
    deadline = time.monotonic() + within
    while not check():
        if bot.proc.returncode is not None:
            raise AssertionError(f"the bot exited while waiting for {what}:\n{bot.text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {within} s:\n{bot.text()[-3000:]}")
        await asyncio.sleep(step)
