"""Answers are durable while they stream: the engine's ``ReplyRecord`` checkpoints, its
final save (retried once, else a visible note), and ``finalize_unfinished``.

The engine runs on a fake clock against a scripted model and an in-memory store that
counts (and can fail or hold) the writes of assistant messages.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.durable import RESTART_NOTE, finalize_unfinished, restart_text
from bot.engine import NOT_SAVED_NOTE, SHUTDOWN_NOTE, Engine
from bot.errors import StoreError
from bot.settings import Settings
from bot.store import InMemoryStore, SqliteStore
from bot.types import (
    ConversationKey,
    Incoming,
    Platform,
    ReplyRef,
    StoredMessage,
    TurnStatus,
    UserRef,
)
from tests.fakes.clock import FakeClock
from tests.fakes.completions import ScriptedCompletions
from tests.fakes.sink import RecordingSink

CHAT = Platform("chat")
KEY = ConversationKey(CHAT, space="s", channel="c", thread="t")
ALICE = UserRef(CHAT, "alice")
INTERVAL_S = 2.0
PIECE = "word "  # every delta adds 5 characters, unless a test says otherwise


class CountingStore(InMemoryStore):
    """Counts the writes of assistant messages: checkpoints (``STREAMING``) and final
    saves; ``fail_saves`` final saves fail, and with ``hold`` set, checkpoints wait
    for it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.checkpoints: list[str] = []  # the text of each
        self.saves = 0
        self.fail_saves = 0
        self.hold: asyncio.Event | None = None
        self._assistant: set[int] = set()

    async def add_message(self, key: ConversationKey, **kw: Any) -> int:
        if kw.get("role") != "assistant":
            return await super().add_message(key, **kw)
        await self._count(kw["content"], kw["status"])
        message_id = await super().add_message(key, **kw)
        self._assistant.add(message_id)
        return message_id

    async def update_message(self, message_id: int, **kw: Any) -> None:
        if message_id in self._assistant:
            await self._count(kw["content"], kw["status"])
        await super().update_message(message_id, **kw)

    async def checkpoint_reply(
        self, message_id: int, text: str, tokens: int, ref: ReplyRef
    ) -> None:
        await self._count(text, TurnStatus.STREAMING)
        await super().checkpoint_reply(message_id, text, tokens, ref)

    async def _count(self, content: str, status: TurnStatus) -> None:
        if status is TurnStatus.STREAMING:
            if self.hold is not None:
                await self.hold.wait()
            self.checkpoints.append(content)
            return
        self.saves += 1
        if self.fail_saves > 0:
            self.fail_saves -= 1
            raise StoreError(detail="disk I/O error")


@dataclass
class PostingSink(RecordingSink):
    """A sink whose reply gets a new platform message every ``per_message`` characters."""

    per_message: int = 2000
    posted: list[str] = field(default_factory=list)

    async def update(self, text_so_far: str) -> None:
        await super().update(text_so_far)
        while len(self.posted) * self.per_message < len(text_so_far):
            self.posted.append(f"msg-{len(self.posted) + 1}")
            self.reply_ref = ReplyRef("the-thread", tuple(self.posted))


@dataclass
class Rig:
    clock: FakeClock
    store: CountingStore
    script: ScriptedCompletions
    engine: Engine

    async def ask(self, sink: RecordingSink, text: str = "tell me") -> None:
        await self.engine.handle(Incoming(KEY, ALICE, text, "q1"), sink)

    async def assistant(self) -> list[StoredMessage]:
        window = await self.store.window(KEY, token_budget=10**9)
        return [m for m in window if m.role == "assistant"]


def rig(pieces: int = 2000, *, seconds: float = 10.0) -> Rig:
    clock = FakeClock(instant_sleep=True)
    store = CountingStore(clock)
    script = ScriptedCompletions(clock, pieces, step_s=seconds / pieces, piece=PIECE)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_model="m",
        quota_enabled=False,
        reply_checkpoint_s=INTERVAL_S,
    )
    engine = Engine(settings=settings, store=store, completions=script, clock=clock)
    return Rig(clock, store, script, engine)


def full_answer(pieces: int) -> str:
    return (PIECE * pieces).strip()


