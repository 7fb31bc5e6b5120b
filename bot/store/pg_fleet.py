"""``PgFleet``: event claims and conversation leases for bot processes sharing PostgreSQL.

The part of ``FleetCoordination`` that only a shared database needs. A conversation's
lease is a row (holder, expiry) rather than an advisory lock, so a turn does not pin
one pooled connection for its whole length, and a holder that dies (kill -9, a lost
host) lets go when its lease expires; a live holder renews it every third of the TTL.
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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg

from bot.errors import StoreError
from bot.types import ConversationKey

__all__ = ["LEASE_TTL_S", "PG_FLEET_DDL", "PgFleet"]

log = logging.getLogger(__name__)

LEASE_TTL_S = 30.0  # a dead holder's conversation is free again within this
_POLL_FIRST_S = 0.02
_POLL_MAX_S = 0.5

_NOW = "extract(epoch FROM clock_timestamp())"

_CLAIM_EVENT_SQL = f"""
    INSERT INTO event_claims (event_id, claimed_at) VALUES ($1, {_NOW})
    ON CONFLICT (event_id) DO UPDATE SET claimed_at = excluded.claimed_at
    WHERE event_claims.claimed_at < {_NOW} - $2
    RETURNING event_id"""
_PRUNE_CLAIMS_SQL = f"DELETE FROM event_claims WHERE claimed_at < {_NOW} - $1"
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
_PRUNE_EVERY = 256  # claims between deletions of expired ones


class PgFleet:
    """Claims and leases on ``pool``'s database (tables from the store's migrations)."""

    def __init__(self, pool: asyncpg.Pool, *, lease_ttl_s: float = LEASE_TTL_S) -> None:
        self._pool = pool
        self._ttl = lease_ttl_s
        self._holder = uuid.uuid4().hex  # this process
        self._claims = 0

    async def claim_event(self, event_id: str, *, ttl_s: float) -> bool:
        """True for the first claim of ``event_id`` within ``ttl_s`` by any process."""
        self._claims += 1
        with _store_errors():
            async with self._pool.acquire() as conn:
                if self._claims % _PRUNE_EVERY == 1:
                    await conn.execute(_PRUNE_CLAIMS_SQL, ttl_s)
                return await conn.fetchval(_CLAIM_EVENT_SQL, event_id, ttl_s) is not None

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
        with _store_errors():
            async with self._pool.acquire() as conn:
                taken = await conn.fetchval(_TAKE_LEASE_SQL, sid, self._holder, self._ttl)
                return taken is not None

    async def _renew(self, sid: str) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute(_RENEW_LEASE_SQL, sid, self._holder, self._ttl)
            except (asyncpg.PostgresError, OSError) as exc:
                # The turn goes on; if renewals keep failing the lease lapses and another
                # process may start this conversation's next turn early.
                log.warning("could not renew the lease of %s: %s", sid, exc)

    async def _drop(self, sid: str) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(_DROP_LEASE_SQL, sid, self._holder)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("could not release the lease of %s (it expires): %s", sid, exc)


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise StoreError(detail=f"PostgreSQL: {type(exc).__name__}: {exc}") from exc


# The tables above, for the PostgreSQL schema (folded into the store's migrations).
PG_FLEET_DDL = (
    """CREATE TABLE IF NOT EXISTS event_claims (
        event_id TEXT PRIMARY KEY,
        claimed_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS event_claims_by_age ON event_claims (claimed_at)",
    """CREATE TABLE IF NOT EXISTS conversation_leases (
        storage_id TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    )""",
)
