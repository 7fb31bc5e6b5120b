"""Whole-bot CPU per streamed reply, next to floor bots (issue 14).

The bot (``python -m bot run``) and the floor bots (``floor_bot.py``: discord.py, and
httpx or aiohttp, ``json.loads`` per SSE event, one post and at most one edit per
second, the reader never blocked on Discord) run as their own processes, each on its
own fake Discord, all against one FakeGroq answering at about 500 tokens/s (one
~200-word answer, 1 token per SSE event, or ``--tokens-per-event``; the account's
limits far above the load, so the bot's quota never queues). At each level (1, 20 and
200 concurrent conversations by default; 1 means 10 conversations one after another),
each bot answers a warm-up conversation, then they alternate for ``--rounds`` rounds
(the order reversed every other round): each round every user mentions the bot in a
channel of its own, and the round ends when every answer is complete on the fake
Discord.

CPU: the user + system time of the bot's whole process tree over the round, read from
``/proc/<pid>/stat`` (utime, stime, and cutime/cstime of reaped children) for the
process and every live descendant (found by their parent pid in ``/proc/*/stat``); the
fakes run in this process and are not counted. psutil is not a dependency. Printed:
the medians of CPU s/reply per bot per level and the ratios (the figure that counts;
the machine's other load moves all alike), each bot's first-text p50/p99 at the
largest level beside what Discord's buckets allow there (``platform_bound.py``) and
split into event -> request at the model (of which event -> thread-open call) and
first token -> shown, and each bot's idle RSS (``VmRSS`` after start-up and one reply).

Run: ``.venv/bin/python benchmarks/bench_cpu.py [--levels 1,20,200] [--rounds 3]
[--tokens-per-event 1] [--floors httpx,aiohttp] [--profile DIR]`` (``--profile``:
py-spy, if installed, samples the bot through the measured rounds of each level into
DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_discord import answer_calls, answers_complete, content, warm_up
from platform_bound import FixedWindow
from platform_harness import (
    ANSWER_MARK,
    BotProcess,
    bot_environment,
    model_times,
    p99,
    running,
    wait_until,
)

from bot.settings import Settings
from tests.fakes.discord_payloads import FakeUser
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq

FLOOR = Path(__file__).resolve().parent / "floor_bot.py"
TOKENS_PER_S = 500.0  # the fake model's pace
REPLY_WORDS = 190  # filler words: ~200 in all with the echo's head; ends on "kappa"
SEQUENTIAL = 10  # conversations one after another at level 1


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and all its descendants, alive or reaped."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    ticks, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            fields = stats[p]
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
            todo += children.get(p, [])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """The process's current resident set (``VmRSS``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


@dataclass
class Contender:
    """One bot on its own fake Discord, and what it was measured at."""

    name: str
    fake: FakeDiscord
    users: list[FakeUser]
    channels: list[str]
    process: BotProcess | None = None
    cpu_per_reply: list[float] = field(default_factory=list)  # one per round
    first_text: list[float] = field(default_factory=list)  # seconds, every reply
    bounds: list[float] = field(default_factory=list)  # what the buckets allow the same
    intake: list[float] = field(default_factory=list)  # event -> request at the fake model
    opened: list[float] = field(default_factory=list)  # event -> thread-open call arrives
    relay: list[float] = field(default_factory=list)  # first token -> answer text shown
    idle_rss_mb: float = 0.0
    unfinished: int = 0


def populate(fake: FakeDiscord, conversations: int) -> tuple[list[FakeUser], list[str]]:
    """A user and a channel per conversation (in GUILD_CREATE: before the bot connects)."""
    users = [
        FakeUser(fake.snowflake(), f"user{i}", roles=[fake.member_role])
        for i in range(conversations)
    ]
    fake.users.extend(users)
    channels = [fake.add_channel(f"bench-{i}") for i in range(conversations)]
    return users, channels


