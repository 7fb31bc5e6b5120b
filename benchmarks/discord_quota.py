"""The quota scenario of issue 12 through the Discord path (``bench_discord.py
--quota-scenario``): 20 users each mention the bot 5 times at once, on Groq's free tier
of ``openai/gpt-oss-20b``, which the fake model enforces.

The bot runs as an operator runs it (``python -m bot run``, settings from the
environment only): ``DEFAULT_MODEL=openai/gpt-oss-20b`` with its built-in limits (no
``QUOTA_MODEL_LIMITS``), ``MAX_OUTPUT_TOKENS``, ``MAX_CONCURRENT_REQUESTS`` and every
``QUOTA_*`` at their defaults. The run ends when every mention has an answer or a
refusal, or after ``--quota-seconds`` of real time (180 by default). Then, per mention,
what its thread shows:

- answered: the full answer (and how many of those first showed a wait or queued state);
- told to wait: a wait, queued or limit notice is what it still shows (a status line
  the run ended on, "Still at your limit; try again in 23 s", "limit reached — resets
  in 23 s");
- timed out / refused: any other visible text instead of the answer ("Timed out after
  1 min waiting for capacity", "You already have 2 requests in progress", "This message
  needs about 1,049 tokens…");
- unfinished: an answer still streaming when the run ended;
- silent: an empty thread, or no message at all.

Also: answers per user (min/median/max and spread around the mean), upstream 429s
(the fake model's ``count_429``), and answers shown within the first 120 s against
what the server's continuous refill allows over 120 s (limit + limit × 120 s ÷ window)
in its binding dimension, computed from the fake's own attributes; tokens per request
for TPM are the mean the server reported (the bot's usage ledger). Every distinct
non-answer text is listed with its count, numbers replaced by N.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import statistics
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from platform_harness import BotProcess, bot_environment, running, wait_until

from tests.fakes.discord_payloads import FakeUser
from tests.fakes.discord_server import FakeDiscord, FakeMessage, RestCall
from tests.fakes.groq_server import FILLER, FakeGroq

__all__ = ["QuotaRun", "quota_scenario"]

MODEL = "openai/gpt-oss-20b"
# Groq's free tier of the model (console.groq.com/docs/rate-limits).
FREE_TIER = {"rpm": 30, "rpd": 1_000, "tpm": 8_000, "tpd": 200_000}
USERS, MENTIONS = 20, 5
WINDOW_S = 120.0  # the throughput figure's stretch
# The fake answer's pace: 0.2 s to the first token, 8 characters every 10 ms.
FIRST_TOKEN_DELAY_S, TOKEN_DELAY_S = 0.2, 0.01
ANSWER_MARK = "turns="  # the fake model's answer starts with it; no notice has it
STATUS_PREFIX = "⏳"  # EditingSink's status line
WAIT = re.compile(
    r"queued|waiting for capacity|limit reached|still at (?:your|the bot's) limit|resets in",
    re.IGNORECASE,
)
TIMED_OUT = re.compile(r"timed out", re.IGNORECASE)
NUMBER = re.compile(r"\b\d[\d,.]*\b")
CATEGORIES = ("answered", "told to wait", "timed out / refused", "unfinished", "silent")


@dataclass
class Mention:
    user: str
    text: str
    thread: str = ""  # the mention's message id: its thread has the same id
    state: str = "silent"
    waited: bool = False  # a wait / queued / limit notice showed before the answer
    answered_at: float | None = None  # seconds after the burst was sent
    final: str = ""


@dataclass
class QuotaRun:
    mentions: list[Mention] = field(default_factory=list)
    count_429: int = 0
    discord_429: int = 0
    in_channel: int = 0  # bot messages outside the threads (there should be none)
    wall_s: float = 0.0
    accepted_120: int = 0  # requests the server streamed an answer to, first 120 s
    tokens_per_request: float | None = None
    allowance: dict[str, float] = field(default_factory=dict)  # dimension -> requests in 120 s
    log_tail: str = ""


def _complete(text: str, reply_words: int) -> bool:
    last = FILLER[(reply_words - 1) % len(FILLER)] if reply_words else ""
    return text.startswith(ANSWER_MARK) and (not last or text.rstrip().endswith(last))


def _classify(mention: Mention, messages: list[FakeMessage], reply_words: int) -> None:
    history = [text for m in messages for text in m.history]
    finals = [m.content for m in messages if m.content.strip() not in ("", "…")]
    mention.final = "\n".join(finals)
    mention.waited = any(
        text.startswith(STATUS_PREFIX) or (WAIT.search(text) and ANSWER_MARK not in text)
        for text in history
    )
    if any(_complete(text, reply_words) for text in finals):
        mention.state = "answered"
    elif any(ANSWER_MARK in text for text in finals):
        mention.state = "unfinished"
    elif not finals:
        mention.state = "silent"
    elif all(
        (text.startswith(STATUS_PREFIX) or WAIT.search(text)) and not TIMED_OUT.search(text)
        for text in finals
    ):
        mention.state = "told to wait"
    else:
        mention.state = "timed out / refused"


def _settled(fake: FakeDiscord, mentions: list[Mention], reply_words: int) -> bool:
    """Every mention shows its answer, or a final text that is no status line."""
    for mention in mentions:
        messages = fake.bot_messages(mention.thread)
        contents = [m.content for m in messages if m.content.strip() not in ("", "…")]
        if not contents:
            return False
        if not any(_complete(c, reply_words) for c in contents) and any(
            c.startswith(STATUS_PREFIX) or ANSWER_MARK in c for c in contents
        ):
            return False
    return True


def _answered_times(calls: list[RestCall], reply_words: int) -> dict[str, float]:
    """Thread id -> time of the first post or edit that showed its full answer."""
    times: dict[str, float] = {}
    path = re.compile(r"^/channels/(\d+)/messages(?:/\d+)?$")
    for call in calls:
        match = path.match(call.path)
        if not match or call.method not in ("POST", "PATCH") or call.status != 200:
            continue
        content = str((call.body or {}).get("content") or "")
        if _complete(content, reply_words):
            times.setdefault(match.group(1), call.t)
    return times


def _ledger_tokens(database: Path) -> float | None:
    """The mean prompt + completion tokens per request, as the server reported them."""
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            row = conn.execute(
                "SELECT AVG(prompt_tokens + completion_tokens), COUNT(*) FROM usage"
            ).fetchone()
    except sqlite3.Error:
        return None
    return float(row[0]) if row and row[1] else None


def _allowance(fake: FakeGroq, tokens_per_request: float | None) -> dict[str, float]:
    """Requests the server's refill allows over WINDOW_S, per enforced dimension:
    limit + limit × WINDOW_S ÷ window (a full bucket, then continuous refill)."""
    minute_s = float(getattr(fake, "minute_s", 60.0))
    day_s = float(getattr(fake, "day_s", 86_400.0))
    found: dict[str, float] = {}
    for dim, window in (("rpm", minute_s), ("rpd", day_s), ("tpm", minute_s), ("tpd", day_s)):
        limit = getattr(fake, f"limit_{dim}", None)
        if limit is None or not getattr(fake, f"enforce_{dim}", False):
            continue
        amount = limit + limit * WINDOW_S / window
        if dim.startswith("t"):
            if not tokens_per_request:
                continue
            amount /= tokens_per_request
        found[dim] = amount
    return found


def free_tier_groq() -> FakeGroq:
    """The fake model enforcing the free tier (TPD too, where the fake has it)."""
    fake = FakeGroq()
    assert any(m.id == MODEL for m in fake.models), f"the fake does not list {MODEL}"
    fake.first_token_delay_s, fake.token_delay_s = FIRST_TOKEN_DELAY_S, TOKEN_DELAY_S
    for dim, limit in FREE_TIER.items():
        if hasattr(fake, f"limit_{dim}"):
            setattr(fake, f"limit_{dim}", limit)
            setattr(fake, f"enforce_{dim}", True)
    return fake


async def quota_scenario(workdir: Path, *, seconds: float, reply_words: int) -> QuotaRun:
    """Run the scenario once on fresh fakes and a fresh bot process."""
    result = QuotaRun()
    groq = free_tier_groq()
    groq.reply_words = reply_words
    await groq.start()
    try:
        async with FakeDiscord() as discord:
            users = [
                FakeUser(discord.snowflake(), f"user{i}", roles=[discord.member_role])
                for i in range(USERS)
            ]
            discord.users.extend(users)
            env = bot_environment(
                groq,
                workdir / "bot.db",
                LOG_LEVEL="INFO",  # for "discord adapter started"
                DEFAULT_MODEL=MODEL,
                QUOTA_MODEL_LIMITS="",  # the built-in table: the free tier
                **{k.upper(): v for k, v in discord.settings_overrides().items()},
            )
            del env["MAX_CONCURRENT_REQUESTS"]  # the default, as an operator runs it
            async with running(env, workdir) as bot:
                await _run(bot, discord, groq, users, result, seconds, reply_words)
                result.log_tail = bot.log_tail(15)
            result.discord_429 = discord.count_429
    finally:
        await groq.aclose()
    result.count_429 = groq.count_429
    result.tokens_per_request = _ledger_tokens(workdir / "bot.db")
    result.allowance = _allowance(groq, result.tokens_per_request)
    return result


async def _run(
    bot: BotProcess,
    discord: FakeDiscord,
    groq: FakeGroq,
    users: list[FakeUser],
    result: QuotaRun,
    seconds: float,
    reply_words: int,
) -> None:
    def started() -> bool:
        return "discord adapter started" in bot.log_path.read_text(errors="replace")

    await wait_until(started, within=30, bot=bot, what="the Discord adapter")
    mark = len(discord.calls)
    requests_before = len(groq.chat_requests)
    t0, fake_t0 = time.monotonic(), groq.clock()

    async def burst(user: FakeUser) -> None:
        for n in range(MENTIONS):
            mention = Mention(user.username, f"question {n + 1} from {user.username}")
            result.mentions.append(mention)
            sent = await discord.send_message(mention.text, author=user, mention=True)
            mention.thread = sent.id

    await asyncio.gather(*(burst(u) for u in users))
    # The run is bounded: what is not settled by then is counted as it stands.
    with contextlib.suppress(TimeoutError):
        await wait_until(
            lambda: _settled(discord, result.mentions, reply_words),
            within=max(0.0, seconds - (time.monotonic() - t0)),
            bot=bot,
            what="every mention answered or refused",
        )
    result.wall_s = time.monotonic() - t0
    times = _answered_times(discord.calls[mark:], reply_words)
    for mention in result.mentions:
        _classify(mention, discord.bot_messages(mention.thread), reply_words)
        if mention.state == "answered" and mention.thread in times:
            mention.answered_at = times[mention.thread] - t0
    result.in_channel = len(discord.bot_messages(discord.channel_id))
    result.accepted_120 = sum(
        1
        for r in groq.chat_requests[requests_before:]
        if "first_token_at" in r and r.get("at", fake_t0 + WINDOW_S + 1) - fake_t0 <= WINDOW_S
    )


def _normalised(text: str) -> str:
    return NUMBER.sub("N", text.strip().splitlines()[0] if text.strip() else "")[:160]


def print_quota_run(run: QuotaRun, *, seconds: float, reply_words: int) -> None:
    total = len(run.mentions)
    states = Counter(m.state for m in run.mentions)
    print(
        f"\nDiscord quota scenario: {USERS} users x {MENTIONS} mentions at once, "
        f"{MODEL} free tier enforced by the fake model"
    )
    width = max(len(c) for c in CATEGORIES)
    for category in CATEGORIES:
        n = states.get(category, 0)
        extra = ""
        if category == "answered":
            waited = sum(m.waited for m in run.mentions if m.state == category)
            extra = f"  ({waited} first shown a wait / queued / limit notice)"
        print(f"  {category.ljust(width)}  {n:3d} / {total}{extra}")

    per_user = Counter({m.user: 0 for m in run.mentions})
    per_user.update(m.user for m in run.mentions if m.state == "answered")
    counts = sorted(per_user.values())
    mean = statistics.mean(counts) if counts else 0.0
    if mean:
        low, high = (counts[0] - mean) / mean * 100, (counts[-1] - mean) / mean * 100
        widest = max(abs(low), abs(high))
        spread = f"mean {mean:.2f}, spread {low:+.0f} % / {high:+.0f} % (±{widest:.0f} %)"
    else:
        spread = "mean 0 (nobody answered)"
    print(
        f"  answered per user min/median/max: {counts[0]}/{statistics.median(counts):g}/"
        f"{counts[-1]} of {MENTIONS}; {spread}"
    )
    print(f"  upstream 429s (fake model): {run.count_429}; Discord 429s: {run.discord_429}")

    in_window = sum(1 for m in run.mentions if m.answered_at is not None and m.answered_at <= 120)
    if run.allowance:
        dim, allowed = min(run.allowance.items(), key=lambda item: item[1])
        each = ", ".join(f"{d.upper()} {a:.0f}" for d, a in run.allowance.items())
        print(
            f"  answered in the first {WINDOW_S:.0f} s: {in_window}; the server's refill "
            f"allows {allowed:.0f} ({dim.upper()} binding; {each}) -> ratio "
            f"{in_window / allowed:.2f}"
        )
        print(
            f"  requests the server answered in the first {WINDOW_S:.0f} s: "
            f"{run.accepted_120} -> ratio {run.accepted_120 / allowed:.2f}"
        )
    else:
        print(f"  answered in the first {WINDOW_S:.0f} s: {in_window} (no enforced limit?)")
    if in_window == total:
        print(
            f"  (all {total} answered within {WINDOW_S:.0f} s: "
            "the demand, not the refill, bound it)"
        )
    answered_at = sorted(m.answered_at for m in run.mentions if m.answered_at is not None)
    if answered_at:
        print(
            f"  answers shown at t = {answered_at[0]:.1f} s (first), "
            f"{statistics.median(answered_at):.1f} s (median), {answered_at[-1]:.1f} s (last); "
            f"run {run.wall_s:.0f} s"
        )
    texts = Counter(
        _normalised(m.final) for m in run.mentions if m.state not in ("answered", "silent")
    )
    if texts:
        print("  what the others show (numbers as N):")
        for text, n in texts.most_common():
            print(f"    {n:3d}  {text}")
    if run.in_channel:
        print(f"  bot messages in the channel itself (not in a thread): {run.in_channel}")
    tokens = f"{run.tokens_per_request:.0f}" if run.tokens_per_request else "unknown"
    for note in (
        f"DEFAULT_MODEL={MODEL}, built-in limits, MAX_OUTPUT_TOKENS and QUOTA_* defaults",
        f"fake model: 0.2 s to first token, {reply_words} filler words at 8 chars / 10 ms; "
        f"{tokens} tokens per request (prompt + completion, server-reported mean)",
        f"bounded at {seconds:.0f} s of real time; answered = the full answer shown",
    ):
        print(f"- {note}")


async def run_quota(workdir: Path, *, seconds: float, reply_words: int) -> QuotaRun:
    run = await quota_scenario(workdir, seconds=seconds, reply_words=reply_words)
    print_quota_run(run, seconds=seconds, reply_words=reply_words)
    if states_silent := sum(m.state == "silent" for m in run.mentions):
        print(f"  ({states_silent} silent; the bot's log ends:)\n{run.log_tail}", file=sys.stderr)
    return run
