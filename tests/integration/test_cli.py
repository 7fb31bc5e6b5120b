"""``python -m bot`` as a subprocess: terminal chat with memory, and start-up errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes.groq_server import FakeGroq
from tests.process import ROOT, run_bot


def _env(fake: FakeGroq | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    env.update(DATABASE_PATH=str(tmp_path / "bot.db"), LOG_LEVEL="WARNING", USER="tester")
    if fake is not None:
        env.update(GROQ_API_KEY=fake.api_key or "", API_BASE_URL=fake.base_url)
    env.update(extra)
    return env


async def _bot(
    args: list[str], env: dict[str, str], stdin: str = "", cwd: Path = ROOT
) -> tuple[int, str, str]:
    return await run_bot(args, env, cwd=cwd, stdin=stdin)


async def test_terminal_chat_streams_and_remembers_across_runs(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    env = _env(fake_groq, tmp_path)
    code, out, err = await _bot(["chat"], env, "first question\nsecond question\n")
    assert code == 0, err
    assert "turns=1 last=first question" in out
    assert "turns=2 last=second question" in out
    assert "Traceback" not in err

    code, out, _ = await _bot(["chat"], env, "/model openai/gpt-oss-20b\nthird\n/reset\nagain\n")
    assert code == 0
    assert "Model set to `openai/gpt-oss-20b`" in out
    assert "turns=3 last=third model=openai/gpt-oss-20b" in out
    assert "forgot" in out
    assert "turns=1 last=again" in out


@pytest.mark.parametrize(
    "stdin_errors",
    [
        pytest.param("utf-8:strict", id="utf8-locale"),  # as under LANG=en_US.UTF-8
        pytest.param("utf-8:surrogateescape", id="c-locale"),  # as under LANG=C
    ],
)
async def test_terminal_chat_reads_invalid_utf8_as_replacement_characters(
    fake_groq: FakeGroq, tmp_path: Path, stdin_errors: str
) -> None:
    env = _env(fake_groq, tmp_path, PYTHONIOENCODING=stdin_errors)
    stdin = b"caf\xe9 au \xff\xfelait\nsecond\n"  # Latin-1 and stray bytes, not UTF-8
    code, out, err = await run_bot(["chat"], env, stdin=stdin)
    assert code == 0, err
    assert "Traceback" not in err and "went wrong" not in out
    assert "turns=1 last=caf\ufffd au \ufffd\ufffdlait" in out
    assert "turns=2 last=second" in out  # the first message was stored


async def test_no_platform_configured_names_the_variables(tmp_path: Path) -> None:
    code, _, err = await _bot([], _env(None, tmp_path), cwd=tmp_path)
    assert code == 2
    assert "DISCORD_BOT_TOKEN" in err and "SLACK_BOT_TOKEN" in err and "Traceback" not in err


async def test_help_documents_every_subcommand(tmp_path: Path) -> None:
    code, out, _ = await _bot(["--help"], _env(None, tmp_path))
    assert code == 0
    for command in ("run", "chat", "models", "usage", "check"):
        assert command in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"GROQ_API_KEY": ""}, "GROQ_API_KEY is not set"),
        ({"GROQ_API_KEY": "gsk_wrong_key_0123456789"}, "API key was rejected"),
        ({"API_BASE_URL": "http://127.0.0.1:9/v1"}, "Could not reach the model API at 127.0.0.1:9"),
        ({"TEMPERATURE": "9"}, "TEMPERATURE"),
    ],
)
async def test_startup_problems_are_one_clear_sentence(
    fake_groq: FakeGroq, tmp_path: Path, extra: dict[str, str], needle: str
) -> None:
    env = _env(fake_groq, tmp_path, MAX_RETRIES="0", **extra)
    if extra.get("GROQ_API_KEY") == "":
        env.pop("API_BASE_URL")
        env.pop("GROQ_API_KEY")
    code, _, err = await _bot(["check"], env, cwd=tmp_path)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert "gsk_wrong_key_0123456789" not in err


async def test_check_fails_on_a_missing_default_model_and_names_the_available_ones(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    env = _env(fake_groq, tmp_path, DEFAULT_MODEL="llama-3.3-70b-versatile")
    code, out, err = await _bot(["check"], env, cwd=tmp_path)
    assert code == 2
    assert "DEFAULT_MODEL=llama-3.3-70b-versatile" in err and "openai/gpt-oss-120b" in err
    assert "OK" not in out


@pytest.mark.parametrize(
    ("max_output", "needles"),
    [
        # More than the default model's 8,000 tokens per minute: every message refused.
        ("9000", ("leaves no room in openai/gpt-oss-120b's 8,000 tokens per minute",)),
    ],
)
async def test_check_flags_a_max_output_the_quota_cannot_fit(
    fake_groq: FakeGroq, tmp_path: Path, max_output: str, needles: tuple[str, ...]
) -> None:
    env = _env(fake_groq, tmp_path, MAX_OUTPUT_TOKENS=max_output)
    code, _, err = await _bot(["check"], env, cwd=tmp_path)
    assert code == 2, err
    assert f"MAX_OUTPUT_TOKENS={max_output}" in err and "Set MAX_OUTPUT_TOKENS to at most" in err
    assert all(n in err for n in needles), err


async def test_check_passes_and_names_the_server_and_window(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    # 1,900 is nearly a user's whole share of 8,000 a minute (a quarter), which is fine:
    # a user's windows are charged the prompt and then the real use, not the reservation.
    env = _env(fake_groq, tmp_path, MAX_OUTPUT_TOKENS="1900")
    code, out, err = await _bot(["check"], env, cwd=tmp_path)
    assert code == 0, err
    assert "is Groq" in out and "131,072 tokens context" in out and "OK:" in out


async def test_check_names_fallback_models_the_server_does_not_offer(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    chain = "openai/gpt-oss-120b>openai/gpt-oss-20b>qwen/qwen9-999b;llama-3.1-8b-instant>nope"
    env = _env(fake_groq, tmp_path, MODEL_FALLBACKS=chain)
    code, out, err = await _bot(["check"], env, cwd=tmp_path)
    assert code == 2, err
    assert "MODEL_FALLBACKS names qwen/qwen9-999b, nope, which" in err
    assert "MODEL_FALLBACKS: openai/gpt-oss-120b > openai/gpt-oss-20b > qwen/qwen9-999b" in out
    assert "Traceback" not in err


async def test_terminal_chat_prints_a_slash_answer_once_after_a_retry_status(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    answer = "/usr/bin/env python3 finds python; on Windows see C:\\x\\py.exe. " * 40
    fake_groq.reply_text = answer.strip()
    fake_groq.script("429", retry_after=0.05)
    code, out, err = await _bot(["chat"], _env(fake_groq, tmp_path), "which python?\n")
    assert code == 0, err
    status, reply = out.split("bot> ")[1:3]
    assert "retrying in" in status and status.endswith("\n")  # a line of its own
    assert reply == answer.strip() + "\n\nyou> \n"  # printed once, whole
    assert "Traceback" not in err
