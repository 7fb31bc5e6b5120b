"""EditingSink over an AppendingSurface (FakeClock): streamed messages opened, appended
to and closed; cuts that keep what was sent; every switch to posting and editing."""

from __future__ import annotations

import itertools

import pytest

from bot.ports import AppendableSurface
from bot.streaming import EditingSink, EditPacer, split_for_limit
from bot.streaming.split import fence_closer
from bot.types import SurfaceLimits, TurnStatus
from tests.fakes.clock import FakeClock, settle
from tests.fakes.surface import AppendingSurface, RecordingSurface

pytestmark = pytest.mark.usefixtures("no_leaked_flushers")

# Edited messages hold 100 characters, streamed ones 300 (Slack: 3,500 and 11,000).
EDITED = SurfaceLimits(100, 1.0, budget_key="update", budget_per_s=1.0, budget_burst=5)
STREAMED = SurfaceLimits(
    300, 1.0, budget_key="append", budget_per_s=1.0, budget_burst=5, posts_use_budget=False
)
DONE = TurnStatus.COMPLETE
PROSE = " ".join(
    f"Sentence number {i} says something about the weather and the sea." for i in range(20)
)


def make(
    *, shows_status: bool = False, switch_on_failure: bool = True
) -> tuple[EditingSink, AppendingSurface, FakeClock]:
    clock = FakeClock(start=0.0)
    surface = AppendingSurface(
        EDITED,
        append_limits=STREAMED,
        clock=clock,
        shows_status=shows_status,
        switch_on_failure=switch_on_failure,
    )
    sink = EditingSink(surface, pacer=EditPacer(clock=clock), clock=clock)
    return sink, surface, clock


async def stream(sink: EditingSink, clock: FakeClock, text: str, *, chunk: int = 7) -> None:
    """Feed ``text`` in growing prefixes, one every 50 ms."""
    for end in range(chunk, len(text) + chunk, chunk):
        await sink.update(text[:end])
        await clock.sleep(0.05)


def kinds(surface: AppendingSurface) -> list[str]:
    return [f"{op.op}:{op.message_id}" for op in surface.ops if op.op not in ("typing_exit",)]


async def test_only_appendable_surfaces_are_streamed_to() -> None:
    clock = FakeClock()
    assert isinstance(
        AppendingSurface(EDITED, append_limits=STREAMED, clock=clock), AppendableSurface
    )
    assert not isinstance(RecordingSurface(EDITED, clock=clock), AppendableSurface)


async def test_a_reply_is_opened_at_once_appended_at_the_interval_and_closed() -> None:
    sink, surface, clock = make()
    await sink.start()
    await sink.update(PROSE[:3])
    await settle()
    assert kinds(surface) == ["typing_enter:m-typing", "open:m-1"] and not surface.typing_active

    async def reply() -> None:
        await stream(sink, clock, PROSE[:250], chunk=3)  # 4 s of streaming
        await sink.finish(PROSE[:250], DONE)

    await clock.run(reply())
    ops = [op for op in surface.ops if op.op in ("open", "append", "close")]
    assert ops[0].op == "open" and ops[-1].op == "close"
    assert {op.op for op in ops[1:-1]} == {"append"} and len(ops) >= 4
    appends = [op.t for op in ops if op.op == "append"]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(appends))
    assert surface.texts() == [PROSE[:250]] and surface.open_ids == set()
    assert surface.violations == [] and (sink.posts, sink.edits) == (1, len(ops) - 1)


async def test_trailing_whitespace_and_unsettled_text_wait_for_what_follows() -> None:
    sink, surface, clock = make()
    for text in ("Hello ", "Hello <", "Hello <b>  "):  # one a second: each may go at once
        await sink.update(text)
        await clock.advance(1.0)
    await clock.run(sink.finish("Hello <b>!", DONE))
    assert [(op.op, op.text) for op in surface.ops] == [
        ("open", "Hello"),
        ("append", " "),  # no longer trailing: "<" follows, held back itself
        ("append", "<b>"),
        ("close", "!"),
    ]
    assert surface.texts() == ["Hello <b>!"]


async def test_a_long_reply_is_cut_after_what_each_message_was_sent() -> None:
    sink, surface, clock = make()

    async def reply() -> None:
        await sink.start()
        await stream(sink, clock, PROSE)
        await sink.finish(PROSE, DONE)

    await clock.run(reply())
    texts = surface.texts()
    assert len(texts) >= 4 and all(len(t) <= 300 for t in texts)
    assert " ".join(texts).split() == PROSE.split()
    assert {op.op for op in surface.ops} == {
        "typing_enter",
        "typing_exit",
        "open",
        "append",
        "close",
    }
    assert surface.violations == [] and surface.open_ids == set()
    # Each message was closed before the next was opened.
    order = [op for op in surface.ops if op.op in ("open", "close")]
    assert [op.op for op in order] == ["open", "close"] * len(texts)


async def test_streamed_code_is_closed_and_reopened_without_editing() -> None:
    code = "Code:\n\n```python\n" + "".join(
        f"def f{i}(x):\n    return x * {i}\n\n" for i in range(30)
    )
    text = code.rstrip() + "\n```\nDone."
    sink, surface, clock = make()

    async def reply() -> None:
        await stream(sink, clock, text, chunk=11)
        await sink.finish(text, DONE)

    await clock.run(reply())
    pieces = surface.texts()
    assert len(pieces) >= 3 and all(fence_closer(p) == "" for p in pieces)
    assert all(p.startswith("```python\n") for p in pieces[1:])
    assert not surface.calls("edit") and not surface.calls("post")
    assert surface.violations == []


