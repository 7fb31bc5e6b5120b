"""``python -m bot migrate``: copy a SQLite database into PostgreSQL, ids and all.

Every table of the schema (``tables_at``: a table a later step adds is copied too) is
read in batches in rowid order and inserted with ``ON CONFLICT DO NOTHING``, so running
the copy again copies nothing twice. Each batch is one transaction. Afterwards every
identity sequence is moved past the highest id copied, and past SQLite's AUTOINCREMENT
high-water mark, so ids of messages forgotten by a reset are never handed out again.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import asyncpg

from bot.errors import ConfigError
from bot.store.migrations import migrate, migrate_postgres, tables_at
from bot.store.postgres import CONNECT_TIMEOUT_S, map_pg_errors, masked_url
from bot.store.schema import Table
from bot.store.sqlite import BUSY_TIMEOUT_MS, map_store_errors

__all__ = ["TableCopy", "copy_sqlite_to_postgres", "sqlite_path", "summary"]

BATCH = 5000


@dataclass(frozen=True, slots=True)
class TableCopy:
    """What the copy did to one table: rows read from SQLite, rows new in PostgreSQL."""

    table: str
    read: int
    copied: int


def sqlite_path(source: str) -> Path:
    """The file of ``--from sqlite:PATH`` (``sqlite:///abs/path`` works too)."""
    if not source.startswith("sqlite:"):
        raise ConfigError(f"--from {source}: expected sqlite:PATH, e.g. sqlite:./data/bot.db")
    rest = source.removeprefix("sqlite:")
    path = Path(rest[2:] if rest.startswith("//") else rest)
    if not path.is_file():
        raise ConfigError(f"--from {source}: there is no file {path}")
    return path


async def copy_sqlite_to_postgres(
    source: Path, url: str, *, progress: Callable[[str], None]
) -> list[TableCopy]:
    """Copy every table of the SQLite file ``source`` into the database at ``url``
    (both brought to the latest schema first); ``progress`` gets a line per batch.

    Raises ``StoreError`` (texts name ``--to`` with the password masked).
    """
    with map_store_errors(source, opening=True):
        lite = await aiosqlite.connect(source, isolation_level=None)
    try:
        with map_store_errors(source, opening=True):
            # The bot may still be running on the file: wait for its writes, as it does.
            await lite.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await migrate(lite, where=str(source))
        with map_pg_errors(url, opening=True, setting="--to"):
            pg = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
        try:
            with map_pg_errors(url, setting="--to"):
                await migrate_postgres(pg, where=masked_url(url))
                return [
                    await _copy_table(lite, pg, table, source, progress)
                    for table in tables_at().values()
                ]
        finally:
            with contextlib.suppress(Exception):
                await pg.close()
    finally:
        await lite.close()


async def _copy_table(
    lite: aiosqlite.Connection,
    pg: asyncpg.Connection,
    table: Table,
    source: Path,
    progress: Callable[[str], None],
) -> TableCopy:
    columns = table.column_names
    names = ", ".join(columns)
    read = copied = 0
    after = 0
    while True:
        with map_store_errors(source):
            async with lite.execute(
                f"SELECT rowid, {names} FROM {table.name} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, BATCH),
            ) as cursor:
                rows = list(await cursor.fetchall())
        if not rows:
            break
        after = rows[-1][0]
        read += len(rows)
        copied += await _insert_new(pg, table, [tuple(r[1:]) for r in rows])
        progress(f"{table.name}: {read:,} read, {copied:,} copied")
    await _advance_sequence(lite, pg, table)
    return TableCopy(table.name, read, copied)


async def _insert_new(pg: asyncpg.Connection, table: Table, rows: list[tuple[object, ...]]) -> int:
    """Insert the rows not there yet (by any unique key) in one transaction; return how
    many were new. COPY into a scratch table, then one INSERT … ON CONFLICT DO NOTHING:
    COPY itself can't skip rows that are already there."""
    names = ", ".join(table.column_names)
    async with pg.transaction():
        await pg.execute(
            f"CREATE TEMP TABLE copy_batch (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        await pg.copy_records_to_table("copy_batch", records=rows, columns=table.column_names)
        status = await pg.execute(
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM copy_batch"
            " ON CONFLICT DO NOTHING"
        )
    return int(status.rsplit(" ", 1)[-1])


async def _advance_sequence(
    lite: aiosqlite.Connection, pg: asyncpg.Connection, table: Table
) -> None:
    """Move the table's identity past every id copied and SQLite's high-water mark."""
    key = table.key
    if key is None:
        return
    high_water = 0
    with contextlib.suppress(sqlite3.OperationalError):  # no sqlite_sequence: no AUTOINCREMENT
        async with lite.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (table.name,)
        ) as cursor:
            row = await cursor.fetchone()
            high_water = int(row[0]) if row else 0
    sequence = await pg.fetchval("SELECT pg_get_serial_sequence($1, $2)", table.name, key.name)
    # The sequence's name comes from PostgreSQL itself, not from input.
    last, called = await pg.fetchrow(f"SELECT last_value, is_called FROM {sequence}")
    top = await pg.fetchval(f"SELECT COALESCE(MAX({key.name}), 0) FROM {table.name}")
    target = max(int(top), high_water, int(last) if called else 0)
    if target > 0:
        await pg.execute("SELECT setval($1, $2, true)", sequence, target)


def summary(copies: list[TableCopy], source: Path, url: str) -> str:
    """One line for the end of the copy."""
    read = sum(c.read for c in copies)
    copied = sum(c.copied for c in copies)
    tables = ", ".join(f"{c.table} {c.copied:,}/{c.read:,}" for c in copies)
    return (
        f"copied {copied:,} of {read:,} rows from {source} to {masked_url(url)} "
        f"({read - copied:,} were there already): {tables}"
    )
