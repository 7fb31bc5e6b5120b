"""Logging setup: every line carries the conversation key; secrets are redacted."""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "conversation_context",
    "user_hash",
]

_conversation: contextvars.ContextVar[str] = contextvars.ContextVar("conversation", default="-")
_user_hash: contextvars.ContextVar[str] = contextvars.ContextVar("user_hash", default="-")


def user_hash(user_id: str) -> str:
    """A short stable pseudonym of a user id: lines of one user can be followed without
    the log naming them."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:12]


@contextmanager
def conversation_context(storage_id: str, *, user_id: str = "") -> Iterator[None]:
    """Tag log lines emitted inside the block (and tasks it starts) with the conversation
    and, when given, the hash of the user who spoke (``user_hash``)."""
    token = _conversation.set(storage_id)
    user_token = _user_hash.set(user_hash(user_id) if user_id else "-")
    try:
        yield
    finally:
        _user_hash.reset(user_token)
        _conversation.reset(token)


class RedactingFilter(logging.Filter):
    """Adds ``record.conversation`` and ``record.user_hash``; replaces secret values in
    the final message."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        # Short values would redact ordinary words; real tokens are long.
        self._secrets = [s for s in secrets if len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        record.conversation = _conversation.get()
        record.user_hash = _user_hash.get()
        if self._secrets:
            message = record.getMessage()
            if record.exc_info:
                # Format now so a traceback containing a secret is redacted too.
                message += "\n" + logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
                record.exc_text = None
            for secret in self._secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, ()
        return True


def configure_logging(
    level: str, secrets: Sequence[str], quiet: Sequence[str] = (), *, log_format: str = "text"
) -> None:
    """Log to stderr at ``level``, redacting ``secrets`` everywhere; the ``quiet``
    loggers (platform libraries, which adapters name) log warnings and worse only.
    ``log_format`` "json" writes one JSON object per line (``JsonFormatter``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s [%(conversation)s] %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(level.upper())
    except ValueError:
        root.setLevel(logging.INFO)
        root.warning("LOG_LEVEL=%r is not a level; using INFO", level)
    # Library chatter at INFO (every HTTP request) drowns the bot's own lines.
    for name in ("httpx", "httpcore", *quiet):
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message,
    conversation, platform and user_hash ("-" outside a conversation), and the
    traceback if any. It formats what ``RedactingFilter`` already redacted."""

    def format(self, record: logging.LogRecord) -> str:
        conversation = str(getattr(record, "conversation", "-"))
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "conversation": conversation,
            # A conversation's storage id starts with its platform ("discord:ch:…").
            "platform": conversation.split(":", 1)[0] if conversation != "-" else "-",
            "user_hash": str(getattr(record, "user_hash", "-")),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)