async def one_round(who: Contender, groq: FakeGroq, tag: str, sequential: bool) -> None:
    """Every user asks at once (or, ``sequential``, one after another); wait until each
    answer is complete; charge the CPU per reply and the first-text latencies."""
    assert who.process is not None
    fake, bot = who.fake, who.process
    starts: dict[str, float] = {}
    asked: dict[str, str] = {}
    where: dict[str, str] = {}
    mark = len(fake.calls)

    async def ask(question: str, user: FakeUser, channel: str) -> None:
        starts[question], where[question] = time.monotonic(), channel
        message = await fake.send_message(question, author=user, mention=True, channel_id=channel)
        asked[question] = message.id

    async def complete(questions: list[str]) -> None:
        threads = [asked[q] for q in questions]
        try:
            await wait_until(
                functools.partial(answers_complete, fake, threads),
                within=120 + len(threads),
                bot=bot,
                what=f"{who.name}'s answers",
            )
        except TimeoutError:
            who.unfinished += sum(not answers_complete(fake, [t]) for t in threads)

    cpu0 = tree_cpu_seconds(bot.pid)
    if sequential:
        questions = [f"{tag} {i}" for i in range(SEQUENTIAL)]
        for question in questions:
            await ask(question, who.users[0], who.channels[0])
            await complete([question])
    else:
        questions = [f"{tag} {i}" for i in range(len(who.users))]
        pairs = zip(questions, who.users, who.channels, strict=True)
        await asyncio.gather(*(ask(q, u, c) for q, u, c in pairs))
        await complete(questions)
    who.cpu_per_reply.append((tree_cpu_seconds(bot.pid) - cpu0) / len(questions))
    times = model_times(groq, questions)
    by_channel = answer_calls(fake.calls[mark:])
    thread_calls = {
        c.path.split("/")[4]: c.t
        for c in fake.calls[mark:]
        if c.method == "POST" and c.path.endswith("/threads") and c.path.count("/") == 5
    }
    threads = _window_factory(fake.default_limit, 1.0)
    posts = _window_factory(fake.message_limit, fake.message_window_s)
    for question in sorted(questions, key=lambda q: starts[q]):
        first = next(
            (c for c in by_channel.get(asked[question], []) if ANSWER_MARK in content(c)), None
        )
        if first is None or question not in times:
            continue
        sent, (arrived, first_token) = starts[question], times[question]
        ttft = first_token - arrived  # the fake model's own, taken out of both figures
        who.first_text.append(first.t - sent - ttft)
        who.intake.append(arrived - sent)
        if asked[question] in thread_calls:
            who.opened.append(thread_calls[asked[question]] - sent)
        who.relay.append(first.t - first_token)
        # The ideal bot: thread started at the event, first post at the first token of a
        # request sent at the event, through the windows the fake Discord enforces.
        created = threads(where[question]).admit(sent)
        shown = posts(asked[question]).admit(max(sent + ttft, created))
        who.bounds.append(shown - sent - ttft)


def _window_factory(limit: int, window_s: float) -> Callable[[str], FixedWindow]:
    windows: dict[str, FixedWindow] = {}
    return lambda key: windows.setdefault(key, FixedWindow(limit, window_s))


def fake_model(per_event: int = 1) -> FakeGroq:
    """The benchmark's FakeGroq (not started): 0.2 s to the first token, then about
    500 tokens/s, ``per_event`` tokens per SSE event, a ~200-word answer."""
    groq = FakeGroq()
    groq.first_token_delay_s = 0.2
    groq.pieces_per_event = per_event
    groq.token_delay_s = per_event / TOKENS_PER_S
    groq.reply_words = REPLY_WORDS
    # The bots share the fake's account: limits far above the load, or the bot's quota
    # mirror (which sees the floors' use in the headers as another client's) would
    # queue its requests at 200 conversations (bench_quota.py measures that queue).
    groq.limit_rpm, groq.limit_rpd = 10**6, 10**8
    groq.limit_tpm, groq.limit_tpd = 10**9, 10**10
    return groq


@contextlib.asynccontextmanager
async def started(who: Contender, groq: FakeGroq, workdir: Path) -> AsyncIterator[None]:
    """``who``'s process, connected and warmed up by one answered conversation; its idle
    RSS taken a second after that reply."""
    overrides = who.fake.settings_overrides()
    os.makedirs(workdir)
    if who.name == "bot":
        env = bot_environment(
            groq, workdir / "bot.db", **{k.upper(): v for k, v in overrides.items()}
        )
        argv: tuple[str, ...] = ("-m", "bot", "run")
    else:
        env = dict(os.environ)
        model = Settings.model_fields["default_model"].default
        argv = (
            str(FLOOR),
            overrides["discord_api_base"],
            overrides["discord_gateway_url"],
            overrides["discord_bot_token"],
            groq.base_url,
            str(groq.api_key),
            model,
            who.name.removeprefix("floor-"),
        )
    async with running(env, workdir, argv) as process:
        who.process = process
        await wait_until(lambda: who.fake.gateway.identifies > 0, within=30, bot=process)
        await warm_up(who.fake, process)
        await asyncio.sleep(1.0)
        who.idle_rss_mb = rss_mb(process.pid)
        yield


