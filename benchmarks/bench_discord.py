"""Discord path benchmark (issues 4 and 13): the bot as an operator runs it, on the fakes.

For 1, 20 and (``--big``) 200 concurrent conversations (each a different user
mentioning the bot, all in one channel, ``20one``, or in a channel each, ``20``; each
answer streams in its own thread), measured per level on a fresh bot process and
fresh fakes:

- first text: from the MESSAGE_CREATE dispatch to the fake Discord receiving the first
  message (post or edit) carrying answer text, minus the fake model's own time to
  first token for that request; p50 and max;
- final text: from the fake model's last token to the post or edit that put the final
  text on Discord; p50 and max, beside what Discord's buckets allow an ideal bot
  (``platform_bound.py``);
- ``--bare``: the first-text figure for the least work any bot must do, by hand with
  httpx in the same run (start the thread while streaming the completion; post the
  first token into the thread), and the ratio of the medians;
- edits and posts per reply, Discord 429s the bot received, bot CPU per reply (after a
  warm-up conversation), the bot's peak RSS, and the wall time until every reply is
  complete.

Run: ``.venv/bin/python benchmarks/bench_discord.py [--levels 1,20one,20] [--big] [--bare]``

``--metrics`` (issue 15) runs each level twice, on fresh processes: with the operator
endpoint off, then on (``METRICS_PORT``, ``/metrics`` scraped every second, far more
often than Prometheus would), and prints the bot's CPU per reply for both.

``--quota-scenario`` runs issue 12's scenario instead (``discord_quota.py``): 20 users
× 5 mentions at once on the free tier of ``openai/gpt-oss-20b``, enforced by the fake
model; what each mention got, the spread across users, upstream 429s, and throughput
against the server's refill. Bounded by ``--quota-seconds`` (180) of real time:
``.venv/bin/python benchmarks/bench_discord.py --quota-scenario [--quota-seconds 180]
[--quota-runs 1] [--quota-reply-words 100]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from platform_bound import FixedWindow, Reply, Window, final_delays
from platform_harness import (
    ANSWER_MARK,
    BotProcess,
    LevelResult,
    bare_client,
    bare_first_token,
    bot_environment,
    last_tokens,
    measuring,
    model_times,
    paced_groq,
    print_table,
    rounds_for,
    running,
    wait_until,
)

from tests.fakes.discord_payloads import FakeUser
from tests.fakes.discord_server import FakeDiscord, RestCall
from tests.fakes.groq_server import FakeGroq

ID = re.compile(r"/\d+")
MESSAGE_PATH = re.compile(r"^/channels/(\d+)/messages(?:/\d+)?$")


def answers_complete(fake: FakeDiscord, threads: list[str]) -> bool:
    """Every thread holds a bot message whose latest content is a complete answer."""
    finished = {
        m.channel_id
        for m in fake.messages.values()
        if m.author is fake.bot and m.content.endswith(" kappa")  # the last filler word
    }
    return all(thread in finished for thread in threads)


def answer_calls(calls: list[RestCall]) -> dict[str, list[RestCall]]:
    """Successful posts and edits by channel, in arrival order."""
    by_channel: dict[str, list[RestCall]] = {}
    for call in calls:
        match = MESSAGE_PATH.match(call.path)
        if match and call.method in ("POST", "PATCH") and call.status == 200:
            by_channel.setdefault(match.group(1), []).append(call)
    return by_channel


def content(call: RestCall) -> str:
    return str((call.body or {}).get("content") or "")


async def bare_path(
    fake: FakeDiscord,
    groq: FakeGroq,
    users: list[FakeUser],
    client: httpx.AsyncClient,
    rounds: int,
) -> list[float]:
    """The by-hand lower bound for each conversation (no bot connected yet)."""
    auth = {"Authorization": f"Bot {fake.token}"}
    starts: dict[str, float] = {}
    asked: dict[str, str] = {}

    async def call(url: str, body: dict[str, str]) -> httpx.Response:
        # Discord's answer to "too fast" is a 429 with retry_after: honour it, as any bot must.
        for _ in range(100):
            response = await client.post(url, json=body, headers=auth)
            if response.status_code != 429:
                return response.raise_for_status()
            await asyncio.sleep(float(response.json()["retry_after"]))
        raise RuntimeError(f"still rate limited after 100 tries: {url}")

    async def one(question: str, user: FakeUser) -> None:
        starts[question] = time.monotonic()
        msg = await fake.send_message(question, author=user, mention=True)
        asked[question] = msg.id
        url = f"{fake.api_base}/channels/{msg.channel_id}/messages/{msg.id}/threads"
        thread = asyncio.create_task(call(url, {"name": question}))

        async def post(text: str) -> None:
            thread_id = (await thread).json()["id"]
            await call(f"{fake.api_base}/channels/{thread_id}/messages", {"content": text})

        await bare_first_token(client, groq, question, post)

    await one("bare warm-up", users[0])  # open the pooled connections first, as the bot has
    for r in range(rounds):
        await asyncio.gather(*(one(f"bare r{r} {i}", u) for i, u in enumerate(users)))
    times = model_times(groq, starts)
    posted = {channel: calls[0].t for channel, calls in answer_calls(fake.calls).items()}
    return [
        posted[asked[q]] - t0 - (times[q][1] - times[q][0])
        for q, t0 in starts.items()
        if q != "bare warm-up"
    ]


async def warm_up(fake: FakeDiscord, bot: BotProcess) -> None:
    """One answered conversation; re-asked until the bot has its guild (it connects, then
    receives GUILD_CREATE, and only then knows the channel)."""
    for attempt in range(10):
        warm = await fake.send_message(f"warm up {attempt}", mention=True)
        done = functools.partial(answers_complete, fake, [warm.id])
        try:
            await wait_until(done, within=10, bot=bot, what="warm-up")
            return
        except TimeoutError:
            continue
    raise RuntimeError(f"the bot never answered the warm-up:\n{bot.log_tail()}")


def parse_level(spec: str) -> tuple[int, str]:
    """``"20"``: 20 conversations in separate channels; ``"20one"``: in one channel."""
    if spec.endswith("one"):
        return int(spec[:-3]), "one"
    return int(spec), "separate"


def discord_bound(fake: FakeDiscord, replies: list[Reply]) -> list[float]:
    """What Discord's buckets (as the fake enforces them: posts and edits share one per
    channel or thread) allow the final text."""
    buckets: dict[str, Window] = {}

    def windows(place: str) -> list[Window]:
        return [buckets.setdefault(place, FixedWindow(fake.message_limit, fake.message_window_s))]

    return final_delays(replies, windows, lambda place: [windows(place)])


async def bot_path(
    fake: FakeDiscord,
    groq: FakeGroq,
    users: list[FakeUser],
    rounds: int,
    channels: list[str],
    result: LevelResult,
    metrics_port: int | None = None,
) -> None:
    """Each round: every user mentions the bot at once; wait until every answer is done
    (``metrics_port``: with the operator endpoint there, scraped every second)."""
    starts: dict[str, float] = {}
    asked: dict[str, str] = {}

    async def ask(question: str, user: FakeUser, channel: str) -> None:
        starts[question] = time.monotonic()
        message = await fake.send_message(question, author=user, mention=True, channel_id=channel)
        asked[question] = message.id

    env = bot_environment(
        groq,
        result.workdir / "bot.db",
        **{k.upper(): v for k, v in fake.settings_overrides().items()},
        **({"METRICS_PORT": str(metrics_port)} if metrics_port else {}),
    )
    n = len(users)
    async with running(env, result.workdir) as bot, scraping(metrics_port):
        await wait_until(lambda: fake.gateway.identifies > 0, within=30, bot=bot, what="IDENTIFY")
        await warm_up(fake, bot)
        mark = len(fake.calls)
        async with measuring(bot, result, lambda: fake.count_429):
            for r in range(rounds):
                questions = [f"bench r{r} {i}" for i in range(n)]
                await asyncio.gather(
                    *(ask(q, u, c) for q, u, c in zip(questions, users, channels, strict=True))
                )
                threads = [asked[q] for q in questions]
                try:
                    await wait_until(
                        functools.partial(answers_complete, fake, threads),
                        within=120 + n,
                        bot=bot,
                        what="every answer",
                    )
                except TimeoutError:
                    result.unfinished += sum(
                        not answers_complete(fake, [thread]) for thread in threads
                    )
    limited = Counter(
        c.method + " " + ID.sub("/{id}", c.path) for c in fake.calls[mark:] if c.status == 429
    )
    if limited:
        print(f"  429s by route: {dict(limited)}", file=sys.stderr)
    times = model_times(groq, starts)
    ends = last_tokens(groq, starts)
    by_channel = answer_calls(fake.calls[mark:])
    replies: list[Reply] = []
    for question, qid in asked.items():
        calls = by_channel.get(qid, [])
        first = next((c for c in calls if ANSWER_MARK in content(c)), None)
        if first is None or question not in times or question not in ends:
            continue
        result.add(starts[question], times[question], first.t)
        result.updates_per_reply.append(sum(c.method == "PATCH" for c in calls))
        result.posts_per_reply.append(sum(c.method == "POST" for c in calls))
        if answers_complete(fake, [qid]):
            result.finals.append(calls[-1].t - ends[question])
            replies.append(Reply(times[question][1], ends[question], qid))
    result.bounds = discord_bound(fake, replies)


# Seconds between scrapes of /metrics with --metrics: 1 by default, 15 times as often as
# Prometheus's default scrape_interval (15 s); --scrape-s sets it.
SCRAPE_S = 1.0


@contextlib.asynccontextmanager
async def scraping(port: int | None) -> AsyncIterator[None]:
    """Fetch ``/metrics`` every ``SCRAPE_S`` while the block runs (nothing without a port)."""
    if port is None:
        yield
        return

    async def scrape() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(f"http://127.0.0.1:{port}/metrics")
                await asyncio.sleep(SCRAPE_S)

    task = asyncio.create_task(scrape())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def level(spec: str, workdir: Path, bare: bool, metrics: bool = False) -> LevelResult:
    """One concurrency level on fresh fakes and a fresh bot process (at least 20 replies);
    ``metrics``: with the operator endpoint on."""
    conversations, layout = parse_level(spec)
    rounds = rounds_for(conversations)
    label = "metrics" if metrics else "thread"
    result = LevelResult(label, conversations, layout, workdir=workdir)
    async with FakeDiscord() as fake, paced_groq() as groq:
        users = [
            FakeUser(fake.snowflake(), f"user{i}", roles=[fake.member_role])
            for i in range(conversations)
        ]
        fake.users.extend(users)
        channels = [fake.channel_id] * conversations
        if layout == "separate" and conversations > 1:
            # In GUILD_CREATE, before the bot connects.
            channels = [fake.add_channel(f"bench-{i}") for i in range(conversations)]
        if bare:
            async with bare_client() as client:
                result.bare_latencies = await bare_path(fake, groq, users, client, rounds)
        port = free_port() if metrics else None
        await bot_path(fake, groq, users, rounds, channels, result, metrics_port=port)
    return result


async def main(levels: list[str], bare: bool, metrics: bool = False) -> None:
    results = []
    for spec in levels:
        for on in (False, True) if metrics else (False,):
            with tempfile.TemporaryDirectory() as tmp:
                results.append(await level(spec, Path(tmp), bare and not on, metrics=on))
        print(f"  {spec} conversation(s) done", file=sys.stderr)
    print_table(
        "Discord: first text and final text per reply",
        results,
        [
            "one user per conversation; layout one = all mentioning in one channel, "
            "separate = a channel each; every answer streams in its own thread",
            "fake model: 0.2 s to first token, ~1,500 chars at 8 chars / 10 ms",
            "fake Discord enforces 5 posts+edits per 5 s per channel or thread, 50 / s "
            "per other route",
            "DISCORD_EDIT_INTERVAL_S default (1 s); MAX_CONCURRENT_REQUESTS=256",
            "CPU and RSS are the bot process's own (/proc), fakes excluded",
        ],
    )
    if metrics:
        for off, on in zip(results[::2], results[1::2], strict=True):
            a, b = (r.cpu_seconds / max(1, len(r.latencies)) * 1000 for r in (off, on))
            print(
                f"{off.conversations} {off.layout}: CPU per reply {a:.1f} ms endpoint off, "
                f"{b:.1f} ms on ({(b / a - 1) * 100:+.1f} %)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,20one,20", help="e.g. 1,20one,20,200one")
    parser.add_argument("--big", action="store_true", help="add the 200-conversation level")
    parser.add_argument("--bare", action="store_true", help="also time the by-hand bare path")
    parser.add_argument(
        "--metrics", action="store_true", help="each level with the endpoint off, then on"
    )
    parser.add_argument(
        "--quota-scenario", action="store_true", help="issue 12's 20 x 5 free-tier scenario"
    )
    parser.add_argument(
        "--scrape-s", type=float, default=1.0, help="with --metrics: seconds between scrapes"
    )
    parser.add_argument("--quota-seconds", type=float, default=180.0, help="its time bound")
    parser.add_argument(
        "--quota-reply-words", type=int, default=100, help="filler words per fake answer"
    )
    parser.add_argument("--quota-runs", type=int, default=1, help="repeat the scenario")
    args = parser.parse_args()
    if args.quota_scenario:
        from discord_quota import run_quota

        for _ in range(args.quota_runs):  # each on fresh fakes and a fresh bot process
            with tempfile.TemporaryDirectory() as tmp:
                asyncio.run(
                    run_quota(
                        Path(tmp), seconds=args.quota_seconds, reply_words=args.quota_reply_words
                    )
                )
    else:
        levels = args.levels.split(",") + (["200one"] if args.big else [])
        SCRAPE_S = args.scrape_s
        asyncio.run(main(levels, args.bare, args.metrics))
