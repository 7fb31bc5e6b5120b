"""The reasoning quote shown above an answer (SHOW_REASONING): the fast path must quote
exactly as the line-by-line definition does, whatever the text holds."""

from __future__ import annotations

import random

from bot.engine import quote_lines


def reference(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.strip().splitlines())


def test_quote_lines_matches_the_line_by_line_quote() -> None:
    rng = random.Random(14)
    alphabet = ["a", "b", " ", "\t", "\n", "\n\n", "\r\n", "\r", "\u2028", "\x0c", "é"]
    cases = ["", "   ", "\n\n", "one", " one\ntwo \n\n three\n", "a\r\nb", "x\u2028y"]
    cases += ["".join(rng.choices(alphabet, k=rng.randrange(40))) for _ in range(2000)]
    for text in cases:
        assert quote_lines(text) == reference(text), repr(text)
