"""Message attachments → ``bot.types.Attachment``, with a note for what was left out.

Text files (``text/*`` or a well-known text extension) up to
``DISCORD_MAX_ATTACHMENT_BYTES`` are downloaded and inlined into the turn; images are
passed by URL (the engine tells the user when the model can't read images); anything
else, or anything too large, is skipped with a short note shown above the answer.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import discord

from bot.ports import ReplySink
from bot.types import Attachment, ReplyRef, TurnStatus

__all__ = ["Collected", "NotedSink", "collect"]

log = logging.getLogger(__name__)

# Files Discord often labels application/octet-stream (or not at all) that are text.
_TEXT_SUFFIXES = {
    ".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".conf", ".log", ".xml", ".html", ".css", ".js", ".ts", ".tsx",
    ".jsx", ".py", ".rb", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cpp", ".hpp",
    ".cs", ".php", ".sh", ".bash", ".sql", ".swift", ".lua", ".r", ".env", ".diff",
}  # fmt: skip
_TEXT_TYPES = {"application/json", "application/xml", "application/x-yaml", "application/toml"}


@dataclass(slots=True)
class Collected:
    """What the turn receives, and notes for the user about what it doesn't."""

    attachments: tuple[Attachment, ...] = ()
    notes: list[str] = field(default_factory=list)


def _mime(att: discord.Attachment) -> str:
    declared = (att.content_type or "").split(";")[0].strip().lower()
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(att.filename)
    return guessed or declared or "application/octet-stream"


def _is_text(filename: str, mime: str) -> bool:
    suffix = PurePosixPath(filename.lower()).suffix
    return mime.startswith("text/") or mime in _TEXT_TYPES or suffix in _TEXT_SUFFIXES


def _size(n: int) -> str:
    return f"{n / 1024:,.0f} KB" if n >= 1024 else f"{n} bytes"


async def collect(files: Sequence[discord.Attachment], *, max_bytes: int) -> Collected:
    """Read the usable attachments of one message (never raises for a bad file)."""
    result = Collected()
    items: list[Attachment] = []
    for att in files:
        mime = _mime(att)
        if mime.startswith("image/"):
            items.append(Attachment(att.filename, mime, att.size, url=att.url))
        elif not _is_text(att.filename, mime):
            result.notes.append(f"`{att.filename}` was skipped: I can read text files and images.")
        elif att.size > max_bytes:
            result.notes.append(
                f"`{att.filename}` was skipped: it is {_size(att.size)}, "
                f"the limit is {_size(max_bytes)}."
            )
        else:
            try:
                data = await att.read()
            except discord.HTTPException as exc:
                log.warning("downloading attachment %s failed: %s", att.filename, exc)
                result.notes.append(f"`{att.filename}` could not be downloaded; it was skipped.")
                continue
            items.append(Attachment(att.filename, mime, len(data), data=data))
    result.attachments = tuple(items)
    return result


class NotedSink:
    """A ``ReplySink`` that shows attachment notes as a small line above the reply."""

    def __init__(self, inner: ReplySink, notes: Sequence[str]) -> None:
        self._inner = inner
        # "-# " is Discord's small-print markdown; it must start a line.
        self._lines = "\n".join(f"-# {note}" for note in notes)

    def _with_notes(self, text: str) -> str:
        # An empty final text means "say nothing" (e.g. a repeated quota refusal).
        return f"{self._lines}\n{text}" if self._lines and text else text

    @property
    def reply_ref(self) -> ReplyRef:
        return self._inner.reply_ref

    async def start(self) -> None:
        await self._inner.start()

    async def status(self, text: str) -> None:
        await self._inner.status(text)

    async def update(self, text_so_far: str) -> None:
        await self._inner.update(self._with_notes(text_so_far))

    async def finish(self, text: str, status: TurnStatus) -> None:
        await self._inner.finish(self._with_notes(text), status)

    async def fail(self, user_text: str) -> None:
        await self._inner.fail(f"{user_text}\n{self._lines}" if self._lines else user_text)
