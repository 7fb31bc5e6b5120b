"""Pure splitting of a reply into messages of at most ``max_chars`` characters.

A cut goes at the best boundary inside the window: paragraph > line > sentence > word >
hard cut. A boundary is good enough when it keeps at least half the window; otherwise
the latest boundary of any kind wins, so pieces stay large. Whitespace at a cut is
dropped (a line cut keeps the next line's indentation). Cutting inside a code fence
closes it at the end of the piece and reopens it (same backticks, same language) at the
start of the next; those added characters count against the limit. Hard cuts never
split "\\r\\n", a surrogate pair, or a character from the combining marks after it.

Each cut depends only on the first ``max_chars + 1`` characters of what is left (after
the newlines a previous cut left at its start), so a piece, once the text has grown
past it, never changes as more text streams in. That is
what lets ``EditingSink`` freeze messages it already sent (``StreamSplitter``). A
message that grows by appending can't take text back, so its cut may be told to
``keep`` what was sent: it then goes at the best boundary after it, else right there.

Fences are recognised per line (up to three spaces, then three or more backticks), as
models write them; ``~~~`` fences and inline triple backticks are not tracked.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["Piece", "Split", "StreamSplitter", "fence_closer", "split_for_limit", "take_piece"]

_OPEN = re.compile(r" {0,3}(`{3,})([^`]*)")
_CLOSE = re.compile(r" {0,3}(`{3,})[ \t]*")
# A partial last line that may still grow into a fence line: never cut inside it.
_MAYBE_FENCE = re.compile(r" {0,3}`")
_SENTENCE = re.compile(r"[.!?…][\"'”’)\]]*([ \t]+)")
_SPACES = re.compile(r"[ \t]+")
_NEWLINES = re.compile(r"[\r\n]*")
_MAX_BACKOFF = 32  # how far a hard cut may move back to keep a grapheme whole
_JOINERS = frozenset("\u200d\ufe0e\ufe0f")


@dataclass(frozen=True, slots=True)
class Piece:
    """One finished message: ``text`` (≤ max_chars; "" when the window was blank and
    there is nothing to send), how many characters of the input it ``consumed``, and
    the ``reopen`` prefix the next piece starts with ("" unless cut inside a fence)."""

    text: str
    consumed: int
    reopen: str


@dataclass(frozen=True, slots=True)
class Split:
    """A text cut into ``closed`` pieces (final) and the open ``tail`` after them.

    ``tail`` is the last message's content so far ("" when nothing is left to show).
    """

    closed: tuple[str, ...]
    tail: str

    def pieces(self) -> list[str]:
        """Every message's content, in order."""
        return [*self.closed, self.tail] if self.tail else list(self.closed)


@dataclass(frozen=True, slots=True)
class _Fence:
    marker: str
    lang: str

    @property
    def reopen(self) -> str:
        return f"{self.marker}{self.lang}\n"

    @property
    def closer(self) -> str:
        return "\n" + self.marker


@dataclass(frozen=True, slots=True)
class _Line:
    start: int
    end: int  # end of the content, before "\r\n" / "\n"
    next: int  # start of the following line
    complete: bool
    blank: bool
    fence_line: bool  # opens or closes a fence, or may still grow into one
    before: _Fence | None
    after: _Fence | None


def _opener(content: str) -> _Fence | None:
    match = _OPEN.fullmatch(content)
    if match is None:
        return None
    words = match[2].split()
    return _Fence(match[1], words[0] if words else "")


def _scan(text: str, fence: _Fence | None) -> list[_Line]:
    """Lines of ``text`` with the fence open before and after each one."""
    lines: list[_Line] = []
    pos, size = 0, len(text)
    while pos < size:
        newline = text.find("\n", pos)
        complete = newline >= 0
        end = newline if complete else size
        if complete and end > pos and text[end - 1] == "\r":
            end -= 1
        content = text[pos:end]
        before, is_fence = fence, False
        if fence is None:
            opened = _opener(content)
            if opened is not None:
                fence, is_fence = opened, True
        else:
            closing = _CLOSE.fullmatch(content)
            if closing is not None and len(closing[1]) >= len(fence.marker):
                fence, is_fence = None, True
        if not complete and _MAYBE_FENCE.match(content):
            is_fence = True
        nxt = newline + 1 if complete else size
        lines.append(_Line(pos, end, nxt, complete, not content.strip(), is_fence, before, fence))
        pos = nxt
    return lines


def fence_closer(text: str) -> str:
    """What closes a code fence left open at the end of ``text`` ("" if none is open)."""
    lines = _scan(text, None)
    if not lines:
        return ""
    fence = lines[-1].after
    return fence.closer if fence is not None else ""


