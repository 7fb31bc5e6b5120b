"""``FleetLedger``: the fleet quota's SQL (asyncpg), and nothing of its policy.

One pool for transactions and one connection that only ``LISTEN``s. A transaction
(``transaction()``) reads the database's clock first (``clock_timestamp()``, epoch
seconds): every time stored in the shared state is on that clock, so processes whose
own clocks disagree still agree on how far a bucket has refilled. Locks are taken in one
order everywhere: a model's account row (``FOR UPDATE``), then a user's advisory lock.

asyncpg's and the socket's errors become ``StoreError`` here, once; its text names the
server (host, port, database), never the DSN, which may carry a password.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bot.errors import StoreError
from bot.limits.fleet_schema import FLEET_QUOTA_DDL, SCHEMA_LOCK

__all__ = ["CHANNEL", "FleetLedger", "RequestRow", "Tx", "server_name"]

log = logging.getLogger(__name__)

# NOTIFY channel: the payload is the model whose capacity or queue changed.
CHANNEL = "groqbot_quota"
_EPOCH_NOW = "extract(epoch from clock_timestamp())::float8"


def server_name(dsn: str) -> str:
    """``host:port/database`` of a DSN, without user or password (for messages)."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


@contextmanager
def map_pg_errors(server: str) -> Iterator[None]:
    """asyncpg / socket failures → ``StoreError`` naming the server only."""
    try:
        yield
    # InternalClientError: asyncpg's protocol state after the server cut the connection
    # mid-operation (seen when the database's backends are terminated).
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    ) as exc:
        raise StoreError(detail=f"quota database {server}: {type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One admitted request not yet settled (``sent``: it holds its reservation)."""

    id: int
    process_id: str
    model: str
    user_key: str
    tokens: int
    user_tokens: int
    minute_start: float
    day_start: float
    sent: bool


class Tx:
    """One open transaction; ``now`` is the database's clock at its start."""

    def __init__(self, conn: Any, now: float, process_id: str) -> None:
        self.conn, self.now, self._process = conn, now, process_id

    async def account_state(self, model: str, *, lock: bool = True) -> dict[str, Any] | None:
        """``model``'s account state (None: no row yet), its row locked for the rest of
        the transaction when ``lock``."""
        query = "SELECT state FROM quota_fleet_account WHERE model = $1"
        state: dict[str, Any] | None = await self.conn.fetchval(
            query + (" FOR UPDATE" if lock else ""), model
        )
        return state

    async def add_account(self, model: str, state: dict[str, Any]) -> None:
        """Make ``model``'s row with ``state`` unless it exists (or is being made: this
        waits for that transaction)."""
        await self.conn.execute(
            "INSERT INTO quota_fleet_account (model, state) VALUES ($1, $2)"
            " ON CONFLICT (model) DO NOTHING",
            model,
            state,
        )

    async def models(self) -> list[str]:
        rows = await self.conn.fetch("SELECT model FROM quota_fleet_account ORDER BY model")
        return [str(row[0]) for row in rows]

    async def save_account(self, model: str, state: dict[str, Any]) -> None:
        await self.conn.execute(
            "UPDATE quota_fleet_account SET state = $2 WHERE model = $1", model, state
        )

    async def lock_user(self, user_key: str, model: str) -> tuple[dict[str, Any] | None, int, int]:
        """Lock one user (across models) for the rest of the transaction; their state for
        ``model`` (None: none yet), requests in flight and of those, running."""
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", user_key)
        row = await self.conn.fetchrow(
            "SELECT (SELECT state FROM quota_fleet_user WHERE user_key = $1 AND model = $2),"
            " count(r.id), count(r.id) FILTER (WHERE r.sent)"
            " FROM quota_fleet_request r WHERE r.user_key = $1",
            user_key,
            model,
        )
        return row[0], int(row[1]), int(row[2])

    async def user_requests(self, user_key: str) -> tuple[int, int]:
        """A user's requests in flight and, of those, running (no lock: a hint)."""
        row = await self.conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE sent) FROM quota_fleet_request"
            " WHERE user_key = $1",
            user_key,
        )
        return int(row[0]), int(row[1])

    async def user_states(self, user_key: str) -> tuple[dict[str, dict[str, Any] | None], int]:
        """A user's state per model and their requests in flight (no lock)."""
        rows = await self.conn.fetch(
            "SELECT model, state FROM quota_fleet_user WHERE user_key = $1", user_key
        )
        in_flight = await self.conn.fetchval(
            "SELECT count(*) FROM quota_fleet_request WHERE user_key = $1", user_key
        )
        return {str(row[0]): row[1] for row in rows}, int(in_flight)

    async def save_user(self, user_key: str, model: str, state: dict[str, Any]) -> None:
        await self.conn.execute(
            "INSERT INTO quota_fleet_user (user_key, model, state) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_key, model) DO UPDATE SET state = EXCLUDED.state",
            user_key,
            model,
            state,
        )

    async def queue(self, model: str) -> tuple[int, float, int | None]:
        """Requests waiting for ``model``'s account: how many, the tokens they reserve,
        and the one served next — a user with fewer requests running first, arrival
        order otherwise, skipping processes whose lease ran out (not reaped yet)."""
        row = await self.conn.fetchrow(
            "SELECT count(*), coalesce(sum(tokens), 0),"
            " (SELECT r.id FROM quota_fleet_request r"
            "  JOIN quota_fleet_process p ON p.id = r.process_id"
            "  WHERE r.model = $1 AND NOT r.sent AND p.lease_until > clock_timestamp()"
            "  ORDER BY (SELECT count(*) FROM quota_fleet_request s"
            "            WHERE s.user_key = r.user_key AND s.sent), r.id"
            "  LIMIT 1)"
            " FROM quota_fleet_request WHERE model = $1 AND NOT sent",
            model,
        )
        return int(row[0]), float(row[1]), row[2]

    async def insert_request(
        self, model: str, user_key: str, tokens: int, user_tokens: int, minute: float, day: float
    ) -> int:
        request_id: int = await self.conn.fetchval(
            "INSERT INTO quota_fleet_request"
            " (process_id, model, user_key, tokens, user_tokens, minute_start, day_start)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            self._process,
            model,
            user_key,
            tokens,
            user_tokens,
            minute,
            day,
        )
        return request_id

    async def mark_sent(self, request_id: int) -> None:
        await self.conn.execute(
            "UPDATE quota_fleet_request SET sent = true WHERE id = $1", request_id
        )

    async def delete_request(self, request_id: int) -> RequestRow | None:
        """Remove a request; its row, or None when it was already gone (reaped)."""
        row = await self.conn.fetchrow(
            "DELETE FROM quota_fleet_request WHERE id = $1 RETURNING *", request_id
        )
        return None if row is None else RequestRow(**dict(row))

    async def request_exists(self, request_id: int) -> bool:
        found = await self.conn.fetchval(
            "SELECT true FROM quota_fleet_request WHERE id = $1", request_id
        )
        return bool(found)

    async def claim_expired(self, process_id: str) -> bool:
        """Lock ``process_id``'s row if its lease has run out: whether it had (another
        process reaping it at the same time waits here, then finds it gone)."""
        found = await self.conn.fetchval(
            "SELECT true FROM quota_fleet_process WHERE id = $1"
            " AND lease_until < clock_timestamp() FOR UPDATE",
            process_id,
        )
        return bool(found)

    async def requests_of(self, process_id: str) -> list[RequestRow]:
        rows = await self.conn.fetch(
            "SELECT * FROM quota_fleet_request WHERE process_id = $1 ORDER BY model, id",
            process_id,
        )
        return [RequestRow(**dict(row)) for row in rows]

    async def forget_process(self, process_id: str) -> None:
        await self.conn.execute("DELETE FROM quota_fleet_request WHERE process_id = $1", process_id)
        await self.conn.execute("DELETE FROM quota_fleet_process WHERE id = $1", process_id)

    async def notify(self, model: str) -> None:
        """Wake every process's waiters for ``model`` (sent at commit)."""
        await self.conn.execute("SELECT pg_notify($1, $2)", CHANNEL, model)


