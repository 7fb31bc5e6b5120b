"""Store benchmark (issue 16): context load, a window of 20 messages, from a conversation
of 10 vs 10,000 messages, on PostgreSQL and on SQLite. Prints medians and the ratio.

The window's cost must depend on what it returns, not on the conversation's length
(target ratio ≤ 1.5). PostgreSQL is a throwaway local cluster (``tests/pg_cluster.py``,
Debian's ``postgresql`` package) unless ``--url`` or ``DATABASE_URL`` names a database;
there the benchmark adds two conversations and resets them at the end.

Run: ``.venv/bin/python benchmarks/bench_store.py [--runs N] [--url postgresql://…]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.ports import Store  # noqa: E402
from bot.store import PostgresStore, SqliteStore  # noqa: E402
from bot.types import ConversationKey, Platform  # noqa: E402
from tests.pg_cluster import PgCluster  # noqa: E402

TOKENS = 50  # per message
WINDOW = 20
LONG = 10_000
SHORT = 10


async def conversations(
    store: Store, bulk: Callable[[ConversationKey], Awaitable[None]]
) -> tuple[ConversationKey, ConversationKey]:
    """A 10-message and a 10,000-message conversation (the bulk of it inserted directly)."""
    tag = uuid.uuid4().hex[:8]
    short = ConversationKey(Platform("terminal"), dm_user=f"short-{tag}")
    long = ConversationKey(Platform("terminal"), dm_user=f"long-{tag}")
    for key, count in ((short, SHORT), (long, 1)):
        for i in range(count):
            role = "user" if i % 2 == 0 else "assistant"
            await store.add_message(key, role=role, content=f"message {i}", tokens=TOKENS)
    await bulk(long)
    return short, long


async def measure(
    store: Store, short: ConversationKey, long: ConversationKey, runs: int
) -> tuple[float, float]:
    timings: dict[ConversationKey, list[float]] = {short: [], long: []}
    for key in (short, long):  # warm caches and prepared statements
        await store.window(key, token_budget=WINDOW * TOKENS)
    for _ in range(runs):
        for key in (short, long):
            start = time.perf_counter()
            await store.window(key, token_budget=WINDOW * TOKENS)
            timings[key].append(time.perf_counter() - start)
    got = len(await store.window(long, token_budget=WINDOW * TOKENS))
    assert got == WINDOW, got
    return statistics.median(timings[short]) * 1e6, statistics.median(timings[long]) * 1e6


async def bench_sqlite(runs: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = SqliteStore(path)
        await store.open()

        async def bulk(key: ConversationKey) -> None:
            with closing(sqlite3.connect(path, isolation_level=None)) as conn:
                [(cid,)] = conn.execute(
                    "SELECT id FROM conversations WHERE storage_id = ?", (key.storage_id(),)
                ).fetchall()
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO messages (conversation_id, role, content, tokens, created_at)"
                    " VALUES (?, 'user', ?, ?, 0)",
                    [(cid, f"message {i}", TOKENS) for i in range(LONG - 1)],
                )
                conn.execute("COMMIT")

        try:
            short, long = await conversations(store, bulk)
            return await measure(store, short, long, runs)
        finally:
            await store.aclose()


async def bench_postgres(url: str, runs: int) -> tuple[float, float]:
    store = PostgresStore(url, pool_size=2)
    await store.open()

    async def bulk(key: ConversationKey) -> None:
        conn = await asyncpg.connect(url)
        try:
            cid = await conn.fetchval(
                "SELECT id FROM conversations WHERE storage_id = $1", key.storage_id()
            )
            await conn.execute(
                "INSERT INTO messages (conversation_id, role, content, tokens, created_at)"
                " SELECT $1, 'user', 'message ' || n, $2, 0 FROM generate_series(1, $3) AS n",
                cid,
                TOKENS,
                LONG - 1,
            )
            await conn.execute("ANALYZE messages")
        finally:
            await conn.close()

    try:
        short, long = await conversations(store, bulk)
        try:
            return await measure(store, short, long, runs)
        finally:
            await store.reset(short)
            await store.reset(long)
    finally:
        await store.aclose()


def report(name: str, short: float, long: float) -> None:
    print(
        f"{name:<11} {SHORT} messages {short:7.0f} µs   {LONG:,} messages {long:7.0f} µs"
        f"   ratio {long / short:.2f} (target ≤ 1.5)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    print(f"context load, window of {WINDOW} messages, median of {args.runs}:")
    report("SQLite", *await bench_sqlite(args.runs))
    if args.url:
        report("PostgreSQL", *await bench_postgres(args.url, args.runs))
        return
    cluster = PgCluster()
    cluster.start()
    try:
        report("PostgreSQL", *await bench_postgres(cluster.create_database(), args.runs))
    finally:
        cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