async def test_a_rewrite_edits_the_open_message_and_posts_the_rest_within_limits() -> None:
    sink, surface, clock = make()

    async def reply() -> str:
        await stream(sink, clock, PROSE[:700])
        await clock.sleep(5.0)  # every closed piece is closed on the surface
        final = PROSE[:650] + " - and then, quite unexpectedly, a different ending."
        await sink.finish(final, DONE)
        return final

    final = await clock.run(reply())
    texts = surface.texts()
    streamed = [op.message_id for op in surface.ops if op.op == "close"]
    assert len(streamed) == 2  # closed before the rewrite, never touched again
    assert all(op.op != "edit" for op in surface.ops if op.message_id in streamed)
    assert all(len(t) <= 100 for t in texts[2:]) and len(texts) > 3
    assert " ".join(texts).split() == final.split()
    assert surface.open_ids == set() and surface.violations == []


@pytest.mark.parametrize("switch_on_failure", [True, False], ids=["surface", "sink"])
async def test_a_failed_append_goes_on_by_editing_at_once(switch_on_failure: bool) -> None:
    sink, surface, clock = make(switch_on_failure=switch_on_failure)
    await sink.update(PROSE[:80])
    await settle()
    surface.fail_next("append", RuntimeError("stream expired"))
    await sink.update(PROSE[:150])
    await clock.advance(1.0)
    await clock.run(sink.finish(PROSE[:250], DONE))
    assert surface.texts() == split_for_limit(PROSE[:250], 100)
    assert [(op.op, op.ok, op.t) for op in surface.ops][:3] == [
        ("open", True, 0.0),
        ("append", False, 1.0),
        ("edit", True, 1.0),  # at once: the failure is not the reply's pace
    ]
    assert surface.open_ids == set() and surface.violations == []


async def test_a_failed_open_posts_instead() -> None:
    sink, surface, clock = make()
    surface.fail_next("open", PermissionError("not_allowed"))
    await sink.start()
    await sink.update("Hello")
    await settle()
    await clock.run(sink.finish("Hello there", DONE))
    assert [(op.op, op.ok, op.t) for op in surface.ops if op.op != "typing_enter"] == [
        ("open", False, 0.0),
        ("post", True, 0.0),
        ("typing_exit", True, 0.0),
        ("edit", True, 0.0),  # the final text waits for no interval
    ]
    assert surface.texts() == ["Hello there"] and surface.append_limits is None


async def test_a_status_before_any_text_is_a_placeholder_the_stream_replaces() -> None:
    """A status shown before the first text (a queued mention) is a message of its own:
    the answer still streams (no edit, which would end streaming), and the placeholder
    is removed once the answer's first message is open."""
    sink, surface, clock = make()
    await sink.start()
    await sink.status("queued…")
    await settle()
    assert surface.texts() == ["⏳ queued…"] and surface.open_ids == set()
    await sink.update("the answer")
    await settle()
    await clock.run(sink.finish("the answer, streamed", DONE))
    assert surface.texts() == ["the answer, streamed"]
    ops = [op.op for op in surface.ops if op.op in ("post", "edit", "open", "retract", "close")]
    assert ops[:3] == ["post", "open", "retract"] and "edit" not in ops
    assert surface.append_limits is not None and surface.violations == []


async def test_a_status_after_streamed_text_is_not_shown_in_it() -> None:
    sink, surface, clock = make()
    await sink.update("Hello")
    await settle()
    await sink.status("waiting for capacity")
    await clock.advance(2.0)
    await clock.run(sink.finish("Hello world", DONE))
    assert [(op.op, op.text) for op in surface.ops] == [("open", "Hello"), ("close", " world")]


async def test_a_status_beside_the_reply_replaces_typing_and_outlives_an_update() -> None:
    sink, surface, clock = make(shows_status=True)
    await sink.start()
    await sink.status("waiting for capacity, about 3 s")
    await sink.update("half an answer")
    await clock.run(sink.fail("The model API failed."))
    assert surface.statuses == ["waiting for capacity, about 3 s"]
    assert [op.op for op in surface.ops] == ["status", "open", "close"]
    assert surface.texts() == ["half an answer\n\n⚠️ The model API failed."]


async def test_typing_comes_first_when_no_status_waits() -> None:
    sink, surface, clock = make(shows_status=True)
    await sink.start()
    await settle()
    await sink.status("retrying in 1 s…")
    await settle()
    await clock.run(sink.finish("ok", DONE))
    assert [op.op for op in surface.ops] == [
        "typing_enter",
        "status",
        "open",
        "typing_exit",
        "close",
    ]


async def test_a_close_waits_for_neither_the_interval_nor_the_budget() -> None:
    clock = FakeClock(start=0.0)
    pacer = EditPacer(clock=clock)
    for _ in range(5):  # other replies took every append token
        await pacer.acquire("append", 1.0, 5)
    surface = AppendingSurface(EDITED, append_limits=STREAMED, clock=clock)
    sink = EditingSink(surface, pacer=pacer, clock=clock)
    await sink.update("Hello")
    await settle()
    await clock.run(sink.finish("Hello there, and the end", DONE))
    assert [(op.op, op.t) for op in surface.ops] == [("open", 0.0), ("close", 0.0)]


async def test_nothing_to_say_sends_nothing() -> None:
    sink, surface, clock = make()
    await sink.start()
    await clock.run(sink.finish("", TurnStatus.FAILED))
    assert [op.op for op in surface.ops] == ["typing_enter", "typing_exit"]
