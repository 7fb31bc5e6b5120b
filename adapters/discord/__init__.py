"""Discord adapter package; ``DiscordAdapter`` itself is in ``adapters.discord.adapter``.

The registry imports ``adapters.discord.config`` in every process to see whether Discord
is enabled, and that runs this file: it must not load discord.py in a bot that serves
only Slack. ``DiscordAdapter`` loads on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.discord.config import DiscordSettings

if TYPE_CHECKING:
    from adapters.discord.adapter import DiscordAdapter

__all__ = ["DiscordAdapter", "DiscordSettings"]


def __getattr__(name: str) -> Any:
    if name == "DiscordAdapter":
        from adapters.discord import adapter

        return adapter.DiscordAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
