"""MODEL_FALLBACKS through the fake Slack: the reply posted in the thread says which model
answered and why; ``/groq-model <id> strict`` brings back the plain failure."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.slack.conftest import SlackConfig, running_adapter
from tests.e2e.slack.test_slack_adapter import answer, every_event_taken
from tests.fakes.groq_server import FakeGroq
from tests.fakes.slack_server import Delivery, FakeMessage, FakeSlack

pytestmark = pytest.mark.e2e

BIG, SMALL = "openai/gpt-oss-120b", "openai/gpt-oss-20b"


async def finished_reply(fake: FakeSlack, sent: Delivery, needle: str) -> FakeMessage:
    """The bot's reply in the mention's thread once it holds ``needle`` and is finished."""

    def done() -> FakeMessage | None:
        for reply in fake.bot_replies(sent.channel, sent.ts):
            if needle in reply.text and reply.streaming != "in_progress":
                return reply
        return None

    return await fake.wait_for(done, 10.0, f"a finished reply with {needle!r}")


async def test_the_posted_reply_names_the_model_that_answered_and_strict_opts_out(
    fake_slack: FakeSlack, fake_groq: FakeGroq, slack_settings: Callable[..., SlackConfig]
) -> None:
    settings = slack_settings(model_fallbacks=f"{BIG}>{SMALL}", default_model=BIG)
    fake_groq.script("503", times=100, model=BIG)
    async with running_adapter(settings):
        sent = await fake_slack.mention(fake_slack.alice, "who answers?")
        reply = await finished_reply(fake_slack, sent, "answered by")
        assert reply.text.startswith(answer(settings, "who answers?", model=SMALL))
        assert reply.text.endswith(f"answered by {SMALL}: {BIG} is over capacity (503)")

        await fake_slack.command(fake_slack.alice, "/groq-model", f"{BIG} strict")
        confirm = await fake_slack.wait_for(
            lambda: [r for r in fake_slack.responses if "Strict" in str(r.get("text"))],
            what="the strict confirmation",
        )
        assert f"Model set to `{BIG}` for you." in confirm[0]["text"]
        strict = await fake_slack.mention(fake_slack.alice, "only you")
        failed = await finished_reply(fake_slack, strict, "having trouble")
        await every_event_taken(fake_slack)
    assert "answered by" not in failed.text
    # The strict turn went to the chosen model alone (retried there, as without a chain).
    asked = [r["body"]["model"] for r in fake_groq.chat_requests]
    assert asked.count(SMALL) == 1 and asked[-1] == BIG and asked.count(BIG) > 2
