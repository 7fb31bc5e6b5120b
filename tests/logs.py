"""LOG_FORMAT=json captured in a test: the bot's own log set-up, read back parsed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from bot.log import configure_logging

__all__ = ["JsonLog", "Reader"]

Reader = Callable[[], list[dict[str, Any]]]


class JsonLog:
    """Every line logged since ``start``, parsed (``lines()`` keeps what it read)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._lines: list[dict[str, Any]] = []

    def start(self, secrets: Sequence[str] = ()) -> Reader:
        """Turn on JSON logging at INFO to stderr. Call it inside the test: pytest swaps
        stderr between phases. Returns a reader of the lines logged since its last call."""
        configure_logging("INFO", list(secrets), log_format="json")
        return self.new_lines

    def new_lines(self) -> list[dict[str, Any]]:
        new = [json.loads(line) for line in self._capsys.readouterr().err.splitlines()]
        self._lines.extend(new)
        return new

    def lines(self) -> list[dict[str, Any]]:
        """Every line so far."""
        self.new_lines()
        return list(self._lines)
