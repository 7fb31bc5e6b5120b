"""The response cache's policy (``bot.response_cache``) and which answers the engine keeps."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from bot.engine import Engine
from bot.response_cache import CACHED_NOTE, cache_key, cacheable, replay_prefixes
from bot.settings import Settings
from bot.store import InMemoryStore
from bot.types import (
    CachedAnswer,
    ChatMessage,
    ChatRequest,
    ConversationKey,
    Incoming,
    Platform,
    TurnStatus,
    UserRef,
)
from tests.fakes.clock import FakeClock
from tests.fakes.completions import ScriptedCompletions
from tests.fakes.sink import RecordingSink

URL = "https://api.groq.com/openai/v1"
REQUEST = ChatRequest(
    model="m",
    messages=[ChatMessage("system", "be brief"), ChatMessage("user", "hi")],
    temperature=0.0,
    max_tokens=1024,
)


def test_the_key_is_stable_and_a_sha256_hex() -> None:
    again = replace(
        REQUEST, messages=[ChatMessage("system", "be brief"), ChatMessage("user", "hi")]
    )
    assert cache_key(URL, REQUEST) == cache_key(URL, again)
    assert len(cache_key(URL, REQUEST)) == 64 and int(cache_key(URL, REQUEST), 16) >= 0


@pytest.mark.parametrize(
    "changed",
    [
        replace(REQUEST, model="m2"),
        replace(REQUEST, messages=[ChatMessage("user", "hi")]),
        replace(REQUEST, messages=[ChatMessage("system", "be brief"), ChatMessage("user", "Hi")]),
        replace(REQUEST, temperature=None),
        replace(REQUEST, top_p=0.9),
        replace(REQUEST, max_tokens=1023),
        replace(REQUEST, frequency_penalty=0.1),
        replace(REQUEST, presence_penalty=0.1),
        replace(REQUEST, extra={"reasoning_effort": "low"}),
        replace(REQUEST, extra={"include_reasoning": True}),
        replace(REQUEST, extra={"stop": ["\n"]}),
    ],
)
def test_every_field_sent_is_part_of_the_key(changed: ChatRequest) -> None:
    assert cache_key(URL, changed) != cache_key(URL, REQUEST)


def test_the_base_url_is_part_of_the_key() -> None:
    assert cache_key("http://127.0.0.1:8080/v1", REQUEST) != cache_key(URL, REQUEST)


@pytest.mark.parametrize(
    ("mode", "temperature", "expected"),
    [
        ("deterministic", 0.0, True),
        ("deterministic", 0.2, False),
        ("deterministic", None, False),  # the API's default is not deterministic
        ("always", 1.0, True),
        ("always", None, True),
        ("off", 0.0, False),
    ],
)
def test_cacheable_by_mode(mode: str, temperature: float | None, expected: bool) -> None:
    assert cacheable(mode, replace(REQUEST, temperature=temperature)) is expected


@pytest.mark.parametrize("text", ["x", "one two", "word " * 200, "a" * 1000, "line\n" * 50])
def test_replay_prefixes_grow_to_the_whole_text(text: str) -> None:
    prefixes = replay_prefixes(text)
    assert prefixes[-1] == text
    assert all(len(a) < len(b) and b.startswith(a) for a, b in itertools.pairwise(prefixes))
    assert len(prefixes) <= 12
    if len(text) > 100:
        assert len(prefixes) >= 5


def test_replay_prefixes_of_nothing_is_nothing() -> None:
    assert replay_prefixes("") == []


# ----- which answers the engine keeps -----

CHAT = Platform("chat")
ALICE, BOB = UserRef(CHAT, "alice"), UserRef(CHAT, "bob")


def engine(
    script_pieces: int = 30, **settings: object
) -> tuple[Engine, InMemoryStore, ScriptedCompletions]:
    clock = FakeClock(instant_sleep=True)
    store = InMemoryStore(clock=clock)
    script = ScriptedCompletions(clock, script_pieces, step_s=0.01)
    values: dict[str, object] = {"default_model": "m", "quota_enabled": False, "temperature": 0}
    values.update(settings)
    config = Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]
    return Engine(settings=config, store=store, completions=script, clock=clock), store, script


async def ask(e: Engine, user: UserRef) -> RecordingSink:
    sink = RecordingSink()
    await e.handle(Incoming(ConversationKey(CHAT, dm_user=user.user_id), user, "q", "1"), sink)
    return sink


async def test_only_an_answer_that_stopped_by_itself_is_stored() -> None:
    e, store, script = engine()
    for reason in (None, "length", "content_filter"):
        script.finish_reason = reason
        await ask(e, ALICE)
        assert await store.cache_size() == 0, reason
    script.finish_reason = "stop"
    await ask(e, ALICE)
    assert await store.cache_size() == 1


async def test_an_interrupted_answer_is_not_stored() -> None:
    e, store, script = engine()
    script.finish_reason, script.fail_after = "stop", 5
    sink = await ask(e, ALICE)
    assert sink.status_ is TurnStatus.INTERRUPTED
    assert await store.cache_size() == 0


async def test_a_replay_shows_the_reasoning_as_a_live_answer_would() -> None:
    e, store, script = engine(show_reasoning=True)
    script.finish_reason = "stop"
    await ask(e, ALICE)
    [key] = store._cache  # the one entry: alice's first turn
    entry = CachedAnswer("m", "Paris.", "The capital.", 5, 2, e.clock.time())
    await store.cache_put(key, entry, max_entries=10, stale_before=0)

    sink = await ask(e, BOB)

    assert sink.final == f"> The capital.\n\nParis.\n\n{CACHED_NOTE}"
    assert sink.ops("update")[-1] == "> The capital.\n\nParis."
    window = await store.window(ConversationKey(CHAT, dm_user="bob"), token_budget=100)
    assert [m.content for m in window] == ["q", "Paris."]
    assert window[1].tokens == 2  # the original answer's count, not the ledger's 0
