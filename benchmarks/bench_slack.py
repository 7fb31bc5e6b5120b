"""Slack path benchmark (issue 5): the bot as an operator runs it, against the fakes.

For 1, 20 and 200 concurrent conversations, with native streaming (``chat.startStream``
/ ``appendStream`` / ``stopStream``) and with ``chat.postMessage`` + ``chat.update``.
Each conversation is a different user mentioning the bot in a different channel (the
way many conversations spread over a workspace; posting is limited per channel, so
200 answers in one channel would measure Slack's 1 post / s, not the bot). Per level,
on a fresh bot process (Socket Mode) and fresh fakes:

- latency: from the event's delivery on the socket to the fake Slack receiving the
  first call carrying answer text, minus the fake model's own time to first token;
  median and p99;
- bare: the same figure for the least work any bot must do, by hand with httpx in the
  same run (stream the completion; ``chat.postMessage`` the first token in the
  thread), and the ratio of the medians;
- updates (``chat.update`` or ``chat.appendStream``) and posts (``chat.postMessage`` or
  ``chat.startStream``) per reply, Slack 429s, bot CPU per reply (after a warm-up),
  the bot's peak RSS, and the wall time until every reply is complete.

Slack's budgets are real-time (the fake enforces 50 ``chat.update`` and 100
``chat.appendStream`` per minute per workspace), so the 200-conversation levels take
minutes: that is the figure worth knowing.

Run: ``.venv/bin/python benchmarks/bench_slack.py [--levels 1,20,200] [--modes native,update]``
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from platform_harness import (
    ANSWER_MARK,
    BotProcess,
    LevelResult,
    bare_client,
    bare_first_token,
    bot_environment,
    measuring,
    model_times,
    paced_groq,
    print_table,
    rounds_for,
    running,
    wait_until,
)

from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_payloads import FakeUser
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_webapi import ApiCall

POSTS = {"chat.postMessage", "chat.startStream"}
UPDATES = {"chat.update", "chat.appendStream"}
Thread = tuple[str, str]  # (channel, thread_ts)


def answers_complete(fake: FakeSlack, threads: list[Thread]) -> bool:
    """Every thread holds a finished bot reply ending with the answer's last word."""
    finished = {
        (m.channel, m.thread_ts)
        for m in fake.messages.values()
        if m.user == fake.bot_user_id
        and m.streaming != "in_progress"
        and m.text.rstrip().endswith("kappa")  # the fake answer's last filler word
    }
    return all(thread in finished for thread in threads)


def text_of(call: ApiCall) -> str:
    return str(call.params.get("text") or "") + str(call.params.get("markdown_text") or "")


def answer_calls(calls: list[ApiCall]) -> dict[Thread, list[ApiCall]]:
    """Successful message calls by the reply's thread, in arrival order (a stream or
    update call names only the reply's ts, so it is mapped through the post)."""
    thread_of: dict[tuple[str, str], Thread] = {}
    by_thread: dict[Thread, list[ApiCall]] = {}
    for call in calls:
        if not call.ok or call.method not in POSTS | UPDATES | {"chat.stopStream"}:
            continue
        channel = str(call.params.get("channel"))
        if call.method in POSTS:
            thread = (channel, str(call.params.get("thread_ts")))
            thread_of[(channel, str(call.response.get("ts")))] = thread
        else:
            thread = thread_of.get((channel, str(call.params.get("ts"))), ("", ""))
        by_thread.setdefault(thread, []).append(call)
    return by_thread


def new_channel(fake: FakeSlack, n: int) -> str:
    channel = f"C0BENCH{n:04d}"
    fake.known_channels.add(channel)
    return channel


async def bare_path(
    fake: FakeSlack,
    groq: FakeGroq,
    users: list[FakeUser],
    client: httpx.AsyncClient,
    rounds: int,
) -> list[float]:
    """The by-hand lower bound for each conversation (no bot connected yet)."""
    auth = {"Authorization": f"Bearer {fake.bot_token}"}
    starts: dict[str, float] = {}
    threads: dict[str, Thread] = {}

    async def one(question: str, user: FakeUser, channel: str) -> None:
        starts[question] = time.monotonic()
        delivery = await fake.mention(user, question, channel=channel, socket=False)
        threads[question] = (channel, delivery.ts)

        async def post(text: str) -> None:
            body = {"channel": channel, "thread_ts": delivery.ts, "text": text}
            response = await client.post(
                f"{fake.base_url}chat.postMessage", json=body, headers=auth
            )
            assert response.json()["ok"], response.text

        await bare_first_token(client, groq, question, post)

    await one("bare warm-up", users[0], new_channel(fake, 9999))
    for r in range(rounds):
        await asyncio.gather(
            *(
                one(f"bare r{r} {i}", u, new_channel(fake, r * len(users) + i))
                for i, u in enumerate(users)
            )
        )
    times = model_times(groq, starts)
    by_thread = answer_calls(fake.calls)
    return [
        by_thread[threads[q]][0].at - t0 - (times[q][1] - times[q][0])
        for q, t0 in starts.items()
        if q != "bare warm-up"
    ]


