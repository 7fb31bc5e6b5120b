"""TerminalSurface: each update prints only its new text; rewrites reprint the reply.

Driven directly and through the real EditingSink on a FakeClock; the output is a
StringIO holding exactly what the terminal would show.
"""

from __future__ import annotations

import io

import pytest

from adapters.terminal import TerminalSurface
from bot.streaming import EditingSink, EditPacer
from bot.types import TurnStatus
from tests.fakes.clock import FakeClock, settle

LABEL = "bot> "
DONE = TurnStatus.COMPLETE
ANSWER = "".join(
    f"Step {i}: run /usr/bin/tool-{i} (or C:\\tools\\t{i}.exe) on ünïcødé → ✓. " for i in range(60)
)
PATHY = [
    "/usr/bin/env python3 is what the shebang runs.",
    "/",
    "//double/slash and a/relative/path next to /an/absolute/one",
    "Hello wor",
    "C:\\x\\y.txt vs C:/x/y.txt vs \\\\server\\share",
    "../up/../and/./here",
    "ünïcødé /tmp/ßü 🎉 — 日本語のパス /ホーム/ユーザー",
    "   leading spaces then /root",
]


def terminal() -> tuple[TerminalSurface, io.StringIO]:
    """A surface after the adapter has printed its label, as in ``python -m bot chat``."""
    out = io.StringIO()
    out.write(LABEL)
    return TerminalSurface(out, label=LABEL), out


def printed(out: io.StringIO) -> str:
    return out.getvalue()[len(LABEL) :]


def chunks(text: str, count: int) -> list[str]:
    """``count`` growing prefixes of ``text``, the last one whole."""
    return [text[: len(text) * (i + 1) // count] for i in range(count)]


async def run_sink(surface: TerminalSurface, steps: list[tuple[str, str]]) -> None:
    """Drive an EditingSink: ("status"|"update", text) steps, then finish (or fail)
    with the last step's text. Steps come slower than the surface's edit interval, so
    the sink sends each one instead of coalescing them."""
    clock = FakeClock(start=0.0)
    sink = EditingSink(surface, pacer=EditPacer(clock=clock), clock=clock)

    async def go() -> None:
        await sink.start()
        for kind, text in steps[:-1]:
            await (sink.status(text) if kind == "status" else sink.update(text))
            await clock.sleep(0.05)
        kind, text = steps[-1]
        await (sink.fail(text) if kind == "fail" else sink.finish(text, DONE))

    await clock.run(go())
    await settle()


# ----- appends print each character once -----


async def test_500_edits_print_each_character_exactly_once() -> None:
    surface, out = terminal()
    prefixes = chunks(ANSWER, 500)
    message_id = await surface.post(prefixes[0])
    for prefix in prefixes[1:]:
        await surface.edit(message_id, prefix)
    surface.end_line()
    assert printed(out) == ANSWER + "\n"


async def test_500_chunks_through_the_sink_print_the_answer_once() -> None:
    surface, out = terminal()
    await run_sink(surface, [("update", p) for p in chunks(ANSWER, 500)])
    assert printed(out) == ANSWER
    assert len(out.getvalue()) <= len(ANSWER) + len(LABEL)


async def test_output_stays_linear_for_a_long_answer() -> None:
    # The user report: 750 tokens printed 687 KB. Appends must cost their own length.
    surface, out = terminal()
    answer = "word " * 4_000
    message_id = await surface.post("w")
    for end in range(2, len(answer) + 1):
        await surface.edit(message_id, answer[:end])
    assert printed(out) == answer


# ----- any text prints intact -----


@pytest.mark.parametrize("answer", PATHY)
async def test_path_like_answers_print_intact_char_by_char(answer: str) -> None:
    surface, out = terminal()
    message_id = await surface.post(answer[0])
    for end in range(2, len(answer) + 1):
        await surface.edit(message_id, answer[:end])
    assert printed(out) == answer


@pytest.mark.parametrize("answer", PATHY)
async def test_path_like_answers_print_intact_through_the_sink(answer: str) -> None:
    surface, out = terminal()
    steps = [("update", answer[:end]) for end in range(1, len(answer) + 1)]
    await run_sink(surface, [*steps, ("finish", answer.strip())])
    assert printed(out).strip() == answer.strip()
    assert "\n" not in printed(out)


async def test_an_answer_starting_with_a_slash_is_not_lost() -> None:
    surface, out = terminal()
    await run_sink(surface, [("update", "/"), ("update", "/usr"), ("finish", "/usr/bin")])
    assert out.getvalue() == "bot> /usr/bin"


# ----- whitespace-only changes need no reprint -----


async def test_final_strip_of_streamed_whitespace_prints_nothing_more() -> None:
    surface, out = terminal()
    await run_sink(
        surface, [("update", "  Hello"), ("update", "  Hello there\n"), ("finish", "Hello there")]
    )
    assert printed(out) == "  Hello there\n"


async def test_whitespace_withdrawn_mid_word_is_reprinted_not_split() -> None:
    surface, out = terminal()
    message_id = await surface.post("abc ")
    await surface.edit(message_id, "abcdef")
    assert printed(out) == "abc \nbot> abcdef"


# ----- status lines -----


async def test_status_before_the_answer_sits_on_its_own_line() -> None:
    surface, out = terminal()
    answer = "/etc/hosts maps names to addresses."
    steps = [("status", "rate limited; retrying in 1 s…")]
    steps += [("update", p) for p in chunks(answer, 12)]
    await run_sink(surface, [*steps, ("finish", answer)])
    assert out.getvalue() == f"bot> ⏳ rate limited; retrying in 1 s…\nbot> {answer}"


async def test_status_mid_answer_leaves_the_full_answer_below_it() -> None:
    surface, out = terminal()
    first, answer = "Part one.", "Part one.\n\nPart two, /var/log included."
    steps = [
        ("update", first),
        ("status", "waiting for capacity, about 5 s"),
        ("update", answer[:20]),
        ("update", answer),
    ]
    await run_sink(surface, [*steps, ("finish", answer)])
    lines = out.getvalue().split("\n")
    assert "⏳ waiting for capacity, about 5 s" in lines  # a line of its own
    # The last labelled block is the whole answer, with no status inside it.
    assert out.getvalue().rsplit(LABEL, 1)[1] == answer


async def test_statuses_then_failure_end_with_the_error_note() -> None:
    surface, out = terminal()
    steps = [
        ("status", "rate limited; retrying in 1 s…"),
        ("status", "rate limited; retrying in 2 s…"),
        ("fail", "The model API is overloaded; try again in a minute."),
    ]
    await run_sink(surface, steps)
    lines = out.getvalue().split("\n")
    assert lines[0] == "bot> ⏳ rate limited; retrying in 1 s…"
    assert lines[-1] == "bot> ⚠️ The model API is overloaded; try again in a minute."


async def test_failure_after_text_appends_the_note_without_reprinting() -> None:
    surface, out = terminal()
    await run_sink(surface, [("update", "Half an ans"), ("fail", "The stream broke.")])
    assert printed(out) == "Half an ans\n\n⚠️ The stream broke."


# ----- more messages, end of line -----


async def test_a_second_message_starts_on_a_new_line_and_edits_of_older_ones_reprint() -> None:
    surface, out = terminal()
    first = await surface.post("one")
    second = await surface.post("two")
    await surface.edit(second, "two!")
    await surface.edit(first, "one, again")
    surface.end_line()
    surface.end_line()  # nothing more: the line is already ended
    assert printed(out) == "one\ntwo!\nbot> one, again\n"