class _Cutter:
    """Chooses the cut for one piece; looks at ``limit + 1`` characters from ``start``."""

    def __init__(
        self, rest: str, start: int, max_chars: int, fence: _Fence | None, keep: int
    ) -> None:
        self.max_chars = max_chars
        self.reopen = fence.reopen if fence is not None else ""
        self.limit = max_chars - len(self.reopen)
        self.text = rest[start : start + self.limit + 1]
        self.floor = max(0, keep - len(self.reopen))  # no cut before it (already sent)
        self.lines = _scan(self.text, fence)
        self._starts = [line.start for line in self.lines]

    def usable(self, fence: _Fence | None) -> _Fence | None:
        return _usable(fence, self.max_chars)

    def line_of(self, index: int) -> _Line:
        return self.lines[max(0, bisect_right(self._starts, index) - 1)]

    def fence_at(self, end: int) -> tuple[bool, _Fence | None]:
        """Whether a body ending at ``end`` (no trailing whitespace) is a legal cut, and
        the fence then left open."""
        line = self.line_of(end - 1)
        if line.fence_line:
            whole = end >= len(self.text[: line.end].rstrip())
            return whole and line.complete, self.usable(line.after)
        return True, self.usable(line.after)

    def fits(self, end: int, fence: _Fence | None) -> bool:
        closer = len(fence.closer) if fence is not None else 0
        return len(self.reopen) + end + closer <= self.max_chars

    def piece(self, end: int, resume: int, fence: _Fence | None) -> Piece:
        body = self.text[:end]
        if not body.strip():
            return Piece("", resume, self.reopen)
        closer = fence.closer if fence is not None else ""
        reopen = fence.reopen if fence is not None else ""
        return Piece(self.reopen + body + closer, resume, reopen)

    def choose(self) -> Piece:
        best: tuple[int, int, _Fence | None] | None = None
        for candidates in (self._paragraphs(), self._lines(), self._sentences(), self._words()):
            valid = [c for c in candidates if c is not None]
            if not valid:
                continue
            top = max(valid, key=lambda c: c[0])
            if top[0] * 2 >= self.limit:
                return self.piece(*top)
            if best is None or top[0] > best[0]:
                best = top
        if best is None and self.floor:
            spaces = _SPACES.match(self.text, self.floor)
            best = self._check(self.floor, spaces.end() if spaces else self.floor)
        return self.piece(*best) if best is not None else self._hard_cut()

    def _check(self, cut: int, resume: int) -> tuple[int, int, _Fence | None] | None:
        end = len(self.text[:cut].rstrip())
        if end == 0 or end < self.floor:
            return None
        legal, fence = self.fence_at(end)
        if not legal or not self.fits(end, fence):
            return None
        line = self.line_of(end - 1)
        if fence is not None and line.fence_line:
            return None  # body would end on its opener: an empty block
        if fence is not None and resume < len(self.text):
            following = self.line_of(resume)
            if following.start == resume and following.complete and following.after is None:
                return None  # the next piece would open with its closer: an empty block
        return end, resume, fence

    def _paragraphs(self) -> list[tuple[int, int, _Fence | None] | None]:
        found = []
        for i, line in enumerate(self.lines[:-1]):
            if line.blank or not line.complete or not self.lines[i + 1].blank:
                continue
            resume = self.lines[i + 1].next
            for after in self.lines[i + 1 :]:
                if not after.blank:
                    resume = after.start
                    break
                if after.complete:
                    resume = after.next
            found.append(self._check(line.end, resume))
        return found

    def _lines(self) -> list[tuple[int, int, _Fence | None] | None]:
        return [
            self._check(line.end, line.next)
            for line in self.lines
            if line.complete and not line.blank
        ]

    def _sentences(self) -> list[tuple[int, int, _Fence | None] | None]:
        found = []
        for m in _SENTENCE.finditer(self.text):
            if self.line_of(m.start()).before is None:  # not inside code
                found.append(self._check(m.start(1), m.end(1)))
        return found

    def _words(self) -> list[tuple[int, int, _Fence | None] | None]:
        return [self._check(m.start(), m.end()) for m in _SPACES.finditer(self.text)]

    def _hard_cut(self) -> Piece:
        cut = self.limit
        fence: _Fence | None = None
        for _ in range(3):
            line = self.line_of(cut - 1)
            if line.fence_line and line.start > 0 and (cut < line.end or not line.complete):
                cut = line.start  # never split a fence line
            fence = self.usable(self.line_of(cut - 1).after if cut > 0 else None)
            if fence is None or self.fits(cut, fence):
                break
            cut = self.limit - len(fence.closer)
        cut = _grapheme_safe(self.text, cut)
        fence = self.usable(self.line_of(cut - 1).after)
        while cut > 1 and not self.fits(cut, fence):
            cut -= 1
        end = len(self.text[:cut].rstrip()) or cut
        return self.piece(end, cut, fence)


