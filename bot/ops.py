"""The operators' HTTP endpoint: ``/healthz``, ``/readyz`` and ``/metrics`` (aiohttp).

Off unless ``METRICS_PORT`` is set; ``bot.app.serve`` starts it before the adapters
(so a supervisor sees "alive, not ready" while they connect) and stops it after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from bot.errors import BotError
from bot.metrics import CONTENT_TYPE, Metrics
from bot.ports import Adapter, Clock, PartedAdapter, Store

__all__ = ["OpsServer", "Readiness"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# A database that takes longer than this to answer "SELECT 1" is not ready.
_PING_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class _NoAnswer:
    why: str


async def _ask_database(query: Awaitable[T]) -> T | _NoAnswer:
    """``query``'s answer, or why the database gave none within ``_PING_TIMEOUT_S``."""
    try:
        return await asyncio.wait_for(query, _PING_TIMEOUT_S)
    except TimeoutError:
        return _NoAnswer(f"no answer within {_PING_TIMEOUT_S:.0f} s")
    except BotError as exc:
        return _NoAnswer(str(exc.detail or exc))


class Readiness:
    """Whether every adapter is connected and the database answers; remembers since
    when each adapter has been disconnected (sampled every ``interval_s`` and on each
    check), and keeps the ``adapter_connected`` gauge current. An adapter of several
    connections (``PartedAdapter``) is reported with the parts that are down."""

    def __init__(
        self,
        adapters: Sequence[Adapter],
        store: Store,
        clock: Clock,
        metrics: Metrics,
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._adapters = adapters
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._interval_s = interval_s
        now = clock.now()
        self._down_since: dict[str, float | None] = {a.name: now for a in adapters}

    def sample(self) -> None:
        """Read every adapter's ``connected`` now."""
        now = self._clock.now()
        for adapter in self._adapters:
            up = adapter.connected
            self._metrics.adapter_connected(adapter.name, up)
            if up:
                self._down_since[adapter.name] = None
            elif self._down_since.get(adapter.name) is None:
                self._down_since[adapter.name] = now

    async def run(self) -> None:
        """Sample until cancelled, so "down for" counts from close to the real moment."""
        while True:
            self.sample()
            await self._clock.sleep(self._interval_s)

    async def check(self) -> dict[str, str]:
        """What is down, by component ("discord", "database"), and for how long."""
        self.sample()
        now = self._clock.now()
        down = {
            adapter.name: _parts_down(adapter) + f"disconnected for {now - since:.0f} s"
            for adapter in self._adapters
            if (since := self._down_since.get(adapter.name)) is not None
        }
        answer = await _ask_database(self._store.ping())
        if isinstance(answer, _NoAnswer):
            down["database"] = answer.why
        return down


def _parts_down(adapter: Adapter) -> str:
    """The parts down and a space ("shard 1, shard 2 "), or "" for one connection."""
    parts = adapter.down_parts() if isinstance(adapter, PartedAdapter) else []
    return f"{', '.join(parts)} " if parts else ""


class OpsServer:
    """Serves the three endpoints on ``host``:``port`` while entered; each scrape of
    ``/metrics`` first counts the conversations in ``store``."""

    def __init__(
        self, readiness: Readiness, metrics: Metrics, store: Store, *, host: str, port: int
    ) -> None:
        self._readiness = readiness
        self._metrics = metrics
        self._store = store
        self._count_failing = False
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when ``port`` was 0)."""
        if self._runner is not None:
            for address in self._runner.addresses:
                return int(address[1])
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        runner = web.AppRunner(app, access_log=None)  # a scrape every 15 s is noise
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._sampler = asyncio.create_task(self._readiness.run(), name="readiness")
        log.info("operator endpoint on http://%s:%d (/healthz /readyz /metrics)",
                 self._host, self.port)  # fmt: skip

    async def aclose(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        down = await self._readiness.check()
        if down:
            return web.json_response({"status": "not ready", "down": down}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics_page(self, request: web.Request) -> web.Response:
        await self._count_conversations()
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def _count_conversations(self) -> None:
        """Update the conversations gauge; when the database can't say, the scrape still
        answers (the gauge keeps its last value) and the log says so once per outage."""
        count = await _ask_database(self._store.count_conversations())
        if isinstance(count, _NoAnswer):
            if not self._count_failing:
                log.warning("/metrics: could not count the conversations: %s", count.why)
            self._count_failing = True
            return
        self._count_failing = False
        self._metrics.conversations(count)