async def warm_up(fake: FakeSlack, bot: BotProcess) -> None:
    """One answered conversation (the first also fills the bot's model list cache)."""
    await wait_until(lambda: fake.connected, within=30, bot=bot, what="the Socket Mode connection")
    delivery = await fake.mention(fake.alice, "warm up")
    thread = (delivery.channel, delivery.ts)
    await wait_until(
        lambda: answers_complete(fake, [thread]), within=30, bot=bot, what="the warm-up answer"
    )


async def bot_path(
    fake: FakeSlack,
    groq: FakeGroq,
    users: list[FakeUser],
    rounds: int,
    native: bool,
    result: LevelResult,
) -> None:
    """Each round: every user mentions the bot at once; wait until every answer is done."""
    starts: dict[str, float] = {}
    asked: dict[str, Thread] = {}

    async def ask(question: str, user: FakeUser, channel: str) -> None:
        starts[question] = time.monotonic()
        delivery = await fake.mention(user, question, channel=channel)
        asked[question] = (channel, delivery.ts)

    env = bot_environment(
        groq,
        result.workdir / "bot.db",
        SLACK_BOT_TOKEN=fake.bot_token,
        SLACK_APP_TOKEN=fake.app_token,
        SLACK_API_BASE_URL=fake.base_url,
        SLACK_NATIVE_STREAMING=str(native).lower(),
    )
    async with running(env, result.workdir) as bot:
        await warm_up(fake, bot)
        mark = len(fake.calls)
        async with measuring(bot, result, lambda: fake.count_429):
            for r in range(rounds):
                questions = [f"bench r{r} {i}" for i in range(len(users))]
                channels = [new_channel(fake, 5000 + r * len(users) + i) for i in range(len(users))]
                await asyncio.gather(
                    *(ask(q, u, c) for q, u, c in zip(questions, users, channels, strict=True))
                )
                await wait_until(
                    functools.partial(answers_complete, fake, [asked[q] for q in questions]),
                    within=600,
                    bot=bot,
                    what="every answer",
                )
    times = model_times(groq, starts)
    by_thread = answer_calls(fake.calls[mark:])
    for question, thread in asked.items():
        calls = by_thread[thread]
        first = next(c for c in calls if ANSWER_MARK in text_of(c))
        result.add(starts[question], times[question], first.at)
        result.updates_per_reply.append(sum(c.method in UPDATES for c in calls))
        result.posts_per_reply.append(sum(c.method in POSTS for c in calls))


async def level(conversations: int, native: bool, workdir: Path) -> LevelResult:
    """One concurrency level on fresh fakes and a fresh bot process (at least 20 replies)."""
    rounds = rounds_for(conversations)
    label = "native" if native else "update"
    result = LevelResult(label, conversations, workdir=workdir)
    async with FakeSlack() as fake, paced_groq() as groq:
        users = [fake.add_user(f"user{i}") for i in range(conversations)]
        async with bare_client() as client:
            result.bare_latencies = await bare_path(fake, groq, users, client, rounds)
        await bot_path(fake, groq, users, rounds, native, result)
    return result


async def main(levels: list[int], modes: list[str]) -> None:
    results = []
    for mode in modes:
        for n in levels:
            with tempfile.TemporaryDirectory() as tmp:
                results.append(await level(n, mode == "native", Path(tmp)))
            print(f"  {mode}: {n} conversation(s) done", file=sys.stderr)
    print_table(
        "Slack: event delivered -> first call with answer text (minus fake TTFT)",
        results,
        [
            "one user and one channel per conversation; replies in threads; Socket Mode",
            "fake model: 0.2 s to first token, ~1,500 chars at 8 chars / 10 ms",
            "fake Slack enforces per-channel posting (5 burst, 1/s), chat.update 50/min, "
            "chat.appendStream and chat.stopStream 100/min each, per workspace",
            "updates = chat.update (update) or chat.appendStream (native; plus one "
            "chat.stopStream per reply); SLACK_UPDATES_PER_MINUTE and "
            "SLACK_EDIT_INTERVAL_S defaults; MAX_CONCURRENT_REQUESTS=256",
            "CPU and RSS are the bot process's own (/proc), fakes excluded",
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,20,200")
    parser.add_argument("--modes", default="native,update")
    args = parser.parse_args()
    asyncio.run(main([int(n) for n in args.levels.split(",")], args.modes.split(",")))
