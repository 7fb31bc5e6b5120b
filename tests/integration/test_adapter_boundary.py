"""The adapter boundary: a fourth platform defined only here runs a turn end to end.

The "echo" platform below is a package-like module registered the way ``adapters/``
registers Discord and Slack (an ``AdapterSpec`` with ``module:Class`` paths). It runs
through ``bot.app.serve`` (what ``python -m bot run`` calls) against the fake model
server, with no edit to ``bot/``: its settings come from ``ECHO_*`` variables, its
token is redacted from logs like any other, its help text reaches /help, and its
access lists go through the core policy.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import ClassVar

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bot.access import AccessPolicy, AllowDeny, Requester
from bot.adapter import AdapterContext, AdapterSpec
from bot.app import serve
from bot.log import configure_logging
from bot.settings import AdapterSettings, IdList, Secret, Settings
from bot.streaming import EditingSink
from bot.types import (
    ConversationKey,
    Incoming,
    Platform,
    PlatformHelp,
    ReplyRef,
    SurfaceLimits,
    UserRef,
)
from tests.fakes.groq_server import FakeGroq

ECHO = Platform("echo")
MODULE = "echo_platform_defined_in_a_test"


class EchoSettings(AdapterSettings):
    """``ECHO_TOKEN`` enables it; ``ECHO_BLOCKED_USER_IDS`` is its one access list."""

    model_config = SettingsConfigDict(env_prefix="ECHO_")
    requirement: ClassVar[str] = "ECHO_TOKEN"

    token: Secret = None
    blocked_user_ids: IdList = Field(default_factory=list)

    def enabled(self) -> bool:
        return self.token is not None

    def access_policy(self) -> AccessPolicy:
        return AccessPolicy(users=AllowDeny.of(blocked=self.blocked_user_ids))

    def help(self) -> PlatformHelp:
        return PlatformHelp("Shout into the echo chamber.", command_prefix="!")


class EchoSurface:
    """Prints nowhere: keeps the reply's one message."""

    limits = SurfaceLimits(max_chars=4000, min_edit_interval_s=0.05)
    place = "the one chamber"

    def __init__(self) -> None:
        self.text = ""

    @asynccontextmanager
    async def typing(self) -> AsyncIterator[None]:
        yield

    async def post(self, text: str) -> str:
        self.text = text
        return "1"

    async def edit(self, message_id: str, text: str) -> None:
        self.text = text


class EchoAdapter:
    """On start, two users each say one thing; the answers are kept for the test."""

    name = "echo"
    answers: ClassVar[dict[str, str]] = {}
    helps: ClassVar[list[str]] = []
    finalized: ClassVar[list[tuple[ReplyRef, str]]] = []

    def __init__(self, context: AdapterContext[EchoSettings]) -> None:
        self._context = context
        self._access = context.settings.access_policy()
        self._connected = False
        context.engine.describe_platform(ECHO, context.settings.help())

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        self._connected = True
        engine = self._context.engine
        for user_id in ("ann", "bob"):
            user = UserRef(ECHO, user_id)
            if not self._access.allows(Requester.of(user_id, is_dm=True)):
                continue
            surface = EchoSurface()
            sink = EditingSink(surface, pacer=self._context.pacer, clock=self._context.clock)
            key = ConversationKey(ECHO, dm_user=user_id)
            await engine.handle(Incoming(key, user, f"hello from {user_id}", "m1"), sink)
            EchoAdapter.answers[user_id] = surface.text
        EchoAdapter.helps.append(engine.help(ECHO).text)

    async def aclose(self) -> None:
        self._connected = False

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        EchoAdapter.finalized.append((reply, text))


@pytest.fixture
def echo_module() -> Iterator[AdapterSpec]:
    module = types.ModuleType(MODULE)
    module.EchoSettings = EchoSettings  # type: ignore[attr-defined]
    module.EchoAdapter = EchoAdapter  # type: ignore[attr-defined]
    sys.modules[MODULE] = module
    EchoAdapter.answers.clear()
    EchoAdapter.helps.clear()
    EchoAdapter.finalized.clear()
    try:
        yield AdapterSpec("echo", f"{MODULE}:EchoSettings", f"{MODULE}:EchoAdapter")
    finally:
        del sys.modules[MODULE]


async def test_a_platform_defined_outside_bot_runs_a_turn_end_to_end(
    echo_module: AdapterSpec,
    fake_groq: FakeGroq,
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "echo-secret-token-123456"
    monkeypatch.setenv("ECHO_TOKEN", token)
    monkeypatch.setenv("ECHO_BLOCKED_USER_IDS", "bob")
    settings = settings_factory()
    config = echo_module.load_settings()  # from the environment, as `run` loads it
    assert config.enabled() and token in config.secrets()

    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, [(echo_module, config)], stop=stop))
    for _ in range(200):
        if EchoAdapter.helps or server.done():
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(server, 10)

    assert "turns=1 last=hello from ann" in EchoAdapter.answers["ann"]
    assert "bob" not in EchoAdapter.answers  # blocked through the core policy
    assert EchoAdapter.helps == [
        "Shout into the echo chamber.\n`!model <id>`: choose your model · `!models`: list "
        "models · `!reset`: forget this conversation · `!system <text>`: set a persona "
        "(`!system clear` removes it) · `!usage`: your usage and limits · `!help`: this text."
    ]


def test_its_secret_is_redacted_without_being_listed_anywhere(
    echo_module: AdapterSpec, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "echo-secret-token-123456"
    monkeypatch.setenv("ECHO_TOKEN", token)
    config = echo_module.load_settings()
    configure_logging("INFO", config.secrets())
    try:
        logging.getLogger("echo").warning("connecting with %s", token)
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "connecting with ***" in err and token not in err
