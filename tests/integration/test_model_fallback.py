"""MODEL_FALLBACKS end to end: Engine + SqliteStore + QuotaManager + the real httpx client
against FakeGroq on 127.0.0.1 (its limits, 429/503/decommissioned answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bot.app import Runtime, open_runtime
from bot.settings import Settings
from bot.types import ConversationKey, Incoming, Platform, TurnStatus, UserRef
from tests.fakes.groq_models import FakeModel
from tests.fakes.groq_server import FakeGroq
from tests.fakes.sink import RecordingSink

BIG, SMALL, QWEN = "openai/gpt-oss-120b", "openai/gpt-oss-20b", "qwen/qwen3-32b"
CHAIN = f"{BIG}>{SMALL}>{QWEN}"
ALICE = UserRef(Platform("terminal"), "alice", "Alice")
DM = ConversationKey(Platform("terminal"), dm_user="alice")


async def ask(rt: Runtime, text: str) -> RecordingSink:
    sink = RecordingSink()
    await asyncio.wait_for(rt.engine.handle(Incoming(DM, ALICE, text, "m"), sink), 30)
    return sink


def models_asked(fake: FakeGroq) -> list[str]:
    return [r["body"]["model"] for r in fake.chat_requests]


async def ledger_models(rt: Runtime) -> list[str]:
    return [entry.model async for entry in rt.store.iter_usage()]


async def exhaust_day_tokens(fake: FakeGroq, *models: str) -> None:
    """Another client of the key has spent the day's tokens of ``models``."""
    fake.limit_tpd, fake.enforce_tpd = 50_000, True
    for model in models:
        assert await fake.burn(model, 50_000)


