"""Slack adapter package; ``SlackAdapter`` itself is in ``adapters.slack.adapter``.

The registry imports ``adapters.slack.config`` in every process to see whether Slack is
enabled, and that runs this file: it must not load slack-bolt, slack-sdk and aiohttp's
server (about 8 MB of a bot that serves only Discord). ``SlackAdapter`` and
``EVENTS_PATH`` load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.slack.config import SlackSettings

if TYPE_CHECKING:
    from adapters.slack.adapter import EVENTS_PATH, SlackAdapter

__all__ = ["EVENTS_PATH", "SlackAdapter", "SlackSettings"]


def __getattr__(name: str) -> Any:
    if name in ("EVENTS_PATH", "SlackAdapter"):
        from adapters.slack import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
