"""Answers that survive the process: stored while they stream, finished after a crash.

``ReplyRecord`` is the stored assistant message of one turn. It is created as
``STREAMING`` when the reply starts, with where its platform messages are
(``ReplyRef``), and checkpointed as it streams; the engine ``save``s its final state.
A process that dies (``kill -9``, out of memory, power cut) leaves it ``STREAMING``
with the text of its last checkpoint. The next process, before its adapters start,
reads those replies (``Store.streaming_replies``), and once they have started,
``finalize_unfinished`` has each adapter end its reply's messages with a note and
stores the reply as ``INTERRUPTED``: its text stays in the conversation's history.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from bot.context import estimate_tokens
from bot.errors import BotError
from bot.ports import Clock, ConversationOwner, ConversationStore, ReplyFinalizer
from bot.streaming.split import fence_closer
from bot.types import ConversationKey, ReplyRef, TurnStatus, UnfinishedReply

__all__ = ["RESTART_NOTE", "ReplyRecord", "finalize_unfinished", "restart_text"]

log = logging.getLogger(__name__)

RESTART_NOTE = "⚠️ Interrupted by a restart — ask again."
_NOT_POSTED = ReplyRef()


class ReplyRecord:
    """The stored assistant message of one turn, from its first token on.

    ``note`` is called at every token with the text so far and the sink's ``ReplyRef``.
    It costs O(1) unless a write is due, and the write runs in the background, one at
    a time, so the stream never waits for the database and the number of writes does
    not grow with the number of tokens. A write is due when the reply has a new
    platform message (its id must be on disk before a crash can happen: the first one
    creates the row, ``STREAMING``, with the id), or when ``interval_s`` has passed
    since the first note or the last write and the text changed (so a reply whose
    message is slow to post is stored all the same). A failed checkpoint is logged and
    the next one tries again. ``writes`` counts the checkpoints written.
    """

    def __init__(
        self, store: ConversationStore, key: ConversationKey, clock: Clock, *, interval_s: float
    ) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self._interval_s = interval_s
        self._id: int | None = None
        self._text = ""
        self._ref = ReplyRef()
        self._saved: tuple[str, ReplyRef] | None = None  # what the row holds
        self._tried: tuple[str, ReplyRef] | None = None  # what the last write was to hold
        self._due = 0.0
        self._writing: asyncio.Task[None] | None = None
        self._started = False
        self.writes = 0

    @property
    def started(self) -> bool:
        """Whether the reply began streaming (``note`` was called)."""
        return self._started

    def note(self, text: str, ref: ReplyRef) -> None:
        """The reply so far: written now if a checkpoint is due, else kept for the next."""
        self._text, self._ref = text, ref
        if not self._started:
            self._started, self._due = True, self._clock.now() + self._interval_s
        if self._writing is not None:
            return  # one write at a time; a later note carries the newest text
        tried = self._tried
        before = tried[1] if tried is not None else _NOT_POSTED
        # Per delta: the sink hands back the same ReplyRef object until it posts, so
        # identity settles it before the dataclass comparison.
        if (ref is before or ref == before) and (
            self._clock.now() < self._due or (text, ref) == self._saved
        ):
            return  # no new message, and the text's next checkpoint is not due
        self._tried = (text, ref)
        self._writing = asyncio.get_running_loop().create_task(
            self._checkpoint(), name="ReplyRecord.checkpoint"
        )

    async def _checkpoint(self) -> None:
        text, ref = self._text, self._ref
        try:
            await self._write(text, estimate_tokens(text), TurnStatus.STREAMING, ref)
            self._saved = (text, ref)
            self.writes += 1
        except BotError as exc:
            log.warning("checkpointing the streaming reply failed: %s", exc.detail or exc)
        finally:
            self._due = self._clock.now() + self._interval_s
            self._writing = None

    async def _write(self, content: str, tokens: int, status: TurnStatus, ref: ReplyRef) -> None:
        if self._id is None:
            self._id = await self._store.add_message(
                self._key,
                role="assistant",
                content=content,
                tokens=tokens,
                status=status,
                reply_ref=ref,
            )
        elif status is TurnStatus.STREAMING:
            await self._store.checkpoint_reply(self._id, content, tokens, ref)
        else:
            await self._store.update_message(
                self._id, content=content, tokens=tokens, status=status
            )

    async def wait(self) -> None:
        """Until the checkpoint in flight, if any, is written (or failed)."""
        writing = self._writing
        if writing is not None:
            await asyncio.shield(writing)

    async def save(
        self, content: str, *, tokens: int, status: TurnStatus, ref: ReplyRef | None = None
    ) -> None:
        """Store the reply's final state (creating the row, with ``ref``, if no
        checkpoint did). Raises ``StoreError``; calling it again retries."""
        await self.wait()
        ref = self._ref if ref is None else ref
        await self._write(content, tokens, status, ref)
        self._saved = (content, ref)

    async def fail(self) -> None:
        """Mark a started reply ``FAILED`` (out of the history); errors are logged."""
        if not self.started:
            return
        try:
            await self.save(self._text, tokens=0, status=TurnStatus.FAILED)
        except BotError as exc:
            log.error("could not mark the failed reply: %s", exc.detail or exc)


def restart_text(content: str) -> str:
    """What a reply cut by a restart shows: its stored text, then ``RESTART_NOTE``."""
    text = content.strip()
    return f"{text}{fence_closer(text)}\n\n{RESTART_NOTE}" if text else RESTART_NOTE


async def finalize_unfinished(
    store: ConversationStore,
    replies: Sequence[UnfinishedReply],
    finalizers: Mapping[str, ReplyFinalizer],
) -> None:
    """Finish replies a previous process left streaming: each one's platform messages
    show its stored text and ``RESTART_NOTE`` (through the finalizer of its platform,
    by name), then it is stored as ``INTERRUPTED`` with that text. A reply whose
    messages can't be edited is stored all the same; one whose storing fails stays
    ``STREAMING`` for the next start to try again. One in a conversation another
    process hears (``ConversationOwner``) is left alone: it may be streaming there."""
    mine = [r for r in replies if _hears(finalizers.get(str(r.key.platform)), r)]
    if len(mine) < len(replies):
        left = len(replies) - len(mine)
        log.info("leaving %d streaming answer(s) to the processes that hear them", left)
    replies = mine
    if not replies:
        return
    log.info("finishing %d answer(s) left streaming by the previous run", len(replies))
    await asyncio.gather(
        *(_finalize(store, reply, finalizers.get(str(reply.key.platform))) for reply in replies)
    )
    log.info("finished the %d answer(s) left streaming", len(replies))


def _hears(finalizer: ReplyFinalizer | None, reply: UnfinishedReply) -> bool:
    return not isinstance(finalizer, ConversationOwner) or finalizer.hears(reply.key)


async def _finalize(
    store: ConversationStore, reply: UnfinishedReply, finalizer: ReplyFinalizer | None
) -> None:
    if finalizer is not None and reply.ref.message_ids:
        try:
            await finalizer.finalize_reply(reply.ref, restart_text(reply.content))
        except Exception:  # the platform's failure must not stop the others
            log.exception("editing the interrupted answer %d failed", reply.message_id)
    try:
        await store.update_message(
            reply.message_id,
            content=reply.content.strip(),
            tokens=reply.tokens,
            status=TurnStatus.INTERRUPTED,
        )
    except BotError as exc:
        log.error("could not store answer %d as interrupted: %s", reply.message_id, exc.detail)
