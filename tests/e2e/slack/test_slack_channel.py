"""``/groq-channel`` and mode ``all`` end to end: real slack-bolt / slack-sdk against the
fake Slack over Socket Mode, the real engine against the fake Groq, whose recorded
requests show the system text each answer was given.

The fake delivers every message posted in a channel the app is in as a ``message``
event (the ``message.channels`` / ``message.groups`` subscriptions of
slack-manifest.yml), other apps' posts with ``bot_id``, as Slack does.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.slack.conftest import SlackConfig, running_adapter
from tests.e2e.slack.test_slack_adapter import answer, every_event_taken, final_reply
from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_server import Delivery, FakeSlack

pytestmark = pytest.mark.e2e

PIRATE = "You are a pirate. Answer like one."
POET = "You are a poet."


def system_texts(fake: FakeGroq) -> list[str]:
    """The system message of every chat request the fake Groq received, in order."""
    return [
        next((m["content"] for m in r["body"]["messages"] if m["role"] == "system"), "")
        for r in fake.chat_requests
    ]


async def response(fake: FakeSlack, command: Delivery) -> str:
    """The text the app answered ``command`` with, through its ``response_url``."""

    def found() -> str | None:
        return next(
            (r["text"] for r in fake.responses if r["url_id"] in command.response_url), None
        )

    return await fake.wait_for(found, what=f"the answer to {command.body.get('text')!r}")


async def test_admin_sets_persona_and_mode_all_and_plain_messages_get_threads(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: Callable[..., SlackConfig]
) -> None:
    fs = fake_slack
    settings = slack_settings(admin_ids=fs.carol.id)
    async with running_adapter(settings):
        refused = await response(fs, await fs.command(fs.bob, "/groq-channel", "mode all"))
        persona = await fs.command(fs.carol, "/groq-channel", f"persona {PIRATE}")
        mode = await fs.command(fs.carol, "/groq-channel", "mode all")
        set_texts = [await response(fs, persona), await response(fs, mode)]

        question = await fs.say(fs.bob, "ahoy there")  # no mention
        await final_reply(fs, question, answer(settings, "ahoy there"))
        await fs.say(fs.bob, "and then?", thread_ts=question.ts)
        await final_reply(fs, question, answer(settings, "and then?", turns=2), n=2)
        # Neither another app's post nor a plain message in a channel left in mode mention.
        await fs.bot_says("beep boop")
        elsewhere = await fs.say(fs.bob, "elsewhere", channel=fs.random)
        shown = await response(fs, await fs.command(fs.bob, "/groq-channel"))

        # bob's own persona comes before the channel's.
        await response(fs, await fs.command(fs.bob, "/groq-system", POET))
        poem = await fs.say(fs.bob, "a new question")
        await final_reply(fs, poem, answer(settings, "a new question"))
        await every_event_taken(fs)

    assert "Only the bot's admins" in refused
    assert "Persona set for this channel" in set_texts[0] and "`all`" in set_texts[1]
    assert "You are a pirate." in shown and "`all`: I answer every new message" in shown
    assert system_texts(fake_groq) == [PIRATE, PIRATE, POET]
    assert [m.text for m in fs.top_level(fs.random)] == ["elsewhere"]
    assert fs.bot_replies(elsewhere.channel, elsewhere.ts) == []
    # Each answer is in the thread of its question, none at the channel's top level.
    assert all(m.user != fs.bot_user_id for m in fs.top_level(fs.general))
    assert len(fs.bot_replies(question.channel, question.ts)) == 2
