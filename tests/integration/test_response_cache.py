"""The response cache (issue 17): Engine + SqliteStore + the real httpx client against
the fake Groq server on 127.0.0.1, which counts the requests it receives.

The clock is a ``FakeClock`` with instant sleeps: a replay's pauses and the TTL cost no
real time, and the tests move the clock themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.app import Runtime, open_runtime
from bot.errors import StoreError
from bot.response_cache import CACHED_NOTE
from bot.settings import Settings
from bot.types import ConversationKey, Incoming, Platform, TurnStatus, UsageSummary, UserRef
from tests.fakes.clock import FakeClock
from tests.fakes.groq_server import FakeGroq
from tests.fakes.sink import RecordingSink

ALICE = UserRef(Platform("terminal"), "alice", "Alice")
BOB = UserRef(Platform("terminal"), "bob", "Bob")
CAROL = UserRef(Platform("terminal"), "carol", "Carol")
DM = {user.user_id: ConversationKey(Platform("terminal"), dm_user=user.user_id) for user in
      (ALICE, BOB, CAROL)}  # fmt: skip
QUESTION = "What is the capital of France?"


@asynccontextmanager
async def runtime(settings: Settings, clock: FakeClock | None = None) -> AsyncIterator[Runtime]:
    async with open_runtime(settings, clock=clock or FakeClock(instant_sleep=True)) as rt:
        yield rt


async def ask(rt: Runtime, user: UserRef, text: str = QUESTION) -> RecordingSink:
    """``text`` as the first message of ``user``'s DM, whose request is then the same
    for everyone (system prompt + the question)."""
    sink = RecordingSink()
    key = DM[user.user_id]
    await asyncio.wait_for(rt.engine.handle(Incoming(key, user, text, "m"), sink), 15)
    assert sink.status_ is TurnStatus.COMPLETE, sink.events
    return sink


def from_cache(sink: RecordingSink) -> bool:
    """Whether the reply carries the cached-answer note."""
    return CACHED_NOTE in (sink.final or "")


def deterministic(settings_factory: Callable[..., Settings], **more: Any) -> Settings:
    return settings_factory(temperature=0.0, **more)


async def test_an_identical_deterministic_request_is_replayed_without_reaching_the_model(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(deterministic(settings_factory, metrics_port=0)) as rt:
        first = await ask(rt, ALICE)
        assert len(fake_groq.chat_requests) == 1
        assert not from_cache(first)

        second = await ask(rt, BOB)

        assert len(fake_groq.chat_requests) == 1, "the hit must not reach the model"
        answer = (first.final or "").strip()
        assert second.final == f"{answer}\n\n{CACHED_NOTE}"
        updates = second.ops("update")
        assert len(updates) >= 3, "a hit streams in several updates"
        assert all(b.startswith(a) for a, b in itertools.pairwise(updates))
        assert updates[-1] == answer
        # No quota: bob's windows are untouched; the ledger has his row, marked, free.
        assert rt.quota is not None
        for model in rt.quota.snapshot_for(BOB).models:
            assert all(dim.used == 0 for dim in model.dimensions), model
        assert await rt.store.usage_since(BOB, 0) == UsageSummary(1, 0, 0, cached=1)
        # Bob's history holds the turn as a normal answer does, with its real weight.
        history = await rt.store.window(DM["bob"], token_budget=10**6)
        assert [(m.role, m.content) for m in history] == [("user", QUESTION), ("assistant", answer)]
        alice = await rt.store.window(DM["alice"], token_budget=10**6)
        assert history[1].tokens == alice[1].tokens > 0
        # Bob's /usage says so; the admins' report and the metrics count the hit.
        usage = await rt.engine.usage(BOB)
        assert "1 answer(s) came from the response cache" in usage.text
        assert rt.metrics is not None
        text = rt.metrics.exposition().decode()
        assert 'groqbot_response_cache_total{event="hit"} 1.0' in text
        assert 'groqbot_response_cache_total{event="miss"} 1.0' in text
        assert 'groqbot_response_cache_total{event="store"} 1.0' in text


async def test_the_admins_usage_reports_the_hit_rate(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(deterministic(settings_factory, admin_ids=["carol"])) as rt:
        await ask(rt, ALICE)
        await ask(rt, BOB)
        report = (await rt.engine.usage(CAROL)).text
        plain = (await rt.engine.usage(BOB)).text
    assert "Response cache since start: 1 hit(s) of 2 lookup(s) (50%)" in report
    assert "1 answer(s) stored; 1 entries now." in report
    assert "Response cache since start" not in plain


@pytest.mark.parametrize(
    "change",
    [
        {"top_p": 0.5},
        {"max_output_tokens": 512},
        {"system_prompt": "You are terse."},
        {"reasoning_effort": "low"},
        {"frequency_penalty": 0.5},
    ],
)
async def test_any_changed_parameter_misses(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings], change: dict[str, Any]
) -> None:
    async with runtime(deterministic(settings_factory)) as rt:
        await ask(rt, ALICE)
    async with runtime(deterministic(settings_factory, **change)) as rt:
        sink = await ask(rt, BOB)
    assert len(fake_groq.chat_requests) == 2
    assert not from_cache(sink)


async def test_another_question_or_model_misses(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(deterministic(settings_factory)) as rt:
        await ask(rt, ALICE)
        await ask(rt, BOB, QUESTION.lower())  # the exact messages, case and all
        await rt.engine.set_model(CAROL, "llama-3.1-8b-instant")
        await ask(rt, CAROL)
    assert len(fake_groq.chat_requests) == 3
    assert fake_groq.chat_requests[-1]["body"]["model"] == "llama-3.1-8b-instant"


async def test_a_temperature_above_zero_is_neither_served_nor_stored_unless_always(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(settings_factory(temperature=0.7)) as rt:
        await ask(rt, ALICE)
        await ask(rt, BOB)
        assert await rt.store.cache_size() == 0
    async with runtime(settings_factory()) as rt:  # the API's default temperature
        await ask(rt, CAROL)
        assert await rt.store.cache_size() == 0
    assert len(fake_groq.chat_requests) == 3
    async with runtime(settings_factory(temperature=0.7, cache_mode="always")) as rt:
        await ask(rt, ALICE, "again")
        sink = await ask(rt, BOB, "again")
    assert len(fake_groq.chat_requests) == 4
    assert from_cache(sink)


async def test_cache_mode_off_never_looks(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with runtime(deterministic(settings_factory, cache_mode="off")) as rt:
        await ask(rt, ALICE)
        await ask(rt, BOB)
        assert await rt.store.cache_size() == 0
    assert len(fake_groq.chat_requests) == 2


async def test_an_entry_expires_after_cache_ttl_s(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    clock = FakeClock(instant_sleep=True)
    async with runtime(deterministic(settings_factory, cache_ttl_s=600), clock) as rt:
        await ask(rt, ALICE)
        await clock.advance(500)
        assert from_cache(await ask(rt, BOB))
        await clock.advance(101)
        assert not from_cache(await ask(rt, CAROL))
    assert len(fake_groq.chat_requests) == 2


async def test_the_oldest_entries_go_beyond_cache_max_entries(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    clock = FakeClock(instant_sleep=True)
    async with runtime(deterministic(settings_factory, cache_max_entries=2), clock) as rt:
        for question in ("one?", "two?", "three?"):
            await ask(rt, ALICE, question)
            await rt.engine.reset(DM["alice"], ALICE)  # each a first turn
            await clock.advance(1)
        assert await rt.store.cache_size() == 2
        assert from_cache(await ask(rt, BOB, "three?"))
        assert not from_cache(await ask(rt, CAROL, "one?"))
    assert len(fake_groq.chat_requests) == 4


async def test_entries_survive_a_restart_and_reset_but_not_cache_clear(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    settings = deterministic(settings_factory, admin_ids=["carol"])
    async with runtime(settings) as rt:
        await ask(rt, ALICE)
        await rt.engine.reset(DM["alice"], ALICE)  # /reset leaves the cache alone
    async with runtime(settings) as rt:  # the same database file, reopened
        assert from_cache(await ask(rt, ALICE))
        assert len(fake_groq.chat_requests) == 1
        refused = await rt.engine.run_command("cache", "clear", user=BOB, key=None)
        assert "Only the bot's admins" in refused.text
        assert await rt.store.cache_size() == 1
        cleared = await rt.engine.run_command("cache", "clear", user=CAROL, key=None)
        assert cleared.text == "Response cache cleared: 1 entry removed." and cleared.private
        assert not from_cache(await ask(rt, BOB))
    assert len(fake_groq.chat_requests) == 2


async def test_a_failing_cache_never_costs_the_answer(
    fake_groq: FakeGroq,
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise StoreError(detail="bot.db: SQLITE_IOERR: disk I/O error")

    async with runtime(deterministic(settings_factory, admin_ids=["carol"])) as rt:
        await ask(rt, ALICE)  # stored while the cache works
        monkeypatch.setattr(rt.store, "cache_get", broken)
        monkeypatch.setattr(rt.store, "cache_put", broken)
        with caplog.at_level(logging.WARNING, logger="bot.engine"):
            sink = await ask(rt, BOB)
        report = (await rt.engine.usage(CAROL)).text
    assert "turns=1" in (sink.final or "") and not from_cache(sink)
    assert len(fake_groq.chat_requests) == 2, "the model answered instead"
    lines = [r.getMessage() for r in caplog.records if "response cache" in r.getMessage()]
    assert lines == [
        "response cache read failed; asking the model: bot.db: SQLITE_IOERR: disk I/O error",
        "response cache write failed; answer not cached: bot.db: SQLITE_IOERR: disk I/O error",
    ]
    assert "2 failed" in report
