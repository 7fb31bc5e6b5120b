"""LOG_FORMAT=json: one JSON object per line, secrets redacted, no message text at INFO."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from bot.app import open_runtime
from bot.log import conversation_context, user_hash
from bot.settings import Settings
from bot.types import ConversationKey, Incoming, Platform, TurnStatus, UserRef
from tests.fakes.groq_server import FakeGroq
from tests.fakes.sink import RecordingSink
from tests.logs import JsonLog

SECRET = "sk-very-secret-key-1234567890"


def test_each_line_is_one_json_object_with_its_conversation_and_no_secret(
    json_logs: JsonLog,
) -> None:
    read = json_logs.start([SECRET])
    key = ConversationKey(Platform("discord"), channel="42", space="7")
    logging.getLogger("bot.outside").info("starting")
    with conversation_context(key.storage_id()):
        logging.getLogger("bot.engine").warning("calling with %s", SECRET)
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            logging.getLogger("bot.engine").exception("it failed")
    outside, warned, failed = read()
    assert outside["conversation"] == outside["platform"] == outside["user_hash"] == "-"
    assert outside["level"] == "INFO" and outside["logger"] == "bot.outside"
    assert outside["time"].endswith("+00:00")
    assert warned["message"] == "calling with ***"
    assert warned["conversation"] == key.storage_id() and warned["platform"] == "discord"
    assert "RuntimeError: boom ***" in failed["message"] + failed.get("exception", "")
    assert SECRET not in json.dumps([outside, warned, failed])


async def test_a_turn_logs_no_message_text_at_info(
    json_logs: JsonLog,
    fake_groq: FakeGroq,
    settings_factory: Callable[..., Settings],
) -> None:
    fake_groq.script("500", times=1)  # a retry: something is logged during the turn
    user = UserRef(Platform("terminal"), "alice", "Alice")
    key = ConversationKey(Platform("terminal"), dm_user="alice")
    text = "my zebra-quokka question nobody else may read"
    read = json_logs.start([SECRET])
    async with open_runtime(settings_factory()) as rt:
        sink = RecordingSink()
        await asyncio.wait_for(rt.engine.handle(Incoming(key, user, text, "m"), sink), 15)
    assert sink.status_ is TurnStatus.COMPLETE
    lines = read()
    during = [line for line in lines if line["conversation"] == key.storage_id()]
    assert during and all(line["platform"] == "terminal" for line in during)
    assert {line["user_hash"] for line in during} == {user_hash(user.storage_id())}
    assert not [line for line in lines if "alice" in line["user_hash"] + line["message"]]
    assert not [line for line in lines if "zebra-quokka" in json.dumps(line)]
