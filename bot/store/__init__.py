"""Store implementations: ``SqliteStore`` and ``PostgresStore`` (durable), ``InMemoryStore``.

``PostgresStore`` loads on first use, so asyncpg (about 10 MB) stays out of a bot that
runs on SQLite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.store.memory import InMemoryStore
from bot.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from bot.store.postgres import PostgresStore

__all__ = ["InMemoryStore", "PostgresStore", "SqliteStore"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from bot.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