async def _init(conn: Any) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class FleetLedger:
    """The shared tables of one fleet, as seen by process ``process_id``."""

    def __init__(self, dsn: str, *, process_id: str, lease_s: float, pool_size: int) -> None:
        self._dsn = dsn
        self.server = server_name(dsn)
        self.process_id = process_id
        self.lease_s = lease_s
        self._pool_size = pool_size
        self._pool: Any = None
        self._listener: Any = None
        self._on_notify: Callable[[str], None] | None = None

    async def open(self) -> None:
        """Connect, apply the DDL, register this process with a fresh lease."""
        with map_pg_errors(self.server):
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, init=_init, timeout=10
            )
            async with self._pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
                try:
                    await conn.execute(FLEET_QUOTA_DDL)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)
            await self.renew()

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close(timeout=2)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction on a pooled connection, with the database's time."""
        if self._pool is None:
            raise StoreError(detail="quota database used before open() or after aclose()")
        with map_pg_errors(self.server):
            async with self._pool.acquire() as conn, conn.transaction():
                now = await conn.fetchval(f"SELECT {_EPOCH_NOW}")
                yield Tx(conn, float(now), self.process_id)

    async def renew(self) -> None:
        """Extend this process's lease by ``lease_s`` (re-registering it if reaped)."""
        with map_pg_errors(self.server):
            await self._pool.execute(
                "INSERT INTO quota_fleet_process (id, lease_until)"
                " VALUES ($1, clock_timestamp() + make_interval(secs => $2))"
                " ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until",
                self.process_id,
                self.lease_s,
            )

    async def expired(self) -> list[str]:
        """Processes whose lease has run out (crashed or cut off)."""
        with map_pg_errors(self.server):
            rows = await self._pool.fetch(
                "SELECT id FROM quota_fleet_process WHERE lease_until < clock_timestamp()"
            )
        return [str(row[0]) for row in rows]

    async def listen(self, on_notify: Callable[[str], None]) -> None:
        """Call ``on_notify(model)`` for every NOTIFY on the channel, from any process."""
        self._on_notify = on_notify
        with map_pg_errors(self.server):
            self._listener = await asyncpg.connect(self._dsn, timeout=10)
            await self._listener.add_listener(CHANNEL, self._heard)

    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def relisten(self) -> None:
        """Reconnect the listener after it was lost (the heartbeat calls this)."""
        if self._on_notify is None or self.listening():
            return
        if self._listener is not None:
            self._listener.terminate()
        await self.listen(self._on_notify)
        log.info("quota: listening for wake-ups again on %s", self.server)

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if self._on_notify is not None:
            self._on_notify(payload)

    async def ping(self) -> None:
        with map_pg_errors(self.server):
            await asyncio.wait_for(self._pool.fetchval("SELECT 1"), 2)
