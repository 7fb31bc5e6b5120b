"""Composition root: builds every concrete object once and owns their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from bot.adapter import NO_METRICS, AdapterContext, AdapterSpec, FatalHandler
from bot.commands import window_text
from bot.context import estimate_tokens, history_budget
from bot.durable import finalize_unfinished
from bot.engine import Engine
from bot.errors import (
    AuthenticationFailed,
    BotError,
    ConfigError,
    PlatformLost,
    StoreError,
    UpstreamError,
)
from bot.fallback import unknown_models
from bot.limits.config import QuotaConfig
from bot.limits.quota import QuotaManager
from bot.llm.client import CompletionsClient
from bot.llm.provider import Provider, ProviderKind
from bot.ports import Adapter, Clock, PlatformMetrics, Store, SystemClock
from bot.settings import GROQ_BASE_URL, HOSTED_CONCURRENCY, AdapterSettings, Settings
from bot.store import InMemoryStore, SqliteStore
from bot.streaming import EditPacer
from bot.types import ModelInfo, Platform, UnfinishedReply

# Loaded only when used: asyncpg with DATABASE_URL, prometheus-client and aiohttp's
# server with METRICS_PORT (tests/unit/test_lazy_imports.py).
if TYPE_CHECKING:
    from bot.limits.fleet import FleetQuota
    from bot.metrics import Metrics
    from bot.ops import OpsServer

__all__ = ["Preflight", "Runtime", "open_runtime", "preflight", "serve"]

log = logging.getLogger(__name__)

S = TypeVar("S", bound=AdapterSettings)

# Less room than this for history and the new message makes most turns fail.
_MIN_HISTORY_TOKENS = 256


@dataclass(slots=True)
class Runtime:
    """Everything a running bot holds; adapters get an ``AdapterContext`` of it."""

    settings: Settings
    clock: Clock
    store: Store
    completions: CompletionsClient
    quota: QuotaManager | FleetQuota | None
    engine: Engine
    pacer: EditPacer
    metrics: Metrics | None
    """None while the operator endpoint is off: nothing would read them."""

    def context(self, settings: S, *, on_fatal: FatalHandler | None = None) -> AdapterContext[S]:
        """What an adapter with ``settings`` is built from (``on_fatal``: see
        ``AdapterContext``; by default a fatal report is only logged)."""
        metrics: PlatformMetrics = NO_METRICS if self.metrics is None else self.metrics
        context = AdapterContext(self.engine, self.pacer, self.clock, settings, metrics=metrics)
        return context if on_fatal is None else replace(context, on_fatal=on_fatal)


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ephemeral: bool = False,
    need_api: bool = True,
) -> AsyncIterator[Runtime]:
    """Open the store and the API client, build the engine; close all on exit.

    With ``need_api`` (everything but the usage export) the server's kind is settled
    first, because the account quota depends on it (the Groq table applies to Groq only).
    """
    clock = clock or SystemClock()
    metrics: Metrics | None = None
    if settings.metrics_port is not None:
        from bot.metrics import Metrics

        metrics = Metrics()
    async with AsyncExitStack() as stack:
        store = _store(settings, clock, ephemeral=ephemeral)
        try:
            await store.open()
        except StoreError as exc:
            # A database the bot can't open at start-up is the operator's to fix, like
            # any setting: its message names the file or DATABASE_URL (password masked).
            raise ConfigError(exc.user_text, detail=exc.detail) from None
        stack.push_async_callback(store.aclose)
        completions = CompletionsClient.from_settings(settings, clock=clock)
        stack.push_async_callback(completions.aclose)
        quota: QuotaManager | FleetQuota | None = None
        provider = await _provider(completions) if need_api else None
        if settings.max_concurrent_requests is None:
            concurrency = provider.concurrency if provider else HOSTED_CONCURRENCY
            settings = settings.model_copy(update={"max_concurrent_requests": concurrency})
        if settings.quota_enabled and provider is not None:
            config = QuotaConfig.from_settings(
                settings,
                builtin_table=provider.builtin_limits,
                requests_header_dimension=provider.requests_header_dimension,
            )
            quota = await _open_quota(settings, config, clock, store)
            # Registered after the store's aclose, so it runs first and counters are saved.
            stack.push_async_callback(quota.aclose)
            completions.add_rate_limit_listener(quota.observe)
        engine = Engine(
            settings=settings,
            store=store,
            completions=completions,
            clock=clock,
            quota=quota,
            pick_default_model=provider is not None and _picks_default_model(settings, provider),
            metrics=metrics,
        )
        yield Runtime(
            settings, clock, store, completions, quota, engine, EditPacer(clock=clock), metrics
        )


def _store(settings: Settings, clock: Clock, *, ephemeral: bool) -> Store:
    """The store the settings choose: memory, PostgreSQL (DATABASE_URL) or SQLite."""
    if ephemeral:
        return InMemoryStore(clock=clock)
    if settings.database_url is not None:
        from bot.store.postgres import PostgresStore  # asyncpg only when it is used

        store = PostgresStore(
            settings.database_url.get_secret_value(),
            pool_size=settings.database_pool_size,
            clock=clock,
        )
        if "database_path" in settings.model_fields_set:
            log.info("database: %s (DATABASE_URL wins over DATABASE_PATH)", store.where)
        return store
    return SqliteStore(settings.database_path, clock=clock)


async def serve(
    settings: Settings,
    platforms: Sequence[tuple[AdapterSpec, AdapterSettings]],
    *,
    stop: asyncio.Event,
) -> None:
    """Run the bot on ``platforms`` until ``stop`` is set: open the runtime, check the
    server, start each adapter, and on the way out close them in reverse order.

    Raises ``PlatformLost`` (after closing everything) when an adapter reports through
    ``AdapterContext.on_fatal`` that it lost its platform for good: a bot deaf on one
    platform must exit non-zero, so that its supervisor restarts it.

    Answers a previous process left streaming on these platforms are read before any
    adapter starts (whatever streams after that is this process's own) and finished
    in the background once all have started (``bot.durable``).
    """
    lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def fatal_for(name: str) -> FatalHandler:
        def report(reason: str) -> None:
            log.critical(
                "%s adapter: %s; stopping the bot so that it can be restarted", name, reason
            )
            if not lost.done():
                lost.set_result(f"The {name} adapter lost its platform ({reason})")

        return report

    async with open_runtime(settings) as runtime:
        found = await preflight(runtime)
        for note in found.notes:
            log.info("%s", note)
        for problem in found.problems:
            log.warning("%s", problem)
        built = [
            (spec.name, spec.build(runtime.context(config, on_fatal=fatal_for(spec.name))))
            for spec, config in platforms
        ]
        unfinished = await _unfinished(runtime.store, [Platform(a.name) for _, a in built])
        ops = await _start_ops(runtime, [adapter for _, adapter in built])
        started: list[tuple[str, Adapter]] = []  # closed on the way out, even half-started
        finishing: asyncio.Task[None] | None = None

        async def start_all() -> None:
            for name, adapter in built:
                started.append((name, adapter))
                await adapter.start()
                log.info("%s adapter started", name)

        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        starting = asyncio.ensure_future(start_all())
        try:
            # A signal during start-up (a platform slow to connect) must not wait for it.
            await asyncio.wait([starting, stopping, lost], return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                await asyncio.wait([starting])
                log.info("stopped while starting")
            elif not starting.cancelled() and starting.exception() is not None:
                raise starting.exception()  # type: ignore[misc]
            elif unfinished and not stop.is_set() and not lost.done():
                finalizers = {adapter.name: adapter for _, adapter in built}
                finishing = asyncio.create_task(
                    finalize_unfinished(runtime.store, unfinished, finalizers), name="finalize"
                )
            if not stop.is_set() and not lost.done():
                await asyncio.wait([stopping, lost], return_when=asyncio.FIRST_COMPLETED)
            log.info("shutting down")
        finally:
            stopping.cancel()
            if finishing is not None:
                await _cancel(finishing)  # before the adapters close
            await close_adapters(started, within_s=ADAPTERS_CLOSE_S)
            if ops is not None:
                await ops.aclose()
        if lost.done():
            raise PlatformLost(f"{lost.result()}; exiting so that a supervisor restarts the bot.")


async def _start_ops(runtime: Runtime, adapters: Sequence[Adapter]) -> OpsServer | None:
    """The operator endpoint, when ``METRICS_PORT`` is set (raises ``ConfigError`` when
    its port can't be bound: a supervisor relying on it would restart the bot forever)."""
    settings, metrics = runtime.settings, runtime.metrics
    if settings.metrics_port is None or metrics is None:
        return None
    from bot.ops import OpsServer, Readiness

    readiness = Readiness(adapters, runtime.store, runtime.clock, metrics)
    ops = OpsServer(
        readiness, metrics, runtime.store, host=settings.metrics_host, port=settings.metrics_port
    )
    try:
        await ops.start()
    except OSError as exc:
        raise ConfigError(
            f"METRICS_HOST={settings.metrics_host} METRICS_PORT={settings.metrics_port}: "
            f"cannot listen there ({exc.strerror or exc}); pick another port or unset it."
        ) from None
    return ops


ADAPTERS_CLOSE_S = 8.0
"""The adapters' share of the 10 s a supervisor allows between SIGTERM and SIGKILL; the
rest is for saving quota counters and closing the database."""


async def close_adapters(adapters: Sequence[tuple[str, Adapter]], *, within_s: float) -> None:
    """Close every adapter at once (each drains its replies in flight), under one deadline;
    whatever is still closing then is cancelled, and the log says which."""
    if not adapters:
        return
    tasks = {
        asyncio.create_task(adapter.aclose(), name=f"close-{name}"): name
        for name, adapter in adapters
    }
    done, late = await asyncio.wait(tasks, timeout=within_s)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("closing the %s adapter failed: %s", tasks[task], task.exception())
    for task in late:
        task.cancel()
    if late:
        names = ", ".join(sorted(tasks[t] for t in late))
        log.warning("shutdown deadline (%.0f s) passed; cut off closing: %s", within_s, names)
        await asyncio.wait(late, timeout=1.0)


async def _unfinished(store: Store, platforms: Sequence[Platform]) -> list[UnfinishedReply]:
    try:
        return await store.streaming_replies(platforms)
    except BotError as exc:  # the bot can still answer: the next start tries again
        log.error("could not read the answers left streaming: %s", exc.detail or exc)
        return []


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _provider(completions: CompletionsClient) -> Provider:
    """The server's kind; when the model list can't be read yet, a generic server (its
    failure is reported by ``preflight`` or the first turn, with a clear message)."""
    if completions.provider is None:
        try:
            await completions.models()
        except UpstreamError as exc:
            log.warning("could not read the model list to identify the server: %s", exc)
    return completions.provider or Provider(ProviderKind.OTHER, "unreachable at start-up")


def check_api_key(settings: Settings) -> None:
    """Groq needs a key; self-hosted servers often don't."""
    if settings.groq_api_key is None and settings.api_base_url == GROQ_BASE_URL:
        raise ConfigError(
            "GROQ_API_KEY is not set: create a key at https://console.groq.com/keys and "
            "put GROQ_API_KEY=... in .env (or point API_BASE_URL at another server)."
        )


@dataclass(frozen=True, slots=True)
class Preflight:
    """What the start-up check found: ``problems`` make the bot fail for users (``check``
    exits non-zero on them); ``notes`` are worth knowing."""

    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


async def preflight(runtime: Runtime) -> Preflight:
    """Check the key, the base URL, the default model and its context window against
    the live server.

    Raises ``ConfigError`` when the server can't be used at all (no key, rejected key,
    unreachable or wrong base URL).
    """
    settings = runtime.settings
    check_api_key(settings)
    try:
        models = await runtime.completions.models(refresh=True)
    except AuthenticationFailed as exc:
        raise ConfigError(exc.user_text) from None
    except UpstreamError as exc:
        raise ConfigError(exc.user_text) from None
    provider = runtime.completions.provider
    notes = [f"{settings.api_base_url} is {provider.label}."] if provider else []
    chat = await runtime.engine.list_models()
    default_id = await runtime.engine.default_model()
    default = next((m for m in chat if m.id == default_id), None)
    if default is not None and default_id != settings.default_model:
        notes.append(f"DEFAULT_MODEL is not set: using {default_id}, the server's first model.")
    if default is None:
        if not models:
            return Preflight((), (*notes, "The server lists no models; DEFAULT_MODEL is used."))
        offered = ", ".join(m.id for m in chat) or "none"
        return Preflight(
            (
                f"DEFAULT_MODEL={settings.default_model} is not offered by "
                f"{settings.api_base_url}; its chat models: {offered}. "
                "Set DEFAULT_MODEL to one of them.",
            ),
            tuple(notes),
        )
    problems, window_notes = _window_findings(settings, default)
    quota_problems = _quota_findings(settings, default, runtime.quota)
    chain_problems, chain_notes = _fallback_findings(settings, models)
    return Preflight(
        (*problems, *quota_problems, *chain_problems), (*notes, *window_notes, *chain_notes)
    )


def _fallback_findings(
    settings: Settings, models: Sequence[ModelInfo]
) -> tuple[tuple[str, ...], list[str]]:
    """Whether every model of MODEL_FALLBACKS is offered by the server now (a missing one
    is skipped at run time, so it is a problem to fix, not a reason not to start)."""
    chains = settings.fallback_chains()
    if not chains:
        return (), []
    notes = ["MODEL_FALLBACKS: " + "; ".join(" > ".join(chain) for chain in chains) + "."]
    if not models:  # the server lists none: nothing to check against
        return (), notes
    unknown = unknown_models(chains, {m.id for m in models if m.active})
    if not unknown:
        return (), notes
    return (
        f"MODEL_FALLBACKS names {', '.join(unknown)}, which {settings.api_base_url} does not "
        "offer (see `python -m bot models`); they are skipped until it does. Fix or remove "
        "them.",
    ), notes


def _picks_default_model(settings: Settings, provider: Provider) -> bool:
    """DEFAULT_MODEL was left blank and the server is a local one, which serves its own
    model(s): then the first one it lists is the default. Hosted APIs list many models
    (some not for chat, some costly), so there the setting decides."""
    local = provider.kind in (ProviderKind.LLAMACPP, ProviderKind.VLLM, ProviderKind.OLLAMA)
    return local and "default_model" not in settings.model_fields_set


def _window_findings(settings: Settings, model: ModelInfo) -> tuple[tuple[str, ...], list[str]]:
    """Whether the default model's window leaves room for a conversation."""
    notes = [f"{model.id}: {window_text(model)}."]
    problems: list[str] = []
    budget = settings.context_token_budget
    if budget is not None and model.context_source == "server" and budget > model.context_window:
        problems.append(
            f"CONTEXT_TOKEN_BUDGET={budget} is larger than {model.id}'s context window "
            f"({model.context_window:,} tokens): lower it or leave it empty."
        )
    room = history_budget(
        model,
        max_output_tokens=min(settings.max_output_tokens, model.context_window // 2),
        system_prompt=settings.system_prompt,
        cap=budget,
    )
    if room < _MIN_HISTORY_TOKENS:
        problems.append(
            f"{model.id}'s context window ({model.context_window:,} tokens) leaves only "
            f"{room} tokens for the conversation after MAX_OUTPUT_TOKENS and SYSTEM_PROMPT: "
            "lower MAX_OUTPUT_TOKENS, shorten SYSTEM_PROMPT, or use a larger context."
        )
    return tuple(problems), notes


async def _open_quota(
    settings: Settings, config: QuotaConfig, clock: Clock, store: Store
) -> QuotaManager | FleetQuota:
    """The quota: shared through PostgreSQL by every process on the key when
    DATABASE_URL names it, else this process's own (counters saved in ``store``)."""
    dsn = settings.fleet_dsn()
    if dsn is None:
        quota = QuotaManager(config=config, clock=clock, store=store)
        await quota.load()
        return quota
    # Imported here: asyncpg and the fleet's code cost ~5 MB of RSS that a process
    # without DATABASE_URL never needs.
    from bot.limits.fleet import FleetQuota

    fleet = FleetQuota.create(
        dsn,
        config=config,
        clock=clock,
        lease_s=settings.quota_lease_s,
        pool_size=settings.quota_db_pool_size,
        wake=settings.quota_wake,
    )
    try:
        await fleet.open()
    except StoreError as exc:
        raise ConfigError(
            f"DATABASE_URL: cannot open the shared quota on PostgreSQL ({exc.detail}).",
            detail=exc.detail,
        ) from None
    return fleet


def _quota_findings(
    settings: Settings, model: ModelInfo, quota: QuotaManager | FleetQuota | None
) -> tuple[str, ...]:
    """Whether a request's reservation (the whole MAX_OUTPUT_TOKENS plus the conversation)
    fits the default model's tokens per minute. (A user's share is not checked: their
    windows are charged the prompt, then the real use, never the reservation.)"""
    if quota is None:
        return ()
    cap = settings.max_output_tokens
    if model.max_completion_tokens:
        cap = min(cap, model.max_completion_tokens)
    cap = max(1, min(cap, model.context_window // 2))  # as the engine caps it
    room = _MIN_HISTORY_TOKENS + estimate_tokens(settings.system_prompt)
    account, _ = quota.limits_for(model.id)
    if account.tpm is not None and cap + room > account.tpm:
        return (
            f"MAX_OUTPUT_TOKENS={settings.max_output_tokens} leaves no room in {model.id}'s "
            f"{account.tpm:,} tokens per minute: every request reserves it whole, plus the "
            "conversation, so every message would be refused. Set MAX_OUTPUT_TOKENS to at "
            f"most {max(1, account.tpm - room):,}.",
        )
    return ()
