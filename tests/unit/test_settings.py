"""Settings load from the environment, and .env.example documents every one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters import ADAPTERS
from bot.log import RedactingFilter
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_lists_every_setting_with_a_comment() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    documented = {}
    for i, line in enumerate(lines):
        match = re.match(r"^([A-Z0-9_]+)=", line)
        if match:
            documented[match.group(1)] = lines[i - 1].startswith("# ")
    expected = {name.upper() for name in Settings.model_fields}
    for spec in ADAPTERS:  # each platform's group, under its own prefix
        cls = spec.settings_type()
        prefix = str(cls.model_config.get("env_prefix", ""))
        expected |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    assert expected - documented.keys() == set()
    assert [k for k, commented in documented.items() if not commented] == []
    assert documented.keys() - expected == set()


def test_defaults_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_IDS", "123, discord:456 ,")
    monkeypatch.setenv("API_BASE_URL", "http://localhost:11434/v1/")
    s = Settings(_env_file=None)
    assert s.default_model == "openai/gpt-oss-120b"
    assert s.database_path == Path("data/bot.db")
    assert s.max_concurrent_requests is None  # by the server's kind: see test_provider
    assert s.admin_ids == ["123", "discord:456"]
    assert s.api_base_url == "http://localhost:11434/v1"
    assert s.is_admin("slack", "123") and s.is_admin("discord", "456")
    assert not s.is_admin("slack", "456")


def test_invalid_value_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPERATURE", "7")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_secrets_are_hidden_in_repr_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "gsk_supersecretvalue1234567890"
    monkeypatch.setenv("GROQ_API_KEY", key)
    s = Settings(_env_file=None)
    assert key not in repr(s) and key not in str(s.model_dump())
    import logging

    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "auth %s failed", (key,), None)
    RedactingFilter(s.secrets()).filter(record)
    assert key not in record.getMessage()
    assert "***" in record.getMessage()
