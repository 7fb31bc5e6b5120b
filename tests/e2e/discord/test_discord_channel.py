"""``/channel`` and mode ``all`` end to end: real discord.py → fake Discord, the real
engine → fake Groq, whose recorded requests show the system text each answer was given.

The fake dispatches a guild MESSAGE_CREATE that doesn't mention the bot, with its text
only while the bot holds the MESSAGE_CONTENT intent, as real Discord does; the bot
asks for that intent, so mode ``all`` can read such messages.
"""

from __future__ import annotations

import pytest

from tests.e2e.discord.conftest import Build
from tests.e2e.discord.test_discord_adapter import expected, final_answer, running_bot
from tests.fakes.discord_interactions import FakeInteraction
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq

pytestmark = pytest.mark.e2e

PIRATE = "You are a pirate. Answer like one."


def system_texts(fake: FakeGroq) -> list[str]:
    """The system message of every chat request the fake Groq received, in order."""
    return [
        next((m["content"] for m in r["body"]["messages"] if m["role"] == "system"), "")
        for r in fake.chat_requests
    ]


async def answered(fake: FakeDiscord, *interactions: FakeInteraction) -> None:
    await fake.wait_for(lambda: all(i.response_text for i in interactions))


async def test_admin_sets_persona_and_mode_all_and_plain_messages_get_threads(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    fd = fake_discord
    async with running_bot(build(admin_ids=[fd.alice.id])):
        # bob is no admin: he may look, not change.
        denied = [
            await fd.send_command("channel", {"mode": "all"}, user=fd.bob, subcommand="mode"),
            await fd.send_command("channel", {"text": "mine"}, user=fd.bob, subcommand="persona"),
        ]
        await answered(fd, *denied)
        persona = await fd.send_command("channel", {"text": PIRATE}, subcommand="persona")
        mode = await fd.send_command("channel", {"mode": "all"}, subcommand="mode")
        await answered(fd, persona, mode)

        question = await fd.send_message("ahoy there", author=fd.bob)  # no mention
        await final_answer(fd, question.id, expected(1, "ahoy there"))
        await fd.send_message("and then?", author=fd.bob, channel_id=question.id)
        await final_answer(fd, question.id, expected(2, "and then?"))
        # Neither a bot's message nor a plain one in a channel left in mode mention.
        await fd.send_message("beep boop", author=fd.other_bot)
        await fd.send_message("elsewhere", author=fd.bob, channel_id=fd.other_channel_id)
        shown = await fd.send_command("channel", user=fd.bob, subcommand="show")
        control = await fd.send_message("last one", author=fd.carol)
        await final_answer(fd, control.id, expected(1, "last one"))
        await answered(fd, shown)

    assert all("Only the bot's admins" in (d.response_text or "") for d in denied)
    assert all(i.ephemeral for i in (*denied, persona, mode, shown))
    assert "Persona set for this channel" in (persona.response_text or "")
    assert "`all`" in (mode.response_text or "")
    shown_text = shown.response_text or ""
    assert "You are a pirate." in shown_text and "`all`: I answer every new message" in shown_text
    # Only the two questions of the `all` channel opened threads, on the messages.
    assert set(fd.threads) == {question.id, control.id}
    assert fd.threads[question.id]["name"] == "ahoy there"
    assert fd.bot_messages(fd.channel_id) == [] and fd.bot_messages(fd.other_channel_id) == []
    assert system_texts(fake_groq) == [PIRATE] * 3


async def test_a_conversation_persona_and_a_users_model_beat_the_channels(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    fd = fake_discord
    async with running_bot(build(admin_ids=[fd.alice.id])):
        models = await fd.send_autocomplete("channel", "name", "qwen", subcommand="model")
        await fd.wait_for(lambda: models.answered)
        setup = [
            await fd.send_command("channel", {"text": PIRATE}, subcommand="persona"),
            await fd.send_command("channel", {"name": "qwen/qwen3-32b"}, subcommand="model"),
            await fd.send_command("channel", {"mode": "all"}, subcommand="mode"),
        ]
        await answered(fd, *setup)
        question = await fd.send_message("first", author=fd.bob)
        await final_answer(fd, question.id, expected(1, "first", model="qwen/qwen3-32b"))
        poet = await fd.send_command(
            "system",
            {"prompt": "You are a poet.", "scope": "conversation"},
            user=fd.bob,
            channel_id=question.id,
        )
        own_model = await fd.send_command("model", {"name": "llama-3.1-8b-instant"}, user=fd.bob)
        await answered(fd, poet, own_model)
        await fd.send_message("second", author=fd.bob, channel_id=question.id)
        await final_answer(fd, question.id, expected(2, "second", model="llama-3.1-8b-instant"))
        cleared = await fd.send_command("channel", {"what": "mode"}, subcommand="clear")
        await answered(fd, cleared)
        await fd.send_message("mode is mention again", author=fd.carol)
        await fd.send_message("still answered", author=fd.carol, mention=True)
        await fd.wait_for(lambda: len(fake_groq.chat_requests) == 3)

    assert [c["value"] for c in models.choices] == ["qwen/qwen3-32b"]
    assert "`qwen/qwen3-32b` set for this channel" in (setup[1].response_text or "")
    assert "mode is cleared" in (cleared.response_text or "")
    assert system_texts(fake_groq) == [PIRATE, "You are a poet.", PIRATE]
    assert [r["body"]["model"] for r in fake_groq.chat_requests] == [
        "qwen/qwen3-32b",
        "llama-3.1-8b-instant",  # bob's own choice beats the channel's
        "qwen/qwen3-32b",
    ]
    assert len(fd.threads) == 2  # the plain message after clearing the mode got none


async def test_in_reply_mode_the_bots_own_answers_in_the_channel_start_nothing(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    # In reply mode the answers are channel messages themselves, which Discord echoes to
    # the bot: answering them would be a loop.
    fd = fake_discord
    async with running_bot(build(admin_ids=[fd.alice.id], discord_reply_mode="reply")):
        await answered(fd, await fd.send_command("channel", {"mode": "all"}, subcommand="mode"))
        first = await fd.send_message("one", author=fd.bob)
        await final_answer(fd, fd.channel_id, expected(1, "one"))
        await fd.send_message("two", author=fd.carol)
        await final_answer(fd, fd.channel_id, expected(1, "two"))

    answers = fd.bot_messages(fd.channel_id)
    assert [m.content for m in answers] == [expected(1, "one"), expected(1, "two")]
    assert str(answers[0].bodies[0]["message_reference"]["message_id"]) == first.id
    assert len(fake_groq.chat_requests) == 2 and not fd.threads
