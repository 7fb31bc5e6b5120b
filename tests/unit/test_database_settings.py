"""DATABASE_URL and DATABASE_POOL_SIZE: which store the settings choose, and the URL's
password kept out of every log line and message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.app import _store
from bot.log import RedactingFilter
from bot.ports import SystemClock
from bot.settings import Settings
from bot.store import InMemoryStore, PostgresStore, SqliteStore

URL = "postgresql://bot:pw-Sekr3t@db.internal:5432/groqbot"


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_database_url_chooses_postgres_over_database_path(tmp_path: Path) -> None:
    both = Settings(_env_file=None, database_url=URL, database_path=tmp_path / "x.db")
    store = _store(both, SystemClock(), ephemeral=False)
    assert isinstance(store, PostgresStore)
    assert store.where == "postgresql://bot:***@db.internal:5432/groqbot"

    sqlite = Settings(_env_file=None, database_path=tmp_path / "x.db")
    assert isinstance(_store(sqlite, SystemClock(), ephemeral=False), SqliteStore)
    assert isinstance(_store(both, SystemClock(), ephemeral=True), InMemoryStore)


def test_pool_size_defaults_to_10_and_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).database_pool_size == 10
    monkeypatch.setenv("DATABASE_POOL_SIZE", "25")
    monkeypatch.setenv("DATABASE_URL", URL)
    s = Settings(_env_file=None)
    assert s.database_pool_size == 25
    assert s.database_url is not None and s.database_url.get_secret_value() == URL
    with pytest.raises(ValidationError):
        Settings(_env_file=None, database_pool_size=0)


def test_a_url_of_another_kind_is_refused_without_quoting_it() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, database_url="mysql://bot:pw-Sekr3t@db/x")
    [error] = info.value.errors()
    assert error["loc"] == ("database_url",)
    assert "postgresql://" in error["msg"]
    assert "pw-Sekr3t" not in error["msg"]


def test_the_url_and_its_password_alone_are_redacted_from_logs() -> None:
    s = Settings(_env_file=None, database_url=URL)
    assert "pw-Sekr3t" not in repr(s)
    for leaked in (URL, "password pw-Sekr3t rejected"):
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "db: %s", (leaked,), None)
        RedactingFilter(s.secrets()).filter(record)
        assert "pw-Sekr3t" not in record.getMessage()
