"""Where the bot's idle memory goes (issue 14: idle RSS ≤ 55 MB).

Three figures, each in fresh interpreters (``VmRSS`` from ``/proc/self/status``, MiB):

1. **The declared dependencies' floor**: the interpreter, then, cumulatively, what a
   Discord bot on SQLite must load from ``pyproject.toml``'s runtime list: asyncio,
   aiohttp, discord.py, httpx, pydantic-settings (with a one-field ``BaseSettings``
   class defined: pydantic builds its schema machinery then, not at import), aiosqlite
   (with one connection open). No bot can use these libraries for less.
2. **The bot's own import** over that floor: ``python -m bot run``'s modules for Discord
   on SQLite (the optional libraries, asyncpg, prometheus-client and slack-bolt, must
   not be among them; ``tests/unit/test_lazy_imports.py`` checks it).
3. **Idle processes** (``--idle``): the bot and ``floor_bot.py`` (discord.py + aiohttp or
   httpx, nothing else) connected to their own fake Discord and FakeGroq, after one
   answered conversation and a second's rest, as ``bench_cpu.py`` takes them.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--repeat 5] [--idle]``; the figures
are medians over ``--repeat`` fresh interpreters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu import Contender, fake_model, populate, started

from tests.fakes.discord_server import FakeDiscord
from tests.unit.test_lazy_imports import DISCORD_ON_SQLITE, OPTIONAL

ROOT = Path(__file__).resolve().parents[1]

STEPS = f"""
import json, sys

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")

out = [("interpreter", rss())]
import asyncio
out.append(("asyncio (it loads ssl and OpenSSL)", rss()))
import aiohttp
out.append(("aiohttp", rss()))
import discord
out.append(("discord.py", rss()))
import httpx
out.append(("httpx", rss()))
import pydantic_settings

class _Settings(pydantic_settings.BaseSettings):
    token: str = ""

_Settings()
out.append(("pydantic-settings (a BaseSettings defined)", rss()))
import aiosqlite, tempfile, os

async def _open():
    async with aiosqlite.connect(os.path.join(tempfile.mkdtemp(), "m.db")) as db:
        await db.execute("CREATE TABLE t (x)")

asyncio.run(_open())
out.append(("aiosqlite (a connection opened)", rss()))
{DISCORD_ON_SQLITE}
out.append(("the bot's modules (Discord on SQLite)", rss()))
optional = sorted({{n.split(".")[0] for n in sys.modules}} & set({sorted(OPTIONAL)!r}))
print(json.dumps({{"steps": out, "optional": optional}}))
"""


def import_steps(repeat: int) -> tuple[list[tuple[str, float]], list[str]]:
    """Median cumulative RSS per step over ``repeat`` fresh interpreters."""
    runs = []
    optional: list[str] = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", STEPS], cwd=ROOT, capture_output=True, text=True, check=True
        )
        result = json.loads(done.stdout)
        runs.append(result["steps"])
        optional = result["optional"]
    names = [name for name, _ in runs[0]]
    medians = [(n, statistics.median(run[i][1] for run in runs)) for i, n in enumerate(names)]
    return medians, optional


async def idle_processes() -> dict[str, float]:
    """Idle RSS of the bot and the floor bots, as ``bench_cpu.py`` measures it."""
    groq = fake_model()
    await groq.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            workdir = Path(tempfile.mkdtemp())
            found: dict[str, float] = {}
            for name in ("bot", "floor-aiohttp", "floor-httpx"):
                fake = await stack.enter_async_context(FakeDiscord())
                who = Contender(name, fake, *populate(fake, 1))
                async with started(who, groq, workdir / name):
                    found[name] = who.idle_rss_mb
            return found
    finally:
        await groq.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh interpreters per figure")
    parser.add_argument("--idle", action="store_true", help="also run the idle processes")
    args = parser.parse_args()
    steps, optional = import_steps(args.repeat)
    print(f"cumulative RSS of a fresh interpreter, MiB (median of {args.repeat}):")
    previous = 0.0
    for name, rss in steps:
        print(f"  {name:<44} {rss:6.1f}  (+{rss - previous:4.1f})")
        previous = rss
    floor = steps[-2][1]
    print(f"declared dependencies' floor: {floor:.1f} MiB; the bot's modules add "
          f"{steps[-1][1] - floor:.1f} MiB")  # fmt: skip
    print(f"optional libraries loaded: {', '.join(optional) or 'none'}")
    if args.idle:
        idle = asyncio.run(idle_processes())
        print("idle RSS after start-up and one reply, MiB: "
              + ", ".join(f"{name} {rss:.1f}" for name, rss in idle.items()))  # fmt: skip


if __name__ == "__main__":
    main()
