"""EditingSink reports where a reply's messages are (``reply_ref``), and takes over the
messages of a reply an earlier process left (``messages=``), as adapters do at start-up
to end them with a note."""

from __future__ import annotations

import pytest

from bot.streaming import EditingSink, EditPacer, split_for_limit
from bot.types import ReplyRef, SurfaceLimits, TurnStatus
from tests.fakes.clock import FakeClock, settle
from tests.fakes.surface import AppendingSurface, RecordingSurface

pytestmark = pytest.mark.usefixtures("no_leaked_flushers")

SMALL = SurfaceLimits(max_chars=100, min_edit_interval_s=1.0)
STREAMED = SurfaceLimits(300, 1.0, posts_use_budget=False)
DONE = TurnStatus.INTERRUPTED
PROSE = " ".join(f"Sentence {i} says something about the weather." for i in range(6))


def sink_over(
    surface: RecordingSurface, clock: FakeClock, messages: tuple[str, ...] = ()
) -> EditingSink:
    return EditingSink(surface, pacer=EditPacer(clock=clock), clock=clock, messages=messages)


def left_behind(surface: RecordingSurface, *texts: str) -> tuple[str, ...]:
    """Messages a killed process left on the platform (posted before this run)."""
    for text in texts:
        surface.messages[f"{surface.name}-{len(surface.messages) + 1}"] = text
    return tuple(surface.messages)


async def test_reply_ref_names_the_place_and_each_message_as_it_is_posted() -> None:
    clock = FakeClock(start=0.0)
    surface = RecordingSurface(SMALL, clock=clock, place="thread-7")
    sink = sink_over(surface, clock)
    assert sink.reply_ref == ReplyRef("thread-7", ())

    await sink.update(PROSE[:60])
    await settle()
    assert sink.reply_ref == ReplyRef("thread-7", ("m-1",))

    await clock.run(sink.finish(PROSE, TurnStatus.COMPLETE))
    pieces = len(split_for_limit(PROSE, 100))
    assert pieces > 2
    assert sink.reply_ref == ReplyRef("thread-7", tuple(f"m-{i + 1}" for i in range(pieces)))
    assert sink.message_ids == sink.reply_ref.message_ids


@pytest.mark.parametrize("left", [1, 2, 4])
async def test_taken_over_messages_are_rewritten_to_the_final_text(left: int) -> None:
    clock = FakeClock(start=0.0)
    surface = RecordingSurface(SMALL, clock=clock)
    ids = left_behind(surface, *(f"old piece {i}" for i in range(left)))
    sink = sink_over(surface, clock, ids)
    assert sink.reply_ref == ReplyRef(surface.place, ids)
    text = f"{PROSE[:150]}\n\nnote"  # two pieces of 100
    pieces = split_for_limit(text, 100)

    await clock.run(sink.finish(text, DONE))

    # Each old message gets its piece by an edit, whatever it showed; a piece beyond
    # them is posted; a message the text no longer reaches keeps a placeholder.
    assert surface.texts() == pieces + ["…"] * (left - len(pieces))
    assert [op.op for op in surface.ops] == ["edit"] * left + ["post"] * (len(pieces) - left)
    assert sink.reply_ref.message_ids == tuple(surface.messages)
    assert surface.violations == []


async def test_taking_over_on_an_appendable_surface_only_edits() -> None:
    clock = FakeClock(start=0.0)
    surface = AppendingSurface(SMALL, append_limits=STREAMED, clock=clock)
    ids = left_behind(surface, "streamed, never closed")
    sink = sink_over(surface, clock, ids)

    await clock.run(sink.finish("the text as stored\n\nnote", DONE))

    assert [op.op for op in surface.ops] == ["edit"]
    assert surface.texts() == ["the text as stored\n\nnote"]
    assert surface.violations == []
