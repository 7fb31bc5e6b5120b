"""Test settings split as ``python -m bot`` loads them: the core group and a platform's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bot.settings import AdapterSettings, Settings

__all__ = ["Configured", "configure"]

S = TypeVar("S", bound=AdapterSettings)


@dataclass(frozen=True)
class Configured(Generic[S]):
    """The core ``Settings`` and one platform's group; core fields read through."""

    core: Settings
    platform: S

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


def configure(
    core: Callable[..., Settings], platform: type[S], prefix: str, values: dict[str, Any]
) -> Configured[S]:
    """Split ``values``: ``<prefix>*`` keys (prefix removed) to ``platform``, the rest to
    ``core`` (a settings factory such as the ``settings_factory`` fixture)."""
    own = {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}
    rest = {k: v for k, v in values.items() if not k.startswith(prefix)}
    return Configured(core(**rest), platform(_env_file=None, **own))  # type: ignore[call-arg]
