"""EditingSink over RecordingSurface with a FakeClock: timing, pacing, splitting, errors."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from bot.errors import BotError
from bot.ports import ReplySink
from bot.streaming import EditingSink, EditPacer, split_for_limit
from bot.types import SurfaceLimits, TurnStatus
from tests.fakes.clock import FakeClock, settle
from tests.fakes.surface import RecordingSurface, SurfaceOp

pytestmark = pytest.mark.usefixtures("no_leaked_flushers")

DISCORD = SurfaceLimits(
    max_chars=2000, min_edit_interval_s=1.0, budget_key="chan", budget_per_s=1.0, budget_burst=5
)
UNPACED = SurfaceLimits(max_chars=2000, min_edit_interval_s=1.0)
SMALL = SurfaceLimits(max_chars=100, min_edit_interval_s=1.0)
DONE = TurnStatus.COMPLETE
PROSE = " ".join(
    f"Sentence number {i} says something about the weather and the sea." for i in range(12)
)


def make(
    limits: SurfaceLimits = DISCORD,
    *,
    clock: FakeClock | None = None,
    pacer: EditPacer | None = None,
    journal: list[SurfaceOp] | None = None,
    name: str = "m",
) -> tuple[EditingSink, RecordingSurface, FakeClock]:
    clock = clock or FakeClock(start=0.0)
    surface = RecordingSurface(limits, clock=clock, journal=journal, name=name)
    sink = EditingSink(surface, pacer=pacer or EditPacer(clock=clock), clock=clock)
    return sink, surface, clock


async def stream(sink: EditingSink, clock: FakeClock, text: str, *, chunk: int = 5) -> None:
    """Feed ``text`` in growing prefixes, one every 50 ms, checking update never waits."""
    for end in range(chunk, len(text) + chunk, chunk):
        before = clock.now()
        await sink.update(text[:end])
        assert clock.now() == before
        await clock.sleep(0.05)


def op_times(surface: RecordingSurface) -> list[float]:
    return [op.t for op in surface.ops if op.op in ("post", "edit")]


async def test_is_a_reply_sink() -> None:
    sink, _, _ = make()
    assert isinstance(sink, ReplySink)


async def test_first_text_is_posted_at_once_and_typing_ends_there() -> None:
    sink, surface, clock = make()
    await sink.start()
    await settle()
    assert surface.typing_active
    await sink.update("Hel")
    await settle()
    assert surface.calls("post") == [SurfaceOp(0.0, "post", "m-1", "Hel")]
    assert not surface.typing_active
    await clock.run(sink.finish("Hello", DONE))
    assert surface.texts() == ["Hello"]
    assert [op.op for op in surface.ops] == ["typing_enter", "post", "typing_exit", "edit"]
    assert sink.message_ids == ("m-1",) and (sink.posts, sink.edits) == (1, 1)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_edits_at_most_once_per_interval_while_tokens_stream_fast() -> None:
    sink, surface, clock = make(UNPACED)

    async def reply() -> None:
        await sink.start()
        await stream(sink, clock, PROSE[:600])
        await sink.finish(PROSE[:600], DONE)

    await clock.run(reply())
    times = op_times(surface)
    assert times[0] == 0.0
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times))
    assert len(surface.calls("edit")) <= 7  # 6 s of streaming, one edit per second
    assert surface.texts() == [PROSE[:600]] and surface.violations == []
    edits = [op.text for op in surface.calls("edit")]
    assert all(a != b for a, b in itertools.pairwise(edits))  # each edit new text


async def test_unchanged_text_is_never_sent_again() -> None:
    sink, surface, clock = make()

    async def reply() -> None:
        await sink.start()
        for _ in range(10):
            await sink.update("same")
            await clock.sleep(0.5)
        await sink.finish("same", DONE)

    await clock.run(reply())
    assert [op.op for op in surface.ops if op.ok] == ["typing_enter", "post", "typing_exit"]


async def test_finish_alone_posts_the_whole_answer_split() -> None:
    sink, surface, clock = make(SMALL)
    await sink.start()
    await clock.run(sink.finish(PROSE[:350], DONE))
    assert surface.texts() == split_for_limit(PROSE[:350], 100)
    assert len(surface.texts()) >= 4 and surface.calls("edit") == []


# ----- status lines -----


async def test_status_before_text_is_the_message_and_the_next_update_clears_it() -> None:
    sink, surface, clock = make()
    await sink.start()
    await sink.status("retrying in 2 s…")
    await settle()
    assert surface.texts() == ["⏳ retrying in 2 s…"]
    await sink.update("Hello")
    await clock.run(sink.finish("Hello there", DONE))
    assert surface.texts() == ["Hello there"]
    # The first text replaces the status at once, and the final text needs no interval.
    assert [op.t for op in surface.calls("edit")] == [0.0] * len(surface.calls("edit"))


async def test_status_after_text_is_appended_until_the_next_update() -> None:
    sink, surface, clock = make()
    await sink.start()
    await sink.update("Hello")
    await settle()
    await sink.status("waiting for capacity, about 12 s")
    await clock.advance(1.0)
    assert surface.texts() == ["Hello\n\n⏳ waiting for capacity, about 12 s"]
    await sink.update("Hello world")
    await clock.advance(1.0)
    assert surface.texts() == ["Hello world"]
    await clock.run(sink.finish("Hello world", DONE))
    assert len(surface.calls("edit")) == 2


async def test_status_below_an_open_code_fence_closes_it_first() -> None:
    sink, surface, clock = make()
    await sink.update("```py\nx = 1")
    await sink.status("retrying in 1 s…")
    await clock.advance(1.0)
    assert surface.texts() == ["```py\nx = 1\n```\n\n⏳ retrying in 1 s…"]
    await clock.run(sink.finish("```py\nx = 1\n```", DONE))
    assert surface.texts() == ["```py\nx = 1\n```"]


# ----- splitting while streaming -----


def assert_frozen(surface: RecordingSurface) -> None:
    """Once message k+1 exists, message k is never touched again."""
    ops = [op for op in surface.ops if op.op in ("post", "edit") and op.ok]
    for index, message_id in enumerate(surface.messages):
        later = [o for o in ops if o.op == "post" and o.message_id == f"m-{index + 2}"]
        if later:
            posted_next = ops.index(later[0])
            assert all(o.message_id != message_id for o in ops[posted_next:])


@pytest.mark.parametrize("limit", [50, 100])
async def test_streamed_prose_freezes_earlier_messages_at_their_split_pieces(limit: int) -> None:
    limits = SurfaceLimits(max_chars=limit, min_edit_interval_s=1.0)
    sink, surface, clock = make(limits)

    async def reply() -> None:
        await sink.start()
        await stream(sink, clock, PROSE, chunk=7)
        await sink.finish(PROSE, DONE)

    await clock.run(reply())
    assert surface.texts() == split_for_limit(PROSE, limit)
    assert len(surface.texts()) > 5 and surface.violations == []
    assert_frozen(surface)


async def test_streamed_code_is_closed_and_reopened_with_its_language() -> None:
    code = "Code:\n\n```python\n" + "".join(
        f"def f{i}(x):\n    return x * {i}\n\n" for i in range(15)
    )
    text = code.rstrip() + "\n```\nDone."
    sink, surface, clock = make(SMALL)

    async def reply() -> None:
        await sink.start()
        await stream(sink, clock, text, chunk=11)
        await sink.finish(text, DONE)

    await clock.run(reply())
    pieces = surface.texts()
    assert pieces == split_for_limit(text, 100)
    assert all(p.startswith("```python\n") for p in pieces[1:])
    assert all(p.count("```") % 2 == 0 for p in pieces)
    assert surface.violations == []
    assert_frozen(surface)


async def test_text_that_shrinks_leaves_a_placeholder() -> None:
    sink, surface, clock = make(SMALL)
    await sink.update(PROSE[:150])
    await clock.advance(3.0)
    assert len(surface.texts()) == 2
    await clock.run(sink.finish("Short after all.", DONE))
    assert surface.texts() == ["Short after all.", "…"]


# ----- the shared budget -----


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window - 1e-6) for t in times)


async def test_update_never_waits_and_finish_waits_for_budget() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    for _ in range(5):  # someone else spent the channel's burst
        await pacer.acquire("chan", 1.0, 5)
    sink, surface, _ = make(clock=clock, pacer=pacer)
    await sink.start()
    await sink.update("Hi")
    await settle()
    assert surface.calls("post") == [] and clock.now() == 0.0
    await clock.advance(5.0)
    assert surface.texts() == ["Hi"]
    for _ in range(4):  # the post took one token; the other four go elsewhere
        await pacer.acquire("chan", 1.0, 5)
    await clock.run(sink.finish("Hi, all done", DONE))
    assert surface.texts() == ["Hi, all done"]
    assert surface.calls("edit")[0].t == pytest.approx(10.0)


async def test_fifty_replies_share_one_channel_budget_fairly() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    journal: list[SurfaceOp] = []
    replies = [make(clock=clock, pacer=pacer, journal=journal, name=f"r{i}") for i in range(50)]
    finish_waits: list[float] = []

    async def reply(index: int, sink: EditingSink) -> None:
        await clock.sleep(index * 0.2)
        await sink.start()
        words = [f"w{index}.{k}" for k in range(120)]
        for k in range(1, len(words) + 1):  # one word per 0.5 s: a minute of streaming
            await sink.update(" ".join(words[:k]))
            await clock.sleep(0.5)
        called = clock.now()
        await sink.finish(" ".join(words) + " (done)", DONE)
        finish_waits.append(clock.now() - called)

    replying = asyncio.gather(*(reply(i, sink) for i, (sink, _, _) in enumerate(replies)))
    await clock.run(replying)
    times = [op.t for op in journal if op.op in ("post", "edit")]
    assert max_in_window(times, 5.0) == 5  # never over the budget, and it was used
    assert len(times) >= 100  # every reply got a post and at least one edit
    for index, (sink, surface, _) in enumerate(replies):
        final = " ".join(f"w{index}.{k}" for k in range(120)) + " (done)"
        assert surface.texts() == [final] and surface.violations == []
        assert sink.posts == 1 and sink.edits >= 1
    # Every first post went out before any interim update (first text is urgent), and
    # interim updates took turns: no reply got a second one before each had its first.
    firsts = sorted(op_times(surface)[0] for _, surface, _ in replies)
    interim = [
        (op.t, op.message_id) for op in journal if op.op == "edit" and "(done)" not in op.text
    ]
    assert all(t >= firsts[-1] for t, _ in interim)
    seen: list[str] = []
    for _, message_id in interim:
        if message_id in seen:
            assert len(set(seen)) == 50
            break
        seen.append(message_id)
    # The final writes go ahead of the interim updates: 50 finals at the budget's pace
    # (1 / s, one slot per window left to interim updates), never behind a queue of them.
    assert len(finish_waits) == 50 and max(finish_waits) <= 50 * 5 / 4 + 5.0


async def test_different_budget_keys_do_not_interfere() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    busy = [make(clock=clock, pacer=pacer, name=f"b{i}") for i in range(30)]
    for sink, _, _ in busy:
        await sink.start()
        await sink.update("busy channel")
    other_limits = SurfaceLimits(2000, 1.0, budget_key="other", budget_per_s=1.0, budget_burst=5)
    sink, surface, _ = make(other_limits, clock=clock, pacer=pacer, name="o")
    await sink.start()
    await sink.update("Hello")
    await settle()
    assert surface.texts() == ["Hello"]
    await clock.run(sink.finish("Hello, other channel", DONE))
    assert surface.texts() == ["Hello, other channel"] and clock.now() == 0.0  # no interval
    await clock.run(asyncio.gather(*(s.finish("busy channel", DONE) for s, _, _ in busy)))


# ----- failures -----


async def test_fail_before_any_post_posts_the_error() -> None:
    sink, surface, clock = make()
    await sink.start()
    await clock.run(sink.fail("The model is overloaded; try again in a minute."))
    assert surface.texts() == ["⚠️ The model is overloaded; try again in a minute."]
    assert not surface.typing_active


async def test_fail_after_text_appends_the_note() -> None:
    sink, surface, clock = make()
    await sink.start()
    await sink.update("Partial answer")
    await clock.run(sink.fail("The connection dropped."))
    assert surface.texts() == ["Partial answer\n\n⚠️ The connection dropped."]


async def test_fail_without_start_never_shows_typing() -> None:
    sink, surface, clock = make()
    await clock.run(sink.fail("Your message is empty."))
    assert [op.op for op in surface.ops] == ["post"]


async def test_empty_finish_after_a_status_replaces_it() -> None:
    sink, surface, clock = make()
    await sink.start()
    await sink.status("waiting for capacity, about 30 s")
    await settle()
    await clock.run(sink.finish("", TurnStatus.FAILED))
    assert surface.texts() == ["…"]


async def test_empty_finish_with_nothing_posted_stays_silent() -> None:
    sink, surface, clock = make()
    await sink.start()
    await clock.run(sink.finish("", TurnStatus.FAILED))
    assert surface.texts() == [] and not surface.typing_active


async def test_a_failed_edit_is_retried_once(caplog: pytest.LogCaptureFixture) -> None:
    sink, surface, clock = make()
    await sink.update("one")
    await settle()
    surface.fail_next("edit", RuntimeError("503"))
    with caplog.at_level(logging.INFO, logger="bot.streaming.editing_sink"):
        await clock.run(sink.finish("one two", DONE))
    assert surface.texts() == ["one two"]
    assert [op.ok for op in surface.calls("edit")] == [False, True]
    # Retried and shown in the end: no failure the user sees, so nothing above INFO.
    [retried] = [r for r in caplog.records if "retrying once" in r.getMessage()]
    assert retried.levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_edit_failing_twice_is_dropped_and_never_raised() -> None:
    sink, surface, clock = make()
    await sink.update("one")
    await settle()
    surface.fail_next("edit", RuntimeError("500"), times=2)
    await clock.run(sink.finish("one two", DONE))
    assert surface.texts() == ["one"] and sink.edits == 2


async def test_a_message_that_always_fails_is_left_alone() -> None:
    sink, surface, clock = make(UNPACED)
    await sink.update("x")
    await settle()
    surface.fail_next("edit", KeyError("unknown message"), times=1_000)

    async def more() -> None:
        await stream(sink, clock, "x" * 1000)  # 10 s of text
        await sink.finish("x" * 1000, DONE)

    await clock.run(more())
    assert sink.edits == 6  # two tries for each of three versions, then never again


async def test_a_failed_post_is_retried_once() -> None:
    sink, surface, clock = make()
    surface.fail_next("post", ConnectionError("reset"))
    await sink.start()
    await sink.update("Hello")
    await clock.run(sink.finish("Hello", DONE))
    assert surface.texts() == ["Hello"] and sink.posts == 2


async def test_first_post_failing_twice_fails_quietly(caplog: pytest.LogCaptureFixture) -> None:
    sink, surface, clock = make()
    surface.fail_next("post", PermissionError("missing access"), times=2)
    await sink.start()
    await sink.update("Hello")
    await settle()
    await sink.update("Hello again")  # ignored: the reply has given up
    await clock.run(sink.finish("Hello again", DONE))
    assert surface.texts() == [] and sink.posts == 2
    assert not surface.typing_active
    # One line above INFO for the failure the user sees (no answer): the last one.
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "failed twice" in loud[0].getMessage()


async def test_a_failure_the_surface_logged_itself_stays_at_info_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A surface raises a ``BotError`` for a failure it logged (with where it was)."""
    caplog.set_level(logging.INFO, logger="bot.streaming.editing_sink")
    sink, surface, clock = make()
    surface.fail_next("post", BotError(detail="403 missing access"), times=2)
    await sink.update("Hello")
    await clock.run(sink.finish("Hello", DONE))
    assert surface.texts() == [] and sink.posts == 2
    posting = [r for r in caplog.records if "posting reply message" in r.getMessage()]
    assert [r.levelno for r in posting] == [logging.INFO, logging.INFO]
    assert "403 missing access" in posting[-1].getMessage()


