"""Platform adapters. This module is a registry that imports no platform library.

Each adapter module exposes a class taking ``(settings, engine)`` with ``async start()``
and ``async aclose()``. Whether an adapter is enabled is decided here, once: the
registry's ``enabled`` rule is the one ``run`` uses and the one the adapter checks.
Blank settings (``DISCORD_BOT_TOKEN=``) are already None, so "set" means non-empty.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.settings import Settings

__all__ = ["ADAPTERS", "AdapterSpec", "discord_enabled", "slack_enabled"]


def discord_enabled(settings: Settings) -> bool:
    """A Discord bot token is set."""
    return settings.discord_bot_token is not None


def slack_enabled(settings: Settings) -> bool:
    """A Slack bot token plus an app token (Socket Mode) or a signing secret (HTTP mode)."""
    return settings.slack_bot_token is not None and (
        settings.slack_app_token is not None or settings.slack_signing_secret is not None
    )


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """How to find and enable one adapter."""

    name: str
    module: str
    class_name: str
    requirement: str
    enabled: Callable[[Settings], bool]

    def load(self) -> Any:
        """Import the adapter class (and with it the platform library)."""
        return getattr(importlib.import_module(self.module), self.class_name)


ADAPTERS = (
    AdapterSpec(
        name="discord",
        module="adapters.discord",
        class_name="DiscordAdapter",
        requirement="DISCORD_BOT_TOKEN",
        enabled=discord_enabled,
    ),
    AdapterSpec(
        name="slack",
        module="adapters.slack",
        class_name="SlackAdapter",
        requirement="SLACK_BOT_TOKEN plus SLACK_APP_TOKEN (Socket Mode) or "
        "SLACK_SIGNING_SECRET (HTTP mode)",
        enabled=slack_enabled,
    ),
)
