"""FakeGroq's answer pieces grouped several to an SSE event (``pieces_per_event``)."""

from __future__ import annotations

from tests.fakes.groq_answers import grouped


def test_pieces_are_joined_per_event_never_across_kinds() -> None:
    pieces = [("reasoning", "a "), ("reasoning", "b "), ("content", "c "), ("content", "d ")]
    pieces += [("content", "e ")]
    assert grouped(pieces, 1) == pieces
    assert grouped(pieces, 2) == [("reasoning", "a b "), ("content", "c d "), ("content", "e ")]
    assert grouped(pieces, 4) == [("reasoning", "a b "), ("content", "c d e ")]