async def test_a_broken_typing_indicator_is_only_logged() -> None:
    sink, surface, clock = make()
    surface.fail_next("typing", RuntimeError("typing endpoint down"))
    await sink.start()
    await sink.update("Hi")
    await clock.run(sink.finish("Hi", DONE))
    assert surface.texts() == ["Hi"]
    assert [(op.op, op.ok) for op in surface.ops] == [("typing_enter", False), ("post", True)]


async def test_cancelling_finish_stops_the_flusher_and_typing() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    for _ in range(5):
        await pacer.acquire("chan", 1.0, 5)
    sink, surface, _ = make(clock=clock, pacer=pacer)
    await sink.start()
    await sink.update("Hi")
    finishing = asyncio.create_task(sink.finish("Hi", DONE))
    await settle()
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert not surface.typing_active and surface.texts() == []
    await sink.update("late")  # after close: ignored, nothing restarts
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_posts_skip_an_exhausted_edit_budget_when_the_platform_counts_them_apart() -> None:
    """Slack: chat.postMessage has its own limit, so a first post never waits for the
    workspace's chat.update budget, while edits still do."""
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    slack = SurfaceLimits(
        2000, 1.0, budget_key="ws", budget_per_s=0.5, budget_burst=1, posts_use_budget=False
    )
    await pacer.acquire("ws", 0.5, 1)  # another reply's edit: the next token is 2 s away
    sink, surface, _ = make(slack, clock=clock, pacer=pacer)
    await sink.start()
    await sink.update("Hello")
    await settle()
    assert surface.calls("post") == [SurfaceOp(0.0, "post", "m-1", "Hello")]
    await clock.run(sink.finish("Hello there", DONE))
    assert surface.texts() == ["Hello there"] and op_times(surface) == [0.0, 2.0]