@contextlib.asynccontextmanager
async def profiling(pid: int, out: Path | None) -> AsyncIterator[None]:
    """py-spy sampling ``pid`` into ``out`` (a speedscope file) while the block runs."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if out is None or spy is None:
        yield
        return
    proc = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--rate", "200", "--format", "speedscope",
        "--output", str(out), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.wait()


@dataclass
class Level:
    conversations: int
    bot: Contender
    floors: list[Contender]


async def level(
    conversations: int,
    rounds: int,
    per_event: int,
    floors: list[str],
    workdir: Path,
    profile: Path | None,
) -> Level:
    groq = fake_model(per_event)
    await groq.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            everyone: list[Contender] = []
            for name in ["bot", *(f"floor-{client}" for client in floors if client)]:
                fake = await stack.enter_async_context(FakeDiscord())
                everyone.append(Contender(name, fake, *populate(fake, conversations)))
            for who in everyone:
                await stack.enter_async_context(started(who, groq, workdir / who.name))
            bot = everyone[0]
            assert bot.process is not None
            out = profile / f"bot-{conversations}.speedscope.json" if profile else None
            async with profiling(bot.process.pid, out):
                for r in range(rounds):
                    # Alternate the order, so that neither bot always runs first.
                    for who in everyone if r % 2 == 0 else everyone[::-1]:
                        await one_round(who, groq, f"{who.name} r{r}", conversations == 1)
            return Level(conversations, bot, everyone[1:])
    finally:
        await groq.aclose()


def ms(values: list[float], at: float = 0.5) -> str:
    if not values:
        return "-"
    value = statistics.median(values) if at == 0.5 else p99(values)
    return f"{value * 1000:.0f}"


def report(levels: list[Level], rounds: int, per_event: int) -> None:
    print(
        f"\nCPU per streamed reply: bot vs floor bots (medians of {rounds} rounds, "
        f"{per_event} token(s) per SSE event)"
    )
    floors = [f.name for f in levels[0].floors]
    rows = [
        [
            "convs",
            "bot s/reply",
            *(f"{f} s/reply" for f in floors),
            *(f"ratio to {f}" for f in floors),
            "unfinished",
        ]
    ]
    for lv in levels:
        b = statistics.median(lv.bot.cpu_per_reply)
        f = [statistics.median(floor.cpu_per_reply) for floor in lv.floors]
        rows.append(
            [
                str(lv.conversations),
                f"{b:.4f}",
                *(f"{v:.4f}" for v in f),
                *(f"{b / v:.2f}" for v in f),
                "/".join(str(who.unfinished) for who in (lv.bot, *lv.floors)),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    for lv in levels:
        print(
            f"  {lv.conversations}, per round: "
            + "; ".join(
                who.name + " " + " ".join(f"{v:.4f}" for v in who.cpu_per_reply)
                for who in (lv.bot, *lv.floors)
            )
        )
    top = max(levels, key=lambda lv: lv.conversations)
    print(f"first text at {top.conversations} conversations (ms, model's own TTFT taken out):")
    for who in (top.bot, *top.floors):
        print(
            f"  {who.name}: p50 {ms(who.first_text)} / p99 {ms(who.first_text, 0.99)}; "
            f"Discord's buckets allow p50 {ms(who.bounds)} / p99 {ms(who.bounds, 0.99)}; "
            f"event->request p50 {ms(who.intake)} / p99 {ms(who.intake, 0.99)} "
            f"(event->thread-open call p50 {ms(who.opened)} / p99 {ms(who.opened, 0.99)}), "
            f"first token->shown p50 {ms(who.relay)} / p99 {ms(who.relay, 0.99)}"
        )
    print("idle RSS (VmRSS after start-up and one reply), MiB:")
    for lv in levels:
        print(
            f"  {lv.conversations}: "
            + ", ".join(f"{who.name} {who.idle_rss_mb:.1f}" for who in (lv.bot, *lv.floors))
        )
    print(
        "- CPU = user+sys of each bot's process tree (/proc/<pid>/stat, descendants "
        "included), fakes excluded; level 1 = "
        f"{SEQUENTIAL} conversations in a row; others all at once, a channel each"
    )
    print(
        f"- fake model: 0.2 s to first token, then {TOKENS_PER_S:.0f} tokens/s, "
        f"~{REPLY_WORDS + 5} words; fake Discord enforces 5 posts+edits per 5 s per "
        "channel or thread, 50 / s per other route"
    )
    print(
        "- floor-httpx streams with httpx's own transport, floor-aiohttp with aiohttp "
        "(which discord.py loads anyway, as the bot's transport does)"
    )


async def main(args: argparse.Namespace) -> None:
    levels = []
    for n in (int(x) for x in args.levels.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            levels.append(
                await level(
                    n,
                    args.rounds,
                    args.tokens_per_event,
                    args.floors.split(","),
                    Path(tmp),
                    args.profile,
                )
            )
        print(f"  {n} conversation(s) done", file=sys.stderr)
    report(levels, args.rounds, args.tokens_per_event)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,20,200", help="concurrent conversations")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per bot")
    parser.add_argument("--tokens-per-event", type=int, default=1, help="tokens per SSE event")
    parser.add_argument(
        "--floors", default="httpx,aiohttp", help="floor bots' clients: httpx, aiohttp"
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output folder")
    asyncio.run(main(parser.parse_args()))
