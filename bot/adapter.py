"""What the composition root hands to adapters, and how a platform is registered.

A platform is one package under ``adapters/`` plus one ``AdapterSpec`` line in the
``adapters`` registry: its settings class (an ``AdapterSettings`` with its own
``env_prefix``) and its adapter class, which takes an ``AdapterContext``. Nothing in
``bot/`` changes for a new platform.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from bot.engine import Engine
from bot.ports import Adapter, Clock, PlatformMetrics, Surface
from bot.settings import AdapterSettings
from bot.streaming import EditingSink, EditPacer
from bot.types import TurnStatus

__all__ = ["NO_METRICS", "AdapterContext", "AdapterSpec", "FatalHandler"]

log = logging.getLogger(__name__)

S = TypeVar("S", bound=AdapterSettings)

FatalHandler = Callable[[str], None]
"""Told, once, that an adapter's platform connection is gone and the adapter cannot
restore it (the argument says what failed, in one sentence)."""


def _unsupervised(reason: str) -> None:
    log.critical("%s; nothing will restart the adapter", reason)


class _NoMetrics:
    """``PlatformMetrics`` while the operator endpoint is off: nothing would read them."""

    __slots__ = ()

    def platform_rate_limited(self, platform: str, route: str) -> None:
        pass

    def reply_edits(self, platform: str, edits: int) -> None:
        pass


NO_METRICS: PlatformMetrics = _NoMetrics()


@dataclass(frozen=True, slots=True)
class AdapterContext(Generic[S]):
    """Everything an adapter may use: the engine's operations, the shared edit pacer
    and clock, its own settings group, and ``metrics`` for what only it can count.

    ``on_fatal`` is how an adapter reports that it can no longer hear its platform and
    has given up repairing that itself (reconnecting): instead of running on deaf, the
    process then exits non-zero so that a supervisor restarts it (``bot.app.serve``).
    It may be called from any task on the bot's loop; it returns at once.
    """

    engine: Engine
    pacer: EditPacer
    clock: Clock
    settings: S
    on_fatal: FatalHandler = _unsupervised
    shutdown_grace_s: float = 5.0
    """How long ``aclose`` lets replies in flight finish before cancelling them: well
    inside ``serve``'s shutdown deadline, so a cancelled reply still gets its note."""
    metrics: PlatformMetrics = NO_METRICS
    """Where the adapter reports its platform's 429s and each reply's edits."""

    def editing_sink(self, surface: Surface, platform: str) -> EditingSink:
        """A reply's ``EditingSink`` over ``surface``, on the shared pacer and clock, that
        reports its edits to ``metrics`` when it ends (``platform``: the adapter's name)."""
        metrics = self.metrics
        return EditingSink(
            surface,
            pacer=self.pacer,
            clock=self.clock,
            on_end=lambda edits: metrics.reply_edits(platform, edits),
        )

    async def rewrite_reply(self, surface: Surface, message_ids: Sequence[str], text: str) -> None:
        """Make the messages an earlier process posted for a reply (``message_ids``, on
        ``surface``) show ``text``: by edits, paced like every reply, a message posted
        if the text needs more. For ``Adapter.finalize_reply``; failures are logged."""
        sink = EditingSink(surface, pacer=self.pacer, clock=self.clock, messages=message_ids)
        await sink.finish(text, TurnStatus.INTERRUPTED)


def _attribute(path: str) -> object:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """Where a platform's settings and adapter live, as ``"module:Class"`` paths.

    The settings module must import no platform library, so reading every platform's
    settings (for "is it enabled?" and log redaction) costs no heavy import.
    """

    name: str
    settings_class: str
    adapter_class: str

    def settings_type(self) -> type[AdapterSettings]:
        """The platform's settings class (no platform library is imported)."""
        cls = _attribute(self.settings_class)
        if not (isinstance(cls, type) and issubclass(cls, AdapterSettings)):
            raise TypeError(f"{self.settings_class} is not an AdapterSettings subclass")
        return cls

    def load_settings(self) -> AdapterSettings:
        """The platform's settings, read from the environment and ``.env``."""
        return self.settings_type()()

    def build(self, context: AdapterContext[AdapterSettings]) -> Adapter:
        """Import the adapter (and with it the platform library) and build it."""
        cls = _attribute(self.adapter_class)
        adapter = cls(context)  # type: ignore[operator]
        if not isinstance(adapter, Adapter):
            raise TypeError(f"{self.adapter_class} does not implement bot.ports.Adapter")
        return adapter
