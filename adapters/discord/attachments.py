"""Message attachments → ``bot.types.Attachment``, with a note for what was left out.

Text files (``text/*`` or a well-known text extension) up to
``DISCORD_MAX_ATTACHMENT_BYTES`` are downloaded and inlined into the turn; images are
passed by URL (the engine tells the user when the model can't read images); anything
else, or anything too large, is skipped with a short note shown above the answer.

Files come only from Discord's CDN (``CdnPolicy``): https on ``cdn.discordapp.com`` or
``media.discordapp.net``, or the origin of ``DISCORD_API_BASE`` when one is configured
(a proxy, or a local stand-in in tests). The size limit is enforced on the bytes
received, while they stream in: the size a message declares is only a first check.
A file that cannot be had (refused, unreachable, timed out, too big) becomes a note;
the message is answered all the same.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import aiohttp
import discord
import yarl

from bot.ports import ReplySink
from bot.types import Attachment, ReplyRef, TurnStatus

__all__ = ["CdnPolicy", "Collected", "DownloadFailed", "Downloader", "NotedSink", "collect"]

log = logging.getLogger(__name__)

# Files Discord often labels application/octet-stream (or not at all) that are text.
_TEXT_SUFFIXES = {
    ".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".conf", ".log", ".xml", ".html", ".css", ".js", ".ts", ".tsx",
    ".jsx", ".py", ".rb", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cpp", ".hpp",
    ".cs", ".php", ".sh", ".bash", ".sql", ".swift", ".lua", ".r", ".env", ".diff",
}  # fmt: skip
_TEXT_TYPES = {"application/json", "application/xml", "application/x-yaml", "application/toml"}
DISCORD_CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
DOWNLOAD_TIMEOUT_S = 15.0  # the whole download of one file
_CHUNK = 64 * 1024

Origin = tuple[str, str, int]  # scheme, host, port


def _origin(url: yarl.URL) -> Origin | None:
    if not url.is_absolute() or url.host is None or url.port is None:
        return None
    return url.scheme.lower(), url.host.lower(), url.port


@dataclass(frozen=True, slots=True)
class CdnPolicy:
    """Where attachments may be downloaded from."""

    origins: frozenset[Origin] = frozenset(("https", h, 443) for h in DISCORD_CDN_HOSTS)

    @classmethod
    def for_api_base(cls, api_base: str | None) -> CdnPolicy:
        """Discord's CDN, plus ``api_base``'s origin when set: whoever stands in for
        Discord's API (a proxy, a test server) serves its files too."""
        extra = _origin(yarl.URL(api_base)) if api_base else None
        return cls(cls().origins | {extra}) if extra else cls()

    def allows(self, url: str) -> bool:
        try:
            origin = _origin(yarl.URL(url))
        except ValueError:
            return False
        return origin in self.origins


class DownloadFailed(Exception):
    """An attachment could not be had; ``str()`` says why, for the user's note."""


class TooLarge(DownloadFailed):
    pass


class Downloader:
    """Fetches attachments on its own connection pool (``aclose`` when done)."""

    def __init__(self, policy: CdnPolicy, *, timeout_s: float | None = None) -> None:
        self.policy = policy
        self._timeout_s = DOWNLOAD_TIMEOUT_S if timeout_s is None else timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """The file's bytes; raises ``DownloadFailed`` (``TooLarge`` past ``max_bytes``)."""
        if not self.policy.allows(url):
            raise DownloadFailed("it is not hosted on Discord's CDN")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                self._session.get(url, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise DownloadFailed(f"the server answered {response.status}")
                declared = response.content_length
                if declared is not None and declared > max_bytes:
                    raise TooLarge(f"it is {_size(declared)}, the limit is {_size(max_bytes)}")
                return await _read_at_most(response, max_bytes)
        except TimeoutError:
            raise DownloadFailed(f"the download took over {self._timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, unreachable
            log.info("attachment download from %s: %r", url, exc)
            raise DownloadFailed("Discord's CDN could not be reached") from None
        except (aiohttp.ClientError, OSError) as exc:
            log.info("attachment download from %s: %r", url, exc)
            raise DownloadFailed("the download broke off") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_at_most(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, read chunk by chunk; past ``max_bytes`` the connection is dropped."""
    data = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        data += chunk
        if len(data) > max_bytes:
            response.close()  # the rest is never read
            raise TooLarge(f"it is larger than the limit of {_size(max_bytes)}")
    return bytes(data)


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


async def collect(
    files: Sequence[discord.Attachment], *, max_bytes: int, downloader: Downloader
) -> Collected:
    """Read the usable attachments of one message (never raises for a bad file)."""
    result = Collected()
    items: list[Attachment] = []
    for att in files:
        mime = _mime(att)
        if not downloader.policy.allows(att.url):
            log.warning(
                "attachment %s is not on Discord's CDN (%s); skipped", att.filename, att.url
            )
            result.notes.append(f"`{att.filename}` was skipped: it is not on Discord's CDN.")
        elif mime.startswith("image/"):
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
                data = await downloader.fetch(att.url, max_bytes=max_bytes)
            except DownloadFailed as exc:
                log.warning("downloading attachment %s failed: %s", att.filename, exc)
                result.notes.append(f"`{att.filename}` was skipped: {exc}.")
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
