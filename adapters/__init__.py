"""Platform adapters. This module is a registry that imports no platform library.

Each adapter module exposes ``enabled(settings) -> bool`` and a class taking
``(settings, engine)`` with ``async start()`` and ``async aclose()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.settings import Settings

__all__ = ["ADAPTERS", "AdapterSpec"]


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
        enabled=lambda s: s.discord_bot_token is not None,
    ),
    AdapterSpec(
        name="slack",
        module="adapters.slack",
        class_name="SlackAdapter",
        requirement="SLACK_BOT_TOKEN plus SLACK_APP_TOKEN (Socket Mode) or "
        "SLACK_SIGNING_SECRET (HTTP mode)",
        enabled=lambda s: (
            s.slack_bot_token is not None
            and (s.slack_app_token is not None or s.slack_signing_secret is not None)
        ),
    ),
)
