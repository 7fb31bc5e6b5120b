"""Store implementations: ``SqliteStore`` and ``PostgresStore`` (durable), ``InMemoryStore``."""

from bot.store.memory import InMemoryStore
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore

__all__ = ["InMemoryStore", "PostgresStore", "SqliteStore"]