# ----- checkpoints -----


@pytest.mark.parametrize("pieces", [200, 2_000, 20_000])
async def test_checkpoint_writes_are_bounded_by_time_and_messages_not_deltas(
    pieces: int,
) -> None:
    r = rig(pieces, seconds=10.0)
    r.script.piece = "w" * (40_000 // pieces - 1) + " "  # the same 40,000 characters…
    sink = PostingSink(per_message=10_000)  # …in four messages

    await r.ask(sink)

    # One write to create the row, one per message posted after that, and one per
    # interval for the text: at most 1 + 3 + 10 s / 2 s, whether 200 or 20,000 deltas.
    assert 5 <= len(r.store.checkpoints) <= 1 + 3 + 5, [len(c) for c in r.store.checkpoints]
    assert r.store.saves == 1
    answer = (r.script.piece * pieces).strip()
    assert all(answer.startswith(c.strip()) for c in r.store.checkpoints)
    assert await r.assistant() == [StoredMessage("assistant", answer, pieces, TurnStatus.COMPLETE)]
    assert await r.store.streaming_replies([CHAT]) == []


async def test_a_reply_is_stored_once_its_first_message_is_posted_or_an_interval_passed() -> None:
    r = rig(2000, seconds=10.0)
    sink = RecordingSink()  # its messages never get posted (a platform refusing them)

    await r.ask(sink)

    # Nothing to find on the platform: the row waits for the interval, then follows it.
    first, *_ = r.store.checkpoints
    assert len(first) >= 2.0 / r.script.step_s * len(PIECE) - len(PIECE)
    assert len(r.store.checkpoints) <= 10.0 / INTERVAL_S
    assert [m.status for m in await r.assistant()] == [TurnStatus.COMPLETE]


async def test_while_it_streams_the_reply_is_stored_with_its_text_and_messages() -> None:
    r = rig(2000)
    r.script.hold_after = 1000  # 5,000 characters in: three messages posted
    sink = PostingSink()
    turn = asyncio.create_task(r.ask(sink))
    await r.script.held.wait()
    await asyncio.sleep(0)

    [reply] = await r.store.streaming_replies([CHAT])
    assert reply.key == KEY
    assert reply.ref == ReplyRef("the-thread", ("msg-1", "msg-2", "msg-3"))
    assert reply.content and full_answer(2000).startswith(reply.content.strip())
    # No more than one interval of text behind what was shown.
    assert len(reply.content) >= 5000 - INTERVAL_S / r.script.step_s * len(PIECE)
    assert await r.assistant() == [
        StoredMessage("assistant", reply.content, reply.tokens, TurnStatus.STREAMING)
    ]

    r.script.go_on.set()
    await turn
    assert await r.store.streaming_replies([CHAT]) == []
    assert [m.status for m in await r.assistant()] == [TurnStatus.COMPLETE]


async def test_the_stream_never_waits_for_a_slow_database() -> None:
    r = rig(500)
    r.store.hold = asyncio.Event()  # the first checkpoint hangs (a write lock held)
    sink = PostingSink()
    turn = asyncio.create_task(r.ask(sink))

    for _ in range(5000):
        if len(sink.ops("update")) == 500:
            break
        await asyncio.sleep(0)
    assert len(sink.ops("update")) == 500  # every token shown while the write hangs
    assert not turn.done()  # the final save waits for the checkpoint in flight

    r.store.hold.set()
    await turn
    assert sink.status_ is TurnStatus.COMPLETE
    assert len(r.store.checkpoints) == 1  # the one that hung; none queued behind it
    assert [m.status for m in await r.assistant()] == [TurnStatus.COMPLETE]


async def test_a_turn_killed_mid_stream_leaves_its_reply_streaming_for_the_next_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A crash runs no shutdown handling: only the checkpoints are left.
    async def crash(*args: object) -> None:
        return None

    monkeypatch.setattr(Engine, "_cut_short", crash)
    r = rig(2000)
    r.script.hold_after = 800
    turn = asyncio.create_task(r.ask(PostingSink()))
    await r.script.held.wait()

    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn

    [reply] = await r.store.streaming_replies([CHAT])
    assert reply.content and reply.ref.message_ids == ("msg-1", "msg-2")


async def test_a_turn_cancelled_at_shutdown_ends_visibly_and_is_left_for_the_next_start() -> None:
    r = rig(2000)
    r.script.hold_after = 800
    sink = PostingSink()
    turn = asyncio.create_task(r.ask(sink))
    await r.script.held.wait()

    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn

    assert sink.status_ is TurnStatus.INTERRUPTED
    assert (sink.final or "").endswith(SHUTDOWN_NOTE)
    # Its whole text is on disk, still STREAMING: should the note above not reach the
    # platform, the next start ends the message with the restart note all the same.
    [reply] = await r.store.streaming_replies([CHAT])
    assert (sink.final or "").startswith(reply.content)
    assert reply.ref.message_ids == ("msg-1", "msg-2")


async def test_a_stream_cut_by_the_api_is_stored_interrupted_with_its_messages() -> None:
    r = rig(2000)
    r.script.fail_after = 600
    sink = PostingSink()

    await r.ask(sink)

    assert sink.status_ is TurnStatus.INTERRUPTED
    [reply] = await r.assistant()
    assert (reply.content, reply.status) == (full_answer(600), TurnStatus.INTERRUPTED)
    assert await r.store.streaming_replies([CHAT]) == []


async def test_a_turn_failing_unexpectedly_mid_stream_drops_its_reply_from_history() -> None:
    r = rig(2000)
    r.script.fail_after, r.script.error = 600, RuntimeError("bug")

    await r.ask(PostingSink())

    assert await r.assistant() == []
    assert await r.store.streaming_replies([CHAT]) == []


# ----- the final save -----


async def test_a_final_save_that_fails_once_is_retried_and_nothing_is_said() -> None:
    r = rig(200)
    r.store.fail_saves = 1
    sink = PostingSink()

    await r.ask(sink)

    assert r.store.saves == 2
    assert sink.final == full_answer(200)
    assert [m.status for m in await r.assistant()] == [TurnStatus.COMPLETE]


async def test_a_final_save_that_fails_twice_is_said_on_the_reply() -> None:
    r = rig(200)
    r.store.fail_saves = 2
    sink = PostingSink()

    await r.ask(sink)

    assert r.store.saves == 2  # retried once, not more
    assert sink.status_ is TurnStatus.COMPLETE
    assert sink.final == f"{full_answer(200)}\n\n{NOT_SAVED_NOTE}"
    assert "not" in NOT_SAVED_NOTE and "saved" in NOT_SAVED_NOTE


async def test_an_interrupted_reply_that_cannot_be_saved_says_so_too() -> None:
    r = rig(200)
    r.script.fail_after = 100
    r.store.fail_saves = 2
    sink = PostingSink()

    await r.ask(sink)

    assert sink.status_ is TurnStatus.INTERRUPTED
    assert sink.final is not None and sink.final.startswith(full_answer(100))
    assert sink.final.endswith(NOT_SAVED_NOTE)


# ----- finishing what a dead process left streaming -----


@dataclass
class Finalizer:
    calls: list[tuple[ReplyRef, str]] = field(default_factory=list)
    error: Exception | None = None

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        self.calls.append((reply, text))
        if self.error is not None:
            raise self.error


async def _streaming(store: InMemoryStore, key: ConversationKey, text: str, ref: ReplyRef) -> int:
    await store.add_message(key, role="user", content="q", tokens=1)
    return await store.add_message(
        key, role="assistant", content=text, tokens=7, status=TurnStatus.STREAMING, reply_ref=ref
    )


async def test_finalize_edits_each_reply_through_its_platform_then_stores_it() -> None:
    store = InMemoryStore()
    here, there = Platform("here"), Platform("there")
    one = ConversationKey(here, channel="1")
    two = ConversationKey(here, channel="2")
    three = ConversationKey(there, channel="3")
    a = await _streaming(store, one, "Some words ", ReplyRef("1", ("m1",)))
    b = await _streaming(store, two, "Code:\n```py\nx = 1", ReplyRef("2", ("m2", "m3")))
    c = await _streaming(store, three, "", ReplyRef("3", ("m4",)))
    unposted = await _streaming(store, ConversationKey(here, channel="4"), "x", ReplyRef())
    found = await store.streaming_replies([here, there])
    ok, broken = Finalizer(), Finalizer(error=RuntimeError("platform down"))

    await finalize_unfinished(store, found, {"here": ok, "there": broken})

    assert ok.calls == [
        (ReplyRef("1", ("m1",)), f"Some words\n\n{RESTART_NOTE}"),
        (ReplyRef("2", ("m2", "m3")), f"Code:\n```py\nx = 1\n```\n\n{RESTART_NOTE}"),
    ]
    assert broken.calls == [(ReplyRef("3", ("m4",)), RESTART_NOTE)]
    assert await store.streaming_replies([here, there]) == []  # stored even when broken
    windows = {k: await store.window(k, token_budget=100) for k in (one, two, three)}
    assert windows[one][-1] == StoredMessage("assistant", "Some words", 7, TurnStatus.INTERRUPTED)
    assert windows[two][-1].content == "Code:\n```py\nx = 1"
    assert [m.role for m in windows[three]] == ["user"]  # nothing was said: no history
    assert {a, b, c, unposted} == {r.message_id for r in found}


def test_the_restart_note_ends_the_text_shown() -> None:
    assert restart_text("  partial answer \n") == f"partial answer\n\n{RESTART_NOTE}"
    assert restart_text("") == RESTART_NOTE
    assert "interrupted by a restart" in RESTART_NOTE.lower()
    assert "ask again" in RESTART_NOTE


async def test_a_full_disk_after_streaming_is_said_on_the_reply(tmp_path: Path) -> None:
    clock = FakeClock(instant_sleep=True)
    store = SqliteStore(tmp_path / "bot.db", clock=clock)
    await store.open()
    script = ScriptedCompletions(clock, 4000, step_s=0.001)  # 20,000 characters
    script.hold_after = 10
    settings = Settings(_env_file=None, default_model="m", quota_enabled=False)  # type: ignore[call-arg]
    engine = Engine(settings=settings, store=store, completions=script, clock=clock)
    sink = PostingSink()
    try:
        turn = asyncio.create_task(engine.handle(Incoming(KEY, ALICE, "tell me", "q1"), sink))
        await script.held.wait()
        for _ in range(100):  # until the reply's row is there
            if await store.streaming_replies([CHAT]):
                break
            await asyncio.sleep(0.01)
        assert store._conn is not None  # white-box: the disk fills up, SQLITE_FULL from now on
        async with store._conn.execute("PRAGMA page_count") as cursor:
            (pages,) = await cursor.fetchone()
        await store._conn.execute(f"PRAGMA max_page_count = {pages}")
        script.go_on.set()
        await turn

        assert sink.status_ is TurnStatus.COMPLETE
        assert sink.final == f"{full_answer(4000)}\n\n{NOT_SAVED_NOTE}"
        # What is on disk is the early checkpoint, still streaming: the next start ends it.
        [left] = await store.streaming_replies([CHAT])
        assert full_answer(4000).startswith(left.content.strip()) and left.content
    finally:
        await store.aclose()


@dataclass
class OwningFinalizer(Finalizer):
    """A finalizer of a process that hears only some conversations (a shard's)."""

    heard: set[str] = field(default_factory=set)

    def hears(self, key: ConversationKey) -> bool:
        return key.channel in self.heard


async def test_finalize_leaves_replies_another_process_hears_streaming() -> None:
    store = InMemoryStore()
    here = Platform("here")
    mine, theirs = ConversationKey(here, channel="1"), ConversationKey(here, channel="2")
    await _streaming(store, mine, "mine", ReplyRef("1", ("m1",)))
    left = await _streaming(store, theirs, "theirs", ReplyRef("2", ("m2",)))
    finalizer = OwningFinalizer(heard={"1"})

    await finalize_unfinished(store, await store.streaming_replies([here]), {"here": finalizer})

    assert finalizer.calls == [(ReplyRef("1", ("m1",)), f"mine\n\n{RESTART_NOTE}")]
    assert [r.message_id for r in await store.streaming_replies([here])] == [left]
