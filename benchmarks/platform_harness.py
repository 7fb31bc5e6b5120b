"""Shared pieces of the platform benchmarks (``bench_discord.py``, ``bench_slack.py``).

The bot runs as its own process (``python -m bot run``, configured only through the
environment, as an operator runs it), so its CPU time and peak RSS are read from
``/proc`` without counting the fake servers, which run in the benchmark's process and
timestamp everything on the one system-wide monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.settings import Settings  # noqa: E402
from tests.fakes.groq_server import FakeGroq  # noqa: E402

__all__ = [
    "ANSWER_MARK",
    "BotProcess",
    "LevelResult",
    "bare_client",
    "bare_first_token",
    "bot_environment",
    "last_tokens",
    "measuring",
    "model_times",
    "p99",
    "paced_groq",
    "print_table",
    "rounds_for",
    "running",
    "wait_until",
]

ANSWER_MARK = "turns="  # the fake model's answer starts with it; no status line has it
# A ~1,500-character answer: 0.2 s to the first token, then 8 characters every 10 ms
# (about 200 tokens/s, slower than Groq, so replies stream long enough to be edited).
FIRST_TOKEN_DELAY_S, TOKEN_DELAY_S, REPLY_WORDS = 0.2, 0.01, 250


MIN_SAMPLES = 20  # a level with fewer conversations repeats in rounds


def rounds_for(conversations: int) -> int:
    """Rounds of ``conversations`` simultaneous questions giving at least MIN_SAMPLES."""
    return -(-MIN_SAMPLES // conversations)


@contextlib.asynccontextmanager
async def paced_groq() -> AsyncIterator[FakeGroq]:
    """A started fake model answering at the benchmarks' pace (the constants above)."""
    fake = FakeGroq()
    fake.first_token_delay_s, fake.token_delay_s = FIRST_TOKEN_DELAY_S, TOKEN_DELAY_S
    fake.reply_words = REPLY_WORDS
    await fake.start()
    try:
        yield fake
    finally:
        await fake.aclose()


def bare_client() -> httpx.AsyncClient:
    """The bare path's client: no pool limit, so 200 streams run at once as the bot's do."""
    return httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None))


@contextlib.asynccontextmanager
async def measuring(
    bot: BotProcess, result: LevelResult, count_429: Callable[[], int]
) -> AsyncIterator[None]:
    """Charge the block's bot CPU, wall time and 429s (and the peak RSS) to ``result``."""
    cpu0, errors0, began = bot.cpu_seconds(), count_429(), time.monotonic()
    yield
    result.wall_s = time.monotonic() - began
    result.cpu_seconds = bot.cpu_seconds() - cpu0
    result.peak_rss_mb = bot.peak_rss_mb()
    result.count_429 = count_429() - errors0


