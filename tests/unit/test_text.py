"""``bot.text.clean_text`` and the types that apply it."""

from __future__ import annotations

import pytest

from bot.text import REPLACEMENT, clean_text
from bot.types import Attachment, ConversationKey, Incoming, Platform, UserRef


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("half \ud83d emoji", f"half {REPLACEMENT} emoji"),  # a lone high surrogate
        ("\ude00 at the start", f"{REPLACEMENT} at the start"),  # a lone low one
        ("caf\udce9", f"caf{REPLACEMENT}"),  # a byte kept by surrogateescape
        ("\ud83d\ude00", "😀"),  # a pair split into two code points: joined
        ("\ude00\ud83d", REPLACEMENT * 2),  # the wrong way round: two lone ones
    ],
)
def test_lone_surrogates_become_replacement_characters(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean
    clean.encode("utf-8")  # storable and sendable


def test_valid_text_is_returned_as_is() -> None:
    text = "plain, accentué, 😀, 中文"
    assert clean_text(text) is text


def test_incoming_and_attachment_are_clean_whoever_builds_them() -> None:
    platform = Platform("anywhere")
    attachment = Attachment("notes\udcff.txt", "text/plain", 3, b"abc")
    incoming = Incoming(
        ConversationKey(platform, dm_user="u1"),
        UserRef(platform, "u1"),
        "hello \ud800",
        attachments=(attachment,),
    )
    assert incoming.text == f"hello {REPLACEMENT}"
    assert incoming.attachments[0].filename == f"notes{REPLACEMENT}.txt"
