"""The operator endpoint served by ``bot.app.serve``: /healthz, /readyz, /metrics.

A platform defined here (like the echo platform of ``test_adapter_boundary``) whose
connection the test switches off and on; everything on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic_settings import SettingsConfigDict

from bot.adapter import AdapterContext, AdapterSpec
from bot.app import serve
from bot.errors import ConfigError
from bot.settings import AdapterSettings, Settings
from bot.types import ReplyRef
from tests.fakes.groq_server import FakeGroq

MODULE = "switchable_platform_defined_in_a_test"


class SwitchSettings(AdapterSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCH_")

    def enabled(self) -> bool:
        return True


class SwitchAdapter:
    """Connected while ``up`` says so (the test flips it)."""

    name = "switch"
    up: ClassVar[bool] = True

    def __init__(self, context: AdapterContext[SwitchSettings]) -> None:
        self._context = context

    @property
    def connected(self) -> bool:
        return SwitchAdapter.up

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        pass


@pytest.fixture
def switch() -> Iterator[AdapterSpec]:
    module = types.ModuleType(MODULE)
    module.SwitchSettings = SwitchSettings  # type: ignore[attr-defined]
    module.SwitchAdapter = SwitchAdapter  # type: ignore[attr-defined]
    sys.modules[MODULE] = module
    SwitchAdapter.up = True
    try:
        yield AdapterSpec("switch", f"{MODULE}:SwitchSettings", f"{MODULE}:SwitchAdapter")
    finally:
        del sys.modules[MODULE]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _serving(settings: Settings, spec: AdapterSpec) -> AsyncIterator[str]:
    """``serve`` with the endpoint on; yields its base URL once it answers."""
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, [(spec, SwitchSettings())], stop=stop))
    base = f"http://127.0.0.1:{settings.metrics_port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                assert not server.done(), server.exception()
                try:
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        yield base
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def test_readyz_follows_the_adapters_connection_and_healthz_stays_200(
    switch: AdapterSpec, fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(metrics_port=_free_port())
    async with _serving(settings, switch) as base:
        assert await _get(f"{base}/readyz") == (200, {"status": "ready"})

        SwitchAdapter.up = False
        status, body = await _get(f"{base}/readyz")
        assert status == 503 and body["status"] == "not ready"
        assert list(body["down"]) == ["switch"]
        assert body["down"]["switch"].startswith("disconnected for ")
        assert (await _get(f"{base}/healthz"))[0] == 200
        families = {f.name: f for f in text_string_to_metric_families((await _get(
            f"{base}/metrics"))[1])}  # fmt: skip
        gauge = families["groqbot_adapter_connected"].samples
        assert [(s.labels, s.value) for s in gauge] == [({"adapter": "switch"}, 0.0)]

        SwitchAdapter.up = True
        assert await _get(f"{base}/readyz") == (200, {"status": "ready"})
        assert (await _get(f"{base}/healthz"))[0] == 200


async def test_metrics_parse_as_prometheus_text(
    switch: AdapterSpec, fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(metrics_port=_free_port())
    async with _serving(settings, switch) as base:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
            assert r.status == 200 and r.content_type == "text/plain"
            text = await r.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "groqbot_replies",
        "groqbot_reply_first_text_seconds",
        "groqbot_adapter_connected",
        "groqbot_build_info",
    } <= names


async def test_the_endpoint_is_off_unless_a_port_is_set(
    switch: AdapterSpec, fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory()
    assert settings.metrics_port is None and settings.metrics_host == "127.0.0.1"


async def test_a_port_in_use_is_a_config_error(
    switch: AdapterSpec, fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = settings_factory(metrics_port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match="METRICS_PORT"):
            await asyncio.wait_for(
                serve(settings, [(switch, SwitchSettings())], stop=asyncio.Event()), 10
            )
