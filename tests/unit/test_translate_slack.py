"""adapters.slack.translate on recorded event payloads: routing and access rules."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.config import SlackSettings
from adapters.slack.translate import (
    Route,
    dm_key,
    route_mention,
    route_message,
    strip_mention,
    to_incoming,
)
from bot.access import Requester
from bot.types import ConversationKey, Platform, UserRef

TEAM, BOT, ALICE = "T0FAKE0001", "U0BOT00001", "U0ALICE001"

# As Slack sends them (trimmed of blocks), recorded from the fake that mirrors Bolt's
# observed payloads.
MENTION: dict[str, Any] = {
    "type": "app_mention",
    "user": ALICE,
    "text": f"<@{BOT}> what is &lt;html&gt;?",
    "ts": "1700000001.000100",
    "channel": "C0GENERAL1",
    "event_ts": "1700000001.000100",
    "client_msg_id": "5a7c7a0e-1b1a-4f53-9d6f-0f5d9b7d2c11",
    "team": TEAM,
}
DM: dict[str, Any] = {
    "type": "message",
    "channel": "D0ALICE001",
    "channel_type": "im",
    "user": ALICE,
    "text": "hello bot",
    "ts": "1700000002.000200",
    "event_ts": "1700000002.000200",
    "team": TEAM,
}
THREAD_REPLY: dict[str, Any] = {
    "type": "message",
    "channel": "C0GENERAL1",
    "channel_type": "channel",
    "user": ALICE,
    "text": "and then?",
    "ts": "1700000003.000300",
    "thread_ts": "1700000001.000100",
    "parent_user_id": ALICE,
    "team": TEAM,
}


def channel(thread: str) -> ConversationKey:
    return ConversationKey(Platform("slack"), space=TEAM, channel="C0GENERAL1", thread=thread)


def mention(**changes: Any) -> Route | None:
    return route_mention({**MENTION, **changes}, team_id=TEAM, bot_user_id=BOT)


def message(base: dict[str, Any], **changes: Any) -> Route | None:
    event = {k: v for k, v in {**base, **changes}.items() if v is not None}
    return route_message(event, team_id=TEAM, bot_user_id=BOT)


def test_a_mention_opens_a_thread_on_itself() -> None:
    assert mention() == Route(channel(MENTION["ts"]), "C0GENERAL1", MENTION["ts"])


def test_a_mention_in_a_thread_continues_that_thread() -> None:
    route = mention(thread_ts="1699999999.000001")
    assert route is not None and route.key == channel("1699999999.000001")
    assert route.thread_ts == "1699999999.000001" and not route.needs_history


@pytest.mark.parametrize(
    "changes", [{"bot_id": "B0OTHER001"}, {"user": BOT}, {"channel": "D0ALICE001"}]
)
def test_mentions_from_bots_ourselves_or_dms_are_not_routed_here(changes: dict[str, Any]) -> None:
    assert mention(**changes) is None


def test_a_top_level_dm_is_one_conversation_answered_top_level() -> None:
    route = message(DM)
    assert route == Route(dm_key(TEAM, ALICE), "D0ALICE001", None)
    assert route.key.is_dm and route.key.storage_id() == f"slack:dm:{TEAM}:{ALICE}"


def test_a_dm_thread_is_its_own_assistant_conversation() -> None:
    route = message(DM, thread_ts="1700000000.000001")
    assert route is not None and route.assistant and route.thread_ts == "1700000000.000001"
    assert route.key == dm_key(TEAM, ALICE, "1700000000.000001") != dm_key(TEAM, ALICE)


def test_a_thread_reply_without_mention_needs_history() -> None:
    route = message(THREAD_REPLY)
    assert route == Route(
        channel(THREAD_REPLY["thread_ts"]),
        "C0GENERAL1",
        THREAD_REPLY["thread_ts"],
        needs_history=True,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"text": f"<@{BOT}> hi"},  # its app_mention twin answers it
        {"bot_id": "B0OTHER001"},
        {"user": BOT},
        {"user": None},
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "bot_message"},
        {"subtype": "channel_join"},
        {"type": "app_mention"},
    ],
)
def test_messages_the_bot_must_not_answer(changes: dict[str, Any]) -> None:
    assert message(THREAD_REPLY, **changes) is None


def test_a_top_level_channel_message_is_answered_only_in_mode_all() -> None:
    ts = THREAD_REPLY["ts"]
    route = message(THREAD_REPLY, thread_ts=None)
    assert route == Route(channel(ts), "C0GENERAL1", ts, needs_mode_all=True)
    assert route.key.channel_ref is not None and route.key.channel_ref.channel == "C0GENERAL1"


@pytest.mark.parametrize(
    "changes",
    [
        {"text": f"<@{BOT}> hi"},
        {"bot_id": "B0OTHER001"},
        {"user": BOT},
        {"subtype": "bot_message"},
        {"subtype": "message_changed"},
        {"subtype": "channel_join"},
    ],
)
def test_top_level_messages_not_from_a_person_are_never_answered(changes: dict[str, Any]) -> None:
    assert message(THREAD_REPLY, thread_ts=None, **changes) is None


def test_a_thread_broadcast_is_still_a_person_talking() -> None:
    assert message(THREAD_REPLY, subtype="thread_broadcast") is not None


def test_incoming_has_the_mention_stripped_and_text_unescaped() -> None:
    route = mention()
    assert route is not None
    incoming = to_incoming(MENTION, route, bot_user_id=BOT)
    assert incoming.text == "what is <html>?"
    assert incoming.author == UserRef(Platform("slack"), ALICE)
    assert incoming.message_id == MENTION["ts"] and incoming.key == route.key


def test_strip_mention_keeps_other_mentions_readable() -> None:
    assert strip_mention(f"<@{BOT}>  ask <@U0BOB00001> about <@{BOT}|groqbot>", BOT) == (
        "ask @U0BOB00001 about"
    )


def settings(**values: Any) -> SlackSettings:
    return SlackSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("config", "user", "place", "dm", "admin", "allowed"),
    [
        ({}, ALICE, "C1", False, False, True),
        ({"blocked_user_ids": ALICE}, ALICE, "C1", False, False, False),
        ({"blocked_user_ids": ALICE}, ALICE, "C1", False, True, True),  # admins pass
        ({"allowed_user_ids": "U0BOB00001"}, ALICE, "C1", False, False, False),
        ({"allowed_user_ids": f"U0BOB00001,{ALICE}"}, ALICE, "C1", False, False, True),
        ({"allowed_channel_ids": "C2"}, ALICE, "C1", False, False, False),
        ({"allowed_channel_ids": "C2"}, ALICE, "D1", True, False, True),  # DMs: no
        ({"blocked_channel_ids": "C1"}, ALICE, "C1", False, False, False),
        ({"allow_dms": False}, ALICE, "D1", True, False, False),
        ({"allow_dms": False}, ALICE, "D1", True, True, True),
        (
            {"allowed_channel_ids": "C1", "blocked_channel_ids": "C1"},
            ALICE,
            "C1",
            False,
            False,
            False,
        ),  # a block wins over an allow
    ],
)
def test_allow_and_deny_lists(
    config: dict[str, Any], user: str, place: str, dm: bool, admin: bool, allowed: bool
) -> None:
    who = Requester.of(user, places=() if dm else ((place,),), is_dm=dm, is_admin=admin)
    result = settings(**config).access_policy().allows(who)
    assert result is allowed
