"""Pure Discord translation: real ``discord.Message`` objects built from recorded-shape
payloads (the fake Discord's builders), no sockets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import discord
import pytest

from adapters.discord.commands import fit, model_choices
from adapters.discord.config import DiscordSettings
from adapters.discord.translate import (
    Route,
    channel_key,
    channel_ref,
    channel_ref_for,
    dm_key,
    is_conversational,
    key_for_channel,
    mentions_bot,
    route,
    strip_mentions,
    thread_name,
    to_incoming,
)
from bot.access import Requester
from bot.types import Attachment, ConversationKey, Platform
from tests.fakes import discord_payloads as p
from tests.fakes.discord_server import FakeDiscord

FAKE = FakeDiscord()  # only its ids and payload builders are used: nothing is started
BOT, GUILD, CHANNEL = int(FAKE.bot.id), int(FAKE.guild_id), int(FAKE.channel_id)
THREAD = int(FAKE.snowflake())


@pytest.fixture(scope="module")
def state() -> Iterator[Any]:
    """A discord.py ConnectionState holding the fake guild and one thread."""
    client = discord.Client(intents=discord.Intents.default())
    conn = client._connection
    # Payloads are plain dicts; discord.py types them as TypedDicts.
    me: Any = FAKE._me()
    guild_data: Any = FAKE._guild_payload()
    conn.user = discord.ClientUser(state=conn, data=me)
    guild = discord.Guild(data=guild_data, state=conn)
    conn._add_guild(guild)
    data: Any = p.thread(
        thread_id=str(THREAD),
        guild_id=FAKE.guild_id,
        parent_id=FAKE.channel_id,
        owner_id=FAKE.alice.id,
        name="t",
    )
    guild._add_thread(discord.Thread(guild=guild, state=conn, data=data))
    yield conn


def msg(
    state: Any,
    content: str,
    *,
    author: p.FakeUser = FAKE.alice,
    channel: int = CHANNEL,
    dm: bool = False,
    mentions: list[p.FakeUser] | None = None,
    **extra: Any,
) -> discord.Message:
    data: Any = p.message(
        message_id=FAKE.snowflake(),
        channel_id=str(channel),
        author=author,
        content=content,
        guild_id=None if dm else FAKE.guild_id,
        mentions=mentions,
        with_member=not dm,
    )
    data.update(extra)
    chan, _ = state._get_guild_channel(data)
    return discord.Message(state=state, channel=chan, data=data)


def mention(state: Any, text: str, **kw: Any) -> discord.Message:
    return msg(state, f"<@{BOT}> {text}", mentions=[FAKE.bot], **kw)


def decide(message: discord.Message, **kw: Any) -> Route | None:
    kw.setdefault("mode", "thread")
    kw.setdefault("mentioned", mentions_bot(message, BOT))
    return route(message, bot_id=BOT, **kw)


def test_mention_in_channel_opens_a_thread_keyed_by_the_message(state: Any) -> None:
    m = mention(state, "hello")
    assert decide(m) == Route(channel_key(GUILD, CHANNEL, m.id), open_thread=True)


def test_reply_mode_answers_as_a_reply_with_the_same_key(state: Any) -> None:
    m = mention(state, "hello")
    assert decide(m, mode="reply") == Route(channel_key(GUILD, CHANNEL, m.id), reply_to=m.id)


def test_plain_channel_message_and_reply_ping_are_not_for_the_bot(state: Any) -> None:
    assert decide(msg(state, "just chatting")) is None
    # Replying to the bot pings it (it is in ``mentions``) without writing <@bot>.
    pinged = msg(state, "thanks", mentions=[FAKE.bot])
    assert not mentions_bot(pinged, BOT) and decide(pinged) is None


def test_mode_all_answers_top_level_messages_as_mentions_are(state: Any) -> None:
    m = msg(state, "just chatting")
    key = channel_key(GUILD, CHANNEL, m.id)
    assert decide(m, answer_all=True) == Route(key, open_thread=True)
    assert decide(m, answer_all=True, mode="reply") == Route(key, reply_to=m.id)
    # Threads stay as they are: only the bot's own (known) ones are answered.
    assert decide(msg(state, "hi", channel=THREAD), answer_all=True) is None


def test_reply_chain_root_continues_the_conversation(state: Any) -> None:
    m = msg(state, "and then?")
    assert decide(m, reply_root=123) == Route(channel_key(GUILD, CHANNEL, 123), reply_to=m.id)


def test_thread_messages_need_a_mention_or_a_known_thread(state: Any) -> None:
    key = channel_key(GUILD, CHANNEL, THREAD)
    assert decide(msg(state, "hi", channel=THREAD)) is None
    assert decide(msg(state, "hi", channel=THREAD), known_thread=True) == Route(key)
    assert decide(mention(state, "hi", channel=THREAD)) == Route(key)


def test_dm_is_keyed_by_user(state: Any) -> None:
    m = msg(state, "secret", dm=True, channel=int(FAKE.snowflake()))
    assert isinstance(m.channel, discord.DMChannel)
    assert decide(m) == Route(ConversationKey(Platform("discord"), dm_user=FAKE.alice.id))


def test_nick_and_role_mentions_count_and_are_stripped(state: Any) -> None:
    role = int(FAKE.member_role)
    m = msg(state, f"<@!{BOT}>  hi <@{FAKE.bob.id}> <@&{role}>")
    assert mentions_bot(m, BOT)
    assert strip_mentions(m.content, BOT) == f"hi <@{FAKE.bob.id}> <@&{role}>"
    assert strip_mentions(m.content, BOT, role) == f"hi <@{FAKE.bob.id}>"
    assert mentions_bot(msg(state, f"<@&{role}> hey"), BOT, role)


def test_to_incoming_carries_author_text_id_and_attachments(state: Any) -> None:
    m = mention(state, "what is this?")
    files = (Attachment("a.txt", "text/plain", 3, data=b"abc"),)
    key = channel_key(GUILD, CHANNEL, m.id)
    text = strip_mentions(m.content, BOT)
    incoming = to_incoming(m, key, text=text, attachments=files)
    assert (incoming.text, incoming.message_id, incoming.attachments) == (
        "what is this?",
        str(m.id),
        files,
    )
    assert incoming.author.user_id == FAKE.alice.id and incoming.author.display_name == "Alice"


def test_bots_webhooks_and_system_messages_are_not_conversational(state: Any) -> None:
    assert is_conversational(mention(state, "hi"))
    assert is_conversational(msg(state, "re", type=19))
    assert not is_conversational(mention(state, "hi", author=FAKE.other_bot))
    assert not is_conversational(mention(state, "hi", webhook_id=FAKE.snowflake()))
    assert not is_conversational(msg(state, "", type=7))  # member joined


def test_key_for_channel_names_threads_and_dms_only(state: Any) -> None:
    thread = msg(state, "x", channel=THREAD).channel
    dm = msg(state, "x", dm=True, channel=int(FAKE.snowflake())).channel
    channel = msg(state, "x").channel
    assert key_for_channel(thread, 1) == channel_key(GUILD, CHANNEL, THREAD)
    assert key_for_channel(dm, 7) == dm_key(7)
    assert key_for_channel(channel, 1) is None
    # Channel settings: a thread's are its parent's; a DM has none.
    assert channel_ref_for(thread) == channel_ref_for(channel) == channel_ref(GUILD, CHANNEL)
    assert channel_ref_for(dm) is None


def allowed(settings: DiscordSettings, **kw: Any) -> bool:
    values: dict[str, Any] = {
        "user_id": 1,
        "role_ids": [],
        "guild_id": 10,
        "channel_ids": [100],
        "is_admin": False,
    }
    v = {**values, **kw}
    guild = v["guild_id"]
    who = Requester.of(
        v["user_id"],
        role_ids=v["role_ids"],
        places=() if guild is None else ((guild,), v["channel_ids"]),
        is_dm=guild is None,
        is_admin=v["is_admin"],
    )
    return settings.access_policy().allows(who)


def test_access_lists() -> None:
    s = DiscordSettings.model_construct()  # defaults only: the environment must not leak in
    assert allowed(s) and allowed(s, guild_id=None)
    blocked = s.model_copy(update={"blocked_user_ids": ["1"]})
    assert not allowed(blocked) and allowed(blocked, is_admin=True)
    roles = s.model_copy(update={"blocked_role_ids": ["5"]})
    assert not allowed(roles, role_ids=[5]) and allowed(roles, role_ids=[6])
    people = s.model_copy(update={"allowed_user_ids": ["2"], "allowed_role_ids": ["7"]})
    assert not allowed(people) and allowed(people, user_id=2) and allowed(people, role_ids=[7])
    no_dms = s.model_copy(update={"allow_dms": False})
    assert not allowed(no_dms, guild_id=None) and allowed(no_dms)
    places = s.model_copy(update={"allowed_channel_ids": ["100"], "blocked_guild_ids": ["11"]})
    assert allowed(places) and not allowed(places, channel_ids=[200])
    assert allowed(places, channel_ids=[300, 100])  # a thread whose parent is allowed
    assert not allowed(places, guild_id=11)


def test_thread_name() -> None:
    assert thread_name("\n  How do I sort a list?\nmore", "alice") == "How do I sort a list?"
    assert thread_name("", "alice") == "Chat with alice"
    long = thread_name("x" * 100, "alice")
    assert len(long) == 60 and long.endswith("…")


def test_fit_cuts_at_a_line_and_says_how_much_is_missing() -> None:
    text = "\n".join(f"line {i:03}" for i in range(400))
    cut = fit(text, 200)
    assert len(cut) <= 200 and cut.splitlines()[0] == "line 000"
    assert cut.endswith("more line(s)") and "line 399" not in cut
    assert fit("short") == "short"


def test_fit_cuts_a_line_longer_than_the_limit_instead_of_dropping_it() -> None:
    line = f"`{'x' * 3000}` is not an available model. See /models."
    alone = fit(line)
    assert len(alone) == 2000 and alone.startswith("`xxx") and "…" in alone
    assert alone.endswith("is not an available model. See /models.")
    followed = fit(f"{line}\nsecond\nthird")
    assert len(followed) <= 2000 and followed.startswith("`xxx")
    assert followed.endswith("\n… and 2 more line(s)")


def test_model_choices_put_the_current_model_first_and_cap_at_25() -> None:
    ids = [f"model-{i:02}" for i in range(30)]
    choices = model_choices(ids, "model-29")
    assert len(choices) == 25
    assert choices[0].value == "model-29" and choices[0].name == "✓ model-29 (current)"
    assert [c.value for c in choices[1:3]] == ["model-00", "model-01"]
