"""The ``/models`` list, parsed into ``ModelInfo`` and cached with a TTL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from bot.context import CONSERVATIVE_CONTEXT_WINDOW
from bot.errors import UpstreamError, UpstreamServerError
from bot.ports import Clock
from bot.types import ModelInfo

__all__ = ["ModelCatalog", "parse_models"]

log = logging.getLogger(__name__)

_STALE_GRACE_S = 30.0

# Groq says context_window; OpenRouter context_length; vLLM max_model_len.
_CONTEXT_KEYS = ("context_window", "context_length", "max_model_len")


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value > 0 else None


def _model(entry: Mapping[str, object]) -> ModelInfo | None:
    model_id = entry.get("id")
    if not isinstance(model_id, str) or not model_id:
        return None
    context = next(
        (c for c in (_positive_int(entry.get(k)) for k in _CONTEXT_KEYS) if c is not None), None
    )
    owned_by = entry.get("owned_by")
    active = entry.get("active")
    return ModelInfo(
        id=model_id,
        owned_by=owned_by if isinstance(owned_by, str) else "",
        # Without a figure here, bot.llm.discovery fills one in ("unknown" until then).
        context_window=context or CONSERVATIVE_CONTEXT_WINDOW,
        context_source="server" if context else "unknown",
        max_completion_tokens=_positive_int(entry.get("max_completion_tokens")),
        active=active if isinstance(active, bool) else True,
    )


def parse_models(payload: object) -> list[ModelInfo]:
    """``ModelInfo`` for each entry of a ``{"data": [...]}`` models response, sorted by id."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, list):
        raise UpstreamServerError(detail="models response has no data list")
    models = [m for m in (_model(e) for e in data if isinstance(e, Mapping)) if m is not None]
    return sorted(models, key=lambda m: m.id)


class ModelCatalog:
    """Caches what ``fetch`` returns for ``ttl_s`` seconds of ``clock`` time.

    Concurrent callers share one fetch. When a refresh after expiry fails, the stale
    list is served (and the failure logged) so a flaky ``/models`` never blocks chats,
    and kept for ``min(ttl_s, 30)`` s before the next try so each turn doesn't pay for
    a failing fetch; an explicit ``refresh=True`` or an empty cache raises instead.
    """

    def __init__(
        self,
        *,
        fetch: Callable[[], Awaitable[list[ModelInfo]]],
        ttl_s: float,
        clock: Clock,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._models: list[ModelInfo] | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._models is not None and self._clock.now() < self._expires_at

    async def get(self, *, refresh: bool = False) -> list[ModelInfo]:
        """The model list, fetched when missing, expired, or ``refresh`` is true."""
        if not refresh and self._fresh() and self._models is not None:
            return list(self._models)
        async with self._lock:
            # Another caller may have refreshed while we waited for the lock.
            if not refresh and self._fresh() and self._models is not None:
                return list(self._models)
            try:
                models = await self._fetch()
            except UpstreamError as exc:
                if refresh or self._models is None:
                    raise
                log.warning("model list refresh failed, serving the cached list: %s", exc)
                self._expires_at = self._clock.now() + min(self._ttl_s, _STALE_GRACE_S)
                return list(self._models)
            self._models, self._expires_at = models, self._clock.now() + self._ttl_s
            return list(models)

    async def find(self, model_id: str) -> ModelInfo | None:
        """The entry for ``model_id`` (exact id), or None when the API doesn't list it."""
        for model in await self.get():
            if model.id == model_id:
                return model
        return None
