"""Arrival order for messages of one channel, across their concurrent preparation.

Each message is prepared in its own task (routing may query the database or walk a
reply chain; attachments are downloaded), so a quick message could reach the engine
before a slower one sent just before it in the same conversation. A ``Ticket`` taken
in ``on_message`` (synchronously, so in gateway order) makes each message wait, just
before ``Engine.handle``, until the message ahead of it in the channel has passed.
"""

from __future__ import annotations

import asyncio

__all__ = ["Ticket", "Turnstile"]


class Ticket:
    """One message's place in its channel's line."""

    __slots__ = ("_ahead", "_channel_id", "_gate", "_owner", "_passed")

    def __init__(
        self,
        owner: Turnstile,
        channel_id: int,
        ahead: asyncio.Future[None] | None,
        gate: asyncio.Future[None],
    ) -> None:
        self._owner, self._channel_id = owner, channel_id
        self._ahead, self._gate = ahead, gate
        self._passed = False

    async def wait(self) -> None:
        """Until every earlier message of the channel has passed."""
        if self._ahead is not None:
            # Shielded: a cancelled waiter must not cancel the gate of the one ahead.
            await asyncio.shield(self._ahead)

    def pass_on(self) -> None:
        """Let the next message through once those ahead have passed (idempotent).

        Called right before ``Engine.handle``, whose FIFO conversation lock is taken
        before its first suspension, so the engine sees the messages in order; and when
        a message is dropped or needs no place in line.
        """
        if self._passed:
            return
        self._passed = True
        ahead = self._ahead
        if ahead is None or ahead.done():
            self._open()
        else:
            ahead.add_done_callback(lambda _: self._open())

    def _open(self) -> None:
        if not self._gate.done():
            self._gate.set_result(None)
        self._owner.forget(self._channel_id, self._gate)


class Turnstile:
    """The per-channel lines; tickets must be taken in arrival order."""

    def __init__(self) -> None:
        self._last: dict[int, asyncio.Future[None]] = {}

    def ticket(self, channel_id: int) -> Ticket:
        """A place behind the channel's latest message (call without awaiting first)."""
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ahead = self._last.get(channel_id)
        self._last[channel_id] = gate
        return Ticket(self, channel_id, ahead, gate)

    def forget(self, channel_id: int, gate: asyncio.Future[None]) -> None:
        """Drop a channel's line once its last message has passed (bounded memory)."""
        if self._last.get(channel_id) is gate:
            del self._last[channel_id]

    def __len__(self) -> int:
        return len(self._last)
