"""Platform adapters: the registry. This module imports no platform library.

A platform is a package here plus one ``AdapterSpec`` line below: its settings class
(``adapters.<name>.config``, importable without the platform library; it alone decides
whether the platform is enabled) and its adapter class, built from an
``AdapterContext``. ``python -m bot run`` starts every enabled one.
"""

from __future__ import annotations

from bot.adapter import AdapterSpec

__all__ = ["ADAPTERS"]

ADAPTERS: list[AdapterSpec] = [
    AdapterSpec(
        "discord", "adapters.discord.config:DiscordSettings", "adapters.discord:DiscordAdapter"
    ),
    AdapterSpec("slack", "adapters.slack.config:SlackSettings", "adapters.slack:SlackAdapter"),
]
