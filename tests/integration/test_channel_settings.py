"""Channel settings in the core: the ``/channel`` operations and where they take effect.

A real engine, SQLite in tmp_path and the fake Groq, whose recorded requests show the
model and the system text each turn really sent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import pytest

from bot.app import Runtime, open_runtime
from bot.channel_commands import NO_CHANNEL
from bot.errors import StoreError
from bot.settings import Settings
from bot.types import ChannelMode, ChannelRef, ConversationKey, Incoming, Platform, UserRef
from tests.fakes.groq_server import FakeGroq
from tests.fakes.sink import RecordingSink

CHAT = Platform("chat")
ADMIN = UserRef(CHAT, "boss", "Boss")
ALICE = UserRef(CHAT, "alice", "Alice")
GENERAL = ChannelRef(CHAT, "team", "general")
THREAD = ConversationKey(CHAT, space="team", channel="general", thread="t1")
OTHER_CHANNEL = ConversationKey(CHAT, space="team", channel="random", thread="t2")
DM = ConversationKey(CHAT, dm_user="alice")

GLOBAL_MODEL, CHANNEL_MODEL = "openai/gpt-oss-120b", "llama-3.1-8b-instant"
USER_MODEL, CONVERSATION_MODEL = "openai/gpt-oss-20b", "qwen/qwen3-32b"
GLOBAL_PERSONA = "the global persona"


@pytest.fixture
def make_settings(settings_factory: Callable[..., Settings]) -> Callable[[], Settings]:
    return lambda: settings_factory(
        admin_ids=["chat:boss"], default_model=GLOBAL_MODEL, system_prompt=GLOBAL_PERSONA
    )


async def ask(rt: Runtime, key: ConversationKey, text: str, user: UserRef = ALICE) -> str:
    sink = RecordingSink()
    await asyncio.wait_for(rt.engine.handle(Incoming(key, user, text, "m"), sink), 15)
    assert sink.final is not None
    return sink.final


def sent(fake: FakeGroq) -> tuple[str, str]:
    """The model and the system text of the last request the fake Groq received."""
    body = fake.chat_requests[-1]["body"]
    system = [m["content"] for m in body["messages"] if m["role"] == "system"]
    return body["model"], system[0] if system else ""


LAYERS = ("conversation", "user", "channel")


@pytest.mark.parametrize(
    "layers",
    [c for n in range(4) for c in itertools.combinations(LAYERS, n)],
    ids=lambda c: "+".join(c) or "none",
)
async def test_precedence_conversation_then_user_then_channel_then_global(
    fake_groq: FakeGroq, make_settings: Callable[[], Settings], layers: tuple[str, ...]
) -> None:
    async with open_runtime(make_settings()) as rt:
        engine = rt.engine
        if "conversation" in layers:
            await engine.set_system(ALICE, "conversation persona", key=THREAD)
            await engine.set_model(ALICE, CONVERSATION_MODEL, key=THREAD)
        if "user" in layers:
            await engine.set_system(ALICE, "user persona")
            await engine.set_model(ALICE, USER_MODEL)
        if "channel" in layers:
            await engine.set_channel_persona(ADMIN, GENERAL, "channel persona")
            await engine.set_channel_model(ADMIN, GENERAL, CHANNEL_MODEL)
        await ask(rt, THREAD, "hello")
        model, persona = sent(fake_groq)
        current = await engine.current_model(ALICE, THREAD)

    top = layers[0] if layers else "global"
    expected_model = {
        "conversation": CONVERSATION_MODEL,
        "user": USER_MODEL,
        "channel": CHANNEL_MODEL,
        "global": GLOBAL_MODEL,
    }[top]
    assert model == current == expected_model
    assert persona == (GLOBAL_PERSONA if top == "global" else f"{top} persona")


async def test_channel_layer_fills_in_field_by_field_and_only_in_its_channel(
    fake_groq: FakeGroq, make_settings: Callable[[], Settings]
) -> None:
    async with open_runtime(make_settings()) as rt:
        await rt.engine.set_channel_persona(ADMIN, GENERAL, "channel persona")
        await rt.engine.set_channel_model(ADMIN, GENERAL, CHANNEL_MODEL)
        await rt.engine.set_system(ALICE, "user persona")  # the user's persona only
        await ask(rt, THREAD, "in general")
        in_general = sent(fake_groq)
        await ask(rt, OTHER_CHANNEL, "elsewhere")
        elsewhere = sent(fake_groq)
        await ask(rt, DM, "in a dm")
        in_dm = sent(fake_groq)

    assert in_general == (CHANNEL_MODEL, "user persona")
    assert elsewhere == in_dm == (GLOBAL_MODEL, "user persona")


async def test_admins_set_show_and_clear_and_it_survives_a_restart(
    fake_groq: FakeGroq, make_settings: Callable[[], Settings]
) -> None:
    async with open_runtime(make_settings()) as rt:
        engine = rt.engine
        assert "none set" in (await engine.channel_settings_text(ALICE, GENERAL)).text
        persona = await engine.set_channel_persona(ADMIN, GENERAL, "  Talk like a pirate.  ")
        model = await engine.set_channel_model(ADMIN, GENERAL, CHANNEL_MODEL)
        mode = await engine.set_channel_mode(ADMIN, GENERAL, "ALL")
        assert "Persona set for this channel" in persona.text and persona.private
        assert f"`{CHANNEL_MODEL}` set for this channel" in model.text
        assert "`all`" in mode.text
    async with open_runtime(make_settings()) as rt:  # a restart on the same database
        engine = rt.engine
        shown = (await engine.channel_settings_text(ALICE, GENERAL)).text
        assert await engine.answers_all(GENERAL)
        assert not await engine.answers_all(OTHER_CHANNEL.channel_ref)  # type: ignore[arg-type]
        cleared = await engine.clear_channel(ADMIN, GENERAL, "persona")
        after_one = (await engine.channel_settings_text(ADMIN, GENERAL)).text
        await engine.clear_channel(ADMIN, GENERAL)
        after_all = (await engine.channel_settings_text(ADMIN, GENERAL)).text
        assert not await engine.answers_all(GENERAL)

    assert "“Talk like a pirate.”" in shown and f"`{CHANNEL_MODEL}`" in shown
    assert "`all`: I answer every new message" in shown and "by user boss" in shown
    assert "persona is cleared" in cleared.text
    assert "persona: not set" in after_one and f"model: `{CHANNEL_MODEL}`" in after_one
    assert f"not set (the default, `{GLOBAL_MODEL}`, applies)" in after_all
    assert "`mention`" in after_all


async def test_non_admins_may_look_but_not_change(
    fake_groq: FakeGroq, make_settings: Callable[[], Settings], caplog: pytest.LogCaptureFixture
) -> None:
    async with open_runtime(make_settings()) as rt:
        engine = rt.engine
        await engine.set_channel_persona(ADMIN, GENERAL, "admin's persona")
        with caplog.at_level(logging.INFO, logger="bot.channel_commands"):
            refusals = [
                await engine.set_channel_persona(ALICE, GENERAL, "mine"),
                await engine.set_channel_model(ALICE, GENERAL, CHANNEL_MODEL),
                await engine.set_channel_mode(ALICE, GENERAL, "all"),
                await engine.clear_channel(ALICE, GENERAL),
                await engine.run_command("channel", "mode all", user=ALICE, key=THREAD),
            ]
        shown = (await engine.channel_settings_text(ALICE, GENERAL)).text
        assert not await engine.answers_all(GENERAL)

    assert all("Only the bot's admins" in r.text and r.private for r in refusals)
    assert "admin's persona" in shown
    refused = [r for r in caplog.records if "not in ADMIN_IDS" in r.getMessage()]
    assert len(refused) == len(refusals)


async def test_bad_input_gets_a_clear_answer(
    fake_groq: FakeGroq, make_settings: Callable[[], Settings]
) -> None:
    async with open_runtime(make_settings()) as rt:
        engine = rt.engine
        unknown = await engine.set_channel_model(ADMIN, GENERAL, "gpt-oss-12")
        mode = await engine.set_channel_mode(ADMIN, GENERAL, "sometimes")
        empty = await engine.set_channel_persona(ADMIN, GENERAL, "   ")
        long = await engine.set_channel_persona(ADMIN, GENERAL, "x" * 4001)
        clear = await engine.clear_channel(ADMIN, GENERAL, "colour")
        in_dm = await engine.set_channel_mode(ADMIN, None, "all")
        show_in_dm = await engine.run_command("channel", "", user=ADMIN, key=DM)
        usage = await engine.run_command("channel", "frobnicate", user=ADMIN, key=THREAD)
        untouched = (await engine.channel_settings_text(ADMIN, GENERAL)).text

    assert "is not an available model" in unknown.text and "gpt-oss-120b" in unknown.text
    assert "`sometimes` is not a mode" in mode.text and "`all`" in mode.text
    assert "Give the persona's text" in empty.text
    assert "4,001 characters" in long.text
    assert "`colour` is not a channel setting" in clear.text
    assert in_dm.text == show_in_dm.text == NO_CHANNEL
    assert usage.text.startswith("Usage: `/channel`") and "mode mention|all" in usage.text
    assert "none set" in untouched


async def test_text_syntax_runs_in_the_channel_given_or_the_conversations(
    fake_groq: FakeGroq, make_settings: Callable[[], Settings]
) -> None:
    async with open_runtime(make_settings()) as rt:
        engine = rt.engine
        run = engine.run_command
        await run("channel", "persona Be terse.", user=ADMIN, key=None, channel=GENERAL)
        await run("channel", f"model {CHANNEL_MODEL}", user=ADMIN, key=THREAD)
        await run("channel", "mode all", user=ADMIN, key=None, channel=GENERAL)
        shown = (await run("channel", "show", user=ALICE, key=THREAD)).text
        await run("channel", "clear mode", user=ADMIN, key=THREAD)
        mode_cleared = not await engine.answers_all(GENERAL)
        help_text = engine.help(CHAT).text
        other = await run("usage", "", user=ALICE, key=THREAD)  # the others still work

    assert "“Be terse.”" in shown and f"`{CHANNEL_MODEL}`" in shown and "`all`" in shown
    assert mode_cleared
    assert "`/channel show`" in help_text and "`/model <id>`" in help_text
    assert "Today" in other.text or "limit" in other.text


async def test_a_database_that_cannot_say_means_mentions_only(
    fake_groq: FakeGroq,
    make_settings: Callable[[], Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(channel: ChannelRef) -> object:
        raise StoreError("The database failed.", detail="disk I/O error")

    async with open_runtime(make_settings()) as rt:
        await rt.engine.set_channel_mode(ADMIN, GENERAL, ChannelMode.ALL.value)
        monkeypatch.setattr(rt.store, "channel_settings", broken)
        with caplog.at_level(logging.WARNING, logger="bot.channel_commands"):
            answers = await rt.engine.answers_all(GENERAL)
        shown = await rt.engine.run_command("channel", "", user=ADMIN, key=THREAD)

    assert answers is False
    assert [r.getMessage() for r in caplog.records if "disk I/O error" in r.getMessage()]
    assert shown.text == "The database failed."
