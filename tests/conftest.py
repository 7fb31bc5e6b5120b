"""Shared fixtures: the fake Groq server, a Settings factory pointed at it, JSON logs."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from tests.fakes.groq_server import FakeGroq
from tests.fakes.server_profiles import ProfileName
from tests.logs import JsonLog
from tests.pg_cluster import PgCluster, pg_available


@asynccontextmanager
async def started(profile: ProfileName = "groq") -> AsyncIterator[FakeGroq]:
    """A started ``FakeGroq`` of ``profile`` on 127.0.0.1 (port 0), closed on exit."""
    fake = FakeGroq(profile=profile)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.aclose()


@pytest.fixture
async def fake_groq() -> AsyncIterator[FakeGroq]:
    """The fake answering as Groq does."""
    async with started() as fake:
        yield fake


@pytest.fixture
async def fake_llamacpp() -> AsyncIterator[FakeGroq]:
    """The fake answering as llama.cpp / llama-cpp-python's server does (n_ctx 2,048)."""
    async with started("llamacpp") as fake:
        yield fake


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeGroq]:
    """The fake answering as api.openai.com does."""
    async with started("openai") as fake:
        yield fake


@pytest.fixture
def settings_factory(
    fake_groq: FakeGroq, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Settings]:
    """Build ``Settings`` for the fake: its URL and key, a tmp database, tiny retry delays.

    The environment's own settings variables are removed so tests are hermetic; any
    field can be overridden by keyword.
    """
    for name in [*Settings.model_fields, "api_key"]:
        monkeypatch.delenv(name.upper(), raising=False)

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "groq_api_key": fake_groq.api_key,
            "api_base_url": fake_groq.base_url,
            "database_path": tmp_path / "bot.db",
            "request_timeout_s": 5.0,
            "stream_idle_timeout_s": 2.0,
            "retry_base_delay_s": 0.01,
            "retry_max_delay_s": 0.2,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One real PostgreSQL server for the session (skipped when none is installed).

    ``.ci/run`` sets ``REQUIRE_POSTGRES=1``: there a missing server fails instead.
    """
    if not pg_available():
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but no PostgreSQL server binaries were found")
        pytest.skip("no PostgreSQL server here (install Debian's postgresql package)")
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database on the session's cluster; dropped after the test."""
    dsn = pg_cluster.create_database()
    try:
        yield dsn
    finally:
        pg_cluster.drop_database(dsn)


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[JsonLog]:
    """LOG_FORMAT=json captured (``JsonLog.start`` turns it on); the root logger's
    handlers and level are put back afterwards."""
    root = logging.getLogger()
    level = root.level
    try:
        yield JsonLog(capsys)
    finally:
        root.handlers.clear()
        root.setLevel(level)
