"""Text from outside made valid Unicode, once, where it enters the bot.

A Python ``str`` can hold lone UTF-16 surrogates (U+D800 to U+DFFF), which no UTF-8
encoder accepts: JSON allows the escape ``\\ud800`` on its own, and chat platforms'
events are JSON; Python decodes bytes that are not valid in the locale's
encoding to them (``surrogateescape``, stdin under a C/POSIX locale). SQLite then
refuses to store the message and httpx to send it. ``clean_text`` joins a pair split
into two code points into the character it encodes and replaces every lone surrogate
with U+FFFD, the replacement character, as a UTF-8 decoder does with a bad byte.

``Incoming`` and ``Attachment`` apply it when they are built, so every adapter (those
to come included) hands the engine valid text without having to remember to.
"""

from __future__ import annotations

__all__ = ["REPLACEMENT", "clean_text"]

REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD; valid text is returned as is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text