def _joins_previous(ch: str) -> bool:
    return (
        ch in _JOINERS
        or "\udc00" <= ch <= "\udfff"
        or "\U0001f3fb" <= ch <= "\U0001f3ff"  # skin-tone modifiers
        or unicodedata.category(ch) in ("Mn", "Mc", "Me")
    )


def _grapheme_safe(text: str, cut: int) -> int:
    """Move a hard cut back (a little) so it does not split a character sequence."""
    for candidate in range(cut, max(0, cut - _MAX_BACKOFF), -1):
        if candidate >= len(text):
            return candidate
        prev, ch = text[candidate - 1], text[candidate]
        if prev == "\r" and ch == "\n":
            continue
        if _joins_previous(ch) or prev in _JOINERS or "\ud800" <= prev <= "\udbff":
            continue
        return candidate
    return cut


def _usable(fence: _Fence | None, max_chars: int) -> _Fence | None:
    """Fences whose reopen + close would eat over a third of a message are not kept."""
    if fence is None or len(fence.reopen) + len(fence.closer) > max_chars // 3:
        return None
    return fence


def take_piece(rest: str, max_chars: int, reopen: str = "", keep: int = 0) -> Piece | None:
    """Cut the next message off ``rest`` (which continues after ``reopen``).

    Returns None when ``reopen + rest`` still fits in one message: the open last piece,
    not final yet. Leading newlines are dropped; after them, the cut depends only on the
    next ``max_chars + 1`` characters, and on ``keep``: the first ``keep`` characters of
    the message (``reopen`` included) stay in it when they can.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    fence = _usable(_opener(reopen.rstrip("\r\n")) if reopen else None, max_chars)
    # Newlines left over from the previous cut would start the message with blank lines.
    skip = _NEWLINES.match(rest).end()  # type: ignore[union-attr]
    cutter = _Cutter(rest, skip, max_chars, fence, keep)
    if len(cutter.reopen) + len(rest) - skip <= max_chars:
        return None
    if not cutter.text.strip():
        return Piece("", skip + len(cutter.text), cutter.reopen)
    piece = cutter.choose()
    return Piece(piece.text, skip + piece.consumed, piece.reopen)


class StreamSplitter:
    """Incremental ``split_for_limit`` for a growing text.

    ``feed`` the whole text so far; closed pieces are cached and, as long as each new
    text extends the old one, stay exactly as they were. A text that rewrites the
    already-split part is split again from the start.
    """

    def __init__(self, max_chars: int) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        self.max_chars = max_chars
        self._source = ""  # the part of the last text that closed pieces cover
        self._closed: list[str] = []
        self._ends: list[tuple[int, str]] = []  # each closed piece's end in the text, reopen
        self._reopen = ""

    def feed(self, text: str, *, keep: int = 0) -> Split:
        """The split of ``text``; ``closed`` extends the previous call's when it can.

        ``keep``: characters of the open last message already sent for good (it grows by
        appending); if it is cut now, the cut keeps them (``take_piece``).
        """
        if not text.startswith(self._source):
            self._source, self._closed, self._ends, self._reopen = "", [], [], ""
        offset = len(self._source)
        rest = text[offset:]
        while (piece := take_piece(rest, self.max_chars, self._reopen, keep)) is not None:
            keep = 0  # only the open message was sent
            offset += piece.consumed
            if piece.text:
                self._closed.append(piece.text)
                self._ends.append((offset, piece.reopen))
            rest = rest[piece.consumed :]
            self._reopen = piece.reopen
        self._source = text[:offset]
        rest = rest[_NEWLINES.match(rest).end() :]  # type: ignore[union-attr]
        tail = "" if self._closed and not rest.strip() else self._reopen + rest
        return Split(tuple(self._closed), tail)

    def restart(self, max_chars: int, *, after: int) -> None:
        """Split what follows the first ``after`` closed pieces anew, into messages of
        ``max_chars`` (those pieces stay as they were)."""
        after = min(after, len(self._closed))
        end, self._reopen = self._ends[after - 1] if after else (0, "")
        self.max_chars = max_chars
        self._source = self._source[:end]
        del self._closed[after:], self._ends[after:]


def split_for_limit(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into messages of at most ``max_chars`` characters ([] for "")."""
    return StreamSplitter(max_chars).feed(text).pieces()
