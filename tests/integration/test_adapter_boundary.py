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
from bot.durable import RESTART_NOTE
from bot.errors import BotError, PlatformLost
from bot.log import configure_logging
from bot.settings import AdapterSettings, IdList, Secret, Settings
from bot.store import SqliteStore
from bot.streaming import EditingSink
from bot.types import (
    ConversationKey,
    Incoming,
    Platform,
    PlatformHelp,
    ReplyRef,
    SurfaceLimits,
    TurnStatus,
    UserRef,
)
from tests.fakes.groq_server import FakeGroq

ECHO = Platform("echo")
STREAMING, INTERRUPTED, COMPLETE = (
    TurnStatus.STREAMING,
    TurnStatus.INTERRUPTED,
    TurnStatus.COMPLETE,
)
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
    """On start, two users each say one thing; the answers are kept for the test.

    With ``in_background`` the answers go on after ``start`` returns, once they stream.
    ``finalize_reply`` keeps what it is asked to show."""

    name = "echo"
    answers: ClassVar[dict[str, str]] = {}
    helps: ClassVar[list[str]] = []
    finalized: ClassVar[list[tuple[ReplyRef, str]]] = []
    in_background: ClassVar[bool] = False

    def __init__(self, context: AdapterContext[EchoSettings]) -> None:
        self._context = context
        self._access = context.settings.access_policy()
        self._connected = False
        self._turns: set[asyncio.Task[None]] = set()
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
            turn = asyncio.create_task(self._answer(user, surface))
            if not EchoAdapter.in_background:
                await turn
                continue
            self._turns.add(turn)
            await self._stored_as_streaming(user)
        EchoAdapter.helps.append(engine.help(ECHO).text)

    async def _stored_as_streaming(self, user: UserRef) -> None:
        """Until the answer to ``user`` is stored as streaming (behind the engine's back)."""
        store = self._context.engine.store
        for _ in range(500):
            found = await store.streaming_replies([ECHO])
            if any(r.key.dm_user == user.user_id and r.ref.message_ids for r in found[1:]):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the answer was never stored as streaming")

    async def _answer(self, user: UserRef, surface: EchoSurface) -> None:
        sink = EditingSink(surface, pacer=self._context.pacer, clock=self._context.clock)
        key = ConversationKey(ECHO, dm_user=user.user_id)
        await self._context.engine.handle(Incoming(key, user, f"hello from {user.user_id}"), sink)
        EchoAdapter.answers[user.user_id] = surface.text

    async def aclose(self) -> None:
        await asyncio.gather(*self._turns)
        self._connected = False

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        EchoAdapter.finalized.append((reply, text))


class LosingAdapter:
    """Starts, then finds its platform gone for good and says so (``on_fatal``)."""

    name = "lossy"
    closed: ClassVar[list[bool]] = []

    def __init__(self, context: AdapterContext[EchoSettings]) -> None:
        self._context = context

    @property
    def connected(self) -> bool:
        return False

    async def start(self) -> None:
        asyncio.get_running_loop().call_later(0.05, self._context.on_fatal, "the line went dead")

    async def aclose(self) -> None:
        LosingAdapter.closed.append(True)

    async def finalize_reply(self, reply: ReplyRef, text: str) -> None:
        pass


@pytest.fixture
def echo_module() -> Iterator[AdapterSpec]:
    module = types.ModuleType(MODULE)
    module.EchoSettings = EchoSettings  # type: ignore[attr-defined]
    module.EchoAdapter = EchoAdapter  # type: ignore[attr-defined]
    module.LosingAdapter = LosingAdapter  # type: ignore[attr-defined]
    LosingAdapter.closed.clear()
    sys.modules[MODULE] = module
    EchoAdapter.answers.clear()
    EchoAdapter.helps.clear()
    EchoAdapter.finalized.clear()
    EchoAdapter.in_background = False
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

    await _serve_until(settings, echo_module, config, lambda: bool(EchoAdapter.helps))

    assert "turns=1 last=hello from ann" in EchoAdapter.answers["ann"]
    assert "bob" not in EchoAdapter.answers  # blocked through the core policy
    assert EchoAdapter.helps == [
        "Shout into the echo chamber.\n`!model <id>`: choose your model · `!models`: list "
        "models · `!reset`: forget this conversation · `!system <text>`: set a persona "
        "(`!system clear` removes it) · `!usage`: your usage and limits · `!help`: this text.\n"
        "`!channel show`: this channel's persona, model and mode, which admins set (in mode "
        "`all` I answer every message here, no mention needed)."
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


async def test_an_adapter_that_loses_its_platform_stops_serve_with_platform_lost(
    echo_module: AdapterSpec, fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """Not deaf and alive: ``serve`` closes everything and raises, so ``python -m bot``
    exits non-zero (every ``BotError`` is exit status 1) and a supervisor restarts it."""
    lossy = AdapterSpec("lossy", f"{MODULE}:EchoSettings", f"{MODULE}:LosingAdapter")
    stop = asyncio.Event()  # never set: the adapter's report alone ends the run
    with pytest.raises(PlatformLost, match="lossy adapter lost its platform") as info:
        await asyncio.wait_for(serve(settings_factory(), [(lossy, EchoSettings())], stop=stop), 10)
    assert "the line went dead" in info.value.user_text and isinstance(info.value, BotError)
    assert LosingAdapter.closed == [True]


async def _serve_until(
    settings: Settings, spec: AdapterSpec, config: AdapterSettings, done: Callable[[], bool]
) -> None:
    """``serve`` the one platform until ``done()`` (10 s at most), then stop it."""
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, [(spec, config)], stop=stop))
    for _ in range(200):
        if done() or server.done():
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(server, 10)


async def test_answers_a_previous_run_left_streaming_are_finished_through_their_adapter(
    echo_module: AdapterSpec,
    fake_groq: FakeGroq,
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ECHO_TOKEN", "echo-token")
    settings = settings_factory()
    store = SqliteStore(settings.database_path)
    await store.open()
    ann = ConversationKey(ECHO, dm_user="ann")
    await store.add_message(ann, role="user", content="hello before", tokens=3)
    ref = ReplyRef("the one chamber", ("1",))
    cut = await store.add_message(
        ann, role="assistant", content="half an ans", status=STREAMING, reply_ref=ref
    )
    elsewhere = ConversationKey(Platform("elsewhere"), dm_user="x")  # not served here
    await store.add_message(elsewhere, role="assistant", content="x", status=STREAMING)
    await store.aclose()
    # Ann's new answer streams while the old one is finished: it is this run's own.
    fake_groq.token_delay_s, fake_groq.reply_words = 0.01, 40
    EchoAdapter.in_background = True
    config = echo_module.load_settings()

    await _serve_until(settings, echo_module, config, lambda: "ann" in EchoAdapter.answers)

    assert EchoAdapter.finalized == [(ref, f"half an ans\n\n{RESTART_NOTE}")]
    assert "turns=2 last=hello from ann" in EchoAdapter.answers["ann"]
    await store.open()
    try:
        assert [r.key for r in await store.streaming_replies([ECHO, elsewhere.platform])] == [
            elsewhere
        ]
        history = await store.window(ann, token_budget=10_000)
    finally:
        await store.aclose()
    assert [(m.role, m.status) for m in history] == [
        ("user", COMPLETE),
        ("assistant", INTERRUPTED),
        ("user", COMPLETE),
        ("assistant", COMPLETE),
    ]
    assert history[1].content == "half an ans" and cut