async def test_day_tokens_used_up_on_the_chosen_model_the_next_one_answers(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """The first turn meets Groq's 429 (tokens per day, hours away): the next model of
    the chain answers, the note names both and why, the ledger holds the model that
    answered. The second turn is decided before sending: the mirror learned from the
    429, so the exhausted model gets no request at all."""
    await exhaust_day_tokens(fake_groq, BIG)
    async with open_runtime(settings_factory(model_fallbacks=CHAIN, default_model=BIG)) as rt:
        first = await ask(rt, "hello one")
        assert first.status_ is TurnStatus.COMPLETE, first.events
        assert "last=hello one" in (first.final or "")
        assert f"model={SMALL}" in (first.final or "")
        assert f"answered by {SMALL}: {BIG}'s daily token quota is used up, resets in" in (
            first.final or ""
        )
        assert models_asked(fake_groq) == [BIG, SMALL]
        assert fake_groq.count_429 == 1  # the one 429 never reached the user
        assert not any("429" in text or "rate" in text for text in first.ops("fail"))

        second = await ask(rt, "hello two")
        assert second.status_ is TurnStatus.COMPLETE
        assert f"answered by {SMALL}: {BIG}'s daily token quota" in (second.final or "")
        assert models_asked(fake_groq) == [BIG, SMALL, SMALL]
        assert fake_groq.count_429 == 1
        assert await ledger_models(rt) == [SMALL, SMALL]
        usage = await rt.engine.usage(ALICE)
        assert SMALL in usage.text
        # The user's own choice is unchanged.
        assert (await rt.store.prefs(ALICE, DM)).model is None
        assert await rt.engine.current_model(ALICE, DM) == BIG


async def test_the_mirror_predicts_the_day_quota_before_any_request_is_refused(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """No 429 at all: the bot's own use fills the chosen model's day tokens (pinned in
    QUOTA_MODEL_LIMITS, and enforced by the fake alike); the turn that would not fit is
    sent to the next model at once, without waiting."""
    fake_groq.limit_tpd, fake_groq.enforce_tpd = 2_500, True
    fake_groq.keep_cap_charged = True  # each turn costs its whole reservation, as counted
    settings = settings_factory(
        model_fallbacks=CHAIN,
        default_model=BIG,
        max_output_tokens=1_000,
        quota_model_limits=f"{BIG}=tpd:2500",
    )
    async with open_runtime(settings) as rt:
        for n in range(2):
            sink = await ask(rt, f"question {n}")
            assert "answered by" not in (sink.final or ""), sink.events
        third = await ask(rt, "question 2")
    assert third.status_ is TurnStatus.COMPLETE, third.events
    assert models_asked(fake_groq) == [BIG, BIG, SMALL]
    assert fake_groq.count_429 == 0
    assert f"answered by {SMALL}: {BIG}'s daily token quota is used up, resets in" in (
        third.final or ""
    )
    assert not [s for s in third.ops("status") if s.startswith("waiting")]


async def test_over_capacity_503_falls_back_at_once(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.script("503", times=10, model=BIG)
    async with open_runtime(settings_factory(model_fallbacks=CHAIN, default_model=BIG)) as rt:
        sink = await ask(rt, "hi")
        assert sink.status_ is TurnStatus.COMPLETE, sink.events
        assert f"answered by {SMALL}: {BIG} is over capacity (503)" in (sink.final or "")
        # Not retried on the overloaded model: the next one answers now.
        assert models_asked(fake_groq) == [BIG, SMALL]
        assert await ledger_models(rt) == [SMALL]


async def test_decommissioned_model_falls_back(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.script("model_decommissioned", model=BIG)
    async with open_runtime(settings_factory(model_fallbacks=CHAIN, default_model=BIG)) as rt:
        sink = await ask(rt, "hi")
    assert f"answered by {SMALL}: {BIG} has been decommissioned" in (sink.final or "")
    assert models_asked(fake_groq) == [BIG, SMALL]


async def test_a_chosen_model_the_list_no_longer_offers_falls_back(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.models = [m for m in fake_groq.models if m.id != BIG]
    async with open_runtime(settings_factory(model_fallbacks=CHAIN, default_model=BIG)) as rt:
        sink = await ask(rt, "hi")
    assert f"answered by {SMALL}: {BIG} is not available" in (sink.final or "")
    assert models_asked(fake_groq) == [SMALL]


async def test_every_model_of_the_chain_failing_ends_in_one_clear_message(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """Each model is tried once, in chain order; two chains pointing at each other
    (``a>b`` and ``b>a``) do not make a loop."""
    for model in (BIG, SMALL):
        fake_groq.script("503", times=10, model=model)
    chains = f"{BIG}>{SMALL}; {SMALL}>{BIG}"
    async with open_runtime(settings_factory(model_fallbacks=chains, default_model=BIG)) as rt:
        sink = await ask(rt, "hi")
        assert sink.failed is not None and sink.final is None
        assert sink.failed.startswith("No model can answer right now:")
        assert f"{BIG} is over capacity (503)" in sink.failed
        assert f"{SMALL} is over capacity (503)" in sink.failed
        assert models_asked(fake_groq) == [BIG, SMALL]
        assert await ledger_models(rt) == []


async def test_all_day_quotas_used_up_says_when_to_come_back(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    await exhaust_day_tokens(fake_groq, BIG, SMALL, QWEN)
    async with open_runtime(settings_factory(model_fallbacks=CHAIN, default_model=BIG)) as rt:
        sink = await ask(rt, "hi")
    assert sink.failed is not None
    for model in (BIG, SMALL, QWEN):
        assert f"{model}'s daily token quota is used up" in sink.failed
    assert "Try again in about" in sink.failed
    assert models_asked(fake_groq) == [BIG, SMALL, QWEN]


async def test_strict_choice_keeps_the_limit_message(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """``/model <id> strict``: no other model answers; the user sees today's limit
    message, and only the chosen model was asked."""
    await exhaust_day_tokens(fake_groq, BIG)
    async with open_runtime(settings_factory(model_fallbacks=CHAIN)) as rt:
        assert "`/model <id> strict`: never another model" in rt.engine.help(ALICE.platform).text
        reply = await rt.engine.run_command("model", f"{BIG} strict", user=ALICE, key=DM)
        assert f"Model set to `{BIG}`" in reply.text and "Strict" in reply.text
        sink = await ask(rt, "hi")
        assert sink.failed is not None and "answered by" not in sink.failed
        assert "rate-limiting" in sink.failed
        assert models_asked(fake_groq) == [BIG]
        # Choosing the model again without `strict` lets the chain answer again.
        reply = await rt.engine.run_command("model", BIG, user=ALICE, key=DM)
        assert f"`{SMALL}` may answer instead" in reply.text
        again = await ask(rt, "hi again")
    assert f"answered by {SMALL}" in (again.final or "")


async def test_a_smaller_window_fallback_gets_a_trimmed_context(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """The fallback's window is a tenth of the chosen model's: the history it gets is
    cut to fit its window and its own output cap (the fake refuses prompts that overflow
    a model's window, so an untrimmed request would fail)."""
    small_window = FakeModel(SMALL, "OpenAI", 2_048, 512)
    fake_groq.models = [m for m in fake_groq.models if m.id != SMALL] + [small_window]
    long_text = "word " * 600  # ~750 tokens a message
    async with open_runtime(settings_factory(model_fallbacks=CHAIN, default_model=BIG)) as rt:
        for n in range(4):
            sink = await ask(rt, f"{n} {long_text}")
            assert sink.status_ is TurnStatus.COMPLETE
        fake_groq.script("503", times=10, model=BIG)
        sink = await ask(rt, "the last one")
    assert sink.status_ is TurnStatus.COMPLETE, sink.events
    assert f"answered by {SMALL}" in (sink.final or "")
    body: dict[str, Any] = fake_groq.chat_requests[-1]["body"]
    assert body["model"] == SMALL
    sent = [m["content"] for m in body["messages"]]
    assert sent[-1] == "the last one"
    # The chosen model received the whole history; the fallback only what fits 2,048.
    on_big = fake_groq.chat_requests[-2]["body"]
    assert on_big["model"] == BIG and len(on_big["messages"]) > len(body["messages"])
    assert sum(len(str(c)) for c in sent) // 4 + body["max_completion_tokens"] <= 2_048
    assert body["max_completion_tokens"] <= 512


async def test_a_minute_wait_longer_than_quota_max_wait_falls_back_without_waiting(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """The mirror predicts the chosen model's tokens per minute free up in ~20 s, more
    than QUOTA_MAX_WAIT_S: the next model answers at once, with no "waiting" status."""
    fake_groq.keep_cap_charged = True
    settings = settings_factory(
        model_fallbacks=CHAIN,
        default_model=BIG,
        max_output_tokens=1_000,
        quota_model_limits=f"{BIG}=tpm:1500",
        quota_max_wait_s=5,
    )
    async with open_runtime(settings) as rt:
        first = await ask(rt, "question one")
        assert "answered by" not in (first.final or "")
        second = await ask(rt, "question two")
    assert f"answered by {SMALL}: {BIG} is at its per-minute quota (a wait of about" in (
        second.final or ""
    )
    assert not [s for s in second.ops("status") if s.startswith("waiting")], second.events
    assert models_asked(fake_groq) == [BIG, SMALL]


async def test_a_fallback_answer_cut_off_midway_still_names_its_model(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.reply_words = 30
    fake_groq.script("503", model=BIG)
    fake_groq.script("drop", model=SMALL, after_tokens=5)
    async with open_runtime(settings_factory(model_fallbacks=CHAIN, default_model=BIG)) as rt:
        sink = await ask(rt, "hi")
        assert sink.status_ is TurnStatus.INTERRUPTED, sink.events
        assert f"answered by {SMALL}: {BIG} is over capacity (503)" in (sink.final or "")
        assert models_asked(fake_groq) == [BIG, SMALL]  # a broken stream is not walked on
        assert await ledger_models(rt) == [SMALL]
