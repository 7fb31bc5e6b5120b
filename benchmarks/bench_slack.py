"""Slack path benchmark (issues 5 and 13): the bot as an operator runs it, on the fakes.

For 1, 20 and (``--big``) 200 concurrent conversations, with native streaming
(``chat.startStream`` / ``appendStream`` / ``stopStream``) and with
``chat.postMessage`` + ``chat.update``. Each conversation is a different user
mentioning the bot; at 20 they do so in separate channels and, as ``20one``, all in
one channel (where Slack's posting limit of about 1 message per second per channel
binds). Per level, on a fresh bot process (Socket Mode) and fresh fakes:

- first text: from the event's delivery on the socket to the fake Slack receiving the
  first call carrying answer text, minus the fake model's own time to first token;
  p50 and max;
- final text: from the fake model's last token to the call that put the final text on
  Slack; p50 and max, beside what Slack's windows allow an ideal bot
  (``platform_bound.py``: the same replies, a first post at the first token and one
  final call at the last token, replayed through the windows the fake enforces);
- updates (``chat.update`` or ``chat.appendStream``) and posts (``chat.postMessage`` or
  ``chat.startStream``) per reply, Slack 429s, bot CPU per reply (after a warm-up),
  the bot's peak RSS, and the wall time until every reply is complete;
- ``--bare``: also the first-text figure of the least work any bot must do, by hand
  with httpx (stream the completion; ``chat.postMessage`` the first token).

Slack's budgets are real-time (the fake enforces 50 ``chat.update``, 100
``chat.appendStream`` and 20 ``chat.stopStream`` per minute per workspace), so the
200-conversation levels take minutes: that is the figure worth knowing. A level waits
at most 60 s + 3 s per conversation for its answers; replies still unfinished then
are counted, not timed.

Run: ``.venv/bin/python benchmarks/bench_slack.py [--levels 1,20,20one] [--big]
[--modes native,update] [--bare]``
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

from platform_bound import Bucket, Reply, SlidingWindow, Window, final_delays
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

from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_payloads import FakeUser
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_webapi import ApiCall, default_rate_limits

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


def parse_level(spec: str) -> tuple[int, str]:
    """``"20"``: 20 conversations in separate channels; ``"20one"``: in one channel."""
    if spec.endswith("one"):
        return int(spec[:-3]), "one"
    return int(spec), "separate"


def slack_bound(replies: list[Reply], native: bool) -> list[float]:
    """What Slack's windows (as the fake enforces them) allow the final text."""
    rules = default_rate_limits()
    post_rule, update_rule = rules["chat.postMessage"], rules["chat.update"]
    stop_rule = rules["chat.stopStream"]
    posts: dict[str, Window] = {}
    update = SlidingWindow(update_rule.limit, update_rule.window_s)
    stop = SlidingWindow(stop_rule.limit, stop_rule.window_s)

    def post_windows(place: str) -> list[Window]:
        return [posts.setdefault(place, Bucket(post_rule.limit, post_rule.window_s))]

    def final_windows(place: str) -> list[list[Window]]:
        return [[stop], [update]] if native else [[update]]

    return final_delays(replies, post_windows, final_windows)


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
    n = len(users)
    shared = new_channel(fake, 4999) if result.layout == "one" else ""
    async with running(env, result.workdir) as bot:
        await warm_up(fake, bot)
        mark = len(fake.calls)
        async with measuring(bot, result, lambda: fake.count_429):
            for r in range(rounds):
                questions = [f"bench r{r} {i}" for i in range(n)]
                channels = [shared or new_channel(fake, 5000 + r * n + i) for i in range(n)]
                await asyncio.gather(
                    *(ask(q, u, c) for q, u, c in zip(questions, users, channels, strict=True))
                )
                threads = [asked[q] for q in questions]
                try:
                    await wait_until(
                        functools.partial(answers_complete, fake, threads),
                        within=60 + 3 * n,
                        bot=bot,
                        what="every answer",
                    )
                except TimeoutError:
                    result.unfinished += sum(
                        not answers_complete(fake, [thread]) for thread in threads
                    )
    times = model_times(groq, starts)
    ends = last_tokens(groq, starts)
    by_thread = answer_calls(fake.calls[mark:])
    replies: list[Reply] = []
    for question, thread in asked.items():
        calls = by_thread.get(thread, [])
        first = next((c for c in calls if ANSWER_MARK in text_of(c)), None)
        if first is None or question not in times or question not in ends:
            continue
        result.add(starts[question], times[question], first.at)
        result.updates_per_reply.append(sum(c.method in UPDATES for c in calls))
        result.posts_per_reply.append(sum(c.method in POSTS for c in calls))
        if answers_complete(fake, [thread]):
            result.finals.append(calls[-1].at - ends[question])
            replies.append(Reply(times[question][1], ends[question], thread[0]))
    result.bounds = slack_bound(replies, native)


async def level(spec: str, native: bool, workdir: Path, bare: bool) -> LevelResult:
    """One concurrency level on fresh fakes and a fresh bot process (at least 20 replies)."""
    conversations, layout = parse_level(spec)
    rounds = rounds_for(conversations)
    label = "native" if native else "update"
    result = LevelResult(label, conversations, layout, workdir=workdir)
    async with FakeSlack() as fake, paced_groq() as groq:
        users = [fake.add_user(f"user{i}") for i in range(conversations)]
        if bare:
            async with bare_client() as client:
                result.bare_latencies = await bare_path(fake, groq, users, client, rounds)
        await bot_path(fake, groq, users, rounds, native, result)
    return result


async def main(levels: list[str], modes: list[str], bare: bool) -> None:
    results = []
    for mode in modes:
        for spec in levels:
            with tempfile.TemporaryDirectory() as tmp:
                results.append(await level(spec, mode == "native", Path(tmp), bare))
            print(f"  {mode}: {spec} conversation(s) done", file=sys.stderr)
    print_table(
        "Slack: first text and final text per reply",
        results,
        [
            "one user per conversation; layout separate = a channel each, one = all "
            "in one channel; replies in threads; Socket Mode",
            "fake model: 0.2 s to first token, ~1,500 chars at 8 chars / 10 ms",
            "fake Slack enforces per-channel posting (5 burst, 1/s; chat.startStream "
            "counts as a post), chat.update 50/min, chat.appendStream 100/min, "
            "chat.stopStream 20/min (Tier 2), per workspace",
            "updates = chat.update or chat.appendStream (native also ends each stream "
            "with chat.stopStream); MAX_CONCURRENT_REQUESTS=256",
            "CPU and RSS are the bot process's own (/proc), fakes excluded",
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,20,20one", help="e.g. 1,20,20one,200")
    parser.add_argument("--big", action="store_true", help="add the 200-conversation level")
    parser.add_argument("--modes", default="native,update")
    parser.add_argument("--bare", action="store_true", help="also time the by-hand bare path")
    args = parser.parse_args()
    levels = args.levels.split(",") + (["200"] if args.big else [])
    asyncio.run(main(levels, args.modes.split(","), args.bare))
