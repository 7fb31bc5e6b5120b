"""The bot against servers that are not Groq: the fake's "llamacpp" and "openai" profiles.

Real httpx, the real runtime (SQLite, quota, engine) and, for the llama.cpp case, the
real ``python -m bot chat`` process: the way a user of a local model server meets it.
The profiles' behaviour comes from the servers' sources (``tests/fakes/profile_*.py``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import Runtime, open_runtime, preflight
from bot.llm.provider import ProviderKind
from bot.settings import Settings
from bot.types import ConversationKey, Incoming, Platform, TurnStatus, UserRef
from tests.fakes.groq_models import FakeModel
from tests.fakes.groq_server import FakeGroq
from tests.fakes.profile_llamacpp import DEFAULT_MODEL_PATH
from tests.fakes.sink import RecordingSink
from tests.process import bot_env, run_bot

ALICE = UserRef(Platform("terminal"), "alice", "Alice")
DM_ALICE = ConversationKey(Platform("terminal"), dm_user="alice")
# ~1,000 characters: about 250-290 tokens, so a few turns fill a 2,048-token window.
LONG = "Tell me more about the history of this topic, with every detail you know. " * 13

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def llamacpp(fake_llamacpp: FakeGroq) -> FakeGroq:
    return fake_llamacpp


@pytest.fixture
def openai(fake_openai: FakeGroq) -> FakeGroq:
    return fake_openai


@pytest.fixture
def settings_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings as a user of that server writes them: its URL, its key (if any), nothing
    about the model; hermetic (no environment, no .env)."""
    for name in [*Settings.model_fields, "api_key"]:
        monkeypatch.delenv(name.upper(), raising=False)

    def build(fake: FakeGroq, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "api_base_url": fake.base_url,
            "database_path": tmp_path / "bot.db",
            "request_timeout_s": 5.0,
            "stream_idle_timeout_s": 2.0,
            "retry_base_delay_s": 0.01,
            "retry_max_delay_s": 0.05,
        }
        if fake.api_key:
            values["groq_api_key"] = fake.api_key
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


async def _ask(rt: Runtime, text: str) -> RecordingSink:
    sink = RecordingSink()
    await asyncio.wait_for(rt.engine.handle(Incoming(DM_ALICE, ALICE, text, "m"), sink), 20)
    return sink


# ----- llama.cpp -----


