"""The ``Store`` contract, run over every implementation (``InMemoryStore``, ``SqliteStore``,
``PostgresStore`` on a real PostgreSQL server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.ports import Store
from bot.store import InMemoryStore, PostgresStore, SqliteStore
from bot.types import (
    CachedAnswer,
    ChannelMode,
    ChannelRef,
    ChannelSettings,
    ConversationKey,
    Platform,
    Prefs,
    QuotaCounter,
    ReplyRef,
    StoredMessage,
    TurnStatus,
    UnfinishedReply,
    UsageEntry,
    UsageSummary,
    UserRef,
)
from tests.fakes.clock import FakeClock

T0 = 1_750_000_000.0

CHANNEL = ConversationKey(Platform("discord"), space="g1", channel="c1")
THREAD = ConversationKey(Platform("discord"), space="g1", channel="c1", thread="t1")
DM = ConversationKey(Platform("discord"), dm_user="c1")
SLACK = ConversationKey(Platform("slack"), space="g1", channel="c1")
SLACK_DM_THREAD = ConversationKey(Platform("slack"), space="T1", dm_user="U1", thread="t1")

ALICE = UserRef(Platform("discord"), "1", "alice")
BOB = UserRef(Platform("discord"), "2", "bob")
SLACK_ALICE = UserRef(Platform("slack"), "1", "alice")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0, epoch=T0)


StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> StoreFactory:
    """Makes store instances on one database (each still to be opened); the in-memory
    store has no database to share, so there it hands out the same instance."""
    if request.param == "memory":
        memory = InMemoryStore(clock=clock)
        return lambda: memory
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "bot.db", clock=clock)
    # Only here: the other back ends must not skip when no server is installed.
    dsn = request.getfixturevalue("pg_dsn")
    return lambda: PostgresStore(dsn, clock=clock)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    impl = store_factory()
    await impl.open()
    try:
        yield impl
    finally:
        await impl.aclose()


async def add(store: Store, key: ConversationKey, content: str, tokens: int, **kw: object) -> int:
    role = str(kw.pop("role", "user"))
    status = TurnStatus(str(kw.pop("status", TurnStatus.COMPLETE)))
    assert not kw
    return await store.add_message(key, role=role, content=content, tokens=tokens, status=status)


def contents(messages: list[StoredMessage]) -> list[str]:
    return [m.content for m in messages]


# ----- add / window -----


async def test_window_keeps_the_newest_that_fit_in_oldest_first_order(store: Store) -> None:
    for i in range(5):
        await add(store, CHANNEL, f"m{i}", 10)

    assert contents(await store.window(CHANNEL, token_budget=35)) == ["m2", "m3", "m4"]
    assert contents(await store.window(CHANNEL, token_budget=50)) == [f"m{i}" for i in range(5)]
    assert await store.window(CHANNEL, token_budget=9) == []


async def test_window_returns_every_field(store: Store) -> None:
    await store.add_message(
        CHANNEL, role="user", content="hi", author_id="discord:1", tokens=3, platform_message_id="p"
    )
    await add(store, CHANNEL, "hello", 4, role="assistant", status=TurnStatus.INTERRUPTED)

    assert await store.window(CHANNEL, token_budget=100) == [
        StoredMessage("user", "hi", 3, TurnStatus.COMPLETE, "discord:1"),
        StoredMessage("assistant", "hello", 4, TurnStatus.INTERRUPTED, ""),
    ]


async def test_window_stops_at_the_first_message_over_budget(store: Store) -> None:
    await add(store, CHANNEL, "old small", 10)
    await add(store, CHANNEL, "huge", 1000)
    await add(store, CHANNEL, "new small", 10)

    # The old message would fit on its own, but history must stay contiguous.
    assert contents(await store.window(CHANNEL, token_budget=100)) == ["new small"]

    await add(store, CHANNEL, "newest huge", 5000)
    assert await store.window(CHANNEL, token_budget=100) == []


async def test_window_caps_the_message_count(store: Store) -> None:
    for i in range(10):
        await add(store, CHANNEL, f"m{i}", 1)

    assert contents(await store.window(CHANNEL, token_budget=100, max_messages=3)) == [
        "m7",
        "m8",
        "m9",
    ]
    assert await store.window(CHANNEL, token_budget=100, max_messages=0) == []


async def test_window_skips_failed_and_empty_messages_but_keeps_interrupted(store: Store) -> None:
    await add(store, CHANNEL, "q1", 10)
    await add(store, CHANNEL, "a1 partial", 10, role="assistant", status=TurnStatus.INTERRUPTED)
    await add(store, CHANNEL, "q2 failed", 10, status=TurnStatus.FAILED)
    await add(store, CHANNEL, "", 0, role="assistant")
    await add(store, CHANNEL, "q3", 10)

    window = await store.window(CHANNEL, token_budget=30)

    # Skipped messages cost no budget: all three usable ones fit in 30.
    assert contents(window) == ["q1", "a1 partial", "q3"]
    assert [m.status for m in window] == [
        TurnStatus.COMPLETE,
        TurnStatus.INTERRUPTED,
        TurnStatus.COMPLETE,
    ]


async def test_window_walks_a_long_conversation_in_order_up_to_budget_and_cap(
    store: Store,
) -> None:
    for i in range(150):
        await add(store, CHANNEL, f"m{i}", 1)
    await add(store, DM, "elsewhere", 1)

    assert contents(await store.window(CHANNEL, token_budget=100)) == [
        f"m{i}" for i in range(50, 150)
    ]
    assert contents(await store.window(CHANNEL, token_budget=1000, max_messages=90)) == [
        f"m{i}" for i in range(60, 150)
    ]
    assert len(await store.window(CHANNEL, token_budget=1000)) == 150


async def test_window_of_an_unknown_conversation_is_empty(store: Store) -> None:
    assert await store.window(CHANNEL, token_budget=1000) == []


async def test_message_ids_are_distinct_and_increasing(store: Store) -> None:
    ids = [await add(store, key, "x", 1) for key in (CHANNEL, DM, CHANNEL, THREAD)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4


async def test_update_message_changes_content_tokens_and_status(store: Store) -> None:
    user_id = await add(store, CHANNEL, "question", 5)
    answer_id = await add(
        store, CHANNEL, "partial", 5, role="assistant", status=TurnStatus.INTERRUPTED
    )

    await store.update_message(
        answer_id, content="full answer", tokens=7, status=TurnStatus.COMPLETE
    )
    assert await store.window(CHANNEL, token_budget=100) == [
        StoredMessage("user", "question", 5),
        StoredMessage("assistant", "full answer", 7),
    ]

    await store.update_message(user_id, content="question", tokens=5, status=TurnStatus.FAILED)
    assert contents(await store.window(CHANNEL, token_budget=100)) == ["full answer"]


async def test_update_message_of_a_reset_conversation_is_ignored(store: Store) -> None:
    stale = await add(store, CHANNEL, "forgotten", 1)
    await store.reset(CHANNEL)
    fresh = await add(store, DM, "kept", 1)

    await store.update_message(stale, content="oops", tokens=1, status=TurnStatus.FAILED)

    assert fresh != stale
    assert contents(await store.window(DM, token_budget=10)) == ["kept"]
    assert await store.window(CHANNEL, token_budget=10) == []


async def test_conversations_are_isolated_by_key(store: Store) -> None:
    keys = [CHANNEL, THREAD, DM, SLACK, SLACK_DM_THREAD]
    assert len({k.storage_id() for k in keys}) == len(keys)
    for key in keys:
        await add(store, key, key.storage_id(), 1)

    for key in keys:
        assert contents(await store.window(key, token_budget=100)) == [key.storage_id()]


async def test_concurrent_add_message_from_50_tasks_all_land(store: Store) -> None:
    async def one(i: int) -> int:
        await asyncio.sleep(0)
        return await add(store, CHANNEL if i % 2 else DM, f"m{i}", 1)

    ids = await asyncio.gather(*(one(i) for i in range(50)))

    assert len(set(ids)) == 50
    channel = await store.window(CHANNEL, token_budget=1000)
    dm = await store.window(DM, token_budget=1000)
    assert sorted(contents(channel) + contents(dm)) == sorted(f"m{i}" for i in range(50))
    assert len(channel) == len(dm) == 25


async def test_two_store_instances_on_one_database_share_every_write(
    store: Store, store_factory: StoreFactory
) -> None:
    other = store_factory()
    await other.open()
    try:

        async def one(i: int) -> int:
            await asyncio.sleep(0)
            writer = store if i % 2 else other
            return await add(writer, CHANNEL, f"m{i}", 1)

        ids = await asyncio.gather(*(one(i) for i in range(40)))
        await other.set_model(ALICE, "from-other")
        await other.record_usage(entry(ALICE, T0))

        assert len(set(ids)) == 40
        by_id = [f"m{i}" for _, i in sorted(zip(ids, range(40), strict=True))]
        for reader in (store, other):
            # Both see every message, in the order the database numbered them.
            assert contents(await reader.window(CHANNEL, token_budget=1000)) == by_id
        assert await store.prefs(ALICE, None) == Prefs("from-other")
        assert await store.usage_since(ALICE, 0) == UsageSummary(1, 10, 5)
    finally:
        if other is not store:
            await other.aclose()


# ----- reset -----


async def test_ids_are_never_reused_after_a_reset(store: Store) -> None:
    before = [await add(store, CHANNEL, f"c{i}", 1) for i in range(3)]
    assert await store.reset(CHANNEL) == 3

    after = await add(store, CHANNEL, "again", 1)

    assert after > max(before)
    assert contents(await store.window(CHANNEL, token_budget=100)) == ["again"]


async def test_reset_forgets_only_that_conversation(store: Store) -> None:
    for i in range(3):
        await add(store, CHANNEL, f"c{i}", 1)
    await add(store, THREAD, "t0", 1)
    await store.set_model(CHANNEL, "conv-model")
    await store.set_system_prompt(CHANNEL, "conv prompt")
    await store.set_model(ALICE, "alice-model")
    await store.set_model(THREAD, "thread-model")

    assert await store.reset(CHANNEL) == 3

    assert await store.window(CHANNEL, token_budget=100) == []
    assert await store.prefs(ALICE, CHANNEL) == Prefs(model="alice-model")
    assert contents(await store.window(THREAD, token_budget=100)) == ["t0"]
    assert await store.prefs(ALICE, THREAD) == Prefs(model="thread-model")
    assert await store.reset(CHANNEL) == 0

    await add(store, CHANNEL, "again", 1)
    assert contents(await store.window(CHANNEL, token_budget=100)) == ["again"]


async def test_reset_of_an_unknown_conversation_removes_nothing(store: Store) -> None:
    assert await store.reset(DM) == 0


async def test_reset_counts_failed_messages_too(store: Store) -> None:
    await add(store, DM, "ok", 1)
    await add(store, DM, "bad", 1, status=TurnStatus.FAILED)
    assert await store.reset(DM) == 2


# ----- preferences -----


async def test_prefs_default_to_unset(store: Store) -> None:
    assert await store.prefs(ALICE, None) == Prefs()
    assert await store.prefs(ALICE, CHANNEL) == Prefs()


async def test_conversation_prefs_override_user_prefs_field_by_field(store: Store) -> None:
    await store.set_model(ALICE, "alice-model")
    await store.set_system_prompt(ALICE, "alice prompt")
    await store.set_model(CHANNEL, "channel-model")

    assert await store.prefs(ALICE, CHANNEL) == Prefs("channel-model", "alice prompt")
    assert await store.prefs(ALICE, None) == Prefs("alice-model", "alice prompt")
    assert await store.prefs(ALICE, THREAD) == Prefs("alice-model", "alice prompt")
    assert await store.prefs(BOB, CHANNEL) == Prefs("channel-model", None)

    await store.set_system_prompt(CHANNEL, "channel prompt")
    assert await store.prefs(ALICE, CHANNEL) == Prefs("channel-model", "channel prompt")


async def test_user_prefs_are_keyed_by_platform_and_id_not_display_name(store: Store) -> None:
    await store.set_model(ALICE, "m")

    assert await store.prefs(UserRef(Platform("discord"), "1", "renamed"), None) == Prefs("m")
    assert await store.prefs(SLACK_ALICE, None) == Prefs()


async def test_none_clears_a_preference(store: Store) -> None:
    await store.set_model(ALICE, "alice-model")
    await store.set_system_prompt(ALICE, "alice prompt")
    await store.set_model(CHANNEL, "channel-model")

    await store.set_model(CHANNEL, None)
    assert await store.prefs(ALICE, CHANNEL) == Prefs("alice-model", "alice prompt")

    await store.set_model(ALICE, None)
    assert await store.prefs(ALICE, CHANNEL) == Prefs(None, "alice prompt")

    await store.set_system_prompt(ALICE, None)
    assert await store.prefs(ALICE, CHANNEL) == Prefs()


async def test_strict_goes_with_the_model_choice_it_was_set_with(store: Store) -> None:
    await store.set_model(ALICE, "alice-model", strict=True)
    await store.set_system_prompt(ALICE, "alice prompt")  # leaves strict alone
    assert await store.prefs(ALICE, None) == Prefs("alice-model", "alice prompt", strict=True)
    # A conversation's own model brings its own strictness, the user's doesn't leak in.
    await store.set_model(CHANNEL, "channel-model")
    assert await store.prefs(ALICE, CHANNEL) == Prefs("channel-model", "alice prompt")
    await store.set_model(THREAD, "thread-model", strict=True)
    assert await store.prefs(BOB, THREAD) == Prefs("thread-model", strict=True)
    # Choosing again without strict lifts it.
    await store.set_model(ALICE, "alice-model")
    assert await store.prefs(ALICE, None) == Prefs("alice-model", "alice prompt")
    # Forgetting the conversation forgets its strict choice with it.
    await store.reset(THREAD)
    assert await store.prefs(BOB, THREAD) == Prefs()


async def test_setting_prefs_keeps_the_conversation_history(store: Store) -> None:
    await add(store, CHANNEL, "hello", 1)
    await store.set_model(CHANNEL, "m")
    assert contents(await store.window(CHANNEL, token_budget=10)) == ["hello"]


# ----- channel settings -----

GENERAL = ChannelRef(Platform("discord"), "g1", "c1")


async def test_channel_settings_default_to_unset(store: Store) -> None:
    assert await store.channel_settings(GENERAL) == ChannelSettings()
    assert (await store.channel_settings(GENERAL)).mode is ChannelMode.MENTION


async def test_channel_settings_round_trip_with_who_and_when(store: Store) -> None:
    chosen = {"system_prompt": "be a pirate", "model": "m-chan", "mode": ChannelMode.ALL}
    await store.set_channel_settings(GENERAL, chosen, by="discord:1")  # type: ignore[arg-type]

    got = await store.channel_settings(GENERAL)
    assert got == ChannelSettings("be a pirate", "m-chan", ChannelMode.ALL, T0, "discord:1")
    assert got.mode is ChannelMode.ALL  # the enum, not its string


async def test_channel_settings_change_only_the_fields_named(store: Store) -> None:
    await store.set_channel_settings(GENERAL, {"system_prompt": "p"}, by="discord:1")
    await store.set_channel_settings(GENERAL, {"mode": "all"}, by="discord:2")
    assert await store.channel_settings(GENERAL) == ChannelSettings(
        "p", None, ChannelMode.ALL, T0, "discord:2"
    )

    # Two admins at once, each changing another field: neither undoes the other.
    await asyncio.gather(
        store.set_channel_settings(GENERAL, {"model": "m"}, by="discord:1"),
        store.set_channel_settings(GENERAL, {"system_prompt": None}, by="discord:2"),
    )
    got = await store.channel_settings(GENERAL)
    assert (got.system_prompt, got.model, got.mode) == (None, "m", ChannelMode.ALL)

    await store.set_channel_settings(
        GENERAL, {"system_prompt": None, "model": None, "mode": "mention"}, by="discord:3"
    )
    assert await store.channel_settings(GENERAL) == ChannelSettings(
        None, None, ChannelMode.MENTION, T0, "discord:3"
    )


async def test_channel_settings_refuse_a_mode_that_is_not_one(store: Store) -> None:
    with pytest.raises((ValueError, StoreError)):
        await store.set_channel_settings(GENERAL, {"mode": "sometimes"}, by="discord:1")
    assert await store.channel_settings(GENERAL) == ChannelSettings()


async def test_channel_settings_are_keyed_by_platform_space_and_channel(store: Store) -> None:
    await store.set_channel_settings(GENERAL, {"system_prompt": "p"}, by="discord:1")

    for other in (
        ChannelRef(Platform("slack"), "g1", "c1"),
        ChannelRef(Platform("discord"), "g2", "c1"),
        ChannelRef(Platform("discord"), "g1", "c2"),
    ):
        assert await store.channel_settings(other) == ChannelSettings()
    # Every conversation of the channel (its threads) shares them.
    assert THREAD.channel_ref == CHANNEL.channel_ref == GENERAL
    assert DM.channel_ref is None


async def test_channel_settings_are_not_user_or_conversation_prefs(store: Store) -> None:
    await store.set_channel_settings(GENERAL, {"system_prompt": "p", "model": "m"}, by="d:1")
    await add(store, THREAD, "hello", 1)
    await store.reset(THREAD)  # a conversation's /reset leaves its channel alone

    assert await store.prefs(ALICE, THREAD) == Prefs()
    assert (await store.channel_settings(GENERAL)).system_prompt == "p"


# ----- usage ledger -----


def entry(user: UserRef, at: float, prompt: int = 10, completion: int = 5) -> UsageEntry:
    return UsageEntry(user, "model-a", prompt, completion, at)


async def test_usage_since_sums_one_users_rows_from_a_time(store: Store) -> None:
    await store.record_usage(entry(ALICE, T0 - 100, 1, 2))
    await store.record_usage(entry(ALICE, T0, 10, 20))
    await store.record_usage(entry(ALICE, T0 + 50, 100, 200))
    await store.record_usage(entry(BOB, T0 + 50, 1000, 2000))
    await store.record_usage(entry(SLACK_ALICE, T0 + 50, 1000, 2000))

    assert await store.usage_since(ALICE, T0) == UsageSummary(2, 110, 220)
    assert await store.usage_since(ALICE, 0) == UsageSummary(3, 111, 222)
    assert await store.usage_since(ALICE, T0 + 51) == UsageSummary()
    assert await store.usage_since(UserRef(Platform("discord"), "9"), 0) == UsageSummary()


async def test_usage_by_model_totals_every_users_rows_from_a_time(store: Store) -> None:
    await store.record_usage(entry(ALICE, T0 - 100, 1, 2))
    await store.record_usage(entry(ALICE, T0, 10, 20))
    await store.record_usage(entry(BOB, T0 + 50, 100, 200))
    await store.record_usage(replace(entry(SLACK_ALICE, T0 + 50, 0, 0), model="other"))

    assert await store.usage_by_model(T0) == {
        entry(ALICE, T0, 0, 0).model: UsageSummary(2, 110, 220),
        "other": UsageSummary(1, 0, 0),
    }
    assert await store.usage_by_model(T0 + 51) == {}


async def test_iter_usage_yields_every_row_in_the_order_recorded(store: Store) -> None:
    rows = [entry(ALICE, T0 + i, i, 2 * i) for i in range(5)] + [entry(SLACK_ALICE, T0 + 9)]
    for row in rows:
        await store.record_usage(row)

    got = [row async for row in store.iter_usage()]

    # The ledger keeps platform and id; display names are not part of it.
    assert got == [
        UsageEntry(UserRef(r.user.platform, r.user.user_id), r.model, *_tokens(r), r.at)
        for r in rows
    ]


def _tokens(row: UsageEntry) -> tuple[int, int]:
    return row.prompt_tokens, row.completion_tokens


async def test_cached_rows_are_counted_and_read_back_marked(store: Store) -> None:
    await store.record_usage(entry(ALICE, T0, 10, 20))
    await store.record_usage(UsageEntry(ALICE, "model-a", 0, 0, T0 + 1, cached=True))

    assert await store.usage_since(ALICE, T0) == UsageSummary(2, 10, 20, cached=1)
    assert [row.cached async for row in store.iter_usage()] == [False, True]


async def test_iter_usage_of_an_empty_ledger_yields_nothing(store: Store) -> None:
    assert [row async for row in store.iter_usage()] == []


# ----- quota counters -----


async def test_quota_counters_upsert_load_and_prune(store: Store) -> None:
    await store.save_quota_counters(
        [
            QuotaCounter("user:discord:1@m", "rpd", T0, 1.0),
            QuotaCounter("user:discord:1@m", "tpd", T0, 100.0),
            QuotaCounter("account:m", "tpd", T0 - 86400, 500.0),
        ]
    )
    await store.save_quota_counters([QuotaCounter("user:discord:1@m", "rpd", T0, 2.0)])
    await store.save_quota_counters([])

    assert await store.load_quota_counters(T0) == [
        QuotaCounter("user:discord:1@m", "rpd", T0, 2.0),
        QuotaCounter("user:discord:1@m", "tpd", T0, 100.0),
    ]
    assert len(await store.load_quota_counters(0)) == 3

    assert await store.prune_quota_counters(T0) == 1
    assert await store.prune_quota_counters(T0) == 0
    assert await store.load_quota_counters(0) == [
        QuotaCounter("user:discord:1@m", "rpd", T0, 2.0),
        QuotaCounter("user:discord:1@m", "tpd", T0, 100.0),
    ]


async def test_quota_counter_windows_are_distinct_rows(store: Store) -> None:
    await store.save_quota_counters(
        [QuotaCounter("s", "rpm", T0, 1.0), QuotaCounter("s", "rpm", T0 + 60, 3.0)]
    )
    assert await store.load_quota_counters(T0 + 1) == [QuotaCounter("s", "rpm", T0 + 60, 3.0)]
    assert await store.prune_quota_counters(T0 + 3600) == 2
    assert await store.load_quota_counters(0) == []


# ----- replies stored while they stream -----

ECHO = ConversationKey(Platform("echo"), dm_user="u")


async def test_a_streaming_reply_is_found_with_its_key_text_and_messages(store: Store) -> None:
    await add(store, THREAD, "question", 2)
    ref = ReplyRef("t1", ("m1",))
    reply_id = await store.add_message(
        THREAD,
        role="assistant",
        content="first words",
        tokens=3,
        status=TurnStatus.STREAMING,
        reply_ref=ref,
    )

    assert await store.streaming_replies([Platform("discord")]) == [
        UnfinishedReply(reply_id, THREAD, "first words", 3, ref)
    ]
    # Its text is history already: a crash must not take it out of the conversation.
    assert await store.window(THREAD, token_budget=100) == [
        StoredMessage("user", "question", 2),
        StoredMessage("assistant", "first words", 3, TurnStatus.STREAMING),
    ]


async def test_checkpoints_rewrite_the_text_and_ids_until_the_reply_ends(store: Store) -> None:
    reply_id = await add(store, DM, "", 0, role="assistant", status=TurnStatus.STREAMING)
    assert await store.streaming_replies([Platform("discord")]) == [
        UnfinishedReply(reply_id, DM, "", 0, ReplyRef())
    ]
    assert await store.window(DM, token_budget=100) == []  # nothing said yet

    await store.checkpoint_reply(reply_id, "more", 2, ReplyRef("c9", ("m1",)))
    two = ReplyRef("c9", ("m1", "m2"))
    await store.checkpoint_reply(reply_id, "more text", 4, two)
    assert await store.streaming_replies([Platform("discord")]) == [
        UnfinishedReply(reply_id, DM, "more text", 4, two)
    ]
    assert await store.window(DM, token_budget=100) == [
        StoredMessage("assistant", "more text", 4, TurnStatus.STREAMING)
    ]

    # The reply ends (its ids stay); a late checkpoint can't make it stream again.
    await store.update_message(
        reply_id, content="more text still", tokens=5, status=TurnStatus.INTERRUPTED
    )
    await store.checkpoint_reply(reply_id, "late", 1, ReplyRef("c9", ("m3",)))
    assert await store.streaming_replies([Platform("discord")]) == []
    assert await store.window(DM, token_budget=100) == [
        StoredMessage("assistant", "more text still", 5, TurnStatus.INTERRUPTED)
    ]


async def test_streaming_replies_are_of_the_platforms_asked_oldest_first(store: Store) -> None:
    keys = [CHANNEL, SLACK, DM, ECHO, SLACK_DM_THREAD, THREAD]
    ids = {}
    for key in keys:
        await add(store, key, "q", 1)
        ids[key] = await add(store, key, "a", 1, role="assistant", status=TurnStatus.STREAMING)
    await add(store, CHANNEL, "done", 1, role="assistant")

    found = await store.streaming_replies([Platform("discord"), Platform("slack")])

    wanted = [CHANNEL, SLACK, DM, SLACK_DM_THREAD, THREAD]
    assert [(r.message_id, r.key) for r in found] == [(ids[k], k) for k in wanted]
    assert [r.key for r in await store.streaming_replies([Platform("echo")])] == [ECHO]
    assert await store.streaming_replies([]) == []


async def test_reply_refs_are_opaque_strings_kept_exactly(store: Store) -> None:
    odd = ReplyRef('C1/1700000000.000100 "x"', ("1.2", "", "ü/ß\n,[]", '{"a": 1}'))
    reply_id = await store.add_message(
        SLACK_DM_THREAD, role="assistant", content="", status=TurnStatus.STREAMING, reply_ref=odd
    )
    [found] = await store.streaming_replies([Platform("slack")])
    assert found == UnfinishedReply(reply_id, SLACK_DM_THREAD, "", 0, odd)


async def test_reset_forgets_streaming_replies_too(store: Store) -> None:
    stale = await add(store, CHANNEL, "cut", 1, role="assistant", status=TurnStatus.STREAMING)
    assert await store.reset(CHANNEL) == 1
    assert await store.streaming_replies([Platform("discord")]) == []

    # A late checkpoint of the forgotten reply changes nothing.
    await store.checkpoint_reply(stale, "late", 1, ReplyRef("p"))
    assert await store.streaming_replies([Platform("discord")]) == []
    assert await store.window(CHANNEL, token_budget=100) == []


async def test_ping_answers_while_open(store: Store) -> None:
    await store.ping()


# ----- response cache -----


def cached(text: str, at: float, *, reasoning: str = "", estimated: bool = False) -> CachedAnswer:
    return CachedAnswer("model-a", text, reasoning, 7, 3, at, estimated)


async def put(store: Store, key: str, answer: CachedAnswer, max_entries: int = 100) -> None:
    await store.cache_put(key, answer, max_entries=max_entries, stale_before=0)


async def test_cache_returns_what_was_put_every_field(store: Store) -> None:
    answer = cached("4", T0, reasoning="2+2 …", estimated=True)
    await put(store, "k1", answer)

    assert await store.cache_get("k1", fresh_since=T0) == answer
    assert await store.cache_get("k2", fresh_since=0) is None
    assert await store.cache_size() == 1


async def test_cache_entry_older_than_fresh_since_is_not_returned(store: Store) -> None:
    await put(store, "k1", cached("old", T0))

    assert await store.cache_get("k1", fresh_since=T0 + 1) is None
    assert (await store.cache_get("k1", fresh_since=T0 - 1)) is not None


async def test_cache_put_replaces_the_entry_of_the_same_key(store: Store) -> None:
    await put(store, "k1", cached("first", T0))
    await put(store, "k1", cached("second", T0 + 5))

    got = await store.cache_get("k1", fresh_since=0)
    assert got is not None and (got.text, got.created_at) == ("second", T0 + 5)
    assert await store.cache_size() == 1


async def test_cache_put_evicts_the_oldest_beyond_max_entries(store: Store) -> None:
    for i in range(5):
        await put(store, f"k{i}", cached(f"a{i}", T0 + i), max_entries=3)

    assert await store.cache_size() == 3
    kept = [await store.cache_get(f"k{i}", fresh_since=0) for i in range(5)]
    assert [a.text if a else None for a in kept] == [None, None, "a2", "a3", "a4"]


async def test_cache_put_drops_stale_entries(store: Store) -> None:
    await put(store, "old", cached("old", T0 - 100))
    await put(store, "mid", cached("mid", T0 - 10))
    await store.cache_put("new", cached("new", T0), max_entries=100, stale_before=T0 - 50)

    assert await store.cache_size() == 2
    assert await store.cache_get("old", fresh_since=0) is None


async def test_cache_clear_counts_and_empties_but_reset_leaves_it(store: Store) -> None:
    await put(store, "k1", cached("a", T0))
    await put(store, "k2", cached("b", T0))
    await add(store, CHANNEL, "hi", 1)
    await store.reset(CHANNEL)
    assert await store.cache_size() == 2

    assert await store.cache_clear() == 2
    assert await store.cache_clear() == 0
    assert await store.cache_get("k1", fresh_since=0) is None


# ----- fleet coordination -----


async def test_an_event_is_claimed_once_until_its_claim_expires(
    store: Store, clock: FakeClock
) -> None:
    assert await store.claim_event("slack:Ev1", ttl_s=60)
    assert not await store.claim_event("slack:Ev1", ttl_s=60)
    assert await store.claim_event("slack:Ev2", ttl_s=60)
    await clock.advance(30)
    assert not await store.claim_event("slack:Ev1", ttl_s=60)
    await clock.advance(31)
    assert await store.claim_event("slack:Ev1", ttl_s=60)  # expired: a new delivery
    assert not await store.claim_event("slack:Ev1", ttl_s=60)


async def test_a_turn_lease_is_held_and_released(store: Store) -> None:
    async with store.turn_lease(THREAD):
        await add(store, THREAD, "inside the lease", 3)
    async with store.turn_lease(THREAD):  # released: taken again at once
        pass
    assert contents(await store.window(THREAD, token_budget=100)) == ["inside the lease"]


async def test_count_conversations_follows_creation_and_reset(store: Store) -> None:
    assert await store.count_conversations() == 0
    await add(store, CHANNEL, "hi", 1)
    await add(store, CHANNEL, "again", 1)
    await add(store, DM, "hello", 1)
    assert await store.count_conversations() == 2
    await store.reset(CHANNEL)
    assert await store.count_conversations() == 1
