"""split_for_limit / take_piece / StreamSplitter: limits, boundaries, fences, stability."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest

from bot.streaming.split import (
    Piece,
    StreamSplitter,
    fence_closer,
    split_for_limit,
    take_piece,
)

SENTENCE = "The quick brown fox jumps over the lazy dog."
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
WORDS += ["eta", "theta", "iota", "kappa", "lambda", "mu"]


def walk(text: str, max_chars: int) -> list[tuple[Piece, str]]:
    """Every closed piece with the rest it was cut from (plus the open tail, consumed=-1)."""
    out, rest, reopen = [], text, ""
    while (piece := take_piece(rest, max_chars, reopen)) is not None:
        out.append((piece, rest))
        rest, reopen = rest[piece.consumed :], piece.reopen
    out.append((Piece(reopen + rest, -1, reopen), rest))
    return out


def check_structure(text: str, max_chars: int) -> None:
    """Each piece is reopen + an exact slice of the text + closer; cuts drop only
    whitespace; the fence bookkeeping matches the fences in the text."""
    reopen = ""
    for piece, piece_rest in walk(text, max_chars):
        rest = piece_rest
        assert len(piece.text) <= max_chars
        if piece.consumed == -1:
            assert piece.text == reopen + rest
            break
        if not piece.text:  # a blank window is skipped
            assert not rest[: piece.consumed].strip()
            continue
        assert piece.text.startswith(reopen)
        body = piece.text[len(reopen) :]
        if piece.reopen:
            closer = "\n" + re.match(r"`+", piece.reopen)[0]  # type: ignore[index]
            assert body.endswith(closer)
            body = body[: -len(closer)]
        rest = rest.lstrip("\r\n")  # newlines left by the previous cut are dropped
        consumed = piece.consumed - (len(piece_rest) - len(rest))
        assert rest.startswith(body), (body, rest[: len(body) + 5])
        assert not rest[len(body) : consumed].strip()
        reopen = piece.reopen


def visible(pieces: list[str], *, drop_fences: bool = False) -> str:
    """The non-whitespace characters (optionally without fence markers)."""
    joined = "\n".join(pieces)
    if drop_fences:
        joined = re.sub(r"```+\w*", "", joined)
    return re.sub(r"\s+", "", joined)


# ----- random documents -----


def random_doc(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < size:
        kind = rng.random()
        if kind < 0.45:
            sentences = [
                " ".join(rng.choices(WORDS, k=rng.randint(3, 14))).capitalize() + rng.choice(".!?")
                for _ in range(rng.randint(1, 5))
            ]
            parts.append(" ".join(sentences))
        elif kind < 0.65:
            lang = rng.choice(["python", "js", "", "rust"])
            lines = [
                " " * rng.choice([0, 4, 8]) + " ".join(rng.choices(WORDS, k=rng.randint(1, 8)))
                for _ in range(rng.randint(1, 12))
            ]
            parts.append(f"\n```{lang}\n" + "\n".join(lines) + "\n```\n")
        elif kind < 0.75:
            parts.append("x" * rng.randint(30, 300))  # one giant word
        elif kind < 0.85:
            parts.append("\r\n".join(rng.choices(WORDS, k=rng.randint(2, 9))))
        elif kind < 0.93:
            parts.append("".join(rng.choices(["e\u0301", "👨\u200d👩\u200d👧", "🇫🇷", "ж"], k=40)))
        else:
            parts.append("- " + "\n- ".join(rng.choices(WORDS, k=rng.randint(2, 6))))
    return rng.choice(["\n\n", "\n", " "]).join(parts)


@pytest.mark.parametrize("max_chars", [20, 50, 100, 333, 2000])
def test_random_documents_keep_every_invariant(max_chars: int) -> None:
    rng = random.Random(max_chars)
    for _ in range(40):
        text = random_doc(rng, rng.randint(10, 3000))
        pieces = split_for_limit(text, max_chars)
        assert pieces and all(0 < len(p) <= max_chars for p in pieces)
        check_structure(text, max_chars)
        if max_chars >= 50:  # fences are closed and reopened, so markers repeat
            assert visible(pieces, drop_fences=True) == visible([text], drop_fences=True)
            for piece in pieces:
                assert fence_closer(piece) == "", piece
        else:  # too small for fence bookkeeping: plain cuts
            assert visible(pieces) == visible([text])
        for piece in pieces[1:]:
            assert not unicodedata.combining(piece[0]) and piece[0] not in "\u200d\ufe0f\n"


@pytest.mark.parametrize("max_chars", [50, 100, 2000])
def test_pieces_are_frozen_while_the_text_grows(max_chars: int) -> None:
    rng = random.Random(7 + max_chars)
    for _ in range(15):
        text = random_doc(rng, 4 * max_chars)
        final = split_for_limit(text, max_chars)
        streaming = StreamSplitter(max_chars)
        seen: tuple[str, ...] = ()
        for end in sorted({rng.randint(0, len(text)) for _ in range(60)} | {len(text)}):
            split = streaming.feed(text[:end])
            assert split.closed[: len(seen)] == seen  # nothing sent ever moves
            assert list(split.closed) == final[: len(split.closed)]
            assert len(split.tail) <= max_chars
            seen = split.closed
        assert streaming.feed(text).pieces() == final


def test_take_piece_reads_only_one_window() -> None:
    rng = random.Random(3)
    for _ in range(200):
        rest = random_doc(rng, 300)
        skip = len(rest) - len(rest.lstrip("\r\n"))  # leading newlines are dropped first
        if len(rest) <= skip + 100:
            continue
        assert take_piece(rest, 100) == take_piece(rest[: skip + 101] + "zz", 100)
        reopen = "```py\n"
        assert take_piece(rest, 100, reopen) == take_piece(rest[: skip + 95] + "zz", 100, reopen)


# ----- boundaries -----


def test_short_text_is_one_piece_and_empty_is_none() -> None:
    assert split_for_limit("hello", 5) == ["hello"]
    assert split_for_limit("", 10) == []
    assert take_piece("hello", 5) is None
    with pytest.raises(ValueError):
        split_for_limit("x", 0)


def test_long_prose_splits_at_sentence_ends() -> None:
    text = " ".join([SENTENCE] * 12)
    pieces = split_for_limit(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert all(p.endswith(".") and p.startswith("The") for p in pieces)
    assert " ".join(pieces) == text


def test_paragraph_beats_line_beats_sentence() -> None:
    para1 = SENTENCE + " " + SENTENCE[:19]  # 64 chars
    text = f"{para1}\n\n{SENTENCE}\n{SENTENCE} {SENTENCE}"
    assert split_for_limit(text, 100)[0] == para1
    line1 = "a" * 30 + ". " + "b" * 30  # 62 chars with a sentence end inside
    text = f"{line1}\n{SENTENCE} {SENTENCE}"
    assert split_for_limit(text, 100)[0] == line1


def test_a_boundary_too_early_loses_to_a_later_smaller_one() -> None:
    text = "Hi.\n\n" + " ".join(WORDS * 3)
    first = split_for_limit(text, 80)[0]
    assert len(first) > 40 and first.startswith("Hi.\n\nalpha")
    assert not first.endswith(" ")


def test_giant_word_is_hard_cut() -> None:
    assert split_for_limit("x" * 230, 50) == ["x" * 50] * 4 + ["x" * 30]


def test_hard_cut_never_splits_crlf_or_graphemes() -> None:
    text = "a" * 49 + "\r\n" + "b" * 60
    assert split_for_limit(text, 50) == ["a" * 49, "b" * 50, "b" * 10]
    accented = "e\u0301" * 40  # 80 code points, pairs must stay together
    pieces = split_for_limit(accented, 25)
    assert all(len(p) % 2 == 0 and p.startswith("e") for p in pieces)
    assert "".join(pieces) == accented
    family = "👨\u200d👩\u200d👧" * 12
    pieces = split_for_limit(family, 20)
    assert "".join(pieces) == family
    assert all(p.startswith("👨") and p.endswith("👧") for p in pieces)


def test_whitespace_at_cuts_is_dropped_but_indentation_kept() -> None:
    text = "word " * 30
    pieces = split_for_limit(text, 50)
    assert all(not p.startswith(" ") for p in pieces[1:])
    assert all(not p.endswith(" ") for p in pieces[:-1])
    code = "```\n" + "\n".join(f"    line_{i} = {i}" for i in range(20)) + "\n```"
    for piece in split_for_limit(code, 80)[1:]:
        assert piece.startswith("```\n    line_")


# ----- code fences -----


def python_code(functions: int) -> str:
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(functions))
    return "Here is code:\n\n```python\n" + body.rstrip() + "\n```\nThat is all."


def test_code_fence_is_closed_and_reopened_with_its_language() -> None:
    text = python_code(12)
    pieces = split_for_limit(text, 100)
    assert len(pieces) > 3
    assert all(len(p) <= 100 for p in pieces)
    for piece in pieces:
        assert fence_closer(piece) == ""  # every message renders its code as code
    for piece in pieces[1:-1]:
        assert piece.startswith("```python\n") and piece.endswith("\n```")
    # Only whole lines are moved, and only blank lines and fence lines are added/dropped.
    original = [line for line in text.splitlines() if line.strip()]
    rebuilt = [line for p in pieces for line in p.splitlines() if line.strip()]
    assert [x for x in rebuilt if not x.startswith("```")] == [
        x for x in original if not x.startswith("```")
    ]


def test_no_empty_code_blocks_at_cuts() -> None:
    for limit in range(40, 140, 7):
        for piece in split_for_limit(python_code(10), limit):
            assert "```python\n```" not in piece
            assert not piece.endswith("```python")


def test_giant_line_inside_a_fence_is_hard_cut_and_fenced() -> None:
    text = "```js\n" + "z" * 200 + "\n```"
    pieces = split_for_limit(text, 60)
    assert all(len(p) <= 60 for p in pieces)
    assert all(p.startswith("```js\n") for p in pieces)
    assert all(fence_closer(p) == "" for p in pieces)
    assert "".join(p.removeprefix("```js\n").removesuffix("\n```") for p in pieces) == "z" * 200


def test_longer_fences_and_inner_backticks() -> None:
    text = "````md\n" + "```python\nx = 1\n```\n" * 10 + "````"
    pieces = split_for_limit(text, 80)
    assert all(p.startswith("````md\n") for p in pieces)
    assert all(fence_closer(p) == "" for p in pieces)


def test_take_piece_reports_the_reopen_prefix() -> None:
    rest = "```python\n" + "print(1)\n" * 20
    piece = take_piece(rest, 60)
    assert piece is not None
    assert piece.reopen == "```python\n"
    assert piece.text.startswith("```python\nprint(1)") and piece.text.endswith("\n```")
    nxt = take_piece(rest[piece.consumed :], 60, piece.reopen)
    assert nxt is not None and nxt.text.startswith("```python\nprint(1)")


def test_fence_closer() -> None:
    assert fence_closer("plain") == ""
    assert fence_closer("x\n```py\ncode") == "\n```"
    assert fence_closer("x\n````\ncode\n```") == "\n````"
    assert fence_closer("```py\ncode\n```") == ""


def test_stream_splitter_restarts_when_the_text_is_rewritten() -> None:
    splitter = StreamSplitter(50)
    text = " ".join(WORDS * 4)
    first = splitter.feed(text)
    rewritten = "Z" + text[1:]
    assert splitter.feed(rewritten).pieces() == split_for_limit(rewritten, 50)
    assert first.closed[0][0] == "a"


# ----- appended messages: keep, restart -----


def test_a_cut_keeps_what_was_sent() -> None:
    rest = "The first paragraph is right here.\n\nThen a second one goes on with many more words."
    plain = take_piece(rest, 60)
    assert plain is not None and plain.text == "The first paragraph is right here."
    kept = take_piece(rest, 60, keep=45)  # sent up to "Then a se": the cut can't go back
    assert kept is not None and kept.text.startswith(rest[:45]) and len(kept.text) <= 60
    assert kept.text == rest[:58] and rest[kept.consumed :] == "on with many more words."


def test_a_cut_keeps_what_was_sent_even_with_no_boundary_after_it() -> None:
    rest = "intro " + "x" * 100
    piece = take_piece(rest, 60, keep=20)
    assert piece is not None and piece.text == rest[:20] and piece.consumed == 20


def test_a_kept_cut_inside_code_still_closes_and_reopens_the_fence() -> None:
    rest = "```python\n" + "".join(f"value_{i} = {i}\n" for i in range(20))
    piece = take_piece(rest, 80, keep=50)
    assert piece is not None and piece.text.startswith(rest[:50])
    assert piece.text.endswith("\n```") and piece.reopen == "```python\n"


def test_stream_splitter_keeps_the_open_pieces_sent_text() -> None:
    text = " ".join(WORDS * 6)
    splitter = StreamSplitter(60)
    tail = splitter.feed(text[:58]).tail
    sent = tail[: len(tail) - 3]
    split = splitter.feed(text, keep=len(sent))
    assert split.closed[0].startswith(sent)
    assert splitter.feed(text + " more").closed == split.closed  # frozen as before


def test_stream_splitter_restart_resplits_after_the_kept_pieces() -> None:
    text = " ".join(WORDS * 8)
    splitter = StreamSplitter(100)
    first = splitter.feed(text).closed[0]
    splitter.restart(30, after=1)
    split = splitter.feed(text)
    assert split.closed[0] == first
    rest = text[len(first) :].lstrip()
    assert split.pieces()[1:] == split_for_limit(rest, 30)