# ----- issue 13: the final text at once, and ahead of other replies' interim updates -----


async def test_a_single_replys_final_write_happens_at_the_models_end_time() -> None:
    """The final text does not wait out the edit interval: the model ends 0.3 s after
    an update went out (inside the 1 s interval), and the final write is made then."""
    sink, surface, clock = make()
    await sink.start()
    await sink.update("Hello")  # posted at once, at 0.0
    await clock.advance(0.7)
    await sink.update("Hello there")  # an edit is due at 1.0 (the interval)
    await clock.advance(0.6)  # the edit went out at 1.0; the model goes on
    await sink.update("Hello there, how")
    await clock.advance(0.3)
    end = clock.now()  # 1.6: the model's last token, 0.6 s after the last edit
    await clock.run(sink.finish("Hello there, how are you?", DONE))
    final = surface.calls("edit")[-1]
    assert final.text == "Hello there, how are you?"
    assert final.t == pytest.approx(end)  # not 2.0, where the interval would put it
    assert clock.now() == pytest.approx(end)


async def test_a_final_write_goes_before_other_replies_interim_updates() -> None:
    """Nine replies keep one channel's budget (5 per 5 s) saturated with interim updates;
    the tenth reply's final write, asked for while they all wait, goes out first."""
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    journal: list[SurfaceOp] = []
    busy = [make(clock=clock, pacer=pacer, journal=journal, name=f"b{i}") for i in range(9)]
    sink, surface, _ = make(clock=clock, pacer=pacer, journal=journal, name="last")
    for other, _, _ in busy:
        await other.start()
        await other.update("busy 0")
    await sink.start()
    await sink.update("mine")
    await settle()
    for k in range(1, 40):  # the busy replies stream on: one new word per 0.25 s
        for other, _, _ in busy:
            await other.update(f"busy {k}")
        await clock.advance(0.25)
    waiting = len(pacer._budgets["chan"].waiters)  # the saturation itself
    assert waiting >= 8
    called = clock.now()
    finishing = asyncio.ensure_future(sink.finish("mine, all of it", DONE))
    for k in range(40, 80):
        for other, _, _ in busy:
            await other.update(f"busy {k}")
        await clock.advance(0.25)
        if finishing.done():
            break
    await finishing
    final_at = surface.calls("edit")[-1].t
    interim_after = [
        op for op in journal if op.op == "edit" and called <= op.t < final_at and op.text
    ]
    assert interim_after == []  # nothing of the others' went between the finish and it
    assert final_at - called <= 5.0  # at most the window's wait, not a queue of updates
    for other, _, _ in busy:
        await clock.run(other.finish("done", DONE))
