"""Finding out which server the base URL points at, and each model's real context window.

Runs with every ``/models`` fetch (cached with it): the kind is settled once (setting,
URL, ``/models`` shape, then probes of llama.cpp's ``/props`` and Ollama's
``/api/version``), the windows are refreshed each time because a local server may be
restarted with another ``n_ctx``. Probes are single short requests whose failures only
mean "not that kind of server"; they never fail the model list.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import httpx

from bot.context import CONSERVATIVE_CONTEXT_WINDOW
from bot.llm.provider import (
    Provider,
    ProviderKind,
    api_root,
    kind_from_models,
    kind_from_url,
    openai_window,
    window_from_ollama_show,
    window_from_props,
)
from bot.types import ModelInfo

__all__ = ["Discovery"]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
# Ollama lists every pulled model; asking each one's size is one request per model.
_MAX_OLLAMA_SHOWS = 32


class Discovery:
    """Settles the ``Provider`` and fills in context windows the model list lacks."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        configured: ProviderKind | None = None,
        fallback_window: int | None = None,
    ) -> None:
        self._http = http
        self._root = api_root(base_url)
        self._fallback = fallback_window
        self.provider: Provider | None = None
        self._props_window: int | None = None
        self._ollama: dict[str, int] = {}  # model id -> num_ctx, asked once per model
        if configured is not None:
            self.provider = Provider(configured, "API_PROVIDER")
        elif (by_url := kind_from_url(base_url)) is not None:
            self.provider = Provider(by_url, "base URL")

    async def resolve(self, payload: object, models: Sequence[ModelInfo]) -> list[ModelInfo]:
        """Settle the provider (first time only) and return ``models`` with windows."""
        if self.provider is None:
            self.provider = await self._detect(payload)
            log.info(
                "model API is %s (detected by %s)", self.provider.label, self.provider.detected_by
            )
        kind = self.provider.kind
        if kind is ProviderKind.OLLAMA:
            return await self._ollama_windows(models)
        server_window = None
        if kind is ProviderKind.LLAMACPP:  # re-read: the server may restart with another n_ctx
            server_window = window_from_props(await self._get_json("/props"))
            # A failed probe keeps the last figure rather than falling back to a guess.
            server_window = self._props_window = server_window or self._props_window
        result = []
        for model in models:
            if model.context_source == "server":
                result.append(model)
                continue
            window = server_window
            if window is None and kind is ProviderKind.OPENAI:
                window = openai_window(model.id)
            result.append(self._with_window(model, window))
        return result

    async def _detect(self, payload: object) -> Provider:
        by_models = kind_from_models(payload)
        if by_models is not None:
            return Provider(by_models, "its model list")
        if window_from_props(await self._get_json("/props")) is not None:
            return Provider(ProviderKind.LLAMACPP, "GET /props")
        version = await self._get_json("/api/version")
        if isinstance(version, Mapping) and isinstance(version.get("version"), str):
            return Provider(ProviderKind.OLLAMA, "GET /api/version")
        return Provider(ProviderKind.OTHER, "no distinctive endpoint")

    def _with_window(self, model: ModelInfo, window: int | None) -> ModelInfo:
        if window is not None:
            return replace(model, context_window=window, context_source="server")
        if self._fallback is not None:
            return replace(model, context_window=self._fallback, context_source="settings")
        return replace(model, context_window=CONSERVATIVE_CONTEXT_WINDOW, context_source="default")

    async def _ollama_windows(self, models: Sequence[ModelInfo]) -> list[ModelInfo]:
        async def one(model: ModelInfo) -> ModelInfo:
            if model.context_source == "server":
                return model
            if model.id not in self._ollama:
                shown = await self._post_json("/api/show", {"model": model.id})
                window = window_from_ollama_show(shown) if shown else None
                if window is None:
                    return self._with_window(model, None)  # asked again next refresh
                self._ollama[model.id] = window
            return self._with_window(model, self._ollama[model.id])

        head = await asyncio.gather(*(one(m) for m in models[:_MAX_OLLAMA_SHOWS]))
        return [*head, *(self._with_window(m, None) for m in models[_MAX_OLLAMA_SHOWS:])]

    async def _get_json(self, path: str) -> object:
        return await self._probe("GET", path, None)

    async def _post_json(self, path: str, body: dict[str, object]) -> object:
        return await self._probe("POST", path, body)

    async def _probe(self, method: str, path: str, body: dict[str, object] | None) -> object:
        """The JSON of one probe, or None for any failure (not that kind of server)."""
        try:
            response = await self._http.request(
                method, self._root + path, json=body, timeout=_PROBE_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            log.debug("probe %s %s failed: %s", method, path, type(exc).__name__)
            return None
        if response.status_code != 200:
            return None
        try:
            return json.loads(response.content)
        except ValueError:
            return None
