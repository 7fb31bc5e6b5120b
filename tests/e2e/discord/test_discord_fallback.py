"""MODEL_FALLBACKS through the fake Discord: the answer posted in the thread names the model
that answered and why; the /model command's ``strict`` option opts out."""

from __future__ import annotations

import pytest

from tests.e2e.discord.conftest import Build
from tests.e2e.discord.test_discord_adapter import expected, final_answer, running_bot
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.groq_server import FakeGroq

pytestmark = pytest.mark.e2e

BIG, SMALL = "openai/gpt-oss-120b", "openai/gpt-oss-20b"


async def test_the_thread_answer_names_the_fallback_model_and_strict_opts_out(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build
) -> None:
    fake_groq.script("503", times=100, model=BIG)
    async with running_bot(build(model_fallbacks=f"{BIG}>{SMALL}", default_model=BIG)):
        question = await fake_discord.send_message("who answers?", mention=True)
        note = f"↪️ answered by {SMALL}: {BIG} is over capacity (503)"
        await final_answer(
            fake_discord, question.id, f"{expected(1, 'who answers?', model=SMALL)}\n\n{note}"
        )
        chosen = await fake_discord.send_command("model", {"name": BIG, "strict": True})
        await fake_discord.wait_for(lambda: chosen.response_text is not None)
        again = await fake_discord.send_message("only you", mention=True)
        failed = await final_answer(
            fake_discord,
            again.id,
            "⚠️ The model API is having trouble right now; please try again in a minute.",
        )
    assert f"Model set to `{BIG}` for you. Strict" in (chosen.response_text or "")
    assert chosen.ephemeral and "answered by" not in failed.content
    assert [r["body"]["model"] for r in fake_groq.chat_requests].count(SMALL) == 1
