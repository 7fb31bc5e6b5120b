"""Bad text from Discord (issue 11): a message whose content holds lone UTF-16
surrogates (JSON allows ``\\ud83d`` on its own) is answered and stored, with U+FFFD
in their place, end to end through the fake Discord."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.discord import DiscordSettings
from bot.settings import Settings
from tests.configured import configure
from tests.e2e.discord.test_discord_adapter import expected, final_answer, running_bot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq

pytestmark = pytest.mark.e2e


async def test_lone_surrogates_in_a_message_are_replaced_answered_and_stored(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    overrides = {**fake_discord.settings_overrides(), "discord_edit_interval_s": 0.2}
    settings = configure(settings_factory, DiscordSettings, "discord_", overrides)
    async with running_bot(settings):
        question = await fake_discord.send_message("half \ud83d and \ude00 end", mention=True)
        await final_answer(fake_discord, question.id, expected(1, "half \ufffd and \ufffd end"))
        await fake_discord.send_message("and now?", channel_id=question.id)
        await final_answer(fake_discord, question.id, expected(2, "and now?"))

    user_turns = [m for m in fake_groq.chat_requests[-1]["body"]["messages"] if m["role"] == "user"]
    assert [m["content"] for m in user_turns] == ["half \ufffd and \ufffd end", "and now?"]