def bot_environment(fake: FakeGroq, database: Path, **overrides: str) -> dict[str, str]:
    """The bot's environment: the caller's minus every setting, plus the fake's URL.

    Account limits match the fake's headers (a paid tier), and enough upstream
    concurrency for the largest level, so the figures show the platform path rather
    than our own quota queue (``bench_quota.py`` measures that).
    """
    names = {name.upper() for name in Settings.model_fields} | {"API_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in names}
    model = Settings.model_fields["default_model"].default
    env.update(
        GROQ_API_KEY=str(fake.api_key),
        API_BASE_URL=fake.base_url,
        DATABASE_PATH=str(database),
        LOG_LEVEL=os.environ.get("BENCH_BOT_LOG_LEVEL", "WARNING"),
        MAX_CONCURRENT_REQUESTS="256",
        QUOTA_MODEL_LIMITS=f"{model}=rpm:{fake.limit_rpm},rpd:{fake.limit_rpd},"
        f"tpm:{fake.limit_tpm},tpd:none",
        PYTHONPATH=str(ROOT),
    )
    env.update(overrides)
    return env


class BotProcess:
    """``python -m bot run`` in a scratch directory (so no ``.env`` is read); ``argv``
    runs another program instead (``bench_cpu.py``'s floor bot)."""

    def __init__(
        self, env: Mapping[str, str], workdir: Path, argv: Sequence[str] = ("-m", "bot", "run")
    ) -> None:
        self._env, self._workdir, self._argv = dict(env), workdir, tuple(argv)
        self.log_path = workdir / "bot.log"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *self._argv,
                env=self._env,
                cwd=self._workdir,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far (``/proc/<pid>/stat`` fields 14 and 15)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """The process's high-water resident set (``VmHWM``), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> int | None:
        """SIGTERM (the bot's graceful stop), then SIGKILL after 15 s."""
        if self._proc is None or self._proc.returncode is not None:
            return None if self._proc is None else self._proc.returncode
        self._proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self._proc.wait(), 15)
        except TimeoutError:
            self._proc.kill()
            return await self._proc.wait()


@contextlib.asynccontextmanager
async def running(
    env: Mapping[str, str], workdir: Path, argv: Sequence[str] = ("-m", "bot", "run")
) -> AsyncIterator[BotProcess]:
    """A started ``BotProcess``, stopped on exit."""
    bot = BotProcess(env, workdir, argv)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


async def wait_until(
    check: Callable[[], bool], *, within: float, bot: BotProcess | None = None, what: str = ""
) -> None:
    """Poll ``check`` every 50 ms (cheap for the fakes, unlike re-checking on every change)."""
    deadline = time.monotonic() + within
    while not check():
        if bot is not None and not bot.alive():
            raise RuntimeError(f"the bot exited while waiting for {what}:\n{bot.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"\n{bot.log_tail()}" if bot is not None else ""
            raise TimeoutError(f"timed out after {within:.0f} s waiting for {what}{tail}")
        await asyncio.sleep(0.05)


def model_times(fake: FakeGroq, questions: Iterable[str]) -> dict[str, tuple[float, float]]:
    """For the request whose last user turn has each question text: when it reached the
    fake, and when the fake wrote its first content piece (the difference is the fake's
    own time to first token)."""
    wanted = set(questions)
    found: dict[str, tuple[float, float]] = {}
    for request in fake.chat_requests:
        if "first_token_at" not in request:
            continue
        users = [m for m in request["body"]["messages"] if m.get("role") == "user"]
        content = str(users[-1].get("content", "")) if users else ""
        # The longest: "bench r0 11" is in "bench r0 113" too.
        matches = [question for question in wanted.difference(found) if question in content]
        if matches:
            found[max(matches, key=len)] = (request["at"], request["first_token_at"])
    return found


async def bare_first_token(
    client: httpx.AsyncClient, fake: FakeGroq, question: str, on_first: Callable[[str], Any]
) -> None:
    """The bare path's model half: stream a completion with httpx and, at the first
    content token, await ``on_first(text)`` (the platform post), then drain the rest
    unparsed: the connection stays reusable, as the bot's does, while parsing every
    line in the fakes' process would slow them and, at 200 streams, make the baseline
    measure the rig instead of the path."""
    body = {
        "model": Settings.model_fields["default_model"].default,
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "include_reasoning": False,
    }
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    url = f"{fake.base_url}/chat/completions"
    async with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        mark, tail, posted = ANSWER_MARK.encode(), b"", False
        async for chunk in response.aiter_raw():
            if not posted and mark in tail + chunk:
                posted = True
                await on_first(ANSWER_MARK)
            tail = chunk[-len(mark) :]
    assert posted, "the fake's stream carried no answer"


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile (the maximum for fewer than 100 values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def last_tokens(fake: FakeGroq, questions: Iterable[str]) -> dict[str, float]:
    """When the fake model sent the last content piece of each question's answer."""
    wanted = set(questions)
    found: dict[str, float] = {}
    for request in fake.chat_requests:
        if "last_token_at" not in request:
            continue
        users = [m for m in request["body"]["messages"] if m.get("role") == "user"]
        content = str(users[-1].get("content", "")) if users else ""
        matches = [question for question in wanted.difference(found) if question in content]
        if matches:
            found[max(matches, key=len)] = request["last_token_at"]
    return found


# The target for the final text at one conversation (issue 13), and the slack allowed
# on top of what the platform's windows allow at more.
FINAL_TARGET_S, BOUND_MARGIN = 0.05, 0.10


@dataclass
class LevelResult:
    """One concurrency level's figures (latencies in seconds)."""

    label: str
    conversations: int
    layout: str = ""  # "separate" channels or "one" channel
    workdir: Path = Path()
    latencies: list[float] = field(default_factory=list)
    bare_latencies: list[float] = field(default_factory=list)
    finals: list[float] = field(default_factory=list)  # last token -> final text shown
    bounds: list[float] = field(default_factory=list)  # the same, for the ideal bot
    unfinished: int = 0  # replies not complete when the level's time ran out
    updates_per_reply: list[int] = field(default_factory=list)
    posts_per_reply: list[int] = field(default_factory=list)
    count_429: int = 0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    wall_s: float = 0.0
    intake: list[float] = field(default_factory=list)  # event -> request at the fake model
    relay: list[float] = field(default_factory=list)  # first token -> answer text shown

    def add(self, sent: float, times: tuple[float, float], shown: float) -> None:
        """One reply: event sent, (request arrived, first token written), text shown."""
        arrived, first_token = times
        self.latencies.append(shown - sent - (first_token - arrived))
        self.intake.append(arrived - sent)
        self.relay.append(shown - first_token)

    def split(self) -> str:
        """Where the latency goes: before the model call, and after its first token."""
        parts = [("event->request", self.intake), ("token->shown", self.relay)]
        return f"{self.label} {self.conversations} {self.layout}: " + ", ".join(
            f"{name} median {statistics.median(v) * 1000:.1f} / p99 {p99(v) * 1000:.1f} ms"
            for name, v in parts
        )

    def target(self) -> tuple[float, float]:
        """(p50, max) the final text may take: 0.05 s at one conversation, else within
        10 % of what the platform's windows allow (plus the 0.05 s)."""
        if self.conversations == 1:
            return FINAL_TARGET_S, FINAL_TARGET_S
        return tuple(  # type: ignore[return-value]
            v * (1 + BOUND_MARGIN) + FINAL_TARGET_S
            for v in (statistics.median(self.bounds), max(self.bounds))
        )

    def row(self) -> list[str]:
        lat, fin, bound = self.latencies, self.finals, self.bounds
        met = "-"
        if fin and bound:
            p50, top = self.target()
            met = "yes" if statistics.median(fin) <= p50 and max(fin) <= top else "no"
        return [
            self.label,
            str(self.conversations),
            self.layout,
            str(len(lat)),
            f"{statistics.median(lat):.2f}",
            f"{max(lat):.2f}",
            f"{statistics.median(fin):.3f}" if fin else "-",
            f"{max(fin):.3f}" if fin else "-",
            f"{statistics.median(bound):.3f}" if bound else "-",
            f"{max(bound):.3f}" if bound else "-",
            met,
            str(self.unfinished),
            f"{statistics.mean(self.updates_per_reply):.2f}",
            f"{statistics.mean(self.posts_per_reply):.2f}",
            str(self.count_429),
            f"{self.cpu_seconds / max(1, len(lat)) * 1000:.1f}",
            f"{self.peak_rss_mb:.0f}",
            f"{self.wall_s:.1f}",
        ]


HEADER = [
    "mode",
    "convs",
    "layout",
    "replies",
    "first p50 s",
    "first max s",
    "final p50 s",
    "final max s",
    "allowed p50 s",
    "allowed max s",
    "target met",
    "unfinished",
    "updates/reply",
    "posts/reply",
    "429s",
    "CPU ms/reply",
    "peak RSS MiB",
    "wall s",
]


def print_table(title: str, results: list[LevelResult], notes: list[str]) -> None:
    """Print the figures as a fixed-width table, then the notes on how they were taken."""
    rows = [HEADER, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    print(f"\n{title}")
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    notes = [
        *notes,
        "first = event delivered -> first call carrying answer text, minus the fake "
        "model's own time to first token",
        "final = the model's last token -> the call that put the final text on the "
        "platform (arrival at the fake)",
        "allowed = the same for an ideal bot (platform_bound.py): first post at the "
        "first token, final call at the last token, no interim update, through the "
        "windows the fake enforces; target: <= 0.05 s at 1 conversation, else within "
        "10 % of allowed (+0.05 s), at p50 and max",
    ]
    for note in notes:
        print(f"- {note}")
    bare = [r for r in results if r.bare_latencies]
    if bare:
        print("bare path (the least any bot must do), first text median ms / bot ratio:")
        for r in bare:
            b = statistics.median(r.bare_latencies)
            print(
                f"  {r.label} {r.conversations} {r.layout}: {b * 1000:.1f} / "
                f"{statistics.median(r.latencies) / b:.2f}"
            )
    print("latency split (bot path):")
    for result in results:
        print(f"  {result.split()}")
