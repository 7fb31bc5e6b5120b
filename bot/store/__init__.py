"""Conversation store implementations: ``SqliteStore`` (durable) and ``InMemoryStore``."""

from bot.store.memory import InMemoryStore
from bot.store.sqlite import SqliteStore

__all__ = ["InMemoryStore", "SqliteStore"]
