"""What the engine reports to ``bot.metrics``, read back through the Prometheus text the
operator endpoint serves (parsed with prometheus-client's own parser)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from adapters.terminal import TerminalSettings
from bot.app import Runtime, open_runtime
from bot.settings import Settings
from bot.types import ConversationKey, Incoming, Platform, SurfaceLimits, TurnStatus, UserRef
from tests.fakes.groq_server import FakeGroq
from tests.fakes.sink import RecordingSink
from tests.fakes.surface import RecordingSurface
from tests.scrape import sample_of

ALICE = UserRef(Platform("terminal"), "alice", "Alice")
DM_ALICE = ConversationKey(Platform("terminal"), dm_user="alice")


def sample(rt: Runtime, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with ``labels`` (0 when absent)."""
    return sample_of(rt.metrics, name, **labels)


async def test_nothing_is_recorded_while_the_endpoint_is_off(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with open_runtime(settings_factory()) as rt:
        assert rt.metrics is None and rt.engine.metrics is None
        assert (await ask(rt, "hello")).status_ is TurnStatus.COMPLETE


async def ask(rt: Runtime, text: str) -> RecordingSink:
    sink = RecordingSink()
    await asyncio.wait_for(rt.engine.handle(Incoming(DM_ALICE, ALICE, text, "m"), sink), 15)
    return sink


async def test_an_answered_message_counts_once_everywhere(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with open_runtime(settings_factory(metrics_port=0)) as rt:
        answered = await ask(rt, "hello")
        assert answered.status_ is TurnStatus.COMPLETE
        t = {"platform": "terminal"}
        assert sample(rt, "groqbot_replies_total", outcome="complete", **t) == 1
        assert sample(rt, "groqbot_reply_first_text_seconds_count", **t) == 1
        assert sample(rt, "groqbot_reply_duration_seconds_count", **t) == 1
        assert sample(rt, "groqbot_replies_in_flight", **t) == 0
        model = {"model": rt.settings.default_model}
        assert sample(rt, "groqbot_model_requests_total", **model) == 1
        assert sample(rt, "groqbot_model_tokens_total", kind="prompt", **model) > 0
        assert sample(rt, "groqbot_model_tokens_total", kind="completion", **model) > 0


async def test_a_failure_after_429s_counts_them_and_its_retries(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.script("429", times=4)  # the first request and its 3 retries
    async with open_runtime(settings_factory(quota_enabled=False, metrics_port=0)) as rt:
        failed = await ask(rt, "one")
        assert failed.failed is not None
        t = {"platform": "terminal"}
        assert sample(rt, "groqbot_replies_total", outcome="failed", **t) == 1
        assert sample(rt, "groqbot_upstream_rate_limited_total") == 4
        assert sample(rt, "groqbot_upstream_retries_total") == 3
        assert sample(rt, "groqbot_model_requests_total") == 4
        assert sample(rt, "groqbot_reply_first_text_seconds_count", **t) == 0
        assert sample(rt, "groqbot_replies_in_flight", **t) == 0


async def test_a_quota_refusal_is_refused_not_failed(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    async with open_runtime(
        settings_factory(quota_user_rpm=1, quota_max_wait_s=0, metrics_port=0)
    ) as rt:
        await ask(rt, "one")
        refused = await ask(rt, "two")
        assert refused.failed is not None and "try again in" in refused.failed
        t = {"platform": "terminal"}
        assert sample(rt, "groqbot_replies_total", outcome="complete", **t) == 1
        assert sample(rt, "groqbot_replies_total", outcome="refused", **t) == 1
        assert sample(rt, "groqbot_replies_total", outcome="failed", **t) == 0
        assert sample(rt, "groqbot_replies_in_flight", **t) == 0


async def test_a_fallback_counts_by_the_model_left_the_model_tried_and_why(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    big, small = "openai/gpt-oss-120b", "openai/gpt-oss-20b"
    fake_groq.script("503", times=10, model=big)
    fake_groq.script("429", times=10, model=small, retry_after=3600)
    settings = settings_factory(
        metrics_port=0, default_model=big, model_fallbacks=f"{big}>{small}>qwen/qwen3-32b"
    )
    async with open_runtime(settings) as rt:
        assert (await ask(rt, "hello")).status_ is TurnStatus.COMPLETE
        left = {"from_model": big, "to_model": small, "reason": "over_capacity"}
        assert sample(rt, "groqbot_model_fallbacks_total", **left) == 1
        then = {"from_model": small, "to_model": "qwen/qwen3-32b", "reason": "rate_limited"}
        assert sample(rt, "groqbot_model_fallbacks_total", **then) == 1
        assert sample(rt, "groqbot_upstream_rate_limited_total") == 1  # the 429 left behind
        assert sample(rt, "groqbot_replies_total", outcome="complete", platform="terminal") == 1


async def test_a_wait_for_the_quota_is_measured_once_as_it_lasted(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    """The second message waits behind the first (one in flight per user): one wait,
    as long as the first answer took (announced waits are estimates, not durations)."""
    fake_groq.script("stall", times=1, after_tokens=1, seconds=0.3)
    async with open_runtime(settings_factory(quota_user_max_in_flight=1, metrics_port=0)) as rt:
        first = asyncio.create_task(ask(rt, "one"))
        while not fake_groq.chat_requests:  # noqa: ASYNC110 (the fake has no event for it)
            await asyncio.sleep(0.01)
        elsewhere = ConversationKey(Platform("terminal"), channel="elsewhere")
        second = RecordingSink()  # another conversation: only the quota orders the two
        await asyncio.wait_for(rt.engine.handle(Incoming(elsewhere, ALICE, "two", "m"), second), 15)
        assert (await first).status_ is second.status_ is TurnStatus.COMPLETE
        assert sample(rt, "groqbot_quota_wait_seconds_count") == 1
        assert sample(rt, "groqbot_quota_wait_seconds_sum") > 0


async def test_a_reply_reports_its_edits_once_by_platform(
    fake_groq: FakeGroq, settings_factory: Callable[..., Settings]
) -> None:
    fake_groq.token_delay_s = 0.05  # streamed over several edits
    async with open_runtime(settings_factory(metrics_port=0)) as rt:
        surface = RecordingSurface(SurfaceLimits(2000, min_edit_interval_s=0.2), clock=rt.clock)
        sink = rt.context(TerminalSettings()).editing_sink(surface, "terminal")
        await asyncio.wait_for(rt.engine.handle(Incoming(DM_ALICE, ALICE, "hi", "m"), sink), 15)
        t = {"platform": "terminal"}
        assert sample(rt, "groqbot_reply_edits_count", **t) == 1
        assert (
            sample(rt, "groqbot_reply_edits_sum", **t) == sink.edits == len(surface.calls("edit"))
        )
        assert sink.edits >= 1  # the final text, after the first post
