"""Logging setup: every line carries the conversation key; secrets are redacted."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "RedactingFilter", "configure_logging", "conversation_context"]

_conversation: contextvars.ContextVar[str] = contextvars.ContextVar("conversation", default="-")


@contextmanager
def conversation_context(storage_id: str) -> Iterator[None]:
    """Tag log lines emitted inside the block (and tasks it starts) with the conversation."""
    token = _conversation.set(storage_id)
    try:
        yield
    finally:
        _conversation.reset(token)


class RedactingFilter(logging.Filter):
    """Adds ``record.conversation`` and replaces secret values in the final message."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        # Short values would redact ordinary words; real tokens are long.
        self._secrets = [s for s in secrets if len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        record.conversation = _conversation.get()
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
    conversation and platform (both "-" outside a conversation), and the traceback
    if any. It formats what ``RedactingFilter`` already redacted."""

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
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)
