"""The operators' HTTP endpoint: ``/healthz``, ``/readyz`` and ``/metrics`` (aiohttp).

Off unless ``METRICS_PORT`` is set; ``bot.app.serve`` starts it before the adapters
(so a supervisor sees "alive, not ready" while they connect) and stops it after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiohttp import web

from bot.errors import BotError
from bot.metrics import CONTENT_TYPE, Metrics
from bot.ports import Adapter, Clock, PartedAdapter, Store

__all__ = ["OpsServer", "Readiness"]

log = logging.getLogger(__name__)

# A database that takes longer than this to answer "SELECT 1" is not ready.
_PING_TIMEOUT_S = 2.0


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
        try:
            await asyncio.wait_for(self._store.ping(), _PING_TIMEOUT_S)
        except TimeoutError:
            down["database"] = f"no answer within {_PING_TIMEOUT_S:.0f} s"
        except BotError as exc:
            down["database"] = str(exc.detail or exc)
        return down


def _parts_down(adapter: Adapter) -> str:
    """The parts down and a space ("shard 1, shard 2 "), or "" for one connection."""
    parts = adapter.down_parts() if isinstance(adapter, PartedAdapter) else []
    return f"{', '.join(parts)} " if parts else ""


class OpsServer:
    """Serves the three endpoints on ``host``:``port`` while entered."""

    def __init__(self, readiness: Readiness, metrics: Metrics, *, host: str, port: int) -> None:
        self._readiness = readiness
        self._metrics = metrics
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
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response
