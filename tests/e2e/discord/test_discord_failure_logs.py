"""Every failure a user sees has exactly one log line at WARNING or above, carrying its
conversation (LOG_FORMAT=json); a refusal the user caused (their quota) has one INFO
line and none above. Real discord.py against the fake Discord, the real engine
against the fake Groq; each mention opens a thread, so each failure has its own
conversation (``discord:ch:<guild>:<channel>:<thread>``, the thread id = the mention's).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.e2e.discord.conftest import Build
from tests.e2e.discord.test_discord_adapter import expected, final_answer, running_bot
from tests.fakes.discord_server import FakeDiscord, FakeMessage
from tests.fakes.groq_server import FakeGroq
from tests.logs import JsonLog

pytestmark = pytest.mark.e2e

QUESTION = "zebra-quokka question"  # never in the log at INFO
LOUD = logging.WARNING


def of(lines: list[dict[str, Any]], question: FakeMessage) -> list[dict[str, Any]]:
    """The lines of the conversation ``question`` opened (its thread)."""
    return [line for line in lines if line["conversation"].endswith(f":{question.id}")]


def loud(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if logging.getLevelName(line["level"]) >= LOUD]


async def shown(fake: FakeDiscord, question: FakeMessage, part: str) -> None:
    """Wait until the reply in the question's thread ended showing ``part``."""
    await fake.wait_for(
        lambda: any(part in m.content for m in fake.bot_messages(question.id)), within=15
    )


async def test_each_failure_the_user_sees_is_logged_once_with_its_conversation(
    fake_discord: FakeDiscord, fake_groq: FakeGroq, build: Build, json_logs: JsonLog
) -> None:
    json_logs.start()
    async with running_bot(build(quota_user_rpm=1000)) as (_, runtime):
        fake_groq.script("500", times=1 + runtime.settings.max_retries)  # every try fails
        upstream_500 = await fake_discord.send_message(f"{QUESTION} 1", mention=True)
        await shown(fake_discord, upstream_500, "⚠️")

        fake_groq.script("401")
        rejected_key = await fake_discord.send_message(f"{QUESTION} 2", mention=True)
        await shown(fake_discord, rejected_key, "⚠️")

        fake_groq.script("drop", after_tokens=2)
        dropped = await fake_discord.send_message(f"{QUESTION} 3", mention=True)
        await shown(fake_discord, dropped, "⚠️")

        # Discord refuses the reply's posts: 403, the bot lacks a permission there.
        fake_discord.inject("POST", r"^/channels/\d+/messages$", status=403, times=2)
        unposted = await fake_discord.send_message(f"{QUESTION} 4", mention=True)

        def given_up() -> bool:
            return bool(loud(of(json_logs.lines(), unposted)))

        await fake_discord.wait_for(given_up, within=15)
        assert fake_discord.bot_messages(unposted.id) == []
        answered = await fake_discord.send_message(f"{QUESTION} 5", mention=True)
        model = runtime.settings.default_model
        await final_answer(fake_discord, answered.id, expected(1, f"{QUESTION} 5", model=model))

    async with running_bot(build(quota_user_rpm=1, quota_max_wait_s=0)):
        await fake_discord.send_message(f"{QUESTION} 6", author=fake_discord.bob, mention=True)
        refused = await fake_discord.send_message(
            f"{QUESTION} 7", author=fake_discord.bob, mention=True
        )
        await shown(fake_discord, refused, "try again in")

    lines = json_logs.lines()
    failures = (upstream_500, rejected_key, dropped, unposted)
    for question in failures:
        [line] = loud(of(lines, question))  # exactly one, with its conversation
        assert line["platform"] == "discord" and line["user_hash"] != "-", line
    assert "500" in loud(of(lines, upstream_500))[0]["message"]
    assert "AuthenticationFailed" in loud(of(lines, rejected_key))[0]["message"]
    assert "interrupted" in loud(of(lines, dropped))[0]["message"]
    assert "403" in loud(of(lines, unposted))[0]["message"]
    assert loud(of(lines, answered)) == []
    # The quota refusal: the user's own limit, one line at INFO.
    assert loud(of(lines, refused)) == []
    assert len([line for line in of(lines, refused) if "refused" in line["message"]]) == 1
    # Nothing else of ours was loud (discord.py warns that voice is unsupported), and
    # no line holds what a user wrote.
    ours = [line for line in loud(lines) if line["logger"].startswith(("bot.", "adapters."))]
    assert len(ours) == len(failures), [line["message"] for line in ours]
    assert QUESTION not in json.dumps(lines)