async def test_llamacpp_twenty_long_turns_fit_the_window_and_all_get_answers(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    llamacpp.reply_words = 60  # answers that also fill the history
    async with open_runtime(settings_for(llamacpp)) as rt:
        found = await preflight(rt)
        assert found.problems == ()
        assert rt.completions.provider is not None
        assert rt.completions.provider.kind is ProviderKind.LLAMACPP
        assert await rt.engine.default_model() == DEFAULT_MODEL_PATH  # the server's own
        sinks = [await _ask(rt, f"turn {i}: {LONG}") for i in range(20)]
        models = (await rt.engine.models_text(ALICE, DM_ALICE)).text
        usage = (await rt.engine.usage(ALICE)).text
    assert [s.status_ for s in sinks] == [TurnStatus.COMPLETE] * 20, [s.failed for s in sinks]
    assert all(f"last=turn {i}:" in (s.final or "") for i, s in enumerate(sinks))
    chats = llamacpp.chat_requests
    assert len(chats) == 20  # no overflow, so no retry
    assert max(r["prompt_tokens"] for r in chats) < llamacpp.n_ctx
    # The cap goes out in the field llama.cpp reads; the field it ignores is not sent.
    assert all(r["body"]["max_tokens"] == 1024 for r in chats)
    assert not any("max_completion_tokens" in r["body"] for r in chats)
    assert "2,048 tokens context" in models and DEFAULT_MODEL_PATH in models
    # The server reports no usage: /usage counts estimates and says so.
    assert re.search(r"[1-9][\d,]* tokens today", usage), usage
    assert "estimated" in usage
    assert "gpt-oss" not in usage  # only models this user uses, not Groq's default


async def test_llamacpp_without_props_overflows_once_then_learns_the_window(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    """llama-cpp-python has no /props: the bot assumes 4,096 tokens, the server's 2,048
    overflow as an empty streamed 200; the bot trims, retries once and remembers."""
    llamacpp.props_enabled = False
    llamacpp.reply_words = 60
    async with open_runtime(settings_for(llamacpp)) as rt:
        await preflight(rt)
        before = await rt.engine.models_text(ALICE, DM_ALICE)
        sinks = [await _ask(rt, f"turn {i}: {LONG}") for i in range(20)]
        after = await rt.engine.models_text(ALICE, DM_ALICE)
    assert "4,096 tokens context, assumed" in before.text
    assert [s.status_ for s in sinks] == [TurnStatus.COMPLETE] * 20, [s.failed for s in sinks]
    retried = [i for i, s in enumerate(sinks) if any("less history" in t for t in s.ops("status"))]
    assert len(retried) == 1, retried  # learned once, then every turn fits
    assert len(llamacpp.chat_requests) == 21
    assert "lowered after the server refused" in after.text
    # The turn that overflowed once is still counted (estimated), not refunded to zero.
    assert all(s.final for s in sinks)


async def test_llamacpp_a_message_too_long_even_alone_says_what_to_do(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    llamacpp.n_ctx = 600
    async with open_runtime(settings_for(llamacpp, max_input_chars=100_000)) as rt:
        await preflight(rt)
        huge = await _ask(rt, "word " * 2_000)
        small = await _ask(rt, "hi")
    assert huge.failed is not None
    assert "shorten" in huge.failed  # told before anything was sent
    assert llamacpp.chat_requests[-1]["body"]["messages"][-1]["content"] == "hi"
    assert small.status_ is TurnStatus.COMPLETE  # the conversation is not stuck
    assert "turns=1 last=hi" in (small.final or "")


async def test_llamacpp_answer_cut_by_the_output_cap_says_so(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    llamacpp.reply_words = 200
    async with open_runtime(settings_for(llamacpp, max_output_tokens=16)) as rt:
        await preflight(rt)
        sink = await _ask(rt, "tell me everything")
    assert sink.status_ is TurnStatus.COMPLETE
    assert llamacpp.chat_requests[-1]["body"]["max_tokens"] == 16
    final = sink.final or ""
    assert final.endswith("Cut off at the answer length limit; ask me to continue.")
    assert len(final) < 200  # 16 tokens, not the whole 200-word answer


async def test_llamacpp_quota_never_refuses_the_second_message(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    async with open_runtime(settings_for(llamacpp)) as rt:
        await preflight(rt)
        sinks = [await _ask(rt, f"quick {i}") for i in range(6)]
    assert [s.status_ for s in sinks] == [TurnStatus.COMPLETE] * 6, [s.failed for s in sinks]


async def test_llamacpp_per_user_limits_from_settings_still_apply(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    async with open_runtime(settings_for(llamacpp, quota_user_rpm=2, quota_max_wait_s=0)) as rt:
        await preflight(rt)
        sinks = [await _ask(rt, f"quick {i}") for i in range(3)]
    assert [s.status_ for s in sinks[:2]] == [TurnStatus.COMPLETE] * 2
    assert sinks[2].failed is not None and "2 requests this minute" in sinks[2].failed


async def test_check_fails_when_the_window_leaves_no_room(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    llamacpp.n_ctx = 512
    async with open_runtime(settings_for(llamacpp, system_prompt="Be nice. " * 40)) as rt:
        found = await preflight(rt)
    assert found.problems and "MAX_OUTPUT_TOKENS" in found.problems[0]


# ----- OpenAI -----


def _openai_settings(settings_for: SettingsFactory, fake: FakeGroq, **more: Any) -> Settings:
    # The fake is not at api.openai.com, so say what it is, as behind a proxy.
    return settings_for(fake, api_provider="openai", default_model="gpt-4o-mini", **more)


async def test_openai_sends_its_cap_field_reads_real_usage_and_its_window(
    openai: FakeGroq, settings_for: SettingsFactory
) -> None:
    async with open_runtime(_openai_settings(settings_for, openai)) as rt:
        found = await preflight(rt)
        first = await _ask(rt, "hello")
        second = await _ask(rt, "hello again")
        models = (await rt.engine.models_text(ALICE, DM_ALICE)).text
        usage = (await rt.engine.usage(ALICE)).text
        assert rt.quota is not None
        account = rt.quota.account_status()
    assert found.problems == ()
    assert rt.completions.provider is not None
    assert rt.completions.provider.kind is ProviderKind.OPENAI
    assert first.status_ is second.status_ is TurnStatus.COMPLETE
    body = openai.chat_requests[-1]["body"]
    assert body["max_completion_tokens"] == 1024 and "max_tokens" not in body
    assert "128,000 tokens context" in models
    assert "estimated" not in usage  # OpenAI reports usage when asked
    # Its request headers count per minute: adopted as the RPM limit, not RPD.
    local = {d.dimension: d.limit for d in account[0].local}
    assert local.get("rpm") == openai.limit_rpm and "rpd" not in local
    admin_usage = await rt_usage_admin(openai, settings_for)
    assert "requests left this minute" in admin_usage
    # The whole bot's day, per model, as a table: this test's replies on its database.
    assert "The whole bot today (since 00:00 UTC):" in admin_usage
    row = next(line for line in admin_usage.splitlines() if line.startswith("gpt-4o-mini"))
    assert int(row.split()[1]) >= 1  # replies


async def rt_usage_admin(fake: FakeGroq, settings_for: SettingsFactory) -> str:
    async with open_runtime(_openai_settings(settings_for, fake, admin_ids=["alice"])) as rt:
        await preflight(rt)
        await _ask(rt, "hi")
        return (await rt.engine.usage(ALICE)).text


async def test_openai_overflow_names_the_window_and_the_bot_adopts_it(
    openai: FakeGroq, settings_for: SettingsFactory
) -> None:
    openai.models = [FakeModel("gpt-4o-mini", "system", 1_500, 16_384)]
    async with open_runtime(_openai_settings(settings_for, openai, max_output_tokens=256)) as rt:
        await preflight(rt)
        sinks = [await _ask(rt, f"turn {i}: {LONG}") for i in range(8)]
        models = (await rt.engine.models_text(ALICE, DM_ALICE)).text
    assert [s.status_ for s in sinks] == [TurnStatus.COMPLETE] * 8, [s.failed for s in sinks]
    assert "lowered after the server refused" in models
    window = int(re.search(r"([\d,]+) tokens context", models).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert window <= 1_500


async def test_an_unrecognised_server_gets_max_tokens_a_conservative_window_and_works(
    openai: FakeGroq, settings_for: SettingsFactory
) -> None:
    # A hosted API lists many models, some not for chat: a blank DEFAULT_MODEL is a
    # problem `check` names, never a guess.
    async with open_runtime(settings_for(openai)) as rt:
        blank = await preflight(rt)
    assert blank.problems and "DEFAULT_MODEL=openai/gpt-oss-120b" in blank.problems[0]
    assert "gpt-4o-mini" in blank.problems[0]
    async with open_runtime(settings_for(openai, default_model="gpt-4o-mini")) as rt:
        found = await preflight(rt)
        sinks = [await _ask(rt, f"q{i}") for i in range(3)]
    assert rt.completions.provider is not None
    assert rt.completions.provider.kind is ProviderKind.OTHER
    assert found.problems == ()
    assert any("4,096 tokens context, assumed" in note for note in found.notes)
    assert [s.status_ for s in sinks] == [TurnStatus.COMPLETE] * 3
    assert openai.chat_requests[-1]["body"]["max_tokens"] == 1024


async def test_an_empty_answer_to_a_small_request_is_a_failure_not_an_overflow(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    """A server that crashes or restarts also sends a 200 then nothing: with a short
    request and a 32k window, that is retried as a failure, and the window stays."""
    llamacpp.n_ctx = 32_768
    llamacpp.script("drop", after_tokens=0)
    async with open_runtime(settings_for(llamacpp)) as rt:
        await preflight(rt)
        sink = await _ask(rt, "hi")
        models = (await rt.engine.models_text(ALICE, DM_ALICE)).text
    assert sink.status_ is TurnStatus.COMPLETE, sink.failed
    assert any("retrying" in t and "less history" not in t for t in sink.ops("status"))
    assert "32,768 tokens context" in models and "lowered" not in models
    assert all(r["body"]["max_tokens"] == 1024 for r in llamacpp.chat_requests)


async def test_system_prompt_none_sends_no_system_message(
    llamacpp: FakeGroq, settings_for: SettingsFactory
) -> None:
    async with open_runtime(settings_for(llamacpp, system_prompt="none")) as rt:
        await preflight(rt)
        await _ask(rt, "hi")
    roles = [m["role"] for m in llamacpp.chat_requests[-1]["body"]["messages"]]
    assert roles == ["user"]


# ----- the whole program, as a llama.cpp user runs it -----


async def test_chat_cli_twenty_long_turns_against_llamacpp(
    llamacpp: FakeGroq, tmp_path: Path
) -> None:
    env = bot_env(
        USER="local",
        API_BASE_URL=llamacpp.base_url,
        DATABASE_PATH=str(tmp_path / "bot.db"),
        LOG_LEVEL="WARNING",
        MAX_INPUT_CHARS="100000",
    )
    llamacpp.reply_words = 60
    lines = "".join(f"turn {i}: {LONG}\n" for i in range(20)) + "/models\n/usage\n"
    code, out, err = await run_bot(["chat"], env, cwd=tmp_path, stdin=lines, within=60)
    assert code == 0, err
    for i in range(20):
        assert f"last=turn {i}:" in out, (i, out[-2000:], err)
    assert "2,048 tokens context" in out
    assert "estimated" in out
    assert "⚠" not in out and "Traceback" not in err
