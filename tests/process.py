"""``python -m bot`` as a child process, as a user runs it, for the CLI-level tests."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bot.settings import Settings

__all__ = ["ROOT", "bot_env", "run_bot"]

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
