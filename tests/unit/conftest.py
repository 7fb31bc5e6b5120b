"""Fixtures shared by the unit tests of ``EditingSink``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.fakes.clock import settle


@pytest.fixture
async def no_leaked_flushers() -> AsyncIterator[None]:
    """After the test, no reply's background flusher is left running."""
    yield
    await settle()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "EditingSink"] == []
