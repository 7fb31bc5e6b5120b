"""``PgFleet``: conversation leases for bot processes sharing PostgreSQL.

The part of ``FleetCoordination`` that only a shared database needs (its table is in
schema step 5, PostgreSQL only). A conversation's lease is a row (holder, expiry)
rather than an advisory lock, so a turn does not pin one pooled connection for its
whole length, and a holder that dies (kill -9, a lost host) lets go when its lease
expires; a live holder renews it every third of the TTL.
Times are the server's clock (``clock_timestamp()``), so processes on hosts with
skewed clocks agree on expiry.

A process waiting for a lease polls with capped exponential backoff and jitter: a
conversation's turns rarely collide across processes (only when two messages of one
thread reach two replicas at once), so polling costs nothing in the common case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg

from bot.errors import StoreError
from bot.types import ConversationKey

__all__ = ["LEASE_TTL_S", "Connect", "PgFleet"]

log = logging.getLogger(__name__)

LEASE_TTL_S = 30.0  # a dead holder's conversation is free again within this
_POLL_FIRST_S = 0.02
_POLL_MAX_S = 0.5

_NOW = "extract(epoch FROM clock_timestamp())"

_TAKE_LEASE_SQL = f"""
    INSERT INTO conversation_leases (storage_id, holder, expires_at)
    VALUES ($1, $2, {_NOW} + $3)
    ON CONFLICT (storage_id) DO UPDATE
        SET holder = excluded.holder, expires_at = excluded.expires_at
    WHERE conversation_leases.expires_at < {_NOW}
    RETURNING holder"""
_RENEW_LEASE_SQL = f"""
    UPDATE conversation_leases SET expires_at = {_NOW} + $3
    WHERE storage_id = $1 AND holder = $2"""
_DROP_LEASE_SQL = "DELETE FROM conversation_leases WHERE storage_id = $1 AND holder = $2"

Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
"""A pooled connection whose errors arrive as ``StoreError`` (``PostgresStore``'s)."""


class PgFleet:
    """Conversation leases on ``pool``'s database."""

    def __init__(self, connection: Connect, *, lease_ttl_s: float = LEASE_TTL_S) -> None:
        self._connection = connection
        self._ttl = lease_ttl_s
        self._holder = uuid.uuid4().hex  # this process

    @asynccontextmanager
    async def turn_lease(self, conversation: ConversationKey) -> AsyncIterator[None]:
        """Hold ``conversation``'s lease for the block, waiting while another process
        holds it; renewed in the background, dropped on exit (even on cancellation)."""
        sid = conversation.storage_id()
        delay = _POLL_FIRST_S
        while not await self._take(sid):
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, _POLL_MAX_S)
        renewer = asyncio.create_task(self._renew(sid), name="lease-renewal")
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            # Shielded: a cancelled turn must still free its conversation at once
            # rather than leave the others waiting for the expiry.
            await asyncio.shield(self._drop(sid))

    async def _take(self, sid: str) -> bool:
        async with self._connection() as conn:
            taken = await conn.fetchval(_TAKE_LEASE_SQL, sid, self._holder, self._ttl)
            return taken is not None

    async def _renew(self, sid: str) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                async with self._connection() as conn:
                    await conn.execute(_RENEW_LEASE_SQL, sid, self._holder, self._ttl)
            except StoreError as exc:
                # The turn goes on; if renewals keep failing the lease lapses and another
                # process may start this conversation's next turn early.
                log.warning("could not renew the lease of %s: %s", sid, exc)

    async def _drop(self, sid: str) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(_DROP_LEASE_SQL, sid, self._holder)
        except StoreError as exc:
            log.warning("could not release the lease of %s (it expires): %s", sid, exc)
