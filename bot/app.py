"""Composition root: builds every concrete object once and owns their lifecycles."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bot.engine import Engine
from bot.errors import AuthenticationFailed, ConfigError, UpstreamError
from bot.limits.config import QuotaConfig
from bot.limits.quota import QuotaManager
from bot.llm.client import CompletionsClient
from bot.ports import Clock, Store, SystemClock
from bot.settings import GROQ_BASE_URL, Settings
from bot.store import InMemoryStore, SqliteStore
from bot.streaming import EditPacer

__all__ = ["Runtime", "open_runtime", "preflight"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Runtime:
    """Everything a running bot holds; adapters get only ``engine``."""

    settings: Settings
    clock: Clock
    store: Store
    completions: CompletionsClient
    quota: QuotaManager | None
    engine: Engine


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, clock: Clock | None = None, ephemeral: bool = False
) -> AsyncIterator[Runtime]:
    """Open the store and the API client, build the engine; close all on exit."""
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        store: Store = (
            InMemoryStore(clock=clock)
            if ephemeral
            else SqliteStore(settings.database_path, clock=clock)
        )
        await store.open()
        stack.push_async_callback(store.aclose)
        completions = CompletionsClient.from_settings(settings, clock=clock)
        stack.push_async_callback(completions.aclose)
        quota: QuotaManager | None = None
        if settings.quota_enabled:
            quota = QuotaManager(
                config=QuotaConfig.from_settings(settings), clock=clock, store=store
            )
            await quota.load()
            # Registered after the store's aclose, so it runs first and counters are saved.
            stack.push_async_callback(quota.aclose)
            completions.add_rate_limit_listener(quota.observe)
        engine = Engine(
            settings=settings,
            store=store,
            completions=completions,
            clock=clock,
            pacer=EditPacer(clock=clock),
            quota=quota,
        )
        yield Runtime(settings, clock, store, completions, quota, engine)


def check_api_key(settings: Settings) -> None:
    """Groq needs a key; self-hosted servers often don't."""
    if settings.groq_api_key is None and settings.api_base_url == GROQ_BASE_URL:
        raise ConfigError(
            "GROQ_API_KEY is not set: create a key at https://console.groq.com/keys and "
            "put GROQ_API_KEY=... in .env (or point API_BASE_URL at another server)."
        )


async def preflight(runtime: Runtime) -> list[str]:
    """Check the key, the base URL and the default model against the live model list.

    Raises ``ConfigError`` when the bot cannot work at all; returns warnings otherwise.
    """
    settings = runtime.settings
    check_api_key(settings)
    try:
        models = await runtime.completions.models(refresh=True)
    except AuthenticationFailed as exc:
        raise ConfigError(exc.user_text) from None
    except UpstreamError as exc:
        raise ConfigError(exc.user_text) from None
    ids = [m.id for m in models if m.active]
    if ids and settings.default_model not in ids:
        return [
            f"DEFAULT_MODEL={settings.default_model} is not offered by "
            f"{settings.api_base_url}; available: {', '.join(ids)}. "
            "Set DEFAULT_MODEL to one of them."
        ]
    return []
